//! `vnctl iperf VN A B`: one iperf3 TCP stream from node A to node B over the virtual link
//! between them (server in B, client in A, both through the exec path); prints the rate the
//! receiver measured next to the link's reservation.

use crate::client::{Controller, ControllerOpts, block_on};
use crate::probe;

#[derive(Debug, clap::Args)]
pub struct IperfArgs {
    /// The VN.
    pub vn: String,
    /// The sending node.
    pub a: String,
    /// The receiving node (iperf3 server); a virtual link must join A and B.
    pub b: String,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 3)]
    pub seconds: u32,
}

impl IperfArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        if self.seconds == 0 || self.seconds > 300 {
            anyhow::bail!("--seconds {} must be between 1 and 300", self.seconds);
        }
        block_on(async {
            let ctl = Controller::connect(opts).await?;
            let vn = ctl.vn(&self.vn, &format!("get vn {}", self.vn)).await?;
            let link = probe::links(&vn)
                .into_iter()
                .find(|l| {
                    (l.a.node == self.a && l.b.node == self.b)
                        || (l.a.node == self.b && l.b.node == self.a)
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "vn {} has no addressed link between {} and {}",
                        self.vn,
                        self.a,
                        self.b
                    )
                })?;
            let (client, server) = if link.a.node == self.a {
                (&link.a, &link.b)
            } else {
                (&link.b, &link.a)
            };
            let mbps = probe::iperf(&ctl, &self.vn, server, client, self.seconds).await?;
            println!(
                "{} -> {} ({}): {mbps:.1} Mbit/s measured, {} Mbit/s reserved",
                self.a, self.b, server.addr, link.bandwidth_mbps
            );
            Ok(())
        })
    }
}
