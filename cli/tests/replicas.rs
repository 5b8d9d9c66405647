//! Real agents follow the leader: `vnctl testbed up --controllers 3 --store etcd`, a VN, the
//! leading controller killed with SIGKILL; the agents attach to the new leader, a create
//! through vnctl succeeds within 5 s of the kill and becomes READY (the agents report to the new
//! leader), and a running `vnctl watch` resumes there without losing or repeating an event.
//! Needs root and etcd (deploy/setup.sh); SKIP without them unless VNET_REQUIRE_ROOT=1.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// vnctl as the testbed's admin with its config file (whose context lists the three replicas).
fn admin(bed: &Bed, args: &[&str]) -> Command {
    let mut c = Command::new(VNCTL);
    c.env_remove("VNET_PROVIDER")
        .env_remove("VNET_CONTROLLER")
        .env("VNET_CONFIG", bed.config())
        .args(args);
    c
}

/// The replica that leads: the one whose log last says it took over (and not that it ended).
fn leader(bed: &Bed) -> (String, i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for name in ["controller", "controller-1", "controller-2"] {
            let log = std::fs::read_to_string(bed.dir.join(format!("logs/{name}.log")))
                .unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| l.contains("took over as leader") || l.contains("leadership ends"));
            let pid = std::fs::read_to_string(bed.dir.join(format!("run/{name}.pid")))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            if let (Some(l), Some(pid)) = (last, pid)
                && l.contains("took over")
                && std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                return (name.to_string(), pid);
            }
        }
        assert!(Instant::now() < deadline, "no controller leads");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn vn_yaml(name: &str) -> String {
    format!(
        "name: {name}\nnodes:\n  - {{name: a, cpu: 1, memory: 64, host: h1}}\n  - {{name: b, cpu: 1, memory: 64, host: h2}}\nlinks:\n  - {{endpoints: [a, b], bandwidth: 10, addresses: [10.0.1.1/24, 10.0.1.2/24]}}\n"
    )
}

#[test]
fn agents_and_watch_follow_the_new_leader() {
    let Some(bed) = private_bed(0, &["etcd"], "rp", 247) else {
        return;
    };
    let _lock = testbed_lock();
    let before = bed.snapshot();
    let down = bed.up_with(3, &["--controllers", "3", "--store", "etcd"]);

    let mut watch = admin(&bed, &["--provider", "red", "watch", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let one = bed.spec("ha1", &vn_yaml("ha1"));
    let apply = |f: &std::path::Path, wait: bool| {
        let mut args = vec!["--provider", "red", "apply", "-f", f.to_str().unwrap()];
        if wait {
            args.extend(["--wait", "--timeout", "60s"]);
        }
        admin(&bed, &args).output().unwrap()
    };
    ok(apply(&one, true), "apply ha1");

    let (name, leader_pid) = leader(&bed);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    let two = bed.spec("ha2", &vn_yaml("ha2"));
    ok(apply(&two, false), "apply ha2 after the kill");
    let took = killed.elapsed();
    eprintln!("killed {name} (pid {leader_pid}); create accepted {took:?} after the kill");
    assert!(
        took < Duration::from_secs(5),
        "create took {took:?} after the kill"
    );
    let (now, _) = leader(&bed);
    assert_ne!(now, name, "the killed replica cannot lead");
    // READY needs the agents' reports: they attached to the new leader.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = ok(
            admin(
                &bed,
                &["--provider", "red", "get", "vn", "ha2", "-o", "json"],
            )
            .output()
            .unwrap(),
            "get ha2",
        );
        if out.contains("\"READY\"") {
            break;
        }
        assert!(Instant::now() < deadline, "ha2 not READY: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let hosts: Value = serde_json::from_str(&ok(
        admin(&bed, &["get", "hosts", "-o", "json"])
            .output()
            .unwrap(),
        "get hosts",
    ))
    .unwrap();
    for h in hosts.as_array().unwrap() {
        assert_eq!(h["connected"], Value::Bool(true), "{h}");
    }

    // The watch resumed on another replica: each of these events once, in order.
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |vn: &str, ev: &str| {
        events
            .iter()
            .filter(|e| e["vn"] == vn && e["event"] == ev)
            .count()
    };
    for vn in ["ha1", "ha2"] {
        for ev in ["ACCEPTED", "READY"] {
            assert_eq!(count(vn, ev), 1, "{vn} {ev} in {events:#?}");
        }
    }
    assert!(
        text(&out.stderr).contains("resuming after event"),
        "the watch did not lose its stream: {}",
        text(&out.stderr)
    );
    drop(down);
    bed.assert_gone(&before);
}
