//! Link impairments on a live testbed (delay, jitter, loss without netem; see
//! `substrate-agent/src/impair`).
//!
//! One VN of pairs of nodes, each pair joined by one link over VXLAN between h1 and h2 unless
//! said otherwise: `plain` (no impairment, the baseline), `delay` (20 ms, 20 Mbit/s), `loss`
//! (5 %), `jitter` (10 ms +- 5 ms), `veth` (20 ms, both ends on h1) and `vlan` (20 ms, 802.1Q),
//! and the same veth and VLAN links without impairment as their baselines.
//! Measured with busybox ping from inside the nodes (through `vnctl exec`):
//! - a 20 ms link adds 40 +- 2 ms of median RTT (100 pings) to the same kind of link without
//!   delay, on every link kind (the delay applies in each direction);
//! - 5 % loss each way loses 9.75 +- 3 % of 1000 pings;
//! - 10 ms +- 5 ms of jitter each way (uniform): the RTT is 20 ms plus a triangular spread on
//!   +- 10 ms, so its median is +20 +- 2 ms, its interquartile range 5.86 ms (accepted 4.5 to
//!   7.5 ms; the plain link's stays under 1 ms), and at least 90 % of RTTs fall within
//!   20 +- 10 ms (plus 3 ms of scheduling; an ARP exchange, itself delayed, may hold a reply);
//! - iperf3 over the delayed link still gets at least 85 % of its 20 Mbit/s;
//! - `describe` shows the impairments; `get hosts` says each host uses the relay;
//! - after delete and down nothing of ours is left.
//!
//! Root test: prints `SKIP` without root unless `VNET_REQUIRE_ROOT=1`.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Bed, ok, testbed_lock, text};

const SPEC: &str = "name: imp
allowRevisitation: true
nodes:
  - {name: p1, host: h1}
  - {name: q1, host: h2}
  - {name: p2, host: h1}
  - {name: q2, host: h2}
  - {name: p3, host: h1}
  - {name: q3, host: h2}
  - {name: p4, host: h1}
  - {name: q4, host: h2}
  - {name: p5, host: h1}
  - {name: q5, host: h1}
  - {name: p6, host: h1}
  - {name: q6, host: h2}
  - {name: p7, host: h1}
  - {name: q7, host: h1}
  - {name: p8, host: h1}
  - {name: q8, host: h2}
links:
  - {endpoints: [p1, q1], bandwidth: 100, addresses: [10.71.1.1/24, 10.71.1.2/24]}
  - {endpoints: [p2, q2], bandwidth: 20, addresses: [10.71.2.1/24, 10.71.2.2/24], delay: 20ms}
  - {endpoints: [p3, q3], bandwidth: 100, addresses: [10.71.3.1/24, 10.71.3.2/24], loss: 5}
  - {endpoints: [p4, q4], bandwidth: 100, addresses: [10.71.4.1/24, 10.71.4.2/24], delay: 10ms, jitter: 5ms}
  - {endpoints: [p5, q5], bandwidth: 100, addresses: [10.71.5.1/24, 10.71.5.2/24], delay: 20ms}
  - {endpoints: [p6, q6], bandwidth: 100, addresses: [10.71.6.1/24, 10.71.6.2/24], delay: 20ms, encapsulation: vlan}
  - {endpoints: [p7, q7], bandwidth: 100, addresses: [10.71.7.1/24, 10.71.7.2/24]}
  - {endpoints: [p8, q8], bandwidth: 100, addresses: [10.71.8.1/24, 10.71.8.2/24], encapsulation: vlan}
";

fn bed() -> Option<Bed> {
    common::private_bed(0, &[], "imp", 251)
}

/// busybox ping `count` times at `interval` seconds from `node` of `imp` to `addr` (2 s to
/// answer each), with `quiet` only its summary.
fn ping(bed: &Bed, node: &str, addr: &str, count: u32, interval: &str, quiet: bool) -> Output {
    let count = count.to_string();
    let mut args = vec![
        "exec",
        "imp",
        node,
        "--timeout",
        "60s",
        "--",
        "busybox",
        "ping",
    ];
    if quiet {
        args.push("-q");
    }
    args.extend(["-c", &count, "-i", interval, "-W", "2", addr]);
    bed.vnctl(Some("red"), &args)
}

/// The loss in percent of `count` pings at `interval` seconds.
fn loss(bed: &Bed, node: &str, addr: &str, count: u32, interval: &str) -> f64 {
    let out = ping(bed, node, addr, count, interval, true);
    // "1000 packets transmitted, 903 packets received, 9% packet loss": count, busybox rounds
    let summary = text(&out.stdout);
    let count_of = |what: &str| -> f64 {
        summary
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| l.split(", ").find(|p| p.ends_with(what)))
            .and_then(|p| p.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("ping {addr} from {node}: no summary: {out:?}"))
    };
    let (sent, got) = (count_of("transmitted"), count_of("received"));
    100.0 * (sent - got) / sent
}

/// The RTTs (ms) of `count` pings, one every 10 ms.
fn rtts(bed: &Bed, node: &str, addr: &str, count: u32) -> Vec<f64> {
    let out = ping(bed, node, addr, count, "0.01", false);
    let t = text(&out.stdout);
    let v: Vec<f64> = t
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|x| x.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(v.len() >= 90, "ping {addr} from {node}: {out:?}");
    v
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Interquartile range.
fn iqr(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() * 3 / 4] - s[s.len() / 4]
}

fn stddev(v: &[f64]) -> f64 {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// iperf3 from p2 to q2 for 3 s; the receiver's Mbit/s.
fn iperf(bed: &Bed) -> f64 {
    let server = bed.spawn_vnctl(
        Some("red"),
        &[
            "exec",
            "imp",
            "q2",
            "--timeout",
            "60s",
            "--",
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5302",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let client = loop {
        let out = bed.exec(
            "red",
            "imp",
            "p2",
            &["iperf3", "-c", "10.71.2.2", "-p", "5302", "-t", "3", "-J"],
        );
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let server = server.wait_with_output().unwrap();
    let j: serde_json::Value = serde_json::from_str(&text(&client.stdout))
        .unwrap_or_else(|e| panic!("iperf3 -J: {e}: {client:?}; server: {server:?}"));
    assert!(client.status.success(), "iperf3: {j}; server: {server:?}");
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3: {j}"))
        / 1e6
}

#[test]
fn delay_loss_and_jitter_as_specified() {
    let _one = testbed_lock();
    let Some(bed) = bed() else {
        return;
    };
    let before = bed.snapshot();
    let guard = bed.up();
    for h in bed.hosts() {
        assert_eq!(h["capabilities"]["impairment"], "relay", "{h}");
    }
    // Bad values are refused naming the field, before anything is created.
    let bad = bed.spec(
        "bad",
        "name: bad\nnodes: [{name: a}, {name: b}]\nlinks: [{endpoints: [a, b], bandwidth: 1, delay: 5ms, jitter: 9ms}]\n",
    );
    let out = bed.vnctl(Some("red"), &["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("jitter_us 9000 exceeds delay_us 5000"),
        "{out:?}"
    );
    let spec = bed.spec("imp", SPEC);
    bed.apply_wait("red", &spec, "120s");
    let d = bed.describe("red", "imp");
    assert_eq!(d["links"][1]["delayUs"], 20_000, "{d}");
    assert_eq!(d["links"][3]["jitterUs"], 5_000, "{d}");
    assert_eq!(d["links"][2]["lossPercent"], 5.0, "{d}");
    let shown = ok(
        bed.vnctl(Some("red"), &["describe", "vn", "imp"]),
        "describe",
    );
    assert!(shown.contains("delay 10ms +-5ms"), "{shown}");
    for (p, addr) in [
        ("p1", "10.71.1.2"),
        ("p2", "10.71.2.2"),
        ("p3", "10.71.3.2"),
        ("p4", "10.71.4.2"),
        ("p5", "10.71.5.2"),
        ("p6", "10.71.6.2"),
        ("p7", "10.71.7.2"),
        ("p8", "10.71.8.2"),
    ] {
        bed.ping_until("red", "imp", p, addr, Duration::from_secs(20));
    }

    // Delay, on VXLAN, veth and VLAN links, each against a link of its kind without delay.
    let plain = rtts(&bed, "p1", "10.71.1.2", 100);
    let base = median(&plain);
    for (node, addr, kind, baseline) in [
        ("p2", "10.71.2.2", "vxlan", ("p1", "10.71.1.2")),
        ("p5", "10.71.5.2", "veth", ("p7", "10.71.7.2")),
        ("p6", "10.71.6.2", "vlan", ("p8", "10.71.8.2")),
    ] {
        // At the same time, so that both see the same load of the (shared) machine.
        let (b, r) = std::thread::scope(|sc| {
            let b = sc.spawn(|| rtts(&bed, baseline.0, baseline.1, 100));
            let r = rtts(&bed, node, addr, 100);
            (b.join().unwrap(), r)
        });
        let base = median(&b);
        let m = median(&r);
        let min = r.iter().copied().fold(f64::INFINITY, f64::min);
        println!("{kind}: median RTT {m:.3} ms (min {min:.3}), plain {base:.3} ms");
        assert!(
            (m - base - 40.0).abs() <= 2.0,
            "{kind}: a 20 ms link adds {:.3} ms of RTT (median {m:.3}, plain {base:.3})",
            m - base
        );
    }

    // Jitter: RTT = 20 ms + two independent uniform(-5, 5) ms, a triangular distribution on
    // [10, 30] ms with quartiles at 20 -+ 2.93 ms (IQR 5.86 ms).
    let jit = rtts(&bed, "p4", "10.71.4.2", 200);
    let (iqr, iqr_plain) = (iqr(&jit), iqr(&plain));
    let m = median(&jit) - base;
    let inside = jit
        .iter()
        .filter(|r| **r >= base + 9.0 && **r <= base + 33.0)
        .count();
    println!(
        "jitter: RTT median +{m:.3} ms, IQR {iqr:.3} ms (plain {iqr_plain:.3} ms), sd {:.3} ms, {inside}/{} within 20 +- 10 ms",
        stddev(&jit),
        jit.len()
    );
    let out: Vec<&f64> = jit
        .iter()
        .filter(|r| **r < base + 9.0 || **r > base + 33.0)
        .collect();
    println!("jitter outliers: {out:?}");
    assert!(iqr_plain < 1.0, "plain link RTT IQR {iqr_plain:.3} ms");
    assert!(
        (4.5..=7.5).contains(&iqr),
        "jitter 5 ms: RTT IQR {iqr:.3} ms"
    );
    assert!(
        (m - 20.0).abs() <= 2.0,
        "10 ms +- 5 ms: median RTT +{m:.3} ms"
    );
    assert!(
        inside * 100 >= jit.len() * 90,
        "{inside} of {} RTTs in 20 +- 10 ms: {jit:?}",
        jit.len()
    );

    // Loss, both ways.
    let lost = loss(&bed, "p3", "10.71.3.2", 1000, "0.01");
    println!("loss: {lost:.1}% of 1000 pings");
    assert!((lost - 9.75).abs() <= 3.0, "5 % each way lost {lost} %");

    // Shaping still meets its rate with delay on the link.
    let mbps = iperf(&bed);
    println!("iperf3 over 20 Mbit/s + 20 ms: {mbps:.2} Mbit/s");
    assert!(mbps >= 17.0, "{mbps:.2} Mbit/s of 20");
    assert!(mbps <= 22.0, "{mbps:.2} Mbit/s: not shaped");

    ok(
        bed.vnctl(Some("red"), &["delete", "vn", "imp", "--wait"]),
        "delete",
    );
    drop(guard);
    bed.assert_gone(&before);
}
