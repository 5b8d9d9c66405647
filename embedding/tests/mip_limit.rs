//! The exact MIP keeps its time limit and says when an answer is not proven optimal. In a process
//! of its own: an abandoned solve makes later solves of the same process fall back to LACE.

use std::sync::Arc;
use std::time::{Duration, Instant};

use embedding::algo::mip::Mip;
use embedding::{
    Rejection, Residual, Substrate, SubstrateLink, SubstrateNode, VirtualNode, VnRequest,
    parse_trace,
};

/// A 50-host line and a 40-node clique on it: every host has the bandwidth of its node's links
/// around it (2 x 200 >= 39 x 10), but the instance is infeasible (a middle link would carry
/// hundreds of the clique's links), which LACE sees at once and CBC does not prove in minutes.
fn clique_on_a_line() -> (Residual, VnRequest) {
    let mut s = Substrate::new();
    for i in 0..50 {
        s.add_node(SubstrateNode::new(format!("h{i}"), 100))
            .unwrap();
    }
    for i in 0..49 {
        s.add_link(
            &format!("h{i}"),
            &format!("h{}", i + 1),
            SubstrateLink::new(200),
        )
        .unwrap();
    }
    let mut r = VnRequest::new("clique");
    for i in 0..40 {
        r.add_node(VirtualNode::new(format!("v{i}"), 1)).unwrap();
    }
    for i in 0..40 {
        for j in i + 1..40 {
            r.add_link(&format!("v{i}"), &format!("v{j}"), 10).unwrap();
        }
    }
    (Residual::new(Arc::new(s)), r)
}

#[test]
fn the_time_limit_holds_and_unproven_answers_say_so() {
    // 1. infeasible and too large to prove in time: a time-limit rejection, on time
    let (res, clique) = clique_on_a_line();
    let mip = Mip {
        time_limit: Duration::from_secs(1),
        ..Mip::default()
    };
    let t0 = Instant::now();
    let err = mip.solve(&res, &clique).unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(err, Rejection::TimeLimit { limit_ms: 1000 }),
        "{err}"
    );
    // the call may overrun by a tenth and 50 ms; 10 s leaves room for a loaded machine, and
    // is far below what CBC needs on this instance
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("infeasible clique: rejected after {took:?}");

    // 2. feasible requests under a limit too short for CBC: LACE's answer or CBC's best, each
    //    marked unproven; proven answers carry no note
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wx100_s0_r014_first150.json"
    ))
    .unwrap();
    let trace = parse_trace(&text).unwrap();
    let res = Residual::new(Arc::new(trace.substrate.clone()));
    let short = Mip {
        time_limit: Duration::from_millis(1),
        ..Mip::default()
    };
    let mut noted = 0;
    for tr in trace.requests.iter().take(20) {
        let Ok(sol) = short.solve(&res, &tr.request) else {
            continue;
        };
        match sol.embedding.note() {
            None => assert!(sol.proven_optimal, "an unproven answer without a note"),
            Some(n) => {
                noted += 1;
                assert!(!sol.proven_optimal);
                assert!(
                    n.starts_with("LACE's answer, unproven: ") || n.starts_with("unproven: "),
                    "{n}"
                );
                assert_eq!(sol.from_warm_start, n.starts_with("LACE's answer"), "{n}");
            }
        }
    }
    assert!(noted > 0, "a 1 ms limit must leave some answer unproven");
}
