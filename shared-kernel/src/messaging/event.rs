//! Integration events and the envelope they travel in.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// An event one module publishes for others. Implemented by types in `*-api` crates, whose
/// name and version are the contract (`customers.CustomerRegistered@1`).
pub trait IntegrationEvent: Serialize + DeserializeOwned {
    /// Stable name: `<module>.<EventName>`.
    const TYPE: &'static str;
    /// Schema version; a breaking change is a new version, and older ones are upcast on read.
    const VERSION: i32;
    /// The kind of aggregate the event is about (`customer`, `product`, `order`).
    const AGGREGATE_TYPE: &'static str;
    /// The aggregate's id; events of one aggregate are delivered in order.
    fn aggregate_id(&self) -> String;
}

/// Causal context of an event, carried into the events it causes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventContext {
    /// The request or flow the event belongs to.
    pub correlation_id: Option<Uuid>,
    /// The event (or request) that caused this one.
    pub causation_id: Option<Uuid>,
    /// Trace context (`traceparent`, `tracestate`) and other transport headers.
    pub headers: BTreeMap<String, String>,
}

impl EventContext {
    /// The context of events caused by handling `event`: same correlation, caused by it.
    pub fn caused_by(event: &Envelope) -> Self {
        Self {
            correlation_id: event.correlation_id.or(Some(event.id)),
            causation_id: Some(event.id),
            headers: event.headers.clone(),
        }
    }
}

/// An event as stored in the outbox and delivered to subscriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUID v7, unique across the system; the inbox key.
    pub id: Uuid,
    /// Module that published it.
    pub source: String,
    /// Position in the source's log: gap-free, in commit order.
    pub seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub event_version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    pub headers: BTreeMap<String, String>,
    pub payload: serde_json::Value,
}

/// The payload of an envelope did not match the type it claims.
#[derive(Debug, thiserror::Error)]
#[error("event {event_id} ({event_type}@{event_version}) has a malformed payload")]
pub struct MalformedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: i32,
    #[source]
    pub source: serde_json::Error,
}

impl Envelope {
    /// The payload as `E` when the envelope carries an `E` (same name and version); `None` for
    /// any other event, which a tolerant consumer ignores. Unknown payload fields are ignored.
    pub fn decode<E: IntegrationEvent>(&self) -> Option<Result<E, MalformedEvent>> {
        if self.event_type != E::TYPE || self.event_version != E::VERSION {
            return None;
        }
        Some(
            serde_json::from_value(self.payload.clone()).map_err(|source| MalformedEvent {
                event_id: self.id,
                event_type: self.event_type.clone(),
                event_version: self.event_version,
                source,
            }),
        )
    }

    /// `customers.CustomerRegistered@1`.
    pub fn name(&self) -> String {
        format!("{}@{}", self.event_type, self.event_version)
    }
}
