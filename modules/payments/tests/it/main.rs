//! Integration tests of the payments module, each on SQLite and on Postgres.

#![allow(clippy::unwrap_used)]

mod support;

mod batches;
mod concurrency;
mod http;
mod saga;
mod snapshots;
mod time_travel;
mod upgrade;
