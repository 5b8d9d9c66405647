//! `substrate-agent cleanup`: removes everything this agent owns on the host (what an empty
//! desired state would remove): its namespaces (and with them every link), guests, the VLAN
//! datapath. Look-alikes and other agents' objects stay, as always.

use std::collections::BTreeSet;

use crate::guest::GuestRuntime;
use crate::host::kernel::Kernel;
use crate::reconcile::apply::{Env, apply};
use crate::reconcile::naming::Naming;
use crate::reconcile::observe::observe;
use crate::reconcile::plan::{Op, PlanContext, plan};
use crate::reconcile::spec::Desired;
use crate::reconcile::state::{Ledger, StateDir};
use crate::vlan::config::DatapathControl;

/// What cleanup removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CleanupReport {
    pub namespaces: Vec<String>,
    pub guests: Vec<String>,
    pub errors: Vec<String>,
    /// What could not be read and was left alone (see [`crate::observe`]).
    pub warnings: Vec<String>,
}

/// Applies an empty desired state.
pub fn cleanup<K: Kernel>(
    kernel: &K,
    naming: &Naming,
    ledger: &StateDir,
    datapath: &dyn DatapathControl,
    guests: Option<&dyn GuestRuntime>,
) -> anyhow::Result<CleanupReport> {
    let running: BTreeSet<String> = match guests {
        Some(g) => g
            .observed()?
            .into_iter()
            .filter(|g| g.running)
            .map(|g| g.node_id)
            .collect(),
        None => BTreeSet::new(),
    };
    let obs = observe(kernel, naming, ledger, running, 4)?;
    ledger.forget(&obs.stale_records)?;
    let p = plan(
        naming,
        &Desired::default(),
        &obs.observed,
        PlanContext {
            guests_supported: guests.is_some(),
            vlan_bpf: datapath.bpf(),
        },
    );
    let mut report = CleanupReport {
        warnings: obs.warnings.clone(),
        ..Default::default()
    };
    for (_, op) in &p.ops {
        match op {
            Op::DeleteNetns { name } => report.namespaces.push(name.clone()),
            Op::StopGuest { node } => report.guests.push(node.to_string()),
            _ => {}
        }
    }
    let env = Env {
        kernel,
        ledger,
        datapath,
        guests,
        workers: 4,
        cancel: None,
    };
    let r = apply(&env, &p);
    report.errors = r.errors;
    report
        .errors
        .extend(r.failed.into_iter().map(|(vn, e)| format!("vn {vn}: {e}")));
    Ok(report)
}
