//! `vnctl experiment run -f EXPERIMENT.yaml --out DIR` and `vnctl experiment compare DIR1 DIR2`.
//!
//! `run` plays a multi-provider workload against the live controller (see
//! [`crate::experiment`]) and writes `requests.csv`, `timeline.csv`, `run.json`, one SVG per plot
//! and `report.html` into DIR. Ctrl-C stops it: every VN it created is deleted, the partial
//! results are written, and it exits non-zero. `compare` writes `compare.html` with the plots of
//! two runs side by side.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::client::block_on;
use crate::commands::GlobalOpts;
use crate::experiment::{plan, records::Run, report, runner};

#[derive(Debug, clap::Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    pub cmd: ExperimentCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum ExperimentCmd {
    /// Run an experiment on the live testbed and write its data and report.
    Run {
        /// The experiment file (YAML).
        #[arg(short = 'f', long = "file", value_name = "EXPERIMENT.yaml")]
        file: PathBuf,
        /// Where to write the results (created; must be empty if it exists).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Plot two runs side by side (writes compare.html, by default into the current directory).
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Output file.
        #[arg(long, value_name = "FILE", default_value = "compare.html")]
        out: PathBuf,
    },
}

impl ExperimentArgs {
    /// Runs the subcommand; only `run` needs the controller's settings.
    pub fn run(self, global: &GlobalOpts) -> anyhow::Result<()> {
        match self.cmd {
            ExperimentCmd::Run { file, out } => run(&file, &out, &global.resolve()?),
            ExperimentCmd::Compare { a, b, out } => compare(&a, &b, &out),
        }
    }
}

fn run(
    file: &std::path::Path,
    out: &std::path::Path,
    opts: &crate::client::ControllerOpts,
) -> anyhow::Result<()> {
    let plan = plan::load(file)?;
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{} is not empty: choose a new --out directory",
            out.display()
        );
    }
    let (run, gone) = block_on(runner::run(plan, opts))?;
    runner::write(&run, out)?;
    gone.with_context(|| {
        format!(
            "results in {}, but not everything the experiment created is gone",
            out.display()
        )
    })?;
    let accepted = run.records.iter().filter(|r| r.accepted).count();
    let unreachable = run
        .records
        .iter()
        .filter(|r| r.links_reachable < r.links_probed)
        .count();
    println!(
        "{} requests, {accepted} accepted, {unreachable} with an unreachable link; report: {}",
        run.records.len(),
        out.join("report.html").display()
    );
    if run.ended == "interrupted" {
        anyhow::bail!(
            "interrupted: every VN the experiment created was deleted; partial results in {}",
            out.display()
        );
    }
    Ok(())
}

fn compare(a: &std::path::Path, b: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let (ra, rb) = (Run::read(a)?, Run::read(b)?);
    let html = report::compare_html(
        (&a.display().to_string(), &ra),
        (&b.display().to_string(), &rb),
    )?;
    std::fs::write(out, html).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
