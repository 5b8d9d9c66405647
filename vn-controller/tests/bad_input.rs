//! Every bad input gets the right code and a message naming the item, and leaves no trace.

mod common;

use common::*;
use tonic::Code;
use vn_controller::standin::Behaviour;
use vnet_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_without_trace() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _agents = h.agents(3, 100, 1024, Behaviour::Ready).await;
    let mut c = h.vns().await;
    let before = h.ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.allocators().cursors(),
            ix.records().count(),
            ix.generation("h1"),
        )
    });

    type Mutate = Box<dyn Fn(&mut pb::VnSpec)>;
    let cases: Vec<(Mutate, Code, &str)> = vec![
        (
            Box::new(|s| s.links[1].endpoints[1] = "zz".into()),
            Code::InvalidArgument,
            "spec.links[1] (b-zz): unknown endpoint \"zz\"",
        ),
        (
            Box::new(|s| s.nodes[1].name = "a".into()),
            Code::InvalidArgument,
            "spec.nodes[1] (a): duplicate node name a",
        ),
        (
            Box::new(|s| s.links.push(link("c", "b", 5))),
            Code::InvalidArgument,
            "spec.links[2] (c-b): duplicate link",
        ),
        (
            Box::new(|s| s.links[0].bandwidth_mbps = 0),
            Code::InvalidArgument,
            "spec.links[0] (a-b): bandwidth_mbps must be > 0, got 0",
        ),
        (
            Box::new(|s| s.links[0].addresses = vec!["10.0.0.1/33".into(), "10.0.0.2/24".into()]),
            Code::InvalidArgument,
            "spec.links[0] (a-b): address \"10.0.0.1/33\" is not a valid CIDR",
        ),
        (
            Box::new(|s| s.nodes[2].kind = 42),
            Code::InvalidArgument,
            "spec.nodes[2] (c): unknown kind 42",
        ),
        (
            Box::new(|s| s.nodes = (0..257).map(|i| node(&format!("n{i}"), 0)).collect()),
            Code::InvalidArgument,
            "257 nodes exceed the limit of 256",
        ),
        (
            Box::new(|s| s.nodes[0].host = "h9".into()),
            Code::InvalidArgument,
            "spec.nodes[0] (a): pinned to unknown host h9",
        ),
        (
            Box::new(|s| s.nodes[0].cpu = 1000),
            Code::ResourceExhausted,
            "virtual node `a`",
        ),
        (
            Box::new(|s| s.links[0].bandwidth_mbps = 5000),
            Code::ResourceExhausted,
            "virtual link",
        ),
        (
            Box::new(|s| s.nodes[0].memory_mb = 5000),
            Code::ResourceExhausted,
            "memory",
        ),
        (
            Box::new(|s| s.nodes[0].location = "mars".into()),
            Code::ResourceExhausted,
            "mars",
        ),
        (
            Box::new(|s| s.parent = "base".into()),
            Code::NotFound,
            "VN red/base (spec.parent) not found",
        ),
        (
            Box::new(|s| s.provider = "blue".into()),
            Code::PermissionDenied,
            "spec.provider \"blue\" does not match the caller red",
        ),
        (
            Box::new(|s| s.algorithm = "nope".into()),
            Code::InvalidArgument,
            "spec.algorithm: unknown algorithm \"nope\"",
        ),
        (
            Box::new(|s| s.links[0].interfaces = vec!["lo".into(), "x".into()]),
            Code::InvalidArgument,
            "interface name \"lo\" is reserved",
        ),
    ];
    for (mutate, code, needle) in cases {
        let mut s = chain("bad", 10, 10);
        mutate(&mut s);
        let e = c.create(req("red", create(s))).await.unwrap_err();
        assert_eq!(e.code(), code, "{needle}: got {e:?}");
        assert!(
            e.message().contains(needle),
            "{:?} lacks {needle:?}",
            e.message()
        );
    }
    let e = c
        .create(req("red", pb::CreateVnRequest { spec: None }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .get(req(
            "red",
            pb::GetVnRequest {
                name: "Bad Name".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // No trace: no record, no capacity, no identifier, no new generation.
    let after = h.ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.allocators().cursors(),
            ix.records().count(),
            ix.generation("h1"),
        )
    });
    assert_eq!(before, after);
    let list = c
        .list(req("red", pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(list.vns.is_empty());
    h.stop().await;
}
