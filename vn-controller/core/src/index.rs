//! The in-memory index: every VN record, the substrate registry, exact usage, identifier
//! allocators and per-host generations. Pure and synchronous: the runtime holds it under one
//! lock (which serialises commits), persists the [`Change`] each operation returns, then
//! publishes desired states and events.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::alloc::{AllocError, Allocators, Cursors};
use crate::desired::{self, DesiredSnapshot, Slice};
use crate::frame::{self, Ancestor, Frame};
use crate::model::{ProviderId, VnReq};
use crate::nest::{self, Nests};
use crate::placement::{self, Target};
use crate::record::{HostPhase, HostProgress, Nesting, Placement, SliceReport, VnRecord, VnStatus};
use crate::substrate::{HostInfo, Registry};
use crate::usage::{CheckMode, Mapping, Usage};

pub use crate::error::CoreError;

#[derive(Clone, Debug)]
pub struct IndexConfig {
    /// UDP port of VXLAN hops of VNs on the substrate (depth 0).
    pub vxlan_port: u16,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig { vxlan_port: 4789 }
    }
}

/// What happened to a VN, for watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    Accepted,
    HostProgress,
    Ready,
    Degraded,
    Failed,
    Deleted,
    /// The spec or the placement changed (an update, a move off a failed host).
    Updated,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub provider: ProviderId,
    pub name: String,
    pub kind: EventKind,
    /// `None`: deleted.
    pub status: Option<VnStatus>,
    pub host: String,
    pub message: String,
}

impl Event {
    /// An event of `kind` about `rec`, with its current status (none once deleted).
    pub fn of(rec: &VnRecord, kind: EventKind, host: &str, message: impl Into<String>) -> Event {
        Event {
            provider: rec.provider().clone(),
            name: rec.name().to_string(),
            status: (kind != EventKind::Deleted).then_some(rec.status),
            kind,
            host: host.to_string(),
            message: message.into(),
        }
    }
}

/// The effects of one operation: what to persist (in one transaction) and what to publish.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub upserts: BTreeMap<String, VnRecord>,
    pub removed: BTreeSet<String>,
    pub generations: BTreeMap<String, u64>,
    pub cursors: Option<Cursors>,
    pub events: Vec<Event>,
    /// Hosts whose desired state changed.
    pub hosts_changed: BTreeSet<String>,
    /// A VN changed state: persist with an fsync of its own (host progress alone need not).
    pub status_changed: bool,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.removed.is_empty()
            && self.generations.is_empty()
            && self.cursors.is_none()
            && self.events.is_empty()
    }

    fn merge(&mut self, other: Change) {
        for (k, v) in other.upserts {
            self.removed.remove(&k);
            self.upserts.insert(k, v);
        }
        for k in other.removed {
            self.upserts.remove(&k);
            self.removed.insert(k);
        }
        self.generations.extend(other.generations);
        if other.cursors.is_some() {
            self.cursors = other.cursors;
        }
        self.events.extend(other.events);
        self.hosts_changed.extend(other.hosts_changed);
        self.status_changed |= other.status_changed;
    }
}

#[derive(Clone, Debug)]
pub struct Index {
    pub(crate) cfg: IndexConfig,
    pub registry: Registry,
    pub(crate) alloc: Allocators,
    pub(crate) usage: Usage,
    pub(crate) vns: BTreeMap<String, VnRecord>,
    by_name: BTreeMap<(ProviderId, String), String>,
    pub(crate) host_vns: BTreeMap<String, BTreeSet<String>>,
    pub(crate) generations: BTreeMap<String, u64>,
    observed: BTreeMap<String, u64>,
    /// (host, vn_id) -> the VN's slice on that host, built once at accept/restore.
    pub(crate) slices: HashMap<(String, String), Arc<Slice>>,
    /// Recursion: what children use of their parents, and the tree.
    pub(crate) nests: Nests,
}

pub(crate) fn hop_links(rec: &VnRecord) -> Vec<Vec<String>> {
    rec.placement
        .links
        .iter()
        .map(|l| l.hops.iter().map(|h| h.link.clone()).collect())
        .collect()
}

/// Where each node sits in the frame it was embedded in: the host, or for a child the parent node.
pub(crate) fn node_hosts(rec: &VnRecord) -> Vec<String> {
    rec.placement
        .nodes
        .iter()
        .map(|n| n.parent_node.clone().unwrap_or_else(|| n.host.clone()))
        .collect()
}

/// The event of an accepted VN: where it was embedded (a child: on its parent's nodes, named as
/// such) and by which algorithm.
fn accepted_event(rec: &VnRecord) -> Event {
    let (inside, on): (String, BTreeSet<String>) = match &rec.nesting {
        None => (String::new(), rec.placement.hosts()),
        Some(n) => (
            format!(" in {}", n.parent_label),
            node_hosts(rec).into_iter().collect(),
        ),
    };
    let on: Vec<String> = on.into_iter().collect();
    Event {
        provider: rec.provider().clone(),
        name: rec.name().to_string(),
        kind: EventKind::Accepted,
        status: Some(VnStatus::Provisioning),
        host: String::new(),
        message: format!(
            "embedded{inside} on {} by {}",
            on.join(","),
            rec.placement.algorithm
        ),
    }
}

impl Index {
    pub fn new(cfg: IndexConfig, registry: Registry) -> Self {
        Index {
            cfg,
            registry,
            alloc: Allocators::default(),
            usage: Usage::default(),
            vns: BTreeMap::new(),
            by_name: BTreeMap::new(),
            host_vns: BTreeMap::new(),
            generations: BTreeMap::new(),
            observed: BTreeMap::new(),
            slices: HashMap::new(),
            nests: Nests::default(),
        }
    }

    /// Recursion state: children's usage of their parents, and the tree.
    pub fn nests(&self) -> &Nests {
        &self.nests
    }

    /// Rebuilds the index from the store: every held VN is committed again against the
    /// substrate (it must still fit) and its identifiers reserved again (no collision allowed).
    pub fn restore(
        cfg: IndexConfig,
        mut registry: Registry,
        hosts: Vec<HostInfo>,
        cursors: &Cursors,
        generations: BTreeMap<String, u64>,
        records: Vec<VnRecord>,
    ) -> Result<Self, CoreError> {
        for h in hosts {
            registry.upsert_host(h);
        }
        let mut ix = Index::new(cfg, registry);
        ix.alloc = Allocators::from_cursors(cursors);
        ix.generations = generations;
        // Parents before their children: a child is checked against its parent's topology.
        let mut records = records;
        records.sort_by_key(VnRecord::depth);
        for rec in records {
            let key = (rec.provider().clone(), rec.name().to_string());
            if ix.by_name.insert(key, rec.vn_id.clone()).is_some() {
                return Err(CoreError::Restore(format!(
                    "VN {} is stored twice",
                    rec.label()
                )));
            }
            let parent = match rec.parent_id() {
                Some(p) => {
                    let held = ix.vns.get(p).filter(|r| r.status.holds_resources());
                    match held {
                        Some(prec) => {
                            ix.nests.add_child(p, &rec.vn_id);
                            Some(prec.clone())
                        }
                        None if rec.status.holds_resources() => {
                            return Err(CoreError::Restore(format!(
                                "VN {} is a child of {p}, which is not held",
                                rec.label()
                            )));
                        }
                        None => None,
                    }
                }
                None => None,
            };
            if rec.status.holds_resources() {
                let mapping = Mapping {
                    node_hosts: node_hosts(&rec),
                    link_paths: hop_links(&rec),
                    algorithm: rec.placement.algorithm.clone(),
                    revenue: rec.placement.revenue,
                    cost: rec.placement.cost,
                };
                let (reg, usage) = match &parent {
                    Some(p) => (
                        Cow::Owned(nest::virtual_substrate(p, &ix.registry).0),
                        ix.nests.usage_mut(&p.vn_id),
                    ),
                    None => (Cow::Borrowed(&ix.registry), &mut ix.usage),
                };
                let (_, warnings) = usage
                    .check(&reg, &rec.req, &mapping, CheckMode::Restore)
                    .map_err(|e| {
                        CoreError::Restore(format!("VN {} no longer fits: {e}", rec.label()))
                    })?;
                for w in warnings {
                    tracing::warn!(vn = %rec.label(), "restored VN exceeds its substrate: {w}");
                }
                usage.add(&rec.req, &mapping.node_hosts, &mapping.link_paths);
                ix.reserve_ids(&rec)
                    .map_err(|e| CoreError::Restore(format!("VN {}: {e}", rec.label())))?;
                for h in rec.placement.hosts() {
                    ix.host_vns.entry(h).or_default().insert(rec.vn_id.clone());
                }
                ix.cache_slices(&rec);
            }
            ix.vns.insert(rec.vn_id.clone(), rec);
        }
        Ok(ix)
    }

    pub(crate) fn reserve_ids(&mut self, rec: &VnRecord) -> Result<(), AllocError> {
        for l in &rec.placement.links {
            for m in l.macs {
                self.alloc.mac.reserve(m)?;
            }
            for h in &l.hops {
                if let Some(v) = h.vni {
                    self.alloc.vni.reserve(u64::from(v))?;
                }
                if let Some(v) = h.vlan_id {
                    self.alloc.vlan_pool(&h.segment).reserve(u64::from(v))?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn release_ids(&mut self, placement: &Placement) {
        for l in &placement.links {
            for m in l.macs {
                self.alloc.mac.release(m);
            }
            for h in &l.hops {
                if let Some(v) = h.vni {
                    self.alloc.vni.release(u64::from(v));
                }
                if let Some(v) = h.vlan_id {
                    self.alloc.vlan_pool(&h.segment).release(u64::from(v));
                }
            }
        }
    }

    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    pub fn allocators(&self) -> &Allocators {
        &self.alloc
    }

    pub fn generation(&self, host: &str) -> u64 {
        self.generations.get(host).copied().unwrap_or(0)
    }

    /// The newest generation `host`'s agent reported applied (0: none since the controller
    /// started).
    pub fn observed_generation(&self, host: &str) -> u64 {
        self.observed.get(host).copied().unwrap_or(0)
    }

    pub fn records(&self) -> impl Iterator<Item = &VnRecord> {
        self.vns.values()
    }

    pub fn record(&self, vn_id: &str) -> Option<&VnRecord> {
        self.vns.get(vn_id)
    }

    pub fn find(&self, provider: &ProviderId, name: &str) -> Option<&VnRecord> {
        self.by_name
            .get(&(provider.clone(), name.to_string()))
            .and_then(|id| self.vns.get(id))
    }

    pub fn list(&self, provider: &ProviderId) -> Vec<&VnRecord> {
        self.by_name
            .range((provider.clone(), String::new())..)
            .take_while(|((p, _), _)| p == provider)
            .filter_map(|(_, id)| self.vns.get(id))
            .collect()
    }

    pub fn check_name_free(&self, provider: &ProviderId, name: &str) -> Result<(), CoreError> {
        if self.find(provider, name).is_some() {
            return Err(CoreError::AlreadyExists {
                provider: provider.0.clone(),
                name: name.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) fn bump(&mut self, host: &str, change: &mut Change) -> u64 {
        let g = self.generations.entry(host.to_string()).or_insert(0);
        *g += 1;
        change.generations.insert(host.to_string(), *g);
        change.hosts_changed.insert(host.to_string());
        *g
    }

    /// Raises `host`'s generation to at least `at_least` (same content, newer number).
    pub fn raise_generation(&mut self, host: &str, at_least: u64) -> Change {
        let mut change = Change::default();
        let g = self.generations.entry(host.to_string()).or_insert(0);
        if *g < at_least {
            *g = at_least;
            change.generations.insert(host.to_string(), at_least);
            change.hosts_changed.insert(host.to_string());
        }
        change
    }

    pub(crate) fn cache_slices(&mut self, rec: &VnRecord) {
        for h in rec.placement.hosts() {
            if let Some(s) = desired::slice(rec, &h) {
                self.slices.insert((h, rec.vn_id.clone()), Arc::new(s));
            }
        }
    }

    /// The desired state of `host`.
    pub fn desired(&self, host: &str) -> DesiredSnapshot {
        let vns = self
            .host_vns
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|id| self.slices.get(&(host.to_string(), id.clone())).cloned())
            .collect();
        DesiredSnapshot {
            generation: self.generation(host),
            vns,
        }
    }

    /// The frame of `req`: the substrate, or (a child) its parent's virtual topology after the
    /// checks against the parent ([`frame`]). The attempt embeds in it; [`Index::accept`]
    /// computes it again, because the parent may have changed in between.
    pub fn frame(&self, req: &VnReq) -> Result<Frame, CoreError> {
        self.frame_except(req, None)
    }

    /// [`Index::frame`] of a request that replaces the held VN `replaces`: its own nodes and
    /// cpu do not count twice against its ancestors' quotas.
    pub fn frame_except(&self, req: &VnReq, replaces: Option<&str>) -> Result<Frame, CoreError> {
        let Some(pref) = &req.parent else {
            return frame::top_level(req, &self.registry, self.cfg.vxlan_port);
        };
        let parent = self
            .find(&pref.provider, &pref.name)
            .ok_or_else(|| CoreError::NotFound {
                name: format!("{pref} (spec.parent)"),
            })?;
        let mut ancestors = Vec::new();
        let mut anc = Some(parent);
        let own = replaces
            .and_then(|id| self.record(id))
            .filter(|r| r.status.holds_resources())
            .map_or((0, 0), |r| (r.req.nodes.len() as u64, r.req.total_cpu()));
        while let Some(rec) = anc {
            let (nodes, cpu) = self.subtree_totals(&rec.vn_id);
            let (nodes, cpu) = (nodes.saturating_sub(own.0), cpu.saturating_sub(own.1));
            ancestors.push(Ancestor { rec, nodes, cpu });
            anc = rec.parent_id().and_then(|p| self.record(p));
        }
        frame::child(req, &ancestors, &self.registry, self.cfg.vxlan_port)
    }

    /// Nodes and total cpu of `vn_id` and all its descendants that hold resources.
    pub fn subtree_totals(&self, vn_id: &str) -> (u64, u64) {
        // Saturating: a total beyond u64 exceeds every quota instead of wrapping below it.
        let mut nodes: u64 = 0;
        let mut cpu: u64 = 0;
        let mut stack = vec![vn_id.to_string()];
        while let Some(id) = stack.pop() {
            if let Some(r) = self.record(&id)
                && r.status.holds_resources()
            {
                nodes = nodes.saturating_add(r.req.nodes.len() as u64);
                cpu = cpu.saturating_add(r.req.total_cpu());
            }
            stack.extend(self.nests.children(&id).cloned());
        }
        (nodes, cpu)
    }

    /// Commits an embedded request: re-checks it against its frame, allocates identifiers and
    /// records the VN in state provisioning. Nothing changes on error.
    pub fn accept(
        &mut self,
        req: VnReq,
        spec_pb: Vec<u8>,
        mapping: &Mapping,
        now_ms: u64,
    ) -> Result<(VnRecord, Change), CoreError> {
        self.check_name_free(&req.provider, &req.name)?;
        let Frame { req, port, parent } = self.frame(&req)?;
        let (target, usage) = match &parent {
            Some(p) => (
                Target {
                    reg: &p.registry,
                    port,
                    parent_nodes: Some(&p.nodes),
                },
                self.nests.usage(&p.id),
            ),
            None => (
                Target {
                    reg: &self.registry,
                    port,
                    parent_nodes: None,
                },
                &self.usage,
            ),
        };
        let (paths, _) = usage
            .check(target.reg, &req, mapping, CheckMode::Commit)
            .map_err(CoreError::Exhausted)?;
        let cursors = self.alloc.cursors();
        let mut taken = Vec::new();
        let allocated =
            placement::allocate(&mut self.alloc, &target, &req, mapping, &paths, &mut taken);
        let (vn_id, placement) = match allocated {
            Ok(p) => p,
            Err(e) => {
                for t in taken {
                    t.release(&mut self.alloc);
                }
                self.alloc.rewind(&cursors);
                return Err(e);
            }
        };
        let mut change = Change::default();
        let mut hosts = BTreeMap::new();
        for h in placement.hosts() {
            let g = self.bump(&h, &mut change);
            hosts.insert(
                h.clone(),
                HostProgress {
                    since_generation: g,
                    phase: HostPhase::Pending,
                },
            );
            self.host_vns.entry(h).or_default().insert(vn_id.clone());
        }
        let nesting = match parent {
            Some(p) => {
                self.nests
                    .usage_mut(&p.id)
                    .add(&req, &mapping.node_hosts, &mapping.link_paths);
                self.nests.add_child(&p.id, &vn_id);
                Some(Nesting {
                    parent: p.id,
                    parent_label: p.label,
                    depth: p.depth,
                })
            }
            None => {
                self.usage
                    .add(&req, &mapping.node_hosts, &mapping.link_paths);
                None
            }
        };
        let rec = VnRecord {
            vn_id: vn_id.clone(),
            req,
            spec_pb,
            status: VnStatus::Provisioning,
            reason: String::new(),
            created_unix_ms: now_ms,
            placement,
            hosts,
            nesting,
            recoveries: Vec::new(),
            generation: 1,
        };
        self.by_name.insert(
            (rec.provider().clone(), rec.name().to_string()),
            vn_id.clone(),
        );
        change.events.push(accepted_event(&rec));
        change.upserts.insert(vn_id.clone(), rec.clone());
        change.cursors = Some(self.alloc.cursors());
        self.cache_slices(&rec);
        self.vns.insert(vn_id, rec.clone());
        Ok((rec, change))
    }

    /// Undoes [`Index::accept`] when the change could not be persisted.
    pub fn forget(&mut self, vn_id: &str) {
        self.remove_record(vn_id);
    }

    /// Removes a record from every index (name, parent's children) and releases what it holds.
    fn remove_record(&mut self, vn_id: &str) -> Option<VnRecord> {
        let rec = self.vns.remove(vn_id)?;
        self.by_name
            .remove(&(rec.provider().clone(), rec.name().to_string()));
        if let Some(p) = rec.parent_id() {
            self.nests.remove_child(p, vn_id);
        }
        if rec.status.holds_resources() {
            self.release(&rec);
        }
        Some(rec)
    }

    fn release(&mut self, rec: &VnRecord) {
        match rec.parent_id() {
            Some(p) => {
                self.nests
                    .usage_mut(p)
                    .remove(&rec.req, &node_hosts(rec), &hop_links(rec));
                self.nests.tidy(p);
            }
            None => self
                .usage
                .remove(&rec.req, &node_hosts(rec), &hop_links(rec)),
        }
        self.release_ids(&rec.placement);
        for h in rec.placement.hosts() {
            self.slices.remove(&(h.clone(), rec.vn_id.clone()));
            if let Some(s) = self.host_vns.get_mut(&h) {
                s.remove(&rec.vn_id);
                if s.is_empty() {
                    self.host_vns.remove(&h);
                }
            }
        }
    }

    /// Rolls a VN back: releases everything it holds, removes it from every host's desired state
    /// and keeps the record as failed with `reason`.
    pub fn fail(&mut self, vn_id: &str, reason: &str) -> Change {
        let mut change = Change::default();
        let Some(rec) = self.vns.get(vn_id).cloned() else {
            return change;
        };
        if !rec.status.holds_resources() {
            return change;
        }
        self.release(&rec);
        for h in rec.placement.hosts() {
            self.bump(&h, &mut change);
        }
        let rec = self.vns.get_mut(vn_id).expect("present");
        rec.status = VnStatus::Failed;
        rec.reason = reason.to_string();
        change.status_changed = true;
        change
            .events
            .push(Event::of(rec, EventKind::Failed, "", reason.to_string()));
        change.upserts.insert(vn_id.to_string(), rec.clone());
        change
    }

    /// Deletes a VN of `provider`: releases what it holds and forgets the record. A VN with
    /// children is refused unless `cascade`, which deletes its descendants first (deepest first),
    /// all in one change. Returns what was deleted, in that order: the caller's own VNs by name,
    /// other providers' (children in a shared VN) as `provider/name`.
    pub fn delete(
        &mut self,
        provider: &ProviderId,
        name: &str,
        cascade: bool,
    ) -> Result<(Vec<String>, Change), CoreError> {
        let vn_id = self
            .by_name
            .get(&(provider.clone(), name.to_string()))
            .cloned()
            .ok_or_else(|| CoreError::NotFound {
                name: name.to_string(),
            })?;
        let order = self.nests.post_order(&vn_id);
        if order.len() > 1 && !cascade {
            let children = self.children_of(&vn_id, provider);
            return Err(CoreError::Precondition(format!(
                "VN {name} has children ({}): delete them first, or delete with cascade",
                children.join(", ")
            )));
        }
        let mut change = Change::default();
        let mut deleted = Vec::with_capacity(order.len());
        for id in order {
            let rec = self.remove_record(&id).expect("indexed");
            if rec.status.holds_resources() {
                for h in rec.placement.hosts() {
                    self.bump(&h, &mut change);
                }
            }
            change.removed.insert(id);
            change
                .events
                .push(Event::of(&rec, EventKind::Deleted, "", String::new()));
            deleted.push(rec.label_for(provider));
        }
        Ok((deleted, change))
    }

    /// The children of a VN as `provider` sees them (its own by name, others as
    /// `provider/name`).
    pub fn children_of(&self, vn_id: &str, provider: &ProviderId) -> Vec<String> {
        self.nests
            .children(vn_id)
            .filter_map(|c| self.vns.get(c))
            .map(|r| r.label_for(provider))
            .collect()
    }

    fn progress_event(rec: &VnRecord, host: &str, phase: &HostPhase) -> Event {
        Event::of(rec, EventKind::HostProgress, host, phase.describe())
    }

    /// Marks READY when every host reported its slice ready (closing an open recovery).
    /// `now_ms` closes an open recovery (none: a re-embedding's own commit, whose recovery is
    /// noted after it).
    pub(crate) fn settle(rec: &mut VnRecord, change: &mut Change, now_ms: Option<u64>) {
        let all_ready = rec.hosts.values().all(|p| p.phase == HostPhase::Ready);
        if all_ready
            && matches!(
                rec.status,
                VnStatus::Provisioning | VnStatus::Degraded | VnStatus::Updating
            )
        {
            rec.status = VnStatus::Ready;
            rec.reason.clear();
            change.status_changed = true;
            let message = now_ms.map(|t| rec.finish_recovery(t)).unwrap_or_default();
            change
                .events
                .push(Event::of(rec, EventKind::Ready, "", message));
        }
    }

    /// Makes `rec` DEGRADED for `reason` when its status is one of `from`, noting the new record
    /// in `change`; says whether it did (the caller tells of it by an event).
    pub(crate) fn degrade(
        rec: &mut VnRecord,
        from: &[VnStatus],
        reason: &str,
        change: &mut Change,
    ) -> bool {
        if !from.contains(&rec.status) {
            return false;
        }
        rec.status = VnStatus::Degraded;
        rec.reason = reason.to_string();
        change.status_changed = true;
        change.upserts.insert(rec.vn_id.clone(), rec.clone());
        true
    }

    /// A host of `rec` failed or went away: a READY or UPDATING VN becomes DEGRADED.
    fn degrade_for_host(rec: &mut VnRecord, reason: String, host: &str, change: &mut Change) {
        if Self::degrade(rec, &[VnStatus::Ready, VnStatus::Updating], &reason, change) {
            change
                .events
                .push(Event::of(rec, EventKind::Degraded, host, reason));
        }
    }

    /// [`Index::observe_at`] at time 0 (tests).
    #[cfg(test)]
    pub fn observe(
        &mut self,
        host: &str,
        generation: u64,
        applied: bool,
        reports: &[SliceReport],
    ) -> Change {
        self.observe_at(host, generation, applied, reports, 0)
    }

    /// Applies an agent's report about `generation` of `host`'s desired state, received at
    /// `now_ms` (the end of a recovery is timed by it).
    pub fn observe_at(
        &mut self,
        host: &str,
        generation: u64,
        applied: bool,
        reports: &[SliceReport],
        now_ms: u64,
    ) -> Change {
        let mut change = Change::default();
        // The observed generation is the newest one applied: the notice that an agent started
        // on a generation does not say that what it removes is gone.
        if applied {
            let seen = self.observed.entry(host.to_string()).or_insert(0);
            *seen = (*seen).max(generation);
        }
        let mut failures = Vec::new();
        let on_host = self.host_vns.get(host).cloned().unwrap_or_default();
        for r in reports {
            if !on_host.contains(&r.vn_id) {
                continue;
            }
            let rec = self.vns.get_mut(&r.vn_id).expect("indexed");
            let Some(progress) = rec.hosts.get_mut(host) else {
                continue;
            };
            if generation < progress.since_generation {
                continue;
            }
            let phase = r.phase.clone();
            if progress.phase == phase {
                continue;
            }
            // The agent's notice that it started on a newer generation (every slice it holds
            // PROVISIONING) does not unsettle a ready slice that this generation left as it was:
            // only the outcome of applying it can (else every VN on the host flips PROVISIONING
            // and READY again, two writes and two events each, whenever any other VN changes).
            if !applied
                && generation > progress.since_generation
                && progress.phase == HostPhase::Ready
                && phase == HostPhase::Pending
            {
                continue;
            }
            progress.phase = phase.clone();
            change.events.push(Self::progress_event(rec, host, &phase));
            match phase {
                HostPhase::Failed(msg) if rec.status == VnStatus::Provisioning => {
                    failures.push((r.vn_id.clone(), format!("host {host}: {msg}")));
                }
                HostPhase::Failed(msg) => {
                    Self::degrade_for_host(rec, format!("host {host}: {msg}"), host, &mut change)
                }
                _ => Self::settle(rec, &mut change, Some(now_ms)),
            }
            change.upserts.insert(rec.vn_id.clone(), rec.clone());
        }
        for (vn_id, reason) in failures {
            let c = self.fail(&vn_id, &reason);
            change.merge(c);
        }
        change
    }

    /// Registers or refreshes a host and marks it attached.
    pub fn attach(&mut self, info: HostInfo) -> bool {
        let id = info.id.clone();
        let new = self.registry.upsert_host(info);
        self.registry.set_connected(&id, true);
        new
    }

    /// An agent went away: its VNs become degraded (not deleted).
    pub fn detach(&mut self, host: &str) -> Change {
        self.registry.set_connected(host, false);
        let mut change = Change::default();
        for vn_id in self.host_vns.get(host).cloned().unwrap_or_default() {
            let rec = self.vns.get_mut(&vn_id).expect("indexed");
            let Some(p) = rec.hosts.get_mut(host) else {
                continue;
            };
            p.phase = HostPhase::Disconnected;
            Self::degrade_for_host(rec, format!("host {host} disconnected"), host, &mut change);
            change.upserts.insert(vn_id, rec.clone());
        }
        change
    }

    /// After a restart: VNs on hosts that did not re-attach within the grace period degrade.
    /// Returns those hosts.
    pub fn degrade_unattached(&mut self) -> (Vec<String>, Change) {
        let mut change = Change::default();
        let missing: Vec<String> = self
            .host_vns
            .keys()
            .filter(|h| !self.registry.is_connected(h))
            .cloned()
            .collect();
        for h in &missing {
            change.merge(self.detach(h));
        }
        (missing, change)
    }

    /// Fails a VN still provisioning, naming the hosts that did not report.
    pub fn provisioning_timeout(&mut self, vn_id: &str, after: std::time::Duration) -> Change {
        let Some(rec) = self.vns.get(vn_id) else {
            return Change::default();
        };
        if rec.status != VnStatus::Provisioning {
            return Change::default();
        }
        let late: Vec<&str> = rec
            .hosts
            .iter()
            .filter(|(_, p)| p.phase != HostPhase::Ready)
            .map(|(h, _)| h.as_str())
            .collect();
        let reason = format!(
            "host(s) {} did not report ready within {:?}",
            late.join(", "),
            after
        );
        self.fail(vn_id, &reason)
    }

    /// VNs currently provisioning (after a restart their timers start again).
    pub fn provisioning(&self) -> Vec<String> {
        self.vns
            .values()
            .filter(|r| r.status == VnStatus::Provisioning)
            .map(|r| r.vn_id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Endpoint;
    use crate::fixtures::{host, link, node, vn_req};
    use crate::model::{Attributes, Encap, LinkReq};
    use crate::substrate::LinkSource;

    fn index() -> Index {
        let mut ix = Index::new(
            IndexConfig::default(),
            Registry::new(
                LinkSource::FullMesh {
                    bandwidth_mbps: 100,
                },
                &[],
            ),
        );
        ix.attach(host("h1", 1, 1500));
        ix.attach(host("h2", 2, 9000));
        ix.attach(host("h3", 3, 1500));
        ix
    }

    fn req(name: &str, encap: Encap, dedicated: bool, provider: &str) -> VnReq {
        let nodes = vec![node("a", 30, 10), node("b", 30, 10)];
        VnReq {
            provider: ProviderId(provider.into()),
            attributes: Attributes {
                mtu: None,
                dedicated_hosts: dedicated,
                ..Attributes::default()
            },
            ..vn_req(
                name,
                nodes,
                vec![LinkReq {
                    encap,
                    ..link(0, 1, 40)
                }],
            )
        }
    }

    /// a on h1, b on h3, via h2.
    fn via_h2() -> Mapping {
        Mapping {
            node_hosts: vec!["h1".into(), "h3".into()],
            link_paths: vec![vec!["h1-h2".into(), "h2-h3".into()]],
            algorithm: "test".into(),
            revenue: 0.0,
            cost: 0.0,
        }
    }

    fn report(vn: &str, phase: HostPhase) -> SliceReport {
        SliceReport {
            vn_id: vn.into(),
            phase,
        }
    }

    #[test]
    fn accept_allocates_and_builds_slices() {
        let mut ix = index();
        let (rec, change) = ix
            .accept(req("x", Encap::Vxlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap();
        assert_eq!(rec.vn_id, "v1");
        assert_eq!(rec.placement.links[0].path, ["h1", "h2", "h3"]);
        // min(1500, 9000) - 50 on both hops
        assert_eq!(rec.placement.links[0].mtu, 1450);
        let vnis: Vec<_> = rec.placement.links[0].hops.iter().map(|h| h.vni).collect();
        assert_eq!(vnis, [Some(1), Some(2)]);
        assert_eq!(change.generations.len(), 3);
        assert_eq!(ix.usage().host_cpu("h1"), 30);
        assert_eq!(ix.usage().link_bandwidth("h2-h3"), 40);
        let d2 = ix.desired("h2");
        assert_eq!(d2.generation, 1);
        let seg = &d2.vns[0].links[0];
        assert!(matches!(
            (&seg.a, &seg.b),
            (Endpoint::Tunnel(_), Endpoint::Tunnel(_))
        ));
        // Capacity is enforced: a second VN of 2 x 30 cpu still fits, a third does not on h1.
        ix.accept(req("y", Encap::Vlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap();
        ix.accept(req("z", Encap::Vlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap_err();
        let e = ix
            .accept(req("x", Encap::Vxlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap_err();
        assert!(matches!(e, CoreError::AlreadyExists { .. }));
    }

    #[test]
    fn reports_of_older_generations_do_not_count_and_failure_rolls_back() {
        let mut ix = index();
        ix.accept(req("x", Encap::Vxlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap();
        let before_alloc = ix.allocators().vni.held().len();
        assert_eq!(before_alloc, 2);
        // generation 0 predates the VN: ignored
        let c = ix.observe("h1", 0, true, &[report("v1", HostPhase::Ready)]);
        assert!(c.events.is_empty());
        for h in ["h1", "h2"] {
            ix.observe(h, 1, true, &[report("v1", HostPhase::Ready)]);
        }
        assert_eq!(ix.record("v1").unwrap().status, VnStatus::Provisioning);
        let c = ix.observe(
            "h3",
            1,
            true,
            &[report("v1", HostPhase::Failed("no vxlan".into()))],
        );
        assert!(c.status_changed);
        let rec = ix.record("v1").unwrap();
        assert_eq!(rec.status, VnStatus::Failed);
        assert_eq!(rec.reason, "host h3: no vxlan");
        assert!(ix.allocators().vni.held().is_empty());
        assert_eq!(ix.usage(), &Usage::default());
        assert!(ix.desired("h2").vns.is_empty());
        assert_eq!(ix.generation("h2"), 2);
    }

    #[test]
    fn another_vns_new_generation_leaves_a_ready_slice_alone() {
        let mut ix = index();
        ix.accept(req("x", Encap::Vxlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap();
        for h in ["h1", "h2", "h3"] {
            ix.observe(h, 1, true, &[report("v1", HostPhase::Ready)]);
        }
        assert_eq!(ix.record("v1").unwrap().status, VnStatus::Ready);
        // A second VN on the same hosts: generation 2, whose notice lists both slices.
        ix.accept(req("y", Encap::Vxlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap();
        let starting = [
            report("v1", HostPhase::Pending),
            report("v2", HostPhase::Pending),
        ];
        let c = ix.observe("h1", 2, false, &starting);
        assert!(
            c.upserts.is_empty() && c.events.is_empty(),
            "{:?}",
            c.upserts.keys()
        );
        assert_eq!(ix.record("v1").unwrap().hosts["h1"].phase, HostPhase::Ready);
        // The outcome of applying it still counts for both.
        let c = ix.observe(
            "h1",
            2,
            true,
            &[
                report("v1", HostPhase::Failed("gone".into())),
                report("v2", HostPhase::Ready),
            ],
        );
        assert!(c.upserts.contains_key("v1"));
        assert_eq!(ix.record("v1").unwrap().status, VnStatus::Degraded);
    }

    #[test]
    fn only_an_applied_report_advances_the_observed_generation() {
        let mut ix = index();
        ix.accept(req("x", Encap::Vxlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap();
        ix.delete(&ProviderId("red".into()), "x", false).unwrap();
        let g = ix.generation("h2");
        // The agent starts on the generation that removes the VN: its teardown is not done.
        ix.observe("h2", g, false, &[]);
        assert_eq!(ix.observed_generation("h2"), 0);
        ix.observe("h2", g, true, &[]);
        assert_eq!(ix.observed_generation("h2"), g);
        // An older applied report does not move it back.
        ix.observe("h2", g - 1, true, &[]);
        assert_eq!(ix.observed_generation("h2"), g);
    }

    #[test]
    fn ready_degraded_ready_and_restore() {
        let mut ix = index();
        let (_, c1) = ix
            .accept(req("x", Encap::Vlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap();
        for h in ["h1", "h2", "h3"] {
            ix.observe(h, 1, true, &[report("v1", HostPhase::Ready)]);
        }
        assert_eq!(ix.record("v1").unwrap().status, VnStatus::Ready);
        ix.detach("h2");
        assert_eq!(ix.record("v1").unwrap().reason, "host h2 disconnected");
        ix.attach(host("h2", 2, 9000));
        ix.observe("h2", 1, true, &[report("v1", HostPhase::Ready)]);
        assert_eq!(ix.record("v1").unwrap().status, VnStatus::Ready);

        // Restore from what a store would hold: identical usage and identifiers.
        let hosts: Vec<HostInfo> = ix.registry.hosts().cloned().collect();
        let gens = ["h1", "h2", "h3"]
            .iter()
            .map(|h| (h.to_string(), ix.generation(h)))
            .collect();
        let restored = Index::restore(
            IndexConfig::default(),
            Registry::new(
                LinkSource::FullMesh {
                    bandwidth_mbps: 100,
                },
                &[],
            ),
            hosts.clone(),
            c1.cursors.as_ref().unwrap(),
            gens,
            ix.records().cloned().collect(),
        )
        .unwrap();
        assert_eq!(restored.usage(), ix.usage());
        assert_eq!(restored.allocators(), ix.allocators());
        assert_eq!(restored.desired("h3"), ix.desired("h3"));

        // A host that re-registered smaller: the VN is restored (it exists there), over capacity.
        let mut small = hosts.clone();
        small[0].cpu = 10;
        let r = Index::restore(
            IndexConfig::default(),
            Registry::new(
                LinkSource::FullMesh {
                    bandwidth_mbps: 100,
                },
                &[],
            ),
            small,
            &Cursors::default(),
            BTreeMap::new(),
            ix.records().cloned().collect(),
        )
        .unwrap();
        assert_eq!(r.usage().host_cpu("h1"), 30);
        // A VN on a host the store does not know refuses to load.
        let e = Index::restore(
            IndexConfig::default(),
            Registry::new(
                LinkSource::FullMesh {
                    bandwidth_mbps: 100,
                },
                &[],
            ),
            hosts[1..].to_vec(),
            &Cursors::default(),
            BTreeMap::new(),
            ix.records().cloned().collect(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no longer fits"), "{e}");
        // Two VNs holding one VNI refuse to load.
        let mut dup = ix.record("v1").unwrap().clone();
        dup.vn_id = "v9".into();
        dup.req.name = "copy".into();
        let mut recs: Vec<VnRecord> = ix.records().cloned().collect();
        recs.push(dup);
        let big: Vec<HostInfo> = hosts
            .into_iter()
            .map(|mut h| {
                h.cpu = 1000;
                h
            })
            .collect();
        let e = Index::restore(
            IndexConfig::default(),
            Registry::new(
                LinkSource::FullMesh {
                    bandwidth_mbps: 1000,
                },
                &[],
            ),
            big,
            &Cursors::default(),
            BTreeMap::new(),
            recs,
        )
        .unwrap_err();
        assert!(e.to_string().contains("held twice"), "{e}");
    }

    #[test]
    fn identifier_exhaustion_midway_leaves_no_trace() {
        let mut ix = index();
        // One VLAN ID left in the mesh segment; the VN needs two (two hops).
        for v in 1..4094 {
            ix.alloc.vlan_pool("mesh").reserve(v).unwrap();
        }
        let before = ix.alloc.clone();
        let e = ix
            .accept(req("x", Encap::Vlan, false, "red"), vec![], &via_h2(), 1)
            .unwrap_err();
        assert_eq!(e.to_string(), "no free VLAN ID in segment mesh left");
        assert_eq!(ix.alloc, before);
        assert_eq!(ix.usage(), &Usage::default());
        assert!(ix.records().next().is_none());
        assert_eq!(ix.generation("h1"), 0);
    }

    #[test]
    fn dedicated_hosts_exclude_other_providers() {
        let mut ix = index();
        let mut m = via_h2();
        m.link_paths = vec![vec!["h1-h3".into()]];
        ix.accept(req("d", Encap::Vxlan, true, "blue"), vec![], &m, 1)
            .unwrap();
        let r = req("x", Encap::Vxlan, false, "red");
        assert_eq!(
            ix.usage().excluded_hosts(&r),
            ["h1".to_string(), "h3".to_string()].into()
        );
        let e = ix.accept(r, vec![], &m, 1).unwrap_err();
        assert!(e.to_string().contains("dedicated-host isolation"), "{e}");
        // blue itself may share its own hosts
        assert!(
            ix.usage()
                .excluded_hosts(&req("e", Encap::Vxlan, false, "blue"))
                .is_empty()
        );
    }
}
