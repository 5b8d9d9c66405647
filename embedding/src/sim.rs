//! The online simulator and its decision log.
//!
//! Semantics (identical to the referee `check_embedding.py` and to Virne): departure = arrival +
//! lifetime; the event list is all arrivals in file order followed by all departures in file
//! order, stably sorted by time, so on a tie arrivals come first. Each arrival is embedded against
//! the current residual state and, when accepted, committed; a departure releases what its request
//! holds. Revenue of a request = sum of CPU + sum of bandwidth demands; cost = sum of CPU + sum
//! over flows of bandwidth x hops. `lt_r2c` = total revenue / total cost over accepted requests;
//! `lt_time_r2c` weights both by lifetime. The simulation is deterministic given the trace and
//! the algorithm (only the measured solve times vary).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::embedder::Embedder;
use crate::mapping::Embedding;
use crate::rejection::Rejection;
use crate::residual::{Allocation, Residual};
use crate::substrate::Substrate;
use crate::trace::{TimedRequest, Trace, id_value};

/// The outcome of one arrival.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Index of the request in the trace.
    pub index: usize,
    /// The embedding, or why not.
    pub outcome: Result<Embedding, Rejection>,
    /// Time spent in `embed`.
    pub solve_time: Duration,
}

/// Metrics of a simulation run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SimReport {
    /// Algorithm name.
    pub algo: String,
    /// Arrivals processed.
    pub requests: usize,
    /// Arrivals accepted.
    pub accepted: usize,
    /// `accepted / requests`.
    pub acceptance_ratio: f64,
    /// Sum of revenue over accepted requests.
    pub revenue: u64,
    /// Sum of cost over accepted requests.
    pub cost: u64,
    /// `revenue / cost`.
    pub lt_r2c: f64,
    /// Lifetime-weighted revenue / lifetime-weighted cost.
    pub lt_time_r2c: f64,
    /// Long-term average revenue: lifetime-weighted revenue / last arrival time.
    pub lar: f64,
    /// Mean time per `embed` call, ms.
    pub solve_ms_mean: f64,
    /// 95th percentile (nearest rank) of the time per `embed` call, ms.
    pub solve_ms_p95: f64,
    /// Longest `embed` call, ms.
    pub solve_ms_max: f64,
    /// Wall-clock time of the whole run, s.
    pub wall_s: f64,
    /// Accepted answers the algorithm marked with a note on their quality (the exact MIP: not
    /// proven optimal, or LACE's answer after its time limit; each note is in the decision log).
    pub unproven: usize,
}

/// Runs `trace` through `algo`, calling `on_decision` after every arrival (for progress and the
/// decision log).
pub fn simulate(
    trace: &Trace,
    algo: &dyn Embedder,
    mut on_decision: impl FnMut(&TimedRequest, &Decision),
) -> SimReport {
    let start = Instant::now();
    let mut residual = Residual::new(Arc::new(trace.substrate.clone()));
    let n = trace.requests.len();
    let mut events: Vec<(f64, bool, usize)> = (0..n)
        .map(|i| (trace.requests[i].arrival, true, i))
        .chain((0..n).map(|i| {
            let r = &trace.requests[i];
            (r.arrival + r.lifetime, false, i)
        }))
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut held: Vec<Option<Allocation>> = (0..n).map(|_| None).collect();
    let mut times = Vec::with_capacity(n);
    let (mut accepted, mut revenue, mut cost, mut unproven) = (0usize, 0u64, 0u64, 0usize);
    let (mut trev, mut tcost, mut last_arrival) = (0.0f64, 0.0f64, 0.0f64);
    for (_, arrival, i) in events {
        let tr = &trace.requests[i];
        if !arrival {
            if let Some(a) = held[i].take() {
                residual
                    .release(a)
                    .expect("the simulator releases only what it committed");
            }
            continue;
        }
        last_arrival = tr.arrival;
        let t0 = Instant::now();
        let outcome = algo.embed(&residual, &tr.request);
        let solve_time = t0.elapsed();
        times.push(solve_time.as_secs_f64() * 1e3);
        let outcome = outcome.and_then(|e| match residual.commit(&tr.request, &e) {
            Ok(a) => {
                held[i] = Some(a);
                Ok(e)
            }
            Err(err) => Err(Rejection::Solver(format!(
                "internal: {} returned an embedding that does not commit: {err}",
                algo.name()
            ))),
        });
        if let Ok(e) = &outcome {
            accepted += 1;
            unproven += usize::from(e.note().is_some());
            revenue += e.revenue();
            cost += e.cost();
            trev += e.revenue() as f64 * tr.lifetime;
            tcost += e.cost() as f64 * tr.lifetime;
        }
        on_decision(
            tr,
            &Decision {
                index: i,
                outcome,
                solve_time,
            },
        );
    }
    let requests = times.len();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mean = ratio(times.iter().sum(), requests as f64);
    let max = times.iter().copied().fold(0.0, f64::max);
    times.sort_by(f64::total_cmp);
    let p95 = if times.is_empty() {
        0.0
    } else {
        times[((0.95 * requests as f64).ceil() as usize).clamp(1, requests) - 1]
    };
    SimReport {
        algo: algo.name().to_owned(),
        requests,
        accepted,
        acceptance_ratio: ratio(accepted as f64, requests as f64),
        revenue,
        cost,
        lt_r2c: ratio(revenue as f64, cost as f64),
        lt_time_r2c: ratio(trev, tcost),
        lar: ratio(trev, last_arrival),
        solve_ms_mean: mean,
        solve_ms_p95: p95,
        solve_ms_max: max,
        wall_s: start.elapsed().as_secs_f64(),
        unproven,
    }
}

/// One line of the decision log, in the format `check_embedding.py` reads:
/// `{"id":17,"accepted":true,"node_map":{"0":42},"link_paths":{"0-1":[[42,13],[13,7]]}}`
/// (splits: a list of `{"path": [...], "bw": x}`), or `{"id":18,"accepted":false,"reason":...}`.
pub fn decision_json(substrate: &Substrate, tr: &TimedRequest, decision: &Decision) -> Value {
    let r = &tr.request;
    let mut obj = Map::new();
    obj.insert("id".into(), id_value(r.id()));
    match &decision.outcome {
        Err(why) => {
            obj.insert("accepted".into(), Value::Bool(false));
            obj.insert("reason".into(), Value::from(why.to_string()));
        }
        Ok(e) => {
            obj.insert("accepted".into(), Value::Bool(true));
            let host = |h: &petgraph::graph::NodeIndex| id_value(&substrate.node(*h).id);
            let node_map: Map<String, Value> = r
                .nodes()
                .iter()
                .zip(e.nodes())
                .map(|(vn, h)| (vn.id.clone(), host(h)))
                .collect();
            obj.insert("node_map".into(), Value::Object(node_map));
            let mut paths = Map::new();
            for (l, le) in e.links().iter().enumerate() {
                let edges = |f: &crate::mapping::Flow| {
                    Value::Array(
                        f.hosts
                            .windows(2)
                            .map(|w| json!([host(&w[0]), host(&w[1])]))
                            .collect(),
                    )
                };
                let v = if le.flows().len() == 1 {
                    edges(&le.flows()[0])
                } else {
                    Value::Array(
                        le.flows()
                            .iter()
                            .map(|f| json!({"path": edges(f), "bw": f.bandwidth}))
                            .collect(),
                    )
                };
                paths.insert(r.link_name(l), v);
            }
            obj.insert("link_paths".into(), Value::Object(paths));
            if let Some(note) = e.note() {
                obj.insert("note".into(), Value::from(note));
            }
        }
    }
    obj.insert(
        "solve_ms".into(),
        Value::from(decision.solve_time.as_secs_f64() * 1e3),
    );
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::parse_trace;

    /// Two hosts with 10 cpu; three requests of 6 cpu each; the second arrives while the first
    /// holds one host... every request needs both hosts (two nodes of 6).
    const TRACE: &str = r#"{"substrate": {"nodes": [{"id": 0, "cpu": 10}, {"id": 1, "cpu": 10}],
        "links": [{"u": 0, "v": 1, "bw": 10}]},
      "requests": [
        {"id": 0, "arrival": 0, "lifetime": 5, "nodes": [{"id": 0, "cpu": 6}, {"id": 1, "cpu": 6}], "links": [{"u": 0, "v": 1, "bw": 4}]},
        {"id": 1, "arrival": 1, "lifetime": 5, "nodes": [{"id": 0, "cpu": 6}, {"id": 1, "cpu": 6}], "links": [{"u": 0, "v": 1, "bw": 4}]},
        {"id": 2, "arrival": 5, "lifetime": 5, "nodes": [{"id": 0, "cpu": 6}, {"id": 1, "cpu": 6}], "links": [{"u": 0, "v": 1, "bw": 4}]}
      ]}"#;

    #[test]
    fn arrivals_before_departures_on_ties() {
        let t = parse_trace(TRACE).unwrap();
        let algo = crate::by_name("grc").unwrap();
        let mut log = Vec::new();
        let rep = simulate(&t, algo.as_ref(), |tr, d| {
            log.push(decision_json(&t.substrate, tr, d))
        });
        // request 0 holds 12 of 20 cpu until t=5; request 1 is rejected; request 2 arrives at
        // t=5, exactly when request 0 departs, and is processed first: rejected too.
        assert_eq!(rep.requests, 3);
        assert_eq!(rep.accepted, 1);
        assert_eq!(rep.revenue, 16);
        assert_eq!(rep.cost, 16);
        assert_eq!(log[0]["accepted"], true);
        assert_eq!(log[0]["link_paths"]["0-1"].as_array().unwrap().len(), 1);
        assert_eq!(log[1]["accepted"], false);
        assert_eq!(log[2]["accepted"], false);
        assert!(log[2]["reason"].as_str().unwrap().contains("cpu"));
    }

    #[test]
    fn ids_stay_numeric() {
        use crate::trace::id_value;
        assert_eq!(id_value("42"), json!(42));
        assert_eq!(id_value("042"), json!("042"));
        assert_eq!(id_value("h1"), json!("h1"));
    }
}
