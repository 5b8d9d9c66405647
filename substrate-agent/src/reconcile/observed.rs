//! What the agent found on its host: the input of the planner beside the desired state.
//!
//! Only objects this agent owns are listed as such. A name under our prefix that the ledger does
//! not own (a look-alike, another agent's, a stray file) is listed in `foreign`: the planner never
//! deletes it, and refuses to build over it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::reconcile::naming::NsTag;

/// The observed host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Namespaces of this agent, by name.
    pub namespaces: BTreeMap<String, NsObs>,
    /// Names under our prefix that are not ours (look-alikes, another agent's).
    pub foreign: BTreeSet<String>,
    /// Links tagged by this agent in the agent's own namespace (should not exist; removed).
    pub host_links: Vec<LinkObs>,
    /// VM guests the guest runtime reports running, by node id.
    pub guests: BTreeSet<String>,
}

/// One namespace of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsObs {
    pub tag: NsTag,
    /// Links by name, loopback excluded.
    pub links: BTreeMap<String, LinkObs>,
    /// Static routes (protocol `static`) in the main table.
    pub routes: Vec<RouteObs>,
}

/// A link as observed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkObs {
    pub name: String,
    pub index: u32,
    /// `veth`, `vxlan`, `tun`, ... (empty when the kernel gives no kind).
    pub kind: String,
    pub alias: Option<String>,
    pub up: bool,
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
    /// Kind of the root qdisc, if any besides the default.
    pub root_qdisc: Option<String>,
    /// Rate of a root TBF qdisc in bytes per second, as the kernel reports it.
    pub root_rate: Option<u64>,
    /// An ingress (or clsact) qdisc is attached.
    pub ingress_qdisc: bool,
}

/// A static route as observed (`destination == None`: default route).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteObs {
    pub destination: Option<IpNet>,
    pub via: IpAddr,
}
