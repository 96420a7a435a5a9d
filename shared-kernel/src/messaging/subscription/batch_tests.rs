//! How batches show in the log: a set-based call runs in one `batch` span; events applied one
//! by one (the default `handle_batch`, or a batch being isolated) each run in their own
//! `event` span, as outside a batch.

use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;

use super::noted::{Noted, TYPES};
use super::*;
use crate::messaging::outbox;
use crate::storage::testing::ScratchDb;

/// Applies a batch with one log line of its own.
struct SetBased;

#[async_trait]
impl Handler for SetBased {
    async fn handle(&self, _: &mut Tx, _: &Envelope) -> anyhow::Result<()> {
        Ok(())
    }

    async fn handle_batch(&self, _: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        let caused_by = EventContext::current().causation_id;
        tracing::info!(events = batch.events().len(), ?caused_by, "Set applied.");
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(TYPES)
    }

    fn set_based(&self) -> bool {
        true
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
/// the first `count` events of `db`'s outbox in one batch of `handler`, as subscription `name`.
async fn log_of_batch(
    db: &ModuleDb,
    name: &str,
    handler: Arc<dyn Handler>,
    isolate: bool,
    count: i64,
) -> Vec<String> {
    let subscription = Subscription::named(name, "scratch", "scratch", handler);
    ensure_checkpoint(db, &subscription).await.unwrap();
    let events = outbox::read_after(db, 0, count).await.unwrap();
    assert_eq!(events.len() as i64, count);
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    {
        let _default = tracing::subscriber::set_default(subscriber);
        let mut tx = db.begin().await.unwrap();
        let events: Vec<&Envelope> = events.iter().collect();
        apply_batch(&mut tx, &subscription, &events, None, isolate)
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
            outbox::append(&mut tx, &Noted { id: id.into() }, &EventContext::default()).unwrap();
        }
        tx.commit().await.unwrap();

        let set = log_of_batch(db, "scratch<-set", Arc::new(SetBased), false, 3).await;
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
            let each = log_of_batch(db, name, handler, isolate, 3).await;
            assert_eq!(each.len(), 3, "{each:#?}");
            for (seq, line) in (1..).zip(&each) {
                let span = format!("event{{subscription={name} event.id=");
                assert!(line.contains(&span) && line.contains(&format!("event.seq={seq} ")), "{each:#?}");
                assert!(line.contains("Event applied.") && !line.contains("batch{"), "{each:#?}");
            }
        }

        // A lone event: a set-based handler gets it as a batch of one, in the event's own span
        // and context; any other handler through `handle`, as ever.
        let first = outbox::read_after(db, 0, 1).await.unwrap().remove(0);
        let lone = log_of_batch(db, "scratch<-lone", Arc::new(SetBased), false, 1).await;
        assert_eq!(lone.len(), 2, "{lone:#?}");
        for line in &lone {
            assert!(line.contains("event{subscription=scratch<-lone event.id=") && !line.contains("batch{"), "{lone:#?}");
        }
        let caused_by = format!("Set applied. events=1 caused_by=Some({})", first.id);
        assert!(lone[0].contains(&caused_by) && lone[1].contains("Event applied."), "{lone:#?}");
        let each = log_of_batch(db, "scratch<-lone-each", Arc::new(OneByOne), false, 1).await;
        assert_eq!(each.len(), 1, "{each:#?}");
        assert!(each[0].contains("event{subscription=scratch<-lone-each") && each[0].contains("Event applied."), "{each:#?}");
    }
}
