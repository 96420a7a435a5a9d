//! The read-model projector set-based: batches applied through `handle_batch` have exactly the
//! effects of their events applied one by one through `handle`, on SQLite and on Postgres.

#![allow(clippy::unwrap_used)]

mod projector;

use projector::{
    Store, Tables, at, cancelled, confirmed, payment, placed, registered, rejected, updated,
};
use shared_kernel::messaging::Envelope;
use shared_kernel::storage::testing::{OnBackend, Rng, TestBackend};
use uuid::Uuid;

/// Two fresh read stores: one applies events one by one, the other in batches.
struct Pair {
    each: Store,
    batched: Store,
}

impl OnBackend for Pair {
    async fn on_backend(backend: TestBackend, test: &'static str) -> Option<Self> {
        Some(Self {
            each: Store::open(backend, test).await?,
            batched: Store::open(backend, test).await?,
        })
    }
}

/// The customers and orders the events are about, and each source's log so far.
struct World {
    /// The last one never registers: its orders keep a placeholder customer.
    customers: Vec<Uuid>,
    /// Each order with its customer; the last ones are never placed (their payments come
    /// alone).
    orders: Vec<(Uuid, Uuid)>,
    /// Per source (customers, orders, payments), every event so far, in seq order.
    logs: [Vec<Envelope>; 3],
    /// Milliseconds since [`at`]'s instant: every event gets a time of its own.
    clock: i64,
}

const PLACED_ORDERS: usize = 12;

impl World {
    fn new(rng: &mut Rng) -> Self {
        let customers: Vec<Uuid> = (0..5).map(|_| rng.uuid()).collect();
        let orders = (0..PLACED_ORDERS + 3)
            .map(|_| (rng.uuid(), customers[rng.index(customers.len())]))
            .collect();
        Self {
            customers,
            orders,
            logs: [Vec::new(), Vec::new(), Vec::new()],
            clock: 0,
        }
    }

    /// Appends a new event of `source` (0 customers, 1 orders, 2 payments) to its log.
    fn next(&mut self, source: usize, rng: &mut Rng) -> Envelope {
        let seq = i64::try_from(self.logs[source].len()).unwrap() + 1;
        self.clock += 1 + i64::try_from(rng.below(5)).unwrap();
        let time = at(self.clock);
        let event = match source {
            0 => {
                let customer = self.customers[rng.index(self.customers.len() - 1)];
                let name = format!("name {seq}");
                if rng.below(2) == 0 {
                    registered(customer, &name, seq, time)
                } else {
                    updated(customer, &name, seq, time)
                }
            }
            1 => {
                let (order, customer) = self.orders[rng.index(PLACED_ORDERS)];
                match rng.below(100) {
                    0..35 => {
                        let lines: Vec<i64> = (0..=rng.below(3))
                            .map(|_| 1 + i64::try_from(rng.below(4)).unwrap())
                            .collect();
                        placed(order, customer, &lines, seq, time)
                    }
                    35..60 => confirmed(order, seq, time),
                    60..80 => rejected(order, seq, time),
                    _ => cancelled(order, seq, time),
                }
            }
            _ => {
                let (order, _) = self.orders[rng.index(self.orders.len())];
                payment(order, rng.below(5), seq, time)
            }
        };
        self.logs[source].push(event.clone());
        event
    }
}

/// One round: per source, maybe a rewind (its log replayed from a random earlier event), then
/// new events; the sources interleaved at random, in batches of 1 to 16 events of one source.
fn round(world: &mut World, rng: &mut Rng) -> Vec<Vec<Envelope>> {
    let mut queues: Vec<Vec<Envelope>> = Vec::new();
    for source in 0..3 {
        let log = &world.logs[source];
        let mut queue: Vec<Envelope> = if !log.is_empty() && rng.below(4) == 0 {
            log[rng.index(log.len())..].to_vec()
        } else {
            Vec::new()
        };
        let new = [8, 30, 20][source];
        for _ in 0..rng.below(new) {
            queue.push(world.next(source, rng));
        }
        queue.reverse();
        queues.push(queue);
    }
    let mut batches = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        let source = loop {
            let source = rng.index(3);
            if !queues[source].is_empty() {
                break source;
            }
        };
        let size = (1 + rng.index(16)).min(queues[source].len());
        let queue = &mut queues[source];
        let batch: Vec<Envelope> = queue.drain(queue.len() - size..).rev().collect();
        batches.push(batch);
    }
    batches
}

/// How many summaries of each kind `tables` holds (to check the scenarios' reach).
fn coverage(tables: &Tables) -> [usize; 5] {
    let s = &tables.summaries;
    [
        s.iter().filter(|r| r.status.is_none()).count(),
        s.iter()
            .filter(|r| r.status.as_deref() == Some("PENDING"))
            .count(),
        s.iter()
            .filter(|r| r.status.is_some() && r.status.as_deref() != Some("PENDING"))
            .count(),
        s.iter()
            .filter(|r| r.status.is_some() && r.customer_name.is_none())
            .count(),
        tables.customers.iter().filter(|c| c.name.is_some()).count(),
    ]
}

/// Asserts that both stores hold the same rows, naming the first that differs.
fn assert_same(each: &Tables, batched: &Tables, context: &str) {
    for (e, b) in each.summaries.iter().zip(&batched.summaries) {
        assert_eq!(e, b, "{context}: order_summaries");
    }
    for (e, b) in each.customers.iter().zip(&batched.customers) {
        assert_eq!(e, b, "{context}: summary_customers");
    }
    assert_eq!(each, batched, "{context}");
}

async fn apply(store: &Store, batch: &[Envelope]) {
    if batch.len() == 1 {
        // As the kernel does: one event alone goes through `handle`.
        store.apply_each(batch).await;
    } else {
        store.apply_batch(batch).await;
    }
}

shared_kernel::both_backends! {
    // The main proof: random sequences of the three sources, interleaved and with rewinds,
    // applied one by one on one store and in random batches on the other, leave both tables
    // identical, every column.
    async fn batches_have_the_effects_of_events_one_by_one(pair: Pair) {
        let mut rng = Rng(0x5EED_0000_0000_0042);
        let mut reach = [0; 5];
        let mut batches = 0;
        for scenario in 0..4 {
            let mut world = World::new(&mut rng);
            for step in 0..6 {
                for batch in round(&mut world, &mut rng) {
                    pair.each.apply_each(&batch).await;
                    pair.batched.apply_batch(&batch).await;
                    batches += 1;
                    let (each, batched) = (pair.each.tables().await, pair.batched.tables().await);
                    assert_same(&each, &batched, &format!("scenario {scenario}, step {step}, batch {batches}"));
                    for (total, n) in reach.iter_mut().zip(coverage(&each)) {
                        *total += n;
                    }
                }
            }
        }
        // The scenarios did reach payments alone, pending and settled orders, orders whose
        // customer is a placeholder, and known customers.
        assert!(reach.iter().all(|n| *n > 0), "{reach:?} in {batches} batches");
    }

    // An order's events in one batch follow each other: placed then confirmed ends
    // confirmed, created at the placement and changed at the confirmation; a status before
    // the placement does nothing; a payment ahead of its order waits on the row; the
    // customer's name is the one known when the batch ran. Replaying the same batches changes
    // nothing.
    async fn one_batch_replays_an_orders_events(store: Store) {
        let (ada, o1, o2, o3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let customers = [registered(ada, "Ada", 1, at(1)), updated(ada, "Ada King", 2, at(2))];
        let payments = [payment(o1, 0, 1, at(3)), payment(o1, 2, 2, at(4)), payment(o3, 0, 3, at(5))];
        let orders = [
            placed(o1, ada, &[2, 3], 1, at(10)),
            confirmed(o2, 2, at(11)),
            confirmed(o1, 3, at(12)),
            placed(o2, ada, &[1], 4, at(13)),
            rejected(o3, 5, at(14)),
        ];
        for batch in [&customers[..], &payments, &orders] {
            apply(&store, batch).await;
        }
        let tables = store.tables().await;
        let row = |order: Uuid| tables.summaries.iter().find(|r| r.order_id == order).unwrap();

        let first = row(o1);
        assert_eq!(first.status.as_deref(), Some("CONFIRMED"));
        assert_eq!((first.item_count, first.total_cents), (Some(5), Some(500)));
        assert_eq!((first.created_at, first.order_changed_at, first.order_seq), (Some(at(10)), Some(at(12)), Some(3)));
        assert_eq!((first.customer_name.as_deref(), first.customer_seq), (Some("Ada King"), Some(2)));
        assert_eq!((first.payment_status.as_deref(), first.payment_seq), (Some("CAPTURED"), Some(2)));

        let second = row(o2);
        assert_eq!(second.status.as_deref(), Some("PENDING"), "the confirmation came first");
        assert_eq!((second.order_changed_at, second.order_seq), (Some(at(13)), Some(4)));

        let third = row(o3);
        assert_eq!((third.status.as_deref(), third.order_seq), (None, None), "never placed");
        assert_eq!(third.payment_status.as_deref(), Some("AUTHORIZED"));

        for batch in [&customers[..], &payments, &orders] {
            apply(&store, batch).await;
        }
        assert_eq!(store.tables().await, tables, "a replay changes nothing");
    }
}
