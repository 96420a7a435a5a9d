//! The outbox: gap-free numbering in commit order, announcements of commits, and pruning.

use std::time::Duration;

use shared_kernel::messaging::{EventContext, IntegrationEvent as _, outbox};

use crate::fixture::Scratch;
use crate::scratch::{MemberId, MemberUpdated, REPLICAS, TALLY};

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
        outbox::append(&mut tx, &renamed("B"), &EventContext::default()).await.unwrap();
        outbox::append(&mut tx, &renamed("C"), &EventContext::default()).await.unwrap();
        tx.commit().await.unwrap();
        let events = announced.recv().await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert!(events.iter().all(|e| e.event_type == MemberUpdated::TYPE));

        // A rolled-back append announces nothing, and its seq is taken again.
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, &renamed("D"), &EventContext::default()).await.unwrap();
        drop(tx);
        assert!(matches!(
            announced.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ));
        let mut tx = db.begin().await.unwrap();
        let (_, seq) = outbox::append(&mut tx, &renamed("E"), &EventContext::default()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(seq, 4);
        assert_eq!(scratch.outbox_seqs().await, vec![1, 2, 3, 4]);
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
