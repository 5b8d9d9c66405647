//! Spreading and delay bounds: `max_nodes_per_host` and `spread` (through `embed_spread`) are
//! honoured by GRC, LACE, the NodeRank heuristics and the MIP; a link's `max_delay_us` restricts
//! its substrate path to links whose latencies sum to at most the bound.

use std::collections::BTreeMap;
use std::sync::Arc;

use embedding::{
    Rejection, RequestOptions, Residual, Resource, Substrate, SubstrateLink, SubstrateNode,
    VirtualNode, VnRequest, by_name, embed_spread,
};

/// Five hosts in a full mesh, plenty of everything.
fn mesh(n: usize) -> Substrate {
    let mut s = Substrate::new();
    for i in 0..n {
        s.add_node(SubstrateNode::new(format!("h{i}"), 10_000).with_memory_mb(1 << 20))
            .unwrap();
    }
    for i in 0..n {
        for j in i + 1..n {
            s.add_link(
                &format!("h{i}"),
                &format!("h{j}"),
                SubstrateLink::new(100_000),
            )
            .unwrap();
        }
    }
    s
}

/// A ring of `n` nodes, revisitation allowed.
fn ring(n: usize, opts: RequestOptions) -> VnRequest {
    let mut r = VnRequest::new("ring").with_options(opts.with_revisitation(true));
    for i in 0..n {
        r.add_node(VirtualNode::new(format!("v{i}"), 1)).unwrap();
    }
    for i in 0..n {
        r.add_link(&format!("v{i}"), &format!("v{}", (i + 1) % n), 1)
            .unwrap();
    }
    r
}

fn per_host(res: &Residual, e: &embedding::Embedding) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for h in e.nodes() {
        *m.entry(res.substrate().node(*h).id.clone()).or_default() += 1;
    }
    m
}

const ALGOS: [&str; 5] = ["grc", "lace", "rw-maxmatch", "rw-bfs", "mip"];

#[test]
fn without_a_bound_a_ring_lands_on_one_host() {
    let res = Residual::new(Arc::new(mesh(5)));
    let e = by_name("lace")
        .unwrap()
        .embed(&res, &ring(20, RequestOptions::default()))
        .unwrap();
    assert_eq!(per_host(&res, &e).len(), 1, "cost-minimal: all co-located");
}

#[test]
fn max_nodes_per_host_is_honoured_by_every_algorithm() {
    let res = Residual::new(Arc::new(mesh(5)));
    let req = ring(
        12,
        RequestOptions::default().with_max_nodes_per_host(Some(3)),
    );
    for name in ALGOS {
        let e = by_name(name)
            .unwrap()
            .embed(&res, &req)
            .unwrap_or_else(|r| panic!("{name}: {r}"));
        let counts = per_host(&res, &e);
        assert!(counts.values().all(|c| *c <= 3), "{name}: {counts:?}");
        res.check(&req, &e).unwrap();
    }
}

#[test]
fn spread_puts_as_few_nodes_per_host_as_the_hosts_allow() {
    let res = Residual::new(Arc::new(mesh(5)));
    let req = ring(20, RequestOptions::default().with_spread(true));
    for name in ALGOS {
        let algo = by_name(name).unwrap();
        let e = embed_spread(algo.as_ref(), &res, &req).unwrap_or_else(|r| panic!("{name}: {r}"));
        let counts = per_host(&res, &e);
        assert_eq!(counts.len(), 5, "{name}: {counts:?}");
        assert!(counts.values().all(|c| *c == 4), "{name}: {counts:?}");
    }
}

#[test]
fn spread_takes_the_smallest_bound_that_fits() {
    // h0 has room for 1 node only: 10 nodes over 5 hosts need 3 on some host (4 x 2 + 1 = 9
    // places with a bound of 2).
    let mut small = Substrate::new();
    for i in 0..5 {
        let cpu = if i == 0 { 1 } else { 10_000 };
        small
            .add_node(SubstrateNode::new(format!("h{i}"), cpu).with_memory_mb(1 << 20))
            .unwrap();
    }
    for i in 0..5 {
        for j in i + 1..5 {
            small
                .add_link(
                    &format!("h{i}"),
                    &format!("h{j}"),
                    SubstrateLink::new(100_000),
                )
                .unwrap();
        }
    }
    let res = Residual::new(Arc::new(small));
    let req = ring(10, RequestOptions::default().with_spread(true));
    for name in ["grc", "lace"] {
        let algo = by_name(name).unwrap();
        let e = embed_spread(algo.as_ref(), &res, &req).unwrap();
        let counts = per_host(&res, &e);
        let max = *counts.values().max().unwrap();
        assert_eq!(max, 3, "{name}: {counts:?}");
    }
}

#[test]
fn a_bound_too_small_is_a_clear_rejection() {
    // 12 nodes, 5 hosts, at most 2 per host: 10 places.
    let res = Residual::new(Arc::new(mesh(5)));
    let req = ring(
        12,
        RequestOptions::default().with_max_nodes_per_host(Some(2)),
    );
    for name in ["grc", "lace", "rw-bfs"] {
        let err = by_name(name).unwrap().embed(&res, &req).unwrap_err();
        match &err {
            Rejection::Node {
                resource: Resource::NodesPerHost,
                reason,
                ..
            } => assert!(reason.contains("max_nodes_per_host"), "{name}: {err}"),
            _ => panic!("{name}: {err}"),
        }
    }
    let err = by_name("mip").unwrap().embed(&res, &req).unwrap_err();
    assert!(!err.to_string().is_empty());
}

/// a - b direct with 10 ms, or a - c - b with 1 + 1 ms.
fn triangle() -> Substrate {
    let mut s = Substrate::new();
    for h in ["a", "b", "c"] {
        s.add_node(SubstrateNode::new(h, 100).with_memory_mb(1024))
            .unwrap();
    }
    s.add_link("a", "b", SubstrateLink::new(100).with_latency_ms(10.0))
        .unwrap();
    s.add_link("a", "c", SubstrateLink::new(100).with_latency_ms(1.0))
        .unwrap();
    s.add_link("c", "b", SubstrateLink::new(100).with_latency_ms(1.0))
        .unwrap();
    s
}

fn pinned_pair(max_delay_us: Option<u64>) -> VnRequest {
    let mut r = VnRequest::new("p");
    r.add_node(VirtualNode::new("x", 1).pinned_to("a")).unwrap();
    r.add_node(VirtualNode::new("y", 1).pinned_to("b")).unwrap();
    let l = r.add_link("x", "y", 10).unwrap();
    r.set_max_delay_us(l, max_delay_us);
    r
}

#[test]
fn max_delay_restricts_the_path() {
    let res = Residual::new(Arc::new(triangle()));
    for name in ALGOS {
        let algo = by_name(name).unwrap();
        let free = algo.embed(&res, &pinned_pair(None)).unwrap();
        assert_eq!(free.links()[0].flows()[0].hops(), 1, "{name}: fewest hops");
        let bounded = algo
            .embed(&res, &pinned_pair(Some(5_000)))
            .unwrap_or_else(|r| panic!("{name}: {r}"));
        assert_eq!(
            bounded.links()[0].flows()[0].hops(),
            2,
            "{name}: the 2 ms path over c"
        );
        res.check(&pinned_pair(Some(5_000)), &bounded).unwrap();
        let err = algo.embed(&res, &pinned_pair(Some(1_500))).unwrap_err();
        if name != "mip" {
            assert!(
                matches!(
                    &err,
                    Rejection::Link {
                        resource: Resource::Delay,
                        ..
                    }
                ),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("1500 us"), "{name}: {err}");
        }
    }
}

#[test]
fn a_path_over_the_bound_fails_the_check() {
    let res = Residual::new(Arc::new(triangle()));
    let e = by_name("grc")
        .unwrap()
        .embed(&res, &pinned_pair(None))
        .unwrap();
    let err = res.check(&pinned_pair(Some(5_000)), &e).unwrap_err();
    assert!(
        err.to_string().contains("exceeds max_delay_us 5000"),
        "{err}"
    );
}
