//! Building and running the service: `Application::build(settings)` then
//! `run_until_stopped(shutdown)`.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::{ConnectionArgs, ServeArgs};
use crate::gateway::{Gateway, GatewayConfig};
use shared_kernel::messaging::{DeliveryConfig, Workers};

use crate::modules::{ModuleSettings, Modules, Timers};

/// A bound, wired service that has not started serving yet.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    modules: Modules,
    router: Router,
    /// The subscription workers, stopped after the last request.
    workers: Workers,
    /// The modules' timers, stopped with the workers.
    timers: Timers,
    /// Timeouts and cap of client connections.
    connections: ConnectionArgs,
}

impl Application {
    /// Opens the module databases, binds the listener and builds the router.
    pub async fn build(settings: &ServeArgs) -> anyhow::Result<Self> {
        let storage = settings.storage.storage_config();
        let modules = Modules::start(
            &settings.modules,
            &storage,
            ModuleSettings {
                default_credit_limit_cents: settings.default_credit_limit_cents,
                saga_timeout: settings.saga_timeout,
                delivery: DeliveryConfig {
                    retention: settings.outbox_retention.0,
                    ..DeliveryConfig::default()
                },
            },
        )
        .await?;
        let workers = modules.bus.start();
        let timers = modules.start_timers();
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        // The recorder first: the gateway sets its breaker gauges when it is built.
        shared_kernel::prometheus::handle();
        let gateway = Gateway::for_modules(
            &modules,
            GatewayConfig {
                timeout: settings.composition_timeout,
                ..GatewayConfig::default()
            },
        )
        .context("configuring the API composition")?;
        let router = crate::http::router(&modules, gateway);
        Ok(Self {
            listener,
            modules,
            router,
            workers,
            timers,
            connections: settings.connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    /// The router, for tests that call it without a socket.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Takes the pieces apart, for tests that drive the service without a socket and stop the
    /// subscription workers themselves.
    pub fn into_parts(self) -> (Router, Modules, Workers, Timers) {
        (self.router, self.modules, self.workers, self.timers)
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish and closes the
    /// databases. Handlers can read the peer address with `ConnectInfo<SocketAddr>`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(url = %format!("http://{}", self.local_addr()), "Bounded is listening.");
        crate::server::serve(self.listener, self.router, self.connections, shutdown).await;
        self.workers.stop().await;
        self.timers.stop().await;
        self.modules.close().await;
        tracing::info!("Bounded stopped.");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed by this call, not when the
/// future is first polled, so a signal that arrives as soon as the server says it listens is
/// a graceful stop, never the default action (death by the signal).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            let installed = signal(kind);
            async move {
                match installed {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "Cannot listen for {name}.");
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let interrupt = listen(SignalKind::interrupt(), "SIGINT");
        let terminate = listen(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                () = interrupt => tracing::info!("SIGINT received; shutting down."),
                () = terminate => tracing::info!("SIGTERM received; shutting down."),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "Cannot listen for SIGINT.");
            std::future::pending::<()>().await;
        }
        tracing::info!("SIGINT received; shutting down.");
    }
}
