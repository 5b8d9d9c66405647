//! Agent sessions: a disconnect degrades a VN and a re-attach restores it; a restarted
//! controller degrades VNs whose hosts do not come back within the grace period.

mod common;

use std::time::Duration;

use common::*;
use vn_controller::standin::Behaviour;
use vnet_proto::v1 as pb;

fn two_hosts(name: &str) -> pb::VnSpec {
    let mut s = chain(name, 10, 10);
    s.nodes.truncate(2);
    s.links.truncate(1);
    s.nodes[0].host = "h1".into();
    s.nodes[1].host = "h2".into();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_degrades_and_reattach_restores() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let a1 = h.agent("h1", 1, 100, 4096, Behaviour::Ready).await;
    let a2 = h.agent("h2", 2, 100, 4096, Behaviour::Ready).await;
    a1.wait_desired(Duration::from_secs(5), |_| true)
        .await
        .unwrap();
    a2.wait_desired(Duration::from_secs(5), |_| true)
        .await
        .unwrap();
    let mut c = h.vns().await;
    c.create(req("red", create(two_hosts("pair"))))
        .await
        .unwrap();
    wait_state(&mut c, "red", "pair", pb::VnState::Ready).await;
    let d_before = a2.desired().unwrap();

    let mut w = c
        .watch(req("red", pb::WatchVnsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        w.message().await.unwrap().unwrap().kind,
        pb::VnEventKind::Snapshot as i32
    );

    drop(a2);
    let vn = wait_state(&mut c, "red", "pair", pb::VnState::Degraded).await;
    assert_eq!(vn.reason, "host h2 disconnected");
    // (host progress of the creation may still be on its way: events follow persistence)
    let e = loop {
        let e = w.message().await.unwrap().unwrap();
        if e.kind != pb::VnEventKind::HostProgress as i32 && e.kind != pb::VnEventKind::Ready as i32
        {
            break e;
        }
    };
    assert_eq!(e.kind, pb::VnEventKind::Degraded as i32);
    assert_eq!(e.host, "h2");
    // Nothing was released: the VN still holds its capacity.
    let hosts = h.hosts().await;
    let h2 = hosts.iter().find(|x| x.id == "h2").unwrap();
    assert!(!h2.connected);
    assert_eq!(h2.residual.unwrap().cpu, 90);
    // A VN cannot be placed on a detached host.
    let e = c
        .create(req("red", create(two_hosts("other"))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("pinned host h2 is not attached"));

    let a2 = h.agent("h2", 2, 100, 4096, Behaviour::Ready).await;
    let d = a2
        .wait_desired(Duration::from_secs(5), |_| true)
        .await
        .unwrap();
    assert_eq!(d, d_before, "the same desired state after a re-attach");
    wait_state(&mut c, "red", "pair", pb::VnState::Ready).await;

    // A second session of the same host replaces the first.
    let a2b = h.agent("h2", 2, 100, 4096, Behaviour::Ready).await;
    a2b.wait_desired(Duration::from_secs(5), |_| true)
        .await
        .unwrap();
    drop(a2); // the replaced session ending must not degrade anything
    tokio::time::sleep(Duration::from_millis(200)).await;
    let vn = get_vn(&mut c, "red", "pair").await;
    assert_eq!(vn.state, pb::VnState::Ready as i32, "{}", vn.reason);
    drop(a1);
    drop(a2b);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_missing_after_restart_degrade_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(2, 100, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    c.create(req("red", create(two_hosts("pair"))))
        .await
        .unwrap();
    wait_state(&mut c, "red", "pair", pb::VnState::Ready).await;
    drop(c);
    h.stop().await;
    drop(agents);

    let h = Harness::start(dir.path(), |c| {
        c.reattach_grace = Duration::from_millis(300)
    })
    .await;
    let mut c = h.vns().await;
    // Still ready at first: agents get the grace period to come back.
    let vn = get_vn(&mut c, "red", "pair").await;
    assert_eq!(vn.state, pb::VnState::Ready as i32);
    let _a1 = h.agent("h1", 1, 100, 4096, Behaviour::Ready).await;
    let vn = wait_state(&mut c, "red", "pair", pb::VnState::Degraded).await;
    assert_eq!(vn.reason, "host h2 disconnected");
    let _a2 = h.agent("h2", 2, 100, 4096, Behaviour::Ready).await;
    wait_state(&mut c, "red", "pair", pb::VnState::Ready).await;
    h.stop().await;
}
