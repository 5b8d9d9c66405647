//! End-to-end tests of vnctl against the real controller and agents.
//!
//! - Without root or controller: vnctl against a stopped controller, a malformed spec and a spec
//!   naming an unknown node each print one clear line, exit non-zero and create nothing (the
//!   "controller" here is a bare TCP listener that counts connections: none may arrive).
//! - As root (`three_hosts_two_providers`): a private 3-host testbed (own namespace prefix,
//!   bridge, subnet, ports and state dir, so a developer's testbed is untouched); providers red and
//!   blue apply the example VNs (same address plan, spread over h1..h3; red over VXLAN, blue over
//!   VLAN); every pair inside a VN reaches every other; nothing crosses between them; both are
//!   deleted; then no namespace, link, qdisc, process or file of ours is left.
//!
//! Root tests print `SKIP <test>: <reason>` without root, unless `VNET_REQUIRE_ROOT=1`.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use common::{Bed, VNCTL, addr, assert_one_line_error, free_port, ok, testbed_lock, text, vnctl};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> PathBuf {
    repo().join("deploy/examples").join(name)
}

/// A TCP listener that counts the connections it accepts (it never speaks gRPC).
fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            if s.is_ok() {
                n2.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (addr, n)
}

#[test]
fn stopped_controller_is_one_line_exit_2() {
    let port = free_port(); // bound and released: nothing listens there now
    let addr = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["get", "vns"],
        vec!["get", "hosts"],
        vec!["apply", "-f", example("red.yaml").to_str().unwrap()],
        vec!["delete", "vn", "red-net"],
        vec!["exec", "red-net", "a", "--", "true"],
        vec!["topology"],
    ] {
        let out = vnctl(&addr, Some("red"), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_one_line_error(&out, 2, &[&addr, "cannot reach the controller"]);
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
}

#[test]
fn malformed_spec_names_file_line_and_field_and_sends_nothing() {
    let (addr, conns) = counting_listener();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\nnodes:\n  - {name: a, cpu: 10}\n  - {name: b, cpu: ten}\n",
    )
    .unwrap();
    let out = vnctl(&addr, Some("red"), &["apply", "-f", bad.to_str().unwrap()]);
    assert_one_line_error(&out, 1, &[&format!("{}:4:", bad.display()), "nodes[1].cpu"]);
    let unknown_key = dir.path().join("key.yaml");
    std::fs::write(&unknown_key, "name: x\nnodes: [{name: a}]\nlinkz: []\n").unwrap();
    let out = vnctl(
        &addr,
        Some("red"),
        &["apply", "-f", unknown_key.to_str().unwrap()],
    );
    assert_one_line_error(
        &out,
        1,
        &[&format!("{}:3:", unknown_key.display()), "linkz"],
    );
    assert_eq!(
        conns.load(Ordering::SeqCst),
        0,
        "the controller was contacted"
    );
}

#[test]
fn unknown_node_is_named_and_sends_nothing() {
    let (addr, conns) = counting_listener();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("vn.yaml");
    std::fs::write(
        &spec,
        "name: x\nnodes: [{name: a}, {name: b}]\nlinks:\n  - {endpoints: [a, b], bandwidth: 1}\n  - {endpoints: [b, ghost], bandwidth: 1}\n",
    )
    .unwrap();
    let out = vnctl(&addr, Some("red"), &["apply", "-f", spec.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        1,
        &["links[1].endpoints[1]", "unknown node \"ghost\""],
    );
    assert_eq!(
        conns.load(Ordering::SeqCst),
        0,
        "the controller was contacted"
    );
}

#[test]
fn completions_are_generated() {
    let out = Command::new(VNCTL)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = text(&out.stdout);
    assert!(s.contains("vnctl") && s.contains("testbed"), "{s}");
}

// ----- the root test -----

/// A private testbed of test `test` (`n` tells the tests of this file apart); None (after
/// printing SKIP) when the preconditions are missing and may be.
fn bed(n: u32) -> Option<Bed> {
    common::private_bed(n, &[], "e2e", 252)
}

struct Vn {
    provider: &'static str,
    name: String,
    json: Value,
}

fn describe(bed: &Bed, provider: &'static str, name: &str) -> Vn {
    Vn {
        provider,
        name: name.into(),
        json: bed.describe(provider, name),
    }
}

/// One echo request, waiting at most 2 s for the answer.
fn ping_once(bed: &Bed, vn: &Vn, node: &str, addr: &str) -> Output {
    bed.exec(
        vn.provider,
        &vn.name,
        node,
        &["busybox", "ping", "-c", "1", "-W", "2", addr],
    )
}

/// Reachable: up to three single pings (the first may wait for ARP on a fresh link).
fn ping(bed: &Bed, vn: &Vn, node: &str, addr: &str) -> Output {
    let mut out = ping_once(bed, vn, node, addr);
    for _ in 0..2 {
        if out.status.success() {
            break;
        }
        out = ping_once(bed, vn, node, addr);
    }
    out
}

/// (node x, node y, y's address, y's interface) for both directions of every link.
fn pairs(vn: &Vn) -> Vec<(String, String, String, String)> {
    let mut v = Vec::new();
    for l in vn.json["links"].as_array().unwrap() {
        let ends: Vec<String> = serde_json::from_value(l["endpoints"].clone()).unwrap();
        let addrs: Vec<String> = serde_json::from_value(l["addresses"].clone()).unwrap();
        let ifs: Vec<String> = serde_json::from_value(l["interfaces"].clone()).unwrap();
        assert_eq!(addrs.len(), 2, "{l}");
        assert_eq!(ifs.len(), 2, "{l}");
        v.push((
            ends[0].clone(),
            ends[1].clone(),
            addrs[1].clone(),
            ifs[1].clone(),
        ));
        v.push((
            ends[1].clone(),
            ends[0].clone(),
            addrs[0].clone(),
            ifs[0].clone(),
        ));
    }
    v
}

#[test]
fn three_hosts_two_providers() {
    let _one = testbed_lock();
    let Some(bed) = bed(1) else {
        return;
    };
    let ctl = bed.ctl.clone();
    let before = bed.snapshot();
    let guard = bed.up();
    let hosts_only = bed.namespaces();
    let status = ok(bed.testbed(&["status"]), "testbed status");
    assert_eq!(status.matches("connected").count(), 3, "{status}");
    let hosts = bed.hosts();
    let ids: BTreeSet<&str> = hosts.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from(["h1", "h2", "h3"]));
    // VLAN links take the BPF datapath wherever it loads (it does on every CI machine).
    for h in &hosts {
        assert_eq!(h["capabilities"]["vlanDatapath"], "bpf", "{h}");
    }

    // Bad input against the live controller: one line, non-zero, nothing created.
    let ghost = bed.spec(
        "ghost",
        "name: ghost\nnodes: [{name: a}]\nlinks: [{endpoints: [a, nobody], bandwidth: 1}]\n",
    );
    let out = vnctl(&ctl, Some("red"), &["apply", "-f", ghost.to_str().unwrap()]);
    assert_one_line_error(&out, 1, &["unknown node \"nobody\""]);
    let pinned = bed.spec(
        "pinned",
        "name: pinned\nnodes: [{name: a, cpu: 10, memory: 64, host: h9}]\n",
    );
    let out = vnctl(
        &ctl,
        Some("red"),
        &["apply", "-f", pinned.to_str().unwrap()],
    );
    assert_one_line_error(&out, 1, &["h9"]);
    let bad = bed.spec("bad", "name: bad\nnodes: [{name: a, memory: lots}]\n");
    let out = vnctl(&ctl, Some("red"), &["apply", "-f", bad.to_str().unwrap()]);
    assert_one_line_error(&out, 1, &["bad.yaml:2:", "memory"]);
    let listed = ok(
        vnctl(&ctl, Some("red"), &["get", "vns", "-o", "json"]),
        "get vns",
    );
    assert_eq!(
        serde_json::from_str::<Value>(&listed).unwrap(),
        Value::Array(vec![])
    );

    // Two providers, one address plan.
    for (provider, file) in [("red", "red.yaml"), ("blue", "blue.yaml")] {
        bed.apply_wait(provider, &example(file), "180s");
    }
    // Applying again is a no-op that says so.
    let again = ok(
        vnctl(
            &ctl,
            Some("red"),
            &["apply", "-f", example("red.yaml").to_str().unwrap()],
        ),
        "re-apply",
    );
    assert!(again.contains("unchanged"), "{again}");

    let red = describe(&bed, "red", "red-net");
    let blue = describe(&bed, "blue", "blue-net");
    for (vn, encap) in [(&red, "vxlan"), (&blue, "vlan")] {
        assert_eq!(vn.json["state"], "READY", "{}", vn.json);
        let placed: BTreeSet<(String, String)> = vn.json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["node"].as_str().unwrap().into(),
                    n["host"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want: BTreeSet<(String, String)> = [("a", "h1"), ("b", "h2"), ("c", "h3")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(placed, want);
        for l in vn.json["links"].as_array().unwrap() {
            let hops = l["hops"].as_array().unwrap();
            assert!(!hops.is_empty(), "{l}");
            for h in hops {
                assert_eq!(h["encapsulation"], encap, "{l}");
            }
        }
    }
    // Each provider sees only its own VN.
    let red_list = ok(vnctl(&ctl, Some("red"), &["get", "vns"]), "get vns");
    assert!(
        red_list.contains("red-net") && !red_list.contains("blue-net"),
        "{red_list}"
    );

    // Inside each VN, every pair reaches every other.
    for vn in [&red, &blue] {
        for (x, y, cidr, _) in pairs(vn) {
            let out = ping(&bed, vn, &x, addr(&cidr));
            assert!(
                out.status.success(),
                "{}: {x} cannot reach {y} at {cidr}: {}{}",
                vn.name,
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
    // Across VNs, nothing: give each node of one VN an extra address that exists only there;
    // the same node of the same VN reaches it, the other VN's twin does not.
    for (k, (owner, other)) in [(&blue, &red), (&red, &blue)].into_iter().enumerate() {
        for (i, (x, y, cidr, ifname)) in pairs(owner).into_iter().enumerate() {
            let net: Vec<&str> = addr(&cidr).split('.').collect();
            let probe = format!("{}.{}.{}.{}", net[0], net[1], net[2], 200 + k * 20 + i);
            ok(
                vnctl(
                    &ctl,
                    Some(owner.provider),
                    &[
                        "exec",
                        &owner.name,
                        &y,
                        "--",
                        "ip",
                        "addr",
                        "add",
                        &format!("{probe}/32"),
                        "dev",
                        &ifname,
                    ],
                ),
                "add probe address",
            );
            let mine = ping(&bed, owner, &x, &probe);
            assert!(
                mine.status.success(),
                "{}: {x} cannot reach its own {y} at probe {probe}: {}",
                owner.name,
                text(&mine.stdout)
            );
            let theirs = ping_once(&bed, other, &x, &probe);
            assert!(!text(&theirs.stderr).contains("error: "), "{theirs:?}");
            assert_eq!(
                theirs.status.code(),
                Some(1),
                "{}'s {x} reached {}'s {y} at {probe}: {}{}",
                other.name,
                owner.name,
                text(&theirs.stdout),
                text(&theirs.stderr)
            );
            ok(
                vnctl(
                    &ctl,
                    Some(owner.provider),
                    &[
                        "exec",
                        &owner.name,
                        &y,
                        "--",
                        "ip",
                        "addr",
                        "del",
                        &format!("{probe}/32"),
                        "dev",
                        &ifname,
                    ],
                ),
                "remove probe address",
            );
        }
    }
    // Exit codes of remote commands come through.
    let out = vnctl(
        &ctl,
        Some("red"),
        &[
            "exec",
            "red-net",
            "a",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    for (provider, name) in [("red", "red-net"), ("blue", "blue-net")] {
        ok(
            vnctl(
                &ctl,
                Some(provider),
                &["delete", "vn", name, "--wait", "--timeout", "120s"],
            ),
            "delete",
        );
    }
    // `delete --wait` returns once every host applied the deletion: the VNs' namespaces are
    // already gone, with nothing to wait out.
    assert_eq!(
        bed.namespaces(),
        hosts_only,
        "namespaces left when delete --wait returned"
    );
    let listed = ok(
        vnctl(&ctl, Some("blue"), &["get", "vns", "-o", "json"]),
        "get vns",
    );
    assert_eq!(
        serde_json::from_str::<Value>(&listed).unwrap(),
        Value::Array(vec![])
    );

    guard.finish(&before);
    // Down again is a no-op.
    ok(bed.testbed(&["down"]), "second testbed down");
}

#[test]
fn down_after_a_crash() {
    let _one = testbed_lock();
    let Some(bed) = bed(2) else {
        return;
    };
    let before = bed.snapshot();
    let guard = bed.up();
    for (provider, file) in [("red", "red.yaml"), ("blue", "blue.yaml")] {
        bed.apply_wait(provider, &example(file), "180s");
    }
    let built = bed.snapshot();
    assert!(built.netns.len() >= 3 + 6, "{built:?}");
    // The controller and every agent die at once; their pidfiles stay behind.
    for e in std::fs::read_dir(bed.dir.join("run")).unwrap() {
        let pid = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let st = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::thread::sleep(Duration::from_millis(300));
    // Status shows them dead and fails, naming them.
    let out = bed.testbed(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains("not running"), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("not running: controller, agent h1, agent h2, agent h3"),
        "{err}"
    );
    // Down removes the VNs' namespaces and datapath processes (through `substrate-agent
    // cleanup`), the daemons' leftovers and the network, from stale pidfiles.
    ok(bed.testbed(&["down"]), "testbed down after a crash");
    drop(guard);
    bed.assert_gone(&before);
}

#[test]
fn down_after_a_partial_failure() {
    let _one = testbed_lock();
    let Some(bed) = bed(3) else {
        return;
    };
    let before = bed.snapshot();
    let guard = bed.up();
    // A VLAN VN: nodes on h1 and h3, each host with a datapath process.
    bed.apply_wait("ops", &example("vlan.yaml"), "180s");
    let built = bed.snapshot();
    assert!(built.netns.len() >= 3 + 2, "{built:?}");
    // Broken half-way: h1's and h3's agents die, h3's host namespace is deleted under its
    // datapath and its node.
    for h in ["h1", "h3"] {
        let pid = std::fs::read_to_string(bed.dir.join(format!("run/agent-{h}.pid"))).unwrap();
        let st = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let h3 = format!("{}h3", bed.tag);
    let st = Command::new("ip")
        .args(["netns", "delete", &h3])
        .status()
        .unwrap();
    assert!(st.success());
    // Down finishes: the VN's namespaces and datapaths of both hosts go, also h3's without its
    // host namespace; then down again is a no-op.
    ok(
        bed.testbed(&["down"]),
        "testbed down after a partial failure",
    );
    ok(bed.testbed(&["down"]), "second testbed down");
    drop(guard);
    bed.assert_gone(&before);
}
