//! Waiting for a VN to become READY or to be gone, through `VirtualNetworks.Watch`, with a
//! timeout and visible progress (a spinner on a terminal, one line per event otherwise).

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::Code;
use vnet_proto::v1 as pb;

use crate::client::{Controller, rpc_error};
use crate::output::{event_kind, vn_state};

/// Shows progress on stderr: a spinner on a terminal, plain lines otherwise (logs, CI).
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(what: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .expect("static template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_message(what.to_owned());
            Progress { bar: Some(bar) }
        } else {
            eprintln!("{what}");
            Progress { bar: None }
        }
    }

    /// A line that stays (one per event).
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// The spinner's current message (not printed without a terminal).
    pub fn status(&self, text: &str) {
        if let Some(b) = &self.bar {
            b.set_message(text.to_owned());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One event as a progress line.
pub fn event_line(e: &pb::VnEvent) -> String {
    let mut s = format!("{} {} {}", e.name, event_kind(e.kind), vn_state(e.state));
    if !e.host.is_empty() {
        s.push_str(&format!(" host={}", e.host));
    }
    if !e.message.is_empty() {
        s.push_str(&format!(": {}", e.message));
    }
    s
}

/// What a watched event means for someone waiting for READY.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ready,
    /// Failed, rejected or deleted, with the reason.
    Failed(String),
}

/// Classifies an event of the VN being waited for.
pub fn ready_outcome(e: &pb::VnEvent) -> Outcome {
    use pb::VnEventKind as K;
    use pb::VnState as S;
    let kind = K::try_from(e.kind).unwrap_or(K::Unspecified);
    let state = S::try_from(e.state).unwrap_or(S::Unspecified);
    let why = |what: &str| {
        if e.message.is_empty() {
            what.to_owned()
        } else {
            format!("{what}: {}", e.message)
        }
    };
    match (kind, state) {
        (K::Ready, _) | (_, S::Ready) => Outcome::Ready,
        (K::Failed, _) | (_, S::Failed) => Outcome::Failed(why("failed")),
        (K::Rejected, _) => Outcome::Failed(why("rejected")),
        (K::Deleted, _) | (_, S::Deleted | S::Deleting) => {
            Outcome::Failed(why("deleted while waiting"))
        }
        _ => Outcome::Pending,
    }
}

/// Waits until `name` is READY. Fails when it fails, is deleted, or `timeout` passes.
pub async fn until_ready(ctl: &Controller, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let progress = Progress::new(&format!("waiting for vn/{name} to become READY"));
    let result = tokio::time::timeout(timeout, async {
        let mut stream = ctl.watch_vn(name).await?;
        loop {
            let Some(ev) = stream
                .message()
                .await
                .map_err(|s| rpc_error(&format!("watch vn {name}"), s))?
            else {
                anyhow::bail!("the controller closed the watch of vn/{name}");
            };
            if ev.name != name {
                continue;
            }
            progress.line(&event_line(&ev));
            progress.status(&format!("vn/{name}: {}", vn_state(ev.state)));
            match ready_outcome(&ev) {
                Outcome::Pending => {}
                Outcome::Ready => return Ok(()),
                Outcome::Failed(why) => anyhow::bail!("vn/{name} {why}"),
            }
        }
    })
    .await;
    progress.finish();
    match result {
        Ok(r) => r,
        Err(_) => {
            let detail = match ctl.vns().get(pb::GetVnRequest { name: name.into() }).await {
                Ok(vn) => {
                    let vn = vn.into_inner();
                    let hosts: Vec<String> =
                        vn.hosts.iter().map(|(h, s)| format!("{h}={s}")).collect();
                    format!(
                        "state {}, hosts: {}",
                        vn_state(vn.state),
                        if hosts.is_empty() {
                            "-".into()
                        } else {
                            hosts.join(" ")
                        }
                    )
                }
                Err(s) => format!("and it cannot be read: {}", s.message()),
            };
            anyhow::bail!(
                "timed out after {} waiting for vn/{name} to become READY ({detail}); \
                 `vnctl describe vn {name}` shows where it stands",
                humantime::format_duration(timeout)
            )
        }
    }
}

/// Waits until every VN in `names` is gone (a DELETED event, or Get says NOT_FOUND).
pub async fn until_deleted(
    ctl: &Controller,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let progress = Progress::new(&format!("waiting for {} to be deleted", names.join(", ")));
    let mut pending: BTreeSet<String> = names.iter().cloned().collect();
    let result = tokio::time::timeout(timeout, async {
        // Watch first, then check: a VN that went away in between is seen by the Get.
        let mut stream = ctl
            .vns()
            .watch(pb::WatchVnsRequest::default())
            .await
            .map_err(|s| rpc_error("watch vns", s))?
            .into_inner();
        for name in names {
            // Another provider's child of a shared VN, which a cascading Delete names
            // "provider/name": the caller can neither get nor watch it, and Delete returned only
            // after removing it; its teardown on the hosts is awaited below with the rest.
            if name.contains('/') {
                pending.remove(name);
                continue;
            }
            match ctl.vns().get(pb::GetVnRequest { name: name.clone() }).await {
                Err(s) if s.code() == Code::NotFound => {
                    pending.remove(name);
                }
                Ok(vn) if vn.get_ref().state == pb::VnState::Deleted as i32 => {
                    pending.remove(name);
                }
                Ok(_) => {}
                Err(s) => return Err(rpc_error(&format!("get vn {name}"), s)),
            }
        }
        while !pending.is_empty() {
            let ev = stream
                .message()
                .await
                .map_err(|s| rpc_error("watch vns", s))?
                .context("the controller closed the watch")?;
            if !pending.contains(&ev.name) {
                continue;
            }
            progress.line(&event_line(&ev));
            if ev.kind == pb::VnEventKind::Deleted as i32 || ev.state == pb::VnState::Deleted as i32
            {
                pending.remove(&ev.name);
            }
        }
        // The controller reports a VN deleted once it is out of every host's desired state;
        // wait until the hosts have applied that state, so that nothing of it is left running.
        progress.status("waiting for the hosts to finish tearing down");
        let target = host_generations(ctl).await?;
        loop {
            let now = host_generations(ctl).await?;
            let behind: Vec<String> = target
                .iter()
                .filter(|(id, (want, _))| {
                    now.get(*id)
                        .is_some_and(|(_, (obs, connected))| *connected && obs < want)
                })
                .map(|(id, _)| id.clone())
                .collect();
            if behind.is_empty() {
                break;
            }
            progress.status(&format!("hosts still tearing down: {}", behind.join(", ")));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok(())
    })
    .await;
    progress.finish();
    match result {
        Ok(r) => r,
        Err(_) => anyhow::bail!(
            "timed out after {} waiting for {} to be deleted",
            humantime::format_duration(timeout),
            pending.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Per host: (desired generation, (observed generation, connected)).
async fn host_generations(
    ctl: &Controller,
) -> anyhow::Result<std::collections::BTreeMap<String, (u64, (u64, bool))>> {
    let hosts = ctl.hosts().await.map_err(|s| rpc_error("list hosts", s))?;
    Ok(hosts
        .into_iter()
        .map(|h| {
            (
                h.id,
                (h.desired_generation, (h.observed_generation, h.connected)),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: pb::VnEventKind, state: pb::VnState, msg: &str) -> pb::VnEvent {
        pb::VnEvent {
            kind: kind as i32,
            name: "x".into(),
            state: state as i32,
            host: String::new(),
            message: msg.into(),
            unix_ms: 0,
            seq: 0,
        }
    }

    #[test]
    fn outcomes() {
        use pb::VnEventKind as K;
        use pb::VnState as S;
        assert_eq!(
            ready_outcome(&ev(K::Snapshot, S::Ready, "")),
            Outcome::Ready
        );
        assert_eq!(ready_outcome(&ev(K::Ready, S::Ready, "")), Outcome::Ready);
        assert_eq!(
            ready_outcome(&ev(K::Snapshot, S::Provisioning, "")),
            Outcome::Pending
        );
        assert_eq!(
            ready_outcome(&ev(K::HostProgress, S::Provisioning, "h1 ready")),
            Outcome::Pending
        );
        assert_eq!(
            ready_outcome(&ev(K::Failed, S::Failed, "h2: no tap")),
            Outcome::Failed("failed: h2: no tap".into())
        );
        assert!(matches!(
            ready_outcome(&ev(K::Deleted, S::Deleted, "")),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn event_lines() {
        let mut e = ev(
            pb::VnEventKind::HostProgress,
            pb::VnState::Provisioning,
            "slice ready",
        );
        e.host = "h2".into();
        assert_eq!(event_line(&e), "x HOST PROVISIONING host=h2: slice ready");
    }
}
