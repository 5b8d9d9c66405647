//! vn-controller: the gRPC control plane of vnet.
//!
//! Layout (after linkerd2's policy controller):
//! - [`core`]: domain types and pure state (validated requests, registry, usage, allocators,
//!   records, the index, desired states, the redb store); tested with plain `#[test]`s.
//! - [`grpc`]: the gRPC edge: identity, validation into domain types, Status codes, services.
//! - [`runtime`]: agent sessions, provisioning and rollback, metrics, wiring of the daemon.

pub mod core;
pub mod grpc;
pub mod runtime;
pub mod standin;
