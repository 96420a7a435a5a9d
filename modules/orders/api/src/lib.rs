//! Public contract of the orders module.
//!
//! The module's trait, DTOs and integration events arrive with the issue that gives the
//! module its behaviour; until then the contract is its identifier type only, so that other
//! crates can already name orders's resources.
//!
//! **Architecture Invariant:** this crate depends only on `shared-kernel` and an allow-list of
//! third-party crates.

shared_kernel::define_id!(
    /// Identifies an order.
    OrderId
);
