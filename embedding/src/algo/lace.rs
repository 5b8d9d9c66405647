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

use std::cell::RefCell;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;

use petgraph::graph::NodeIndex;

use crate::algo::paths::{Bfs, Dijkstra, LevelBfs, Path, within_delay};
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

/// A partial embedding: where its nodes are and how its links run. What it holds is derived
/// from these (applied to the search's one dense copy of the residual while it is expanded),
/// so a child costs a few pointers, not a copy of every capacity.
#[derive(Clone, Debug)]
struct State {
    hosts: Vec<Option<NodeIndex>>,
    paths: Vec<Option<Rc<Path>>>,
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

/// The `width` lowest child scores of a level so far, to cut what cannot be among them.
struct Bound {
    width: usize,
    /// A max-heap of those scores.
    best: BinaryHeap<Score>,
}

/// A score ordered by [`f64::total_cmp`].
#[derive(Clone, Copy, PartialEq)]
struct Score(f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Bound {
    /// Keeps the `width` best (0: cuts nothing).
    fn new(width: usize) -> Self {
        Bound {
            width,
            best: BinaryHeap::with_capacity(width + 1),
        }
    }

    /// Records a child's score.
    fn add(&mut self, score: f64) {
        if self.width == 0 {
            return;
        }
        self.best.push(Score(score));
        if self.best.len() > self.width {
            self.best.pop();
        }
    }

    /// True when `width` children scored below `score` (strictly): nothing scored at least
    /// `score` survives the level (ties are ordered by more than the score, so they stay).
    fn cuts(&self, score: f64) -> bool {
        self.best.len() == self.width
            && self.width > 0
            && self.best.peek().is_some_and(|w| w.0 < score)
    }
}

/// Why the last level of the beam produced nothing.
enum Failure {
    /// No host left for a node, with why (in the best state of the level before).
    NoHost(Rejection),
    Link(usize, NodeIndex, NodeIndex, Resource),
}

/// One search: the request on the residual, its candidate hosts, the path finders, and the
/// one dense copy of the residual capacities that reflects the partial embedding being expanded.
struct Search<'a> {
    lace: &'a Lace,
    residual: &'a Residual,
    request: &'a VnRequest,
    cands: &'a [Vec<NodeIndex>],
    max_hops: Option<u32>,
    bfs: Bfs,
    dijkstra: Dijkstra,
    /// The residual minus what the state being expanded holds (see [`Search::apply`]).
    work: Work,
    /// Per placed neighbour of the node being placed: the search for hop distances from its
    /// host over the links with the neighbour link's bandwidth free, and whether it runs on the
    /// residual itself (else on the dense copy, valid while the state is scored).
    dist_buf: Vec<(Rc<RefCell<LevelBfs>>, bool)>,
    /// Those searches on the residual itself, by (host, bandwidth): shared by every state whose
    /// own reservations leave that feasible graph unchanged, grown as far as any needed.
    dist_cache: HashMap<(NodeIndex, u64), Rc<RefCell<LevelBfs>>>,
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
            work: Work::new(residual),
            dist_buf: Vec::new(),
            dist_cache: HashMap::new(),
        };
        let mut beam = vec![State {
            hosts: vec![None; request.nodes().len()],
            paths: vec![None; request.links().len()],
            bw_hops: 0,
            score: 0.0,
        }];
        for (level, &v) in order.iter().enumerate() {
            let mut next: Vec<State> = Vec::new();
            // Which link failed, if one did; else no host was left (said at the end).
            let mut failure: Option<Failure> = None;
            // Below the first level only the `width` best children survive: once that many
            // exist, a state or child whose score (a lower bound on its children's, as every
            // term added is non-negative) is above the `width`-th best is cut without routing
            // more of its links. Cut ones would be sorted out below, so the beam is the same.
            let mut bound = Bound::new(if level > 0 { width } else { 0 });
            for st in &beam {
                if bound.cuts(st.score) {
                    continue;
                }
                search.expand(level, v, st, &mut next, &mut failure, &mut bound);
            }
            if next.is_empty() {
                return Err(failure.unwrap_or_else(|| {
                    search.apply(&beam[0], true);
                    let why = search
                        .work
                        .no_host_for(request, v, cands[v].iter().copied());
                    search.apply(&beam[0], false);
                    Failure::NoHost(why)
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
    /// Takes what `st` holds out of the dense copy (`hold`), or gives it back.
    fn apply(&mut self, st: &State, hold: bool) {
        let request = self.request;
        for (v, h) in st.hosts.iter().enumerate() {
            match (h, hold) {
                (Some(h), true) => self.work.place(request, v, *h),
                (Some(h), false) => self.work.unplace(request, v, *h),
                (None, _) => {}
            }
        }
        for (l, p) in st.paths.iter().enumerate() {
            let (Some(p), bw) = (p, request.links()[l].bandwidth) else {
                continue;
            };
            if hold {
                self.work.route(&p.1, bw);
            } else {
                self.work.unroute(&p.1, bw);
            }
        }
    }

    /// The search for hop distances from `from` over the links with `need` bandwidth free in
    /// the dense copy (which holds `st`): the cached one on the residual when none of `st`'s own
    /// reservations took a link below `need` (the same graph), else a fresh one.
    fn distances(
        &mut self,
        st: &State,
        from: NodeIndex,
        need: u64,
    ) -> (Rc<RefCell<LevelBfs>>, bool) {
        let (base, work) = (self.residual.bandwidths(), &self.work.bandwidth);
        let n = self.residual.substrate().node_count();
        let unchanged = st.paths.iter().flatten().all(|p| {
            p.1.iter()
                .all(|e| base[e.index()] < need || work[e.index()] >= need)
        });
        if !unchanged {
            return (Rc::new(RefCell::new(LevelBfs::new(n, from, need))), false);
        }
        let bfs = self
            .dist_cache
            .entry((from, need))
            .or_insert_with(|| Rc::new(RefCell::new(LevelBfs::new(n, from, need))));
        (bfs.clone(), true)
    }

    /// Each neighbour's search, with the bandwidths it runs on (the residual's, or the partial
    /// embedding's).
    fn searches(&self) -> impl Iterator<Item = (std::cell::RefMut<'_, LevelBfs>, &[u64])> {
        self.dist_buf.iter().map(|(bfs, on_residual)| {
            let bw: &[u64] = if *on_residual {
                self.residual.bandwidths()
            } else {
                &self.work.bandwidth
            };
            (bfs.borrow_mut(), bw)
        })
    }

    /// Grows every neighbour's search to at least `depth` levels (or its end). Scoring asks
    /// for no more than it needs (the best hosts are exact whatever the depth), but a search
    /// that has settled only its source leaves every host inexact: starting deeper saves the
    /// rounds that would find that out.
    fn grow_to(&self, depth: u32) {
        let s = self.residual.substrate();
        for (mut b, bw) in self.searches() {
            while b.depth() < depth && !b.is_complete() {
                b.grow(s, bw);
            }
        }
    }

    /// Grows every neighbour's search by a level (`all`: to the end); false when all were
    /// complete already.
    fn grow(&self, all: bool) -> bool {
        let s = self.residual.substrate();
        let mut grew = false;
        for (mut b, bw) in self.searches() {
            grew |= !b.is_complete();
            if all {
                b.finish(s, bw);
            } else {
                b.grow(s, bw);
            }
        }
        grew
    }

    /// The children of `st` that place virtual node `v` (the `level`-th of the order), pushed
    /// onto `next` unless `bound` cuts them; a link that could not be routed is recorded in
    /// `failure`.
    fn expand(
        &mut self,
        level: usize,
        v: usize,
        st: &State,
        next: &mut Vec<State>,
        failure: &mut Option<Failure>,
        bound: &mut Bound,
    ) {
        let request = self.request;
        self.apply(st, true);
        let mut nbrs: Vec<(usize, usize, u64)> = request
            .neighbors(v)
            .iter()
            .filter(|(u, _)| st.hosts[*u].is_some())
            .map(|&(u, l)| (u, l, request.links()[l].bandwidth))
            .collect();
        nbrs.sort_by_key(|&(_, l, bw)| (std::cmp::Reverse(bw), l));
        self.dist_buf.clear();
        for &(u, _, bw) in &nbrs {
            let d = self.distances(st, st.hosts[u].expect("placed"), bw);
            self.dist_buf.push(d);
        }
        if self.max_hops.is_some() {
            // a hop limit needs exact distances to tell "too far" from "unreachable"
            self.grow(true);
        } else {
            self.grow_to(2);
        }
        let take = if level == 0 {
            self.lace.roots
        } else {
            self.lace.candidates
        };
        let scored = self.score_hosts(v, &nbrs, take);
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
        for &(_, h) in &scored.hosts {
            match self.child(v, st, h, &nbrs, bound) {
                Ok(Some(child)) => {
                    bound.add(child.score);
                    next.push(child);
                }
                Ok(None) => {}
                Err(f) => *failure = Some(f),
            }
        }
        self.apply(st, false);
    }

    /// The `take` best candidate hosts of `v` in the state held by the dense copy:
    /// bandwidth-hops to the placed neighbours `nbrs` (ties: more free CPU); for the first node
    /// free CPU x free incident bandwidth. The neighbours' searches grow a level at a time until
    /// the best `take` are known exactly: a host some search has not reached yet counts with a
    /// lower bound, so once all of the best are exact no other host can beat them.
    fn score_hosts(&self, v: usize, nbrs: &[(usize, usize, u64)], take: usize) -> Scored {
        loop {
            let (scored, exact) = self.score_once(v, nbrs, take);
            if exact || !self.grow(false) {
                return scored;
            }
        }
    }

    /// One round of [`Search::score_hosts`] with the searches as far as they are; true when
    /// every host returned has an exact score.
    fn score_once(&self, v: usize, nbrs: &[(usize, usize, u64)], take: usize) -> (Scored, bool) {
        let (s, work) = (self.residual.substrate(), &self.work);
        let dists: Vec<_> = self.dist_buf.iter().map(|(b, _)| b.borrow()).collect();
        let mut scored = Scored {
            hosts: Vec::new(),
            fit_any: false,
            hops_blocked: false,
        };
        let mut inexact: Vec<bool> = Vec::new();
        for &h in &self.cands[v] {
            if !work.fits(self.request, v, h) {
                continue;
            }
            scored.fit_any = true;
            let hi = h.index();
            let free_cpu = work.cpu[hi] as f64;
            let mut exact = true;
            let score = if nbrs.is_empty() {
                let free_bw: u64 = s
                    .neighbors(h)
                    .iter()
                    .map(|(_, e)| work.bandwidth[e.index()])
                    .sum();
                -(free_cpu * free_bw as f64)
            } else {
                let mut sc = 0.0;
                let mut ok = true;
                for (j, &(_, _, bw)) in nbrs.iter().enumerate() {
                    let (d, known) = dists[j].lower(h);
                    exact &= known;
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
            inexact.push(!exact);
        }
        // the `take` best, in order (a total order: the same as sorting all and cutting)
        let mut idx: Vec<usize> = (0..scored.hosts.len()).collect();
        let hosts = &scored.hosts;
        let order = |a: &usize, b: &usize| {
            let (x, y) = (&hosts[*a], &hosts[*b]);
            x.0.total_cmp(&y.0).then(x.1.cmp(&y.1))
        };
        if idx.len() > take && take > 0 {
            idx.select_nth_unstable_by(take - 1, order);
        }
        idx.truncate(take);
        idx.sort_by(order);
        let exact = idx.iter().all(|&i| !inexact[i]);
        scored.hosts = idx.iter().map(|&i| hosts[i]).collect();
        (scored, exact)
    }

    /// `st` with `v` placed on `h` and its links to the placed neighbours `nbrs` routed
    /// (heaviest first), scored; `None` when `bound` cuts it before it is complete; or the link
    /// that could not be routed. The dense copy holds `st` before and after.
    fn child(
        &mut self,
        v: usize,
        st: &State,
        h: NodeIndex,
        nbrs: &[(usize, usize, u64)],
        bound: &Bound,
    ) -> Result<Option<State>, Failure> {
        let request = self.request;
        let free_cpu = self.work.cpu[h.index()];
        let vn = &request.nodes()[v];
        // the host term, added last (the same sum as without cuts) but known now
        let host_term = if self.lace.node_balance > 0.0 && vn.cpu > 0 {
            Some(self.lace.node_balance * vn.cpu as f64 / free_cpu as f64)
        } else {
            None
        };
        let lower = |score: f64| host_term.map_or(score, |t| score + t);
        if bound.cuts(lower(st.score)) {
            return Ok(None);
        }
        let mut child = st.clone();
        child.hosts[v] = Some(h);
        self.work.place(request, v, h);
        let mut result = Ok(true);
        for (j, &(u, l, bw)) in nbrs.iter().enumerate() {
            if j > 0 && bound.cuts(lower(child.score)) {
                result = Ok(false);
                break;
            }
            match self.route((j, u, l), child.hosts[u].expect("placed"), h, bw) {
                Ok((path, cost)) => {
                    self.work.route(&path.1, bw);
                    child.bw_hops += bw * path.1.len() as u64;
                    child.score += (bw as f64).max(1.0) * cost;
                    child.paths[l] = Some(Rc::new(path));
                }
                Err(f) => {
                    result = Err(f);
                    break;
                }
            }
        }
        // give back what this child took: the dense copy holds `st` again
        for &(_, l, bw) in nbrs {
            if let Some(p) = &child.paths[l] {
                self.work.unroute(&p.1, bw);
            }
        }
        self.work.unplace(request, v, h);
        if !result? {
            return Ok(None);
        }
        if let Some(t) = host_term {
            child.score += t;
        }
        Ok((!bound.cuts(child.score)).then_some(child))
    }

    /// The path of virtual link `l` (bandwidth `bw`) between the host `placed` of its placed
    /// end `u` (the `j`-th neighbour) and the new host `h`, in the link's own direction
    /// (host(link.u) -> host(link.v)), with its cost: the cheapest under the weight
    /// `1 + link_balance x bw / free(e)` (A* guided by the neighbour's hop distances), or the
    /// fewest hops when that one is longer than the hop limit.
    fn route(
        &mut self,
        (j, u, l): (usize, usize, usize),
        placed: NodeIndex,
        h: NodeIndex,
        bw: u64,
    ) -> Result<(Path, f64), Failure> {
        let s = self.residual.substrate();
        let (bwf, link_balance, work) = (bw as f64, self.lace.link_balance, &self.work);
        let lower = self.dist_buf[j].0.borrow();
        let found = self.dijkstra.cheapest_guided(
            s,
            h,
            placed,
            |x| lower.lower(x).0,
            |e| {
                let free = work.bandwidth[e.index()];
                (free >= bw).then(|| {
                    1.0 + if bw == 0 {
                        0.0
                    } else {
                        link_balance * bwf / free as f64
                    }
                })
            },
        );
        // the link's direction: from the host of its `u` end
        let from_placed = self.request.links()[l].u == u;
        let (from, to) = if from_placed {
            (placed, h)
        } else {
            (h, placed)
        };
        let routed = match found {
            Some((mut p, c)) if self.max_hops.is_none_or(|m| p.1.len() <= m as usize) => {
                if from_placed {
                    p.0.reverse();
                    p.1.reverse();
                }
                Ok((p, c))
            }
            Some(_) | None => self
                .bfs
                .shortest(s, &self.work.bandwidth, bw, from, to, self.max_hops)
                .map(|p| {
                    let c = p.1.len() as f64;
                    (p, c)
                }),
        };
        // A delay bound: the lowest-latency path when this one is too slow.
        let max_delay = self.request.links()[l].max_delay_us;
        let routed = match max_delay {
            None => routed,
            Some(_) => {
                let cost = routed.as_ref().map_or(0.0, |(_, c)| *c);
                within_delay(
                    s,
                    &self.work.bandwidth,
                    bw,
                    (from, to),
                    (max_delay, self.max_hops),
                    routed.map(|(p, _)| p),
                )
                .map(|p| {
                    let c = cost.max(p.1.len() as f64);
                    (p, c)
                })
            }
        };
        routed.map_err(|f| Failure::Link(l, from, to, f.into()))
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
                        p.map(Rc::unwrap_or_clone).ok_or_else(|| {
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
