//! LACE (link-aware coordinated embedding): the flagship.
//!
//! Node and link mapping in one search (as in coordinated VNE, Chowdhury et al., ToN 2012), done as
//! a beam search over partial embeddings with incremental link feasibility:
//!
//! 1. Virtual nodes are ordered so that each one has as many links as possible to nodes before it
//!    (start at the highest-degree node; then the node with most links, then most bandwidth, to the
//!    placed ones). Every placement is therefore immediately constrained by its routed links.
//! 2. The beam holds up to `beam_width` partial embeddings, each with its own copy of the
//!    residual capacities. Expanding a partial embedding by the next virtual node `v`:
//!    - candidate hosts are pre-scored by `sum_u bw(u,v) x hops(host(u), h)` using one BFS per
//!      already-placed neighbour `u` on the graph of links that still have `bw(u,v)` free; the
//!      `candidates` best (fewest bandwidth-hops; ties: more free CPU) are expanded. For the first
//!      node, hosts are ranked by free CPU x free incident bandwidth and `roots` of them are
//!      tried;
//!    - each link to a placed neighbour is routed (heaviest first) on the cheapest path under
//!      the weight `1 + link_balance x bw / free(e)` per link (fewest hops first; among
//!      equal-length paths the least loaded, ViNEYard-style load balancing), reserving its
//!      bandwidth in the child's copy so later links see it.
//!    - a child's score is the sum of its links' weighted bandwidth-hops plus
//!      `node_balance x sum cpu(v) / free cpu(host)`.
//! 3. The `beam_width` best children survive; the best complete embedding wins. If the beam dies,
//!    the search is retried once with a wider beam (`retry_width`) before the request is
//!    rejected with the virtual node or link that could not be placed.
//!
//! Honours all request options: constraints (kind, pin, candidates, location) through the
//! candidate lists, revisitation (co-located links cost nothing), hop limits (paths longer than
//! the limit are replaced by the hop-minimal path or rejected); it never splits paths (a valid
//! answer also when splitting is allowed).
//!
//! Input: residual state and request (`k` virtual nodes, `l` links). Output: an unsplit
//! embedding or a typed rejection. Complexity: `O(k W (d (n + m) + C d (n + m) log n))` with beam
//! width `W`, `C` candidates per partial embedding and `d` the largest virtual degree; in
//! practice a few milliseconds on a 100-node substrate.

use petgraph::graph::NodeIndex;

use crate::algo::paths::{Bfs, Dijkstra, Path, within_delay};
use crate::algo::{Work, assemble, candidate_hosts, no_path};
use crate::embedder::Embedder;
use crate::mapping::Embedding;
use crate::rejection::{Rejection, Resource};
use crate::request::VnRequest;
use crate::residual::Residual;

/// The LACE algorithm (see the module docs).
#[derive(Clone, Debug)]
pub struct Lace {
    /// Partial embeddings kept per level.
    pub beam_width: usize,
    /// Hosts tried per partial embedding and level.
    pub candidates: usize,
    /// Hosts tried for the first virtual node.
    pub roots: usize,
    /// Weight of link load in the path cost.
    pub link_balance: f64,
    /// Weight of host load in the score.
    pub node_balance: f64,
    /// Beam width of the second attempt when the first finds nothing (0: no retry).
    pub retry_width: usize,
}

/// Defaults chosen with `examples/lace_sweep.rs` on four of the shared traces (s0, s3333, s6666,
/// s9999 at rate 0.14; means): beam 8 / 6 candidates / 16 roots without host balancing gave
/// acceptance 0.980, R/C 0.871 at 1.7 ms per request; beam 32 / 10 / 32 with `node_balance` 20
/// gives 0.991 and 0.883 at about 10 ms (p95 about 30 ms); beam 64 / 12 / 48 adds 0.002 and 0.01
/// for 2.5x the time. `link_balance` 0..1 and a retry with a wider beam changed nothing
/// measurable. Generalisation is checked on generated workloads by `deploy/bench/embedding.sh`.
impl Default for Lace {
    fn default() -> Self {
        Lace {
            beam_width: 32,
            candidates: 10,
            roots: 32,
            link_balance: 0.3,
            node_balance: 20.0,
            retry_width: 0,
        }
    }
}

#[derive(Clone, Debug)]
struct State {
    hosts: Vec<Option<NodeIndex>>,
    work: Work,
    paths: Vec<Option<Path>>,
    bw_hops: u64,
    score: f64,
}

/// Order of virtual nodes: highest degree first, then always the node with the most links (then
/// most bandwidth) to the nodes already ordered.
pub(crate) fn node_order(request: &VnRequest) -> Vec<usize> {
    let k = request.nodes().len();
    let strength: Vec<u64> = (0..k)
        .map(|i| {
            request
                .neighbors(i)
                .iter()
                .map(|&(_, l)| request.links()[l].bandwidth)
                .sum::<u64>()
                + request.nodes()[i].cpu
        })
        .collect();
    let mut placed = vec![false; k];
    let mut order = Vec::with_capacity(k);
    while order.len() < k {
        let best = (0..k)
            .filter(|&i| !placed[i])
            .max_by_key(|&i| {
                let (mut cnt, mut bw) = (0usize, 0u64);
                for &(j, l) in request.neighbors(i) {
                    if placed[j] {
                        cnt += 1;
                        bw += request.links()[l].bandwidth;
                    }
                }
                (
                    cnt,
                    bw,
                    request.neighbors(i).len(),
                    strength[i],
                    std::cmp::Reverse(i),
                )
            })
            .expect("an unplaced node remains");
        placed[best] = true;
        order.push(best);
    }
    order
}

/// Why the last level of the beam produced nothing.
enum Failure {
    /// No host left for a node, with why (in the best state of the level before).
    NoHost(Rejection),
    Link(usize, NodeIndex, NodeIndex, Resource),
}

/// One search: the request on the residual, its candidate hosts, and the path finders and
/// distance buffers that every expansion reuses.
struct Search<'a> {
    lace: &'a Lace,
    residual: &'a Residual,
    request: &'a VnRequest,
    cands: &'a [Vec<NodeIndex>],
    max_hops: Option<u32>,
    bfs: Bfs,
    dijkstra: Dijkstra,
    /// Per placed neighbour of the node being placed: BFS hop distances from its host.
    dist_buf: Vec<Vec<u32>>,
}

/// The hosts a partial embedding may place a node on, best first.
struct Scored {
    hosts: Vec<(f64, NodeIndex)>,
    /// Some host fits the node's own demands.
    fit_any: bool,
    /// A host was reachable, but only over more hops than the request allows.
    hops_blocked: bool,
}

impl Lace {
    fn search(
        &self,
        residual: &Residual,
        request: &VnRequest,
        cands: &[Vec<NodeIndex>],
        order: &[usize],
        width: usize,
    ) -> Result<State, Failure> {
        let mut search = Search {
            lace: self,
            residual,
            request,
            cands,
            max_hops: request.options().max_path_hops,
            bfs: Bfs::default(),
            dijkstra: Dijkstra::default(),
            dist_buf: Vec::new(),
        };
        let mut beam = vec![State {
            hosts: vec![None; request.nodes().len()],
            work: Work::new(residual),
            paths: vec![None; request.links().len()],
            bw_hops: 0,
            score: 0.0,
        }];
        for (level, &v) in order.iter().enumerate() {
            let mut next: Vec<State> = Vec::new();
            // Which link failed, if one did; else no host was left (said at the end).
            let mut failure: Option<Failure> = None;
            for st in &beam {
                search.expand(level, v, st, &mut next, &mut failure);
            }
            if next.is_empty() {
                return Err(failure.unwrap_or_else(|| {
                    Failure::NoHost(
                        beam[0]
                            .work
                            .no_host_for(request, v, cands[v].iter().copied()),
                    )
                }));
            }
            next.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.bw_hops.cmp(&b.bw_hops)));
            if level > 0 {
                next.truncate(width);
            }
            beam = next;
        }
        Ok(beam.swap_remove(0))
    }
}

impl Search<'_> {
    /// The children of `st` that place virtual node `v` (the `level`-th of the order), pushed
    /// onto `next`; a link that could not be routed is recorded in `failure`.
    fn expand(
        &mut self,
        level: usize,
        v: usize,
        st: &State,
        next: &mut Vec<State>,
        failure: &mut Option<Failure>,
    ) {
        let (s, request) = (self.residual.substrate(), self.request);
        let mut nbrs: Vec<(usize, usize, u64)> = request
            .neighbors(v)
            .iter()
            .filter(|(u, _)| st.hosts[*u].is_some())
            .map(|&(u, l)| (u, l, request.links()[l].bandwidth))
            .collect();
        nbrs.sort_by_key(|&(_, l, bw)| (std::cmp::Reverse(bw), l));
        self.dist_buf.resize(nbrs.len(), Vec::new());
        for (j, &(u, _, bw)) in nbrs.iter().enumerate() {
            let from = st.hosts[u].expect("placed");
            let d = self.bfs.distances(s, &st.work.bandwidth, bw, from);
            self.dist_buf[j].clear();
            self.dist_buf[j].extend_from_slice(d);
        }
        let scored = self.score_hosts(v, st, &nbrs);
        let take = if level == 0 {
            self.lace.roots
        } else {
            self.lace.candidates
        };
        if scored.fit_any
            && scored.hosts.is_empty()
            && failure.is_none()
            && let Some(&(u, l, _)) = nbrs.first()
        {
            // hosts fit the node, but none is reachable over its heaviest link
            let from = st.hosts[u].expect("placed");
            let r = if scored.hops_blocked {
                Resource::Hops
            } else {
                Resource::Bandwidth
            };
            *failure = Some(Failure::Link(l, from, from, r));
        }
        for &(_, h) in scored.hosts.iter().take(take) {
            match self.child(v, st, h, &nbrs) {
                Ok(child) => next.push(child),
                Err(f) => *failure = Some(f),
            }
        }
    }

    /// Pre-scores the candidate hosts of `v` in `st`: bandwidth-hops to the placed neighbours
    /// `nbrs` (ties: more free CPU); for the first node free CPU x free incident bandwidth.
    fn score_hosts(&self, v: usize, st: &State, nbrs: &[(usize, usize, u64)]) -> Scored {
        let s = self.residual.substrate();
        let mut scored = Scored {
            hosts: Vec::new(),
            fit_any: false,
            hops_blocked: false,
        };
        for &h in &self.cands[v] {
            if !st.work.fits(self.request, v, h) {
                continue;
            }
            scored.fit_any = true;
            let hi = h.index();
            let free_cpu = st.work.cpu[hi] as f64;
            let score = if nbrs.is_empty() {
                let free_bw: u64 = s
                    .neighbors(h)
                    .iter()
                    .map(|(_, e)| st.work.bandwidth[e.index()])
                    .sum();
                -(free_cpu * free_bw as f64)
            } else {
                let mut sc = 0.0;
                let mut ok = true;
                for (j, &(_, _, bw)) in nbrs.iter().enumerate() {
                    let d = self.dist_buf[j][hi];
                    if d == u32::MAX || self.max_hops.is_some_and(|m| d > m) {
                        scored.hops_blocked |= d != u32::MAX;
                        ok = false;
                        break;
                    }
                    sc += (bw.max(1) * d as u64) as f64;
                }
                if !ok {
                    continue;
                }
                sc - free_cpu * 1e-6
            };
            scored.hosts.push((score, h));
        }
        scored
            .hosts
            .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        scored
    }

    /// `st` with `v` placed on `h` and its links to the placed neighbours `nbrs` routed
    /// (heaviest first), scored; or the link that could not be routed.
    fn child(
        &mut self,
        v: usize,
        st: &State,
        h: NodeIndex,
        nbrs: &[(usize, usize, u64)],
    ) -> Result<State, Failure> {
        let (s, request) = (self.residual.substrate(), self.request);
        let link_balance = self.lace.link_balance;
        let mut child = st.clone();
        child.work.place(request, v, h);
        child.hosts[v] = Some(h);
        for &(u, l, bw) in nbrs {
            // route in the link's own direction: host(link.u) -> host(link.v)
            let (from, h) = if request.links()[l].u == u {
                (child.hosts[u].expect("placed"), h)
            } else {
                (h, child.hosts[u].expect("placed"))
            };
            let bwf = bw as f64;
            let work = &child.work;
            let found = self.dijkstra.cheapest(s, from, h, |e| {
                let free = work.bandwidth[e.index()];
                (free >= bw).then(|| {
                    1.0 + if bw == 0 {
                        0.0
                    } else {
                        link_balance * bwf / free as f64
                    }
                })
            });
            let (path, cost) = match found {
                Some((p, c)) if self.max_hops.is_none_or(|m| p.1.len() <= m as usize) => (p, c),
                Some(_) | None => {
                    match self
                        .bfs
                        .shortest(s, &child.work.bandwidth, bw, from, h, self.max_hops)
                    {
                        Ok(p) => {
                            let c = p.1.len() as f64;
                            (p, c)
                        }
                        Err(f) => return Err(Failure::Link(l, from, h, f.into())),
                    }
                }
            };
            let (path, cost) = match request.links()[l].max_delay_us {
                None => (path, cost),
                Some(_) => {
                    let found = within_delay(
                        s,
                        &child.work.bandwidth,
                        bw,
                        (from, h),
                        (request.links()[l].max_delay_us, self.max_hops),
                        Ok(path),
                    );
                    match found {
                        Ok(p) => {
                            let c = cost.max(p.1.len() as f64);
                            (p, c)
                        }
                        Err(f) => return Err(Failure::Link(l, from, h, f.into())),
                    }
                }
            };
            child.work.route(&path.1, bw);
            child.bw_hops += bw * path.1.len() as u64;
            child.score += bwf.max(1.0) * cost;
            child.paths[l] = Some(path);
        }
        let vn = &request.nodes()[v];
        if self.lace.node_balance > 0.0 && vn.cpu > 0 {
            child.score += self.lace.node_balance * vn.cpu as f64 / (st.work.cpu[h.index()] as f64);
        }
        Ok(child)
    }
}

impl Embedder for Lace {
    fn name(&self) -> &str {
        "lace"
    }

    fn embed(&self, residual: &Residual, request: &VnRequest) -> Result<Embedding, Rejection> {
        let s = residual.substrate();
        let cands = candidate_hosts(residual, request)?;
        let order = node_order(request);
        let mut result = self.search(residual, request, &cands, &order, self.beam_width);
        if result.is_err() && self.retry_width > self.beam_width {
            result = self.search(residual, request, &cands, &order, self.retry_width);
        }
        match result {
            Ok(st) => {
                let hosts = st.hosts.into_iter().map(|h| h.expect("complete")).collect();
                let paths = st
                    .paths
                    .into_iter()
                    .enumerate()
                    .map(|(l, p)| {
                        p.ok_or_else(|| {
                            Rejection::Solver(format!(
                                "internal: link {} left unrouted",
                                request.link_name(l)
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                assemble(s, request, hosts, paths)
            }
            Err(Failure::NoHost(no_host)) => Err(no_host),
            Err(Failure::Link(l, a, b, r)) => Err(no_path(s, request, l, a, b, r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::tests::{chain, line};
    use crate::request::{RequestOptions, VirtualNode};
    use std::sync::Arc;

    #[test]
    fn order_follows_links() {
        let mut r = VnRequest::new("r");
        for id in ["a", "b", "c", "d"] {
            r.add_node(VirtualNode::new(id, 1)).unwrap();
        }
        r.add_link("a", "b", 1).unwrap();
        r.add_link("b", "c", 1).unwrap();
        r.add_link("c", "d", 1).unwrap();
        r.add_link("b", "d", 5).unwrap();
        let o = node_order(&r);
        assert_eq!(o[0], 1, "b has the highest degree");
        assert_eq!(o[1], 3, "d: heaviest link to b");
        assert_eq!(o[2], 2, "c: two links to placed nodes");
    }

    #[test]
    fn places_adjacent_nodes_on_adjacent_hosts() {
        let res = Residual::new(Arc::new(line()));
        let r = chain();
        let e = Lace::default().embed(&res, &r).unwrap();
        assert_eq!(e.cost(), 12 + 10, "both links one hop");
    }

    #[test]
    fn co_locates_with_revisitation() {
        let res = Residual::new(Arc::new(line()));
        let mut r =
            VnRequest::new("r").with_options(RequestOptions::default().with_revisitation(true));
        r.add_node(VirtualNode::new("x", 4)).unwrap();
        r.add_node(VirtualNode::new("y", 4)).unwrap();
        r.add_link("x", "y", 20).unwrap();
        let e = Lace::default().embed(&res, &r).unwrap();
        assert_eq!(e.host(0), e.host(1), "20 bandwidth fits no link: co-locate");
        assert_eq!(e.cost(), 8);
    }

    #[test]
    fn rejects_with_the_link_at_fault() {
        let res = Residual::new(Arc::new(line()));
        let mut r = VnRequest::new("r");
        r.add_node(VirtualNode::new("x", 1)).unwrap();
        r.add_node(VirtualNode::new("y", 1)).unwrap();
        r.add_link("x", "y", 11).unwrap();
        let err = Lace::default().embed(&res, &r).unwrap_err();
        assert!(
            matches!(err, Rejection::Link { ref link, resource: Resource::Bandwidth, .. } if link == "x-y"),
            "{err}"
        );
    }
}
