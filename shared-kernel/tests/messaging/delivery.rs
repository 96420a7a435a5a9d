//! Delivery across stopped workers and rewinds.

use shared_kernel::messaging::BusError;
use shared_kernel::with_tx;

use crate::fixture::Scratch;
use crate::scratch::{REPLICAS, TALLY};

shared_kernel::both_backends! {
    async fn events_committed_while_delivery_is_stopped_are_delivered_after_restart(scratch: Scratch) {
        let mut scratch = scratch;
        scratch.stop_delivery().await;
        scratch.register("Ada", "ada@example.com").await;
        // Committed, not delivered: the event waits in the outbox.
        assert!(scratch.replicas().await.is_empty());
        assert_eq!(scratch.status(REPLICAS).await.lag, 1);

        scratch.start_delivery();
        scratch.settled().await;
        assert_eq!(scratch.replicas().await.len(), 1);
        assert_eq!(scratch.tallies().await, vec![1]);
    }

    async fn rewinding_to_zero_redelivers_without_repeating_effects(scratch: Scratch) {
        for i in 0..3 {
            scratch.register(&format!("C{i}"), &format!("c{i}@example.com")).await;
        }
        let first = scratch.register("Ada", "ada@example.com").await;
        scratch.rename(first, "Ada King").await;
        scratch.settled().await;
        let replicas = scratch.replicas().await;
        let tallies = scratch.tallies().await;
        assert_eq!(replicas.len(), 4);
        assert_eq!(tallies, vec![1, 2, 3, 4, 5]);

        for name in [REPLICAS, TALLY] {
            assert_eq!(scratch.bus.rewind(name, 0).await.unwrap(), 5, "rewound from the checkpoint");
            assert_eq!(scratch.status(name).await.head_seq, 5);
        }
        scratch.settled().await;
        assert_eq!(scratch.replicas().await, replicas);
        assert_eq!(scratch.tallies().await, tallies);

        assert!(matches!(scratch.bus.rewind("nope", 0).await, Err(BusError::UnknownSubscription(name)) if name == "nope"));
        assert!(scratch.bus.status().await.unwrap().iter().all(|s| s.lag == 0));
        assert!(matches!(scratch.bus.rewind(REPLICAS, -1).await, Err(BusError::NegativeSeq(-1))));
    }

    async fn a_rewind_never_moves_a_checkpoint_forward(scratch: Scratch) {
        scratch.register("Rhea", "rhea@example.com").await;
        scratch.settled().await;
        let before = scratch.status(TALLY).await;
        let (checkpoint, head) = (before.checkpoint, before.head_seq);
        assert_eq!(checkpoint, head);

        // Ahead of the checkpoint (and of the head): refused, naming both, nothing changed.
        let refused = scratch.bus.rewind(TALLY, 1_000_000).await.unwrap_err();
        assert!(
            matches!(refused, BusError::RewindAhead { checkpoint: c, head_seq: Some(h), .. } if c == checkpoint && h == head),
            "{refused:?}"
        );
        let detail = refused.to_string();
        assert!(detail.contains(&format!("checkpoint {checkpoint}")), "{detail}");
        assert!(detail.contains(&format!("head is {head}")), "{detail}");
        assert_eq!(scratch.status(TALLY).await, before);
        // One past the checkpoint is a skip too.
        assert!(matches!(scratch.bus.rewind(TALLY, checkpoint + 1).await, Err(BusError::RewindAhead { .. })));
        assert!(matches!(scratch.bus.rewind(TALLY, -1).await, Err(BusError::NegativeSeq(-1))));
        // To the checkpoint itself: a no-op.
        assert_eq!(scratch.bus.rewind(TALLY, checkpoint).await.unwrap(), checkpoint);
        assert_eq!(scratch.status(TALLY).await.checkpoint, checkpoint);

        // Later events are still applied: the subscription still sees every event.
        scratch.register("Rhea Two", "rhea2@example.com").await;
        scratch.settled().await;
        assert_eq!(scratch.tallies().await, vec![1, 2]);

        // Back to 0 still works, and applies nothing twice. Delivery is stopped meanwhile so
        // that the position read shows the rewound checkpoint, not how far the worker got since.
        let mut scratch = scratch;
        scratch.stop_delivery().await;
        assert_eq!(scratch.bus.rewind(TALLY, 0).await.unwrap(), 2);
        assert_eq!(scratch.status(TALLY).await.checkpoint, 0);
        scratch.start_delivery();
        scratch.settled().await;
        assert_eq!(scratch.tallies().await, vec![1, 2]);
        for status in scratch.bus.status().await.unwrap() {
            assert_eq!(status.lag, 0, "{status:?}");
        }
    }

    async fn a_checkpoint_left_past_the_head_shows_no_negative_lag_and_can_be_rewound(scratch: Scratch) {
        let mut scratch = scratch;
        let ada = scratch.register("Ada", "ada@example.com").await;
        scratch.settled().await;
        scratch.stop_delivery().await;
        // What a forward rewind used to leave behind.
        let mut tx = scratch.consumer.begin().await.unwrap();
        with_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE subscription_checkpoints SET seq = 1000000 WHERE name = $1")
                .bind(REPLICAS)
                .execute(conn)
                .await
                .map(drop)
        })
        .unwrap();
        tx.commit().await.unwrap();
        let stuck = scratch.status(REPLICAS).await;
        assert_eq!((stuck.checkpoint, stuck.head_seq, stuck.lag), (1_000_000, 1, 0), "{stuck:?}");

        // Rewinding to the head repairs it: the next member arrives.
        scratch.bus.rewind(REPLICAS, 1).await.unwrap();
        scratch.start_delivery();
        let bob = scratch.register("Bob", "bob@example.com").await;
        scratch.settled().await;
        let ids: Vec<_> = scratch.replicas().await.into_iter().map(|(id, _, _)| id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&ada) && ids.contains(&bob));
    }
}
