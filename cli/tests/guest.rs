//! End-to-end test of QEMU guests as virtual nodes: vnctl, the real controller and the real agents
//! of a private 3-host testbed (own namespace prefix, bridge, subnet, ports and state dir), as
//! root, one testbed at a time (see [`testbed_lock`]).
//!
//! 1. Every host's probe reports whether KVM is usable and why; the guests run with what the probe
//!    decided (TCG on a machine without vmx/svm, like the development machine).
//! 2. VN `gvx` over VXLAN: a virtio guest on h1, namespaces on h2 and h3; pings both ways.
//! 3. VN `gvl` over VLAN (another provider): an e1000 guest on h2, a namespace on h3; pings both
//!    ways; each guest's NIC runs the driver of its model.
//! 4. `vnctl console`: the boot log carries the guest's own boot id; a command typed into the
//!    console answers; a netns node and another provider's guest are refused with one clear line.
//! 5. The agents of h1 (SIGKILL) and h2 (SIGTERM) are restarted the way the testbed starts them:
//!    the same QEMU processes, the same guest boot ids, pings still answered.
//! 6. Deleting the VNs leaves no QEMU process, sandbox namespace, TAP device or run directory, by
//!    the time `delete --wait` returns.
//! 7. A guest as a node of a child VN (in a parent node on h1, its peer in a parent node on h3):
//!    READY means reachable, pings both ways; the cascade delete leaves nothing of it.
//! 8. `testbed down` leaves nothing of ours.
//!
//! Needs root, QEMU, the binaries next to vnctl and the guest image (`deploy/guest/build-image.sh`;
//! `VNET_GUEST_IMAGES` names another images directory, for the agents too). Without them the test
//! prints `SKIP`, unless `VNET_REQUIRE_ROOT=1`, where a missing precondition fails it.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{
    Bed, assert_one_line_error, lines_of, may_run, netns_names, ok, processes, testbed_lock,
    testbed_missing, text, vnctl_with_input,
};

fn images_dir() -> PathBuf {
    std::env::var_os("VNET_GUEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/vnet/images"))
}

/// `true` when the test may run; prints SKIP, or panics under `VNET_REQUIRE_ROOT=1`.
fn preconditions() -> bool {
    let mut missing = testbed_missing("namespaces, TAP devices, daemons, QEMU");
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !qemu {
        missing
            .push("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
    }
    let manifest = images_dir().join("default/image.json");
    if !manifest.is_file() {
        missing.push(format!(
            "guest image missing: {} (run deploy/guest/build-image.sh)",
            manifest.display()
        ));
    }
    may_run(&missing)
}

impl Bed {
    fn boot_id(&self, provider: &str, vn: &str, node: &str) -> String {
        let out = self.exec(
            provider,
            vn,
            node,
            &["cat", "/proc/sys/kernel/random/boot_id"],
        );
        ok(out, "read the guest's boot id").trim().to_owned()
    }

    /// Whatever is in the guests' run directories of the three hosts.
    fn guest_run_dirs(&self) -> Vec<String> {
        ["h1", "h2", "h3"]
            .into_iter()
            .filter_map(|h| std::fs::read_dir(self.guests_dir(h)).ok())
            .flat_map(|r| r.flatten().map(|e| e.path().display().to_string()))
            .collect()
    }

    /// QEMU's pid of a guest, from its pidfile, checked against /proc.
    fn qemu_pid(&self, host: &str, node_id: &str) -> u32 {
        let (pid, cmd) = self.qemu_process(host, node_id);
        assert!(
            cmd.contains(&format!("vnet-{node_id}")),
            "pid {pid} is not the QEMU of {node_id}: {cmd:?}"
        );
        pid
    }

    fn agent_pid(&self, host: &str) -> u32 {
        std::fs::read_to_string(self.dir.join(format!("run/agent-{host}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Stops the agent of `host` with `signal` and starts it again with the same command line,
    /// the way `vnctl testbed up` starts it (own session, log appended, pidfile), then waits
    /// until it is attached and has applied its desired state again.
    fn restart_agent(&self, host: &str, signal: &str) {
        let pid = self.agent_pid(host);
        let argv: Vec<String> = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
            .split('\0')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        assert!(argv[0].ends_with("substrate-agent"), "{argv:?}");
        let st = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Path::new(&format!("/proc/{pid}/cmdline")).exists()
            && !std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "agent {host} ({pid}) did not exit on {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join(format!("logs/agent-{host}.log")))
            .unwrap();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("restart the agent");
        std::fs::write(
            self.dir.join(format!("run/agent-{host}.pid")),
            format!("{}\n", child.id()),
        )
        .unwrap();
        // Reap it whenever `testbed down` stops it.
        std::thread::spawn(move || child.wait());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h = self
                .hosts()
                .into_iter()
                .find(|h| h["id"] == host)
                .expect("host listed");
            if h["connected"] == true && h["desiredGeneration"] == h["observedGeneration"] {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent {host} did not come back: {h}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const GVX: &str = "\
name: gvx
encapsulation: vxlan
nodes:
  - {name: vm, kind: vm, cpu: 20, memory: 128, host: h1, image: default, nic: virtio, vcpus: 1}
  - {name: a, kind: netns, cpu: 10, memory: 64, host: h2}
  - {name: b, kind: netns, cpu: 10, memory: 64, host: h3}
links:
  - {endpoints: [vm, a], bandwidth: 20, addresses: [10.61.1.1/24, 10.61.1.2/24]}
  - {endpoints: [vm, b], bandwidth: 20, addresses: [10.61.2.1/24, 10.61.2.2/24]}
";

const GVL: &str = "\
name: gvl
encapsulation: vlan
nodes:
  - {name: old, kind: vm, cpu: 20, memory: 128, host: h2, image: default, nic: e1000, vcpus: 1}
  - {name: c, kind: netns, cpu: 10, memory: 64, host: h3}
links:
  - {endpoints: [old, c], bandwidth: 20, addresses: [10.62.0.1/24, 10.62.0.2/24]}
";

/// A nestable parent whose nodes may carry guests of children.
const GNEST: &str = "\
name: gnest
encapsulation: vxlan
nestable: true
attributes:
  allowedNodeKinds: [netns, vm]
nodes:
  - {name: p1, kind: netns, cpu: 60, memory: 512, host: h1}
  - {name: p3, kind: netns, cpu: 60, memory: 512, host: h3}
links:
  - {endpoints: [p1, p3], bandwidth: 100, addresses: [10.65.0.1/24, 10.65.0.3/24]}
";

/// Its child: a virtio guest in p1, a namespace in p3.
const GKID: &str = "\
name: gkid
parent: gnest
nodes:
  - {name: g, kind: vm, cpu: 20, memory: 128, host: p1, image: default, vcpus: 1}
  - {name: k, kind: netns, cpu: 10, memory: 64, host: p3}
links:
  - {endpoints: [g, k], bandwidth: 20, addresses: [10.66.0.1/24, 10.66.0.2/24]}
";

/// node name -> (host, node id)
fn placement(vn: &Value) -> std::collections::BTreeMap<String, (String, String)> {
    vn["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap().to_owned(),
                (
                    n["host"].as_str().unwrap().to_owned(),
                    n["nodeId"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

#[test]
fn guests_end_to_end() {
    if !preconditions() {
        return;
    }
    let _lock = testbed_lock();
    let bed = common::guest_bed("ge", 253);
    let before = bed.snapshot();
    let down = bed.up();

    // 1. The probe, as the operators see it.
    let hosts = bed.hosts();
    assert_eq!(hosts.len(), 3);
    let kvm = hosts[0]["capabilities"]["kvmUsable"] == true;
    for h in &hosts {
        let c = &h["capabilities"];
        assert_eq!(c["qemuPresent"], true, "{h}");
        assert_eq!(
            c["kvmUsable"], kvm,
            "hosts of one machine disagree: {hosts:?}"
        );
        let reason = c["kvmReason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "no KVM reason: {h}");
        assert!(
            h["nodeKinds"].as_array().unwrap().iter().any(|k| k == "vm"),
            "{h}"
        );
        if !kvm {
            println!("{}: KVM unusable: {reason}", h["id"]);
        }
    }

    // 2, 3. Two VNs with guests, of two providers.
    for (provider, name, spec) in [("lab", "gvx", GVX), ("legacy", "gvl", GVL)] {
        bed.apply_wait(provider, &bed.spec(name, spec), "120s");
    }
    let gvx = bed.describe("lab", "gvx");
    let gvl = bed.describe("legacy", "gvl");
    for (vn, encap) in [(&gvx, "vxlan"), (&gvl, "vlan")] {
        assert_eq!(vn["state"], "READY", "{vn}");
        for l in vn["links"].as_array().unwrap() {
            for h in l["hops"].as_array().unwrap() {
                assert_eq!(h["encapsulation"], encap, "{l}");
            }
        }
    }
    let px = placement(&gvx);
    let pl = placement(&gvl);
    let (vm_host, vm_id) = px["vm"].clone();
    let (old_host, old_id) = pl["old"].clone();
    assert_eq!((vm_host.as_str(), old_host.as_str()), ("h1", "h2"));

    // Pings both ways. READY means booted (the agents wait for each guest's command channel,
    // which its init serves after configuring the NICs): no boot time to wait out here, only a
    // few seconds for neighbour discovery and a lost first packet.
    let settled = Duration::from_secs(10);
    bed.ping_until("lab", "gvx", "a", "10.61.1.1", settled);
    bed.ping_until("lab", "gvx", "b", "10.61.2.1", settled);
    bed.ping_until("lab", "gvx", "vm", "10.61.1.2", settled);
    bed.ping_until("lab", "gvx", "vm", "10.61.2.2", settled);
    bed.ping_until("legacy", "gvl", "c", "10.62.0.1", settled);
    bed.ping_until("legacy", "gvl", "old", "10.62.0.2", settled);

    // Each guest runs the NIC model it asked for, with the acceleration the probe chose.
    for (provider, vn, node, host, id, model, driver) in [
        (
            "lab",
            "gvx",
            "vm",
            &vm_host,
            &vm_id,
            "virtio-net-device",
            "virtio_net",
        ),
        (
            "legacy", "gvl", "old", &old_host, &old_id, "e1000,", "e1000",
        ),
    ] {
        let pid = bed.qemu_pid(host, id);
        let cmd = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).replace('\0', " ");
        assert!(cmd.contains(model), "{vn}/{node}: {cmd}");
        let accel = if kvm { "-accel kvm" } else { "-accel tcg" };
        assert!(cmd.contains(accel), "{vn}/{node}: want {accel}: {cmd}");
        let out = bed.exec(
            provider,
            vn,
            node,
            &["readlink", "/sys/class/net/eth0/device/driver"],
        );
        let link = ok(out, "NIC driver");
        assert!(
            link.trim_end().ends_with(&format!("/{driver}")),
            "{vn}/{node}: {link}"
        );
    }

    // 4. The console.
    let vm_boot = bed.boot_id("lab", "gvx", "vm");
    let log = ok(bed.vnctl(Some("lab"), &["console", "gvx", "vm"]), "console");
    assert!(
        log.contains(&format!("VNET-READY vm {vm_boot}")),
        "the console log is not this guest's boot log:\n{log}"
    );
    assert!(
        log.contains(&format!("=== vnet: starting guest {vm_id}")),
        "{log}"
    );
    let tail = ok(
        bed.vnctl(Some("lab"), &["console", "gvx", "vm", "--tail", "10"]),
        "console --tail",
    );
    assert_eq!(tail.len(), 10, "{tail:?}");
    let typed = vnctl_with_input(
        &bed.ctl,
        Some("lab"),
        &["console", "gvx", "vm", "-i", "--tail", "0", "--idle", "3s"],
        Some(b"echo console-$((6*7))\n"),
    );
    let shown = ok(typed, "console -i");
    assert!(
        shown.contains("console-42"),
        "typed command did not answer: {shown:?}"
    );
    let out = bed.vnctl(Some("lab"), &["console", "gvx", "a"]);
    assert_one_line_error(&out, 1, &["console is for vm nodes", "node a", "netns"]);
    let out = bed.vnctl(Some("legacy"), &["console", "gvx", "vm"]);
    assert_one_line_error(&out, 1, &["not found", "gvx"]);
    let e1000_log = ok(
        bed.vnctl(Some("legacy"), &["console", "gvl", "old"]),
        "console",
    );
    let old_boot = bed.boot_id("legacy", "gvl", "old");
    assert!(
        e1000_log.contains(&format!("VNET-READY old {old_boot}")),
        "{e1000_log}"
    );

    // 5. Agent restarts neither kill nor reboot guests.
    let vm_pid = bed.qemu_pid(&vm_host, &vm_id);
    let old_pid = bed.qemu_pid(&old_host, &old_id);
    bed.restart_agent("h1", "-KILL");
    bed.restart_agent("h2", "-TERM");
    assert_eq!(
        bed.qemu_pid(&vm_host, &vm_id),
        vm_pid,
        "the virtio guest's QEMU changed"
    );
    assert_eq!(
        bed.qemu_pid(&old_host, &old_id),
        old_pid,
        "the e1000 guest's QEMU changed"
    );
    assert_eq!(
        bed.boot_id("lab", "gvx", "vm"),
        vm_boot,
        "the virtio guest rebooted"
    );
    assert_eq!(
        bed.boot_id("legacy", "gvl", "old"),
        old_boot,
        "the e1000 guest rebooted"
    );
    for (provider, vn) in [("lab", "gvx"), ("legacy", "gvl")] {
        assert_eq!(bed.describe(provider, vn)["state"], "READY");
    }
    let quick = Duration::from_secs(20);
    bed.ping_until("lab", "gvx", "a", "10.61.1.1", quick);
    bed.ping_until("lab", "gvx", "vm", "10.61.2.2", quick);
    bed.ping_until("legacy", "gvl", "c", "10.62.0.1", quick);
    bed.ping_until("legacy", "gvl", "old", "10.62.0.2", quick);

    // 6. Deleting the VNs stops the guests and removes everything of theirs.
    let sandboxes: Vec<String> = bed
        .namespaces()
        .into_iter()
        .filter(|n| n.ends_with(&format!("-{vm_id}")) || n.ends_with(&format!("-{old_id}")))
        .collect();
    assert_eq!(
        sandboxes.len(),
        2,
        "sandboxes of both guests: {sandboxes:?}"
    );
    for ns in &sandboxes {
        let taps = lines_of(&["ip", "-n", ns, "-o", "link", "show", "type", "tun"]);
        assert!(!taps.is_empty(), "no TAP in {ns}");
    }
    for (provider, vn) in [("lab", "gvx"), ("legacy", "gvl")] {
        ok(
            bed.vnctl(
                Some(provider),
                &["delete", "vn", vn, "--wait", "--timeout", "120s"],
            ),
            "delete",
        );
    }
    // `delete --wait` returns once every host reported the new generation applied: the guests
    // are stopped and their sandboxes gone by then, with no grace period.
    let guest_markers = [format!("vnet-{vm_id} "), format!("vnet-{old_id} ")];
    let mut left: Vec<String> = processes(&[&guest_markers[0], &guest_markers[1]])
        .into_iter()
        .collect();
    for pid in [vm_pid, old_pid] {
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
            left.push(format!("QEMU pid {pid}"));
        }
    }
    left.extend(bed.guest_run_dirs());
    let netns_now = netns_names();
    for ns in &sandboxes {
        if netns_now.contains(ns) {
            left.push(format!("sandbox {ns} (with its TAPs)"));
        }
    }
    assert!(
        left.is_empty(),
        "left when delete --wait returned: {left:#?}"
    );

    // 7. A guest as a node of a child VN (recursion and heterogeneity together): its sandbox and
    // TAP hang off the parent node's namespace, its link is tunnelled through the parent's.
    let bare = bed.namespaces();
    bed.apply_wait("lab", &bed.spec("gnest", GNEST), "60s");
    bed.apply_wait("lab", &bed.spec("gkid", GKID), "120s");
    let kid = bed.describe("lab", "gkid");
    assert_eq!(kid["state"], "READY", "{kid}");
    let (kid_host, kid_id) = placement(&kid)["g"].clone();
    assert_eq!(kid_host, "h1", "{kid}");
    let settled = Duration::from_secs(10);
    bed.ping_until("lab", "gkid", "k", "10.66.0.1", settled);
    bed.ping_until("lab", "gkid", "g", "10.66.0.2", settled);
    let marker = format!("vnet-{kid_id} ");
    assert_eq!(
        processes(&[&marker]).len(),
        1,
        "one QEMU for the child's guest"
    );
    ok(
        bed.vnctl(
            Some("lab"),
            &[
                "delete",
                "vn",
                "gnest",
                "--cascade",
                "--wait",
                "--timeout",
                "120s",
            ],
        ),
        "delete the parent and its child",
    );
    assert!(processes(&[&marker]).is_empty(), "the child's QEMU is left");
    assert_eq!(bed.namespaces(), bare, "namespaces left by the nested VNs");
    let run_dirs = bed.guest_run_dirs();
    assert!(
        run_dirs.is_empty(),
        "guest run directories left: {run_dirs:?}"
    );

    // 8. Nothing of ours left.
    down.finish(&before);
}
