//! Set-based handlers (`Handler::handle_batch`): the same end state as applying the events one
//! by one, exactly once across rewinds, and a batch that fails without naming its event is
//! isolated so that only the poison event is retried and parked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use shared_kernel::messaging::{Batch, BatchError, Envelope, Handler, outbox};
use shared_kernel::storage::Tx;
use shared_kernel::{with_reader, with_tx};
use uuid::Uuid;

use crate::fixture::Scratch;
use crate::scratch::{
    BATCH_REPLICAS, MemberRegistered, MemberReplicated, MemberUpdated, REPLICAS, ReplicateBatch,
};

/// `(id, name, email)` of every row of `member_replicas_batch`, by id.
async fn batch_replicas(scratch: &Scratch) -> Vec<(Uuid, String, String)> {
    with_reader!(scratch.consumer.reader().unwrap(), |pool| {
        sqlx::query_as(
            "SELECT member_id, name, email FROM member_replicas_batch ORDER BY member_id",
        )
        .fetch_all(pool)
        .await
    })
    .unwrap()
}

/// Registers `n` members and renames every other one, while delivery is stopped, so that the
/// next batches are full.
async fn backlog(scratch: &Scratch, n: usize) {
    for i in 0..n {
        let id = scratch
            .register(&format!("Member {i}"), &format!("m{i}@example.com"))
            .await;
        if i % 2 == 0 {
            scratch.rename(id, &format!("Member {i} renamed")).await;
        }
    }
}

shared_kernel::both_backends! {
    async fn a_set_based_handler_ends_where_the_per_event_one_does_and_applies_once_after_a_rewind(scratch: Scratch) {
        let mut scratch = scratch;
        scratch.stop_delivery().await;
        backlog(&scratch, 60).await;
        let handler = Arc::new(ReplicateBatch::default());
        scratch.subscribe(BATCH_REPLICAS, handler.clone()).await;
        scratch.settled().await;
        // 90 events in batches of up to 64: set-based calls, not one event at a time.
        assert!(handler.set_calls.load(Ordering::SeqCst) >= 2, "{handler:?}");

        let replicas = scratch.replicas().await;
        assert_eq!(replicas.len(), 60);
        assert_eq!(batch_replicas(&scratch).await, replicas);

        // One MemberReplicated per event, in the events' order, each caused by its event.
        let check_published = async |scratch: &Scratch| {
            let inputs = outbox::read_after(&scratch.source, 0, 1000).await.unwrap();
            let published = outbox::read_after(&scratch.consumer, 0, 1000).await.unwrap();
            assert_eq!(inputs.len(), 90);
            assert_eq!(published.len(), inputs.len());
            for (seq, (output, input)) in (1..).zip(published.iter().zip(&inputs)) {
                assert_eq!(output.seq, seq);
                assert_eq!(output.causation_id, Some(input.id));
                assert_eq!(output.correlation_id, input.correlation_id.or(Some(input.id)));
                let replicated = output.decode::<MemberReplicated>().unwrap().unwrap();
                assert_eq!(replicated.source_seq, input.seq);
                assert_eq!(replicated.member_id.to_string(), input.aggregate_id);
            }
        };
        check_published(&scratch).await;

        // Rewound to 0, both replicators see every event again and apply none twice.
        scratch.stop_delivery().await;
        for name in [REPLICAS, BATCH_REPLICAS] {
            scratch.bus.rewind(name, 0).await.unwrap();
        }
        let calls = handler.set_calls.load(Ordering::SeqCst);
        scratch.start_delivery();
        scratch.settled().await;
        assert_eq!(scratch.status(BATCH_REPLICAS).await.checkpoint, 90);
        assert_eq!(handler.set_calls.load(Ordering::SeqCst), calls, "no event was fresh");
        check_published(&scratch).await;
        assert_eq!(batch_replicas(&scratch).await, scratch.replicas().await);
    }
}

/// A set-based handler recording every application in `applications`; its batches fail
/// without naming the event when one is about a member named "Poison…" while `poisoned` is
/// set, and so does `handle` for that event.
#[derive(Default)]
struct PoisonBatch {
    poisoned: AtomicBool,
    set_calls: AtomicUsize,
}

const POISON_BATCH: &str = "consumer<-source:poison-batch";

/// The member's name of a member event.
fn name_of(event: &Envelope) -> anyhow::Result<Option<String>> {
    if let Some(e) = event.decode::<MemberRegistered>() {
        return Ok(Some(e?.name));
    }
    Ok(event.decode::<MemberUpdated>().transpose()?.map(|e| e.name))
}

impl PoisonBatch {
    fn is_poison(&self, event: &Envelope) -> anyhow::Result<bool> {
        let name = name_of(event)?;
        Ok(self.poisoned.load(Ordering::SeqCst) && name.is_some_and(|n| n.starts_with("Poison")))
    }

    async fn record(&self, tx: &mut Tx, events: &[&Envelope]) -> Result<(), sqlx::Error> {
        let values: Vec<String> = (0..events.len())
            .map(|i| format!("($1, ${}, ${})", 2 + 2 * i, 3 + 2 * i))
            .collect();
        let sql = format!(
            "INSERT INTO applications (subscription, event_id, seq) VALUES {}",
            values.join(", ")
        );
        with_tx!(tx, |conn| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(POISON_BATCH);
            for event in events {
                query = query.bind(event.id).bind(event.seq);
            }
            query.execute(conn).await.map(drop)
        })
    }
}

#[async_trait]
impl Handler for PoisonBatch {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        if self.is_poison(event)? {
            anyhow::bail!("poisoned member event #{}", event.seq);
        }
        self.record(tx, &[event]).await?;
        Ok(())
    }

    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        self.set_calls.fetch_add(1, Ordering::SeqCst);
        // Write first: the failure must roll the whole batch back.
        self.record(tx, batch.events()).await?;
        for event in batch.events() {
            if self.is_poison(event)? {
                return Err(anyhow::anyhow!("a poisoned member somewhere in the batch").into());
            }
        }
        Ok(())
    }
}

/// The seqs `applications` recorded for the poison-batch subscription, once per application.
async fn applied(scratch: &Scratch) -> Vec<i64> {
    let rows: Vec<(i64,)> = with_reader!(scratch.consumer.reader().unwrap(), |pool| {
        sqlx::query_as("SELECT seq FROM applications WHERE subscription = $1 ORDER BY seq")
            .bind(POISON_BATCH)
            .fetch_all(pool)
            .await
    })
    .unwrap();
    rows.into_iter().map(|(seq,)| seq).collect()
}

shared_kernel::both_backends! {
    async fn a_set_based_batch_failing_without_an_index_is_isolated_and_only_the_poison_event_parked(scratch: Scratch) {
        let mut scratch = scratch;
        scratch.stop_delivery().await;
        let fine = scratch.register("Fine", "fine@example.com").await; // 1
        let poison = scratch.register("Poison", "poison@example.com").await; // 2
        scratch.rename(poison, "Poison Renamed").await; // 3
        scratch.rename(fine, "Fine Two").await; // 4
        scratch.register("Other", "other@example.com").await; // 5
        let handler = Arc::new(PoisonBatch { poisoned: AtomicBool::new(true), ..PoisonBatch::default() });
        scratch.subscribe(POISON_BATCH, handler.clone()).await;
        scratch.settled().await;

        // One set-based attempt at the five failed; then one event at a time: the event before
        // the poison one went in, the poison one was retried and parked alone, its aggregate's
        // rename blocked behind it, and the others' events applied, each once.
        assert_eq!(handler.set_calls.load(Ordering::SeqCst), 1);
        assert_eq!(applied(&scratch).await, vec![1, 4, 5]);
        let status = scratch.status(POISON_BATCH).await;
        assert_eq!((status.checkpoint, status.parked, status.blocked), (5, 1, 1));
        let letters: Vec<_> = scratch.bus.dead_letters().await.unwrap()
            .into_iter()
            .filter(|d| d.subscription == POISON_BATCH)
            .collect();
        let seen: Vec<(&str, i64, i32)> = letters.iter().map(|d| (d.status.as_str(), d.event.seq, d.attempts)).collect();
        assert_eq!(seen, vec![("parked", 2, 5), ("blocked", 3, 0)]);
        let error = letters[0].error.as_deref().unwrap();
        assert!(error.contains("poisoned member event #2"), "{error}");

        // Fixed: the retry applies it and the blocked rename follows, each once.
        handler.poisoned.store(false, Ordering::SeqCst);
        scratch.bus.retry_dead_letter(letters[0].id).await.unwrap();
        assert_eq!(applied(&scratch).await, vec![1, 2, 3, 4, 5]);
        // Later batches are set-based again.
        scratch.stop_delivery().await;
        scratch.rename(poison, "Poison Third").await;
        scratch.rename(fine, "Fine Three").await;
        scratch.start_delivery();
        scratch.settled().await;
        assert_eq!(handler.set_calls.load(Ordering::SeqCst), 2);
        assert_eq!(applied(&scratch).await, vec![1, 2, 3, 4, 5, 6, 7]);
    }
}
