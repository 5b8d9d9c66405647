//! The workload of an experiment as data: when each request arrives, for how long it lives and
//! what it asks for. Pure and deterministic for a plan's seed, so a run can be repeated and the
//! schedule unit-tested without a testbed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use vnet_proto::v1 as pb;

use super::plan::{Arrivals, GeneratorFile, LifetimeFile, Plan, ProviderPlan, ShapeFile};

/// A VN's shape: nodes (name, cpu, memory MiB) and links (endpoints, Mbit/s).
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub spec: pb::VnSpec,
}

impl Shape {
    pub fn nodes(&self) -> usize {
        self.spec.nodes.len()
    }

    pub fn links(&self) -> usize {
        self.spec.links.len()
    }
}

/// One request of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// Position in the whole schedule (arrival order).
    pub seq: usize,
    /// Index of the provider in the plan.
    pub provider: usize,
    /// Seconds after the start.
    pub at_s: f64,
    pub lifetime_s: f64,
    /// The VN to create (named `<experiment>-<provider>-<n>`).
    pub shape: Shape,
}

/// Draws the whole schedule of `plan`, merged over providers in arrival order.
pub fn schedule(plan: &Plan) -> anyhow::Result<Vec<Arrival>> {
    let mut traces: BTreeMap<&Path, embedding::Trace> = BTreeMap::new();
    for p in &plan.providers {
        if let Arrivals::Trace { file, .. } = &p.arrivals
            && !traces.contains_key(file.as_path())
        {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading trace {}", file.display()))?;
            let t = embedding::parse_trace(&text)
                .with_context(|| format!("invalid trace {}", file.display()))?;
            traces.insert(file.as_path(), t);
        }
    }
    let mut all = Vec::new();
    for (pi, p) in plan.providers.iter().enumerate() {
        let seed = plan.seed ^ (pi as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = StdRng::seed_from_u64(seed);
        let trace = match &p.arrivals {
            Arrivals::Trace { file, .. } => traces.get(file.as_path()),
            Arrivals::Poisson { .. } => None,
        };
        let times = arrival_times(p, trace, &mut rng)?;
        let shapes = shapes(plan, p, trace, seed)?;
        for (n, ((at_s, trace_life), mut shape)) in times.into_iter().zip(shapes).enumerate() {
            shape.spec.name = format!("{}-{}-{n}", plan.name, p.name);
            shape.spec.provider = p.name.clone();
            shape.spec.algorithm = p.algorithm.clone();
            let lifetime_s = match p.lifetime {
                LifetimeFile::Fixed(s) => s,
                LifetimeFile::Exponential(mean) => exponential(&mut rng, mean),
                LifetimeFile::Trace => trace_life,
            };
            all.push(Arrival {
                seq: 0,
                provider: pi,
                at_s,
                lifetime_s,
                shape,
            });
        }
    }
    all.sort_by(|a, b| a.at_s.total_cmp(&b.at_s).then(a.provider.cmp(&b.provider)));
    for (i, a) in all.iter_mut().enumerate() {
        a.seq = i;
    }
    Ok(all)
}

/// An exponential draw of the given mean (inverse transform).
fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    let u: f64 = rng.random();
    -mean * (1.0 - u).ln()
}

/// Arrival times (seconds) and, for traces, the scaled lifetimes.
fn arrival_times(
    p: &ProviderPlan,
    trace: Option<&embedding::Trace>,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<(f64, f64)>> {
    match (&p.arrivals, trace) {
        (Arrivals::Poisson { rate }, _) => {
            let mut t = 0.0;
            Ok((0..p.requests)
                .map(|_| {
                    t += exponential(rng, 1.0 / rate);
                    (t, 0.0)
                })
                .collect())
        }
        (Arrivals::Trace { file, time_scale }, Some(tr)) => {
            if tr.requests.len() < p.requests {
                anyhow::bail!(
                    "provider {}: trace {} has {} requests, the experiment asks for {}",
                    p.name,
                    file.display(),
                    tr.requests.len(),
                    p.requests
                );
            }
            let first = tr.requests[0].arrival;
            Ok(tr.requests[..p.requests]
                .iter()
                .map(|r| ((r.arrival - first) * time_scale, r.lifetime * time_scale))
                .collect())
        }
        (Arrivals::Trace { file, .. }, None) => {
            anyhow::bail!("trace {} was not loaded", file.display())
        }
    }
}

fn shapes(
    plan: &Plan,
    p: &ProviderPlan,
    trace: Option<&embedding::Trace>,
    seed: u64,
) -> anyhow::Result<Vec<Shape>> {
    let made = match &p.shape {
        ShapeFile::Template(path) => {
            let file = crate::spec::load(path);
            file.map_err(anyhow::Error::from).map(|file| {
                let mut spec = file.to_proto();
                address_links(&mut spec);
                vec![Shape { spec }; p.requests]
            })
        }
        ShapeFile::Generator(g) => generated(g, p.requests, seed),
        ShapeFile::Trace => {
            let tr = trace.with_context(|| {
                format!("provider {}: shape `trace` needs trace arrivals", p.name)
            })?;
            Ok(tr.requests[..p.requests]
                .iter()
                .map(|r| from_request(&r.request, 16))
                .collect())
        }
    };
    made.with_context(|| format!("experiment {}: shapes of provider {}", plan.name, p.name))
}

/// Shapes from the simulator's generator (the standard workload's request model).
fn generated(g: &GeneratorFile, n: usize, seed: u64) -> anyhow::Result<Vec<Shape>> {
    let cfg = embedding::generator::WaxmanConfig {
        nodes: 10,
        requests: n,
        seed,
        request_nodes: g.nodes,
        link_probability: g.link_probability,
        request_cpu: g.cpu,
        request_bw: g.bandwidth,
        ..Default::default()
    };
    let trace = embedding::generate(&cfg).context("the simulator's generator")?;
    Ok(trace
        .requests
        .iter()
        .map(|r| from_request(&r.request, g.memory))
        .collect())
}

/// A simulator request as a VN spec: netns nodes, links with addresses, bandwidth at least 1.
pub fn from_request(r: &embedding::VnRequest, memory: u64) -> Shape {
    let nodes = r
        .nodes()
        .iter()
        .map(|n| pb::NodeSpec {
            name: format!("n{}", n.id),
            kind: pb::NodeKind::Netns as i32,
            cpu: i64::try_from(n.cpu).unwrap_or(i64::MAX),
            memory_mb: i64::try_from(memory).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let links = r
        .links()
        .iter()
        .map(|l| pb::LinkSpec {
            endpoints: vec![nodes[l.u].name.clone(), nodes[l.v].name.clone()],
            bandwidth_mbps: i64::try_from(l.bandwidth.max(1)).unwrap_or(i64::MAX),
            ..Default::default()
        })
        .collect();
    let mut spec = pb::VnSpec {
        nodes,
        links,
        ..Default::default()
    };
    address_links(&mut spec);
    Shape { spec }
}

/// Gives every link without addresses a /24 of its own (10.L1.L2.1 and .2), so that every link
/// can be probed and no node has two interfaces in one subnet.
pub fn address_links(spec: &mut pb::VnSpec) {
    for (i, l) in spec.links.iter_mut().enumerate() {
        if l.addresses.is_empty() {
            let (hi, lo) = (10 + i / 250, i % 250);
            l.addresses = vec![format!("10.{hi}.{lo}.1/24"), format!("10.{hi}.{lo}.2/24")];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::plan;

    fn plan(text: &str) -> Plan {
        plan::parse(Path::new("/nonexistent/e.yaml"), text).unwrap()
    }

    const TWO: &str = "
name: t
seed: 5
providers:
  - name: red
    requests: 200
    arrivals: {poisson: {rate: 2}}
    lifetime: {exponential: 10}
    shape: {generator: {nodes: [2, 4], cpu: [1, 9], bandwidth: [1, 5]}}
  - name: blue
    requests: 100
    arrivals: {poisson: {rate: 1}}
    lifetime: {fixed: 3}
    shape: {generator: {nodes: [3, 3], linkProbability: 1, cpu: [2, 2], bandwidth: [7, 7]}}
";

    #[test]
    fn poisson_schedule_is_deterministic_merged_and_near_its_rate() {
        let p = plan(TWO);
        let a = schedule(&p).unwrap();
        assert_eq!(a, schedule(&p).unwrap());
        assert_eq!(a.len(), 300);
        assert!(a.windows(2).all(|w| w[0].at_s <= w[1].at_s));
        assert!(a.iter().enumerate().all(|(i, x)| x.seq == i));
        let red: Vec<&Arrival> = a.iter().filter(|x| x.provider == 0).collect();
        // 200 arrivals at 2/s: the last near 100 s (sd of a Gamma(200) sum is about 7 s).
        let last = red.last().unwrap().at_s;
        assert!((70.0..130.0).contains(&last), "{last}");
        let mean_life = red.iter().map(|x| x.lifetime_s).sum::<f64>() / 200.0;
        assert!((7.0..13.0).contains(&mean_life), "{mean_life}");
        assert_eq!(red[3].shape.spec.name, "t-red-3");
        assert_eq!(red[3].shape.spec.provider, "red");
        assert_eq!(red[3].shape.spec.algorithm, embedding::DEFAULT_ALGORITHM);
        for x in &red {
            let n = x.shape.nodes();
            assert!((2..=4).contains(&n));
            assert!(x.shape.links() >= n - 1, "connected");
            assert!(x.shape.spec.nodes.iter().all(|v| (1..=9).contains(&v.cpu)));
            assert!(x.shape.spec.links.iter().all(|l| l.addresses.len() == 2));
        }
        let blue: Vec<&Arrival> = a.iter().filter(|x| x.provider == 1).collect();
        assert!(blue.iter().all(|x| x.lifetime_s == 3.0));
        assert!(
            blue.iter()
                .all(|x| x.shape.links() == 3 && x.shape.spec.links[0].bandwidth_mbps == 7)
        );
        let other = plan(&TWO.replace("seed: 5", "seed: 6"));
        assert_ne!(schedule(&other).unwrap()[0].at_s, a[0].at_s);
    }

    #[test]
    fn trace_arrivals_are_time_scaled() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../embedding/tests/data");
        let text = format!(
            "name: t\nproviders:\n  - name: red\n    requests: 10\n    arrivals: {{trace: {{file: \
             {data}/wx100_s0_r014_first150.json, timeScale: 0.5}}}}\n    lifetime: trace\n    \
             shape: trace\n"
        );
        let a = schedule(&plan(&text)).unwrap();
        let raw = embedding::parse_trace(
            &std::fs::read_to_string(format!("{data}/wx100_s0_r014_first150.json")).unwrap(),
        )
        .unwrap();
        let t0 = raw.requests[0].arrival;
        for (x, r) in a.iter().zip(&raw.requests) {
            assert!((x.at_s - (r.arrival - t0) * 0.5).abs() < 1e-9);
            assert!((x.lifetime_s - r.lifetime * 0.5).abs() < 1e-9);
            assert_eq!(x.shape.nodes(), r.request.nodes().len());
        }
        let m = format!(
            "{:#}",
            schedule(&plan(&text.replace("requests: 10", "requests: 151"))).unwrap_err()
        );
        assert!(m.contains("has 150 requests") && m.contains("151"), "{m}");
    }

    #[test]
    fn template_shapes_are_renamed_copies() {
        let red = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/red.yaml");
        let text = format!(
            "name: t\nalgorithm: grc\nproviders:\n  - name: green\n    requests: 3\n    \
             arrivals: {{poisson: {{rate: 1}}}}\n    lifetime: {{fixed: 2}}\n    shape: \
             {{template: {red}}}\n"
        );
        let a = schedule(&plan(&text)).unwrap();
        let spec = crate::spec::load(Path::new(red)).unwrap().to_proto();
        assert_eq!(a.len(), 3);
        for (i, x) in a.iter().enumerate() {
            assert_eq!(x.shape.spec.name, format!("t-green-{i}"));
            assert_eq!(x.shape.spec.provider, "green");
            assert_eq!(x.shape.spec.algorithm, "grc");
            assert_eq!(x.shape.spec.nodes, spec.nodes);
            assert_eq!(x.shape.spec.links, spec.links, "its own addresses kept");
        }
        let bad = text.replace(red, "/nonexistent/x.yaml");
        let m = format!("{:#}", schedule(&plan(&bad)).unwrap_err());
        assert!(
            m.contains("/nonexistent/x.yaml") && m.contains("green"),
            "{m}"
        );
    }

    #[test]
    fn addresses_never_share_a_subnet() {
        let mut spec = pb::VnSpec {
            links: vec![pb::LinkSpec::default(); 300],
            ..Default::default()
        };
        address_links(&mut spec);
        let nets: std::collections::BTreeSet<String> = spec
            .links
            .iter()
            .map(|l| l.addresses[0].trim_end_matches(".1/24").to_owned())
            .collect();
        assert_eq!(nets.len(), 300);
    }
}
