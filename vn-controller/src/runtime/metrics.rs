//! Prometheus metrics (text exposition at `/metrics`).
//!
//! Latencies are observed where they happen; the per-host, per-link, per-provider and per-state
//! gauges are refreshed from the index at every scrape, so they are never stale. What an
//! operator watches: Create latency and Create-to-READY, rejections by reason, usage per host,
//! link and provider, store commit latency, whether this replica leads, and `build_info`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::core::index::{Event, EventKind, Index};
use crate::core::record::VnStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkLabel {
    link: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurableLabel {
    durable: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Why a Create was refused, as the `reason` label of `create_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The spec or a field of it is invalid.
    Invalid,
    /// The name is taken.
    Exists,
    /// The provider's quota would be exceeded.
    Quota,
    /// No embedding fits the residual substrate (or the parent).
    Capacity,
    /// Concurrent commits kept taking what the embedding needed.
    Conflict,
    /// The parent is missing, not shared, or not in a state to nest.
    Parent,
    /// The caller may not do this.
    Denied,
    /// The controller failed (store, shutdown).
    Internal,
}

impl Rejected {
    fn as_str(self) -> &'static str {
        match self {
            Rejected::Invalid => "invalid",
            Rejected::Exists => "exists",
            Rejected::Quota => "quota",
            Rejected::Capacity => "capacity",
            Rejected::Conflict => "conflict",
            Rejected::Parent => "parent",
            Rejected::Denied => "denied",
            Rejected::Internal => "internal",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    embedding: Histogram,
    create: Family<ResultLabel, Histogram>,
    update: Family<ResultLabel, Histogram>,
    events: Family<KindLabel, Counter>,
    vns: Family<StateLabel, Gauge>,
    host_cpu: Family<HostLabel, FGauge>,
    host_memory: Family<HostLabel, FGauge>,
    host_connected: Family<HostLabel, Gauge>,
    link_bandwidth: Family<LinkLabel, FGauge>,
    agents: Gauge,
    op: Operator,
}

/// What an operator watches besides: Create to READY, rejections by reason, usage per
/// provider, store commit latency, leadership.
struct Operator {
    ready: Histogram,
    /// Accepted VNs not READY yet: (provider, name) -> when their Create began.
    pending_ready: Mutex<HashMap<(String, String), Instant>>,
    rejections: Family<ReasonLabel, Counter>,
    /// In the order of [`PROVIDER_GAUGES`].
    provider: [Family<ProviderLabel, Gauge>; 4],
    store_commit: Family<DurableLabel, Histogram>,
    leader: Gauge,
}

/// The per-provider gauges (name, help): VNs, CPU, memory, bandwidth that a provider's VNs hold.
const PROVIDER_GAUGES: [(&str, &str); 4] = [
    (
        "provider_vns",
        "VNs that hold resources (provisioning, ready, degraded), per provider",
    ),
    ("provider_cpu", "CPU held, per provider"),
    ("provider_memory_mib", "Memory held (MiB), per provider"),
    (
        "provider_bandwidth_mbps",
        "Virtual link bandwidth held (Mbit/s), per provider",
    ),
];

impl Operator {
    fn register(registry: &mut Registry) -> Operator {
        let leader = Gauge::default();
        // a single controller on its own store is the leader; a replicated store sets it
        leader.set(1);
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "The controller's version (value 1)", build);
        Operator {
            ready: registered(
                registry,
                "create_to_ready_duration_seconds",
                "From the start of an accepted Create to the VN's READY on every host",
                Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            ),
            pending_ready: Mutex::new(HashMap::new()),
            rejections: registered(
                registry,
                "create_rejections",
                "Creates refused, by reason (invalid, exists, quota, capacity, conflict, parent, denied, internal)",
                Family::default(),
            ),
            provider: PROVIDER_GAUGES
                .map(|(name, help)| registered(registry, name, help, Family::default())),
            store_commit: registered(
                registry,
                "store_commit_duration_seconds",
                "One (group) commit of the store, by durability (fsync or not)",
                latencies(),
            ),
            leader: registered(
                registry,
                "leader",
                "1 when this controller is the leader (embeds and allocates), 0 when a follower",
                leader,
            ),
        }
    }
}

/// Registers `metric` under `name` and returns it (a metric is a handle: the clone that the
/// registry keeps sees every update).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// A family of latency histograms, 0.1 ms to about 13 s.
fn latencies<L: Clone + std::hash::Hash + Eq>() -> Family<L, Histogram> {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18)))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn ratio(used: u64, cap: u64) -> f64 {
    if cap == 0 {
        0.0
    } else {
        used as f64 / cap as f64
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vnet_controller");
        let r = &mut registry;
        let embedding = registered(
            r,
            "embedding_duration_seconds",
            "Time one embedding algorithm run took",
            Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
        );
        let create = registered(
            r,
            "create_duration_seconds",
            "Create from request to accepted (or rejected), by result",
            latencies(),
        );
        let update = registered(
            r,
            "update_duration_seconds",
            "Update from request to committed (or refused), by result",
            latencies(),
        );
        let events = registered(
            r,
            "vn_events",
            "VN events published, by kind",
            Family::default(),
        );
        let vns = registered(r, "vns", "VNs by state", Family::default());
        let host_cpu = registered(
            r,
            "host_cpu_utilisation_ratio",
            "CPU reserved by held VNs over capacity, per host",
            Family::default(),
        );
        let host_memory = registered(
            r,
            "host_memory_utilisation_ratio",
            "Memory reserved by held VNs over capacity, per host",
            Family::default(),
        );
        let host_connected = registered(
            r,
            "host_connected",
            "1 when the host's agent is attached",
            Family::default(),
        );
        let link_bandwidth = registered(
            r,
            "link_bandwidth_utilisation_ratio",
            "Bandwidth reserved by held VNs over capacity, per substrate link",
            Family::default(),
        );
        let agents = registered(r, "agents_connected", "Attached agents", Gauge::default());
        let op = Operator::register(r);
        Metrics {
            registry,
            embedding,
            create,
            update,
            events,
            vns,
            host_cpu,
            host_memory,
            host_connected,
            link_bandwidth,
            agents,
            op,
        }
    }

    /// A Create begun at `started` was accepted: its READY will be timed from then. Called
    /// before the VN's events are published.
    pub fn awaiting_ready(&self, provider: &str, name: &str, started: Instant) {
        self.pending()
            .insert((provider.to_string(), name.to_string()), started);
    }

    /// A Create was refused.
    pub fn rejected(&self, why: Rejected) {
        self.op
            .rejections
            .get_or_create(&ReasonLabel {
                reason: why.as_str().into(),
            })
            .inc();
    }

    /// One store commit took `d`.
    pub fn store_committed(&self, d: Duration, durable: bool) {
        self.op
            .store_commit
            .get_or_create(&DurableLabel {
                durable: durable.to_string(),
            })
            .observe(d.as_secs_f64());
    }

    /// Whether this controller is the leader (a replicated store's election sets it).
    pub fn set_leader(&self, leader: bool) {
        self.op.leader.set(i64::from(leader));
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.op
            .pending_ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn embedded(&self, d: Duration) {
        self.embedding.observe(d.as_secs_f64());
    }

    pub fn created(&self, d: Duration, result: &str) {
        Self::observe_result(&self.create, d, result);
    }

    pub fn updated(&self, d: Duration, result: &str) {
        Self::observe_result(&self.update, d, result);
    }

    fn observe_result(f: &Family<ResultLabel, Histogram>, d: Duration, result: &str) {
        f.get_or_create(&ResultLabel {
            result: result.into(),
        })
        .observe(d.as_secs_f64());
    }

    pub fn event(&self, e: &Event) {
        let kind = match e.kind {
            EventKind::Accepted => "accepted",
            EventKind::HostProgress => "host_progress",
            EventKind::Ready => "ready",
            EventKind::Degraded => "degraded",
            EventKind::Failed => "failed",
            EventKind::Deleted => "deleted",
            EventKind::Updated => "updated",
        };
        self.events
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
        let key = (e.provider.0.clone(), e.name.clone());
        match e.kind {
            EventKind::Ready => {
                if let Some(t) = self.pending().remove(&key) {
                    self.op.ready.observe(t.elapsed().as_secs_f64());
                }
            }
            EventKind::Failed | EventKind::Deleted => {
                self.pending().remove(&key);
            }
            _ => {}
        }
    }

    pub fn set_agents(&self, n: usize) {
        self.agents.set(n as i64);
    }

    /// Per-provider gauges: what each provider's VNs hold ([`PROVIDER_GAUGES`]).
    fn render_providers(&self, ix: &Index) {
        let mut per: BTreeMap<&str, [i64; 4]> = BTreeMap::new();
        for r in ix.records().filter(|r| r.status.holds_resources()) {
            let t = per.entry(r.provider().0.as_str()).or_default();
            let req = &r.req;
            t[0] += 1;
            t[1] += saturating_i64(req.total_cpu());
            t[2] += saturating_i64(req.nodes.iter().map(|n| n.memory_mb).sum());
            t[3] += saturating_i64(req.links.iter().map(|l| l.bandwidth_mbps).sum());
        }
        for f in &self.op.provider {
            f.clear();
        }
        for (p, t) in per {
            let l = ProviderLabel { provider: p.into() };
            for (f, v) in self.op.provider.iter().zip(t) {
                f.get_or_create(&l).set(v);
            }
        }
    }

    /// Refreshes the gauges from `ix` and renders the text exposition.
    pub fn render(&self, ix: &Index) -> String {
        for s in VnStatus::ALL {
            let n = ix.records().filter(|r| r.status == s).count();
            self.vns
                .get_or_create(&StateLabel {
                    state: s.as_str().into(),
                })
                .set(n as i64);
        }
        self.host_cpu.clear();
        self.host_memory.clear();
        self.host_connected.clear();
        self.link_bandwidth.clear();
        let u = ix.usage();
        for h in ix.registry.hosts() {
            let l = HostLabel { host: h.id.clone() };
            self.host_cpu
                .get_or_create(&l)
                .set(ratio(u.host_cpu(&h.id), h.cpu));
            self.host_memory
                .get_or_create(&l)
                .set(ratio(u.host_memory(&h.id), h.memory_mb));
            self.host_connected
                .get_or_create(&l)
                .set(i64::from(ix.registry.is_connected(&h.id)));
        }
        for l in ix.registry.links() {
            self.link_bandwidth
                .get_or_create(&LinkLabel { link: l.id.clone() })
                .set(ratio(u.link_bandwidth(&l.id), l.bandwidth_mbps));
        }
        self.render_providers(ix);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}
