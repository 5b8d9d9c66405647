//! Root integration tests: the real agent binary in host namespaces, driven by a fake controller.
//! Without root they print `SKIP` (and fail under `VNET_REQUIRE_ROOT=1`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use vnet_proto::v1 as pb;
use vnet_proto::v1::Encapsulation::{Vlan, Vxlan};

const T: Duration = Duration::from_secs(60);

/// One VN with nodes `<p>1` on h1 and `<p>2` on h2, a VXLAN link (10.1.0.0/24 on eth0) and a VLAN
/// link (10.2.0.0/24 on eth1): the SAME address plan for every VN.
fn vn_pair(p: &str, vni: u32, vlan: u32, mac_byte: u8) -> (pb::VnSlice, pb::VnSlice) {
    let mac = |n: u8, i: u8| format!("02:{mac_byte:02x}:00:00:{i:02x}:{n:02x}");
    let h1 = slice(
        &format!("vn{p}"),
        &[&format!("{p}1")],
        vec![
            seg(
                &format!("{p}x"),
                1450,
                0,
                nif(&format!("{p}1"), "eth0", "10.1.0.1/24", &mac(1, 0)),
                hop(Vxlan, vni, "10.255.12.1", "10.255.12.2"),
            ),
            seg(
                &format!("{p}v"),
                1500,
                0,
                nif(&format!("{p}1"), "eth1", "10.2.0.1/24", &mac(1, 1)),
                hop(Vlan, vlan, "10.255.12.1", "10.255.12.2"),
            ),
        ],
    );
    let h2 = slice(
        &format!("vn{p}"),
        &[&format!("{p}2")],
        vec![
            seg(
                &format!("{p}x"),
                1450,
                0,
                nif(&format!("{p}2"), "eth0", "10.1.0.2/24", &mac(2, 0)),
                hop(Vxlan, vni, "10.255.12.2", "10.255.12.1"),
            ),
            seg(
                &format!("{p}v"),
                1500,
                0,
                nif(&format!("{p}2"), "eth1", "10.2.0.2/24", &mac(2, 1)),
                hop(Vlan, vlan, "10.255.12.2", "10.255.12.1"),
            ),
        ],
    );
    (h1, h2)
}

fn diag(tb: &Testbed) -> String {
    let mut s = String::new();
    for ns in tb.namespaces() {
        s.push_str(&format!(
            "== {ns}\n{}\n",
            sh_ok(&format!(
                "ip -n {ns} -d addr; ip -n {ns} route; tc -n {ns} qdisc; ip netns exec {ns} ss -uan"
            ))
            .1
        ));
    }
    s
}

fn desired(generation: u64, vns: Vec<pb::VnSlice>) -> pb::DesiredState {
    pb::DesiredState { generation, vns }
}

fn ping(ns: &str, dst: &str) -> bool {
    in_ns(ns, &format!("busybox ping -c 2 -W 2 {dst}")).0
}

/// TCP through iperf3 (a one-off server in `server_ns`).
fn tcp_ok(client_ns: &str, server_ns: &str, server_ip: &str, port: u16) -> bool {
    let mut srv = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            server_ns,
            "iperf3",
            "-s",
            "-1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The server may take a while to listen on a loaded machine: connection refused is retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (ok, out) = loop {
        std::thread::sleep(Duration::from_millis(300));
        let r = in_ns(
            client_ns,
            &format!("iperf3 -c {server_ip} -p {port} -t 1 -J"),
        );
        if r.0 || !r.1.contains("unable to connect") || Instant::now() > deadline {
            break r;
        }
    };
    let _ = srv.kill();
    let _ = srv.wait();
    let measured = ok && out.contains("\"bits_per_second\"");
    if !measured {
        eprintln!("iperf3 from {client_ns} to {server_ip}:{port} failed: {out}");
    }
    measured
}

#[test]
fn same_address_plan_in_two_vns_over_vxlan_and_vlan_is_isolated_and_teardown_is_clean() {
    isolated_and_clean("a", "bpf");
}

/// The same on the userspace VLAN datapath (forced), so that both stay correct.
#[test]
fn same_address_plan_isolated_and_clean_on_the_userspace_vlan_datapath() {
    isolated_and_clean("u", "userspace");
}

#[test]
fn same_vlan_id_on_two_substrate_links_is_isolated_and_teardown_is_clean() {
    same_vlan_id_on_two_links("v", "bpf");
}

/// The same on the userspace VLAN datapath (forced).
#[test]
fn same_vlan_id_on_two_substrate_links_on_the_userspace_vlan_datapath() {
    same_vlan_id_on_two_links("w", "userspace");
}

/// Node `<p><n>` of VN `vn<p>` with one VLAN link `<p>v`: 10.2.0.<n>/24 on eth1, MAC
/// 02:<mac_byte>:00:00:01:<n>.
fn vlan_end(p: &str, n: u8, mac_byte: u8, vid: u32, local: &str, remote: &str) -> pb::VnSlice {
    let node = format!("{p}{n}");
    slice(
        &format!("vn{p}"),
        &[&node],
        vec![seg(
            &format!("{p}v"),
            1500,
            0,
            nif(
                &node,
                "eth1",
                &format!("10.2.0.{n}/24"),
                &format!("02:{mac_byte:02x}:00:00:01:{n:02x}"),
            ),
            hop(Vlan, vid, local, remote),
        )],
    )
}

/// Two providers' VNs with the same address plan and the same VLAN ID, 101, on two different
/// substrate links of h1: VN a over h1-h2, VN b over h1-h3. h1 tells them apart by the device a
/// tagged frame arrives on; each VN talks (ping, TCP, crafted frames tagged 101 from both of its
/// nodes) while the other VN's nodes and the other substrate link see nothing of it.
fn same_vlan_id_on_two_links(letter: &str, mode: &'static str) {
    let Some(mut tb) = Testbed::on_datapath(letter, 3, mode) else {
        return;
    };
    let (u12, _) = tb.underlay(1, 2);
    let (u13, _) = tb.underlay(1, 3);
    let before: Vec<String> = (1..=3).map(|i| tb.host_view(i)).collect();
    let ns_before = tb.namespaces();
    let ids: Vec<String> = tb.hosts.iter().map(|h| h.id.clone()).collect();
    for i in 1..=3 {
        tb.start_agent(i);
    }
    let caps = tb.ctl().wait_attached(&ids[0], 1, T).capabilities.unwrap();
    assert_eq!(caps.vlan_datapath, mode);
    let slices = [
        vec![
            vlan_end("a", 1, 0xaa, 101, "10.255.12.1", "10.255.12.2"),
            vlan_end("b", 1, 0xbb, 101, "10.255.13.1", "10.255.13.3"),
        ],
        vec![vlan_end("a", 2, 0xaa, 101, "10.255.12.2", "10.255.12.1")],
        vec![vlan_end("b", 2, 0xbb, 101, "10.255.13.3", "10.255.13.1")],
    ];
    for (id, s) in ids.iter().zip(slices) {
        tb.ctl().set_desired(id, desired(1, s));
    }
    for (i, id) in ids.iter().enumerate() {
        let r = tb.ctl().wait_report(id, 1, T);
        assert!(r.converged, "{id}: {r:#?}\n{}", tb.log(i + 1));
    }
    let h1 = tb.hosts[0].ns.clone();
    if mode == "bpf" {
        // h1 pops ID 101 on each substrate device into a different port.
        let ifindex = |dev: &str| {
            let v: serde_json::Value =
                serde_json::from_str(&sh(&format!("ip -n {h1} -j link show {dev}"))).unwrap();
            v[0]["ifindex"].as_u64().unwrap()
        };
        let path = tb.bpf_pins(1).join("_agent/vnet_vlan_fwd");
        let out = sh(&format!("bpftool -j map dump pinned {}", path.display()));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut pops: Vec<(u64, u64)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["formatted"])
            .filter(|e| e["key"]["vid"] == 101 && e["value"]["action"] == 2)
            .map(|e| {
                let (k, v) = (&e["key"]["ifindex"], &e["value"]["ifindex"]);
                (k.as_u64().unwrap(), v.as_u64().unwrap())
            })
            .collect();
        pops.sort();
        let mut devs = vec![ifindex(&u12), ifindex(&u13)];
        devs.sort();
        assert_eq!(pops.iter().map(|p| p.0).collect::<Vec<_>>(), devs, "{out}");
        assert_ne!(pops[0].1, pops[1].1, "both pop into one port: {out}");
    }
    let (a1, a2, b1, b2) = (
        tb.node_ns(1, "a1"),
        tb.node_ns(2, "a2"),
        tb.node_ns(1, "b1"),
        tb.node_ns(3, "b2"),
    );
    let rounds = [
        (&a1, &a2, 0xaa, [&b1, &b2], &u13),
        (&b1, &b2, 0xbb, [&a1, &a2], &u12),
    ];
    for (x, y, mac_byte, others, other_link) in rounds {
        let pcap = |what: &str| format!("/tmp/vt{}{what}.pcap", tb.tag);
        let mut watch: Vec<Capture> = others
            .iter()
            .map(|ns| Capture::start(ns, "any", "ip", pcap(ns)))
            .collect();
        // IPv4 or ARP, tagged once or twice (IPv6 neighbour discovery of the idle VN is its own).
        watch.push(Capture::start(
            &h1,
            other_link,
            "vlan and not ip6",
            pcap(other_link),
        ));
        assert!(ping(x, "10.2.0.2"), "{x}: ping\n{}", tb.log(1));
        assert!(tcp_ok(x, y, "10.2.0.2", 5211), "{x}: TCP");
        // The nodes tag frames themselves with the ID both VNs' links carry.
        send_tagged(x, "eth1", 101, 20);
        send_tagged(y, "eth1", 101, 20);
        for (c, name) in watch
            .into_iter()
            .zip(others.iter().map(|s| s.as_str()).chain([h1.as_str()]))
        {
            let seen = c.stop();
            assert!(
                seen.trim().is_empty(),
                "{x}'s traffic reached {name}:\n{seen}"
            );
        }
        let neigh = in_ns(x, "ip neigh show 10.2.0.2").1;
        assert!(
            neigh.contains(&format!("02:{mac_byte:02x}:00:00:01:02")),
            "{neigh}"
        );
    }
    if mode == "bpf" {
        assert!(tb.bpf_counter(1, 3) > 0, "forwarded frames counted on h1");
    }
    teardown_leaves_nothing(&mut tb, 2, &before, &ns_before);
}

/// Sends `n` crafted IPv4/UDP frames (to 10.2.0.2 port 9) tagged with `vid` from `dev` in `ns`.
fn send_tagged(ns: &str, dev: &str, vid: u16, n: u32) {
    let py = format!(
        r"import socket, struct
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('{dev}', 0))
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40, 1, 0, 64, 17, 0,
                 socket.inet_aton('10.2.0.1'), socket.inet_aton('10.2.0.2'))
udp = struct.pack('!HHHH', 9, 9, 20, 0) + b'vnet-crafted'
f = b'\xff' * 6 + bytes([2, 0xcc, 0, 0, 0, 1]) + struct.pack('!HHH', 0x8100, {vid}, 0x0800) + ip + udp
for _ in range({n}):
    s.send(f)
"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), py).unwrap();
    let (ok, out) = in_ns(ns, &format!("python3 {}", file.path().display()));
    assert!(ok, "crafted frames from {ns}: {out}");
}

/// A tcpdump in `ns` on `dev` (frames matching `filter`), written to a file until `stop`.
struct Capture {
    child: std::process::Child,
    file: String,
}

impl Capture {
    fn start(ns: &str, dev: &str, filter: &str, file: String) -> Capture {
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", dev, "-U", "-w", &file])
            .args(filter.split_whitespace())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        Capture { child, file }
    }

    /// Stops the capture; its frames as `tcpdump -nn -e` prints them.
    fn stop(mut self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        sh(&format!(
            "tcpdump -nn -e -r {0} 2>/dev/null; rm -f {0}",
            self.file
        ))
    }
}

/// Empties every host's desired state (as `generation`) and checks that the hosts are left
/// exactly as `before` (their links and qdiscs, in host order) with the namespaces `ns_before`:
/// no process, BPF classifier or pin of ours remains.
fn teardown_leaves_nothing(
    tb: &mut Testbed,
    generation: u64,
    before: &[String],
    ns_before: &[String],
) {
    let ids: Vec<String> = tb.hosts.iter().map(|h| h.id.clone()).collect();
    for id in &ids {
        tb.ctl().set_desired(id, desired(generation, vec![]));
    }
    for id in &ids {
        tb.ctl().wait_converged(id, generation, T);
    }
    let procs = tb.processes_besides_agents();
    assert!(
        procs.is_empty(),
        "processes left besides the agents: {procs:?}"
    );
    for i in 1..=ids.len() {
        tb.stop_agent(i);
    }
    assert_eq!(tb.namespaces(), ns_before, "namespaces");
    // A BPF port's host end is deleted with its node's namespace, not a moment later.
    let after: Vec<String> = (1..=ids.len()).map(|i| tb.host_view(i)).collect();
    assert_eq!(after, before, "links and qdiscs of the hosts");
    assert!(tb.processes().is_empty());
    for i in 1..=ids.len() {
        assert_eq!(tb.bpf_filters(i), "", "bpf classifiers left on h{i}");
        assert!(!tb.bpf_pins(i).exists(), "bpf pins left on h{i}");
    }
}

fn isolated_and_clean(letter: &str, mode: &'static str) {
    let Some(mut tb) = Testbed::on_datapath(letter, 2, mode) else {
        return;
    };
    let (u1, _u2) = tb.underlay(1, 2);
    let before = vec![tb.host_view(1), tb.host_view(2)];
    let ns_before = tb.namespaces();
    tb.start_agent(1);
    tb.start_agent(2);
    let (h1id, h2id) = (tb.hosts[0].id.clone(), tb.hosts[1].id.clone());
    let hello = tb.ctl().wait_attached(&h1id, 1, T);
    let caps = hello.capabilities.unwrap();
    assert!(
        caps.netns && caps.veth && caps.vxlan && caps.tap && caps.tc,
        "{caps:?}"
    );
    assert_eq!(caps.vlan_datapath, mode);
    assert!(!caps.kvm_usable && !caps.kvm_reason.is_empty());
    assert!(
        hello
            .underlay
            .iter()
            .any(|u| u.addresses.contains(&"10.255.12.1/24".to_string()))
    );

    let (mut a1, a2) = vn_pair("a", 5001, 101, 0xaa);
    a1.nodes[0].routes.push(pb::Route {
        destination: "default".into(),
        via: "10.1.0.2".into(),
    });
    a1.nodes[0].routes.push(pb::Route {
        destination: "192.0.2.0/24".into(),
        via: "10.2.0.2".into(),
    });
    let (b1, b2) = vn_pair("b", 5002, 102, 0xbb);
    tb.ctl().set_desired(&h1id, desired(1, vec![a1, b1]));
    tb.ctl().set_desired(&h2id, desired(1, vec![a2, b2]));
    let r1 = tb.ctl().wait_report(&h1id, 1, T);
    let r2 = tb.ctl().wait_report(&h2id, 1, T);
    assert!(
        r1.converged && r2.converged,
        "{r1:#?}\n{r2:#?}\n{}\n{}",
        tb.log(1),
        tb.log(2)
    );

    // The VXLAN device lives in the node's namespace, its UDP socket in the host's.
    assert!(in_ns(&tb.hosts[0].ns, "ss -uan").1.contains(":4789"));
    assert!(!in_ns(&tb.node_ns(1, "a1"), "ss -uan").1.contains(":4789"));
    assert!(
        in_ns(&tb.node_ns(1, "a1"), "ip -d link show eth0")
            .1
            .contains("vxlan id 5001")
    );
    let routes = in_ns(&tb.node_ns(1, "a1"), "ip route show proto static").1;
    assert!(routes.contains("default via 10.1.0.2 dev eth0"), "{routes}");
    assert!(
        routes.contains("192.0.2.0/24 via 10.2.0.2 dev eth1"),
        "{routes}"
    );

    // Capture on h1's underlay while traffic flows.
    let cap = Capture::start(&tb.hosts[0].ns, &u1, "", format!("/tmp/vt{}.pcap", tb.tag));

    let (na1, na2, nb1, nb2) = (
        tb.node_ns(1, "a1"),
        tb.node_ns(2, "a2"),
        tb.node_ns(1, "b1"),
        tb.node_ns(2, "b2"),
    );
    // Watch VN b's node with the same addresses for any IPv4 traffic while VN a talks.
    let bwatch = Capture::start(&nb2, "any", "ip", format!("/tmp/vt{}b.pcap", tb.tag));
    let (x, y) = (&na1, &na2);
    assert!(
        ping(x, "10.1.0.2"),
        "VN a VXLAN ping\n{}\n{}",
        tb.log(1),
        diag(&tb)
    );
    assert!(
        ping(x, "10.2.0.2"),
        "VN a VLAN ping\n{}\n{}",
        tb.log(1),
        tb.log(2)
    );
    assert!(tcp_ok(x, y, "10.1.0.2", 5201), "VN a TCP over VXLAN");
    assert!(tcp_ok(x, y, "10.2.0.2", 5202), "VN a TCP over VLAN");
    // A node that tags its own frames with the other VN's VLAN ID (102, VN b's on the same
    // substrate link) reaches only its own VN: its tag travels inside VN a's.
    send_tagged(&na1, "eth1", 102, 20);
    send_tagged(&na1, "eth1", 0, 5);

    // Nothing of VN a reached VN b's node with the same addresses.
    let seen = bwatch.stop();
    assert!(
        seen.trim().is_empty(),
        "VN a traffic reached VN b's node:\n{seen}"
    );
    // The neighbour that answered is VN a's (MAC from VN a's plan).
    let neigh = in_ns(&na1, "ip neigh show 10.1.0.2").1;
    assert!(neigh.contains("02:aa:00:00:00:02"), "{neigh}");
    let neigh = in_ns(&na1, "ip neigh show 10.2.0.2").1;
    assert!(neigh.contains("02:aa:00:00:01:02"), "{neigh}");

    // VN b works the same way, through the agent's ExecCommand this time.
    let r = tb.ctl().exec(
        &h1id,
        "b1",
        &["busybox", "ping", "-c", "2", "-W", "2", "10.1.0.2"],
        T,
    );
    assert_eq!(r.exit_code, 0, "{r:?}");
    let r = tb.ctl().exec(
        &h1id,
        "b1",
        &["busybox", "ping", "-c", "2", "-W", "2", "10.2.0.2"],
        T,
    );
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(tcp_ok(&nb1, &nb2, "10.2.0.2", 5203), "VN b TCP over VLAN");
    let neigh = in_ns(&nb1, "ip neigh show 10.1.0.2").1;
    assert!(neigh.contains("02:bb:00:00:00:02"), "{neigh}");
    let r = tb
        .ctl()
        .exec(&h1id, "b1", &["ip", "-o", "link", "show", "eth0"], T);
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("mtu 1450"),
        "{r:?}"
    );
    // No virtual node reaches the hosts' underlay or management addresses.
    for dst in ["10.255.12.1", "10.255.12.2", "10.254.1.1", "10.254.2.2"] {
        assert!(
            !in_ns(&na1, &format!("busybox ping -c 1 -W 1 {dst}")).0,
            "node reached {dst}"
        );
    }

    let dump = cap.stop();
    for want in ["vlan 101", "vlan 102", "vni 5001", "vni 5002"] {
        assert!(
            dump.contains(want),
            "capture lacks {want}:\n{}",
            &dump[..dump.len().min(3000)]
        );
    }

    if mode == "bpf" {
        // Frames tagged with an ID that no link of h2 uses are dropped there and counted.
        let before = tb.bpf_counter(2, 0);
        send_tagged(&tb.hosts[0].ns.clone(), &u1, 999, 7);
        let t = Instant::now();
        while tb.bpf_counter(2, 0) < before + 7 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "unknown IDs not counted"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(tb.bpf_counter(1, 3) > 0, "forwarded frames counted on h1");
        bpf_survives_agent_kill(&mut tb, &na1);
    } else {
        userspace_survives_agent_kill(&mut tb, &na1);
    }

    // Teardown: an empty desired state leaves the hosts exactly as before.
    teardown_leaves_nothing(&mut tb, 2, &before, &ns_before);
}

/// Kill -9 of the agent while BPF VLAN links are live: the classifiers stay attached and
/// traffic flows; the restarted agent adopts them (the same programs, not reloaded) and
/// converges without rebuilding anything. No datapath process exists.
fn bpf_survives_agent_kill(tb: &mut Testbed, na1: &str) {
    let filters = tb.bpf_filters(1);
    assert!(
        filters.lines().count() >= 3,
        "classifiers on the underlay and both ports of h1:\n{filters}"
    );
    assert!(tb.bpf_pins(1).join("_agent/vnet_vlan_fwd").exists());
    let agents: Vec<u32> = tb
        .hosts
        .iter()
        .filter_map(|h| h.agent.as_ref().map(|a| a.id()))
        .collect();
    let mut procs = tb.processes();
    procs.retain(|p| !agents.contains(p));
    assert!(
        procs.is_empty(),
        "a datapath process on the BPF path: {procs:?}"
    );
    kill_and_restart_agent(tb, na1);
    assert_eq!(
        tb.bpf_filters(1),
        filters,
        "classifiers were replaced, not adopted"
    );
    assert!(ping(na1, "10.2.0.2"));
}

/// Kill -9 of h1's agent: both links of `na1` keep forwarding while it is dead; restarted, it
/// converges without rebuilding a namespace.
fn kill_and_restart_agent(tb: &mut Testbed, na1: &str) {
    let h1id = tb.hosts[0].id.clone();
    tb.kill_agent(1);
    assert!(
        ping(na1, "10.2.0.2"),
        "VLAN link down while the agent is dead"
    );
    assert!(
        ping(na1, "10.1.0.2"),
        "VXLAN link down while the agent is dead"
    );
    let ns_inodes = sh(&format!("ls -i /run/netns | grep {} | sort", tb.tag));
    let since = tb.ctl().report_count(&h1id);
    tb.start_agent(1);
    tb.ctl().wait_attached(&h1id, 2, T);
    let again = tb.ctl().wait_report_since(&h1id, 1, since, T);
    assert!(again.converged, "{again:#?}");
    assert_eq!(
        sh(&format!("ls -i /run/netns | grep {} | sort", tb.tag)),
        ns_inodes,
        "a restarted agent rebuilt namespaces"
    );
}

/// Kill -9 of the agent: the userspace datapath is a process of its own and keeps forwarding; a
/// restarted agent adopts it; if the datapath itself dies, the agent starts it again at once.
fn userspace_survives_agent_kill(tb: &mut Testbed, na1: &str) {
    let na1 = na1.to_string();
    let dp_pid = std::fs::read_to_string(tb.hosts[0].state_dir.join("state.json")).unwrap();
    kill_and_restart_agent(tb, &na1);
    let dp_pid_after = std::fs::read_to_string(tb.hosts[0].state_dir.join("state.json")).unwrap();
    let pid_of =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["datapath"].clone();
    assert_eq!(
        pid_of(&dp_pid),
        pid_of(&dp_pid_after),
        "datapath was restarted"
    );
    assert!(ping(&na1, "10.2.0.2"));
    let dp = pid_of(&dp_pid_after)[0].as_u64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dp),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = Instant::now();
    while !ping(&na1, "10.2.0.2") {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "VLAN link not restored\n{}",
            tb.log(1)
        );
    }
    println!(
        "VLAN link restored {:?} after the datapath was killed",
        t.elapsed()
    );
}

#[test]
fn link_over_three_hosts_is_forwarded_hop_by_hop_through_the_middle_host() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("b", 3);
    let (_u12, u21) = tb.underlay(1, 2);
    let (u23, _u32) = tb.underlay(2, 3);
    for i in 1..=3 {
        tb.start_agent(i);
    }
    let ids: Vec<String> = tb.hosts.iter().map(|h| h.id.clone()).collect();
    // Three links from n1 (h1) to n3 (h3), each mapped onto h1-h2-h3: VXLAN, VLAN, and mixed.
    let h1 = slice(
        "vnt",
        &["n1"],
        vec![
            seg(
                "tx",
                1450,
                0,
                nif("n1", "eth0", "10.3.0.1/24", ""),
                hop(Vxlan, 6001, "10.255.12.1", "10.255.12.2"),
            ),
            seg(
                "tv",
                1500,
                0,
                nif("n1", "eth1", "10.4.0.1/24", ""),
                hop(Vlan, 301, "10.255.12.1", "10.255.12.2"),
            ),
            seg(
                "tm",
                1450,
                0,
                nif("n1", "eth2", "10.5.0.1/24", ""),
                hop(Vxlan, 6003, "10.255.12.1", "10.255.12.2"),
            ),
        ],
    );
    let h2 = slice(
        "vnt",
        &[],
        vec![
            seg(
                "tx",
                1450,
                0,
                hop(Vxlan, 6001, "10.255.12.2", "10.255.12.1"),
                hop(Vxlan, 6002, "10.255.23.2", "10.255.23.3"),
            ),
            seg(
                "tv",
                1500,
                0,
                hop(Vlan, 301, "10.255.12.2", "10.255.12.1"),
                hop(Vlan, 302, "10.255.23.2", "10.255.23.3"),
            ),
            seg(
                "tm",
                1450,
                0,
                hop(Vxlan, 6003, "10.255.12.2", "10.255.12.1"),
                hop(Vlan, 303, "10.255.23.2", "10.255.23.3"),
            ),
        ],
    );
    let h3 = slice(
        "vnt",
        &["n3"],
        vec![
            seg(
                "tx",
                1450,
                0,
                nif("n3", "eth0", "10.3.0.3/24", ""),
                hop(Vxlan, 6002, "10.255.23.3", "10.255.23.2"),
            ),
            seg(
                "tv",
                1500,
                0,
                nif("n3", "eth1", "10.4.0.3/24", ""),
                hop(Vlan, 302, "10.255.23.3", "10.255.23.2"),
            ),
            seg(
                "tm",
                1450,
                0,
                nif("n3", "eth2", "10.5.0.3/24", ""),
                hop(Vlan, 303, "10.255.23.3", "10.255.23.2"),
            ),
        ],
    );
    for (id, s) in ids.iter().zip([h1, h2, h3]) {
        tb.ctl().set_desired(id, desired(1, vec![s]));
    }
    for (i, id) in ids.iter().enumerate() {
        let r = tb.ctl().wait_report(id, 1, T);
        assert!(r.converged, "{id}: {r:#?}\n{}", tb.log(i + 1));
    }
    let transit = format!("vt-{}-vnt-t", ids[1]);
    assert!(
        tb.namespaces().contains(&transit),
        "transit namespace on h2"
    );
    let n1 = tb.node_ns(1, "n1");
    let h2ns = tb.hosts[1].ns.clone();
    for dst in ["10.3.0.3", "10.4.0.3", "10.5.0.3"] {
        let before = (
            rx_packets(&h2ns, &u21),
            tx_packets(&h2ns, &u23),
            rx_packets(&h2ns, &u23),
            tx_packets(&h2ns, &u21),
        );
        let (ok, out) = in_ns(&n1, &format!("busybox ping -c 5 -W 2 {dst}"));
        assert!(ok, "ping {dst} through h2: {out}\n{}", tb.log(2));
        let after = (
            rx_packets(&h2ns, &u21),
            tx_packets(&h2ns, &u23),
            rx_packets(&h2ns, &u23),
            tx_packets(&h2ns, &u21),
        );
        // Requests in on h1's link and out on h3's; replies back the other way.
        assert!(
            after.0 - before.0 >= 5 && after.1 - before.1 >= 5,
            "{dst}: {before:?} -> {after:?}"
        );
        assert!(
            after.2 - before.2 >= 5 && after.3 - before.3 >= 5,
            "{dst}: {before:?} -> {after:?}"
        );
    }
    // Tear down: nothing of the VN is left on any host.
    for id in &ids {
        tb.ctl().set_desired(id, desired(2, vec![]));
    }
    for id in &ids {
        tb.ctl().wait_converged(id, 2, T);
    }
    let left: Vec<String> = tb
        .namespaces()
        .into_iter()
        .filter(|n| n.starts_with("vt-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn iperf_mbps(client_ns: &str, server_ns: &str, server_ip: &str, port: u16, reverse: bool) -> f64 {
    let mut srv = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            server_ns,
            "iperf3",
            "-s",
            "-1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = in_ns(
        client_ns,
        &format!(
            "iperf3 -c {server_ip} -p {port} -t 5 -O 1 -J {}",
            if reverse { "-R" } else { "" }
        ),
    );
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(ok, "iperf3: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
        / 1e6
}

#[test]
fn a_50_mbit_link_measures_within_ten_percent() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("c", 2);
    tb.underlay(1, 2);
    tb.start_agent(1);
    tb.start_agent(2);
    let (h1, h2) = (tb.hosts[0].id.clone(), tb.hosts[1].id.clone());
    let s1 = slice(
        "vns",
        &["s1"],
        vec![seg(
            "sl",
            1450,
            50,
            nif("s1", "eth0", "10.6.0.1/24", ""),
            hop(Vxlan, 7001, "10.255.12.1", "10.255.12.2"),
        )],
    );
    let s2 = slice(
        "vns",
        &["s2"],
        vec![seg(
            "sl",
            1450,
            50,
            nif("s2", "eth0", "10.6.0.2/24", ""),
            hop(Vxlan, 7001, "10.255.12.2", "10.255.12.1"),
        )],
    );
    tb.ctl().set_desired(&h1, desired(1, vec![s1]));
    tb.ctl().set_desired(&h2, desired(1, vec![s2]));
    tb.ctl().wait_converged(&h1, 1, T);
    tb.ctl().wait_converged(&h2, 1, T);
    let (a, b) = (tb.node_ns(1, "s1"), tb.node_ns(2, "s2"));
    let fwd = iperf_mbps(&a, &b, "10.6.0.2", 5301, false);
    let rev = iperf_mbps(&a, &b, "10.6.0.2", 5302, true);
    println!("50 Mbit/s link: {fwd:.1} Mbit/s forward, {rev:.1} Mbit/s reverse");
    assert!((45.0..=55.0).contains(&fwd), "forward {fwd} Mbit/s");
    assert!((45.0..=55.0).contains(&rev), "reverse {rev} Mbit/s");
}

#[test]
fn agent_killed_mid_apply_converges_after_restart_and_spares_look_alikes() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("d", 1);
    let h = tb.hosts[0].id.clone();
    let host_ns = tb.hosts[0].ns.clone();
    // Look-alikes made by someone else: a namespace with our prefix and host id, a link inside it,
    // and a link in the host namespace named like our transit devices.
    let look_ns = format!("vt-{h}-zz1");
    sh(&format!(
        "ip netns add {look_ns} && ip link add xzz1a netns {host_ns} type veth peer name eth0 netns {look_ns}"
    ));
    let n = 300;
    let nodes: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let links = (0..n / 2)
        .map(|i| {
            seg(
                &format!("kl{i}"),
                1500,
                100,
                nif(
                    &format!("k{}", 2 * i),
                    "eth0",
                    &format!("10.7.{}.1/30", i),
                    "",
                ),
                nif(
                    &format!("k{}", 2 * i + 1),
                    "eth0",
                    &format!("10.7.{}.2/30", i),
                    "",
                ),
            )
        })
        .collect();
    let big = slice("vnk", &node_refs, links);
    tb.ctl().set_desired(&h, desired(1, vec![big]));
    tb.start_agent(1);
    let prefix = format!("vt-{h}-k");
    let count = || {
        std::fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count()
    };
    let t = Instant::now();
    while count() < 10 {
        assert!(
            t.elapsed() < T,
            "agent never started building\n{}",
            tb.log(1)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    tb.kill_agent(1);
    let at_kill = count();
    assert!(
        at_kill < n,
        "killed too late ({at_kill} of {n} namespaces): not mid-apply"
    );
    tb.start_agent(1);
    let r = tb.ctl().wait_report(&h, 1, T);
    assert!(r.converged, "{r:#?}\n{}", tb.log(1));
    assert_eq!(count(), n, "one namespace per node, no more");
    // Every node has exactly its one link, tagged, up, shaped.
    for i in [0, 1, n / 2, n - 1] {
        let ns = tb.node_ns(1, &format!("k{i}"));
        let links = sh(&format!(
            "ip -n {ns} -o link show | grep -v ': lo:' | wc -l"
        ));
        assert_eq!(links.trim(), "1", "{ns}");
        let q = sh(&format!("tc -n {ns} qdisc show dev eth0"));
        assert!(q.contains("tbf"), "{ns}: {q}");
    }
    assert!(tb.namespaces().contains(&look_ns));
    // Remove everything with `substrate-agent cleanup` (the agent stopped): our namespaces go,
    // the look-alikes stay.
    tb.stop_agent(1);
    let (ok, out) = sh_ok(&format!(
        "{} cleanup --host-id {h} --state-dir {} --netns {host_ns} --name-prefix vt --guest-run-dir {}",
        env!("CARGO_BIN_EXE_substrate-agent"),
        tb.hosts[0].state_dir.display(),
        tb.hosts[0].state_dir.join("guests").display(),
    ));
    assert!(ok, "cleanup: {out}");
    assert!(out.contains(&format!("vt-{h}-k0")), "{out}");
    assert_eq!(count(), 0);
    assert!(
        tb.namespaces().contains(&look_ns),
        "look-alike namespace deleted"
    );
    assert!(
        in_ns(&look_ns, "ip link show eth0").0,
        "look-alike's link deleted"
    );
    assert!(
        sh_ok(&format!("ip -n {host_ns} link show xzz1a")).0,
        "look-alike host link deleted"
    );
}

#[test]
fn vm_node_joins_a_vn_over_vxlan_and_is_stopped_on_teardown() {
    if !root_or_skip() {
        return;
    }
    let image = std::path::Path::new("/var/lib/vnet/images/default/image.json");
    if !image.exists() {
        if std::env::var("VNET_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("guest image missing: run deploy/guest/build-image.sh");
        }
        println!("SKIP vm_node_joins_a_vn_over_vxlan_and_is_stopped_on_teardown: no guest image");
        return;
    }
    let mut tb = Testbed::new("e", 2);
    tb.underlay(1, 2);
    tb.start_agent(1);
    tb.start_agent(2);
    let (h1, h2) = (tb.hosts[0].id.clone(), tb.hosts[1].id.clone());
    let hello = tb.ctl().wait_attached(&h1, 1, T);
    assert!(
        hello.node_kinds.contains(&(pb::NodeKind::Vm as i32)),
        "{hello:?}"
    );
    let mut s1 = slice(
        "vnm",
        &["m1"],
        vec![
            seg(
                "ml",
                1450,
                0,
                nif("m1", "eth0", "10.8.0.1/24", "02:00:00:00:08:01"),
                hop(Vxlan, 8001, "10.255.12.1", "10.255.12.2"),
            ),
            seg(
                "mv",
                1500,
                0,
                nif("m1", "eth1", "10.8.1.1/24", "02:00:00:00:08:02"),
                hop(Vlan, 801, "10.255.12.1", "10.255.12.2"),
            ),
        ],
    );
    s1.nodes[0].kind = pb::NodeKind::Vm as i32;
    s1.nodes[0].guest = Some(pb::GuestSpec {
        vcpus: 1,
        memory_mb: 128,
        image: "default".into(),
        nic: pb::NicModel::Virtio as i32,
        accel: pb::Acceleration::Auto as i32,
        arch: String::new(),
    });
    let s2 = slice(
        "vnm",
        &["m2"],
        vec![
            seg(
                "ml",
                1450,
                0,
                nif("m2", "eth0", "10.8.0.2/24", ""),
                hop(Vxlan, 8001, "10.255.12.2", "10.255.12.1"),
            ),
            seg(
                "mv",
                1500,
                0,
                nif("m2", "eth1", "10.8.1.2/24", ""),
                hop(Vlan, 801, "10.255.12.2", "10.255.12.1"),
            ),
        ],
    );
    tb.ctl().set_desired(&h1, desired(1, vec![s1]));
    tb.ctl().set_desired(&h2, desired(1, vec![s2]));
    let r = tb.ctl().wait_report(&h1, 1, Duration::from_secs(120));
    assert!(r.converged, "{r:#?}\n{}", tb.log(1));
    tb.ctl().wait_converged(&h2, 1, T);
    // The sandbox interface carries no address: the guest has it.
    let sandbox = tb.node_ns(1, "m1");
    let (_, addrs) = in_ns(&sandbox, "ip -o addr show eth0");
    assert!(!addrs.contains("10.8.0.1"), "{addrs}");
    // The guest boots under TCG: retry for a while.
    let m2 = tb.node_ns(2, "m2");
    let t = Instant::now();
    while !ping(&m2, "10.8.0.1") {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "guest unreachable\n{}",
            tb.log(1)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        ping(&m2, "10.8.1.1"),
        "guest over the VLAN link\n{}",
        tb.log(1)
    );
    let r = tb
        .ctl()
        .exec(&h1, "m1", &["cat", "/sys/class/net/eth0/address"], T);
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("02:00:00:00:08:01"),
        "{r:?}"
    );
    tb.ctl().set_desired(&h1, desired(2, vec![]));
    tb.ctl().set_desired(&h2, desired(2, vec![]));
    tb.ctl().wait_converged(&h1, 2, T);
    tb.ctl().wait_converged(&h2, 2, T);
    let procs = tb.processes_besides_agents();
    assert!(procs.is_empty(), "QEMU or datapath left running: {procs:?}");
    assert!(!tb.namespaces().contains(&sandbox));
}

#[test]
fn child_vn_rides_inside_its_parents_link() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("f", 2);
    tb.underlay(1, 2);
    tb.start_agent(1);
    tb.start_agent(2);
    let (h1, h2) = (tb.hosts[0].id.clone(), tb.hosts[1].id.clone());
    // Parent VN: p1 (h1) - p2 (h2) over VXLAN, 10.1.0.0/24.
    let parent = |me: &str, addr: &str, local: &str, remote: &str| {
        slice(
            "vnp",
            &[me],
            vec![seg(
                "pl",
                1450,
                0,
                nif(me, "eth0", addr, ""),
                hop(Vxlan, 8101, local, remote),
            )],
        )
    };
    // Child VN inside the parent's nodes: c1 - c2 over VXLAN and over VLAN, tunnels between the
    // parent's addresses (10.1.0.1 <-> 10.1.0.2) in the parent's namespaces.
    let child = |me: &str, ctx: &str, n: u8, local: &str, remote: &str| {
        let mut s = slice(
            "vnc",
            &[me],
            vec![
                seg(
                    "cx",
                    1400,
                    0,
                    nif(me, "eth0", &format!("10.20.0.{n}/24"), ""),
                    hop(Vxlan, 8102, local, remote),
                ),
                seg(
                    "cv",
                    1450,
                    0,
                    nif(me, "eth1", &format!("10.21.0.{n}/24"), ""),
                    hop(Vlan, 811, local, remote),
                ),
            ],
        );
        s.context_node_id = ctx.into();
        s.depth = 1;
        s
    };
    tb.ctl().set_desired(
        &h1,
        desired(
            1,
            vec![
                parent("p1", "10.1.0.1/24", "10.255.12.1", "10.255.12.2"),
                child("c1", "p1", 1, "10.1.0.1", "10.1.0.2"),
            ],
        ),
    );
    tb.ctl().set_desired(
        &h2,
        desired(
            1,
            vec![
                parent("p2", "10.1.0.2/24", "10.255.12.2", "10.255.12.1"),
                child("c2", "p2", 2, "10.1.0.2", "10.1.0.1"),
            ],
        ),
    );
    let r = tb.ctl().wait_report(&h1, 1, T);
    assert!(r.converged, "{r:#?}\n{}", tb.log(1));
    tb.ctl().wait_converged(&h2, 1, T);
    let c1 = tb.node_ns(1, "c1");
    let p1 = tb.node_ns(1, "p1");
    // The child's VXLAN socket lives in the parent's node namespace, not on the host.
    let (_, udp) = in_ns(&p1, "ss -uan");
    assert!(udp.contains(":4789"), "{udp}");
    let before = rx_packets(&tb.node_ns(2, "p2"), "eth0");
    assert!(ping(&c1, "10.20.0.2"), "child VXLAN\n{}", tb.log(1));
    assert!(ping(&c1, "10.21.0.2"), "child VLAN\n{}", tb.log(1));
    assert!(
        rx_packets(&tb.node_ns(2, "p2"), "eth0") - before >= 4,
        "child traffic inside the parent's link"
    );
    // Removing the parent takes the child with it (its context is gone) and fails it clearly.
    tb.ctl().set_desired(
        &h1,
        desired(2, vec![child("c1", "p1", 1, "10.1.0.1", "10.1.0.2")]),
    );
    let r = tb.ctl().wait_report(&h1, 2, T);
    let c = r.vns.iter().find(|v| v.vn_id == "vnc").unwrap();
    assert_eq!(c.state, pb::SliceState::Failed as i32);
    assert!(
        c.message
            .contains("context_node_id p1 is not a node on this host"),
        "{c:?}"
    );
    assert!(
        !tb.namespaces()
            .iter()
            .any(|n| n.starts_with(&format!("vt-{h1}")))
    );
}

#[test]
fn a_slice_that_cannot_be_built_fails_alone_and_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("g", 1);
    tb.start_agent(1);
    let h = tb.hosts[0].id.clone();
    let good = slice(
        "vngood",
        &["g1", "g2"],
        vec![seg(
            "gl",
            1500,
            0,
            nif("g1", "eth0", "10.9.0.1/24", ""),
            nif("g2", "eth0", "10.9.0.2/24", ""),
        )],
    );
    // A VXLAN link whose MTU the underlay (the 1500-byte management link here) cannot carry.
    let bad = slice(
        "vnbad",
        &["x1", "x2"],
        vec![
            seg(
                "xl",
                1500,
                0,
                nif("x1", "eth0", "10.9.0.1/24", ""),
                nif("x2", "eth0", "10.9.0.2/24", ""),
            ),
            seg(
                "xv",
                1500,
                0,
                nif("x1", "eth1", "10.9.1.1/24", ""),
                hop(Vxlan, 9101, "10.254.1.2", "10.254.1.1"),
            ),
        ],
    );
    // And one the controller got wrong.
    let mut invalid = slice("vninv", &["y1"], vec![]);
    invalid.nodes[0].routes.push(pb::Route {
        destination: "10.0.0.0/33".into(),
        via: "10.9.0.2".into(),
    });
    tb.ctl()
        .set_desired(&h, desired(1, vec![good, bad, invalid]));
    let r = tb.ctl().wait_report(&h, 1, T);
    let st = |id: &str| r.vns.iter().find(|v| v.vn_id == id).unwrap().clone();
    assert_eq!(st("vngood").state, pb::SliceState::Ready as i32, "{r:#?}");
    assert_eq!(st("vnbad").state, pb::SliceState::Failed as i32);
    assert!(
        st("vnbad")
            .message
            .contains("link xv: mtu 1500 exceeds what underlay"),
        "{:?}",
        st("vnbad")
    );
    assert_eq!(st("vninv").state, pb::SliceState::Failed as i32);
    assert!(
        st("vninv")
            .message
            .contains("route destination \"10.0.0.0/33\""),
        "{:?}",
        st("vninv")
    );
    assert!(!r.converged);
    let names = tb.namespaces();
    assert!(names.contains(&tb.node_ns(1, "g1")));
    for n in ["x1", "x2", "y1"] {
        assert!(
            !names.contains(&tb.node_ns(1, n)),
            "{n} left behind: {names:?}"
        );
    }
    assert!(in_ns(&tb.node_ns(1, "g1"), "busybox ping -c 1 -W 2 10.9.0.2").0);
}

#[test]
fn newer_desired_state_supersedes_and_controller_restart_changes_nothing() {
    if !root_or_skip() {
        return;
    }
    let mut tb = Testbed::new("h", 1);
    tb.start_agent(1);
    let h = tb.hosts[0].id.clone();
    tb.ctl().wait_attached(&h, 1, T);
    let many: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let big = slice("vnbig", &refs, vec![]);
    let small = slice(
        "vnsmall",
        &["q1", "q2"],
        vec![seg(
            "ql",
            1500,
            0,
            nif("q1", "eth0", "10.11.0.1/24", ""),
            nif("q2", "eth0", "10.11.0.2/24", ""),
        )],
    );
    // Generation 2 arrives while 1 is being applied: the host ends up exactly at 2.
    tb.ctl().set_desired(&h, desired(1, vec![big]));
    std::thread::sleep(Duration::from_millis(50));
    tb.ctl().set_desired(&h, desired(2, vec![small.clone()]));
    let r = tb.ctl().wait_report(&h, 2, T);
    assert!(r.converged, "{r:#?}\n{}", tb.log(1));
    let ours: Vec<String> = tb
        .namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("vt-{h}-")))
        .collect();
    assert_eq!(ours, vec![tb.node_ns(1, "q1"), tb.node_ns(1, "q2")]);

    // The controller restarts: the agent re-attaches, reports generation 2 again, rebuilds nothing.
    let inodes = sh(&format!("ls -i /run/netns | grep vt-{h}- | sort"));
    tb.ctl.take();
    let ctl = FakeController::start(&tb.ctl_ns, format!("0.0.0.0:{PORT}").parse().unwrap());
    ctl.set_desired(&h, desired(2, vec![small]));
    tb.ctl = Some(ctl);
    let hello = tb.ctl().wait_attached(&h, 1, T);
    assert_eq!(hello.applied_generation, 2);
    tb.ctl().wait_converged(&h, 2, T);
    assert_eq!(
        sh(&format!("ls -i /run/netns | grep vt-{h}- | sort")),
        inodes
    );
    assert!(in_ns(&tb.node_ns(1, "q1"), "busybox ping -c 1 -W 2 10.11.0.2").0);
}
