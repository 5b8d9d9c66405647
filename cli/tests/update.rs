//! End-to-end test of updating a live VN in place on a private 3-host testbed, as root.
//!
//! `a_live_vn_is_updated_in_place_without_losing_a_packet`: VN `x` (a, b, c pinned to h1..h3;
//! links a-b, b-c, a-c of 20 Mbit/s) runs a continuous ping (10 per second) over a-b and over
//! b-c. `vnctl apply --dry-run` of a changed spec prints the plan and changes nothing; `vnctl
//! diff` exits 1. Then `vnctl apply --wait` of the spec that adds node d (on h1, revisitation)
//! with links c-d and b-d, removes a-c and doubles a-b to 40 Mbit/s: the new links are reachable
//! both ways, a-c is gone (its address no longer on a), iperf3 over a-b measures at least 80% of
//! 40 Mbit/s and more than the old 20, what stays kept its hosts, paths, VNIs, MACs and even
//! its kernel interfaces (same ifindex: the bandwidth change replaced the qdisc in place), and
//! neither ping lost a packet. An update that does not fit (a node bigger than any host) is
//! refused and leaves the VN exactly as it was; `vnctl get vn x -o yaml` applies back as
//! "unchanged". Then the testbed goes down and nothing of ours is left.
//!
//! Prints `SKIP` without root or tools, unless `VNET_REQUIRE_ROOT=1`.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Bed, ok, testbed_lock, text};

fn bed() -> Option<Bed> {
    common::private_bed(0, &["iperf3", "busybox"], "up", 249)
}

const BEFORE: &str = "name: x
allowRevisitation: true
nodes:
  - {name: a, cpu: 10, memory: 64, host: h1}
  - {name: b, cpu: 10, memory: 64, host: h2}
  - {name: c, cpu: 10, memory: 64, host: h3}
links:
  - {endpoints: [a, b], bandwidth: 20, addresses: [10.70.1.1/24, 10.70.1.2/24]}
  - {endpoints: [b, c], bandwidth: 20, addresses: [10.70.2.1/24, 10.70.2.2/24]}
  - {endpoints: [a, c], bandwidth: 20, addresses: [10.70.3.1/24, 10.70.3.2/24]}
";

/// The update: node d on h1, a-b from 20 to 40 Mbit/s, a-c replaced by c-d and b-d.
fn after() -> String {
    let mut spec = BEFORE.to_string();
    for (from, to) in [
        (
            "links:\n",
            "  - {name: d, cpu: 10, memory: 64, host: h1}\nlinks:\n",
        ),
        ("[a, b], bandwidth: 20", "[a, b], bandwidth: 40"),
        (
            "  - {endpoints: [a, c], bandwidth: 20, addresses: [10.70.3.1/24, 10.70.3.2/24]}\n",
            "  - {endpoints: [c, d], bandwidth: 20, addresses: [10.70.4.1/24, 10.70.4.2/24]}
  - {endpoints: [b, d], bandwidth: 20, addresses: [10.70.5.1/24, 10.70.5.2/24]}\n",
        ),
    ] {
        assert!(spec.contains(from), "BEFORE has no {from:?}");
        spec = spec.replacen(from, to, 1);
    }
    spec
}

/// `vnctl ARGS` of `bed` as provider red, running in the background.
fn spawn(bed: &Bed, args: &[&str]) -> Child {
    bed.spawn_vnctl(Some("red"), args)
}

/// `count` pings at 10 per second from `node` of x to `to`.
fn pinger(bed: &Bed, node: &str, to: &str, count: u32) -> Child {
    let c = count.to_string();
    spawn(
        bed,
        &[
            "exec",
            "x",
            node,
            "--timeout",
            "120s",
            "--",
            "busybox",
            "ping",
            "-q",
            "-i",
            "0.1",
            "-c",
            &c,
            "-W",
            "2",
            to,
        ],
    )
}

/// (transmitted, received) from busybox ping's summary.
fn ping_summary(out: &str) -> (u32, u32) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out:?}"));
    let n: Vec<u32> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (n[0], n[1])
}

/// The ifindex of every interface of `node`, by name.
fn ifindexes(bed: &Bed, node: &str) -> Vec<String> {
    let out = ok(
        bed.exec("red", "x", node, &["ip", "-o", "link", "show"]),
        "ip link",
    );
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let mut it = l.split(": ");
            let idx = it.next()?;
            let name = it.next()?.split('@').next()?;
            (name != "lo").then(|| format!("{name}={idx}"))
        })
        .collect();
    v.sort();
    v
}

fn link<'a>(vn: &'a Value, a: &str, b: &str) -> Option<&'a Value> {
    vn["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["endpoints"] == serde_json::json!([a, b]))
}

/// iperf3 from a to b over a-b: Mbit/s received. The server may not listen yet, and a run can
/// end without a report: each try starts its own server, for 30 s at most.
fn iperf_a_to_b(bed: &Bed) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut server = spawn(
            bed,
            &[
                "exec",
                "x",
                "b",
                "--timeout",
                "30s",
                "--",
                "iperf3",
                "-s",
                "-1",
                "-p",
                "5311",
            ],
        );
        std::thread::sleep(Duration::from_millis(500));
        let out = bed.exec(
            "red",
            "x",
            "a",
            &[
                "iperf3",
                "-c",
                "10.70.1.2",
                "-p",
                "5311",
                "-t",
                "4",
                "-O",
                "1",
                "-J",
            ],
        );
        let _ = server.kill();
        let _ = server.wait();
        let json = text(&out.stdout);
        let bps = serde_json::from_str::<Value>(&json)
            .ok()
            .and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64());
        match bps {
            Some(b) if out.status.success() => return b / 1e6,
            _ if Instant::now() > deadline => {
                panic!("iperf3 gave no rate: {json}{}", text(&out.stderr))
            }
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

#[test]
fn a_live_vn_is_updated_in_place_without_losing_a_packet() {
    let _one = testbed_lock();
    let Some(bed) = bed() else {
        return;
    };
    let before_all = bed.snapshot();
    let guard = bed.up();
    let v1 = bed.spec("v1", BEFORE);
    let v2 = bed.spec("v2", &after());
    let p = |f: &std::path::Path| f.to_str().unwrap().to_string();
    bed.apply_wait("red", &v1, "180s");
    for (from, to) in [("a", "10.70.1.2"), ("b", "10.70.2.2"), ("a", "10.70.3.2")] {
        bed.ping_until("red", "x", from, to, Duration::from_secs(30));
    }
    let old = bed.describe("red", "x");
    assert_eq!(old["generation"], 1);
    let old_if = [
        ifindexes(&bed, "a"),
        ifindexes(&bed, "b"),
        ifindexes(&bed, "c"),
    ];

    // Dry run and diff: the plan, nothing done.
    let dry = ok(
        bed.vnctl(Some("red"), &["apply", "--dry-run", "-f", &p(&v2)]),
        "apply --dry-run",
    );
    for want in [
        "would be updated to generation 2",
        "add    node d",
        "remove link a-c",
        "change link a-b (h1,h2): bandwidth 20 -> 40 Mbit/s",
        "keep   link b-c",
    ] {
        assert!(dry.contains(want), "{want:?} in {dry}");
    }
    let diff = bed.vnctl(Some("red"), &["diff", "-f", &p(&v2)]);
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff.stderr));
    assert!(
        text(&diff.stdout).contains("add    link c-d"),
        "{}",
        text(&diff.stdout)
    );
    assert_eq!(bed.describe("red", "x")["generation"], 1);

    // The update, under a continuous ping over a link that doubles and one that stays.
    const PINGS: u32 = 300;
    let started = Instant::now();
    let pings = [
        pinger(&bed, "a", "10.70.1.2", PINGS),
        pinger(&bed, "b", "10.70.2.2", PINGS),
    ];
    std::thread::sleep(Duration::from_secs(2));
    let applied = ok(
        bed.vnctl(
            Some("red"),
            &["apply", "-f", &p(&v2), "--wait", "--timeout", "120s"],
        ),
        "apply the update",
    );
    assert!(applied.contains("updated to generation 2"), "{applied}");
    let updated_after = started.elapsed();
    // The new links both ways; the removed one is gone.
    for (from, to) in [
        ("c", "10.70.4.2"),
        ("d", "10.70.4.1"),
        ("b", "10.70.5.2"),
        ("d", "10.70.5.1"),
    ] {
        bed.ping_until("red", "x", from, to, Duration::from_secs(20));
    }
    let a_addrs = ok(
        bed.exec("red", "x", "a", &["ip", "-o", "addr", "show"]),
        "ip addr",
    );
    assert!(!a_addrs.contains("10.70.3.1"), "a-c still on a: {a_addrs}");
    let gone = bed.exec(
        "red",
        "x",
        "a",
        &["busybox", "ping", "-c", "1", "-W", "1", "10.70.3.2"],
    );
    assert!(
        !gone.status.success(),
        "a still reaches c over the removed link"
    );
    for (i, p) in pings.into_iter().enumerate() {
        let out = p.wait_with_output().unwrap();
        let (sent, got) = ping_summary(&text(&out.stdout));
        assert_eq!(sent, PINGS, "ping {i}: {}", text(&out.stdout));
        assert_eq!(got, PINGS, "ping {i} lost packets during the update");
    }
    assert!(
        started.elapsed() > updated_after,
        "the pings ({PINGS} at 10/s) must outlast the update ({updated_after:?})"
    );

    // What stays stayed: hosts, node ids, paths, VNIs, MACs, and the kernel interfaces.
    let new = bed.describe("red", "x");
    assert_eq!(new["state"], "READY");
    assert_eq!(new["generation"], 2);
    for n in old["nodes"].as_array().unwrap() {
        let m = new["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["node"] == n["node"])
            .unwrap();
        assert_eq!((&m["host"], &m["nodeId"]), (&n["host"], &n["nodeId"]));
    }
    for (a, b) in [("a", "b"), ("b", "c")] {
        let (o, n) = (link(&old, a, b).unwrap(), link(&new, a, b).unwrap());
        for k in ["path", "hops", "macs", "interfaces", "addresses"] {
            assert_eq!(o[k], n[k], "{a}-{b} {k}");
        }
    }
    assert_eq!(link(&new, "a", "b").unwrap()["bandwidthMbps"], 40);
    assert!(link(&new, "a", "c").is_none());
    let a_now = ifindexes(&bed, "a");
    let ab_if = link(&old, "a", "b").unwrap()["interfaces"][0]
        .as_str()
        .unwrap()
        .to_string();
    let keep = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|s| s.starts_with(&format!("{ab_if}=")))
            .cloned()
            .collect()
    };
    assert_eq!(keep(&a_now), keep(&old_if[0]), "a-b recreated on a");
    assert_eq!(
        ifindexes(&bed, "b")[..2],
        old_if[1][..2],
        "b's a-b and b-c recreated"
    );

    // The doubled link carries its new rate.
    let mbps = iperf_a_to_b(&bed);
    println!("a-b after the update: {mbps:.1} Mbit/s (was 20, now 40)");
    // At least 80% of the new rate (which is also above the old one).
    assert!(mbps >= 0.8 * 40.0, "a-b measures {mbps:.1} Mbit/s");

    // An update that does not fit: refused, and the VN is as it was.
    let huge = bed.spec(
        "huge",
        &after().replace("{name: d, cpu: 10", "{name: d, cpu: 100000"),
    );
    let out = bed.vnctl(Some("red"), &["apply", "-f", &p(&huge)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("stays as it was"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(bed.describe("red", "x"), new);
    // What `get -o yaml` prints applies back as unchanged.
    let yaml = ok(
        bed.vnctl(Some("red"), &["get", "vn", "x", "-o", "yaml"]),
        "get -o yaml",
    );
    let back = bed.spec("back", &yaml);
    let again = ok(
        bed.vnctl(Some("red"), &["apply", "-f", &p(&back)]),
        "apply get output",
    );
    assert!(again.contains("unchanged"), "{again}");
    let diff = bed.vnctl(Some("red"), &["diff", "-f", &p(&v2)]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff.stdout));

    ok(
        bed.vnctl(Some("red"), &["delete", "vn", "x", "--wait"]),
        "delete",
    );
    drop(guard);
    bed.assert_gone(&before_all);
}
