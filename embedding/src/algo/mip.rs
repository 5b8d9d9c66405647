//! The exact per-request node-link MIP (multi-commodity flow), solved with CBC through good_lp.
//!
//! Follows the node-link formulation of Melo, Sargento, Killat, Timm-Giel and Carapinha, "Optimal
//! virtual network embedding: node-link formulation", IEEE TNSM 10(4), 2013, with the plain
//! revenue/cost objective (minimise bandwidth x hops; CPU cost is a constant per request).
//!
//! Variables, for virtual nodes `v`, hosts `h` that satisfy `v`'s constraints and have its
//! CPU/memory free, virtual links `l = (u, v)` with demand `b_l`, and arcs `a = (i -> j)` (both
//! directions of every substrate link; for unit flows only links with `b_l` free):
//!
//! - `x[v][h]` binary: `v` goes on `h`;
//! - unsplittable (and every zero-demand link): `f[l][a]` binary, one unit of flow;
//!   splittable: `f[l][a]` integer in `0..=b_l`, the bandwidth routed on `a`.
//!
//! Constraints: `sum_h x[v][h] = 1`; without revisitation `sum_v x[v][h] <= 1`, with it the CPU
//! and memory of every host; flow conservation `out(h) - in(h) = q_l (x[u][h] - x[v][h])` with
//! `q_l = 1` for unit flows and `b_l` for split flows; bandwidth `sum_l b_l f[l][i->j] + b_l
//! f[l][j->i] <= free(e)` (split: `f` already in bandwidth); hop limit `sum_a f[l][a] <= max` for
//! unit flows. The valid cut `sum_a f[l][a] >= q_l` for every link whose ends may not share a host
//! (no revisitation, or disjoint candidate sets) keeps the LP bound from collapsing to the CPU
//! cost, which is what lets CBC prove optimality quickly. Objective: `sum_l sum_a c_l f[l][a]`
//! with `c_l = b_l` (unit) or `1` (split), and `1e-3` for zero-demand links so their paths stay
//! shortest.
//!
//! A heuristic warm start (LACE) gives CBC an incumbent; when the time limit hits without a
//! better solution, the incumbent is returned (not proven optimal). Paths are recovered from the
//! flows (split flows are decomposed into paths; flow cycles are dropped, loops shortcut).
//! Complexity: exponential in the worst case; about `k n + l 2m` variables.

use std::time::{Duration, Instant};

use good_lp::solvers::coin_cbc::coin_cbc;
use good_lp::{
    Expression, ProblemVariables, ResolutionError, Solution, SolutionStatus, SolverModel, Variable,
    constraint, variable,
};
use petgraph::graph::{EdgeIndex, NodeIndex};

use crate::algo::candidate_hosts;
use crate::algo::lace::Lace;
use crate::embedder::Embedder;
use crate::mapping::{Embedding, Flow, LinkEmbedding};
use crate::rejection::{Rejection, Resource};
use crate::request::VnRequest;
use crate::residual::Residual;

/// The exact MIP (see the module docs).
#[derive(Clone, Debug)]
pub struct Mip {
    /// Allow a virtual link to use several paths when the request allows splitting.
    pub splittable: bool,
    /// Wall-clock limit of one solve.
    pub time_limit: Duration,
    /// Start from the LACE embedding when it finds one.
    pub warm_start: bool,
    /// Add the valid cut `sum_a f[l][a] >= q_l` (switch off only to measure its effect).
    pub valid_cut: bool,
}

impl Default for Mip {
    fn default() -> Self {
        Mip {
            splittable: false,
            time_limit: Duration::from_secs(2),
            warm_start: true,
            valid_cut: true,
        }
    }
}

/// A solved MIP.
#[derive(Clone, Debug)]
pub struct MipSolution {
    /// The embedding.
    pub embedding: Embedding,
    /// CBC proved it optimal (for the formulation's objective).
    pub proven_optimal: bool,
    /// The embedding came from the warm start because CBC found nothing better in time.
    pub from_warm_start: bool,
    /// Wall-clock time of the solve.
    pub elapsed: Duration,
    /// Number of MIP variables.
    pub variables: usize,
}

struct LinkVars {
    /// Unit flow (binary) or bandwidth (integer) per arc.
    unit: bool,
    /// (arc tail, arc head, substrate link, variable)
    arcs: Vec<(NodeIndex, NodeIndex, EdgeIndex, Variable)>,
}

impl Mip {
    /// A splittable variant.
    pub fn splittable() -> Self {
        Mip {
            splittable: true,
            ..Mip::default()
        }
    }

    /// Solves the MIP for `request` on `residual`.
    pub fn solve(
        &self,
        residual: &Residual,
        request: &VnRequest,
    ) -> Result<MipSolution, Rejection> {
        let started = Instant::now();
        let s = residual.substrate();
        let cands = candidate_hosts(residual, request)?;
        let opts = request.options();
        let revisit = opts.allow_revisitation;
        let warm = if self.warm_start {
            Lace::default().embed(residual, request).ok()
        } else {
            None
        };
        let k = request.nodes().len();
        let n = s.node_count();

        let mut vars = ProblemVariables::new();
        // x[v] : (host, var)
        let mut x: Vec<Vec<(NodeIndex, Variable)>> = Vec::with_capacity(k);
        let mut x_at: Vec<Vec<Option<Variable>>> = vec![vec![None; n]; k];
        for (v, hs) in cands.iter().enumerate() {
            let mut row = Vec::with_capacity(hs.len());
            for &h in hs {
                let init = warm.as_ref().map(|e| f64::from(e.host(v) == h));
                let mut def = variable().binary();
                if let Some(i) = init {
                    def = def.initial(i);
                }
                let var = vars.add(def);
                x_at[v][h.index()] = Some(var);
                row.push((h, var));
            }
            x.push(row);
        }
        let mut links: Vec<LinkVars> = Vec::with_capacity(request.links().len());
        let mut objective = Expression::with_capacity(request.links().len() * 2 * s.link_count());
        for (l, vl) in request.links().iter().enumerate() {
            let b = vl.bandwidth;
            let unit = !(self.splittable
                && opts.allow_path_split
                && b > 0
                && opts.max_path_hops.is_none());
            // arcs used by the warm start, with the bandwidth they carry
            let mut warm_arcs: Vec<(NodeIndex, NodeIndex, u64)> = Vec::new();
            if let Some(e) = &warm {
                for f in e.links()[l].flows() {
                    for w in f.hosts.windows(2) {
                        warm_arcs.push((w[0], w[1], f.bandwidth));
                    }
                }
            }
            let mut arcs = Vec::new();
            for e in s.link_indices() {
                if unit && residual.bandwidth(e) < b {
                    continue;
                }
                let (i, j) = s.endpoints(e);
                for (t, hd) in [(i, j), (j, i)] {
                    let w = warm_arcs
                        .iter()
                        .find(|(a, c, _)| *a == t && *c == hd)
                        .map(|(_, _, bw)| *bw);
                    let def = if unit {
                        let d = variable().binary();
                        if warm.is_some() {
                            d.initial(f64::from(w.is_some()))
                        } else {
                            d
                        }
                    } else {
                        let d = variable().integer().min(0).max(b as f64);
                        if warm.is_some() {
                            d.initial(w.unwrap_or(0) as f64)
                        } else {
                            d
                        }
                    };
                    let var = vars.add(def);
                    let c = if unit {
                        if b == 0 { 1e-3 } else { b as f64 }
                    } else {
                        1.0
                    };
                    objective.add_mul(c, var);
                    arcs.push((t, hd, e, var));
                }
            }
            links.push(LinkVars { unit, arcs });
        }
        let variables = vars.len();
        let mut model = vars.minimise(objective).using(coin_cbc);
        model.set_parameter("timeMode", "elapsed");
        model.set_parameter(
            "seconds",
            &format!("{:.3}", self.time_limit.as_secs_f64().max(0.01)),
        );
        model.set_parameter("threads", "1");
        // CBC and its LP solver write to stdout unless told not to
        model.set_parameter("log", "0");
        model.set_parameter("slogLevel", "0");
        if warm.is_some() {
            // CBC's root cut generation and primal heuristics do not look at the clock (measured
            // on a 10-node request: 35 s wall under a 10 s limit; 4.6 s under a 2 s limit with
            // both off). With an incumbent and the valid cut the LP bound is strong enough: every
            // request of up to 5 nodes is still proven optimal (examples/mip_optimality.rs).
            model.set_parameter("heuristics", "off");
            model.set_parameter("cuts", "off");
        }

        for row in &x {
            let sum: Expression = row.iter().map(|(_, v)| *v).sum();
            model.add_constraint(constraint::eq(sum, 1.0));
        }
        let mut at_host: Vec<Vec<(usize, Variable)>> = vec![Vec::new(); n];
        for (v, row) in x.iter().enumerate() {
            for &(h, var) in row {
                at_host[h.index()].push((v, var));
            }
        }
        for (h, here) in at_host.iter().enumerate() {
            if here.len() < 2 {
                continue;
            }
            if revisit {
                let node = NodeIndex::new(h);
                let mut cpu = Expression::with_capacity(here.len());
                let mut mem = Expression::with_capacity(here.len());
                for &(v, var) in here {
                    cpu.add_mul(request.nodes()[v].cpu as f64, var);
                    mem.add_mul(request.nodes()[v].memory_mb as f64, var);
                }
                model.add_constraint(constraint::leq(cpu, residual.cpu(node) as f64));
                model.add_constraint(constraint::leq(mem, residual.memory(node) as f64));
            } else {
                let sum: Expression = here.iter().map(|(_, v)| *v).sum();
                model.add_constraint(constraint::leq(sum, 1.0));
            }
        }
        // per substrate link: bandwidth
        let mut per_edge: Vec<Expression> = vec![Expression::default(); s.link_count()];
        let mut edge_used = vec![false; s.link_count()];
        for (l, lv) in links.iter().enumerate() {
            let vl = &request.links()[l];
            let q = if lv.unit { 1.0 } else { vl.bandwidth as f64 };
            // conservation
            let mut net: Vec<Expression> = vec![Expression::default(); n];
            for &(t, hd, e, var) in &lv.arcs {
                net[t.index()].add_mul(1.0, var);
                net[hd.index()].add_mul(-1.0, var);
                let coeff = if lv.unit { vl.bandwidth as f64 } else { 1.0 };
                if coeff > 0.0 {
                    per_edge[e.index()].add_mul(coeff, var);
                    edge_used[e.index()] = true;
                }
            }
            for (h, mut expr) in net.into_iter().enumerate() {
                if let Some(xu) = x_at[vl.u][h] {
                    expr.add_mul(-q, xu);
                }
                if let Some(xv) = x_at[vl.v][h] {
                    expr.add_mul(q, xv);
                }
                model.add_constraint(constraint::eq(expr, 0.0));
            }
            let total: Expression = lv.arcs.iter().map(|a| a.3).sum();
            let may_share = revisit && cands[vl.u].iter().any(|h| x_at[vl.v][h.index()].is_some());
            if self.valid_cut && !may_share {
                model.add_constraint(constraint::geq(total.clone(), q));
            }
            if let (true, Some(m)) = (lv.unit, opts.max_path_hops) {
                model.add_constraint(constraint::leq(total, m as f64));
            }
        }
        for (e, expr) in per_edge.into_iter().enumerate() {
            if edge_used[e] {
                model.add_constraint(constraint::leq(
                    expr,
                    residual.bandwidth(EdgeIndex::new(e)) as f64,
                ));
            }
        }

        let solved = model.solve();
        let elapsed = started.elapsed();
        let fallback = |warm: Option<Embedding>| match warm {
            Some(e) => Ok(MipSolution {
                embedding: e,
                proven_optimal: false,
                from_warm_start: true,
                elapsed,
                variables,
            }),
            None => Err(Rejection::TimeLimit {
                limit_ms: self.time_limit.as_millis() as u64,
            }),
        };
        let sol = match solved {
            Ok(sol) => sol,
            Err(ResolutionError::Infeasible) => {
                return Err(Rejection::Infeasible {
                    resource: Resource::Bandwidth,
                    reason: format!(
                        "no placement of the {k} virtual nodes leaves paths with enough bandwidth for all {} links (proven by the exact MIP)",
                        request.links().len()
                    ),
                });
            }
            Err(e) => return Err(Rejection::Solver(e.to_string())),
        };
        let proven = matches!(sol.status(), SolutionStatus::Optimal);
        // CBC reports the objective of its incumbent, which may be the warm start; when it solves
        // at the root from the warm start it returns the LP point instead of the incumbent.
        let incumbent = sol.model().obj_value();
        let warm_is_incumbent = warm.as_ref().is_some_and(|w| {
            let obj: f64 = request
                .links()
                .iter()
                .zip(w.links())
                .map(|(vl, le)| {
                    let hops: usize = le.flows().iter().map(|f| f.hops()).sum();
                    if vl.bandwidth == 0 {
                        1e-3 * hops as f64
                    } else {
                        le.bandwidth_hops() as f64
                    }
                })
                .sum();
            (obj - incumbent).abs() <= 1e-6 * obj.max(1.0)
        });
        match extract(residual, request, &x, &links, &sol) {
            None if warm_is_incumbent => Ok(MipSolution {
                embedding: warm.expect("checked"),
                proven_optimal: proven,
                from_warm_start: true,
                elapsed,
                variables,
            }),
            Some(e) if residual.check(request, &e).is_ok() => {
                // a time-limited solve may end worse than its warm start
                if !proven
                    && let Some(w) = &warm
                    && w.cost() < e.cost()
                {
                    return fallback(warm);
                }
                Ok(MipSolution {
                    embedding: e,
                    proven_optimal: proven,
                    from_warm_start: false,
                    elapsed,
                    variables,
                })
            }
            _ if proven => Err(Rejection::Solver(
                "internal: the optimal MIP solution does not decode to a valid embedding".into(),
            )),
            _ => fallback(warm),
        }
    }
}

/// Decodes a MIP solution into an embedding (`None` if it is not a complete solution).
fn extract(
    residual: &Residual,
    request: &VnRequest,
    x: &[Vec<(NodeIndex, Variable)>],
    links: &[LinkVars],
    sol: &impl Solution,
) -> Option<Embedding> {
    let s = residual.substrate();
    let integral = |v: Variable| {
        let x = sol.value(v);
        (x - x.round()).abs() <= 1e-6
    };
    if !x.iter().flatten().all(|(_, v)| integral(*v))
        || !links.iter().flat_map(|l| &l.arcs).all(|a| integral(a.3))
    {
        return None;
    }
    let hosts: Vec<NodeIndex> = x
        .iter()
        .map(|row| {
            row.iter()
                .find(|(_, v)| sol.value(*v) > 0.5)
                .map(|(h, _)| *h)
        })
        .collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(links.len());
    for (l, lv) in links.iter().enumerate() {
        let vl = &request.links()[l];
        let (src, dst) = (hosts[vl.u], hosts[vl.v]);
        if src == dst {
            out.push(LinkEmbedding::unsplit(Flow::new(
                vec![src],
                vec![],
                vl.bandwidth,
            )));
            continue;
        }
        // remaining flow per arc
        let mut rem: Vec<(NodeIndex, NodeIndex, EdgeIndex, u64)> = lv
            .arcs
            .iter()
            .filter_map(|&(t, hd, e, var)| {
                let v = sol.value(var).round();
                (v >= 1.0).then_some((t, hd, e, v as u64))
            })
            .collect();
        let mut need = if lv.unit { 1 } else { vl.bandwidth };
        let mut flows = Vec::new();
        while need > 0 {
            let (path_hosts, arc_idx) = walk(&rem, src, dst)?;
            let amount = arc_idx.iter().map(|&i| rem[i].3).min()?.min(need);
            for &i in &arc_idx {
                rem[i].3 -= amount;
            }
            need -= amount;
            let bw = if lv.unit { vl.bandwidth } else { amount };
            flows.push(Flow::from_hosts(s, path_hosts, bw).ok()?);
        }
        // merge identical paths (possible after loop shortcuts)
        let mut merged: Vec<Flow> = Vec::new();
        for f in flows {
            match merged.iter_mut().find(|m| m.hosts == f.hosts) {
                Some(m) => m.bandwidth += f.bandwidth,
                None => merged.push(f),
            }
        }
        out.push(if merged.len() == 1 {
            LinkEmbedding::unsplit(merged.pop()?)
        } else {
            LinkEmbedding::split(merged)
        });
    }
    Embedding::new(s, request, hosts, out).ok()
}

/// A walk from `src` to `dst` over arcs with remaining flow, with loops cut out; returns the
/// hosts and the indices of the arcs used.
fn walk(
    rem: &[(NodeIndex, NodeIndex, EdgeIndex, u64)],
    src: NodeIndex,
    dst: NodeIndex,
) -> Option<(Vec<NodeIndex>, Vec<usize>)> {
    let mut hosts = vec![src];
    let mut arcs: Vec<usize> = Vec::new();
    let mut used = vec![false; rem.len()];
    let mut at = src;
    while at != dst {
        let i = (0..rem.len()).find(|&i| !used[i] && rem[i].3 > 0 && rem[i].0 == at)?;
        used[i] = true;
        at = rem[i].1;
        if let Some(pos) = hosts.iter().position(|h| *h == at) {
            // loop: cut back to the first visit
            hosts.truncate(pos + 1);
            arcs.truncate(pos);
        } else {
            hosts.push(at);
            arcs.push(i);
        }
    }
    Some((hosts, arcs))
}

impl Embedder for Mip {
    fn name(&self) -> &str {
        if self.splittable { "mip-split" } else { "mip" }
    }

    fn embed(&self, residual: &Residual, request: &VnRequest) -> Result<Embedding, Rejection> {
        self.solve(residual, request).map(|s| s.embedding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::tests::line;
    use crate::request::{RequestOptions, VirtualNode};
    use crate::substrate::{Substrate, SubstrateLink, SubstrateNode};
    use std::sync::Arc;

    #[test]
    fn finds_the_optimum_on_a_line() {
        let res = Residual::new(Arc::new(line()));
        let mut r = VnRequest::new("r");
        for id in ["x", "y", "z"] {
            r.add_node(VirtualNode::new(id, 4)).unwrap();
        }
        r.add_link("x", "y", 5).unwrap();
        r.add_link("y", "z", 5).unwrap();
        for warm_start in [false, true] {
            let m = Mip {
                warm_start,
                ..Mip::default()
            };
            let sol = m.solve(&res, &r).unwrap();
            assert!(sol.proven_optimal);
            assert_eq!(sol.embedding.cost(), 12 + 10);
        }
    }

    #[test]
    fn splits_when_one_path_is_too_thin() {
        // square a-b-c-d-a, bandwidth 6 per link; x on a, y on c (pinned) need 10
        let mut s = Substrate::new();
        for id in ["a", "b", "c", "d"] {
            s.add_node(SubstrateNode::new(id, 10)).unwrap();
        }
        for (p, q) in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")] {
            s.add_link(p, q, SubstrateLink::new(6)).unwrap();
        }
        let res = Residual::new(Arc::new(s));
        let mut r =
            VnRequest::new("r").with_options(RequestOptions::default().with_path_split(true));
        r.add_node(VirtualNode::new("x", 1).pinned_to("a")).unwrap();
        r.add_node(VirtualNode::new("y", 1).pinned_to("c")).unwrap();
        r.add_link("x", "y", 10).unwrap();
        let err = Mip::default().solve(&res, &r).unwrap_err();
        assert!(matches!(err, Rejection::Infeasible { .. }), "{err}");
        let sol = Mip::splittable().solve(&res, &r).unwrap();
        assert!(sol.proven_optimal);
        let flows = sol.embedding.links()[0].flows();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows.iter().map(|f| f.bandwidth).sum::<u64>(), 10);
        assert_eq!(sol.embedding.cost(), 2 + 20);
        res.check(&r, &sol.embedding).unwrap();
    }

    #[test]
    fn honours_hop_limits_and_revisitation() {
        let res = Residual::new(Arc::new(line()));
        let mut r = VnRequest::new("r").with_options(
            RequestOptions::default()
                .with_revisitation(true)
                .with_max_path_hops(Some(1)),
        );
        r.add_node(VirtualNode::new("x", 5).pinned_to("a")).unwrap();
        r.add_node(VirtualNode::new("y", 5)).unwrap();
        r.add_link("x", "y", 3).unwrap();
        let sol = Mip::default().solve(&res, &r).unwrap();
        assert_eq!(
            sol.embedding.cost(),
            10,
            "co-located on a: no bandwidth cost"
        );
    }
}
