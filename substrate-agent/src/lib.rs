//! The substrate agent: the per-host daemon that realizes virtual nodes and links.
//!
//! Parts, each concept in one file named for it:
//! - [`daemon`]: the process around the logic: the session with the controller and the reconcile
//!   loop ([`daemon::agent`]), `ExecCommand` ([`daemon::exec`]), guest consoles
//!   ([`daemon::console`]), the capability probe, `cleanup` and the scale benchmark;
//! - [`reconcile`]: desired state in, host changed: the controller's `DesiredState` is validated
//!   into [`reconcile::spec::Desired`] at the edge; [`reconcile::observe::observe`] reads the host
//!   into an [`reconcile::observed::Observed`] (ownership from [`reconcile::naming`] tags and the
//!   [`reconcile::state`] ledger); the pure [`reconcile::plan::plan`] computes operations;
//!   [`reconcile::apply::apply`] runs them;
//! - [`host`]: the one kernel layer, the [`host::kernel::Kernel`] trait and its Linux
//!   implementation (rtnetlink, named namespaces, tc, TAP), with a recording fake under
//!   `cfg(test)` and the `testing` feature;
//! - [`guest`]: QEMU guests as VM nodes (their TAPs through the same `Kernel`);
//! - [`vlan`]: the userspace 802.1Q datapath;
//! - [`mac`]: the one MAC address type.

pub mod daemon;
pub mod guest;
pub mod host;
pub mod impair;
pub mod mac;
pub mod reconcile;
pub mod vlan;
