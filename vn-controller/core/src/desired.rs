//! The part of a VN that one host realizes (`VnSlice`), computed from the VN's record alone, so
//! that a restarted controller computes the same desired state from the same store.
//!
//! For each virtual link with host path `p[0] .. p[k]`: the host at position `i` gets one segment
//! whose `a` side is the node interface of the link's `a` end (when `i == 0`) or the tunnel hop
//! `i - 1` seen from this host, and whose `b` side is the node interface of the `b` end (when
//! `i == k`) or the tunnel hop `i`. A co-located link (`k == 0`) is a node-node segment.

use std::sync::Arc;

use vnet_proto::v1 as pb;

use super::alloc::mac_string;
use super::model::{Encap, Kind, RouteSpec, VnReq};
use super::record::{Hop, PlacedLink, VnRecord};

fn encap_pb(e: Encap) -> i32 {
    match e {
        Encap::Vxlan => pb::Encapsulation::Vxlan as i32,
        Encap::Vlan => pb::Encapsulation::Vlan as i32,
    }
}

fn kind_pb(k: Kind) -> i32 {
    match k {
        Kind::Netns => pb::NodeKind::Netns as i32,
        Kind::Vm => pb::NodeKind::Vm as i32,
    }
}

pub fn route_pb(r: &RouteSpec) -> pb::Route {
    pb::Route {
        destination: r
            .destination
            .map_or_else(|| "default".to_string(), |d| d.to_string()),
        via: r.via.to_string(),
    }
}

/// The tunnel endpoint of `hop` as seen from its `from` end (`at_from`) or its `to` end. (By
/// position, not by name: a child's path names parent nodes, not hosts.)
fn tunnel(hop: &Hop, at_from: bool) -> pb::Endpoint {
    let (local, remote, neighbor) = if at_from {
        (hop.from_address, hop.to_address, &hop.to)
    } else {
        (hop.to_address, hop.from_address, &hop.from)
    };
    pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Tunnel(pb::TunnelHop {
            encapsulation: encap_pb(hop.encap),
            vni: hop.vni.unwrap_or(0),
            vlan_id: hop.vlan_id.map_or(0, u32::from),
            udp_port: u32::from(hop.udp_port),
            local_address: local.to_string(),
            remote_address: remote.to_string(),
            neighbor: neighbor.clone(),
        })),
    }
}

fn node_end(req: &VnReq, rec: &VnRecord, link_index: usize, side: usize) -> pb::Endpoint {
    let l = &req.links[link_index];
    let pl: &PlacedLink = &rec.placement.links[link_index];
    let node = if side == 0 { l.a } else { l.b };
    pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Node(pb::NodeInterface {
            node_id: rec.placement.nodes[node].node_id.clone(),
            ifname: pl.ifnames[side].clone(),
            addresses: l
                .addresses
                .or(pl.carrier)
                .map(|a| vec![a[side].to_string()])
                .unwrap_or_default(),
            mac: mac_string(pl.macs[side]),
        })),
    }
}

/// The slice of `rec` on `host`, or `None` when the VN has nothing there.
///
/// For a child VN the path of a link names parent nodes: the segment at position `i` is on the
/// host of parent node `path[i]` and its tunnels ride in that node's namespace
/// (`LinkSegment.context_node_id`); the slice's own context is the first such node on the host.
pub fn slice(rec: &VnRecord, host: &str) -> Option<pb::VnSlice> {
    let req = &rec.req;
    let nodes: Vec<pb::VirtualNodeSpec> = req
        .nodes
        .iter()
        .zip(&rec.placement.nodes)
        .filter(|(_, p)| p.host == host)
        .map(|(n, p)| pb::VirtualNodeSpec {
            node_id: p.node_id.clone(),
            name: n.name.clone(),
            kind: kind_pb(n.kind),
            routes: n.routes.iter().map(route_pb).collect(),
            guest: n.guest.as_ref().map(|g| pb::GuestSpec {
                vcpus: g.vcpus,
                memory_mb: n.memory_mb,
                image: g.image.clone(),
                nic: g.nic,
                accel: g.accel,
            }),
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
            links.push(pb::LinkSegment {
                link_id: pl.segment_id(pos).to_string(),
                mtu: pl.mtu,
                bandwidth_mbps: l.bandwidth_mbps,
                a: Some(a),
                b: Some(b),
                context_node_id: context.to_string(),
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
    Some(pb::VnSlice {
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
    pub vns: Vec<Arc<pb::VnSlice>>,
}

impl DesiredSnapshot {
    pub fn to_proto(&self) -> pb::DesiredState {
        pb::DesiredState {
            generation: self.generation,
            vns: self.vns.iter().map(|s| (**s).clone()).collect(),
        }
    }
}
