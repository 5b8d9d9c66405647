//! Validated domain types of a VN request. The gRPC edge (`crate::grpc::validate`) is the only
//! place that builds them from the wire; everything below it trusts them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Largest number of virtual nodes in one VN (node ids carry a three-digit index).
pub const MAX_NODES: usize = 256;
/// Largest number of virtual links in one VN (link ids carry a three-digit index).
pub const MAX_LINKS: usize = 999;
/// Longest VN, node, provider or host name.
pub const MAX_NAME_LEN: usize = 63;

/// A provider (tenant) identity, as read from the request metadata.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProviderId(pub String);

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a virtual link crosses substrate links, after AUTO was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Encap {
    Vxlan,
    Vlan,
}

/// What realizes a virtual node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Netns,
    Vm,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Netns => "netns",
            Kind::Vm => "vm",
        }
    }
}

/// A static route inside a virtual node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// `None`: the default route.
    pub destination: Option<IpNet>,
    pub via: IpAddr,
}

/// Guest parameters of a `Kind::Vm` node (proto enum values kept as numbers, already checked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestReq {
    pub vcpus: u32,
    pub image: String,
    pub nic: i32,
    pub accel: i32,
    /// CPU architecture (`x86_64`, `aarch64`).
    #[serde(default = "default_arch")]
    pub arch: String,
}

/// The architecture of a guest whose spec names none.
pub const DEFAULT_ARCH: &str = "x86_64";

fn default_arch() -> String {
    DEFAULT_ARCH.into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReq {
    pub name: String,
    pub kind: Kind,
    pub cpu: u64,
    pub memory_mb: u64,
    /// Pinned host.
    pub pin: Option<String>,
    /// Label the host must carry.
    pub location: Option<String>,
    pub routes: Vec<RouteSpec>,
    pub guest: Option<GuestReq>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReq {
    /// Indices into `VnReq::nodes`.
    pub a: usize,
    pub b: usize,
    pub bandwidth_mbps: u64,
    /// Addresses of the `a` and `b` interfaces.
    pub addresses: Option<[IpNet; 2]>,
    /// Explicit interface names of the `a` and `b` ends.
    pub interfaces: [Option<String>; 2],
    pub encap: Encap,
    /// The encapsulation was chosen by the spec (the link, the VN or its attributes), not
    /// defaulted: a child VN's defaulted links take the encapsulation it inherits instead.
    #[serde(default)]
    pub encap_explicit: bool,
    /// Delay, jitter and loss of each direction.
    #[serde(default)]
    pub impair: Impairment,
    /// Largest one-way latency of the path the link may take, microseconds.
    #[serde(default)]
    pub max_delay_us: Option<u64>,
}

/// Impairments of a virtual link, one-way: every frame either direction sends is delayed by
/// `delay_us` +- `jitter_us` (uniform) and dropped with probability `loss_ppm` / 10^6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Impairment {
    pub delay_us: u64,
    pub jitter_us: u64,
    pub loss_ppm: u32,
}

impl Impairment {
    /// Largest delay or jitter, microseconds (10 s).
    pub const MAX_DELAY_US: u64 = 10_000_000;

    /// Nothing to impair.
    pub fn is_none(&self) -> bool {
        self.delay_us == 0 && self.jitter_us == 0 && self.loss_ppm == 0
    }

    pub fn loss_percent(&self) -> f64 {
        f64::from(self.loss_ppm) / 10_000.0
    }

    /// The impairment with its delay raised to at least `floor_us` (what the link's path through
    /// its parent VN adds already): the part left for this link's own relay is
    /// [`Impairment::on_top_of`].
    pub fn at_least(self, floor_us: u64) -> Self {
        Self {
            delay_us: self.delay_us.max(floor_us),
            ..self
        }
    }

    /// What must be added to a path that already delays frames by `path_us` to reach this
    /// impairment's delay; jitter and loss are kept.
    pub fn on_top_of(self, path_us: u64) -> Self {
        Self {
            delay_us: self.delay_us.saturating_sub(path_us),
            ..self
        }
    }
}

/// How strongly a VN is kept apart from others; a larger level is stronger (narrower).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Isolation {
    Standard,
    DedicatedHosts,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Standard => "standard",
            Isolation::DedicatedHosts => "dedicated_hosts",
        }
    }
}

/// Architectural attributes of a VN. In a request they are what the spec asked for (`None`:
/// unset); in an accepted VN they are the effective ones, after inheritance from the parent
/// (see [`crate::attributes`]). `None` at the top level means "no limit".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub mtu: Option<u32>,
    /// Effective dedicated-host isolation (`isolation == Some(DedicatedHosts)`).
    pub dedicated_hosts: bool,
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// Every virtual link uses this encapsulation.
    #[serde(default)]
    pub encap: Option<Encap>,
    #[serde(default)]
    pub max_link_bandwidth_mbps: Option<u64>,
    /// Node kinds allowed (`None`: all).
    #[serde(default)]
    pub allowed_kinds: Option<BTreeSet<Kind>>,
    /// Quota of the VN and all its descendants: nodes ...
    #[serde(default)]
    pub max_nodes: Option<u32>,
    /// ... and the sum of their cpu demands.
    #[serde(default)]
    pub max_total_cpu: Option<u64>,
}

impl Attributes {
    /// The isolation level in force: the explicit one, else what `dedicated_hosts` says (a
    /// request or stored record may carry only that flag).
    pub fn isolation_level(&self) -> Isolation {
        self.isolation.unwrap_or(if self.dedicated_hosts {
            Isolation::DedicatedHosts
        } else {
            Isolation::Standard
        })
    }
}

/// The VN a child names as its parent (`spec.parent`, owned by `spec.parent_provider` or the
/// caller).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ParentRef {
    pub provider: ProviderId,
    pub name: String,
}

impl std::fmt::Display for ParentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.name)
    }
}

/// What the controller does with a VN when a host or substrate link under it fails.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum RecoveryPolicy {
    /// Move the nodes of a lost host and reroute links around a dead link (pinned nodes wait).
    #[default]
    Reembed,
    /// Stay degraded until the host or link returns.
    Wait,
}

impl RecoveryPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryPolicy::Reembed => "reembed",
            RecoveryPolicy::Wait => "wait",
        }
    }
}

/// A validated VN request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnReq {
    pub name: String,
    pub provider: ProviderId,
    pub allow_revisitation: bool,
    pub nodes: Vec<NodeReq>,
    pub links: Vec<LinkReq>,
    /// Embedding algorithm; `None`: the controller's default.
    pub algorithm: Option<String>,
    /// Longest substrate path of a virtual link; `None`: no limit.
    pub max_path_hops: Option<u32>,
    pub attributes: Attributes,
    /// Recursion: this VN may carry child VNs, created by its provider or those in `share_with`.
    pub nestable: bool,
    pub share_with: BTreeSet<String>,
    /// Recursion: the VN this one is embedded in (`None`: on the substrate).
    #[serde(default)]
    pub parent: Option<ParentRef>,
    /// Failure recovery of this VN.
    #[serde(default)]
    pub recovery: RecoveryPolicy,
    /// At most this many nodes on one host.
    #[serde(default)]
    pub max_nodes_per_host: Option<u32>,
    /// As few nodes per host as the hosts allow.
    #[serde(default)]
    pub spread: bool,
}

impl VnReq {
    /// The cpu of all nodes; saturates, so that a sum too large for `u64` still exceeds every
    /// limit it is compared with.
    pub fn total_cpu(&self) -> u64 {
        self.nodes.iter().fold(0u64, |t, n| t.saturating_add(n.cpu))
    }
}
