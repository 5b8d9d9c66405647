//! `vnctl embed --substrate FILE --request FILE [--algo NAME] [--json]`: embed one request on a
//! fresh substrate, offline. Exit status 0 when embedded, 1 when rejected (with the reason).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use embedding::{DEFAULT_ALGORITHM, Residual};

use super::sim::{emit, read};

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
                    emit(&out.to_string())?;
                } else {
                    emit(&format!(
                        "request {} embedded by {} in {ms:.2} ms: revenue {}, cost {}",
                        request.id(),
                        algo.name(),
                        e.revenue(),
                        e.cost()
                    ))?;
                    for (vn, h) in request.nodes().iter().zip(e.nodes()) {
                        emit(&format!("  node {:<12} -> {}", vn.id, s.node(*h).id))?;
                    }
                    for (l, le) in e.links().iter().enumerate() {
                        for f in le.flows() {
                            let path: Vec<&str> =
                                f.hosts.iter().map(|h| s.node(*h).id.as_str()).collect();
                            emit(&format!(
                                "  link {:<12} -> {} ({} bandwidth)",
                                request.link_name(l),
                                path.join(" - "),
                                f.bandwidth
                            ))?;
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
                    emit(&out.to_string())?;
                }
                bail!("request {} not embedded: {why}", request.id())
            }
        }
    }
}
