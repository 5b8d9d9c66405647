//! End-to-end tests of real guests: a full Debian from a disk image, a guest of another CPU
//! architecture (aarch64 under TCG), and copy-on-write disks, with vnctl, the real controller and
//! the real agents of a private 3-host testbed, as root, one testbed at a time.
//!
//! `real_guests_end_to_end`: one VN with a Debian disk-image guest on h1, an aarch64 guest on h2
//! and a namespace node on h3, linked in a triangle: every link pings both ways; `vnctl exec` in
//! the Debian guest prints its `/etc/os-release` and `systemctl is-system-running` answers; in the
//! aarch64 guest `uname -m` says `aarch64`; `describe` shows how each guest runs; deleting the VN
//! leaves no QEMU process, overlay, seed or TAP.
//!
//! (Ten guests on one base: `substrate-agent/tests/guest_qemu.rs`, `ten_disk_guests_share_one_base`:
//! the agent boots a slice's guests one after the other, ten Debian boots under TCG are too long
//! for an end-to-end test.)
//!
//! Needs root, QEMU for x86_64 and aarch64, the binaries next to vnctl and the images `debian`
//! (`deploy/guest/build-debian.sh`) and `default-aarch64` (`deploy/guest/build-image.sh --arch
//! aarch64`) in `VNET_GUEST_IMAGES` (default `/var/lib/vnet/images`, for the agents too). Without
//! them the tests print `SKIP`, unless `VNET_REQUIRE_ROOT=1`, where a missing precondition fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Bed, lines_of, may_run, netns_names, ok, processes, testbed_lock, testbed_missing};

fn images_dir() -> PathBuf {
    std::env::var_os("VNET_GUEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/vnet/images"))
}

/// `true` when the test may run; prints SKIP, or panics under `VNET_REQUIRE_ROOT=1`.
fn preconditions(images: &[&str]) -> bool {
    let mut missing = testbed_missing("namespaces, TAP devices, daemons, QEMU");
    for (bin, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("qemu-img", "qemu-utils"),
        ("genisoimage", "genisoimage"),
    ] {
        let found = Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(format!("{bin} is not installed (apt-get install {pkg})"));
        }
    }
    for image in images {
        let manifest = images_dir().join(image).join("image.json");
        if !manifest.is_file() {
            missing.push(format!(
                "guest image missing: {} (deploy/test.sh builds it)",
                manifest.display()
            ));
        }
    }
    may_run(&missing)
}

impl Bed {
    fn node_ids(&self, provider: &str, vn: &str) -> Vec<(String, String, String)> {
        self.describe(provider, vn)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let s = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
                (s("node"), s("host"), s("nodeId"))
            })
            .collect()
    }

    /// The guest's command line, from its QEMU pidfile (checked against /proc).
    fn qemu_cmdline(&self, host: &str, node_id: &str) -> (u32, String) {
        let (pid, cmd) = self.qemu_process(host, node_id);
        assert!(
            cmd.contains(&format!("vnet-{node_id} ")),
            "pid {pid} is not the QEMU of {node_id}: {cmd:?}"
        );
        (pid, cmd)
    }
}

/// Debian (disk image) on h1, aarch64 on h2, a namespace on h3, in a triangle.
const REAL: &str = "\
name: real
encapsulation: vxlan
nodes:
  - {name: deb, kind: vm, cpu: 20, memory: 384, host: h1, image: debian, vcpus: 1}
  - {name: arm, kind: vm, cpu: 20, memory: 256, host: h2, image: default-aarch64, arch: aarch64, vcpus: 1}
  - {name: ns, kind: netns, cpu: 10, memory: 64, host: h3}
links:
  - {endpoints: [deb, arm], bandwidth: 20, addresses: [10.71.1.1/24, 10.71.1.2/24]}
  - {endpoints: [deb, ns], bandwidth: 20, addresses: [10.71.2.1/24, 10.71.2.2/24]}
  - {endpoints: [arm, ns], bandwidth: 20, addresses: [10.71.3.1/24, 10.71.3.2/24]}
";

#[test]
fn real_guests_end_to_end() {
    let test = "real_guests_end_to_end";
    if !preconditions(&["debian", "default-aarch64"]) {
        return;
    }
    let _lock = testbed_lock();
    let bed = common::guest_bed("rg", 252);
    let before = bed.snapshot();
    let down = bed.up();

    // The probe: every host runs both architectures; the catalogue lists both images.
    for h in bed.hosts() {
        let archs = &h["capabilities"]["guestArchs"];
        assert_eq!(archs, &serde_json::json!(["x86_64", "aarch64"]), "{h}");
    }
    let images = ok(bed.vnctl(None, &["get", "images"]), "get images");
    assert!(
        images.contains("debian") && images.contains("disk") && images.contains("aarch64"),
        "{images}"
    );

    // READY means booted and reachable: every guest answered on its command channel.
    let start = Instant::now();
    bed.apply_wait("lab", &bed.spec("real", REAL), "300s");
    println!("{test}: READY after {:?}", start.elapsed());
    let vn = bed.describe("lab", "real");
    assert_eq!(vn["state"], "READY", "{vn}");
    let ids = bed.node_ids("lab", "real");
    let id = |n: &str| ids.iter().find(|(m, _, _)| m == n).unwrap().clone();
    let (_, deb_host, deb_id) = id("deb");
    let (_, arm_host, arm_id) = id("arm");
    assert_eq!((deb_host.as_str(), arm_host.as_str()), ("h1", "h2"));

    // Every link pings, both ways.
    let settled = Duration::from_secs(20);
    for (node, peer) in [
        ("deb", "10.71.1.2"),
        ("arm", "10.71.1.1"),
        ("deb", "10.71.2.2"),
        ("ns", "10.71.2.1"),
        ("arm", "10.71.3.2"),
        ("ns", "10.71.3.1"),
    ] {
        bed.ping_until("lab", "real", node, peer, settled);
    }

    // The Debian guest: its own OS, systemd, the hostname and addresses from the NoCloud seed.
    let release = ok(
        bed.exec("lab", "real", "deb", &["cat", "/etc/os-release"]),
        "os-release",
    );
    assert!(release.contains("ID=debian"), "{release}");
    println!("{test}: Debian guest /etc/os-release:\n{release}");
    let state = bed.exec("lab", "real", "deb", &["systemctl", "is-system-running"]);
    let answer = common::text(&state.stdout);
    assert!(
        ["running", "degraded", "starting"].contains(&answer.trim()),
        "systemctl is-system-running answered {answer:?} ({state:?})"
    );
    let host = ok(bed.exec("lab", "real", "deb", &["hostname"]), "hostname");
    assert_eq!(host.trim(), "deb");
    let addrs = ok(
        bed.exec("lab", "real", "deb", &["ip", "-o", "addr", "show"]),
        "addresses",
    );
    assert!(
        addrs.contains("10.71.1.1/24") && addrs.contains("10.71.2.1/24"),
        "{addrs}"
    );
    let mounts = ok(
        bed.exec("lab", "real", "deb", &["cat", "/proc/mounts"]),
        "mounts",
    );
    assert!(
        mounts.contains("/dev/vda / ext4"),
        "root is not the disk: {mounts}"
    );

    // The aarch64 guest.
    let arch = ok(bed.exec("lab", "real", "arm", &["uname", "-m"]), "uname");
    assert_eq!(arch.trim(), "aarch64");

    // How each guest runs, as describe shows it and as QEMU runs it.
    let text = ok(
        bed.vnctl(Some("lab"), &["describe", "vn", "real"]),
        "describe",
    );
    assert!(text.contains("Guests:"), "{text}");
    let nodes = vn["nodes"].as_array().unwrap();
    let guest =
        |n: &str| -> Value { nodes.iter().find(|p| p["node"] == n).unwrap()["guest"].clone() };
    let kvm = bed.hosts()[0]["capabilities"]["kvmUsable"] == true;
    assert_eq!(guest("arm")["arch"], "aarch64");
    assert_eq!(guest("arm")["machine"], "virt");
    assert_eq!(
        guest("arm")["accel"],
        "tcg",
        "no KVM for a foreign architecture"
    );
    assert_eq!(guest("deb")["machine"], "microvm");
    assert_eq!(guest("deb")["nic"], "virtio");
    assert_eq!(guest("deb")["accel"], if kvm { "kvm" } else { "tcg" });
    assert_eq!(guest("deb")["image"], "debian (disk)");
    assert!(guest("ns").is_null());
    let (deb_pid, deb_cmd) = bed.qemu_cmdline(&deb_host, &deb_id);
    let (arm_pid, arm_cmd) = bed.qemu_cmdline(&arm_host, &arm_id);
    assert!(deb_cmd.starts_with("qemu-system-x86_64 "), "{deb_cmd}");
    assert!(deb_cmd.contains("-machine microvm"), "{deb_cmd}");
    assert!(arm_cmd.starts_with("qemu-system-aarch64 "), "{arm_cmd}");
    assert!(arm_cmd.contains("-machine virt -accel tcg"), "{arm_cmd}");
    // The Debian guest writes an overlay; the base is never opened for writing.
    let run = bed.guests_dir(&deb_host).join(&deb_id);
    let overlay = overlay_of(&run);
    assert!(
        deb_cmd.contains(&format!("file={}", overlay.display())),
        "{deb_cmd}"
    );
    assert!(run.join("seed.iso").is_file());

    // Delete: no QEMU process, overlay, seed or TAP left.
    let sandboxes: Vec<String> = bed
        .namespaces()
        .into_iter()
        .filter(|n| n.ends_with(&format!("-{deb_id}")) || n.ends_with(&format!("-{arm_id}")))
        .collect();
    assert_eq!(sandboxes.len(), 2, "{sandboxes:?}");
    for ns in &sandboxes {
        assert!(!lines_of(&["ip", "-n", ns, "-o", "link", "show", "type", "tun"]).is_empty());
    }
    ok(
        bed.vnctl(
            Some("lab"),
            &["delete", "vn", "real", "--wait", "--timeout", "120s"],
        ),
        "delete",
    );
    let markers = [format!("vnet-{deb_id} "), format!("vnet-{arm_id} ")];
    let mut left: Vec<String> = processes(&[&markers[0], &markers[1]]).into_iter().collect();
    for pid in [deb_pid, arm_pid] {
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
            left.push(format!("QEMU pid {pid}"));
        }
    }
    if run.exists() || overlay.exists() {
        left.push(format!("run directory with overlay {}", overlay.display()));
    }
    let now = netns_names();
    left.extend(sandboxes.iter().filter(|ns| now.contains(*ns)).cloned());
    assert!(left.is_empty(), "left after delete --wait: {left:#?}");

    down.finish(&before);
}

/// The one overlay (`disk-*.qcow2`) in a guest's run directory.
fn overlay_of(run: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("disk-") && n.ends_with(".qcow2")
        })
        .collect();
    assert_eq!(found.len(), 1, "{}: {found:?}", run.display());
    found[0].clone()
}
