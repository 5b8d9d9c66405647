//! The part of a VN that one host realizes (`VnSlice`), computed from the VN's record alone, so
//! that a restarted controller computes the same desired state from the same store.
//!
//! For each virtual link with host path `p[0] .. p[k]`: the host at position `i` gets one segment
//! whose `a` side is the node interface of the link's `a` end (when `i == 0`) or the tunnel hop
//! `i - 1` seen from this host, and whose `b` side is the node interface of the `b` end (when
//! `i == k`) or the tunnel hop `i`. A co-located link (`k == 0`) is a node-node segment.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{Encap, GuestReq, Impairment, Kind, RouteSpec, VnReq};
use crate::record::{Hop, PlacedLink, VnRecord};

/// The part of one VN that one host realizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub vn_id: String,
    /// `provider/name`, for the agent's logs and errors.
    pub label: String,
    /// A child's slice: the parent node whose namespace holds it (empty at the top level).
    pub context_node_id: String,
    pub depth: u32,
    pub nodes: Vec<SliceNode>,
    pub links: Vec<Segment>,
}

/// A virtual node of the slice.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceNode {
    pub node_id: String,
    pub name: String,
    pub kind: Kind,
    pub routes: Vec<RouteSpec>,
    pub memory_mb: u64,
    /// A vm node's guest.
    pub guest: Option<GuestReq>,
}

/// The part of a virtual link on one host: between two node interfaces, a node interface and
/// a tunnel hop, or two tunnel hops (a transit host).
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub link_id: String,
    pub mtu: u32,
    pub bandwidth_mbps: u64,
    pub a: Endpoint,
    pub b: Endpoint,
    /// A child's segment: the parent node whose namespace carries its tunnels.
    pub context_node_id: String,
    /// What the node interfaces of this segment add to the frames they send: the link's
    /// impairment minus the delay its path already has.
    pub impair: Impairment,
}

/// One end of a segment.
#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    Node(NodeInterface),
    Tunnel(TunnelEnd),
}

/// A virtual node's interface on a link.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInterface {
    pub node_id: String,
    pub ifname: String,
    pub address: Option<IpNet>,
    pub mac: u64,
}

/// A tunnel hop as seen from one of its ends.
#[derive(Clone, Debug, PartialEq)]
pub struct TunnelEnd {
    pub encap: Encap,
    pub vni: Option<u32>,
    pub vlan_id: Option<u16>,
    pub udp_port: u16,
    pub local_address: IpAddr,
    pub remote_address: IpAddr,
    /// The host (or parent node) at the other end.
    pub neighbor: String,
}

/// The tunnel endpoint of `hop` as seen from its `from` end (`at_from`) or its `to` end. (By
/// position, not by name: a child's path names parent nodes, not hosts.)
fn tunnel(hop: &Hop, at_from: bool) -> Endpoint {
    let (local, remote, neighbor) = if at_from {
        (hop.from_address, hop.to_address, &hop.to)
    } else {
        (hop.to_address, hop.from_address, &hop.from)
    };
    Endpoint::Tunnel(TunnelEnd {
        encap: hop.encap,
        vni: hop.vni,
        vlan_id: hop.vlan_id,
        udp_port: hop.udp_port,
        local_address: local,
        remote_address: remote,
        neighbor: neighbor.clone(),
    })
}

fn node_end(req: &VnReq, rec: &VnRecord, link_index: usize, side: usize) -> Endpoint {
    let l = &req.links[link_index];
    let pl: &PlacedLink = &rec.placement.links[link_index];
    let node = if side == 0 { l.a } else { l.b };
    Endpoint::Node(NodeInterface {
        node_id: rec.placement.nodes[node].node_id.clone(),
        ifname: pl.ifnames[side].clone(),
        address: l.addresses.or(pl.carrier).map(|a| a[side]),
        mac: pl.macs[side],
    })
}

/// The slice of `rec` on `host`, or `None` when the VN has nothing there.
///
/// For a child VN the path of a link names parent nodes: the segment at position `i` is on the
/// host of parent node `path[i]` and its tunnels ride in that node's namespace
/// (`LinkSegment.context_node_id`); the slice's own context is the first such node on the host.
pub fn slice(rec: &VnRecord, host: &str) -> Option<Slice> {
    let req = &rec.req;
    let nodes: Vec<SliceNode> = req
        .nodes
        .iter()
        .zip(&rec.placement.nodes)
        .filter(|(_, p)| p.host == host)
        .map(|(n, p)| SliceNode {
            node_id: p.node_id.clone(),
            name: n.name.clone(),
            kind: n.kind,
            routes: n.routes.clone(),
            memory_mb: n.memory_mb,
            guest: n.guest.clone(),
        })
        .collect();
    let mut links = Vec::new();
    let mut contexts: Vec<&str> = Vec::new();
    for (i, (l, pl)) in req.links.iter().zip(&rec.placement.links).enumerate() {
        let k = pl.path.len() - 1;
        for (pos, h) in pl.host_path().iter().enumerate() {
            if h != host {
                continue;
            }
            let context = pl.contexts.get(pos).map_or("", String::as_str);
            if !context.is_empty() {
                contexts.push(context);
            }
            let a = if pos == 0 {
                node_end(req, rec, i, 0)
            } else {
                tunnel(&pl.hops[pos - 1], false)
            };
            let b = if pos == k {
                node_end(req, rec, i, 1)
            } else {
                tunnel(&pl.hops[pos], true)
            };
            links.push(Segment {
                link_id: pl.segment_id(pos).to_string(),
                mtu: pl.mtu,
                bandwidth_mbps: l.bandwidth_mbps,
                a,
                b,
                context_node_id: context.to_string(),
                impair: l.impair.on_top_of(pl.path_delay_us),
            });
        }
    }
    if nodes.is_empty() && links.is_empty() {
        return None;
    }
    // A child's slice: its context is the parent node of its first node here (else of its first
    // segment here); segments in other parent nodes name their own.
    let context = rec
        .placement
        .nodes
        .iter()
        .filter(|p| p.host == host)
        .find_map(|p| p.context.as_deref())
        .or(contexts.first().copied())
        .unwrap_or_default();
    Some(Slice {
        vn_id: rec.vn_id.clone(),
        label: rec.label(),
        context_node_id: context.to_string(),
        depth: rec.depth(),
        nodes,
        links,
    })
}

/// A host's desired state as shared slices: cheap to take under the index lock (a slice never
/// changes once its VN is accepted), turned into the message outside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredSnapshot {
    pub generation: u64,
    pub vns: Vec<Arc<Slice>>,
}
