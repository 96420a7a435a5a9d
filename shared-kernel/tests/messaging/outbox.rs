//! The outbox: gap-free numbering in commit order, announcements of commits, and pruning.

use std::time::Duration;

use std::collections::BTreeMap;

use shared_kernel::messaging::outbox::Outgoing;
use shared_kernel::messaging::{EventContext, IntegrationEvent as _, outbox};
use uuid::Uuid;

use crate::fixture::Scratch;
use crate::scratch::{self, MemberId, MemberRegistered, MemberUpdated, REPLICAS, TALLY};

/// A context as a handler of the event `cause` of flow `correlation` passes it.
fn context(correlation: Uuid, cause: Uuid, trace: &str) -> EventContext {
    EventContext {
        correlation_id: Some(correlation),
        causation_id: Some(cause),
        headers: BTreeMap::from([("traceparent".to_owned(), trace.to_owned())]),
    }
}

shared_kernel::both_backends! {
    async fn events_of_one_aggregate_apply_in_commit_order_under_concurrent_producers(scratch: Scratch) {
        let ada = scratch.register("Ada", "ada@example.com").await;
        // Many concurrent renames of one member, interleaved with other members' events.
        let renames = (0..30).map(|i| {
            let scratch = &scratch;
            async move {
                if i % 3 == 0 {
                    scratch.register(&format!("Other {i}"), &format!("o{i}@example.com")).await;
                }
                scratch.rename(ada, &format!("Ada {i}")).await;
            }
        });
        futures::future::join_all(renames).await;
        scratch.settled().await;
        // The replica ends with what the owner has now: the last committed rename won, in both.
        let current = crate::scratch::name_of(&scratch.source, ada).await.unwrap();
        let replica = scratch.replicas().await.into_iter().find(|(id, _, _)| *id == ada).unwrap();
        assert_eq!(replica.1, current);
        // And the log the replica followed is the owner's commit order, without gaps.
        let seqs = scratch.outbox_seqs().await;
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected);
        assert_eq!(seqs.len(), 41);
    }

    async fn commits_announce_what_they_appended_and_rollbacks_announce_nothing(scratch: Scratch) {
        let db = scratch.source.clone();
        let mut announced = db.committed_events();

        let id = scratch.register("Ada", "ada@example.com").await;
        let events = announced.recv().await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].seq, events[0].aggregate_id.as_str(), events[0].event_type),
            (1, id.to_string().as_str(), "source.MemberRegistered")
        );

        // Two appends in one transaction: one announcement with both, in seq order.
        let renamed = |name: &str| MemberUpdated {
            member_id: MemberId(id),
            name: name.into(),
            email: "ada@example.com".into(),
        };
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, &renamed("B"), &EventContext::default()).unwrap();
        outbox::append(&mut tx, &renamed("C"), &EventContext::default()).unwrap();
        tx.commit().await.unwrap();
        let events = announced.recv().await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert!(events.iter().all(|e| e.event_type == MemberUpdated::TYPE));

        // A rolled-back append announces nothing, and its seq is taken by the next.
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, &renamed("D"), &EventContext::default()).unwrap();
        drop(tx);
        assert!(matches!(
            announced.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ));
        let mut tx = db.begin().await.unwrap();
        let id = outbox::append(&mut tx, &renamed("E"), &EventContext::default()).unwrap();
        tx.commit().await.unwrap();
        let last = outbox::read_after(&db, 3, 10).await.unwrap();
        assert_eq!(last.iter().map(|e| (e.seq, e.id)).collect::<Vec<_>>(), [(4, id)]);
        assert_eq!(scratch.outbox_seqs().await, vec![1, 2, 3, 4]);
    }

    async fn append_many_numbers_events_of_any_types_in_order_each_with_its_context(scratch: Scratch) {
        let mut scratch = scratch;
        scratch.stop_delivery().await;
        let db = scratch.source.clone();
        let ada = scratch.register("Ada", "ada@example.com").await;
        scratch.register("Bob", "bob@example.com").await;
        let mut announced = db.committed_events();

        // Three events of two types, each with its own cause, in one call.
        let flow = Uuid::now_v7();
        let causes = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        let cy = scratch::member(7);
        let renamed = |name: &str| MemberUpdated {
            member_id: MemberId(ada),
            name: name.into(),
            email: "ada@example.com".into(),
        };
        let outgoing = vec![
            Outgoing::new(&renamed("Ada B"), &context(flow, causes[0], "t0")).unwrap(),
            Outgoing::new(&cy, &context(flow, causes[1], "t1")).unwrap(),
            Outgoing::new(&renamed("Ada C"), &context(flow, causes[2], "t2")).unwrap(),
        ];
        let ids: Vec<Uuid> = outgoing.iter().map(Outgoing::id).collect();
        let mut tx = db.begin().await.unwrap();
        outbox::append_many(&mut tx, outgoing);
        outbox::append_many(&mut tx, []);
        tx.commit().await.unwrap();
        let appended = vec![(ids[0], 3), (ids[1], 4), (ids[2], 5)];

        // One announcement with the three, in seq order.
        let events = announced.recv().await.unwrap();
        let announced_events: Vec<(i64, &str, &str)> = events
            .iter()
            .map(|e| (e.seq, e.aggregate_id.as_str(), e.event_type))
            .collect();
        let (ada_id, cy_id) = (ada.to_string(), cy.member_id.to_string());
        assert_eq!(announced_events, vec![
            (3, ada_id.as_str(), MemberUpdated::TYPE),
            (4, cy_id.as_str(), MemberRegistered::TYPE),
            (5, ada_id.as_str(), MemberUpdated::TYPE),
        ]);

        // Readers see them, each with its own context and payload.
        let read = outbox::read_after(&db, 2, 10).await.unwrap();
        assert_eq!(read.iter().map(|e| (e.id, e.seq)).collect::<Vec<_>>(), appended);
        for (i, event) in read.iter().enumerate() {
            assert_eq!(event.correlation_id, Some(flow));
            assert_eq!(event.causation_id, Some(causes[i]));
            assert_eq!(event.headers["traceparent"], format!("t{i}"));
        }
        assert_eq!(read[1].decode::<MemberRegistered>().unwrap().unwrap(), cy);
        assert_eq!(read[2].decode::<MemberUpdated>().unwrap().unwrap().name, "Ada C");

        // More events than one SQLite statement takes, then a single append: no gap anywhere.
        let many: Vec<Outgoing> = (0..1100)
            .map(|i| Outgoing::new(&scratch::member(i), &EventContext::default()).unwrap())
            .collect();
        let mut tx = db.begin().await.unwrap();
        let many_ids: Vec<Uuid> = many.iter().map(Outgoing::id).collect();
        outbox::append_many(&mut tx, many);
        let last = outbox::append(&mut tx, &renamed("Ada D"), &EventContext::default()).unwrap();
        tx.commit().await.unwrap();
        let read = outbox::read_after(&db, 5, 2000).await.unwrap();
        assert_eq!(read.iter().map(|e| e.seq).collect::<Vec<_>>(), (6..=1106).collect::<Vec<_>>());
        assert_eq!(read[..1100].iter().map(|e| e.id).collect::<Vec<_>>(), many_ids);
        assert_eq!(read[1100].id, last);
        assert_eq!(announced.recv().await.unwrap().len(), 1101);
        assert_eq!(outbox::head(&db).await.unwrap(), 1106);
        assert_eq!(scratch.outbox_seqs().await, (1..=1106).collect::<Vec<_>>());
    }

    async fn pruning_never_drops_an_event_a_subscription_has_not_processed(scratch: Scratch) {
        let mut scratch = scratch;
        for i in 0..3 {
            scratch.register(&format!("C{i}"), &format!("c{i}@example.com")).await;
        }
        scratch.settled().await;
        scratch.stop_delivery().await;
        // The tally is behind at seq 1; two more events nobody has processed.
        scratch.bus.rewind(TALLY, 1).await.unwrap();
        for i in 3..5 {
            scratch.register(&format!("C{i}"), &format!("c{i}@example.com")).await;
        }
        let deleted = scratch.bus.prune(Duration::ZERO).await.unwrap();
        assert_eq!(deleted, 1, "only seq 1 is processed by every subscription of the source");
        assert_eq!(scratch.outbox_seqs().await, vec![2, 3, 4, 5]);
        assert_eq!(scratch.status(REPLICAS).await.checkpoint, 3);
        // A retention longer than the events' age keeps them all.
        assert_eq!(scratch.bus.prune(Duration::from_secs(3600)).await.unwrap(), 0);

        scratch.start_delivery();
        scratch.settled().await;
        assert_eq!(scratch.replicas().await.len(), 5);
        assert_eq!(scratch.tallies().await, vec![1, 2, 3, 4, 5]);
        assert_eq!(scratch.bus.prune(Duration::ZERO).await.unwrap(), 4);
        assert!(scratch.outbox_seqs().await.is_empty());
        // The log is empty but the numbering goes on: the next event is seq 6.
        scratch.register("C5", "c5@example.com").await;
        scratch.settled().await;
        assert_eq!(scratch.outbox_seqs().await, vec![6]);
        assert_eq!(scratch.replicas().await.len(), 6);
    }
}
