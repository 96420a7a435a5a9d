//! `bounded`: see `bounded --help`.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use app::config::{ArchCommand, Cli, Command, LogFormat};
use app::modules::Modules;
use app::startup::{Application, shutdown_signal};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Arch { command } => return arch(command),
        command => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|runtime| runtime.block_on(run(command))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "bounded failed.");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
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
        Command::Demo(args) => app::demo::run(&args).await,
        Command::Bench(args) => app::bench::run(&args).await,
        Command::Baseline(args) => {
            app::baseline::serve(args.listen, &args.storage.storage_config()).await
        }
        Command::SeedHistory(args) => app::history::run(&args).await,
        Command::Arch { .. } => Ok(()),
    }
}

/// Opens every module's database (as `migrate` does), reconciles, prints the report as JSON;
/// fails when modules disagree.
async fn reconcile(args: &app::config::StorageArgs) -> anyhow::Result<()> {
    let modules = Modules::open_all(&args.storage_config()).await?;
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

fn arch(command: ArchCommand) -> ExitCode {
    let (workspace, graph_only) = match command {
        ArchCommand::Check(arg) => (arg.workspace, false),
        ArchCommand::Graph(arg) => (arg.workspace, true),
    };
    let report = match app::arch::check(&workspace) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: the architecture lint could not run: {error:#}");
            return ExitCode::from(2);
        }
    };
    if graph_only {
        println!("{}", report.graph.mermaid());
        return ExitCode::SUCCESS;
    }
    if report.is_clean() {
        println!("architecture check passed: no violations");
        ExitCode::SUCCESS
    } else {
        for violation in &report.violations {
            eprintln!("{violation}");
        }
        eprintln!(
            "architecture check failed: {} violation(s)",
            report.violations.len()
        );
        ExitCode::FAILURE
    }
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
