//! Messaging benchmarks: figures, not tests (`cargo test` does not run them).
//!
//! Measures, through one subscription (the scratch `consumer` following the scratch `source` of
//! the kernel's tests, `tests/scratch`, with a handler that upserts `member_replicas` — the shape
//! of orders' `customer_replicas` — as orders' own replicator does):
//!
//! - **latency**: commit of the source transaction → commit of the consumer batch that applied
//!   the event, with a producer committing one event per transaction at an open-loop rate;
//! - **throughput**: events/s applying a pre-filled outbox, per batch size, and its ratio to
//!   batch size 1 measured in the same run;
//! - **floors**, to show what bounds those figures: one bare write transaction with and
//!   without the flush at commit, and the throughput with a no-op handler.
//!
//! ```text
//! cargo bench -p shared-kernel --bench messaging -- --backend sqlite
//! BOUNDED_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p shared-kernel --bench messaging -- --backend postgres
//! ```
//!
//! Options: `--rounds N` (default 3), `--events N` (throughput, per round and batch size;
//! default 5000), `--rate R` (latency, events/s; default 200), `--seconds S` (latency, per
//! batch size over all rounds; default 12), `--batches 1,16,128`, `--only latency|throughput`.
//!
//! The batch sizes take turns round by round, so a disturbance of the machine (another build,
//! a slow disk flush) spreads over all of them instead of skewing one. Latencies are pooled
//! over the rounds; throughput is the median round. Every measurement runs on fresh databases
//! (a temporary directory on SQLite, a throwaway database on Postgres) and checks afterwards
//! that every event reached the consumer's table exactly once. Each figure comes with the CPU
//! and IO pressure (Linux PSI) while it ran. The last line printed is the figures as JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use serde_json::json;
use shared_kernel::messaging::{
    Bus, DeliveryConfig, Envelope, EventContext, Handler, Subscription, outbox,
};
use shared_kernel::storage::testing::TestDatabase;
use shared_kernel::storage::{ModuleDb, StorageConfig, Tx};
use shared_kernel::{clock, with_reader};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::sync::watch;

#[path = "../tests/scratch/mod.rs"]
mod scratch;

/// Events committed (and awaited) before a latency measurement starts: opens the pools'
/// connections and warms statement caches.
const WARMUP_EVENTS: usize = 50;
/// Events per source transaction when pre-filling the outbox for throughput.
const PREFILL_CHUNK: usize = 500;
/// Bare write transactions timed for the commit floor.
const FLOOR_COMMITS: usize = 300;
/// Give up on a measurement after this long.
const DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
enum Backend {
    Sqlite,
    Postgres { admin_url: String },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }
}

#[derive(Debug)]
struct Args {
    backend: Backend,
    rounds: usize,
    events: usize,
    rate: f64,
    seconds: f64,
    batches: Vec<i64>,
    latency: bool,
    throughput: bool,
}

/// `None` when not run by `cargo bench` (which passes `--bench`).
fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut bench = false;
    let mut backend = "sqlite".to_owned();
    let mut rounds = 3;
    let mut events = 5000;
    let mut rate = 200.0;
    let mut seconds = 12.0;
    let mut batches = vec![1, 16, 128];
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => bench = true,
            "--backend" => backend = value()?,
            "--rounds" => rounds = value()?.parse().context("--rounds")?,
            "--events" => events = value()?.parse().context("--events")?,
            "--rate" => rate = value()?.parse().context("--rate")?,
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--only" => only = Some(value()?),
            "--batches" => {
                batches = value()?
                    .split(',')
                    .map(|b| b.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--batches")?;
            }
            other => bail!(
                "unknown argument {other:?}; expected --backend sqlite|postgres, --rounds N, \
                 --events N, --rate R, --seconds S, --batches 1,16,128, \
                 --only latency|throughput"
            ),
        }
    }
    if !bench {
        return Ok(None);
    }
    let backend = match backend.as_str() {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres {
            admin_url: std::env::var("BOUNDED_TEST_DATABASE_URL")
                .ok()
                .filter(|url| !url.is_empty())
                .context("--backend postgres needs BOUNDED_TEST_DATABASE_URL (an admin URL)")?,
        },
        other => bail!("unknown backend {other:?}; expected sqlite or postgres"),
    };
    let (latency, throughput) = match only.as_deref() {
        None => (true, true),
        Some("latency") => (true, false),
        Some("throughput") => (false, true),
        Some(other) => bail!("unknown --only {other:?}; expected latency or throughput"),
    };
    if rounds == 0
        || events == 0
        || rate <= 0.0
        || seconds <= 0.0
        || batches.is_empty()
        || batches.iter().any(|b| *b < 1)
    {
        bail!("--rounds, --events, --rate, --seconds and every batch size must be positive");
    }
    Ok(Some(Args {
        backend,
        rounds,
        events,
        rate,
        seconds,
        batches,
        latency,
        throughput,
    }))
}

/// The source and consumer databases of one measurement, thrown away afterwards.
struct Env {
    source: ModuleDb,
    consumer: ModuleDb,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

impl Env {
    async fn open(backend: &Backend) -> anyhow::Result<Self> {
        let (config, dir, database) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                (StorageConfig::sqlite(dir.path()), Some(dir), None)
            }
            Backend::Postgres { admin_url } => {
                let database = TestDatabase::create(admin_url).await;
                (
                    StorageConfig::postgres(database.url()),
                    None,
                    Some(database),
                )
            }
        };
        let (source, consumer) = scratch::open(&config).await?;
        Ok(Self {
            source,
            consumer,
            _dir: dir,
            _database: database,
        })
    }

    /// A bus with one subscription, `consumer` following `source`, not started yet.
    fn bus(&self, name: &str, batch_size: i64, handler: Arc<dyn Handler>) -> Bus {
        let bus = Bus::new(DeliveryConfig {
            batch_size,
            ..Default::default()
        });
        bus.add_module(self.source.clone());
        bus.add_module(self.consumer.clone());
        bus.subscribe(Subscription::named(
            name,
            scratch::CONSUMER,
            scratch::SOURCE,
            handler,
        ));
        bus
    }

    /// Fails unless the subscription applied exactly `events` events, each once: a benchmark
    /// of a runtime that loses or repeats events measures nothing.
    async fn check_applied(&self, name: &str, events: i64, handler: &str) -> anyhow::Result<()> {
        let (inbox, replicas): (i64, i64) = with_reader!(self.consumer.reader()?, |pool| {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM inbox WHERE subscription = $1), \
                        (SELECT COUNT(*) FROM member_replicas)",
            )
            .bind(name)
            .fetch_one(pool)
            .await
        })?;
        let expected_replicas = if handler == "noop" { 0 } else { events };
        if inbox != events || replicas != expected_replicas {
            bail!(
                "{events} events committed, but the inbox holds {inbox} and the handler wrote \
                 {replicas} replicas"
            );
        }
        Ok(())
    }

    /// On Postgres: what the rest of the server did so far (checkpoints, transactions of other
    /// databases), to tell this process's tail latencies from a neighbour's work.
    async fn server_activity(&self, backend: &Backend) -> anyhow::Result<Option<ServerActivity>> {
        let (Backend::Postgres { admin_url }, Some(database)) = (backend, &self._database) else {
            return Ok(None);
        };
        let mut conn = PgConnection::connect(admin_url).await?;
        let (checkpoints, other_transactions): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter), \
                    (SELECT COALESCE(SUM(xact_commit + xact_rollback), 0)::BIGINT \
                       FROM pg_stat_database WHERE datname IS DISTINCT FROM $1)",
        )
        .bind(database.name())
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok(Some(ServerActivity {
            checkpoints,
            other_transactions,
        }))
    }

    /// On Postgres, once the pools are closed: transactions this measurement's database
    /// committed and rolled back. The subscription's worker rolls back the transaction of every
    /// look that finds nothing new, so rollbacks count its idle looks.
    async fn own_transactions(&self, backend: &Backend) -> anyhow::Result<Option<(i64, i64)>> {
        let (Backend::Postgres { admin_url }, Some(database)) = (backend, &self._database) else {
            return Ok(None);
        };
        self.source.close().await;
        self.consumer.close().await;
        // Backends flush their statistics as they exit, shortly after their pool closed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut conn = PgConnection::connect(admin_url).await?;
        let counts: (i64, i64) = sqlx::query_as(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
        )
        .bind(database.name())
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok(Some(counts))
    }

    async fn close(self) {
        self.source.close().await;
        self.consumer.close().await;
    }
}

/// Does nothing: what is left is the runtime's own cost (outbox read, inbox row, checkpoint,
/// commit).
struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn handle(&self, _tx: &mut Tx, _event: &Envelope) -> anyhow::Result<()> {
        Ok(())
    }
}

fn handler(name: &str) -> Arc<dyn Handler> {
    match name {
        "noop" => Arc::new(Noop),
        _ => Arc::new(scratch::Replicate),
    }
}

/// Appends `n` events in one source transaction and commits it; returns the last seq, which
/// `head` (the source's last seq: only this bench appends to its fresh source) counts.
async fn append(source: &ModuleDb, n: usize, head: &mut i64) -> anyhow::Result<i64> {
    let mut tx = source.begin().await?;
    for i in 0..n {
        outbox::append(&mut tx, &scratch::member(i), &EventContext::default())?;
    }
    tx.commit().await?;
    *head += i64::try_from(n)?;
    Ok(*head)
}

/// Waits until the subscription has applied `seq`.
async fn applied_up_to(applied: &mut watch::Receiver<i64>, seq: i64) -> anyhow::Result<()> {
    tokio::time::timeout(DEADLINE, applied.wait_for(|s| *s >= seq))
        .await
        .context("the subscription did not catch up in time")?
        .context("the subscription's worker is gone")?;
    Ok(())
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[derive(Debug)]
struct Percentiles {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Percentiles {
    fn of(mut values: Vec<Duration>) -> Self {
        values.sort_unstable();
        Self {
            p50: percentile(&values, 50.0),
            p90: percentile(&values, 90.0),
            p99: percentile(&values, 99.0),
            max: values.last().copied().unwrap_or_default(),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "p50_ms": round3(ms(self.p50)),
            "p90_ms": round3(ms(self.p90)),
            "p99_ms": round3(ms(self.p99)),
            "max_ms": round3(ms(self.max)),
        })
    }
}

/// Share of wall time in which some task waited for a CPU, and for IO (Linux PSI, "some" line
/// of `/proc/pressure/{cpu,io}`). This process's own threads count too, so neither is 0 under
/// load; values well above those of a quiet run mean something else competed for the machine.
#[derive(Debug, Clone, Copy, Default)]
struct Pressure {
    cpu: Option<f64>,
    io: Option<f64>,
}

/// PSI counters at the start of a measurement.
struct PressureMeter {
    cpu: Option<u64>,
    io: Option<u64>,
    at: Instant,
}

impl PressureMeter {
    fn total_us(resource: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/pressure/{resource}")).ok()?;
        let some = text.lines().find(|l| l.starts_with("some"))?;
        some.split_whitespace()
            .find_map(|field| field.strip_prefix("total="))?
            .parse()
            .ok()
    }

    fn start() -> Self {
        Self {
            cpu: Self::total_us("cpu"),
            io: Self::total_us("io"),
            at: Instant::now(),
        }
    }

    fn stop(self) -> Pressure {
        let seconds = self.at.elapsed().as_secs_f64();
        let percent = |from: Option<u64>, resource| {
            let to = Self::total_us(resource)?;
            Some(to.saturating_sub(from?) as f64 / 1e4 / seconds)
        };
        Pressure {
            cpu: percent(self.cpu, "cpu"),
            io: percent(self.io, "io"),
        }
    }
}

impl Pressure {
    fn mean(all: &[Pressure]) -> Pressure {
        let mean = |values: Vec<f64>| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        Pressure {
            cpu: mean(all.iter().filter_map(|p| p.cpu).collect()),
            io: mean(all.iter().filter_map(|p| p.io).collect()),
        }
    }

    fn show(&self) -> String {
        let show = |p: Option<f64>| p.map_or("-".to_owned(), |p| format!("{p:.0}%"));
        format!("{}/{}", show(self.cpu), show(self.io))
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "cpu_percent": self.cpu.map(f64::round),
            "io_percent": self.io.map(f64::round),
        })
    }
}

/// Cluster-wide Postgres counters; differences between two readings.
#[derive(Debug, Clone, Copy, Default)]
struct ServerActivity {
    checkpoints: i64,
    other_transactions: i64,
}

impl ServerActivity {
    fn since(self, before: Self) -> Self {
        Self {
            checkpoints: self.checkpoints - before.checkpoints,
            other_transactions: self.other_transactions - before.other_transactions,
        }
    }
}

/// One latency round at one batch size.
#[derive(Debug)]
struct LatencyRound {
    /// Source commit returned → the consumer batch holding the event committed.
    latencies: Vec<Duration>,
    /// Duration of the producer's own transactions (begin, append, commit).
    source_commits: Vec<Duration>,
    /// Consumer batches seen committing.
    batches: usize,
    produced_in: Duration,
    pressure: Pressure,
    /// Postgres only: checkpoints and other databases' transactions meanwhile.
    server: Option<ServerActivity>,
    /// Postgres only: rolled back transactions (idle looks of the worker) per event, over the
    /// whole round including its warm-up.
    rollbacks_per_event: Option<f64>,
}

/// One producer commits one event per transaction at `rate`/s for `seconds` (open loop: the
/// schedule does not wait for the consumer); a watcher timestamps each change of the
/// subscription's applied seq.
async fn latency_round(
    backend: &Backend,
    batch: i64,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<LatencyRound> {
    let env = Env::open(backend).await?;
    let name = format!("bench-latency-{batch}");
    let bus = env.bus(&name, batch, Arc::new(scratch::Replicate));
    let workers = bus.start();
    let mut applied = bus.applied(&name).context("subscription not started")?;

    let period = Duration::from_secs_f64(1.0 / rate);
    let (mut warmed, mut head) = (0, 0);
    for _ in 0..WARMUP_EVENTS {
        warmed = append(&env.source, 1, &mut head).await?;
        tokio::time::sleep(period).await;
    }
    applied_up_to(&mut applied, warmed).await?;

    let count = ((rate * seconds).round() as usize).max(1);
    let last = warmed + count as i64;
    let mut watcher = applied.clone();
    watcher.mark_unchanged();
    let watching = tokio::spawn(async move {
        let mut seen: Vec<(i64, Instant)> = Vec::new();
        while watcher.changed().await.is_ok() {
            let at = Instant::now();
            let seq = *watcher.borrow_and_update();
            seen.push((seq, at));
            if seq >= last {
                break;
            }
        }
        seen
    });

    let mut commits: Vec<(i64, Instant)> = Vec::with_capacity(count);
    let mut source_commits = Vec::with_capacity(count);
    let server_before = env.server_activity(backend).await?;
    let pressure = PressureMeter::start();
    let start = tokio::time::Instant::now();
    for i in 0..count {
        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
        let began = Instant::now();
        let seq = append(&env.source, 1, &mut head).await?;
        let done = Instant::now();
        commits.push((seq, done));
        source_commits.push(done - began);
    }
    let produced_in = start.elapsed();
    let seen = tokio::time::timeout(DEADLINE, watching)
        .await
        .context("the subscription did not catch up in time")??;
    let pressure = pressure.stop();
    let server = env
        .server_activity(backend)
        .await?
        .zip(server_before)
        .map(|(after, before)| after.since(before));
    workers.stop().await;
    env.check_applied(&name, last, "upsert").await?;
    let rollbacks_per_event = env
        .own_transactions(backend)
        .await?
        .map(|(_, rollbacks)| rollbacks as f64 / last as f64);
    env.close().await;

    let mut latencies = Vec::with_capacity(count);
    for (seq, committed) in &commits {
        let i = seen.partition_point(|(applied, _)| applied < seq);
        let (_, handled) = seen
            .get(i)
            .with_context(|| format!("seq {seq} was never applied"))?;
        latencies.push(handled.saturating_duration_since(*committed));
    }
    Ok(LatencyRound {
        latencies,
        source_commits,
        batches: seen.len(),
        produced_in,
        pressure,
        server,
        rollbacks_per_event,
    })
}

/// The rounds of one batch size, pooled.
#[derive(Debug)]
struct Latency {
    batch: i64,
    events: usize,
    latency: Percentiles,
    source_commit: Percentiles,
    batches: usize,
    achieved_rate: f64,
    round_p99: Vec<Duration>,
    pressure: Pressure,
    round_server: Vec<Option<ServerActivity>>,
    round_pressure: Vec<Pressure>,
    round_rollbacks: Vec<Option<f64>>,
}

impl Latency {
    fn pool(batch: i64, rounds: Vec<LatencyRound>) -> Self {
        let round_p99 = rounds
            .iter()
            .map(|r| Percentiles::of(r.latencies.clone()).p99)
            .collect();
        let events = rounds.iter().map(|r| r.latencies.len()).sum::<usize>();
        let produced_in = rounds.iter().map(|r| r.produced_in).sum::<Duration>();
        Self {
            batch,
            events,
            latency: Percentiles::of(rounds.iter().flat_map(|r| r.latencies.clone()).collect()),
            source_commit: Percentiles::of(
                rounds
                    .iter()
                    .flat_map(|r| r.source_commits.clone())
                    .collect(),
            ),
            batches: rounds.iter().map(|r| r.batches).sum(),
            achieved_rate: events as f64 / produced_in.as_secs_f64(),
            round_p99,
            pressure: Pressure::mean(&rounds.iter().map(|r| r.pressure).collect::<Vec<_>>()),
            round_server: rounds.iter().map(|r| r.server).collect(),
            round_pressure: rounds.iter().map(|r| r.pressure).collect(),
            round_rollbacks: rounds.iter().map(|r| r.rollbacks_per_event).collect(),
        }
    }
}

/// Pre-fills the outbox with `events` while no worker runs, then times the subscription from
/// its start until it has applied the last one. Returns the time and the pressure meanwhile.
async fn throughput_round(
    backend: &Backend,
    batch: i64,
    events: usize,
    handler_name: &str,
) -> anyhow::Result<(Duration, Pressure)> {
    let env = Env::open(backend).await?;
    let (mut last, mut head) = (0, 0);
    let mut left = events;
    while left > 0 {
        let n = left.min(PREFILL_CHUNK);
        last = append(&env.source, n, &mut head).await?;
        left -= n;
    }
    let name = format!("bench-throughput-{handler_name}-{batch}");
    let bus = env.bus(&name, batch, handler(handler_name));
    let pressure = PressureMeter::start();
    let started = Instant::now();
    let workers = bus.start();
    let mut applied = bus.applied(&name).context("subscription not started")?;
    applied_up_to(&mut applied, last).await?;
    let elapsed = started.elapsed();
    let pressure = pressure.stop();
    workers.stop().await;
    env.check_applied(&name, last, handler_name).await?;
    env.close().await;
    Ok((elapsed, pressure))
}

/// All rounds of one batch size and handler.
#[derive(Debug)]
struct Throughput {
    batch: i64,
    handler: &'static str,
    events: usize,
    /// Events/s of each round.
    rounds: Vec<f64>,
    pressure: Vec<Pressure>,
}

impl Throughput {
    fn median(&self) -> f64 {
        median(&self.rounds)
    }
}

/// The cost of one write transaction with nothing of the runtime in it: `FLOOR_COMMITS`
/// transactions of one row each on a bench-owned table, over a plain connection, first durable
/// as the modules run (SQLite `synchronous = FULL`, Postgres `synchronous_commit = on`), then
/// without waiting for the flush (`synchronous = NORMAL`, `synchronous_commit = off`). The
/// difference is the flush (fsync) of one commit.
async fn commit_floor(backend: &Backend) -> anyhow::Result<Floor> {
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS bench_floor (id UUID PRIMARY KEY, \
         name TEXT NOT NULL, email TEXT NOT NULL, source_seq BIGINT NOT NULL, \
         updated_at TIMESTAMPTZ NOT NULL)";
    const INSERT: &str = "INSERT INTO bench_floor (id, name, email, source_seq, updated_at) \
         VALUES ($1, $2, $3, $4, $5)";
    macro_rules! time_commits {
        ($conn:expr) => {{
            sqlx::query(CREATE).execute(&mut $conn).await?;
            let mut times = Vec::with_capacity(FLOOR_COMMITS);
            for i in 0..FLOOR_COMMITS + WARMUP_EVENTS {
                let member = scratch::member(i);
                let began = Instant::now();
                let mut tx = $conn.begin().await?;
                sqlx::query(INSERT)
                    .bind(member.member_id.0)
                    .bind(&member.name)
                    .bind(&member.email)
                    .bind(i as i64)
                    .bind(clock::now())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                if i >= WARMUP_EVENTS {
                    times.push(began.elapsed());
                }
            }
            Percentiles::of(times)
        }};
    }
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir()?;
            let options = |synchronous| {
                SqliteConnectOptions::new()
                    .filename(dir.path().join(format!("floor-{synchronous:?}.sqlite")))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous)
                    .foreign_keys(true)
            };
            let mut durable =
                SqliteConnection::connect_with(&options(SqliteSynchronous::Full)).await?;
            let mut lazy =
                SqliteConnection::connect_with(&options(SqliteSynchronous::Normal)).await?;
            Ok(Floor {
                durable: time_commits!(durable),
                no_flush: time_commits!(lazy),
            })
        }
        Backend::Postgres { admin_url } => {
            let database = TestDatabase::create(admin_url).await;
            let mut conn = PgConnection::connect(database.url()).await?;
            let durable = time_commits!(conn);
            sqlx::query("SET synchronous_commit = off")
                .execute(&mut conn)
                .await?;
            let no_flush = time_commits!(conn);
            conn.close().await?;
            Ok(Floor { durable, no_flush })
        }
    }
}

#[derive(Debug)]
struct Floor {
    durable: Percentiles,
    no_flush: Percentiles,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Some(args) = parse_args()? else {
        println!(
            "messaging benchmarks run under `cargo bench -p shared-kernel --bench messaging`; skipped"
        );
        return Ok(());
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let backend = args.backend.name();
    println!(
        "messaging benchmark: backend {backend}, {cpus} CPUs ({}), batch sizes {:?}, {} rounds",
        cpu_model(),
        args.batches,
        args.rounds
    );
    let run_started = Instant::now();

    let floor = commit_floor(&args.backend).await?;
    println!(
        "\ncommit floor: {FLOOR_COMMITS} transactions of one insert each, plain connection, no \
         runtime"
    );
    println!(
        "  durable:        p50 {:.2} ms, p99 {:.2} ms → at most ~{:.0} transactions/s",
        ms(floor.durable.p50),
        ms(floor.durable.p99),
        1.0 / floor.durable.p50.as_secs_f64()
    );
    println!(
        "  without flush:  p50 {:.2} ms, p99 {:.2} ms → the flush costs ~{:.2} ms per commit",
        ms(floor.no_flush.p50),
        ms(floor.no_flush.p99),
        ms(floor.durable.p50.saturating_sub(floor.no_flush.p50))
    );
    let latencies = if args.latency {
        latency_table(&args).await?
    } else {
        Vec::new()
    };
    let throughputs = if args.throughput {
        throughput_table(&args).await?
    } else {
        Vec::new()
    };
    let base = batch_1(&throughputs);
    println!(
        "\ntotal run time {:.0} s",
        run_started.elapsed().as_secs_f64()
    );

    let figures = json!({
        "backend": backend,
        "cpus": cpus,
        "cpu_model": cpu_model(),
        "rounds": args.rounds,
        "commit_floor": {
            "durable": floor.durable.json(),
            "no_flush": floor.no_flush.json(),
        },
        "latency": latencies.iter().map(|l| json!({
            "batch": l.batch,
            "events": l.events,
            "rate": args.rate,
            "achieved_rate": l.achieved_rate.round(),
            "latency": l.latency.json(),
            "p99_ms_per_round": l.round_p99.iter().map(|d| round3(ms(*d))).collect::<Vec<_>>(),
            "source_commit": l.source_commit.json(),
            "consumer_batches": l.batches,
            "pressure": l.pressure.json(),
            "pressure_per_round": l.round_pressure.iter().map(Pressure::json).collect::<Vec<_>>(),
            "postgres_checkpoints_per_round": l.round_server.iter()
                .map(|s| s.map(|s| s.checkpoints)).collect::<Vec<_>>(),
            "postgres_rollbacks_per_event_per_round": l.round_rollbacks.iter()
                .map(|r| r.map(round3)).collect::<Vec<_>>(),
            "postgres_other_transactions_per_round": l.round_server.iter()
                .map(|s| s.map(|s| s.other_transactions)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "throughput": throughputs.iter().map(|t| json!({
            "batch": t.batch,
            "handler": t.handler,
            "events_per_round": t.events,
            "events_per_s_median": t.median().round(),
            "events_per_s_rounds": t.rounds.iter().map(|r| r.round()).collect::<Vec<_>>(),
            "vs_batch_1": base.map(|b| round3(t.median() / b)),
            "pressure": Pressure::mean(&t.pressure).json(),
        })).collect::<Vec<_>>(),
    });
    println!("{figures}");
    Ok(())
}

async fn latency_table(args: &Args) -> anyhow::Result<Vec<Latency>> {
    let seconds = args.seconds / args.rounds as f64;
    println!(
        "\nlatency: source commit → handler committed; {:.0} events/s open loop, one event per \
         source transaction, {} rounds of {seconds:.1} s per batch size",
        args.rate, args.rounds
    );
    let mut rounds: Vec<Vec<LatencyRound>> = args.batches.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.rounds {
        for (i, &batch) in args.batches.iter().enumerate() {
            let round = latency_round(&args.backend, batch, args.rate, seconds)
                .await
                .with_context(|| format!("latency at batch size {batch}"))?;
            rounds[i].push(round);
        }
    }
    println!(
        "{:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:>19} {:>9}",
        "batch",
        "events",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "batches",
        "achieved/s",
        "src commit p50/p99",
        "psi c/io"
    );
    let mut latencies = Vec::new();
    for (&batch, rounds) in args.batches.iter().zip(rounds) {
        let l = Latency::pool(batch, rounds);
        println!(
            "{:>5} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8} {:>10.0} {:>7.2} / {:>5.2} ms {:>9}",
            l.batch,
            l.events,
            ms(l.latency.p50),
            ms(l.latency.p90),
            ms(l.latency.p99),
            ms(l.latency.max),
            l.batches,
            l.achieved_rate,
            ms(l.source_commit.p50),
            ms(l.source_commit.p99),
            l.pressure.show(),
        );
        latencies.push(l);
    }
    println!("p99 of each round, in the order run:");
    for l in &latencies {
        let p99: Vec<String> = l
            .round_p99
            .iter()
            .map(|d| format!("{:.2}", ms(*d)))
            .collect();
        let pressure: Vec<String> = l.round_pressure.iter().map(Pressure::show).collect();
        let mut line = format!(
            "{:>5}  {} ms   psi c/io {}",
            l.batch,
            p99.join(" / "),
            pressure.join(" ")
        );
        if l.round_server.iter().all(Option::is_some) {
            let (checkpoints, others): (Vec<String>, Vec<String>) = l
                .round_server
                .iter()
                .flatten()
                .map(|s| (s.checkpoints.to_string(), s.other_transactions.to_string()))
                .unzip();
            line.push_str(&format!(
                "   checkpoints {}, other databases' transactions {}",
                checkpoints.join(" / "),
                others.join(" / ")
            ));
        }
        if l.round_rollbacks.iter().all(Option::is_some) {
            let rollbacks: Vec<String> = l
                .round_rollbacks
                .iter()
                .flatten()
                .map(|r| format!("{r:.2}"))
                .collect();
            line.push_str(&format!(", rollbacks per event {}", rollbacks.join(" / ")));
        }
        println!("{line}");
    }
    Ok(latencies)
}

async fn throughput_table(args: &Args) -> anyhow::Result<Vec<Throughput>> {
    // Batch sizes with the real handler, then the runtime's own cost without handler work: per
    // transaction (batch 1) and per event (the largest batch).
    let largest = args.batches.iter().copied().max().unwrap_or(1);
    let mut throughputs: Vec<Throughput> = args
        .batches
        .iter()
        .map(|&batch| (batch, args.events, "upsert"))
        .chain([
            (1, (args.events / 5).max(1), "noop"),
            (largest, args.events, "noop"),
        ])
        .map(|(batch, events, handler)| Throughput {
            batch,
            handler,
            events,
            rounds: Vec::new(),
            pressure: Vec::new(),
        })
        .collect();
    println!(
        "\nthroughput: events pre-filled, then applied through one subscription from its start; \
         {} rounds, median",
        args.rounds
    );
    for _ in 0..args.rounds {
        for t in &mut throughputs {
            let (elapsed, pressure) = throughput_round(&args.backend, t.batch, t.events, t.handler)
                .await
                .with_context(|| format!("throughput at batch size {}", t.batch))?;
            t.rounds.push(t.events as f64 / elapsed.as_secs_f64());
            t.pressure.push(pressure);
        }
    }
    println!(
        "{:>5} {:>8} {:>7} {:>10} {:>15} {:>11} {:>9}",
        "batch", "handler", "events", "events/s", "rounds min–max", "vs batch 1", "psi c/io"
    );
    let base = batch_1(&throughputs);
    for t in &throughputs {
        let ratio = base.map_or(String::from("-"), |b| format!("{:.1}x", t.median() / b));
        let min = t.rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = t.rounds.iter().copied().fold(0.0, f64::max);
        println!(
            "{:>5} {:>8} {:>7} {:>10.0} {:>15} {:>11} {:>9}",
            t.batch,
            t.handler,
            t.events,
            t.median(),
            format!("{min:.0}–{max:.0}"),
            ratio,
            Pressure::mean(&t.pressure).show()
        );
    }
    Ok(throughputs)
}

/// Median events/s of batch size 1 with the real handler: what the other figures are compared
/// with.
fn batch_1(throughputs: &[Throughput]) -> Option<f64> {
    throughputs
        .iter()
        .find(|t| t.batch == 1 && t.handler == "upsert")
        .map(Throughput::median)
}
