//! Failing handlers: retried batches roll back, poisoned events are parked in dead letters and
//! hold back only their aggregate until retried or discarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use shared_kernel::messaging::dead_letters::{DeadLetter, DeadLetterError};
use shared_kernel::messaging::{BusError, Envelope, Handler};
use shared_kernel::storage::Tx;
use shared_kernel::{with_reader, with_tx};
use uuid::Uuid;

use crate::fixture::Scratch;
use crate::scratch::{MemberRegistered, MemberUpdated};

/// The id of a test handler's marker row for a member (apart from the real replica's).
pub fn marker_id(member: Uuid) -> Uuid {
    Uuid::from_u128(member.as_u128() ^ 1)
}

/// Inserts a test handler's marker row for a registered member (tagged in `email`); a second
/// insert for the same member violates the primary key.
async fn insert_marker(
    tx: &mut Tx,
    registered: &MemberRegistered,
    tag: &str,
    seq: i64,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO member_replicas (member_id, name, email, source_seq, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(marker_id(registered.member_id.0))
        .bind(&registered.name)
        .bind(tag)
        .bind(seq)
        .bind(shared_kernel::clock::now())
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Writes a marker row tagged `tag` for each registration and counts its calls; with
/// `fails_once`, fails its first call after writing.
pub struct Marker {
    pub tag: &'static str,
    pub calls: Arc<AtomicUsize>,
    pub fails_once: bool,
}

#[async_trait]
impl Handler for Marker {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(registered) = event.decode::<MemberRegistered>() else {
            return Ok(());
        };
        let registered = registered?;
        insert_marker(tx, &registered, self.tag, event.seq).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 && self.fails_once {
            anyhow::bail!("injected failure after writing");
        }
        Ok(())
    }
}

/// The name of a test handler's marker row for `member`, if any.
async fn marker_name(scratch: &Scratch, member: Uuid) -> Option<String> {
    let row: Option<(String,)> = with_reader!(scratch.consumer.reader().unwrap(), |pool| {
        sqlx::query_as("SELECT name FROM member_replicas WHERE member_id = $1")
            .bind(marker_id(member))
            .fetch_optional(pool)
            .await
    })
    .unwrap();
    row.map(|(name,)| name)
}

shared_kernel::both_backends! {
    async fn a_handler_that_fails_after_writing_rolls_back_and_applies_once_on_retry(scratch: Scratch) {
        let mut scratch = scratch;
        // A second subscription of the consumer to the source whose handler writes, then fails
        // on its first attempt. Were the failed batch not rolled back, the retry's insert would
        // hit the primary key.
        let attempts = Arc::new(AtomicUsize::new(0));
        let handler = Marker { tag: "test-handler", calls: attempts.clone(), fails_once: true };
        scratch.subscribe("consumer<-source:test", Arc::new(handler)).await;

        let ada = scratch.register("Ada", "ada@example.com").await;
        scratch.settled().await;
        assert!(attempts.load(Ordering::SeqCst) >= 2, "the handler was retried");
        let rows: Vec<(Uuid, String)> = with_reader!(scratch.consumer.reader().unwrap(), |pool| {
            sqlx::query_as("SELECT member_id, name FROM member_replicas WHERE email = 'test-handler'")
                .fetch_all(pool)
                .await
        })
        .unwrap();
        assert_eq!(rows, vec![(marker_id(ada), "Ada".to_owned())]);
    }
}

/// Fails for members whose name starts with "Poison" while `poisoned` is set; otherwise writes
/// a marker row (a plain upsert, so an out-of-order application would show).
struct Poisonable {
    poisoned: Arc<AtomicBool>,
}

#[async_trait]
impl Handler for Poisonable {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let (id, name) = if let Some(e) = event.decode::<MemberRegistered>() {
            let e = e?;
            (e.member_id.0, e.name)
        } else if let Some(e) = event.decode::<MemberUpdated>() {
            let e = e?;
            (e.member_id.0, e.name)
        } else {
            return Ok(());
        };
        if name.starts_with("Poison") && self.poisoned.load(Ordering::SeqCst) {
            anyhow::bail!("poisoned member {name}");
        }
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO member_replicas (member_id, name, email, source_seq, updated_at) \
                 VALUES ($1, $2, 'poison-test', $3, $4) \
                 ON CONFLICT (member_id) DO UPDATE SET name = excluded.name, source_seq = excluded.source_seq",
            )
            .bind(marker_id(id))
            .bind(&name)
            .bind(event.seq)
            .bind(shared_kernel::clock::now())
            .execute(conn)
            .await
            .map(drop)
        })?;
        Ok(())
    }
}

const POISON_SUBSCRIPTION: &str = "consumer<-source:poison";

/// Starts a poisonable subscription next to the fixture's; returns its switch (on).
async fn with_poisonable(scratch: &mut Scratch) -> Arc<AtomicBool> {
    let poisoned = Arc::new(AtomicBool::new(true));
    let handler = Poisonable {
        poisoned: poisoned.clone(),
    };
    scratch
        .subscribe(POISON_SUBSCRIPTION, Arc::new(handler))
        .await;
    poisoned
}

/// Registers a poisoned and a healthy member and renames both; returns their ids.
async fn poison_scenario(scratch: &Scratch) -> (Uuid, Uuid) {
    let poison = scratch.register("Poison", "poison@example.com").await;
    let fine = scratch.register("Fine", "fine@example.com").await;
    scratch.rename(poison, "Poison Renamed").await;
    scratch.rename(fine, "Fine Two").await;
    scratch.settled().await;
    (poison, fine)
}

/// The dead letters of the poisonable subscription, oldest first.
async fn poison_letters(scratch: &Scratch) -> Vec<DeadLetter> {
    let letters = scratch.bus.dead_letters().await.unwrap();
    letters
        .into_iter()
        .filter(|d| d.subscription == POISON_SUBSCRIPTION)
        .collect()
}

shared_kernel::both_backends! {
    async fn a_poison_event_is_parked_and_blocks_only_its_aggregate_until_retried(scratch: Scratch) {
        let mut scratch = scratch;
        let poisoned = with_poisonable(&mut scratch).await;
        let (poison, fine) = poison_scenario(&scratch).await;

        // The other aggregate flowed; the poisoned one waits, its later event behind it.
        assert_eq!(marker_name(&scratch, fine).await.as_deref(), Some("Fine Two"));
        assert_eq!(marker_name(&scratch, poison).await, None);
        let status = scratch.status(POISON_SUBSCRIPTION).await;
        assert_eq!((status.lag, status.parked, status.blocked), (0, 1, 1));
        let letters = poison_letters(&scratch).await;
        assert_eq!(letters.len(), 2);
        let parked = &letters[0];
        assert_eq!(parked.status, "parked");
        assert_eq!(parked.attempts, 5);
        assert!(parked.error.as_deref().unwrap().contains("poisoned member Poison"), "{parked:?}");
        assert_eq!(parked.event.event_type, "source.MemberRegistered");
        assert_eq!(letters[1].status, "blocked");
        assert_eq!(letters[1].event.event_type, "source.MemberUpdated");
        let id = parked.id;

        // Still poisoned: the retry fails and counts; a blocked event cannot be retried.
        let again = scratch.bus.retry_dead_letter(id).await;
        assert!(matches!(again, Err(BusError::DeadLetter(DeadLetterError::StillFailing(_)))), "{again:?}");
        let blocked = scratch.bus.retry_dead_letter(letters[1].id).await;
        assert!(matches!(blocked, Err(BusError::DeadLetter(DeadLetterError::NotParked { .. }))), "{blocked:?}");

        // Fixed: the retry applies it, and the blocked rename follows in order.
        poisoned.store(false, Ordering::SeqCst);
        scratch.bus.retry_dead_letter(id).await.unwrap();
        let retried = scratch.bus.dead_letter(id).await.unwrap();
        assert_eq!(retried.status, "retried");
        assert_eq!(retried.attempts, 7);
        assert_eq!(marker_name(&scratch, poison).await.as_deref(), Some("Poison Renamed"));
        let status = scratch.status(POISON_SUBSCRIPTION).await;
        assert_eq!((status.parked, status.blocked), (0, 0));

        // Later events of the aggregate flow normally again.
        scratch.rename(poison, "Poison Third").await;
        scratch.settled().await;
        assert_eq!(marker_name(&scratch, poison).await.as_deref(), Some("Poison Third"));
        let unknown = Uuid::now_v7();
        assert!(matches!(scratch.bus.retry_dead_letter(unknown).await, Err(BusError::DeadLetter(DeadLetterError::NotFound(id))) if id == unknown));
        assert!(matches!(scratch.bus.discard_dead_letter(unknown).await, Err(BusError::DeadLetter(DeadLetterError::NotFound(_)))));
    }

    async fn discarding_a_parked_event_releases_the_events_behind_it(scratch: Scratch) {
        let mut scratch = scratch;
        let poisoned = with_poisonable(&mut scratch).await;
        let (poison, _) = poison_scenario(&scratch).await;
        poisoned.store(false, Ordering::SeqCst);
        let letters = poison_letters(&scratch).await;
        let parked = letters.iter().find(|d| d.status == "parked").unwrap();
        scratch.bus.discard_dead_letter(parked.id).await.unwrap();
        assert_eq!(scratch.bus.dead_letter(parked.id).await.unwrap().status, "discarded");
        // The registration was dropped; the rename behind it was applied.
        assert_eq!(marker_name(&scratch, poison).await.as_deref(), Some("Poison Renamed"));
        let again = scratch.bus.discard_dead_letter(parked.id).await;
        assert!(matches!(again, Err(BusError::DeadLetter(DeadLetterError::NotParked { .. }))), "{again:?}");
    }
}
