//! Root integration tests: the real agent binary in host namespaces, driven by a fake controller.
//! Without root they print `SKIP` (and fail under `VNET_REQUIRE_ROOT=1`).

mod common;

use std::time::Duration;

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
            seg(&format!("{p}x"), 1450, 0, nif(&format!("{p}1"), "eth0", "10.1.0.1/24", &mac(1, 0)), hop(Vxlan, vni, "10.255.12.1", "10.255.12.2")),
            seg(&format!("{p}v"), 1500, 0, nif(&format!("{p}1"), "eth1", "10.2.0.1/24", &mac(1, 1)), hop(Vlan, vlan, "10.255.12.1", "10.255.12.2")),
        ],
    );
    let h2 = slice(
        &format!("vn{p}"),
        &[&format!("{p}2")],
        vec![
            seg(&format!("{p}x"), 1450, 0, nif(&format!("{p}2"), "eth0", "10.1.0.2/24", &mac(2, 0)), hop(Vxlan, vni, "10.255.12.2", "10.255.12.1")),
            seg(&format!("{p}v"), 1500, 0, nif(&format!("{p}2"), "eth1", "10.2.0.2/24", &mac(2, 1)), hop(Vlan, vlan, "10.255.12.2", "10.255.12.1")),
        ],
    );
    (h1, h2)
}

fn diag(tb: &Testbed) -> String {
    let mut s = String::new();
    for ns in tb.namespaces() {
        s.push_str(&format!("== {ns}\n{}\n", sh_ok(&format!("ip -n {ns} -d addr; ip -n {ns} route; tc -n {ns} qdisc; ip netns exec {ns} ss -uan")).1));
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
        .args(["netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = in_ns(client_ns, &format!("iperf3 -c {server_ip} -p {port} -t 1 -J"));
    let _ = srv.kill();
    let _ = srv.wait();
    ok && out.contains("\"bits_per_second\"")
}

#[test]
fn same_address_plan_in_two_vns_over_vxlan_and_vlan_is_isolated_and_teardown_is_clean() {
    if !root_or_skip("same_address_plan_in_two_vns_over_vxlan_and_vlan_is_isolated_and_teardown_is_clean") {
        return;
    }
    let mut tb = Testbed::new("a", 2);
    let (u1, _u2) = tb.underlay(1, 2);
    let before = (tb.host_view(1), tb.host_view(2));
    let ns_before = tb.namespaces();
    tb.start_agent(1);
    tb.start_agent(2);
    let (h1id, h2id) = (tb.hosts[0].id.clone(), tb.hosts[1].id.clone());
    let hello = tb.ctl().wait_attached(&h1id, 1, T);
    let caps = hello.capabilities.unwrap();
    assert!(caps.netns && caps.veth && caps.vxlan && caps.tap && caps.tc, "{caps:?}");
    assert_eq!(caps.vlan_datapath, "userspace");
    assert!(!caps.kvm_usable && !caps.kvm_reason.is_empty());
    assert!(hello.underlay.iter().any(|u| u.addresses.contains(&"10.255.12.1/24".to_string())));

    let (a1, a2) = vn_pair("a", 5001, 101, 0xaa);
    let (b1, b2) = vn_pair("b", 5002, 102, 0xbb);
    tb.ctl().set_desired(&h1id, desired(1, vec![a1, b1]));
    tb.ctl().set_desired(&h2id, desired(1, vec![a2, b2]));
    let r1 = tb.ctl().wait_report(&h1id, 1, T);
    let r2 = tb.ctl().wait_report(&h2id, 1, T);
    assert!(r1.converged && r2.converged, "{r1:#?}\n{r2:#?}\n{}\n{}", tb.log(1), tb.log(2));

    // Capture on h1's underlay while traffic flows.
    let pcap = format!("/tmp/vt{}.pcap", tb.tag);
    let mut cap = std::process::Command::new("ip")
        .args(["netns", "exec", &tb.hosts[0].ns, "tcpdump", "-i", &u1, "-U", "-w", &pcap])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));

    let (na1, na2, nb1, nb2) = (tb.node_ns(1, "a1"), tb.node_ns(2, "a2"), tb.node_ns(1, "b1"), tb.node_ns(2, "b2"));
    // Watch VN b's node with the same addresses for any IPv4 traffic while VN a talks.
    let bcap = format!("/tmp/vt{}b.pcap", tb.tag);
    let mut bwatch = std::process::Command::new("ip")
        .args(["netns", "exec", &nb2, "tcpdump", "-i", "any", "-U", "-w", &bcap, "ip"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    for (x, y) in [(&na1, &na2)] {
        assert!(ping(x, "10.1.0.2"), "VN a VXLAN ping\n{}\n{}", tb.log(1), diag(&tb));
        assert!(ping(x, "10.2.0.2"), "VN a VLAN ping\n{}\n{}", tb.log(1), tb.log(2));
        assert!(tcp_ok(x, y, "10.1.0.2", 5201), "VN a TCP over VXLAN");
        assert!(tcp_ok(x, y, "10.2.0.2", 5202), "VN a TCP over VLAN");
    }
    // Nothing of VN a reached VN b's node with the same addresses.
    std::thread::sleep(Duration::from_millis(300));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bwatch.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = bwatch.wait();
    let seen = sh(&format!("tcpdump -nn -r {bcap} 2>/dev/null; rm -f {bcap}"));
    assert!(seen.trim().is_empty(), "VN a traffic reached VN b's node:\n{seen}");
    // The neighbour that answered is VN a's (MAC from VN a's plan).
    let neigh = in_ns(&na1, "ip neigh show 10.1.0.2").1;
    assert!(neigh.contains("02:aa:00:00:00:02"), "{neigh}");
    let neigh = in_ns(&na1, "ip neigh show 10.2.0.2").1;
    assert!(neigh.contains("02:aa:00:00:01:02"), "{neigh}");

    // VN b works the same way, through the agent's ExecCommand this time.
    let r = tb.ctl().exec(&h1id, "b1", &["busybox", "ping", "-c", "2", "-W", "2", "10.1.0.2"], T);
    assert_eq!(r.exit_code, 0, "{r:?}");
    let r = tb.ctl().exec(&h1id, "b1", &["busybox", "ping", "-c", "2", "-W", "2", "10.2.0.2"], T);
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(tcp_ok(&nb1, &nb2, "10.2.0.2", 5203), "VN b TCP over VLAN");
    let neigh = in_ns(&nb1, "ip neigh show 10.1.0.2").1;
    assert!(neigh.contains("02:bb:00:00:00:02"), "{neigh}");
    let r = tb.ctl().exec(&h1id, "b1", &["ip", "-o", "link", "show", "eth0"], T);
    assert!(String::from_utf8_lossy(&r.stdout).contains("mtu 1450"), "{r:?}");
    // No virtual node reaches the hosts' underlay or management addresses.
    for dst in ["10.255.12.1", "10.255.12.2", "10.254.1.1", "10.254.2.2"] {
        assert!(!in_ns(&na1, &format!("busybox ping -c 1 -W 1 {dst}")).0, "node reached {dst}");
    }

    std::thread::sleep(Duration::from_millis(500));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cap.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = cap.wait();
    let dump = sh(&format!("tcpdump -nn -e -r {pcap} 2>/dev/null; rm -f {pcap}"));
    for want in ["vlan 101", "vlan 102", "vni 5001", "vni 5002"] {
        assert!(dump.contains(want), "capture lacks {want}:\n{}", &dump[..dump.len().min(3000)]);
    }

    // Teardown: an empty desired state leaves the hosts exactly as before.
    tb.ctl().set_desired(&h1id, desired(2, vec![]));
    tb.ctl().set_desired(&h2id, desired(2, vec![]));
    tb.ctl().wait_converged(&h1id, 2, T);
    tb.ctl().wait_converged(&h2id, 2, T);
    let agents: Vec<u32> = tb.hosts.iter().map(|h| h.agent.as_ref().unwrap().id()).collect();
    let mut procs = tb.processes();
    procs.retain(|p| !agents.contains(p));
    assert!(procs.is_empty(), "processes left besides the agents: {procs:?}");
    tb.stop_agent(1);
    tb.stop_agent(2);
    assert_eq!(tb.namespaces(), ns_before, "namespaces");
    assert_eq!((tb.host_view(1), tb.host_view(2)), before, "links and qdiscs of the hosts");
    assert!(tb.processes().is_empty());
}
