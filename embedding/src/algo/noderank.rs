//! NodeRank and the two algorithms built on it, RW-MaxMatch and RW-BFS.
//!
//! Follows Cheng, Su, Zhang, Wang, Wang, Liang and Chen, "Virtual network embedding through
//! topology-aware node ranking", ACM SIGCOMM CCR 41(2), 2011.
//!
//! - NodeRank: every node gets `H(u) = cpu(u) x sum of the bandwidth of its links` (residual for
//!   the substrate, demands for a request). A random walk that from `u` jumps to any node `v` with
//!   probability `p_jump x H(v) / sum H` and forwards to a neighbour `v` with probability
//!   `(1 - p_jump) x H(v) / sum of H over u's neighbours` has a stationary distribution found by
//!   power iteration from `H / sum H` until the L1 change is below `epsilon`: the node's rank.
//!   `O(I (n + m))`.
//! - RW-MaxMatch: virtual nodes in decreasing rank, each on the highest-ranked host that fits
//!   (greedy max-match of the two rankings); then link mapping like the GRC baseline (first
//!   bandwidth-feasible path among the `k` shortest, Virne's default). Two stages, no backtracking.
//! - RW-BFS: virtual nodes in breadth-first order of a tree rooted at the highest-ranked virtual
//!   node (children by decreasing rank). Each node goes on the highest-ranked host that fits and
//!   from which every link to an already-mapped neighbour has a bandwidth-feasible shortest path of
//!   at most `max_distance` hops (routed at once); when no host qualifies the search backtracks to
//!   the previous node's next host, at most `backtracks` times. `O(k n (n + m))` without
//!   backtracking.

use petgraph::graph::NodeIndex;

use crate::algo::grc::{LinkStrategy, by_rank, two_stage};
use crate::algo::paths::{Bfs, Path, within_delay};
use crate::algo::{Work, allowed_matrix, assemble, candidate_hosts, no_path};
use crate::embedder::Embedder;
use crate::mapping::Embedding;
use crate::rejection::{Rejection, Resource};
use crate::request::VnRequest;
use crate::residual::Residual;

/// NodeRank parameters.
#[derive(Clone, Debug)]
pub struct NodeRank {
    /// Probability of a jump (the paper's `p^J`).
    pub p_jump: f64,
    /// Convergence threshold (L1).
    pub epsilon: f64,
}

impl Default for NodeRank {
    fn default() -> Self {
        NodeRank {
            p_jump: 0.15,
            epsilon: 1e-6,
        }
    }
}

impl NodeRank {
    /// Stationary ranks of a graph with node weights `h` and adjacency `adj`.
    pub fn ranks(&self, h: &[f64], adj: &[Vec<usize>]) -> Vec<f64> {
        let n = h.len();
        if n == 0 {
            return Vec::new();
        }
        let total: f64 = h.iter().sum();
        let h: Vec<f64> = if total > 0.0 {
            h.to_vec()
        } else {
            vec![1.0; n]
        };
        let total: f64 = h.iter().sum();
        let nbr_sum: Vec<f64> = adj
            .iter()
            .map(|ns| ns.iter().map(|&v| h[v]).sum())
            .collect();
        let mut r: Vec<f64> = h.iter().map(|x| x / total).collect();
        let mut next = vec![0.0; n];
        for _ in 0..1000 {
            // mass that jumps: p_jump of everything, plus all of nodes that cannot forward
            let mut jump = 0.0;
            for u in 0..n {
                jump += if nbr_sum[u] > 0.0 {
                    self.p_jump * r[u]
                } else {
                    r[u]
                };
            }
            for (v, x) in next.iter_mut().enumerate() {
                *x = jump * h[v] / total;
            }
            for u in 0..n {
                if nbr_sum[u] > 0.0 {
                    let fwd = (1.0 - self.p_jump) * r[u] / nbr_sum[u];
                    for &v in &adj[u] {
                        next[v] += fwd * h[v];
                    }
                }
            }
            let delta: f64 = next.iter().zip(&r).map(|(a, b)| (a - b).abs()).sum();
            std::mem::swap(&mut r, &mut next);
            if delta < self.epsilon {
                break;
            }
        }
        r
    }

    /// Ranks of the substrate hosts on residual capacities.
    pub fn substrate_ranks(&self, residual: &Residual) -> Vec<f64> {
        let s = residual.substrate();
        let bw = residual.bandwidths();
        let h: Vec<f64> = s
            .node_indices()
            .map(|u| {
                let b: u64 = s.neighbors(u).iter().map(|(_, e)| bw[e.index()]).sum();
                residual.cpu(u) as f64 * b as f64
            })
            .collect();
        let adj: Vec<Vec<usize>> = s
            .node_indices()
            .map(|u| s.neighbors(u).iter().map(|(v, _)| v.index()).collect())
            .collect();
        self.ranks(&h, &adj)
    }

    /// Ranks of the virtual nodes of `request`.
    pub fn request_ranks(&self, request: &VnRequest) -> Vec<f64> {
        let k = request.nodes().len();
        let h: Vec<f64> = (0..k)
            .map(|i| {
                let b: u64 = request
                    .neighbors(i)
                    .iter()
                    .map(|&(_, l)| request.links()[l].bandwidth)
                    .sum();
                request.nodes()[i].cpu as f64 * b as f64
            })
            .collect();
        let adj: Vec<Vec<usize>> = (0..k)
            .map(|i| request.neighbors(i).iter().map(|&(j, _)| j).collect())
            .collect();
        self.ranks(&h, &adj)
    }
}

/// RW-MaxMatch (see the module docs).
#[derive(Clone, Debug)]
pub struct RwMaxMatch {
    /// Ranking parameters.
    pub rank: NodeRank,
    /// Link mapping.
    pub links: LinkStrategy,
}

impl Default for RwMaxMatch {
    fn default() -> Self {
        RwMaxMatch {
            rank: NodeRank::default(),
            links: LinkStrategy::KShortest(10),
        }
    }
}

impl Embedder for RwMaxMatch {
    fn name(&self) -> &str {
        "rw-maxmatch"
    }

    fn embed(&self, residual: &Residual, request: &VnRequest) -> Result<Embedding, Rejection> {
        let v_order = by_rank(&self.rank.request_ranks(request));
        let s_order = by_rank(&self.rank.substrate_ranks(residual));
        two_stage(residual, request, &v_order, &s_order, self.links)
    }
}

/// RW-BFS (see the module docs).
#[derive(Clone, Debug)]
pub struct RwBfs {
    /// Ranking parameters.
    pub rank: NodeRank,
    /// Longest path (hops) of a link to an already-mapped neighbour.
    pub max_distance: u32,
    /// Backtracking budget per request.
    pub backtracks: usize,
}

impl Default for RwBfs {
    fn default() -> Self {
        RwBfs {
            rank: NodeRank::default(),
            max_distance: 4,
            backtracks: 20,
        }
    }
}

/// Breadth-first order from the highest-ranked node, children by decreasing rank; nodes of
/// other components follow, each component from its best-ranked node.
fn bfs_order(request: &VnRequest, ranks: &[f64]) -> Vec<usize> {
    let k = request.nodes().len();
    let mut seen = vec![false; k];
    let mut order = Vec::with_capacity(k);
    for root in by_rank(ranks) {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        let mut queue = std::collections::VecDeque::from([root]);
        while let Some(x) = queue.pop_front() {
            order.push(x);
            let mut children: Vec<usize> = request
                .neighbors(x)
                .iter()
                .map(|&(j, _)| j)
                .filter(|&j| !seen[j])
                .collect();
            children.sort_by(|&a, &b| ranks[b].total_cmp(&ranks[a]).then(a.cmp(&b)));
            for c in children {
                seen[c] = true;
                queue.push_back(c);
            }
        }
    }
    order
}

/// A link that found no path: (link, from, to, what was lacking).
type LinkFailure = (usize, NodeIndex, NodeIndex, Resource);

struct Search<'a> {
    residual: &'a Residual,
    request: &'a VnRequest,
    order: Vec<usize>,
    s_order: Vec<NodeIndex>,
    allowed: Vec<Vec<bool>>,
    hop_limit: u32,
    budget: usize,
    bfs: Bfs,
    hosts: Vec<Option<NodeIndex>>,
    paths: Vec<Option<Path>>,
    /// First failure seen at the deepest level reached: (level, the link that found no path, or
    /// why no host was left for the level's node).
    failure: Option<(usize, Result<LinkFailure, Rejection>)>,
}

impl Search<'_> {
    /// Maps `order[level..]`; `true` on success (state left in `hosts`/`paths`).
    fn go(&mut self, level: usize, work: &Work) -> bool {
        let Some(&v) = self.order.get(level) else {
            return true;
        };
        let s = self.residual.substrate();
        let request = self.request;
        let max_hops = Some(match request.options().max_path_hops {
            Some(m) => m.min(self.hop_limit),
            None => self.hop_limit,
        });
        let mut last_link_failure = None;
        let mut tried_any = false;
        for idx in 0..self.s_order.len() {
            let h = self.s_order[idx];
            if !self.allowed[v][h.index()] || !work.fits(request, v, h) {
                continue;
            }
            if tried_any {
                // moving on to another host after a failed subtree costs budget
                if self.budget == 0 {
                    break;
                }
                self.budget -= 1;
            }
            tried_any = true;
            let mut child = work.clone();
            child.place(request, v, h);
            let mut routed = Vec::new();
            let mut ok = true;
            for &(u, l) in request.neighbors(v) {
                let Some(hu) = self.hosts[u] else { continue };
                let vl = &request.links()[l];
                let (a, b) = if vl.u == u { (hu, h) } else { (h, hu) };
                let found = self
                    .bfs
                    .shortest(s, &child.bandwidth, vl.bandwidth, a, b, max_hops);
                match within_delay(
                    s,
                    &child.bandwidth,
                    vl.bandwidth,
                    (a, b),
                    (vl.max_delay_us, max_hops),
                    found,
                ) {
                    Ok(p) => {
                        child.route(&p.1, vl.bandwidth);
                        routed.push((l, p));
                    }
                    Err(f) => {
                        last_link_failure = Some((l, a, b, f.into()));
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                continue;
            }
            self.hosts[v] = Some(h);
            for (l, p) in routed {
                self.paths[l] = Some(p);
            }
            if self.go(level + 1, &child) {
                return true;
            }
            self.hosts[v] = None;
            for &(_, l) in request.neighbors(v) {
                self.paths[l] = None;
            }
        }
        if self.failure.as_ref().is_none_or(|f| level > f.0) {
            let why = last_link_failure.ok_or_else(|| {
                let allowed = &self.allowed[v];
                work.no_host_for(request, v, s.node_indices().filter(|h| allowed[h.index()]))
            });
            self.failure = Some((level, why));
        }
        false
    }
}

impl Embedder for RwBfs {
    fn name(&self) -> &str {
        "rw-bfs"
    }

    fn embed(&self, residual: &Residual, request: &VnRequest) -> Result<Embedding, Rejection> {
        let s = residual.substrate();
        let allowed = allowed_matrix(s.node_count(), &candidate_hosts(residual, request)?);
        let mut search = Search {
            residual,
            request,
            order: bfs_order(request, &self.rank.request_ranks(request)),
            s_order: by_rank(&self.rank.substrate_ranks(residual))
                .into_iter()
                .map(NodeIndex::new)
                .collect(),
            allowed,
            hop_limit: self.max_distance.max(1),
            budget: self.backtracks,
            bfs: Bfs::default(),
            hosts: vec![None; request.nodes().len()],
            paths: vec![None; request.links().len()],
            failure: None,
        };
        if search.go(0, &Work::new(residual)) {
            let hosts = search.hosts.iter().map(|h| h.expect("mapped")).collect();
            let paths = search
                .paths
                .into_iter()
                .map(|p| p.expect("routed"))
                .collect();
            return assemble(s, request, hosts, paths);
        }
        Err(match search.failure {
            Some((_, Ok((l, a, b, r)))) => no_path(s, request, l, a, b, r),
            Some((_, Err(no_host))) => no_host,
            None => Rejection::Infeasible {
                resource: Resource::Cpu,
                reason: "no mapping found".into(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::tests::{chain, line};
    use crate::request::VirtualNode;
    use std::sync::Arc;

    #[test]
    fn ranks_sum_to_one_and_favour_rich_hubs() {
        // star: centre 0 with three leaves
        let adj = vec![vec![1, 2, 3], vec![0], vec![0], vec![0]];
        let r = NodeRank::default().ranks(&[3.0, 1.0, 1.0, 1.0], &adj);
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        assert!(r[0] > r[1] && (r[1] - r[2]).abs() < 1e-9);
    }

    #[test]
    fn both_variants_embed_a_path_request() {
        let res = Residual::new(Arc::new(line()));
        let r = chain();
        for algo in [
            Box::new(RwMaxMatch::default()) as Box<dyn Embedder>,
            Box::new(RwBfs::default()),
        ] {
            let e = algo.embed(&res, &r).unwrap();
            res.check(&r, &e).unwrap();
        }
        // RW-BFS takes the best-ranked host within max_distance, not the nearest one
        let e = RwBfs {
            max_distance: 1,
            ..RwBfs::default()
        }
        .embed(&res, &r)
        .unwrap();
        assert_eq!(e.cost(), 12 + 10);
    }

    #[test]
    fn rw_bfs_backtracks() {
        // x (cpu 9) fits anywhere but y, z need the two hosts next to it: on the line a-b-c-d
        // with max_distance 1, x must end on b or c.
        let res = Residual::new(Arc::new(line()));
        let mut r = VnRequest::new("r");
        r.add_node(VirtualNode::new("x", 9)).unwrap();
        r.add_node(VirtualNode::new("y", 1)).unwrap();
        r.add_node(VirtualNode::new("z", 1)).unwrap();
        r.add_link("x", "y", 1).unwrap();
        r.add_link("x", "z", 1).unwrap();
        let algo = RwBfs {
            max_distance: 1,
            ..RwBfs::default()
        };
        let e = algo.embed(&res, &r).unwrap();
        assert!([1, 2].contains(&e.host(0).index()));
        assert_eq!(e.cost(), 11 + 2);
    }
}
