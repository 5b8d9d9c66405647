//! GRC: global resource capacity node ranking with shortest-path link mapping — the baseline.
//!
//! Follows Gong, Wang, Zhu, Qi and Liao, "Toward profit-seeking virtual network embedding
//! algorithm via global resource capacity", INFOCOM 2014, as re-implemented by the Virne benchmark.
//!
//! - Ranking: for a graph with node resources `c` (normalised to sum 1) and link weights `w`, the
//!   GRC vector is the fixed point of `r = (1 - d) c + d M r` with `M[i][j] = w(i,j) / sum_k
//!   w(k,j)` and damping `d = 0.85`, found by power iteration until the L2 change is below `eps`.
//!   Substrate ranks use residual CPU and residual bandwidth, virtual ranks use CPU and bandwidth
//!   demands.
//! - Node mapping: virtual nodes in decreasing rank, each on the highest-ranked host that still
//!   fits it (and is not already used by the request unless revisitation is allowed).
//! - Link mapping: virtual links in request order, each on a fewest-hop path of the
//!   bandwidth-feasible graph (links with enough residual bandwidth after the request's earlier
//!   links); every path of that graph fits, so the first of the k shortest is taken. No
//!   backtracking: a failure rejects the request.
//!
//! Input: residual state and request. Output: an unsplit embedding or the first failing virtual
//! node or link. Complexity: `O(I (n + m))` for the ranking (`I` iterations, typically < 50),
//! `O(k n)` for node mapping, `O(l (n + m))` for `l` virtual links.

use petgraph::graph::NodeIndex;

use crate::algo::paths::{Bfs, Path, PathFailure, k_shortest_paths, within_delay};
use crate::algo::{Work, allowed_matrix, assemble, candidate_hosts, no_path};
use crate::embedder::Embedder;
use crate::mapping::Embedding;
use crate::rejection::Rejection;
use crate::request::VnRequest;
use crate::residual::Residual;

/// How the node-ranking baselines route virtual links once the nodes are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStrategy {
    /// The `k` fewest-hop simple paths of the whole substrate (Yen), the first whose links all
    /// have the bandwidth (Virne's default `k_shortest`, k = 10).
    KShortest(usize),
    /// The fewest-hop path of the bandwidth-feasible graph (never misses a feasible path).
    Feasible,
}

/// The GRC algorithm (see the module docs).
#[derive(Clone, Debug)]
pub struct Grc {
    /// Damping factor `d`.
    pub damping: f64,
    /// Convergence threshold of the power iteration.
    pub epsilon: f64,
    /// Link mapping.
    pub links: LinkStrategy,
}

impl Default for Grc {
    fn default() -> Self {
        Grc {
            damping: 0.85,
            epsilon: 1e-5,
            links: LinkStrategy::KShortest(10),
        }
    }
}

/// GRC vector of a graph with `n` nodes, node resources `c` and weighted undirected edges.
pub fn grc_vector(
    c: &[f64],
    edges: &[(usize, usize, f64)],
    damping: f64,
    epsilon: f64,
) -> Vec<f64> {
    let n = c.len();
    let total: f64 = c.iter().sum();
    let c: Vec<f64> = if total > 0.0 {
        c.iter().map(|x| x / total).collect()
    } else {
        vec![1.0 / n.max(1) as f64; n]
    };
    let mut strength = vec![0.0; n];
    for &(i, j, w) in edges {
        strength[i] += w;
        strength[j] += w;
    }
    let mut r = c.clone();
    let mut next = vec![0.0; n];
    for _ in 0..1000 {
        for (x, ci) in next.iter_mut().zip(&c) {
            *x = (1.0 - damping) * ci;
        }
        for &(i, j, w) in edges {
            if strength[j] > 0.0 {
                next[i] += damping * w / strength[j] * r[j];
            }
            if strength[i] > 0.0 {
                next[j] += damping * w / strength[i] * r[i];
            }
        }
        let delta: f64 = next
            .iter()
            .zip(&r)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        std::mem::swap(&mut r, &mut next);
        if delta < epsilon {
            break;
        }
    }
    r
}

impl Grc {
    /// GRC rank of every substrate host on the current residual capacities.
    pub fn substrate_ranks(&self, residual: &Residual) -> Vec<f64> {
        let s = residual.substrate();
        let c: Vec<f64> = residual.cpus().iter().map(|&x| x as f64).collect();
        let bw = residual.bandwidths();
        let edges: Vec<_> = s
            .link_indices()
            .map(|e| {
                let (a, b) = s.endpoints(e);
                (a.index(), b.index(), bw[e.index()] as f64)
            })
            .collect();
        grc_vector(&c, &edges, self.damping, self.epsilon)
    }

    /// GRC rank of every virtual node of `request`.
    pub fn request_ranks(&self, request: &VnRequest) -> Vec<f64> {
        let c: Vec<f64> = request.nodes().iter().map(|n| n.cpu as f64).collect();
        let edges: Vec<_> = request
            .links()
            .iter()
            .map(|l| (l.u, l.v, l.bandwidth as f64))
            .collect();
        grc_vector(&c, &edges, self.damping, self.epsilon)
    }
}

/// Indices `0..ranks.len()` by decreasing rank, ties by index.
pub(crate) fn by_rank(ranks: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ranks.len()).collect();
    order.sort_by(|&a, &b| ranks[b].total_cmp(&ranks[a]).then(a.cmp(&b)));
    order
}

/// Greedy two-stage mapping shared by the node-ranking baselines: virtual nodes in `v_order`,
/// each on the first host of `s_order` that fits; then shortest feasible paths.
pub(crate) fn two_stage(
    residual: &Residual,
    request: &VnRequest,
    v_order: &[usize],
    s_order: &[usize],
    strategy: LinkStrategy,
) -> Result<Embedding, Rejection> {
    let s = residual.substrate();
    let allowed = allowed_matrix(s.node_count(), &candidate_hosts(residual, request)?);
    let mut work = Work::new(residual);
    let mut hosts = vec![NodeIndex::new(0); request.nodes().len()];
    for &i in v_order {
        let h = s_order
            .iter()
            .map(|&k| NodeIndex::new(k))
            .find(|&h| allowed[i][h.index()] && work.fits(request, i, h))
            .ok_or_else(|| {
                work.no_host_for(
                    request,
                    i,
                    s.node_indices().filter(|h| allowed[i][h.index()]),
                )
            })?;
        work.place(request, i, h);
        hosts[i] = h;
    }
    let mut bfs = Bfs::default();
    let mut paths = Vec::with_capacity(request.links().len());
    let max_hops = request.options().max_path_hops;
    for (l, vl) in request.links().iter().enumerate() {
        let (a, b) = (hosts[vl.u], hosts[vl.v]);
        let found = match strategy {
            LinkStrategy::Feasible => {
                bfs.shortest(s, &work.bandwidth, vl.bandwidth, a, b, max_hops)
            }
            LinkStrategy::KShortest(k) => {
                let candidates = k_shortest_paths(s, a, b, k);
                let fits = |p: &&Path| {
                    max_hops.is_none_or(|m| p.1.len() <= m as usize)
                        && p.1
                            .iter()
                            .all(|e| work.bandwidth[e.index()] >= vl.bandwidth)
                };
                match candidates.iter().find(fits) {
                    Some(p) => Ok(p.clone()),
                    None if candidates
                        .iter()
                        .any(|p| max_hops.is_none_or(|m| p.1.len() <= m as usize))
                        || max_hops.is_none() =>
                    {
                        Err(PathFailure::Bandwidth)
                    }
                    None => Err(PathFailure::Hops),
                }
            }
        };
        let found = within_delay(
            s,
            &work.bandwidth,
            vl.bandwidth,
            (a, b),
            (vl.max_delay_us, max_hops),
            found,
        );
        match found {
            Ok(p) => {
                work.route(&p.1, vl.bandwidth);
                paths.push(p);
            }
            Err(f) => return Err(no_path(s, request, l, a, b, f.into())),
        }
    }
    assemble(s, request, hosts, paths)
}

impl Embedder for Grc {
    fn name(&self) -> &str {
        match self.links {
            LinkStrategy::KShortest(_) => "grc",
            LinkStrategy::Feasible => "grc-feasible",
        }
    }

    fn embed(&self, residual: &Residual, request: &VnRequest) -> Result<Embedding, Rejection> {
        let v_order = by_rank(&self.request_ranks(request));
        let s_order = by_rank(&self.substrate_ranks(residual));
        two_stage(residual, request, &v_order, &s_order, self.links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::tests::line;
    use crate::rejection::Resource;
    use crate::request::VirtualNode;
    use std::sync::Arc;

    #[test]
    fn ranks_are_a_distribution_favouring_big_nodes() {
        let r = grc_vector(&[1.0, 3.0], &[(0, 1, 1.0)], 0.85, 1e-9);
        assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        assert!(r[1] > r[0]);
    }

    #[test]
    fn embeds_a_pair_on_adjacent_hosts() {
        let res = Residual::new(Arc::new(line()));
        let mut req = VnRequest::new("r");
        req.add_node(VirtualNode::new("x", 5)).unwrap();
        req.add_node(VirtualNode::new("y", 5)).unwrap();
        req.add_link("x", "y", 5).unwrap();
        let e = Grc::default().embed(&res, &req).unwrap();
        assert_ne!(e.host(0), e.host(1));
        let mut res2 = res.clone();
        let token = res2.commit(&req, &e).unwrap();
        res2.release(token).unwrap();
        assert!(res2.is_full());
    }

    #[test]
    fn names_the_node_that_does_not_fit() {
        let res = Residual::new(Arc::new(line()));
        let mut req = VnRequest::new("r");
        req.add_node(VirtualNode::new("big", 11)).unwrap();
        let err = Grc::default().embed(&res, &req).unwrap_err();
        assert!(
            matches!(err, Rejection::Node { ref node, resource: Resource::Cpu, .. } if node == "big"),
            "{err}"
        );
    }
}
