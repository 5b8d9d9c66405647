//! The simulator's decision logs, replayed by the neutral referee (`check_embedding.py`, copied
//! from the shared workload set into `tests/data/`): 0 violations, and the referee recomputes the
//! acceptance ratio and R/C the simulator reported. Needs `python3`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use embedding::{by_name, decision_json, parse_trace, simulate};

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn check(algo_name: &str, limit: usize) {
    let text = std::fs::read_to_string(data("wx100_s0_r014_first150.json")).unwrap();
    let mut trace = parse_trace(&text).unwrap();
    trace.requests.truncate(limit);
    // the referee reads the trace too: give it exactly the requests simulated
    let mut trace_file = tempfile::NamedTempFile::new().unwrap();
    let json = embedding::trace_json(&trace, None);
    trace_file.write_all(json.to_string().as_bytes()).unwrap();
    let algo = by_name(algo_name).unwrap();
    let mut log = tempfile::NamedTempFile::new().unwrap();
    let report = simulate(&trace, algo.as_ref(), |tr, d| {
        writeln!(log, "{}", decision_json(&trace.substrate, tr, d)).unwrap();
    });
    log.flush().unwrap();
    let out = Command::new("python3")
        .arg(data("check_embedding.py"))
        .arg(trace_file.path())
        .arg(log.path())
        .output()
        .expect("python3 must be installed to run the referee");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{algo_name}: referee found violations: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["violations"], 0);
    assert_eq!(r["requests"], report.requests as u64);
    assert_eq!(r["accepted"], report.accepted as u64, "{algo_name}");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    assert!(close(
        r["acceptance_ratio"].as_f64().unwrap(),
        report.acceptance_ratio
    ));
    assert!(
        close(r["lt_r2c"].as_f64().unwrap(), report.lt_r2c),
        "{algo_name}"
    );
    assert!(
        close(r["lt_time_r2c"].as_f64().unwrap(), report.lt_time_r2c),
        "{algo_name}"
    );
    assert!(report.accepted > 0, "{algo_name} accepted nothing");
}

#[test]
fn heuristics_pass_the_referee() {
    for name in ["lace", "grc", "grc-feasible", "rw-maxmatch", "rw-bfs"] {
        check(name, 150);
    }
}

#[test]
fn mip_passes_the_referee() {
    check("mip", 12);
}

#[test]
fn simulation_is_deterministic() {
    let text = std::fs::read_to_string(data("wx100_s0_r014_first150.json")).unwrap();
    let trace = parse_trace(&text).unwrap();
    let algo = by_name("lace").unwrap();
    let run = || {
        let mut decisions = Vec::new();
        let r = simulate(&trace, algo.as_ref(), |tr, d| {
            let mut v = decision_json(&trace.substrate, tr, d);
            v.as_object_mut().unwrap().remove("solve_ms");
            decisions.push(v);
        });
        (r.accepted, r.revenue, r.cost, decisions)
    };
    assert_eq!(run(), run());
}
