//! The seam between the agent's logic and the host kernel.
//!
//! One trait, [`Kernel`], with the few coarse operations the executor needs; the Linux
//! implementation is [`crate::host::linux::LinuxKernel`] (netlink, ioctl, mounts), the recording fake
//! is `crate::host::fake::FakeKernel` (an in-memory host, for planner and executor tests without root).
//! Every method is synchronous and may be called from several threads at once.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::mac::Mac;
use crate::reconcile::observed::{LinkObs, RouteObs};
use crate::reconcile::spec::Route;

/// A kernel operation failed; the message names the object.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{what}: not found")]
    NotFound { what: String },
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {msg}")]
    Other { what: String, msg: String },
}

impl KernelError {
    pub fn other(what: impl Into<String>, msg: impl Into<String>) -> Self {
        KernelError::Other {
            what: what.into(),
            msg: msg.into(),
        }
    }

    pub fn os(what: impl Into<String>, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENODEV)
            || source.raw_os_error() == Some(libc::ENOENT)
        {
            return KernelError::NotFound { what: what.into() };
        }
        KernelError::Os {
            what: what.into(),
            source,
        }
    }

    /// The object did not exist (deleting it is then a success).
    pub fn is_not_found(&self) -> bool {
        matches!(self, KernelError::NotFound { .. })
    }
}

/// An interface to create and configure (a veth end, a VXLAN device, a TAP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfSpec {
    /// The named namespace the interface lives in.
    pub ns: String,
    pub ifname: String,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub addresses: Vec<IpNet>,
}

/// A named namespace under `/run/netns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsEntry {
    pub name: String,
    pub inode: u64,
}

/// What is inside one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NsSnapshot {
    /// ifalias of the loopback device.
    pub lo_alias: Option<String>,
    /// Every link but loopback.
    pub links: Vec<LinkObs>,
    /// Static routes of the main table.
    pub routes: Vec<RouteObs>,
}

/// The result of a route lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The outgoing device.
    pub dev: String,
    pub dev_index: u32,
    pub dev_mtu: u32,
    /// Set when the destination is not directly connected.
    pub gateway: Option<IpAddr>,
}

/// A VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Context namespace: where the UDP socket lives and the underlay is looked up.
    pub ctx: Option<String>,
    pub dev: IfSpec,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// The underlay device in the context namespace (from [`Kernel::route_to`]).
    pub underlay_index: u32,
    pub tag: String,
}

/// A VLAN port of the BPF datapath to create: a veth pair whose inner end `dev` is created in
/// `dev.ns` (configured, tagged with `tag`, up) and whose outer end `outer` stays, up and
/// untagged, in the context namespace `ctx` (`None`: the agent's own). The pair dies with
/// `dev.ns` (deleting a namespace deletes its ports in the agent's namespace first, so that their
/// outer ends are gone when it returns), so the outer end needs no record of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub ctx: Option<String>,
    pub dev: IfSpec,
    pub outer: String,
    pub tag: String,
}

/// The kernel operations the agent uses.
pub trait Kernel: Send + Sync {
    /// Named namespaces whose name starts with `prefix`.
    fn list_netns(&self, prefix: &str) -> Result<Vec<NsEntry>, KernelError>;
    /// Links, addresses, qdiscs and static routes inside a named namespace.
    fn ns_snapshot(&self, ns: &str) -> Result<NsSnapshot, KernelError>;
    /// Links of the agent's own namespace whose ifalias starts with `alias_prefix`.
    fn host_links(&self, alias_prefix: &str) -> Result<Vec<LinkObs>, KernelError>;
    /// Creates a named namespace (as `ip netns add` does), loopback up, loopback ifalias `tag`;
    /// returns its inode.
    fn create_netns(&self, name: &str, tag: &str) -> Result<u64, KernelError>;
    /// Unmounts and removes a named namespace.
    fn delete_netns(&self, name: &str) -> Result<(), KernelError>;
    /// A veth pair, each end created directly in its namespace, configured and up.
    fn create_veth(&self, a: &IfSpec, b: &IfSpec, tag: &str) -> Result<(), KernelError>;
    /// A VXLAN device created from the context namespace into `spec.dev.ns`, configured and up.
    fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), KernelError>;
    /// A persistent TAP device, configured and up; tagged with `tag` when given (a guest's TAPs
    /// are the guest runtime's, not the planner's, and carry none).
    fn create_tap(&self, dev: &IfSpec, tag: Option<&str>) -> Result<(), KernelError>;
    /// A VLAN port for the BPF datapath (see [`PortSpec`]).
    fn create_port(&self, spec: &PortSpec) -> Result<(), KernelError>;
    /// Deletes a link in a named namespace (`None`: the agent's own namespace).
    fn delete_link(&self, ns: Option<&str>, ifname: &str) -> Result<(), KernelError>;
    /// Egress rate limit (TBF) on an interface.
    fn shape(&self, ns: &str, ifname: &str, mbps: u64) -> Result<(), KernelError>;
    /// Everything arriving on `a` leaves on `b` and vice versa (tc ingress + mirred). Idempotent:
    /// a redirect of ours that already does this is kept, any other of ours is replaced.
    fn join(&self, ns: &str, a: &str, b: &str) -> Result<(), KernelError>;
    /// Removes the redirect a [`Kernel::join`] put on `ifname`'s ingress (none there is fine).
    fn unjoin(&self, ns: &str, ifname: &str) -> Result<(), KernelError>;
    /// Everything `from` sends leaves through `to` instead (tc clsact egress + mirred): an
    /// impaired interface hands its frames to the impairment relay's TAP `to`. Idempotent.
    fn redirect_egress(&self, ns: &str, from: &str, to: &str) -> Result<(), KernelError>;
    fn add_route(&self, ns: &str, route: &Route) -> Result<(), KernelError>;
    fn delete_route(&self, ns: &str, route: &Route) -> Result<(), KernelError>;
    /// Route lookup of `dst` in a namespace (`None`: the agent's own).
    fn route_to(&self, ns: Option<&str>, dst: IpAddr) -> Result<RouteInfo, KernelError>;
}
