//! `TestApp`: the real router over real module databases, called without a socket.

use app::config::{ModuleSet, ServeArgs, StorageArgs};
use app::modules::{Modules, Timers};
use app::startup::Application;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use shared_kernel::messaging::Workers;
use shared_kernel::storage::testing::{TestDatabase, postgres_url};
use shared_kernel::storage::{Backend, ModuleDb};
use tempfile::TempDir;
use tower::ServiceExt as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One answer, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem+json answer with this status and returns the problem body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"].is_string() && self.body["title"].is_string());
        assert!(self.body["detail"].is_string());
        &self.body
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        &self.body
    }

    /// Field names of a validation problem.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct TestApp {
    pub kind: Kind,
    router: Router,
    pub modules: Modules,
    /// The running subscription workers; `None` while delivery is stopped.
    pub workers: Option<Workers>,
    /// The saga timer; stopped only when the app is dropped.
    _timers: Timers,
    /// SQLite files or the Postgres database; dropped with the app.
    data_dir: TempDir,
    pub database: Option<TestDatabase>,
    /// What the app was built with, for restarts.
    settings: ServeArgs,
}

impl TestApp {
    pub fn settings(
        kind: Kind,
        data_dir: &std::path::Path,
        database: Option<&TestDatabase>,
    ) -> ServeArgs {
        ServeArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            storage: StorageArgs {
                data_dir: data_dir.to_owned(),
                database_url: match kind {
                    Kind::Sqlite => None,
                    Kind::Postgres => database.map(|db| db.url().to_owned()),
                },
                module_database_urls: Vec::new(),
                db_role_password: None,
            },
            modules: ModuleSet::all(),
            default_credit_limit_cents: 1_000_000,
            saga_timeout: std::time::Duration::from_secs(30),
            // Generous: a busy test machine must not degrade healthy parts.
            composition_timeout: std::time::Duration::from_secs(5),
            outbox_retention: app::config::Retention(None),
            connections: app::config::ConnectionArgs::default(),
            count_statements: false,
        }
    }

    /// A service on fresh databases, or `None` when Postgres tests are not configured.
    pub async fn spawn(kind: Kind, test: &str) -> Option<Self> {
        init_tracing();
        let data_dir = tempfile::tempdir().unwrap();
        let database = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => Some(TestDatabase::create(&postgres_url(test)?).await),
        };
        let settings = Self::settings(kind, data_dir.path(), database.as_ref());
        Some(Self::build(kind, settings, data_dir, database).await)
    }

    /// Like [`Self::spawn`], with settings changed by `configure`.
    pub async fn spawn_with(
        kind: Kind,
        test: &str,
        configure: impl FnOnce(&mut ServeArgs),
    ) -> Option<Self> {
        init_tracing();
        let data_dir = tempfile::tempdir().unwrap();
        let database = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => Some(TestDatabase::create(&postgres_url(test)?).await),
        };
        let mut settings = Self::settings(kind, data_dir.path(), database.as_ref());
        configure(&mut settings);
        Some(Self::build(kind, settings, data_dir, database).await)
    }

    /// Stops this app as a process stops (workers, timers, databases) and starts a new one on
    /// the same databases, with settings changed by `configure`.
    pub async fn restart(mut self, configure: impl FnOnce(&mut ServeArgs)) -> Self {
        self.stop_delivery().await;
        let Self {
            kind,
            modules,
            data_dir,
            database,
            mut settings,
            _timers,
            ..
        } = self;
        _timers.stop().await;
        modules.close().await;
        configure(&mut settings);
        Self::build(kind, settings, data_dir, database).await
    }

    pub async fn build(
        kind: Kind,
        settings: ServeArgs,
        data_dir: TempDir,
        database: Option<TestDatabase>,
    ) -> Self {
        let application = Application::build(&settings).await.unwrap();
        let kept = settings.clone();
        let (router, modules, workers, timers) = application.into_parts();
        Self {
            kind,
            router,
            modules,
            workers: Some(workers),
            _timers: timers,
            data_dir,
            database,
            settings: kept,
        }
    }

    /// Stops event delivery, as a process stopped between commit and publish would.
    pub async fn stop_delivery(&mut self) {
        if let Some(workers) = self.workers.take() {
            workers.stop().await;
        }
    }

    pub fn start_delivery(&mut self) {
        if self.workers.is_none() {
            self.workers = Some(self.modules.bus.start());
        }
    }

    /// Waits until every subscription has applied everything committed so far.
    pub async fn settled(&self) {
        let settled = self
            .modules
            .bus
            .settled(std::time::Duration::from_secs(30))
            .await;
        assert!(
            settled,
            "subscriptions did not catch up within 30 s: {:?}",
            self.modules.bus.status().await
        );
    }

    pub fn db(&self, module: &str) -> &ModuleDb {
        self.modules
            .databases
            .iter()
            .find(|db| db.module() == module)
            .unwrap()
    }

    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Sqlite => Backend::Sqlite {
                data_dir: self.data_dir.path().to_owned(),
            },
            Kind::Postgres => Backend::Postgres {
                admin_url: self.database.as_ref().unwrap().url().to_owned(),
            },
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with a raw body and content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.raw(Method::GET, path, None, Body::empty()).await
    }

    pub async fn json(&self, method: Method, path: &str, body: Value) -> Answer {
        self.raw(method, path, Some("application/json"), body.to_string())
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.json(Method::POST, path, body).await
    }

    pub async fn post_with_key(&self, path: &str, key: &str, body: Value) -> Answer {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    /// Every item of a list endpoint, following cursors.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut url = format!("{path}?limit=500");
        loop {
            let answer = self.get(&url).await;
            let page = answer.ok(200);
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(next) => url = format!("{path}?limit=500&after={next}"),
                None => return items,
            }
        }
    }
}

/// Logs of the code under test, shown for failing tests; `BOUNDED_LOG` filters them.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOUNDED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A spawned `bounded serve` whose log (stderr) is read on a thread until the process ends,
/// so it never blocks on a full pipe; returns the log's lines and the URL it logged, failing
/// the test if no URL comes within 60 s.
pub fn read_log_until_url(
    child: &mut std::process::Child,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Receiver<String>,
    String,
) {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Keep draining after the receiver is gone.
            // Errors of the server show in the output of a failing test.
            if line.contains("ERROR") {
                eprintln!("server: {line}");
            }
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            child.kill().ok();
            panic!("the server did not log its URL within 60 s");
        };
        if let Some(at) = line.find("url=http://") {
            break line[at + 4..].split_whitespace().next().unwrap().to_owned();
        }
    };
    (reader, lines, url)
}

impl shared_kernel::storage::testing::OnBackend for TestApp {
    async fn on_backend(
        backend: shared_kernel::storage::testing::TestBackend,
        test: &'static str,
    ) -> Option<Self> {
        let kind = match backend {
            shared_kernel::storage::testing::TestBackend::Sqlite => Kind::Sqlite,
            shared_kernel::storage::testing::TestBackend::Postgres => Kind::Postgres,
        };
        TestApp::spawn(kind, test).await
    }
}
