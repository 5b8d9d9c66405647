//! The substrate: hosts (capacities, node kinds, labels) joined by links (bandwidth, latency).
//!
//! A [`Substrate`] is an undirected [`petgraph`] graph without self-loops or parallel links. It is
//! built programmatically (the controller, from registered hosts or from a parent VN's virtual
//! topology for recursion) or parsed from a trace ([`crate::trace`]). Once wrapped in an
//! [`std::sync::Arc`] by a [`crate::Residual`] it is immutable; capacities that change over time
//! live in the residual state.

use std::collections::{BTreeSet, HashMap};

use petgraph::graph::{EdgeIndex, NodeIndex, UnGraph};
use serde::{Deserialize, Serialize};

/// What realises a virtual node on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A Linux network namespace.
    Netns,
    /// A QEMU guest.
    Vm,
}

impl NodeKind {
    /// Every kind, in a fixed order.
    pub const ALL: [NodeKind; 2] = [NodeKind::Netns, NodeKind::Vm];

    /// Lower-case name, as in the JSON formats.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Netns => "netns",
            NodeKind::Vm => "vm",
        }
    }
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host of the substrate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubstrateNode {
    /// Unique id (the host id, or a parent VN's node name for recursion).
    pub id: String,
    /// CPU capacity in abstract units (100 = one core in the controller; unit-less in traces).
    pub cpu: u64,
    /// Memory capacity in MiB.
    pub memory_mb: u64,
    /// Node kinds this host can realise.
    pub kinds: BTreeSet<NodeKind>,
    /// Location and other labels a virtual node may require.
    pub labels: BTreeSet<String>,
}

impl SubstrateNode {
    /// A host with `cpu` capacity, no memory, every node kind and no labels.
    pub fn new(id: impl Into<String>, cpu: u64) -> Self {
        SubstrateNode {
            id: id.into(),
            cpu,
            memory_mb: 0,
            kinds: NodeKind::ALL.into_iter().collect(),
            labels: BTreeSet::new(),
        }
    }

    /// Sets the memory capacity (MiB).
    pub fn with_memory_mb(mut self, memory_mb: u64) -> Self {
        self.memory_mb = memory_mb;
        self
    }

    /// Replaces the set of node kinds the host can realise.
    pub fn with_kinds(mut self, kinds: impl IntoIterator<Item = NodeKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.labels.insert(label.into());
        self
    }
}

/// A link of the substrate.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SubstrateLink {
    /// Bandwidth capacity (Mbit/s in the controller; unit-less in traces).
    pub bandwidth: u64,
    /// One-way latency in milliseconds, when known.
    pub latency_ms: Option<f64>,
}

impl SubstrateLink {
    /// A link of `bandwidth` capacity without latency information.
    pub fn new(bandwidth: u64) -> Self {
        SubstrateLink {
            bandwidth,
            latency_ms: None,
        }
    }

    /// Sets the latency (ms).
    pub fn with_latency_ms(mut self, latency_ms: f64) -> Self {
        self.latency_ms = Some(latency_ms);
        self
    }
}

/// Why a substrate could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubstrateError {
    /// A host id is empty.
    #[error("substrate node with an empty id")]
    EmptyId,
    /// Two hosts share an id.
    #[error("substrate node `{0}` is defined twice")]
    DuplicateNode(String),
    /// A link names a host that does not exist.
    #[error("substrate link {a}-{b}: unknown node `{missing}`")]
    UnknownNode {
        /// First endpoint as given.
        a: String,
        /// Second endpoint as given.
        b: String,
        /// The endpoint that does not exist.
        missing: String,
    },
    /// A link joins a host to itself.
    #[error("substrate link {0}-{0} joins a node to itself")]
    SelfLoop(String),
    /// Two links join the same pair of hosts.
    #[error("substrate link {a}-{b} is defined twice")]
    DuplicateLink {
        /// First endpoint.
        a: String,
        /// Second endpoint.
        b: String,
    },
}

/// The substrate graph.
///
/// Node and edge indices are dense (`0..node_count()`, `0..link_count()`) and stable: nodes and
/// links are only ever added. They index the vectors of a [`crate::Residual`].
#[derive(Clone, Debug, Default)]
pub struct Substrate {
    graph: UnGraph<SubstrateNode, SubstrateLink>,
    by_id: HashMap<String, NodeIndex>,
    adjacency: Vec<Vec<(NodeIndex, EdgeIndex)>>,
}

impl Substrate {
    /// An empty substrate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a host; its id must be new and non-empty.
    pub fn add_node(&mut self, node: SubstrateNode) -> Result<NodeIndex, SubstrateError> {
        if node.id.is_empty() {
            return Err(SubstrateError::EmptyId);
        }
        if self.by_id.contains_key(&node.id) {
            return Err(SubstrateError::DuplicateNode(node.id));
        }
        let id = node.id.clone();
        let index = self.graph.add_node(node);
        self.by_id.insert(id, index);
        self.adjacency.push(Vec::new());
        Ok(index)
    }

    /// Adds a link between two existing, distinct hosts that are not yet linked.
    pub fn add_link(
        &mut self,
        a: &str,
        b: &str,
        link: SubstrateLink,
    ) -> Result<EdgeIndex, SubstrateError> {
        let unknown = |missing: &str| SubstrateError::UnknownNode {
            a: a.to_owned(),
            b: b.to_owned(),
            missing: missing.to_owned(),
        };
        let ia = self.find(a).ok_or_else(|| unknown(a))?;
        let ib = self.find(b).ok_or_else(|| unknown(b))?;
        if ia == ib {
            return Err(SubstrateError::SelfLoop(a.to_owned()));
        }
        if self.graph.find_edge(ia, ib).is_some() {
            return Err(SubstrateError::DuplicateLink {
                a: a.to_owned(),
                b: b.to_owned(),
            });
        }
        let e = self.graph.add_edge(ia, ib, link);
        self.adjacency[ia.index()].push((ib, e));
        self.adjacency[ib.index()].push((ia, e));
        Ok(e)
    }

    /// The underlying petgraph graph (read-only).
    pub fn graph(&self) -> &UnGraph<SubstrateNode, SubstrateLink> {
        &self.graph
    }

    /// Number of hosts.
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Number of links.
    pub fn link_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// True when the substrate has no host.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// The host at `n`. Panics when `n` is out of range.
    pub fn node(&self, n: NodeIndex) -> &SubstrateNode {
        &self.graph[n]
    }

    /// The link at `e`. Panics when `e` is out of range.
    pub fn link(&self, e: EdgeIndex) -> &SubstrateLink {
        &self.graph[e]
    }

    /// Endpoints of link `e`. Panics when `e` is out of range.
    pub fn endpoints(&self, e: EdgeIndex) -> (NodeIndex, NodeIndex) {
        self.graph
            .edge_endpoints(e)
            .expect("edge index out of range")
    }

    /// Index of the host called `id`.
    pub fn find(&self, id: &str) -> Option<NodeIndex> {
        self.by_id.get(id).copied()
    }

    /// The link between `a` and `b`, if any.
    pub fn find_link(&self, a: NodeIndex, b: NodeIndex) -> Option<EdgeIndex> {
        self.adjacency
            .get(a.index())?
            .iter()
            .find(|(n, _)| *n == b)
            .map(|(_, e)| *e)
    }

    /// Neighbours of `n` with the joining link, in insertion order.
    pub fn neighbors(&self, n: NodeIndex) -> &[(NodeIndex, EdgeIndex)] {
        &self.adjacency[n.index()]
    }

    /// All host indices in order.
    pub fn node_indices(&self) -> impl ExactSizeIterator<Item = NodeIndex> + '_ {
        self.graph.node_indices()
    }

    /// All link indices in order.
    pub fn link_indices(&self) -> impl ExactSizeIterator<Item = EdgeIndex> + '_ {
        self.graph.edge_indices()
    }

    /// Sum of the CPU capacities.
    pub fn total_cpu(&self) -> u64 {
        self.graph.node_weights().map(|n| n.cpu).sum()
    }

    /// Sum of the link bandwidths.
    pub fn total_bandwidth(&self) -> u64 {
        self.graph.edge_weights().map(|l| l.bandwidth).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triangle() -> Substrate {
        let mut s = Substrate::new();
        for (id, cpu) in [("a", 10), ("b", 20), ("c", 30)] {
            s.add_node(SubstrateNode::new(id, cpu)).unwrap();
        }
        s.add_link("a", "b", SubstrateLink::new(5)).unwrap();
        s.add_link("b", "c", SubstrateLink::new(6)).unwrap();
        s
    }

    #[test]
    fn builds_and_indexes() {
        let s = triangle();
        assert_eq!(s.node_count(), 3);
        assert_eq!(s.link_count(), 2);
        let a = s.find("a").unwrap();
        let b = s.find("b").unwrap();
        let c = s.find("c").unwrap();
        assert_eq!(s.find_link(b, a), s.find_link(a, b));
        assert!(s.find_link(a, c).is_none());
        assert_eq!(s.neighbors(b).len(), 2);
        assert_eq!(s.total_cpu(), 60);
        assert_eq!(s.total_bandwidth(), 11);
        assert_eq!(s.node(c).kinds.len(), 2);
    }

    #[test]
    fn rejects_bad_graphs() {
        let mut s = triangle();
        assert_eq!(
            s.add_node(SubstrateNode::new("a", 1)),
            Err(SubstrateError::DuplicateNode("a".into()))
        );
        assert_eq!(
            s.add_node(SubstrateNode::new("", 1)),
            Err(SubstrateError::EmptyId)
        );
        assert!(matches!(
            s.add_link("a", "zz", SubstrateLink::new(1)),
            Err(SubstrateError::UnknownNode { missing, .. }) if missing == "zz"
        ));
        assert_eq!(
            s.add_link("a", "a", SubstrateLink::new(1)),
            Err(SubstrateError::SelfLoop("a".into()))
        );
        assert!(matches!(
            s.add_link("b", "a", SubstrateLink::new(1)),
            Err(SubstrateError::DuplicateLink { .. })
        ));
        let msg = s
            .add_link("a", "q", SubstrateLink::new(1))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown node `q`"), "{msg}");
    }
}
