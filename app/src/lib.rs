//! The `bounded` application: configuration, wiring of the modules, the HTTP gateway and
//! operations endpoints, and the architecture lint.
//!
//! **Architecture Invariant:** only this crate depends on module implementation crates, and only
//! in [`modules`], to construct and wire them.

pub mod arch;
pub mod baseline;
pub mod bench;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod history;
pub mod http;
pub mod modules;
pub mod ops;
pub mod ops_views;
pub mod reconcile;
pub mod server;
pub mod startup;
pub mod telemetry;
