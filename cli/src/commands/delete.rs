//! `vnctl delete vn NAME [--cascade] [--wait]`.

use std::time::Duration;

use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "vns")]
    Vn,
}

/// Tear a virtual network down everywhere and release its resources.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    pub name: String,
    /// Delete the VN's children first (without it, a VN with children is not deleted).
    #[arg(long)]
    pub cascade: bool,
    /// Wait until the VN (and its children) are gone.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl DeleteArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(async {
            let ctl = Controller::connect(opts).await?;
            ctl.require_provider()?;
            let deleted = ctl
                .vns()
                .delete(pb::DeleteVnRequest {
                    name: self.name.clone(),
                    cascade: self.cascade,
                })
                .await
                .map_err(|s| rpc_error(&format!("delete vn {}", self.name), s))?
                .into_inner()
                .deleted;
            let names = if deleted.is_empty() {
                vec![self.name.clone()]
            } else {
                deleted
            };
            for n in &names {
                println!("vn/{n} deleted");
            }
            if self.wait {
                crate::wait::until_deleted(&ctl, &names, self.timeout).await?;
                println!("{} gone", names.join(", "));
            }
            Ok(())
        })
    }
}
