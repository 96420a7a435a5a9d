//! `bounded`: see `bounded --help`.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use app::config::{Cli, Command, LogFormat};
use app::modules::Modules;
use app::startup::{Application, shutdown_signal};
use clap::Parser as _;
use shared_kernel::storage::OpenError;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let count_statements = match &cli.command {
        Command::Serve(args) => args.count_statements,
        Command::Baseline(args) => args.count_statements,
        _ => false,
    };
    init_tracing(cli.log_format, count_statements);
    let result = match cli.command {
        Command::Arch { command } => return tools::arch::run(command),
        command => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|runtime| runtime.block_on(run(command))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A store that is not there, or a database to create first, is said in one line with
        // exit 2 (as for a bad flag): running again will not help.
        Err(error) => match configuration_error(&error) {
            Some(mistake) => {
                eprintln!("error: {mistake}");
                ExitCode::from(2)
            }
            None => {
                tracing::error!(error = format!("{error:#}"), "bounded failed.");
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    if matches!(command, Command::Serve(_) | Command::Baseline(_)) {
        // The recorder before anything is counted (the commits of the migrations included).
        shared_kernel::prometheus::handle();
    }
    match command {
        Command::Serve(args) => {
            Application::build(&args)
                .await?
                .run_until_stopped(shutdown_signal())
                .await
        }
        Command::Migrate(args) => Modules::migrate(&args.storage_config()).await,
        Command::Reconcile(args) => reconcile(&args).await,
        Command::Demo(args) => tools::demo::run(&args).await,
        Command::Bench(args) => tools::bench::run(&args).await,
        Command::Baseline(args) => {
            tools::baseline::serve(
                args.listen,
                &args.storage.storage_config(),
                shutdown_signal(),
            )
            .await
        }
        Command::SeedHistory(args) => app::seed::run(&args).await,
        Command::Arch { .. } => Ok(()),
    }
}

/// Opens every module's existing database (creating nothing), reconciles, prints the report as JSON;
/// fails when modules disagree.
async fn reconcile(args: &app::config::StorageArgs) -> anyhow::Result<()> {
    let modules = Modules::open_existing(&args.storage_config()).await?;
    let (Some(orders), Some(inventory), Some(payments)) = (
        modules.orders.clone(),
        modules.inventory.clone(),
        modules.payments.clone(),
    ) else {
        anyhow::bail!("reconciliation needs the orders, inventory and payments modules");
    };
    // No subscription runs here: orders whose events a server (if one runs) has not applied
    // within the wait are counted as in flight.
    let reconciler = app::reconcile::Reconciler {
        orders,
        inventory,
        payments,
        bus: modules.bus.clone(),
        settle_timeout: app::reconcile::SETTLE_TIMEOUT,
    };
    let report = reconciler.run().await;
    modules.close().await;
    let report = report?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.discrepancies.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} discrepancies", report.discrepancies.len())
    }
}

/// The storage configuration mistake somewhere in `error`'s chain, if that is what it is.
fn configuration_error(error: &anyhow::Error) -> Option<&OpenError> {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<OpenError>())
        .find(|open| open.is_configuration())
}

/// The log on stderr, filtered by `BOUNDED_LOG`; with `count_statements`, beside it and with
/// a filter of its own, the layer counting sqlx's statements (so the log does not change).
fn init_tracing(format: LogFormat, count_statements: bool) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_env("BOUNDED_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let log = match format {
        LogFormat::Text => log.with_filter(filter).boxed(),
        LogFormat::Json => log.json().with_filter(filter).boxed(),
    };
    tracing_subscriber::registry()
        .with(log)
        .with(count_statements.then(app::telemetry::StatementCounter::layer))
        .init();
}
