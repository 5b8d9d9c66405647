//! Shortest paths on the bandwidth-feasible graph.
//!
//! The feasible graph for a demand `b` keeps the substrate links whose residual bandwidth is at
//! least `b`; every path in it can carry the demand, so the shortest one (fewest hops, hence
//! lowest cost `b x hops`) is the natural link mapping (Yu et al., CCR 2008; Gong et al. 2014).

use std::collections::VecDeque;

use petgraph::graph::{EdgeIndex, NodeIndex};

use crate::rejection::Resource;
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
    /// Connected, but only by paths whose latency exceeds the link's `max_delay_us`.
    Delay,
}

impl From<PathFailure> for Resource {
    /// The resource a rejection names when no path was found.
    fn from(f: PathFailure) -> Self {
        match f {
            PathFailure::Bandwidth => Resource::Bandwidth,
            PathFailure::Hops => Resource::Hops,
            PathFailure::Delay => Resource::Delay,
        }
    }
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
        Ok(trace_back(&self.parent, src, dst))
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

/// Breadth-first search from one host over the links with `need` bandwidth free, grown one
/// level at a time on demand: a caller that only needs the hosts near the source (LACE's
/// candidate scoring on a dense substrate) stops after a level or two instead of scanning every
/// link. Hosts not reached yet are at least `depth + 1` hops away.
///
/// A level is settled top-down (the frontier's links) while the frontier is smaller than the
/// hosts not reached yet, else bottom-up (each host not reached looks for a link to the
/// frontier and stops at the first; Beamer et al., SC 2012): on a dense substrate the level that
/// reaches most hosts then costs a few links per remaining host instead of every link of the
/// frontier. Both settle the same hosts at the same distance.
#[derive(Clone, Debug)]
pub struct LevelBfs {
    dist: Vec<u32>,
    frontier: Vec<NodeIndex>,
    next: Vec<NodeIndex>,
    /// The hosts not reached yet, once a level was settled bottom-up (else empty, unused).
    unreached: Vec<NodeIndex>,
    /// Hosts reached so far.
    reached: usize,
    depth: u32,
    complete: bool,
    need: u64,
}

impl LevelBfs {
    /// The search from `src` on `n` hosts, with only `src` settled.
    pub fn new(n: usize, src: NodeIndex, need: u64) -> Self {
        let mut dist = vec![u32::MAX; n];
        dist[src.index()] = 0;
        LevelBfs {
            dist,
            frontier: vec![src],
            next: Vec::new(),
            unreached: Vec::new(),
            reached: 1,
            depth: 0,
            complete: false,
            need,
        }
    }

    /// Settles the next level over the links with `bandwidth[e] >= need`. The caller passes the
    /// same `bandwidth` every time. `O(links at the frontier)`.
    pub fn grow(&mut self, substrate: &Substrate, bandwidth: &[u64]) {
        if self.complete {
            return;
        }
        self.next.clear();
        let d = self.depth + 1;
        let left = self.dist.len() - self.reached;
        if self.frontier.len() < left {
            for &x in &self.frontier {
                for &(y, e) in substrate.neighbors(x) {
                    if bandwidth[e.index()] >= self.need && self.dist[y.index()] == u32::MAX {
                        self.dist[y.index()] = d;
                        self.next.push(y);
                    }
                }
            }
        } else {
            if self.unreached.is_empty() {
                let dist = &self.dist;
                self.unreached.extend(
                    (0..dist.len())
                        .filter(|&i| dist[i] == u32::MAX)
                        .map(NodeIndex::new),
                );
            }
            // a host joins this level when it has a usable link to the last one (whose hosts
            // are at `depth`; hosts settled in this pass are at `d` and do not count)
            let (dist, next, need) = (&mut self.dist, &mut self.next, self.need);
            self.unreached.retain(|&y| {
                if dist[y.index()] != u32::MAX {
                    return false;
                }
                let joins = substrate
                    .neighbors(y)
                    .iter()
                    .any(|&(x, e)| dist[x.index()] == d - 1 && bandwidth[e.index()] >= need);
                if joins {
                    dist[y.index()] = d;
                    next.push(y);
                }
                !joins
            });
        }
        self.reached += self.next.len();
        std::mem::swap(&mut self.frontier, &mut self.next);
        self.depth += 1;
        self.complete = self.frontier.is_empty();
    }

    /// Grows until every host is settled.
    pub fn finish(&mut self, substrate: &Substrate, bandwidth: &[u64]) {
        while !self.complete {
            self.grow(substrate, bandwidth);
        }
    }

    /// Levels settled so far.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// True when every host reachable from the source is settled.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The hop distance of `x` when settled (`u32::MAX` when the search is complete and `x`
    /// unreachable), else the lower bound `depth + 1`; and whether it is exact.
    pub fn lower(&self, x: NodeIndex) -> (u32, bool) {
        match self.dist[x.index()] {
            u32::MAX if self.complete => (u32::MAX, true),
            u32::MAX => (self.depth + 1, false),
            d => (d, true),
        }
    }
}

/// A path as hosts and links.
pub type Path = (Vec<NodeIndex>, Vec<EdgeIndex>);

/// The path from `src` to `dst` along the `parent` links (host, link towards the root) of a
/// search tree rooted at `src` that reached `dst`.
fn trace_back(parent: &[Option<(NodeIndex, EdgeIndex)>], src: NodeIndex, dst: NodeIndex) -> Path {
    let (mut hosts, mut edges) = (vec![dst], Vec::new());
    let mut at = dst;
    while at != src {
        let (p, e) = parent[at.index()].expect("reached nodes have parents");
        hosts.push(p);
        edges.push(e);
        at = p;
    }
    hosts.reverse();
    edges.reverse();
    (hosts, edges)
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct HeapItem(f64, u32);

impl Eq for HeapItem {}

impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // reversed: BinaryHeap is a max-heap
        other.0.total_cmp(&self.0).then(other.1.cmp(&self.1))
    }
}

impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One-way latency of a path, microseconds (links without a latency count 0).
pub fn path_delay_us(substrate: &Substrate, edges: &[EdgeIndex]) -> u64 {
    edges
        .iter()
        .map(|e| {
            substrate
                .link(*e)
                .latency_ms
                .map_or(0, |ms| (ms * 1000.0).round().max(0.0) as u64)
        })
        .sum()
}

/// Holds a found path to a link's delay bound: `found` when it is within `max_delay_us` (or
/// there is no bound), else the lowest-latency path over links with `bandwidth[e] >= need` if
/// that one is within the bound (then no path is; `O((n + m) log n)`), else
/// [`PathFailure::Delay`]. The hop limit still holds for the replacement.
pub fn within_delay(
    substrate: &Substrate,
    bandwidth: &[u64],
    need: u64,
    (src, dst): (NodeIndex, NodeIndex),
    max: (Option<u64>, Option<u32>),
    found: Result<Path, PathFailure>,
) -> Result<Path, PathFailure> {
    let (Some(max_delay), max_hops) = max else {
        return found;
    };
    if let Ok(p) = &found
        && path_delay_us(substrate, &p.1) <= max_delay
    {
        return found;
    }
    let fastest = Dijkstra::default().cheapest(substrate, src, dst, |e| {
        (bandwidth[e.index()] >= need)
            .then(|| substrate.link(e).latency_ms.unwrap_or(0.0).max(0.0) * 1000.0)
    });
    match fastest {
        Some((p, d)) if d.round() as u64 <= max_delay => {
            if max_hops.is_some_and(|m| p.1.len() > m as usize) {
                return Err(PathFailure::Hops);
            }
            Ok(p)
        }
        Some(_) => Err(PathFailure::Delay),
        None => Err(found.err().unwrap_or(PathFailure::Bandwidth)),
    }
}

/// Reusable buffers for Dijkstra's algorithm with per-link weights.
#[derive(Clone, Debug, Default)]
pub struct Dijkstra {
    parent: Vec<Option<(NodeIndex, EdgeIndex)>>,
    dist: Vec<f64>,
    done: Vec<bool>,
    heap: std::collections::BinaryHeap<HeapItem>,
    /// Per host, the epoch of the guided search that last reached (even) or settled (odd) it.
    seen: Vec<u32>,
    epoch: u32,
}

impl Dijkstra {
    /// Cheapest path from `src` to `dst` where `weight(e)` is the cost of link `e` (`None`: the
    /// link is unusable; weights must be non-negative). Returns the path and its cost.
    /// `O((n + m) log n)`.
    pub fn cheapest(
        &mut self,
        substrate: &Substrate,
        src: NodeIndex,
        dst: NodeIndex,
        mut weight: impl FnMut(EdgeIndex) -> Option<f64>,
    ) -> Option<(Path, f64)> {
        if src == dst {
            return Some(((vec![src], Vec::new()), 0.0));
        }
        let n = substrate.node_count();
        self.parent.clear();
        self.parent.resize(n, None);
        self.dist.clear();
        self.dist.resize(n, f64::INFINITY);
        self.done.clear();
        self.done.resize(n, false);
        self.heap.clear();
        self.dist[src.index()] = 0.0;
        self.heap.push(HeapItem(0.0, src.index() as u32));
        while let Some(HeapItem(d, x)) = self.heap.pop() {
            let x = x as usize;
            if self.done[x] {
                continue;
            }
            self.done[x] = true;
            if x == dst.index() {
                break;
            }
            for &(y, e) in substrate.neighbors(NodeIndex::new(x)) {
                if self.done[y.index()] {
                    continue;
                }
                let Some(w) = weight(e) else { continue };
                let nd = d + w;
                if nd < self.dist[y.index()] {
                    self.dist[y.index()] = nd;
                    self.parent[y.index()] = Some((NodeIndex::new(x), e));
                    self.heap.push(HeapItem(nd, y.index() as u32));
                }
            }
        }
        let cost = self.dist[dst.index()];
        if !cost.is_finite() {
            return None;
        }
        Some((trace_back(&self.parent, src, dst), cost))
    }
}

impl Dijkstra {
    /// [`Dijkstra::cheapest`] guided by `lower` (A* search, Hart, Nilsson and Raphael 1968):
    /// `lower(x)` is a lower bound on the hop distance from `x` to `dst` on a graph that
    /// contains every usable link, with `|lower(x) - lower(y)| <= 1` for every usable link
    /// `x-y` (`u32::MAX`: `dst` is unreachable from `x`); hop distances, or those of a
    /// [`LevelBfs`] from `dst`, are. Because every weight is at least 1, this bound is
    /// admissible and consistent, so the cost found is the one `cheapest`
    /// finds, while the search settles only the hosts on or near the cheapest paths instead of
    /// every host closer than `dst`. Weights below 1 are an error of the caller (the path may
    /// then not be the cheapest). `O((n + m) log n)` in the worst case.
    pub fn cheapest_guided(
        &mut self,
        substrate: &Substrate,
        src: NodeIndex,
        dst: NodeIndex,
        lower: impl Fn(NodeIndex) -> u32,
        mut weight: impl FnMut(EdgeIndex) -> Option<f64>,
    ) -> Option<(Path, f64)> {
        if src == dst {
            return Some(((vec![src], Vec::new()), 0.0));
        }
        if lower(src) == u32::MAX {
            return None;
        }
        // `dst` next to `src` over a link cheaper than 2: no path of two links or more (each at
        // least 1) is as cheap, so that link is the answer (the first of the cheapest when
        // several join them, as the search below would relax them in this order).
        let mut direct: Option<(EdgeIndex, f64)> = None;
        for &(y, e) in substrate.neighbors(src) {
            if y == dst
                && let Some(w) = weight(e)
                && direct.is_none_or(|(_, b)| w < b)
            {
                direct = Some((e, w));
            }
        }
        if let Some((e, w)) = direct
            && w < 2.0
        {
            return Some(((vec![src, dst], vec![e]), w));
        }
        // Buffers are valid where `seen` holds this search's epoch (no O(n) reset per search:
        // LACE runs thousands of short searches per request on large substrates).
        let n = substrate.node_count();
        if self.seen.len() != n || self.epoch >= u32::MAX - 2 {
            self.seen = vec![0; n];
            self.parent.clear();
            self.parent.resize(n, None);
            self.dist.clear();
            self.dist.resize(n, f64::INFINITY);
            self.epoch = 0;
        }
        // epoch: reached; epoch + 1: settled
        self.epoch += 2;
        let (open, settled) = (self.epoch, self.epoch + 1);
        let (si, di) = (src.index(), dst.index());
        self.heap.clear();
        self.seen[si] = open;
        self.dist[si] = 0.0;
        self.parent[si] = None;
        self.heap.push(HeapItem(f64::from(lower(src)), si as u32));
        let mut best = f64::INFINITY;
        while let Some(HeapItem(_, x)) = self.heap.pop() {
            let x = x as usize;
            if self.seen[x] == settled {
                continue;
            }
            self.seen[x] = settled;
            if x == di {
                break;
            }
            let d = self.dist[x];
            for &(y, e) in substrate.neighbors(NodeIndex::new(x)) {
                let yi = y.index();
                if self.seen[yi] == settled {
                    continue;
                }
                let bound = lower(y);
                // unreachable, or no better than a path to `dst` already found
                if bound == u32::MAX || d + f64::from(bound) >= best {
                    continue;
                }
                let Some(w) = weight(e) else { continue };
                let nd = d + w;
                let known = if self.seen[yi] == open {
                    self.dist[yi]
                } else {
                    f64::INFINITY
                };
                if nd < known && nd + f64::from(bound) < best {
                    self.seen[yi] = open;
                    self.dist[yi] = nd;
                    self.parent[yi] = Some((NodeIndex::new(x), e));
                    if yi == di {
                        best = nd;
                    }
                    self.heap.push(HeapItem(nd + f64::from(bound), yi as u32));
                }
            }
        }
        if !best.is_finite() {
            return None;
        }
        Some((trace_back(&self.parent, src, dst), best))
    }
}

/// Fewest-hop path from `src` to `dst` avoiding `blocked_nodes` and `blocked_edges` (plain BFS;
/// `None` when there is none).
fn masked_bfs(
    substrate: &Substrate,
    blocked_nodes: &[bool],
    blocked_edges: &[bool],
    src: NodeIndex,
    dst: NodeIndex,
) -> Option<Path> {
    let n = substrate.node_count();
    let mut parent: Vec<Option<(NodeIndex, EdgeIndex)>> = vec![None; n];
    let mut seen = vec![false; n];
    let mut queue = VecDeque::new();
    seen[src.index()] = true;
    queue.push_back(src);
    while let Some(x) = queue.pop_front() {
        if x == dst {
            break;
        }
        for &(y, e) in substrate.neighbors(x) {
            if seen[y.index()] || blocked_nodes[y.index()] || blocked_edges[e.index()] {
                continue;
            }
            seen[y.index()] = true;
            parent[y.index()] = Some((x, e));
            queue.push_back(y);
        }
    }
    if !seen[dst.index()] {
        return None;
    }
    Some(trace_back(&parent, src, dst))
}

/// The `k` fewest-hop simple paths from `src` to `dst` on the whole substrate, in order of hop
/// count (Yen, Management Science 1971, with BFS as the inner shortest-path routine); ties in
/// the order they are found. `O(k n (n + m))`.
pub fn k_shortest_paths(
    substrate: &Substrate,
    src: NodeIndex,
    dst: NodeIndex,
    k: usize,
) -> Vec<Path> {
    if src == dst {
        return vec![(vec![src], Vec::new())];
    }
    let n = substrate.node_count();
    let m = substrate.link_count();
    let mut blocked_nodes = vec![false; n];
    let mut blocked_edges = vec![false; m];
    let Some(first) = masked_bfs(substrate, &blocked_nodes, &blocked_edges, src, dst) else {
        return Vec::new();
    };
    let mut found: Vec<Path> = vec![first];
    // candidates: (hops, sequence number, path)
    let mut candidates: Vec<(usize, usize, Path)> = Vec::new();
    let mut seq = 0usize;
    while found.len() < k {
        let prev = found.last().expect("non-empty").clone();
        for j in 0..prev.1.len() {
            let spur = prev.0[j];
            let root_hosts = &prev.0[..=j];
            let root_edges = &prev.1[..j];
            for p in &found {
                if p.0.len() > j && p.0[..=j] == *root_hosts {
                    blocked_edges[p.1[j].index()] = true;
                }
            }
            for h in &root_hosts[..j] {
                blocked_nodes[h.index()] = true;
            }
            if let Some((sh, se)) = masked_bfs(substrate, &blocked_nodes, &blocked_edges, spur, dst)
            {
                let mut hosts = root_hosts.to_vec();
                hosts.extend_from_slice(&sh[1..]);
                let mut edges = root_edges.to_vec();
                edges.extend_from_slice(&se);
                let dup =
                    candidates.iter().any(|c| c.2.1 == edges) || found.iter().any(|f| f.1 == edges);
                if !dup {
                    candidates.push((edges.len(), seq, (hosts, edges)));
                    seq += 1;
                }
            }
            blocked_edges.iter_mut().for_each(|b| *b = false);
            blocked_nodes.iter_mut().for_each(|b| *b = false);
        }
        let Some(best) = candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| (c.0, c.1))
            .map(|(i, _)| i)
        else {
            break;
        };
        found.push(candidates.swap_remove(best).2);
    }
    found
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
        let mut dj = Dijkstra::default();
        let ((hosts, _), cost) = dj
            .cheapest(&s, a, b, |e| (bw[e.index()] >= 5).then_some(1.0))
            .unwrap();
        assert_eq!((hosts.len(), cost), (4, 3.0));
        let ((hosts, _), _) = dj.cheapest(&s, a, b, |_| Some(1.0)).unwrap();
        assert_eq!(hosts, vec![a, b]);
        assert!(
            dj.cheapest(&s, a, b, |e| (bw[e.index()] >= 10).then_some(1.0))
                .is_none()
        );
    }

    #[test]
    fn yen_enumerates_simple_paths_by_length() {
        // a 3x3 grid: from corner to corner there are 6 shortest paths of 4 hops
        let mut s = Substrate::new();
        for i in 0..9 {
            s.add_node(SubstrateNode::new(i.to_string(), 1)).unwrap();
        }
        for r in 0..3 {
            for c in 0..3 {
                let i = r * 3 + c;
                if c < 2 {
                    s.add_link(&i.to_string(), &(i + 1).to_string(), SubstrateLink::new(1))
                        .unwrap();
                }
                if r < 2 {
                    s.add_link(&i.to_string(), &(i + 3).to_string(), SubstrateLink::new(1))
                        .unwrap();
                }
            }
        }
        let paths = k_shortest_paths(&s, NodeIndex::new(0), NodeIndex::new(8), 10);
        assert_eq!(paths.len(), 10);
        assert!(paths[..6].iter().all(|p| p.1.len() == 4));
        assert!(paths[6..].iter().all(|p| p.1.len() == 6));
        for p in &paths {
            let mut hosts = p.0.clone();
            hosts.sort();
            hosts.dedup();
            assert_eq!(hosts.len(), p.0.len(), "simple");
            assert_eq!(p.0.first(), Some(&NodeIndex::new(0)));
            assert_eq!(p.0.last(), Some(&NodeIndex::new(8)));
        }
        let mut uniq = paths.iter().map(|p| p.1.clone()).collect::<Vec<_>>();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 10);
    }
}
