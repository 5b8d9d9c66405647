//! `vnctl apply -f vn.yaml [--wait]`: create a VN, or report how the existing one differs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
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
        block_on(self.execute(opts))
    }

    pub async fn execute(&self, opts: &ControllerOpts) -> anyhow::Result<()> {
        // The spec is checked before anything is sent: a bad file creates nothing.
        let file = spec::load(&self.file)?;
        self.apply(opts, file).await
    }

    async fn apply(&self, opts: &ControllerOpts, file: spec::VnFile) -> anyhow::Result<()> {
        let ctl = Controller::connect(opts)
            .await?
            .or_provider(file.provider.as_deref())?;
        let name = file.name.clone();
        let what = format!("apply vn {name}");

        let existing = match ctl.vns().get(pb::GetVnRequest { name: name.clone() }).await {
            Ok(vn) => Some(vn.into_inner()),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(rpc_error(&what, s)),
        };
        let existing = match existing {
            Some(vn) => Some(vn),
            None => create(&ctl, &file, &what).await?,
        };
        if let Some(vn) = existing {
            self.check_same(&vn, &file)?;
            if vn.state == pb::VnState::Failed as i32 {
                self.retry(&ctl, &file, &vn, &what).await?;
            } else {
                println!("vn/{name} unchanged ({})", vn_state(vn.state));
            }
        }
        if self.wait {
            crate::wait::until_ready(&ctl, &name, self.timeout).await?;
            println!("vn/{name} READY");
        }
        Ok(())
    }

    /// Fails, listing the differences, unless the applied spec of `vn` is the file's.
    fn check_same(&self, vn: &pb::VirtualNetwork, file: &spec::VnFile) -> anyhow::Result<()> {
        let name = &file.name;
        let differences = vn
            .spec
            .as_ref()
            .map(|applied| spec::diff(applied, file))
            .unwrap_or_else(|| vec!["(the controller returned no spec)".into()]);
        if differences.is_empty() {
            return Ok(());
        }
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
        )
    }

    /// Applying a FAILED VN's own spec again retries it: the VN is deleted (waiting until its
    /// hosts have torn it down, within `--timeout`) and created anew, so it is embedded and
    /// provisioned from scratch. A VN with children is not deleted under them: the controller
    /// refuses, and the error says so.
    async fn retry(
        &self,
        ctl: &Controller,
        file: &spec::VnFile,
        vn: &pb::VirtualNetwork,
        what: &str,
    ) -> anyhow::Result<()> {
        let name = &file.name;
        let reason = if vn.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", vn.reason)
        };
        println!("vn/{name} is FAILED{reason}; retrying: deleting it and creating it again");
        ctl.vns()
            .delete(pb::DeleteVnRequest {
                name: name.clone(),
                cascade: false,
            })
            .await
            .map_err(|s| rpc_error(&format!("retry vn {name}: delete the FAILED VN"), s))?;
        crate::wait::until_deleted(ctl, std::slice::from_ref(name), self.timeout)
            .await
            .with_context(|| format!("retry vn {name}: the FAILED VN was not deleted in time"))?;
        if let Some(other) = create(ctl, file, what).await? {
            anyhow::bail!(
                "retry vn {name}: created by another client meanwhile ({})",
                vn_state(other.state)
            );
        }
        Ok(())
    }
}

/// Creates the file's VN and prints its state; returns the existing VN instead when it was
/// created by someone else between our Get and Create.
async fn create(
    ctl: &Controller,
    file: &spec::VnFile,
    what: &str,
) -> anyhow::Result<Option<pb::VirtualNetwork>> {
    let name = &file.name;
    match ctl
        .vns()
        .create(pb::CreateVnRequest {
            spec: Some(file.to_proto()),
        })
        .await
    {
        Ok(vn) => {
            println!("vn/{name} created ({})", vn_state(vn.into_inner().state));
            Ok(None)
        }
        Err(s) if s.code() == Code::AlreadyExists => Ok(Some(
            ctl.vns()
                .get(pb::GetVnRequest { name: name.clone() })
                .await
                .map_err(|s| rpc_error(what, s))?
                .into_inner(),
        )),
        Err(s) => Err(rpc_error(what, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeController, Outcome};

    const SPEC: &str = "name: web\nnodes: [{name: a, cpu: 10}, {name: b, cpu: 10}]\n\
                        links: [{endpoints: [a, b], bandwidth: 5}]\n";

    fn args(dir: &std::path::Path, text: &str, wait: bool) -> ApplyArgs {
        let file = dir.join(format!("vn{}.yaml", text.len()));
        std::fs::write(&file, text).unwrap();
        ApplyArgs {
            file,
            wait,
            timeout: Duration::from_secs(5),
        }
    }

    fn opts(addr: &str, provider: Option<&str>) -> ControllerOpts {
        ControllerOpts {
            controller: addr.into(),
            provider: provider.map(str::to_owned),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn create_then_unchanged_then_differs() {
        let fake = FakeController::new(Outcome::Ready);
        let addr = fake.clone().serve().await;
        let dir = tempfile::tempdir().unwrap();
        let o = opts(&addr, Some("red"));
        args(dir.path(), SPEC, true).execute(&o).await.unwrap();
        assert_eq!(
            fake.vn("red", "web").unwrap().state,
            pb::VnState::Ready as i32
        );
        // The same file again: unchanged, success.
        args(dir.path(), SPEC, false).execute(&o).await.unwrap();
        // A different demand: an error that counts the differences; nothing is changed.
        let changed = SPEC.replace("{name: b, cpu: 10}", "{name: b, cpu: 30}");
        let e = args(dir.path(), &changed, false)
            .execute(&o)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("exists with a different spec (1 difference)"),
            "{e}"
        );
        assert_eq!(
            fake.vn("red", "web").unwrap().spec.unwrap().nodes[1].cpu,
            10
        );
        // Identity travelled on every call.
        assert!(
            fake.providers_seen()
                .iter()
                .all(|p| p.as_deref() == Some("red"))
        );
    }

    #[tokio::test]
    async fn reapplying_a_failed_vn_retries_it() {
        let fake = FakeController::new(Outcome::FailOnce);
        let addr = fake.clone().serve().await;
        let dir = tempfile::tempdir().unwrap();
        let o = opts(&addr, Some("red"));
        let e = args(dir.path(), SPEC, true)
            .execute(&o)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "vn/web failed: h2: no tap");
        assert_eq!(
            fake.vn("red", "web").unwrap().state,
            pb::VnState::Failed as i32
        );
        // The same file again: deleted, created anew, READY; never "unchanged".
        args(dir.path(), SPEC, true).execute(&o).await.unwrap();
        assert_eq!(
            fake.vn("red", "web").unwrap().state,
            pb::VnState::Ready as i32
        );
        assert_eq!(fake.creates(), 2);
    }

    #[tokio::test]
    async fn provider_from_the_spec_when_no_flag() {
        let fake = FakeController::new(Outcome::Ready);
        let addr = fake.clone().serve().await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!("provider: blue\n{SPEC}");
        args(dir.path(), &text, false)
            .execute(&opts(&addr, None))
            .await
            .unwrap();
        assert!(fake.vn("blue", "web").is_some());
    }

    /// Without `--as` and without `provider:` in the spec, the credential's own provider is
    /// meant: no acting-as header is sent (the fake, which has no tokens, refuses the call).
    #[tokio::test]
    async fn no_provider_sends_no_act_as() {
        let fake = FakeController::new(Outcome::Ready);
        let addr = fake.clone().serve().await;
        let dir = tempfile::tempdir().unwrap();
        let e = args(dir.path(), SPEC, false)
            .execute(&opts(&addr, None))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("VNET_CONFIG"), "{e}");
        assert!(fake.providers_seen().iter().all(Option::is_none));
    }

    #[tokio::test]
    async fn wait_reports_failure_with_the_hosts_reason() {
        let fake = FakeController::new(Outcome::Fail);
        let addr = fake.clone().serve().await;
        let dir = tempfile::tempdir().unwrap();
        let e = args(dir.path(), SPEC, true)
            .execute(&opts(&addr, Some("red")))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "vn/web failed: h2: no tap");
    }

    #[tokio::test]
    async fn wait_times_out_naming_the_state() {
        let fake = FakeController::new(Outcome::Hang);
        let addr = fake.clone().serve().await;
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), SPEC, true);
        a.timeout = Duration::from_millis(300);
        let e = a
            .execute(&opts(&addr, Some("red")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("timed out after 300ms waiting for vn/web"),
            "{e}"
        );
        assert!(e.contains("state PROVISIONING"), "{e}");
    }

    #[tokio::test]
    async fn controller_validation_errors_are_one_line() {
        let fake = FakeController::new(Outcome::Ready);
        let addr = fake.clone().serve().await;
        let dir = tempfile::tempdir().unwrap();
        let text = SPEC.replace("{name: a, cpu: 10}", "{name: a, cpu: -1}");
        let e = args(dir.path(), &text, false)
            .execute(&opts(&addr, Some("red")))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "apply vn web: invalid: nodes[0].cpu: must be >= 0");
        assert!(fake.vn("red", "web").is_none());
    }
}
