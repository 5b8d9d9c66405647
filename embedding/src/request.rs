//! A virtual network request: virtual nodes with demands and placement constraints, virtual links
//! with bandwidth demands, and per-request options.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::substrate::NodeKind;

/// Per-request embedding options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Several virtual nodes of this request may share one substrate node (a link between two
    /// co-located virtual nodes then uses no substrate bandwidth).
    #[serde(default)]
    pub allow_revisitation: bool,
    /// A virtual link may be carried by several substrate paths whose bandwidths sum to its demand.
    #[serde(default)]
    pub allow_path_split: bool,
    /// Longest substrate path (in hops) of any virtual link; `None`: no limit.
    #[serde(default)]
    pub max_path_hops: Option<u32>,
    /// At most this many of the request's nodes on one host.
    #[serde(default)]
    pub max_nodes_per_host: Option<u32>,
    /// As few nodes per host as the hosts allow: [`crate::embed_spread`] searches the smallest
    /// `max_nodes_per_host` the algorithm meets.
    #[serde(default)]
    pub spread: bool,
}

impl RequestOptions {
    /// Sets [`RequestOptions::allow_revisitation`].
    pub fn with_revisitation(mut self, allow: bool) -> Self {
        self.allow_revisitation = allow;
        self
    }

    /// Sets [`RequestOptions::allow_path_split`].
    pub fn with_path_split(mut self, allow: bool) -> Self {
        self.allow_path_split = allow;
        self
    }

    /// Sets [`RequestOptions::max_path_hops`] (`0` or `None`: no limit).
    pub fn with_max_path_hops(mut self, hops: Option<u32>) -> Self {
        self.max_path_hops = hops.filter(|h| *h > 0);
        self
    }

    pub fn with_max_nodes_per_host(mut self, n: Option<u32>) -> Self {
        self.max_nodes_per_host = n.filter(|n| *n > 0);
        self
    }

    pub fn with_spread(mut self, spread: bool) -> Self {
        self.spread = spread;
        self
    }
}

/// A virtual node of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtualNode {
    /// Id, unique within the request.
    pub id: String,
    /// CPU demand (0 is legal).
    pub cpu: u64,
    /// Memory demand in MiB (0 is legal).
    pub memory_mb: u64,
    /// What realises the node; the host must support it.
    pub kind: NodeKind,
    /// The node must land on this substrate node.
    pub pinned_host: Option<String>,
    /// The node must land on one of these substrate nodes.
    pub candidates: Option<BTreeSet<String>>,
    /// The host must carry this label.
    pub location: Option<String>,
}

impl VirtualNode {
    /// A network-namespace node with a CPU demand and no constraints.
    pub fn new(id: impl Into<String>, cpu: u64) -> Self {
        VirtualNode {
            id: id.into(),
            cpu,
            memory_mb: 0,
            kind: NodeKind::Netns,
            pinned_host: None,
            candidates: None,
            location: None,
        }
    }

    /// Sets the memory demand (MiB).
    pub fn with_memory_mb(mut self, memory_mb: u64) -> Self {
        self.memory_mb = memory_mb;
        self
    }

    /// Sets the node kind.
    pub fn with_kind(mut self, kind: NodeKind) -> Self {
        self.kind = kind;
        self
    }

    /// Pins the node to a substrate node id.
    pub fn pinned_to(mut self, host: impl Into<String>) -> Self {
        self.pinned_host = Some(host.into());
        self
    }

    /// Restricts the node to a set of substrate node ids.
    pub fn with_candidates(mut self, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.candidates = Some(hosts.into_iter().map(Into::into).collect());
        self
    }

    /// Requires a location label on the host.
    pub fn with_location(mut self, label: impl Into<String>) -> Self {
        self.location = Some(label.into());
        self
    }
}

/// A virtual link between two virtual nodes (indices into [`VnRequest::nodes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VirtualLink {
    /// Index of the first endpoint.
    pub u: usize,
    /// Index of the second endpoint.
    pub v: usize,
    /// Bandwidth demand (0 is legal).
    pub bandwidth: u64,
    /// Largest one-way latency of its substrate path, microseconds (links' `latency_ms`).
    pub max_delay_us: Option<u64>,
}

/// Why a request could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A virtual node id is empty.
    #[error("virtual node with an empty id")]
    EmptyId,
    /// Two virtual nodes share an id.
    #[error("virtual node `{0}` is defined twice")]
    DuplicateNode(String),
    /// A link names a node that does not exist.
    #[error("virtual link {u}-{v}: unknown virtual node `{missing}`")]
    UnknownNode {
        /// First endpoint as given.
        u: String,
        /// Second endpoint as given.
        v: String,
        /// The endpoint that does not exist.
        missing: String,
    },
    /// A link joins a node to itself.
    #[error("virtual link {0}-{0} joins a node to itself")]
    SelfLoop(String),
    /// Two links join the same pair of nodes.
    #[error("virtual link {u}-{v} is defined twice")]
    DuplicateLink {
        /// First endpoint.
        u: String,
        /// Second endpoint.
        v: String,
    },
    /// The request has no node.
    #[error("the request has no virtual node")]
    Empty,
    /// The request graph is not connected.
    #[error(
        "the request is not connected: virtual node `{unreachable}` cannot be reached from `{from}`"
    )]
    Disconnected {
        /// The node the search started from.
        from: String,
        /// A node it did not reach.
        unreachable: String,
    },
}

/// A virtual network request.
#[derive(Clone, Debug, Default)]
pub struct VnRequest {
    id: String,
    nodes: Vec<VirtualNode>,
    links: Vec<VirtualLink>,
    options: RequestOptions,
    by_id: HashMap<String, usize>,
    adjacency: Vec<Vec<(usize, usize)>>,
}

impl VnRequest {
    /// An empty request called `id` with default options.
    pub fn new(id: impl Into<String>) -> Self {
        VnRequest {
            id: id.into(),
            ..Self::default()
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RequestOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the options.
    pub fn set_options(&mut self, options: RequestOptions) {
        self.options = options;
    }

    /// Adds a virtual node; returns its index.
    pub fn add_node(&mut self, node: VirtualNode) -> Result<usize, RequestError> {
        if node.id.is_empty() {
            return Err(RequestError::EmptyId);
        }
        if self.by_id.contains_key(&node.id) {
            return Err(RequestError::DuplicateNode(node.id));
        }
        let i = self.nodes.len();
        self.by_id.insert(node.id.clone(), i);
        self.nodes.push(node);
        self.adjacency.push(Vec::new());
        Ok(i)
    }

    /// Adds a virtual link between the nodes called `u` and `v`; returns its index.
    pub fn add_link(&mut self, u: &str, v: &str, bandwidth: u64) -> Result<usize, RequestError> {
        let unknown = |missing: &str| RequestError::UnknownNode {
            u: u.to_owned(),
            v: v.to_owned(),
            missing: missing.to_owned(),
        };
        let iu = self.find(u).ok_or_else(|| unknown(u))?;
        let iv = self.find(v).ok_or_else(|| unknown(v))?;
        if iu == iv {
            return Err(RequestError::SelfLoop(u.to_owned()));
        }
        if self.adjacency[iu].iter().any(|(n, _)| *n == iv) {
            return Err(RequestError::DuplicateLink {
                u: u.to_owned(),
                v: v.to_owned(),
            });
        }
        let l = self.links.len();
        self.links.push(VirtualLink {
            u: iu,
            v: iv,
            bandwidth,
            max_delay_us: None,
        });
        self.adjacency[iu].push((iv, l));
        self.adjacency[iv].push((iu, l));
        Ok(l)
    }

    /// The request id.
    /// Bounds the one-way latency of link `l`'s substrate path (`None`: no bound).
    pub fn set_max_delay_us(&mut self, l: usize, max: Option<u64>) {
        if let Some(link) = self.links.get_mut(l) {
            link.max_delay_us = max;
        }
    }

    /// The request with `max_nodes_per_host` set to `n`.
    pub fn with_nodes_per_host(&self, n: u32) -> Self {
        let mut r = self.clone();
        r.options.max_nodes_per_host = Some(n);
        r
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Virtual nodes in insertion order.
    pub fn nodes(&self) -> &[VirtualNode] {
        &self.nodes
    }

    /// Virtual links in insertion order.
    pub fn links(&self) -> &[VirtualLink] {
        &self.links
    }

    /// The options.
    pub fn options(&self) -> &RequestOptions {
        &self.options
    }

    /// Index of the virtual node called `id`.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Neighbours of virtual node `i` with the joining link index.
    pub fn neighbors(&self, i: usize) -> &[(usize, usize)] {
        &self.adjacency[i]
    }

    /// Display name of link `l`: `u-v` with the node ids.
    pub fn link_name(&self, l: usize) -> String {
        let link = &self.links[l];
        format!("{}-{}", self.nodes[link.u].id, self.nodes[link.v].id)
    }

    /// Sum of CPU demands.
    pub fn total_cpu(&self) -> u64 {
        self.nodes.iter().map(|n| n.cpu).sum()
    }

    /// Sum of bandwidth demands.
    pub fn total_bandwidth(&self) -> u64 {
        self.links.iter().map(|l| l.bandwidth).sum()
    }

    /// Revenue of the request: sum of CPU plus sum of bandwidth demands.
    pub fn revenue(&self) -> u64 {
        self.total_cpu() + self.total_bandwidth()
    }

    /// Checks that the request has at least one node and that its graph is connected.
    pub fn ensure_connected(&self) -> Result<(), RequestError> {
        if self.nodes.is_empty() {
            return Err(RequestError::Empty);
        }
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(i) = stack.pop() {
            for &(n, _) in &self.adjacency[i] {
                if !seen[n] {
                    seen[n] = true;
                    stack.push(n);
                }
            }
        }
        match seen.iter().position(|s| !s) {
            None => Ok(()),
            Some(i) => Err(RequestError::Disconnected {
                from: self.nodes[0].id.clone(),
                unreachable: self.nodes[i].id.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_links_by_name() {
        let mut r = VnRequest::new("vn");
        r.add_node(VirtualNode::new("x", 3)).unwrap();
        r.add_node(VirtualNode::new("y", 4)).unwrap();
        let l = r.add_link("x", "y", 7).unwrap();
        assert_eq!(r.links()[l].u, 0);
        assert_eq!(r.link_name(l), "x-y");
        assert_eq!(r.revenue(), 14);
        assert!(r.ensure_connected().is_ok());
        assert!(matches!(
            r.add_link("y", "x", 1),
            Err(RequestError::DuplicateLink { .. })
        ));
        assert!(matches!(
            r.add_link("x", "q", 1),
            Err(RequestError::UnknownNode { missing, .. }) if missing == "q"
        ));
        assert_eq!(
            r.add_link("x", "x", 1),
            Err(RequestError::SelfLoop("x".into()))
        );
    }

    #[test]
    fn detects_disconnection() {
        let mut r = VnRequest::new("vn");
        assert_eq!(r.ensure_connected(), Err(RequestError::Empty));
        for id in ["a", "b", "c"] {
            r.add_node(VirtualNode::new(id, 1)).unwrap();
        }
        r.add_link("a", "b", 1).unwrap();
        let err = r.ensure_connected().unwrap_err();
        assert!(err.to_string().contains("`c`"), "{err}");
    }

    #[test]
    fn zero_hops_means_unlimited() {
        let o = RequestOptions::default().with_max_path_hops(Some(0));
        assert_eq!(o.max_path_hops, None);
    }
}
