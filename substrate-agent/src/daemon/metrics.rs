//! The agent's Prometheus metrics (text exposition at `/metrics` with `--metrics-listen`):
//! reconcile passes by outcome and their duration, the VNs of the newest desired state, the
//! generation last applied, whether the controller session is up, and `build_info`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
    host: String,
}

/// How a reconcile pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; every slice READY.
    Converged,
    /// Applied with a slice FAILED (or the desired state refused).
    Failed,
    /// A newer desired state cancelled it between phases.
    Superseded,
    /// The pass itself crashed.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Failed => "failed",
            Outcome::Superseded => "superseded",
            Outcome::Error => "error",
        }
    }
}

/// The agent's metrics; cheap to share (`Arc` inside the registry's metrics).
pub struct AgentMetrics {
    registry: Registry,
    duration: Family<OutcomeLabel, Histogram>,
    passes: Family<OutcomeLabel, Counter>,
    vns: Gauge,
    applied_generation: Gauge<u64, AtomicU64>,
    attached: Gauge,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics")
    }
}

impl AgentMetrics {
    /// The metrics of the agent of `host`.
    pub fn new(host: &str) -> Self {
        let mut registry = Registry::with_prefix("vnet_agent");
        let duration = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        registry.register(
            "reconcile_duration_seconds",
            "One reconcile pass (observe, plan, apply), by outcome",
            duration.clone(),
        );
        let passes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile passes, by outcome (converged, failed, superseded, error)",
            passes.clone(),
        );
        let vns = Gauge::default();
        registry.register("vns", "VN slices in the newest desired state", vns.clone());
        let applied_generation = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "applied_generation",
            "Generation of the desired state last applied",
            applied_generation.clone(),
        );
        let attached = Gauge::default();
        registry.register(
            "controller_attached",
            "1 while the Attach session with the controller is up",
            attached.clone(),
        );
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").into(),
                host: host.into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The agent's version and host (value 1)",
            build,
        );
        AgentMetrics {
            registry,
            duration,
            passes,
            vns,
            applied_generation,
            attached,
        }
    }

    /// A reconcile pass of the desired state `generation` with `vns` slices took `d`.
    pub fn reconciled(&self, d: Duration, outcome: Outcome, generation: u64, vns: usize) {
        let l = OutcomeLabel {
            outcome: outcome.as_str().into(),
        };
        self.duration.get_or_create(&l).observe(d.as_secs_f64());
        self.passes.get_or_create(&l).inc();
        self.vns.set(i64::try_from(vns).unwrap_or(i64::MAX));
        if matches!(outcome, Outcome::Converged | Outcome::Failed) {
            self.applied_generation.set(generation);
        }
    }

    /// The controller session went up or down.
    pub fn set_attached(&self, up: bool) {
        self.attached.set(i64::from(up));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// Serves `/metrics` on `listener` until `shutdown` fires.
pub async fn serve(
    metrics: Arc<AgentMetrics>,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(m): axum::extract::State<Arc<AgentMetrics>>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.render(),
                    )
                },
            ),
        )
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_endpoint_serves_reconcile_metrics() {
        let m = Arc::new(AgentMetrics::new("h7"));
        m.reconciled(Duration::from_millis(30), Outcome::Converged, 4, 2);
        m.reconciled(Duration::from_millis(70), Outcome::Failed, 5, 3);
        m.reconciled(Duration::from_millis(5), Outcome::Superseded, 6, 3);
        m.set_attached(true);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve(m.clone(), listener, stop_rx));
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        for line in [
            "200 OK",
            "vnet_agent_reconciles_total{outcome=\"converged\"} 1",
            "vnet_agent_reconciles_total{outcome=\"superseded\"} 1",
            "vnet_agent_reconciles_total{outcome=\"failed\"} 1",
            "vnet_agent_reconcile_duration_seconds_count{outcome=\"converged\"} 1",
            "vnet_agent_reconcile_duration_seconds_sum{outcome=\"failed\"} 0.07",
            // a superseded pass applied nothing
            "vnet_agent_applied_generation 5",
            "vnet_agent_vns 3",
            "vnet_agent_controller_attached 1",
            "vnet_agent_build_info{version=\"",
        ] {
            assert!(out.contains(line), "no `{line}` in {out}");
        }
        stop_tx.send(true).unwrap();
        server.await.unwrap().unwrap();
    }
}
