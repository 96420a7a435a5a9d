//! Client connections over a real socket: the header read and idle timeouts close slow and
//! idle sockets, the connection cap keeps idle sockets from locking clients out, and handlers
//! see the peer address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use app::config::ConnectionArgs;
use app::startup::Application;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{Kind, TestApp};

/// A service listening on a loopback port, stopped (gracefully) when dropped.
struct Served {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _data_dir: tempfile::TempDir,
}

impl Served {
    async fn start(connections: ConnectionArgs) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut settings = TestApp::settings(Kind::Sqlite, data_dir.path(), None);
        settings.connections = connections;
        let application = Application::build(&settings).await.unwrap();
        let addr = application.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            application
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            _data_dir: data_dir,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the server stops")
                .unwrap();
        }
    }
}

/// Sends one HTTP/1.1 request on a new connection and returns the status line and body.
async fn request(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// Waits until the server closes `stream` (end of file or reset), up to `deadline`; returns
/// how long it took, or `None` if the socket is still open.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buffer).await {
                // A 408 or other farewell may come first; the end of the stream is what counts.
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_closed_after_the_header_read_timeout() {
    let served = Served::start(ConnectionArgs {
        header_read_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_secs(600),
        max_connections: 64,
    })
    .await;
    let mut slow = TcpStream::connect(served.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(10))
        .await
        .expect("a request head that never ends is cut off");
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    // A kept-alive connection waiting for its next request is bounded the same way.
    let mut kept = TcpStream::connect(served.addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut kept, Duration::from_secs(10))
        .await
        .expect("a kept-alive connection is closed once idle past the timeout");
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let served = Served::start(ConnectionArgs {
        header_read_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_millis(400),
        max_connections: 64,
    })
    .await;
    let mut silent = TcpStream::connect(served.addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(10))
        .await
        .expect("a connection that never sends a byte is closed");
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_past_the_connection_cap_do_not_lock_clients_out() {
    const CAP: u32 = 16;
    const IDLE: usize = 300;
    let served = Served::start(ConnectionArgs {
        header_read_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        max_connections: CAP,
    })
    .await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(served.addr).await.unwrap());
    }
    // Both the process and the module databases still answer.
    let health = tokio::time::timeout(Duration::from_secs(20), request(served.addr, "/health"))
        .await
        .expect("/health answers while idle sockets are open");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let customers =
        tokio::time::timeout(Duration::from_secs(20), request(served.addr, "/customers"))
            .await
            .expect("a database read answers while idle sockets are open");
    assert!(customers.starts_with("HTTP/1.1 200"), "{customers}");
    // The server kept at most CAP of them: the others were closed to admit the requests.
    let closed = futures::future::join_all(
        idle.iter_mut()
            .map(|stream| closed_within(stream, Duration::from_secs(5))),
    )
    .await
    .into_iter()
    .filter(Option::is_some)
    .count();
    assert!(
        closed >= IDLE - CAP as usize,
        "only {closed} of {IDLE} idle sockets were closed"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_the_peer_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app::server::serve(
        listener,
        router,
        ConnectionArgs::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&local.to_string()), "{answer}");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let entered = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let router = Router::new().route(
        "/slow",
        get({
            let (entered, release) = (entered.clone(), release.clone());
            move || async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }
        }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(app::server::serve(
        listener,
        router,
        ConnectionArgs::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = tokio::spawn(request(addr, "/slow"));
    entered.notified().await;
    let _ = stop.send(());
    // Stopping waits for the request: the server is still running a while later.
    let early = tokio::time::timeout(Duration::from_millis(200), &mut server).await;
    assert!(
        early.is_err(),
        "the server stopped with a request in flight"
    );
    release.notify_one();
    let answer = client.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops once the request is answered")
        .unwrap();
}
