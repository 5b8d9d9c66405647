//! The daemon: command line, start-up order (tracing; parse config without binding; open the
//! store; bind and log every address; serve; wait for SIGTERM/SIGINT; drain with a grace
//! timeout), and the metrics endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::core::embed::EmbeddingPlanner;
use crate::core::substrate::LinkSource;
use crate::core::topology::TopologyFile;

use super::controller::{Controller, ControllerConfig};

/// Where the controller keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// One redb file in --state-dir: one controller.
    Redb,
    /// etcd (--etcd-endpoints): any number of replicas, one leader elected.
    Etcd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// vn-controller: the gRPC control plane of vnet.
#[derive(Debug, Parser)]
#[command(name = "vn-controller", version)]
pub struct Args {
    /// gRPC listen address (repeatable).
    #[arg(long = "listen", default_value = "127.0.0.1:7000")]
    pub listen: Vec<SocketAddr>,
    /// Directory of the durable store (controller.redb) and of the credentials.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The store: redb (one controller) or etcd (replicas with leader election).
    #[arg(long, value_enum, default_value_t = StoreKind::Redb)]
    pub store: StoreKind,
    /// etcd client URLs (comma-separated or repeated), with --store etcd.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of this deployment in etcd.
    #[arg(long, default_value = "/vnet/")]
    pub etcd_prefix: String,
    /// Leader lease, seconds: a dead leader is replaced after about this long.
    #[arg(long, default_value_t = 2)]
    pub etcd_lease_secs: i64,
    /// CA (PEM) of etcd's server certificates (https endpoints).
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for etcd, when it asks for one.
    #[arg(long, requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// The address (host:port) followers name as this replica's when it leads; default: the
    /// first --listen.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Substrate links (YAML); without it, a full mesh over the registered hosts.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Prometheus text endpoint (GET /metrics).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Embedding algorithm for specs that name none.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// UDP port of VXLAN hops.
    #[arg(long, default_value_t = 4789)]
    pub vxlan_port: u16,
    /// Bandwidth (Mbit/s) of each link of the default full mesh.
    #[arg(long, default_value_t = 1000)]
    pub default_link_bandwidth: u64,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A VN still provisioning after this many seconds fails and is rolled back.
    #[arg(long, default_value_t = 120)]
    pub provisioning_timeout_secs: u64,
    /// After a restart, VNs on hosts not re-attached within this many seconds degrade.
    #[arg(long, default_value_t = 30)]
    pub reattach_grace_secs: u64,
    /// A host whose agent stays away this long is lost: VNs with a node or path on it are
    /// re-embedded elsewhere (by their recovery policy; pinned nodes wait).
    #[arg(long, default_value_t = 10)]
    pub host_grace_secs: u64,
    /// A VN that could not be re-embedded after a fault is tried again this often (seconds)
    /// while the fault lasts: capacity may have come back elsewhere.
    #[arg(long, default_value_t = 10)]
    pub recovery_retry_secs: u64,
    /// A substrate link its agents' probes find down for this long (in ms) is down: VNs routed
    /// over it are rerouted. Coming back is debounced the same way.
    #[arg(long, default_value_t = 1000)]
    pub link_grace_ms: u64,
    /// Agents probe their underlay neighbours this often (ms) ...
    #[arg(long, default_value_t = 300)]
    pub probe_interval_ms: u32,
    /// ... and call a link down after this many unanswered probes in a row.
    #[arg(long, default_value_t = 3)]
    pub probe_misses: u32,
    /// Exec timeout when a request gives none, seconds.
    #[arg(long, default_value_t = 30)]
    pub exec_timeout_secs: u64,
    /// Output (stdout and stderr together) after which a command is ended, MiB.
    #[arg(long, default_value_t = 4096)]
    pub exec_max_output_mib: u64,
    /// How long to drain on SIGTERM/SIGINT before closing connections, seconds.
    #[arg(long, default_value_t = 5)]
    pub shutdown_grace_secs: u64,
    /// The controller's TLS certificate chain (PEM).
    #[arg(long, required_unless_present = "insecure")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, required_unless_present = "insecure")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs agents' host certificates (URI SAN spiffe://vnet/host/<id>).
    #[arg(long, required_unless_present = "insecure")]
    pub client_ca: Option<PathBuf>,
    /// SHA-256 hashes (hex, one a line) of the bootstrap admin tokens.
    #[arg(long)]
    pub admin_token_hash_file: Option<PathBuf>,
    /// Forget a FAILED VN this many seconds after it failed (0: keep until deleted).
    #[arg(long, default_value_t = 3600)]
    pub failed_ttl_secs: u64,
    /// Plain text without certificates: anyone on the network can read the traffic, and agents
    /// are believed about which host they are. For experiments only.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    pub insecure: bool,
}

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

impl Args {
    /// The controller configuration (reads the topology file; binds nothing).
    pub fn config(&self) -> anyhow::Result<ControllerConfig> {
        let mut cfg = ControllerConfig::new(&self.state_dir);
        if let Some(path) = &self.topology {
            let topo = TopologyFile::load(path)?;
            cfg.links = LinkSource::Topology(topo.links()?);
            cfg.topology_hosts = topo.hosts;
        } else {
            anyhow::ensure!(
                self.default_link_bandwidth > 0,
                "--default-link-bandwidth must be > 0"
            );
            cfg.links = LinkSource::FullMesh {
                bandwidth_mbps: self.default_link_bandwidth,
            };
        }
        if let Some(a) = &self.algorithm {
            anyhow::ensure!(
                embedding::by_name(a).is_some(),
                "--algorithm {a}: unknown (known: {})",
                embedding::algorithm_names().join(", ")
            );
        }
        cfg.algorithm = self.algorithm.clone();
        cfg.vxlan_port = self.vxlan_port;
        cfg.provisioning_timeout = Duration::from_secs(self.provisioning_timeout_secs);
        cfg.reattach_grace = Duration::from_secs(self.reattach_grace_secs);
        cfg.host_grace = Duration::from_secs(self.host_grace_secs);
        cfg.recovery_retry = Duration::from_secs(self.recovery_retry_secs.max(1));
        cfg.link_grace = Duration::from_millis(self.link_grace_ms);
        anyhow::ensure!(
            self.probe_interval_ms >= 50 && self.probe_misses >= 1,
            "--probe-interval-ms must be at least 50 and --probe-misses at least 1"
        );
        cfg.probe_interval_ms = self.probe_interval_ms;
        cfg.probe_misses = self.probe_misses;
        cfg.exec_timeout = Duration::from_secs(self.exec_timeout_secs);
        cfg.failed_ttl =
            (self.failed_ttl_secs > 0).then(|| Duration::from_secs(self.failed_ttl_secs));
        cfg.insecure = self.insecure;
        if let Some(f) = &self.admin_token_hash_file {
            cfg.admin_token_hashes = crate::runtime::credentials::read_hash_file(f)?;
        }
        cfg.exec_max_output = self.exec_max_output_mib.saturating_mul(1 << 20);
        cfg.advertise = match &self.advertise {
            Some(a) => a.clone(),
            None => self
                .listen
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        };
        Ok(cfg)
    }

    /// The etcd configuration (`None` with --store redb).
    pub fn etcd(&self) -> anyhow::Result<Option<crate::store::EtcdConfig>> {
        if self.store == StoreKind::Redb {
            anyhow::ensure!(
                self.etcd_endpoints.is_empty(),
                "--etcd-endpoints needs --store etcd"
            );
            return Ok(None);
        }
        anyhow::ensure!(
            !self.etcd_endpoints.is_empty(),
            "--store etcd needs --etcd-endpoints"
        );
        anyhow::ensure!(
            (1..=60).contains(&self.etcd_lease_secs),
            "--etcd-lease-secs {} is not within 1..=60",
            self.etcd_lease_secs
        );
        anyhow::ensure!(
            self.etcd_prefix.starts_with('/') && self.etcd_prefix.ends_with('/'),
            "--etcd-prefix {:?} must start and end with /",
            self.etcd_prefix
        );
        let mut tls = None;
        if let Some(ca) = &self.etcd_ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading --etcd-ca {}", ca.display()))?;
            let mut t = etcd_client::TlsOptions::new().ca_certificate(Certificate::from_pem(pem));
            if let (Some(c), Some(k)) = (&self.etcd_cert, &self.etcd_key) {
                let cert = std::fs::read(c)
                    .with_context(|| format!("reading --etcd-cert {}", c.display()))?;
                let key = std::fs::read(k)
                    .with_context(|| format!("reading --etcd-key {}", k.display()))?;
                t = t.identity(Identity::from_pem(cert, key));
            }
            tls = Some(t);
        }
        Ok(Some(crate::store::EtcdConfig {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            lease_ttl: self.etcd_lease_secs,
            tls,
        }))
    }

    /// The TLS configuration: the controller's identity, and the CA of host certificates.
    /// Client certificates are optional at the TLS layer (tenants use tokens); AgentControl
    /// requires one. `None` with `--insecure`.
    pub fn tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        if self.insecure {
            return Ok(None);
        }
        let cert = vnet_proto::read_pem_option(self.tls_cert.as_deref(), "tls-cert")?;
        let key = vnet_proto::read_pem_option(self.tls_key.as_deref(), "tls-key")?;
        let ca = vnet_proto::read_pem_option(self.client_ca.as_deref(), "client-ca")?;
        Ok(Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(cert, key))
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true),
        ))
    }
}

async fn metrics(
    axum::extract::State(ctl): axum::extract::State<Controller>,
) -> impl axum::response::IntoResponse {
    let body = ctl.with_index(|ix| ctl.metrics().render(ix));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Serves `/metrics` on `listener` until `shutdown` fires.
pub async fn serve_metrics(
    ctl: Controller,
    listener: TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(ctl);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

async fn signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let tls = args.tls()?;
    if tls.is_none() {
        tracing::warn!(
            "--insecure: plain-text gRPC, agents' host ids are not verified; never use this in production"
        );
    }
    let planner = Box::new(EmbeddingPlanner::new());
    let ctl = match args.etcd()? {
        None => Controller::open(cfg, planner)
            .with_context(|| format!("opening the state in {}", args.state_dir.display()))?,
        Some(e) => {
            let where_ = e.endpoints.join(",");
            // etcd may be starting too (a testbed, a boot): try for up to 30 s.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let store = loop {
                let cfg = e.clone();
                let r = tokio::task::spawn_blocking(move || crate::store::EtcdStore::connect(cfg))
                    .await?;
                match r {
                    Ok(s) => break s,
                    Err(err) if tokio::time::Instant::now() < deadline => {
                        tracing::warn!(error = %format!("{:#}", anyhow::Error::new(err)), "etcd not reachable yet");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(err) => {
                        return Err(err).with_context(|| format!("connecting to etcd at {where_}"));
                    }
                }
            };
            Controller::open_replicated(cfg, planner, std::sync::Arc::new(store))
                .with_context(|| format!("reading the state in etcd at {where_}"))?
        }
    };
    let (held, total) = ctl.with_index(|ix| {
        (
            ix.records().filter(|r| r.status.holds_resources()).count(),
            ix.records().count(),
        )
    });
    tracing::info!(vns = total, held, state_dir = %args.state_dir.display(), "state restored");
    ctl.start();

    let router = crate::grpc::router(&ctl, tls).await?;
    let mut servers = tokio::task::JoinSet::new();
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding gRPC address {addr}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(address = %bound, "gRPC listening");
        let router = router.clone();
        let mut stop = ctl.shutdown_signal();
        servers.spawn(async move {
            router
                .serve_with_incoming_shutdown(crate::grpc::incoming(listener), async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .with_context(|| format!("serving gRPC on {bound}"))
        });
    }
    if let Some(addr) = args.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics address {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics listening on /metrics");
        let ctl2 = ctl.clone();
        let stop = ctl.shutdown_signal();
        servers.spawn(async move {
            serve_metrics(ctl2, listener, stop)
                .await
                .context("serving metrics")
        });
    }

    tokio::select! {
        sig = signal() => tracing::info!(signal = sig?, "shutting down"),
        Some(res) = servers.join_next() => {
            res.context("server task")??;
            anyhow::bail!("a server stopped unexpectedly");
        }
    }
    ctl.begin_shutdown();
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        while let Some(res) = servers.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "server ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "drain timed out, closing connections"
        );
        servers.abort_all();
    }
    tracing::info!("stopped");
    Ok(())
}
