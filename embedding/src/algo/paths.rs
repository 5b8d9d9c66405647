//! Shortest paths on the bandwidth-feasible graph.
//!
//! The feasible graph for a demand `b` keeps the substrate links whose residual bandwidth is at
//! least `b`; every path in it can carry the demand, so the shortest one (fewest hops, hence
//! lowest cost `b x hops`) is the natural link mapping (Yu et al., CCR 2008; Gong et al. 2014).

use std::collections::VecDeque;

use petgraph::graph::{EdgeIndex, NodeIndex};

use crate::substrate::Substrate;

/// Reusable buffers for breadth-first search.
#[derive(Clone, Debug, Default)]
pub struct Bfs {
    parent: Vec<Option<(NodeIndex, EdgeIndex)>>,
    dist: Vec<u32>,
    queue: VecDeque<NodeIndex>,
}

/// Why no path was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathFailure {
    /// The hosts are not connected in the feasible graph.
    Bandwidth,
    /// Connected, but only by paths longer than the hop limit.
    Hops,
}

impl Bfs {
    /// Fewest-hop path from `src` to `dst` over links with `bandwidth[e] >= need`, at most
    /// `max_hops` long. Ties are broken by adjacency order (deterministic). `O(n + m)`.
    pub fn shortest(
        &mut self,
        substrate: &Substrate,
        bandwidth: &[u64],
        need: u64,
        src: NodeIndex,
        dst: NodeIndex,
        max_hops: Option<u32>,
    ) -> Result<(Vec<NodeIndex>, Vec<EdgeIndex>), PathFailure> {
        if src == dst {
            return Ok((vec![src], Vec::new()));
        }
        let n = substrate.node_count();
        self.parent.clear();
        self.parent.resize(n, None);
        self.dist.clear();
        self.dist.resize(n, u32::MAX);
        self.queue.clear();
        self.dist[src.index()] = 0;
        self.queue.push_back(src);
        'search: while let Some(x) = self.queue.pop_front() {
            let d = self.dist[x.index()];
            for &(y, e) in substrate.neighbors(x) {
                if bandwidth[e.index()] < need || self.dist[y.index()] != u32::MAX {
                    continue;
                }
                self.dist[y.index()] = d + 1;
                self.parent[y.index()] = Some((x, e));
                if y == dst {
                    break 'search;
                }
                self.queue.push_back(y);
            }
        }
        let d = self.dist[dst.index()];
        if d == u32::MAX {
            return Err(PathFailure::Bandwidth);
        }
        if max_hops.is_some_and(|m| d > m) {
            return Err(PathFailure::Hops);
        }
        let mut hosts = vec![dst];
        let mut edges = Vec::with_capacity(d as usize);
        let mut at = dst;
        while let Some((p, e)) = self.parent[at.index()] {
            hosts.push(p);
            edges.push(e);
            at = p;
            if at == src {
                break;
            }
        }
        hosts.reverse();
        edges.reverse();
        Ok((hosts, edges))
    }

    /// Hop distance from `src` to every host over links with `bandwidth[e] >= need`
    /// (`u32::MAX`: unreachable). `O(n + m)`.
    pub fn distances(
        &mut self,
        substrate: &Substrate,
        bandwidth: &[u64],
        need: u64,
        src: NodeIndex,
    ) -> &[u32] {
        let n = substrate.node_count();
        self.dist.clear();
        self.dist.resize(n, u32::MAX);
        self.queue.clear();
        self.dist[src.index()] = 0;
        self.queue.push_back(src);
        while let Some(x) = self.queue.pop_front() {
            let d = self.dist[x.index()];
            for &(y, e) in substrate.neighbors(x) {
                if bandwidth[e.index()] >= need && self.dist[y.index()] == u32::MAX {
                    self.dist[y.index()] = d + 1;
                    self.queue.push_back(y);
                }
            }
        }
        &self.dist
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substrate::{SubstrateLink, SubstrateNode};

    #[test]
    fn avoids_thin_links_and_respects_hop_limit() {
        // square a-b-c-d-a with a thin a-b link
        let mut s = Substrate::new();
        for id in ["a", "b", "c", "d"] {
            s.add_node(SubstrateNode::new(id, 1)).unwrap();
        }
        s.add_link("a", "b", SubstrateLink::new(1)).unwrap();
        s.add_link("b", "c", SubstrateLink::new(9)).unwrap();
        s.add_link("c", "d", SubstrateLink::new(9)).unwrap();
        s.add_link("d", "a", SubstrateLink::new(9)).unwrap();
        let bw: Vec<u64> = s.graph().edge_weights().map(|l| l.bandwidth).collect();
        let mut bfs = Bfs::default();
        let (a, b) = (NodeIndex::new(0), NodeIndex::new(1));
        let (hosts, edges) = bfs.shortest(&s, &bw, 1, a, b, None).unwrap();
        assert_eq!(hosts, vec![a, b]);
        assert_eq!(edges.len(), 1);
        let (hosts, _) = bfs.shortest(&s, &bw, 5, a, b, None).unwrap();
        assert_eq!(hosts.len(), 4, "detour a-d-c-b");
        assert_eq!(
            bfs.shortest(&s, &bw, 5, a, b, Some(2)),
            Err(PathFailure::Hops)
        );
        assert_eq!(
            bfs.shortest(&s, &bw, 10, a, b, None),
            Err(PathFailure::Bandwidth)
        );
        assert_eq!(bfs.distances(&s, &bw, 5, a), &[0, 3, 2, 1]);
    }
}
