//! Planner and executor tests on the fake kernel: no root needed.

use std::collections::BTreeSet;
use std::net::IpAddr;

use vnet_proto::v1 as pb;

use super::*;
use crate::guest::{GuestCall, RecordingGuestRuntime};
use crate::host::fake::FakeKernel;
use crate::host::kernel::{Kernel, PortSpec, RouteInfo};
use crate::reconcile::apply::{Env, apply};
use crate::reconcile::observe::observe;
use crate::reconcile::spec::tests::{link, nif, slice, vlan, vxlan};
use crate::reconcile::state::{Ledger, StateDir};
use crate::vlan::config::FakeDatapath;

const NETNS_ONLY: PlanContext = PlanContext {
    guests_supported: false,
    vlan_bpf: false,
};

fn naming() -> Naming {
    Naming::new("vn", "h1")
}

fn desired(slices: Vec<pb::VnSlice>) -> Desired {
    let d = Desired::from_proto(&pb::DesiredState {
        generation: 1,
        vns: slices,
    });
    assert!(d.invalid.is_empty(), "{:?}", d.invalid);
    d
}

struct Host {
    k: FakeKernel,
    ledger: StateDir,
    dp: FakeDatapath,
    guests: Option<RecordingGuestRuntime>,
    vlan_bpf: bool,
}

impl Host {
    fn new() -> Self {
        let k = FakeKernel::new();
        let ul = |dev: &str| RouteInfo {
            dev: dev.into(),
            dev_index: 2,
            dev_mtu: 1500,
            gateway: None,
        };
        k.add_underlay_route("10.255.0.2".parse().unwrap(), ul("ul0"));
        k.add_underlay_route("10.255.1.2".parse().unwrap(), ul("ul1"));
        k.add_underlay_route(
            "10.9.9.9".parse().unwrap(),
            RouteInfo {
                gateway: Some("10.255.0.254".parse().unwrap()),
                ..ul("ul0")
            },
        );
        Host {
            k,
            ledger: StateDir::in_memory("h1"),
            dp: FakeDatapath::default(),
            guests: None,
            vlan_bpf: false,
        }
    }

    fn ctx(&self) -> PlanContext {
        PlanContext {
            guests_supported: self.guests.is_some(),
            vlan_bpf: self.vlan_bpf,
        }
    }

    fn observed(&self) -> Observed {
        let guests: BTreeSet<String> = self
            .guests
            .as_ref()
            .map(|g| g.running().into_iter().collect())
            .unwrap_or_default();
        let o = observe(&self.k, &naming(), &self.ledger, guests, 1).unwrap();
        o.observed
    }

    fn plan(&self, d: &Desired) -> Plan {
        plan(&naming(), d, &self.observed(), self.ctx())
    }

    fn converge(&self, d: &Desired) -> crate::reconcile::apply::ApplyReport {
        let p = self.plan(d);
        let env = Env {
            kernel: &self.k,
            ledger: &self.ledger,
            datapath: &self.dp,
            guests: self
                .guests
                .as_ref()
                .map(|g| g as &dyn crate::guest::GuestRuntime),
            workers: 2,
            cancel: None,
        };
        apply(&env, &p)
    }

    fn last_datapath(&self) -> crate::vlan::config::DatapathConfig {
        self.dp.configs.lock().unwrap().last().unwrap().0.clone()
    }
}

fn two_node_vn(vn: &str, a: &str, b: &str) -> pb::VnSlice {
    slice(
        vn,
        &[a, b],
        vec![
            link(
                &format!("{vn}l1"),
                nif(a, "eth0", "10.0.0.1/24"),
                nif(b, "eth0", "10.0.0.2/24"),
            ),
            link(
                &format!("{vn}l2"),
                nif(a, "eth1", "10.0.1.1/24"),
                vxlan(100 + a.len() as u32, "10.255.0.1", "10.255.0.2"),
            ),
        ],
    )
}

fn kinds(p: &Plan) -> Vec<String> {
    p.ops
        .iter()
        .map(|(_, op)| {
            format!("{op:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn fresh_host_builds_everything_then_is_quiet() {
    let h = Host::new();
    let d = desired(vec![two_node_vn("va", "a1", "a2")]);
    let p = h.plan(&d);
    assert!(p.failed.is_empty());
    assert_eq!(
        kinds(&p),
        vec!["CreateNetns", "CreateNetns", "CreateVeth", "CreateVxlan"]
    );
    let r = h.converge(&d);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(h.k.namespaces(), vec!["vn-h1-a1", "vn-h1-a2"]);
    let a1 = h.k.links("vn-h1-a1");
    assert_eq!(a1.len(), 2);
    assert!(a1.iter().all(|l| l.mtu == 1450 && l.up));
    // Converged: nothing more to do.
    assert!(h.plan(&d).is_noop(), "{:?}", h.plan(&d).ops);
    // Ownership recorded with inodes.
    assert!(h.ledger.namespaces().values().all(|i| i.is_some()));
}

#[test]
fn shaping_and_routes_are_planned_and_checked() {
    let h = Host::new();
    let mut s = two_node_vn("va", "a1", "a2");
    s.links[0].bandwidth_mbps = 50;
    s.nodes[0].routes.push(pb::Route {
        destination: "default".into(),
        via: "10.0.0.2".into(),
    });
    let d = desired(vec![s.clone()]);
    let p = h.plan(&d);
    let shapes: Vec<_> = p
        .ops
        .iter()
        .filter(|(_, o)| matches!(o, Op::Shape { mbps: 50, .. }))
        .collect();
    assert_eq!(shapes.len(), 2, "both ends of the veth shape their egress");
    assert!(
        p.ops
            .iter()
            .any(|(_, o)| matches!(o, Op::AddRoute { ns, .. } if ns == "vn-h1-a1"))
    );
    h.converge(&d);
    assert!(h.plan(&d).is_noop());
    // A qdisc removed behind our back is restored by rebuilding that segment only.
    h.k.tamper_link("vn-h1-a2", "eth0", |l| l.root_qdisc = None);
    let p = h.plan(&d);
    assert!(
        p.ops
            .iter()
            .any(|(_, o)| matches!(o, Op::CreateVeth { .. }))
    );
    assert!(
        !p.ops
            .iter()
            .any(|(_, o)| matches!(o, Op::CreateVxlan { .. }))
    );
    h.converge(&d);
    assert!(h.plan(&d).is_noop());
    // A route removed in the desired state is deleted, nothing else.
    s.nodes[0].routes.clear();
    let d2 = desired(vec![s]);
    let p = h.plan(&d2);
    assert_eq!(kinds(&p), vec!["DeleteRoute"]);
}

#[test]
fn half_built_host_completes_without_duplicates() {
    let h = Host::new();
    let d = desired(vec![two_node_vn("va", "a1", "a2")]);
    h.k.fail_on("create_vxlan");
    let r = h.converge(&d);
    assert!(r.failed[&VnId::parse("va").unwrap()].contains("create vxlan eth1"));
    // All-or-nothing: the failed slice left nothing behind.
    assert!(h.k.namespaces().is_empty());
    h.k.clear_failures();
    // Simulate a crash mid-apply: namespaces created, links not.
    h.ledger.intend(&["vn-h1-a1".into()]).unwrap();
    h.k.create_netns(
        "vn-h1-a1",
        &naming().node_ns_tag(
            &VnId::parse("va").unwrap(),
            d.slices
                .values()
                .next()
                .unwrap()
                .node(&NodeId::parse("a1").unwrap())
                .unwrap(),
        ),
    )
    .unwrap();
    let p = h.plan(&d);
    assert_eq!(
        kinds(&p),
        vec!["CreateNetns", "CreateVeth", "CreateVxlan"],
        "the namespace created before the crash is kept (open intent + tag)"
    );
    h.converge(&d);
    assert!(h.plan(&d).is_noop());
}

#[test]
fn leftovers_are_removed_but_look_alikes_survive() {
    let h = Host::new();
    let d = desired(vec![
        two_node_vn("va", "a1", "a2"),
        two_node_vn("vb", "b1", "b2"),
    ]);
    h.converge(&d);
    h.k.add_foreign_netns("vn-h1-zz9");
    h.k.add_host_link("vxtemp", "vnet:h1:vb:x:0");
    h.k.add_host_link("strangers", "vnet:h2:vb:x:0");
    // vb disappears from the desired state.
    let d2 = desired(vec![two_node_vn("va", "a1", "a2")]);
    let p = h.plan(&d2);
    let dels: Vec<_> = p
        .ops
        .iter()
        .map(|(_, o)| o.clone())
        .filter(|o| matches!(o, Op::DeleteNetns { .. } | Op::DeleteHostLink { .. }))
        .collect();
    assert_eq!(dels.len(), 3, "{dels:?}");
    assert!(!dels.iter().any(|o| format!("{o:?}").contains("zz9")));
    assert!(!dels.iter().any(|o| format!("{o:?}").contains("strangers")));
    h.converge(&d2);
    assert_eq!(h.k.namespaces(), vec!["vn-h1-a1", "vn-h1-a2", "vn-h1-zz9"]);
}

#[test]
fn look_alike_with_a_wanted_name_blocks_only_its_slice() {
    let h = Host::new();
    h.k.add_foreign_netns("vn-h1-b1");
    let d = desired(vec![
        two_node_vn("va", "a1", "a2"),
        two_node_vn("vb", "b1", "b2"),
    ]);
    let r = h.converge(&d);
    assert_eq!(r.failed.len(), 1);
    assert!(
        r.failed[&VnId::parse("vb").unwrap()]
            .contains("namespace vn-h1-b1 exists and is not owned by this agent")
    );
    assert!(
        h.k.namespaces().contains(&"vn-h1-b1".to_string()),
        "not deleted"
    );
    assert!(!h.k.namespaces().contains(&"vn-h1-b2".to_string()));
    assert!(h.k.namespaces().contains(&"vn-h1-a1".to_string()));
}

#[test]
fn same_name_different_inode_is_not_ours() {
    let h = Host::new();
    let d = desired(vec![two_node_vn("va", "a1", "a2")]);
    h.converge(&d);
    // Someone replaced our namespace with their own of the same name (and even copied the tag).
    let tag = h.k.ns_snapshot("vn-h1-a1").unwrap().lo_alias.unwrap();
    h.k.delete_netns("vn-h1-a1").unwrap();
    h.k.create_netns("vn-h1-a1", &tag).unwrap(); // new inode
    let o = h.observed();
    assert!(o.foreign.contains("vn-h1-a1"));
    assert!(!o.namespaces.contains_key("vn-h1-a1"));
}

#[test]
fn rebooted_host_rebuilds_from_scratch() {
    let h = Host::new();
    let d = desired(vec![two_node_vn("va", "a1", "a2")]);
    h.converge(&d);
    // Reboot: /run/netns is empty, the ledger still lists the old namespaces.
    for n in h.k.namespaces() {
        h.k.delete_netns(&n).unwrap();
    }
    let o = observe(&h.k, &naming(), &h.ledger, BTreeSet::new(), 1).unwrap();
    assert_eq!(o.stale_records.len(), 2);
    h.ledger.forget(&o.stale_records).unwrap();
    let p = h.plan(&d);
    assert_eq!(
        kinds(&p),
        vec!["CreateNetns", "CreateNetns", "CreateVeth", "CreateVxlan"]
    );
}

#[test]
fn changing_one_slice_leaves_the_other_alone() {
    let h = Host::new();
    let d = desired(vec![
        two_node_vn("va", "a1", "a2"),
        two_node_vn("vb", "b1", "b2"),
    ]);
    h.converge(&d);
    let mut vb = two_node_vn("vb", "b1", "b2");
    vb.links[0].mtu = 1400;
    let d2 = desired(vec![two_node_vn("va", "a1", "a2"), vb]);
    let p = h.plan(&d2);
    assert!(
        p.ops
            .iter()
            .all(|(vn, _)| vn.as_ref().unwrap().as_str() == "vb")
    );
    assert_eq!(kinds(&p), vec!["DeleteLink", "DeleteLink", "CreateVeth"]);
    h.converge(&d2);
    assert!(h.plan(&d2).is_noop());
}

/// What a plan does, as op kinds with their interface or namespace: `Shape vn-h1-a1/eth0`.
fn touched(p: &Plan) -> Vec<String> {
    p.ops
        .iter()
        .map(|(_, op)| match op {
            Op::Shape { ns, ifname, mbps } => format!("Shape {ns}/{ifname} {mbps}"),
            Op::DeleteLink { ns, ifname } => format!("DeleteLink {ns}/{ifname}"),
            Op::CreateVeth { a, b, .. } => {
                format!("CreateVeth {}/{} {}/{}", a.ns, a.ifname, b.ns, b.ifname)
            }
            Op::CreateVxlan { dev, .. } => format!("CreateVxlan {}/{}", dev.ns, dev.ifname),
            Op::CreateNetns { name, .. } => format!("CreateNetns {name}"),
            Op::DeleteNetns { name } => format!("DeleteNetns {name}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_bandwidth_change_reshapes_in_place_and_touches_nothing_else() {
    let h = Host::new();
    let mut s = two_node_vn("va", "a1", "a2");
    s.links[0].bandwidth_mbps = 50;
    s.links[1].bandwidth_mbps = 20;
    h.converge(&desired(vec![s.clone()]));
    let tags: Vec<_> =
        h.k.links("vn-h1-a1")
            .into_iter()
            .map(|l| (l.name, l.index, l.alias))
            .collect();
    // The veth doubles: its two qdiscs are replaced, nothing is deleted or created.
    s.links[0].bandwidth_mbps = 100;
    let d = desired(vec![s.clone()]);
    let p = h.plan(&d);
    assert_eq!(
        touched(&p),
        ["Shape vn-h1-a1/eth0 100", "Shape vn-h1-a2/eth0 100"]
    );
    let r = h.converge(&d);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert!(h.plan(&d).is_noop(), "{:?}", h.plan(&d).ops);
    // Same devices (same index, same tag): they were never recreated.
    let now: Vec<_> =
        h.k.links("vn-h1-a1")
            .into_iter()
            .map(|l| (l.name, l.index, l.alias))
            .collect();
    assert_eq!(now, tags);
    let want = crate::host::tc::TbfParams::for_mbps(100).rate_bytes;
    assert!(
        h.k.links("vn-h1-a2")
            .iter()
            .all(|l| l.root_rate == Some(want))
    );
    // Shaping removed: the segment is rebuilt without a qdisc (there is no unshape op).
    s.links[0].bandwidth_mbps = 0;
    let d = desired(vec![s]);
    assert!(kinds(&h.plan(&d)).contains(&"CreateVeth".to_string()));
    h.converge(&d);
    assert!(h.plan(&d).is_noop());
}

#[test]
fn adding_and_removing_links_leaves_the_other_links_alone() {
    let h = Host::new();
    let s = two_node_vn("va", "a1", "a2");
    h.converge(&desired(vec![s.clone()]));
    // A third node and a link to it come; the VXLAN link of a1 goes.
    let mut grown = s.clone();
    grown.nodes.push(crate::reconcile::spec::tests::node("a3"));
    grown.links[1] = link(
        "val3",
        nif("a2", "eth1", "10.0.2.1/24"),
        nif("a3", "eth0", "10.0.2.2/24"),
    );
    let d = desired(vec![grown]);
    let p = h.plan(&d);
    assert_eq!(
        touched(&p),
        [
            "DeleteLink vn-h1-a1/eth1",
            "CreateNetns vn-h1-a3",
            "CreateVeth vn-h1-a2/eth1 vn-h1-a3/eth0",
        ]
    );
    h.converge(&d);
    assert!(h.plan(&d).is_noop());
}

#[test]
fn removal_of_everything_deletes_all_namespaces() {
    let h = Host::new();
    h.converge(&desired(vec![two_node_vn("va", "a1", "a2")]));
    let p = h.plan(&Desired::default());
    assert_eq!(kinds(&p), vec!["DeleteNetns", "DeleteNetns"]);
    h.converge(&Desired::default());
    assert!(h.k.namespaces().is_empty());
    assert!(h.ledger.namespaces().is_empty());
    // The datapath was told to serve nothing.
    assert!(h.last_datapath().wires.is_empty());
}

#[test]
fn node_kind_change_rebuilds_that_namespace() {
    let h = Host::new();
    h.converge(&desired(vec![two_node_vn("va", "a1", "a2")]));
    let n = naming();
    let ns = "vn-h1-a1".to_string();
    let o = h.observed();
    let mut tag = o.namespaces[&ns].tag.clone();
    tag.fingerprint = "0".into();
    let mut o2 = o.clone();
    o2.namespaces.get_mut(&ns).unwrap().tag = tag;
    let p = plan(
        &n,
        &desired(vec![two_node_vn("va", "a1", "a2")]),
        &o2,
        NETNS_ONLY,
    );
    assert_eq!(
        kinds(&p),
        vec![
            "DeleteNetns",
            "DeleteLink",
            "CreateNetns",
            "CreateVeth",
            "CreateVxlan"
        ]
    );
}

/// VN `vc`: node `c1` with one VLAN 42 link `cl1` from underlay address 10.255.0.1 to `remote`.
fn vlan_vn(addr: &str, remote: &str) -> pb::VnSlice {
    slice(
        "vc",
        &["c1"],
        vec![link(
            "cl1",
            nif("c1", "eth0", addr),
            vlan(42, "10.255.0.1", remote),
        )],
    )
}

#[test]
fn vlan_links_become_datapath_wires() {
    let h = Host::new();
    let s = vlan_vn("10.0.0.1/24", "10.255.0.2");
    let d = desired(vec![s]);
    let p = h.plan(&d);
    assert!(p.datapath_reattach);
    assert_eq!(kinds(&p), vec!["CreateNetns", "CreateTap"]);
    let r = h.converge(&d);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let cfg = h.last_datapath();
    let w = &cfg.wires["vc:cl1"];
    assert_eq!(
        w.b,
        crate::vlan::config::WireEnd::Vlan {
            netns: None,
            dev: "ul0".into(),
            vlan_id: 42
        }
    );
    // Converged: the wire is still desired, no ops.
    let p = h.plan(&d);
    assert!(p.is_noop());
    assert_eq!(p.wires.len(), 1);
}

#[test]
fn bpf_vlan_ports_are_veth_pairs_and_switching_datapaths_rebuilds_them() {
    let mut h = Host::new();
    h.vlan_bpf = true;
    let s = slice(
        "vc",
        &["c1"],
        vec![link(
            "cl1",
            nif("c1", "eth0", "10.0.0.1/24"),
            vlan(42, "10.255.0.1", "10.255.0.2"),
        )],
    );
    let d = desired(vec![s]);
    let p = h.plan(&d);
    assert_eq!(kinds(&p), vec!["CreateNetns", "CreatePort"]);
    let Op::CreatePort(PortSpec {
        dev, ctx, outer, ..
    }) = &p.ops[1].1
    else {
        panic!("{:?}", p.ops[1]);
    };
    assert_eq!((dev.ifname.as_str(), ctx), ("eth0", &None));
    assert_eq!(outer, &Naming::port_dev(&dev.ns, "eth0"));
    assert!(outer.len() <= 15 && outer.starts_with("vb"), "{outer}");
    assert_ne!(outer, &Naming::port_dev(&dev.ns, "eth1"));
    let r = h.converge(&d);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    // The wire names the node-side device; the BPF datapath finds the port by its name.
    assert!(matches!(
        &h.last_datapath().wires["vc:cl1"].a,
        crate::vlan::config::WireEnd::Tap { ifname, .. } if ifname == "eth0"
    ));
    assert!(h.plan(&d).is_noop(), "converged");
    // The host switches to the userspace datapath: the port is rebuilt as a TAP.
    h.vlan_bpf = false;
    assert_eq!(kinds(&h.plan(&d)), vec!["DeleteLink", "CreateTap"]);
}

#[test]
fn vlan_hop_through_a_gateway_fails_with_a_clear_error() {
    let h = Host::new();
    let s = vlan_vn("", "10.9.9.9");
    let r = h.converge(&desired(vec![s]));
    let e = &r.failed[&VnId::parse("vc").unwrap()];
    assert!(e.contains("needs a directly connected neighbour"), "{e}");
    assert!(h.k.namespaces().is_empty(), "torn down");
}

#[test]
fn vxlan_mtu_above_underlay_is_refused() {
    let h = Host::new();
    let mut s = two_node_vn("va", "a1", "a2");
    s.links[1].mtu = 1500;
    let r = h.converge(&desired(vec![s]));
    let e = &r.failed[&VnId::parse("va").unwrap()];
    assert!(
        e.contains("mtu 1500 exceeds what underlay ul0 (mtu 1500) carries over VXLAN (1450)"),
        "{e}"
    );
}

#[test]
fn transit_segments() {
    let h = Host::new();
    // VXLAN-VXLAN transit: two devices in the VN's transit namespace joined by tc.
    let s = slice(
        "vt",
        &[],
        vec![
            link(
                "t1",
                vxlan(11, "10.255.0.1", "10.255.0.2"),
                vxlan(12, "10.255.1.1", "10.255.1.2"),
            ),
            link(
                "t2",
                vlan(21, "10.255.0.1", "10.255.0.2"),
                vlan(22, "10.255.1.1", "10.255.1.2"),
            ),
            link(
                "t3",
                vxlan(31, "10.255.0.1", "10.255.0.2"),
                vlan(32, "10.255.1.1", "10.255.1.2"),
            ),
        ],
    );
    let d = desired(vec![s]);
    let p = h.plan(&d);
    assert_eq!(
        kinds(&p),
        vec![
            "CreateNetns",
            "CreateVxlan",
            "CreateVxlan",
            "CreateVxlan",
            "CreateTap",
            "JoinTransit",
            "JoinTransit"
        ]
    );
    let r = h.converge(&d);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let cfg = h.last_datapath();
    assert_eq!(cfg.wires.len(), 2, "{cfg:?}");
    assert!(matches!(
        cfg.wires["vt:t2"].a,
        crate::vlan::config::WireEnd::Vlan { vlan_id: 21, .. }
    ));
    assert!(matches!(
        cfg.wires["vt:t2"].b,
        crate::vlan::config::WireEnd::Vlan { vlan_id: 22, .. }
    ));
    assert!(matches!(
        cfg.wires["vt:t3:b"].a,
        crate::vlan::config::WireEnd::Tap { .. }
    ));
    assert!(h.plan(&d).is_noop());
}

/// A one-VM VN on the fake guest runtime.
fn vm_vn() -> Desired {
    let mut s = two_node_vn("vm", "m1", "m2");
    s.nodes[0].kind = pb::NodeKind::Vm as i32;
    s.nodes[0].guest = Some(pb::GuestSpec {
        vcpus: 1,
        memory_mb: 128,
        image: String::new(),
        nic: 0,
        accel: 0,
        arch: String::new(),
    });
    desired(vec![s])
}

#[test]
fn vm_nodes_fail_without_a_guest_runtime_and_build_with_one() {
    let d = vm_vn();
    let h = Host::new();
    let r = h.converge(&d);
    assert!(
        r.failed[&VnId::parse("vm").unwrap()].contains("vm nodes not supported by this agent yet")
    );

    let mut h = Host::new();
    h.guests = Some(RecordingGuestRuntime::new());
    let p = h.plan(&d);
    let ens: Vec<_> = p
        .ops
        .iter()
        .filter_map(|(_, o)| match o {
            Op::EnsureGuest(g) => Some(g.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ens.len(), 1);
    assert_eq!(ens[0].nics.len(), 2);
    assert_eq!(ens[0].nics[0].addresses[0].to_string(), "10.0.0.1/24");
    // The sandbox interface itself carries no address.
    let veth = p
        .ops
        .iter()
        .find_map(|(_, o)| match o {
            Op::CreateVeth { a, .. } => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert!(veth.addresses.is_empty());
    let r = h.converge(&d);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(h.guests.as_ref().unwrap().running(), vec!["m1".to_string()]);
    assert!(h.plan(&d).is_noop());
    // Removing the VN stops the guest before deleting its sandbox.
    let p = h.plan(&Desired::default());
    assert_eq!(kinds(&p)[0], "StopGuest");
}

#[test]
fn a_vm_slice_is_ready_only_once_its_guest_answers() {
    let mut h = Host::new();
    let rt = RecordingGuestRuntime::new();
    rt.boot_slowly("m1", 3);
    h.guests = Some(rt);
    let r = h.converge(&vm_vn());
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let calls = h.guests.as_ref().unwrap().calls();
    let waits = calls
        .iter()
        .filter(|c| matches!(c, GuestCall::WaitReady(n) if n == "m1"))
        .count();
    // Three "still booting" answers, then the one that counts.
    assert_eq!(waits, 4, "{calls:?}");
    let first_wait = calls
        .iter()
        .position(|c| matches!(c, GuestCall::WaitReady(_)))
        .unwrap();
    assert!(matches!(calls[first_wait - 1], GuestCall::Ensure(_)));
}

#[test]
fn a_guest_that_dies_while_booting_fails_its_slice_and_leaves_nothing() {
    let mut h = Host::new();
    let rt = RecordingGuestRuntime::new();
    rt.die_while_booting(
        "m1",
        "Kernel panic - not syncing: VFS: Unable to mount root fs",
    );
    h.guests = Some(rt);
    let r = h.converge(&vm_vn());
    let err = &r.failed[&VnId::parse("vm").unwrap()];
    assert!(err.contains("start guest m1"), "{err}");
    assert!(err.contains("Kernel panic"), "{err}");
    let rt = h.guests.as_ref().unwrap();
    assert!(rt.running().is_empty(), "{:?}", rt.running());
    assert!(
        rt.calls()
            .iter()
            .any(|c| matches!(c, GuestCall::Stop(n) if n == "m1"))
    );
    assert!(h.observed().namespaces.is_empty(), "{:?}", h.observed());
}

#[test]
fn child_vn_uses_its_context_namespace_and_fails_with_its_parent() {
    let parent = two_node_vn("vp", "p1", "p2");
    let mut child = slice(
        "vc",
        &["c1"],
        vec![link(
            "cl1",
            nif("c1", "eth0", ""),
            vxlan(500, "10.0.1.1", "10.255.0.2"),
        )],
    );
    child.context_node_id = "p1".into();
    child.depth = 1;
    let d = desired(vec![parent.clone(), child.clone()]);
    let h = Host::new();
    let p = h.plan(&d);
    let vx = p
        .ops
        .iter()
        .find_map(|(vn, o)| match o {
            Op::CreateVxlan { ctx, .. } if vn.as_ref().unwrap().as_str() == "vc" => {
                Some(ctx.clone())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(vx.as_deref(), Some("vn-h1-p1"));
    h.k.add_foreign_netns("vn-h1-p2");
    let r = h.converge(&d);
    assert!(r.failed.contains_key(&VnId::parse("vp").unwrap()));
    assert!(r.failed[&VnId::parse("vc").unwrap()].contains("context node p1 is not being built"));
}

#[test]
fn stale_links_of_ours_go_tenant_links_stay() {
    let h = Host::new();
    let d = desired(vec![two_node_vn("va", "a1", "a2")]);
    h.converge(&d);
    // The desired state drops the vxlan link.
    let mut s = two_node_vn("va", "a1", "a2");
    s.links.pop();
    let d2 = desired(vec![s]);
    let p = h.plan(&d2);
    assert_eq!(kinds(&p), vec!["DeleteLink"]);
    // A tenant's own device (no tag) inside its namespace is not ours to delete.
    h.converge(&d2);
    h.k.tamper_link("vn-h1-a1", "eth0", |_| {});
    let o = h.observed();
    let mut o2 = o.clone();
    o2.namespaces.get_mut("vn-h1-a1").unwrap().links.insert(
        "tenant0".into(),
        crate::reconcile::observed::LinkObs {
            name: "tenant0".into(),
            ..Default::default()
        },
    );
    assert!(plan(&naming(), &d2, &o2, NETNS_ONLY).is_noop());
}

#[test]
fn ops_are_ordered_by_phase() {
    let h = Host::new();
    h.converge(&desired(vec![two_node_vn("va", "a1", "a2")]));
    let p = h.plan(&desired(vec![two_node_vn("vb", "b1", "b2")]));
    let phases: Vec<u8> = p.ops.iter().map(|(_, o)| o.phase()).collect();
    let mut sorted = phases.clone();
    sorted.sort();
    assert_eq!(phases, sorted);
    assert_eq!(phases.first(), Some(&1));
    let _: IpAddr = "10.0.0.1".parse().unwrap();
}

#[test]
fn build_order_follows_the_context_chain_and_cycles_fail() {
    let parent = two_node_vn("vp", "p1", "p2");
    let mut child = slice("vc", &["c1"], vec![]);
    child.context_node_id = "p1".into();
    child.depth = 0; // the controller's claim is not trusted
    let mut grand = slice("vg", &["g1"], vec![]);
    grand.context_node_id = "c1".into();
    grand.depth = 7;
    let h = Host::new();
    let p = h.plan(&desired(vec![parent, child, grand]));
    assert_eq!(p.depth[&VnId::parse("vp").unwrap()], 0);
    assert_eq!(p.depth[&VnId::parse("vc").unwrap()], 1);
    assert_eq!(p.depth[&VnId::parse("vg").unwrap()], 2);

    let mut a = slice("va", &["a1"], vec![]);
    a.context_node_id = "b1".into();
    a.depth = 1;
    let mut b = slice("vb", &["b1"], vec![]);
    b.context_node_id = "a1".into();
    b.depth = 1;
    let p = h.plan(&desired(vec![a, b]));
    assert!(p.failed[&VnId::parse("va").unwrap()].contains("cycle"));
    assert!(p.failed[&VnId::parse("vb").unwrap()].contains("cycle"));
    assert!(p.ops.is_empty());
}

#[test]
fn each_segment_of_a_child_rides_in_its_own_parent_node() {
    // Parent with two nodes on this host (revisitation); the child's two links leave from p1 and
    // from p2: each VXLAN socket lives in its own parent node's namespace.
    let parent = two_node_vn("vp", "p1", "p2");
    let mut child = slice(
        "vc",
        &["c1", "c2"],
        vec![
            link(
                "cl1",
                nif("c1", "eth0", ""),
                vxlan(500, "10.0.1.1", "10.255.0.2"),
            ),
            link(
                "cl2",
                nif("c2", "eth0", ""),
                vxlan(501, "10.0.2.1", "10.255.1.2"),
            ),
        ],
    );
    child.context_node_id = "p1".into();
    child.depth = 1;
    child.links[0].context_node_id = "p1".into();
    child.links[1].context_node_id = "p2".into();
    let d = desired(vec![parent.clone(), child.clone()]);
    let h = Host::new();
    let p = h.plan(&d);
    let ctx: BTreeSet<(String, Option<String>)> = p
        .ops
        .iter()
        .filter_map(|(vn, o)| match o {
            Op::CreateVxlan { ctx, link, .. } if vn.as_ref().unwrap().as_str() == "vc" => {
                Some((link.to_string(), ctx.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        ctx,
        BTreeSet::from([
            ("cl1".to_string(), Some("vn-h1-p1".to_string())),
            ("cl2".to_string(), Some("vn-h1-p2".to_string())),
        ])
    );
    assert_eq!(p.depth[&VnId::parse("vc").unwrap()], 1);
    // The segment's context counts for the build order and for failure: without p2, no child.
    let mut other = two_node_vn("vq", "q1", "q2");
    other.links.clear();
    let mut orphan = child.clone();
    orphan.links[1].context_node_id = "q9".into();
    let d = Desired::from_proto(&pb::DesiredState {
        generation: 1,
        vns: vec![parent, other, orphan],
    });
    assert!(
        d.invalid.iter().any(
            |(vn, m)| vn == "vc" && m.contains("context_node_id q9 is not a node on this host")
        ),
        "{:?}",
        d.invalid
    );
    // A segment context needs a slice context.
    let mut bad = slice("vx", &["x1"], vec![]);
    bad.links = vec![link(
        "xl1",
        nif("x1", "eth0", ""),
        vxlan(502, "10.0.3.1", "10.255.0.2"),
    )];
    bad.links[0].context_node_id = "p1".into();
    let e = crate::reconcile::spec::Slice::from_proto(&bad).unwrap_err();
    assert!(e.0.contains("without a context_node_id"), "{}", e.0);
}

#[test]
fn a_tenant_rewriting_its_loopback_alias_cannot_keep_its_namespace() {
    let h = Host::new();
    let d = desired(vec![two_node_vn("va", "a1", "a2")]);
    h.converge(&d);
    // Inside its nodes the tenant clears one tag and copies the other node's tag onto the second.
    let other = h.k.ns_snapshot("vn-h1-a1").unwrap().lo_alias.unwrap();
    h.k.set_lo_alias("vn-h1-a1", Some("mine"));
    h.k.set_lo_alias("vn-h1-a2", Some(&other));
    let o = h.observed();
    assert!(o.foreign.is_empty(), "{o:#?}");
    assert_eq!(o.namespaces.len(), 2, "still ours: the ledger says so");
    // While the VN exists, the nodes are rebuilt with their own tags.
    let r = h.converge(&d);
    assert!(r.failed.is_empty(), "{r:?}");
    assert!(h.plan(&d).ops.is_empty());
    // Tampered again, then deleted: nothing is left.
    h.k.set_lo_alias("vn-h1-a1", None);
    h.k.set_lo_alias("vn-h1-a2", Some(&other));
    h.converge(&desired(vec![]));
    assert!(h.k.namespaces().is_empty(), "{:?}", h.k.namespaces());
    assert!(h.ledger.namespaces().is_empty());
}

#[test]
fn stray_entries_under_the_prefix_are_skipped_and_reported() {
    let h = Host::new();
    h.k.add_unreadable_netns("vn-h1-junk");
    h.k.add_unreadable_netns("vn-h1-a1");
    let o = observe(&h.k, &naming(), &h.ledger, BTreeSet::new(), 1).unwrap();
    assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
    assert!(o.warnings[0].contains("vn-h1-a1"), "{:?}", o.warnings);
    assert!(o.warnings[1].contains("vn-h1-junk"), "{:?}", o.warnings);
    // Never deleted, never built over; other VNs still converge.
    let d = desired(vec![
        two_node_vn("va", "a1", "a2"),
        two_node_vn("vb", "b1", "b2"),
    ]);
    let r = h.converge(&d);
    assert_eq!(
        r.failed.keys().map(|v| v.as_str()).collect::<Vec<_>>(),
        ["va"]
    );
    assert!(r.failed[&VnId::parse("va").unwrap()].contains("vn-h1-a1"));
    assert!(h.k.namespaces().contains(&"vn-h1-junk".to_string()));
    assert!(h.k.namespaces().contains(&"vn-h1-b1".to_string()));
}

#[test]
fn impaired_interfaces_get_a_shaped_relay_tap_an_egress_redirect_and_a_relay() {
    let h = Host::new();
    let mut s = two_node_vn("va", "a1", "a2");
    s.links[0].bandwidth_mbps = 20;
    s.links[0].delay_us = 20_000;
    s.links[0].jitter_us = 1_000;
    s.links[1].loss_ppm = 50_000;
    let d = desired(vec![s.clone()]);
    let p = h.plan(&d);
    assert!(p.failed.is_empty(), "{:?}", p.failed);
    // veth: both ends; VXLAN: the node end.
    let taps: Vec<String> = p
        .ops
        .iter()
        .filter_map(|(_, o)| match o {
            Op::CreateTap { dev, .. } => Some(format!("{}/{}", dev.ns, dev.ifname)),
            _ => None,
        })
        .collect();
    assert_eq!(
        taps,
        ["vn-h1-a1/irval1", "vn-h1-a2/irval1", "vn-h1-a1/irval2"]
    );
    assert!(p.ops.iter().any(|(_, o)| matches!(o,
        Op::Shape { ns, ifname, mbps: 20 } if ns == "vn-h1-a2" && ifname == "irval1")));
    assert!(p.ops.iter().any(|(_, o)| matches!(o,
        Op::RedirectEgress { ns, from, to } if ns == "vn-h1-a1" && from == "eth1" && to == "irval2")));
    let relays: Vec<(&str, u64, u64, u32)> = p
        .relays
        .iter()
        .map(|r| {
            (
                r.cfg.dev.as_str(),
                r.cfg.delay_us,
                r.cfg.jitter_us,
                r.cfg.loss_ppm,
            )
        })
        .collect();
    assert_eq!(
        relays,
        [
            ("eth0", 20_000, 1_000, 0),
            ("eth0", 20_000, 1_000, 0),
            ("eth1", 0, 0, 50_000)
        ]
    );
    let r = h.converge(&d);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(h.last_datapath().relays.len(), 3);
    assert!(h.plan(&d).is_noop(), "{:?}", h.plan(&d).ops);
    // A relay TAP deleted behind our back rebuilds its segment.
    h.k.delete_link(Some("vn-h1-a2"), "irval1").unwrap();
    let p = h.plan(&d);
    assert!(
        p.ops
            .iter()
            .any(|(_, o)| matches!(o, Op::CreateVeth { .. }))
    );
    h.converge(&d);
    assert!(h.plan(&d).is_noop());
    // A bandwidth change reshapes the relay TAPs with the interfaces, in place.
    let mut faster = s.clone();
    faster.links[0].bandwidth_mbps = 40;
    let d40 = desired(vec![faster]);
    assert_eq!(
        touched(&h.plan(&d40)),
        [
            "Shape vn-h1-a1/eth0 40",
            "Shape vn-h1-a2/eth0 40",
            "Shape vn-h1-a1/irval1 40",
            "Shape vn-h1-a2/irval1 40"
        ]
    );
    h.converge(&d40);
    assert!(h.plan(&d40).is_noop(), "{:?}", h.plan(&d40).ops);
    // Impairment removed: the relay TAPs go, the datapath serves no relay.
    let d2 = desired(vec![two_node_vn("va", "a1", "a2")]);
    h.converge(&d2);
    assert!(h.last_datapath().relays.is_empty());
    assert!(
        h.k.links("vn-h1-a1")
            .iter()
            .all(|l| !l.name.starts_with("ir"))
    );
}

#[test]
fn bad_impairments_fail_the_slice_naming_the_field() {
    let mut s = two_node_vn("va", "a1", "a2");
    s.links[0].delay_us = 1_000;
    s.links[0].jitter_us = 2_000;
    let d = Desired::from_proto(&pb::DesiredState {
        generation: 1,
        vns: vec![s],
    });
    let why = &d.invalid.first().expect("refused").1;
    assert!(
        why.contains("jitter_us 2000 exceeds delay_us 1000"),
        "{why}"
    );
}
