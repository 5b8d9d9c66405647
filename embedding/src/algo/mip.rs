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
//! with `c_l = b_l` (unit) or `1` (split); zero-demand links cost nothing and are re-routed on a
//! fewest-hop path after the solve. All coefficients are integers, so the objective is integral.
//!
//! Warm start: the LACE embedding of bandwidth cost `UB` is kept as the incumbent and the MIP
//! only searches for strictly cheaper ones: `objective <= UB - 1`, and per unit-flow link a hop
//! budget `(UB - 1 - sum of the other must-hop demands) / b_l`. If `UB` already equals the lower
//! bound `sum of must-hop demands`, no solve is needed; if the restricted MIP is infeasible, the
//! warm start is proven optimal; if the time limit hits first, it is returned unproven. With a
//! warm start CBC's root cuts and primal heuristics are off (they ignore the clock).
//!
//! The time limit is enforced: CBC runs on a thread of its own and a call that it has not
//! answered by the limit (plus a tenth) returns LACE's answer or a time-limit rejection, while
//! CBC finishes alone (measured before: 17.7 s under a 2 s limit, and over 900 s on an
//! infeasible 40-node clique). Answers not proven optimal carry [`Embedding::note`] saying so
//! and whether they are LACE's; the simulator's decision log and the controller's ACCEPTED
//! event repeat it.
//!
//! Strengthening, all valid for some optimal solution: unit flows neither enter their source
//! host nor leave their destination (`in_l(h) + x[u][h] <= 1`, `out_l(h) + x[v][h] <= 1`), and a
//! host is a candidate for `v` only if the free bandwidth of its incident links covers the
//! demands of `v`'s must-hop links (in total; for unit flows also the largest on one link).
//! Measured on 400 requests of 2..5 nodes from the ten shared traces on a fresh substrate: all
//! proven optimal, worst 1.6 s; the same MIP with CBC given an initial solution instead of the
//! cutoff needed up to 20 s and missed an optimum (current numbers: `deploy/bench/embedding.sh`).
//!
//! Paths are recovered from the flows (split flows are decomposed into paths; flow cycles are
//! dropped, loops shortcut).
//! Complexity: exponential in the worst case; about `k n + l 2m` variables.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use good_lp::solvers::coin_cbc::{CoinCbcProblem, coin_cbc};
use good_lp::{
    Expression, ProblemVariables, ResolutionError, Solution, SolutionStatus, SolverModel, Variable,
    constraint, variable,
};
use petgraph::graph::{EdgeIndex, NodeIndex};

use crate::algo::candidate_hosts;
use crate::algo::lace::Lace;
use crate::algo::paths::Bfs;
use crate::embedder::Embedder;
use crate::mapping::{Embedding, Flow, LinkEmbedding};
use crate::rejection::{Rejection, Resource};
use crate::request::VnRequest;
use crate::residual::Residual;

/// Solves abandoned at their time limit that are still running (at most one, see
/// [`Mip::solve`]).
static ABANDONED: AtomicUsize = AtomicUsize::new(0);
/// States of one solver thread: running, finished, given up by its caller.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED_STATE: u8 = 2;

/// The exact MIP (see the module docs).
#[derive(Clone, Debug)]
pub struct Mip {
    /// Allow a virtual link to use several paths when the request allows splitting.
    pub splittable: bool,
    /// Wall-clock limit of one solve, enforced (see [`Mip::solve`]).
    pub time_limit: Duration,
    /// Use the LACE embedding, when it finds one, as incumbent and cutoff (module docs).
    pub warm_start: bool,
    /// Add the valid cut `sum_a f[l][a] >= q_l` (switch off only to measure its effect).
    pub valid_cut: bool,
    /// Requests with at most this many virtual nodes keep CBC's cut generation and primal
    /// heuristics; larger ones (with a warm start) switch them off so the time limit holds.
    pub full_effort_nodes: usize,
}

impl Default for Mip {
    fn default() -> Self {
        Mip {
            splittable: false,
            time_limit: Duration::from_secs(2),
            warm_start: true,
            valid_cut: true,
            full_effort_nodes: 6,
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

    /// Solves the MIP for `request` on `residual` within `time_limit` (plus a tenth, and 50 ms
    /// for the threads): CBC runs on a thread of its own, and when it has not answered by then
    /// (its root cuts, heuristics and LP solves do not all watch the clock) the call returns
    /// without it and CBC finishes alone. While such an abandoned solve still runs, later calls
    /// do not start CBC (at most one runs beyond its limit). Every answer that is not proven
    /// optimal says so in [`Embedding::note`].
    pub fn solve(
        &self,
        residual: &Residual,
        request: &VnRequest,
    ) -> Result<MipSolution, Rejection> {
        let started = Instant::now();
        let cands = candidate_hosts(residual, request)?;
        let warm = if self.warm_start {
            Lace::default().embed(residual, request).ok()
        } else {
            None
        };
        let limit_s = self.time_limit.as_secs_f64();
        let fallback = |why: String| match &warm {
            Some(w) => Ok(MipSolution {
                embedding: w
                    .clone()
                    .with_note(format!("LACE's answer, unproven: {why}")),
                proven_optimal: false,
                from_warm_start: true,
                elapsed: started.elapsed(),
                variables: 0,
            }),
            None => Err(Rejection::TimeLimit {
                limit_ms: self.time_limit.as_millis() as u64,
            }),
        };
        if ABANDONED.load(Ordering::SeqCst) > 0 {
            return fallback(
                "an earlier MIP solve that overran its time limit still runs, so none was started"
                    .to_string(),
            );
        }
        let state = Arc::new(AtomicU8::new(RUNNING));
        let (tx, rx) = mpsc::channel();
        let (me, worker_state) = (self.clone(), state.clone());
        let (res, req, warm_copy) = (residual.clone(), request.clone(), warm.clone());
        let budget = self.time_limit.saturating_sub(started.elapsed());
        let spawned = std::thread::Builder::new()
            .name("mip-cbc".into())
            .spawn(move || {
                let out = me.solve_cbc(&res, &req, &cands, warm_copy, budget);
                if worker_state
                    .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    // the caller gave up on this solve
                    ABANDONED.fetch_sub(1, Ordering::SeqCst);
                }
                let _ = tx.send(out);
            });
        if let Err(e) = spawned {
            return Err(Rejection::Solver(format!(
                "cannot start the solver thread: {e}"
            )));
        }
        let deadline = self.time_limit + self.time_limit / 10 + Duration::from_millis(50);
        let out = match rx.recv_timeout(deadline.saturating_sub(started.elapsed())) {
            Ok(out) => out,
            Err(_) => {
                if state
                    .compare_exchange(RUNNING, ABANDONED_STATE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    ABANDONED.fetch_add(1, Ordering::SeqCst);
                    return fallback(format!(
                        "the MIP solver did not answer within its time limit of {limit_s} s"
                    ));
                }
                // it finished just now
                rx.recv().map_err(|_| {
                    Rejection::Solver("the solver thread ended without an answer".into())
                })?
            }
        };
        out.map(|mut sol| {
            sol.elapsed = started.elapsed();
            sol
        })
    }

    /// The solve proper, on the solver thread, with `budget` left of the time limit.
    fn solve_cbc(
        &self,
        residual: &Residual,
        request: &VnRequest,
        cands: &[Vec<NodeIndex>],
        warm: Option<Embedding>,
        budget: Duration,
    ) -> Result<MipSolution, Rejection> {
        let k = request.nodes().len();
        let limit_s = self.time_limit.as_secs_f64();
        let done = |embedding: Embedding, proven: bool, from_warm: bool, variables: usize| {
            Ok(MipSolution {
                embedding,
                proven_optimal: proven,
                from_warm_start: from_warm,
                elapsed: Duration::ZERO,
                variables,
            })
        };
        let inst = Instance::new(self, residual, request, cands, warm.as_ref());
        if let (Some(ub), Some(w)) = (inst.ub, &warm)
            && ub <= inst.lower
        {
            return done(w.clone(), true, true, 0);
        }

        let mut vars = ProblemVariables::new();
        let (x, x_at) = inst.node_vars(&mut vars, cands)?;
        let (links, objective) = inst.link_vars(&mut vars);
        let variables = vars.len();
        let mut model = vars.minimise(objective.clone()).using(coin_cbc);
        self.configure(
            &mut model,
            budget,
            warm.is_some() || k > self.full_effort_nodes,
        );
        if let Some(ub) = inst.ub {
            model.add_constraint(constraint::leq(objective, ub as f64 - 1.0));
        }
        inst.add_node_constraints(&mut model, &x);
        inst.add_link_constraints(&mut model, &links, &x_at, self.valid_cut);

        let solved = model.solve();
        let sol = match solved {
            Ok(sol) => sol,
            Err(ResolutionError::Infeasible) => {
                return match warm {
                    // nothing strictly cheaper than the warm start exists
                    Some(w) => done(w, true, true, variables),
                    None => Err(Rejection::Infeasible {
                        resource: Resource::Bandwidth,
                        reason: format!(
                            "no placement of the {k} virtual nodes leaves paths with enough bandwidth for all {} links (proven by the exact MIP)",
                            request.links().len()
                        ),
                    }),
                };
            }
            Err(e) => return Err(Rejection::Solver(e.to_string())),
        };
        let proven = matches!(sol.status(), SolutionStatus::Optimal);
        match extract(residual, request, &x, &links, &sol) {
            Some(e) if residual.check(request, &e).is_ok() => {
                let e = if proven {
                    e
                } else {
                    e.with_note(format!(
                        "unproven: the best the MIP found before its time limit of {limit_s} s"
                    ))
                };
                done(e, proven, false, variables)
            }
            _ if proven => Err(Rejection::Solver(
                "internal: the optimal MIP solution does not decode to a valid embedding".into(),
            )),
            // time limit without a (better) solution
            _ => match warm {
                Some(w) => done(
                    w.with_note(format!(
                        "LACE's answer, unproven: the MIP found nothing cheaper within its time limit of {limit_s} s"
                    )),
                    false,
                    true,
                    variables,
                ),
                None => Err(Rejection::TimeLimit {
                    limit_ms: self.time_limit.as_millis() as u64,
                }),
            },
        }
    }

    /// CBC's parameters: the time left (`budget`), one thread, no output, and with `light` neither root
    /// cuts nor primal heuristics.
    fn configure(&self, model: &mut CoinCbcProblem, budget: Duration, light: bool) {
        model.set_parameter("timeMode", "elapsed");
        model.set_parameter("seconds", &format!("{:.3}", budget.as_secs_f64().max(0.01)));
        model.set_parameter("threads", "1");
        // CBC and its LP solver write to stdout unless told not to
        model.set_parameter("log", "0");
        model.set_parameter("slogLevel", "0");
        if light {
            // CBC's root cut generation and primal heuristics do not look at the clock
            // (measured on a 10-node request: 35 s wall under a 10 s limit; 4.6 s under a 2 s
            // limit with both off).
            model.set_parameter("heuristics", "off");
            model.set_parameter("cuts", "off");
        }
    }
}

/// The node variables: per virtual node its candidate hosts (`x[v]`), and the same indexed by
/// host (`x_at[v][h]`).
type NodeVars = (Vec<Vec<(NodeIndex, Variable)>>, Vec<Vec<Option<Variable>>>);

/// One request on one residual, with the bounds the model is built from.
struct Instance<'a> {
    residual: &'a Residual,
    request: &'a VnRequest,
    /// Several virtual nodes may share a host.
    revisit: bool,
    /// Links with bandwidth are split flows (the variant and the request allow it).
    split_ok: bool,
    /// Per virtual link: it must leave its source host (the valid cut applies).
    must_hop: Vec<bool>,
    /// Every unit of a must-hop link's bandwidth crosses at least one substrate link: the sum of
    /// their demands bounds the bandwidth cost from below.
    lower: u64,
    /// The bandwidth cost of the warm start, when there is one.
    ub: Option<u64>,
}

impl<'a> Instance<'a> {
    fn new(
        mip: &Mip,
        residual: &'a Residual,
        request: &'a VnRequest,
        cands: &[Vec<NodeIndex>],
        warm: Option<&Embedding>,
    ) -> Self {
        let opts = request.options();
        let revisit = opts.allow_revisitation;
        // which links must leave their source host (the valid cut applies)
        let must_hop: Vec<bool> = request
            .links()
            .iter()
            .map(|vl| !(revisit && cands[vl.u].iter().any(|h| cands[vl.v].contains(h))))
            .collect();
        // every unit of a must-hop link's bandwidth crosses at least one substrate link
        let lower: u64 = request
            .links()
            .iter()
            .zip(&must_hop)
            .filter(|(_, m)| **m)
            .map(|(vl, _)| vl.bandwidth)
            .sum();
        // With a warm start of bandwidth cost `ub` the MIP only looks for strictly cheaper
        // embeddings (the objective is integral): infeasible then means the warm start is optimal.
        let ub = warm.map(|w| w.links().iter().map(|l| l.bandwidth_hops()).sum::<u64>());
        Instance {
            residual,
            request,
            revisit,
            split_ok: mip.splittable
                && opts.allow_path_split
                && opts.max_path_hops.is_none()
                && request.links().iter().all(|l| l.max_delay_us.is_none()),
            must_hop,
            lower,
            ub,
        }
    }

    /// The binary `x[v][h]` for every candidate host that passes variable fixing: every
    /// must-hop link of `v` leaves its host over an incident substrate link, so the host needs
    /// that much free bandwidth around it (in total, and for unit flows on a single link).
    fn node_vars(
        &self,
        vars: &mut ProblemVariables,
        cands: &[Vec<NodeIndex>],
    ) -> Result<NodeVars, Rejection> {
        let (s, residual, request) = (self.residual.substrate(), self.residual, self.request);
        let (k, n) = (request.nodes().len(), s.node_count());
        let (mut need_sum, mut need_max) = (vec![0u64; k], vec![0u64; k]);
        for (l, vl) in request.links().iter().enumerate() {
            if self.must_hop[l] {
                for v in [vl.u, vl.v] {
                    need_sum[v] += vl.bandwidth;
                    need_max[v] = need_max[v].max(vl.bandwidth);
                }
            }
        }
        let around = |h: NodeIndex| {
            s.neighbors(h)
                .iter()
                .fold((0u64, 0u64), |(sum, max), (_, e)| {
                    let b = residual.bandwidth(*e);
                    (sum + b, max.max(b))
                })
        };
        let mut x: Vec<Vec<(NodeIndex, Variable)>> = Vec::with_capacity(k);
        let mut x_at: Vec<Vec<Option<Variable>>> = vec![vec![None; n]; k];
        for (v, hs) in cands.iter().enumerate() {
            let row: Vec<(NodeIndex, Variable)> = hs
                .iter()
                .filter(|&&h| {
                    let (sum, max) = around(h);
                    sum >= need_sum[v] && (self.split_ok || max >= need_max[v])
                })
                .map(|&h| {
                    let var = vars.add(variable().binary());
                    x_at[v][h.index()] = Some(var);
                    (h, var)
                })
                .collect();
            if row.is_empty() {
                return Err(Rejection::Node {
                    node: request.nodes()[v].id.clone(),
                    resource: Resource::Bandwidth,
                    reason: format!(
                        "no eligible host has {} bandwidth free on its links (the sum of the node's link demands)",
                        need_sum[v]
                    ),
                });
            }
            x.push(row);
        }
        Ok((x, x_at))
    }

    /// The flow variables of every virtual link on both arcs of every substrate link (for unit
    /// flows only links with its bandwidth free), and the objective over them.
    fn link_vars(&self, vars: &mut ProblemVariables) -> (Vec<LinkVars>, Expression) {
        let (s, residual, request) = (self.residual.substrate(), self.residual, self.request);
        let mut links: Vec<LinkVars> = Vec::with_capacity(request.links().len());
        let mut objective = Expression::with_capacity(request.links().len() * 2 * s.link_count());
        for vl in request.links() {
            let b = vl.bandwidth;
            let unit = !(self.split_ok && b > 0);
            let mut arcs = Vec::new();
            for e in s.link_indices() {
                if unit && residual.bandwidth(e) < b {
                    continue;
                }
                let (i, j) = s.endpoints(e);
                for (t, hd) in [(i, j), (j, i)] {
                    let var = if unit {
                        vars.add(variable().binary())
                    } else {
                        vars.add(variable().integer().min(0).max(b as f64))
                    };
                    let c = if unit { b as f64 } else { 1.0 };
                    if c > 0.0 {
                        objective.add_mul(c, var);
                    }
                    arcs.push((t, hd, e, var));
                }
            }
            links.push(LinkVars { unit, arcs });
        }
        (links, objective)
    }

    /// Every virtual node on exactly one host; per host at most one of them, or with
    /// revisitation its CPU and memory.
    fn add_node_constraints(&self, model: &mut CoinCbcProblem, x: &[Vec<(NodeIndex, Variable)>]) {
        let (residual, request) = (self.residual, self.request);
        for row in x {
            let sum: Expression = row.iter().map(|(_, v)| *v).sum();
            model.add_constraint(constraint::eq(sum, 1.0));
        }
        let mut at_host: Vec<Vec<(usize, Variable)>> =
            vec![Vec::new(); residual.substrate().node_count()];
        for (v, row) in x.iter().enumerate() {
            for &(h, var) in row {
                at_host[h.index()].push((v, var));
            }
        }
        let cap = request.options().max_nodes_per_host;
        for (h, here) in at_host.iter().enumerate() {
            if here.len() < 2 {
                continue;
            }
            if let Some(cap) = cap.filter(|c| (*c as usize) < here.len()) {
                let sum: Expression = here.iter().map(|(_, v)| *v).sum();
                model.add_constraint(constraint::leq(sum, f64::from(cap)));
            }
            if self.revisit {
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
    }

    /// Per virtual link: flow conservation, for unit flows the simple-path strengthening and
    /// the hop limit, the valid cut; then every substrate link's bandwidth.
    fn add_link_constraints(
        &self,
        model: &mut CoinCbcProblem,
        links: &[LinkVars],
        x_at: &[Vec<Option<Variable>>],
        valid_cut: bool,
    ) {
        let (s, request) = (self.residual.substrate(), self.request);
        let n = s.node_count();
        let mut per_edge: Vec<Expression> = vec![Expression::default(); s.link_count()];
        let mut edge_used = vec![false; s.link_count()];
        for (l, lv) in links.iter().enumerate() {
            let vl = &request.links()[l];
            let q = if lv.unit { 1.0 } else { vl.bandwidth as f64 };
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
            if lv.unit {
                Self::add_simple_path(model, lv, x_at, vl.u, vl.v);
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
            if valid_cut && self.must_hop[l] {
                model.add_constraint(constraint::geq(total.clone(), q));
            }
            if lv.unit
                && let Some(c) = self.hop_cap(l)
            {
                model.add_constraint(constraint::leq(total, c as f64));
            }
            if let Some(max) = vl.max_delay_us {
                // unit flow: the path's latency; split flow: every unit's, summed
                let mut delay = Expression::with_capacity(lv.arcs.len());
                for &(_, _, e, var) in &lv.arcs {
                    let us = s.link(e).latency_ms.unwrap_or(0.0).max(0.0) * 1000.0;
                    delay.add_mul(us, var);
                }
                model.add_constraint(constraint::leq(delay, max as f64 * q));
            }
        }
        for (e, expr) in per_edge.into_iter().enumerate() {
            if edge_used[e] {
                model.add_constraint(constraint::leq(
                    expr,
                    self.residual.bandwidth(EdgeIndex::new(e)) as f64,
                ));
            }
        }
    }

    /// A simple path neither enters its source nor leaves its destination:
    /// `in_l(h) + x[u][h] <= 1` and `out_l(h) + x[v][h] <= 1`.
    fn add_simple_path(
        model: &mut CoinCbcProblem,
        lv: &LinkVars,
        x_at: &[Vec<Option<Variable>>],
        u: usize,
        v: usize,
    ) {
        let n = x_at[u].len();
        let mut into: Vec<Expression> = vec![Expression::default(); n];
        let mut out: Vec<Expression> = vec![Expression::default(); n];
        for &(t, hd, _, var) in &lv.arcs {
            out[t.index()].add_mul(1.0, var);
            into[hd.index()].add_mul(1.0, var);
        }
        for h in 0..n {
            if let Some(xu) = x_at[u][h] {
                let mut e = std::mem::take(&mut into[h]);
                e.add_mul(1.0, xu);
                model.add_constraint(constraint::leq(e, 1.0));
            }
            if let Some(xv) = x_at[v][h] {
                let mut e = std::mem::take(&mut out[h]);
                e.add_mul(1.0, xv);
                model.add_constraint(constraint::leq(e, 1.0));
            }
        }
    }

    /// The hop limit of unit-flow link `l`: the request's, and for an improving solution the
    /// budget left once every other must-hop link has taken one hop.
    fn hop_cap(&self, l: usize) -> Option<u64> {
        let vl = &self.request.links()[l];
        let mut cap = self.request.options().max_path_hops.map(u64::from);
        if let Some(ub) = self.ub
            && vl.bandwidth > 0
        {
            let others = self.lower - if self.must_hop[l] { vl.bandwidth } else { 0 };
            let budget = (ub - 1).saturating_sub(others) / vl.bandwidth;
            cap = Some(cap.map_or(budget, |c| c.min(budget)));
        }
        cap
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
        if vl.bandwidth == 0 {
            // free of cost in the objective, so possibly a detour: take a fewest-hop path
            let p = Bfs::default()
                .shortest(
                    s,
                    residual.bandwidths(),
                    0,
                    src,
                    dst,
                    request.options().max_path_hops,
                )
                .ok()?;
            out.push(LinkEmbedding::unsplit(Flow::new(p.0, p.1, 0)));
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
    use crate::mapping::tests::{chain, line};
    use crate::request::{RequestOptions, VirtualNode};
    use crate::substrate::{Substrate, SubstrateLink, SubstrateNode};
    use std::sync::Arc;

    /// `m` with a time limit no loaded machine reaches: these problems solve in milliseconds, and
    /// the assertions are about the answer, not the limit (tests/mip_limit.rs tests that).
    fn patient(m: Mip) -> Mip {
        Mip {
            time_limit: Duration::from_secs(120),
            ..m
        }
    }

    #[test]
    fn finds_the_optimum_on_a_line() {
        let res = Residual::new(Arc::new(line()));
        let r = chain();
        for warm_start in [false, true] {
            let m = Mip {
                warm_start,
                ..patient(Mip::default())
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
        let err = patient(Mip::default()).solve(&res, &r).unwrap_err();
        assert!(
            matches!(
                err,
                Rejection::Node {
                    resource: Resource::Bandwidth,
                    ..
                }
            ),
            "{err}"
        );
        let sol = patient(Mip::splittable()).solve(&res, &r).unwrap();
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
        let sol = patient(Mip::default()).solve(&res, &r).unwrap();
        assert_eq!(
            sol.embedding.cost(),
            10,
            "co-located on a: no bandwidth cost"
        );
    }
}
