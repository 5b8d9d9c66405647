//! Domain types and pure state: validated requests, the substrate registry, exact usage,
//! identifier allocators, VN records, the in-memory index, desired-state computation and the
//! durable store. Nothing here knows tonic.

pub mod alloc;
pub mod attributes;
pub mod desired;
pub mod embed;
pub mod index;
pub mod model;
pub mod nest;
pub mod record;
pub mod store;
pub mod substrate;
pub mod usage;
