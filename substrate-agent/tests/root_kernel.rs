//! Root tests of the kernel layer's TAP and join operations, which the planner's transit joins and
//! the guest runtime's TAPs share: a TAP is created untagged when no tag is given; a join is
//! idempotent (exactly one redirect of ours each way, however often it runs) and follows a TAP
//! that was made anew; an unjoin removes our redirect and is idempotent too. A BPF VLAN port's
//! host end is gone when its namespace's deletion returns. Unique names, cleanup on panic, and a
//! leak check.

mod common;

use substrate_agent::host::kernel::{IfSpec, Kernel, PortSpec};
use substrate_agent::host::linux::LinuxKernel;
use substrate_agent::reconcile::naming::Naming;

use common::{root_or_skip, sh, sh_ok};

/// A namespace of this test, deleted even when the test panics.
struct Ns(String);

impl Ns {
    /// Deletes the namespace and checks that it is gone (the leak check).
    fn delete_and_check(self) {
        let name = self.0.clone();
        drop(self);
        assert!(
            !sh("ip netns list")
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "namespace {name} left behind"
        );
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sh_ok(&format!("ip netns delete {}", self.0));
    }
}

/// The devices our ingress filters on `dev` redirect to, as `tc` shows them.
fn redirects(ns: &str, dev: &str) -> Vec<String> {
    sh(&format!("tc -n {ns} filter show dev {dev} ingress"))
        .split("Redirect to device ")
        .skip(1)
        .filter_map(|s| s.split(')').next().map(str::to_string))
        .collect()
}

#[test]
fn joins_are_idempotent_follow_a_new_tap_and_unjoin() {
    if !root_or_skip() {
        return;
    }
    let ns = Ns(format!("vtk-{}", std::process::id()));
    sh(&format!(
        "ip netns add {0} && ip -n {0} link add a0 type veth peer name b0 && ip -n {0} link set a0 up && ip -n {0} link set b0 up",
        ns.0
    ));
    let k = LinuxKernel::new().expect("kernel");
    let tap = IfSpec {
        ns: ns.0.clone(),
        ifname: "t0".into(),
        mtu: 1400,
        mac: None,
        addresses: vec![],
    };
    k.create_tap(&tap, None).expect("create tap");
    let shown = sh(&format!("ip -n {} -d link show t0", ns.0));
    assert!(
        shown.contains("mtu 1400") && shown.contains("tun type tap"),
        "{shown}"
    );
    assert!(!shown.contains("alias"), "an untagged TAP: {shown}");

    for _ in 0..3 {
        k.join(&ns.0, "a0", "t0").expect("join");
    }
    assert_eq!(redirects(&ns.0, "a0"), ["t0"]);
    assert_eq!(redirects(&ns.0, "t0"), ["a0"]);

    // The TAP made anew (another device under the same name): the join follows it.
    k.delete_link(Some(&ns.0), "t0").expect("delete tap");
    k.create_tap(&tap, None).expect("create tap again");
    k.join(&ns.0, "a0", "t0").expect("join the new TAP");
    assert_eq!(redirects(&ns.0, "a0"), ["t0"]);
    assert_eq!(redirects(&ns.0, "t0"), ["a0"]);

    k.unjoin(&ns.0, "a0").expect("unjoin");
    k.unjoin(&ns.0, "a0").expect("unjoin again");
    assert!(redirects(&ns.0, "a0").is_empty());
    assert_eq!(redirects(&ns.0, "t0"), ["a0"], "the other direction stays");
    assert!(
        k.unjoin(&ns.0, "nosuch").is_err_and(|e| e.is_not_found()),
        "a missing interface is reported as not found"
    );

    drop(k);
    ns.delete_and_check();
}

#[test]
fn a_shaping_rate_is_read_back_and_replaced_in_place() {
    if !root_or_skip() {
        return;
    }
    let ns = Ns(format!("vtq-{}", std::process::id()));
    sh(&format!(
        "ip netns add {0} && ip -n {0} link add a0 type veth peer name b0 && ip -n {0} link set a0 up",
        ns.0
    ));
    let k = LinuxKernel::new().expect("kernel");
    let a0 = |k: &LinuxKernel| {
        k.ns_snapshot(&ns.0)
            .expect("snapshot")
            .links
            .into_iter()
            .find(|l| l.name == "a0")
            .expect("a0")
    };
    assert_eq!(a0(&k).root_rate, None);
    k.shape(&ns.0, "a0", 50).expect("shape");
    let first = a0(&k);
    assert_eq!(first.root_qdisc.as_deref(), Some("tbf"));
    assert_eq!(first.root_rate, Some(6_250_000), "50 Mbit/s in bytes/s");
    // Another rate replaces the qdisc on the same device.
    k.shape(&ns.0, "a0", 100).expect("reshape");
    let second = a0(&k);
    assert_eq!(second.root_rate, Some(12_500_000));
    assert_eq!(second.index, first.index);
    let shown = sh(&format!("tc -n {} qdisc show dev a0", ns.0));
    assert_eq!(shown.matches("qdisc tbf").count(), 1, "{shown}");
    assert!(shown.contains("rate 100Mbit"), "{shown}");
    // Above 2^32 bytes/s the rate comes back in TCA_TBF_RATE64.
    k.shape(&ns.0, "a0", 40_000).expect("reshape fast");
    assert_eq!(a0(&k).root_rate, Some(5_000_000_000));
    drop(k);
    ns.delete_and_check();
}

#[test]
fn a_vlan_ports_host_end_is_gone_when_its_namespace_is_deleted() {
    if !root_or_skip() {
        return;
    }
    let k = LinuxKernel::new().expect("kernel");
    // The kernel destroys a deleted namespace's devices in the background: without deleting the
    // port first, its host end is still there right after the call in some of these rounds.
    for round in 0..20 {
        let ns = Ns(format!("vtp{round}-{}", std::process::id()));
        k.create_netns(&ns.0, "vnet-test").expect("namespace");
        let port = PortSpec {
            ctx: None,
            dev: IfSpec {
                ns: ns.0.clone(),
                ifname: "eth1".into(),
                mtu: 1500,
                mac: None,
                addresses: vec![],
            },
            outer: Naming::port_dev(&ns.0, "eth1"),
            tag: "vnet-test".into(),
        };
        k.create_port(&port).expect("port");
        let host_end = || sh_ok(&format!("ip link show {}", port.outer)).0;
        assert!(host_end(), "round {round}: no host end {}", port.outer);
        k.delete_netns(&ns.0).expect("delete the namespace");
        assert!(
            !host_end(),
            "round {round}: the host end {} outlived its namespace",
            port.outer
        );
        ns.delete_and_check();
    }
}
