//! The experiment file (`vnctl experiment run -f EXPERIMENT.yaml`): a serde type with
//! `deny_unknown_fields`, checked once into a [`Plan`] whose every value is usable.
//!
//! ```yaml
//! name: demo                 # VN names are demo-<provider>-<n>
//! seed: 7                    # arrivals, lifetimes and generated shapes are deterministic for it
//! algorithm: lace            # default embedding algorithm of every provider
//! sampleInterval: 2          # seconds between substrate samples (default 2)
//! probes:
//!   ping: true               # every link both ways; first ping and RTT (default true)
//!   iperf: {every: 1, seconds: 1}   # iperf3 on one link (rotating) of every n-th VN (default: none)
//! providers:
//!   - name: red
//!     credential: red.conf   # a vnctl config file of red (relative to this file);
//!                            # default: the caller's credential acting as red (an admin's)
//!     algorithm: grc
//!     requests: 15
//!     arrivals: {poisson: {rate: 0.5}}              # per second
//!     # arrivals: {trace: {file: t.json, timeScale: 0.05}}   # the simulator's format
//!     lifetime: {exponential: 20}                   # mean seconds; or {fixed: 20}; or trace
//!     shape: {generator: {nodes: [2, 4], linkProbability: 0.5, cpu: [5, 20], bandwidth: [1, 20]}}
//!     # shape: {template: vn.yaml}                  # a VN spec; or trace (the trace's requests)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest number of requests per provider (a typo such as 100000 would flood the testbed).
pub const MAX_REQUESTS: usize = 10_000;
/// Largest VN a generated shape may have.
pub const MAX_GENERATED_NODES: usize = 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExperimentFile {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub sample_interval: Option<f64>,
    #[serde(default)]
    pub probes: ProbesFile,
    pub providers: Vec<ProviderFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbesFile {
    #[serde(default = "yes")]
    pub ping: bool,
    #[serde(default)]
    pub iperf: Option<IperfFile>,
}

fn yes() -> bool {
    true
}

impl Default for ProbesFile {
    fn default() -> Self {
        ProbesFile {
            ping: true,
            iperf: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IperfFile {
    /// Measure every n-th accepted VN (by request number).
    pub every: usize,
    #[serde(default = "one")]
    pub seconds: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderFile {
    pub name: String,
    #[serde(default)]
    pub credential: Option<PathBuf>,
    #[serde(default)]
    pub algorithm: Option<String>,
    pub requests: usize,
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    pub arrivals: ArrivalsFile,
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    pub lifetime: LifetimeFile,
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    pub shape: ShapeFile,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ArrivalsFile {
    Poisson {
        /// Requests per second.
        rate: f64,
    },
    Trace {
        file: PathBuf,
        /// Seconds per trace time unit.
        #[serde(rename = "timeScale")]
        time_scale: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum LifetimeFile {
    /// Exponential with this mean, seconds.
    Exponential(f64),
    /// Always this many seconds.
    Fixed(f64),
    /// The trace's lifetimes, time-scaled like its arrivals.
    Trace,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ShapeFile {
    Template(PathBuf),
    Generator(GeneratorFile),
    /// The trace's requests (their CPU and bandwidth demands).
    Trace,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorFile {
    pub nodes: (usize, usize),
    #[serde(default = "half")]
    pub link_probability: f64,
    pub cpu: (u64, u64),
    pub bandwidth: (u64, u64),
    /// MiB per node.
    #[serde(default = "sixteen")]
    pub memory: u64,
}

fn half() -> f64 {
    0.5
}

fn sixteen() -> u64 {
    16
}

/// Where a provider's requests come from, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrivals {
    Poisson { rate: f64 },
    Trace { file: PathBuf, time_scale: f64 },
}

/// A provider of the experiment, checked; paths are resolved against the experiment file's
/// directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderPlan {
    pub name: String,
    pub credential: Option<PathBuf>,
    pub algorithm: String,
    pub requests: usize,
    pub arrivals: Arrivals,
    pub lifetime: LifetimeFile,
    pub shape: ShapeFile,
}

/// A whole experiment, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub seed: u64,
    pub sample_interval_s: f64,
    pub ping: bool,
    pub iperf: Option<IperfFile>,
    pub providers: Vec<ProviderPlan>,
}

/// Why an experiment file is unusable; every message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read experiment {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// Reads and checks an experiment file.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and checks the text of an experiment file at `path` (relative paths inside it are
/// resolved against its directory).
pub fn parse(path: &Path, text: &str) -> Result<Plan, PlanError> {
    let file: ExperimentFile = serde_yaml_ng::from_str(text).map_err(|e| PlanError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    check(path, base, file)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check(path: &Path, base: &Path, f: ExperimentFile) -> Result<Plan, PlanError> {
    let bad = |field: &str, message: String| PlanError::Invalid {
        path: path.to_owned(),
        field: field.to_owned(),
        message,
    };
    if !is_dns_label(&f.name) {
        return Err(bad(
            "name",
            format!(
                "{:?} must be 1-40 lowercase letters, digits or '-' (it prefixes VN names)",
                f.name
            ),
        ));
    }
    let default_algo = f
        .algorithm
        .clone()
        .unwrap_or_else(|| embedding::DEFAULT_ALGORITHM.to_owned());
    let sample = f.sample_interval.unwrap_or(2.0);
    if !(0.2..=600.0).contains(&sample) {
        return Err(bad(
            "sampleInterval",
            format!("{sample} must be between 0.2 and 600 seconds"),
        ));
    }
    if let Some(i) = f.probes.iperf
        && (i.every == 0 || i.seconds == 0 || i.seconds > 60)
    {
        return Err(bad(
            "probes.iperf",
            "every must be at least 1 and seconds between 1 and 60".into(),
        ));
    }
    if f.providers.is_empty() {
        return Err(bad("providers", "at least one provider is needed".into()));
    }
    let mut providers = Vec::with_capacity(f.providers.len());
    for (i, p) in f.providers.into_iter().enumerate() {
        let plan = check_provider(path, base, (i, p), &f.name, &default_algo, &providers)?;
        providers.push(plan);
    }
    Ok(Plan {
        name: f.name,
        seed: f.seed,
        sample_interval_s: sample,
        ping: f.probes.ping,
        iperf: f.probes.iperf,
        providers,
    })
}

/// Checks provider `i` of the experiment file (`taken`: the providers checked before it).
fn check_provider(
    path: &Path,
    base: &Path,
    (i, p): (usize, ProviderFile),
    experiment: &str,
    default_algo: &str,
    taken: &[ProviderPlan],
) -> Result<ProviderPlan, PlanError> {
    let bad = |field: &str, message: String| PlanError::Invalid {
        path: path.to_owned(),
        field: field.to_owned(),
        message,
    };
    let at = |what: &str| format!("providers[{i}] ({}).{what}", p.name);
    if !is_dns_label(&p.name) {
        return Err(bad(
            &format!("providers[{i}].name"),
            format!("{:?} must be 1-40 lowercase letters, digits or '-'", p.name),
        ));
    }
    // VN names are <experiment>-<provider>-<n>; the controller takes at most 63 bytes.
    if experiment.len() + p.name.len() + 2 + p.requests.to_string().len() > 63 {
        return Err(bad(
            &at("name"),
            format!(
                "VN names {}-{}-<n> would exceed 63 bytes: shorten the names",
                experiment, p.name
            ),
        ));
    }
    if taken.iter().any(|q: &ProviderPlan| q.name == p.name) {
        return Err(bad(&at("name"), "named twice".into()));
    }
    let algorithm = p
        .algorithm
        .clone()
        .unwrap_or_else(|| default_algo.to_owned());
    if embedding::by_name(&algorithm).is_none() {
        return Err(bad(
            &at("algorithm"),
            format!(
                "unknown algorithm {algorithm:?} (known: {})",
                embedding::algorithm_names().join(", ")
            ),
        ));
    }
    if p.requests == 0 || p.requests > MAX_REQUESTS {
        return Err(bad(
            &at("requests"),
            format!("{} must be between 1 and {MAX_REQUESTS}", p.requests),
        ));
    }
    let arrivals = match p.arrivals {
        ArrivalsFile::Poisson { rate } if rate.is_finite() && rate > 0.0 && rate <= 100.0 => {
            Arrivals::Poisson { rate }
        }
        ArrivalsFile::Poisson { rate } => {
            return Err(bad(
                &at("arrivals.poisson.rate"),
                format!("{rate} must be a rate per second in (0, 100]"),
            ));
        }
        ArrivalsFile::Trace { file, time_scale } if time_scale.is_finite() && time_scale > 0.0 => {
            Arrivals::Trace {
                file: base.join(file),
                time_scale,
            }
        }
        ArrivalsFile::Trace { time_scale, .. } => {
            return Err(bad(
                &at("arrivals.trace.timeScale"),
                format!("{time_scale} must be a positive number of seconds per time unit"),
            ));
        }
    };
    let trace_arrivals = matches!(arrivals, Arrivals::Trace { .. });
    match p.lifetime {
        LifetimeFile::Exponential(s) | LifetimeFile::Fixed(s)
            if !(s.is_finite() && s > 0.0 && s <= 86_400.0) =>
        {
            return Err(bad(
                &at("lifetime"),
                format!("{s} must be seconds in (0, 86400]"),
            ));
        }
        LifetimeFile::Trace if !trace_arrivals => {
            return Err(bad(&at("lifetime"), "`trace` needs trace arrivals".into()));
        }
        _ => {}
    }
    let shape = match p.shape {
        ShapeFile::Template(t) => ShapeFile::Template(base.join(t)),
        ShapeFile::Generator(g) => {
            check_generator(&g).map_err(|m| bad(&at("shape.generator"), m))?;
            ShapeFile::Generator(g)
        }
        ShapeFile::Trace if !trace_arrivals => {
            return Err(bad(&at("shape"), "`trace` needs trace arrivals".into()));
        }
        ShapeFile::Trace => ShapeFile::Trace,
    };
    Ok(ProviderPlan {
        name: p.name,
        credential: p.credential.map(|c| base.join(c)),
        algorithm,
        requests: p.requests,
        arrivals,
        lifetime: p.lifetime,
        shape,
    })
}

fn check_generator(g: &GeneratorFile) -> Result<(), String> {
    let (lo, hi) = g.nodes;
    if lo < 2 || lo > hi || hi > MAX_GENERATED_NODES {
        return Err(format!(
            "nodes [{lo}, {hi}] must satisfy 2 <= min <= max <= {MAX_GENERATED_NODES}"
        ));
    }
    if !(g.link_probability > 0.0 && g.link_probability <= 1.0) {
        return Err(format!(
            "linkProbability {} must be in (0, 1]",
            g.link_probability
        ));
    }
    for (what, (a, b)) in [("cpu", g.cpu), ("bandwidth", g.bandwidth)] {
        if a > b || b > 1_000_000 {
            return Err(format!(
                "{what} [{a}, {b}] must satisfy min <= max <= 1000000"
            ));
        }
    }
    if g.bandwidth.0 == 0 {
        return Err("bandwidth must be at least 1 Mbit/s".into());
    }
    if g.memory > 1 << 20 {
        return Err(format!("memory {} MiB is too large", g.memory));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
name: demo
seed: 3
algorithm: grc
probes: {iperf: {every: 2}}
providers:
  - name: red
    credential: red.conf
    requests: 15
    arrivals: {poisson: {rate: 0.5}}
    lifetime: {exponential: 20}
    shape: {generator: {nodes: [2, 3], cpu: [5, 20], bandwidth: [1, 20]}}
  - name: blue
    algorithm: lace
    requests: 15
    arrivals: {trace: {file: t.json, timeScale: 0.05}}
    lifetime: trace
    shape: trace
";

    #[test]
    fn a_good_file_becomes_a_plan() {
        let p = parse(Path::new("/x/exp.yaml"), GOOD).unwrap();
        assert_eq!(p.name, "demo");
        assert!(p.ping);
        assert_eq!(p.iperf.unwrap().seconds, 1);
        assert_eq!(p.providers[0].algorithm, "grc");
        assert_eq!(
            p.providers[0].credential.as_deref(),
            Some(Path::new("/x/red.conf"))
        );
        assert_eq!(p.providers[1].algorithm, "lace");
        assert_eq!(
            p.providers[1].arrivals,
            Arrivals::Trace {
                file: "/x/t.json".into(),
                time_scale: 0.05
            }
        );
    }

    fn err(text: &str) -> String {
        parse(Path::new("e.yaml"), text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_parses() {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/experiments/demo.yaml");
        let plan = load(&p).unwrap();
        assert_eq!(plan.providers.len(), 2);
        assert!(plan.providers[0].credential.is_some() && plan.providers[1].credential.is_none());
    }

    #[test]
    fn bad_files_name_the_field() {
        let m = err(&GOOD.replace("rate: 0.5", "rate: -1"));
        assert!(
            m.contains("providers[0] (red).arrivals.poisson.rate"),
            "{m}"
        );
        let m = err(&GOOD.replace("algorithm: lace", "algorithm: nope"));
        assert!(m.contains("(blue).algorithm") && m.contains("grc"), "{m}");
        let m = err(&GOOD.replace("nodes: [2, 3]", "nodes: [3, 2]"));
        assert!(m.contains("shape.generator") && m.contains("nodes"), "{m}");
        let m = err(&GOOD.replace("name: blue", "name: red"));
        assert!(m.contains("named twice"), "{m}");
        let m = err(&GOOD.replace("requests: 15", "requests: 0"));
        assert!(m.contains("requests"), "{m}");
        let m = err(&GOOD.replace("seed: 3", "seed: 3\ncolour: red"));
        assert!(m.starts_with("e.yaml: ") && m.contains("colour"), "{m}");
        let m = err(&GOOD.replace("name: demo", "name: Demo_1"));
        assert!(m.contains("name"), "{m}");
        let long = "x".repeat(40);
        let m = err(&GOOD
            .replace("name: demo", &format!("name: {long}"))
            .replace("name: blue", &format!("name: {}", &long[..30])));
        assert!(m.contains("exceed 63 bytes"), "{m}");
        let m = err(&GOOD
            .replace("lifetime: trace", "lifetime: {fixed: 5}")
            .replace(
                "{trace: {file: t.json, timeScale: 0.05}}",
                "{poisson: {rate: 1}}",
            ));
        assert!(
            m.contains("(blue).shape") && m.contains("trace arrivals"),
            "{m}"
        );
    }
}
