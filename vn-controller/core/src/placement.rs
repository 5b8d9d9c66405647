//! The allocation of an embedded request's placement: node ids, interface names, MACs, and per
//! hop a VNI or VLAN ID, the tunnel addresses and the MTU. Identifiers come from the
//! [`Allocators`]; every identifier taken is recorded in a [`Taken`] list, so that the caller
//! can release them all if the allocation fails midway.

use std::collections::{BTreeMap, BTreeSet};

use crate::alloc::{Allocators, base36, link_id, node_id};
use crate::error::CoreError;
use crate::model::{Encap, Kind, LinkReq, VnReq};
use crate::nest::{self, ParentNode};
use crate::record::{Hop, PlacedLink, PlacedNode, Placement};
use crate::substrate::{DEFAULT_UNDERLAY_MTU, Registry};
use crate::usage::Mapping;

/// VXLAN overhead on the underlay MTU.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Longest link (and segment) id the agents accept.
const MAX_LINK_ID_LEN: usize = 10;

/// An identifier taken during one allocation (released again if the allocation fails).
#[derive(Debug)]
pub enum Taken {
    Mac(u64),
    Vni(u64),
    Vlan(String, u64),
}

impl Taken {
    /// Gives the identifier back to its allocator.
    pub fn release(self, alloc: &mut Allocators) {
        match self {
            Taken::Mac(v) => alloc.mac.release(v),
            Taken::Vni(v) => alloc.vni.release(v),
            Taken::Vlan(seg, v) => alloc.vlan_pool(&seg).release(v),
        }
    }
}

/// Where the mapping places a VN, for the allocation: the substrate, or (for a child) its
/// parent's virtual topology.
pub struct Target<'a> {
    pub reg: &'a Registry,
    /// UDP port of VXLAN hops at this depth.
    pub port: u16,
    /// Child: where each parent node is (the mapping names parent nodes, not hosts).
    pub parent_nodes: Option<&'a BTreeMap<String, ParentNode>>,
}

/// Allocates the placement of `req` (with its effective attributes) as `mapping` embeds it on
/// `target`; `paths` are the host paths of its links ([`crate::usage::Usage::check`]).
/// Returns the new VN id and the placement; what it took is in `taken`, also on error.
pub fn allocate(
    alloc: &mut Allocators,
    target: &Target<'_>,
    req: &VnReq,
    mapping: &Mapping,
    paths: &[Vec<String>],
    taken: &mut Vec<Taken>,
) -> Result<(String, Placement), CoreError> {
    let vn_id = alloc.next_vn_id();
    let nodes = place_nodes(target, &vn_id, mapping);
    let mut names = InterfaceNames::new(req);
    let mut extra_segments = 0u64;
    let mut links = Vec::with_capacity(req.links.len());
    let layout = Layout {
        req,
        mapping,
        paths,
    };
    for (i, l) in req.links.iter().enumerate() {
        let ids = LinkIds {
            link_id: link_id(&vn_id, i),
            ifnames: [names.next(l, 0), names.next(l, 1)],
            macs: [take_mac(alloc, taken)?, take_mac(alloc, taken)?],
            carrier: needs_carrier(req, l).then(|| nest::carrier_pair(i)),
            reuse: BTreeMap::new(),
        };
        links.push(place_link(
            alloc,
            target,
            &layout,
            i,
            ids,
            taken,
            |hosts| segment_ids(&vn_id, i, hosts, &mut extra_segments),
        )?);
    }
    let placement = Placement {
        nodes,
        links,
        algorithm: mapping.algorithm.clone(),
        revenue: mapping.revenue,
        cost: mapping.cost,
    };
    Ok((vn_id, placement))
}

/// A new MAC address, recorded in `taken`.
pub(crate) fn take_mac(alloc: &mut Allocators, taken: &mut Vec<Taken>) -> Result<u64, CoreError> {
    let v = alloc.mac.allocate()?;
    taken.push(Taken::Mac(v));
    Ok(v)
}

/// A child's link: the substrate host and the context node id of each element of its `path`
/// (parent nodes); empty for a VN on the substrate.
pub(crate) fn path_places(target: &Target<'_>, path: &[String]) -> (Vec<String>, Vec<String>) {
    match target.parent_nodes {
        Some(m) => (
            path.iter().map(|p| m[p].host.clone()).collect(),
            path.iter().map(|p| m[p].node_id.clone()).collect(),
        ),
        None => (vec![], vec![]),
    }
}

/// A link of a nestable VN without addresses and without a vm end gets carrier addresses.
pub(crate) fn needs_carrier(req: &VnReq, l: &LinkReq) -> bool {
    let vm_end = req.nodes[l.a].kind == Kind::Vm || req.nodes[l.b].kind == Kind::Vm;
    req.nestable && l.addresses.is_none() && !vm_end
}

/// The node of `target` where frame host `h` is: (substrate host, parent node, context).
pub(crate) fn node_place(target: &Target<'_>, h: &str) -> (String, Option<String>, Option<String>) {
    (
        target
            .parent_nodes
            .map_or_else(|| h.to_string(), |m| m[h].host.clone()),
        target.parent_nodes.map(|_| h.to_string()),
        target.parent_nodes.map(|m| m[h].node_id.clone()),
    )
}

/// Each node where the mapping puts it: on a host, or (a child) in a parent node on its host.
fn place_nodes(target: &Target<'_>, vn_id: &str, mapping: &Mapping) -> Vec<PlacedNode> {
    mapping
        .node_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (host, parent_node, context) = node_place(target, h);
            PlacedNode {
                host,
                node_id: node_id(vn_id, i),
                parent_node,
                context,
            }
        })
        .collect()
}

/// Interface names: explicit ones first, then eth0, eth1, ... skipping taken names.
pub(crate) struct InterfaceNames {
    used: Vec<BTreeSet<String>>,
    next_eth: Vec<usize>,
}

impl InterfaceNames {
    pub(crate) fn new(req: &VnReq) -> Self {
        let mut used: Vec<BTreeSet<String>> = vec![BTreeSet::new(); req.nodes.len()];
        for l in &req.links {
            for (side, node) in [l.a, l.b].into_iter().enumerate() {
                if let Some(n) = &l.interfaces[side] {
                    used[node].insert(n.clone());
                }
            }
        }
        InterfaceNames {
            used,
            next_eth: vec![0; req.nodes.len()],
        }
    }

    /// Marks `name` taken on node `node` (an interface that an update keeps).
    pub(crate) fn reserve(&mut self, node: usize, name: &str) {
        self.used[node].insert(name.to_string());
    }

    /// The name of link `l`'s interface at `side` (0: `a`, 1: `b`).
    pub(crate) fn next(&mut self, l: &LinkReq, side: usize) -> String {
        if let Some(n) = &l.interfaces[side] {
            return n.clone();
        }
        let node = if side == 0 { l.a } else { l.b };
        loop {
            let cand = format!("eth{}", self.next_eth[node]);
            self.next_eth[node] += 1;
            if self.used[node].insert(cand.clone()) {
                return cand;
            }
        }
    }
}

/// What a VN's placement follows: its request, the embedding's mapping and the host path of
/// each link.
pub(crate) struct Layout<'a> {
    pub req: &'a VnReq,
    pub mapping: &'a Mapping,
    pub paths: &'a [Vec<String>],
}

/// What identifies a link wherever it runs: new, or kept from an earlier placement.
pub(crate) struct LinkIds {
    pub link_id: String,
    pub ifnames: [String; 2],
    pub macs: [u64; 2],
    pub carrier: Option<[ipnet::IpNet; 2]>,
    /// Per substrate link, the VNI or VLAN ID that a hop over it keeps ([`place_hops`]).
    pub reuse: BTreeMap<String, (Option<u32>, Option<u16>)>,
}

/// Places link `i` of `layout` with `ids` along its path: its hops, its MTU (the path's, capped
/// by the VN's), hosts, contexts and path delay; `segments` names its segments from its hosts.
pub(crate) fn place_link(
    alloc: &mut Allocators,
    target: &Target<'_>,
    layout: &Layout<'_>,
    i: usize,
    ids: LinkIds,
    taken: &mut Vec<Taken>,
    segments: impl FnOnce(&[String]) -> Result<Vec<String>, CoreError>,
) -> Result<PlacedLink, CoreError> {
    let (l, path) = (&layout.req.links[i], &layout.paths[i]);
    let link_path = &layout.mapping.link_paths[i];
    let (hops, mtu) = place_hops(alloc, target, l, link_path, path, &ids.reuse, taken)?;
    let (hosts, contexts) = path_places(target, path);
    Ok(PlacedLink {
        link_id: ids.link_id,
        path: path.clone(),
        hops,
        mtu: layout.req.attributes.mtu.map_or(mtu, |cap| mtu.min(cap)),
        ifnames: ids.ifnames,
        macs: ids.macs,
        segment_ids: segments(&hosts)?,
        hosts,
        contexts,
        carrier: ids.carrier,
        path_delay_us: crate::usage::path_delay_us(target.reg, link_path),
    })
}

/// The hops of link `l` over the links `link_path` along the host path `path`, each with its
/// VNI or VLAN ID and tunnel addresses, and the link's MTU (the smallest hop's; the default
/// underlay MTU for a co-located link). A hop over a link named in `reuse` with that
/// encapsulation keeps the identifier given there instead of taking a new one.
fn place_hops(
    alloc: &mut Allocators,
    target: &Target<'_>,
    l: &LinkReq,
    link_path: &[String],
    path: &[String],
    reuse: &BTreeMap<String, (Option<u32>, Option<u16>)>,
    taken: &mut Vec<Taken>,
) -> Result<(Vec<Hop>, u32), CoreError> {
    let mut hops = Vec::new();
    let mut mtu = u32::MAX;
    for (j, sid) in link_path.iter().enumerate() {
        let sl = target
            .reg
            .link(sid)
            .expect("checked by Usage::check")
            .clone();
        let (from, to) = (&path[j], &path[j + 1]);
        let addr = |h: &str| {
            target.reg.address_on(&sl, h).ok_or_else(|| {
                CoreError::Exhausted(format!("host {h} has no address on link {sid}"))
            })
        };
        let (from_address, to_address) = (addr(from)?, addr(to)?);
        let under = target.reg.mtu_on(&sl, from).min(target.reg.mtu_on(&sl, to));
        let kept = reuse.get(sid).copied();
        let (vni, vlan_id, hop_mtu) = match (l.encap, kept) {
            (Encap::Vxlan, Some((Some(v), None))) => {
                (Some(v), None, under.saturating_sub(VXLAN_OVERHEAD))
            }
            (Encap::Vlan, Some((None, Some(v)))) => (None, Some(v), under),
            (Encap::Vxlan, _) => {
                let v = alloc.vni.allocate()?;
                taken.push(Taken::Vni(v));
                (Some(v as u32), None, under.saturating_sub(VXLAN_OVERHEAD))
            }
            (Encap::Vlan, _) => {
                let v = alloc.vlan_pool(&sl.segment).allocate()?;
                taken.push(Taken::Vlan(sl.segment.clone(), v));
                (None, Some(v as u16), under)
            }
        };
        mtu = mtu.min(hop_mtu);
        hops.push(Hop {
            link: sid.clone(),
            from: from.clone(),
            to: to.clone(),
            encap: l.encap,
            vni,
            vlan_id,
            segment: sl.segment.clone(),
            udp_port: target.port,
            from_address,
            to_address,
        });
    }
    if hops.is_empty() {
        mtu = DEFAULT_UNDERLAY_MTU;
    }
    Ok((hops, mtu))
}

/// A child's link may cross two parent nodes on one host: one segment id each after the first
/// (`extra` counts them over the VN). Empty when no host repeats.
pub(crate) fn segment_ids(
    vn_id: &str,
    link: usize,
    hosts: &[String],
    extra: &mut u64,
) -> Result<Vec<String>, CoreError> {
    let mut segment_ids = Vec::new();
    let mut seen = BTreeSet::new();
    for (pos, h) in hosts.iter().enumerate() {
        if seen.insert(h) {
            continue;
        }
        segment_ids.resize(pos + 1, String::new());
        *extra += 1;
        let id = format!("{vn_id}r{}", base36(*extra));
        if id.len() > MAX_LINK_ID_LEN {
            return Err(CoreError::NoRoom(format!(
                "link {link} crosses host {h} more than once and no segment id is left for it"
            )));
        }
        segment_ids[pos] = id;
    }
    Ok(segment_ids)
}
