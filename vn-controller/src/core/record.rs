//! The persisted record of one VN: its request, where it was embedded, the identifiers it holds
//! and how far each host got.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::model::{Encap, ProviderId, VnReq};

/// Lifecycle of a VN (the proto `VnState` without the transient ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VnStatus {
    Provisioning,
    Ready,
    Degraded,
    /// Rolled back: holds no resources, kept so that its provider sees why.
    Failed,
}

impl VnStatus {
    pub const ALL: [VnStatus; 4] = [
        VnStatus::Provisioning,
        VnStatus::Ready,
        VnStatus::Degraded,
        VnStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VnStatus::Provisioning => "provisioning",
            VnStatus::Ready => "ready",
            VnStatus::Degraded => "degraded",
            VnStatus::Failed => "failed",
        }
    }

    /// Whether a VN in this state holds capacity and identifiers.
    pub fn holds_resources(self) -> bool {
        !matches!(self, VnStatus::Failed)
    }
}

/// How far one host got with its slice of a VN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostPhase {
    Pending,
    Ready,
    Failed(String),
    Disconnected,
}

impl HostPhase {
    pub fn describe(&self) -> String {
        match self {
            HostPhase::Pending => "provisioning".into(),
            HostPhase::Ready => "ready".into(),
            HostPhase::Failed(m) => format!("failed: {m}"),
            HostPhase::Disconnected => "disconnected".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProgress {
    /// First generation of the host's desired state that contains this VN: only reports about
    /// this generation or a later one count.
    pub since_generation: u64,
    pub phase: HostPhase,
}

/// One hop of a virtual link over one substrate link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Substrate link id.
    pub link: String,
    pub from: String,
    pub to: String,
    pub encap: Encap,
    pub vni: Option<u32>,
    pub vlan_id: Option<u16>,
    /// VLAN: the segment whose ID space the VLAN ID comes from.
    pub segment: String,
    pub udp_port: u16,
    pub from_address: IpAddr,
    pub to_address: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedNode {
    pub host: String,
    pub node_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedLink {
    pub link_id: String,
    /// Hosts from the `a` end to the `b` end (one host: co-located ends).
    pub path: Vec<String>,
    pub hops: Vec<Hop>,
    pub mtu: u32,
    pub ifnames: [String; 2],
    /// MAC allocator values of the `a` and `b` interfaces.
    pub macs: [u64; 2],
}

/// Where a VN was embedded and which identifiers it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub nodes: Vec<PlacedNode>,
    pub links: Vec<PlacedLink>,
    pub algorithm: String,
    pub revenue: f64,
    pub cost: f64,
}

impl Placement {
    /// Every host that realizes a part of the VN (nodes or transit), sorted.
    pub fn hosts(&self) -> std::collections::BTreeSet<String> {
        self.nodes
            .iter()
            .map(|n| n.host.clone())
            .chain(self.links.iter().flat_map(|l| l.path.iter().cloned()))
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VnRecord {
    pub vn_id: String,
    pub req: VnReq,
    /// The spec as accepted (protobuf-encoded `VnSpec`, provider filled in).
    pub spec_pb: Vec<u8>,
    pub status: VnStatus,
    pub reason: String,
    pub created_unix_ms: u64,
    pub placement: Placement,
    pub hosts: BTreeMap<String, HostProgress>,
}

impl VnRecord {
    pub fn provider(&self) -> &ProviderId {
        &self.req.provider
    }

    pub fn name(&self) -> &str {
        &self.req.name
    }

    pub fn label(&self) -> String {
        format!("{}/{}", self.req.provider, self.req.name)
    }
}
