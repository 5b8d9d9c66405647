//! What a run records and writes: one [`Record`] per request, [`Sample`]s of the substrate over
//! time, and the series the plots draw. Written as `requests.csv`, `timeline.csv` and
//! `run.json` (everything, read back by `experiment compare`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One request of a run, whatever became of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: usize,
    pub provider: String,
    pub algorithm: String,
    pub vn: String,
    pub nodes: usize,
    pub links: usize,
    /// Seconds after the start of the run when the request was sent.
    pub arrival_s: f64,
    pub lifetime_s: f64,
    pub accepted: bool,
    /// Why it was rejected or failed (empty when all went well).
    pub reason: String,
    pub create_to_accepted_ms: Option<f64>,
    pub accepted_to_ready_ms: Option<f64>,
    /// From READY to the first answered ping over the VN's first link.
    pub first_ping_ms: Option<f64>,
    /// Mean RTT over every link, both ways.
    pub rtt_ms: Option<f64>,
    pub links_probed: usize,
    pub links_reachable: usize,
    /// `a-b` of the link measured with iperf3.
    pub iperf_link: String,
    pub reserved_mbps: Option<f64>,
    pub measured_mbps: Option<f64>,
}

/// The substrate at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The algorithm of an offline run (`vnctl sim` runs several on one trace); empty live.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub algorithm: String,
    pub t_s: f64,
    pub vns_alive: usize,
    pub requests: usize,
    pub accepted: usize,
    /// Reserved CPU over capacity, all hosts, percent.
    pub cpu_pct: f64,
    /// Reserved bandwidth over capacity per substrate link (`a-b`), percent.
    pub link_pct: BTreeMap<String, f64>,
}

/// A whole run: what `run.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The experiment's name (or `sim`).
    pub name: String,
    /// How the run ended: `completed` or `interrupted`.
    pub ended: String,
    pub records: Vec<Record>,
    pub samples: Vec<Sample>,
}

/// Columns of `requests.csv`, in order.
pub const REQUEST_COLUMNS: &[&str] = &[
    "seq",
    "provider",
    "algorithm",
    "vn",
    "nodes",
    "links",
    "arrival_s",
    "lifetime_s",
    "accepted",
    "reason",
    "create_to_accepted_ms",
    "accepted_to_ready_ms",
    "first_ping_ms",
    "rtt_ms",
    "links_probed",
    "links_reachable",
    "iperf_link",
    "reserved_mbps",
    "measured_mbps",
];

/// A CSV field: quoted when it holds a comma, quote or line break (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_default()
}

impl Run {
    /// `requests.csv`: a header and one row per request.
    pub fn requests_csv(&self) -> String {
        let mut out = REQUEST_COLUMNS.join(",");
        out.push('\n');
        for r in &self.records {
            let row = [
                r.seq.to_string(),
                field(&r.provider),
                field(&r.algorithm),
                field(&r.vn),
                r.nodes.to_string(),
                r.links.to_string(),
                format!("{:.3}", r.arrival_s),
                format!("{:.3}", r.lifetime_s),
                r.accepted.to_string(),
                field(&r.reason),
                opt(r.create_to_accepted_ms),
                opt(r.accepted_to_ready_ms),
                opt(r.first_ping_ms),
                opt(r.rtt_ms),
                r.links_probed.to_string(),
                r.links_reachable.to_string(),
                field(&r.iperf_link),
                opt(r.reserved_mbps),
                opt(r.measured_mbps),
            ];
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// `timeline.csv`: one row per sample, one column per substrate link.
    pub fn timeline_csv(&self) -> String {
        let links: Vec<&String> = self
            .samples
            .iter()
            .flat_map(|s| s.link_pct.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = String::from("algorithm,t_s,vns_alive,requests,accepted,cpu_pct");
        for l in &links {
            let _ = write!(out, ",{}", field(&format!("link_pct:{l}")));
        }
        out.push('\n');
        for s in &self.samples {
            let _ = write!(
                out,
                "{},{:.3},{},{},{},{:.2}",
                field(&s.algorithm),
                s.t_s,
                s.vns_alive,
                s.requests,
                s.accepted,
                s.cpu_pct
            );
            for l in &links {
                let _ = write!(
                    out,
                    ",{}",
                    s.link_pct
                        .get(*l)
                        .map_or(String::new(), |v| format!("{v:.2}"))
                );
            }
            out.push('\n');
        }
        out
    }

    /// Writes `requests.csv`, `timeline.csv` and `run.json` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let put = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
        };
        put("requests.csv", self.requests_csv())?;
        put("timeline.csv", self.timeline_csv())?;
        put(
            "run.json",
            serde_json::to_string_pretty(self).context("serialising the run")?,
        )
    }

    /// Reads `run.json` of a run directory.
    pub fn read(dir: &Path) -> anyhow::Result<Run> {
        let p = dir.join("run.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("invalid run file {}", p.display()))
    }

    /// Cumulative acceptance ratio after each request, per `provider/algorithm`:
    /// (arrival seconds, ratio so far).
    pub fn acceptance_series(&self) -> BTreeMap<String, Vec<(f64, f64)>> {
        let mut order: Vec<&Record> = self.records.iter().collect();
        order.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in order {
            let key = format!("{}/{}", r.provider, r.algorithm);
            let c = counts.entry(key.clone()).or_default();
            c.0 += 1;
            c.1 += usize::from(r.accepted);
            out.entry(key)
                .or_default()
                .push((r.arrival_s, c.1 as f64 / c.0 as f64));
        }
        out
    }

    /// Empirical CDFs of setup latency in ms: `create-to-accepted` and `accepted-to-ready`
    /// per algorithm (sorted values, fraction at or below).
    pub fn setup_cdfs(&self) -> BTreeMap<String, Vec<(f64, f64)>> {
        let mut vals: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &self.records {
            if let Some(v) = r.create_to_accepted_ms {
                vals.entry(format!("create-to-accepted {}", r.algorithm))
                    .or_default()
                    .push(v);
            }
            if let Some(v) = r.accepted_to_ready_ms {
                vals.entry(format!("accepted-to-ready {}", r.algorithm))
                    .or_default()
                    .push(v);
            }
        }
        vals.into_iter().map(|(k, v)| (k, cdf(v))).collect()
    }

    /// (reserved, measured) Mbit/s of every link measured with iperf3.
    pub fn throughput_points(&self) -> Vec<(f64, f64)> {
        self.records
            .iter()
            .filter_map(|r| Some((r.reserved_mbps?, r.measured_mbps?)))
            .collect()
    }
}

/// Sorted values with the fraction of values at or below each.
pub fn cdf(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.into_iter()
        .enumerate()
        .map(|(i, x)| (x, (i + 1) as f64 / n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: usize, provider: &str, t: f64, accepted: bool) -> Record {
        Record {
            seq,
            provider: provider.into(),
            algorithm: "lace".into(),
            vn: format!("x-{seq}"),
            arrival_s: t,
            accepted,
            reason: if accepted {
                String::new()
            } else {
                "cpu of n1, \"h2\"".into()
            },
            create_to_accepted_ms: accepted.then_some(3.0 + seq as f64),
            ..Default::default()
        }
    }

    #[test]
    fn csv_has_a_row_per_request_and_quotes_reasons() {
        let run = Run {
            records: vec![rec(0, "red", 0.5, true), rec(1, "blue", 1.0, false)],
            samples: vec![Sample {
                t_s: 1.0,
                link_pct: [("h1-h2".to_string(), 12.5)].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let csv = run.requests_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].split(',').count(), REQUEST_COLUMNS.len());
        assert!(
            lines[2].contains("\"cpu of n1, \"\"h2\"\"\""),
            "{}",
            lines[2]
        );
        assert!(lines[1].starts_with("0,red,lace,x-0,"));
        let t = run.timeline_csv();
        assert!(
            t.starts_with("algorithm,t_s,vns_alive,requests,accepted,cpu_pct,link_pct:h1-h2\n")
        );
        assert!(t.contains(",12.50\n"));
        let dir = tempfile::tempdir().unwrap();
        run.write(dir.path()).unwrap();
        assert_eq!(Run::read(dir.path()).unwrap(), run);
    }

    #[test]
    fn acceptance_and_cdf_series() {
        let run = Run {
            records: vec![
                rec(0, "red", 0.0, true),
                rec(1, "red", 1.0, false),
                rec(2, "blue", 1.5, false),
                rec(3, "red", 2.0, true),
            ],
            ..Default::default()
        };
        let a = run.acceptance_series();
        assert_eq!(
            a["red/lace"],
            vec![(0.0, 1.0), (1.0, 0.5), (2.0, 2.0 / 3.0)]
        );
        assert_eq!(a["blue/lace"], vec![(1.5, 0.0)]);
        let c = run.setup_cdfs();
        assert_eq!(c["create-to-accepted lace"], vec![(3.0, 0.5), (6.0, 1.0)]);
        assert_eq!(cdf(vec![2.0, f64::NAN, 1.0]), vec![(1.0, 0.5), (2.0, 1.0)]);
    }
}
