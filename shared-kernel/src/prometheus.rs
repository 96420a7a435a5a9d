//! The process-wide Prometheus recorder and what every server of the binary exports at
//! `/metrics` beside its own metrics: what its storage paid and what CPU the process used.
//!
//! - `bounded_db_commits_total{module}`: committed [`Tx`](crate::storage::Tx)s of each module
//!   database (counted in [`Tx::commit`](crate::storage::Tx::commit)). Reads outside a
//!   transaction and rolled-back transactions are not commits.
//! - `bounded_db_statements_total`: statements sqlx executed, counted only when the server runs
//!   with `--count-statements` (absent otherwise). The count is sqlx's per-statement log event:
//!   every query, plus `COMMIT`/`ROLLBACK` on Postgres; `BEGIN` is not logged by sqlx on either
//!   backend, nor `COMMIT` on SQLite.
//! - `bounded_process_cpu_seconds_total` (user + system, a gauge read at each scrape with
//!   10 ms resolution), `bounded_process_resident_memory_bytes`, `bounded_process_threads`,
//!   `bounded_process_open_fds` and the rest of `metrics-process`'s set, read at each scrape.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds, for every histogram.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Name of the statement counter (see the module documentation).
pub const STATEMENTS: &str = "bounded_db_statements_total";
/// Name of the commit counter (see the module documentation).
pub const COMMITS: &str = "bounded_db_commits_total";
/// Name of the process CPU time gauge, in seconds.
pub const CPU_SECONDS: &str = "bounded_process_cpu_seconds_total";

fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| metrics_process::Collector::new("bounded_"))
}

/// The process-wide recorder. Installed once; every server in the process (several in tests)
/// shares it. Metrics recorded before the first call are lost, so a server calls it first.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let recorder = match builder.set_buckets(BUCKETS) {
                Ok(builder) => builder.build_recorder(),
                Err(error) => {
                    tracing::error!(%error, "Invalid histogram buckets; using summaries.");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("A metrics recorder was already installed; /metrics may be empty.");
            }
            metrics::describe_counter!(COMMITS, "Committed transactions of each module database.");
            metrics::describe_counter!(
                STATEMENTS,
                "Statements executed (only with --count-statements)."
            );
            process().describe();
            handle
        })
        .clone()
}

/// The Prometheus text of everything recorded, with the process's CPU time and memory read
/// now.
pub fn render() -> String {
    let handle = handle();
    process().collect();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_seconds() -> f64 {
        let text = render();
        text.lines()
            .find_map(|line| line.strip_prefix(CPU_SECONDS)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {CPU_SECONDS} in\n{text}"))
    }

    #[test]
    fn the_process_cpu_time_is_read_at_each_render() {
        let before = cpu_seconds();
        // Work until the next reading shows it (clock ticks are 10 ms); a reading frozen at
        // the first scrape fails at the deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            if cpu_seconds() > before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time stayed at {before}"
            );
        }
    }
}
