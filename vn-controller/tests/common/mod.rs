//! In-process controller with stand-in agents, for the gRPC tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::Request;
use tonic::transport::Channel;
use vn_controller::core::embed::EmbeddingPlanner;
use vn_controller::runtime::controller::{Controller, ControllerConfig};
use vn_controller::standin::{Behaviour, StandIn, StandInConfig};
use vnet_proto::v1 as pb;
use vnet_proto::v1::admin_client::AdminClient;
use vnet_proto::v1::substrate_client::SubstrateClient;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;
use vnet_proto::{ACT_AS_METADATA_KEY, AUTHORIZATION_METADATA_KEY};

pub struct Harness {
    pub addr: SocketAddr,
    pub ctl: Controller,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start(dir: &Path, tweak: impl FnOnce(&mut ControllerConfig)) -> Harness {
        let mut cfg = ControllerConfig::new(dir);
        cfg.reattach_grace = Duration::from_secs(3600);
        // Hosts that go away stay where they are unless a test says otherwise.
        cfg.host_grace = Duration::from_secs(3600);
        // Stand-in agents present no certificate; tenants' calls carry the test admin token.
        cfg.insecure = true;
        cfg.admin_token_hashes = vec![vn_controller::runtime::credentials::token_hash(ADMIN_TOKEN)];
        tweak(&mut cfg);
        let ctl = open(cfg).await;
        ctl.start();
        let router = vn_controller::grpc::router(&ctl, None)
            .await
            .expect("router");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(vn_controller::grpc::incoming(listener), async {
                    let _ = rx.await;
                })
                .await
                .expect("serve");
        });
        Harness {
            addr,
            ctl,
            stop: Some(tx),
            server: Some(server),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn vns(&self) -> VirtualNetworksClient<Channel> {
        VirtualNetworksClient::connect(self.endpoint())
            .await
            .unwrap()
    }

    pub async fn substrate(&self) -> SubstrateClient<Channel> {
        SubstrateClient::connect(self.endpoint()).await.unwrap()
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(self.endpoint()).await.unwrap()
    }

    /// The substrate's links, as the test admin lists them.
    pub async fn links(&self) -> Vec<pb::SubstrateLink> {
        self.substrate()
            .await
            .list_links(admin(pb::ListLinksRequest {}))
            .await
            .unwrap()
            .into_inner()
            .links
    }

    /// The substrate's hosts, as the test admin lists them.
    pub async fn hosts(&self) -> Vec<pb::Host> {
        self.substrate()
            .await
            .list_hosts(admin(pb::ListHostsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .hosts
    }

    /// The test admin sets `provider`'s quota to at most `nodes` nodes.
    pub async fn set_node_quota(&self, provider: &str, nodes: u64) {
        let quota = pb::Quota {
            nodes: Some(nodes),
            ..Default::default()
        };
        let r = pb::SetQuotaRequest {
            provider: provider.into(),
            quota: Some(quota),
        };
        self.admin().await.set_quota(admin(r)).await.unwrap();
    }

    /// `n` stand-in hosts h1..hn with addresses 10.77.x.y.
    pub async fn agents(&self, n: usize, cpu: u64, mem: u64, b: Behaviour) -> Vec<StandIn> {
        let mut out = Vec::new();
        for i in 1..=n {
            out.push(self.agent(&format!("h{i}"), i, cpu, mem, b.clone()).await);
        }
        // every agent attached and got its first desired state
        for a in &out {
            a.wait_desired(Duration::from_secs(10), |_| true)
                .await
                .expect("desired");
        }
        out
    }

    pub async fn agent(&self, id: &str, i: usize, cpu: u64, mem: u64, b: Behaviour) -> StandIn {
        let cfg = StandInConfig::new(id, &format!("10.77.{}.{}", i / 250, i % 250 + 1), cpu, mem);
        StandIn::connect(&self.endpoint(), cfg, b).await.unwrap()
    }

    /// Stops the server and the controller (drops every session).
    pub async fn stop(mut self) {
        self.ctl.begin_shutdown();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
    }
}

/// Opens the controller of `cfg` (not started). A controller stopped just before may still be
/// releasing the store (its sessions end asynchronously): retries for a while.
pub async fn open(cfg: ControllerConfig) -> Controller {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Controller::open(cfg.clone(), Box::new(EmbeddingPlanner::new())) {
            Ok(c) => return c,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("open: {e:?}"),
        }
    }
}

/// The bootstrap admin token of every harness.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// `msg` from the test admin acting for `provider`.
pub fn req<T>(provider: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        AUTHORIZATION_METADATA_KEY,
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    r.metadata_mut()
        .insert(ACT_AS_METADATA_KEY, provider.parse().unwrap());
    r
}

/// `msg` with `token` as the credential.
pub fn with_token<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        AUTHORIZATION_METADATA_KEY,
        format!("Bearer {token}").parse().unwrap(),
    );
    r
}

pub fn node(name: &str, cpu: i64) -> pb::NodeSpec {
    pb::NodeSpec {
        name: name.into(),
        kind: pb::NodeKind::Netns as i32,
        cpu,
        memory_mb: 64,
        ..Default::default()
    }
}

pub fn link(a: &str, b: &str, bw: i64) -> pb::LinkSpec {
    pb::LinkSpec {
        endpoints: vec![a.into(), b.into()],
        bandwidth_mbps: bw,
        ..Default::default()
    }
}

/// [`node`] pinned to `host` (a host, or a node of the parent VN).
pub fn pinned(name: &str, cpu: i64, host: &str) -> pb::NodeSpec {
    pb::NodeSpec {
        host: host.into(),
        ..node(name, cpu)
    }
}

/// A parent node: room for children's memory (64 MiB each).
pub fn roomy(name: &str, cpu: i64, host: &str) -> pb::NodeSpec {
    pb::NodeSpec {
        memory_mb: 512,
        ..pinned(name, cpu, host)
    }
}

/// Nestable `name`: p1 (h1) - p2 (h2) - p3 (h3), 100 Mbit/s links, 60 cpu per node.
pub fn parent_spec(name: &str) -> pb::VnSpec {
    pb::VnSpec {
        name: name.into(),
        nestable: true,
        nodes: (1..=3)
            .map(|i| roomy(&format!("p{i}"), 60, &format!("h{i}")))
            .collect(),
        links: vec![link("p1", "p2", 100), link("p2", "p3", 100)],
        ..Default::default()
    }
}

/// A chain a - b - c of netns nodes.
pub fn chain(name: &str, cpu: i64, bw: i64) -> pb::VnSpec {
    pb::VnSpec {
        name: name.into(),
        nodes: vec![node("a", cpu), node("b", cpu), node("c", cpu)],
        links: vec![link("a", "b", bw), link("b", "c", bw)],
        ..Default::default()
    }
}

pub fn create(spec: pb::VnSpec) -> pb::CreateVnRequest {
    pb::CreateVnRequest { spec: Some(spec) }
}

/// `provider`'s VN `name`, which must exist.
pub async fn get_vn(
    c: &mut VirtualNetworksClient<Channel>,
    provider: &str,
    name: &str,
) -> pb::VirtualNetwork {
    c.get(req(provider, pb::GetVnRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner()
}

/// Creates `spec` as `provider` and waits until it is READY.
pub async fn create_ready(
    c: &mut VirtualNetworksClient<Channel>,
    provider: &str,
    spec: pb::VnSpec,
) -> pb::VirtualNetwork {
    let name = spec.name.clone();
    c.create(req(provider, create(spec)))
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    wait_state(c, provider, &name, pb::VnState::Ready).await
}

/// Waits until `provider`'s VN `name` reaches `state`.
pub async fn wait_state(
    c: &mut VirtualNetworksClient<Channel>,
    provider: &str,
    name: &str,
    state: pb::VnState,
) -> pb::VirtualNetwork {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let vn = get_vn(c, provider, name).await;
        if vn.state == state as i32 {
            return vn;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed in {:?} ({}), expected {state:?}",
            pb::VnState::try_from(vn.state),
            vn.reason
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `msg` from the test admin, acting for nobody (substrate listings).
pub fn admin<T>(msg: T) -> Request<T> {
    with_token(ADMIN_TOKEN, msg)
}

/// A port nothing listens on now (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) and reaped on drop, so that a failing test leaves nothing.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
