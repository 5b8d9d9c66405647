//! A `vnctl sim` run as a [`Run`], so that `sim --report DIR` draws the same plots as a live
//! experiment: one record per request and algorithm (the solve time stands for the setup
//! latency), and the substrate over trace time (reserved CPU, and bandwidth x hops over all
//! links) sampled on a grid.

use super::records::{Record, Run, Sample};

/// Samples per algorithm over the trace's span.
const GRID: usize = 200;

/// What one algorithm decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Index of the request in the trace.
    pub index: usize,
    /// `Err(reason)` when rejected.
    pub accepted: Result<(), String>,
    pub solve_ms: f64,
    /// Reserved CPU and bandwidth x hops while it lives (0 when rejected).
    pub cpu: u64,
    pub bandwidth_hops: u64,
}

/// The run of `outcomes` (per algorithm name) on `trace`.
pub fn run(trace: &embedding::Trace, outcomes: &[(String, Vec<Outcome>)]) -> Run {
    let mut records = Vec::new();
    let mut samples = Vec::new();
    let end = trace
        .requests
        .iter()
        .map(|r| r.arrival)
        .fold(0.0f64, f64::max);
    let (cpu_cap, bw_cap) = (
        trace.substrate.total_cpu().max(1) as f64,
        trace.substrate.total_bandwidth().max(1) as f64,
    );
    for (algo, outs) in outcomes {
        for o in outs {
            let tr = &trace.requests[o.index];
            records.push(Record {
                seq: o.index,
                provider: "sim".into(),
                algorithm: algo.clone(),
                vn: tr.request.id().to_owned(),
                nodes: tr.request.nodes().len(),
                links: tr.request.links().len(),
                arrival_s: tr.arrival,
                lifetime_s: tr.lifetime,
                accepted: o.accepted.is_ok(),
                reason: o.accepted.clone().err().unwrap_or_default(),
                create_to_accepted_ms: Some(o.solve_ms),
                ..Default::default()
            });
        }
        for k in 0..=GRID {
            let t = end * k as f64 / GRID as f64;
            let mut s = Sample {
                algorithm: algo.clone(),
                t_s: t,
                ..Default::default()
            };
            let (mut cpu, mut bw) = (0u64, 0u64);
            for o in outs {
                let tr = &trace.requests[o.index];
                if tr.arrival > t {
                    continue;
                }
                s.requests += 1;
                if o.accepted.is_ok() {
                    s.accepted += 1;
                    if t < tr.arrival + tr.lifetime {
                        s.vns_alive += 1;
                        cpu += o.cpu;
                        bw += o.bandwidth_hops;
                    }
                }
            }
            s.cpu_pct = 100.0 * cpu as f64 / cpu_cap;
            s.link_pct
                .insert("all links".into(), 100.0 * bw as f64 / bw_cap);
            samples.push(s);
        }
    }
    Run {
        name: "sim".into(),
        ended: "completed".into(),
        records,
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_lifetimes() {
        let text = r#"{"substrate": {"nodes": [{"id": 0, "cpu": 100}, {"id": 1, "cpu": 100}],
            "links": [{"u": 0, "v": 1, "bw": 50}]},
            "requests": [
              {"id": 0, "arrival": 0, "lifetime": 10, "nodes": [{"id": 0, "cpu": 20}], "links": []},
              {"id": 1, "arrival": 5, "lifetime": 100, "nodes": [{"id": 0, "cpu": 10}], "links": []},
              {"id": 2, "arrival": 20, "lifetime": 1, "nodes": [{"id": 0, "cpu": 10}], "links": []}]}"#;
        let trace = embedding::parse_trace(text).unwrap();
        let o = |index, ok: bool, cpu| Outcome {
            index,
            accepted: if ok { Ok(()) } else { Err("cpu".into()) },
            solve_ms: 1.0,
            cpu,
            bandwidth_hops: 10 * cpu,
        };
        let run = run(
            &trace,
            &[(
                "x".into(),
                vec![o(0, true, 20), o(1, true, 10), o(2, false, 0)],
            )],
        );
        assert_eq!(run.records.len(), 3);
        assert_eq!(run.records[2].reason, "cpu");
        let at = |t: f64| {
            run.samples
                .iter()
                .find(|s| (s.t_s - t).abs() < 1e-9)
                .unwrap()
        };
        // t = 6: both alive, 30 of 200 cpu; 300 of 50 bandwidth hops.
        let s = at(6.0);
        assert_eq!((s.vns_alive, s.requests, s.accepted), (2, 2, 2));
        assert!((s.cpu_pct - 15.0).abs() < 1e-9);
        assert!((s.link_pct["all links"] - 600.0).abs() < 1e-9);
        let s = at(20.0);
        assert_eq!((s.vns_alive, s.requests, s.accepted), (1, 3, 2));
    }
}
