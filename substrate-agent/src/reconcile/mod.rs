//! Level-triggered reconcile: [`spec`] (the desired state, validated once from the wire),
//! [`naming`] (names and ownership tags), [`state`] (the ownership ledger), [`observe`] and
//! [`observed`] (the host as found), [`plan`] (pure: what to change) and [`apply`] (the thin
//! executor over [`crate::host::kernel::Kernel`]).

pub mod apply;
pub mod naming;
pub mod observe;
pub mod observed;
pub mod plan;
pub mod spec;
pub mod state;
