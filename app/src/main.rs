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
    init_tracing(cli.log_format);
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

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BOUNDED_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
