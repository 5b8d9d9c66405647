//! Bridge to the `embedding` crate.
//!
//! [`View`] is a snapshot of the residual substrate as one request may use it: only attached
//! hosts, only links between attached hosts, capacities reduced by what held VNs use, and the
//! hosts excluded by dedicated-host isolation. It is taken under the commit lock and embedded
//! outside it; the result is checked again at commit ([`crate::usage::Usage::check`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use embedding::{Residual, Substrate};

use crate::frame::Frame;
use crate::index::Index;
use crate::model::{Kind, VnReq};
use crate::substrate::{Registry, SubstrateLink};
use crate::usage::{Mapping, Usage};

#[derive(Clone, Debug, PartialEq)]
pub struct ViewHost {
    pub id: String,
    pub cpu_free: u64,
    pub memory_free: u64,
    pub kinds: BTreeSet<Kind>,
    pub labels: BTreeSet<String>,
    /// (name, architecture) of the guest images it holds and can run.
    pub images: BTreeSet<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub hosts: Vec<ViewHost>,
    /// Every substrate link (shared with the registry, not copied) ...
    pub links: Arc<Vec<SubstrateLink>>,
    /// ... and its free bandwidth, `None` when it may not be used (an end is not attached).
    pub free: Vec<Option<u64>>,
    /// Hosts this request must not use (dedicated-host isolation).
    pub excluded: BTreeSet<String>,
}

impl Index {
    /// The residual of `frame` (the substrate, or a child's parent) as its request may use it.
    pub fn view(&self, frame: &Frame) -> View {
        match &frame.parent {
            Some(p) => view_of(&p.registry, self.nests().usage(&p.id), &frame.req),
            None => view_of(&self.registry, self.usage(), &frame.req),
        }
    }
}

/// The residual of `registry` (the substrate, or a parent VN's virtual topology) after `u`, as
/// `req` may use it.
pub fn view_of(registry: &Registry, u: &Usage, req: &VnReq) -> View {
    let hosts = registry
        .hosts()
        // Cordoned hosts take nothing new.
        .filter(|h| registry.is_schedulable(&h.id))
        .map(|h| ViewHost {
            id: h.id.clone(),
            cpu_free: h.cpu.saturating_sub(u.host_cpu(&h.id)),
            memory_free: h.memory_mb.saturating_sub(u.host_memory(&h.id)),
            kinds: h.kinds.clone(),
            labels: h.labels.clone(),
            images: h
                .images
                .iter()
                .filter(|i| h.guest_archs.contains(&i.arch))
                .map(|i| (i.name.clone(), i.arch.clone()))
                .collect(),
        })
        .collect();
    let links = registry.links_arc();
    let free = links
        .iter()
        .map(|l| {
            registry
                .link_usable(l)
                .then(|| l.bandwidth_mbps.saturating_sub(u.link_bandwidth(&l.id)))
        })
        .collect();
    View {
        hosts,
        links,
        free,
        excluded: u.excluded_hosts(req),
    }
}

/// Embedding algorithms as the controller uses them: the seam between the controller and the
/// `embedding` crate ([`EmbeddingPlanner`]), so tests and benchmarks may plan otherwise.
pub trait Planner: Send + Sync + 'static {
    /// Names of the available algorithms.
    fn algorithms(&self) -> Vec<&'static str>;
    fn default_algorithm(&self) -> &str;
    /// Embeds `req` on `view`, or says why it cannot.
    fn plan(&self, view: &View, req: &VnReq, algorithm: &str) -> Result<Mapping, String>;
}

/// The controller's planner: the `embedding` crate's algorithms on a [`View`].
#[derive(Debug, Default)]
pub struct EmbeddingPlanner;

impl EmbeddingPlanner {
    pub fn new() -> Self {
        EmbeddingPlanner
    }
}

fn kind(k: Kind) -> embedding::NodeKind {
    match k {
        Kind::Netns => embedding::NodeKind::Netns,
        Kind::Vm => embedding::NodeKind::Vm,
    }
}

/// Builds the `embedding` model of a view and a request. Returns the substrate, the request
/// and, for each substrate edge index, the index of the link in `view.links`.
pub fn model(
    view: &View,
    req: &VnReq,
) -> Result<(Substrate, embedding::VnRequest, Vec<usize>), String> {
    let mut s = Substrate::new();
    for h in view.hosts.iter().filter(|h| !view.excluded.contains(&h.id)) {
        let mut n = embedding::SubstrateNode::new(h.id.clone(), h.cpu_free)
            .with_memory_mb(h.memory_free)
            .with_kinds(h.kinds.iter().map(|k| kind(*k)));
        for l in &h.labels {
            n = n.with_label(l.clone());
        }
        s.add_node(n).map_err(|e| e.to_string())?;
    }
    let mut edge_ids = Vec::with_capacity(view.links.len());
    for (i, (l, free)) in view.links.iter().zip(&view.free).enumerate() {
        let Some(free) = free else { continue };
        if s.find(&l.a).is_none() || s.find(&l.b).is_none() {
            continue;
        }
        let mut sl = embedding::SubstrateLink::new(*free);
        if let Some(lat) = l.latency_ms {
            sl = sl.with_latency_ms(lat);
        }
        let e = s.add_link(&l.a, &l.b, sl).map_err(|e| e.to_string())?;
        debug_assert_eq!(e.index(), edge_ids.len());
        edge_ids.push(i);
    }
    let mut r = embedding::VnRequest::new(req.name.clone()).with_options(
        embedding::RequestOptions::default()
            .with_revisitation(req.allow_revisitation)
            .with_path_split(false)
            .with_max_path_hops(req.max_path_hops)
            .with_max_nodes_per_host(req.max_nodes_per_host)
            .with_spread(req.spread),
    );
    for n in &req.nodes {
        let mut v = embedding::VirtualNode::new(n.name.clone(), n.cpu)
            .with_memory_mb(n.memory_mb)
            .with_kind(kind(n.kind));
        if let Some(p) = &n.pin {
            v = v.pinned_to(p.clone());
        }
        if let Some(loc) = &n.location {
            v = v.with_location(loc.clone());
        }
        // A guest only where its image is, of its architecture, and that architecture runs.
        if let Some(g) = &n.guest {
            let want = (g.image.clone(), g.arch.clone());
            v = v.with_candidates(
                view.hosts
                    .iter()
                    .filter(|h| h.images.contains(&want))
                    .map(|h| h.id.clone()),
            );
        }
        r.add_node(v).map_err(|e| e.to_string())?;
    }
    for l in &req.links {
        let i = r
            .add_link(&req.nodes[l.a].name, &req.nodes[l.b].name, l.bandwidth_mbps)
            .map_err(|e| e.to_string())?;
        r.set_max_delay_us(i, l.max_delay_us);
    }
    Ok((s, r, edge_ids))
}

impl Planner for EmbeddingPlanner {
    fn algorithms(&self) -> Vec<&'static str> {
        embedding::algorithm_names()
    }

    fn default_algorithm(&self) -> &str {
        embedding::DEFAULT_ALGORITHM
    }

    fn plan(&self, view: &View, req: &VnReq, algorithm: &str) -> Result<Mapping, String> {
        let algo = embedding::by_name(algorithm)
            .ok_or_else(|| format!("unknown algorithm {algorithm}"))?;
        let (s, r, edge_ids) = model(view, req)?;
        let residual = Residual::new(Arc::new(s));
        let emb =
            embedding::embed_spread(algo.as_ref(), &residual, &r).map_err(|e| e.to_string())?;
        // The algorithm's result must fit the snapshot it was given.
        residual
            .check(&r, &emb)
            .map_err(|e| format!("algorithm {algorithm} proposed an infeasible embedding: {e}"))?;
        let sub = residual.substrate();
        let node_hosts = emb
            .nodes()
            .iter()
            .map(|n| sub.node(*n).id.clone())
            .collect();
        let link_paths = emb
            .links()
            .iter()
            .enumerate()
            .map(|(i, le)| match le.flows() {
                [] => Ok(vec![]),
                [f] => Ok(f
                    .edges
                    .iter()
                    .map(|e| view.links[edge_ids[e.index()]].id.clone())
                    .collect()),
                _ => Err(format!("link {i} was split over several paths")),
            })
            .collect::<Result<Vec<_>, String>>()?;
        // an answer the algorithm could not show to be what it claims says so (the exact
        // MIP: unproven, or LACE's answer after the time limit); it reaches the ACCEPTED event
        let algorithm = match emb.note() {
            Some(note) => format!("{algorithm} ({note})"),
            None => algorithm.to_string(),
        };
        Ok(Mapping {
            node_hosts,
            link_paths,
            algorithm,
            revenue: emb.revenue() as f64,
            cost: emb.cost() as f64,
        })
    }
}
