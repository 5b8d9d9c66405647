//! Committing a replanned VN ([`crate::replan`]): an update of its spec, or a move off what
//! failed. Under the commit lock, [`Index::commit_replan`] checks the plan again against current
//! usage (the VN's own holdings count as free), keeps every identifier of what stays (node and
//! link ids, interface names, MACs, VNIs and VLAN IDs of hops over the same substrate links,
//! carrier addresses), takes new ones only for what is new, releases what is gone, and bumps the
//! generation of exactly the hosts whose slice changed. Nothing changes on error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::alloc::{Allocators, Cursors, link_id, node_id};
use crate::attributes;
use crate::desired;
use crate::embed::{View, view_of};
use crate::error::CoreError;
use crate::frame::Frame;
use crate::index::{Change, Event, EventKind, Index, hop_links, node_hosts};
use crate::model::{Kind, MAX_LINKS, MAX_NODES, VnReq};
use crate::nest;
use crate::placement::{self, InterfaceNames, Layout, LinkIds, Taken, Target};
use crate::record::{HostPhase, HostProgress, PlacedNode, Placement, VnRecord, VnStatus};
use crate::replan::Replan;
use crate::usage::{CheckMode, Usage};

/// What [`Index::commit_replan`] needs besides the plan.
#[derive(Clone, Debug)]
pub struct ReplanCommit {
    /// The VN's new validated request (not framed): its current one when it only moves.
    pub req: VnReq,
    /// The spec as accepted (protobuf-encoded `VnSpec`).
    pub spec_pb: Vec<u8>,
    /// The record generation the plan was computed from: a VN changed since is a conflict.
    pub base_generation: u64,
    /// Why, for the event (`spec updated`, `host h2 lost`).
    pub cause: String,
}

/// An identifier a placement holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Held {
    Mac(u64),
    Vni(u64),
    Vlan(String, u64),
}

fn held(p: &Placement) -> BTreeSet<Held> {
    let mut out = BTreeSet::new();
    for l in &p.links {
        out.extend(l.macs.iter().map(|m| Held::Mac(*m)));
        for h in &l.hops {
            if let Some(v) = h.vni {
                out.insert(Held::Vni(u64::from(v)));
            }
            if let Some(v) = h.vlan_id {
                out.insert(Held::Vlan(h.segment.clone(), u64::from(v)));
            }
        }
    }
    out
}

/// The numeric index of a node or link id of `vn_id` (`v1n12` -> 12 with `sep` `n`).
fn id_index(vn_id: &str, id: &str, sep: char) -> Option<usize> {
    id.strip_prefix(vn_id)?.strip_prefix(sep)?.parse().ok()
}

impl Index {
    /// The residual of `frame` as the held VN `vn_id` may use it when it is replanned: what the
    /// VN holds itself counts as free. The view [`crate::replan::replan`] expects.
    pub fn replan_view(&self, frame: &Frame, vn_id: &str) -> View {
        let (reg, usage) = match &frame.parent {
            Some(p) => (&p.registry, self.nests.usage(&p.id)),
            None => (&self.registry, &self.usage),
        };
        match self.vns.get(vn_id).filter(|r| r.status.holds_resources()) {
            Some(r) => {
                let mut u = usage.clone();
                u.remove(&r.req, &node_hosts(r), &hop_links(r));
                view_of(reg, &u, &frame.req)
            }
            None => view_of(reg, usage, &frame.req),
        }
    }

    /// Commits `plan` (computed by [`crate::replan::replan`] on the record of generation
    /// `c.base_generation`) as the new embedding of the held VN `vn_id`. Returns the new record
    /// and the change to persist; an update that changes nothing returns the record as it is and
    /// an empty change. Errors: NotFound, Conflict (the VN changed since), Invalid (the parent
    /// changed), Precondition (children constrain it), Exhausted (it no longer fits).
    pub fn commit_replan(
        &mut self,
        vn_id: &str,
        c: ReplanCommit,
        plan: &Replan,
    ) -> Result<(VnRecord, Change), CoreError> {
        let old = self.check_base(vn_id, &c)?;
        let Frame { req, port, parent } = self.frame_except(&c.req, Some(vn_id))?;
        if req == old.req && plan.diff.is_noop() {
            return Ok((old, Change::default()));
        }
        if plan.node_origin.len() != req.nodes.len() || plan.link_origin.len() != req.links.len() {
            return Err(CoreError::Invalid(
                "the plan does not cover the request".into(),
            ));
        }
        let mut usage = match &parent {
            Some(p) => self.nests.usage(&p.id).clone(),
            None => self.usage.clone(),
        };
        usage.remove(&old.req, &node_hosts(&old), &hop_links(&old));
        let cursors = self.alloc.cursors();
        let mut taken = Vec::new();
        let placement = {
            let target = match &parent {
                Some(p) => Target {
                    reg: &p.registry,
                    port,
                    parent_nodes: Some(&p.nodes),
                },
                None => Target {
                    reg: &self.registry,
                    port,
                    parent_nodes: None,
                },
            };
            let (paths, _) = usage
                .check(target.reg, &req, &plan.mapping, CheckMode::Commit)
                .map_err(CoreError::Exhausted)?;
            reallocate(
                &mut self.alloc,
                &target,
                &old,
                &req,
                plan,
                &paths,
                &mut taken,
            )
        };
        let rec = placement.map(|placement| VnRecord {
            req,
            spec_pb: c.spec_pb,
            placement,
            generation: old.generation + 1,
            ..old.clone()
        });
        let rec = match rec.and_then(|r| self.check_children(&old, &r).map(|()| r)) {
            Ok(r) => r,
            Err(e) => {
                self.give_back(taken, &cursors);
                return Err(e);
            }
        };
        usage.add(&rec.req, &plan.mapping.node_hosts, &plan.mapping.link_paths);
        match &parent {
            Some(p) => *self.nests.usage_mut(&p.id) = usage,
            None => self.usage = usage,
        }
        self.swap_ids(&old.placement, &rec.placement);
        Ok(self.reslice(&old, rec, plan, &c.cause))
    }

    /// The held record of `vn_id`, at the generation the update was planned on, with its parent.
    fn check_base(&self, vn_id: &str, c: &ReplanCommit) -> Result<VnRecord, CoreError> {
        let old = self
            .vns
            .get(vn_id)
            .cloned()
            .ok_or_else(|| CoreError::NotFound {
                name: c.req.name.clone(),
            })?;
        if !old.status.holds_resources() {
            return Err(CoreError::Precondition(format!(
                "VN {} failed and holds nothing to update: {} (delete it, or apply its spec again to create it anew)",
                old.name(),
                old.reason
            )));
        }
        if old.generation != c.base_generation {
            return Err(CoreError::Conflict(format!(
                "VN {} changed meanwhile (it is at generation {}, the update was made for generation {}): read it again and apply again",
                old.name(),
                old.generation,
                c.base_generation
            )));
        }
        if c.req.parent != old.req.parent {
            let show = |p: &Option<crate::model::ParentRef>| {
                p.as_ref().map_or("none".to_string(), |p| p.to_string())
            };
            return Err(CoreError::Invalid(format!(
                "spec.parent: a VN cannot change its parent (from {} to {}); delete it and create it anew",
                show(&old.req.parent),
                show(&c.req.parent)
            )));
        }
        Ok(old)
    }

    /// Gives back identifiers taken by a commit that failed.
    fn give_back(&mut self, taken: Vec<Taken>, cursors: &Cursors) {
        for t in taken {
            t.release(&mut self.alloc);
        }
        self.alloc.rewind(cursors);
    }

    /// Releases what `from` holds and `to` does not, and reserves what `to` holds and `from`
    /// does not unless it is held already (freshly allocated).
    fn swap_ids(&mut self, from: &Placement, to: &Placement) {
        let (a, b) = (held(from), held(to));
        for id in a.difference(&b) {
            match id {
                Held::Mac(v) => self.alloc.mac.release(*v),
                Held::Vni(v) => self.alloc.vni.release(*v),
                Held::Vlan(s, v) => self.alloc.vlan_pool(s).release(*v),
            }
        }
        for id in b.difference(&a) {
            // Already held when the commit allocated it; reserved again when reverting.
            let _ = match id {
                Held::Mac(v) => self.alloc.mac.reserve(*v),
                Held::Vni(v) => self.alloc.vni.reserve(*v),
                Held::Vlan(s, v) => self.alloc.vlan_pool(s).reserve(*v),
            };
        }
    }

    /// Installs `rec` in place of `old`: new slices, generations bumped on the hosts whose
    /// slice changed (only they report again), the event.
    fn reslice(
        &mut self,
        old: &VnRecord,
        mut rec: VnRecord,
        plan: &Replan,
        cause: &str,
    ) -> (VnRecord, Change) {
        let mut change = Change::default();
        let id = rec.vn_id.clone();
        let mut progress = BTreeMap::new();
        let mut reporting = false;
        for h in old.placement.hosts().union(&rec.placement.hosts()) {
            let key = (h.clone(), id.clone());
            let slice = desired::slice(&rec, h);
            if self.slices.get(&key).map(|s| &**s) == slice.as_ref() {
                if let Some(p) = old.hosts.get(h) {
                    progress.insert(h.clone(), p.clone());
                }
                continue;
            }
            let g = self.bump(h, &mut change);
            match slice {
                Some(s) => {
                    self.slices.insert(key, Arc::new(s));
                    self.host_vns
                        .entry(h.clone())
                        .or_default()
                        .insert(id.clone());
                    let phase = HostPhase::Pending;
                    progress.insert(
                        h.clone(),
                        HostProgress {
                            since_generation: g,
                            phase,
                        },
                    );
                    reporting = true;
                }
                None => {
                    self.slices.remove(&key);
                    if let Some(s) = self.host_vns.get_mut(h) {
                        s.remove(&id);
                        if s.is_empty() {
                            self.host_vns.remove(h);
                        }
                    }
                }
            }
        }
        rec.hosts = progress;
        if reporting && rec.status != VnStatus::Provisioning {
            rec.status = VnStatus::Updating;
            rec.reason = format!("updating to generation {}", rec.generation);
        }
        change.status_changed = true;
        change.events.push(updated_event(&rec, plan, cause));
        Self::settle(&mut rec, &mut change, None);
        change.upserts.insert(id.clone(), rec.clone());
        change.cursors = Some(self.alloc.cursors());
        self.vns.insert(id, rec.clone());
        (rec, change)
    }

    /// Undoes [`Index::commit_replan`] when its change could not be persisted (nothing else ran
    /// on the index in between): `old` is the record it replaced.
    pub fn revert_replan(&mut self, old: VnRecord) {
        let Some(new) = self.vns.get(&old.vn_id).cloned() else {
            return;
        };
        let usage: &mut Usage = match old.parent_id() {
            Some(p) => self.nests.usage_mut(p),
            None => &mut self.usage,
        };
        usage.remove(&new.req, &node_hosts(&new), &hop_links(&new));
        usage.add(&old.req, &node_hosts(&old), &hop_links(&old));
        self.swap_ids(&new.placement, &old.placement);
        for h in new.placement.hosts().union(&old.placement.hosts()) {
            let key = (h.clone(), old.vn_id.clone());
            match desired::slice(&old, h) {
                Some(s) => {
                    self.slices.insert(key, Arc::new(s));
                    let on = self.host_vns.entry(h.clone()).or_default();
                    on.insert(old.vn_id.clone());
                }
                None => {
                    self.slices.remove(&key);
                    if let Some(s) = self.host_vns.get_mut(h) {
                        s.remove(&old.vn_id);
                        if s.is_empty() {
                            self.host_vns.remove(h);
                        }
                    }
                }
            }
        }
        self.vns.insert(old.vn_id.clone(), old);
    }

    /// The children of `old` still fit in `new`: it stays nestable and shared with their
    /// providers, its attributes stay at least as wide as theirs, the nodes and links they use
    /// stay (same place, addresses, no smaller MTU) and hold what they use.
    fn check_children(&self, old: &VnRecord, new: &VnRecord) -> Result<(), CoreError> {
        let c = Children {
            old,
            new,
            kids: self
                .nests
                .children(&old.vn_id)
                .filter_map(|c| self.vns.get(c))
                .filter(|r| r.status.holds_resources())
                .collect(),
            used: self.nests.usage(&old.vn_id),
        };
        if c.kids.is_empty() {
            return Ok(());
        }
        if !new.req.nestable {
            return Err(c.refuse("spec.nestable cannot be turned off", &|_| true));
        }
        for k in &c.kids {
            let p = &k.provider().0;
            if *p != old.provider().0 && !new.req.share_with.contains(p) {
                let what = format!("spec.share_with must keep {p}");
                return Err(c.refuse(&what, &|r: &VnRecord| r.provider() == k.provider()));
            }
            let label = new.label();
            let fits = attributes::inherit(&new.req.attributes, &k.req.attributes)
                .map_err(|e| format!("spec.{e}"))
                .and_then(|eff| attributes::conform(&mut k.req.clone(), &eff, &label));
            if let Err(e) = fits {
                return Err(constrained(&e, &k.label_for(old.provider()), old));
            }
        }
        self.check_children_quota(&c)?;
        c.nodes()?;
        c.links()
    }

    /// The VN's own quotas (`max_nodes`, `max_total_cpu` of it and all its descendants) hold
    /// with its new nodes.
    fn check_children_quota(&self, c: &Children<'_>) -> Result<(), CoreError> {
        let (old, new) = (c.old, c.new);
        let (nodes, cpu) = self.subtree_totals(&old.vn_id);
        let below = (
            nodes.saturating_sub(old.req.nodes.len() as u64),
            cpu.saturating_sub(old.req.total_cpu()),
        );
        let at = &new.req.attributes;
        let total_nodes = below.0.saturating_add(new.req.nodes.len() as u64);
        let total_cpu = below.1.saturating_add(new.req.total_cpu());
        let why = match (at.max_nodes, at.max_total_cpu) {
            (Some(m), _) if total_nodes > u64::from(m) => format!(
                "spec.attributes.max_nodes {m} is below the {total_nodes} nodes of the VN and its descendants"
            ),
            (_, Some(m)) if total_cpu > m => format!(
                "spec.attributes.max_total_cpu {m} is below the cpu {total_cpu} of the VN and its descendants"
            ),
            _ => return Ok(()),
        };
        Err(c.refuse(&why, &|_| true))
    }
}

/// An update of a parent VN `old` to `new`, as its children that hold resources see it.
struct Children<'a> {
    old: &'a VnRecord,
    new: &'a VnRecord,
    kids: Vec<&'a VnRecord>,
    /// What the children use of the parent.
    used: &'a Usage,
}

impl Children<'_> {
    /// The refusal of the update because of `what`, naming the children (as the parent's
    /// owner sees them) that `pick` selects.
    fn refuse(&self, what: &str, pick: &dyn Fn(&VnRecord) -> bool) -> CoreError {
        let names: Vec<String> = self
            .kids
            .iter()
            .filter(|k| pick(k))
            .map(|k| k.label_for(self.old.provider()))
            .collect();
        constrained(what, &names.join(", "), self.old)
    }

    /// The parent nodes the children use stay where they are and hold what they use.
    fn nodes(&self) -> Result<(), CoreError> {
        let (old, new, used) = (self.old, self.new, self.used);
        for (i, n) in old.req.nodes.iter().enumerate() {
            let on_it = |k: &VnRecord| {
                k.placement
                    .nodes
                    .iter()
                    .any(|p| p.parent_node.as_deref() == Some(&n.name))
                    || k.placement.links.iter().any(|l| l.path.contains(&n.name))
            };
            if !self.kids.iter().any(|k| on_it(k)) {
                continue;
            }
            let j = new.req.nodes.iter().position(|m| m.name == n.name);
            let why = match j {
                None => Some("cannot be removed".to_string()),
                Some(j) if new.placement.nodes[j].host != old.placement.nodes[i].host => {
                    Some("cannot move".into())
                }
                Some(j) if new.req.nodes[j].kind != Kind::Netns => {
                    Some("must stay a netns node".into())
                }
                Some(j) if new.req.nodes[j].cpu < used.host_cpu(&n.name) => Some(format!(
                    "cpu cannot go below the {} its children use",
                    used.host_cpu(&n.name)
                )),
                Some(j) if new.req.nodes[j].memory_mb < used.host_memory(&n.name) => Some(format!(
                    "memory cannot go below the {} MiB its children use",
                    used.host_memory(&n.name)
                )),
                Some(_) => None,
            };
            if let Some(why) = why {
                let what = format!("node {} {why}", n.name);
                return Err(self.refuse(&what, &on_it));
            }
        }
        Ok(())
    }

    /// The parent links the children cross keep their addresses and hold what they use.
    fn links(&self) -> Result<(), CoreError> {
        let (old, new, used) = (self.old, self.new, self.used);
        let ends = |r: &VnRecord, i: usize| {
            let l = &r.req.links[i];
            format!("{}-{}", r.req.nodes[l.a].name, r.req.nodes[l.b].name)
        };
        for (i, pl) in old.placement.links.iter().enumerate() {
            let over = |k: &VnRecord| {
                k.placement
                    .links
                    .iter()
                    .any(|l| l.hops.iter().any(|h| h.link == pl.link_id))
            };
            if !self.kids.iter().any(|k| over(k)) {
                continue;
            }
            let addrs = |r: &VnRecord, j: usize| {
                let mut a = r.req.links[j].addresses.or(r.placement.links[j].carrier);
                if let Some(x) = a.as_mut() {
                    x.sort();
                }
                a
            };
            let j = new
                .placement
                .links
                .iter()
                .position(|l| l.link_id == pl.link_id);
            let why = match j {
                None => Some("cannot be removed".to_string()),
                Some(j) if addrs(new, j) != addrs(old, i) => Some("must keep its addresses".into()),
                Some(j) if new.placement.links[j].mtu < pl.mtu => Some(format!(
                    "MTU cannot shrink below {} (it is {} now)",
                    pl.mtu, new.placement.links[j].mtu
                )),
                Some(j) if new.req.links[j].bandwidth_mbps < used.link_bandwidth(&pl.link_id) => {
                    Some(format!(
                        "bandwidth cannot go below the {} Mbit/s its children use",
                        used.link_bandwidth(&pl.link_id)
                    ))
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                let what = format!("link {} {why}", ends(old, i));
                return Err(self.refuse(&what, &over));
            }
        }
        Ok(())
    }
}

/// The refusal of an update of `parent` that its children `users` prevent.
fn constrained(what: &str, users: &str, parent: &VnRecord) -> CoreError {
    CoreError::Precondition(format!(
        "{what}: used by child VN(s) {users} of {} (update or delete them first)",
        parent.name()
    ))
}

/// The event of an update: the new generation, why, what it did, and what moved.
fn updated_event(rec: &VnRecord, plan: &Replan, cause: &str) -> Event {
    let moved = plan.diff.moved();
    let moved = if moved.is_empty() {
        String::new()
    } else {
        format!("; {}", moved.join("; "))
    };
    Event {
        provider: rec.provider().clone(),
        name: rec.name().to_string(),
        kind: EventKind::Updated,
        status: Some(rec.status),
        host: String::new(),
        message: format!(
            "generation {} ({cause}): {}{moved}",
            rec.generation,
            plan.diff.summary()
        ),
    }
}

/// Indices below `max` that no id of `ids` (of VN `vn_id`, kind `sep`) has.
fn free_indices<'a>(
    vn_id: &str,
    ids: impl Iterator<Item = &'a String>,
    sep: char,
    max: usize,
) -> impl Iterator<Item = usize> {
    let used: BTreeSet<usize> = ids.filter_map(|i| id_index(vn_id, i, sep)).collect();
    (0..max).filter(move |i| !used.contains(i))
}

/// The nodes of `plan`: those that continue a node keep its id (and move if the plan says so),
/// new ones get ids no current node has.
fn renumber_nodes(
    target: &Target<'_>,
    old: &VnRecord,
    plan: &Replan,
) -> Result<Vec<PlacedNode>, CoreError> {
    let vn_id = &old.vn_id;
    let mut fresh = free_indices(
        vn_id,
        old.placement.nodes.iter().map(|n| &n.node_id),
        'n',
        MAX_NODES,
    );
    let mut nodes = Vec::with_capacity(plan.node_origin.len());
    for (h, origin) in plan.mapping.node_hosts.iter().zip(&plan.node_origin) {
        let node_id = match origin {
            Some(o) => old.placement.nodes[*o].node_id.clone(),
            None => node_id(
                vn_id,
                fresh.next().ok_or_else(|| {
                    CoreError::NoRoom(format!("VN {} has no node id left", old.name()))
                })?,
            ),
        };
        let (host, parent_node, context) = placement::node_place(target, h);
        nodes.push(PlacedNode {
            host,
            node_id,
            parent_node,
            context,
        });
    }
    Ok(nodes)
}

/// The placement of `req` as `plan` embeds it, continuing `old`'s: what stays keeps its
/// identifiers (node and link ids, interface names, MACs, the VNI or VLAN ID of a hop over the
/// same substrate link, carrier addresses); new nodes and links get ids no current one has, and
/// new identifiers.
fn reallocate(
    alloc: &mut Allocators,
    target: &Target<'_>,
    old: &VnRecord,
    req: &VnReq,
    plan: &Replan,
    paths: &[Vec<String>],
    taken: &mut Vec<Taken>,
) -> Result<Placement, CoreError> {
    let vn_id = &old.vn_id;
    let nodes = renumber_nodes(target, old, plan)?;
    let old_links = old.placement.links.iter().map(|l| &l.link_id);
    let mut new_links = free_indices(vn_id, old_links, 'l', MAX_LINKS);
    let mut names = InterfaceNames::new(req);
    for (l, o) in req.links.iter().zip(&plan.link_origin) {
        if let Some(o) = o {
            let pl = &old.placement.links[o.index];
            for (side, node) in [l.a, l.b].into_iter().enumerate() {
                names.reserve(node, &pl.ifnames[side ^ usize::from(o.swapped)]);
            }
        }
    }
    let mut extra = old
        .placement
        .links
        .iter()
        .flat_map(|l| &l.segment_ids)
        .filter_map(|s| s.strip_prefix(&format!("{vn_id}r")))
        .filter_map(|s| u64::from_str_radix(s, 36).ok())
        .max()
        .unwrap_or(0);
    let layout = Layout {
        req,
        mapping: &plan.mapping,
        paths,
    };
    let mut links = Vec::with_capacity(req.links.len());
    for (i, l) in req.links.iter().enumerate() {
        let prev = plan.link_origin[i].map(|o| (&old.placement.links[o.index], o.swapped));
        let index = match prev {
            Some((pl, _)) => id_index(vn_id, &pl.link_id, 'l').unwrap_or(i),
            None => new_links.next().ok_or_else(|| {
                CoreError::NoRoom(format!("VN {} has no link id left", old.name()))
            })?,
        };
        let carrier = placement::needs_carrier(req, l).then(|| {
            match prev.and_then(|(pl, sw)| pl.carrier.map(|c| (c, sw))) {
                Some(([a, b], true)) => [b, a],
                Some((c, false)) => c,
                None => nest::carrier_pair(index),
            }
        });
        let ids = match prev {
            Some((pl, sw)) => {
                let side = |s: usize| s ^ usize::from(sw);
                let name = |s: usize| {
                    l.interfaces[s]
                        .clone()
                        .unwrap_or_else(|| pl.ifnames[side(s)].clone())
                };
                LinkIds {
                    link_id: link_id(vn_id, index),
                    ifnames: [name(0), name(1)],
                    macs: [pl.macs[side(0)], pl.macs[side(1)]],
                    carrier,
                    reuse: pl
                        .hops
                        .iter()
                        .filter(|h| h.encap == l.encap && h.udp_port == target.port)
                        .map(|h| (h.link.clone(), (h.vni, h.vlan_id)))
                        .collect(),
                }
            }
            None => LinkIds {
                link_id: link_id(vn_id, index),
                ifnames: [names.next(l, 0), names.next(l, 1)],
                macs: [
                    placement::take_mac(alloc, taken)?,
                    placement::take_mac(alloc, taken)?,
                ],
                carrier,
                reuse: BTreeMap::new(),
            },
        };
        let path = &paths[i];
        let segments = |hosts: &[String]| match prev {
            Some((pl, false)) if pl.path == *path => Ok(pl.segment_ids.clone()),
            _ => placement::segment_ids(vn_id, index, hosts, &mut extra),
        };
        let link = placement::place_link(alloc, target, &layout, i, ids, taken, segments)?;
        links.push(link);
    }
    Ok(Placement {
        nodes,
        links,
        algorithm: plan.mapping.algorithm.clone(),
        revenue: plan.mapping.revenue,
        cost: plan.mapping.cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::EmbeddingPlanner;
    use crate::fixtures::{link, vn_req};
    use crate::index::IndexConfig;
    use crate::model::NodeReq;
    use crate::replan::{Avoid, replan};
    use crate::substrate::{LinkSource, Registry};

    fn index(hosts: u8) -> Index {
        let reg = Registry::new(
            LinkSource::FullMesh {
                bandwidth_mbps: 100,
            },
            &[],
        );
        let mut ix = Index::new(IndexConfig::default(), reg);
        for n in 1..=hosts {
            ix.attach(crate::fixtures::host(&format!("h{n}"), n, 1500));
        }
        ix
    }

    fn node(name: &str, cpu: u64) -> NodeReq {
        crate::fixtures::node(name, cpu, 10)
    }

    /// A chain a-b-c with links of 10 Mbit/s.
    fn chain() -> VnReq {
        let nodes = vec![node("a", 10), node("b", 10), node("c", 10)];
        vn_req("x", nodes, vec![link(0, 1, 10), link(1, 2, 10)])
    }

    fn create(ix: &mut Index, req: VnReq) -> VnRecord {
        let frame = ix.frame(&req).unwrap();
        let m =
            crate::embed::Planner::plan(&EmbeddingPlanner, &ix.view(&frame), &frame.req, "lace")
                .unwrap();
        let (rec, _) = ix.accept(req, vec![], &m, 0).unwrap();
        for h in rec.placement.hosts() {
            let g = ix.generation(&h);
            let ready = crate::record::SliceReport {
                vn_id: rec.vn_id.clone(),
                phase: HostPhase::Ready,
            };
            ix.observe(&h, g, true, &[ready]);
        }
        assert_eq!(ix.record(&rec.vn_id).unwrap().status, VnStatus::Ready);
        ix.record(&rec.vn_id).unwrap().clone()
    }

    fn update(ix: &mut Index, req: VnReq, avoid: &Avoid) -> Result<(VnRecord, Change), CoreError> {
        let rec = ix.find(&req.provider, &req.name).unwrap().clone();
        let frame = ix.frame_except(&req, Some(&rec.vn_id))?;
        let view = ix.replan_view(&frame, &rec.vn_id);
        let plan = replan(&rec, &frame.req, &view, avoid, &EmbeddingPlanner, "lace")
            .map_err(CoreError::Exhausted)?;
        let c = ReplanCommit {
            req,
            spec_pb: vec![],
            base_generation: rec.generation,
            cause: "test".into(),
        };
        ix.commit_replan(&rec.vn_id, c, &plan)
    }

    #[test]
    fn an_update_keeps_what_stays_and_bumps_only_changed_hosts() {
        let mut ix = index(5);
        let before = create(&mut ix, chain());
        let gens: Vec<u64> = (1..=5).map(|n| ix.generation(&format!("h{n}"))).collect();
        // Add node d with links c-d and a-d, remove a-b, double b-c.
        let mut req = chain();
        req.nodes.push(node("d", 10));
        req.links = vec![link(1, 2, 20), link(2, 3, 10), link(0, 3, 10)];
        let (rec, change) = update(&mut ix, req.clone(), &Avoid::default()).unwrap();
        assert_eq!(rec.generation, 2);
        assert_eq!(rec.status, VnStatus::Updating);
        for i in 0..3 {
            assert_eq!(
                rec.placement.nodes[i], before.placement.nodes[i],
                "node {i}"
            );
        }
        assert_eq!(rec.placement.nodes[3].node_id, format!("{}n3", rec.vn_id));
        // b-c kept its id, path, VNIs and MACs, only its bandwidth changed.
        let (old_bc, new_bc) = (&before.placement.links[1], &rec.placement.links[0]);
        assert_eq!(old_bc, new_bc);
        // New links have ids and MACs no current link had; a-b's are released.
        assert_eq!(rec.placement.links[1].link_id, format!("{}l2", rec.vn_id));
        let held_now = held(&rec.placement);
        for id in held(&before.placement).difference(&held_now) {
            let free = match id {
                Held::Mac(v) => !ix.allocators().mac.held().contains(v),
                Held::Vni(v) => !ix.allocators().vni.held().contains(v),
                Held::Vlan(..) => unreachable!(),
            };
            assert!(free, "{id:?} released");
        }
        // Hosts of a, b, c: their slices changed (links came or went); a host no part of the
        // VN touches keeps its generation.
        let touched: BTreeSet<String> = change.generations.keys().cloned().collect();
        let all: BTreeSet<String> = before
            .placement
            .hosts()
            .union(&rec.placement.hosts())
            .cloned()
            .collect();
        assert_eq!(touched, all);
        for n in 1..=5 {
            let h = format!("h{n}");
            if !all.contains(&h) {
                assert_eq!(ix.generation(&h), gens[n - 1]);
            }
        }
        assert_eq!(ix.usage().host_cpu(&rec.placement.nodes[3].host), 10);
        // Applying the same spec again changes nothing.
        let (same, change) = update(&mut ix, req, &Avoid::default()).unwrap();
        assert_eq!(same.generation, 2);
        assert!(change.is_empty());
    }

    #[test]
    fn a_refused_update_leaves_everything_as_it_was() {
        let mut ix = index(3);
        create(&mut ix, chain());
        let state = |ix: &Index| {
            (
                ix.usage().clone(),
                ix.allocators().clone(),
                ix.records().cloned().collect::<Vec<_>>(),
                (1..=3)
                    .map(|n| ix.generation(&format!("h{n}")))
                    .collect::<Vec<_>>(),
            )
        };
        let snapshot = state(&ix);
        let mut req = chain();
        req.nodes[1].cpu = 1000;
        let e = update(&mut ix, req, &Avoid::default()).unwrap_err();
        assert!(matches!(e, CoreError::Exhausted(_)), "{e}");
        let mut req = chain();
        req.links[0].bandwidth_mbps = 1000;
        update(&mut ix, req, &Avoid::default()).unwrap_err();
        assert_eq!(state(&ix), snapshot);
    }

    #[test]
    fn a_stale_generation_is_a_conflict() {
        let mut ix = index(4);
        let rec = create(&mut ix, chain());
        let mut req = chain();
        req.links[0].bandwidth_mbps = 20;
        let frame = ix.frame_except(&req, Some(&rec.vn_id)).unwrap();
        let view = ix.replan_view(&frame, &rec.vn_id);
        let plan = replan(
            &rec,
            &frame.req,
            &view,
            &Avoid::default(),
            &EmbeddingPlanner,
            "lace",
        )
        .unwrap();
        let c = ReplanCommit {
            req: req.clone(),
            spec_pb: vec![],
            base_generation: 1,
            cause: "first".into(),
        };
        ix.commit_replan(&rec.vn_id, c.clone(), &plan).unwrap();
        let e = ix.commit_replan(&rec.vn_id, c, &plan).unwrap_err();
        assert!(matches!(e, CoreError::Conflict(_)), "{e}");
        assert!(e.to_string().contains("read it again"), "{e}");
    }

    #[test]
    fn avoiding_a_host_moves_only_its_node_and_links() {
        let mut ix = index(5);
        let before = create(&mut ix, chain());
        let gone = before.placement.nodes[2].host.clone();
        let avoid = Avoid {
            hosts: [gone.clone()].into(),
            links: BTreeSet::new(),
        };
        let (rec, _) = update(&mut ix, chain(), &avoid).unwrap();
        assert_eq!(rec.placement.nodes[..2], before.placement.nodes[..2]);
        assert_ne!(rec.placement.nodes[2].host, gone);
        assert_eq!(
            rec.placement.nodes[2].node_id,
            before.placement.nodes[2].node_id
        );
        assert_eq!(rec.placement.links[0], before.placement.links[0]);
        assert!(!rec.placement.hosts().contains(&gone));
        assert_eq!(rec.placement.links[1].macs, before.placement.links[1].macs);
    }

    #[test]
    fn reverting_restores_usage_identifiers_and_slices() {
        let mut ix = index(5);
        let before = create(&mut ix, chain());
        let (usage, alloc) = (ix.usage().clone(), ix.allocators().clone());
        let desired: Vec<_> = (1..=5).map(|n| ix.desired(&format!("h{n}")).vns).collect();
        let mut req = chain();
        req.nodes.push(node("d", 10));
        req.links.push(link(2, 3, 10));
        update(&mut ix, req, &Avoid::default()).unwrap();
        ix.revert_replan(before.clone());
        assert_eq!(ix.usage(), &usage);
        assert_eq!(ix.allocators().mac.held(), alloc.mac.held());
        assert_eq!(ix.allocators().vni.held(), alloc.vni.held());
        assert_eq!(ix.record(&before.vn_id), Some(&before));
        let now: Vec<_> = (1..=5).map(|n| ix.desired(&format!("h{n}")).vns).collect();
        assert_eq!(now, desired);
    }
}
