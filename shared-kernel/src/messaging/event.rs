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

    /// Turns the payload of an older `version` of this event into the current shape, or
    /// `None` when that version cannot be read any more. Readers call it through
    /// [`Envelope::decode`]; stored events are never rewritten.
    fn upcast(version: i32, payload: serde_json::Value) -> Option<serde_json::Value> {
        let _ = (version, payload);
        None
    }
}

/// Declares a module's integration events (version 1) and its list of event types, `TYPES`:
/// each event is named `<module>.<Type>` and belongs to the aggregate whose id is the given
/// field. Every `*-api` crate declares its events with it, so the four read alike; an event
/// that needs an upcast implements [`IntegrationEvent`] by hand instead.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use shared_kernel::messaging::IntegrationEvent as _;
///
/// #[derive(Serialize, Deserialize)]
/// pub struct OrderPlaced {
///     pub order_id: u64,
/// }
///
/// shared_kernel::integration_events! {
///     module "orders";
///     "order" by order_id: OrderPlaced;
/// }
///
/// assert_eq!(TYPES, ["orders.OrderPlaced"]);
/// assert_eq!(OrderPlaced { order_id: 7 }.aggregate_id(), "7");
/// ```
#[macro_export]
macro_rules! integration_events {
    (
        module $module:literal;
        $( $aggregate:literal by $field:ident: $($event:ident),+ ; )+
    ) => {
        $($(
            impl $crate::messaging::IntegrationEvent for $event {
                const TYPE: &'static str = concat!($module, ".", stringify!($event));
                const VERSION: i32 = 1;
                const AGGREGATE_TYPE: &'static str = $aggregate;
                fn aggregate_id(&self) -> String {
                    self.$field.to_string()
                }
            }
        )+)+

        /// Every event type this module publishes, in declaration order.
        pub const TYPES: &[&str] = &[
            $($(<$event as $crate::messaging::IntegrationEvent>::TYPE),+),+
        ];
    };
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

tokio::task_local! {
    static CURRENT: EventContext;
}

impl EventContext {
    /// The context of the request or event being handled by this task (see [`Self::scope`]),
    /// or an empty one outside any.
    pub fn current() -> Self {
        CURRENT.try_with(Clone::clone).unwrap_or_default()
    }

    /// Runs `work` with `self` as [`Self::current`]: events appended inside carry its
    /// correlation id, causation id and trace headers.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// The context of a request: correlated by the request id, with its W3C trace headers.
    pub fn for_request(request_id: Option<Uuid>, headers: BTreeMap<String, String>) -> Self {
        Self {
            correlation_id: request_id,
            causation_id: request_id,
            headers,
        }
    }

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
    ///
    /// An older version is upcast first ([`IntegrationEvent::upcast`]); a newer version than
    /// this reader knows is, like an unknown type, not for it (`None`).
    pub fn decode<E: IntegrationEvent>(&self) -> Option<Result<E, MalformedEvent>> {
        if self.event_type != E::TYPE || self.event_version > E::VERSION {
            return None;
        }
        let payload = if self.event_version == E::VERSION {
            self.payload.clone()
        } else {
            E::upcast(self.event_version, self.payload.clone())?
        };
        Some(
            serde_json::from_value(payload).map_err(|source| MalformedEvent {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Version 2 split `name` into `first` and `last`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Renamed {
        id: String,
        first: String,
        last: String,
    }

    impl IntegrationEvent for Renamed {
        const TYPE: &'static str = "test.Renamed";
        const VERSION: i32 = 2;
        const AGGREGATE_TYPE: &'static str = "thing";
        fn aggregate_id(&self) -> String {
            self.id.clone()
        }
        fn upcast(version: i32, mut payload: serde_json::Value) -> Option<serde_json::Value> {
            (version == 1).then(|| {
                let name = payload["name"].as_str().unwrap_or_default().to_owned();
                let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
                payload["first"] = json!(first);
                payload["last"] = json!(last);
                payload
            })
        }
    }

    fn envelope(event_type: &str, version: i32, payload: serde_json::Value) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            source: "test".into(),
            seq: 1,
            aggregate_type: "thing".into(),
            aggregate_id: "1".into(),
            event_type: event_type.into(),
            event_version: version,
            occurred_at: crate::clock::now(),
            correlation_id: None,
            causation_id: None,
            headers: BTreeMap::new(),
            payload,
        }
    }

    #[test]
    fn old_versions_are_upcast_and_unknown_fields_ignored() {
        let v1 = envelope(
            "test.Renamed",
            1,
            json!({"id": "1", "name": "Ada Lovelace", "extra": 1}),
        );
        let decoded = v1.decode::<Renamed>().unwrap().unwrap();
        assert_eq!(
            (decoded.first.as_str(), decoded.last.as_str()),
            ("Ada", "Lovelace")
        );
        let v2 = envelope(
            "test.Renamed",
            2,
            json!({"id": "1", "first": "A", "last": "B", "new": true}),
        );
        assert_eq!(v2.decode::<Renamed>().unwrap().unwrap().first, "A");
    }

    #[test]
    fn other_types_and_newer_versions_are_not_for_this_reader() {
        assert!(
            envelope("test.Other", 2, json!({}))
                .decode::<Renamed>()
                .is_none()
        );
        assert!(
            envelope("test.Renamed", 3, json!({}))
                .decode::<Renamed>()
                .is_none()
        );
        let malformed = envelope("test.Renamed", 2, json!({"id": 5}));
        assert!(malformed.decode::<Renamed>().unwrap().is_err());
    }
}
