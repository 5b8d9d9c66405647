//! The standard online VNE workload generator (the family of the shared traces).
//!
//! Substrate: Waxman random graph (nodes uniform in the unit square, edge `u-v` with probability
//! `alpha * exp(-d(u,v) / (beta * L))`, `L` the largest distance; the networkx/Virne convention
//! with alpha 0.5, beta 0.2), resampled until connected; CPU and bandwidth uniform integers in
//! 50..=100. Requests: size uniform in 2..=10, each pair linked with probability 0.5, resampled
//! until connected; CPU uniform in 0..=20, bandwidth in 0..=50; arrivals every Poisson(1/rate)
//! time units (integer gaps, as Virne draws them); exponential lifetimes of mean `lifetime`.
//! Deterministic for a seed (ChaCha8).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Poisson};

use crate::request::{VirtualNode, VnRequest};
use crate::substrate::{Substrate, SubstrateLink, SubstrateNode};
use crate::trace::{TimedRequest, Trace};

/// Parameters of the generator; [`Default`] is the standard workload at rate 0.14.
#[derive(Clone, Debug, PartialEq)]
pub struct WaxmanConfig {
    /// Substrate nodes.
    pub nodes: usize,
    /// Requests.
    pub requests: usize,
    /// Arrival rate (requests per time unit).
    pub rate: f64,
    /// Mean lifetime.
    pub lifetime: f64,
    /// Seed.
    pub seed: u64,
    /// Waxman alpha (maximum link probability).
    pub alpha: f64,
    /// Waxman beta (distance scale).
    pub beta: f64,
    /// Substrate CPU range (inclusive).
    pub substrate_cpu: (u64, u64),
    /// Substrate bandwidth range (inclusive).
    pub substrate_bw: (u64, u64),
    /// Request size range (inclusive).
    pub request_nodes: (usize, usize),
    /// Probability of a link between two virtual nodes.
    pub link_probability: f64,
    /// Virtual node CPU range (inclusive).
    pub request_cpu: (u64, u64),
    /// Virtual link bandwidth range (inclusive).
    pub request_bw: (u64, u64),
}

impl Default for WaxmanConfig {
    fn default() -> Self {
        WaxmanConfig {
            nodes: 100,
            requests: 1000,
            rate: 0.14,
            lifetime: 500.0,
            seed: 0,
            alpha: 0.5,
            beta: 0.2,
            substrate_cpu: (50, 100),
            substrate_bw: (50, 100),
            request_nodes: (2, 10),
            link_probability: 0.5,
            request_cpu: (0, 20),
            request_bw: (0, 50),
        }
    }
}

/// Why the generator refused its parameters.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid generator parameter {param}: {reason}")]
pub struct GeneratorError {
    /// The parameter.
    pub param: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn connected(n: usize, edges: &[(usize, usize)]) -> bool {
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in edges {
        adj[a].push(b);
        adj[b].push(a);
    }
    let mut seen = vec![false; n];
    let mut stack = vec![0];
    seen[0] = true;
    let mut count = 1;
    while let Some(x) = stack.pop() {
        for &y in &adj[x] {
            if !seen[y] {
                seen[y] = true;
                count += 1;
                stack.push(y);
            }
        }
    }
    count == n
}

/// Generates a workload.
pub fn generate(cfg: &WaxmanConfig) -> Result<Trace, GeneratorError> {
    check_config(cfg)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let substrate = waxman_substrate(cfg, &mut rng);
    let requests = requests(cfg, &mut rng)?;
    Ok(Trace {
        substrate,
        requests,
    })
}

/// Refuses parameters the generator cannot draw from, naming the first one.
fn check_config(cfg: &WaxmanConfig) -> Result<(), GeneratorError> {
    let check = |ok: bool, param: &'static str, reason: &str| {
        if ok {
            Ok(())
        } else {
            Err(GeneratorError {
                param,
                reason: reason.to_owned(),
            })
        }
    };
    check(cfg.nodes >= 2, "nodes", "must be at least 2")?;
    check(
        cfg.rate.is_finite() && cfg.rate > 0.0,
        "rate",
        "must be positive",
    )?;
    check(
        cfg.lifetime.is_finite() && cfg.lifetime > 0.0,
        "lifetime",
        "must be positive",
    )?;
    check(
        cfg.alpha > 0.0 && cfg.alpha <= 1.0 && cfg.beta > 0.0,
        "alpha/beta",
        "need 0 < alpha <= 1 and beta > 0",
    )?;
    check(
        cfg.request_nodes.0 >= 1 && cfg.request_nodes.0 <= cfg.request_nodes.1,
        "request_nodes",
        "need 1 <= min <= max",
    )?;
    check(
        cfg.link_probability > 0.0 && cfg.link_probability <= 1.0,
        "link_probability",
        "need 0 < p <= 1",
    )?;
    for (param, (lo, hi)) in [
        ("substrate_cpu", cfg.substrate_cpu),
        ("substrate_bw", cfg.substrate_bw),
        ("request_cpu", cfg.request_cpu),
        ("request_bw", cfg.request_bw),
    ] {
        check(lo <= hi, param, "need min <= max")?;
    }
    Ok(())
}

/// The substrate: a connected Waxman graph with uniform CPU and bandwidth.
fn waxman_substrate(cfg: &WaxmanConfig, rng: &mut ChaCha8Rng) -> Substrate {
    let n = cfg.nodes;
    let edges = loop {
        let pos: Vec<(f64, f64)> = (0..n)
            .map(|_| (rng.random::<f64>(), rng.random::<f64>()))
            .collect();
        let dist = |a: usize, b: usize| {
            let (dx, dy) = (pos[a].0 - pos[b].0, pos[a].1 - pos[b].1);
            (dx * dx + dy * dy).sqrt()
        };
        let mut l = 0.0f64;
        for a in 0..n {
            for b in a + 1..n {
                l = l.max(dist(a, b));
            }
        }
        let mut edges = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                if rng.random::<f64>() < cfg.alpha * (-dist(a, b) / (cfg.beta * l)).exp() {
                    edges.push((a, b));
                }
            }
        }
        if connected(n, &edges) {
            break edges;
        }
    };
    let mut substrate = Substrate::new();
    for i in 0..n {
        let cpu = rng.random_range(cfg.substrate_cpu.0..=cfg.substrate_cpu.1);
        substrate
            .add_node(SubstrateNode::new(i.to_string(), cpu))
            .expect("fresh ids");
    }
    for (a, b) in edges {
        let bw = rng.random_range(cfg.substrate_bw.0..=cfg.substrate_bw.1);
        substrate
            .add_link(&a.to_string(), &b.to_string(), SubstrateLink::new(bw))
            .expect("fresh links");
    }
    substrate
}

/// The requests: Poisson arrivals, exponential lifetimes, connected random topologies.
fn requests(cfg: &WaxmanConfig, rng: &mut ChaCha8Rng) -> Result<Vec<TimedRequest>, GeneratorError> {
    let gaps = Poisson::new(1.0 / cfg.rate).map_err(|e| GeneratorError {
        param: "rate",
        reason: e.to_string(),
    })?;
    let life = Exp::new(1.0 / cfg.lifetime).map_err(|e| GeneratorError {
        param: "lifetime",
        reason: e.to_string(),
    })?;
    let mut t = 0.0f64;
    let mut requests = Vec::with_capacity(cfg.requests);
    for id in 0..cfg.requests {
        t += gaps.sample(rng).round();
        let lifetime = life.sample(rng);
        let k = rng.random_range(cfg.request_nodes.0..=cfg.request_nodes.1);
        let links = loop {
            let mut links = Vec::new();
            for a in 0..k {
                for b in a + 1..k {
                    if rng.random_bool(cfg.link_probability) {
                        links.push((a, b));
                    }
                }
            }
            if connected(k, &links) {
                break links;
            }
        };
        let mut r = VnRequest::new(id.to_string());
        for i in 0..k {
            let cpu = rng.random_range(cfg.request_cpu.0..=cfg.request_cpu.1);
            r.add_node(VirtualNode::new(i.to_string(), cpu))
                .expect("fresh ids");
        }
        for (a, b) in links {
            let bw = rng.random_range(cfg.request_bw.0..=cfg.request_bw.1);
            r.add_link(&a.to_string(), &b.to_string(), bw)
                .expect("fresh links");
        }
        requests.push(TimedRequest {
            arrival: t,
            lifetime,
            request: r,
        });
    }
    Ok(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_workload_shape() {
        let cfg = WaxmanConfig {
            requests: 300,
            ..Default::default()
        };
        let t = generate(&cfg).unwrap();
        assert_eq!(t.substrate.node_count(), 100);
        let m = t.substrate.link_count();
        assert!((350..750).contains(&m), "{m} links");
        assert!(
            t.requests
                .iter()
                .all(|r| r.request.ensure_connected().is_ok())
        );
        let sizes: Vec<usize> = t.requests.iter().map(|r| r.request.nodes().len()).collect();
        assert!(sizes.iter().all(|s| (2..=10).contains(s)));
        let rate = t.requests.len() as f64 / t.requests.last().unwrap().arrival;
        assert!((0.11..0.17).contains(&rate), "rate {rate}");
        // deterministic
        let again = generate(&cfg).unwrap();
        assert_eq!(again.requests[123].arrival, t.requests[123].arrival);
        assert_eq!(
            again.substrate.total_bandwidth(),
            t.substrate.total_bandwidth()
        );
    }

    #[test]
    fn rejects_nonsense() {
        let cfg = WaxmanConfig {
            rate: 0.0,
            ..Default::default()
        };
        assert_eq!(generate(&cfg).unwrap_err().param, "rate");
    }
}
