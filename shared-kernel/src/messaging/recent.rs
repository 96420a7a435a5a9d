//! The events this process committed to a module's outbox lately, kept in memory so that a
//! subscription in the same process reads them without a round trip to the database.
//!
//! A commit that appended puts its events here after the database committed them and before
//! it wakes the subscribers ([`crate::storage::Tx::commit`]). [`Recent::after`] serves a read
//! only when it holds the very next event, and then only the gap-free run that follows it: seqs
//! are gap-free and commit in order, so a run that starts right after the reader's position is
//! exactly what the database would return (or its first part, when a later commit has not been
//! put here yet; the reader's next wake-up comes after it is). Anything else — a commit of
//! another process, events older than the capacity, a run this process's commits have not
//! reached yet — is read from the database, as before.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::event::Envelope;

/// How many events are kept: eight full batches of the default size (64) behind the head; an
/// older position is read from the database. (2 048 cost the server 12 MiB of peak RSS.)
pub(crate) const CAPACITY: usize = 512;

/// The last [`CAPACITY`] events committed through one module handle, by seq.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    events: Mutex<BTreeMap<i64, Envelope>>,
}

impl Recent {
    /// Keeps `events` (just committed); drops the oldest beyond [`CAPACITY`]. Commits of
    /// concurrent transactions may arrive here in any order: each event goes to its seq.
    pub(crate) fn insert(&self, events: Vec<Envelope>) {
        let mut held = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for event in events {
            held.insert(event.seq, event);
        }
        while held.len() > CAPACITY {
            held.pop_first();
        }
    }

    /// Up to `limit` events after `after_seq`, in seq order, when the event at `after_seq + 1`
    /// is held: the gap-free run from it. `None` when it is not (the caller reads the
    /// database).
    pub(crate) fn after(&self, after_seq: i64, limit: i64) -> Option<Vec<Envelope>> {
        let limit = usize::try_from(limit).ok().filter(|l| *l > 0)?;
        let held = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = after_seq.checked_add(1)?;
        let run: Vec<Envelope> = held
            .range(first..)
            .zip(first..)
            .take_while(|((seq, _), wanted)| *seq == wanted)
            .take(limit)
            .map(|((_, event), _)| event.clone())
            .collect();
        (!run.is_empty()).then_some(run)
    }
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;

    fn event(seq: i64) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            source: "scratch".into(),
            seq,
            aggregate_type: "ping".into(),
            aggregate_id: seq.to_string(),
            event_type: "scratch.Pinged".into(),
            event_version: 1,
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            correlation_id: None,
            causation_id: None,
            headers: BTreeMap::new(),
            payload: serde_json::json!({ "seq": seq }),
        }
    }

    fn seqs(events: Option<Vec<Envelope>>) -> Option<Vec<i64>> {
        events.map(|events| events.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn serves_only_the_gap_free_run_right_after_the_position() {
        let recent = Recent::default();
        // Commits put here out of seq order, with 4 not here (yet, or another process's).
        recent.insert(vec![event(3)]);
        recent.insert(vec![event(1), event(2)]);
        recent.insert(vec![event(5), event(6)]);
        assert_eq!(seqs(recent.after(0, 10)), Some(vec![1, 2, 3]));
        assert_eq!(seqs(recent.after(1, 1)), Some(vec![2]));
        assert_eq!(seqs(recent.after(4, 10)), Some(vec![5, 6]));
        // The next event is not held: the database answers.
        assert_eq!(seqs(recent.after(3, 10)), None);
        assert_eq!(seqs(recent.after(6, 10)), None);
        assert_eq!(seqs(recent.after(-5, 10)), None);
        assert_eq!(seqs(recent.after(0, 0)), None);
    }

    #[test]
    fn keeps_the_newest_events_up_to_its_capacity() {
        let recent = Recent::default();
        let total = i64::try_from(CAPACITY).unwrap() + 10;
        recent.insert((1..=total).map(event).collect());
        assert_eq!(seqs(recent.after(0, 10)), None, "the oldest went");
        assert_eq!(seqs(recent.after(10, 2)), Some(vec![11, 12]));
        assert_eq!(recent.events.lock().unwrap().len(), CAPACITY);
    }
}
