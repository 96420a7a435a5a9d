//! The shared kernel: what every module needs and nothing about the shop.
//!
//! - [`ids`]: typed UUID v7 identifiers (`define_id!`).
//! - [`clock`]: the one way to read the time, at the precision both databases store.
//! - [`http`]: RFC 9457 problems, the JSON extractor, path ids, cursor pagination.
//! - [`messaging`]: integration events, the transactional outbox, durable subscriptions.
//! - [`storage`]: per-module databases (SQLite file or Postgres schema + role), migrations,
//!   the dual-backend query macros and idempotency keys.
//! - [`validate`]: field validators that report [`http::FieldError`]s.
//!
//! **Architecture Invariant:** this crate depends on no workspace crate and names no module.

pub mod clock;
pub mod http;
pub mod ids;
pub mod messaging;
pub mod prometheus;
pub mod storage;
pub mod validate;

#[doc(hidden)]
pub use utoipa as __utoipa;
#[doc(hidden)]
pub use uuid as __uuid;
