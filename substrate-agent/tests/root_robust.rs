//! Root tests of the agent's robustness: crashes around the start of the VLAN datapath, stray
//! files under `/run/netns`, and tenants that rewrite what is inside their node. Without root
//! they print `SKIP` (and fail under `VNET_REQUIRE_ROOT=1`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::*;
use vnet_proto::v1 as pb;
use vnet_proto::v1::Encapsulation::{Vlan, Vxlan};

const T: Duration = Duration::from_secs(60);

/// VN `vn<p>`: node `<p>1` on h1 and `<p>2` on h2 joined by a VLAN link (10.<net>.0.0/24 on
/// eth0), and when `vxlan` also by a VXLAN link (10.<net+1>.0.0/24 on eth1).
fn vn(p: &str, vlan: u32, net: u8, vxlan: bool) -> (pb::VnSlice, pb::VnSlice) {
    let side = |i: u8, local: &str, remote: &str| {
        let node = format!("{p}{i}");
        let mut links = vec![seg(
            &format!("{p}v"),
            1500,
            0,
            nif(&node, "eth0", &format!("10.{net}.0.{i}/24"), ""),
            hop(Vlan, vlan, local, remote),
        )];
        if vxlan {
            links.push(seg(
                &format!("{p}x"),
                1450,
                0,
                nif(&node, "eth1", &format!("10.{}.0.{i}/24", net + 1), ""),
                hop(Vxlan, vlan + 1000, local, remote),
            ));
        }
        slice(&format!("vn{p}"), &[&node], links)
    };
    (
        side(1, "10.255.12.1", "10.255.12.2"),
        side(2, "10.255.12.2", "10.255.12.1"),
    )
}

fn ping(ns: &str, dst: &str) -> bool {
    in_ns(ns, &format!("busybox ping -c 1 -W 2 {dst}")).0
}

fn all_ready(o: &pb::ObservedState) -> bool {
    o.converged
        && !o.vns.is_empty()
        && o.vns
            .iter()
            .all(|v| v.state == pb::SliceState::Ready as i32)
}

/// Names under `/run/netns` that start with `prefix`.
fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Kills the agent of h1 with SIGKILL at 20 moments around the start of its VLAN datapath (5
/// points of the start, each hit at 4 offsets: while paused there and after it moved on), and
/// restarts it each time: every VN is READY again, traffic crosses the VLAN links, exactly one
/// datapath runs; after delete no process and no namespace is left.
#[test]
fn agent_killed_around_datapath_start_never_orphans_it() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("r", 2);
    // The crash points are those of the userspace datapath process.
    tb.vlan_datapath = "userspace";
    tb.underlay(1, 2);
    let (h1, h2) = (tb.hosts[0].id.clone(), tb.hosts[1].id.clone());
    let (a1, a2) = vn("ka", 100, 20, true);
    let (b1, b2) = vn("kb", 200, 30, false);
    let d1 = pb::DesiredState {
        generation: 1,
        vns: vec![a1, b1],
    };
    let d2 = pb::DesiredState {
        generation: 1,
        vns: vec![a2, b2],
    };
    tb.ctl().set_desired(&h1, d1);
    tb.ctl().set_desired(&h2, d2);
    tb.start_agent(2);
    let marker = tb.dir.path().join("paused");
    let mut round = 0;
    for point in ["intent", "exec", "spawned", "recorded", "loaded"] {
        for offset_ms in [0u64, 10, 35, 80] {
            round += 1;
            // No datapath of h1 runs, so the next agent must start one.
            tb.kill_agent(1);
            for pid in tb.datapaths(1) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let t = Instant::now();
            while !tb.datapaths(1).is_empty() {
                assert!(t.elapsed() < T, "round {round}: datapath does not die");
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = std::fs::remove_file(&marker);
            let hook = format!("{point}:30:{}", marker.display());
            tb.start_agent_env(1, &[("VNET_TEST_DATAPATH_PAUSE", &hook)]);
            let t = Instant::now();
            while !marker.exists() {
                assert!(
                    t.elapsed() < T,
                    "round {round}: never reached {point}\n{}",
                    tb.log(1)
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(offset_ms));
            tb.kill_agent(1);
            let since = tb.ctl().report_count(&h1);
            tb.start_agent(1);
            let r = tb.ctl().wait_report_since(&h1, 1, since, T);
            assert!(
                all_ready(&r),
                "round {round} ({point}+{offset_ms}ms): {r:#?}\n{}",
                tb.log(1)
            );
            let dps = tb.datapaths(1);
            assert_eq!(
                dps.len(),
                1,
                "round {round} ({point}+{offset_ms}ms): datapaths {dps:?}\n{}",
                tb.log(1)
            );
            for (node, dst) in [("ka1", "10.20.0.2"), ("kb1", "10.30.0.2")] {
                assert!(
                    ping(&tb.node_ns(1, node), dst),
                    "round {round} ({point}+{offset_ms}ms): {node} -> {dst}\n{}",
                    tb.log(1)
                );
            }
        }
    }
    assert_eq!(round, 20);
    // The window was hit: kills between fork and recording the pid left orphans, which the next
    // agent found and killed.
    let orphans = tb
        .log(1)
        .matches("killing an orphaned vlan datapath process")
        .count();
    assert!(
        orphans >= 2,
        "{orphans} orphans met
{}",
        tb.log(1)
    );
    println!("{orphans} orphaned datapaths found and killed over 20 kills");
    // Delete: nothing of the VNs is left, no process, no namespace.
    delete_everything(&tb, [&h1, &h2]);
    for i in [1, 2] {
        let prefix = format!("{}-{}-", tb.prefix, tb.hosts[i - 1].id);
        assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new(), "host {i}");
        assert_eq!(tb.datapaths(i), Vec::<u32>::new(), "host {i}");
    }
}

/// A stray file and a directory named with h1's prefix under `/run/netns` are reported in every
/// report of h1 and left alone; the VNs on h1 still converge and carry traffic.
#[test]
fn stray_entries_under_the_agent_prefix_are_reported_and_skipped() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("s", 2);
    tb.underlay(1, 2);
    let (h1, h2) = (tb.hosts[0].id.clone(), tb.hosts[1].id.clone());
    let junk_file = format!("/run/netns/{}-{h1}-junk", tb.prefix);
    let junk_dir = format!("/run/netns/{}-{h1}-junkdir", tb.prefix);
    std::fs::create_dir_all("/run/netns").unwrap();
    std::fs::write(&junk_file, b"").unwrap();
    std::fs::create_dir(&junk_dir).unwrap();
    struct Rm(String, String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_dir(&self.1);
        }
    }
    let _rm = Rm(junk_file.clone(), junk_dir.clone());
    let (a1, a2) = vn("sa", 300, 40, true);
    tb.ctl().set_desired(
        &h1,
        pb::DesiredState {
            generation: 1,
            vns: vec![a1],
        },
    );
    tb.ctl().set_desired(
        &h2,
        pb::DesiredState {
            generation: 1,
            vns: vec![a2],
        },
    );
    tb.start_agent(1);
    tb.start_agent(2);
    let r = tb.ctl().wait_report(&h1, 1, T);
    assert!(all_ready(&r), "{r:#?}\n{}", tb.log(1));
    tb.ctl().wait_converged(&h2, 1, T);
    for j in [&junk_file, &junk_dir] {
        let name = j.trim_start_matches("/run/netns/");
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with(&format!("{name} ")) && w.contains("skipped")),
            "{name} not reported: {:?}",
            r.warnings
        );
    }
    assert!(tb.log(1).contains("unreadable namespace skipped"));
    assert!(ping(&tb.node_ns(1, "sa1"), "10.40.0.2"));
    assert!(ping(&tb.node_ns(1, "sa1"), "10.41.0.2"));
    // Delete: ours go, the strays stay (not ours).
    delete_everything(&tb, [&h1, &h2]);
    let prefix = format!("{}-{h1}-", tb.prefix);
    let left = netns_with_prefix(&prefix);
    assert_eq!(
        left,
        vec![format!("{prefix}junk"), format!("{prefix}junkdir")]
    );
}

/// Inside its nodes a tenant rewrites the loopback alias (clears it, copies the other node's
/// tag), renames and re-addresses its interfaces, rewrites an interface's alias and leaves a
/// command running; deleting the VN still removes both namespaces, kills the command, and
/// nothing of the VN is left.
#[test]
fn a_tenant_rewriting_its_node_cannot_make_it_outlive_the_vn() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("t", 2);
    tb.underlay(1, 2);
    let (h1, h2) = (tb.hosts[0].id.clone(), tb.hosts[1].id.clone());
    // Two nodes on h1 (so that one can carry the other's tag), one on h2.
    let (mut a1, a2) = vn("ta", 400, 50, true);
    a1.nodes.push(netns_node("ta3"));
    a1.links.push(seg(
        "tal",
        1500,
        0,
        nif("ta1", "eth2", "10.52.0.1/24", ""),
        nif("ta3", "eth0", "10.52.0.3/24", ""),
    ));
    let set = |tb: &Testbed, generation: u64, h1s: Vec<pb::VnSlice>, h2s: Vec<pb::VnSlice>| {
        for (h, vns) in [(&h1, h1s), (&h2, h2s)] {
            tb.ctl()
                .set_desired(h, pb::DesiredState { generation, vns });
        }
    };
    set(&tb, 1, vec![a1], vec![a2]);
    tb.start_agent(1);
    tb.start_agent(2);
    let r = tb.ctl().wait_report(&h1, 1, T);
    assert!(all_ready(&r), "{r:#?}\n{}", tb.log(1));
    tb.ctl().wait_converged(&h2, 1, T);
    let (n1, n3) = (tb.node_ns(1, "ta1"), tb.node_ns(1, "ta3"));
    let tag1 = sh(&format!("ip -n {n1} -o link show lo"));
    let tag1 = tag1
        .split("alias ")
        .nth(1)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no tag on {n1}'s loopback: {tag1}"));
    // What a tenant can do inside its own nodes.
    for cmd in [
        "ip link set dev lo alias mine".to_string(),
        "ip link set dev eth0 alias mine".to_string(),
        "ip link set dev eth1 down".to_string(),
        "ip link set dev eth1 name tenant1".to_string(),
        "ip addr flush dev eth2".to_string(),
        "ip addr add 10.99.0.1/24 dev eth2".to_string(),
    ] {
        assert!(in_ns(&n1, &cmd).0, "{cmd}");
    }
    assert!(in_ns(&n3, &format!("ip link set dev lo alias {tag1}")).0);
    assert!(in_ns(&n3, "ip link set dev eth0 alias x").0);
    // And leaves a command running inside, in a session of its own.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let ns_ino = std::fs::metadata(format!("/run/netns/{n1}")).unwrap().ino();
    let mut sleeper = Reap(
        std::process::Command::new("ip")
            .args(["netns", "exec", &n1, "setsid", "sleep", "300"])
            .spawn()
            .unwrap(),
    );
    // Delete at once (before any resync could repair the nodes).
    set(&tb, 2, vec![], vec![]);
    let r = tb.ctl().wait_report(&h1, 2, T);
    assert!(r.converged, "{r:#?}\n{}", tb.log(1));
    tb.ctl().wait_converged(&h2, 2, T);
    // The leftover command was killed: nothing holds the namespace any more.
    let t = Instant::now();
    while sleeper.0.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < T, "the tenant's command outlived the VN");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pinned: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::metadata(e.path().join("ns/net")).is_ok_and(|m| m.ino() == ns_ino))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(pinned.is_empty(), "processes still in {n1}: {pinned:?}");
    assert!(
        tb.log(1)
            .contains("killed processes left in a deleted namespace")
    );
    for i in [1, 2] {
        let prefix = format!("{}-{}-", tb.prefix, tb.hosts[i - 1].id);
        assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new(), "host {i}");
        assert_eq!(tb.datapaths(i), Vec::<u32>::new(), "host {i}");
        // Nothing of the VN in the host's own namespace either.
        let links = sh(&format!("ip -n {} -o link show", tb.hosts[i - 1].ns));
        assert!(!links.contains("vnet:"), "host {i}: {links}");
    }
}

/// Sends each host an empty desired state (generation 2) and waits until both converge on it.
fn delete_everything(tb: &Testbed, hosts: [&String; 2]) {
    for h in hosts {
        tb.ctl().set_desired(
            h,
            pb::DesiredState {
                generation: 2,
                vns: vec![],
            },
        );
    }
    for h in hosts {
        tb.ctl().wait_converged(h, 2, T);
    }
}
