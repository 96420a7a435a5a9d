//! The `bounded` application, the running service: configuration, wiring of the modules, the
//! HTTP router, the API composition (gateway), the operations endpoints and reconciliation. The
//! tools the binary also offers (the architecture lint, the load generator, the baseline shop,
//! the demo) live in the `tools` crate; `main` only dispatches to them.
//!
//! **Architecture Invariant:** only this crate depends on module implementation crates, and only
//! in [`modules`], to construct and wire them.

pub mod config;
pub mod gateway;
pub mod http;
pub mod modules;
pub mod ops;
pub mod ops_views;
pub mod reconcile;
pub mod seed;
pub mod server;
pub mod startup;
pub mod telemetry;
