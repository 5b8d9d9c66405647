//! `vnctl pingall VN`: ping over every virtual link, both ways (as Mininet's `pingall`, per
//! link), through the exec path. Prints a table; exits non-zero when any ping fails.

use std::io::Write as _;

use crate::client::{Controller, ControllerOpts, block_on};
use crate::probe;

#[derive(Debug, clap::Args)]
pub struct PingallArgs {
    /// The VN.
    pub vn: String,
    /// Attempts per direction before it counts as failed (the first may wait for ARP).
    #[arg(long, default_value_t = 3)]
    pub tries: u32,
}

impl PingallArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(async {
            let ctl = Controller::connect(opts).await?;
            let vn = ctl.vn(&self.vn, &format!("get vn {}", self.vn)).await?;
            let skipped = vn.links.len() - probe::links(&vn).len();
            let rows = probe::pingall(&ctl, &vn, self.tries).await;
            let mut tw = tabwriter::TabWriter::new(std::io::stdout());
            writeln!(tw, "LINK\tFROM\tTO\tADDRESS\tRESULT")?;
            for r in &rows {
                let res = match &r.result {
                    Ok(ms) => format!("ok {ms:.3} ms"),
                    Err(e) => format!("FAIL {e}"),
                };
                writeln!(tw, "{}\t{}\t{}\t{}\t{res}", r.link, r.from, r.to, r.addr)?;
            }
            tw.flush()?;
            let failed = rows.iter().filter(|r| r.result.is_err()).count();
            if skipped > 0 {
                eprintln!("{skipped} link(s) without addresses were not probed");
            }
            if rows.is_empty() {
                anyhow::bail!("vn {} has no link with addresses to ping", self.vn);
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} pings failed", rows.len());
            }
            Ok(())
        })
    }
}
