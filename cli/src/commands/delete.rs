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
        block_on(self.execute(opts))
    }

    pub async fn execute(&self, opts: &ControllerOpts) -> anyhow::Result<()> {
        let ctl = Controller::connect(opts).await?;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeController, Outcome, generations};

    #[tokio::test]
    async fn wait_returns_after_the_hosts_applied_the_teardown() {
        let (fake, opts) = FakeController::serving(Outcome::Ready, Some("red")).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vn.yaml");
        std::fs::write(&file, "name: web\nnodes: [{name: a}]\n").unwrap();
        crate::commands::apply::ApplyArgs {
            file,
            wait: true,
            timeout: Duration::from_secs(5),
            dry_run: false,
        }
        .execute(&opts)
        .await
        .unwrap();
        let del = DeleteArgs {
            kind: Kind::Vn,
            name: "web".into(),
            cascade: false,
            wait: true,
            timeout: Duration::from_secs(5),
        };
        del.execute(&opts).await.unwrap();
        // The stand-in's hosts apply a deletion 300 ms after it; --wait saw them do it.
        for (host, (desired, observed)) in generations(&fake) {
            assert_eq!(desired, observed, "{host}");
        }
        let e = del.execute(&opts).await.unwrap_err().to_string();
        assert_eq!(e, "delete vn web: not found: vn web not found");
    }

    #[tokio::test]
    async fn wait_accepts_other_providers_children_of_a_cascade() {
        let (_, opts) = FakeController::serving(Outcome::Ready, Some("red")).await;
        let ctl = Controller::connect(&opts).await.unwrap();
        // A cascade over a shared VN names a child of provider blue "blue/kid": red can
        // neither get nor watch it, and it is gone once Delete returned.
        crate::wait::until_deleted(
            &ctl,
            &["blue/kid".to_string(), "gone".to_string()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
}
