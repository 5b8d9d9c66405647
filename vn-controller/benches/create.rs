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
use vn_controller::standin::{Behaviour, StandIn, StandInConfig};
use vnet_proto::PROVIDER_METADATA_KEY;
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

/// `hosts` stand-in agents, attached (each has its first desired state).
async fn attach(endpoint: &str, hosts: usize) -> Vec<StandIn> {
    let mut agents = Vec::new();
    for i in 1..=hosts {
        let cfg = StandInConfig::new(
            &format!("h{i}"),
            &format!("10.99.{}.{}", i / 250, i % 250 + 1),
            10_000,
            1_000_000,
        );
        agents.push(
            StandIn::connect(endpoint, cfg, Behaviour::Ready)
                .await
                .expect("stand-in"),
        );
    }
    for a in &agents {
        a.wait_desired(Duration::from_secs(30), |_| true)
            .await
            .expect("attached");
    }
    agents
}

/// Creates every spec over `concurrency` clients, each taking the next spec not yet created;
/// returns the latencies (sorted) and how many were accepted.
async fn create_all(
    channel: tonic::transport::Channel,
    specs: Arc<Vec<pb::VnSpec>>,
    concurrency: usize,
) -> (Vec<Duration>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let mut client = VirtualNetworksClient::new(channel.clone());
        let specs = specs.clone();
        let next = next.clone();
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
                r.metadata_mut().insert(
                    PROVIDER_METADATA_KEY,
                    format!("p{}", i % 10).parse().expect("ascii"),
                );
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
    let mut latencies = Vec::new();
    let mut accepted = 0;
    for w in workers {
        for (d, ok) in w.await.expect("worker") {
            latencies.push(d);
            accepted += usize::from(ok);
        }
    }
    latencies.sort();
    (latencies, accepted)
}

async fn run(hosts: usize, requests: usize, concurrency: usize, algorithm: &str) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = ControllerConfig::new(dir.path());
    cfg.algorithm = Some(algorithm.to_string());
    cfg.links = LinkSource::FullMesh {
        bandwidth_mbps: 10_000,
    };
    let ctl = Controller::open(cfg, Box::new(EmbeddingPlanner::new())).expect("open");
    ctl.start();
    let router = vn_controller::grpc::router(&ctl).await.expect("router");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        vn_controller::grpc::incoming(listener),
        async {
            let _ = stop_rx.await;
        },
    ));
    let agents = attach(&endpoint, hosts).await;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let specs: Arc<Vec<pb::VnSpec>> = Arc::new(
        (0..requests)
            .map(|i| request(&mut rng, format!("b{i}")))
            .collect(),
    );
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let start = Instant::now();
    let (latencies, accepted) = create_all(channel, specs, concurrency).await;
    let elapsed = start.elapsed();
    let text = ctl.with_index(|ix| ctl.metrics().render(ix));
    let embed_count = metric(&text, "vnet_controller_embedding_duration_seconds_count");
    let embed_sum = metric(&text, "vnet_controller_embedding_duration_seconds_sum");
    let mean = |sum: f64, count: f64| {
        if count > 0.0 {
            Duration::from_secs_f64(sum / count)
        } else {
            Duration::ZERO
        }
    };
    let embed_mean = mean(embed_sum, embed_count);
    let server_mean = mean(
        metric(
            &text,
            "vnet_controller_create_duration_seconds_sum{result=\"accepted\"}",
        ),
        metric(
            &text,
            "vnet_controller_create_duration_seconds_count{result=\"accepted\"}",
        ),
    );
    drop(agents);
    ctl.begin_shutdown();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Row {
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
        "| clients | accepted | rejected | elapsed s | req/s | p50 ms | p90 ms | p99 ms | max ms | mean server ms | mean embed ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for c in conc {
        let r = rt.block_on(run(hosts, requests, c, &algorithm));
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} |",
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
