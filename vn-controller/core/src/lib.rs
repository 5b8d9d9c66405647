//! The pure core of the vnet controller: validated requests, the substrate registry, exact
//! usage, identifier allocators, VN records, the in-memory index, desired-state computation and
//! the planner seam. Nothing here knows tonic, a storage engine or the clock; the controller
//! (`vn-controller`) adds the gRPC edge, the durable store and the runtime.

pub mod alloc;
pub mod attributes;
pub mod desired;
pub mod embed;
pub mod error;
pub mod failover;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod frame;
pub mod index;
pub mod model;
pub mod nest;
pub mod placement;
pub mod record;
pub mod replan;
pub mod store;
pub mod substrate;
pub mod topology;
pub mod update;
pub mod usage;
