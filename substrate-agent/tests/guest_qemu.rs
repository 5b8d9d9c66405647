//! Root tests of the QEMU guest runtime: real guests of the project's image in sandbox
//! namespaces behind veth pairs. Each test creates its own namespaces (names carry a test tag and
//! the pid), removes them even on panic, and checks that no QEMU process, TAP, namespace or run
//! file of its own is left.
//!
//! Needs root, QEMU and the image (`deploy/guest/build-image.sh`; `VNET_GUEST_IMAGES` overrides
//! the images directory). Without them the tests print `SKIP`, unless `VNET_REQUIRE_ROOT=1`, in
//! which case they fail and say what is missing.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use substrate_agent::guest::{
    Accel, EnsureAction, GuestConfig, GuestError, GuestNic, GuestRoute, GuestRuntime, NicModel,
    QemuRuntime, QemuRuntimeOptions,
};
use substrate_agent::mac::Mac;

const BOOT: Duration = Duration::from_secs(120);

fn images_dir() -> PathBuf {
    std::env::var_os("VNET_GUEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/vnet/images"))
}

/// `true` when the test may run; prints SKIP or panics (VNET_REQUIRE_ROOT=1) otherwise.
fn preconditions(test: &str, need_image: bool) -> bool {
    let require = std::env::var("VNET_REQUIRE_ROOT").as_deref() == Ok("1");
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("not root".to_string());
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("qemu-system-x86_64 not found (deploy/setup.sh)".into());
    }
    let manifest = images_dir().join("default/image.json");
    if need_image && !manifest.is_file() {
        missing.push(format!(
            "guest image missing: {} (run deploy/guest/build-image.sh)",
            manifest.display()
        ));
    }
    if missing.is_empty() {
        return true;
    }
    if require {
        panic!("{test}: VNET_REQUIRE_ROOT=1 but {}", missing.join("; "));
    }
    println!("SKIP {test}: {}", missing.join("; "));
    false
}

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn ok(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A sandbox namespace for the guest and a peer namespace, joined by a veth pair whose sandbox
/// end has the tenant's ifname and no address (as the agent realizes a VM node's link).
struct Net {
    sandbox: String,
    peer: String,
}

impl Net {
    fn new(tag: &str, ifname: &str, peer_cidr: &str) -> Net {
        let pid = std::process::id();
        let n = Net {
            sandbox: format!("vgs-{tag}-{pid}"),
            peer: format!("vgp-{tag}-{pid}"),
        };
        ok(&["ip", "netns", "add", &n.sandbox]);
        ok(&["ip", "netns", "add", &n.peer]);
        ok(&[
            "ip", "-n", &n.peer, "link", "add", "p0", "type", "veth", "peer", "name", ifname,
            "netns", &n.sandbox,
        ]);
        ok(&["ip", "-n", &n.peer, "addr", "add", peer_cidr, "dev", "p0"]);
        ok(&["ip", "-n", &n.peer, "link", "set", "p0", "up"]);
        ok(&["ip", "-n", &n.peer, "link", "set", "lo", "up"]);
        ok(&["ip", "-n", &n.sandbox, "link", "set", ifname, "up"]);
        n
    }

    fn link_exists(&self, name: &str) -> bool {
        sh(&["ip", "-n", &self.sandbox, "link", "show", name])
            .status
            .success()
    }

    /// Pings `ip` from the peer namespace until it answers or `within` passes.
    fn ping_from_peer(&self, ip: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let o = sh(&[
                "nsenter",
                &format!("--net=/run/netns/{}", self.peer),
                "busybox",
                "ping",
                "-c1",
                "-W1",
                ip,
            ]);
            if o.status.success() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "delete", &self.sandbox]);
        let _ = sh(&["ip", "netns", "delete", &self.peer]);
    }
}

/// Stops the guest even when the test panics, then checks that nothing of it is left.
struct GuestGuard<'a> {
    rt: &'a dyn GuestRuntime,
    node_id: String,
}

impl Drop for GuestGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.rt.stop(&self.node_id) {
            eprintln!("cleanup: stop {}: {e}", self.node_id);
        }
    }
}

fn runtime(state: &std::path::Path) -> QemuRuntime {
    let kernel =
        std::sync::Arc::new(substrate_agent::host::linux::LinuxKernel::new().expect("kernel"));
    QemuRuntime::new(
        QemuRuntimeOptions {
            state_dir: state.to_path_buf(),
            images_dir: images_dir(),
            ..QemuRuntimeOptions::default()
        },
        kernel,
    )
    .expect("runtime")
}

fn config(
    node_id: &str,
    net: &Net,
    nic: NicModel,
    ifname: &str,
    cidr: &str,
    gw: &str,
) -> GuestConfig {
    GuestConfig {
        node_id: node_id.into(),
        name: format!("Guest {node_id}"),
        netns: net.sandbox.clone(),
        vcpus: 1,
        memory_mb: 128,
        image: "default".into(),
        nic,
        accel: Accel::Auto,
        arch: Default::default(),
        nics: vec![GuestNic {
            ifname: ifname.into(),
            mac: Mac::derived(node_id),
            addresses: vec![cidr.parse().unwrap()],
            mtu: 1500,
        }],
        routes: vec![GuestRoute {
            destination: None,
            via: gw.parse().unwrap(),
        }],
    }
}

fn qemu_pids_under(state: &std::path::Path) -> Vec<u32> {
    let needle = state.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn exec(rt: &dyn GuestRuntime, id: &str, argv: &[&str]) -> substrate_agent::guest::ExecOutput {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    rt.exec(id, &argv, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("exec {argv:?} in {id}: {e}"))
}

#[test]
fn guest_virtio_boots_pings_both_ways_and_execs() {
    if !preconditions("guest_virtio_boots_pings_both_ways_and_execs", true) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let id = format!("gv{}", std::process::id());
    let net = Net::new("v", "eth0", "10.201.0.1/24");
    let rt = runtime(state.path());
    println!(
        "KVM: usable={} ({})",
        rt.support().kvm.usable,
        rt.support().kvm.reason
    );
    {
        let _guard = GuestGuard {
            rt: &rt,
            node_id: id.clone(),
        };
        let mut cfg = config(
            &id,
            &net,
            NicModel::Virtio,
            "eth0",
            "10.201.0.2/24",
            "10.201.0.1",
        );
        cfg.nics[0].addresses.push("fd01::2/64".parse().unwrap());
        ok(&[
            "ip",
            "-n",
            &net.peer,
            "addr",
            "add",
            "fd01::1/64",
            "dev",
            "p0",
            "nodad",
        ]);
        let st = rt.ensure(&cfg).expect("ensure");
        assert_eq!(st.action, EnsureAction::Started);
        assert!(net.link_exists("t-eth0"), "TAP created in the sandbox");
        rt.wait_ready(&id, BOOT).expect("guest ready");
        assert!(
            net.ping_from_peer("10.201.0.2", Duration::from_secs(30)),
            "peer -> guest ping"
        );
        let p = exec(&rt, &id, &["ping", "-c1", "-W5", "10.201.0.1"]);
        assert_eq!(p.exit_code, 0, "guest -> peer ping: {}", text(&p.stdout));
        assert!(
            net.ping_from_peer("fd01::2", Duration::from_secs(30)),
            "IPv6 peer -> guest ping"
        );
        let h = exec(&rt, &id, &["hostname"]);
        assert_eq!(text(&h.stdout), format!("guest-{id}"));
        let addr = exec(&rt, &id, &["ip", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            text(&addr.stdout).contains("10.201.0.2/24"),
            "{}",
            text(&addr.stdout)
        );
        let route = exec(&rt, &id, &["ip", "route"]);
        assert!(
            text(&route.stdout).contains("default via 10.201.0.1"),
            "{}",
            text(&route.stdout)
        );
        // Exit code, binary stdout and stderr come back unchanged.
        let b = exec(
            &rt,
            &id,
            &["sh", "-c", "printf 'a\\000b'; echo oops >&2; exit 3"],
        );
        assert_eq!(
            (b.exit_code, b.stdout.as_slice(), b.stderr.as_slice()),
            (3, &b"a\0b"[..], &b"oops\n"[..])
        );
        let nf = exec(&rt, &id, &["no-such-command"]);
        assert_eq!(nf.exit_code, 127);
        // ensure() again adopts the same process.
        let again = rt.ensure(&cfg).expect("ensure again");
        assert_eq!((again.action, again.pid), (EnsureAction::Adopted, st.pid));
        let console = String::from_utf8_lossy(&rt.console(&id, 64 * 1024).unwrap()).into_owned();
        assert!(console.contains("VNET-READY"), "console log: {console}");
        // The console socket gives a shell on the guest's serial console.
        let sock = rt.console_socket(&id).unwrap();
        let mut con = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        con.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        std::io::Write::write_all(&mut con, b"\necho con''sole-attached\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline
            && !String::from_utf8_lossy(&seen).contains("console-attached")
        {
            let mut buf = [0u8; 1024];
            if let Ok(n) = std::io::Read::read(&mut con, &mut buf) {
                seen.extend_from_slice(&buf[..n]);
            }
        }
        assert!(
            String::from_utf8_lossy(&seen).contains("console-attached"),
            "console answered: {}",
            String::from_utf8_lossy(&seen)
        );
        drop(con);
        let obs = rt.observed().unwrap();
        assert_eq!(obs.len(), 1);
        assert!(obs[0].running && obs[0].taps == ["t-eth0"]);
    }
    // After stop: no QEMU, no TAP, no run directory.
    assert!(
        qemu_pids_under(state.path()).is_empty(),
        "QEMU left running"
    );
    assert!(!net.link_exists("t-eth0"), "TAP left behind");
    assert!(
        !state.path().join(&id).exists(),
        "run directory left behind"
    );
    assert!(rt.observed().unwrap().is_empty());
}

#[test]
fn guest_e1000_pings() {
    if !preconditions("guest_e1000_pings", true) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let id = format!("ge{}", std::process::id());
    let net = Net::new("e", "lan0", "10.202.0.1/24");
    let rt = runtime(state.path());
    {
        let _guard = GuestGuard {
            rt: &rt,
            node_id: id.clone(),
        };
        let cfg = config(
            &id,
            &net,
            NicModel::E1000,
            "lan0",
            "10.202.0.2/24",
            "10.202.0.1",
        );
        rt.ensure(&cfg).expect("ensure");
        rt.wait_ready(&id, BOOT).expect("guest ready");
        assert!(
            net.ping_from_peer("10.202.0.2", Duration::from_secs(30)),
            "peer -> guest ping"
        );
        let drv = exec(&rt, &id, &["readlink", "/sys/class/net/lan0/device/driver"]);
        assert!(
            text(&drv.stdout).ends_with("/e1000"),
            "driver: {}",
            text(&drv.stdout)
        );
        let p = exec(&rt, &id, &["ping", "-c1", "-W5", "10.202.0.1"]);
        assert_eq!(p.exit_code, 0);
    }
    assert!(
        qemu_pids_under(state.path()).is_empty(),
        "QEMU left running"
    );
    assert!(!net.link_exists("t-lan0"), "TAP left behind");
}

#[test]
fn guest_survives_runtime_restart_and_is_restarted_after_a_crash() {
    if !preconditions(
        "guest_survives_runtime_restart_and_is_restarted_after_a_crash",
        true,
    ) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let id = format!("ga{}", std::process::id());
    let net = Net::new("a", "eth0", "10.203.0.1/24");
    let cfg = config(
        &id,
        &net,
        NicModel::Virtio,
        "eth0",
        "10.203.0.2/24",
        "10.203.0.1",
    );
    let first = runtime(state.path());
    let guard_rt;
    {
        let st = first.ensure(&cfg).expect("ensure");
        first.wait_ready(&id, BOOT).expect("guest ready");
        let boot = text(&exec(&first, &id, &["cat", "/proc/sys/kernel/random/boot_id"]).stdout);
        // The agent restarts: the runtime object goes away, a new one comes.
        drop(first);
        guard_rt = runtime(state.path());
        let _guard = GuestGuard {
            rt: &guard_rt,
            node_id: id.clone(),
        };
        let st2 = guard_rt.ensure(&cfg).expect("ensure after restart");
        assert_eq!((st2.action, st2.pid), (EnsureAction::Adopted, st.pid));
        let boot2 = text(&exec(&guard_rt, &id, &["cat", "/proc/sys/kernel/random/boot_id"]).stdout);
        assert_eq!(boot, boot2, "guest rebooted on adoption");
        // A crash: the next ensure restarts the guest and counts it.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(st.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while guard_rt.observed().unwrap()[0].running && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !guard_rt.observed().unwrap()[0].running,
            "observed shows the dead guest"
        );
        let st3 = guard_rt.ensure(&cfg).expect("ensure after crash");
        assert_eq!((st3.action, st3.restarts), (EnsureAction::Restarted, 1));
        assert_ne!(st3.pid, st.pid);
        guard_rt.wait_ready(&id, BOOT).expect("ready after restart");
        let boot3 = text(&exec(&guard_rt, &id, &["cat", "/proc/sys/kernel/random/boot_id"]).stdout);
        assert_ne!(boot, boot3);
        assert!(
            net.ping_from_peer("10.203.0.2", Duration::from_secs(30)),
            "ping after restart"
        );
        // A changed configuration replaces the guest.
        let mut bigger = cfg.clone();
        bigger.memory_mb = 160;
        let st4 = guard_rt.ensure(&bigger).expect("ensure with more memory");
        assert_eq!(st4.action, EnsureAction::Replaced);
        guard_rt.wait_ready(&id, BOOT).expect("ready after replace");
    }
    assert!(
        qemu_pids_under(state.path()).is_empty(),
        "QEMU left running"
    );
    assert!(!net.link_exists("t-eth0"), "TAP left behind");
    assert!(
        !state.path().join(&id).exists(),
        "run directory left behind"
    );
}

#[test]
fn guest_bad_inputs_fail_clearly_and_leave_nothing() {
    if !preconditions("guest_bad_inputs_fail_clearly_and_leave_nothing", true) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let id = format!("gb{}", std::process::id());
    let net = Net::new("b", "eth0", "10.204.0.1/24");
    let rt = runtime(state.path());
    // The agent did not realize interface eth1.
    let mut cfg = config(
        &id,
        &net,
        NicModel::Virtio,
        "eth0",
        "10.204.0.2/24",
        "10.204.0.1",
    );
    cfg.nics.push(GuestNic {
        ifname: "eth1".into(),
        mac: Mac::derived("other"),
        addresses: vec![],
        mtu: 1500,
    });
    match rt.ensure(&cfg) {
        Err(GuestError::MissingInterface { ifname, .. }) => assert_eq!(ifname, "eth1"),
        other => panic!("expected MissingInterface, got {other:?}"),
    }
    assert!(
        !net.link_exists("t-eth0"),
        "TAP of the first NIC rolled back"
    );
    assert!(!state.path().join(&id).exists(), "no run directory");
    // No sandbox.
    let mut nosb = cfg.clone();
    nosb.netns = format!("vgs-none-{}", std::process::id());
    assert!(matches!(
        rt.ensure(&nosb),
        Err(GuestError::NoSandbox { .. })
    ));
    // Unknown image.
    let mut noimg = config(
        &id,
        &net,
        NicModel::Virtio,
        "eth0",
        "10.204.0.2/24",
        "10.204.0.1",
    );
    noimg.image = "nonexistent".into();
    let e = rt.ensure(&noimg).unwrap_err().to_string();
    assert!(
        e.contains("nonexistent") && e.contains("build-image.sh"),
        "{e}"
    );
    // KVM demanded on a host where the probe says no.
    if !rt.support().kvm.usable {
        let mut kvm = config(
            &id,
            &net,
            NicModel::Virtio,
            "eth0",
            "10.204.0.2/24",
            "10.204.0.1",
        );
        kvm.accel = Accel::Kvm;
        let e = rt.ensure(&kvm).unwrap_err();
        assert!(matches!(e, GuestError::KvmUnusable { .. }), "{e}");
        assert!(!net.link_exists("t-eth0"));
    }
    assert!(qemu_pids_under(state.path()).is_empty());
    assert!(rt.observed().unwrap().is_empty());
    // Stopping an unknown guest is fine.
    rt.stop(&id).unwrap();
}

#[test]
fn guest_probe_reports_kvm_consistently_with_the_cpu() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = substrate_agent::guest::accel::cpuinfo_has_flag(&cpuinfo, "vmx")
        || substrate_agent::guest::accel::cpuinfo_has_flag(&cpuinfo, "svm");
    let s = substrate_agent::guest::probe_host("qemu-system-x86_64");
    println!("probe: {s:?}");
    assert!(!s.kvm.reason.is_empty());
    if !hw {
        assert!(
            !s.kvm.usable,
            "no vmx/svm yet KVM judged usable: {}",
            s.kvm.reason
        );
        assert!(s.kvm.reason.contains("no vmx or svm"), "{}", s.kvm.reason);
    }
}

#[test]
fn guest_test_boot_reaches_init_under_tcg() {
    if !preconditions("guest_test_boot_reaches_init_under_tcg", true) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let rt = runtime(state.path());
    let d = rt
        .test_boot("default", substrate_agent::guest::AccelUsed::Tcg, BOOT)
        .expect("test boot");
    println!("TCG test boot reached init in {d:?}");
    assert!(d < BOOT);
}

/// The link interface is a TAP that a userspace program serves (as the agent's 802.1Q datapath
/// does): frames it writes reach the guest through the redirects, and the guest's answers come
/// back to its reader.
#[test]
fn guest_behind_a_userspace_tap_answers_arp() {
    if !preconditions("guest_behind_a_userspace_tap_answers_arp", true) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let id = format!("gt{}", std::process::id());
    let pid = std::process::id();
    // A sandbox without veth: the tenant interface is a TAP held by this test.
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = sh(&["ip", "netns", "delete", &self.0]);
        }
    }
    let ns = Ns(format!("vgs-t-{pid}"));
    ok(&["ip", "netns", "add", &ns.0]);
    let path = format!("/run/netns/{}", ns.0);
    let dev = std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(
            std::os::fd::AsFd::as_fd(&f),
            nix::sched::CloneFlags::CLONE_NEWNET,
        )
        .unwrap();
        substrate_agent::host::tap::attach("eth0").unwrap()
    })
    .join()
    .unwrap();
    let fl = nix::fcntl::fcntl(&dev, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    let fl = nix::fcntl::OFlag::from_bits_retain(fl) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&dev, nix::fcntl::FcntlArg::F_SETFL(fl)).unwrap();
    ok(&["ip", "-n", &ns.0, "link", "set", "eth0", "up"]);

    let rt = runtime(state.path());
    let cfg = GuestConfig {
        node_id: id.clone(),
        name: "tapguest".into(),
        netns: ns.0.clone(),
        vcpus: 1,
        memory_mb: 128,
        image: "default".into(),
        nic: NicModel::Virtio,
        accel: Accel::Auto,
        arch: Default::default(),
        nics: vec![GuestNic {
            ifname: "eth0".into(),
            mac: Mac::derived(&id),
            addresses: vec!["10.205.0.2/24".parse().unwrap()],
            mtu: 1500,
        }],
        routes: vec![],
    };
    let guest_mac = cfg.nics[0].mac.0;
    let me = [0x02, 0, 0, 0, 0, 0x01];
    {
        let _guard = GuestGuard {
            rt: &rt,
            node_id: id.clone(),
        };
        rt.ensure(&cfg).expect("ensure");
        rt.wait_ready(&id, BOOT).expect("guest ready");
        // ARP request "who has 10.205.0.2, tell 10.205.0.1", by hand (RFC 826 over Ethernet).
        let mut frame = Vec::with_capacity(42);
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&me);
        frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        frame.extend_from_slice(&me);
        frame.extend_from_slice(&[10, 205, 0, 1]);
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&[10, 205, 0, 2]);
        // An ARP reply (op 2) from the guest's MAC to ours.
        let is_reply = |f: &[u8]| {
            f.len() >= 42
                && f[0..6] == me
                && f[6..12] == guest_mac
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == [0, 2]
                && f[28..32] == [10, 205, 0, 2]
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut answered = false;
        let mut buf = [0u8; 2048];
        'outer: while Instant::now() < deadline {
            std::io::Write::write(&mut &dev, &frame).expect("write to the TAP");
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                match std::io::Read::read(&mut &dev, &mut buf) {
                    Ok(n) if is_reply(&buf[..n]) => {
                        answered = true;
                        break 'outer;
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        assert!(
            answered,
            "the guest never answered ARP through the userspace TAP"
        );
    }
    assert!(
        qemu_pids_under(state.path()).is_empty(),
        "QEMU left running"
    );
    assert!(
        !state.path().join(&id).exists(),
        "run directory left behind"
    );
    drop(dev);
}

/// Removes a namespace made with `ip netns add` however the test ends.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

/// Ten Debian disk-image guests on one host (no NICs, small memory; they need not finish
/// booting): ten QEMU processes, each on a qcow2 overlay whose backing file is the one base, and
/// the overlays together occupy far less disk than one more copy of the base. Stopping them
/// removes every overlay.
#[test]
fn ten_disk_guests_share_one_base() {
    let test = "ten_disk_guests_share_one_base";
    if !preconditions(test, true) {
        return;
    }
    let base = images_dir().join("debian/disk.qcow2");
    if !base.is_file() {
        assert!(
            std::env::var("VNET_REQUIRE_ROOT").as_deref() != Ok("1"),
            "{test}: {} missing (deploy/guest/build-debian.sh)",
            base.display()
        );
        println!("SKIP {test}: {} missing", base.display());
        return;
    }
    let base = std::fs::canonicalize(base).unwrap();
    let ns = format!("vnet-tg{}", std::process::id());
    assert!(sh(&["ip", "netns", "add", &ns]).status.success());
    let _ns = NetnsGuard(ns.clone());
    let state = tempfile::tempdir().unwrap();
    let rt = runtime(state.path());
    let mut guards = Vec::new();
    for i in 0..10 {
        let id = format!("tg{i}");
        let cfg = GuestConfig {
            node_id: id.clone(),
            name: id.clone(),
            netns: ns.clone(),
            vcpus: 1,
            memory_mb: 128,
            image: "debian".into(),
            nic: NicModel::Virtio,
            accel: Accel::Tcg,
            arch: Default::default(),
            nics: vec![],
            routes: vec![],
        };
        rt.ensure(&cfg).expect("ensure");
        guards.push(GuestGuard {
            rt: &rt,
            node_id: id,
        });
    }
    assert_eq!(
        qemu_pids_under(state.path()).len(),
        10,
        "ten QEMU processes"
    );
    let mut overlays = Vec::new();
    for i in 0..10 {
        let run = state.path().join(format!("tg{i}"));
        let overlay: Vec<PathBuf> = std::fs::read_dir(&run)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "qcow2"))
            .collect();
        assert_eq!(overlay.len(), 1, "{overlay:?}");
        let info = sh(&[
            "qemu-img",
            "info",
            "-U",
            "--output=json",
            overlay[0].to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["backing-filename"], base.to_str().unwrap(), "{v}");
        overlays.push(overlay[0].clone());
    }
    use std::os::unix::fs::MetadataExt;
    let used = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0);
    let base_bytes = used(&base);
    let overlay_bytes: u64 = overlays.iter().map(|o| used(o)).sum();
    println!(
        "{test}: base {} MiB on disk; ten overlays {} KiB together; ten copies would be {} MiB",
        base_bytes >> 20,
        overlay_bytes >> 10,
        (10 * base_bytes) >> 20
    );
    assert!(base_bytes > 64 << 20, "{base_bytes}");
    assert!(
        overlay_bytes < base_bytes / 2,
        "{overlay_bytes} vs {base_bytes}"
    );
    drop(guards);
    assert!(qemu_pids_under(state.path()).is_empty(), "QEMU left");
    let left: Vec<&PathBuf> = overlays.iter().filter(|o| o.exists()).collect();
    assert!(left.is_empty(), "overlays left: {left:?}");
}
