//! Recursion over gRPC with stand-in agents: children embedded in their parent's virtual
//! topology within its capacities, per-parent residuals across a restart, attribute inheritance,
//! share_with permissions, cascading delete, revisitation inside a parent node, and the slices
//! (contexts, carrier addresses, ports, MTUs) the agents get.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use tonic::Code;
use tonic::transport::Channel;
use vn_controller::runtime::controller::{Controller, ControllerConfig};
use vn_controller::standin::{Behaviour, StandIn};
use vnet_proto::v1 as pb;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;

type Client = VirtualNetworksClient<Channel>;

/// A child with c1 in `a` and c2 in `b` of `parent`, one link of `bw`.
fn child_spec(name: &str, parent: &str, a: &str, b: &str, bw: i64) -> pb::VnSpec {
    pb::VnSpec {
        name: name.into(),
        parent: parent.into(),
        nodes: vec![pinned("c1", 10, a), pinned("c2", 10, b)],
        links: vec![link("c1", "c2", bw)],
        ..Default::default()
    }
}

/// What the children of `parent` use, as Get shows it: per node (name, cpu, memory), per link
/// (endpoints, bandwidth).
async fn children_use(
    c: &mut Client,
    parent: &str,
) -> (Vec<(String, u64, u64)>, Vec<(String, u64)>) {
    let vn = get_vn(c, "red", parent).await;
    (
        vn.nodes
            .iter()
            .map(|n| (n.node.clone(), n.children_cpu, n.children_memory_mb))
            .collect(),
        vn.links
            .iter()
            .map(|l| (l.endpoints.join("-"), l.children_bandwidth_mbps))
            .collect(),
    )
}

async fn create_err(c: &mut Client, provider: &str, spec: pb::VnSpec) -> tonic::Status {
    c.create(req(provider, create(spec)))
        .await
        .expect_err("must be refused")
}

fn tunnel(e: &Option<pb::Endpoint>) -> Option<&pb::TunnelHop> {
    match e.as_ref()?.kind.as_ref()? {
        pb::endpoint::Kind::Tunnel(t) => Some(t),
        pb::endpoint::Kind::Node(_) => None,
    }
}

fn node_if(e: &Option<pb::Endpoint>) -> Option<&pb::NodeInterface> {
    match e.as_ref()?.kind.as_ref()? {
        pb::endpoint::Kind::Node(n) => Some(n),
        pb::endpoint::Kind::Tunnel(_) => None,
    }
}

/// The slice of `label` in the latest desired state of agent `a`.
async fn slice_of(a: &StandIn, label: &str) -> pb::VnSlice {
    let d = a
        .wait_desired(Duration::from_secs(5), |d| {
            d.vns.iter().any(|s| s.label == label)
        })
        .await
        .unwrap_or_else(|| panic!("no slice of {label}"));
    d.vns.into_iter().find(|s| s.label == label).unwrap()
}

type Trace = (
    vn_controller::core::usage::Usage,
    Vec<(String, vn_controller::core::usage::Usage)>,
    usize,
    Vec<u64>,
);

/// What a refused request must not change.
fn trace(ctl: &Controller) -> Trace {
    ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.nests()
                .parents_in_use()
                .map(|(p, u)| (p.clone(), u.clone()))
                .collect(),
            ix.records().count(),
            ["h1", "h2", "h3"]
                .iter()
                .map(|h| ix.generation(h))
                .collect(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_and_grandchild_ride_inside_their_parents() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 200, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;

    let p = create_ready(&mut c, "red", parent_spec("p")).await;
    assert_eq!(p.depth, 0);
    // Links without addresses got carrier addresses.
    assert_eq!(p.links[0].addresses, ["100.64.0.0/31", "100.64.0.1/31"]);
    assert_eq!(p.links[1].addresses, ["100.64.0.2/31", "100.64.0.3/31"]);
    assert_eq!(p.links[0].mtu, 1450);
    let node_id = |vn: &pb::VirtualNetwork, n: &str| {
        vn.nodes
            .iter()
            .find(|x| x.node == n)
            .unwrap()
            .node_id
            .clone()
    };

    // C: c1 in p1, c2 in p3: its link crosses p2 (two hops of P).
    let mut cs = child_spec("c", "p", "p1", "p3", 60);
    cs.nestable = true;
    let child = create_ready(&mut c, "red", cs).await;
    assert_eq!(child.depth, 1);
    assert_eq!(child.spec.as_ref().unwrap().parent, "p");
    let placed: BTreeMap<&str, (&str, &str)> = child
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), (n.host.as_str(), n.parent_node.as_str())))
        .collect();
    assert_eq!(placed["c1"], ("h1", "p1"));
    assert_eq!(placed["c2"], ("h3", "p3"));
    let l = &child.links[0];
    assert_eq!(l.path, ["p1", "p2", "p3"]);
    assert_eq!(l.mtu, 1400, "parent link MTU 1450 - 50");
    assert!(l.hops.iter().all(|h| h.udp_port == 4790 && h.vni > 0));
    assert_eq!(get_vn(&mut c, "red", "p").await.children, ["c"]);

    // What the hosts get: h2 forwards C's link inside p2, between P's carrier addresses.
    let s2 = slice_of(&agents[1], "red/c").await;
    assert!(s2.nodes.is_empty());
    assert_eq!(s2.depth, 1);
    assert_eq!(s2.context_node_id, node_id(&p, "p2"));
    let seg = &s2.links[0];
    assert_eq!(seg.context_node_id, node_id(&p, "p2"));
    let (ta, tb) = (tunnel(&seg.a).unwrap(), tunnel(&seg.b).unwrap());
    assert_eq!(
        (ta.local_address.as_str(), ta.remote_address.as_str()),
        ("100.64.0.1", "100.64.0.0")
    );
    assert_eq!(
        (tb.local_address.as_str(), tb.remote_address.as_str()),
        ("100.64.0.2", "100.64.0.3")
    );
    assert_eq!((ta.udp_port, tb.udp_port), (4790, 4790));
    assert_eq!(seg.mtu, 1400);
    // h1: c1 with its tunnel leaving from p1; P's slice there carries the carrier address.
    let s1 = slice_of(&agents[0], "red/c").await;
    assert_eq!(s1.context_node_id, node_id(&p, "p1"));
    assert_eq!(s1.nodes[0].name, "c1");
    let p1 = slice_of(&agents[0], "red/p").await;
    assert_eq!(
        node_if(&p1.links[0].a).unwrap().addresses,
        ["100.64.0.0/31"]
    );
    assert_eq!(p1.depth, 0);
    assert!(p1.context_node_id.is_empty());

    // G inside C: one hop of C, port 4791, MTU 1350, tunnels in C's node namespaces.
    let g = create_ready(&mut c, "red", child_spec("g", "c", "c1", "c2", 10)).await;
    assert_eq!(g.depth, 2);
    assert_eq!(g.links[0].path, ["c1", "c2"]);
    assert_eq!(g.links[0].mtu, 1350);
    assert_eq!(g.links[0].hops[0].udp_port, 4791);
    let g1 = slice_of(&agents[0], "red/g").await;
    assert_eq!(g1.context_node_id, node_id(&child, "c1"));
    assert_eq!(g1.depth, 2);
    let t = tunnel(&g1.links[0].b).unwrap();
    assert_eq!(
        (t.local_address.as_str(), t.remote_address.as_str()),
        ("100.64.0.0", "100.64.0.1"),
        "C's own carrier addresses"
    );
    // Topology shows the hierarchy.
    let topo = h
        .substrate()
        .await
        .get_topology(req("red", pb::GetTopologyRequest {}))
        .await
        .unwrap()
        .into_inner();
    let gv = topo.vns.iter().find(|v| v.name == "g").unwrap();
    assert_eq!(gv.parent, "red/c");
    assert_eq!(gv.placement["c1"], "c1");
    drop(agents);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_fit_the_parent_residuals_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 200, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    create_ready(&mut c, "red", parent_spec("p")).await;
    // 60 of P's 100 Mbit/s on p1-p2 and p2-p3.
    create_ready(&mut c, "red", child_spec("c", "p", "p1", "p3", 60)).await;
    let before = trace(&h.ctl);
    assert_eq!(before.1.len(), 1, "usage of one parent");
    let used = &before.1[0].1;
    assert_eq!(used.host_cpu("p1"), 10);
    assert_eq!(used.host_cpu("p2"), 0);
    assert_eq!(used.link_bandwidth(&format!("{}l0", before.1[0].0)), 60);
    // The substrate is charged for P only.
    assert_eq!(before.0.host_cpu("h1"), 60);
    assert_eq!(before.0.link_bandwidth("h1-h2"), 100);

    // 50 more does not fit what is left (40) of P's links.
    let e = create_err(&mut c, "red", child_spec("d", "p", "p1", "p3", 50)).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // More cpu than the parent node has.
    let mut big = child_spec("d", "p", "p1", "p3", 10);
    big.nodes[0].cpu = 51;
    let e = create_err(&mut c, "red", big).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("c1"), "{e:?}");
    // More bandwidth than any link of the parent: said plainly.
    let e = create_err(&mut c, "red", child_spec("d", "p", "p1", "p3", 101)).await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "spec.links[0] (c1-c2): bandwidth 101 Mbit/s exceeds every link of parent red/p (the largest carries 100 Mbit/s)"
    );
    assert_eq!(trace(&h.ctl), before, "refusals leave nothing");
    // 40 still fits.
    create_ready(&mut c, "red", child_spec("d", "p", "p1", "p2", 40)).await;
    let with_d = trace(&h.ctl);
    // The parent shows what its children use of each node and link.
    let shown = children_use(&mut c, "p").await;
    let want = (
        vec![
            ("p1".to_string(), 20, 128),
            ("p2".to_string(), 10, 64),
            ("p3".to_string(), 10, 64),
        ],
        vec![("p1-p2".to_string(), 100), ("p2-p3".to_string(), 60)],
    );
    assert_eq!(shown, want);

    // Restart on the same store: per-parent residuals are identical.
    let desired: Vec<_> = agents.iter().map(|a| a.desired().unwrap()).collect();
    drop(c);
    h.stop().await;
    drop(agents);
    let ctl = open(ControllerConfig::new(dir.path())).await;
    assert_eq!(trace(&ctl).0, with_d.0);
    assert_eq!(trace(&ctl).1, with_d.1, "per-parent usage differs");
    drop(ctl);
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 200, 4096, Behaviour::Ready).await;
    for (a, d) in agents.iter().zip(&desired) {
        assert_eq!(a.desired().as_ref(), Some(d), "same desired state");
    }
    let mut c = h.vns().await;
    assert_eq!(children_use(&mut c, "p").await, want, "after the restart");
    // p1-p2 is full now (60 + 40): nothing more crosses it.
    let e = create_err(&mut c, "red", child_spec("e", "p", "p1", "p2", 1)).await;
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Deleting a child gives its share back.
    c.delete(req(
        "red",
        pb::DeleteVnRequest {
            name: "d".into(),
            cascade: false,
        },
    ))
    .await
    .unwrap();
    let (nodes, links) = children_use(&mut c, "p").await;
    assert_eq!(nodes[1], ("p2".to_string(), 0, 0));
    assert_eq!(
        links,
        vec![("p1-p2".to_string(), 60), ("p2-p3".to_string(), 60)]
    );
    drop(agents);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inheritance_permissions_quotas_and_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 200, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    let mut ps = parent_spec("p");
    ps.share_with = vec!["blue".into()];
    ps.attributes = Some(pb::VnAttributes {
        mtu: Some(1400),
        max_link_bandwidth_mbps: Some(100),
        allowed_node_kinds: vec![pb::NodeKind::Netns as i32],
        max_nodes: Some(8),
        ..Default::default()
    });
    let p = create_ready(&mut c, "red", ps).await;
    assert_eq!(p.attributes.as_ref().unwrap().mtu, Some(1400));
    let before = trace(&h.ctl);

    // Widening an attribute: refused, naming the attribute and both values.
    let mut w = child_spec("c", "p", "p1", "p3", 10);
    w.attributes = Some(pb::VnAttributes {
        mtu: Some(9000),
        ..Default::default()
    });
    let e = create_err(&mut c, "red", w).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message()
            .starts_with("spec.attributes.mtu: 9000 widens the parent's 1400 (of red/p"),
        "{e:?}"
    );
    // A node kind the parent forbids.
    let mut vm = child_spec("c", "p", "p1", "p3", 10);
    vm.nodes[1].kind = pb::NodeKind::Vm as i32;
    vm.nodes[1].memory_mb = 128;
    let e = create_err(&mut c, "red", vm).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "spec.nodes[1] (c2): kind vm is not allowed by attributes.allowed_node_kinds [netns] (inherited from red/p)"
    );
    // A link above the inherited maximum bandwidth.
    let e = create_err(&mut c, "red", child_spec("c", "p", "p1", "p3", 101)).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message()
            .contains("exceeds attributes.max_link_bandwidth_mbps 100 (inherited from red/p)"),
        "{e:?}"
    );
    // Pins: an unknown parent node, and a parent that is not there.
    let e = create_err(&mut c, "red", child_spec("c", "p", "p1", "p9", 10)).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("pinned to p9, which is not a node of parent red/p")
    );
    let e = create_err(&mut c, "red", child_spec("c", "nope", "p1", "p3", 10)).await;
    assert_eq!(e.code(), Code::NotFound);

    // share_with: green is not in it; blue is; blue may not share further than P does.
    let mut green = child_spec("gc", "p", "p1", "p3", 10);
    green.parent_provider = "red".into();
    // Not shared with green: NOT_FOUND, worded as for a parent that does not exist.
    let e = create_err(&mut c, "green", green.clone()).await;
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(e.message(), "VN red/p (spec.parent) not found");
    let mut wide = green.clone();
    wide.name = "bc".into();
    wide.nestable = true;
    wide.share_with = vec!["green".into()];
    let e = create_err(&mut c, "blue", wide).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message()
            .starts_with("spec.share_with: [green] widens the parent's [blue, red]"),
        "{e:?}"
    );
    // A parent that is not nestable.
    create_ready(&mut c, "red", chain("flat", 10, 10)).await;
    let e = create_err(&mut c, "red", child_spec("c", "flat", "a", "b", 1)).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("red/flat is not nestable"), "{e:?}");
    c.delete(req(
        "red",
        pb::DeleteVnRequest {
            name: "flat".into(),
            cascade: false,
        },
    ))
    .await
    .unwrap();
    assert_eq!(trace(&h.ctl).0, before.0, "refusals leave nothing");
    assert_eq!(trace(&h.ctl).1, before.1);

    // Blue's child (shared) and red's child; the quota (8 nodes in P and below, P has 3)
    // leaves room for one more node.
    let mut bc = green.clone();
    bc.name = "bc".into();
    let bcv = create_ready(&mut c, "blue", bc).await;
    assert_eq!(bcv.depth, 1);
    let mut rc = child_spec("rc", "p", "p1", "p2", 10);
    rc.nestable = true;
    create_ready(&mut c, "red", rc).await;
    let e = create_err(&mut c, "red", child_spec("q", "rc", "c1", "c2", 5)).await;
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        e.message(),
        "quota of red/p: attributes.max_nodes 8 would be exceeded (7 nodes in it and its descendants, 2 more asked)"
    );
    // Red sees blue's child in P, blue sees only its own VN.
    let pv = get_vn(&mut c, "red", "p").await;
    assert_eq!(pv.children, ["blue/bc", "rc"]);
    assert!(get_vn(&mut c, "blue", "bc").await.children.is_empty());
    let mut g = child_spec("g", "rc", "c1", "c2", 5);
    g.nodes.truncate(1);
    g.links.clear();
    assert_eq!(create_ready(&mut c, "red", g).await.depth, 2);

    // Deleting a parent with children is refused, naming them; cascade deletes deepest first.
    let e = c
        .delete(req(
            "red",
            pb::DeleteVnRequest {
                name: "p".into(),
                cascade: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "VN p has children (blue/bc, rc): delete them first, or delete with cascade"
    );
    let deleted = c
        .delete(req(
            "red",
            pb::DeleteVnRequest {
                name: "p".into(),
                cascade: true,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, ["blue/bc", "g", "rc", "p"]);
    let empty = h.ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.nests().parents_in_use().count(),
            ix.records().count(),
            ix.allocators().vni.held().len(),
        )
    });
    assert_eq!(empty, (Default::default(), 0, 0, 0));
    for a in &agents {
        let g = a
            .wait_desired(Duration::from_secs(5), |d| d.vns.is_empty())
            .await;
        assert!(g.is_some(), "a host still has slices");
    }
    drop(agents);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisitation_inside_parent_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 400, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    // P revisits h1: p1 and p2 both there, joined by a local link; p3 on h2.
    let mut ps = parent_spec("p");
    ps.allow_revisitation = true;
    ps.nodes[1].host = "h1".into();
    ps.nodes[2].host = "h2".into();
    let p = create_ready(&mut c, "red", ps).await;
    assert_eq!(p.links[0].path, ["h1"], "co-located: no substrate hop");
    assert_eq!(p.links[0].mtu, 1500);
    let p2_id = p
        .nodes
        .iter()
        .find(|n| n.node == "p2")
        .unwrap()
        .node_id
        .clone();
    let p1_id = p
        .nodes
        .iter()
        .find(|n| n.node == "p1")
        .unwrap()
        .node_id
        .clone();

    // C revisits p1 (two nodes in it, a local link of 500 Mbit/s that costs P nothing) and
    // crosses p1 -> p2 -> p3: two parent nodes on h1.
    let cs = pb::VnSpec {
        name: "c".into(),
        parent: "p".into(),
        allow_revisitation: true,
        nodes: vec![
            pinned("a", 10, "p1"),
            pinned("b", 10, "p1"),
            pinned("z", 10, "p3"),
        ],
        links: vec![link("a", "b", 500), link("b", "z", 20)],
        ..Default::default()
    };
    let child = create_ready(&mut c, "red", cs).await;
    assert_eq!(child.links[0].path, ["p1"]);
    assert!(child.links[0].hops.is_empty());
    assert_eq!(child.links[1].path, ["p1", "p2", "p3"]);
    assert_eq!(child.links[1].mtu, 1400);
    let used = h.ctl.with_index(|ix| {
        ix.nests()
            .parents_in_use()
            .next()
            .map(|(_, u)| u.clone())
            .unwrap()
    });
    assert_eq!(used.host_cpu("p1"), 20);
    let total: u64 = used.bandwidth_mbps.values().sum();
    assert_eq!(
        total, 40,
        "only the crossing link uses P's links (20 on each)"
    );

    // h1 realizes a, b, their veth, and two segments of b-z: from b in p1, transit in p2.
    let s1 = slice_of(&agents[0], "red/c").await;
    assert_eq!(s1.nodes.len(), 2);
    assert_eq!(s1.context_node_id, p1_id);
    let ids: BTreeSet<&str> = s1.links.iter().map(|l| l.link_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "one id per segment: {ids:?}");
    let local = s1
        .links
        .iter()
        .find(|l| node_if(&l.a).is_some() && node_if(&l.b).is_some())
        .unwrap();
    assert_eq!(local.bandwidth_mbps, 500);
    let transit = s1
        .links
        .iter()
        .find(|l| tunnel(&l.a).is_some() && tunnel(&l.b).is_some())
        .unwrap();
    assert_eq!(transit.context_node_id, p2_id);
    let leaving = s1
        .links
        .iter()
        .find(|l| node_if(&l.a).is_some() && tunnel(&l.b).is_some())
        .unwrap();
    assert_eq!(leaving.context_node_id, p1_id);
    // b's tunnel goes from p1's end of p1-p2 to p2's end, both on h1.
    let t = tunnel(&leaving.b).unwrap();
    assert_eq!(
        (t.local_address.as_str(), t.remote_address.as_str()),
        ("100.64.0.0", "100.64.0.1")
    );
    drop(agents);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_of_a_parent_still_provisioning_or_in_a_vm_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 400, 4096, Behaviour::Silent).await;
    let mut c = h.vns().await;
    let mut ps = parent_spec("p");
    ps.nodes[2].kind = pb::NodeKind::Vm as i32;
    ps.nodes[2].memory_mb = 128;
    c.create(req("red", create(ps))).await.unwrap();
    let e = create_err(&mut c, "red", child_spec("c", "p", "p1", "p2", 10)).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "parent red/p is provisioning; children can be created once it is ready"
    );
    for a in &agents {
        a.set_behaviour(Behaviour::Ready);
    }
    // Nudge the stand-ins to report: a change of the hosts' desired state.
    create_ready(&mut c, "red", chain("nudge", 1, 1)).await;
    wait_state(&mut c, "red", "p", pb::VnState::Ready).await;
    let e = create_err(&mut c, "red", child_spec("c", "p", "p1", "p3", 10)).await;
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "spec.nodes[1] (c2): pinned to p3, a vm node of parent red/p: only netns nodes can carry child nodes"
    );
    drop(agents);
    h.stop().await;
}

/// Impairments nest: a child's link gets at least the delay of the parent links its path
/// crosses (describe shows it), its own relays add only the rest, and `max_delay_us` restricts
/// its path by the parent links' delays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_link_inherits_its_parent_paths_delay() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 200, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    // P: p1 - p2 (10 ms) - p3 (5 ms).
    let mut ps = parent_spec("p");
    ps.links[0].delay_us = 10_000;
    ps.links[1].delay_us = 5_000;
    ps.links[1].loss_percent = 1.0;
    let p = create_ready(&mut c, "red", ps).await;
    assert_eq!((p.links[0].delay_us, p.links[1].delay_us), (10_000, 5_000));
    assert_eq!(p.links[1].loss_percent, 1.0);
    // The parent's slices carry its impairment to the agents.
    let s1 = slice_of(&agents[0], "red/p").await;
    assert_eq!((s1.links[0].delay_us, s1.links[0].loss_ppm), (10_000, 0));
    let s3 = slice_of(&agents[2], "red/p").await;
    assert_eq!(
        (s3.links[0].delay_us, s3.links[0].loss_ppm),
        (5_000, 10_000)
    );

    // A: asks 3 ms across p1 - p2 - p3 (15 ms already): gets 15 ms, its relays add nothing.
    let mut a = child_spec("a", "p", "p1", "p3", 10);
    a.links[0].delay_us = 3_000;
    let a = create_ready(&mut c, "red", a).await;
    assert_eq!(a.links[0].path_delay_us, 15_000);
    assert_eq!(
        a.links[0].delay_us, 15_000,
        "at least the parent path's delay"
    );
    let sa = slice_of(&agents[0], "red/a").await;
    assert_eq!(sa.links[0].delay_us, 0);
    // B: asks 40 ms with 2 ms jitter across the same path: its relays add 25 ms and the jitter.
    let mut b = child_spec("b", "p", "p1", "p3", 10);
    b.links[0].delay_us = 40_000;
    b.links[0].jitter_us = 2_000;
    let b = create_ready(&mut c, "red", b).await;
    assert_eq!((b.links[0].delay_us, b.links[0].jitter_us), (40_000, 2_000));
    let sb = slice_of(&agents[2], "red/b").await;
    assert_eq!(
        (sb.links[0].delay_us, sb.links[0].jitter_us),
        (25_000, 2_000)
    );
    // M: at most 12 ms between p1 and p3: no path of P is that fast.
    let mut m = child_spec("m", "p", "p1", "p3", 10);
    m.links[0].max_delay_us = 12_000;
    let err = create_err(&mut c, "red", m).await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("delay of at most 12000 us"),
        "{err:?}"
    );
    // At most 10 ms between p1 and p2 fits.
    let mut ok = child_spec("ok", "p", "p1", "p2", 10);
    ok.links[0].max_delay_us = 10_000;
    let ok = create_ready(&mut c, "red", ok).await;
    assert_eq!(ok.links[0].path, ["p1", "p2"]);
    drop(agents);
    h.stop().await;
}
