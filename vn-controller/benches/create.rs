//! Benchmark: Create-to-Accepted throughput and latency of the controller.
//!
//! An in-process controller (real gRPC over loopback, real redb store in a temporary directory)
//! with `BENCH_HOSTS` stand-in agents (default 100, full mesh, each reporting READY) receives
//! `BENCH_REQUESTS` creates (default 1000) of standard-size requests from `c` concurrent clients,
//! for each `c` in `BENCH_CONCURRENCY` (default `1,8,32`), each on a fresh controller, embedded
//! by `BENCH_ALGORITHM` (default: the `embedding` crate's default).
//!
//! Requests follow the usual VNE trace distribution (Yu et al. 2008, Chowdhury et al. 2009):
//! 2..=10 nodes (uniform), each node pair linked with probability 0.5 (plus a chain so the
//! request is connected), cpu uniform in 1..=20 (of 100 per core), bandwidth uniform in 1..=50
//! Mbit/s, memory 64 MiB. Latency is measured at the client, from sending Create to receiving the
//! accepted VN (or the rejection). Run: `deploy/bench/controller-create.sh`.
//!
//! Every concurrency runs twice, on fresh controllers: tenants over plain text with the
//! bootstrap admin token acting for each provider, and over TLS (rcgen ECDSA P-256, rustls with
//! ring) with a token issued to each provider; the difference is the cost of the trust layer on
//! the create path. The stand-in agents attach on a second, plain listener in both.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::net::TcpListener;
use tonic::Request;
use vn_controller::core::embed::EmbeddingPlanner;
use vn_controller::core::substrate::LinkSource;
use vn_controller::runtime::controller::{Controller, ControllerConfig};
use vn_controller::runtime::credentials::Role;
use vn_controller::standin::{Behaviour, StandIn, StandInConfig};
use vnet_proto::v1 as pb;
use vnet_proto::v1::virtual_networks_client::VirtualNetworksClient;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One request of the trace distribution.
fn request(rng: &mut ChaCha8Rng, name: String) -> pb::VnSpec {
    let n = rng.random_range(2..=10usize);
    let nodes = (0..n)
        .map(|i| pb::NodeSpec {
            name: format!("n{i}"),
            kind: pb::NodeKind::Netns as i32,
            cpu: rng.random_range(1..=20),
            memory_mb: 64,
            ..Default::default()
        })
        .collect();
    let mut links = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            if j == i + 1 || rng.random_bool(0.5) {
                links.push(pb::LinkSpec {
                    endpoints: vec![format!("n{i}"), format!("n{j}")],
                    bandwidth_mbps: rng.random_range(1..=50),
                    ..Default::default()
                });
            }
        }
    }
    pb::VnSpec {
        name,
        nodes,
        links,
        ..Default::default()
    }
}

struct Row {
    mode: Mode,
    concurrency: usize,
    accepted: usize,
    rejected: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    embed_mean: Duration,
    server_mean: Duration,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// How tenants reach the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Plain text; every create carries the bootstrap admin token acting for its provider.
    Plain,
    /// TLS (ECDSA P-256 certificates from rcgen) and a token issued to each provider.
    Secure,
}

/// A running in-process controller with its stand-in agents.
struct Bench {
    ctl: Controller,
    /// Where tenants connect (TLS in `Mode::Secure`).
    channel: tonic::transport::Channel,
    /// The `authorization` (and `x-vnet-as`) metadata of each provider p0..p9.
    creds: Arc<Vec<Vec<(&'static str, String)>>>,
    _agents: Vec<StandIn>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

const ADMIN_TOKEN: &str = "bench-admin-token";

/// Serves `router` on a fresh loopback port until the returned sender fires.
async fn serve(
    router: tonic::transport::server::Router,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(router.serve_with_incoming_shutdown(
        vn_controller::grpc::incoming(listener),
        async {
            let _ = rx.await;
        },
    ));
    (addr.to_string(), tx)
}

/// Server and client TLS configurations from a fresh CA (server name 127.0.0.1).
fn tls() -> (
    tonic::transport::ServerTlsConfig,
    tonic::transport::ClientTlsConfig,
) {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let server = ServerTlsConfig::new()
        .identity(Identity::from_pem(leaf.pem(), key.serialize_pem()))
        .client_ca_root(Certificate::from_pem(ca_cert.pem()))
        .client_auth_optional(true);
    let client = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_cert.pem()));
    (server, client)
}

impl Bench {
    async fn start(hosts: usize, algorithm: &str, mode: Mode) -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ControllerConfig::new(dir.path());
        cfg.algorithm = Some(algorithm.to_string());
        cfg.links = LinkSource::FullMesh {
            bandwidth_mbps: 10_000,
        };
        // The stand-ins have no certificates: they attach on a second, plain listener, which
        // is not on the measured path (tenants' creates).
        cfg.insecure = true;
        cfg.admin_token_hashes = vec![vn_controller::runtime::credentials::token_hash(ADMIN_TOKEN)];
        let ctl = Controller::open(cfg, Box::new(EmbeddingPlanner::new())).expect("open");
        ctl.start();
        let (agent_addr, agent_stop) = serve(
            vn_controller::grpc::router(&ctl, None)
                .await
                .expect("router"),
        )
        .await;
        let mut stops = vec![agent_stop];
        let agent_ep = format!("http://{agent_addr}");
        let mut agents = Vec::new();
        for i in 1..=hosts {
            let cfg = StandInConfig::new(
                &format!("h{i}"),
                &format!("10.99.{}.{}", i / 250, i % 250 + 1),
                10_000,
                1_000_000,
            );
            agents.push(
                StandIn::connect(&agent_ep, cfg, Behaviour::Ready)
                    .await
                    .expect("stand-in"),
            );
        }
        for a in &agents {
            a.wait_desired(Duration::from_secs(30), |_| true)
                .await
                .expect("attached");
        }
        let (channel, creds) = match mode {
            Mode::Plain => {
                let creds = (0..10)
                    .map(|p| {
                        vec![
                            ("authorization", format!("Bearer {ADMIN_TOKEN}")),
                            ("x-vnet-as", format!("p{p}")),
                        ]
                    })
                    .collect();
                let ep = tonic::transport::Endpoint::from_shared(agent_ep).expect("endpoint");
                (ep.connect().await.expect("connect"), creds)
            }
            Mode::Secure => {
                let (server_tls, client_tls) = tls();
                let router = vn_controller::grpc::router(&ctl, Some(server_tls))
                    .await
                    .expect("router");
                let (addr, stop) = serve(router).await;
                stops.push(stop);
                let creds = (0..10)
                    .map(|p| {
                        let (token, _) = ctl
                            .credentials()
                            .issue(&format!("p{p}"), Role::Provider, 0, None)
                            .expect("issue");
                        vec![("authorization", format!("Bearer {token}"))]
                    })
                    .collect();
                let ep = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                    .expect("endpoint")
                    .tls_config(client_tls)
                    .expect("tls");
                (ep.connect().await.expect("connect"), creds)
            }
        };
        Bench {
            ctl,
            channel,
            creds: Arc::new(creds),
            _agents: agents,
            stops,
            _dir: dir,
        }
    }

    fn stop(self) {
        self.ctl.begin_shutdown();
        for s in self.stops {
            let _ = s.send(());
        }
    }
}

/// `concurrency` clients send every spec; returns (latency, accepted) of each.
async fn drive(
    b: &Bench,
    specs: Arc<Vec<pb::VnSpec>>,
    concurrency: usize,
) -> Vec<(Duration, bool)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let mut client = VirtualNetworksClient::new(b.channel.clone());
        let (specs, next, creds) = (specs.clone(), next.clone(), b.creds.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= specs.len() {
                    return out;
                }
                let mut r = Request::new(pb::CreateVnRequest {
                    spec: Some(specs[i].clone()),
                });
                for (k, v) in &creds[i % 10] {
                    r.metadata_mut().insert(*k, v.parse().expect("ascii"));
                }
                let t = Instant::now();
                let res = client.create(r).await;
                out.push((t.elapsed(), res.is_ok()));
                if let Err(s) = res {
                    assert_eq!(
                        s.code(),
                        tonic::Code::ResourceExhausted,
                        "create {i}: {s:?}"
                    );
                    if std::env::var("BENCH_VERBOSE").is_ok() {
                        eprintln!("rejected {i}: {}", s.message());
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    all
}

async fn run(
    hosts: usize,
    requests: usize,
    concurrency: usize,
    algorithm: &str,
    mode: Mode,
) -> Row {
    let b = Bench::start(hosts, algorithm, mode).await;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let specs: Arc<Vec<pb::VnSpec>> = Arc::new(
        (0..requests)
            .map(|i| request(&mut rng, format!("b{i}")))
            .collect(),
    );
    let start = Instant::now();
    let results = drive(&b, specs, concurrency).await;
    let elapsed = start.elapsed();
    let accepted = results.iter().filter(|(_, ok)| *ok).count();
    let mut latencies: Vec<Duration> = results.into_iter().map(|(d, _)| d).collect();
    latencies.sort();
    let text = b.ctl.with_index(|ix| b.ctl.metrics().render(ix));
    let mean = |sum: &str, count: &str| {
        let (s, c) = (metric(&text, sum), metric(&text, count));
        if c > 0.0 {
            Duration::from_secs_f64(s / c)
        } else {
            Duration::ZERO
        }
    };
    let embed_mean = mean(
        "vnet_controller_embedding_duration_seconds_sum",
        "vnet_controller_embedding_duration_seconds_count",
    );
    let server_mean = mean(
        "vnet_controller_create_duration_seconds_sum{result=\"accepted\"}",
        "vnet_controller_create_duration_seconds_count{result=\"accepted\"}",
    );
    b.stop();
    Row {
        mode,
        concurrency,
        accepted,
        rejected: requests - accepted,
        elapsed,
        latencies,
        embed_mean,
        server_mean,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let hosts: usize = env_or("BENCH_HOSTS", "100").parse().expect("BENCH_HOSTS");
    let requests: usize = env_or("BENCH_REQUESTS", "1000")
        .parse()
        .expect("BENCH_REQUESTS");
    let conc: Vec<usize> = env_or("BENCH_CONCURRENCY", "1,8,32")
        .split(',')
        .map(|c| c.trim().parse().expect("BENCH_CONCURRENCY"))
        .collect();
    let algorithm = env_or("BENCH_ALGORITHM", embedding::DEFAULT_ALGORITHM);
    assert!(
        embedding::by_name(&algorithm).is_some(),
        "BENCH_ALGORITHM {algorithm}: unknown (known: {})",
        embedding::algorithm_names().join(", ")
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "controller Create->Accepted: {requests} requests (2..10 nodes), {hosts} stand-in hosts, full mesh ({} links), algorithm {algorithm}",
        hosts * (hosts - 1) / 2
    );
    println!(
        "| transport | clients | accepted | rejected | elapsed s | req/s | p50 ms | p90 ms | p99 ms | max ms | mean server ms | mean embed ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let runs = conc
        .iter()
        .flat_map(|c| [(Mode::Plain, *c), (Mode::Secure, *c)]);
    for (mode, c) in runs {
        let r = rt.block_on(run(hosts, requests, c, &algorithm, mode));
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} |",
            match r.mode {
                Mode::Plain => "plain + admin token",
                Mode::Secure => "TLS + provider tokens",
            },
            r.concurrency,
            r.accepted,
            r.rejected,
            r.elapsed.as_secs_f64(),
            r.latencies.len() as f64 / r.elapsed.as_secs_f64(),
            ms(pct(&r.latencies, 0.50)),
            ms(pct(&r.latencies, 0.90)),
            ms(pct(&r.latencies, 0.99)),
            ms(*r.latencies.last().expect("requests")),
            ms(r.server_mean),
            ms(r.embed_mean),
        );
    }
}
