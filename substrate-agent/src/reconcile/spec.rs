//! The desired state of a host as validated domain types.
//!
//! Protobuf messages from the controller are converted here, once, at the edge. Everything past
//! this module works with values that are known to be well-formed: identifiers in their charset and
//! length, parsed addresses, a concrete encapsulation per hop. A slice that fails validation is
//! reported FAILED with the error naming the offending field; the other slices go on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use vnet_proto::v1 as pb;

use crate::guest::{Accel, GuestArch, NicModel};
pub use crate::mac::Mac;

/// The well-known VXLAN UDP port (IANA), used when a hop leaves `udp_port` at 0.
pub const VXLAN_DEFAULT_PORT: u16 = 4789;

/// A validation failure, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(msg.into()))
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `s`: `[a-z0-9]`, 1 to the maximum length.
            pub fn parse(s: &str) -> Result<Self, SpecError> {
                if s.is_empty() || s.len() > $max {
                    return err(format!(
                        "{} {:?} must have 1 to {} characters",
                        $what, s, $max
                    ));
                }
                if !s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
                    return err(format!("{} {:?} may only contain [a-z0-9]", $what, s));
                }
                Ok(Self(s.to_string()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A VN's short id, part of every object name of that VN.
    VnId,
    "vn_id",
    8
);
id_type!(
    /// A virtual node's controller-unique id; names its namespace.
    NodeId,
    "node_id",
    12
);
id_type!(
    /// A virtual link's controller-unique id; names its temporary devices.
    LinkId,
    "link_id",
    10
);

/// A Linux interface name chosen by the tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    /// Validates a Linux interface name (1-15 bytes, no '/', ':' or whitespace, not `lo`).
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        if s.is_empty() || s.len() > 15 {
            return err(format!("ifname {s:?} must have 1 to 15 characters"));
        }
        if s == "." || s == ".." || s == "lo" {
            return err(format!("ifname {s:?} is reserved"));
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'/' && c != b':')
        {
            return err(format!(
                "ifname {s:?} may only contain printable ASCII without '/', ':' or spaces"
            ));
        }
        Ok(Self(s.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The whole desired state of this host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    pub generation: u64,
    /// Slices that passed validation, by VN id.
    pub slices: BTreeMap<VnId, Slice>,
    /// Slices that did not, with the first error (the slice id as sent, and the message).
    pub invalid: Vec<(String, String)>,
}

/// One VN's part on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub vn_id: VnId,
    pub label: String,
    /// The parent VN's node whose namespace carries this slice's tunnels (recursion).
    pub context: Option<NodeId>,
    /// Segments whose tunnels ride in another parent node than `context` (a child VN using
    /// several parent nodes on this host). Kept beside the segments, not in them, so that a
    /// segment's fingerprint does not depend on it.
    pub segment_context: BTreeMap<LinkId, NodeId>,
    pub depth: u32,
    pub nodes: Vec<Node>,
    pub links: Vec<Segment>,
}

/// A virtual node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub kind: NodeKind,
    pub routes: Vec<Route>,
}

/// What realizes a virtual node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeKind {
    Netns,
    Vm(GuestSpec),
}

/// A QEMU guest's requested shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GuestSpec {
    pub vcpus: u32,
    pub memory_mb: u64,
    pub image: String,
    pub nic: NicModel,
    pub accel: Accel,
    pub arch: GuestArch,
}

/// A static route inside a node; `destination == None` is the default route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub destination: Option<IpNet>,
    pub via: IpAddr,
}

/// One virtual link as this host realizes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    pub link_id: LinkId,
    pub mtu: u32,
    /// 0: not shaped.
    pub bandwidth_mbps: u64,
    pub a: Endpoint,
    pub b: Endpoint,
    /// What each node interface of the segment does to the frames it sends.
    pub impair: Impair,
}

/// One-way impairment of a node interface's sent frames (all zero: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Impair {
    pub delay_us: u64,
    pub jitter_us: u64,
    pub loss_ppm: u32,
}

impl Impair {
    /// Largest delay or jitter accepted, microseconds (10 s).
    pub const MAX_US: u64 = 10_000_000;

    pub fn is_none(&self) -> bool {
        self.delay_us == 0 && self.jitter_us == 0 && self.loss_ppm == 0
    }

    fn from_proto(l: &pb::LinkSegment) -> Result<Self, SpecError> {
        let link = &l.link_id;
        for (v, field) in [(l.delay_us, "delay_us"), (l.jitter_us, "jitter_us")] {
            if v > Self::MAX_US {
                return err(format!("link {link}: {field} {v} exceeds {}", Self::MAX_US));
            }
        }
        if l.jitter_us > l.delay_us {
            return err(format!(
                "link {link}: jitter_us {} exceeds delay_us {}",
                l.jitter_us, l.delay_us
            ));
        }
        if l.loss_ppm >= 1_000_000 {
            return err(format!(
                "link {link}: loss_ppm {} is not below 1000000",
                l.loss_ppm
            ));
        }
        Ok(Impair {
            delay_us: l.delay_us,
            jitter_us: l.jitter_us,
            loss_ppm: l.loss_ppm,
        })
    }
}

/// An end of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Node(NodeIf),
    Tunnel(Hop),
}

/// An interface of a virtual node on this host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIf {
    pub node: NodeId,
    pub ifname: IfName,
    pub addresses: Vec<IpNet>,
    pub mac: Option<Mac>,
}

/// One hop of a link's path to a neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hop {
    pub encap: Encap,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub neighbor: String,
}

/// How a hop crosses its substrate link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    Vxlan { vni: u32, port: u16 },
    Vlan { vlan_id: u16 },
}

/// The shape of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentShape<'a> {
    /// Both ends are node interfaces here: a veth pair.
    NodeNode(&'a NodeIf, &'a NodeIf),
    /// One end here, one hop away.
    NodeTunnel(&'a NodeIf, &'a Hop),
    /// Transit: this host forwards between two hops.
    Transit(&'a Hop, &'a Hop),
}

impl Segment {
    /// The segment's shape, with a node end first.
    pub fn shape(&self) -> SegmentShape<'_> {
        match (&self.a, &self.b) {
            (Endpoint::Node(a), Endpoint::Node(b)) => SegmentShape::NodeNode(a, b),
            (Endpoint::Node(n), Endpoint::Tunnel(h)) | (Endpoint::Tunnel(h), Endpoint::Node(n)) => {
                SegmentShape::NodeTunnel(n, h)
            }
            (Endpoint::Tunnel(a), Endpoint::Tunnel(b)) => SegmentShape::Transit(a, b),
        }
    }

    /// Node interfaces of this segment.
    pub fn node_ifs(&self) -> impl Iterator<Item = &NodeIf> {
        [&self.a, &self.b].into_iter().filter_map(|e| match e {
            Endpoint::Node(n) => Some(n),
            Endpoint::Tunnel(_) => None,
        })
    }
}

impl Slice {
    /// The node with this id, if it is part of the slice.
    pub fn node(&self, id: &NodeId) -> Option<&Node> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    /// The parent node whose namespace carries `seg`'s tunnels (`None`: the agent's own).
    pub fn context_of(&self, seg: &Segment) -> Option<&NodeId> {
        self.segment_context
            .get(&seg.link_id)
            .or(self.context.as_ref())
    }

    /// Every parent node this slice's tunnels ride in.
    pub fn contexts(&self) -> BTreeSet<&NodeId> {
        self.context
            .iter()
            .chain(self.segment_context.values())
            .collect()
    }
}

impl Desired {
    /// Converts and validates a `DesiredState`. Slice-level problems become entries of `invalid`;
    /// cross-slice conflicts (a VN or node id used twice) invalidate every slice involved.
    pub fn from_proto(msg: &pb::DesiredState) -> Self {
        let mut slices = BTreeMap::new();
        let mut invalid = Vec::new();
        let mut seen_vn: BTreeMap<String, usize> = BTreeMap::new();
        for s in &msg.vns {
            *seen_vn.entry(s.vn_id.clone()).or_default() += 1;
        }
        for s in &msg.vns {
            if seen_vn[&s.vn_id] > 1 {
                invalid.push((
                    s.vn_id.clone(),
                    format!("vn_id {:?} appears in more than one slice", s.vn_id),
                ));
                continue;
            }
            match Slice::from_proto(s) {
                Ok(slice) => {
                    slices.insert(slice.vn_id.clone(), slice);
                }
                Err(e) => invalid.push((s.vn_id.clone(), format!("vn {}: {}", s.vn_id, e.0))),
            }
        }
        // Node ids and link ids name kernel objects: they must be unique across slices.
        let mut owner_of_node: BTreeMap<NodeId, Vec<VnId>> = BTreeMap::new();
        let mut owner_of_link: BTreeMap<LinkId, Vec<VnId>> = BTreeMap::new();
        for s in slices.values() {
            for n in &s.nodes {
                owner_of_node
                    .entry(n.id.clone())
                    .or_default()
                    .push(s.vn_id.clone());
            }
            for l in &s.links {
                owner_of_link
                    .entry(l.link_id.clone())
                    .or_default()
                    .push(s.vn_id.clone());
            }
        }
        let mut bad: BTreeMap<VnId, String> = BTreeMap::new();
        for (node, vns) in owner_of_node.iter().filter(|(_, v)| v.len() > 1) {
            for vn in vns {
                bad.entry(vn.clone()).or_insert_with(|| {
                    format!("vn {vn}: node_id {node} is also used by another slice")
                });
            }
        }
        for (link, vns) in owner_of_link.iter().filter(|(_, v)| v.len() > 1) {
            for vn in vns {
                bad.entry(vn.clone()).or_insert_with(|| {
                    format!("vn {vn}: link_id {link} is also used by another slice")
                });
            }
        }
        // A context node must be a netns node of another slice on this host.
        for s in slices.values() {
            for ctx in s.contexts() {
                let parent = owner_of_node.get(ctx).and_then(|v| v.first());
                match parent {
                    None => {
                        bad.entry(s.vn_id.clone()).or_insert_with(|| {
                            format!(
                                "vn {}: context_node_id {ctx} is not a node on this host",
                                s.vn_id
                            )
                        });
                    }
                    Some(p) if p == &s.vn_id => {
                        bad.entry(s.vn_id.clone()).or_insert_with(|| {
                            format!(
                                "vn {}: context_node_id {ctx} is a node of the same VN",
                                s.vn_id
                            )
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        for (vn, msg) in bad {
            slices.remove(&vn);
            invalid.push((vn.to_string(), msg));
        }
        Desired {
            generation: msg.generation,
            slices,
            invalid,
        }
    }
}

impl Slice {
    /// Converts and validates one slice.
    pub fn from_proto(s: &pb::VnSlice) -> Result<Self, SpecError> {
        let vn_id = VnId::parse(&s.vn_id)?;
        let context = if s.context_node_id.is_empty() {
            None
        } else {
            Some(
                NodeId::parse(&s.context_node_id)
                    .map_err(|e| SpecError(format!("context_node_id: {}", e.0)))?,
            )
        };
        if context.is_none() && s.depth != 0 {
            return err(format!(
                "depth {} without a context_node_id (a VN on the substrate has depth 0)",
                s.depth
            ));
        }
        let mut nodes = Vec::with_capacity(s.nodes.len());
        let mut ids = BTreeSet::new();
        for n in &s.nodes {
            let node = Node::from_proto(n)?;
            if !ids.insert(node.id.clone()) {
                return err(format!("node_id {} appears twice", node.id));
            }
            nodes.push(node);
        }
        let mut links = Vec::with_capacity(s.links.len());
        let mut link_ids = BTreeSet::new();
        let mut ifnames: BTreeSet<(NodeId, IfName)> = BTreeSet::new();
        let mut segment_context = BTreeMap::new();
        for l in &s.links {
            let seg = Segment::from_proto(l)?;
            if !link_ids.insert(seg.link_id.clone()) {
                return err(format!("link_id {} appears twice", seg.link_id));
            }
            if !l.context_node_id.is_empty() {
                let ctx = NodeId::parse(&l.context_node_id).map_err(|e| {
                    SpecError(format!("link {}: context_node_id: {}", seg.link_id, e.0))
                })?;
                if context.is_none() {
                    return err(format!(
                        "link {}: context_node_id {ctx} in a slice without a context_node_id",
                        seg.link_id
                    ));
                }
                if context.as_ref() != Some(&ctx) {
                    segment_context.insert(seg.link_id.clone(), ctx);
                }
            }
            for nif in seg.node_ifs() {
                if !ids.contains(&nif.node) {
                    return err(format!(
                        "link {}: node {} is not a node of this slice",
                        seg.link_id, nif.node
                    ));
                }
                if !ifnames.insert((nif.node.clone(), nif.ifname.clone())) {
                    return err(format!(
                        "link {}: node {} already has an interface {}",
                        seg.link_id, nif.node, nif.ifname
                    ));
                }
            }
            links.push(seg);
        }
        Ok(Slice {
            vn_id,
            label: s.label.clone(),
            context,
            segment_context,
            depth: s.depth,
            nodes,
            links,
        })
    }
}

impl Node {
    fn from_proto(n: &pb::VirtualNodeSpec) -> Result<Self, SpecError> {
        let id = NodeId::parse(&n.node_id)?;
        let kind = match pb::NodeKind::try_from(n.kind) {
            Ok(pb::NodeKind::Netns) => NodeKind::Netns,
            Ok(pb::NodeKind::Vm) => {
                let g = n
                    .guest
                    .as_ref()
                    .ok_or_else(|| SpecError(format!("node {id}: kind VM without a guest spec")))?;
                if g.vcpus == 0 {
                    return err(format!("node {id}: guest.vcpus must be at least 1"));
                }
                if g.memory_mb < 64 {
                    return err(format!(
                        "node {id}: guest.memory_mb {} is below 64",
                        g.memory_mb
                    ));
                }
                NodeKind::Vm(GuestSpec {
                    vcpus: g.vcpus,
                    memory_mb: g.memory_mb,
                    image: if g.image.is_empty() {
                        "default".into()
                    } else {
                        g.image.clone()
                    },
                    nic: match pb::NicModel::try_from(g.nic) {
                        Ok(pb::NicModel::E1000) => NicModel::E1000,
                        Ok(pb::NicModel::Virtio | pb::NicModel::Unspecified) => NicModel::Virtio,
                        Err(_) => return err(format!("node {id}: guest.nic {} is unknown", g.nic)),
                    },
                    accel: match pb::Acceleration::try_from(g.accel) {
                        Ok(pb::Acceleration::Kvm) => Accel::Kvm,
                        Ok(pb::Acceleration::Tcg) => Accel::Tcg,
                        Ok(pb::Acceleration::Auto | pb::Acceleration::Unspecified) => Accel::Auto,
                        Err(_) => {
                            return err(format!("node {id}: guest.accel {} is unknown", g.accel));
                        }
                    },
                    arch: GuestArch::parse(&g.arch).ok_or_else(|| {
                        SpecError(format!(
                            "node {id}: guest.arch {:?} is not x86_64 or aarch64",
                            g.arch.chars().take(32).collect::<String>()
                        ))
                    })?,
                })
            }
            _ => return err(format!("node {id}: kind {} is not NETNS or VM", n.kind)),
        };
        let mut routes = Vec::with_capacity(n.routes.len());
        for r in &n.routes {
            let destination = if r.destination == "default" {
                None
            } else {
                Some(r.destination.parse::<IpNet>().map_err(|_| {
                    SpecError(format!(
                        "node {id}: route destination {:?} is neither CIDR nor \"default\"",
                        r.destination
                    ))
                })?)
            };
            let via: IpAddr = r.via.parse().map_err(|_| {
                SpecError(format!(
                    "node {id}: route via {:?} is not an IP address",
                    r.via
                ))
            })?;
            if let Some(d) = destination
                && d.addr().is_ipv4() != via.is_ipv4()
            {
                return err(format!(
                    "node {id}: route {d} via {via} mixes address families"
                ));
            }
            routes.push(Route {
                destination: destination.map(|d| d.trunc()),
                via,
            });
        }
        Ok(Node {
            id,
            name: n.name.clone(),
            kind,
            routes,
        })
    }
}

impl Segment {
    fn from_proto(l: &pb::LinkSegment) -> Result<Self, SpecError> {
        let link_id = LinkId::parse(&l.link_id)?;
        if !(68..=65535).contains(&l.mtu) {
            return err(format!(
                "link {link_id}: mtu {} is outside 68..=65535",
                l.mtu
            ));
        }
        let ep = |e: &Option<pb::Endpoint>, side: &str| -> Result<Endpoint, SpecError> {
            let kind = e
                .as_ref()
                .and_then(|e| e.kind.as_ref())
                .ok_or_else(|| SpecError(format!("link {link_id}: endpoint {side} is empty")))?;
            match kind {
                pb::endpoint::Kind::Node(n) => {
                    Ok(Endpoint::Node(NodeIf::from_proto(n).map_err(|e| {
                        SpecError(format!("link {link_id}: endpoint {side}: {}", e.0))
                    })?))
                }
                pb::endpoint::Kind::Tunnel(h) => {
                    Ok(Endpoint::Tunnel(Hop::from_proto(h).map_err(|e| {
                        SpecError(format!("link {link_id}: endpoint {side}: {}", e.0))
                    })?))
                }
            }
        };
        let a = ep(&l.a, "a")?;
        let b = ep(&l.b, "b")?;
        if let (Endpoint::Node(x), Endpoint::Node(y)) = (&a, &b)
            && x.node == y.node
            && x.ifname == y.ifname
        {
            return err(format!(
                "link {link_id}: both ends are interface {} of node {}",
                x.ifname, x.node
            ));
        }
        let impair = Impair::from_proto(l)?;
        Ok(Segment {
            link_id,
            mtu: l.mtu,
            bandwidth_mbps: l.bandwidth_mbps,
            a,
            b,
            impair,
        })
    }
}

impl NodeIf {
    fn from_proto(n: &pb::NodeInterface) -> Result<Self, SpecError> {
        let node = NodeId::parse(&n.node_id)?;
        let ifname = IfName::parse(&n.ifname)?;
        let mut addresses = Vec::with_capacity(n.addresses.len());
        for a in &n.addresses {
            let net: IpNet = a
                .parse()
                .map_err(|_| SpecError(format!("address {a:?} is not in CIDR notation")))?;
            if addresses.contains(&net) {
                return err(format!("address {a} appears twice"));
            }
            addresses.push(net);
        }
        let mac = if n.mac.is_empty() {
            None
        } else {
            Some(Mac::parse(&n.mac).map_err(|e| SpecError(e.to_string()))?)
        };
        Ok(NodeIf {
            node,
            ifname,
            addresses,
            mac,
        })
    }
}

impl Hop {
    fn from_proto(h: &pb::TunnelHop) -> Result<Self, SpecError> {
        let encap = match pb::Encapsulation::try_from(h.encapsulation) {
            Ok(pb::Encapsulation::Vxlan) => {
                if h.vni == 0 || h.vni > 0xff_ffff {
                    return err(format!("vni {} is outside 1..=16777215", h.vni));
                }
                let port = match h.udp_port {
                    0 => VXLAN_DEFAULT_PORT,
                    p @ 1..=65535 => p as u16,
                    p => return err(format!("udp_port {p} is outside 1..=65535")),
                };
                Encap::Vxlan { vni: h.vni, port }
            }
            Ok(pb::Encapsulation::Vlan) => {
                if h.vlan_id == 0 || h.vlan_id > 4094 {
                    return err(format!("vlan_id {} is outside 1..=4094", h.vlan_id));
                }
                Encap::Vlan {
                    vlan_id: h.vlan_id as u16,
                }
            }
            _ => {
                return err(format!(
                    "encapsulation {} of a hop must be VXLAN or VLAN (the controller resolves AUTO)",
                    h.encapsulation
                ));
            }
        };
        let local: IpAddr = h.local_address.parse().map_err(|_| {
            SpecError(format!(
                "local_address {:?} is not an IP address",
                h.local_address
            ))
        })?;
        let remote: IpAddr = h.remote_address.parse().map_err(|_| {
            SpecError(format!(
                "remote_address {:?} is not an IP address",
                h.remote_address
            ))
        })?;
        if local.is_ipv4() != remote.is_ipv4() {
            return err(format!(
                "local {local} and remote {remote} mix address families"
            ));
        }
        if local == remote {
            return err(format!("local and remote address are both {local}"));
        }
        Ok(Hop {
            encap,
            local,
            remote,
            neighbor: h.neighbor.clone(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn nif(node: &str, ifname: &str, addr: &str) -> pb::Endpoint {
        pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Node(pb::NodeInterface {
                node_id: node.into(),
                ifname: ifname.into(),
                addresses: if addr.is_empty() {
                    vec![]
                } else {
                    vec![addr.into()]
                },
                mac: String::new(),
            })),
        }
    }

    pub fn vxlan(vni: u32, local: &str, remote: &str) -> pb::Endpoint {
        pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Tunnel(pb::TunnelHop {
                encapsulation: pb::Encapsulation::Vxlan as i32,
                vni,
                vlan_id: 0,
                udp_port: 0,
                local_address: local.into(),
                remote_address: remote.into(),
                neighbor: "h2".into(),
            })),
        }
    }

    pub fn vlan(id: u32, local: &str, remote: &str) -> pb::Endpoint {
        pb::Endpoint {
            kind: Some(pb::endpoint::Kind::Tunnel(pb::TunnelHop {
                encapsulation: pb::Encapsulation::Vlan as i32,
                vni: 0,
                vlan_id: id,
                udp_port: 0,
                local_address: local.into(),
                remote_address: remote.into(),
                neighbor: "h2".into(),
            })),
        }
    }

    pub fn node(id: &str) -> pb::VirtualNodeSpec {
        pb::VirtualNodeSpec {
            node_id: id.into(),
            name: id.into(),
            kind: pb::NodeKind::Netns as i32,
            routes: vec![],
            guest: None,
        }
    }

    pub fn link(id: &str, a: pb::Endpoint, b: pb::Endpoint) -> pb::LinkSegment {
        pb::LinkSegment {
            link_id: id.into(),
            mtu: 1450,
            bandwidth_mbps: 0,
            a: Some(a),
            b: Some(b),
            context_node_id: String::new(),
            ..Default::default()
        }
    }

    pub fn slice(vn: &str, nodes: &[&str], links: Vec<pb::LinkSegment>) -> pb::VnSlice {
        pb::VnSlice {
            vn_id: vn.into(),
            label: format!("p/{vn}"),
            context_node_id: String::new(),
            depth: 0,
            nodes: nodes.iter().map(|n| node(n)).collect(),
            links,
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(VnId::parse("abc123").is_ok());
        assert!(VnId::parse("").is_err());
        assert!(VnId::parse("abcdefghi").is_err());
        assert!(VnId::parse("Ab").unwrap_err().0.contains("[a-z0-9]"));
        assert!(NodeId::parse("abcdefghijkl").is_ok());
        assert!(LinkId::parse("abcdefghijk").is_err());
        assert!(IfName::parse("eth0").is_ok());
        assert!(IfName::parse("lo").is_err());
        assert!(IfName::parse("a/b").is_err());
        assert!(IfName::parse("sixteen-chars-xx").is_err());
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            Mac::parse("02:00:00:00:00:01").unwrap().to_string(),
            "02:00:00:00:00:01"
        );
        assert!(
            Mac::parse("01:00:00:00:00:01")
                .unwrap_err()
                .0
                .contains("multicast")
        );
        assert!(Mac::parse("02:00:00:00:00").is_err());
        assert!(Mac::parse("zz:00:00:00:00:00").is_err());
    }

    #[test]
    fn valid_slice_converts() {
        let s = slice(
            "vn1",
            &["n1", "n2"],
            vec![
                link(
                    "l1",
                    nif("n1", "eth0", "10.0.0.1/24"),
                    nif("n2", "eth0", "10.0.0.2/24"),
                ),
                link(
                    "l2",
                    nif("n1", "eth1", ""),
                    vxlan(100, "10.255.0.1", "10.255.0.2"),
                ),
            ],
        );
        let d = Desired::from_proto(&pb::DesiredState {
            generation: 3,
            vns: vec![s],
        });
        assert!(d.invalid.is_empty(), "{:?}", d.invalid);
        let sl = &d.slices[&VnId::parse("vn1").unwrap()];
        assert_eq!(sl.links.len(), 2);
        match sl.links[1].shape() {
            SegmentShape::NodeTunnel(n, h) => {
                assert_eq!(n.ifname.as_str(), "eth1");
                assert_eq!(
                    h.encap,
                    Encap::Vxlan {
                        vni: 100,
                        port: 4789
                    }
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A slice of one node `n1` with one link `l1`.
    fn one_link(a: pb::Endpoint, b: pb::Endpoint) -> pb::VnSlice {
        slice("vn1", &["n1"], vec![link("l1", a, b)])
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let cases: Vec<(pb::VnSlice, &str)> = vec![
            (
                one_link(nif("n9", "eth0", ""), vxlan(1, "1.1.1.1", "1.1.1.2")),
                "node n9 is not a node of this slice",
            ),
            (
                one_link(
                    nif("n1", "eth0", "10.0.0.300/24"),
                    vxlan(1, "1.1.1.1", "1.1.1.2"),
                ),
                "address \"10.0.0.300/24\"",
            ),
            (
                one_link(nif("n1", "eth0", ""), vxlan(0, "1.1.1.1", "1.1.1.2")),
                "vni 0",
            ),
            (
                one_link(nif("n1", "eth0", ""), vlan(4095, "1.1.1.1", "1.1.1.2")),
                "vlan_id 4095",
            ),
            (
                slice("vn1", &["n1", "n1"], vec![]),
                "node_id n1 appears twice",
            ),
            (
                slice(
                    "vn1",
                    &["n1", "n2"],
                    vec![
                        link("l1", nif("n1", "eth0", ""), nif("n2", "eth0", "")),
                        link("l2", nif("n1", "eth0", ""), nif("n2", "eth1", "")),
                    ],
                ),
                "node n1 already has an interface eth0",
            ),
            (
                one_link(nif("n1", "eth0", ""), vxlan(5, "1.1.1.1", "::1")),
                "mix address families",
            ),
        ];
        for (s, want) in cases {
            let d = Desired::from_proto(&pb::DesiredState {
                generation: 1,
                vns: vec![s],
            });
            assert!(d.slices.is_empty());
            assert_eq!(d.invalid.len(), 1);
            assert!(
                d.invalid[0].1.contains(want),
                "{:?} does not contain {want}",
                d.invalid[0].1
            );
        }
    }

    #[test]
    fn mtu_and_auto_encap_rejected() {
        let mut l = link("l1", nif("n1", "eth0", ""), vxlan(1, "1.1.1.1", "1.1.1.2"));
        l.mtu = 0;
        let d = Desired::from_proto(&pb::DesiredState {
            generation: 1,
            vns: vec![slice("vn1", &["n1"], vec![l])],
        });
        assert!(d.invalid[0].1.contains("mtu 0"));
        let mut e = vxlan(1, "1.1.1.1", "1.1.1.2");
        if let Some(pb::endpoint::Kind::Tunnel(h)) = &mut e.kind {
            h.encapsulation = pb::Encapsulation::Auto as i32;
        }
        let d = Desired::from_proto(&pb::DesiredState {
            generation: 1,
            vns: vec![slice(
                "vn1",
                &["n1"],
                vec![link("l1", nif("n1", "eth0", ""), e)],
            )],
        });
        assert!(d.invalid[0].1.contains("must be VXLAN or VLAN"));
    }

    #[test]
    fn cross_slice_conflicts_invalidate_both_and_spare_others() {
        let d = Desired::from_proto(&pb::DesiredState {
            generation: 1,
            vns: vec![
                slice("vna", &["n1"], vec![]),
                slice("vnb", &["n1"], vec![]),
                slice("vnc", &["n2"], vec![]),
                slice("vnc", &["n3"], vec![]),
                slice("vnd", &["n4"], vec![]),
            ],
        });
        assert_eq!(
            d.slices.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["vnd"]
        );
        assert_eq!(d.invalid.len(), 4);
        assert!(
            d.invalid
                .iter()
                .any(|(v, m)| v == "vna" && m.contains("node_id n1"))
        );
        assert!(
            d.invalid
                .iter()
                .any(|(v, m)| v == "vnc" && m.contains("more than one slice"))
        );
    }

    #[test]
    fn context_must_exist_elsewhere() {
        let mut child = slice("vnc", &["c1"], vec![]);
        child.context_node_id = "p1".into();
        child.depth = 1;
        let d = Desired::from_proto(&pb::DesiredState {
            generation: 1,
            vns: vec![child.clone()],
        });
        assert!(
            d.invalid[0]
                .1
                .contains("context_node_id p1 is not a node on this host")
        );
        let d = Desired::from_proto(&pb::DesiredState {
            generation: 1,
            vns: vec![child, slice("vnp", &["p1"], vec![])],
        });
        assert!(d.invalid.is_empty());
        assert_eq!(d.slices.len(), 2);
    }
}
