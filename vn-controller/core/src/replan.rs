//! Re-embedding a held VN while keeping what it holds: the one computation behind an update of a
//! VN's spec and behind moving a VN off a failed or drained host or substrate link.
//!
//! [`replan`] takes the VN's record (where its nodes and links are now), the request it should
//! become (the same one when only moving it), the residual of its frame *without the VN's own
//! holdings* ([`crate::index::Index::replan_view`]) and what to stay away from ([`Avoid`]). It
//! keeps every node and link that may stay, embeds only the rest around them, and says what
//! happens to each part ([`Diff`]). It is pure: nothing is reserved; the commit
//! ([`crate::index::Index::commit_replan`]) checks the result again under the lock.

use std::collections::{BTreeMap, BTreeSet};

use crate::embed::{Planner, View, ViewHost};
use crate::model::{NodeReq, VnReq};
use crate::record::VnRecord;
use crate::usage::Mapping;

/// What a replan must stay away from, named as in the VN's frame: substrate hosts and links for a
/// VN on the substrate, the parent's node names and link ids for a child VN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Avoid {
    /// No node may stay on these hosts and no path may cross them.
    pub hosts: BTreeSet<String>,
    /// No path may cross these links.
    pub links: BTreeSet<String>,
}

/// What becomes of one node or link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Stays as it is (same host or path, same identifiers).
    Keep,
    /// Stays where it is, with a changed spec (bandwidth, addresses, routes, demands, ...).
    Change,
    /// A node moves to another host, or a link takes another path.
    Move,
    Add,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Change => "change",
            Action::Move => "move",
            Action::Add => "add",
            Action::Remove => "remove",
        }
    }
}

/// What becomes of one node: `from` its current host (`None`: added), `to` its new one (`None`:
/// removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDiff {
    pub name: String,
    pub action: Action,
    pub from: Option<String>,
    pub to: Option<String>,
    /// What changed, e.g. `cpu 10 -> 20`; empty when nothing but the place did.
    pub detail: String,
}

/// What becomes of one link: `from` its current host path, `to` its new one (empty: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkDiff {
    /// The names of its end nodes (of the new spec; of the old one for a removed link).
    pub ends: [String; 2],
    pub action: Action,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub detail: String,
}

/// What a replan does to every node and link, old and new.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub nodes: Vec<NodeDiff>,
    pub links: Vec<LinkDiff>,
}

impl Diff {
    /// Nothing moves, changes, appears or disappears.
    pub fn is_noop(&self) -> bool {
        self.nodes.iter().all(|n| n.action == Action::Keep)
            && self.links.iter().all(|l| l.action == Action::Keep)
    }

    /// What moves: `node c h3 -> h5`, `link b-c h2,h3 -> h2,h5` (a link rerouted).
    pub fn moved(&self) -> Vec<String> {
        let mut moved = Vec::new();
        for n in self.nodes.iter().filter(|n| n.action == Action::Move) {
            let (from, to) = (n.from.as_deref(), n.to.as_deref());
            moved.push(format!(
                "node {} {} -> {}",
                n.name,
                from.unwrap_or("?"),
                to.unwrap_or("?")
            ));
        }
        for l in self.links.iter().filter(|l| l.action == Action::Move) {
            moved.push(format!(
                "link {}-{} {} -> {}",
                l.ends[0],
                l.ends[1],
                l.from.join(","),
                l.to.join(",")
            ));
        }
        moved
    }

    /// How many nodes and links take each action, as `2 nodes kept, 1 link added`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (what, actions) in [
            (
                "node",
                self.nodes.iter().map(|n| n.action).collect::<Vec<_>>(),
            ),
            ("link", self.links.iter().map(|l| l.action).collect()),
        ] {
            let mut count: BTreeMap<Action, usize> = BTreeMap::new();
            for a in actions {
                *count.entry(a).or_default() += 1;
            }
            for (a, n) in count {
                let verb = match a {
                    Action::Keep => "kept",
                    Action::Change => "changed",
                    Action::Move if what == "node" => "moved",
                    Action::Move => "rerouted",
                    Action::Add => "added",
                    Action::Remove => "removed",
                };
                let s = if n == 1 { "" } else { "s" };
                parts.push(format!("{n} {what}{s} {verb}"));
            }
        }
        parts.join(", ")
    }
}

/// Where a link of the new request comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkOrigin {
    /// Index of the link in the current record.
    pub index: usize,
    /// The new spec names its ends the other way round.
    pub swapped: bool,
}

/// The result of [`replan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Replan {
    /// The whole new request's mapping in its frame (kept parts included), as a fresh embedding
    /// would give it: [`crate::usage::Usage::check`] can check it.
    pub mapping: Mapping,
    /// Per node of the new request, the index of the current node it continues (same name).
    pub node_origin: Vec<Option<usize>>,
    /// Per link of the new request, the current link it continues (same end names; parallel
    /// links pair up in order).
    pub link_origin: Vec<Option<LinkOrigin>>,
    pub diff: Diff,
}

/// Where each node of `rec` sits in its frame: the host, or for a child its parent node.
pub fn frame_hosts(rec: &VnRecord) -> Vec<String> {
    rec.placement
        .nodes
        .iter()
        .map(|n| n.parent_node.clone().unwrap_or_else(|| n.host.clone()))
        .collect()
}

/// Re-embeds the VN of `rec` as `req` (its framed request: effective attributes), keeping what
/// may stay. `view` is the residual of the VN's frame without the VN's own holdings
/// ([`crate::index::Index::replan_view`]).
///
/// Contract:
/// - A node of `req` with the name of a current node continues it. It stays on its host unless
///   the host is avoided or not in `view`, or no longer satisfies the node (pin, location, kind,
///   image, dedicated-host isolation), or cannot hold the new demands of the nodes staying there
///   (then the nodes whose demands grew move first), or two nodes would share it without
///   revisitation. Everything else is placed by the planner around what stays.
/// - A link continues the current link between the same two names (in either direction;
///   parallel links pair up in order). It keeps its path when both ends stay, no link or host of
///   the path is avoided or gone from `view`, the hop limit holds and the path has the bandwidth
///   (else links whose bandwidth grew are rerouted first). Other links are routed by the
///   planner.
/// - Nothing is reserved. Errors say why the VN cannot be embedded so; the VN is unchanged.
///
/// Cost: one planner call on the parts that move (none when everything stays), plus linear work
/// in the size of the VN and the view.
pub fn replan(
    rec: &VnRecord,
    req: &VnReq,
    view: &View,
    avoid: &Avoid,
    planner: &dyn Planner,
    algorithm: &str,
) -> Result<Replan, String> {
    let node_origin = match_nodes(&rec.req, req);
    let link_origin = match_links(&rec.req, req);
    let view = avoiding(view, avoid);
    let hosts: BTreeMap<&str, &ViewHost> = view.hosts.iter().map(|h| (h.id.as_str(), h)).collect();
    let kept_nodes = keep_nodes(rec, req, &view, &hosts, &node_origin);
    let kept_links = keep_links(rec, req, &view, &hosts, &kept_nodes, &link_origin);
    let mapping = embed_rest(req, &view, &kept_nodes, &kept_links, planner, algorithm)?;
    let diff = diff(rec, req, &view, &mapping, &node_origin, &link_origin);
    Ok(Replan {
        mapping,
        node_origin,
        link_origin,
        diff,
    })
}

/// `view` without what is avoided.
fn avoiding(view: &View, avoid: &Avoid) -> View {
    let mut v = view.clone();
    v.hosts.retain(|h| !avoid.hosts.contains(&h.id));
    for (l, free) in v.links.iter().zip(v.free.iter_mut()) {
        if avoid.links.contains(&l.id) || avoid.hosts.contains(&l.a) || avoid.hosts.contains(&l.b) {
            *free = None;
        }
    }
    v
}

fn match_nodes(old: &VnReq, new: &VnReq) -> Vec<Option<usize>> {
    let by_name: BTreeMap<&str, usize> = old
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    new.nodes
        .iter()
        .map(|n| by_name.get(n.name.as_str()).copied())
        .collect()
}

fn match_links(old: &VnReq, new: &VnReq) -> Vec<Option<LinkOrigin>> {
    let key = |r: &VnReq, a: usize, b: usize| {
        let (x, y) = (r.nodes[a].name.clone(), r.nodes[b].name.clone());
        if x <= y { (x, y) } else { (y, x) }
    };
    let mut free: BTreeMap<(String, String), std::collections::VecDeque<usize>> = BTreeMap::new();
    for (i, l) in old.links.iter().enumerate() {
        free.entry(key(old, l.a, l.b)).or_default().push_back(i);
    }
    new.links
        .iter()
        .map(|l| {
            let index = free.get_mut(&key(new, l.a, l.b))?.pop_front()?;
            let o = &old.links[index];
            Some(LinkOrigin {
                index,
                swapped: old.nodes[o.a].name != new.nodes[l.a].name,
            })
        })
        .collect()
}

/// Whether `h` can still hold node `n` (demands aside).
fn host_suits(h: &ViewHost, n: &NodeReq, view: &View) -> bool {
    n.pin.as_ref().is_none_or(|p| *p == h.id)
        && n.location.as_ref().is_none_or(|l| h.labels.contains(l))
        && h.kinds.contains(&n.kind)
        && n.guest
            .as_ref()
            .is_none_or(|g| h.images.contains(&(g.image.clone(), g.arch.clone())))
        && !view.excluded.contains(&h.id)
}

/// The host each node of `req` stays on (`None`: it is placed anew).
fn keep_nodes(
    rec: &VnRecord,
    req: &VnReq,
    view: &View,
    hosts: &BTreeMap<&str, &ViewHost>,
    origin: &[Option<usize>],
) -> Vec<Option<String>> {
    let now = frame_hosts(rec);
    let mut kept: Vec<Option<String>> = req
        .nodes
        .iter()
        .zip(origin)
        .map(|(n, o)| {
            let h = &now[(*o)?];
            hosts
                .get(h.as_str())
                .filter(|vh| host_suits(vh, n, view))
                .map(|_| h.clone())
        })
        .collect();
    // Capacity: the nodes whose demands grew leave a host that cannot hold them all, then (if
    // it still cannot) every node there.
    let grew = |i: usize| {
        let old = &rec.req.nodes[origin[i].expect("kept nodes have an origin")];
        req.nodes[i].cpu > old.cpu || req.nodes[i].memory_mb > old.memory_mb
    };
    for only_grown in [true, false] {
        let mut load: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (i, h) in kept.iter().enumerate() {
            if let Some(h) = h {
                let e = load.entry(h.clone()).or_default();
                e.0 = e.0.saturating_add(req.nodes[i].cpu);
                e.1 = e.1.saturating_add(req.nodes[i].memory_mb);
            }
        }
        for (h, (cpu, mem)) in load {
            let vh = hosts[h.as_str()];
            if cpu <= vh.cpu_free && mem <= vh.memory_free {
                continue;
            }
            for (i, k) in kept.iter_mut().enumerate() {
                if k.as_deref() == Some(h.as_str()) && (!only_grown || grew(i)) {
                    *k = None;
                }
            }
        }
    }
    if !req.allow_revisitation {
        let mut taken = BTreeSet::new();
        for k in kept.iter_mut() {
            if let Some(h) = k
                && !taken.insert(h.clone())
            {
                *k = None;
            }
        }
    }
    kept
}

/// The path (frame link ids, from the new `a` end) each link of `req` keeps (`None`: routed
/// anew).
fn keep_links(
    rec: &VnRecord,
    req: &VnReq,
    view: &View,
    hosts: &BTreeMap<&str, &ViewHost>,
    kept_nodes: &[Option<String>],
    origin: &[Option<LinkOrigin>],
) -> Vec<Option<Vec<String>>> {
    let free: BTreeMap<&str, Option<u64>> = view
        .links
        .iter()
        .zip(&view.free)
        .map(|(l, f)| (l.id.as_str(), *f))
        .collect();
    let mut kept: Vec<Option<Vec<String>>> = req
        .links
        .iter()
        .zip(origin)
        .map(|(l, o)| {
            let o = (*o)?;
            kept_nodes[l.a].as_ref()?;
            kept_nodes[l.b].as_ref()?;
            let pl = &rec.placement.links[o.index];
            let transit_ok = pl
                .path
                .iter()
                .all(|h| hosts.contains_key(h.as_str()) && !view.excluded.contains(h));
            let mut ids: Vec<String> = pl.hops.iter().map(|h| h.link.clone()).collect();
            let links_ok = ids
                .iter()
                .all(|id| free.get(id.as_str()).is_some_and(Option::is_some));
            let hops_ok = req.max_path_hops.is_none_or(|m| ids.len() <= m as usize);
            if o.swapped {
                ids.reverse();
            }
            (transit_ok && links_ok && hops_ok).then_some(ids)
        })
        .collect();
    let grew = |i: usize| {
        let o = origin[i].expect("kept links have an origin");
        req.links[i].bandwidth_mbps > rec.req.links[o.index].bandwidth_mbps
    };
    for only_grown in [true, false] {
        let mut load: BTreeMap<&str, u64> = BTreeMap::new();
        for (i, k) in kept.iter().enumerate() {
            for id in k.iter().flatten() {
                let e = load.entry(id.as_str()).or_default();
                *e = e.saturating_add(req.links[i].bandwidth_mbps);
            }
        }
        let over: BTreeSet<String> = load
            .into_iter()
            .filter(|(id, b)| *b > free[id].unwrap_or(0))
            .map(|(id, _)| id.to_string())
            .collect();
        for (i, k) in kept.iter_mut().enumerate() {
            let crosses = k.iter().flatten().any(|id| over.contains(id));
            if crosses && (!only_grown || grew(i)) {
                *k = None;
            }
        }
    }
    kept
}

/// Embeds what does not stay around what does: kept nodes pinned to their hosts, kept links'
/// bandwidth taken off the view, only the other links routed.
fn embed_rest(
    req: &VnReq,
    view: &View,
    kept_nodes: &[Option<String>],
    kept_links: &[Option<Vec<String>>],
    planner: &dyn Planner,
    algorithm: &str,
) -> Result<Mapping, String> {
    let route: Vec<usize> = (0..req.links.len())
        .filter(|i| kept_links[*i].is_none())
        .collect();
    let (node_hosts, mut routed, algorithm) =
        if route.is_empty() && kept_nodes.iter().all(Option::is_some) {
            let hosts = kept_nodes.iter().flatten().cloned().collect();
            (hosts, Vec::new(), algorithm.to_string())
        } else {
            let mut sub = req.clone();
            for (n, k) in sub.nodes.iter_mut().zip(kept_nodes) {
                if let Some(h) = k {
                    n.pin = Some(h.clone());
                }
            }
            sub.links = route.iter().map(|&i| req.links[i].clone()).collect();
            let mut v = view.clone();
            for (k, l) in kept_links.iter().zip(&req.links) {
                for id in k.iter().flatten() {
                    if let Some(pos) = v.links.iter().position(|s| s.id == *id)
                        && let Some(f) = v.free[pos].as_mut()
                    {
                        *f = f.saturating_sub(l.bandwidth_mbps);
                    }
                }
            }
            let m = planner.plan(&v, &sub, algorithm)?;
            for (i, k) in kept_nodes.iter().enumerate() {
                if let Some(h) = k
                    && m.node_hosts.get(i) != Some(h)
                {
                    return Err(format!(
                        "algorithm {algorithm} moved node {} although it stays on {h}",
                        req.nodes[i].name
                    ));
                }
            }
            (m.node_hosts, m.link_paths, m.algorithm)
        };
    routed.reverse();
    let link_paths: Vec<Vec<String>> = kept_links
        .iter()
        .map(|k| match k {
            Some(p) => p.clone(),
            None => routed.pop().unwrap_or_default(),
        })
        .collect();
    let bandwidth: u64 = req.links.iter().map(|l| l.bandwidth_mbps).sum();
    let carried: u64 = req
        .links
        .iter()
        .zip(&link_paths)
        .map(|(l, p)| l.bandwidth_mbps.saturating_mul(p.len() as u64))
        .sum();
    Ok(Mapping {
        node_hosts,
        link_paths,
        algorithm,
        revenue: (req.total_cpu().saturating_add(bandwidth)) as f64,
        cost: (req.total_cpu().saturating_add(carried)) as f64,
    })
}

/// The hosts `ids` visits from `from` in `view` (as far as the links are known).
fn walk(view: &View, from: &str, ids: &[String]) -> Vec<String> {
    let mut path = vec![from.to_string()];
    for id in ids {
        let Some(l) = view.links.iter().find(|l| l.id == *id) else {
            break;
        };
        let cur = path.last().expect("non-empty").clone();
        path.push(l.other(&cur).to_string());
    }
    path
}

fn node_detail(old: &NodeReq, new: &NodeReq) -> String {
    let mut d = Vec::new();
    if old.kind != new.kind {
        d.push(format!(
            "kind {} -> {}",
            old.kind.as_str(),
            new.kind.as_str()
        ));
    }
    if old.cpu != new.cpu {
        d.push(format!("cpu {} -> {}", old.cpu, new.cpu));
    }
    if old.memory_mb != new.memory_mb {
        d.push(format!("memory {} -> {} MiB", old.memory_mb, new.memory_mb));
    }
    if old.routes != new.routes {
        d.push("routes".into());
    }
    if old.guest != new.guest {
        d.push("guest".into());
    }
    if old.pin != new.pin || old.location != new.location {
        d.push("placement constraints".into());
    }
    d.join(", ")
}

fn link_detail(old: &crate::model::LinkReq, new: &crate::model::LinkReq, swapped: bool) -> String {
    let mut d = Vec::new();
    if old.bandwidth_mbps != new.bandwidth_mbps {
        d.push(format!(
            "bandwidth {} -> {} Mbit/s",
            old.bandwidth_mbps, new.bandwidth_mbps
        ));
    }
    let turn = |a: Option<[ipnet::IpNet; 2]>| a.map(|[x, y]| if swapped { [y, x] } else { [x, y] });
    if turn(old.addresses) != new.addresses {
        d.push("addresses".into());
    }
    let mut ifs = old.interfaces.clone();
    if swapped {
        ifs.swap(0, 1);
    }
    if ifs != new.interfaces {
        d.push("interfaces".into());
    }
    if old.encap != new.encap {
        d.push(format!("encapsulation {:?} -> {:?}", old.encap, new.encap).to_lowercase());
    }
    d.join(", ")
}

fn action(moved: bool, detail: &str) -> Action {
    if moved {
        Action::Move
    } else if detail.is_empty() {
        Action::Keep
    } else {
        Action::Change
    }
}

fn diff(
    rec: &VnRecord,
    req: &VnReq,
    view: &View,
    m: &Mapping,
    node_origin: &[Option<usize>],
    link_origin: &[Option<LinkOrigin>],
) -> Diff {
    let now = frame_hosts(rec);
    let mut nodes = Vec::new();
    for (i, (n, o)) in req.nodes.iter().zip(node_origin).enumerate() {
        let to = m.node_hosts[i].clone();
        nodes.push(match o {
            Some(o) => {
                let detail = node_detail(&rec.req.nodes[*o], n);
                NodeDiff {
                    name: n.name.clone(),
                    action: action(now[*o] != to, &detail),
                    from: Some(now[*o].clone()),
                    to: Some(to),
                    detail,
                }
            }
            None => NodeDiff {
                name: n.name.clone(),
                action: Action::Add,
                from: None,
                to: Some(to),
                detail: String::new(),
            },
        });
    }
    for (i, n) in rec.req.nodes.iter().enumerate() {
        if !node_origin.contains(&Some(i)) {
            nodes.push(NodeDiff {
                name: n.name.clone(),
                action: Action::Remove,
                from: Some(now[i].clone()),
                to: None,
                detail: String::new(),
            });
        }
    }
    let mut links = Vec::new();
    for (i, (l, o)) in req.links.iter().zip(link_origin).enumerate() {
        let ends = [req.nodes[l.a].name.clone(), req.nodes[l.b].name.clone()];
        let to = walk(view, &m.node_hosts[l.a], &m.link_paths[i]);
        links.push(match o {
            Some(o) => {
                let pl = &rec.placement.links[o.index];
                let mut from = pl.path.clone();
                let mut ids: Vec<String> = pl.hops.iter().map(|h| h.link.clone()).collect();
                if o.swapped {
                    from.reverse();
                    ids.reverse();
                }
                let detail = link_detail(&rec.req.links[o.index], l, o.swapped);
                LinkDiff {
                    ends,
                    action: action(from != to || ids != m.link_paths[i], &detail),
                    from,
                    to,
                    detail,
                }
            }
            None => LinkDiff {
                ends,
                action: Action::Add,
                from: vec![],
                to,
                detail: String::new(),
            },
        });
    }
    for (i, l) in rec.req.links.iter().enumerate() {
        if !link_origin.iter().flatten().any(|o| o.index == i) {
            links.push(LinkDiff {
                ends: [
                    rec.req.nodes[l.a].name.clone(),
                    rec.req.nodes[l.b].name.clone(),
                ],
                action: Action::Remove,
                from: rec.placement.links[i].path.clone(),
                to: vec![],
                detail: String::new(),
            });
        }
    }
    Diff { nodes, links }
}
