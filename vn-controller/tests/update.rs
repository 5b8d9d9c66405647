//! Updating a VN in place over gRPC with stand-in agents: what stays keeps its hosts, paths and
//! identifiers and only the involved hosts get a new desired state; a refused update (no room,
//! bad spec, quota, another provider's VN) leaves everything as it was; of two concurrent
//! updates of one generation one wins and the other is told to read again; the children of a
//! nestable VN constrain what its update may remove or narrow; an update survives a restart.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tonic::Code;
use tonic::transport::Channel;
use vn_controller::standin::Behaviour;
use vnet_proto::v1 as pb;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;

type Client = VirtualNetworksClient<Channel>;

fn update(spec: pb::VnSpec, generation: u64) -> pb::UpdateVnRequest {
    pb::UpdateVnRequest {
        spec: Some(spec),
        generation,
        dry_run: false,
    }
}

/// The chain a-b-c, then: node d added with links c-d and a-d, link a-b removed, b-c doubled.
fn grown(name: &str) -> pb::VnSpec {
    let mut s = chain(name, 10, 20);
    s.nodes.push(node("d", 10));
    s.links = vec![link("b", "c", 40), link("c", "d", 20), link("a", "d", 20)];
    s
}

fn find_link<'a>(vn: &'a pb::VirtualNetwork, a: &str, b: &str) -> Option<&'a pb::LinkPlacement> {
    vn.links.iter().find(|l| l.endpoints == [a, b])
}

/// Desired generation of every host.
async fn generations(h: &Harness) -> BTreeMap<String, u64> {
    let mut s = h.substrate().await;
    s.list_hosts(admin(pb::ListHostsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .hosts
        .into_iter()
        .map(|h| (h.id, h.desired_generation))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_keeps_what_stays_and_touches_only_involved_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _agents = h.agents(6, 100, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    let before = create_ready(&mut c, "red", chain("x", 10, 20)).await;
    assert_eq!(before.generation, 1);
    let gens = generations(&h).await;
    let mut watch = c
        .watch(req(
            "red",
            pb::WatchVnsRequest {
                name: "x".into(),
                after_seq: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();

    // A dry run says what would happen and changes nothing.
    let mut dry = update(grown("x"), 1);
    dry.dry_run = true;
    let plan = c.update(req("red", dry)).await.unwrap().into_inner();
    assert!(plan.changed);
    // ... with the VN as it would be (generation 2) ...
    assert_eq!(plan.vn.as_ref().unwrap().generation, 2);
    let action = |node: &str, ends: &[&str]| {
        plan.plan
            .iter()
            .find(|p| p.node == node && p.endpoints == ends)
            .map(|p| pb::PlanAction::try_from(p.action).unwrap())
    };
    assert_eq!(action("a", &[]), Some(pb::PlanAction::Keep));
    assert_eq!(action("d", &[]), Some(pb::PlanAction::Add));
    assert_eq!(action("", &["a", "b"]), Some(pb::PlanAction::Remove));
    assert_eq!(action("", &["b", "c"]), Some(pb::PlanAction::Change));
    assert_eq!(action("", &["c", "d"]), Some(pb::PlanAction::Add));
    assert_eq!(get_vn(&mut c, "red", "x").await, before);
    assert_eq!(generations(&h).await, gens);

    let out = c
        .update(req("red", update(grown("x"), 1)))
        .await
        .unwrap()
        .into_inner();
    assert!(out.changed);
    let after = out.vn.unwrap();
    assert_eq!(after.generation, 2);
    // ... exactly as the update then made it.
    assert_eq!(plan.vn.as_ref().unwrap().links, after.links);
    for n in &before.nodes {
        let m = after.nodes.iter().find(|m| m.node == n.node).unwrap();
        assert_eq!(
            (&m.host, &m.node_id),
            (&n.host, &n.node_id),
            "node {}",
            n.node
        );
    }
    let (old_bc, new_bc) = (
        find_link(&before, "b", "c").unwrap(),
        find_link(&after, "b", "c").unwrap(),
    );
    assert_eq!(new_bc.bandwidth_mbps, 40);
    assert_eq!(
        (&new_bc.path, &new_bc.hops, &new_bc.macs, &new_bc.interfaces),
        (&old_bc.path, &old_bc.hops, &old_bc.macs, &old_bc.interfaces)
    );
    assert!(find_link(&after, "a", "b").is_none());
    assert!(find_link(&after, "c", "d").is_some() && find_link(&after, "a", "d").is_some());
    // The interface a-b used on b is free again; new interfaces do not take kept ones.
    let d = after.nodes.iter().find(|n| n.node == "d").unwrap();
    assert!(!before.nodes.iter().any(|n| n.node_id == d.node_id));

    // Only hosts whose part changed got a new desired state.
    let involved: std::collections::BTreeSet<&String> = before
        .links
        .iter()
        .chain(&after.links)
        .filter(|l| l.endpoints != ["b", "c"])
        .flat_map(|l| &l.path)
        .chain(
            after
                .nodes
                .iter()
                .filter(|n| n.node == "d")
                .map(|n| &n.host),
        )
        .collect();
    let now = generations(&h).await;
    for (host, g) in &now {
        if involved.contains(host) {
            assert!(*g > gens[host], "{host} involved");
        } else if !old_bc.path.contains(host) {
            assert_eq!(*g, gens[host], "{host} not involved");
        }
    }
    let ready = wait_state(&mut c, "red", "x", pb::VnState::Ready).await;
    assert_eq!(ready.generation, 2);

    // Watch told: UPDATED naming the generation and what was done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let updated = loop {
        let e = tokio::time::timeout_at(deadline, watch.message())
            .await
            .expect("an UPDATED event")
            .unwrap()
            .unwrap();
        if e.kind == pb::VnEventKind::Updated as i32 {
            break e;
        }
    };
    assert!(
        updated.message.starts_with("generation 2 (spec updated): "),
        "{}",
        updated.message
    );
    assert!(
        updated.message.contains("1 node added"),
        "{}",
        updated.message
    );

    // The same spec again: nothing to do, nothing changes.
    let again = c
        .update(req("red", update(grown("x"), 0)))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed);
    assert_eq!(get_vn(&mut c, "red", "x").await.generation, 2);
    assert_eq!(generations(&h).await, now);

    // Durable: a restarted controller has the updated VN.
    h.stop().await;
    let h = Harness::start(dir.path(), |_| {}).await;
    let mut c = h.vns().await;
    let restored = get_vn(&mut c, "red", "x").await;
    assert_eq!(restored.generation, 2);
    assert_eq!(restored.links, after.links);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_leaves_the_vn_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _agents = h.agents(4, 100, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    let before = create_ready(&mut c, "red", chain("x", 10, 20)).await;
    let gens = generations(&h).await;
    let unchanged = |c: &Client| {
        let mut c = c.clone();
        let before = before.clone();
        async move {
            assert_eq!(get_vn(&mut c, "red", "x").await, before);
        }
    };

    // No host has the cpu.
    let mut big = chain("x", 10, 20);
    big.nodes[1].cpu = 500;
    let e = c.update(req("red", update(big, 0))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("it stays as it was"),
        "{}",
        e.message()
    );
    unchanged(&c).await;
    // No substrate link has the bandwidth (full mesh of 1000 Mbit/s).
    let mut wide = chain("x", 10, 20);
    wide.links[0].bandwidth_mbps = 5000;
    let e = c.update(req("red", update(wide, 0))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    unchanged(&c).await;
    // A bad spec names the field.
    let mut bad = chain("x", 10, 20);
    bad.links.push(link("a", "zz", 10));
    let e = c.update(req("red", update(bad, 0))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("zz"), "{}", e.message());
    // Another provider's VN does not exist for the caller.
    let e = c
        .update(req("blue", update(grown("x"), 0)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // A spec naming another provider than the caller is refused.
    let mut other = grown("x");
    other.provider = "blue".into();
    let e = c.update(req("red", update(other, 0))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The quota counts the VN as it would become.
    h.set_node_quota("red", 3).await;
    let e = c
        .update(req("red", update(grown("x"), 0)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("nodes limit 3"), "{}", e.message());
    // Within the quota it is fine (three nodes, doubled bandwidth).
    let mut same_size = chain("x", 10, 40);
    same_size.links.pop();
    unchanged(&c).await;
    assert_eq!(generations(&h).await, gens);
    c.update(req("red", update(same_size, 0))).await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_updates_one_wins_the_other_is_told_to_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _agents = h.agents(5, 100, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    create_ready(&mut c, "red", chain("x", 10, 20)).await;
    for round in 0..5i64 {
        let g = get_vn(&mut c, "red", "x").await.generation;
        let (mut c1, mut c2) = (h.vns().await, h.vns().await);
        let (s1, s2) = (chain("x", 10, 21 + round), chain("x", 10, 40 + round));
        let (r1, r2) = tokio::join!(
            c1.update(req("red", update(s1, g))),
            c2.update(req("red", update(s2, g)))
        );
        let (won, lost) = match (r1, r2) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.into_inner(), l),
            other => panic!("round {round}: one must win and one lose: {other:?}"),
        };
        assert_eq!(lost.code(), Code::Aborted, "{lost:?}");
        assert!(
            lost.message().contains("read it again"),
            "{}",
            lost.message()
        );
        let now = get_vn(&mut c, "red", "x").await;
        assert_eq!(now.generation, g + 1);
        assert_eq!(now.links, won.vn.unwrap().links);
    }
    // A generation that is not the VN's is refused at once.
    let g = get_vn(&mut c, "red", "x").await.generation;
    let e = c
        .update(req("red", update(grown("x"), g + 7)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_constrain_what_a_parent_update_may_remove_or_narrow() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _agents = h.agents(4, 200, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    let parent = create_ready(&mut c, "red", parent_spec("p")).await;
    // Child c: c1 in p1, c2 in p2, 60 Mbit/s over p1-p2.
    let child = pb::VnSpec {
        name: "c".into(),
        parent: "p".into(),
        nodes: vec![
            pb::NodeSpec {
                host: "p1".into(),
                ..node("c1", 10)
            },
            pb::NodeSpec {
                host: "p2".into(),
                ..node("c2", 10)
            },
        ],
        links: vec![link("c1", "c2", 60)],
        ..Default::default()
    };
    let child = create_ready(&mut c, "red", child).await;
    let parent = get_vn(&mut c, "red", &parent.name).await;

    let rc = c.clone();
    let refused = |spec: pb::VnSpec| {
        let mut c = rc.clone();
        async move {
            let e = c.update(req("red", update(spec, 0))).await.unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            assert!(e.message().contains("child VN(s) c "), "{}", e.message());
            e.message().to_string()
        }
    };
    // Removing a node that carries a child node.
    let mut s = parent_spec("p");
    s.nodes.remove(0);
    s.links.remove(0);
    let m = refused(s).await;
    assert!(m.starts_with("node p1 cannot be removed"), "{m}");
    // Narrowing a link below what the child reserves on it.
    let mut s = parent_spec("p");
    s.links[0].bandwidth_mbps = 50;
    let m = refused(s).await;
    assert!(m.contains("bandwidth cannot go below the 60 Mbit/s"), "{m}");
    // Shrinking a node's cpu below what the child uses there.
    let mut s = parent_spec("p");
    s.nodes[1].cpu = 5;
    let m = refused(s).await;
    assert!(m.contains("cpu cannot go below the 10"), "{m}");
    // Narrowing an attribute below the child's.
    let mut s = parent_spec("p");
    s.attributes = Some(pb::VnAttributes {
        max_nodes: Some(4),
        ..Default::default()
    });
    let m = refused(s).await;
    assert!(m.contains("max_nodes 4 is below the 5 nodes"), "{m}");
    // An attribute the child still fits is fine to narrow (checked on a dry run).
    let mut s = parent_spec("p");
    s.attributes = Some(pb::VnAttributes {
        max_link_bandwidth_mbps: Some(100),
        ..Default::default()
    });
    let mut dry = update(s, 0);
    dry.dry_run = true;
    assert!(
        c.update(req("red", dry))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    // A dry run refuses what the update would refuse.
    let mut s = parent_spec("p");
    s.nodes.remove(0);
    s.links.remove(0);
    let mut dry = update(s, 0);
    dry.dry_run = true;
    let e = c.update(req("red", dry)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // No longer nestable.
    let mut s = parent_spec("p");
    s.nestable = false;
    refused(s).await;
    assert_eq!(get_vn(&mut c, "red", "p").await, parent);

    // What the child does not use may change: p3 goes, p4 comes, p1-p2 widens.
    let mut s = parent_spec("p");
    s.nodes[2] = roomy("p4", 60, "h4");
    s.links[1] = link("p2", "p4", 100);
    s.links[0].bandwidth_mbps = 200;
    let out = c
        .update(req("red", update(s, 0)))
        .await
        .unwrap()
        .into_inner();
    let p = out.vn.unwrap();
    assert_eq!(p.generation, 2);
    assert_eq!(
        find_link(&p, "p1", "p2").unwrap().addresses,
        find_link(&parent, "p1", "p2").unwrap().addresses
    );
    wait_state(&mut c, "red", "p", pb::VnState::Ready).await;
    // The child did not change at all.
    assert_eq!(get_vn(&mut c, "red", "c").await, child);
    h.stop().await;
}
