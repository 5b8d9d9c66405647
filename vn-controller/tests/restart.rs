//! Kill and restart the controller on the same store: VNs, allocations, capacities and desired
//! states are identical; a VN created afterwards gets no colliding VNI or VLAN ID.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vn_controller::runtime::controller::{Controller, ControllerConfig};
use vn_controller::standin::{Behaviour, StandIn, StandInConfig};
use vnet_proto::v1 as pb;
use vnet_proto::v1::substrate_client::SubstrateClient;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;

type Snapshot = (
    vn_controller::core::usage::Usage,
    vn_controller::core::alloc::Allocators,
    Vec<vn_controller::core::record::VnRecord>,
    BTreeMap<String, u64>,
);

fn snapshot(ctl: &Controller) -> Snapshot {
    ctl.with_index(|ix| {
        (
            ix.usage().clone(),
            ix.allocators().clone(),
            ix.records().cloned().collect(),
            ["h1", "h2", "h3"]
                .iter()
                .map(|h| (h.to_string(), ix.generation(h)))
                .collect(),
        )
    })
}

fn vlan_spec(name: &str) -> pb::VnSpec {
    let mut s = chain(name, 20, 10);
    s.encapsulation = pb::Encapsulation::Vlan as i32;
    s
}

fn held_ids(vns: &[pb::VirtualNetwork]) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let mut vnis = BTreeSet::new();
    let mut vlans = BTreeSet::new();
    for vn in vns {
        for l in &vn.links {
            for h in &l.hops {
                if h.vni != 0 {
                    vnis.insert(h.vni);
                }
                if h.vlan_id != 0 {
                    vlans.insert(h.vlan_id);
                }
            }
        }
    }
    (vnis, vlans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_process_restores_everything() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h
        .agents(
            3,
            100,
            4096,
            Behaviour::FailLabels(vec!["red/broken".into()], "boom".into()),
        )
        .await;
    let mut c = h.vns().await;
    c.create(req("red", create(chain("x1", 20, 10))))
        .await
        .unwrap();
    c.create(req("red", create(vlan_spec("x2")))).await.unwrap();
    c.create(req("blue", create(chain("x3", 20, 10))))
        .await
        .unwrap();
    c.create(req("red", create(chain("broken", 5, 5))))
        .await
        .unwrap();
    for (p, n) in [("red", "x1"), ("red", "x2"), ("blue", "x3")] {
        wait_state(&mut c, p, n, pb::VnState::Ready).await;
    }
    wait_state(&mut c, "red", "broken", pb::VnState::Failed).await;
    // Every agent has the latest generation (rollbacks publish after persisting).
    for (i, a) in agents.iter().enumerate() {
        let g = h.ctl.with_index(|ix| ix.generation(&format!("h{}", i + 1)));
        a.wait_desired(Duration::from_secs(5), |d| d.generation == g)
            .await
            .expect("latest generation");
    }
    let desired_before: Vec<pb::DesiredState> =
        agents.iter().map(|a| a.desired().unwrap()).collect();
    let before = snapshot(&h.ctl);
    let old_vns = c
        .list(req("red", pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .vns;
    // The controller goes away while the agents stay attached.
    drop(c);
    h.stop().await;
    drop(agents);

    // Reopen the same store (the old instance's last references go away asynchronously).
    let ctl = open(ControllerConfig::new(dir.path())).await;
    let after = snapshot(&ctl);
    assert_eq!(before.0, after.0, "usage differs");
    assert_eq!(before.1, after.1, "allocators differ");
    assert_eq!(before.2, after.2, "records differ");
    assert_eq!(before.3, after.3, "generations differ");
    drop(ctl);

    // Serve it again: agents re-attach and get the same desired state (same generation).
    let h = Harness::start(dir.path(), |_| {}).await;
    let agents = h.agents(3, 100, 4096, Behaviour::Ready).await;
    for (a, d) in agents.iter().zip(&desired_before) {
        assert_eq!(a.desired().as_ref(), Some(d));
    }
    let mut c = h.vns().await;
    wait_state(&mut c, "red", "x1", pb::VnState::Ready).await;
    let failed = get_vn(&mut c, "red", "broken").await;
    assert_eq!(failed.state, pb::VnState::Failed as i32);
    assert!(
        failed.reason.starts_with("host h") && failed.reason.ends_with(": boom"),
        "{}",
        failed.reason
    );

    // New VNs get fresh identifiers.
    let (old_vnis, old_vlans) = held_ids(&old_vns);
    let blue = c
        .list(req("blue", pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .vns;
    let (blue_vnis, _) = held_ids(&blue);
    let n1 = c
        .create(req("red", create(chain("y1", 10, 10))))
        .await
        .unwrap()
        .into_inner();
    let n2 = c
        .create(req("red", create(vlan_spec("y2"))))
        .await
        .unwrap()
        .into_inner();
    let (new_vnis, new_vlans) = held_ids(&[n1, n2]);
    assert!(!new_vnis.is_empty() && !new_vlans.is_empty());
    assert!(new_vnis.is_disjoint(&old_vnis) && new_vnis.is_disjoint(&blue_vnis));
    assert!(new_vlans.is_disjoint(&old_vlans));
    drop(agents);
    h.stop().await;
}

async fn spawn_daemon(dir: &std::path::Path, port: u16, metrics: u16) -> KillOnDrop {
    // Plain text (the stand-in agents have no certificates); tenants use the admin token.
    let hashes = dir.join("admin.sha256");
    std::fs::write(
        &hashes,
        vn_controller::runtime::credentials::token_hash(common::ADMIN_TOKEN)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vn-controller"))
        .arg("--insecure")
        .arg("--admin-token-hash-file")
        .arg(&hashes)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .arg("--state-dir")
        .arg(dir)
        .args(["--log-format", "json", "--default-link-bandwidth", "500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vn-controller");
    let d = KillOnDrop(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d
}

async fn stand_ins(endpoint: &str) -> Vec<StandIn> {
    let mut v = Vec::new();
    for i in 1..=3 {
        let cfg = StandInConfig::new(&format!("h{i}"), &format!("10.78.0.{i}"), 100, 4096);
        let a = StandIn::connect(endpoint, cfg, Behaviour::Ready)
            .await
            .unwrap();
        a.wait_desired(Duration::from_secs(10), |_| true)
            .await
            .unwrap();
        v.push(a);
    }
    v
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{port}");
    let daemon = spawn_daemon(dir.path(), port, mport).await;
    let agents = stand_ins(&endpoint).await;
    let mut c = VirtualNetworksClient::connect(endpoint.clone())
        .await
        .unwrap();
    for (p, n) in [("red", "k1"), ("red", "k2"), ("blue", "k3")] {
        let spec = if n == "k2" {
            vlan_spec(n)
        } else {
            chain(n, 20, 10)
        };
        c.create(req(p, create(spec))).await.unwrap();
        wait_state(&mut c, p, n, pb::VnState::Ready).await;
    }
    // a refused create, counted by reason
    let dup = c.create(req("red", create(chain("k1", 20, 10)))).await;
    assert_eq!(dup.unwrap_err().code(), tonic::Code::AlreadyExists);
    // READY is in the index (what Get shows) before its event is published (after the
    // commit), and Create-to-READY is observed on the event: wait for it
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut metrics = http_get(mport, "/metrics").await;
    while !metrics.contains("vnet_controller_create_to_ready_duration_seconds_count 3")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = http_get(mport, "/metrics").await;
    }
    assert!(
        metrics.contains("vnet_controller_vns{state=\"ready\"} 3"),
        "{metrics}"
    );
    // what an operator expects besides: Create to READY, rejections by reason, usage per
    // provider, store latency, leadership (a lone controller leads), the build
    for line in [
        "vnet_controller_create_to_ready_duration_seconds_count 3",
        "vnet_controller_create_rejections_total{reason=\"exists\"} 1",
        "vnet_controller_provider_vns{provider=\"red\"} 2",
        "vnet_controller_provider_vns{provider=\"blue\"} 1",
        "vnet_controller_provider_cpu{provider=\"blue\"} ",
        "vnet_controller_provider_bandwidth_mbps{provider=\"red\"} ",
        "vnet_controller_store_commit_duration_seconds_count{durable=\"true\"} ",
        "vnet_controller_leader 1",
        "vnet_controller_build_info{version=\"",
    ] {
        assert!(metrics.contains(line), "no `{line}` in {metrics}");
    }
    assert!(metrics.contains("vnet_controller_agents_connected 3"));
    assert!(metrics.contains("vnet_controller_embedding_duration_seconds_count 3"));
    assert!(metrics.contains("vnet_controller_host_cpu_utilisation_ratio{host=\"h1\"}"));
    assert!(metrics.contains("vnet_controller_link_bandwidth_utilisation_ratio{link=\"h1-h2\"}"));

    let list = |c: &mut VirtualNetworksClient<_>, p: &'static str| {
        let mut c = c.clone();
        async move {
            let mut v = c
                .list(req(p, pb::ListVnsRequest {}))
                .await
                .unwrap()
                .into_inner()
                .vns;
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        }
    };
    let red_before = list(&mut c, "red").await;
    let blue_before = list(&mut c, "blue").await;
    let mut s = SubstrateClient::connect(endpoint.clone()).await.unwrap();
    let hosts_before = s
        .list_hosts(admin(pb::ListHostsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let links_before = s
        .list_links(admin(pb::ListLinksRequest {}))
        .await
        .unwrap()
        .into_inner()
        .links;
    for (a, host) in agents.iter().zip(&hosts_before) {
        let g = host.desired_generation;
        a.wait_desired(Duration::from_secs(5), |d| d.generation == g)
            .await
            .expect("latest generation");
    }
    let desired_before: Vec<_> = agents.iter().map(|a| a.desired().unwrap()).collect();

    drop(daemon); // SIGKILL
    drop(agents);
    let port2 = free_port();
    let endpoint2 = format!("http://127.0.0.1:{port2}");
    let _daemon = spawn_daemon(dir.path(), port2, free_port()).await;
    let mut c = VirtualNetworksClient::connect(endpoint2.clone())
        .await
        .unwrap();
    let mut s = SubstrateClient::connect(endpoint2.clone()).await.unwrap();
    // Before any agent is back: same VNs, same capacities.
    let strip = |mut v: Vec<pb::VirtualNetwork>| {
        for vn in &mut v {
            vn.hosts.clear();
        }
        v
    };
    assert_eq!(strip(list(&mut c, "red").await), strip(red_before.clone()));
    assert_eq!(
        strip(list(&mut c, "blue").await),
        strip(blue_before.clone())
    );
    let residual = |hs: &[pb::Host]| {
        hs.iter()
            .map(|h| (h.id.clone(), h.residual, h.capacity, h.desired_generation))
            .collect::<Vec<_>>()
    };
    let hosts_after = s
        .list_hosts(admin(pb::ListHostsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(residual(&hosts_after), residual(&hosts_before));
    let links_after = s
        .list_links(admin(pb::ListLinksRequest {}))
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(links_after, links_before);

    // Agents re-attach: the same desired state; VNs ready; a new VN collides with nothing.
    let agents = stand_ins(&endpoint2).await;
    for (a, d) in agents.iter().zip(&desired_before) {
        assert_eq!(a.desired().as_ref(), Some(d));
    }
    wait_state(&mut c, "red", "k1", pb::VnState::Ready).await;
    let (mut vnis, mut vlans) = held_ids(&red_before);
    let (bv, bl) = held_ids(&blue_before);
    vnis.extend(bv);
    vlans.extend(bl);
    let n1 = c
        .create(req("red", create(chain("k4", 10, 10))))
        .await
        .unwrap()
        .into_inner();
    let n2 = c
        .create(req("blue", create(vlan_spec("k5"))))
        .await
        .unwrap()
        .into_inner();
    let (nv, nl) = held_ids(&[n1, n2]);
    assert!(!nv.is_empty() && !nl.is_empty());
    assert!(nv.is_disjoint(&vnis), "{nv:?} vs {vnis:?}");
    assert!(nl.is_disjoint(&vlans), "{nl:?} vs {vlans:?}");
    drop(agents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sessions_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut daemon = spawn_daemon(dir.path(), port, free_port()).await;
    // An attached agent and an open watch must not hold the shutdown up.
    let agents = stand_ins(&endpoint).await;
    let mut c = VirtualNetworksClient::connect(endpoint.clone())
        .await
        .unwrap();
    let mut w = c
        .watch(req("red", pb::WatchVnsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let status = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    // The watcher was told, not left hanging.
    let end = tokio::time::timeout(Duration::from_secs(5), w.message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    drop(agents);
}
