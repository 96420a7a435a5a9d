//! The messaging runtime end to end on real databases, without any module of the shop: a
//! scratch source and consumer (`tests/scratch`, migrations in `tests/migrations`) and a `Bus`
//! over them (`fixture::Scratch`), across restarts, rewinds, failing handlers, pruning and two
//! processes (`cargo test -p shared-kernel --test messaging`). Every storage test runs on
//! SQLite and on Postgres (`shared_kernel::both_backends!`).

#![allow(clippy::unwrap_used)]

#[path = "../scratch/mod.rs"]
mod scratch;

mod batches;
mod delivery;
mod failures;
mod fixture;
mod outbox;
mod processes;
mod properties;
