//! `payments<-orders` set-based: a batch applied through `handle_batch` has exactly the
//! effects of its events applied one by one through `handle` — the same streams (events,
//! versions, causes), views, snapshots' folds and published events — on SQLite and Postgres.

use std::collections::{BTreeMap, HashMap};

use orders_api::OrderId;
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderRejected};
use payments::PaymentsConfig;
use serde_json::Value;
use shared_kernel::messaging::{Envelope, IntegrationEvent, run_handler, run_handler_batch};
use shared_kernel::storage::testing::Rng;
use shared_kernel::with_reader;
use sqlx::types::Json;
use uuid::Uuid;

use crate::support::{Env, Kind, envelope, placed};

/// An orders event with a correlation of its own, so that causes can be compared.
fn caused<E: IntegrationEvent>(rng: &mut Rng, event: &E, seq: i64) -> Envelope {
    let mut envelope = envelope(event);
    envelope.id = rng.uuid();
    envelope.seq = seq;
    envelope.correlation_id = Some(rng.uuid());
    envelope
}

/// Orders of three customers whose credit (1 000 each) is scarce: placements (a few with a
/// negative total), confirmations, rejections and cancellations in any order — before the
/// placement, after another settlement, twice — and repeated placements under new ids.
fn scenario(rng: &mut Rng) -> Vec<Envelope> {
    let customers: Vec<Uuid> = (0..3).map(|_| rng.uuid()).collect();
    let orders: Vec<(Uuid, Uuid)> = (0..12)
        .map(|i| (rng.uuid(), customers[i % customers.len()]))
        .collect();
    let mut events = Vec::new();
    for seq in 1..=50 {
        let (order_id, customer_id) = orders[usize::try_from(rng.below(12)).unwrap()];
        let order = OrderId(order_id);
        let event = match rng.below(10) {
            0..=3 => {
                let total = i64::try_from(rng.below(700)).unwrap() - 30;
                caused(rng, &placed(order_id, customer_id, total), seq)
            }
            4..=5 => caused(rng, &OrderConfirmed { order_id: order }, seq),
            6..=7 => caused(rng, &OrderCancelled { order_id: order }, seq),
            _ => {
                let reason = orders_api::Reason::PaymentDeclined;
                caused(
                    rng,
                    &OrderRejected {
                        order_id: order,
                        reason,
                    },
                    seq,
                )
            }
        };
        events.push(event);
    }
    events
}

/// A row of `events`: stream id and type, version, event type, payload, metadata.
type EventRow = (Uuid, String, i64, String, Json<Value>, Json<Value>);

/// One row of a stream, with payment ids written as their orders (they are random).
type Row = (String, i64, String, Value, Value);

/// Everything the events left, comparable across two databases: each stream's events keyed by
/// the customer (accounts) or the order (payments), the views, the folds of every stream as
/// loaded through snapshots, and the published events with their causes.
#[derive(Debug, PartialEq)]
struct State {
    streams: BTreeMap<String, Vec<Row>>,
    views: Vec<(Uuid, Uuid, i64, String, i64)>,
    accounts: BTreeMap<Uuid, (i64, i64, i64)>,
    published: Vec<(String, Value, Option<Uuid>, Option<Uuid>)>,
}

/// Replaces every payment id in `value` by the name of its order.
fn named(value: &Value, names: &HashMap<String, String>) -> Value {
    match value {
        Value::String(s) => Value::String(names.get(s).cloned().unwrap_or_else(|| s.clone())),
        Value::Array(items) => Value::Array(items.iter().map(|v| named(v, names)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), named(v, names)))
                .collect(),
        ),
        other => other.clone(),
    }
}

async fn state(env: &Env) -> State {
    let views: Vec<(Uuid, Uuid, Uuid, i64, String, i64)> =
        with_reader!(env.db.reader().unwrap(), |pool| {
            sqlx::query_as(
                "SELECT payment_id, order_id, customer_id, amount_cents, status, version \
                 FROM payment_views ORDER BY order_id",
            )
            .fetch_all(pool)
            .await
        })
        .unwrap();
    let names: HashMap<String, String> = views
        .iter()
        .map(|(payment, order, ..)| (payment.to_string(), format!("payment of {order}")))
        .collect();
    let rows: Vec<EventRow> = with_reader!(env.db.reader().unwrap(), |pool| {
        sqlx::query_as(
            "SELECT stream_id, stream_type, version, event_type, payload, metadata \
                 FROM events ORDER BY stream_id, version",
        )
        .fetch_all(pool)
        .await
    })
    .unwrap();
    let mut streams: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for (stream_id, stream_type, version, event_type, payload, metadata) in rows {
        let key = names
            .get(&stream_id.to_string())
            .cloned()
            .unwrap_or_else(|| stream_id.to_string());
        let causes = serde_json::json!({
            "correlation_id": metadata.0["correlation_id"],
            "causation_id": metadata.0["causation_id"],
        });
        let row = (
            stream_type,
            version,
            event_type,
            named(&payload.0, &names),
            causes,
        );
        streams.entry(key).or_default().push(row);
    }
    let mut accounts = BTreeMap::new();
    for customer in views.iter().map(|v| v.2) {
        let account = env.account(customer).await;
        let folded = (
            account.credit_limit_cents,
            account.outstanding_cents,
            account.version,
        );
        accounts.insert(customer, folded);
    }
    let published = env
        .published()
        .await
        .into_iter()
        .map(|e| {
            let payload = named(&e.payload, &names);
            (
                e.event_type.clone(),
                payload,
                e.correlation_id,
                e.causation_id,
            )
        })
        .collect();
    State {
        streams,
        views: views
            .into_iter()
            .map(|(_, order, customer, amount, status, version)| {
                (order, customer, amount, status, version)
            })
            .collect(),
        accounts,
        published,
    }
}

/// Snapshots every 3 events, so that batches cross snapshot versions.
const CONFIG: PaymentsConfig = PaymentsConfig {
    default_credit_limit_cents: 1_000,
    snapshot_every: 3,
};

// Random scenarios, applied one event per transaction on one database and in random batches
// of 1–16 on another: both end in the same state after each scenario.
shared_kernel::both_backends! {
    async fn a_batch_has_the_effects_of_its_events_one_by_one(kind: Kind) {
        let each = Env::with_config(kind, "payments_batches_each", CONFIG).await;
        let batched = Env::with_config(kind, "payments_batches_batched", CONFIG).await;
        let (one, many) = (each.payments.order_events(), batched.payments.order_events());
        for seed in 1..=12_u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let events = scenario(&mut rng);
            for event in &events {
                let mut tx = each.db.begin().await.unwrap();
                run_handler(&mut tx, "payments<-orders", &one, event)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            let mut rest: &[Envelope] = &events;
            while !rest.is_empty() {
                let size = usize::try_from(1 + rng.below(16)).unwrap().min(rest.len());
                let (batch, after) = rest.split_at(size);
                let batch: Vec<&Envelope> = batch.iter().collect();
                let mut tx = batched.db.begin().await.unwrap();
                run_handler_batch(&mut tx, "payments<-orders", &many, &batch)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                rest = after;
            }
            let (expected, got) = (state(&each).await, state(&batched).await);
            assert!(!expected.published.is_empty(), "seed {seed}: nothing happened");
            assert_eq!(got, expected, "{kind:?}, seed {seed}");
        }
    }
}
