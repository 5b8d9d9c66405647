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
}

/// Architectural attributes that the controller enforces today.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub mtu: Option<u32>,
    pub dedicated_hosts: bool,
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
    /// Recursion fields, stored for issue 7.
    pub nestable: bool,
    pub share_with: BTreeSet<String>,
}

impl VnReq {
    pub fn total_cpu(&self) -> u64 {
        self.nodes.iter().map(|n| n.cpu).sum()
    }
}
