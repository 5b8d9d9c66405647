//! Single requests on a fresh substrate: the exact MIP against the heuristics.
//!
//! `cargo run --release -p embedding --example mip_optimality -- TRACE [PER_SIZE] [MAX_NODES]`
//!
//! Takes the first `PER_SIZE` requests (default 10) of every size 2..=MAX_NODES (default 5) from
//! the trace and solves each alone on the full substrate:
//! - with the MIP as registered (valid cut + LACE warm start, 10 s limit): proven-optimal count,
//!   solve time mean/max, variables;
//! - with the MIP without the warm start, and without the valid cut (2 s limit each, to show what
//!   each ingredient buys);
//! - with every heuristic: mean of (MIP optimum cost / heuristic cost), i.e. its R/C relative to
//!   the optimum (1.0 = optimal; a rejection counts 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use embedding::algo::mip::Mip;
use embedding::{Residual, VnRequest, by_name};

fn run(mip: &Mip, residual: &Residual, r: &VnRequest) -> (bool, f64) {
    let t0 = Instant::now();
    let proven = mip.solve(residual, r).is_ok_and(|s| s.proven_optimal);
    (proven, t0.elapsed().as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: mip_optimality TRACE [PER_SIZE] [MAX_NODES]")?;
    let per_size: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let max_nodes: usize = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let trace = embedding::parse_trace(&std::fs::read_to_string(path)?)?;
    let residual = Residual::new(Arc::new(trace.substrate.clone()));
    let heuristics = ["lace", "grc", "grc-feasible", "rw-maxmatch", "rw-bfs"];
    println!(
        "substrate: {} nodes, {} links; up to {per_size} requests per size",
        residual.substrate().node_count(),
        residual.substrate().link_count()
    );
    println!(
        "{:>5} {:>3} {:>6} {:>7} {:>7} {:>6} | {:>13} | {:>13} | optimum cost / heuristic cost: {}",
        "nodes",
        "n",
        "proven",
        "mean_s",
        "max_s",
        "vars",
        "no warm start",
        "no valid cut",
        heuristics.join(" ")
    );
    let quick = Duration::from_secs(2);
    let exact = Mip {
        time_limit: Duration::from_secs(10),
        ..Mip::default()
    };
    let no_warm = Mip {
        warm_start: false,
        time_limit: quick,
        ..Mip::default()
    };
    let no_cut = Mip {
        valid_cut: false,
        time_limit: quick,
        ..Mip::default()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    for size in 2..=max_nodes {
        let reqs: Vec<&VnRequest> = trace
            .requests
            .iter()
            .map(|t| &t.request)
            .filter(|r| r.nodes().len() == size)
            .take(per_size)
            .collect();
        let (mut proven, mut times, mut vars) = (0, Vec::new(), 0usize);
        let (mut nw_proven, mut nw_times, mut nc_proven, mut nc_times) = (0, vec![], 0, vec![]);
        let mut rel: Vec<Vec<f64>> = vec![Vec::new(); heuristics.len()];
        for r in &reqs {
            let t0 = Instant::now();
            let sol = exact.solve(&residual, r);
            times.push(t0.elapsed().as_secs_f64());
            let Ok(sol) = sol else { continue };
            vars = vars.max(sol.variables);
            proven += usize::from(sol.proven_optimal);
            let opt = sol.embedding.cost() as f64;
            let (p, t) = run(&no_warm, &residual, r);
            nw_proven += usize::from(p);
            nw_times.push(t);
            let (p, t) = run(&no_cut, &residual, r);
            nc_proven += usize::from(p);
            nc_times.push(t);
            for (i, h) in heuristics.iter().enumerate() {
                let algo = by_name(h).expect("registered");
                rel[i].push(
                    algo.embed(&residual, r)
                        .map_or(0.0, |e| opt / e.cost() as f64),
                );
            }
        }
        let rels: Vec<String> = rel.iter().map(|v| format!("{:.3}", mean(v))).collect();
        println!(
            "{:>5} {:>3} {:>6} {:>7.3} {:>7.3} {:>6} | {:>2} {:>5.2} s avg | {:>2} {:>5.2} s avg | {}",
            size,
            reqs.len(),
            proven,
            mean(&times),
            times.iter().copied().fold(0.0, f64::max),
            vars,
            nw_proven,
            mean(&nw_times),
            nc_proven,
            mean(&nc_times),
            rels.join(" ")
        );
    }
    Ok(())
}
