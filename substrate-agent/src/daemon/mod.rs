//! The agent process around the reconcile logic: [`agent`] (the `Attach` session with the
//! controller and the reconcile loop), [`exec`] and [`console`] (what the session serves besides
//! desired states), [`metrics`] (Prometheus), [`probe`] (capabilities reported at start-up),
//! [`underlay`] (liveness of the substrate links to the neighbours), [`cleanup`] and
//! [`bench`](mod@bench) (the binary's other modes).

pub mod agent;
pub mod backoff;
pub mod bench;
pub mod cleanup;
pub mod console;
pub mod exec;
pub mod metrics;
pub mod probe;
pub mod sandbox;
pub mod underlay;
