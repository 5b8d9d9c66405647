//! Guest benchmark harness (an example, not a test: nothing timed is asserted). Run through
//! `deploy/bench/guest-boot.sh`, which builds the image and prints these tables.
//!
//! 1. Boot: for virtio (microvm) and e1000 (q35) guests, one at a time, the time from
//!    `ensure()` to QEMU running, to the first ping reply from a peer namespace, and to the
//!    command channel answering.
//! 2. Density: `VNET_BENCH_GUESTS` guests (default 16) started together; time until all answer
//!    a ping; host memory per guest (QEMU's RSS and PSS from `/proc/<pid>/smaps_rollup`, and the
//!    drop of `MemAvailable`), and how many would fit in this host's available memory.
//!
//! Knobs: `VNET_BENCH_BOOTS` (boots per NIC model, default 5), `VNET_BENCH_GUESTS`,
//! `VNET_BENCH_MEMORY_MB` (guest memory, default 128), `VNET_GUEST_IMAGES`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use substrate_agent::guest::{
    Accel, GuestConfig, GuestNic, GuestRoute, GuestRuntime, NicModel, QemuRuntime,
    QemuRuntimeOptions,
};
use substrate_agent::mac::Mac;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Sandbox + peer namespaces for guest `i`, removed on drop.
struct Net {
    sandbox: String,
    peer: String,
    guest_ip: String,
}

impl Net {
    fn new(i: usize) -> Net {
        let pid = std::process::id();
        let n = Net {
            sandbox: format!("vbs-{i}-{pid}"),
            peer: format!("vbp-{i}-{pid}"),
            guest_ip: format!("10.{}.{}.2", 210 + i / 250, i % 250),
        };
        let peer_cidr = format!("10.{}.{}.1/24", 210 + i / 250, i % 250);
        run(&["ip", "netns", "add", &n.sandbox]);
        run(&["ip", "netns", "add", &n.peer]);
        run(&[
            "ip", "-n", &n.peer, "link", "add", "p0", "type", "veth", "peer", "name", "eth0",
            "netns", &n.sandbox,
        ]);
        run(&["ip", "-n", &n.peer, "addr", "add", &peer_cidr, "dev", "p0"]);
        run(&["ip", "-n", &n.peer, "link", "set", "p0", "up"]);
        run(&["ip", "-n", &n.sandbox, "link", "set", "eth0", "up"]);
        // ARP probes every 100 ms instead of every second: otherwise the first reply waits for
        // the next probe after the guest is up (measured: replies bunched at 3.2 s, the fourth
        // probe), and the table would show the ARP timer rather than the boot.
        run(&[
            "nsenter",
            &format!("--net=/run/netns/{}", n.peer),
            "sysctl",
            "-qw",
            "net.ipv4.neigh.p0.retrans_time_ms=100",
        ]);
        n
    }

    fn config(&self, i: usize, nic: NicModel, memory_mb: u64) -> GuestConfig {
        let id = format!("b{i}x{}", std::process::id() % 100_000);
        let gw = match self.guest_ip.rsplit_once('.') {
            Some((net, _)) => format!("{net}.1"),
            None => unreachable!("IPv4 address"),
        };
        GuestConfig {
            node_id: id.clone(),
            name: id.clone(),
            netns: self.sandbox.clone(),
            vcpus: 1,
            memory_mb,
            image: "default".into(),
            nic,
            accel: Accel::Auto,
            arch: Default::default(),
            nics: vec![GuestNic {
                ifname: "eth0".into(),
                mac: Mac::derived(&id),
                addresses: vec![format!("{}/24", self.guest_ip).parse().unwrap()],
                mtu: 1500,
            }],
            routes: vec![GuestRoute {
                destination: None,
                via: gw.parse().unwrap(),
            }],
        }
    }

    /// Time until the first echo reply, pinging every 100 ms from the peer namespace.
    fn first_reply(&self, start: Instant, limit: Duration) -> Option<Duration> {
        let mut child = Command::new("nsenter")
            .args([
                &format!("--net=/run/netns/{}", self.peer),
                "busybox",
                "ping",
                "-i",
                "0.1",
                "-w",
                &limit.as_secs().to_string(),
                &self.guest_ip,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let out = child.stdout.take()?;
        let mut got = None;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("bytes from") {
                got = Some(start.elapsed());
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        got
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.sandbox])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.peer])
            .status();
    }
}

struct Stop<'a>(&'a QemuRuntime, Vec<String>);
impl Drop for Stop<'_> {
    fn drop(&mut self) {
        for id in &self.1 {
            let _ = self.0.stop(id);
        }
    }
}

fn smaps_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn mem_available_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the guest benchmark needs root"
    );
    let images = std::env::var_os("VNET_GUEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/vnet/images"));
    let state = tempfile::tempdir().unwrap();
    let kernel = std::sync::Arc::new(substrate_agent::host::linux::LinuxKernel::new().unwrap());
    let rt = QemuRuntime::new(
        QemuRuntimeOptions {
            state_dir: state.path().to_path_buf(),
            images_dir: images,
            ..QemuRuntimeOptions::default()
        },
        kernel,
    )
    .unwrap();
    let boots = env_num("VNET_BENCH_BOOTS", 5) as usize;
    let guests = env_num("VNET_BENCH_GUESTS", 16) as usize;
    let memory_mb = env_num("VNET_BENCH_MEMORY_MB", 128);
    let limit = Duration::from_secs(180);
    println!(
        "host: {} cpus, KVM usable: {} ({}), {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        rt.support().kvm.usable,
        rt.support().kvm.reason,
        rt.support().qemu_string()
    );
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    println!(
        "\n## Boot: ensure() to reachable, one guest at a time ({boots} boots each, {memory_mb} MiB)\n"
    );
    println!(
        "| NIC model (machine) | QEMU up (ensure) | first ping reply | command channel ready |"
    );
    println!("| --- | --- | --- | --- |");
    for (nic, label) in [
        (NicModel::Virtio, "virtio (microvm)"),
        (NicModel::E1000, "e1000 (q35)"),
    ] {
        let (mut up, mut ping, mut ready) = (vec![], vec![], vec![]);
        for b in 0..boots {
            let net = Net::new(b);
            let cfg = net.config(b, nic, memory_mb);
            let _stop = Stop(&rt, vec![cfg.node_id.clone()]);
            let t0 = Instant::now();
            rt.ensure(&cfg).expect("ensure");
            up.push(t0.elapsed().as_secs_f64());
            let p = net
                .first_reply(t0, limit)
                .expect("guest never answered a ping");
            ping.push(p.as_secs_f64());
            rt.wait_ready(&cfg.node_id, limit).expect("ready");
            ready.push(t0.elapsed().as_secs_f64());
        }
        let f = |v: &mut Vec<f64>| {
            let (lo, med, hi) = stats(v);
            format!("{med:.2} s (min {lo:.2}, max {hi:.2})")
        };
        println!(
            "| {label} | {} | {} | {} |",
            f(&mut up),
            f(&mut ping),
            f(&mut ready)
        );
    }

    density(&rt, guests, memory_mb, limit);
}

/// Density: `guests` virtio guests of `memory_mb` MiB at once; time to start and to answer, and
/// memory per guest.
fn density(rt: &QemuRuntime, guests: usize, memory_mb: u64, limit: Duration) {
    println!("\n## Density: {guests} virtio guests of {memory_mb} MiB at once\n");
    let avail_before = mem_available_kb();
    let nets: Vec<Net> = (0..guests).map(|i| Net::new(100 + i)).collect();
    let cfgs: Vec<GuestConfig> = nets
        .iter()
        .enumerate()
        .map(|(i, n)| n.config(100 + i, NicModel::Virtio, memory_mb))
        .collect();
    let _stop = Stop(rt, cfgs.iter().map(|c| c.node_id.clone()).collect());
    let t0 = Instant::now();
    let mut pids = vec![];
    for c in &cfgs {
        pids.push(rt.ensure(c).expect("ensure").pid);
    }
    let started = t0.elapsed();
    let mut reachable = 0;
    for n in &nets {
        if n.first_reply(t0, limit).is_some() {
            reachable += 1;
        }
    }
    let all_up = t0.elapsed();
    // Let the guests settle (page cache, TCG warm-up) before measuring memory.
    std::thread::sleep(Duration::from_secs(3));
    let rss: Vec<u64> = pids.iter().map(|p| smaps_kb(*p, "Rss:")).collect();
    let pss: Vec<u64> = pids.iter().map(|p| smaps_kb(*p, "Pss:")).collect();
    let avail_after = mem_available_kb();
    let n = guests.max(1) as u64;
    let per_guest_avail = avail_before.saturating_sub(avail_after) / n;
    let avg_rss = rss.iter().sum::<u64>() / n;
    let avg_pss = pss.iter().sum::<u64>() / n;
    let fit = avail_before / per_guest_avail.max(avg_pss).max(1);
    println!(
        "| guests | all started (ensure) | all answering ping | RSS per guest | PSS per guest | MemAvailable drop per guest | guests that fit in MemAvailable |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {reachable}/{guests} | {:.1} s | {:.1} s | {} MiB | {} MiB | {} MiB | ~{fit} |",
        started.as_secs_f64(),
        all_up.as_secs_f64(),
        avg_rss / 1024,
        avg_pss / 1024,
        per_guest_avail / 1024
    );
    println!("(MemAvailable before: {} MiB)", avail_before / 1024);
    assert_eq!(reachable, guests, "not every guest answered");
}
