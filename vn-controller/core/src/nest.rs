//! Recursion: a nestable VN as the substrate of child VNs.
//!
//! A child is embedded in its parent's *virtual* topology, seen through the same types as the
//! substrate, so that the embedding, [`Usage::check`] and the allocation of hops work
//! unchanged: [`virtual_substrate`] turns the parent's record into a [`Registry`] whose hosts
//! are the parent's virtual nodes (capacity: their cpu and memory; kinds: what may nest in them,
//! nothing for a vm node; labels: those of their substrate host) and whose links are the
//! parent's virtual links (bandwidth; tunnel addresses: the addresses of the link's two
//! interfaces; MTU: the link's MTU; VLAN segment: the link itself). What the parent's children
//! use of it is a [`Usage`] per parent, kept in [`Nests`] next to the tree of children.
//!
//! How a child is checked against its parent and framed in its topology is in [`crate::frame`].
//!
//! Carrier addresses: a link of a nestable VN without addresses gets two from
//! [`carrier_range`] (link `i`: the `/31` at offset `2i`), so that children's tunnels have
//! endpoints. They are unique within the VN, which is enough: they live only in its own node
//! namespaces. Explicit addresses of a nestable VN may not overlap the range.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::alloc::mac_string;
use crate::model::{Kind, LinkReq};
use crate::record::{PlacedLink, VnRecord};
use crate::substrate::{HostInfo, LinkSource, Registry, SubstrateLink, UnderlayIf};
use crate::usage::Usage;

/// Where the carrier addresses of nestable VNs' links come from: 1024 `/31`s, one per link
/// (a VN has at most 999 links). Part of 100.64.0.0/10 (shared address space, RFC 6598).
pub fn carrier_range() -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 21).expect("valid prefix"))
}

/// The carrier addresses of link `index` of a nestable VN.
pub fn carrier_pair(index: usize) -> [IpNet; 2] {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + 2 * index as u32;
    let net = |a: u32| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), 31).expect("valid prefix"));
    [net(base), net(base + 1)]
}

/// A parent's virtual node as the child's "host".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentNode {
    /// The substrate host it runs on.
    pub host: String,
    /// Its agent-level id: the namespace that carries children's tunnels there.
    pub node_id: String,
    pub kind: Kind,
}

/// Per-parent state: what children use of each nestable VN, and the tree.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nests {
    usage: BTreeMap<String, Usage>,
    /// parent VN id -> child VN ids (held or failed).
    children: BTreeMap<String, BTreeSet<String>>,
}

impl Nests {
    /// What the children of `parent` use of it.
    pub fn usage(&self, parent: &str) -> &Usage {
        static EMPTY: std::sync::OnceLock<Usage> = std::sync::OnceLock::new();
        self.usage
            .get(parent)
            .unwrap_or_else(|| EMPTY.get_or_init(Usage::default))
    }

    pub(crate) fn usage_mut(&mut self, parent: &str) -> &mut Usage {
        self.usage.entry(parent.to_string()).or_default()
    }

    /// Drops the usage entry of `parent` once nothing is used.
    pub(crate) fn tidy(&mut self, parent: &str) {
        if self.usage.get(parent) == Some(&Usage::default()) {
            self.usage.remove(parent);
        }
    }

    pub fn children(&self, parent: &str) -> impl Iterator<Item = &String> {
        self.children.get(parent).into_iter().flatten()
    }

    pub(crate) fn add_child(&mut self, parent: &str, child: &str) {
        self.children
            .entry(parent.to_string())
            .or_default()
            .insert(child.to_string());
    }

    pub(crate) fn remove_child(&mut self, parent: &str, child: &str) {
        if let Some(c) = self.children.get_mut(parent) {
            c.remove(child);
            if c.is_empty() {
                self.children.remove(parent);
            }
        }
    }

    /// `vn_id` and its descendants, deepest first (the order of a cascading delete).
    pub fn post_order(&self, vn_id: &str) -> Vec<String> {
        fn walk(n: &Nests, id: &str, out: &mut Vec<String>) {
            for c in n.children(id) {
                walk(n, c, out);
            }
            out.push(id.to_string());
        }
        let mut out = Vec::new();
        walk(self, vn_id, &mut out);
        out
    }

    /// Parents whose children use something of them (for tests).
    pub fn parents_in_use(&self) -> impl Iterator<Item = (&String, &Usage)> {
        self.usage.iter()
    }
}

/// The one-way delay a virtual link has in force: its own impairment's, at least its path's.
pub fn effective_delay_us(l: &LinkReq, pl: &PlacedLink) -> u64 {
    l.impair.delay_us.max(pl.path_delay_us)
}

/// The parent's virtual topology as a substrate for its children, and where each of its nodes
/// is. Links without addresses (or touching a vm node) cannot carry children and are left out;
/// vm nodes and nodes on detached hosts are present (paths of stored children may name them)
/// but not attached, so nothing new is placed on them.
pub fn virtual_substrate(
    parent: &VnRecord,
    global: &Registry,
) -> (Registry, BTreeMap<String, ParentNode>) {
    let req = &parent.req;
    let mut links = Vec::new();
    let mut ifs: Vec<Vec<UnderlayIf>> = vec![Vec::new(); req.nodes.len()];
    for (l, pl) in req.links.iter().zip(&parent.placement.links) {
        let Some(addrs) = l.addresses.or(pl.carrier) else {
            continue;
        };
        if req.nodes[l.a].kind == Kind::Vm || req.nodes[l.b].kind == Kind::Vm {
            continue;
        }
        links.push(SubstrateLink {
            id: pl.link_id.clone(),
            a: req.nodes[l.a].name.clone(),
            b: req.nodes[l.b].name.clone(),
            bandwidth_mbps: l.bandwidth_mbps,
            // What a child's frames take to cross this link: its own delay or its path's.
            latency_ms: Some(effective_delay_us(l, pl) as f64 / 1000.0),
            a_address: Some(addrs[0].addr()),
            b_address: Some(addrs[1].addr()),
            // Each virtual link is an L2 segment of its own (one VLAN ID space).
            segment: pl.link_id.clone(),
        });
        for (side, node) in [l.a, l.b].into_iter().enumerate() {
            ifs[node].push(UnderlayIf {
                name: pl.ifnames[side].clone(),
                addresses: vec![addrs[side]],
                mtu: pl.mtu,
                mac: mac_string(pl.macs[side]),
            });
        }
    }
    let mut reg = Registry::new(LinkSource::Topology(links), &[]);
    let mut nodes = BTreeMap::new();
    for ((n, p), underlay) in req.nodes.iter().zip(&parent.placement.nodes).zip(ifs) {
        let host = global.host(&p.host);
        let kinds = match n.kind {
            Kind::Netns => host.map(|h| h.kinds.clone()).unwrap_or_default(),
            Kind::Vm => BTreeSet::new(),
        };
        let underlay_address = underlay
            .first()
            .and_then(|i| i.addresses.first())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.addr());
        reg.upsert_host(HostInfo {
            id: n.name.clone(),
            underlay_address,
            underlay,
            cpu: n.cpu,
            memory_mb: n.memory_mb,
            kinds,
            labels: host.map(|h| h.labels.clone()).unwrap_or_default(),
            capabilities_pb: vec![],
            agent_version: String::new(),
            boot_id: String::new(),
            last_seen_unix_ms: 0,
            // A child's guest runs on the parent node's host: it holds what that host holds.
            images: host.map(|h| h.images.clone()).unwrap_or_default(),
            cordoned: false,
            guest_archs: host.map(|h| h.guest_archs.clone()).unwrap_or_default(),
        });
        if n.kind == Kind::Netns && global.is_connected(&p.host) {
            reg.set_connected(&n.name, true);
        }
        nodes.insert(
            n.name.clone(),
            ParentNode {
                host: p.host.clone(),
                node_id: p.node_id.clone(),
                kind: n.kind,
            },
        );
    }
    (reg, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_addresses_are_distinct_31s_inside_the_range() {
        let r = carrier_range();
        let mut seen = BTreeSet::new();
        for i in 0..crate::model::MAX_LINKS {
            let [a, b] = carrier_pair(i);
            assert_eq!(a.prefix_len(), 31);
            assert_eq!(a.trunc(), b.trunc(), "one /31 per link");
            assert!(r.contains(&a.addr()) && r.contains(&b.addr()));
            assert!(seen.insert(a.addr()) && seen.insert(b.addr()));
        }
        assert_eq!(carrier_pair(1)[0].to_string(), "100.64.0.2/31");
    }
}
