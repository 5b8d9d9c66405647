//! One simulator run as JSON, for the scale benchmark (`deploy/bench/embedding-scale.sh`).
//!
//! `cargo run --release -p embedding --example sim_bench -- TRACE ALGO DECISIONS.jsonl`
//! `cargo run --release -p embedding --example sim_bench -- --generate NODES RATE REQUESTS SEED OUT`
//!
//! Prints the run's [`embedding::SimReport`] as one JSON object, with `cpu_ms_mean`: the CPU
//! time of the whole simulation per request (from `/proc/thread-self/schedstat`; wall-clock
//! times per request grow when other processes share the cores, CPU time hardly), and writes the decision log the
//! referee (`check_embedding.py`) replays. It uses only the crate's public API of long standing,
//! so the benchmark builds the very same file against an older commit to compare with it.

use std::io::Write;

use embedding::{WaxmanConfig, by_name, decision_json, parse_trace, simulate};

const USAGE: &str = "usage: sim_bench TRACE ALGO DECISIONS.jsonl | sim_bench --generate NODES RATE REQUESTS SEED OUT";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, nodes, rate, requests, seed, out] = args.as_slice()
        && flag == "--generate"
    {
        // the standard workload (as `vnctl sim --generate waxman`) at another size and rate
        let cfg = WaxmanConfig {
            nodes: nodes.parse()?,
            rate: rate.parse()?,
            requests: requests.parse()?,
            seed: seed.parse()?,
            ..WaxmanConfig::default()
        };
        let trace = embedding::generate(&cfg)?;
        std::fs::write(out, embedding::trace_json(&trace, None).to_string())?;
        return Ok(());
    }
    let [trace, algo, decisions] = args.as_slice() else {
        return Err(USAGE.into());
    };
    let trace = parse_trace(&std::fs::read_to_string(trace)?)?;
    let algo = by_name(algo).ok_or_else(|| format!("unknown algorithm {algo}"))?;
    let mut log = std::io::BufWriter::new(std::fs::File::create(decisions)?);
    let mut failed: Option<std::io::Error> = None;
    let cpu_before = cpu_ns()?;
    let report = simulate(&trace, algo.as_ref(), |tr, d| {
        if failed.is_none()
            && let Err(e) = writeln!(log, "{}", decision_json(&trace.substrate, tr, d))
        {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(format!("writing the decision log: {e}").into());
    }
    let cpu = cpu_ns()? - cpu_before;
    log.flush()?;
    let mut out = serde_json::to_value(&report)?;
    out["cpu_ms_mean"] = (cpu as f64 / 1e6 / report.requests.max(1) as f64).into();
    println!("{out}");
    Ok(())
}

/// Nanoseconds this thread has run on a CPU.
fn cpu_ns() -> Result<u64, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let first = text.split_whitespace().next().ok_or("empty schedstat")?;
    Ok(first.parse()?)
}
