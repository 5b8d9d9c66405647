//! Prometheus metrics (text exposition at `/metrics`).
//!
//! Latencies are observed where they happen; the per-host, per-link and per-state gauges are
//! refreshed from the index at every scrape, so they are never stale.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

type FGauge = Gauge<f64, AtomicU64>;

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
        let embedding = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register(
            "embedding_duration_seconds",
            "Time one embedding algorithm run took",
            embedding.clone(),
        );
        let create = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "create_duration_seconds",
            "Create from request to accepted (or rejected), by result",
            create.clone(),
        );
        let update = Family::<ResultLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "update_duration_seconds",
            "Update from request to committed (or refused), by result",
            update.clone(),
        );
        let events = Family::<KindLabel, Counter>::default();
        registry.register("vn_events", "VN events published, by kind", events.clone());
        let vns = Family::<StateLabel, Gauge>::default();
        registry.register("vns", "VNs by state", vns.clone());
        let host_cpu = Family::<HostLabel, FGauge>::default();
        registry.register(
            "host_cpu_utilisation_ratio",
            "CPU reserved by held VNs over capacity, per host",
            host_cpu.clone(),
        );
        let host_memory = Family::<HostLabel, FGauge>::default();
        registry.register(
            "host_memory_utilisation_ratio",
            "Memory reserved by held VNs over capacity, per host",
            host_memory.clone(),
        );
        let host_connected = Family::<HostLabel, Gauge>::default();
        registry.register(
            "host_connected",
            "1 when the host's agent is attached",
            host_connected.clone(),
        );
        let link_bandwidth = Family::<LinkLabel, FGauge>::default();
        registry.register(
            "link_bandwidth_utilisation_ratio",
            "Bandwidth reserved by held VNs over capacity, per substrate link",
            link_bandwidth.clone(),
        );
        let agents = Gauge::default();
        registry.register("agents_connected", "Attached agents", agents.clone());
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
        }
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
    }

    pub fn set_agents(&self, n: usize) {
        self.agents.set(n as i64);
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
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}
