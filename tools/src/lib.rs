//! The tools the `bounded` binary offers beside the service: the architecture lint
//! (`bounded arch`), the load generator (`bounded bench`), the single-transaction baseline shop
//! it compares against (`bounded baseline`) and the demo seeder (`bounded demo`).
//!
//! **Architecture Invariant:** this crate uses the kernel and talks to a running instance over
//! HTTP; it depends on no module crate (only `app` wires modules), so a tool can never reach
//! around a module's API into its tables.

pub mod arch;
pub mod baseline;
pub mod bench;
pub mod demo;
