//! `vnctl embed --substrate FILE --request FILE [--algo NAME] [--json]`: embed one request on a
//! fresh substrate, offline. Exit status 0 when embedded, 1 when rejected (with the reason).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use embedding::{DEFAULT_ALGORITHM, Residual};

use super::sim::read;

/// Arguments of `vnctl embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Substrate file (`{"nodes": [...], "links": [...]}`, or a trace whose substrate is used).
    #[arg(long, value_name = "FILE")]
    pub substrate: PathBuf,
    /// Request file (one request of the trace format).
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,
    /// Embedding algorithm (see `vnctl sim --list-algos`); default: the flagship.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_ALGORITHM)]
    pub algo: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl EmbedArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let algo = embedding::by_name(&self.algo).with_context(|| {
            format!(
                "unknown algorithm `{}` (known: {})",
                self.algo,
                embedding::algorithm_names().join(", ")
            )
        })?;
        let substrate = embedding::parse_substrate(&read(&self.substrate)?)
            .with_context(|| format!("invalid substrate {}", self.substrate.display()))?;
        let request = embedding::parse_request(&read(&self.request)?)
            .with_context(|| format!("invalid request {}", self.request.display()))?
            .request;
        let residual = Residual::new(Arc::new(substrate));
        let started = std::time::Instant::now();
        let outcome = algo.embed(&residual, &request);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let s = residual.substrate();
        match outcome {
            Ok(e) => {
                residual
                    .clone()
                    .check(&request, &e)
                    .context("internal error: the embedding does not fit")?;
                if self.json {
                    let out = serde_json::json!({
                        "algo": algo.name(), "request": request.id(), "accepted": true,
                        "revenue": e.revenue(), "cost": e.cost(),
                        "r2c": e.revenue() as f64 / e.cost().max(1) as f64,
                        "solve_ms": ms, "placement": e.placement(s, &request),
                    });
                    println!("{out}");
                } else {
                    println!(
                        "request {} embedded by {} in {ms:.2} ms: revenue {}, cost {}",
                        request.id(),
                        algo.name(),
                        e.revenue(),
                        e.cost()
                    );
                    for (vn, h) in request.nodes().iter().zip(e.nodes()) {
                        println!("  node {:<12} -> {}", vn.id, s.node(*h).id);
                    }
                    for (l, le) in e.links().iter().enumerate() {
                        for f in le.flows() {
                            let path: Vec<&str> =
                                f.hosts.iter().map(|h| s.node(*h).id.as_str()).collect();
                            println!(
                                "  link {:<12} -> {} ({} bandwidth)",
                                request.link_name(l),
                                path.join(" - "),
                                f.bandwidth
                            );
                        }
                    }
                }
                Ok(())
            }
            Err(why) => {
                if self.json {
                    let out = serde_json::json!({
                        "algo": algo.name(), "request": request.id(), "accepted": false,
                        "reason": why.to_string(), "resource": why.resource(), "solve_ms": ms,
                    });
                    println!("{out}");
                }
                bail!("request {} not embedded: {why}", request.id())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBSTRATE: &str = r#"{"nodes": [{"id": "h1", "cpu": 50}, {"id": "h2", "cpu": 50}],
                              "links": [{"u": "h1", "v": "h2", "bw": 100}]}"#;
    const REQUEST: &str = r#"{"id": "web", "nodes": [{"id": "a", "cpu": 10}, {"id": "b", "cpu": 10}],
                            "links": [{"u": "a", "v": "b", "bw": 20}]}"#;

    fn run(substrate: &str, request: &str, algo: &str) -> anyhow::Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let (s, r) = (dir.path().join("s.json"), dir.path().join("r.json"));
        std::fs::write(&s, substrate).unwrap();
        std::fs::write(&r, request).unwrap();
        EmbedArgs {
            substrate: s,
            request: r,
            algo: algo.into(),
            json: true,
        }
        .run()
    }

    fn err(substrate: &str, request: &str) -> String {
        format!("{:#}", run(substrate, request, "lace").unwrap_err())
    }

    #[test]
    fn embeds_with_every_algorithm() {
        for a in embedding::algorithm_names() {
            run(SUBSTRATE, REQUEST, a).unwrap_or_else(|e| panic!("{a}: {e:#}"));
        }
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let m = err("{nodes: ", REQUEST);
        assert!(
            m.contains("invalid substrate") && m.contains("malformed JSON"),
            "{m}"
        );
        let m = err(SUBSTRATE, &REQUEST.replace(r#""v": "b""#, r#""v": "zz""#));
        assert!(m.contains("request web") && m.contains("`zz`"), "{m}");
        let m = err(
            SUBSTRATE,
            &REQUEST.replace(r#""cpu": 10}, {"id": "b""#, r#""cpu": -4}, {"id": "b""#),
        );
        assert!(
            m.contains("request web, node a") && m.contains("negative"),
            "{m}"
        );
        let m = err(
            SUBSTRATE,
            &REQUEST.replace(r#""bw": 20"#, r#""bw": "fast""#),
        );
        assert!(m.contains("link a-b") && m.contains("\"fast\""), "{m}");
        let m = err(
            SUBSTRATE,
            &REQUEST.replace(
                r#""links": [{"u": "a", "v": "b", "bw": 20}]"#,
                r#""links": []"#,
            ),
        );
        assert!(m.contains("not connected"), "{m}");
        let m = err(r#"{"nodes": [], "links": []}"#, REQUEST);
        assert!(m.contains("substrate: has no nodes"), "{m}");
        let m = err(&SUBSTRATE.replace(r#""v": "h2""#, r#""v": "h9""#), REQUEST);
        assert!(m.contains("unknown node `h9`"), "{m}");
        let m = format!("{:#}", run(SUBSTRATE, REQUEST, "nope").unwrap_err());
        assert!(
            m.contains("unknown algorithm `nope`") && m.contains("lace"),
            "{m}"
        );
        let m = err(
            SUBSTRATE,
            &REQUEST.replace(r#""cpu": 10}, {"id": "b""#, r#""cpu": 60}, {"id": "b""#),
        );
        assert!(
            m.contains("not embedded") && m.contains("`a`") && m.contains("cpu"),
            "{m}"
        );
        let dir = tempfile::tempdir().unwrap();
        let m = format!(
            "{:#}",
            EmbedArgs {
                substrate: dir.path().join("missing.json"),
                request: dir.path().join("r.json"),
                algo: "lace".into(),
                json: false,
            }
            .run()
            .unwrap_err()
        );
        assert!(m.contains("missing.json"), "{m}");
    }
}
