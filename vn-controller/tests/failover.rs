//! Failure recovery and maintenance with stand-in agents: a host lost beyond its grace period
//! has its VNs re-embedded elsewhere (by policy; pinned nodes wait); a host back within the
//! grace moves nothing; a VN with nowhere to go stays DEGRADED and moves when room comes; a
//! substrate link reported down is routed around; a cordoned host takes no new node; a drain
//! moves every VN off a host.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use tonic::Code;
use vn_controller::runtime::controller::ControllerConfig;
use vn_controller::standin::{Behaviour, StandIn};
use vnet_proto::v1 as pb;

/// Four unpinned nodes in a ring, each too big to share a host with another.
fn ring(name: &str) -> pb::VnSpec {
    pb::VnSpec {
        name: name.into(),
        nodes: ["a", "b", "c", "d"].iter().map(|n| node(n, 60)).collect(),
        links: vec![
            link("a", "b", 10),
            link("b", "c", 10),
            link("c", "d", 10),
            link("d", "a", 10),
        ],
        ..Default::default()
    }
}

fn hosts_of(vn: &pb::VirtualNetwork) -> Vec<String> {
    vn.nodes.iter().map(|n| n.host.clone()).collect()
}

fn host_of(vn: &pb::VirtualNetwork, node: &str) -> String {
    vn.nodes
        .iter()
        .find(|n| n.node == node)
        .map(|n| n.host.clone())
        .unwrap()
}

/// A controller (its configuration changed by `tweak`) and `n` ready stand-in hosts h1..hn of
/// `cpu` each, as options: a test takes one away with [`take`].
async fn start_losing(
    dir: &Path,
    tweak: impl FnOnce(&mut ControllerConfig),
    n: usize,
    cpu: u64,
) -> (Harness, Vec<Option<StandIn>>) {
    let h = Harness::start(dir, tweak).await;
    let agents = h.agents(n, cpu, 4096, Behaviour::Ready).await;
    (h, agents.into_iter().map(Some).collect())
}

/// The stand-in of host `id` among `agents` (h1..hn).
fn take(agents: &mut [Option<StandIn>], id: &str) -> StandIn {
    let i: usize = id[1..].parse::<usize>().unwrap() - 1;
    agents[i].take().unwrap()
}

/// Waits until `f` holds of `provider`'s VN `name`, at most `within`.
async fn wait_vn(
    h: &Harness,
    name: &str,
    within: Duration,
    f: impl Fn(&pb::VirtualNetwork) -> bool,
) -> pb::VirtualNetwork {
    let mut c = h.vns().await;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let vn = get_vn(&mut c, "red", name).await;
        if f(&vn) {
            return vn;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: condition not met within {within:?}: {:?} {} on {:?}",
            pb::VnState::try_from(vn.state),
            vn.reason,
            hosts_of(&vn)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready(vn: &pb::VirtualNetwork) -> bool {
    vn.state == pb::VnState::Ready as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_host_moves_its_node_and_nothing_doubles_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(800);
    let (h, mut agents) = start_losing(dir.path(), |c| c.host_grace = grace, 5, 100).await;
    let mut c = h.vns().await;
    c.create(req("red", create(ring("ring")))).await.unwrap();
    let before = wait_state(&mut c, "red", "ring", pb::VnState::Ready).await;
    let mut w = c
        .watch(req("red", pb::WatchVnsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let lost = host_of(&before, "b");
    let spare: BTreeSet<String> = (1..=5)
        .map(|i| format!("h{i}"))
        .filter(|x| !hosts_of(&before).contains(x))
        .collect();
    assert_eq!(spare.len(), 1);

    let t0 = tokio::time::Instant::now();
    drop(take(&mut agents, &lost));
    let after = wait_vn(&h, "ring", grace + Duration::from_secs(5), |vn| {
        ready(vn) && !hosts_of(vn).contains(&lost)
    })
    .await;
    assert!(t0.elapsed() >= grace, "moved before the grace period ended");
    // Only b moved, to the spare host; the others kept their hosts.
    for n in ["a", "c", "d"] {
        assert_eq!(host_of(&after, n), host_of(&before, n), "{n} moved");
    }
    assert!(spare.contains(&host_of(&after, "b")), "{after:?}");
    // The record says what moved, why and how long it took.
    let r = after.recoveries.last().expect("a recovery record");
    assert_eq!(r.cause, format!("host {lost} lost"));
    assert!(
        r.moved
            .contains(&format!("node b {lost} -> {}", host_of(&after, "b"))),
        "{r:?}"
    );
    assert!(r.fault_unix_ms <= r.reembedded_unix_ms && r.reembedded_unix_ms <= r.ready_unix_ms);
    // The events tell it too: the update naming the cause, then READY with the time taken.
    let mut updated = None;
    let mut recovered = None;
    while recovered.is_none() {
        let e = tokio::time::timeout(Duration::from_secs(5), w.message())
            .await
            .expect("events")
            .unwrap()
            .unwrap();
        if e.kind == pb::VnEventKind::Updated as i32 {
            updated = Some(e.message.clone());
        }
        if e.kind == pb::VnEventKind::Ready as i32 && e.message.starts_with("recovered") {
            recovered = Some(e.message.clone());
        }
    }
    let updated = updated.expect("an UPDATED event");
    assert!(updated.contains(&format!("host {lost} lost")), "{updated}");
    assert!(updated.contains("node b"), "{updated}");
    assert!(
        recovered
            .unwrap()
            .starts_with(&format!("recovered from host {lost} lost in ")),
    );

    // The host returns: its desired state no longer holds the VN.
    let i: usize = lost[1..].parse().unwrap();
    let back = h.agent(&lost, i, 100, 4096, Behaviour::Ready).await;
    let d = back
        .wait_desired(Duration::from_secs(5), |_| true)
        .await
        .unwrap();
    assert!(d.vns.is_empty(), "{d:?}");
    let again = get_vn(&mut c, "red", "ring").await;
    assert_eq!(hosts_of(&again), hosts_of(&after));
    assert!(ready(&again));
    h.stop().await;
}

/// No spare host when one is lost: the VN stays DEGRADED naming why; once a host with room
/// attaches, a later attempt moves only the lost node there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vn_with_nowhere_to_go_moves_when_room_comes() {
    stuck_then_room(false).await;
}

/// The same with a controller restart while the VN is stuck: the new controller finds the host
/// still away and keeps trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_vn_still_moves_when_room_comes_after_a_controller_restart() {
    stuck_then_room(true).await;
}

/// A ring on four full hosts loses one: DEGRADED, nothing moves; (`restart`: the controller
/// restarts on its store, the three others come back to it); a fifth host comes: the lost
/// node moves there, the others stay.
async fn stuck_then_room(restart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(800);
    let tweak = |c: &mut ControllerConfig| {
        c.host_grace = grace;
        c.recovery_retry = Duration::from_millis(500);
        c.reattach_grace = Duration::from_millis(500);
    };
    let (h, mut agents) = start_losing(dir.path(), tweak, 4, 100).await;
    let mut c = h.vns().await;
    c.create(req("red", create(ring("full")))).await.unwrap();
    let before = wait_state(&mut c, "red", "full", pb::VnState::Ready).await;
    let lost = host_of(&before, "b");
    drop(take(&mut agents, &lost));
    let stuck = wait_vn(&h, "full", grace + Duration::from_secs(5), |vn| {
        vn.state == pb::VnState::Degraded as i32 && vn.reason.contains("cannot re-embed")
    })
    .await;
    assert!(
        stuck.reason.contains(&format!("host {lost} lost")),
        "{}",
        stuck.reason
    );
    assert_eq!(hosts_of(&stuck), hosts_of(&before));
    let h = if restart {
        h.stop().await;
        drop(agents);
        let h = Harness::start(dir.path(), tweak).await;
        agents = Vec::new();
        for i in 1..=4 {
            let id = format!("h{i}");
            agents.push(if id == lost {
                None
            } else {
                Some(h.agent(&id, i, 100, 4096, Behaviour::Ready).await)
            });
        }
        h
    } else {
        h
    };
    // Still stuck a few attempts later (after the re-attach and host grace of a restart too):
    // nothing moved, nothing doubled.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = get_vn(&mut h.vns().await, "red", "full").await;
    assert_eq!(
        still.state,
        pb::VnState::Degraded as i32,
        "{}",
        still.reason
    );
    assert_eq!(hosts_of(&still), hosts_of(&before));

    let _h5 = h.agent("h5", 5, 100, 4096, Behaviour::Ready).await;
    let after = wait_vn(&h, "full", Duration::from_secs(5), |vn| {
        ready(vn) && !hosts_of(vn).contains(&lost)
    })
    .await;
    assert_eq!(host_of(&after, "b"), "h5");
    for n in ["a", "c", "d"] {
        assert_eq!(host_of(&after, n), host_of(&before, n), "{n} moved");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_wait_and_pinned_nodes_wait_and_a_quick_return_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(600);
    let (h, mut agents) = start_losing(dir.path(), |c| c.host_grace = grace, 5, 300).await;
    let mut c = h.vns().await;
    let mut waiting = ring("waiting");
    waiting.recovery = pb::RecoveryPolicy::Wait as i32;
    for (i, n) in waiting.nodes.iter_mut().enumerate() {
        n.host = format!("h{}", i + 1);
        n.cpu = 10;
    }
    // Pinned on h1 (its node a), everything else free.
    let mut pinned = ring("pinned");
    pinned.nodes[0].host = "h1".into();
    for n in &mut pinned.nodes {
        n.cpu = 10;
    }
    pinned.nodes.truncate(2);
    pinned.links.truncate(1);
    for s in [waiting, pinned] {
        c.create(req("red", create(s))).await.unwrap();
    }
    let w0 = wait_state(&mut c, "red", "waiting", pb::VnState::Ready).await;
    let p0 = wait_state(&mut c, "red", "pinned", pb::VnState::Ready).await;

    // h1 leaves and comes back within the grace: nothing moves.
    drop(take(&mut agents, "h1"));
    tokio::time::sleep(grace / 3).await;
    agents[0] = Some(h.agent("h1", 1, 300, 4096, Behaviour::Ready).await);
    tokio::time::sleep(grace * 2).await;
    let w1 = wait_state(&mut c, "red", "waiting", pb::VnState::Ready).await;
    assert_eq!(hosts_of(&w1), hosts_of(&w0));
    assert!(w1.recoveries.is_empty());

    // h1 leaves for good: both VNs wait, degraded, saying why; nothing moved.
    drop(take(&mut agents, "h1"));
    let w2 = wait_vn(&h, "waiting", grace + Duration::from_secs(5), |vn| {
        vn.reason.contains("not re-embedded")
    })
    .await;
    assert_eq!(w2.state, pb::VnState::Degraded as i32);
    assert_eq!(
        w2.reason,
        "host h1 lost: not re-embedded: its recovery policy is wait"
    );
    assert_eq!(hosts_of(&w2), hosts_of(&w0));
    let p2 = wait_vn(&h, "pinned", Duration::from_secs(5), |vn| {
        vn.reason.contains("not re-embedded")
    })
    .await;
    assert_eq!(
        p2.reason,
        "host h1 lost: not re-embedded: node(s) a pinned to h1 wait for it"
    );
    assert_eq!(hosts_of(&p2), hosts_of(&p0));
    // It returns: both READY where they were.
    agents[0] = Some(h.agent("h1", 1, 300, 4096, Behaviour::Ready).await);
    let w3 = wait_state(&mut c, "red", "waiting", pb::VnState::Ready).await;
    let p3 = wait_state(&mut c, "red", "pinned", pb::VnState::Ready).await;
    assert_eq!(hosts_of(&w3), hosts_of(&w0));
    assert_eq!(hosts_of(&p3), hosts_of(&p0));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_reported_down_is_routed_around_and_its_return_disturbs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(300);
    let h = Harness::start(dir.path(), |c| c.link_grace = grace).await;
    let agents = h.agents(3, 100, 4096, Behaviour::Ready).await;
    // Every agent is told which links to probe.
    let p = agents[0].probe().expect("a probe configuration");
    let ids: BTreeSet<&str> = p.neighbors.iter().map(|n| n.link_id.as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["h1-h2", "h1-h3"]));
    assert!(p.interval_ms > 0 && p.misses > 0);

    let mut c = h.vns().await;
    let mut s = chain("pair", 10, 10);
    s.nodes.truncate(2);
    s.links.truncate(1);
    s.nodes[0].host = "h1".into();
    s.nodes[1].host = "h2".into();
    c.create(req("red", create(s))).await.unwrap();
    let before = wait_state(&mut c, "red", "pair", pb::VnState::Ready).await;
    assert_eq!(before.links[0].path, ["h1", "h2"]);

    // A report about a link of other hosts is ignored; a flap shorter than the grace too.
    agents[2].report_underlay(&[("h1-h2", false)]).await;
    agents[0].report_underlay(&[("h1-h2", false)]).await;
    agents[0].report_underlay(&[("h1-h2", true)]).await;
    tokio::time::sleep(grace * 3).await;
    assert_eq!(
        get_vn(&mut c, "red", "pair").await.links[0].path,
        ["h1", "h2"]
    );

    agents[1].report_underlay(&[("h1-h2", false)]).await;
    let after = wait_vn(&h, "pair", grace + Duration::from_secs(5), |vn| {
        ready(vn) && vn.links[0].path != ["h1", "h2"]
    })
    .await;
    assert_eq!(after.links[0].path, ["h1", "h3", "h2"]);
    assert_eq!(after.recoveries.last().unwrap().cause, "link h1-h2 down");
    let links = h.links().await;
    assert!(links.iter().find(|l| l.id == "h1-h2").unwrap().down);

    // It comes back: usable again, the VN stays where it is.
    agents[1].report_underlay(&[("h1-h2", true)]).await;
    let substrate_up = async {
        loop {
            let links = h.links().await;
            if !links.iter().find(|l| l.id == "h1-h2").unwrap().down {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), substrate_up)
        .await
        .expect("the link is up again");
    let later = get_vn(&mut c, "red", "pair").await;
    assert_eq!(later.links[0].path, after.links[0].path);
    assert!(ready(&later));
    assert_eq!(later.generation, after.generation);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_host_takes_no_new_node_and_a_drain_moves_everything_off() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(4, 100, 4096, Behaviour::Ready).await;
    let mut admin_c = h.admin().await;
    let host = |h: &str| pb::HostRequest { host: h.into() };

    // A provider may not cordon; an unknown host is named.
    let cred = admin_c
        .create_credential(admin(pb::CreateCredentialRequest {
            provider: "red".into(),
            role: pb::Role::Provider as i32,
            ttl_secs: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let e = admin_c
        .cordon(with_token(&cred.token, host("h1")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = admin_c.cordon(admin(host("h9"))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("h9"), "{}", e.message());

    // h1 and h2 cordoned: a ring of four big nodes has two hosts left, and is refused.
    for x in ["h1", "h2"] {
        let r = admin_c.cordon(admin(host(x))).await.unwrap().into_inner();
        assert!(r.cordoned);
    }
    let mut c = h.vns().await;
    let e = c
        .create(req("red", create(ring("ring"))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert_eq!(cordoned(&h).await, ["h1", "h2"]);
    // A pair fits, on the two hosts left.
    let mut pair = ring("pair");
    pair.nodes.truncate(2);
    pair.links.truncate(1);
    c.create(req("red", create(pair))).await.unwrap();
    let p = wait_state(&mut c, "red", "pair", pb::VnState::Ready).await;
    let mut on: Vec<String> = hosts_of(&p);
    on.sort();
    assert_eq!(on, ["h3", "h4"]);

    // Uncordon both; drain h3: the pair moves off it, h3 stays cordoned.
    for x in ["h1", "h2"] {
        let r = admin_c.uncordon(admin(host(x))).await.unwrap().into_inner();
        assert!(!r.cordoned);
    }
    let r = admin_c.drain(admin(host("h3"))).await.unwrap().into_inner();
    assert!(r.cordoned);
    assert_eq!(r.moved.len(), 1, "{r:?}");
    assert!(r.moved[0].starts_with("red/pair: node "), "{r:?}");
    assert!(r.remaining.is_empty(), "{r:?}");
    let moved = wait_vn(&h, "pair", Duration::from_secs(5), ready).await;
    assert!(!hosts_of(&moved).contains(&"h3".to_string()));
    assert!(
        hosts_of(&moved).contains(&"h4".to_string()),
        "h4 kept its node"
    );
    assert_eq!(moved.recoveries.last().unwrap().cause, "host h3 drained");
    drop(agents);
    h.stop().await;

    // The cordon is durable: a restarted controller still has h3 cordoned.
    let h = Harness::start(dir.path(), |_| {}).await;
    assert_eq!(cordoned(&h).await, ["h3"]);
    h.stop().await;
}

/// The hosts the controller lists as cordoned.
async fn cordoned(h: &Harness) -> Vec<String> {
    let listed = h.hosts().await;
    listed
        .into_iter()
        .filter(|x| x.cordoned)
        .map(|x| x.id)
        .collect()
}
