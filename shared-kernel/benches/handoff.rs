//! What a thread hand-off per statement costs on SQLite (issue 13, item 2), measured on the
//! machine rather than argued from a profile.
//!
//! The same write transactions — `K` single-row updates and a commit, in WAL mode with
//! `synchronous = FULL` as the modules run — go through two drivers, alternating, each on a
//! fresh database file:
//! - **sqlx** (what the modules use): one writer connection; `BEGIN`, every statement and
//!   `COMMIT` are each a command to the connection's worker thread and an answer back.
//! - **owned thread**: rusqlite on a thread of its own that runs the whole transaction as one
//!   closure sent over a channel, answered by a oneshot: one hand-off per transaction.
//!
//! Prints, per driver, `K` and number of concurrent callers: transactions/s, wall time and
//! process CPU time per transaction (user + system of the whole process, from
//! `/proc/self/stat`), then the same as JSON on the last line. After each run the table's
//! total must be exactly `K` × transactions, or the bench fails.
//!
//! `cargo bench -p shared-kernel --bench handoff [-- --transactions 2000 --rounds 3]`

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Rows of the table the transactions update.
const ROWS: i64 = 1000;
/// Statements per transaction.
const STATEMENTS: [usize; 3] = [1, 8, 16];
/// Concurrent callers.
const CALLERS: [usize; 2] = [1, 16];

/// The row the `j`-th statement of transaction `i` updates: spread over the table, the same
/// for both drivers.
fn row(i: usize, j: usize) -> i64 {
    ((i * 7919 + j * 104_729) % ROWS as usize) as i64 + 1
}

/// The process's CPU time so far (user + system, all threads), from `/proc/self/stat` in
/// clock ticks of 10 ms (Linux's `USER_HZ`).
fn cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

const SETUP: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); \
    WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000) \
    INSERT INTO t (id, n) SELECT i, 0 FROM r";
const UPDATE: &str = "UPDATE t SET n = n + 1 WHERE id = $1";

/// A unit of work for the owned thread.
type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// A rusqlite connection on a thread of its own, running whole closures.
#[derive(Clone)]
struct Owned {
    jobs: mpsc::Sender<Job>,
}

impl Owned {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            let mut conn = conn;
            for job in queue {
                job(&mut conn);
            }
        });
        Ok(Self { jobs })
    }

    async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> R + Send + 'static,
    ) -> anyhow::Result<R> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = done.send(work(conn));
            }))
            .ok()
            .context("the writer thread stopped")?;
        answer.await.context("the writer thread dropped the job")
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Driver {
    Sqlx,
    Owned,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Sqlx => "sqlx (a hand-off per statement)",
            Driver::Owned => "owned thread (one per transaction)",
        }
    }
}

/// One measurement: `transactions` transactions of `statements` updates by `callers`
/// concurrent tasks, on a fresh database. Returns wall time and CPU time.
async fn measure(
    driver: Driver,
    statements: usize,
    callers: usize,
    transactions: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("handoff.sqlite");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    sqlx::raw_sql(SETUP).execute(&pool).await?;
    let owned = match driver {
        Driver::Owned => {
            pool.close().await;
            Some(Owned::open(&path)?)
        }
        Driver::Sqlx => None,
    };
    let per_caller = transactions / callers;
    let (cpu_before, started) = (cpu()?, Instant::now());
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (pool, owned) = (pool.clone(), owned.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..per_caller {
                let i = caller * per_caller + k;
                let rows: Vec<i64> = (0..statements).map(|j| row(i, j)).collect();
                match &owned {
                    Some(owned) => {
                        owned
                            .run(move |conn| -> rusqlite::Result<()> {
                                let tx = conn.transaction()?;
                                for id in rows {
                                    tx.prepare_cached(UPDATE)?.execute([id])?;
                                }
                                tx.commit()
                            })
                            .await??
                    }
                    None => {
                        let mut tx = pool.begin().await?;
                        for id in rows {
                            sqlx::query(UPDATE).bind(id).execute(&mut *tx).await?;
                        }
                        tx.commit().await?;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let (wall, used) = (started.elapsed(), cpu()? - cpu_before);
    let expected = i64::try_from(per_caller * callers * statements)?;
    let total: i64 = match owned {
        Some(owned) => {
            owned
                .run(|conn| conn.query_row("SELECT SUM(n) FROM t", [], |r| r.get(0)))
                .await??
        }
        None => {
            let total = sqlx::query_scalar("SELECT SUM(n) FROM t")
                .fetch_one(&pool)
                .await?;
            pool.close().await;
            total
        }
    };
    if total != expected {
        bail!("{driver:?}: the table holds {total} updates, not {expected}");
    }
    Ok((wall, used))
}

struct Args {
    transactions: usize,
    rounds: usize,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut bench = false;
    let mut parsed = Args {
        transactions: 2000,
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => bench = true,
            "--transactions" => parsed.transactions = value()?.parse().context("--transactions")?,
            "--rounds" => parsed.rounds = value()?.parse().context("--rounds")?,
            other => bail!("unknown argument {other:?}; expected --transactions N, --rounds N"),
        }
    }
    Ok(bench.then_some(parsed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = parse_args()? else {
        println!(
            "handoff benchmarks run under `cargo bench -p shared-kernel --bench handoff`; skipped"
        );
        return Ok(());
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "hand-off benchmark: SQLite WAL, synchronous = FULL; {} transactions per measurement, {} rounds, {cpus} CPUs",
        args.transactions, args.rounds
    );
    println!(
        "driver                               K  callers   tx/s   wall µs/tx  CPU µs/tx (medians)"
    );
    let mut json = Vec::new();
    for statements in STATEMENTS {
        for callers in CALLERS {
            let mut runs: Vec<(Driver, Vec<(Duration, Duration)>)> =
                vec![(Driver::Sqlx, Vec::new()), (Driver::Owned, Vec::new())];
            for _ in 0..args.rounds {
                for (driver, results) in &mut runs {
                    results.push(measure(*driver, statements, callers, args.transactions).await?);
                }
            }
            for (driver, results) in &runs {
                let median = |f: fn(&(Duration, Duration)) -> Duration| {
                    let mut values: Vec<Duration> = results.iter().map(f).collect();
                    values.sort();
                    values[values.len() / 2]
                };
                let transactions = (args.transactions / callers * callers) as f64;
                let (wall, used) = (median(|r| r.0), median(|r| r.1));
                let rate = transactions / wall.as_secs_f64();
                let wall_us = wall.as_secs_f64() * 1e6 / transactions;
                let cpu_us = used.as_secs_f64() * 1e6 / transactions;
                println!(
                    "{:<36} {statements:>2} {callers:>8} {rate:>6.0} {wall_us:>12.1} {cpu_us:>10.1}",
                    driver.name()
                );
                json.push(serde_json::json!({
                    "driver": format!("{driver:?}").to_lowercase(),
                    "statements": statements,
                    "callers": callers,
                    "transactions_per_s": rate,
                    "wall_us_per_tx": wall_us,
                    "cpu_us_per_tx": cpu_us,
                }));
            }
        }
    }
    println!("{}", serde_json::json!({ "cpus": cpus, "runs": json }));
    Ok(())
}
