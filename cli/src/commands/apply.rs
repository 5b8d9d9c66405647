//! `vnctl apply -f vn.yaml [--wait]`: create a VN, or report how the existing one differs.

use std::path::PathBuf;
use std::time::Duration;

use tonic::Code;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::output::vn_state;
use crate::spec;

/// Create a virtual network from a YAML spec (kubectl style).
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The VN spec (YAML).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Wait until the VN is READY (watching its provisioning), or fail when it fails.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl ApplyArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        // The spec is checked before anything is sent: a bad file creates nothing.
        let file = spec::load(&self.file)?;
        block_on(self.apply(opts, file))
    }

    async fn apply(&self, opts: &ControllerOpts, file: spec::VnFile) -> anyhow::Result<()> {
        let ctl = Controller::connect(opts)
            .await?
            .or_provider(file.provider.as_deref())?;
        ctl.require_provider()?;
        let name = file.name.clone();
        let what = format!("apply vn {name}");

        let existing = match ctl.vns().get(pb::GetVnRequest { name: name.clone() }).await {
            Ok(vn) => Some(vn.into_inner()),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(rpc_error(&what, s)),
        };
        let existing = match existing {
            Some(vn) => Some(vn),
            None => match ctl
                .vns()
                .create(pb::CreateVnRequest {
                    spec: Some(file.to_proto()),
                })
                .await
            {
                Ok(vn) => {
                    let vn = vn.into_inner();
                    println!("vn/{name} created ({})", vn_state(vn.state));
                    None
                }
                // Created by someone else between our Get and Create: compare with that one.
                Err(s) if s.code() == Code::AlreadyExists => Some(
                    ctl.vns()
                        .get(pb::GetVnRequest { name: name.clone() })
                        .await
                        .map_err(|s| rpc_error(&what, s))?
                        .into_inner(),
                ),
                Err(s) => return Err(rpc_error(&what, s)),
            },
        };
        if let Some(vn) = existing {
            let differences = vn
                .spec
                .as_ref()
                .map(|applied| spec::diff(applied, &file))
                .unwrap_or_else(|| vec!["(the controller returned no spec)".into()]);
            if !differences.is_empty() {
                println!(
                    "vn/{name} exists and differs from {} (applied -> file):",
                    self.file.display()
                );
                for d in &differences {
                    println!("  {d}");
                }
                anyhow::bail!(
                    "vn/{name} exists with a different spec ({} difference{}); VNs are not \
                     updated in place: `vnctl delete vn {name} --wait`, then apply again",
                    differences.len(),
                    if differences.len() == 1 { "" } else { "s" }
                );
            }
            println!("vn/{name} unchanged ({})", vn_state(vn.state));
        }
        if self.wait {
            crate::wait::until_ready(&ctl, &name, self.timeout).await?;
            println!("vn/{name} READY");
        }
        Ok(())
    }
}
