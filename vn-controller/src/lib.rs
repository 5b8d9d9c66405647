//! vn-controller: the gRPC control plane of vnet.
//!
//! Layout (after linkerd2's policy controller):
//! - [`core`]: the `vn-core` crate (in `core/`), re-exported under this name: domain types and
//!   pure state (validated requests, registry, usage, allocators, records, the index, desired
//!   states, the planner seam); no tonic, no storage engine, no clock; tested with plain
//!   `#[test]`s.
//! - [`store`]: the durable store (redb) that the runtime writes changes to.
//! - [`grpc`]: the gRPC edge: identity, validation into domain types, Status codes, services.
//! - [`runtime`]: agent sessions, provisioning and rollback, metrics, wiring of the daemon.

pub use vn_core as core;

pub mod grpc;
pub mod runtime;
#[cfg(any(test, feature = "testing"))]
pub mod standin;
pub mod store;
