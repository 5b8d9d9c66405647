//! `vnctl exec VN NODE -- CMD...`: run a command inside a virtual node; its stdout and stderr
//! are written raw and its exit code becomes vnctl's.

use std::io::Write;
use std::time::Duration;

use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::error::Exited;

/// Run a command inside a virtual node.
#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// The VN.
    pub vn: String,
    /// The virtual node (its name in the spec).
    pub node: String,
    /// How long the command may run (0: the controller's default).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The command and its arguments (after `--`).
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
    pub argv: Vec<String>,
}

impl ExecArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(self.execute(opts))
    }

    pub async fn execute(&self, opts: &ControllerOpts) -> anyhow::Result<()> {
        let ctl = Controller::connect(opts).await?;
        let timeout_ms = u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX);
        let mut req = tonic::Request::new(pb::ExecRequest {
            vn: self.vn.clone(),
            node: self.node.clone(),
            argv: self.argv.clone(),
            timeout_ms,
        });
        // The call may legitimately take as long as the command (0: the controller decides).
        if !self.timeout.is_zero() {
            req.set_timeout(self.timeout + Duration::from_secs(10));
        }
        let resp = ctl
            .vns()
            .exec(req)
            .await
            .map_err(|s| rpc_error(&format!("exec in vn {} node {}", self.vn, self.node), s))?
            .into_inner();
        std::io::stdout().write_all(&resp.stdout)?;
        std::io::stdout().flush()?;
        std::io::stderr().write_all(&resp.stderr)?;
        if resp.exit_code != 0 {
            return Err(Exited(resp.exit_code).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeController, Outcome};

    #[tokio::test]
    async fn remote_exit_code_becomes_ours() {
        let addr = FakeController::new(Outcome::Ready).serve().await;
        let opts = ControllerOpts {
            controller: addr,
            provider: Some("red".into()),
            ..Default::default()
        };
        let run = |argv: &[&str]| ExecArgs {
            vn: "web".into(),
            node: "a".into(),
            timeout: Duration::from_secs(5),
            argv: argv.iter().map(|s| s.to_string()).collect(),
        };
        run(&["true"]).execute(&opts).await.unwrap();
        let e = run(&["sh", "exit=7"]).execute(&opts).await.unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 7);
        assert!(e.downcast_ref::<Exited>().is_some());
    }
}
