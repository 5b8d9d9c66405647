//! `vnctl diff -f FILE|DIR|-`: what `vnctl apply` of the same source would change, without
//! changing it. Per VN: the spec's differences (applied -> file), then the controller's plan (what
//! is added, removed, changed or moved; what stays is not listed). Exit status as `kubectl
//! diff`: 0 when nothing would change, 1 when something would (or on an error).

use std::path::PathBuf;

use tonic::Code;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::commands::apply::plan_lines;
use crate::error::Exited;
use crate::spec;

/// Show what `vnctl apply -f` would change (exit 1 when something would).
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The VN specs, as for `vnctl apply -f`: a file, a directory or `-`.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
}

impl DiffArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(self.execute(opts))
    }

    pub async fn execute(&self, opts: &ControllerOpts) -> anyhow::Result<()> {
        let docs = spec::load_all(&self.file)?;
        let mut differs = false;
        for doc in &docs {
            let lines = self.diff(opts, doc).await?;
            differs |= !lines.is_empty();
            for l in lines {
                println!("{l}");
            }
        }
        if differs {
            return Err(Exited(1).into());
        }
        Ok(())
    }

    /// The lines of one VN (none when it would not change).
    async fn diff(
        &self,
        opts: &ControllerOpts,
        doc: &spec::SpecDoc,
    ) -> anyhow::Result<Vec<String>> {
        let file = &doc.file;
        let ctl = Controller::connect(opts)
            .await?
            .or_provider(file.provider.as_deref())?;
        let name = &file.name;
        let vn = match ctl.vns().get(pb::GetVnRequest { name: name.clone() }).await {
            Ok(vn) => vn.into_inner(),
            Err(s) if s.code() == Code::NotFound => {
                return Ok(vec![format!("+ vn/{name} (new: would be created)")]);
            }
            Err(s) => return Err(rpc_error(&format!("diff vn {name}"), s)),
        };
        let spec_lines = vn
            .spec
            .as_ref()
            .map(|applied| spec::diff(applied, file))
            .unwrap_or_default();
        let out = ctl
            .vns()
            .update(pb::UpdateVnRequest {
                spec: Some(file.to_proto()),
                generation: doc.generation.unwrap_or(vn.generation),
                dry_run: true,
            })
            .await
            .map_err(|s| rpc_error(&format!("diff vn {name}"), s))?
            .into_inner();
        if !out.changed && spec_lines.is_empty() {
            return Ok(vec![]);
        }
        let mut lines = vec![format!(
            "~ vn/{name} (generation {} -> {}):",
            vn.generation,
            out.vn.as_ref().map_or(vn.generation, |v| v.generation)
        )];
        lines.extend(spec_lines.into_iter().map(|l| format!("    spec {l}")));
        lines.extend(
            plan_lines(&out.plan, false)
                .into_iter()
                .map(|l| format!("    {l}")),
        );
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeController, Outcome};

    #[tokio::test]
    async fn differences_exit_1_and_change_nothing() {
        let (fake, o) = FakeController::serving(Outcome::Ready, Some("red")).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vn.yaml");
        let spec = "name: web\nnodes: [{name: a, cpu: 10}]\n";
        std::fs::write(&file, spec).unwrap();
        let d = DiffArgs { file: file.clone() };
        let code = |r: anyhow::Result<()>| r.err().map(|e| crate::error::exit_code(&e));
        // Not there yet: a difference.
        assert_eq!(code(d.execute(&o).await), Some(1));
        assert!(fake.vn("red", "web").is_none());
        crate::commands::apply::ApplyArgs {
            file: file.clone(),
            wait: false,
            timeout: std::time::Duration::from_secs(5),
            dry_run: false,
        }
        .execute(&o)
        .await
        .unwrap();
        assert_eq!(code(d.execute(&o).await), None, "same spec: no difference");
        std::fs::write(&file, spec.replace("cpu: 10", "cpu: 20")).unwrap();
        assert_eq!(code(d.execute(&o).await), Some(1));
        let vn = fake.vn("red", "web").unwrap();
        assert_eq!(vn.spec.unwrap().nodes[0].cpu, 10, "diff changes nothing");
    }
}
