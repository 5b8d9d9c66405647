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
    assert_no_vn_listed(&h).await;
    h.stop().await;
}

/// Red lists no VN: nothing the refused requests sent was created.
async fn assert_no_vn_listed(h: &Harness) {
    let list = h
        .vns()
        .await
        .list(req("red", pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(list.vns.is_empty(), "{:?}", list.vns);
}

/// Everything a refused request could have left behind: capacity used, allocator cursors, VN
/// records, and the desired-state generation of every host.
fn trace(h: &Harness) -> impl PartialEq + std::fmt::Debug + use<> {
    h.ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.allocators().cursors(),
            ix.records().count(),
            ["h1", "h2", "h3"].map(|id| ix.generation(id)),
        )
    })
}

fn addrs(s: &mut pb::VnSpec, link: usize, a: &str, b: &str) {
    s.links[link].addresses = vec![a.into(), b.into()];
}

/// A huge value: every error quoting it must stay short (trailers are limited to a few KiB).
fn huge() -> String {
    "x".repeat(3_000_000)
}

/// A change that makes a good spec wrong.
type Mutate = Box<dyn Fn(&mut pb::VnSpec)>;

/// Addresses no interface may hold, and two interfaces of one node in overlapping subnets.
fn address_cases() -> Vec<(Mutate, &'static str)> {
    vec![
        // Two interfaces of one node in overlapping subnets.
        (
            Box::new(|s| {
                addrs(s, 0, "10.0.0.1/24", "10.0.0.2/24");
                addrs(s, 1, "10.0.0.3/24", "10.0.0.4/24");
            }),
            "spec.links[1] (b-c): address 10.0.0.3/24 of node b overlaps subnet 10.0.0.0/24 of the same node on spec.links[0] (a-b)",
        ),
        (
            Box::new(|s| {
                addrs(s, 0, "10.0.0.1/24", "10.0.0.2/24");
                addrs(s, 1, "10.0.0.66/26", "10.1.0.1/26");
            }),
            "address 10.0.0.66/26 of node b overlaps subnet 10.0.0.0/24",
        ),
        (
            Box::new(|s| addrs(s, 0, "0.0.0.0/0", "10.0.0.2/24")),
            "spec.links[0] (a-b): address 0.0.0.0/0 is unspecified",
        ),
        (
            Box::new(|s| addrs(s, 0, "10.0.0.1/24", "0.0.0.7/24")),
            "spec.links[0] (a-b): address 0.0.0.7/24 is in 0.0.0.0/8",
        ),
        (
            Box::new(|s| addrs(s, 0, "127.0.0.1/8", "127.0.0.2/8")),
            "spec.links[0] (a-b): address 127.0.0.1/8 is a loopback address",
        ),
        (
            Box::new(|s| addrs(s, 0, "224.0.0.5/24", "10.0.0.2/24")),
            "spec.links[0] (a-b): address 224.0.0.5/24 is a multicast address",
        ),
        (
            Box::new(|s| addrs(s, 0, "169.254.0.1/16", "169.254.0.2/16")),
            "spec.links[0] (a-b): address 169.254.0.1/16 is link-local",
        ),
        (
            Box::new(|s| addrs(s, 0, "255.255.255.255/32", "10.0.0.2/32")),
            "address 255.255.255.255/32 is the limited broadcast address",
        ),
        (
            Box::new(|s| addrs(s, 0, "10.0.0.0/24", "10.0.0.2/24")),
            "spec.links[0] (a-b): address 10.0.0.0/24 is the network address of 10.0.0.0/24",
        ),
        (
            Box::new(|s| addrs(s, 0, "10.0.0.1/30", "10.0.0.3/30")),
            "spec.links[0] (a-b): address 10.0.0.3/30 is the broadcast address of 10.0.0.0/30",
        ),
        (
            Box::new(|s| addrs(s, 0, "::/0", "2001:db8::2/64")),
            "spec.links[0] (a-b): address ::/0 is unspecified",
        ),
        (
            Box::new(|s| addrs(s, 0, "::1/128", "2001:db8::2/64")),
            "address ::1/128 is the loopback address",
        ),
        (
            Box::new(|s| addrs(s, 0, "ff02::1/64", "2001:db8::2/64")),
            "address ff02::1/64 is a multicast address",
        ),
        (
            Box::new(|s| addrs(s, 0, "fe80::1/64", "fe80::2/64")),
            "address fe80::1/64 is link-local",
        ),
        (
            Box::new(|s| addrs(s, 0, "2001:db8::/64", "2001:db8::2/64")),
            "address 2001:db8::/64 is the subnet-router anycast address of 2001:db8::/64",
        ),
        (
            Box::new(|s| {
                s.nodes[0].routes = vec![pb::Route {
                    destination: "default".into(),
                    via: "127.0.0.1".into(),
                }]
            }),
            "spec.nodes[0] (a): route via 127.0.0.1 is a loopback address",
        ),
        (
            Box::new(|s| {
                s.nodes[0].routes = vec![pb::Route {
                    destination: "10.9.0.0/16".into(),
                    via: "224.0.0.1".into(),
                }]
            }),
            "spec.nodes[0] (a): route via 224.0.0.1 is a multicast address",
        ),
    ]
}

/// Sums that used to wrap past the quota: every item is bounded, every sum checked.
fn quantity_cases() -> Vec<(Mutate, &'static str)> {
    vec![
        (
            Box::new(|s| {
                s.attributes = Some(pb::VnAttributes {
                    max_total_cpu: Some(100),
                    ..Default::default()
                });
                for n in &mut s.nodes {
                    n.cpu = i64::MAX;
                }
            }),
            "spec.nodes[0] (a): cpu 9223372036854775807 exceeds the limit of 1000000000",
        ),
        (
            Box::new(|s| {
                s.attributes = Some(pb::VnAttributes {
                    max_total_cpu: Some(100),
                    ..Default::default()
                });
                for n in &mut s.nodes {
                    n.cpu = 1_000_000_000;
                }
            }),
            "spec.nodes: total cpu 3000000000 exceeds spec.attributes.max_total_cpu 100",
        ),
        (
            Box::new(|s| s.nodes[1].memory_mb = i64::MAX),
            "spec.nodes[1] (b): memory_mb 9223372036854775807 exceeds the limit of 1000000000",
        ),
        (
            Box::new(|s| s.links[1].bandwidth_mbps = i64::MAX),
            "spec.links[1] (b-c): bandwidth_mbps 9223372036854775807 exceeds the limit of 1000000000",
        ),
        (
            Box::new(|s| s.nodes[0].memory_mb = -1),
            "spec.nodes[0] (a): memory_mb -1 must be >= 0",
        ),
    ]
}

/// Names past their limits, each quoted only in part.
fn name_cases() -> Vec<(Mutate, &'static str)> {
    vec![
        (Box::new(|s| s.name = huge()), "spec.name \"xxxxxxxx"),
        (
            Box::new(|s| s.name = "a".repeat(64)),
            "has 64 bytes, longer than the limit of 63",
        ),
        (
            Box::new(|s| s.nodes[0].name = huge()),
            "name has 3000000 bytes, longer than the limit of 63",
        ),
        (
            Box::new(|s| s.links[0].endpoints[1] = huge()),
            "spec.links[0] (a-\"xxxx",
        ),
        (
            Box::new(|s| s.nodes[0].location = huge()),
            "spec.nodes[0] (a): location has 3000000 bytes",
        ),
        (
            Box::new(|s| s.nodes[0].location = "rack 1".into()),
            "spec.nodes[0] (a): location \"rack 1\": character ' ' is not allowed",
        ),
        (
            Box::new(|s| s.nodes[0].host = huge()),
            "spec.nodes[0] (a): host \"xxx",
        ),
        (
            Box::new(|s| {
                s.nodes[0].kind = pb::NodeKind::Vm as i32;
                s.nodes[0].memory_mb = 128;
                s.nodes[0].image = huge();
            }),
            "spec.nodes[0] (a): image name has 3000000 bytes",
        ),
        (
            Box::new(|s| s.links[0].interfaces = vec![huge(), "x".into()]),
            "spec.links[0] (a-b): interface name \"xxx",
        ),
        (
            Box::new(|s| s.algorithm = huge()),
            "spec.algorithm: unknown algorithm \"xxx",
        ),
        (Box::new(|s| s.parent = huge()), "spec.parent \"xxx"),
        (
            Box::new(|s| {
                s.nestable = true;
                s.share_with = vec![huge()];
            }),
            "spec.share_with \"xxx",
        ),
        (
            Box::new(|s| {
                s.nodes[0].routes = vec![pb::Route {
                    destination: "default".into(),
                    via: huge(),
                }]
            }),
            "spec.nodes[0] (a): route via \"xxx",
        ),
        (
            Box::new(|s| {
                s.nodes[0].routes = vec![
                    pb::Route {
                        destination: "default".into(),
                        via: "10.0.0.1".into(),
                    };
                    300
                ]
            }),
            "spec.nodes[0] (a): 300 routes exceed the limit of 256",
        ),
    ]
}

/// The malicious and mistaken inputs of the hardening issue, each refused as INVALID_ARGUMENT with
/// a message naming the field, each leaving nothing behind (checked after every case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _agents = h.agents(3, 100, 1024, Behaviour::Ready).await;
    let mut c = h.vns().await;
    let before = trace(&h);
    let cases = address_cases()
        .into_iter()
        .chain(quantity_cases())
        .chain(name_cases());
    for (mutate, needle) in cases {
        let mut s = chain("bad", 10, 10);
        mutate(&mut s);
        let e = c.create(req("red", create(s))).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{needle}: got {e:?}");
        let m = e.message();
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        assert!(m.len() < 1024, "{needle}: a message of {} bytes", m.len());
        assert_eq!(trace(&h), before, "{needle}: left a trace");
    }

    // Names in the other calls: refused, quoted in part.
    let e = c
        .get(req("red", pb::GetVnRequest { name: huge() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("name \"xxx") && e.message().len() < 1024);

    // Bytes that are no protobuf: INVALID_ARGUMENT naming the message, not INTERNAL.
    let garbage: Vec<(Vec<u8>, &str)> = vec![
        // The spec's field 1 (name, a string) as a varint: the wrong wire type.
        (vec![0x08, 0x01], "malformed CreateVnRequest message"),
        // The spec's name: not UTF-8.
        (
            vec![0x0a, 0x02, 0xff, 0xfe],
            "malformed CreateVnRequest message",
        ),
        // A length beyond the end of the message.
        (vec![0x12, 0x7f, 0x00], "malformed CreateVnRequest message"),
        // A varint that never ends.
        (vec![0x18, 0xff, 0xff], "malformed CreateVnRequest message"),
    ];
    for (bytes, needle) in garbage {
        let e = raw_create(&h, bytes).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(needle), "{:?}", e.message());
        assert_eq!(trace(&h), before);
    }

    assert_no_vn_listed(&h).await;
    h.stop().await;
}

/// Calls Create with `body` as the message's field 1 (the spec), whatever those bytes are.
async fn raw_create(h: &Harness, body: Vec<u8>) -> Result<pb::VirtualNetwork, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(h.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // prost encodes `Vec<u8>` as field 1 of wire type "bytes": exactly `body` as the spec.
    let codec = vnet_proto::codec::VnetCodec::<Vec<u8>, pb::VirtualNetwork>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/vnet.v1.VirtualNetworks/Create");
    grpc.unary(req("red", body), path, codec)
        .await
        .map(|r| r.into_inner())
}
