//! How batches show in the log: a set-based call runs in one `batch` span; events applied one
//! by one (the default `handle_batch`, or a batch being isolated) each run in their own
//! `event` span, as outside a batch.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing_subscriber::fmt::MakeWriter;

use super::*;
use crate::messaging::outbox;
use crate::storage::testing::ScratchDb;

#[derive(Debug, Serialize, Deserialize)]
struct Noted {
    id: String,
}

crate::integration_events! {
    module "scratch";
    "note" by id: Noted;
}

/// Applies a batch with one log line of its own.
struct SetBased;

#[async_trait]
impl Handler for SetBased {
    async fn handle(&self, _: &mut Tx, _: &Envelope) -> anyhow::Result<()> {
        Ok(())
    }

    async fn handle_batch(&self, _: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        tracing::info!(events = batch.events().len(), "Set applied.");
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(TYPES)
    }
}

/// The default `handle_batch`: one event at a time.
struct OneByOne;

#[async_trait]
impl Handler for OneByOne {
    async fn handle(&self, _: &mut Tx, _: &Envelope) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The log lines written through it, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MakeWriter<'_> for Captured {
    type Writer = Captured;
    fn make_writer(&self) -> Self::Writer {
        self.clone()
    }
}

/// The kernel's log lines (the handlers' and the runtime's; not the driver's) of applying
/// the three events of `db`'s outbox in one batch of `handler`, as subscription `name`.
async fn log_of_batch(
    db: &ModuleDb,
    name: &str,
    handler: Arc<dyn Handler>,
    isolate: bool,
) -> Vec<String> {
    let subscription = Subscription::named(name, "scratch", "scratch", handler);
    ensure_checkpoint(db, &subscription).await.unwrap();
    let events = outbox::read_after(db, 0, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    {
        let _default = tracing::subscriber::set_default(subscriber);
        let mut tx = db.begin().await.unwrap();
        apply_batch(&mut tx, &subscription, &events, isolate)
            .await
            .unwrap_or_else(|_| panic!("the batch applies"));
        drop(tx);
    }
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|l| l.contains("shared_kernel"))
        .map(str::to_owned)
        .collect()
}

crate::both_backends! {
    async fn a_set_based_call_runs_in_one_batch_span_and_events_one_by_one_in_their_own(scratch: ScratchDb) {
        let db = &scratch.db;
        let mut tx = db.begin().await.unwrap();
        for id in ["a", "b", "c"] {
            outbox::append(&mut tx, &Noted { id: id.into() }, &EventContext::default()).await.unwrap();
        }
        tx.commit().await.unwrap();

        let set = log_of_batch(db, "scratch<-set", Arc::new(SetBased), false).await;
        assert_eq!(set.len(), 1, "{set:#?}");
        assert!(
            set[0].contains("batch{subscription=scratch<-set first.seq=1 last.seq=3 count=3}")
                && set[0].contains("Set applied. events=3")
                && !set[0].contains("event{"),
            "{set:#?}"
        );

        for (name, handler, isolate) in [
            ("scratch<-each", Arc::new(OneByOne) as Arc<dyn Handler>, false),
            ("scratch<-isolated", Arc::new(SetBased), true),
        ] {
            let each = log_of_batch(db, name, handler, isolate).await;
            assert_eq!(each.len(), 3, "{each:#?}");
            for (seq, line) in (1..).zip(&each) {
                let span = format!("event{{subscription={name} event.id=");
                assert!(line.contains(&span) && line.contains(&format!("event.seq={seq} ")), "{each:#?}");
                assert!(line.contains("Event applied.") && !line.contains("batch{"), "{each:#?}");
            }
        }
    }
}
