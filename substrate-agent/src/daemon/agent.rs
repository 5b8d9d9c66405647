//! The daemon: one `Attach` session with the controller (dialled by the agent, re-dialled with
//! backoff) and one reconcile loop.
//!
//! The session forwards every `DesiredState` to the reconcile loop through a watch channel (only
//! the newest matters: a newer one cancels the apply in progress between phases), serves each
//! `ExecCommand` on an `AgentControl.Exec` stream of its own ([`crate::daemon::exec`]), runs guests' console sessions ([`crate::daemon::console`]), and sends each
//! `ObservedState` the loop produces (and the latest one again after every reconnect). The loop
//! also re-runs every `resync` interval, so drift on the host and slices that failed are retried
//! without a new desired state.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use vnet_proto::v1 as pb;
use vnet_proto::v1::agent_control_client::AgentControlClient;

use crate::guest::GuestRuntime;
use crate::host::kernel::Kernel;
use crate::reconcile::apply::{ApplyReport, Env, apply};
use crate::reconcile::naming::Naming;
use crate::reconcile::observe::observe;
use crate::reconcile::plan::{PlanContext, plan};
use crate::reconcile::spec::{Desired, NodeId, NodeKind};
use crate::reconcile::state::{Ledger, StateDir};
use crate::vlan::config::DatapathControl;

/// Configuration of a running agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub host_id: String,
    /// `http://host:port` of the controller.
    pub controller: String,
    pub underlay_address: IpAddr,
    pub underlay: Vec<pb::UnderlayInterface>,
    pub state_dir: PathBuf,
    pub capacity: pb::Resources,
    pub labels: Vec<String>,
    pub name_prefix: String,
    pub workers: usize,
    pub resync: Duration,
    pub capabilities: pb::Capabilities,
    /// TLS to the controller: its CA and this host's certificate (`None`: plain text).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

/// The agent.
pub struct Agent<K: Kernel + 'static> {
    pub cfg: AgentConfig,
    pub naming: Naming,
    pub kernel: Arc<K>,
    pub ledger: Arc<StateDir>,
    pub datapath: Arc<dyn DatapathControl>,
    pub guests: Option<Arc<dyn GuestRuntime>>,
    /// The newest desired state, validated (for exec).
    latest: Mutex<Option<Desired>>,
}

/// `/proc/sys/kernel/random/boot_id`.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl<K: Kernel + 'static> Agent<K> {
    pub fn new(
        cfg: AgentConfig,
        kernel: Arc<K>,
        ledger: Arc<StateDir>,
        datapath: Arc<dyn DatapathControl>,
        guests: Option<Arc<dyn GuestRuntime>>,
    ) -> Self {
        let naming = Naming::new(cfg.name_prefix.clone(), cfg.host_id.clone());
        Self {
            cfg,
            naming,
            kernel,
            ledger,
            datapath,
            guests,
            latest: Mutex::new(None),
        }
    }

    /// The first message of every session.
    pub fn hello(&self) -> pb::AgentHello {
        let mut kinds = vec![pb::NodeKind::Netns as i32];
        if self.guests.is_some() {
            kinds.push(pb::NodeKind::Vm as i32);
        }
        pb::AgentHello {
            host_id: self.cfg.host_id.clone(),
            underlay_address: self.cfg.underlay_address.to_string(),
            underlay: self.cfg.underlay.clone(),
            capacity: Some(self.cfg.capacity),
            node_kinds: kinds,
            labels: self.cfg.labels.clone(),
            capabilities: Some(self.cfg.capabilities.clone()),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            applied_generation: self.ledger.applied_generation(),
            boot_id: boot_id(),
            images: self
                .guests
                .as_ref()
                .map(|g| g.images())
                .unwrap_or_default()
                .into_iter()
                .map(|i| pb::GuestImage {
                    name: i.name,
                    format: i.format,
                    arch: i.arch,
                    size_bytes: i.size_bytes,
                    digest: i.digest,
                })
                .collect(),
        }
    }

    /// One reconcile pass: observe, plan, apply. Blocking.
    pub fn reconcile(&self, msg: &pb::DesiredState, cancel: &AtomicBool) -> pb::ObservedState {
        let desired = Desired::from_proto(msg);
        *self.latest.lock().expect("latest") = Some(desired.clone());
        let (report, warnings) = match self.reconcile_desired(&desired, cancel) {
            Ok(r) => r,
            Err(e) => {
                return not_applied(
                    msg.generation,
                    desired.slices.keys().map(ToString::to_string),
                    vec![format!("{e:#}")],
                );
            }
        };
        let mut o = observed_state(msg.generation, &desired, &report);
        o.warnings = warnings;
        o
    }

    /// Observes, plans and applies; returns the outcome and what observation skipped.
    fn reconcile_desired(
        &self,
        desired: &Desired,
        cancel: &AtomicBool,
    ) -> anyhow::Result<(ApplyReport, Vec<String>)> {
        let guests: BTreeSet<String> = match &self.guests {
            Some(g) => g
                .observed()
                .context("list guests")?
                .into_iter()
                .filter(|g| g.running)
                .map(|g| g.node_id)
                .collect(),
            None => BTreeSet::new(),
        };
        let obs = observe(
            self.kernel.as_ref(),
            &self.naming,
            self.ledger.as_ref(),
            guests,
            self.cfg.workers,
        )
        .context("observe the host")?;
        if !obs.stale_records.is_empty() {
            self.ledger.forget(&obs.stale_records)?;
        }
        let p = plan(
            &self.naming,
            desired,
            &obs.observed,
            PlanContext {
                guests_supported: self.guests.is_some(),
                vlan_bpf: self.datapath.bpf(),
            },
        );
        for (vn, e) in &desired.invalid {
            tracing::warn!(vn = %vn, error = %e, "invalid slice");
        }
        tracing::info!(
            generation = desired.generation,
            ops = p.ops.len(),
            wires = p.wires.len(),
            failed = p.failed.len(),
            "plan"
        );
        let env = Env {
            kernel: self.kernel.as_ref(),
            ledger: self.ledger.as_ref(),
            datapath: self.datapath.as_ref(),
            guests: self.guests.as_deref(),
            workers: self.cfg.workers,
            cancel: Some(cancel),
        };
        let report = apply(&env, &p);
        if !report.superseded {
            self.ledger.set_applied_generation(desired.generation)?;
        }
        for (vn, e) in &report.failed {
            tracing::warn!(vn = %vn, error = %e, "slice failed");
        }
        for e in &report.errors {
            tracing::warn!(error = %e, "host error");
        }
        Ok((report, obs.warnings))
    }

    /// The kind of node `node` on this host, from the newest desired state.
    fn node_kind(&self, node: &NodeId) -> Option<NodeKind> {
        self.latest.lock().expect("latest").as_ref().and_then(|d| {
            d.slices
                .values()
                .find_map(|s| s.node(node).map(|n| n.kind.clone()))
        })
    }

    /// The controller's endpoint (one per session, and one per exec: a command's output never
    /// shares a connection, and so HTTP/2 flow-control windows, with the control session).
    fn endpoint(&self) -> anyhow::Result<tonic::transport::Endpoint> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.cfg.controller.clone())
            .context("controller address")?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        match &self.cfg.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .context("TLS configuration"),
            None => Ok(endpoint),
        }
    }

    /// Serves one `ExecCommand`: opens `AgentControl.Exec` for it on a connection of its own,
    /// runs the command there and ends with its exit.
    pub async fn serve_exec(self: Arc<Self>, cmd: pb::ExecCommand) -> anyhow::Result<()> {
        let channel = self
            .endpoint()?
            .connect()
            .await
            .context("connect for exec")?;
        let mut client = AgentControlClient::new(channel);
        let (out, out_rx) = mpsc::channel::<pb::ExecUp>(4);
        out.send(pb::ExecUp {
            msg: Some(pb::exec_up::Msg::Open(pb::ExecAgentOpen {
                host_id: self.cfg.host_id.clone(),
                request_id: cmd.request_id,
            })),
        })
        .await?;
        let mut down = client
            .exec(ReceiverStream::new(out_rx))
            .await
            .context("open the exec stream")?
            .into_inner();
        let (input_tx, input) = mpsc::channel(16);
        let (gone_tx, gone) = tokio::sync::oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            // Dropping `gone_tx` at the end tells the command that the caller went away.
            let _gone = gone_tx;
            while let Ok(Some(m)) = down.message().await {
                let i = match m.msg {
                    Some(pb::exec_down::Msg::Stdin(d)) => crate::daemon::exec::Input::Stdin(d),
                    Some(pb::exec_down::Msg::StdinEof(_)) => crate::daemon::exec::Input::Eof,
                    Some(pb::exec_down::Msg::Resize(w)) => {
                        crate::daemon::exec::Input::Resize(clamp_u16(w.rows), clamp_u16(w.cols))
                    }
                    None => continue,
                };
                if input_tx.send(i).await.is_err() {
                    // The command no longer reads: keep the stream open until its end.
                }
            }
        });
        let exit = self.run_exec(&cmd, input, &out, gone).await;
        let _ = out
            .send(pb::ExecUp {
                msg: Some(pb::exec_up::Msg::Exit(exit)),
            })
            .await;
        drop(out);
        // The controller ends the call after the exit; give it a moment, then let go.
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        Ok(())
    }

    /// Runs `cmd` in its node and returns how it ended.
    async fn run_exec(
        &self,
        cmd: &pb::ExecCommand,
        input: mpsc::Receiver<crate::daemon::exec::Input>,
        out: &mpsc::Sender<pb::ExecUp>,
        gone: tokio::sync::oneshot::Receiver<()>,
    ) -> pb::ExecExit {
        use crate::daemon::exec::{ExecSpec, failed};
        let node = match NodeId::parse(&cmd.node_id) {
            Ok(n) => n,
            Err(e) => return failed(pb::ExecFailure::NotRun, e.0),
        };
        let spec = ExecSpec {
            argv: cmd.argv.clone(),
            timeout: Duration::from_millis(if cmd.timeout_ms == 0 {
                30_000
            } else {
                u64::from(cmd.timeout_ms)
            }),
            tty: cmd
                .tty
                .then(|| (clamp_u16(cmd.rows).max(1), clamp_u16(cmd.cols).max(1))),
            max_output: if cmd.max_output_bytes == 0 {
                u64::MAX
            } else {
                cmd.max_output_bytes
            },
            hide: vec![
                std::fs::canonicalize(&self.cfg.state_dir)
                    .unwrap_or_else(|_| self.cfg.state_dir.clone()),
            ],
        };
        match self.node_kind(&node) {
            None => failed(
                pb::ExecFailure::NotRun,
                format!("node {node} is not on host {}", self.cfg.host_id),
            ),
            Some(NodeKind::Netns) => {
                crate::daemon::exec::run_in_netns(
                    &self.naming.node_ns(&node),
                    &spec,
                    input,
                    out.clone(),
                    gone,
                )
                .await
            }
            Some(NodeKind::Vm(_)) => match self.guests.clone() {
                None => failed(
                    pb::ExecFailure::NotRun,
                    "no guest runtime on this agent".into(),
                ),
                Some(g) => crate::daemon::exec::run_in_guest(g, node.as_str(), &spec, out).await,
            },
        }
    }

    /// The guest runtime when `node_id` is a VM node of this host, else why it has no console.
    pub fn console_target(&self, node_id: &str) -> Result<Arc<dyn GuestRuntime>, String> {
        let node = NodeId::parse(node_id).map_err(|e| e.0)?;
        match self.node_kind(&node) {
            None => Err(format!("node {node} is not on host {}", self.cfg.host_id)),
            Some(NodeKind::Netns) => Err(format!(
                "console is for vm nodes: node {node} is a netns node (use exec)"
            )),
            Some(NodeKind::Vm(_)) => self
                .guests
                .clone()
                .ok_or_else(|| "no guest runtime on this agent".into()),
        }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let (desired_tx, desired_rx) = watch::channel::<Option<pb::DesiredState>>(None);
        let (report_tx, report_rx) = watch::channel::<Option<pb::ObservedState>>(None);
        let current_cancel: Arc<Mutex<Arc<AtomicBool>>> =
            Arc::new(Mutex::new(Arc::new(AtomicBool::new(false))));
        let reconciler = tokio::spawn(reconcile_loop(
            self.clone(),
            desired_rx,
            report_tx,
            current_cancel.clone(),
            shutdown.clone(),
        ));
        let mut backoff = crate::daemon::backoff::Backoff::agent();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut attached_at = None;
            let session = self.session(
                &desired_tx,
                report_rx.clone(),
                &current_cancel,
                shutdown.clone(),
                &mut attached_at,
            );
            tokio::select! {
                r = session => if let Err(e) = r {
                    tracing::warn!(controller = %self.cfg.controller, error = %format!("{e:#}"), "session ended");
                },
                _ = shutdown.changed() => break,
            }
            let delay = backoff.next_delay(attached_at.map(|t: tokio::time::Instant| t.elapsed()));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => break,
            }
        }
        current_cancel
            .lock()
            .expect("cancel")
            .store(true, Ordering::Relaxed);
        reconciler.abort();
        Ok(())
    }

    async fn session(
        self: &Arc<Self>,
        desired_tx: &watch::Sender<Option<pb::DesiredState>>,
        mut report_rx: watch::Receiver<Option<pb::ObservedState>>,
        current_cancel: &Arc<Mutex<Arc<AtomicBool>>>,
        mut shutdown: watch::Receiver<bool>,
        attached_at: &mut Option<tokio::time::Instant>,
    ) -> anyhow::Result<()> {
        let channel = self.endpoint()?.connect().await.context("connect")?;
        let mut client = AgentControlClient::new(channel);
        let (out_tx, out_rx) = mpsc::channel::<pb::AgentMessage>(64);
        out_tx
            .send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Hello(self.hello())),
            })
            .await?;
        let mut inbound = client
            .attach(ReceiverStream::new(out_rx))
            .await
            .context("attach")?
            .into_inner();
        tracing::info!(controller = %self.cfg.controller, "attached");
        *attached_at = Some(tokio::time::Instant::now());
        // The latest report again (the controller may have restarted).
        report_rx.mark_changed();
        // Console sessions live as long as this stream.
        let mut consoles = crate::daemon::console::ConsoleSessions::new();
        loop {
            tokio::select! {
                m = inbound.message() => {
                    let Some(m) = m.context("stream")? else {
                        anyhow::bail!("controller closed the stream");
                    };
                    match m.msg {
                        Some(pb::controller_message::Msg::Desired(d)) => {
                            tracing::info!(generation = d.generation, slices = d.vns.len(), "desired state");
                            current_cancel.lock().expect("cancel").store(true, Ordering::Relaxed);
                            desired_tx.send_replace(Some(d));
                        }
                        Some(pb::controller_message::Msg::Exec(cmd)) => {
                            let me = self.clone();
                            let id = cmd.request_id;
                            tokio::spawn(async move {
                                if let Err(e) = me.serve_exec(cmd).await {
                                    tracing::warn!(request = id, error = %format!("{e:#}"), "exec");
                                }
                            });
                        }
                        Some(pb::controller_message::Msg::ConsoleStart(c)) => {
                            let target = self.console_target(&c.node_id);
                            consoles.start(c, target, out_tx.clone());
                        }
                        Some(pb::controller_message::Msg::ConsoleInput(i)) => consoles.input(i),
                        Some(pb::controller_message::Msg::ConsoleStop(s)) => consoles.stop(s.session_id),
                        None => {}
                    }
                }
                r = report_rx.changed() => {
                    r.context("reconcile loop ended")?;
                    let rep = report_rx.borrow_and_update().clone();
                    if let Some(rep) = rep {
                        out_tx.send(pb::AgentMessage {
                            msg: Some(pb::agent_message::Msg::Observed(rep)),
                        }).await?;
                    }
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

async fn reconcile_loop<K: Kernel + 'static>(
    agent: Arc<Agent<K>>,
    mut desired_rx: watch::Receiver<Option<pb::DesiredState>>,
    report_tx: watch::Sender<Option<pb::ObservedState>>,
    current_cancel: Arc<Mutex<Arc<AtomicBool>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let resync = agent.cfg.resync;
    let mut last_generation = None;
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    let mut next_resync = tokio::time::Instant::now() + resync;
    loop {
        tokio::select! {
            r = desired_rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(next_resync) => {}
            _ = watchdog.tick() => {
                let dp = agent.datapath.clone();
                let healthy = tokio::task::spawn_blocking(move || dp.healthy()).await.unwrap_or(true);
                if healthy {
                    continue;
                }
                tracing::warn!("the VLAN datapath is not running: reconciling now");
            }
            _ = shutdown.changed() => return,
        }
        next_resync = tokio::time::Instant::now() + resync;
        let Some(d) = desired_rx.borrow_and_update().clone() else {
            continue;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        *current_cancel.lock().expect("cancel") = cancel.clone();
        // A new generation is PROVISIONING until applied; a resync of the same one reports only
        // its outcome (no READY -> PROVISIONING -> READY flapping every resync).
        if last_generation != Some(d.generation) {
            last_generation = Some(d.generation);
            report_tx.send_replace(Some(not_applied(
                d.generation,
                d.vns.iter().map(|s| s.vn_id.clone()),
                vec![],
            )));
        }
        let a = agent.clone();
        let c = cancel.clone();
        let res = tokio::task::spawn_blocking(move || a.reconcile(&d, &c)).await;
        match res {
            Ok(rep) if !cancel.load(Ordering::Relaxed) => {
                // Resyncs that change nothing are not re-sent.
                report_tx.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&rep) {
                        return false;
                    }
                    *cur = Some(rep);
                    true
                });
            }
            Ok(_) => {
                // Superseded: the next pass reports the newer generation.
                last_generation = None;
                tracing::info!("apply superseded by a newer desired state");
            }
            Err(e) => tracing::error!(error = %e, "reconcile task failed"),
        }
    }
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// A report about `generation` that is not the outcome of applying it (the notice that the
/// agent started on it, or why it could not): every slice PROVISIONING.
fn not_applied(
    generation: u64,
    vn_ids: impl IntoIterator<Item = String>,
    errors: Vec<String>,
) -> pb::ObservedState {
    pb::ObservedState {
        generation,
        converged: false,
        applied: false,
        vns: vn_ids
            .into_iter()
            .map(|vn_id| pb::VnObserved {
                vn_id,
                state: pb::SliceState::Provisioning as i32,
                message: String::new(),
            })
            .collect(),
        errors,
        warnings: vec![],
    }
}

/// The report of one apply.
pub fn observed_state(
    generation: u64,
    desired: &Desired,
    report: &ApplyReport,
) -> pb::ObservedState {
    let mut vns = Vec::new();
    for vn in desired.slices.keys() {
        match report.failed.get(vn) {
            Some(e) => vns.push(pb::VnObserved {
                vn_id: vn.to_string(),
                state: pb::SliceState::Failed as i32,
                message: e.clone(),
            }),
            None => vns.push(pb::VnObserved {
                vn_id: vn.to_string(),
                state: pb::SliceState::Ready as i32,
                message: String::new(),
            }),
        }
    }
    for (vn, e) in &desired.invalid {
        vns.push(pb::VnObserved {
            vn_id: vn.clone(),
            state: pb::SliceState::Failed as i32,
            message: e.clone(),
        });
    }
    let converged =
        vns.iter().all(|v| v.state == pb::SliceState::Ready as i32) && report.errors.is_empty();
    pb::ObservedState {
        generation,
        converged,
        vns,
        errors: report.errors.clone(),
        applied: true,
        warnings: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::spec::VnId;

    #[test]
    fn report_lists_every_slice_with_its_state() {
        let msg = pb::DesiredState {
            generation: 4,
            vns: vec![
                crate::reconcile::spec::tests::slice("va", &["a1"], vec![]),
                crate::reconcile::spec::tests::slice("vb", &["b1"], vec![]),
                crate::reconcile::spec::tests::slice("BAD", &["c1"], vec![]),
            ],
        };
        let d = Desired::from_proto(&msg);
        let mut r = ApplyReport::default();
        r.failed
            .insert(VnId::parse("vb").unwrap(), "vn vb: boom".into());
        let o = observed_state(4, &d, &r);
        assert_eq!(o.generation, 4);
        assert!(!o.converged);
        let st = |id: &str| o.vns.iter().find(|v| v.vn_id == id).unwrap().clone();
        assert_eq!(st("va").state, pb::SliceState::Ready as i32);
        assert_eq!(st("vb").state, pb::SliceState::Failed as i32);
        assert_eq!(st("vb").message, "vn vb: boom");
        assert_eq!(st("BAD").state, pb::SliceState::Failed as i32);
        assert!(st("BAD").message.contains("[a-z0-9]"));
        let ok = observed_state(
            4,
            &Desired::from_proto(&pb::DesiredState {
                generation: 4,
                vns: vec![crate::reconcile::spec::tests::slice("va", &["a1"], vec![])],
            }),
            &ApplyReport::default(),
        );
        assert!(ok.converged);
    }
}
