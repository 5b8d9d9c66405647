//! End-to-end tests of `vnctl exec` on a private testbed, as root (real controller and agents).
//!
//! `exec_is_confined_to_its_node`: provider red's command in its node cannot enter another
//! namespace (`nsenter`, `ip netns`), write under `/`, see or signal host processes, load BPF or
//! mount; it can configure and probe its own node: `ip addr add`, `ip route add`, `busybox
//! ping`, `tcpdump -i eth0`, `iperf3` between two of its nodes.
//!
//! `exec_streams_both_ways`: `echo hi | vnctl exec VN NODE -- cat` prints `hi`; 1 GiB of output
//! (`head -c 1G /dev/zero`) arrives whole while the node's agent grows by at most 64 MiB and no
//! VN of the host degrades (followed with `vnctl watch`); `vnctl exec -it` runs a shell under a
//! pseudo-terminal (through `script`); a command passing the controller's output limit ends
//! with RESOURCE_EXHAUSTED.
//!
//! Both run like the other e2e tests: TLS to the controller, host certificates, and the
//! testbed's admin credential acting for each provider (its config file).
//!
//! Both need root, the testbed's tools, `tcpdump`, `iperf3`, `busybox`, `nsenter`, `script` and
//! `python3` (the BPF probe); without them they print `SKIP`, unless `VNET_REQUIRE_ROOT=1`.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Bed, VNCTL, ok, processes, testbed_lock, text};

/// A private testbed for test `n` of this file; None (after SKIP) when preconditions miss.
fn bed(n: u32) -> Option<Bed> {
    let tools = [
        "tcpdump", "iperf3", "busybox", "nsenter", "script", "python3",
    ];
    common::private_bed(n, &tools, "ex", 251)
}

/// Red: a and b on h1, joined; blue: x on h1, y on h2 (another provider on the same host).
const RED: &str = "name: red-x\nprovider: red\nallowRevisitation: true\nnodes:\n  - {name: a, host: h1}\n  - {name: b, host: h1}\nlinks:\n  - {endpoints: [a, b], bandwidth: 100, addresses: [10.61.0.1/24, 10.61.0.2/24]}\n";
const BLUE: &str = "name: blue-x\nprovider: blue\nnodes:\n  - {name: x, host: h1}\n  - {name: y, host: h2}\nlinks:\n  - {endpoints: [x, y], bandwidth: 100, addresses: [10.62.0.1/24, 10.62.0.2/24]}\n";

impl Bed {
    /// `vnctl exec` as red in red-x, with a timeout of 60 s.
    fn red(&self, node: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", "red-x", node, "--timeout", "60s", "--"];
        args.extend_from_slice(argv);
        self.vnctl(Some("red"), &args)
    }

    /// [`Bed::red`] through `sh -c`.
    fn red_sh(&self, node: &str, script: &str) -> Output {
        self.red(node, &["sh", "-c", script])
    }

    fn two_vns(&self) {
        self.apply_wait("red", &self.spec("red", RED), "90s");
        self.apply_wait("blue", &self.spec("blue", BLUE), "90s");
    }

    /// Pids of this testbed's processes whose command line contains `what`.
    fn pids(&self, what: &str) -> Vec<u32> {
        processes(&[self.dir.to_str().unwrap()])
            .into_iter()
            .filter(|p| p.contains(what))
            .filter_map(|p| p.split(':').next()?.parse().ok())
            .collect()
    }
}

fn fails(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what} worked from inside the node: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn works(out: Output, what: &str) -> String {
    ok(out, what)
}

/// BPF_MAP_CREATE of a one-entry array map through the raw system call; prints the errno.
const BPF_PROBE: &str = "import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\nattr = struct.pack('IIII', 2, 4, 4, 1) + bytes(112)\nbuf = ctypes.create_string_buffer(attr, len(attr))\nfd = libc.syscall(321, 0, buf, len(attr))\nprint('bpf', fd, ctypes.get_errno())\nraise SystemExit(0 if fd >= 0 else 1)\n";

#[test]
fn exec_is_confined_to_its_node() {
    let _one = testbed_lock();
    let Some(bed) = bed(1) else {
        return;
    };
    let before = bed.snapshot();
    let guard = bed.up();
    bed.two_vns();
    let hosts_and_nodes = bed.namespaces();
    assert!(hosts_and_nodes.len() >= 7, "{hosts_and_nodes:?}");

    // Into another namespace: every namespace of the testbed (blue's, red's other node, the
    // hosts'), by nsenter and ip netns; and through pid 1's namespace files.
    for ns in &hosts_and_nodes {
        let out = bed.red("a", &["nsenter", &format!("--net=/run/netns/{ns}"), "true"]);
        fails(&out, &format!("nsenter into {ns}"));
        let out = bed.red("a", &["ip", "netns", "exec", ns, "true"]);
        fails(&out, &format!("ip netns exec {ns}"));
    }
    fails(
        &bed.red("a", &["nsenter", "-t", "1", "-n", "-m", "true"]),
        "nsenter -t 1",
    );
    fails(
        &bed.red("a", &["ip", "netns", "add", "red-escape"]),
        "ip netns add",
    );
    let listed = works(bed.red("a", &["ip", "netns", "list"]), "ip netns list");
    assert!(listed.trim().is_empty(), "namespaces visible: {listed}");
    assert!(
        !bed.namespaces().contains("red-escape")
            && !std::path::Path::new("/run/netns/red-escape").exists()
    );

    // Writing under / (and the host's /tmp and /run are not the node's).
    let probe = format!("/vnet-exec-probe-{}", std::process::id());
    fails(
        &bed.red_sh("a", &format!("echo x > {probe}")),
        "writing under /",
    );
    fails(
        &bed.red_sh("a", "echo x > /etc/vnet-exec-probe"),
        "writing /etc",
    );
    fails(
        &bed.red_sh("a", "echo x > /var/tmp/vnet-exec-probe"),
        "writing /var/tmp",
    );
    assert!(!std::path::Path::new(&probe).exists());
    assert!(!std::path::Path::new("/etc/vnet-exec-probe").exists());
    works(
        bed.red_sh("a", "echo x > /tmp/mine && cat /tmp/mine"),
        "a private /tmp",
    );
    let state = format!("{}/agents", bed.dir.display());
    fails(&bed.red("a", &["ls", &state]), "reading the agents' state");
    let host_tmp = works(bed.red_sh("a", "ls -A /tmp /run"), "ls /tmp /run");
    assert!(
        !host_tmp.contains("netns") && !host_tmp.contains("vnet"),
        "{host_tmp}"
    );

    // Host processes: invisible and unsignalable.
    let controller = bed.pids("vn-controller");
    let agents = bed.pids("substrate-agent");
    assert!(!controller.is_empty() && !agents.is_empty());
    let seen = works(bed.red_sh("a", "ls /proc | grep -c '^[0-9]'"), "ls /proc");
    let seen: u32 = seen.trim().parse().unwrap();
    assert!(seen <= 4, "{seen} processes visible in the node");
    for pid in controller.iter().chain(&agents) {
        fails(
            &bed.red("a", &["kill", "-0", &pid.to_string()]),
            "kill -0 of a host process",
        );
        fails(
            &bed.red("a", &["kill", "-TERM", &pid.to_string()]),
            "SIGTERM to a host process",
        );
        fails(
            &bed.red_sh("a", &format!("cat /proc/{pid}/cmdline")),
            "reading a host process",
        );
    }
    let status = ok(bed.testbed(&["status"]), "testbed status");
    assert_eq!(status.matches("connected").count(), 3, "{status}");

    // BPF: the probe loads a map as root on the host (so it can tell), not in the node.
    let host = Command::new("python3")
        .args(["-c", BPF_PROBE])
        .output()
        .unwrap();
    assert!(
        host.status.success(),
        "the BPF probe fails on the host: {host:?}"
    );
    let out = bed.red("a", &["python3", "-c", BPF_PROBE]);
    fails(&out, "bpf(BPF_MAP_CREATE)");
    assert!(text(&out.stdout).contains("bpf -1 1"), "{out:?}"); // EPERM

    // Mounting.
    fails(
        &bed.red("a", &["mount", "-t", "tmpfs", "none", "/tmp"]),
        "mount",
    );
    fails(&bed.red("a", &["umount", "/proc"]), "umount");

    // Its own node: configure and probe.
    works(
        bed.red("a", &["ip", "addr", "add", "10.61.9.1/32", "dev", "lo"]),
        "ip addr add",
    );
    works(
        bed.red(
            "a",
            &["ip", "route", "add", "10.63.0.0/24", "via", "10.61.0.2"],
        ),
        "ip route add",
    );
    let routes = works(bed.red("a", &["ip", "route"]), "ip route");
    assert!(routes.contains("10.63.0.0/24 via 10.61.0.2"), "{routes}");
    works(
        bed.red("a", &["busybox", "ping", "-c", "2", "-W", "2", "10.61.0.2"]),
        "busybox ping",
    );
    let dump = works(
        bed.red_sh(
            "a",
            "busybox ping -c 20 -i 0.2 10.61.0.2 >/dev/null & timeout 10 tcpdump -i eth0 -n -c 2 icmp 2>&1",
        ),
        "tcpdump -i eth0",
    );
    assert!(dump.contains("ICMP echo request"), "{dump}");
    iperf(&bed);

    bed.vnctl(Some("red"), &["delete", "vn", "red-x", "--wait"]);
    bed.vnctl(Some("blue"), &["delete", "vn", "blue-x", "--wait"]);
    drop(guard);
    bed.assert_gone(&before);
}

/// `vnctl exec red-x NODE --timeout TIMEOUT --` as red, for the caller to add the command and spawn.
fn red_x_exec(bed: &Bed, node: &str, timeout: &str) -> Command {
    let mut c = bed.vnctl_command("red");
    c.args(["exec", "red-x", node, "--timeout", timeout, "--"]);
    c
}

/// iperf3 from a to b, both through vnctl exec.
fn iperf(bed: &Bed) {
    let server = red_x_exec(bed, "b", "60s")
        .args(["iperf3", "-s", "-1", "-p", "5301"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let out = bed.red("a", &["iperf3", "-c", "10.61.0.2", "-p", "5301", "-t", "1"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let client = works(client, "iperf3 client");
    assert!(client.contains("receiver"), "{client}");
    let server = server.wait_with_output().unwrap();
    assert!(server.status.success(), "iperf3 server: {server:?}");
}

/// Resident memory of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn exec_streams_both_ways() {
    let _one = testbed_lock();
    let Some(bed) = bed(2) else {
        return;
    };
    let before = bed.snapshot();
    let guard = bed.up();
    bed.two_vns();

    // stdin.
    let out = common::vnctl_with_input(
        &bed.ctl,
        Some("red"),
        &["exec", "red-x", "a", "--", "cat"],
        Some(b"hi\n"),
    );
    assert_eq!(works(out, "echo hi | vnctl exec -- cat"), "hi\n");
    let out = bed.red_sh("a", "echo out; echo err >&2; exit 3");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("out\n".into(), "err\n".into())
    );

    big_output(&bed);
    terminal(&bed);
    ended_early(&bed);

    bed.vnctl(Some("red"), &["delete", "vn", "red-x", "--wait"]);
    bed.vnctl(Some("blue"), &["delete", "vn", "blue-x", "--wait"]);
    drop(guard);
    bed.assert_gone(&before);
}

/// 1 GiB through exec: all of it arrives, the agent of h1 stays within 64 MiB of its resident
/// memory before, and neither VN on h1 leaves READY (watched throughout).
fn big_output(bed: &Bed) {
    let agent = bed
        .pids("substrate-agent")
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| text(&c).replace('\0', " ").contains("--host-id h1 "))
                .unwrap_or(false)
        })
        .expect("h1's agent");
    let base = rss(agent);
    let watches: Vec<_> = ["red", "blue"]
        .into_iter()
        .map(|p| {
            bed.vnctl_command(p)
                .arg("watch")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(agent), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let mut child = red_x_exec(bed, "a", "600s")
        .args(["head", "-c", "1G", "/dev/zero"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut nonzero = false;
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        nonzero |= buf[..n].iter().any(|b| *b != 0);
        total += n as u64;
    }
    let st = child.wait_with_output().unwrap();
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(st.status.success(), "{st:?}");
    assert_eq!(total, 1 << 30);
    assert!(!nonzero);
    let grew = peak.load(Ordering::Relaxed).saturating_sub(base);
    println!(
        "1 GiB through exec in {:.1} s ({:.0} MiB/s); h1's agent: {} MiB before, +{} MiB at most",
        took.as_secs_f64(),
        1024.0 / took.as_secs_f64(),
        base >> 20,
        grew >> 20
    );
    assert!(grew <= 64 << 20, "the agent grew by {} MiB", grew >> 20);
    // Watchers: a snapshot each, then nothing (no DEGRADED, no other event).
    for mut w in watches {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(w.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let mut s = String::new();
        w.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        let _ = w.wait();
        assert!(s.contains("SNAPSHOT") && s.contains("READY"), "{s}");
        assert!(!s.contains("DEGRADED") && !s.contains("FAILED"), "{s}");
        // The header and the snapshot.
        assert_eq!(s.lines().count(), 2, "events during the exec: {s}");
    }
    let status = ok(bed.testbed(&["status"]), "testbed status");
    assert_eq!(status.matches("connected").count(), 3, "{status}");
}

/// `vnctl exec -it` under a pseudo-terminal made by `script`: the remote shell has a terminal
/// and answers typed commands; its exit code comes back.
fn terminal(bed: &Bed) {
    let cmd = format!(
        "VNET_CONFIG={} VNET_CONTROLLER={} {VNCTL} --provider red exec -it red-x a -- sh",
        bed.config().display(),
        bed.ctl
    );
    let mut child = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env_remove("VNET_PROVIDER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        stdin
            .write_all(b"tty; test -t 0 && echo term-$((40+2)); exit 3\n")
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }
    let out = child.wait_with_output().unwrap();
    let s = text(&out.stdout);
    assert!(s.contains("/dev/pts/"), "no terminal: {s:?} {out:?}");
    assert!(s.contains("term-42"), "{s:?}");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// Whether a process with exactly this command line runs (the host sees the node's processes).
fn running(cmdline: &str) -> bool {
    processes(&[cmdline]).iter().any(|p| {
        p.split_once(": ")
            .is_some_and(|(_, c)| c.trim_end() == cmdline)
    })
}

fn until(what: &str, within: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A timeout ends the command and everything it started (DEADLINE_EXCEEDED); so does the
/// caller going away.
fn ended_early(bed: &Bed) {
    let t = Instant::now();
    let out = bed.vnctl(
        Some("red"),
        &[
            "exec",
            "red-x",
            "a",
            "--timeout",
            "2s",
            "--",
            "sh",
            "-c",
            "sleep 303 & sleep 304",
        ],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("timed out after 2000 ms"),
        "{out:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    until(
        "the timed-out command's processes end",
        Duration::from_secs(5),
        || !running("sleep 303") && !running("sleep 304"),
    );
    let mut vnctl = red_x_exec(bed, "a", "600s")
        .args(["sleep", "305"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until("the command starts", Duration::from_secs(20), || {
        running("sleep 305")
    });
    vnctl.kill().unwrap();
    vnctl.wait().unwrap();
    until(
        "the abandoned command ends",
        Duration::from_secs(10),
        || !running("sleep 305"),
    );
}
