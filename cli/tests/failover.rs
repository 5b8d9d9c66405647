//! Failure and maintenance on a private five-host testbed (root; `SKIP` without it unless
//! `VNET_REQUIRE_ROOT=1`), with the real controller and agents:
//!
//! - `a_killed_host_moves_its_node_and_leaves_nothing_when_it_returns`: the agent of the host
//!   of one node of a four-node ring is killed and the host's underlay links taken down; the VN
//!   is READY on the four others with every link answering within the host grace period (10 s)
//!   plus 5 s; its recovery record says what moved; the host comes back: its agent removes the
//!   moved node, nothing doubles, every link still answers.
//! - `a_dead_underlay_link_is_routed_around_and_its_return_disturbs_nothing`: the substrate link
//!   under a virtual link goes down; the link takes another path and answers within the link
//!   grace plus 5 s; when the link comes back the VN stays as it is.
//! - `cordon_keeps_new_nodes_off_and_drain_moves_everything_off`: two cordoned hosts take no node
//!   of a new VN; a drain moves every VN off a host, which stays cordoned.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Bed, ok, testbed_lock, text};

/// The controller's default `--host-grace-secs`.
const HOST_GRACE: Duration = Duration::from_secs(10);

fn bed(n: u32) -> Option<Bed> {
    common::private_bed(n, &[], "fo", 251)
}

/// A ring a-b-c-d-a of unpinned netns nodes (no revisitation: four hosts).
const RING: &str = "name: ring
nodes: [{name: a}, {name: b}, {name: c}, {name: d}]
links:
  - {endpoints: [a, b], bandwidth: 10, addresses: [10.91.1.1/30, 10.91.1.2/30]}
  - {endpoints: [b, c], bandwidth: 10, addresses: [10.91.2.1/30, 10.91.2.2/30]}
  - {endpoints: [c, d], bandwidth: 10, addresses: [10.91.3.1/30, 10.91.3.2/30]}
  - {endpoints: [d, a], bandwidth: 10, addresses: [10.91.4.1/30, 10.91.4.2/30]}
";

fn host_of(vn: &Value, node: &str) -> String {
    vn["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .map(|n| n["host"].as_str().unwrap().to_string())
        .unwrap()
}

fn hosts_of(vn: &Value) -> Vec<String> {
    vn["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["host"].as_str().unwrap().to_string())
        .collect()
}

fn node_id(vn: &Value, node: &str) -> String {
    vn["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .map(|n| n["nodeId"].as_str().unwrap().to_string())
        .unwrap()
}

/// One echo request from `node` to `addr` (at most 1 s for the answer).
fn ping_ok(bed: &Bed, vn: &str, node: &str, addr: &str) -> bool {
    bed.exec(
        "red",
        vn,
        node,
        &["busybox", "ping", "-c", "1", "-W", "1", addr],
    )
    .status
    .success()
}

/// (node, peer address) for both ends of every link of `vn`.
fn ends(vn: &Value) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for l in vn["links"].as_array().unwrap() {
        let e: Vec<String> = serde_json::from_value(l["endpoints"].clone()).unwrap();
        let a: Vec<String> = serde_json::from_value(l["addresses"].clone()).unwrap();
        v.push((e[0].clone(), common::addr(&a[1]).to_string()));
        v.push((e[1].clone(), common::addr(&a[0]).to_string()));
    }
    v
}

/// Waits until `vn` is READY and `f` holds, then until every link answers both ways; fails at
/// `deadline`. Returns the VN as described then.
fn wait_recovered(
    bed: &Bed,
    vn: &str,
    deadline: Instant,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let json = loop {
        let d = bed.describe("red", vn);
        if d["state"] == "READY" && f(&d) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {vn} not recovered in time: {} {} on {:?}",
            d["state"],
            d["reason"],
            hosts_of(&d)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut pending = ends(&json);
    while !pending.is_empty() {
        pending.retain(|(node, addr)| !ping_ok(bed, vn, node, addr));
        assert!(
            pending.is_empty() || Instant::now() < deadline,
            "{what}: {vn}: no answer in time on {pending:?}"
        );
    }
    json
}

/// Every link answers now (a few tries each: the first may wait for ARP).
fn assert_all_answer(bed: &Bed, vn: &Value) {
    let name = vn["name"].as_str().unwrap();
    for (node, addr) in ends(vn) {
        assert!(
            (0..3).any(|_| ping_ok(bed, name, &node, &addr)),
            "{name}: {node} cannot reach {addr}"
        );
    }
}

/// The bed's namespaces of node `id` (on any host): `<prefix>-<host>-<id>`.
fn namespaces_of(bed: &Bed, id: &str) -> BTreeSet<String> {
    bed.namespaces()
        .into_iter()
        .filter(|n| n.ends_with(&format!("-{id}")))
        .collect()
}

/// Waits until host `id` is connected and has applied its desired state.
fn wait_host_settled(bed: &Bed, id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let hosts = bed.hosts();
        let h = hosts.iter().find(|h| h["id"] == id).unwrap();
        if h["connected"] == true && h["observedGeneration"] == h["desiredGeneration"] {
            return;
        }
        assert!(Instant::now() < deadline, "host {id} did not settle: {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_host_moves_its_node_and_leaves_nothing_when_it_returns() {
    let _one = testbed_lock();
    let Some(bed) = bed(1) else {
        return;
    };
    let before = bed.snapshot();
    let guard = bed.up_hosts(5);
    bed.apply_wait("red", &bed.spec("ring", RING), "120s");
    let vn0 = bed.describe("red", "ring");
    assert_all_answer(&bed, &vn0);
    let lost = host_of(&vn0, "b");
    let b_id = node_id(&vn0, "b");
    assert_eq!(namespaces_of(&bed, &b_id).len(), 1);

    // The host dies: its agent killed, its underlay links down.
    let t0 = Instant::now();
    ok(
        bed.testbed(&["host", "kill", &lost, "--links"]),
        "testbed host kill",
    );
    let vn1 = wait_recovered(
        &bed,
        "ring",
        t0 + HOST_GRACE + Duration::from_secs(5),
        "host kill",
        |d| !hosts_of(d).contains(&lost),
    );
    eprintln!(
        "host {lost} killed: ring READY and answering after {:?}",
        t0.elapsed()
    );
    for n in ["a", "c", "d"] {
        assert_eq!(host_of(&vn1, n), host_of(&vn0, n), "{n} moved");
    }
    let to = host_of(&vn1, "b");
    let r = vn1["recoveries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(r["cause"], format!("host {lost} lost"), "{r}");
    let moved: Vec<String> = serde_json::from_value(r["moved"].clone()).unwrap();
    assert!(
        moved.contains(&format!("node b {lost} -> {to}")),
        "{moved:?}"
    );
    assert!(r["readyAfterMs"].as_u64().is_some(), "{r}");
    // `status` names the dead agent and fails.
    let st = bed.testbed(&["status"]);
    assert_eq!(st.status.code(), Some(1), "{st:?}");
    assert!(
        text(&st.stderr).contains(&format!("agent {lost}")),
        "{st:?}"
    );

    // The host comes back (`testbed up` resumes its agent, `host start --links` brings its
    // links up): the moved node's
    // namespace goes from it, nothing doubles, every link still answers.
    ok(
        bed.testbed(&["up", "--timeout", "60s"]),
        "testbed up (resume)",
    );
    ok(
        bed.testbed(&["host", "start", &lost, "--links"]),
        "testbed host start --links",
    );
    wait_host_settled(&bed, &lost, Duration::from_secs(30));
    let left = namespaces_of(&bed, &b_id);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left.iter().all(|n| n.contains(&format!("-{to}-"))),
        "{left:?}"
    );
    let vn2 = bed.describe("red", "ring");
    assert_eq!(vn2["state"], "READY");
    assert_eq!(hosts_of(&vn2), hosts_of(&vn1));
    assert_all_answer(&bed, &vn2);
    ok(
        bed.vnctl(Some("red"), &["delete", "vn", "ring", "--wait"]),
        "delete",
    );
    guard.finish(&before);
}

#[test]
fn a_dead_underlay_link_is_routed_around_and_its_return_disturbs_nothing() {
    let _one = testbed_lock();
    let Some(bed) = bed(2) else {
        return;
    };
    let before = bed.snapshot();
    let guard = bed.up_hosts(5);
    let spec = "name: pair
nodes: [{name: a, host: h1}, {name: b, host: h2}]
links:
  - {endpoints: [a, b], bandwidth: 10, addresses: [10.92.1.1/30, 10.92.1.2/30]}
";
    bed.apply_wait("red", &bed.spec("pair", spec), "120s");
    let vn0 = bed.describe("red", "pair");
    assert_eq!(vn0["links"][0]["path"], serde_json::json!(["h1", "h2"]));
    assert_all_answer(&bed, &vn0);

    let t0 = Instant::now();
    ok(
        bed.testbed(&["link", "down", "h1", "h2"]),
        "testbed link down",
    );
    let vn1 = wait_recovered(
        &bed,
        "pair",
        t0 + Duration::from_secs(1 + 5),
        "link down",
        |d| d["links"][0]["path"] != serde_json::json!(["h1", "h2"]),
    );
    eprintln!(
        "link h1-h2 down: pair READY and answering after {:?}",
        t0.elapsed()
    );
    let path: Vec<String> = serde_json::from_value(vn1["links"][0]["path"].clone()).unwrap();
    assert_eq!(path.len(), 3, "one transit host: {path:?}");
    assert_eq!(
        vn1["recoveries"].as_array().unwrap().last().unwrap()["cause"],
        "link h1-h2 down"
    );
    let links = ok(
        bed.vnctl(None, &["get", "links", "-o", "json"]),
        "get links",
    );
    let links: Value = serde_json::from_str(&links).unwrap();
    let l = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == "h1-h2")
            .unwrap()["down"]
            .clone()
    };
    assert_eq!(l(&links), true);

    // Back up: usable again after the debounce, the VN stays where it is and answers.
    ok(bed.testbed(&["link", "up", "h1", "h2"]), "testbed link up");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let links = ok(
            bed.vnctl(None, &["get", "links", "-o", "json"]),
            "get links",
        );
        if l(&serde_json::from_str(&links).unwrap()) == false {
            break;
        }
        assert!(Instant::now() < deadline, "h1-h2 stays down");
        std::thread::sleep(Duration::from_millis(200));
    }
    let vn2 = bed.describe("red", "pair");
    assert_eq!(vn2["links"][0]["path"], vn1["links"][0]["path"]);
    assert_eq!(vn2["state"], "READY");
    assert_eq!(vn2["recoveries"], vn1["recoveries"]);
    assert_all_answer(&bed, &vn2);
    ok(
        bed.vnctl(Some("red"), &["delete", "vn", "pair", "--wait"]),
        "delete",
    );
    guard.finish(&before);
}

#[test]
fn cordon_keeps_new_nodes_off_and_drain_moves_everything_off() {
    let _one = testbed_lock();
    let Some(bed) = bed(3) else {
        return;
    };
    let before = bed.snapshot();
    let guard = bed.up_hosts(5);
    for h in ["h1", "h2"] {
        ok(bed.vnctl(None, &["admin", "cordon", h]), "admin cordon");
    }
    // A provider may not (its own credential, not the admin's acting for it).
    let conf = bed.dir.join("red.conf");
    bed.create_credential("red", &conf);
    let out = std::process::Command::new(common::VNCTL)
        .env_remove("VNET_PROVIDER")
        .env("VNET_CONFIG", &conf)
        .args(["admin", "cordon", "h3"])
        .output()
        .unwrap();
    common::assert_one_line_error(&out, 1, &["admin role"]);
    std::fs::remove_file(&conf).unwrap();
    let hosts = bed.hosts();
    let cordoned: Vec<&str> = hosts
        .iter()
        .filter(|h| h["cordoned"] == true)
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(cordoned, ["h1", "h2"]);
    // Four nodes need four hosts: refused with three left. Three land on h3, h4, h5.
    let out = bed.vnctl(
        Some("red"),
        &["apply", "-f", bed.spec("ring", RING).to_str().unwrap()],
    );
    assert!(!out.status.success(), "{out:?}");
    let tri = "name: tri
nodes: [{name: a}, {name: b}, {name: c}]
links:
  - {endpoints: [a, b], bandwidth: 10, addresses: [10.93.1.1/30, 10.93.1.2/30]}
  - {endpoints: [b, c], bandwidth: 10, addresses: [10.93.2.1/30, 10.93.2.2/30]}
";
    bed.apply_wait("red", &bed.spec("tri", tri), "120s");
    let vn0 = bed.describe("red", "tri");
    let mut on = hosts_of(&vn0);
    on.sort();
    assert_eq!(on, ["h3", "h4", "h5"]);
    assert_all_answer(&bed, &vn0);

    // Uncordon; drain the host of b: it moves, the others stay, h3.. stays cordoned.
    for h in ["h1", "h2"] {
        ok(bed.vnctl(None, &["admin", "uncordon", h]), "admin uncordon");
    }
    let drained = host_of(&vn0, "b");
    let out = ok(
        bed.vnctl(None, &["admin", "drain", &drained]),
        "admin drain",
    );
    assert!(out.contains("1 VN(s) moved, 0 remain"), "{out}");
    let vn1 = wait_recovered(
        &bed,
        "tri",
        Instant::now() + Duration::from_secs(30),
        "drain",
        |d| !hosts_of(d).contains(&drained),
    );
    assert_eq!(host_of(&vn1, "a"), host_of(&vn0, "a"));
    assert_eq!(host_of(&vn1, "c"), host_of(&vn0, "c"));
    assert_eq!(
        vn1["recoveries"].as_array().unwrap().last().unwrap()["cause"],
        format!("host {drained} drained")
    );
    let hosts = bed.hosts();
    let h = hosts.iter().find(|h| h["id"] == drained.as_str()).unwrap();
    assert_eq!(h["cordoned"], true);
    // Nothing of tri is left on the drained host once its agent applied.
    wait_host_settled(&bed, &drained, Duration::from_secs(30));
    let b_ns = namespaces_of(&bed, &node_id(&vn1, "b"));
    assert_eq!(b_ns.len(), 1, "{b_ns:?}");
    assert!(!b_ns.iter().any(|n| n.contains(&format!("-{drained}-"))));
    ok(
        bed.vnctl(Some("red"), &["delete", "vn", "tri", "--wait"]),
        "delete",
    );
    guard.finish(&before);
}
