//! Parameter sweep of LACE over traces (how its defaults were chosen).
//!
//! `cargo run --release -p embedding --example lace_sweep -- TRACE...`
//!
//! Prints, per parameter set, the means over the traces of acceptance, lifetime-weighted R/C and
//! ms per request.

use embedding::algo::lace::Lace;
use embedding::{parse_trace, simulate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let traces = std::env::args()
        .skip(1)
        .map(|p| Ok(parse_trace(&std::fs::read_to_string(p)?)?))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    if traces.is_empty() {
        return Err("usage: lace_sweep TRACE...".into());
    }
    let d = Lace::default();
    let mut sets = vec![("default".to_string(), d.clone())];
    for (w, c, r) in [(8, 6, 16), (16, 8, 24), (64, 12, 48)] {
        sets.push((
            format!("beam {w} cand {c} roots {r}"),
            Lace {
                beam_width: w,
                candidates: c,
                roots: r,
                ..d.clone()
            },
        ));
    }
    for lb in [0.0, 1.0] {
        sets.push((
            format!("link_balance {lb}"),
            Lace {
                link_balance: lb,
                ..d.clone()
            },
        ));
    }
    for nb in [0.0, 50.0] {
        sets.push((
            format!("node_balance {nb}"),
            Lace {
                node_balance: nb,
                ..d.clone()
            },
        ));
    }
    for rw in [0, 128] {
        sets.push((
            format!("retry_width {rw}"),
            Lace {
                retry_width: rw,
                ..d.clone()
            },
        ));
    }
    println!(
        "{:<28} {:>7} {:>8} {:>7} {:>7}",
        "parameters", "accept", "R/C(lt)", "ms", "p95"
    );
    for (name, algo) in sets {
        let reps: Vec<_> = traces
            .iter()
            .map(|t| simulate(t, &algo, |_, _| {}))
            .collect();
        let m = |f: &dyn Fn(&embedding::SimReport) -> f64| {
            reps.iter().map(f).sum::<f64>() / reps.len() as f64
        };
        println!(
            "{:<28} {:>7.4} {:>8.4} {:>7.2} {:>7.2}",
            name,
            m(&|r| r.acceptance_ratio),
            m(&|r| r.lt_time_r2c),
            m(&|r| r.solve_ms_mean),
            m(&|r| r.solve_ms_p95)
        );
    }
    Ok(())
}
