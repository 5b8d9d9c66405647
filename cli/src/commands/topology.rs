//! `vnctl topology [--svg FILE] [--png FILE] [--labels]`: the substrate (hosts, links, residual
//! capacities) and where the caller's VNs are embedded (an admin sees every provider's), as
//! Graphviz DOT ([`crate::picture`]); rendered to SVG or PNG by `neato -n2` (Graphviz) when it is installed.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::picture;

/// Print the substrate and the embedded VNs as Graphviz DOT, or draw them.
#[derive(Debug, clap::Args)]
pub struct TopologyArgs {
    /// Write an SVG rendering to FILE (needs Graphviz `neato`) instead of printing DOT.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Write a PNG rendering to FILE (needs Graphviz `neato`).
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Label every virtual link with its VNI/VLAN IDs, bandwidth and delay.
    #[arg(long)]
    pub labels: bool,
}

impl TopologyArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        let topo = block_on(async {
            let ctl = Controller::connect(opts).await?;
            anyhow::Ok(
                ctl.substrate()
                    .get_topology(pb::GetTopologyRequest {})
                    .await
                    .map_err(|s| rpc_error("get topology", s))?
                    .into_inner(),
            )
        })?;
        let dot = picture::to_dot(
            &topo,
            picture::Options {
                labels: self.labels,
            },
        );
        if self.svg.is_none() && self.png.is_none() {
            print!("{dot}");
        }
        for (format, out) in [("svg", &self.svg), ("png", &self.png)] {
            if let Some(out) = out {
                render(&dot, format, out)?;
            }
        }
        Ok(())
    }
}

/// Renders `dot` to `out` in `format` (`svg`, `png`) with Graphviz.
fn render(dot: &str, format: &str, out: &std::path::Path) -> anyhow::Result<()> {
    let Some(prog) = crate::which::on_path("neato") else {
        anyhow::bail!(
            "Graphviz `neato` is not on PATH, so no {format} was written: install graphviz \
             (apt-get install graphviz), or run without --{format} to print DOT"
        );
    };
    let mut cmd = Command::new(&prog);
    // -n2: positions are given (in points) and kept; neato only draws.
    cmd.args(["-n2", &format!("-T{format}")]);
    if format == "png" {
        cmd.arg("-Gdpi=110");
    }
    let mut child = cmd
        .arg("-o")
        .arg(out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", prog.display()))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(dot.as_bytes())
        .context("feeding neato")?;
    let res = child.wait_with_output().context("waiting for neato")?;
    if !res.status.success() {
        anyhow::bail!(
            "neato failed ({}): {}",
            res.status,
            String::from_utf8_lossy(&res.stderr).trim()
        );
    }
    eprintln!("wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> pb::Topology {
        pb::Topology {
            hosts: vec![pb::Host {
                id: "h1".into(),
                connected: true,
                ..Default::default()
            }],
            vns: vec![pb::EmbeddedVn {
                name: "red-net".into(),
                provider: "red".into(),
                placement: [("a".into(), "h1".into()), ("b".into(), "h1".into())].into(),
                links: vec![pb::EmbeddedLink {
                    a: "a".into(),
                    b: "b".into(),
                    path: vec!["h1".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn dot_renders_to_svg_and_png_when_graphviz_is_installed() {
        if crate::which::on_path("neato").is_none() {
            println!(
                "SKIP dot_renders_to_svg_and_png_when_graphviz_is_installed: graphviz `neato` not on PATH"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let dot = picture::to_dot(&topo(), picture::Options::default());
        let svg = dir.path().join("t.svg");
        render(&dot, "svg", &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg"), "{text}");
        assert!(text.contains("box:host:h1"), "{text}");
        let png = dir.path().join("t.png");
        render(&dot, "png", &png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
