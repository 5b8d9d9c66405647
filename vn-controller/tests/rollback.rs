//! A failing agent (or one that never reports) rolls the whole VN back: nothing stays
//! allocated, every host drops its slice, the VN stays visible as FAILED with the reason.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;
use vn_controller::standin::Behaviour;
use vnet_proto::v1 as pb;

async fn assert_nothing_held(h: &Harness) {
    let mut s = h.substrate().await;
    let hosts = s
        .list_hosts(admin(pb::ListHostsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert!(hosts.iter().all(|h| h.residual == h.capacity), "{hosts:?}");
    let links = s
        .list_links(admin(pb::ListLinksRequest {}))
        .await
        .unwrap()
        .into_inner()
        .links;
    assert!(links.iter().all(|l| l.residual_mbps == l.bandwidth_mbps));
    h.ctl.with_index(|ix| {
        let a = ix.allocators();
        assert!(a.vni.held().is_empty(), "VNIs held: {:?}", a.vni.held());
        assert!(a.mac.held().is_empty());
        assert!(a.vlan.values().all(|p| p.held().is_empty()));
        assert!(ix.usage().cpu.is_empty() && ix.usage().bandwidth_mbps.is_empty());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_rolls_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let good1 = h.agent("h1", 1, 100, 4096, Behaviour::Ready).await;
    let bad = h
        .agent(
            "h2",
            2,
            100,
            4096,
            Behaviour::FailLabels(vec!["red/doomed".into()], "veth v1l0: file exists".into()),
        )
        .await;
    let good3 = h.agent("h3", 3, 100, 4096, Behaviour::Ready).await;
    for a in [&good1, &bad, &good3] {
        a.wait_desired(Duration::from_secs(5), |_| true)
            .await
            .unwrap();
    }
    let mut c = h.vns().await;
    // A VN that is fine everywhere stays untouched by the other's rollback.
    let mut ok = chain("fine", 10, 10);
    for n in &mut ok.nodes {
        n.host = "h1".into();
    }
    ok.allow_revisitation = true;
    c.create(req("red", create(ok))).await.unwrap();
    wait_state(&mut c, "red", "fine", pb::VnState::Ready).await;

    let mut w = c
        .watch(req(
            "red",
            pb::WatchVnsRequest {
                name: "doomed".into(),
                after_seq: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut spec = chain("doomed", 60, 100);
    spec.nodes[1].host = "h2".into();
    spec.encapsulation = pb::Encapsulation::Vlan as i32;
    let vn = c
        .create(req("red", create(spec)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vn.state, pb::VnState::Provisioning as i32);
    let failed = wait_state(&mut c, "red", "doomed", pb::VnState::Failed).await;
    assert_eq!(failed.reason, "host h2: veth v1l0: file exists");
    assert_eq!(failed.hosts["h2"], "failed: veth v1l0: file exists");

    let mut saw_failed = false;
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_secs(2), w.next_message_like()).await
    {
        if e.kind == pb::VnEventKind::Failed as i32 {
            assert!(e.message.contains("h2"));
            saw_failed = true;
            break;
        }
    }
    assert!(saw_failed);

    // Every host dropped the slice; only "fine" remains on h1.
    for a in [&good1, &bad, &good3] {
        a.wait_desired(Duration::from_secs(5), |d| {
            d.vns.iter().all(|s| s.label != "red/doomed")
        })
        .await
        .expect("slice removed");
    }
    c.delete(req(
        "red",
        pb::DeleteVnRequest {
            name: "fine".into(),
            cascade: false,
        },
    ))
    .await
    .unwrap();
    assert_nothing_held(&h).await;

    // The failed VN keeps its name until deleted; deleting it frees the name.
    let e = c
        .create(req("red", create(chain("doomed", 1, 1))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    c.delete(req(
        "red",
        pb::DeleteVnRequest {
            name: "doomed".into(),
            cascade: false,
        },
    ))
    .await
    .unwrap();
    bad.set_behaviour(Behaviour::Ready);
    c.create(req("red", create(chain("doomed", 1, 1))))
        .await
        .unwrap();
    wait_state(&mut c, "red", "doomed", pb::VnState::Ready).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_host_times_out_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |c| {
        c.provisioning_timeout = Duration::from_millis(500);
    })
    .await;
    let _a = h.agent("h1", 1, 100, 4096, Behaviour::Ready).await;
    let _b = h.agent("h2", 2, 100, 4096, Behaviour::Silent).await;
    let mut c = h.vns().await;
    let mut spec = chain("slow", 10, 10);
    spec.nodes.truncate(2);
    spec.links.truncate(1);
    spec.nodes[0].host = "h1".into();
    spec.nodes[1].host = "h2".into();
    c.create(req("red", create(spec))).await.unwrap();
    let vn = wait_state(&mut c, "red", "slow", pb::VnState::Failed).await;
    assert_eq!(vn.reason, "host(s) h2 did not report ready within 500ms");
    assert_nothing_held(&h).await;
    h.stop().await;
}

/// `Streaming::message` as a future yielding `Option<Result<..>>`.
trait NextLike {
    fn next_message_like(
        &mut self,
    ) -> impl std::future::Future<Output = Option<Result<pb::VnEvent, tonic::Status>>>;
}

impl NextLike for tonic::Streaming<pb::VnEvent> {
    async fn next_message_like(&mut self) -> Option<Result<pb::VnEvent, tonic::Status>> {
        self.message().await.transpose()
    }
}
