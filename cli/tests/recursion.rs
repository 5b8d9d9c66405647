//! End-to-end test of recursive VNs (issue 7): vnctl, the real controller and the real agents of
//! a private 3-host testbed (own namespace prefix, bridge, subnet, ports and state dir), as root,
//! one testbed at a time (see [`testbed_lock`]). One testbed carries four scenarios; each asserts
//! its own cleanup (namespaces and the links inside every namespace of the testbed, substrate
//! residuals), and the end asserts that `testbed down` leaves nothing.
//!
//! 1. Recursion to depth 2 with the example specs (`deploy/examples/nested-*.yaml`): a nestable
//!    parent P on a line h1-h2-h3, a child C with its nodes at the ends of P's two-hop path, a
//!    grandchild G inside C. Pings work at every level; captures on the underlay links of both
//!    hops show C's packets inside P's (two VXLAN headers: P's VNI outside, C's inside, each hop
//!    its own) and G's inside C's inside P's (three headers, one UDP port per level), the VNIs
//!    and ports as `vnctl describe -o json` tells; a full-size G packet fills the underlay MTU
//!    exactly, unfragmented (50 bytes of MTU per level).
//! 2. Children that ask for more bandwidth than the parent's links (or than what is left of
//!    them), for a node kind the parent forbids, or for wider attributes, are refused with one
//!    clear line naming the rule, and leave nothing: no VN listed, no namespace, no link in any
//!    namespace of the testbed, substrate residuals and every host's desired generation unchanged.
//! 3. Revisitation: a VN of 4 nodes on 2 hosts (full mesh: two local links, four crossing ones),
//!    all pairs ping, and only the crossing links take substrate bandwidth; a child with two nodes
//!    in one parent node pings too.
//! 4. Two children of P (two providers, through P's `shareWith`) with identical address plans
//!    fill P's links exactly (so scenarios 2 and 3 left no reservation in P): each one's pings
//!    stay inside it (captures in both children's nodes), and with X's node ignoring pings, X's
//!    ping of the shared address fails although Y's twin node would answer.
//!
//! Needs root, the binaries next to vnctl (`cargo build -p vn-controller -p substrate-agent`),
//! `tcpdump`, `tshark`, `busybox` and `nsenter`. Without them the test prints `SKIP`, unless
//! `VNET_REQUIRE_ROOT=1`, where a missing precondition fails it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Bed, addr, assert_one_line_error, may_run, ok, testbed_lock, testbed_missing, text};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// `true` when the test may run; prints SKIP, or panics under `VNET_REQUIRE_ROOT=1`.
fn preconditions() -> bool {
    let mut missing = testbed_missing("namespaces, links, daemons, captures");
    for (program, package) in [
        ("tcpdump", "tcpdump"),
        ("tshark", "tshark"),
        ("busybox", "busybox-static"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
    ] {
        if !on_path(program) {
            missing.push(format!(
                "{program} is not on PATH (apt-get install {package})"
            ));
        }
    }
    may_run(&missing)
}

/// Names of the namespaces of the testbed and, for each, the links inside it: what a VN that
/// was refused or deleted must leave exactly as it was.
type Deep = BTreeMap<String, BTreeSet<String>>;

/// Substrate residuals as the operators see them.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Residuals {
    /// host -> (cpu, memory MiB)
    hosts: BTreeMap<String, (u64, u64)>,
    /// link -> Mbit/s
    links: BTreeMap<String, u64>,
}

/// This test's private testbed.
fn recursion_bed() -> Bed {
    let pid = std::process::id() % 100_000;
    Bed::new(
        "vnet-rec-e2e-",
        format!("rc{pid}-"),
        format!("vnr{pid}"),
        format!("10.252.{}.0/24", pid % 250),
    )
}

impl Bed {
    /// Every namespace of the testbed with the links inside it.
    fn deep(&self) -> Deep {
        self.namespaces()
            .into_iter()
            .map(|ns| {
                let out = Command::new("ip")
                    .args(["-n", &ns, "-o", "link", "show"])
                    .output()
                    .unwrap();
                let links = if out.status.success() {
                    text(&out.stdout)
                        .lines()
                        .filter_map(|l| {
                            l.split(": ")
                                .nth(1)
                                .map(|n| n.split('@').next().unwrap().to_owned())
                        })
                        .collect()
                } else {
                    BTreeSet::from([format!("unreadable: {}", text(&out.stderr).trim())])
                };
                (ns, links)
            })
            .collect()
    }

    /// Checks, with no waiting, that the testbed's namespaces and their links are `want` again:
    /// called right after `delete --wait`, which returns once every host applied the deletion.
    fn assert_deep_back_to(&self, want: &Deep, what: &str) {
        assert_eq!(
            *want,
            self.deep(),
            "{what}: namespaces or links left behind"
        );
    }

    fn apply(&self, provider: &str, file: &Path) {
        self.apply_wait(provider, file, "60s");
    }

    fn apply_refused(&self, provider: &str, file: &Path) -> Output {
        self.vnctl(Some(provider), &["apply", "-f", file.to_str().unwrap()])
    }

    fn delete(&self, provider: &str, vn: &str, cascade: bool) -> String {
        let mut args = vec!["delete", "vn", vn, "--wait", "--timeout", "60s"];
        if cascade {
            args.push("--cascade");
        }
        ok(self.vnctl(Some(provider), &args), &format!("delete {vn}"))
    }

    fn json(&self, provider: Option<&str>, args: &[&str]) -> Value {
        let out = ok(self.vnctl(provider, args), &args.join(" "));
        serde_json::from_str(&out).unwrap()
    }

    fn vn_names(&self, provider: &str) -> BTreeSet<String> {
        self.json(Some(provider), &["get", "vns", "-o", "json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn residuals(&self) -> Residuals {
        let hosts = self
            .hosts()
            .iter()
            .map(|h| {
                (
                    h["id"].as_str().unwrap().to_owned(),
                    (
                        h["residual"]["cpu"].as_u64().unwrap_or(0),
                        h["residual"]["memoryMb"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect();
        let links = self
            .json(None, &["get", "links", "-o", "json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["id"].as_str().unwrap().to_owned(),
                    l["residualMbps"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        Residuals { hosts, links }
    }

    /// Every host's desired generation: it moves whenever anything is sent to the agents.
    fn generations(&self) -> BTreeMap<String, u64> {
        self.hosts()
            .iter()
            .map(|h| {
                (
                    h["id"].as_str().unwrap().to_owned(),
                    h["desiredGeneration"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    fn exec_ok(&self, provider: &str, vn: &str, node: &str, argv: &[&str]) -> String {
        ok(
            self.exec(provider, vn, node, argv),
            &format!("{vn}/{node}: {}", argv.join(" ")),
        )
    }

    /// Pings until one answers (neighbours may still be resolving), at most 15 s.
    fn ping(&self, provider: &str, vn: &str, node: &str, addr: &str) {
        self.ping_until(provider, vn, node, addr, Duration::from_secs(15));
    }

    fn ping_sized(&self, provider: &str, vn: &str, node: &str, addr: &str, size: u32) {
        self.ping_sized_until(provider, vn, node, addr, size, Duration::from_secs(15));
    }

    /// The namespace of a virtual node (agent naming: `<node prefix>-<host>-<node id>`).
    fn node_netns(&self, host: &str, node_id: &str) -> String {
        let name = format!("{}{host}-{node_id}", self.tag);
        assert!(
            self.namespaces().contains(&name),
            "no namespace {name}: {:?}",
            self.namespaces()
        );
        name
    }
}

/// A tcpdump writing one interface's packets to a file, started inside a namespace with
/// `nsenter` (not `ip netns exec`, see the machine notes). Killed on drop.
struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    /// Returns once tcpdump listens. `--immediate-mode`: without it packets wait in the kernel
    /// ring until a block times out, and a tcpdump stopped right after the traffic writes none.
    fn start(netns: &str, iface: &str, filter: &str, file: PathBuf) -> Capture {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode"])
            .args(["-Z", "root", "-w"])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut cap = Capture {
            child: Some(child),
            file,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("listening on") => return cap,
                Ok(l) => said.push(l),
                Err(_) => {
                    cap.kill();
                    panic!("tcpdump on {netns}/{iface} did not start: {said:?}");
                }
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops tcpdump (SIGINT: it writes what it has) and returns the file.
    fn stop(mut self) -> PathBuf {
        let mut c = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let st = c.wait().unwrap();
        assert!(st.success(), "tcpdump: {st}");
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The packets of a capture matching `display_filter`, one row per packet and one column per
/// field; a field that occurs in several layers is a list (outermost first). `vxlan_ports` are
/// decoded as VXLAN besides the standard 4789.
fn decode(
    file: &Path,
    vxlan_ports: &[u64],
    display_filter: &str,
    fields: &[&str],
) -> Vec<Vec<Vec<String>>> {
    let mut c = Command::new("tshark");
    c.arg("-r").arg(file).args(["-n", "-Y", display_filter]);
    for p in vxlan_ports {
        c.args(["-d", &format!("udp.port=={p},vxlan")]);
    }
    c.args(["-T", "fields", "-E", "separator=|", "-E", "aggregator=,"]);
    for f in fields {
        c.args(["-e", f]);
    }
    let out = ok(c.output().unwrap(), "tshark");
    out.lines()
        .map(|l| {
            l.split('|')
                .map(|col| {
                    col.split(',')
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// A list of strings (absent: empty, as the JSON view leaves out empty lists).
fn strs(v: &Value) -> Vec<String> {
    if v.is_null() {
        return Vec::new();
    }
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The link of a described VN between `a` and `b`.
fn link<'a>(vn: &'a Value, a: &str, b: &str) -> &'a Value {
    vn["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| strs(&l["endpoints"]) == [a, b])
        .unwrap_or_else(|| panic!("no link {a}-{b} in {vn}"))
}

/// node name -> placement (host, parentNode, nodeId, ...).
fn nodes(vn: &Value) -> BTreeMap<String, Value> {
    vn["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap().to_owned(), n.clone()))
        .collect()
}

fn vnis(l: &Value) -> Vec<String> {
    l["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| num(&h["vni"]).to_string())
        .collect()
}

fn port(l: &Value) -> u64 {
    let ports: BTreeSet<u64> = l["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| num(&h["udpPort"]))
        .collect();
    assert_eq!(ports.len(), 1, "one UDP port per level: {l}");
    ports.into_iter().next().unwrap()
}

/// Level k (1..3) of the nesting test: the VN, its link's ends, the nodes of level k-1 they
/// sit in, and the path of its link over level k-1.
struct Level {
    vn: &'static str,
    ends: [&'static str; 2],
    inside: [&'static str; 2],
    path: &'static [&'static str],
}

/// A nestable child whose links get carrier addresses, and its child.
const CARRIER: &str = "\
name: carrier
parent: nested-parent
nestable: true
nodes:
  - {name: k1, cpu: 5, memory: 64, host: p1}
  - {name: k2, cpu: 5, memory: 64, host: p2}
  - {name: k3, cpu: 5, memory: 64, host: p3}
links:
  - {endpoints: [k1, k2], bandwidth: 10}
  - {endpoints: [k2, k3], bandwidth: 10}
";

const CARRIER_KID: &str = "\
name: carrier-kid
parent: carrier
nodes:
  - {name: z1, cpu: 1, memory: 8, host: k1}
  - {name: z2, cpu: 1, memory: 8, host: k3}
links:
  - {endpoints: [z1, z2], bandwidth: 5, addresses: [10.74.0.1/24, 10.74.0.2/24]}
";

const FIELDS: [&str; 7] = [
    "udp.dstport",
    "vxlan.vni",
    "ip.len",
    "ip.flags.mf",
    "ip.frag_offset",
    "ip.src",
    "icmp.type",
];

#[test]
fn recursion_end_to_end() {
    let test = "recursion_end_to_end";
    if !preconditions() {
        return;
    }
    let started = Instant::now();
    let _lock = testbed_lock();
    let bed = recursion_bed();
    let before = bed.snapshot();
    let down = bed.up();
    let examples = Path::new(EXAMPLES);
    let bare = bed.deep();
    let bare_residuals = bed.residuals();

    // ---- 1. Parent, child and grandchild (the example specs) and a great-grandchild
    // (depth 3): placement, paths, one UDP port and 50 bytes of MTU per level, pings, and the
    // packets of every level on the underlay of both of P's hops.
    for f in ["nested-parent", "nested-child", "nested-grandchild"] {
        bed.apply("lab", &examples.join(format!("{f}.yaml")));
    }
    // What the next scenarios start from and must come back to.
    let with_pcg = bed.deep();
    bed.apply("lab", &examples.join("nested-deep.yaml"));
    let p = bed.describe("lab", "nested-parent");
    assert_eq!(p["state"], "READY", "{p}");
    assert_eq!(num(&p["depth"]), 0);
    let mut above = nodes(&p);
    for (n, h) in [("p1", "h1"), ("p2", "h2"), ("p3", "h3")] {
        assert_eq!(above[n]["host"], h, "{p}");
    }
    let p12 = link(&p, "p1", "p2").clone();
    let p23 = link(&p, "p2", "p3").clone();
    let (pport, pmtu) = (port(&p12), num(&p12["mtu"]));
    let kids = [
        Level {
            vn: "nested-child",
            ends: ["c1", "c2"],
            inside: ["p1", "p3"],
            path: &["p1", "p2", "p3"],
        },
        Level {
            vn: "nested-grandchild",
            ends: ["g1", "g2"],
            inside: ["c1", "c2"],
            path: &["c1", "c2"],
        },
        Level {
            vn: "nested-deep",
            ends: ["d1", "d2"],
            inside: ["g1", "g2"],
            path: &["g1", "g2"],
        },
    ];
    // Per level: (VN, a end, b end, the link as described).
    let mut levels: Vec<(&str, &str, &str, Value)> = Vec::new();
    let mut parent = p.clone();
    for (k, kid) in kids.iter().enumerate() {
        let (name, [a, b], inside, path) = (&kid.vn, &kid.ends, kid.inside, kid.path);
        let depth = k as u64 + 1;
        let vn = bed.describe("lab", name);
        assert_eq!(vn["state"], "READY", "{vn}");
        assert_eq!(num(&vn["depth"]), depth, "{vn}");
        assert_eq!(strs(&parent["children"]), [*name], "{parent}");
        let here = nodes(&vn);
        for (n, pn) in [(a, inside[0]), (b, inside[1])] {
            assert_eq!(here[*n]["parentNode"], *pn, "{vn}");
            assert_eq!(here[*n]["host"], above[pn]["host"], "{vn}");
        }
        let l = link(&vn, a, b).clone();
        assert_eq!(strs(&l["path"]), *path, "{l}");
        assert_eq!(port(&l), pport + depth, "{l}");
        let mtu = num(&l["mtu"]);
        assert_eq!(mtu, pmtu - 50 * depth, "{l}");
        let addrs = strs(&l["addresses"]);
        bed.ping("lab", name, a, addr(&addrs[1]));
        bed.ping("lab", name, b, addr(&addrs[0]));
        let ifname = strs(&l["interfaces"])[0].clone();
        let shown = bed.exec_ok("lab", name, a, &["ip", "-o", "link", "show", &ifname]);
        assert!(shown.contains(&format!(" mtu {mtu} ")), "{shown}");
        levels.push((name, a, b, l));
        above = here;
        parent = vn;
    }
    assert!(strs(&parent["children"]).is_empty());
    bed.ping(
        "lab",
        "nested-parent",
        "p1",
        addr(&strs(&p12["addresses"])[1]),
    );
    let tree = ok(bed.vnctl(Some("lab"), &["get", "vns", "--tree"]), "tree");
    let rows: Vec<&str> = tree.lines().skip(1).collect();
    assert!(
        rows.len() == 4
            && rows[0].starts_with("nested-parent ")
            && rows[1].starts_with("└─ nested-child ")
            && rows[2].starts_with("   └─ nested-grandchild ")
            && rows[3].starts_with("      └─ nested-deep "),
        "{tree}"
    );

    // Captures on the underlay of both of P's hops, in the hosts' namespaces, while every level
    // pings its other end with a full-size packet (exactly its MTU).
    let underlay_mtu = |host: &str, iface: &str| -> u64 {
        let h = bed.hosts().into_iter().find(|h| h["id"] == host).unwrap();
        let i = h["underlay"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == iface)
            .unwrap_or_else(|| panic!("{host} has no {iface}: {h}"))
            .clone();
        num(&i["mtu"])
    };
    let dir = tempfile::tempdir().unwrap();
    let mut caps = Vec::new();
    for (hop, pl) in [&p12, &p23].into_iter().enumerate() {
        let path = strs(&pl["path"]);
        assert_eq!(
            path.len(),
            2,
            "P's links are single substrate hops here: {pl}"
        );
        let iface = format!("to-{}", path[1]);
        let full = underlay_mtu(&path[0], &iface);
        let cap = Capture::start(
            &format!("{}{}", bed.tag, path[0]),
            &iface,
            "udp",
            dir.path().join(format!("hop{hop}.pcap")),
        );
        caps.push((hop, pl, full, cap));
    }
    for (name, a, _, l) in &levels {
        let size = num(&l["mtu"]) - 28;
        bed.ping_sized("lab", name, a, addr(&strs(&l["addresses"])[1]), size as u32);
    }
    let ports: Vec<u64> = (1..=levels.len() as u64).map(|k| pport + k).collect();
    for (hop, pl, full, cap) in caps {
        let file = cap.stop();
        let requests = decode(&file, &ports, "icmp.type == 8", &FIELDS);
        // On P's hop `hop`: P's VNI of that hop, then C's VNI of its hop `hop` (C's link spans
        // both), then G's and D's only hop.
        let mut vni_chain = vec![vnis(pl)[0].clone(), vnis(&levels[0].3)[hop].clone()];
        vni_chain.extend(levels[1..].iter().map(|lv| vnis(&lv.3)[0].clone()));
        for (k, (name, _, _, l)) in levels.iter().enumerate() {
            let depth = k + 1;
            let src = addr(&strs(&l["addresses"])[0]).to_owned();
            // The innermost source names the level (a display filter on ip.src would match any
            // layer: C's addresses are also a layer of G's packets).
            let seen: Vec<&Vec<Vec<String>>> = requests
                .iter()
                .filter(|p| p[5].last() == Some(&src))
                .collect();
            assert!(
                !seen.is_empty(),
                "no echo request of {name} on P's hop {hop}"
            );
            for pkt in seen {
                let want_ports: Vec<String> = (0..=depth as u64)
                    .map(|i| (pport + i).to_string())
                    .collect();
                assert_eq!(
                    pkt[0], want_ports,
                    "{name} on hop {hop}: UDP ports outside-in"
                );
                assert_eq!(
                    pkt[1],
                    vni_chain[..=depth],
                    "{name} on hop {hop}: VNIs outside-in (P's first)"
                );
                let lens: Vec<String> = (0..=depth as u64 + 1)
                    .map(|i| (full - 50 * i).to_string())
                    .collect();
                assert_eq!(
                    pkt[2], lens,
                    "{name} on hop {hop}: a full-size packet fills the underlay MTU ({full}) exactly"
                );
                assert!(
                    pkt[3].len() == depth + 2
                        && pkt[4].len() == depth + 2
                        && pkt[3]
                            .iter()
                            .chain(&pkt[4])
                            .all(|v| v == "0" || v == "False"),
                    "{name} on hop {hop}: fragmented, or not {} IP layers: {pkt:?}",
                    depth + 2
                );
            }
        }
        println!(
            "1. hop {hop} ({}): VNIs outside-in {vni_chain:?}, ports {pport}..{}, full-size packets of {full} bytes, unfragmented",
            strs(&pl["path"]).join("-"),
            pport + levels.len() as u64
        );
    }
    // The deep VN goes again; P, C and G stay for the next scenarios.
    bed.delete("lab", "nested-deep", false);
    bed.assert_deep_back_to(&with_pcg, "1. nested-deep deleted");

    // ---- 2. Refused children leave nothing.
    let residuals = bed.residuals();
    let generations = bed.generations();
    let names = bed.vn_names("lab");
    let refused: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "too-wide",
            "name: too-wide\nparent: nested-parent\nnodes:\n  - {name: w1, cpu: 5, memory: 32, host: p1}\n  - {name: w2, cpu: 5, memory: 32, host: p3}\nlinks:\n  - {endpoints: [w1, w2], bandwidth: 150}\n".into(),
            vec![
                "spec.links[0] (w1-w2)",
                "bandwidth 150 Mbit/s exceeds every link of parent lab/nested-parent",
                "the largest carries 100 Mbit/s",
            ],
        ),
        (
            // C holds 50 of each 100 Mbit/s link of P.
            "no-room",
            "name: no-room\nparent: nested-parent\nnodes:\n  - {name: w1, cpu: 5, memory: 32, host: p1}\n  - {name: w2, cpu: 5, memory: 32, host: p3}\nlinks:\n  - {endpoints: [w1, w2], bandwidth: 60}\n".into(),
            vec!["cannot embed no-room", "parent lab/nested-parent", "w1-w2", "60 bandwidth"],
        ),
        (
            "deep-wide",
            "name: deep-wide\nparent: nested-child\nnodes:\n  - {name: w1, cpu: 1, memory: 8, host: c1}\n  - {name: w2, cpu: 1, memory: 8, host: c2}\nlinks:\n  - {endpoints: [w1, w2], bandwidth: 60}\n".into(),
            vec![
                "bandwidth 60 Mbit/s exceeds every link of parent lab/nested-child",
                "the largest carries 50 Mbit/s",
            ],
        ),
        (
            "guest-kid",
            "name: guest-kid\nparent: nested-parent\nnodes:\n  - {name: k1, cpu: 5, memory: 32, host: p1}\n  - {name: k2, kind: vm, cpu: 5, memory: 128, host: p3, image: default}\nlinks:\n  - {endpoints: [k1, k2], bandwidth: 10}\n".into(),
            vec![
                "spec.nodes[1] (k2)",
                "kind vm is not allowed by attributes.allowed_node_kinds [netns]",
                "inherited from lab/nested-parent",
            ],
        ),
        (
            "widening",
            "name: widening\nparent: nested-parent\nattributes: {allowedNodeKinds: [netns, vm]}\nnodes:\n  - {name: k1, cpu: 5, memory: 32, host: p1}\n".into(),
            vec![
                "attributes.allowed_node_kinds",
                "[netns, vm] widens the parent's [netns]",
                "lab/nested-parent",
            ],
        ),
    ];
    for (name, yaml, words) in &refused {
        let out = bed.apply_refused("lab", &bed.spec(name, yaml));
        assert_one_line_error(&out, 1, words);
        assert_eq!(bed.vn_names("lab"), names, "{name}: VN list changed");
        assert_eq!(bed.deep(), with_pcg, "{name}: namespaces or links changed");
        assert_eq!(
            bed.residuals(),
            residuals,
            "{name}: substrate residuals changed"
        );
        assert_eq!(
            bed.generations(),
            generations,
            "{name}: something was sent to agents"
        );
        println!("2. refused {name}: {}", text(&out.stderr).trim());
    }
    println!(
        "2. unchanged after each: {} VNs, {} namespaces holding {} links, residuals, generations",
        names.len(),
        with_pcg.len(),
        with_pcg.values().map(BTreeSet::len).sum::<usize>()
    );

    // ---- 3. Revisitation: 4 nodes on 2 hosts, and 2 child nodes in one parent node.
    let mut quad = String::from(
        "name: quad\nallowRevisitation: true\nnodes:\n  - {name: q1, cpu: 10, memory: 32, host: h1}\n  - {name: q2, cpu: 10, memory: 32, host: h1}\n  - {name: q3, cpu: 10, memory: 32, host: h2}\n  - {name: q4, cpu: 10, memory: 32, host: h2}\nlinks:\n",
    );
    let pairs = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)];
    for (k, (a, b)) in pairs.iter().enumerate() {
        quad.push_str(&format!(
            "  - {{endpoints: [q{a}, q{b}], bandwidth: 10, addresses: [10.90.{k}.{a}/24, 10.90.{k}.{b}/24]}}\n"
        ));
    }
    bed.apply("lab", &bed.spec("quad", &quad));
    let q = bed.describe("lab", "quad");
    assert_eq!(q["state"], "READY");
    let mut want = residuals.clone();
    for n in q["nodes"].as_array().unwrap() {
        let h = want.hosts.get_mut(n["host"].as_str().unwrap()).unwrap();
        h.0 -= num(&n["cpu"]);
        h.1 -= num(&n["memoryMb"]);
    }
    for l in q["links"].as_array().unwrap() {
        let path = strs(&l["path"]);
        let ends = strs(&l["endpoints"]);
        let local = ends.iter().all(|e| ["q1", "q2"].contains(&e.as_str()))
            || ends.iter().all(|e| ["q3", "q4"].contains(&e.as_str()));
        assert_eq!(
            path.len() == 1,
            local,
            "only co-located links stay on one host: {l}"
        );
        for w in path.windows(2) {
            let id = [format!("{}-{}", w[0], w[1]), format!("{}-{}", w[1], w[0])]
                .into_iter()
                .find(|id| want.links.contains_key(id))
                .unwrap();
            *want.links.get_mut(&id).unwrap() -= num(&l["bandwidthMbps"]);
        }
    }
    assert_eq!(
        bed.residuals(),
        want,
        "revisitation: nodes take host capacity, only crossing links take bandwidth"
    );
    for (k, (a, b)) in pairs.iter().enumerate() {
        bed.ping("lab", "quad", &format!("q{a}"), &format!("10.90.{k}.{b}"));
        bed.ping("lab", "quad", &format!("q{b}"), &format!("10.90.{k}.{a}"));
    }
    let rv = "name: nested-revisit\nparent: nested-parent\nallowRevisitation: true\nnodes:\n  - {name: r1, cpu: 5, memory: 32, host: p2}\n  - {name: r2, cpu: 5, memory: 32, host: p2}\n  - {name: r3, cpu: 5, memory: 32, host: p1}\nlinks:\n  - {endpoints: [r1, r2], bandwidth: 10, addresses: [10.85.0.1/24, 10.85.0.2/24]}\n  - {endpoints: [r2, r3], bandwidth: 10, addresses: [10.85.1.2/24, 10.85.1.3/24]}\n";
    bed.apply("lab", &bed.spec("nested-revisit", rv));
    let r = bed.describe("lab", "nested-revisit");
    let rn = nodes(&r);
    assert_eq!(
        (&rn["r1"]["parentNode"], &rn["r2"]["parentNode"]),
        (&"p2".into(), &"p2".into())
    );
    assert_eq!(
        strs(&link(&r, "r1", "r2")["path"]),
        ["p2"],
        "a local link inside p2"
    );
    assert_eq!(strs(&link(&r, "r2", "r3")["path"]), ["p2", "p1"]);
    bed.ping("lab", "nested-revisit", "r1", "10.85.0.2");
    bed.ping("lab", "nested-revisit", "r2", "10.85.0.1");
    bed.ping("lab", "nested-revisit", "r2", "10.85.1.3");
    bed.ping("lab", "nested-revisit", "r3", "10.85.1.2");
    bed.delete("lab", "quad", false);
    bed.delete("lab", "nested-revisit", false);
    bed.assert_deep_back_to(&with_pcg, "3. revisitation deleted");
    assert_eq!(bed.residuals(), residuals, "3. residuals after delete");
    println!("3. ok: 4 nodes on 2 hosts, all 12 directed pairs ping; 2 child nodes in p2 ping");

    // ---- Carrier addresses: a nestable child whose links have no addresses gets a /31 per
    // link from 100.64.0.0/21 (in its own nodes only), and its own child's tunnels ride them.
    bed.apply("lab", &bed.spec("carrier", CARRIER));
    bed.apply("lab", &bed.spec("carrier-kid", CARRIER_KID));
    let k = bed.describe("lab", "carrier");
    for (a, b) in [("k1", "k2"), ("k2", "k3")] {
        let l = link(&k, a, b);
        let pair = strs(&l["addresses"]);
        assert!(
            pair.len() == 2
                && pair
                    .iter()
                    .all(|x| x.starts_with("100.64.") && x.ends_with("/31")),
            "carrier addresses of {a}-{b}: {l}"
        );
        let ifname = &strs(&l["interfaces"])[0];
        let shown = bed.exec_ok(
            "lab",
            "carrier",
            a,
            &["ip", "-o", "addr", "show", "dev", ifname],
        );
        assert!(
            shown.contains(&format!("inet {} ", pair[0])),
            "{a}: {shown}"
        );
        bed.ping("lab", "carrier", a, addr(&pair[1]));
    }
    let z = bed.describe("lab", "carrier-kid");
    assert_eq!(strs(&link(&z, "z1", "z2")["path"]), ["k1", "k2", "k3"]);
    bed.ping("lab", "carrier-kid", "z1", "10.74.0.2");
    let out = bed.delete("lab", "carrier", true);
    assert!(
        out.contains("vn/carrier-kid deleted\nvn/carrier deleted\n"),
        "{out}"
    );
    bed.assert_deep_back_to(&with_pcg, "carrier VNs deleted");
    assert_eq!(
        bed.residuals(),
        residuals,
        "residuals after the carrier VNs"
    );
    println!(
        "carrier addresses ok: {:?}",
        strs(&link(&k, "k1", "k2")["addresses"])
    );

    // ---- 4. Two children with one address plan, of two providers.
    let twin = |name: &str, extra: &str| {
        format!(
            "name: {name}\nparent: nested-parent\n{extra}nodes:\n  - {{name: n1, cpu: 5, memory: 32, host: p1}}\n  - {{name: n2, cpu: 5, memory: 32, host: p3}}\nlinks:\n  - {{endpoints: [n1, n2], bandwidth: 25, addresses: [10.80.0.1/24, 10.80.0.2/24]}}\n"
        )
    };
    bed.apply(
        "blue",
        &bed.spec("iso-y", &twin("iso-y", "parentProvider: lab\n")),
    );
    // Y stays until the cascade at the end (another provider's child goes with the parent).
    let with_y = bed.deep();
    bed.apply("lab", &bed.spec("iso-x", &twin("iso-x", "")));
    // C (50) + Y (25) + X (25) fill both links of P: a reservation left by scenario 2 or 3 would
    // have refused X. Not one more Mbit/s fits.
    let full = bed.spec(
        "one-more",
        "name: one-more\nparent: nested-parent\nnodes:\n  - {name: o1, cpu: 1, memory: 8, host: p1}\n  - {name: o2, cpu: 1, memory: 8, host: p2}\nlinks:\n  - {endpoints: [o1, o2], bandwidth: 1}\n",
    );
    assert_one_line_error(
        &bed.apply_refused("lab", &full),
        1,
        &["cannot embed one-more", "o1-o2"],
    );
    let x = bed.describe("lab", "iso-x");
    let y = bed.describe("blue", "iso-y");
    let mut kids = strs(&bed.describe("lab", "nested-parent")["children"]);
    kids.sort();
    assert_eq!(kids, ["blue/iso-y", "iso-x", "nested-child"]);
    let (xl, yl) = (link(&x, "n1", "n2"), link(&y, "n1", "n2"));
    for h in 0..2 {
        assert_ne!(vnis(xl)[h], vnis(yl)[h], "hop {h}: X and Y share a VNI");
    }
    let macs = |l: &Value| -> BTreeSet<String> { strs(&l["macs"]).into_iter().collect() };
    let (x_macs, y_macs) = (macs(xl), macs(yl));
    bed.ping("lab", "iso-x", "n1", "10.80.0.2");
    bed.ping("blue", "iso-y", "n1", "10.80.0.2");
    let ns_of = |vn: &Value, n: &str| {
        let nd = &nodes(vn)[n];
        bed.node_netns(nd["host"].as_str().unwrap(), nd["nodeId"].as_str().unwrap())
    };
    let (x2, y2) = (ns_of(&x, "n2"), ns_of(&y, "n2"));
    // Both pings after flushed neighbours (so ARP crosses too), captured in both n2 nodes.
    bed.exec_ok("lab", "iso-x", "n1", &["ip", "neigh", "flush", "all"]);
    bed.exec_ok("blue", "iso-y", "n1", &["ip", "neigh", "flush", "all"]);
    let cx = Capture::start(&x2, "eth0", "arp or icmp", dir.path().join("x2.pcap"));
    let cy = Capture::start(&y2, "eth0", "arp or icmp", dir.path().join("y2.pcap"));
    bed.ping("lab", "iso-x", "n1", "10.80.0.2");
    bed.ping("blue", "iso-y", "n1", "10.80.0.2");
    let (fx, fy) = (cx.stop(), cy.stop());
    let frames = |f: &Path| decode(f, &[], "arp || icmp", &["eth.src", "eth.dst", "icmp.type"]);
    for (f, own, other, who) in [(&fx, &x_macs, &y_macs, "X"), (&fy, &y_macs, &x_macs, "Y")] {
        let seen = frames(f);
        println!(
            "4. {who}'s n2 captured {} ARP/ICMP frames, all of {who}",
            seen.len()
        );
        assert!(
            seen.iter().any(|p| p[2] == ["8"] && own.contains(&p[0][0])),
            "{who}'s node saw no echo request of its own VN: {seen:?}"
        );
        for p in &seen {
            for mac in p[0].iter().chain(&p[1]) {
                assert!(
                    own.contains(mac) || mac == "ff:ff:ff:ff:ff:ff",
                    "{who}'s node saw a frame of another VN ({mac}): {p:?}"
                );
                assert!(!other.contains(mac), "{who} saw the twin VN: {p:?}");
            }
        }
    }
    // X's n2 ignores pings: X's ping of 10.80.0.2 must fail although Y's n2, holding the same
    // address on the same parent nodes, answers pings.
    bed.exec_ok(
        "lab",
        "iso-x",
        "n2",
        &["busybox", "sysctl", "-w", "net.ipv4.icmp_echo_ignore_all=1"],
    );
    bed.exec_ok("lab", "iso-x", "n1", &["ip", "neigh", "flush", "all"]);
    let out = bed.exec(
        "lab",
        "iso-x",
        "n1",
        &["busybox", "ping", "-c", "3", "-W", "1", "10.80.0.2"],
    );
    assert!(
        !out.status.success(),
        "an answer came from outside X: {}",
        text(&out.stdout)
    );
    let neigh = bed.exec_ok("lab", "iso-x", "n1", &["ip", "neigh", "show", "10.80.0.2"]);
    let y_n2_mac = &strs(&yl["macs"])[1];
    assert!(
        !neigh.contains(y_n2_mac.as_str()),
        "X resolved 10.80.0.2 to Y's node: {neigh}"
    );
    bed.ping("blue", "iso-y", "n1", "10.80.0.2");
    bed.exec_ok(
        "lab",
        "iso-x",
        "n2",
        &["busybox", "sysctl", "-w", "net.ipv4.icmp_echo_ignore_all=0"],
    );
    bed.ping("lab", "iso-x", "n1", "10.80.0.2");
    bed.delete("lab", "iso-x", false);
    bed.assert_deep_back_to(&with_y, "4. X deleted");
    println!("4. ok: twins isolated (captures in both, ping across fails)");

    // ---- 1 (end). A parent with children goes only with --cascade, deepest first.
    let out = bed.vnctl(Some("lab"), &["delete", "vn", "nested-parent"]);
    assert_one_line_error(
        &out,
        1,
        &["nested-parent has children", "nested-child", "cascade"],
    );
    assert_eq!(bed.vn_names("lab"), names);
    // The owner's cascade takes blue's child too (named blue/iso-y), and --wait copes with a
    // VN it may not watch.
    let out = bed.delete("lab", "nested-parent", true);
    let order: Vec<&str> = out.lines().filter(|l| l.ends_with(" deleted")).collect();
    let at = |l: &str| order.iter().position(|o| *o == l);
    assert!(
        order.len() == 4
            && at("vn/nested-grandchild deleted")
                .is_some_and(|g| at("vn/nested-child deleted").is_some_and(|c| g < c))
            && at("vn/blue/iso-y deleted").is_some()
            && order.last() == Some(&"vn/nested-parent deleted"),
        "cascade order: {out}"
    );
    assert!(bed.vn_names("lab").is_empty());
    assert!(bed.vn_names("blue").is_empty());
    bed.assert_deep_back_to(&bare, "1. cascade");
    assert_eq!(
        bed.residuals(),
        bare_residuals,
        "1. residuals after cascade"
    );

    // Nothing of ours left.
    down.finish(&before);
    println!("{test}: done in {:.1} s", started.elapsed().as_secs_f64());
}
