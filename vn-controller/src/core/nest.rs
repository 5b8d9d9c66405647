//! Recursion: a nestable VN as the substrate of child VNs (issue 7).
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
//! [`child_frame`] resolves a child request against its parent, in this order: the parent exists
//! (NOT_FOUND), the caller owns it or is in its `share_with` (PERMISSION_DENIED), it is nestable
//! and ready, the depth and the VXLAN port of the level fit, `share_with` and the attributes only
//! narrow the parent's, the request conforms to the effective attributes (FAILED_PRECONDITION),
//! the quotas of every ancestor hold and no link asks for more than the parent's largest link
//! (RESOURCE_EXHAUSTED), and pins name netns nodes of the parent on attached hosts.
//!
//! Carrier addresses: a link of a nestable VN without addresses gets two from
//! [`carrier_range`] (link `i`: the `/31` at offset `2i`), so that children's tunnels have
//! endpoints. They are unique within the VN, which is enough: they live only in its own node
//! namespaces. Explicit addresses of a nestable VN may not overlap the range.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::alloc::mac_string;
use super::attributes::{self, Kinds};
use super::index::{CoreError, Index};
use super::model::{Kind, VnReq};
use super::record::{VnRecord, VnStatus};
use super::substrate::{HostInfo, LinkSource, Registry, SubstrateLink, UnderlayIf};
use super::usage::Usage;

/// Deepest nesting (a VN on the substrate has depth 0). Each level costs 50 bytes of MTU and
/// one UDP port above the base VXLAN port.
pub const MAX_DEPTH: u32 = 8;

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

    /// Parents whose children use something of them (for tests).
    pub fn parents_in_use(&self) -> impl Iterator<Item = (&String, &Usage)> {
        self.usage.iter()
    }
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
            latency_ms: None,
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

/// What a child request is embedded in.
#[derive(Clone, Debug)]
pub struct ChildFrame {
    pub parent_id: String,
    pub parent_label: String,
    pub depth: u32,
    /// UDP port of the level's VXLAN hops (base + depth).
    pub port: u16,
    pub registry: Registry,
    pub nodes: BTreeMap<String, ParentNode>,
    /// The request with its effective attributes (and inherited encapsulations).
    pub req: VnReq,
}

/// Nodes and total cpu of `vn_id` and all its descendants that hold resources.
pub fn subtree_totals(ix: &Index, vn_id: &str) -> (u64, u64) {
    let mut nodes = 0;
    let mut cpu = 0;
    let mut stack = vec![vn_id.to_string()];
    while let Some(id) = stack.pop() {
        if let Some(r) = ix.record(&id)
            && r.status.holds_resources()
        {
            nodes += r.req.nodes.len() as u64;
            cpu += r.req.total_cpu();
        }
        stack.extend(ix.nests().children(&id).cloned());
    }
    (nodes, cpu)
}

/// `vn_id` and its descendants, deepest first (the order of a cascading delete).
pub fn post_order(ix: &Index, vn_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(ix: &Index, id: &str, out: &mut Vec<String>) {
        for c in ix.nests().children(id) {
            walk(ix, c, out);
        }
        out.push(id.to_string());
    }
    walk(ix, vn_id, &mut out);
    out
}

fn list(set: &BTreeSet<String>) -> String {
    format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", "))
}

/// Resolves a child request against its parent (see the module docs for the order of checks).
pub fn child_frame(ix: &Index, req: &VnReq, base_port: u16) -> Result<ChildFrame, CoreError> {
    let pref = req.parent.as_ref().expect("a child request");
    let parent = ix
        .find(&pref.provider, &pref.name)
        .ok_or_else(|| CoreError::NotFound {
            name: format!("{pref} (spec.parent)"),
        })?;
    let label = parent.label();
    // Another provider's VN that is not shared with the caller does not exist for it: the same
    // answer as an unknown parent, so that existence does not leak.
    if req.provider != *parent.provider() && !parent.req.share_with.contains(&req.provider.0) {
        return Err(CoreError::NotFound {
            name: format!("{pref} (spec.parent)"),
        });
    }
    if !parent.req.nestable {
        return Err(CoreError::Precondition(format!(
            "parent {label} is not nestable (create it with nestable: true to carry child VNs)"
        )));
    }
    if parent.status != VnStatus::Ready {
        let why = if parent.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", parent.reason)
        };
        return Err(CoreError::Precondition(format!(
            "parent {label} is {}{why}; children can be created once it is ready",
            parent.status.as_str()
        )));
    }
    let depth = parent.depth() + 1;
    if depth > MAX_DEPTH {
        return Err(CoreError::Precondition(format!(
            "a child of {label} would be at depth {depth}, deeper than the limit of {MAX_DEPTH}"
        )));
    }
    let port = u16::try_from(u32::from(base_port) + depth).map_err(|_| {
        CoreError::Precondition(format!(
            "no VXLAN port for depth {depth} above the base port {base_port}"
        ))
    })?;
    let mut allowed: BTreeSet<String> = parent.req.share_with.clone();
    allowed.insert(parent.provider().0.clone());
    let extra: BTreeSet<String> = req.share_with.difference(&allowed).cloned().collect();
    if !extra.is_empty() {
        return Err(CoreError::Precondition(format!(
            "spec.share_with: {} widens the parent's {} (owner and share_with of {label}; a child VN may only narrow its parent's attributes)",
            list(&extra),
            list(&allowed)
        )));
    }
    let eff = attributes::inherit(&parent.req.attributes, &req.attributes).map_err(|e| {
        CoreError::Precondition(format!(
            "spec.{e} (of {label}; a child VN may only narrow its parent's attributes)"
        ))
    })?;
    let mut child = req.clone();
    attributes::conform(&mut child, &eff, &label).map_err(CoreError::Precondition)?;
    // Quotas of every ancestor (nodes and cpu of it and all its descendants).
    let mut anc = Some(parent);
    while let Some(a) = anc {
        let (nodes, cpu) = subtree_totals(ix, &a.vn_id);
        let at = &a.req.attributes;
        if let Some(max) = at.max_nodes
            && nodes + child.nodes.len() as u64 > u64::from(max)
        {
            return Err(CoreError::NoRoom(format!(
                "quota of {}: attributes.max_nodes {max} would be exceeded ({nodes} nodes in it and its descendants, {} more asked)",
                a.label(),
                child.nodes.len()
            )));
        }
        if let Some(max) = at.max_total_cpu
            && cpu + child.total_cpu() > max
        {
            return Err(CoreError::NoRoom(format!(
                "quota of {}: attributes.max_total_cpu {max} would be exceeded (cpu {cpu} in it and its descendants, {} more asked)",
                a.label(),
                child.total_cpu()
            )));
        }
        anc = a.parent_id().and_then(|p| ix.record(p));
    }
    let (registry, nodes) = virtual_substrate(parent, &ix.registry);
    for (i, n) in child.nodes.iter().enumerate() {
        let Some(pin) = &n.pin else { continue };
        let what = format!("spec.nodes[{i}] ({})", n.name);
        let Some(pn) = nodes.get(pin) else {
            return Err(CoreError::Invalid(format!(
                "{what}: pinned to {pin}, which is not a node of parent {label}"
            )));
        };
        if pn.kind != Kind::Netns {
            return Err(CoreError::Precondition(format!(
                "{what}: pinned to {pin}, a {} node of parent {label}: only netns nodes can carry child nodes",
                pn.kind.as_str()
            )));
        }
        let kinds = &registry.host(pin).expect("listed").kinds;
        if !kinds.contains(&n.kind) {
            return Err(CoreError::Precondition(format!(
                "{what}: parent node {pin} (on host {}) cannot carry {} nodes (it can carry {})",
                pn.host,
                n.kind.as_str(),
                Kinds(kinds)
            )));
        }
        if !registry.is_connected(pin) {
            return Err(CoreError::Precondition(format!(
                "{what}: pinned to {pin}, whose host {} is not attached",
                pn.host
            )));
        }
    }
    if !child.allow_revisitation {
        // Every link needs at least one hop of the parent: none may exceed its largest link.
        let largest = registry
            .links()
            .iter()
            .filter(|l| registry.link_usable(l))
            .map(|l| l.bandwidth_mbps)
            .max();
        for (i, l) in child.links.iter().enumerate() {
            if largest.is_none_or(|m| l.bandwidth_mbps > m) {
                let what = format!(
                    "spec.links[{i}] ({}-{})",
                    child.nodes[l.a].name, child.nodes[l.b].name
                );
                return Err(CoreError::NoRoom(match largest {
                    Some(m) => format!(
                        "{what}: bandwidth {} Mbit/s exceeds every link of parent {label} (the largest carries {m} Mbit/s)",
                        l.bandwidth_mbps
                    ),
                    None => format!(
                        "{what}: parent {label} has no link that can carry child links (links need addresses and netns nodes at both ends)"
                    ),
                }));
            }
        }
    }
    Ok(ChildFrame {
        parent_id: parent.vn_id.clone(),
        parent_label: label,
        depth,
        port,
        registry,
        nodes,
        req: child,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_addresses_are_distinct_31s_inside_the_range() {
        let r = carrier_range();
        let mut seen = BTreeSet::new();
        for i in 0..super::super::model::MAX_LINKS {
            let [a, b] = carrier_pair(i);
            assert_eq!(a.prefix_len(), 31);
            assert_eq!(a.trunc(), b.trunc(), "one /31 per link");
            assert!(r.contains(&a.addr()) && r.contains(&b.addr()));
            assert!(seen.insert(a.addr()) && seen.insert(b.addr()));
        }
        assert_eq!(carrier_pair(1)[0].to_string(), "100.64.0.2/31");
    }
}
