//! The controller: the index under one lock (which serialises commits), the store, agent
//! sessions, watchers and timers.
//!
//! Every mutation runs on a blocking thread: lock the index, apply the operation, persist its
//! [`Change`] in one transaction, compute the changed hosts' desired states, unlock, then publish
//! desired states (to the agents' sessions) and events (to watchers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use vnet_proto::v1 as pb;

use crate::core::desired::DesiredSnapshot;
use crate::core::embed::{Planner, View};
use crate::core::index::{Change, CoreError, Index, IndexConfig};
use crate::core::model::{ProviderId, VnReq};
use crate::core::record::VnRecord;
use crate::core::substrate::{HostInfo, LinkSource, Registry};
use crate::core::topology::TopologyHost;
use crate::store::{EtcdStore, Loaded, RedbStore, Role, Store, StoreError, StoredEvent};

use super::credentials::{Credentials, CredentialsError, Usage};
use super::metrics::{Metrics, Rejected};
use super::writer::{Publisher, Writer};

mod console;
mod exec;
mod failover;
mod replica;
mod update;
pub use console::{ConsoleEvent, ConsoleOpts, ConsoleSession};
pub use exec::{AgentExec, ExecOpts, ExecSession};
pub use failover::DrainOutcome;
pub use update::{UpdateOpts, UpdateOutcome};

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub state_dir: std::path::PathBuf,
    pub links: LinkSource,
    pub topology_hosts: Vec<TopologyHost>,
    pub vxlan_port: u16,
    /// Algorithm for specs that name none (`None`: the planner's default).
    pub algorithm: Option<String>,
    /// A VN still provisioning after this long fails and is rolled back.
    pub provisioning_timeout: Duration,
    /// After a restart, VNs on hosts that did not re-attach within this long degrade.
    pub reattach_grace: Duration,
    /// A host whose agent stays away this long is lost and its VNs are re-embedded.
    pub host_grace: Duration,
    /// How often a VN that could not be re-embedded is tried again while its fault lasts.
    pub recovery_retry: Duration,
    /// Debounce of a substrate link's state as its agents' probes report it.
    pub link_grace: Duration,
    /// The agents' underlay probes: interval and misses before a link is down.
    pub probe_interval_ms: u32,
    pub probe_misses: u32,
    /// Exec timeout when the request gives none.
    pub exec_timeout: Duration,
    /// Bytes of output (stdout and stderr together) after which a command is ended.
    pub exec_max_output: u64,
    /// Events buffered for watchers; one that falls further behind gets a fresh snapshot.
    pub event_buffer: usize,
    /// SHA-256 hashes of the operator's bootstrap admin tokens.
    pub admin_token_hashes: Vec<[u8; 32]>,
    /// A FAILED VN record is forgotten this long after the controller saw it fail
    /// (`None`: kept until deleted).
    pub failed_ttl: Option<Duration>,
    /// Plain-text mode (`--insecure`): agents present no certificate, so the host id of their
    /// hello is believed. Never in production.
    pub insecure: bool,
    /// The address a replica on etcd advertises as leader (what followers name).
    pub advertise: String,
}

impl ControllerConfig {
    pub fn new(state_dir: impl Into<std::path::PathBuf>) -> Self {
        ControllerConfig {
            state_dir: state_dir.into(),
            links: LinkSource::FullMesh {
                bandwidth_mbps: 1000,
            },
            topology_hosts: vec![],
            vxlan_port: 4789,
            algorithm: None,
            provisioning_timeout: Duration::from_secs(120),
            reattach_grace: Duration::from_secs(30),
            host_grace: Duration::from_secs(10),
            recovery_retry: Duration::from_secs(10),
            link_grace: Duration::from_secs(1),
            probe_interval_ms: 300,
            probe_misses: 3,
            exec_timeout: Duration::from_secs(30),
            exec_max_output: 4 << 30,
            event_buffer: 1024,
            admin_token_hashes: vec![],
            failed_ttl: Some(Duration::from_secs(3600)),
            insecure: false,
            advertise: String::new(),
        }
    }
}

/// Errors of controller operations; the gRPC edge maps each to a status code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
    /// Optimistic concurrency: the VN changed since the caller read it.
    #[error("{0}")]
    Aborted(String),
    /// This replica does not lead; the leader's advertised address when known.
    #[error("this controller is a follower; {}", match .0 { Some(a) => format!("the leader is at {a}"), None => "no leader is elected yet".to_string() })]
    NotLeader(Option<String>),
}

impl From<CoreError> for ControlError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::AlreadyExists { .. } => ControlError::AlreadyExists(e.to_string()),
            CoreError::NotFound { .. } => ControlError::NotFound(e.to_string()),
            CoreError::Exhausted(m) | CoreError::NoRoom(m) => ControlError::Exhausted(m),
            CoreError::Restore(m) => ControlError::Internal(m),
            CoreError::Precondition(m) => ControlError::Precondition(m),
            CoreError::Permission(m) => ControlError::PermissionDenied(m),
            CoreError::Invalid(m) => ControlError::InvalidArgument(m),
            CoreError::Conflict(m) => ControlError::Aborted(m),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot restore the controller state")]
    Restore(#[source] CoreError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// A published event, with its sequence number.
pub type Published = Arc<StoredEvent>;

struct AgentSlot {
    epoch: u64,
    exec_tx: mpsc::Sender<pb::ExecCommand>,
    /// Commands sent to the agent whose stream it has not opened yet.
    pending: HashMap<u64, oneshot::Sender<AgentExec>>,
    /// Console sessions: start, input and stop messages to the agent, and the open sessions.
    console_tx: mpsc::Sender<pb::controller_message::Msg>,
    consoles: HashMap<u64, console::Route>,
}

struct Shared {
    cfg: ControllerConfig,
    planner: Box<dyn Planner>,
    index: Mutex<Index>,
    agents: Mutex<HashMap<String, AgentSlot>>,
    epoch: AtomicU64,
    publisher: Arc<Publisher>,
    credentials: Credentials,
    /// Lost hosts and dead links being debounced ([`failover`]).
    faults: Mutex<failover::Faults>,
    /// Counts changes of the set of substrate links (a full mesh grows with every new host):
    /// sessions then send their agent a new probe configuration.
    links_changed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    /// The store (also the writer's), read again by a follower and at a takeover.
    store: Arc<dyn Store>,
    /// This replica's role as the store decides it (always leader with redb).
    role: watch::Receiver<Role>,
    /// Set once a leader's state is loaded and its epoch begun; writes need it.
    leading: watch::Sender<bool>,
    /// The etcd store, when replicated.
    etcd: Option<Arc<EtcdStore>>,
    /// After a takeover: until then, creates wait for the stored hosts' agents to re-attach
    /// (a VN is placed only on attached hosts; they come within a moment of the election).
    settle_until: Mutex<Option<Instant>>,
    // Last field: dropped last, after every other user of the store.
    writer: Writer,
}

/// What an attached agent's session needs.
pub struct AgentHandle {
    pub host: String,
    pub epoch: u64,
    pub desired: watch::Receiver<Arc<DesiredSnapshot>>,
    pub exec: mpsc::Receiver<pb::ExecCommand>,
    /// Console messages for the agent.
    pub console: mpsc::Receiver<pb::controller_message::Msg>,
}

#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("state_dir", &self.shared.cfg.state_dir)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is a bug; the data stays usable for diagnosis.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Controller {
    /// Opens the redb store in the state directory and restores every VN. Needs no runtime;
    /// call [`Controller::start`] from inside one.
    pub fn open(cfg: ControllerConfig, planner: Box<dyn Planner>) -> Result<Self, OpenError> {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&cfg.state_dir)?);
        let (ctl, epoch) = Self::with_store(cfg, planner, store, None)?;
        ctl.begin_epoch(epoch, ctl.last_seq())?;
        ctl.shared.leading.send_replace(true);
        Ok(ctl)
    }

    /// A replica on etcd: it starts as a follower with the stored state; [`Controller::start`]
    /// campaigns, advertising `advertise` to the other replicas' clients.
    pub fn open_replicated(
        cfg: ControllerConfig,
        planner: Box<dyn Planner>,
        etcd: Arc<EtcdStore>,
    ) -> Result<Self, OpenError> {
        let store: Arc<dyn Store> = etcd.clone();
        Ok(Self::with_store(cfg, planner, store, Some(etcd))?.0)
    }

    /// A controller on `store`, its state restored and its events up to the stored ones counted
    /// as published; with the stored writer epoch.
    fn with_store(
        cfg: ControllerConfig,
        planner: Box<dyn Planner>,
        store: Arc<dyn Store>,
        etcd: Option<Arc<EtcdStore>>,
    ) -> Result<(Self, u64), OpenError> {
        let credentials = match &etcd {
            Some(e) => {
                if cfg.state_dir.join("credentials.json").exists() {
                    tracing::warn!(
                        dir = %cfg.state_dir.display(),
                        "credentials.json in the state directory is not used: replicas keep \
                         credentials in etcd"
                    );
                }
                Credentials::shared(e.clone(), cfg.admin_token_hashes.clone())?
            }
            None => Credentials::open(&cfg.state_dir, cfg.admin_token_hashes.clone())?,
        };
        let loaded = store.load()?;
        let epoch = loaded.epoch;
        let publisher = Arc::new(Publisher::new(cfg.event_buffer));
        // The state read stands for the events stored so far: only later ones are published.
        publisher.skip_to(loaded.last_seq);
        let index = restore(&cfg, loaded).map_err(OpenError::Restore)?;
        let (shutdown, _) = watch::channel(false);
        let writer = Writer::spawn(store.clone(), publisher.clone());
        let role = match &etcd {
            Some(e) => e.role(),
            None => watch::channel(Role::Leader { fence: 0 }).1,
        };
        let ctl = Controller {
            shared: Arc::new(Shared {
                cfg,
                planner,
                index: Mutex::new(index),
                agents: Mutex::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                publisher,
                credentials,
                faults: Mutex::new(failover::Faults::default()),
                links_changed: watch::channel(0).0,
                shutdown,
                store,
                role,
                leading: watch::channel(false).0,
                etcd,
                settle_until: Mutex::new(None),
                writer,
            }),
        };
        Ok((ctl, epoch))
    }

    /// Starts a writer epoch after the stored one: events are numbered in it from now on.
    fn begin_epoch(&self, stored: u64, last_seq: u64) -> Result<(), StoreError> {
        let epoch = stored + 1;
        self.shared.store.begin_epoch(epoch)?;
        self.shared.publisher.begin_epoch(epoch, last_seq);
        Ok(())
    }

    /// Whether this replica leads (always, with redb).
    pub fn leading(&self) -> bool {
        *self.shared.leading.borrow()
    }

    /// Whether this replica leads, and its changes.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.shared.leading.subscribe()
    }

    /// Right after a takeover, waits (at most until the settle time) for every stored host's
    /// agent to re-attach.
    async fn settle(&self) {
        loop {
            let Some(until) = *lock(&self.shared.settle_until) else {
                return;
            };
            let all =
                self.with_index(|ix| ix.registry.hosts().all(|h| ix.registry.is_connected(&h.id)));
            if all || Instant::now() >= until {
                *lock(&self.shared.settle_until) = None;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Refuses a write on a follower, naming the leader.
    pub fn require_leader(&self) -> Result<(), ControlError> {
        if self.leading() {
            return Ok(());
        }
        Err(ControlError::NotLeader(match &*self.shared.role.borrow() {
            Role::Follower { leader } => leader.clone(),
            Role::Leader { .. } => None,
        }))
    }

    /// The stored events after `after` up to the last one published (for a watcher that
    /// resumes); `None` when some were trimmed already.
    pub fn events_after(&self, after: u64) -> Result<Option<Vec<StoredEvent>>, ControlError> {
        self.shared
            .store
            .events_between(after, self.last_seq())
            .map_err(|e| ControlError::Unavailable(format!("{:#}", anyhow::Error::new(e))))
    }

    /// The number of the last event published (what a snapshot taken now stands for).
    pub fn last_seq(&self) -> u64 {
        self.shared.publisher.last_seq()
    }

    /// Starts the timers of restored state: provisioning timeouts and the re-attach grace.
    /// A replica on etcd campaigns instead, and starts them when it takes over.
    pub fn start(&self) {
        if let Some(etcd) = self.shared.etcd.clone() {
            self.spawn_replica(etcd);
            return;
        }
        self.start_timers();
    }

    fn start_timers(&self) {
        let (provisioning, held) = {
            let ix = lock(&self.shared.index);
            (
                ix.provisioning(),
                ix.records().any(|r| r.status.holds_resources()),
            )
        };
        for vn_id in provisioning {
            self.arm_provisioning_timer(vn_id);
        }
        if let Some(ttl) = self.shared.cfg.failed_ttl {
            self.spawn_failed_expiry(ttl);
        }
        self.spawn_recovery_retry();
        if held {
            self.after(self.shared.cfg.reattach_grace, |ctl| async move {
                let missing = ctl.mutate(|ix| ix.degrade_unattached()).await;
                // As if their sessions ended now: lost unless back within the host grace.
                let now = crate::grpc::convert::now_ms();
                for h in missing.unwrap_or_default() {
                    ctl.host_gone(&h, 0, now);
                }
            });
        }
    }

    /// Runs `f` on this controller after `delay`, unless the controller was dropped meanwhile:
    /// timers hold no strong reference, so a dropped controller releases its store at once.
    pub(super) fn after<F, Fut>(&self, delay: Duration, f: F)
    where
        F: FnOnce(Controller) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(shared) = weak.upgrade() {
                f(Controller { shared }).await;
            }
        });
    }

    /// Tokens and quotas.
    pub fn credentials(&self) -> &Credentials {
        &self.shared.credentials
    }

    /// Whether agents' hellos are believed without a certificate (`--insecure`).
    pub fn insecure(&self) -> bool {
        self.shared.cfg.insecure
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.publisher.metrics
    }

    pub fn algorithms(&self) -> Vec<&'static str> {
        self.shared.planner.algorithms()
    }

    /// Read access to the index (for queries, tests and metrics).
    pub fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> R {
        f(&lock(&self.shared.index))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.shared.publisher.events.subscribe()
    }

    /// Changes when this replica skipped events it could not read (watchers send a snapshot).
    pub fn resync_signal(&self) -> watch::Receiver<u64> {
        self.shared.publisher.resync.subscribe()
    }

    /// Changes when the set of substrate links changes.
    pub fn links_changed(&self) -> watch::Receiver<u64> {
        self.shared.links_changed.subscribe()
    }

    /// Resolves when the controller shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shared.shutdown.subscribe()
    }

    /// Tells sessions and watchers to end (before the servers drain).
    pub fn begin_shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Runs `f` on the index under the lock, queues its change for the writer (which persists,
    /// then publishes it), and waits until it is persisted. `None`: the runtime is shutting down.
    async fn mutate<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Index) -> (R, Change) + Send + 'static,
    ) -> Option<R> {
        if !self.leading() {
            // A follower's index mirrors the store; only the leader changes it.
            return None;
        }
        let this = self.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut ix = lock(&this.shared.index);
            let (r, change) = f(&mut ix);
            if change.is_empty() {
                return r;
            }
            let desired = desired_of(&ix, &change);
            let ack = this.shared.writer.send(change, None, desired);
            drop(ix);
            // The writer logs failures; memory stays ahead of the store until the next write.
            let _ = ack.recv();
            r
        })
        .await;
        match out {
            Ok(r) => Some(r),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(_) => None,
        }
    }

    /// Runs one embedding of `req`, timed for the metrics. A failure is RESOURCE_EXHAUSTED:
    /// cannot `verb` it, why, then `tail`. A child's "substrate" is its parent: the message says
    /// so, or "host" and "substrate path" in the reason read as the physical ones.
    fn embedding<T>(
        &self,
        req: &VnReq,
        verb: &str,
        tail: &str,
        run: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, Attempt> {
        let t = Instant::now();
        let r = run();
        self.shared.publisher.metrics.embedded(t.elapsed());
        r.map_err(|why| {
            let within = req.parent.as_ref().map_or(String::new(), |p| {
                format!(" in its parent {p} (whose nodes and links are its hosts and links)")
            });
            Attempt::Error(ControlError::Exhausted(format!(
                "cannot {verb} {}{within}: {why}{tail}",
                req.name
            )))
        })
    }

    fn arm_provisioning_timer(&self, vn_id: String) {
        let timeout = self.shared.cfg.provisioning_timeout;
        self.after(timeout, move |ctl| async move {
            ctl.mutate(move |ix| ((), ix.provisioning_timeout(&vn_id, timeout)))
                .await;
        });
    }

    /// What `req` would hold: one VN, its nodes (each, whatever its demands), their CPU and
    /// memory, and its links' bandwidth.
    pub fn demand(req: &VnReq) -> Usage {
        Usage {
            vns: 1,
            nodes: req.nodes.len() as u64,
            cpu: req.total_cpu(),
            memory_mb: req.nodes.iter().map(|n| n.memory_mb).sum(),
            bandwidth_mbps: req.links.iter().map(|l| l.bandwidth_mbps).sum(),
        }
    }

    /// What `provider` holds now: its VNs that hold resources (provisioning, ready, degraded).
    pub fn usage(ix: &Index, provider: &ProviderId) -> Usage {
        Self::usage_except(ix, provider, None)
    }

    /// Refuses a request beyond its provider's quota (checked under the index lock, so that
    /// concurrent creates cannot together exceed it).
    fn check_quota(&self, ix: &Index, req: &VnReq) -> Result<(), ControlError> {
        self.check_quota_replacing(ix, req, None)
    }

    /// Forgets FAILED records `ttl` after this controller first saw them failed, checking
    /// every `ttl / 4` (at most every minute).
    fn spawn_failed_expiry(&self, ttl: Duration) {
        let weak = Arc::downgrade(&self.shared);
        let period = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut seen: HashMap<String, Instant> = HashMap::new();
            loop {
                tokio::time::sleep(period).await;
                let Some(shared) = weak.upgrade() else { return };
                let ctl = Controller { shared };
                if *ctl.shared.shutdown.borrow() {
                    return;
                }
                let failed: Vec<(String, ProviderId, String)> = ctl.with_index(|ix| {
                    ix.records()
                        .filter(|r| r.status == crate::core::record::VnStatus::Failed)
                        .map(|r| (r.vn_id.clone(), r.provider().clone(), r.name().to_string()))
                        .collect()
                });
                let now = Instant::now();
                seen.retain(|id, _| failed.iter().any(|(f, _, _)| f == id));
                for (id, provider, name) in failed {
                    let since = *seen.entry(id).or_insert(now);
                    if now.duration_since(since) < ttl {
                        continue;
                    }
                    match ctl.delete(&provider, &name, false).await {
                        Ok(_) => tracing::info!(%provider, vn = %name, "failed VN expired"),
                        Err(e) => {
                            tracing::debug!(%provider, vn = %name, error = %e, "failed VN not expired")
                        }
                    }
                }
            }
        });
    }

    /// Checks an agent's hello against the operator's topology: a host it does not list is
    /// refused (when it lists any), and capacities above what it states are cut to it.
    pub fn admit_host(&self, info: &mut HostInfo) -> Result<(), ControlError> {
        let topo = &self.shared.cfg.topology_hosts;
        if topo.is_empty() {
            return Ok(());
        }
        let Some(t) = topo.iter().find(|t| t.id == info.id) else {
            return Err(ControlError::PermissionDenied(format!(
                "host {} is not in the operator's topology",
                info.id
            )));
        };
        if let Some(cpu) = t.cpu.filter(|c| info.cpu > *c) {
            tracing::warn!(host = %info.id, reported = info.cpu, cpu, "capacity capped by the topology");
            info.cpu = cpu;
        }
        if let Some(mem) = t.memory.filter(|m| info.memory_mb > *m) {
            tracing::warn!(host = %info.id, reported = info.memory_mb, mem, "capacity capped by the topology");
            info.memory_mb = mem;
        }
        Ok(())
    }

    /// Refuses a `vm` node of an architecture no host runs, or whose image no host that runs
    /// its architecture holds (of that architecture), naming what the hosts offer.
    fn check_images(ix: &Index, req: &VnReq) -> Result<(), ControlError> {
        for (i, n) in req.nodes.iter().enumerate() {
            let Some(g) = &n.guest else { continue };
            if !ix.registry.hosts().any(|h| h.guest_archs.contains(&g.arch)) {
                return Err(ControlError::InvalidArgument(format!(
                    "spec.nodes[{i}] ({}): architecture {} runs on no host (the hosts run: {})",
                    n.name,
                    g.arch,
                    ix.registry.arch_offer_summary()
                )));
            }
            if !ix.registry.hosts().any(|h| h.runs_image(&g.image, &g.arch)) {
                return Err(ControlError::InvalidArgument(format!(
                    "spec.nodes[{i}] ({}): image {} of architecture {} is held by no host that \
                     runs it (the hosts offer: {}; they run: {})",
                    n.name,
                    g.image,
                    g.arch,
                    ix.registry.image_offer_summary(),
                    ix.registry.arch_offer_summary()
                )));
            }
        }
        Ok(())
    }

    /// Embeds and commits a validated request; returns the VN in state provisioning.
    #[tracing::instrument(skip_all, fields(provider = %req.provider, vn = %req.name))]
    pub async fn create(&self, req: VnReq, spec: pb::VnSpec) -> Result<VnRecord, ControlError> {
        self.require_leader()?;
        self.settle().await;
        let started = Instant::now();
        let algorithm = self.algorithm_for(&req);
        let spec_pb = prost::Message::encode_to_vec(&spec);
        let req = Arc::new(req);
        let out = self
            .optimistic("create", move |this, serialised| {
                this.create_attempt(&req, &algorithm, spec_pb.clone(), (serialised, started))
            })
            .await;
        match &out {
            Ok(rec) => {
                self.arm_provisioning_timer(rec.vn_id.clone());
                self.metrics().created(started.elapsed(), "accepted");
                tracing::info!(vn_id = %rec.vn_id, hosts = ?rec.placement.hosts(), "accepted");
            }
            Err(a) => {
                self.metrics().created(started.elapsed(), "rejected");
                self.metrics().rejected(a.rejected());
            }
        }
        out.map_err(ControlError::from)
    }

    /// The algorithm for `req`: its own, else the controller's, else the planner's default.
    fn algorithm_for(&self, req: &VnReq) -> String {
        req.algorithm
            .clone()
            .or_else(|| self.shared.cfg.algorithm.clone())
            .unwrap_or_else(|| self.shared.planner.default_algorithm().to_string())
    }

    /// Runs `attempt` on a blocking thread until it commits: a conflict (a concurrent commit
    /// took what its embedding needed) makes it embed again, twice optimistically (embedding
    /// outside the index lock), the third time serialised (under the lock), where a conflict is
    /// final (RESOURCE_EXHAUSTED).
    async fn optimistic<T: Send + 'static>(
        &self,
        what: &'static str,
        attempt: impl Fn(&Controller, bool) -> Result<T, Attempt> + Send + Sync + 'static,
    ) -> Result<T, Attempt> {
        const OPTIMISTIC: usize = 2;
        let attempt = Arc::new(attempt);
        for n in 0..=OPTIMISTIC {
            let (this, attempt) = (self.clone(), attempt.clone());
            let serialised = n == OPTIMISTIC;
            let out = tokio::task::spawn_blocking(move || attempt(&this, serialised))
                .await
                .map_err(|e| {
                    Attempt::Error(ControlError::Internal(format!("{what} task failed: {e}")))
                })?;
            match out {
                Ok(r) => return Ok(r),
                Err(Attempt::Conflict(why)) if !serialised => {
                    tracing::debug!(%why, attempt = n, "{what}: commit conflict, embedding again");
                }
                Err(a) => return Err(a),
            }
        }
        unreachable!("the last attempt returns")
    }

    fn create_attempt(
        &self,
        req: &VnReq,
        algorithm: &str,
        spec_pb: Vec<u8>,
        (serialised, started): (bool, Instant),
    ) -> Result<VnRecord, Attempt> {
        let shared = &self.shared;
        let mut guard = lock(&shared.index);
        guard.check_name_free(&req.provider, &req.name)?;
        self.check_quota(&guard, req).map_err(Attempt::Quota)?;
        // The substrate, or a child's parent after the checks against it.
        let view = guard.view(&guard.frame(req)?);
        if req.parent.is_none() {
            Self::check_images(&guard, req)?;
        }
        let embed = |view: &View| {
            self.embedding(req, "embed", "", || {
                shared.planner.plan(view, req, algorithm)
            })
        };
        let mapping = if serialised {
            embed(&view)?
        } else {
            drop(guard);
            let m = embed(&view)?;
            guard = lock(&shared.index);
            m
        };
        let (rec, change) = match guard.accept(
            req.clone(),
            spec_pb,
            &mapping,
            crate::grpc::convert::now_ms(),
        ) {
            Ok(x) => x,
            Err(CoreError::Exhausted(why)) => return Err(Attempt::Conflict(why)),
            Err(e) => return Err(Attempt::Error(e.into())),
        };
        let vn_id = rec.vn_id.clone();
        let desired = desired_of(&guard, &change);
        // before its events can be published (by the writer, after the commit)
        self.metrics()
            .awaiting_ready(&req.provider.0, &req.name, started);
        let ack = shared.writer.send(change, None, desired);
        drop(guard);
        // Accepted means persisted: wait for the (group) commit.
        let persisted = ack
            .recv()
            .unwrap_or_else(|_| Err("the store writer is gone".to_string()));
        match persisted {
            Ok(()) => Ok(rec),
            Err(e) => {
                lock(&shared.index).forget(&vn_id);
                Err(Attempt::Error(ControlError::Internal(format!(
                    "cannot persist VN {}: {e}",
                    req.name
                ))))
            }
        }
    }

    pub fn get(&self, provider: &ProviderId, name: &str) -> Result<VnRecord, ControlError> {
        self.with_index(|ix| ix.find(provider, name).cloned())
            .ok_or_else(|| ControlError::NotFound(format!("VN {name} not found")))
    }

    pub fn list(&self, provider: &ProviderId) -> Vec<VnRecord> {
        self.with_index(|ix| ix.list(provider).into_iter().cloned().collect())
    }

    /// Deletes a VN; with `cascade` its descendants first. Returns what was deleted, in order.
    #[tracing::instrument(skip(self))]
    pub async fn delete(
        &self,
        provider: &ProviderId,
        name: &str,
        cascade: bool,
    ) -> Result<Vec<String>, ControlError> {
        self.require_leader()?;
        let (p, n) = (provider.clone(), name.to_string());
        self.mutate(move |ix| match ix.delete(&p, &n, cascade) {
            Ok((deleted, c)) => (Ok(deleted), c),
            Err(e) => (Err(e.into()), Change::default()),
        })
        .await
        .unwrap_or_else(|| {
            Err(ControlError::Unavailable(
                "the controller is shutting down".into(),
            ))
        })
    }

    /// Registers an agent's host and opens its session.
    /// `None`: the controller is shutting down.
    pub async fn attach(&self, info: HostInfo, applied_generation: u64) -> Option<AgentHandle> {
        let host = info.id.clone();
        let epoch = self.shared.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let (exec_tx, exec_rx) = mpsc::channel(64);
        let (console_tx, console_rx) = mpsc::channel(64);
        {
            let mut agents = lock(&self.shared.agents);
            // Under the agents' lock: a step-down clears them after it stops leading, so no
            // session outlives the leadership.
            if !self.leading() {
                return None;
            }
            agents.insert(
                host.clone(),
                AgentSlot {
                    epoch,
                    exec_tx,
                    pending: HashMap::new(),
                    console_tx,
                    consoles: HashMap::new(),
                },
            );
        }
        self.host_back(&host);
        let this = self.clone();
        let h = host.clone();
        let desired = tokio::task::spawn_blocking(move || {
            let mut ix = lock(&this.shared.index);
            let new = ix.attach(info.clone());
            let mut change = Change::default();
            // An agent that applied a generation we do not know (a store from before) gets a
            // higher one with the same content, so that it does not ignore it.
            // (The edge refused generations near the end of the range.)
            if applied_generation >= ix.generation(&h) && applied_generation > 0 {
                change = ix.raise_generation(&h, applied_generation.saturating_add(1));
            }
            tracing::info!(host = %h, new, generation = ix.generation(&h), "agent attached");
            if new {
                this.shared.links_changed.send_modify(|n| *n += 1);
            }
            let d = ix.desired(&h);
            let rx = this.shared.publisher.desired(&h, d);
            let ack = this.shared.writer.send(change, Some(info), vec![]);
            drop(ix);
            if let Ok(Err(e)) = ack.recv() {
                tracing::error!(host = %h, error = %e, "cannot persist the host");
            }
            rx
        })
        .await;
        let Ok(desired) = desired else {
            // The runtime is shutting down.
            return None;
        };
        self.metrics().set_agents(lock(&self.shared.agents).len());
        Some(AgentHandle {
            host,
            epoch,
            desired,
            exec: exec_rx,
            console: console_rx,
        })
    }

    /// An agent's report.
    pub async fn observe(&self, host: &str, obs: pb::ObservedState) {
        for e in &obs.errors {
            tracing::warn!(%host, error = %e, "agent reports a fault");
        }
        for w in &obs.warnings {
            tracing::warn!(%host, warning = %w, "agent reports a warning");
        }
        let h = host.to_string();
        let reports: Vec<_> = obs.vns.iter().map(crate::grpc::slice::report).collect();
        self.mutate(move |ix| {
            // Only generations this controller sent: a report about a later one is a lie (or a
            // bug) and would mark as applied what the agent never received.
            let sent = ix.generation(&h);
            if obs.generation > sent {
                tracing::warn!(host = %h, reported = obs.generation, sent, "report about a generation never sent, refused");
                return ((), Change::default());
            }
            let now = crate::grpc::convert::now_ms();
            ((), ix.observe_at(&h, obs.generation, obs.applied, &reports, now))
        })
        .await;
    }
    /// The session of `host` (epoch `epoch`) ended.
    pub async fn detach(&self, host: &str, epoch: u64) {
        {
            let mut agents = lock(&self.shared.agents);
            if agents.get(host).map(|s| s.epoch) != Some(epoch) {
                return; // replaced by a newer session
            }
            agents.remove(host);
            self.shared.publisher.metrics.set_agents(agents.len());
        }
        if *self.shared.shutdown.borrow() {
            // The controller is leaving, not the agent: its VNs are not degraded.
            return;
        }
        tracing::warn!(%host, "agent detached");
        let h = host.to_string();
        self.mutate(move |ix| ((), ix.detach(&h))).await;
        self.host_gone(host, epoch, crate::grpc::convert::now_ms());
    }

    /// The caller's VN `vn`, which must hold its resources, and the index of its node `node`:
    /// what exec and console reach into.
    fn running_node(
        &self,
        provider: &ProviderId,
        vn: &str,
        node: &str,
    ) -> Result<(VnRecord, usize), ControlError> {
        let rec = self.get(provider, vn)?;
        if !rec.status.holds_resources() {
            return Err(ControlError::Precondition(format!(
                "VN {vn} is failed: {}",
                rec.reason
            )));
        }
        let i = rec
            .req
            .nodes
            .iter()
            .position(|n| n.name == node)
            .ok_or_else(|| ControlError::NotFound(format!("VN {vn} has no node {node}")))?;
        Ok((rec, i))
    }

    /// Runs `f` on the slot of the agent of `host`, where node `node` is placed.
    fn with_slot<R>(
        &self,
        host: &str,
        node: &str,
        f: impl FnOnce(&mut AgentSlot) -> R,
    ) -> Result<R, ControlError> {
        let mut agents = lock(&self.shared.agents);
        let slot = agents.get_mut(host).ok_or_else(|| {
            ControlError::Unavailable(format!("host {host} of node {node} is not attached"))
        })?;
        Ok(f(slot))
    }
}

enum Attempt {
    Conflict(String),
    /// Beyond the provider's quota.
    Quota(ControlError),
    Error(ControlError),
}

impl Attempt {
    /// The `reason` label of a refused Create.
    fn rejected(&self) -> Rejected {
        match self {
            Attempt::Conflict(_) => Rejected::Conflict,
            Attempt::Quota(_) => Rejected::Quota,
            Attempt::Error(e) => rejected_as(e),
        }
    }
}

/// A conflict left after the serialised attempt is a lack of capacity.
impl From<Attempt> for ControlError {
    fn from(a: Attempt) -> Self {
        match a {
            Attempt::Conflict(why) => ControlError::Exhausted(why),
            Attempt::Quota(e) | Attempt::Error(e) => e,
        }
    }
}

/// The `reason` label of a refused Create, by its error.
fn rejected_as(e: &ControlError) -> Rejected {
    match e {
        ControlError::InvalidArgument(_) => Rejected::Invalid,
        ControlError::AlreadyExists(_) => Rejected::Exists,
        ControlError::Exhausted(_) => Rejected::Capacity,
        ControlError::Aborted(_) => Rejected::Conflict,
        ControlError::NotFound(_) | ControlError::Precondition(_) => Rejected::Parent,
        ControlError::PermissionDenied(_) => Rejected::Denied,
        ControlError::Unavailable(_)
        | ControlError::NotLeader(_)
        | ControlError::Timeout(_)
        | ControlError::Internal(_) => Rejected::Internal,
    }
}

impl From<CoreError> for Attempt {
    fn from(e: CoreError) -> Self {
        Attempt::Error(e.into())
    }
}

impl From<ControlError> for Attempt {
    fn from(e: ControlError) -> Self {
        Attempt::Error(e)
    }
}

/// The index of a loaded store.
fn restore(cfg: &ControllerConfig, loaded: Loaded) -> Result<Index, CoreError> {
    let registry = Registry::new(cfg.links.clone(), &cfg.topology_hosts);
    Index::restore(
        IndexConfig {
            vxlan_port: cfg.vxlan_port,
        },
        registry,
        loaded.hosts,
        &loaded.cursors,
        loaded.generations,
        loaded.records,
    )
}

fn desired_of(ix: &Index, change: &Change) -> Vec<(String, DesiredSnapshot)> {
    change
        .hosts_changed
        .iter()
        .map(|h| (h.clone(), ix.desired(h)))
        .collect()
}
