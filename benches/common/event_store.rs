//! The event-store benchmark's workload, timing and report, shared word for word by both sides
//! of the comparison (`#[path]`-included): the payments module's own store
//! (`modules/payments/benches/event_store.rs`, main workspace, sqlx 0.9) and the `cqrs-es`
//! crates (`benches/cqrs-es`, a workspace of its own, sqlx 0.8). Each side implements
//! [`EventStoreUnderTest`]; everything else — the commands run, their order, what is timed,
//! the checks and the table — is this file, so the two tables are comparable row by row.
//!
//! The aggregate is a payment account: `AccountOpened { credit_limit_cents }`, then
//! `CreditReserved { payment_id, order_id, amount_cents }` (two UUIDs and an amount: the
//! payments module's own event). A **command** loads the account (from its snapshot when the
//! row uses snapshots), decides, appends the resulting events and commits durably; the first
//! command of a stream opens the account as well (two events).
//!
//! Rows:
//! - `append 1 stream, snap N` / `no snap`: `--appends` commands on one stream, one at a time.
//! - `append S×C streams, snap N`: `--streams` streams, `--per-stream` commands each, round
//!   robin.
//! - `load K=…, snap N` / `no snap`: rebuilding an account of K events, for `--load-seconds`
//!   (at least 10 loads), from the readers. The stream is filled beforehand by commands of 10
//!   events, so snapshots fall on multiples of N as they would one event at a time.
//!
//! Every append row, and every K of the load rows, runs on a fresh database (a temporary
//! directory on SQLite, a throwaway database on Postgres, dropped afterwards); append rows after
//! a warm-up on another stream of it. After the timed part the state is checked: version and
//! outstanding credit must be what the commands made.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use uuid::Uuid;

/// Credit limit of every account: high enough that no reservation is declined.
pub const LIMIT_CENTS: i64 = 1_000_000_000_000;
/// Events per command when filling a stream for the load rows.
pub const FILL_CHUNK: usize = 10;
/// Commands run on a stream of its own before an append row is timed.
const WARMUP_COMMANDS: usize = 20;
/// Loads run before a load row is timed.
const WARMUP_LOADS: usize = 5;
/// Loads per load row: at least, at most.
const MIN_LOADS: usize = 10;
const MAX_LOADS: usize = 20_000;

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres { admin_url: String },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Args {
    pub backend: Backend,
    pub snapshot_every: u32,
    pub appends: usize,
    pub streams: usize,
    pub per_stream: usize,
    pub loads: Vec<usize>,
    pub load_seconds: f64,
}

/// Parses the options. `None` when `require_bench` and `--bench` is missing (`cargo test`
/// runs a `harness = false` bench without it).
pub fn parse_args(require_bench: bool) -> anyhow::Result<Option<Args>> {
    let mut bench = false;
    let mut backend = "sqlite".to_owned();
    let mut snapshot_every = 20;
    let mut appends = 1000;
    let mut streams = 200;
    let mut per_stream = 5;
    let mut loads = vec![10, 100, 1000];
    let mut load_seconds = 1.5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => bench = true,
            "--backend" => backend = value()?,
            "--snapshot-every" => snapshot_every = value()?.parse().context("--snapshot-every")?,
            "--appends" => appends = value()?.parse().context("--appends")?,
            "--streams" => streams = value()?.parse().context("--streams")?,
            "--per-stream" => per_stream = value()?.parse().context("--per-stream")?,
            "--load-seconds" => load_seconds = value()?.parse().context("--load-seconds")?,
            "--loads" => {
                loads = value()?
                    .split(',')
                    .map(|k| k.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--loads")?;
            }
            other => bail!(
                "unknown argument {other:?}; expected --backend sqlite|postgres, \
                 --snapshot-every N, --appends N, --streams N, --per-stream N, \
                 --loads 10,100,1000, --load-seconds S"
            ),
        }
    }
    if require_bench && !bench {
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
    if snapshot_every == 0
        || appends == 0
        || streams == 0
        || per_stream == 0
        || loads.is_empty()
        || loads.iter().any(|k| *k < 2)
        || load_seconds <= 0.0
    {
        bail!("every count must be positive, every K at least 2");
    }
    Ok(Some(Args {
        backend,
        snapshot_every,
        appends,
        streams,
        per_stream,
        loads,
        load_seconds,
    }))
}

/// What a load returns: the stream version and the outstanding credit of the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub version: i64,
    pub outstanding_cents: i64,
}

/// One side of the comparison.
pub trait EventStoreUnderTest {
    type Db;

    /// Its name in the table: `bounded` or `cqrs-es`.
    fn name(&self) -> &'static str;
    /// The crates and versions measured, for the report.
    fn versions(&self) -> String;
    /// A fresh database; `snapshot_every` 0 = no snapshots taken or read.
    async fn open(&self, backend: &Backend, snapshot_every: u32) -> anyhow::Result<Self::Db>;
    /// Closes the pools and throws the database away.
    async fn close(&self, db: Self::Db) -> anyhow::Result<()>;
    /// The SQLite library's or the Postgres server's version.
    async fn server_version(&self, db: &Self::Db) -> anyhow::Result<String>;
    /// One command: load `stream` (from its snapshot when the database takes them), reserve
    /// `events` × 1 cent (opening the account first when it is not open: one more event),
    /// append and commit durably. Returns the number of events appended.
    async fn reserve(&self, db: &Self::Db, stream: Uuid, events: usize) -> anyhow::Result<usize>;
    /// Rebuilds `stream` from the readers, from its snapshot when `snapshots`.
    async fn load(&self, db: &Self::Db, stream: Uuid, snapshots: bool) -> anyhow::Result<Account>;
}

/// The figures of one row.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: String,
    /// Commands or loads timed.
    pub ops: usize,
    /// Events appended (append rows) or folded per load (load rows).
    pub events: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Whether the state checked after the row was right; the wrong state otherwise.
    pub check: Result<(), String>,
    pub append: bool,
}

impl Row {
    fn new(
        case: String,
        append: bool,
        events: usize,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
        check: Result<(), String>,
    ) -> Self {
        latencies.sort_unstable();
        Row {
            case,
            ops: latencies.len(),
            events,
            elapsed,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            check,
            append,
        }
    }

    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Events appended per second (append rows) or folded per second (load rows).
    pub fn events_per_s(&self) -> f64 {
        if self.append {
            self.events as f64 / self.elapsed.as_secs_f64()
        } else {
            (self.events * self.ops) as f64 / self.elapsed.as_secs_f64()
        }
    }
}

/// Nearest-rank percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn check(what: &str, got: Account, want: Account) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: version {} outstanding {}, expected version {} outstanding {}",
            got.version, got.outstanding_cents, want.version, want.outstanding_cents
        ))
    }
}

/// Runs one command (1 event) per stream in `order`, one after the other, and times each.
async fn timed_commands<S: EventStoreUnderTest>(
    store: &S,
    db: &S::Db,
    order: &[Uuid],
) -> anyhow::Result<(usize, Duration, Vec<Duration>)> {
    let mut latencies = Vec::with_capacity(order.len());
    let mut events = 0;
    let started = Instant::now();
    for stream in order {
        let t = Instant::now();
        events += store.reserve(db, *stream, 1).await?;
        latencies.push(t.elapsed());
    }
    Ok((events, started.elapsed(), latencies))
}

async fn warm_up<S: EventStoreUnderTest>(store: &S, db: &S::Db) -> anyhow::Result<()> {
    let stream = Uuid::now_v7();
    for _ in 0..WARMUP_COMMANDS {
        store.reserve(db, stream, 1).await?;
    }
    Ok(())
}

/// The append rows: `snap` uses snapshots (taken every `snapshot_every`), the others not.
async fn append_row<S: EventStoreUnderTest>(
    store: &S,
    args: &Args,
    streams: usize,
    per_stream: usize,
    snapshots: bool,
) -> anyhow::Result<Row> {
    let every = if snapshots { args.snapshot_every } else { 0 };
    let db = store.open(&args.backend, every).await?;
    warm_up(store, &db).await?;
    let ids: Vec<Uuid> = (0..streams).map(|_| Uuid::now_v7()).collect();
    let order: Vec<Uuid> = (0..per_stream).flat_map(|_| ids.iter().copied()).collect();
    let (events, elapsed, latencies) = timed_commands(store, &db, &order).await?;
    // Each stream: AccountOpened, then one CreditReserved of 1 cent per command.
    let want = Account {
        version: per_stream as i64 + 1,
        outstanding_cents: per_stream as i64,
    };
    let mut result = Ok(());
    for (i, id) in ids.iter().enumerate().take(3) {
        let replayed = store.load(&db, *id, false).await?;
        let loaded = store.load(&db, *id, snapshots).await?;
        result = result
            .and(check(&format!("stream {i} replayed"), replayed, want))
            .and(check(&format!("stream {i} loaded"), loaded, want));
    }
    store.close(db).await?;
    let case = match (streams, snapshots) {
        (1, true) => format!("append 1 stream, snap {}", args.snapshot_every),
        (1, false) => "append 1 stream, no snap".to_owned(),
        (_, true) => format!(
            "append {streams}x{per_stream} streams, snap {}",
            args.snapshot_every
        ),
        (_, false) => format!("append {streams}x{per_stream} streams, no snap"),
    };
    Ok(Row::new(case, true, events, elapsed, latencies, result))
}

/// The load rows of one K: a stream of K events (filled with snapshots every
/// `snapshot_every`), loaded without and with its snapshot.
async fn load_rows<S: EventStoreUnderTest>(
    store: &S,
    args: &Args,
    k: usize,
) -> anyhow::Result<Vec<Row>> {
    let db = store.open(&args.backend, args.snapshot_every).await?;
    let stream = Uuid::now_v7();
    // The first command opens the account: one event more than it reserves.
    let mut filled = store.reserve(&db, stream, FILL_CHUNK.min(k) - 1).await?;
    while filled < k {
        filled += store
            .reserve(&db, stream, FILL_CHUNK.min(k - filled))
            .await?;
    }
    let want = Account {
        version: k as i64,
        outstanding_cents: k as i64 - 1,
    };
    let mut rows = Vec::new();
    for snapshots in [false, true] {
        for _ in 0..WARMUP_LOADS {
            store.load(&db, stream, snapshots).await?;
        }
        let budget = Duration::from_secs_f64(args.load_seconds);
        let mut latencies = Vec::new();
        let mut last = None;
        let started = Instant::now();
        while latencies.len() < MIN_LOADS
            || (started.elapsed() < budget && latencies.len() < MAX_LOADS)
        {
            let t = Instant::now();
            last = Some(store.load(&db, stream, snapshots).await?);
            latencies.push(t.elapsed());
        }
        let elapsed = started.elapsed();
        let result = match last {
            Some(got) => check("loaded", got, want),
            None => Err("no load ran".to_owned()),
        };
        let case = if snapshots {
            format!("load K={k}, snap {}", args.snapshot_every)
        } else {
            format!("load K={k}, no snap")
        };
        rows.push(Row::new(case, false, k, elapsed, latencies, result));
    }
    store.close(db).await?;
    Ok(rows)
}

/// Runs every row, prints the table and, last, the figures as one JSON line.
pub async fn run<S: EventStoreUnderTest>(store: &S, args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let probe = store.open(&args.backend, 0).await?;
    let server = store.server_version(&probe).await?;
    store.close(probe).await?;
    println!(
        "event store benchmark: {} ({}) on {} {server}, {} CPUs",
        store.name(),
        store.versions(),
        args.backend.name(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let mut rows = vec![
        append_row(store, args, 1, args.appends, true).await?,
        append_row(store, args, 1, args.appends, false).await?,
        append_row(store, args, args.streams, args.per_stream, true).await?,
    ];
    for k in &args.loads {
        rows.extend(load_rows(store, args, *k).await?);
    }
    print!("{}", table(store.name(), args.backend.name(), &rows));
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| r.check.as_ref().err().map(|e| format!("{}: {e}", r.case)))
        .collect();
    for failure in &failed {
        println!("WRONG STATE {failure}");
    }
    println!("ran in {:.1} s", started.elapsed().as_secs_f64());
    let figures = json!({
        "impl": store.name(),
        "versions": store.versions(),
        "backend": args.backend.name(),
        "server": server,
        "snapshot_every": args.snapshot_every,
        "rows": rows.iter().map(|r| json!({
            "case": r.case,
            "ops": r.ops,
            "events": r.events,
            "seconds": (r.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "ops_per_s": r.ops_per_s().round(),
            "events_per_s": r.events_per_s().round(),
            "p50_ms": (ms(r.p50) * 1000.0).round() / 1000.0,
            "p99_ms": (ms(r.p99) * 1000.0).round() / 1000.0,
            "max_ms": (ms(r.max) * 1000.0).round() / 1000.0,
            "state_ok": r.check.is_ok(),
        })).collect::<Vec<_>>(),
    });
    println!("{figures}");
    Ok(())
}

/// The human-readable table; the same on both sides.
pub fn table(name: &str, backend: &str, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{name} on {backend}");
    let _ = writeln!(
        out,
        "{:<34} {:>6} {:>7} {:>10} {:>11} {:>8} {:>8} {:>8}  state",
        "case", "ops", "events", "ops/s", "events/s", "p50 ms", "p99 ms", "max ms"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<34} {:>6} {:>7} {:>10.0} {:>11.0} {:>8.3} {:>8.3} {:>8.3}  {}",
            r.case,
            r.ops,
            r.events,
            r.ops_per_s(),
            r.events_per_s(),
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            if r.check.is_ok() { "ok" } else { "WRONG" }
        );
    }
    out
}
