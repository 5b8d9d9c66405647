//! `vnctl describe vn NAME [-o json|yaml]`: where every node landed, the substrate path and
//! identifiers (VNI, VLAN ID) of every link, MTU, state and per-host state.

use crate::client::{Controller, ControllerOpts, block_on};
use crate::output::{self, Format, VnView};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "vns")]
    Vn,
}

/// Show one virtual network in detail.
#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    pub name: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl DescribeArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(async {
            let ctl = Controller::connect(opts).await?;
            let vn = ctl
                .vn(&self.name, &format!("describe vn {}", self.name))
                .await?;
            match self.output {
                Format::Table => {
                    print!("{}", output::describe_vn(&vn));
                    Ok(())
                }
                f => output::print_structured(f, &VnView::from_proto(&vn)),
            }
        })
    }
}
