//! A group of placements costs a number of statements that does not grow with its orders: 1 or
//! 20 orders of 1 to 3 lines, the same count, on both backends, where writing them one by one
//! (as placement did before) costs statements per order and per line. Its own test binary: the
//! statement counter is a global `tracing` layer on `sqlx::query` events (as the app's
//! `--count-statements`), so nothing else may run in the process while it counts.

#![allow(clippy::unwrap_used)]

mod placing;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use placing::{placements, write_group, write_one_by_one};
use shared_kernel::storage::testing::{OnBackend, Rng, TestBackend, count_statements};
use support::Pair;

/// The statements `write` runs (its transaction's too).
async fn statements(count: &AtomicUsize, write: impl Future<Output = ()>) -> usize {
    let before = count.load(Ordering::SeqCst);
    write.await;
    count.load(Ordering::SeqCst) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_costs_the_same_statements_for_1_and_for_20_placements() {
    let count = count_statements();
    let mut rng = Rng(0x5EED_0000_0000_91AF);
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let Some(Pair { each, batched }) = Pair::on_backend(backend, "placement_statements").await
        else {
            continue;
        };
        let (one, twenty) = (placements(&mut rng, 1), placements(&mut rng, 20));
        let lines: usize = twenty.iter().map(|p| p.order.items.len()).sum();
        assert!(lines > 20, "some orders have several lines");

        let group_of_one = statements(&count, write_group(&batched.db, &one)).await;
        let group_of_twenty = statements(&count, write_group(&batched.db, &twenty)).await;
        assert_eq!(group_of_one, group_of_twenty, "{backend:?}");

        let alone = statements(&count, write_one_by_one(&each.db, &one)).await;
        let one_by_one = statements(&count, write_one_by_one(&each.db, &twenty)).await;
        assert!(one_by_one > group_of_twenty, "{backend:?}");
        eprintln!(
            "{backend:?}: 1 placement ({} lines): {group_of_one} statements as a group, {alone} \
             one by one; 20 placements ({lines} lines): {group_of_twenty} as a group, \
             {one_by_one} one by one",
            one[0].order.items.len()
        );
    }
}
