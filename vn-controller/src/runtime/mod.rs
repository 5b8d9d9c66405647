//! Agent sessions, provisioning, rollback, timers, metrics and the daemon's wiring.

pub mod controller;
pub mod credentials;
pub mod daemon;
pub mod metrics;
pub mod writer;
