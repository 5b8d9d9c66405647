//! Trust rules of the controller in process: FAILED records expire, quotas refuse a create
//! (zero-demand nodes count) and leave nothing behind, roles and credentials decide who may do
//! what. The same rules against the real daemons, with TLS and host certificates, are in
//! `cli/tests/trust.rs`.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;
use vn_controller::runtime::credentials::Role;
use vn_controller::standin::Behaviour;
use vnet_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_records_expire() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |c| {
        c.failed_ttl = Some(Duration::from_millis(400));
    })
    .await;
    let _a = h
        .agents(
            3,
            100,
            4096,
            Behaviour::FailLabels(vec!["red/doomed".into()], "boom".into()),
        )
        .await;
    let mut c = h.vns().await;
    c.create(req("red", create(chain("doomed", 10, 10))))
        .await
        .unwrap();
    wait_state(&mut c, "red", "doomed", pb::VnState::Failed).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .get(req(
                "red",
                pb::GetVnRequest {
                    name: "doomed".into(),
                },
            ))
            .await;
        match r {
            Err(e) if e.code() == Code::NotFound => break,
            _ => assert!(tokio::time::Instant::now() < deadline, "still there: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_nodes_without_demands_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _a = h.agents(2, 100, 4096, Behaviour::Ready).await;
    let (token, _) = h
        .ctl
        .credentials()
        .issue("red", Role::Provider, 0, None)
        .unwrap();
    let mut admin = h.admin().await;
    h.set_node_quota("red", 3).await;
    // A provider may not set quotas.
    let e = admin
        .set_quota(with_token(&token, pb::SetQuotaRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut c = h.vns().await;
    let mut empty = chain("empty", 0, 0);
    empty.links.clear();
    for n in &mut empty.nodes {
        n.memory_mb = 0;
    }
    let mut spec = empty.clone();
    spec.nodes.pop(); // two nodes without demands
    spec.name = "two".into();
    c.create(with_token(&token, create(spec))).await.unwrap();
    let e = c
        .create(with_token(&token, create(empty)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(
        e.message(),
        "quota of provider red exceeded: nodes limit 3, in use 2, this VN asks 3"
    );
    let names: Vec<String> = c
        .list(with_token(&token, pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .vns
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["two"]);
    let q = admin
        .get_quota(with_token(&token, pb::GetQuotaRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.usage.unwrap().nodes, 2);
    // Another provider's quota is not there for red.
    let e = admin
        .get_quota(with_token(
            &token,
            pb::GetQuotaRequest {
                provider: "blue".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_issued_revoked_and_admin_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let mut admin = h.admin().await;
    let r = admin
        .create_credential(with_token(
            ADMIN_TOKEN,
            pb::CreateCredentialRequest {
                provider: "blue".into(),
                role: pb::Role::Provider as i32,
                ttl_secs: 3600,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.expires_unix_ms > 0);
    let mut c = h.vns().await;
    c.list(with_token(&r.token, pb::ListVnsRequest {}))
        .await
        .unwrap();
    // A provider cannot mint credentials.
    let e = admin
        .create_credential(with_token(
            &r.token,
            pb::CreateCredentialRequest {
                provider: "blue".into(),
                role: pb::Role::Admin as i32,
                ttl_secs: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // The admin must say for whom it acts on VNs.
    let e = c
        .list(with_token(ADMIN_TOKEN, pb::ListVnsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("--as"), "{e:?}");
    admin
        .revoke_credential(with_token(
            ADMIN_TOKEN,
            pb::RevokeCredentialRequest {
                token_id: r.token_id.clone(),
                provider: String::new(),
            },
        ))
        .await
        .unwrap();
    let e = c
        .list(with_token(&r.token, pb::ListVnsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("revoked"), "{e:?}");
    h.stop().await;
}
