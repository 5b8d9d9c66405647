//! The result of embedding one request: where every virtual node goes and which substrate path(s)
//! every virtual link takes, with its revenue and cost.
//!
//! An [`Embedding`] can only be built through [`Embedding::new`], which checks its structure
//! against the substrate and the request (hosts exist and satisfy kind/label/pin constraints,
//! revisitation and splitting only when allowed, paths are simple and join the endpoints' hosts,
//! split bandwidths sum to the demand, hop limits). Capacities are checked by
//! [`crate::Residual::commit`]. [`Placement`] is the same thing keyed by ids, for storage.

use std::collections::BTreeMap;

use petgraph::graph::{EdgeIndex, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::request::{VirtualNode, VnRequest};
use crate::substrate::{Substrate, SubstrateNode};

/// One substrate path carrying (part of) a virtual link's bandwidth.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flow {
    /// Hosts from the host of the link's first endpoint to that of its second; a single host when
    /// both endpoints are co-located.
    pub hosts: Vec<NodeIndex>,
    /// Substrate links between consecutive hosts (`hosts.len() - 1` of them).
    pub edges: Vec<EdgeIndex>,
    /// Bandwidth carried on this path.
    pub bandwidth: u64,
}

impl Flow {
    /// A flow over `hosts`/`edges` (not checked until [`Embedding::new`]).
    pub fn new(hosts: Vec<NodeIndex>, edges: Vec<EdgeIndex>, bandwidth: u64) -> Self {
        Flow {
            hosts,
            edges,
            bandwidth,
        }
    }

    /// A flow along `hosts`, looking the links up in `substrate`.
    pub fn from_hosts(
        substrate: &Substrate,
        hosts: Vec<NodeIndex>,
        bandwidth: u64,
    ) -> Result<Self, EmbeddingError> {
        let mut edges = Vec::with_capacity(hosts.len().saturating_sub(1));
        for w in hosts.windows(2) {
            if w[0].index() >= substrate.node_count() || w[1].index() >= substrate.node_count() {
                return Err(EmbeddingError::Structure(format!(
                    "host index {} or {} out of range",
                    w[0].index(),
                    w[1].index()
                )));
            }
            let e = substrate.find_link(w[0], w[1]).ok_or_else(|| {
                EmbeddingError::Structure(format!(
                    "no substrate link between `{}` and `{}`",
                    substrate.node(w[0]).id,
                    substrate.node(w[1]).id
                ))
            })?;
            edges.push(e);
        }
        Ok(Flow {
            hosts,
            edges,
            bandwidth,
        })
    }

    /// Number of substrate links on the path.
    pub fn hops(&self) -> usize {
        self.edges.len()
    }
}

/// How one virtual link is carried: one flow, or several when path splitting is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEmbedding {
    flows: Vec<Flow>,
}

impl LinkEmbedding {
    /// A link carried by a single path.
    pub fn unsplit(flow: Flow) -> Self {
        LinkEmbedding { flows: vec![flow] }
    }

    /// A link carried by several paths.
    pub fn split(flows: Vec<Flow>) -> Self {
        LinkEmbedding { flows }
    }

    /// The flows.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// Bandwidth times hops, summed over the flows (the link's share of the cost).
    pub fn bandwidth_hops(&self) -> u64 {
        self.flows
            .iter()
            .map(|f| f.bandwidth * f.hops() as u64)
            .sum()
    }
}

/// Why an embedding is structurally wrong for a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddingError {
    /// Node or link counts or indices do not match the request/substrate.
    #[error("malformed embedding: {0}")]
    Structure(String),
    /// A virtual node's placement violates one of its constraints.
    #[error("virtual node `{node}` on `{host}`: {reason}")]
    NodeConstraint {
        /// Virtual node id.
        node: String,
        /// Substrate node id.
        host: String,
        /// The violated constraint.
        reason: String,
    },
    /// Two virtual nodes share a host without revisitation.
    #[error("virtual nodes `{a}` and `{b}` share host `{host}` but revisitation is not allowed")]
    Revisit {
        /// First node id.
        a: String,
        /// Second node id.
        b: String,
        /// Shared host id.
        host: String,
    },
    /// A virtual link's mapping is wrong.
    #[error("virtual link `{link}`: {reason}")]
    Link {
        /// Link as `u-v`.
        link: String,
        /// What is wrong.
        reason: String,
    },
    /// A placement names an unknown host or virtual node.
    #[error("placement: {0}")]
    Unknown(String),
}

/// A validated embedding of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embedding {
    nodes: Vec<NodeIndex>,
    links: Vec<LinkEmbedding>,
    revenue: u64,
    cost: u64,
    /// What the algorithm says about the answer's quality when it claims more than it can
    /// show (the exact MIP: unproven, or LACE's answer after the time limit).
    note: Option<String>,
}

/// Checks that `host` satisfies the placement constraints of `node` (kind, pin, candidates,
/// location); `Err` carries the reason.
pub fn check_node_constraints(node: &VirtualNode, host: &SubstrateNode) -> Result<(), String> {
    if !host.kinds.contains(&node.kind) {
        return Err(format!("host cannot run {} nodes", node.kind));
    }
    if let Some(pin) = &node.pinned_host
        && pin != &host.id
    {
        return Err(format!("node is pinned to `{pin}`"));
    }
    if let Some(c) = &node.candidates
        && !c.contains(&host.id)
    {
        return Err("host is not among the node's candidate hosts".into());
    }
    if let Some(loc) = &node.location
        && !host.labels.contains(loc)
    {
        return Err(format!("host lacks location label `{loc}`"));
    }
    Ok(())
}

impl Embedding {
    /// Builds an embedding of `request` on `substrate`: `nodes[i]` hosts virtual node `i`,
    /// `links[l]` carries virtual link `l`. Checks the structure (see the module docs), not the
    /// capacities.
    pub fn new(
        substrate: &Substrate,
        request: &VnRequest,
        nodes: Vec<NodeIndex>,
        links: Vec<LinkEmbedding>,
    ) -> Result<Self, EmbeddingError> {
        let e = Embedding {
            nodes,
            links,
            revenue: request.revenue(),
            cost: 0,
            note: None,
        };
        let cost = e.validate(substrate, request)?;
        Ok(Embedding { cost, ..e })
    }

    /// The same embedding with a note on its quality (see [`Embedding::note`]).
    pub fn with_note(self, note: impl Into<String>) -> Self {
        Embedding {
            note: Some(note.into()),
            ..self
        }
    }

    /// The algorithm's note on this answer's quality, when it has one: the exact MIP says when
    /// an answer is not proven optimal or is LACE's answer given back after its time limit.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Re-checks the structure against `substrate` and `request`; returns the cost.
    pub(crate) fn validate(
        &self,
        substrate: &Substrate,
        request: &VnRequest,
    ) -> Result<u64, EmbeddingError> {
        let structure = |m: String| EmbeddingError::Structure(m);
        if self.nodes.len() != request.nodes().len() {
            return Err(structure(format!(
                "{} node placements for {} virtual nodes",
                self.nodes.len(),
                request.nodes().len()
            )));
        }
        if self.links.len() != request.links().len() {
            return Err(structure(format!(
                "{} link mappings for {} virtual links",
                self.links.len(),
                request.links().len()
            )));
        }
        let n = substrate.node_count();
        let mut owner: Vec<Option<usize>> = vec![None; n];
        for (i, (&h, vn)) in self.nodes.iter().zip(request.nodes()).enumerate() {
            if h.index() >= n {
                return Err(structure(format!(
                    "virtual node `{}` placed on host index {} of {n}",
                    vn.id,
                    h.index()
                )));
            }
            let host = substrate.node(h);
            check_node_constraints(vn, host).map_err(|reason| EmbeddingError::NodeConstraint {
                node: vn.id.clone(),
                host: host.id.clone(),
                reason,
            })?;
            if let Some(j) = owner[h.index()]
                && !request.options().allow_revisitation
            {
                return Err(EmbeddingError::Revisit {
                    a: request.nodes()[j].id.clone(),
                    b: vn.id.clone(),
                    host: host.id.clone(),
                });
            }
            owner[h.index()] = Some(i);
        }
        let opts = request.options();
        self.check_nodes_per_host(substrate, request)?;
        let mut cost = request.total_cpu();
        for (l, (le, vl)) in self.links.iter().zip(request.links()).enumerate() {
            let bad = |reason: String| EmbeddingError::Link {
                link: request.link_name(l),
                reason,
            };
            let (src, dst) = (self.nodes[vl.u], self.nodes[vl.v]);
            if le.flows.is_empty() {
                return Err(bad("no path".into()));
            }
            if le.flows.len() > 1 && !opts.allow_path_split {
                return Err(bad(format!(
                    "split over {} paths but path splitting is not allowed",
                    le.flows.len()
                )));
            }
            let sum: u64 = le.flows.iter().map(|f| f.bandwidth).sum();
            if sum != vl.bandwidth {
                return Err(bad(format!(
                    "paths carry {sum} bandwidth, the demand is {}",
                    vl.bandwidth
                )));
            }
            for f in &le.flows {
                if le.flows.len() > 1 && f.bandwidth == 0 {
                    return Err(bad("a split carries no bandwidth".into()));
                }
                if f.hosts.first() != Some(&src) || f.hosts.last() != Some(&dst) {
                    return Err(bad("path does not join the endpoints' hosts".into()));
                }
                if f.edges.len() + 1 != f.hosts.len() {
                    return Err(bad("path has inconsistent hosts and links".into()));
                }
                if let Some(max) = opts.max_path_hops
                    && f.edges.len() > max as usize
                {
                    return Err(bad(format!(
                        "path has {} hops, the limit is {max}",
                        f.edges.len()
                    )));
                }
                if let Some(max) = vl.max_delay_us {
                    let d = crate::algo::paths::path_delay_us(substrate, &f.edges);
                    if d > max {
                        return Err(bad(format!("path delay {d} us exceeds max_delay_us {max}")));
                    }
                }
                let mut seen = std::collections::HashSet::with_capacity(f.hosts.len());
                for (k, &e) in f.edges.iter().enumerate() {
                    if e.index() >= substrate.link_count() {
                        return Err(bad(format!("link index {} out of range", e.index())));
                    }
                    let (a, b) = substrate.endpoints(e);
                    let (x, y) = (f.hosts[k], f.hosts[k + 1]);
                    if !((a == x && b == y) || (a == y && b == x)) {
                        return Err(bad("path is not contiguous".into()));
                    }
                }
                for h in &f.hosts {
                    if !seen.insert(*h) {
                        return Err(bad(format!(
                            "path visits `{}` twice",
                            substrate.node(*h).id
                        )));
                    }
                }
                cost += f.bandwidth * f.hops() as u64;
            }
        }
        Ok(cost)
    }

    /// No host holds more than the request's `max_nodes_per_host` of its nodes.
    fn check_nodes_per_host(
        &self,
        substrate: &Substrate,
        request: &VnRequest,
    ) -> Result<(), EmbeddingError> {
        let Some(cap) = request.options().max_nodes_per_host else {
            return Ok(());
        };
        let mut count = vec![0u32; substrate.node_count()];
        for &h in &self.nodes {
            count[h.index()] += 1;
            if count[h.index()] > cap {
                return Err(EmbeddingError::Structure(format!(
                    "host `{}` holds more than max_nodes_per_host {cap} nodes of the request",
                    substrate.node(h).id
                )));
            }
        }
        Ok(())
    }

    /// Host of each virtual node, in request order.
    pub fn nodes(&self) -> &[NodeIndex] {
        &self.nodes
    }

    /// Host of virtual node `i`.
    pub fn host(&self, i: usize) -> NodeIndex {
        self.nodes[i]
    }

    /// Mapping of each virtual link, in request order.
    pub fn links(&self) -> &[LinkEmbedding] {
        &self.links
    }

    /// Revenue: sum of CPU demands plus sum of bandwidth demands.
    pub fn revenue(&self) -> u64 {
        self.revenue
    }

    /// Cost: sum of CPU demands plus, over every flow, bandwidth times hops.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Substrate hops of all flows, weighted by bandwidth, divided by total bandwidth (1.0 when
    /// the request has no bandwidth).
    pub fn mean_hops(&self) -> f64 {
        let bw: u64 = self
            .links
            .iter()
            .flat_map(|l| &l.flows)
            .map(|f| f.bandwidth)
            .sum();
        if bw == 0 {
            return 1.0;
        }
        self.links.iter().map(|l| l.bandwidth_hops()).sum::<u64>() as f64 / bw as f64
    }

    /// The same embedding keyed by ids, for storage or display.
    pub fn placement(&self, substrate: &Substrate, request: &VnRequest) -> Placement {
        let id = |h: &NodeIndex| substrate.node(*h).id.clone();
        Placement {
            nodes: request
                .nodes()
                .iter()
                .zip(&self.nodes)
                .map(|(vn, h)| (vn.id.clone(), id(h)))
                .collect(),
            links: request
                .links()
                .iter()
                .zip(&self.links)
                .map(|(vl, le)| LinkPlacement {
                    u: request.nodes()[vl.u].id.clone(),
                    v: request.nodes()[vl.v].id.clone(),
                    bandwidth: vl.bandwidth,
                    flows: le
                        .flows
                        .iter()
                        .map(|f| FlowPlacement {
                            hosts: f.hosts.iter().map(id).collect(),
                            bandwidth: f.bandwidth,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// An embedding keyed by ids (virtual node id -> host id; per virtual link the host sequences).
/// Serialisable; [`Placement::resolve`] turns it back into a checked [`Embedding`], for example
/// when a controller restarts and re-commits stored VNs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Virtual node id -> substrate node id.
    pub nodes: BTreeMap<String, String>,
    /// One entry per virtual link.
    pub links: Vec<LinkPlacement>,
}

/// Where one virtual link goes, keyed by ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPlacement {
    /// First endpoint (virtual node id).
    pub u: String,
    /// Second endpoint (virtual node id).
    pub v: String,
    /// Bandwidth demand.
    pub bandwidth: u64,
    /// Paths from the host of `u` to the host of `v`.
    pub flows: Vec<FlowPlacement>,
}

/// One path of a link, keyed by ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowPlacement {
    /// Substrate node ids along the path (one when co-located).
    pub hosts: Vec<String>,
    /// Bandwidth on this path.
    pub bandwidth: u64,
}

impl Placement {
    /// Resolves ids against `substrate` and `request` and checks the result like
    /// [`Embedding::new`].
    pub fn resolve(
        &self,
        substrate: &Substrate,
        request: &VnRequest,
    ) -> Result<Embedding, EmbeddingError> {
        let host = |id: &str| {
            substrate
                .find(id)
                .ok_or_else(|| EmbeddingError::Unknown(format!("unknown substrate node `{id}`")))
        };
        let mut nodes = Vec::with_capacity(request.nodes().len());
        for vn in request.nodes() {
            let h = self.nodes.get(&vn.id).ok_or_else(|| {
                EmbeddingError::Unknown(format!("virtual node `{}` has no host", vn.id))
            })?;
            nodes.push(host(h)?);
        }
        if let Some(extra) = self.nodes.keys().find(|k| request.find(k).is_none()) {
            return Err(EmbeddingError::Unknown(format!(
                "unknown virtual node `{extra}`"
            )));
        }
        let mut links: Vec<Option<LinkEmbedding>> = vec![None; request.links().len()];
        for lp in &self.links {
            let (u, v) = match (request.find(&lp.u), request.find(&lp.v)) {
                (Some(u), Some(v)) => (u, v),
                _ => {
                    return Err(EmbeddingError::Unknown(format!(
                        "unknown virtual link {}-{}",
                        lp.u, lp.v
                    )));
                }
            };
            let Some(&(_, l)) = request.neighbors(u).iter().find(|(n, _)| *n == v) else {
                return Err(EmbeddingError::Unknown(format!(
                    "unknown virtual link {}-{}",
                    lp.u, lp.v
                )));
            };
            let reversed = request.links()[l].u != u;
            let mut flows = Vec::with_capacity(lp.flows.len());
            for fp in &lp.flows {
                let mut hosts = fp
                    .hosts
                    .iter()
                    .map(|h| host(h))
                    .collect::<Result<Vec<_>, _>>()?;
                if reversed {
                    hosts.reverse();
                }
                flows.push(Flow::from_hosts(substrate, hosts, fp.bandwidth)?);
            }
            if links[l].replace(LinkEmbedding { flows }).is_some() {
                return Err(EmbeddingError::Unknown(format!(
                    "virtual link {}-{} placed twice",
                    lp.u, lp.v
                )));
            }
        }
        let links = links
            .into_iter()
            .enumerate()
            .map(|(l, le)| {
                le.ok_or_else(|| {
                    EmbeddingError::Unknown(format!(
                        "virtual link {} has no path",
                        request.link_name(l)
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Embedding::new(substrate, request, nodes, links)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::request::{RequestOptions, VirtualNode};
    use crate::substrate::{SubstrateLink, SubstrateNode};

    /// Path substrate a - b - c - d, every node CPU 10, links bandwidth 10.
    pub(crate) fn line() -> Substrate {
        let mut s = Substrate::new();
        for id in ["a", "b", "c", "d"] {
            s.add_node(SubstrateNode::new(id, 10)).unwrap();
        }
        for (x, y) in [("a", "b"), ("b", "c"), ("c", "d")] {
            s.add_link(x, y, SubstrateLink::new(10)).unwrap();
        }
        s
    }

    pub(crate) fn pair(bw: u64) -> VnRequest {
        let mut r = VnRequest::new("p");
        r.add_node(VirtualNode::new("x", 2)).unwrap();
        r.add_node(VirtualNode::new("y", 3)).unwrap();
        r.add_link("x", "y", bw).unwrap();
        r
    }

    /// Chain request x - y - z, every node CPU 4, links bandwidth 5: on [`line`] the optimum puts
    /// the chain on adjacent hosts (cost 12 + 10).
    pub(crate) fn chain() -> VnRequest {
        let mut r = VnRequest::new("r");
        for id in ["x", "y", "z"] {
            r.add_node(VirtualNode::new(id, 4)).unwrap();
        }
        r.add_link("x", "y", 5).unwrap();
        r.add_link("y", "z", 5).unwrap();
        r
    }

    fn n(i: usize) -> NodeIndex {
        NodeIndex::new(i)
    }

    #[test]
    fn cost_counts_hops() {
        let s = line();
        let r = pair(4);
        let f = Flow::from_hosts(&s, vec![n(0), n(1), n(2)], 4).unwrap();
        let e = Embedding::new(&s, &r, vec![n(0), n(2)], vec![LinkEmbedding::unsplit(f)]).unwrap();
        assert_eq!(e.revenue(), 9);
        assert_eq!(e.cost(), 5 + 8);
        assert!((e.mean_hops() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn rejects_structural_errors() {
        let s = line();
        let r = pair(4);
        // path ends elsewhere
        let f = Flow::from_hosts(&s, vec![n(0), n(1)], 4).unwrap();
        let err =
            Embedding::new(&s, &r, vec![n(0), n(2)], vec![LinkEmbedding::unsplit(f)]).unwrap_err();
        assert!(err.to_string().contains("x-y"), "{err}");
        // wrong bandwidth
        let f = Flow::from_hosts(&s, vec![n(0), n(1)], 3).unwrap();
        assert!(Embedding::new(&s, &r, vec![n(0), n(1)], vec![LinkEmbedding::unsplit(f)]).is_err());
        // co-location without revisitation
        let f = Flow::from_hosts(&s, vec![n(1)], 4).unwrap();
        let err = Embedding::new(
            &s,
            &r,
            vec![n(1), n(1)],
            vec![LinkEmbedding::unsplit(f.clone())],
        )
        .unwrap_err();
        assert!(matches!(err, EmbeddingError::Revisit { .. }));
        // allowed with revisitation, and then free of bandwidth cost
        let r2 = pair(4).with_options(RequestOptions::default().with_revisitation(true));
        let e = Embedding::new(&s, &r2, vec![n(1), n(1)], vec![LinkEmbedding::unsplit(f)]).unwrap();
        assert_eq!(e.cost(), 5);
        // hop limit
        let r3 = pair(4).with_options(RequestOptions::default().with_max_path_hops(Some(1)));
        let f = Flow::from_hosts(&s, vec![n(0), n(1), n(2)], 4).unwrap();
        assert!(
            Embedding::new(&s, &r3, vec![n(0), n(2)], vec![LinkEmbedding::unsplit(f)]).is_err()
        );
        // split without permission
        let f1 = Flow::from_hosts(&s, vec![n(0), n(1)], 2).unwrap();
        let f2 = Flow::from_hosts(&s, vec![n(0), n(1)], 2).unwrap();
        assert!(
            Embedding::new(
                &s,
                &r,
                vec![n(0), n(1)],
                vec![LinkEmbedding::split(vec![f1, f2])]
            )
            .is_err()
        );
        // missing substrate link
        assert!(Flow::from_hosts(&s, vec![n(0), n(2)], 1).is_err());
    }

    #[test]
    fn node_constraints_are_enforced() {
        let mut s = Substrate::new();
        s.add_node(SubstrateNode::new("h1", 10).with_label("eu"))
            .unwrap();
        s.add_node(SubstrateNode::new("h2", 10).with_kinds([crate::NodeKind::Netns]))
            .unwrap();
        let mut r = VnRequest::new("r");
        r.add_node(VirtualNode::new("v", 1).with_kind(crate::NodeKind::Vm))
            .unwrap();
        assert!(Embedding::new(&s, &r, vec![n(1)], vec![]).is_err());
        assert!(Embedding::new(&s, &r, vec![n(0)], vec![]).is_ok());
        let mut r = VnRequest::new("r");
        r.add_node(VirtualNode::new("v", 1).with_location("us"))
            .unwrap();
        let err = Embedding::new(&s, &r, vec![n(0)], vec![]).unwrap_err();
        assert!(err.to_string().contains("`us`"), "{err}");
    }

    #[test]
    fn placement_round_trips() {
        let s = line();
        let r = pair(4);
        let f = Flow::from_hosts(&s, vec![n(3), n(2)], 4).unwrap();
        let e = Embedding::new(&s, &r, vec![n(3), n(2)], vec![LinkEmbedding::unsplit(f)]).unwrap();
        let p = e.placement(&s, &r);
        let json = serde_json::to_string(&p).unwrap();
        let back: Placement = serde_json::from_str(&json).unwrap();
        assert_eq!(back.resolve(&s, &r).unwrap(), e);
        let mut wrong = p.clone();
        wrong.nodes.insert("x".into(), "zz".into());
        assert!(
            wrong
                .resolve(&s, &r)
                .unwrap_err()
                .to_string()
                .contains("zz")
        );
    }
}
