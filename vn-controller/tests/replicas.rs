//! Controller failover under load, on both stores:
//! - etcd: a real three-member etcd cluster and three `vn-controller` replicas; the leader is
//!   killed with SIGKILL five times at random moments while providers create and delete;
//! - redb (the default, no etcd): one controller, killed and restarted five times the same way.
//!
//! Afterwards every acknowledged VN is there exactly once and every acknowledged delete is gone,
//! no VNI, VLAN ID or MAC is held twice, the stand-in agents attached to the new leader, a
//! watcher that resumes by sequence number saw every event of its provider once and in order,
//! and a create succeeded within 5 s of each kill. On etcd, a provider token and quota issued
//! through the first leader (a follower refuses, naming it) hold on every replica afterwards.
//!
//! The etcd test needs the `etcd` binary (Debian `etcd-server`, installed by deploy/setup.sh):
//! without it, it says SKIP, unless `VNET_REQUIRE_ROOT=1` (CI) or `VNET_REQUIRE_ETCD=1`, where
//! that is a failure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};
use vn_controller::standin::{Behaviour, StandIn, StandInConfig};
use vn_controller::store::have_etcd;
use vnet_proto::replicas::{Replicas, leader_hint};
use vnet_proto::v1 as pb;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;

const PROVIDERS: [&str; 3] = ["red", "blue", "green"];
const KILLS: usize = 5;

async fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A three-member etcd cluster on loopback (plain text: nothing leaves the machine), in a
/// temporary directory; its members are killed on drop.
struct Etcd {
    // Held to be killed on drop.
    _members: Vec<KillOnDrop>,
    clients: Vec<String>,
}

impl Etcd {
    async fn start(dir: &Path) -> Etcd {
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let token = format!("vnet-test-{}-{}", std::process::id(), peers[0]);
        let mut members = Vec::new();
        for i in 0..3 {
            let client = format!("http://127.0.0.1:{}", clients[i]);
            let peer = format!("http://127.0.0.1:{}", peers[i]);
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("m{i}")))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &cluster.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--logger", "zap", "--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn etcd");
            members.push(KillOnDrop(child));
        }
        for c in &clients {
            wait_port(*c, "etcd").await;
        }
        let clients: Vec<String> = clients
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        // The cluster answers once it elected its own leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(2),
                etcd_client::Client::connect(clients.clone(), None),
            )
            .await
                && c.put("/ready", "1", None).await.is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "etcd cluster did not form");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Etcd {
            _members: members,
            clients,
        }
    }
}

/// The controllers under test: three replicas on etcd, or one on redb.
struct Cluster {
    etcd: Option<Etcd>,
    prefix: String,
    hashes: PathBuf,
    ports: Vec<u16>,
    dirs: Vec<PathBuf>,
    procs: Vec<Option<KillOnDrop>>,
}

impl Cluster {
    async fn start(root: &Path, etcd: Option<Etcd>) -> Cluster {
        let n = if etcd.is_some() { 3 } else { 1 };
        let hashes = root.join("admin.sha256");
        std::fs::write(
            &hashes,
            hex(&vn_controller::runtime::credentials::token_hash(
                ADMIN_TOKEN,
            )),
        )
        .unwrap();
        let mut c = Cluster {
            etcd,
            prefix: format!("/vnet-test-{}-{}/", std::process::id(), free_port()),
            hashes,
            ports: (0..n).map(|_| free_port()).collect(),
            dirs: (0..n).map(|i| root.join(format!("c{i}"))).collect(),
            procs: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            c.spawn(i).await;
        }
        c
    }

    async fn spawn(&mut self, i: usize) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vn-controller"));
        // Plain text: the stand-in agents have no certificates; tenants use the admin token.
        cmd.arg("--insecure")
            .arg("--admin-token-hash-file")
            .arg(&self.hashes)
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .arg("--state-dir")
            .arg(&self.dirs[i])
            .args(["--reattach-grace-secs", "3600"])
            .args(["--default-link-bandwidth", "100000"])
            .stdout(Stdio::null());
        // The replicas' logs, for a failure's diagnosis.
        match std::env::var_os("VNET_TEST_LOG_DIR") {
            Some(d) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(Path::new(&d).join(format!("controller-{i}.log")))
                    .expect("log file");
                cmd.stderr(f);
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        if let Some(e) = &self.etcd {
            cmd.args(["--store", "etcd", "--etcd-lease-secs", "2"])
                .args(["--etcd-endpoints", &e.clients.join(",")])
                .args(["--etcd-prefix", &self.prefix]);
        }
        self.procs[i] = Some(KillOnDrop(cmd.spawn().expect("spawn vn-controller")));
        wait_port(self.ports[i], "vn-controller").await;
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    fn endpoints(&self) -> String {
        (0..self.ports.len())
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The replica that leads (its AgentControl health is SERVING), waiting for an election.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            for i in 0..self.ports.len() {
                if self.procs[i].is_some() && leads(&self.endpoint(i)).await {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no controller leads");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self, i: usize) {
        // SIGKILL and reap (KillOnDrop's drop).
        self.procs[i].take();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

async fn leads(endpoint: &str) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    let Ok(Ok(ch)) = tokio::time::timeout(
        Duration::from_secs(1),
        Channel::from_shared(endpoint.to_string())
            .unwrap()
            .connect(),
    )
    .await
    else {
        return false;
    };
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    let req = tonic_health::pb::HealthCheckRequest {
        service: "vnet.v1.AgentControl".into(),
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), h.check(req)).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

/// A tenant's client that follows the leader: a refusal naming it, or any failure to reach
/// the current replica, moves it on (as vnctl and the agents do).
struct Tenant {
    replicas: Replicas,
    client: Option<VirtualNetworksClient<Channel>>,
}

/// The outcome of a write: done, or refused for good (a test failure unless expected).
enum Outcome {
    Done,
    Refused(Status),
}

impl Tenant {
    fn new(endpoints: &str) -> Tenant {
        Tenant {
            replicas: Replicas::parse(endpoints),
            client: None,
        }
    }

    async fn client(&mut self) -> Option<VirtualNetworksClient<Channel>> {
        if self.client.is_none() {
            let ch = Channel::from_shared(self.replicas.current().to_string())
                .unwrap()
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(10))
                .connect()
                .await;
            match ch {
                Ok(ch) => self.client = Some(VirtualNetworksClient::new(ch)),
                Err(_) => {
                    self.replicas.after_failure(None);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return None;
                }
            }
        }
        self.client.clone()
    }

    /// After a failed call: whether it may have been carried out (the answer was lost).
    async fn failed(&mut self, st: &Status) -> bool {
        self.client = None;
        let hint = leader_hint(st);
        if !self.replicas.after_failure(hint.as_deref()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A follower's refusal is certain; a lost connection or a fenced write is not.
        !(st.code() == Code::Unavailable && st.message().contains("follower"))
    }

    /// Creates until the answer is certain: Done when created (or found created by an earlier
    /// attempt whose answer was lost).
    async fn create(&mut self, provider: &str, spec: pb::VnSpec) -> Outcome {
        let mut uncertain = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(mut c) = self.client().await else {
                continue;
            };
            match c.create(req(provider, create(spec.clone()))).await {
                Ok(_) => return Outcome::Done,
                Err(st) if st.code() == Code::AlreadyExists && uncertain => return Outcome::Done,
                // Right after a failover the agents are still coming back: the substrate the
                // new leader sees is short of hosts for a moment.
                Err(st) if st.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(st) if retryable(&st) => uncertain |= self.failed(&st).await,
                Err(st) => return Outcome::Refused(st),
            }
        }
        panic!("create {} did not get an answer in 30 s", spec.name);
    }

    async fn delete(&mut self, provider: &str, name: &str) -> Outcome {
        let mut uncertain = false;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(mut c) = self.client().await else {
                continue;
            };
            let r = pb::DeleteVnRequest {
                name: name.into(),
                cascade: false,
            };
            match c.delete(req(provider, r)).await {
                Ok(_) => return Outcome::Done,
                Err(st) if st.code() == Code::NotFound && uncertain => return Outcome::Done,
                Err(st) if retryable(&st) => uncertain |= self.failed(&st).await,
                Err(st) => return Outcome::Refused(st),
            }
        }
        panic!("delete {name} did not get an answer in 30 s");
    }
}

/// Failures during a failover: the replica is gone, refuses (follower), or its write was
/// fenced off or timed out.
fn retryable(st: &Status) -> bool {
    matches!(
        st.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}

fn spec(name: &str, vlan: bool) -> pb::VnSpec {
    let mut s = chain(name, 1, 1);
    if vlan {
        s.encapsulation = pb::Encapsulation::Vlan as i32;
    }
    s
}

/// What the providers were told: VNs created and not deleted, and VNs deleted.
#[derive(Default)]
struct Acked {
    live: BTreeSet<(String, String)>,
    deleted: BTreeSet<(String, String)>,
}

/// One provider's stream of creates and deletes until `stop`.
async fn provider_stream(
    provider: &'static str,
    endpoints: String,
    acked: Arc<Mutex<Acked>>,
    stop: tokio::sync::watch::Receiver<bool>,
    seed: u64,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut t = Tenant::new(&endpoints);
    let mut mine: Vec<String> = Vec::new();
    let mut k = 0;
    while !*stop.borrow() {
        if !mine.is_empty() && rng.random_bool(0.3) {
            let name = mine.swap_remove(rng.random_range(0..mine.len()));
            match t.delete(provider, &name).await {
                Outcome::Done => {
                    let mut a = acked.lock().unwrap();
                    a.live.remove(&(provider.to_string(), name.clone()));
                    a.deleted.insert((provider.to_string(), name));
                }
                Outcome::Refused(st) => panic!("delete {provider}/{name} refused: {st:?}"),
            }
        } else {
            k += 1;
            let name = format!("{provider}-{k}");
            match t.create(provider, spec(&name, k % 2 == 0)).await {
                Outcome::Done => {
                    acked
                        .lock()
                        .unwrap()
                        .live
                        .insert((provider.to_string(), name.clone()));
                    mine.push(name);
                }
                Outcome::Refused(st) => panic!("create {provider}/{name} refused: {st:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
}

/// `red`'s watcher: resumes after the last sequence number it saw on whichever replica
/// answers; records every event. `subscribed` is sent once its first Watch is accepted (the
/// controller subscribes before it answers): every VN created from then on is an event to it.
fn watcher(
    endpoints: String,
    seen: Arc<Mutex<Vec<pb::VnEvent>>>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()> {
    let mut subscribed = Some(subscribed);
    tokio::spawn(async move {
        let mut t = Tenant::new(&endpoints);
        let mut after = 0;
        loop {
            let Some(mut c) = t.client().await else {
                continue;
            };
            let r = pb::WatchVnsRequest {
                name: String::new(),
                after_seq: after,
            };
            let mut stream = match c.watch(req("red", r)).await {
                Ok(s) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                    s.into_inner()
                }
                Err(st) => {
                    t.failed(&st).await;
                    continue;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(e)) => {
                        after = e.seq;
                        seen.lock().unwrap().push(e);
                    }
                    Ok(None) => {
                        t.failed(&Status::unavailable("watch ended")).await;
                        break;
                    }
                    Err(st) => {
                        t.failed(&st).await;
                        break;
                    }
                }
            }
        }
    })
}

/// Held identifiers of every VN; panics naming any held twice.
fn check_unique(vns: &[pb::VirtualNetwork]) {
    let mut vnis = BTreeMap::new();
    let mut vlans = BTreeMap::new();
    let mut macs = BTreeMap::new();
    for vn in vns {
        let who = format!("{}/{}", vn.provider, vn.name);
        for l in &vn.links {
            for h in &l.hops {
                if h.vni != 0
                    && let Some(o) = vnis.insert(h.vni, who.clone())
                {
                    panic!("VNI {} held by {o} and {who}", h.vni);
                }
                if h.vlan_id != 0
                    && let Some(o) = vlans.insert(h.vlan_id, who.clone())
                {
                    panic!("VLAN ID {} held by {o} and {who}", h.vlan_id);
                }
            }
            for m in &l.macs {
                if let Some(o) = macs.insert(m.clone(), who.clone()) {
                    panic!("MAC {m} held by {o} and {who}");
                }
            }
        }
    }
    assert!(!vnis.is_empty() && !vlans.is_empty() && !macs.is_empty());
}

/// Every VN on the replica at `endpoint` (all providers'), if each acknowledged VN is listed
/// once and no acknowledged delete is; else what is wrong.
async fn check_listed(endpoint: &str, acked: &Acked) -> Result<Vec<pb::VirtualNetwork>, String> {
    let mut c = VirtualNetworksClient::connect(endpoint.to_string())
        .await
        .unwrap();
    let mut all = Vec::new();
    for p in PROVIDERS.iter().chain(&["probe"]) {
        let vns = c
            .list(req(p, pb::ListVnsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .vns;
        let names: Vec<&str> = vns.iter().map(|v| v.name.as_str()).collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        if names.len() != unique.len() {
            return Err(format!("{endpoint} {p}: a VN listed twice: {names:?}"));
        }
        for (q, n) in &acked.live {
            if q == p && !unique.contains(n.as_str()) {
                return Err(format!("{endpoint}: acknowledged {p}/{n} is missing"));
            }
        }
        for (q, n) in &acked.deleted {
            if q == p && unique.contains(n.as_str()) {
                return Err(format!("{endpoint}: deleted {p}/{n} is back"));
            }
        }
        all.extend(vns);
    }
    Ok(all)
}

/// Kills the leader at a random moment, `KILLS` times, while the providers stream; returns
/// how long after each kill the first create succeeded.
async fn kill_leaders(
    cl: &mut Cluster,
    agents: &[StandIn],
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<Duration> {
    let mut to_create = Vec::new();
    let mut probe = Tenant::new(&cl.endpoints());
    for round in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
        let leader = cl.leader().await;
        let killed_at = Instant::now();
        cl.kill(leader);
        if cl.etcd.is_none() {
            // One controller: it comes back on its store.
            cl.spawn(leader).await;
        }
        let name = format!("probe-{round}");
        match probe.create("probe", spec(&name, false)).await {
            Outcome::Done => to_create.push(killed_at.elapsed()),
            Outcome::Refused(st) => panic!("probe create {name}: {st:?}"),
        }
        let now = cl.leader().await;
        if cl.etcd.is_some() {
            assert_ne!(now, leader, "a killed replica cannot lead");
            cl.spawn(leader).await;
        }
        wait_agents(&cl.endpoint(now), agents, round).await;
    }
    to_create
}

/// Waits until every agent is attached to the leader `want`.
async fn wait_agents(want: &str, agents: &[StandIn], round: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agents.iter().all(|a| a.attached().as_deref() == Some(want)) {
        assert!(
            Instant::now() < deadline,
            "round {round}: agents attached to {:?}, not the leader {want}",
            agents.iter().map(StandIn::attached).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the watcher saw an ACCEPTED for every acknowledged red create and a DELETED
/// for every acknowledged red delete; checks each event came once and in order.
async fn check_watch(seen: &Mutex<Vec<pb::VnEvent>>, acked: &Acked, all_red: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = seen.lock().unwrap().clone();
        let kind = |e: &pb::VnEvent, k: pb::VnEventKind| e.kind == k as i32;
        let accepted: BTreeSet<String> = events
            .iter()
            .filter(|e| kind(e, pb::VnEventKind::Accepted))
            .map(|e| e.name.clone())
            .collect();
        let deleted: BTreeSet<String> = events
            .iter()
            .filter(|e| kind(e, pb::VnEventKind::Deleted))
            .map(|e| e.name.clone())
            .collect();
        let missing_acc: Vec<&String> = all_red.iter().filter(|n| !accepted.contains(*n)).collect();
        let missing_del: Vec<&String> = acked
            .deleted
            .iter()
            .filter(|(p, n)| p == "red" && !deleted.contains(n))
            .map(|(_, n)| n)
            .collect();
        if missing_acc.is_empty() && missing_del.is_empty() {
            // Once each and in order: sequence numbers strictly grow after the first snapshot,
            // and no snapshot came again (every resume found its events).
            let mut last = 0;
            for (i, e) in events.iter().enumerate() {
                if kind(e, pb::VnEventKind::Snapshot) {
                    assert!(e.seq <= last || i == 0, "a snapshot after a resume: {e:?}");
                    continue;
                }
                assert!(e.seq > last, "event {i} {e:?} not after {last}");
                last = e.seq;
            }
            for n in &accepted {
                let once = events
                    .iter()
                    .filter(|e| kind(e, pb::VnEventKind::Accepted) && &e.name == n)
                    .count();
                assert_eq!(once, 1, "ACCEPTED of {n} seen {once} times");
            }
            return;
        }
        let of_missing: Vec<(String, i32, u64)> = events
            .iter()
            .filter(|e| missing_acc.contains(&&e.name) || missing_del.contains(&&e.name))
            .map(|e| (e.name.clone(), e.kind, e.seq))
            .collect();
        assert!(
            Instant::now() < deadline,
            "the watcher missed ACCEPTED of {missing_acc:?} and DELETED of {missing_del:?} \
             (it saw of them, as name, kind, seq: {of_missing:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn suite(etcd: Option<Etcd>, root: &Path) {
    let mut cl = Cluster::start(root, etcd).await;
    let first = cl.leader().await;
    let endpoints = cl.endpoints();
    let agents: Vec<StandIn> = (1..=3)
        .map(|i| {
            let cfg =
                StandInConfig::new(&format!("h{i}"), &format!("10.79.0.{i}"), 100_000, 1 << 30);
            StandIn::follow(&endpoints, cfg, Behaviour::Ready)
        })
        .collect();
    wait_agents(&cl.endpoint(first), &agents, 0).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (subscribed, watching) = tokio::sync::oneshot::channel();
    let watch = watcher(endpoints.clone(), seen.clone(), subscribed);
    // Creates begin once the watcher is subscribed: it must see each as an event, not in a
    // snapshot.
    tokio::time::timeout(Duration::from_secs(10), watching)
        .await
        .expect("the watcher subscribed within 10 s")
        .expect("the watcher is running");
    let acked = Arc::new(Mutex::new(Acked::default()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let streams: Vec<_> = PROVIDERS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            tokio::spawn(provider_stream(
                p,
                endpoints.clone(),
                acked.clone(),
                stop.clone(),
                i as u64 + 1,
            ))
        })
        .collect();
    let yellow = match cl.etcd {
        Some(_) => Some(issue_token(&cl, first).await),
        None => None,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let to_create = kill_leaders(&mut cl, &agents, &mut rng).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send_replace(true);
    for s in streams {
        s.await.expect("a provider's stream failed");
    }
    eprintln!("create after kill: {to_create:?}");
    for (i, d) in to_create.iter().enumerate() {
        assert!(
            *d < Duration::from_secs(5),
            "kill {i}: first create after {d:?}"
        );
    }

    // Every acknowledged VN once, every acknowledged delete gone, all READY: on the leader,
    // then on every replica (followers read the store, a moment behind).
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.live.len() >= 10,
        "only {} VNs acknowledged",
        acked.live.len()
    );
    let leader = cl.endpoint(cl.leader().await);
    let all = check_listed(&leader, &acked).await.unwrap();
    check_unique(&all);
    let mut vc = VirtualNetworksClient::connect(leader.clone())
        .await
        .unwrap();
    for (p, n) in &acked.live {
        wait_state(&mut vc, p, n, pb::VnState::Ready).await;
    }
    let all = check_listed(&leader, &acked).await.unwrap();
    for i in 0..cl.ports.len() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let names = |v: &[pb::VirtualNetwork]| {
                v.iter()
                    .map(|v| (v.provider.clone(), v.name.clone(), v.state))
                    .collect::<BTreeSet<_>>()
            };
            let here = check_listed(&cl.endpoint(i), &acked).await;
            match &here {
                Ok(h) if names(h) == names(&all) => break,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "replica {i} does not list what the leader does: {:?}",
                here.map(|h| names(&h)
                    .symmetric_difference(&names(&all))
                    .cloned()
                    .collect::<Vec<_>>())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let all_red: BTreeSet<String> = acked
        .live
        .iter()
        .chain(&acked.deleted)
        .filter(|(p, _)| p == "red")
        .map(|(_, n)| n.clone())
        .collect();
    check_watch(&seen, &acked, &all_red).await;
    watch.abort();
    if let Some(token) = yellow {
        check_token(&cl, &token).await;
    }
    drop(agents);
}

/// Through the leader `at`: a token for provider `yellow` and a quota of 3 VNs; a follower
/// refuses both writes, naming the leader. Returns the token.
async fn issue_token(cl: &Cluster, at: usize) -> String {
    use vnet_proto::v1::admin_client::AdminClient;
    let follower = (at + 1) % cl.ports.len();
    let mut f = AdminClient::connect(cl.endpoint(follower)).await.unwrap();
    let cred = pb::CreateCredentialRequest {
        provider: "yellow".into(),
        role: pb::Role::Provider as i32,
        ttl_secs: 0,
    };
    let st = f
        .create_credential(req("red", cred.clone()))
        .await
        .expect_err("a follower issued a token");
    assert_eq!(
        leader_hint(&st),
        Some(format!("127.0.0.1:{}", cl.ports[at])),
        "{st:?}"
    );
    let mut a = AdminClient::connect(cl.endpoint(at)).await.unwrap();
    let token = a
        .create_credential(req("red", cred))
        .await
        .unwrap()
        .into_inner()
        .token;
    let quota = pb::SetQuotaRequest {
        provider: "yellow".into(),
        quota: Some(pb::Quota {
            vns: Some(3),
            ..Default::default()
        }),
    };
    a.set_quota(req("red", quota)).await.unwrap();
    token
}

/// After the leader kills: the token issued through the first leader is known to every
/// replica (reads) and to the last leader (writes), with its quota.
async fn check_token(cl: &Cluster, token: &str) {
    use vnet_proto::v1::admin_client::AdminClient;
    for i in 0..cl.ports.len() {
        let mut c = VirtualNetworksClient::connect(cl.endpoint(i))
            .await
            .unwrap();
        let listed = c
            .list(with_token(token, pb::ListVnsRequest::default()))
            .await;
        assert!(
            listed.is_ok(),
            "replica {i} refuses yellow's token: {listed:?}"
        );
        let mut a = AdminClient::connect(cl.endpoint(i)).await.unwrap();
        let q = a
            .get_quota(with_token(token, pb::GetQuotaRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(q.quota.map(|q| q.vns), Some(Some(3)), "replica {i}");
    }
    let mut c = VirtualNetworksClient::connect(cl.endpoint(cl.leader().await))
        .await
        .unwrap();
    c.create(with_token(token, create(spec("yellow-1", false))))
        .await
        .expect("yellow creates on the last leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_etcd_survive_leader_kills() {
    if !have_etcd("replicas_on_etcd_survive_leader_kills") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd")).await;
    suite(Some(etcd), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_controller_survives_kills() {
    let dir = tempfile::tempdir().unwrap();
    suite(None, dir.path()).await;
}

/// Fencing: a replica that still believes it leads (its lease alive, the leader key gone behind
/// its back and taken by another) cannot write; the new leader can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_write() {
    use vn_controller::store::{EtcdConfig, EtcdStore, Role, Store};
    if !have_etcd("a_deposed_leader_cannot_write") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&dir.path().join("etcd")).await;
    let prefix = format!("/fence-test-{}/", std::process::id());
    let cfg = EtcdConfig {
        endpoints: etcd.clients.clone(),
        prefix: prefix.clone(),
        lease_ttl: 5,
        tls: None,
    };
    let connect = |cfg: EtcdConfig| async move {
        Arc::new(
            tokio::task::spawn_blocking(move || EtcdStore::connect(cfg))
                .await
                .unwrap()
                .unwrap(),
        )
    };
    let lead = |s: Arc<EtcdStore>, name: &str| {
        s.campaign(name.to_string());
        let mut role = s.role();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                role.wait_for(|r| matches!(r, Role::Leader { .. })),
            )
            .await
            .expect("leads")
            .unwrap();
        }
    };
    let a = connect(cfg.clone()).await;
    lead(a.clone(), "a").await;
    let mut raw = etcd_client::Client::connect(etcd.clients.clone(), None)
        .await
        .unwrap();
    raw.delete(format!("{prefix}leader"), None).await.unwrap();
    let b = connect(cfg).await;
    lead(b.clone(), "b").await;
    assert!(
        matches!(*a.role().borrow(), Role::Leader { .. }),
        "a has not noticed"
    );

    let mut change = vn_controller::core::index::Change::default();
    change.generations.insert("h1".into(), 5);
    let (a2, c2) = (a.clone(), change.clone());
    let refused = tokio::task::spawn_blocking(move || a2.apply(&c2))
        .await
        .unwrap();
    let why = format!(
        "{:#}",
        anyhow::Error::new(refused.expect_err("a deposed leader wrote"))
    );
    assert!(why.contains("fenced"), "{why}");
    let key = format!("{prefix}generations/h1");
    assert!(raw.get(key.clone(), None).await.unwrap().kvs().is_empty());
    // The refusal ends a's leadership; b writes.
    assert!(matches!(*a.role().borrow(), Role::Follower { .. }));
    tokio::task::spawn_blocking(move || b.apply(&change))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.get(key, None).await.unwrap().kvs()[0].value(), b"5");
}
