//! Integration tests of the whole service, one binary (`cargo test -p app --test it`).
//!
//! Storage tests run on SQLite always and on Postgres when `BOUNDED_TEST_DATABASE_URL` is set
//! (each in a fresh database); see `shared_kernel::both_backends!`.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

mod cli;
mod connections;
mod crash;
mod cross_site;
mod customers;
mod details;
mod inventory;
mod isolation;
mod messaging;
mod openapi;
mod ops_views;
mod orders;
mod read_model;
mod readiness;
mod reconciliation;
mod rejections;
mod saga;
mod seed;
mod shop;
