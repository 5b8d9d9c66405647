//! The persisted record of one VN: its request, where it was embedded, the identifiers it holds
//! and how far each host got.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Encap, ProviderId, VnReq};

/// Lifecycle of a VN (the proto `VnState` without the transient ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VnStatus {
    Provisioning,
    Ready,
    Degraded,
    /// Rolled back: holds no resources, kept so that its provider sees why.
    Failed,
    /// A held VN whose spec or placement changed: the hosts whose slices changed have not all
    /// reported them ready yet (the others keep forwarding).
    Updating,
}

impl VnStatus {
    pub const ALL: [VnStatus; 5] = [
        VnStatus::Provisioning,
        VnStatus::Ready,
        VnStatus::Degraded,
        VnStatus::Failed,
        VnStatus::Updating,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VnStatus::Provisioning => "provisioning",
            VnStatus::Ready => "ready",
            VnStatus::Degraded => "degraded",
            VnStatus::Failed => "failed",
            VnStatus::Updating => "updating",
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

/// What an agent reports about its slice of one VN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceReport {
    pub vn_id: String,
    pub phase: HostPhase,
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
    /// The substrate host (for a child VN: the host of its parent node).
    pub host: String,
    pub node_id: String,
    /// Child VN: the parent's virtual node that contains this node ...
    #[serde(default)]
    pub parent_node: Option<String>,
    /// ... and that node's id (its namespace carries the child's tunnels).
    #[serde(default)]
    pub context: Option<String>,
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
    /// Child VN: the substrate host of each element of `path` (which names parent nodes).
    /// Empty for a VN on the substrate, whose path already names hosts.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Child VN: the node id of each parent node of `path`, whose namespace carries the
    /// link's tunnels there.
    #[serde(default)]
    pub contexts: Vec<String>,
    /// Per element of `path`, the id of the segment realized there, when it is not `link_id`
    /// (a child's link crossing two parent nodes on one host needs one id per crossing).
    #[serde(default)]
    pub segment_ids: Vec<String>,
    /// Nestable VN: carrier addresses the controller gave the two ends (children's tunnels run
    /// between them) because the spec gave none.
    #[serde(default)]
    pub carrier: Option<[ipnet::IpNet; 2]>,
}

impl PlacedLink {
    /// The substrate host of each element of the path.
    pub fn host_path(&self) -> &[String] {
        if self.hosts.is_empty() {
            &self.path
        } else {
            &self.hosts
        }
    }

    /// The id of the segment at position `pos` of the path.
    pub fn segment_id(&self, pos: usize) -> &str {
        self.segment_ids
            .get(pos)
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.link_id)
    }
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
            .chain(
                self.links
                    .iter()
                    .flat_map(|l| l.host_path().iter().cloned()),
            )
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
    /// Child VN: where it sits in the hierarchy (`None`: on the substrate).
    #[serde(default)]
    pub nesting: Option<Nesting>,
    /// Generation of the VN's spec and placement: 1 when created, one more at every update or
    /// re-embedding (optimistic concurrency: an update names the generation it was read at).
    #[serde(default = "first_generation")]
    pub generation: u64,
}

fn first_generation() -> u64 {
    1
}

/// Where a child VN sits: its parent (by VN id, never reused) and its depth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nesting {
    pub parent: String,
    /// The parent's `provider/name`, for display.
    pub parent_label: String,
    /// 1 for a child of a VN on the substrate.
    pub depth: u32,
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

    /// How `viewer` names this VN: by its name when it is `viewer`'s own, else as its label.
    pub fn label_for(&self, viewer: &ProviderId) -> String {
        if self.provider() == viewer {
            self.name().to_string()
        } else {
            self.label()
        }
    }

    /// 0 on the substrate, parent depth + 1 for a child.
    pub fn depth(&self) -> u32 {
        self.nesting.as_ref().map_or(0, |n| n.depth)
    }

    /// The parent VN's id, for a child.
    pub fn parent_id(&self) -> Option<&str> {
        self.nesting.as_ref().map(|n| n.parent.as_str())
    }
}
