//! `vnctl experiment run` on a private 3-host testbed (real controller, agents, namespaces).
//!
//! - `two_providers_thirty_requests`: red (its own credential, LACE) and blue (the admin acting
//!   as blue, GRC), 15 Poisson arrivals each over about half a minute, short lifetimes. The CSV
//!   has 30 rows; every accepted VN became READY and answered pings over every link both ways;
//!   the report has its five plots (parsed out of the HTML); `vnctl pingall` and `vnctl iperf`
//!   work on a VN of the run's shape; and nothing of the run is left: no VN, no node namespace,
//!   all capacity free again.
//! - `sigint_halfway_deletes_what_it_created`: long lifetimes, SIGINT once several VNs are up:
//!   vnctl exits non-zero saying it was interrupted, writes the partial results and leaves nothing.
//!
//! Root test: prints `SKIP` without root, unless `VNET_REQUIRE_ROOT=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Bed, Snapshot, ok, testbed_lock, text};

fn bed(n: u32) -> Option<Bed> {
    common::private_bed(n, &["iperf3", "busybox"], "xp", 247)
}

/// The experiment file: red with its own credential, blue through the admin's.
fn experiment(name: &str, requests: usize, rate: f64, lifetime: &str, red_conf: &Path) -> String {
    format!(
        "name: {name}\nseed: 11\nsampleInterval: 1\nprobes: {{ping: true, iperf: {{every: 4, seconds: 1}}}}\n\
         providers:\n\
         \x20 - name: red\n    credential: {}\n    algorithm: lace\n    requests: {requests}\n\
         \x20   arrivals: {{poisson: {{rate: {rate}}}}}\n    lifetime: {lifetime}\n\
         \x20   shape: {{generator: {{nodes: [2, 3], cpu: [5, 20], bandwidth: [5, 20]}}}}\n\
         \x20 - name: blue\n    algorithm: grc\n    requests: {requests}\n\
         \x20   arrivals: {{poisson: {{rate: {rate}}}}}\n    lifetime: {lifetime}\n\
         \x20   shape: {{generator: {{nodes: [2, 3], cpu: [5, 20], bandwidth: [5, 20]}}}}\n",
        red_conf.display()
    )
}

/// A run of `vnctl experiment run` (as the admin) on a testbed that is up.
struct Run {
    /// The running vnctl.
    child: Child,
    /// Holds the results while it lives.
    results: tempfile::TempDir,
    /// The run's output directory, inside `results`.
    out_dir: PathBuf,
    /// The testbed once red's credential exists, before the run.
    mid: Snapshot,
}

/// Creates red's credential and starts [`experiment`] `name` on `bed`.
fn start(bed: &Bed, name: &str, requests: usize, rate: f64, lifetime: &str) -> Run {
    // Next to the test's specs: the state dir must hold only logs after `down`.
    let red_conf = bed.config().with_file_name("red.conf");
    bed.create_credential("red", &red_conf);
    let mid = bed.snapshot();
    let file = bed.spec(
        "exp",
        &experiment(name, requests, rate, lifetime, &red_conf),
    );
    let results = tempfile::tempdir().unwrap();
    let out_dir = results.path().join("run");
    let (file, out) = (file.to_str().unwrap(), out_dir.to_str().unwrap());
    let child = bed.spawn_vnctl(None, &["experiment", "run", "-f", file, "--out", out]);
    Run {
        child,
        results,
        out_dir,
        mid,
    }
}

/// After a run: no VN of either provider, every host's capacity free, and the testbed's kernel
/// objects and processes as they were before the run (`mid`).
fn assert_nothing_left(bed: &Bed, mid: &Snapshot) {
    for p in ["red", "blue"] {
        let out = ok(bed.vnctl(Some(p), &["get", "vns", "-o", "json"]), "get vns");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v.as_array().map(Vec::len),
            Some(0),
            "{p} has VNs left: {out}"
        );
    }
    for h in bed.hosts() {
        assert_eq!(h["residual"], h["capacity"], "host not free: {h}");
    }
    let mut now = bed.snapshot();
    for _ in 0..40 {
        if &now == mid {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        now = bed.snapshot();
    }
    assert_eq!(mid, &now, "the experiment left something behind");
}

/// The SVGs of `report.html`, by figure id.
fn figures(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<figure id=\"") {
        rest = &rest[i + 12..];
        let id = rest[..rest.find('"').unwrap()].to_owned();
        let s = rest.find("<svg").expect("an svg in the figure");
        let e = rest.find("</svg>").expect("the svg ends") + 6;
        out.push((id, rest[s..e].to_owned()));
        rest = &rest[e..];
    }
    out
}

/// Rows of requests.csv as maps (no field of ours holds a quoted comma but `reason`, which is
/// checked empty where it matters; the columns before it parse plainly).
fn rows(csv: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            head.iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// `vnctl pingall` (a table, green, then red with non-zero exit once b loses its address) and
/// `vnctl iperf` on a two-node VN of red's across h1 and h2.
fn pingall_and_iperf(bed: &Bed) {
    let spec = bed.spec(
        "probe",
        "name: probe\nnodes:\n  - {name: a, cpu: 5, memory: 16, host: h1}\n  - {name: b, cpu: 5, memory: 16, host: h2}\nlinks:\n  - {endpoints: [a, b], bandwidth: 30, addresses: [10.88.0.1/24, 10.88.0.2/24]}\n",
    );
    bed.apply_wait("red", &spec, "60s");
    let table = ok(bed.vnctl(Some("red"), &["pingall", "probe"]), "pingall");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("LINK") && lines[0].contains("RESULT"),
        "{table}"
    );
    assert!(lines[1..].iter().all(|l| l.contains(" ok ")), "{table}");
    assert!(
        lines[1].contains("a-b") && lines[1].contains("10.88.0.2"),
        "{table}"
    );
    let out = ok(
        bed.vnctl(Some("red"), &["iperf", "probe", "a", "b", "--seconds", "1"]),
        "iperf",
    );
    assert!(out.contains("Mbit/s measured, 30 Mbit/s reserved"), "{out}");
    let mbps: f64 = out
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(mbps > 1.0 && mbps < 60.0, "{out}");
    ok(
        bed.exec(
            "red",
            "probe",
            "b",
            &["busybox", "ip", "addr", "flush", "dev", "eth0"],
        ),
        "flush b's address",
    );
    let out = bed.vnctl(Some("red"), &["pingall", "probe", "--tries", "1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains("FAIL"), "{out:?}");
    assert!(text(&out.stderr).contains("pings failed"), "{out:?}");
    ok(
        bed.vnctl(Some("red"), &["delete", "vn", "probe", "--wait"]),
        "delete probe",
    );
}

#[test]
fn two_providers_thirty_requests() {
    let Some(bed) = bed(1) else {
        return;
    };
    let _lock = testbed_lock();
    let before = bed.snapshot();
    let down = bed.up();
    let started = Instant::now();
    let Run {
        child,
        results,
        out_dir,
        mid,
    } = start(&bed, "ex", 15, 0.5, "{fixed: 6}");
    let out = child.wait_with_output().unwrap();
    let stdout = ok(out, "experiment run");
    eprintln!("experiment took {:?}: {stdout}", started.elapsed());
    let csv = std::fs::read_to_string(out_dir.join("requests.csv")).unwrap();
    let rows = rows(&csv);
    assert_eq!(rows.len(), 30, "{csv}");
    let accepted: Vec<_> = rows.iter().filter(|r| r["accepted"] == "true").collect();
    assert!(accepted.len() >= 10, "too few accepted: {csv}");
    for p in ["red", "blue"] {
        assert_eq!(rows.iter().filter(|r| r["provider"] == p).count(), 15);
    }
    for r in &accepted {
        assert_eq!(r["reason"], "", "{r:?}");
        assert!(!r["accepted_to_ready_ms"].is_empty(), "{r:?}");
        assert!(!r["first_ping_ms"].is_empty(), "{r:?}");
        assert!(r["links"].parse::<usize>().unwrap() >= 1);
        assert_eq!(r["links_probed"], r["links"], "every link probed: {r:?}");
        assert_eq!(r["links_reachable"], r["links"], "pingall green: {r:?}");
    }
    let measured: Vec<f64> = accepted
        .iter()
        .filter_map(|r| r["measured_mbps"].parse().ok())
        .collect();
    assert!(!measured.is_empty(), "iperf3 measured no link: {csv}");
    assert!(measured.iter().all(|m| *m > 1.0), "{measured:?}");
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    let figs = figures(&html);
    let ids: Vec<&str> = figs.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "acceptance",
            "setup-latency",
            "utilisation",
            "vns-alive",
            "throughput"
        ]
    );
    for (id, svg) in &figs {
        assert!(
            svg.contains("<polyline") || svg.contains("<circle"),
            "{id} draws no data"
        );
    }
    assert!(figs[0].1.contains("red/lace") && figs[0].1.contains("blue/grc"));
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["ended"], "completed");
    let peak_alive = run["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["vns_alive"].as_u64())
        .max();
    assert!(peak_alive >= Some(2), "{peak_alive:?}");
    let cmp = results.path().join("compare.html");
    let dir = out_dir.to_str().unwrap();
    ok(
        bed.vnctl(
            None,
            &[
                "experiment",
                "compare",
                dir,
                dir,
                "--out",
                cmp.to_str().unwrap(),
            ],
        ),
        "experiment compare",
    );
    let html = std::fs::read_to_string(&cmp).unwrap();
    let ids: Vec<String> = figures(&html).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
    assert!(ids.contains(&"throughput-a".to_string()) && ids.contains(&"throughput-b".to_string()));
    pingall_and_iperf(&bed);
    assert_nothing_left(&bed, &mid);
    drop(down);
    bed.assert_gone(&before);
}

#[test]
fn sigint_halfway_deletes_what_it_created() {
    let Some(bed) = bed(2) else {
        return;
    };
    let _lock = testbed_lock();
    let before = bed.snapshot();
    let down = bed.up();
    let Run {
        child,
        results: _results,
        out_dir,
        mid,
    } = start(&bed, "cut", 20, 1.0, "{fixed: 120}");
    // Halfway: once both providers have VNs up.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n: usize = ["red", "blue"]
            .iter()
            .map(|p| {
                let out = bed.vnctl(Some(p), &["get", "vns", "-o", "json"]);
                serde_json::from_str::<Value>(&text(&out.stdout))
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len))
                    .unwrap_or(0)
            })
            .filter(|n| *n >= 2)
            .count();
        if n == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no VNs came up");
        std::thread::sleep(Duration::from_millis(500));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("interrupted"), "{err}");
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["ended"], "interrupted");
    let recorded = run["records"].as_array().unwrap().len();
    assert!((4..40).contains(&recorded), "{recorded} records");
    assert_nothing_left(&bed, &mid);
    drop(down);
    bed.assert_gone(&before);
}
