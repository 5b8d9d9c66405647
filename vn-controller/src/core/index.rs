//! The in-memory index: every VN record, the substrate registry, exact usage, identifier
//! allocators and per-host generations. Pure and synchronous: the runtime holds it under one
//! lock (which serialises commits), persists the [`Change`] each operation returns, then
//! publishes desired states and events.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use vnet_proto::v1 as pb;

use super::alloc::{AllocError, Allocators, Cursors, base36, link_id, node_id};
use super::attributes;
use super::desired::{self, DesiredSnapshot};
use super::model::{Encap, Kind, ProviderId, VnReq};
use super::nest::{self, ChildFrame, Nests, ParentNode};
use super::record::{
    Hop, HostPhase, HostProgress, Nesting, PlacedLink, PlacedNode, Placement, VnRecord, VnStatus,
};
use super::substrate::{DEFAULT_UNDERLAY_MTU, HostInfo, Registry};
use super::usage::{CheckMode, Mapping, Usage};

/// VXLAN overhead on the underlay MTU.
pub const VXLAN_OVERHEAD: u32 = 50;

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

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    #[error("VN {name} already exists (provider {provider})")]
    AlreadyExists { provider: String, name: String },
    #[error("VN {name} not found")]
    NotFound { name: String },
    /// The substrate cannot host the request (capacity or identifiers).
    #[error("{0}")]
    Exhausted(String),
    #[error("inconsistent store: {0}")]
    Restore(String),
    /// A state of things (a parent's, an attribute it imposes) does not allow the request.
    #[error("{0}")]
    Precondition(String),
    /// The caller may not do this (create a child of a VN not shared with it).
    #[error("{0}")]
    Permission(String),
    /// The request names something that does not exist (a child pinned to no parent node).
    #[error("{0}")]
    Invalid(String),
    /// A quota or a fixed capacity makes the request impossible (embedding again cannot help).
    #[error("{0}")]
    NoRoom(String),
}

impl From<AllocError> for CoreError {
    fn from(e: AllocError) -> Self {
        CoreError::Exhausted(e.to_string())
    }
}

/// What happened to a VN, for watchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Accepted,
    HostProgress,
    Ready,
    Degraded,
    Failed,
    Deleted,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub provider: ProviderId,
    pub name: String,
    pub kind: EventKind,
    /// `None`: deleted.
    pub status: Option<VnStatus>,
    pub host: String,
    pub message: String,
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

/// An identifier taken during one allocation (released again if the allocation fails).
#[derive(Debug)]
enum Taken {
    Mac(u64),
    Vni(u64),
    Vlan(String, u64),
}

#[derive(Clone, Debug)]
pub struct Index {
    cfg: IndexConfig,
    pub registry: Registry,
    alloc: Allocators,
    usage: Usage,
    vns: BTreeMap<String, VnRecord>,
    by_name: BTreeMap<(ProviderId, String), String>,
    host_vns: BTreeMap<String, BTreeSet<String>>,
    generations: BTreeMap<String, u64>,
    observed: BTreeMap<String, u64>,
    /// (host, vn_id) -> the VN's slice on that host, built once at accept/restore.
    slices: HashMap<(String, String), Arc<pb::VnSlice>>,
    /// Recursion: what children use of their parents, and the tree.
    nests: Nests,
}

fn hop_links(rec: &VnRecord) -> Vec<Vec<String>> {
    rec.placement
        .links
        .iter()
        .map(|l| l.hops.iter().map(|h| h.link.clone()).collect())
        .collect()
}

/// Where each node sits in the frame it was embedded in: the host, or for a child the parent node.
fn node_hosts(rec: &VnRecord) -> Vec<String> {
    rec.placement
        .nodes
        .iter()
        .map(|n| n.parent_node.clone().unwrap_or_else(|| n.host.clone()))
        .collect()
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

    fn reserve_ids(&mut self, rec: &VnRecord) -> Result<(), AllocError> {
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

    fn release_ids(&mut self, placement: &Placement) {
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

    fn bump(&mut self, host: &str, change: &mut Change) -> u64 {
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

    fn cache_slices(&mut self, rec: &VnRecord) {
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

    /// Commits an embedded request: re-checks it against the residual substrate, allocates
    /// identifiers and records the VN in state provisioning. Nothing changes on error.
    pub fn accept(
        &mut self,
        req: VnReq,
        spec_pb: Vec<u8>,
        mapping: &Mapping,
        now_ms: u64,
    ) -> Result<(VnRecord, Change), CoreError> {
        self.check_name_free(&req.provider, &req.name)?;
        // A child is checked against its parent (again: the parent may have changed since the
        // embedding) and embedded in the parent's virtual topology.
        let child: Option<ChildFrame> = match &req.parent {
            Some(_) => Some(nest::child_frame(self, &req, self.cfg.vxlan_port)?),
            None => None,
        };
        let req = match &child {
            Some(f) => f.req.clone(),
            None => VnReq {
                attributes: attributes::top_level(&req.attributes),
                ..req
            },
        };
        let (frame, usage) = match &child {
            Some(f) => (
                Frame {
                    reg: &f.registry,
                    port: f.port,
                    parent_nodes: Some(&f.nodes),
                },
                self.nests.usage(&f.parent_id),
            ),
            None => (
                Frame {
                    reg: &self.registry,
                    port: self.cfg.vxlan_port,
                    parent_nodes: None,
                },
                &self.usage,
            ),
        };
        let (paths, _) = usage
            .check(frame.reg, &req, mapping, CheckMode::Commit)
            .map_err(CoreError::Exhausted)?;
        let cursors = self.alloc.cursors();
        let mut taken = Vec::new();
        let allocated = allocate(&mut self.alloc, &frame, &req, mapping, &paths, &mut taken);
        let (vn_id, placement) = match allocated {
            Ok(p) => p,
            Err(e) => {
                for t in taken {
                    match t {
                        Taken::Mac(v) => self.alloc.mac.release(v),
                        Taken::Vni(v) => self.alloc.vni.release(v),
                        Taken::Vlan(seg, v) => self.alloc.vlan_pool(&seg).release(v),
                    }
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
        let nesting = match child {
            Some(f) => {
                self.nests.usage_mut(&f.parent_id).add(
                    &req,
                    &mapping.node_hosts,
                    &mapping.link_paths,
                );
                self.nests.add_child(&f.parent_id, &vn_id);
                Some(Nesting {
                    parent: f.parent_id,
                    parent_label: f.parent_label,
                    depth: f.depth,
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
        };
        self.by_name.insert(
            (rec.provider().clone(), rec.name().to_string()),
            vn_id.clone(),
        );
        change.events.push(Event {
            provider: rec.provider().clone(),
            name: rec.name().to_string(),
            kind: EventKind::Accepted,
            status: Some(VnStatus::Provisioning),
            host: String::new(),
            message: {
                // A child is placed on its parent's nodes, named as such.
                let (inside, on): (String, BTreeSet<String>) = match &rec.nesting {
                    None => (String::new(), rec.placement.hosts()),
                    Some(n) => (
                        format!(" in {}", n.parent_label),
                        node_hosts(&rec).into_iter().collect(),
                    ),
                };
                let on: Vec<String> = on.into_iter().collect();
                format!(
                    "embedded{inside} on {} by {}",
                    on.join(","),
                    rec.placement.algorithm
                )
            },
        });
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
        change.events.push(Event {
            provider: rec.provider().clone(),
            name: rec.name().to_string(),
            kind: EventKind::Failed,
            status: Some(VnStatus::Failed),
            host: String::new(),
            message: reason.to_string(),
        });
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
        let order = nest::post_order(self, &vn_id);
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
            change.events.push(Event {
                provider: rec.provider().clone(),
                name: rec.name().to_string(),
                kind: EventKind::Deleted,
                status: None,
                host: String::new(),
                message: String::new(),
            });
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
        Event {
            provider: rec.provider().clone(),
            name: rec.name().to_string(),
            kind: EventKind::HostProgress,
            status: Some(rec.status),
            host: host.to_string(),
            message: phase.describe(),
        }
    }

    /// Marks READY when every host reported its slice ready.
    fn settle(rec: &mut VnRecord, change: &mut Change) {
        let all_ready = rec.hosts.values().all(|p| p.phase == HostPhase::Ready);
        if all_ready && matches!(rec.status, VnStatus::Provisioning | VnStatus::Degraded) {
            rec.status = VnStatus::Ready;
            rec.reason.clear();
            change.status_changed = true;
            change.events.push(Event {
                provider: rec.provider().clone(),
                name: rec.name().to_string(),
                kind: EventKind::Ready,
                status: Some(VnStatus::Ready),
                host: String::new(),
                message: String::new(),
            });
        }
    }

    fn degrade(rec: &mut VnRecord, reason: String, host: &str, change: &mut Change) {
        if rec.status == VnStatus::Ready {
            rec.status = VnStatus::Degraded;
            rec.reason = reason.clone();
            change.status_changed = true;
            change.events.push(Event {
                provider: rec.provider().clone(),
                name: rec.name().to_string(),
                kind: EventKind::Degraded,
                status: Some(VnStatus::Degraded),
                host: host.to_string(),
                message: reason,
            });
        }
    }

    /// Applies an agent's report about `generation` of `host`'s desired state.
    pub fn observe(
        &mut self,
        host: &str,
        generation: u64,
        applied: bool,
        reports: &[pb::VnObserved],
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
            let phase = match pb::SliceState::try_from(r.state) {
                Ok(pb::SliceState::Ready) => HostPhase::Ready,
                Ok(pb::SliceState::Failed) => HostPhase::Failed(if r.message.is_empty() {
                    "failed without a message".into()
                } else {
                    r.message.clone()
                }),
                _ => HostPhase::Pending,
            };
            if progress.phase == phase {
                continue;
            }
            progress.phase = phase.clone();
            change.events.push(Self::progress_event(rec, host, &phase));
            match phase {
                HostPhase::Failed(msg) if rec.status == VnStatus::Provisioning => {
                    failures.push((r.vn_id.clone(), format!("host {host}: {msg}")));
                }
                HostPhase::Failed(msg) => {
                    Self::degrade(rec, format!("host {host}: {msg}"), host, &mut change)
                }
                _ => Self::settle(rec, &mut change),
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
            Self::degrade(rec, format!("host {host} disconnected"), host, &mut change);
            change.upserts.insert(vn_id, rec.clone());
        }
        change
    }

    /// After a restart: VNs on hosts that did not re-attach within the grace period degrade.
    pub fn degrade_unattached(&mut self) -> Change {
        let mut change = Change::default();
        let missing: Vec<String> = self
            .host_vns
            .keys()
            .filter(|h| !self.registry.is_connected(h))
            .cloned()
            .collect();
        for h in missing {
            change.merge(self.detach(&h));
        }
        change
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

/// Longest link (and segment) id the agents accept.
const MAX_LINK_ID_LEN: usize = 10;

/// What a VN is embedded in, for the allocation of its placement: the substrate, or (for a
/// child) its parent's virtual topology.
struct Frame<'a> {
    reg: &'a Registry,
    /// UDP port of VXLAN hops at this depth.
    port: u16,
    /// Child: where each parent node is (the mapping names parent nodes, not hosts).
    parent_nodes: Option<&'a BTreeMap<String, ParentNode>>,
}

fn allocate(
    alloc: &mut Allocators,
    frame: &Frame<'_>,
    req: &VnReq,
    mapping: &Mapping,
    paths: &[Vec<String>],
    taken: &mut Vec<Taken>,
) -> Result<(String, Placement), CoreError> {
    let vn_id = alloc.next_vn_id();
    let nodes: Vec<PlacedNode> = mapping
        .node_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| PlacedNode {
            host: frame
                .parent_nodes
                .map_or_else(|| h.clone(), |m| m[h].host.clone()),
            node_id: node_id(&vn_id, i),
            parent_node: frame.parent_nodes.map(|_| h.clone()),
            context: frame.parent_nodes.map(|m| m[h].node_id.clone()),
        })
        .collect();
    // Interface names: explicit ones first, then eth0, eth1, ... skipping taken names.
    let mut used_names: Vec<BTreeSet<String>> = vec![BTreeSet::new(); req.nodes.len()];
    for l in &req.links {
        for (side, node) in [l.a, l.b].into_iter().enumerate() {
            if let Some(n) = &l.interfaces[side] {
                used_names[node].insert(n.clone());
            }
        }
    }
    let mut next_eth = vec![0usize; req.nodes.len()];
    let mut extra_segments = 0u64;
    let mut links = Vec::with_capacity(req.links.len());
    for (i, (l, path)) in req.links.iter().zip(paths).enumerate() {
        let mut ifnames = [String::new(), String::new()];
        for (side, node) in [l.a, l.b].into_iter().enumerate() {
            ifnames[side] = match &l.interfaces[side] {
                Some(n) => n.clone(),
                None => loop {
                    let cand = format!("eth{}", next_eth[node]);
                    next_eth[node] += 1;
                    if used_names[node].insert(cand.clone()) {
                        break cand;
                    }
                },
            };
        }
        let mut mac = || -> Result<u64, CoreError> {
            let v = alloc.mac.allocate()?;
            taken.push(Taken::Mac(v));
            Ok(v)
        };
        let macs = [mac()?, mac()?];
        let mut hops = Vec::new();
        let mut mtu = u32::MAX;
        for (j, sid) in mapping.link_paths[i].iter().enumerate() {
            let sl = frame
                .reg
                .link(sid)
                .expect("checked by Usage::check")
                .clone();
            let (from, to) = (&path[j], &path[j + 1]);
            let addr = |h: &str| {
                frame.reg.address_on(&sl, h).ok_or_else(|| {
                    CoreError::Exhausted(format!("host {h} has no address on link {sid}"))
                })
            };
            let (from_address, to_address) = (addr(from)?, addr(to)?);
            let under = frame.reg.mtu_on(&sl, from).min(frame.reg.mtu_on(&sl, to));
            let (vni, vlan_id, hop_mtu) = match l.encap {
                Encap::Vxlan => {
                    let v = alloc.vni.allocate()?;
                    taken.push(Taken::Vni(v));
                    (Some(v as u32), None, under.saturating_sub(VXLAN_OVERHEAD))
                }
                Encap::Vlan => {
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
                udp_port: frame.port,
                from_address,
                to_address,
            });
        }
        if hops.is_empty() {
            mtu = DEFAULT_UNDERLAY_MTU;
        }
        if let Some(cap) = req.attributes.mtu {
            mtu = mtu.min(cap);
        }
        let (hosts, contexts) = match frame.parent_nodes {
            Some(m) => (
                path.iter().map(|p| m[p].host.clone()).collect(),
                path.iter().map(|p| m[p].node_id.clone()).collect(),
            ),
            None => (vec![], vec![]),
        };
        // A child's link may cross two parent nodes on one host: one segment id each.
        let mut segment_ids = Vec::new();
        let mut seen = BTreeSet::new();
        for (pos, h) in hosts.iter().enumerate() {
            if seen.insert(h) {
                continue;
            }
            segment_ids.resize(pos + 1, String::new());
            extra_segments += 1;
            let id = format!("{vn_id}r{}", base36(extra_segments));
            if id.len() > MAX_LINK_ID_LEN {
                return Err(CoreError::NoRoom(format!(
                    "link {i} crosses host {h} more than once and no segment id is left for it"
                )));
            }
            segment_ids[pos] = id;
        }
        let vm_end = req.nodes[l.a].kind == Kind::Vm || req.nodes[l.b].kind == Kind::Vm;
        let carrier =
            (req.nestable && l.addresses.is_none() && !vm_end).then(|| nest::carrier_pair(i));
        links.push(PlacedLink {
            link_id: link_id(&vn_id, i),
            path: path.clone(),
            hops,
            mtu,
            ifnames,
            macs,
            hosts,
            contexts,
            segment_ids,
            carrier,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Attributes, Kind, LinkReq, NodeReq};
    use crate::core::substrate::{LinkSource, UnderlayIf};

    fn host(id: &str, n: u8, mtu: u32) -> HostInfo {
        HostInfo {
            id: id.into(),
            underlay_address: format!("10.0.0.{n}").parse().unwrap(),
            underlay: vec![UnderlayIf {
                name: "eth0".into(),
                addresses: vec![format!("10.0.0.{n}/24").parse().unwrap()],
                mtu,
                mac: String::new(),
            }],
            cpu: 100,
            memory_mb: 1000,
            kinds: [Kind::Netns].into(),
            labels: Default::default(),
            capabilities_pb: vec![],
            agent_version: String::new(),
            boot_id: String::new(),
            last_seen_unix_ms: 0,
            images: Vec::new(),
        }
    }

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
        let node = |n: &str| NodeReq {
            name: n.into(),
            kind: Kind::Netns,
            cpu: 30,
            memory_mb: 10,
            pin: None,
            location: None,
            routes: vec![],
            guest: None,
        };
        VnReq {
            name: name.into(),
            provider: ProviderId(provider.into()),
            allow_revisitation: false,
            nodes: vec![node("a"), node("b")],
            links: vec![LinkReq {
                a: 0,
                b: 1,
                bandwidth_mbps: 40,
                addresses: None,
                interfaces: [None, None],
                encap,
                encap_explicit: false,
            }],
            algorithm: None,
            max_path_hops: None,
            attributes: Attributes {
                mtu: None,
                dedicated_hosts: dedicated,
                ..Attributes::default()
            },
            nestable: false,
            share_with: Default::default(),
            parent: None,
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

    fn report(vn: &str, state: pb::SliceState, msg: &str) -> pb::VnObserved {
        pb::VnObserved {
            vn_id: vn.into(),
            state: state as i32,
            message: msg.into(),
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
        let d2 = ix.desired("h2").to_proto();
        assert_eq!(d2.generation, 1);
        let seg = &d2.vns[0].links[0];
        assert!(matches!(
            (&seg.a.as_ref().unwrap().kind, &seg.b.as_ref().unwrap().kind),
            (
                Some(pb::endpoint::Kind::Tunnel(_)),
                Some(pb::endpoint::Kind::Tunnel(_))
            )
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
        let c = ix.observe("h1", 0, true, &[report("v1", pb::SliceState::Ready, "")]);
        assert!(c.events.is_empty());
        for h in ["h1", "h2"] {
            ix.observe(h, 1, true, &[report("v1", pb::SliceState::Ready, "")]);
        }
        assert_eq!(ix.record("v1").unwrap().status, VnStatus::Provisioning);
        let c = ix.observe(
            "h3",
            1,
            true,
            &[report("v1", pb::SliceState::Failed, "no vxlan")],
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
            ix.observe(h, 1, true, &[report("v1", pb::SliceState::Ready, "")]);
        }
        assert_eq!(ix.record("v1").unwrap().status, VnStatus::Ready);
        ix.detach("h2");
        assert_eq!(ix.record("v1").unwrap().reason, "host h2 disconnected");
        ix.attach(host("h2", 2, 9000));
        ix.observe("h2", 1, true, &[report("v1", pb::SliceState::Ready, "")]);
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
