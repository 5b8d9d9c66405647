//! Create, list, get, delete and watch over gRPC with stand-in agents; provider isolation.

mod common;

use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use tonic::Code;
use vn_controller::runtime::credentials::Role;
use vn_controller::standin::Behaviour;
use vnet_proto::v1 as pb;

fn tunnel(e: &pb::Endpoint) -> Option<&pb::TunnelHop> {
    match e.kind.as_ref()? {
        pb::endpoint::Kind::Tunnel(t) => Some(t),
        pb::endpoint::Kind::Node(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_get_watch_delete() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 100, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;

    let mut watch = c
        .watch(req("red", pb::WatchVnsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    // Three nodes, each needing 60 of 100 cpu: they land on three different hosts.
    let mut spec = chain("red-net", 60, 100);
    spec.links[0].addresses = vec!["10.0.0.1/24".into(), "10.0.0.2/24".into()];
    let vn = c
        .create(req("red", create(spec)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vn.state, pb::VnState::Provisioning as i32);
    assert_eq!(vn.provider, "red");
    assert_eq!(vn.spec.as_ref().unwrap().provider, "red");
    let hosts: std::collections::BTreeSet<_> = vn.nodes.iter().map(|n| n.host.clone()).collect();
    assert_eq!(hosts.len(), 3, "{:?}", vn.nodes);
    for l in &vn.links {
        assert_eq!(l.path.len(), l.hops.len() + 1);
        assert!(!l.hops.is_empty());
        for hop in &l.hops {
            assert!(hop.vni > 0 && hop.vni < (1 << 24));
            assert_eq!(hop.encapsulation, pb::Encapsulation::Vxlan as i32);
            assert_eq!(hop.udp_port, 4789);
        }
        // stand-ins report MTU 1500: VXLAN leaves 1450
        assert_eq!(l.mtu, 1450);
        assert_eq!(l.macs.len(), 2);
    }
    assert_eq!(vn.links[0].interfaces, ["eth0", "eth0"]);
    assert_eq!(vn.links[1].interfaces, ["eth1", "eth0"]);
    assert_eq!(vn.links[0].addresses, ["10.0.0.1/24", "10.0.0.2/24"]);

    let ready = wait_state(&mut c, "red", "red-net", pb::VnState::Ready).await;
    assert!(
        ready.hosts.values().all(|s| s == "ready"),
        "{:?}",
        ready.hosts
    );

    // The desired state of the host of b holds b and two node-tunnel segments whose tunnels
    // mirror those on the hosts of a and c.
    let host_of = |n: &str| {
        vn.nodes
            .iter()
            .find(|p| p.node == n)
            .map(|p| p.host.clone())
            .unwrap()
    };
    let agent_of = |host: &str| &agents[host[1..].parse::<usize>().unwrap() - 1];
    let d_b = agent_of(&host_of("b")).desired().unwrap();
    let slice_b = &d_b.vns[0];
    assert_eq!(slice_b.label, "red/red-net");
    assert_eq!(slice_b.nodes.len(), 1);
    assert_eq!(slice_b.nodes[0].name, "b");
    assert_eq!(slice_b.links.len(), 2);
    let d_a = agent_of(&host_of("a")).desired().unwrap();
    let seg_a = &d_a.vns[0].links[0];
    let t_a = tunnel(seg_a.b.as_ref().unwrap()).expect("a's segment leaves over a tunnel");
    let seg_b = slice_b
        .links
        .iter()
        .find(|s| s.link_id == seg_a.link_id)
        .unwrap();
    let t_b = tunnel(seg_b.a.as_ref().unwrap()).expect("b's segment arrives over a tunnel");
    assert_eq!(t_a.vni, t_b.vni);
    assert_eq!(t_a.local_address, t_b.remote_address);
    assert_eq!(t_a.remote_address, t_b.local_address);
    assert_eq!(seg_a.bandwidth_mbps, 100);

    // Watch: accepted, host progress for three hosts, ready.
    let mut kinds = vec![];
    while !kinds.contains(&pb::VnEventKind::Ready) {
        let e = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("event")
            .unwrap()
            .unwrap();
        assert_eq!(e.name, "red-net");
        kinds.push(pb::VnEventKind::try_from(e.kind).unwrap());
    }
    assert_eq!(kinds[0], pb::VnEventKind::Accepted);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == pb::VnEventKind::HostProgress)
            .count(),
        3
    );

    // A new watcher first gets a snapshot.
    let mut w2 = c
        .watch(req(
            "red",
            pb::WatchVnsRequest {
                name: "red-net".into(),
                after_seq: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let snap = w2.next().await.unwrap().unwrap();
    assert_eq!(snap.kind, pb::VnEventKind::Snapshot as i32);
    assert_eq!(snap.state, pb::VnState::Ready as i32);

    let list = c
        .list(req("red", pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.vns.len(), 1);

    // Residuals reflect the VN.
    let mut s = h.substrate().await;
    let hosts = s
        .list_hosts(admin(pb::ListHostsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(
        hosts.iter().map(|h| h.residual.unwrap().cpu).sum::<u64>(),
        300 - 180
    );
    let topo = s
        .get_topology(req("red", pb::GetTopologyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topo.vns.len(), 1);
    assert_eq!(topo.links.len(), 3, "full mesh over three hosts");

    // Exec is routed to the node's agent, on a stream of its own: output, stdin, then the exit.
    let start = pb::ExecRequest {
        msg: Some(pb::exec_request::Msg::Start(pb::ExecStart {
            vn: "red-net".into(),
            node: "b".into(),
            argv: vec!["ip".into(), "addr".into()],
            ..Default::default()
        })),
    };
    let stdin = pb::ExecRequest {
        msg: Some(pb::exec_request::Msg::Stdin(b"typed\n".to_vec())),
    };
    let mut out = c
        .exec(req("red", tokio_stream::iter(vec![start, stdin])))
        .await
        .unwrap()
        .into_inner();
    let mut stdout = Vec::new();
    let mut exit = None;
    while let Some(m) = out.message().await.unwrap() {
        match m.msg {
            Some(pb::exec_response::Msg::Stdout(d)) => stdout.extend(d),
            Some(pb::exec_response::Msg::Exit(e)) => exit = Some(e.exit_code),
            other => panic!("{other:?}"),
        }
    }
    let node_b = vn.nodes.iter().find(|n| n.node == "b").unwrap();
    assert_eq!(
        String::from_utf8(stdout).unwrap(),
        format!("{} ip addr\ntyped\n", node_b.node_id)
    );
    assert_eq!(exit, Some(0));

    let del = c
        .delete(req(
            "red",
            pb::DeleteVnRequest {
                name: "red-net".into(),
                cascade: false,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.deleted, ["red-net"]);
    let e = c
        .get(req(
            "red",
            pb::GetVnRequest {
                name: "red-net".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let ev = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = w2.next().await.unwrap().unwrap();
            if e.kind == pb::VnEventKind::Deleted as i32 {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev.state, pb::VnState::Deleted as i32);
    for a in &agents {
        a.wait_desired(Duration::from_secs(5), |d| d.vns.is_empty())
            .await
            .expect("slice removed");
    }
    let hosts = s
        .list_hosts(admin(pb::ListHostsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert!(hosts.iter().all(|h| h.residual == h.capacity));
    h.ctl.with_index(|ix| {
        assert!(ix.allocators().vni.held().is_empty());
        assert!(ix.allocators().mac.held().is_empty());
    });
    drop(agents);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let _agents = h.agents(3, 100, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;

    c.create(req("red", create(chain("net", 10, 10))))
        .await
        .unwrap();
    // Same name, other provider: fine (names are per provider).
    c.create(req("blue", create(chain("net", 10, 10))))
        .await
        .unwrap();
    c.create(req("red", create(chain("only-red", 10, 10))))
        .await
        .unwrap();

    let get = |name: &str| pb::GetVnRequest { name: name.into() };
    assert_eq!(
        c.get(req("blue", get("only-red")))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let del = c
        .delete(req(
            "blue",
            pb::DeleteVnRequest {
                name: "only-red".into(),
                cascade: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(del.code(), Code::NotFound);
    // Exactly what a name that does not exist gets: nothing about the owner leaks.
    assert_eq!(del.message(), "VN only-red not found");
    let blue = c
        .list(req("blue", pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        blue.vns.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["net"]
    );
    assert!(blue.vns.iter().all(|v| v.provider == "blue"));
    let red = c
        .list(req("red", pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(red.vns.len(), 2);
    // Still there after blue's attempt.
    c.get(req("red", get("only-red"))).await.unwrap();

    // Blue's watch never sees red's events (let the creations above settle first).
    for (p, n) in [("red", "net"), ("blue", "net"), ("red", "only-red")] {
        wait_state(&mut c, p, n, pb::VnState::Ready).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut w = c
        .watch(req("blue", pb::WatchVnsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let snap = w.next().await.unwrap().unwrap();
    assert_eq!(snap.name, "net");
    c.create(req("red", create(chain("later", 10, 10))))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), w.next())
            .await
            .is_err(),
        "blue saw an event of red"
    );

    // Blue's topology shows only blue's VNs.
    let topo = h
        .substrate()
        .await
        .get_topology(req("blue", pb::GetTopologyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(topo.vns.iter().all(|v| v.provider == "blue"));
    assert_eq!(topo.vns.len(), 1);

    // Identity rules.
    let anon = c.list(pb::ListVnsRequest {}).await.unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated);
    let mut spec = chain("x", 1, 1);
    spec.provider = "red".into();
    let e = c.create(req("blue", create(spec))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A made-up token, and a provider acting for another.
    let e = c
        .list(with_token(
            "vnet-0000000000000000-00",
            pb::ListVnsRequest {},
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let (blue, _) = h
        .ctl
        .credentials()
        .issue("blue", Role::Provider, 0, None)
        .unwrap();
    let mut as_red = with_token(&blue, pb::GetVnRequest { name: "net".into() });
    as_red
        .metadata_mut()
        .insert("x-vnet-as", "red".parse().unwrap());
    assert_eq!(
        c.get(as_red).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let e = c
        .create(req("red", create(chain("net", 1, 1))))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert!(e.message().contains("net"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_host_forwards_hop_by_hop() {
    use vn_controller::core::topology::TopologyFile;
    let dir = tempfile::tempdir().unwrap();
    // A line h1 - h2 - h3 from a topology file; two VLAN segments.
    let topo: TopologyFile = serde_yaml_ng::from_str(
        "links:\n  - {a: h1, b: h2, bandwidth: 1000, a_address: 10.255.12.1, b_address: 10.255.12.2, segment: s12}\n  - {a: h2, b: h3, bandwidth: 1000, segment: s23}\n",
    )
    .unwrap();
    let h = Harness::start(dir.path(), |c| {
        c.links = vn_controller::core::substrate::LinkSource::Topology(topo.links().unwrap());
    })
    .await;
    let _agents = h.agents(3, 100, 4096, Behaviour::Ready).await;
    let mut c = h.vns().await;
    let mut spec = chain("line", 10, 100);
    spec.nodes.truncate(2);
    spec.links.truncate(1);
    spec.nodes[0].host = "h1".into();
    spec.nodes[1].host = "h3".into();
    spec.encapsulation = pb::Encapsulation::Vlan as i32;
    let vn = c
        .create(req("red", create(spec)))
        .await
        .unwrap()
        .into_inner();
    let l = &vn.links[0];
    assert_eq!(l.path, ["h1", "h2", "h3"]);
    assert_eq!(l.hops.len(), 2);
    // VLAN IDs are unique per segment: both segments start at 1.
    assert_eq!(l.hops[0].vlan_id, 1);
    assert_eq!(l.hops[1].vlan_id, 1);
    assert_eq!(l.mtu, 1500, "VLAN keeps the underlay MTU");
    wait_state(&mut c, "red", "line", pb::VnState::Ready).await;

    // h2 has no node, one tunnel-tunnel segment joining both hops.
    let d2 = _agents[1].desired().unwrap();
    let s2 = &d2.vns[0];
    assert!(s2.nodes.is_empty());
    assert_eq!(s2.links.len(), 1);
    let a = tunnel(s2.links[0].a.as_ref().unwrap()).unwrap();
    let b = tunnel(s2.links[0].b.as_ref().unwrap()).unwrap();
    assert_eq!((a.neighbor.as_str(), b.neighbor.as_str()), ("h1", "h3"));
    // The topology's explicit addresses on h1-h2, the underlay address on h2-h3.
    assert_eq!(
        (a.local_address.as_str(), a.remote_address.as_str()),
        ("10.255.12.2", "10.255.12.1")
    );
    assert_eq!(b.remote_address, "10.77.0.4");
    assert_eq!(a.encapsulation, pb::Encapsulation::Vlan as i32);
    // The residual bandwidth drops on both links of the path.
    let links = h.links().await;
    assert!(links.iter().all(|l| l.residual_mbps == 900), "{links:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let channel = tonic::transport::Endpoint::from_shared(h.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "vnet.v1.VirtualNetworks".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected {msg:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for s in [
        "vnet.v1.VirtualNetworks",
        "vnet.v1.Substrate",
        "vnet.v1.AgentControl",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&s), "{names:?}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_gets_a_fresh_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |c| c.event_buffer = 4).await;
    let _agents = h.agents(1, 10_000, 100_000, Behaviour::Ready).await;
    let mut c = h.vns().await;
    // Call the service directly (no HTTP/2 buffers in between) and do not read: the stream's
    // buffer fills, then the broadcast overflows.
    use vnet_proto::v1::virtual_networks_server::VirtualNetworks;
    let svc = vn_controller::grpc::vn::VnService::new(h.ctl.clone());
    let mut w = svc
        .watch(req("red", pb::WatchVnsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    for i in 0..120 {
        let spec = pb::VnSpec {
            name: format!("s{i}"),
            nodes: vec![node("a", 1)],
            ..Default::default()
        };
        c.create(req("red", create(spec))).await.unwrap();
    }
    wait_state(&mut c, "red", "s119", pb::VnState::Ready).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut snapshots = 0;
    let mut names = std::collections::BTreeSet::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_millis(500), w.next()).await {
        if e.kind == pb::VnEventKind::Snapshot as i32 {
            snapshots += 1;
            names.insert(e.name);
        }
    }
    // The resync listed VNs created after the watch began.
    assert!(
        snapshots > 0 && names.len() > 1,
        "{snapshots} snapshots of {names:?}"
    );
    h.stop().await;
}
