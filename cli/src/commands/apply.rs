//! `vnctl apply -f FILE|DIR|- [--dry-run] [--wait]`: create each VN of the source, update the
//! ones that exist and differ in place, retry FAILED ones; `vnctl diff -f ...` shows what apply
//! would change.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tonic::Code;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::output::vn_state;
use crate::spec;

/// Create or update virtual networks from YAML specs (kubectl style).
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The VN specs: a file (several documents separated by `---`), a directory of `*.yaml`,
    /// `*.yml` and `*.json` files, or `-` for standard input. `vnctl get vn NAME -o yaml`
    /// output is accepted (its generation guards against concurrent updates).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Wait until every VN is READY (watching its provisioning), or fail when one fails.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print what would be done (for an existing VN: the controller's plan, what stays, what
    /// moves, what is added or removed) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ApplyArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(self.execute(opts))
    }

    /// Applies every document, then (`--wait`) waits for all of them within one `--timeout`:
    /// the VNs provision side by side, not one after the other. One connection per provider.
    pub async fn execute(&self, opts: &ControllerOpts) -> anyhow::Result<()> {
        // Every document is checked before anything is sent: a bad one applies nothing.
        let docs = spec::load_all(&self.file)?;
        let mut conns: HashMap<Option<String>, Controller> = HashMap::new();
        let mut applied = Vec::new();
        for doc in &docs {
            let provider = doc.file.provider.clone();
            let ctl = match conns.get(&provider) {
                Some(c) => c.clone(),
                None => {
                    let c = Controller::connect(opts)
                        .await?
                        .or_provider(provider.as_deref())?;
                    conns.insert(provider, c.clone());
                    c
                }
            };
            self.apply(&ctl, doc).await?;
            applied.push((ctl, doc.file.name.clone()));
        }
        if self.wait && !self.dry_run {
            let deadline = tokio::time::Instant::now() + self.timeout;
            for (ctl, name) in &applied {
                // Whole milliseconds (rounded up): a timeout's message names what it waited.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let left = Duration::from_millis(left.as_micros().div_ceil(1000) as u64);
                crate::wait::until_ready(ctl, name, left).await?;
                println!("vn/{name} READY");
            }
        }
        Ok(())
    }

    async fn apply(&self, ctl: &Controller, doc: &spec::SpecDoc) -> anyhow::Result<()> {
        let file = &doc.file;
        let ctl = ctl.clone();
        let name = file.name.clone();
        let what = format!("apply vn {name}");

        let existing = match ctl.vns().get(pb::GetVnRequest { name: name.clone() }).await {
            Ok(vn) => Some(vn.into_inner()),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(rpc_error(&what, s)),
        };
        if self.dry_run {
            return match existing {
                None => {
                    println!("vn/{name} would be created (dry run)");
                    Ok(())
                }
                Some(vn) => update(&ctl, doc, &vn, true).await,
            };
        }
        let existing = match existing {
            Some(vn) => Some(vn),
            None => create(&ctl, file, &what).await?,
        };
        if let Some(vn) = existing {
            if vn.state == pb::VnState::Failed as i32 {
                self.retry(&ctl, file, &vn, &what).await?;
            } else {
                update(&ctl, doc, &vn, false).await?;
            }
        }
        Ok(())
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

/// Updates `vn` to the document's spec (or, `dry_run`, asks the controller for the plan) and
/// prints what was (or would be) done. The update names the generation the VN was read at (the
/// document's, else the Get's), so a concurrent change is refused, not overwritten.
pub async fn update(
    ctl: &Controller,
    doc: &spec::SpecDoc,
    vn: &pb::VirtualNetwork,
    dry_run: bool,
) -> anyhow::Result<()> {
    let name = &doc.file.name;
    let out = ctl
        .vns()
        .update(pb::UpdateVnRequest {
            spec: Some(doc.file.to_proto()),
            generation: doc.generation.unwrap_or(vn.generation),
            dry_run,
        })
        .await
        .map_err(|s| {
            let hint = if s.code() == Code::Aborted {
                " (another update came first: read it again with `vnctl get vn NAME -o yaml`)"
            } else {
                ""
            };
            anyhow::anyhow!("{}{hint}", rpc_error(&format!("update vn {name}"), s))
        })?
        .into_inner();
    let now = out.vn.as_ref();
    if !out.changed {
        println!(
            "vn/{name} unchanged ({})",
            vn_state(now.map_or(vn.state, |v| v.state))
        );
        return Ok(());
    }
    let generation = now.map_or(0, |v| v.generation);
    if dry_run {
        println!("vn/{name} would be updated to generation {generation} (dry run):");
    } else {
        println!(
            "vn/{name} updated to generation {generation} ({})",
            vn_state(now.map_or(vn.state, |v| v.state))
        );
    }
    for line in plan_lines(&out.plan, dry_run) {
        println!("  {line}");
    }
    Ok(())
}

/// The plan as lines: every change, and (`all`) what stays too.
pub fn plan_lines(plan: &[pb::PlanItem], all: bool) -> Vec<String> {
    plan.iter()
        .filter(|p| all || p.action != pb::PlanAction::Keep as i32)
        .map(|p| {
            let action = match pb::PlanAction::try_from(p.action) {
                Ok(pb::PlanAction::Keep) => "keep",
                Ok(pb::PlanAction::Change) => "change",
                Ok(pb::PlanAction::Move) => "move",
                Ok(pb::PlanAction::Add) => "add",
                Ok(pb::PlanAction::Remove) => "remove",
                _ => "?",
            };
            let what = if p.node.is_empty() {
                format!("link {}", p.endpoints.join("-"))
            } else {
                format!("node {}", p.node)
            };
            let place = match (p.from.is_empty(), p.to.is_empty()) {
                (false, false) if p.from != p.to => {
                    format!("{} -> {}", p.from.join(","), p.to.join(","))
                }
                (true, false) => p.to.join(","),
                _ => p.from.join(","),
            };
            let detail = if p.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", p.detail)
            };
            format!("{action:<6} {what} ({place}){detail}")
        })
        .collect()
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
            dry_run: false,
        }
    }

    #[tokio::test]
    async fn several_documents_are_all_created_then_all_waited_for() {
        let (fake, o) = FakeController::serving(Outcome::Ready, Some("red")).await;
        let dir = tempfile::tempdir().unwrap();
        let two = format!("{SPEC}---\n{}", SPEC.replace("name: web", "name: db"));
        args(dir.path(), &two, true).execute(&o).await.unwrap();
        assert_eq!(fake.creates(), 2);
        for name in ["web", "db"] {
            assert_eq!(
                fake.vn("red", name).unwrap().state,
                pb::VnState::Ready as i32,
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn create_then_unchanged_then_updated_in_place() {
        let (fake, o) = FakeController::serving(Outcome::Ready, Some("red")).await;
        let dir = tempfile::tempdir().unwrap();
        args(dir.path(), SPEC, true).execute(&o).await.unwrap();
        assert_eq!(
            fake.vn("red", "web").unwrap().state,
            pb::VnState::Ready as i32
        );
        // The same file again: unchanged, success.
        args(dir.path(), SPEC, false).execute(&o).await.unwrap();
        assert_eq!(fake.creates(), 1);
        // A different demand, as a dry run: nothing changes.
        let changed = SPEC.replace("{name: b, cpu: 10}", "{name: b, cpu: 30}");
        let mut dry = args(dir.path(), &changed, false);
        dry.dry_run = true;
        dry.execute(&o).await.unwrap();
        assert_eq!(
            fake.vn("red", "web").unwrap().spec.unwrap().nodes[1].cpu,
            10
        );
        // Applied: updated in place (no delete, no second create), one generation more.
        args(dir.path(), &changed, false).execute(&o).await.unwrap();
        let vn = fake.vn("red", "web").unwrap();
        assert_eq!(vn.spec.unwrap().nodes[1].cpu, 30);
        assert_eq!(vn.generation, 2);
        assert_eq!(fake.creates(), 1);
        // A document read at an older generation is refused, told to read again.
        let stale = "generation: 1\nspec:\n  name: web\n  nodes: [{name: a, cpu: 10}]\n";
        let e = args(dir.path(), stale, false)
            .execute(&o)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("read it again"), "{e}");
        assert_eq!(fake.vn("red", "web").unwrap().generation, 2);
        // Identity travelled on every call.
        assert!(
            fake.providers_seen()
                .iter()
                .all(|p| p.as_deref() == Some("red"))
        );
    }

    #[test]
    fn the_plan_reads_as_lines() {
        let item = |node: &str, ends: &[&str], a: pb::PlanAction, from: &[&str], to: &[&str]| {
            pb::PlanItem {
                node: node.into(),
                endpoints: ends.iter().map(|s| s.to_string()).collect(),
                action: a as i32,
                from: from.iter().map(|s| s.to_string()).collect(),
                to: to.iter().map(|s| s.to_string()).collect(),
                detail: String::new(),
            }
        };
        let plan = [
            item("a", &[], pb::PlanAction::Keep, &["h1"], &["h1"]),
            item("c", &[], pb::PlanAction::Move, &["h3"], &["h4"]),
            item("", &["c", "d"], pb::PlanAction::Add, &[], &["h4", "h2"]),
            item("", &["a", "b"], pb::PlanAction::Remove, &["h1", "h2"], &[]),
        ];
        assert_eq!(
            plan_lines(&plan, false),
            [
                "move   node c (h3 -> h4)",
                "add    link c-d (h4,h2)",
                "remove link a-b (h1,h2)"
            ]
        );
        assert_eq!(plan_lines(&plan, true)[0], "keep   node a (h1)");
    }

    #[tokio::test]
    async fn reapplying_a_failed_vn_retries_it() {
        let (fake, o) = FakeController::serving(Outcome::FailOnce, Some("red")).await;
        let dir = tempfile::tempdir().unwrap();
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
        let (fake, o) = FakeController::serving(Outcome::Ready, None).await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!("provider: blue\n{SPEC}");
        args(dir.path(), &text, false).execute(&o).await.unwrap();
        assert!(fake.vn("blue", "web").is_some());
    }

    /// Without `--as` and without `provider:` in the spec, the credential's own provider is
    /// meant: no acting-as header is sent (the fake, which has no tokens, refuses the call).
    #[tokio::test]
    async fn no_provider_sends_no_act_as() {
        let (fake, o) = FakeController::serving(Outcome::Ready, None).await;
        let dir = tempfile::tempdir().unwrap();
        let e = args(dir.path(), SPEC, false)
            .execute(&o)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("VNET_CONFIG"), "{e}");
        assert!(fake.providers_seen().iter().all(Option::is_none));
    }

    #[tokio::test]
    async fn wait_reports_failure_with_the_hosts_reason() {
        let (_, o) = FakeController::serving(Outcome::Fail, Some("red")).await;
        let dir = tempfile::tempdir().unwrap();
        let e = args(dir.path(), SPEC, true)
            .execute(&o)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "vn/web failed: h2: no tap");
    }

    #[tokio::test]
    async fn wait_times_out_naming_the_state() {
        let (_, o) = FakeController::serving(Outcome::Hang, Some("red")).await;
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path(), SPEC, true);
        a.timeout = Duration::from_millis(300);
        let e = a.execute(&o).await.unwrap_err().to_string();
        assert!(
            e.starts_with("timed out after 300ms waiting for vn/web"),
            "{e}"
        );
        assert!(e.contains("state PROVISIONING"), "{e}");
    }

    #[tokio::test]
    async fn controller_validation_errors_are_one_line() {
        let (fake, o) = FakeController::serving(Outcome::Ready, Some("red")).await;
        let dir = tempfile::tempdir().unwrap();
        let text = SPEC.replace("{name: a, cpu: 10}", "{name: a, cpu: -1}");
        let e = args(dir.path(), &text, false)
            .execute(&o)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "apply vn web: invalid: nodes[0].cpu: must be >= 0");
        assert!(fake.vn("red", "web").is_none());
    }
}
