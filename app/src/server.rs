//! The HTTP server loop: hyper connections with a header read timeout, an idle timeout and a
//! cap on open connections, graceful shutdown, and the peer address for handlers
//! (`axum::extract::ConnectInfo<SocketAddr>`).
//!
//! `axum::serve` keeps every accepted socket open for as long as the client wants: a few
//! thousand idle or half-sent connections use up the process's file descriptors and then the
//! module databases cannot open theirs. Here every connection holds one of
//! `--max-connections` slots. When all are taken, the least recently active connection with no
//! request in flight is asked to close (an idle HTTP/1 connection closes at once, an HTTP/2 one
//! gets GOAWAY), so idle sockets can never lock active clients out; with every connection busy
//! the next one waits in the listen backlog until a slot frees. Answering 503 past the cap was
//! the alternative, but then a client arriving while idle sockets fill the slots would be
//! refused until they time out.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::ConnectionArgs;

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// in-flight request finish and returns once the last connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // A peer that stops answering pings is gone; its connection is closed.
        .keep_alive_interval(Some(limits.idle_timeout.min(Duration::from_secs(20))))
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let slots = usize::try_from(limits.max_connections).unwrap_or(usize::MAX);
    let registry = Registry::new(slots);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // pause briefly rather than spin, and keep serving.
                    tracing::warn!(%error, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Accepted first, so that an idle connection is closed only when a new one is waiting.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = registry.admit() => permit,
        };
        let connection = registry.open(permit);
        tokio::spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            builder.clone(),
            connection,
            limits.idle_timeout,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    registry.closed_all().await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    connection: Connection,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let activity = connection.activity.clone();
    let service = tower::service_fn(move |mut request: axum::extract::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = activity.begin();
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(busy);
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut closing = false;
    // A connection busy when its deadline passes cannot have been idle for the timeout before
    // another whole timeout from then; without this floor a request longer than the timeout
    // (a rebuild, a reconciliation) would make this loop spin until it ends.
    let mut not_before = Instant::now();
    loop {
        let idle_deadline = (connection.activity.idle_since() + idle_timeout).max(not_before);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %peer, error = %error, "Connection ended with an error.");
                }
                break;
            }
            () = connection.evicted.notified(), if !closing => {
                tracing::debug!(peer = %peer, "Closing an idle connection to admit a new one.");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            changed = stop.changed(), if !closing => {
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = tokio::time::sleep_until(idle_deadline), if !closing => {
                // The deadline moves with every request; only a connection that stayed idle
                // the whole time is closed.
                if connection.activity.is_idle_for(idle_timeout) {
                    tracing::debug!(peer = %peer, "Closing a connection idle for the idle timeout.");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                } else if !connection.activity.is_idle() {
                    not_before = Instant::now() + idle_timeout;
                }
            }
        }
    }
}

/// What a connection has been doing: requests in flight and when it last started or finished
/// one (or was accepted).
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last change.
    last_active_ms: AtomicU64,
    /// Woken when a connection becomes idle, so that a full server can close it.
    became_idle: Arc<Notify>,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Release);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }

    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_active_ms.load(Ordering::Acquire))
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn is_idle_for(&self, timeout: Duration) -> bool {
        self.is_idle() && self.idle_since() + timeout <= Instant::now()
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.became_idle.notify_one();
        }
    }
}

/// An open connection's slot; dropping it frees the slot.
#[derive(Debug)]
struct Connection {
    id: u64,
    activity: Arc<Activity>,
    evicted: Arc<Notify>,
    registry: Registry,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Ok(mut open) = self.registry.inner.open.lock() {
            open.remove(&self.id);
        }
    }
}

#[derive(Debug)]
struct Entry {
    activity: Arc<Activity>,
    evicted: Arc<Notify>,
    /// Asked to close already; not a candidate again.
    evicting: bool,
}

/// The open connections and their slots.
#[derive(Debug, Clone)]
struct Registry {
    inner: Arc<RegistryInner>,
}

#[derive(Debug)]
struct RegistryInner {
    slots: Arc<Semaphore>,
    capacity: u32,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
    became_idle: Arc<Notify>,
    epoch: Instant,
}

impl Registry {
    fn new(slots: usize) -> Self {
        let slots = slots.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(RegistryInner {
                slots: Arc::new(Semaphore::new(slots)),
                capacity: u32::try_from(slots).unwrap_or(u32::MAX),
                next_id: AtomicU64::new(0),
                open: Mutex::new(HashMap::new()),
                became_idle: Arc::new(Notify::new()),
                epoch: Instant::now(),
            }),
        }
    }

    /// A free slot; when there is none, the least recently active idle connection is asked to
    /// close and its slot is taken once it has.
    async fn admit(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.inner.slots.clone().try_acquire_owned() {
                return permit;
            }
            self.evict_idlest();
            tokio::select! {
                permit = self.inner.slots.clone().acquire_owned() => {
                    if let Ok(permit) = permit {
                        return permit;
                    }
                }
                // A connection that was busy is idle now: try again to free a slot.
                () = self.inner.became_idle.notified() => {}
            }
        }
    }

    fn evict_idlest(&self) {
        let Ok(mut open) = self.inner.open.lock() else {
            return;
        };
        let idlest = open
            .values_mut()
            .filter(|entry| !entry.evicting && entry.activity.is_idle())
            .min_by_key(|entry| entry.activity.last_active_ms.load(Ordering::Acquire));
        if let Some(entry) = idlest {
            entry.evicting = true;
            // A permit is stored even if the connection task is not waiting yet.
            entry.evicted.notify_one();
        }
    }

    fn open(&self, permit: OwnedSemaphorePermit) -> Connection {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            epoch: self.inner.epoch,
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            became_idle: self.inner.became_idle.clone(),
        });
        activity.touch();
        let evicted = Arc::new(Notify::new());
        if let Ok(mut open) = self.inner.open.lock() {
            open.insert(
                id,
                Entry {
                    activity: activity.clone(),
                    evicted: evicted.clone(),
                    evicting: false,
                },
            );
        }
        Connection {
            id,
            activity,
            evicted,
            registry: self.clone(),
            _permit: permit,
        }
    }

    /// Resolves once every connection has closed: all slots are free again.
    async fn closed_all(&self) {
        let _ = self.inner.slots.acquire_many(self.inner.capacity).await;
    }
}
