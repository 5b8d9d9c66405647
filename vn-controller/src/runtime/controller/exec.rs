//! Exec sessions: a tenant's `Exec` call relayed to the agent of the node's host.
//!
//! [`Controller::exec`] checks the caller's VN and node (on an attached host), registers the
//! command under a random request id in the host's agent slot and sends `ExecCommand` over the
//! agent's `Attach` stream. The agent answers by opening `AgentControl.Exec` (a stream of its
//! own, on a connection of its own) naming that id; [`Controller::exec_opened`] hands that
//! stream's two ends to the waiting session. From there the gRPC layer relays, one bounded
//! channel each way: nothing of a command's output passes through the `Attach` stream, and a
//! slow reader slows only its own command.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use vnet_proto::v1 as pb;

use super::{ControlError, Controller, lock};
use crate::core::model::ProviderId;

/// How long the agent has to open the exec stream after the command was sent.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's end of one command: its output, and where its input goes.
pub struct AgentExec {
    pub up: mpsc::Receiver<pb::ExecUp>,
    pub down: mpsc::Sender<pb::ExecDown>,
}

/// What the caller asked to run (validated at the edge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOpts {
    pub argv: Vec<String>,
    /// 0: the controller's default.
    pub timeout_ms: u32,
    /// A terminal of (rows, cols).
    pub tty: Option<(u32, u32)>,
}

/// An opened exec session.
pub struct ExecSession {
    pub agent: AgentExec,
    /// The command's timeout is over by then (with a margin for the agent to report).
    pub deadline: Instant,
    /// "exec in VN/NODE", for messages.
    pub what: String,
    pub host: String,
}

/// Removes a command's pending entry when dropped.
struct Pending<'a> {
    ctl: &'a Controller,
    host: &'a str,
    request_id: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(slot) = lock(&self.ctl.shared.agents).get_mut(self.host) {
            slot.pending.remove(&self.request_id);
        }
    }
}

impl Controller {
    /// Starts a command in a virtual node and waits until its host's agent opened the stream.
    #[tracing::instrument(skip(self, opts))]
    pub async fn exec(
        &self,
        provider: &ProviderId,
        vn: &str,
        node: &str,
        opts: ExecOpts,
    ) -> Result<ExecSession, ControlError> {
        let (rec, i) = self.running_node(provider, vn, node)?;
        let placed = &rec.placement.nodes[i];
        let timeout = if opts.timeout_ms == 0 {
            self.shared.cfg.exec_timeout
        } else {
            Duration::from_millis(u64::from(opts.timeout_ms))
        };
        let what = format!("exec in {vn}/{node}");
        // The id is the only thing that ties the agent's stream to this command: unguessable.
        let request_id: u64 = rand::random();
        let (tx, rx) = oneshot::channel();
        let exec_tx = self.with_slot(&placed.host, node, |slot| {
            slot.pending.insert(request_id, tx);
            slot.exec_tx.clone()
        })?;
        // However this ends (also when the caller goes away while waiting), the id is not
        // left pending.
        let _pending = Pending {
            ctl: self,
            host: &placed.host,
            request_id,
        };
        let (rows, cols) = opts.tty.unwrap_or((0, 0));
        let sent = exec_tx
            .send(pb::ExecCommand {
                request_id,
                node_id: placed.node_id.clone(),
                argv: opts.argv,
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                tty: opts.tty.is_some(),
                rows,
                cols,
                max_output_bytes: self.shared.cfg.exec_max_output,
            })
            .await;
        if sent.is_err() {
            return Err(ControlError::Unavailable(format!(
                "{what}: host {} went away",
                placed.host
            )));
        }
        let agent = match tokio::time::timeout(OPEN_TIMEOUT, rx).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => {
                return Err(ControlError::Unavailable(format!(
                    "{what}: host {} went away",
                    placed.host
                )));
            }
            Err(_) => {
                return Err(ControlError::Unavailable(format!(
                    "{what}: the agent of host {} did not open the command's stream within {} s",
                    placed.host,
                    OPEN_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(ExecSession {
            agent,
            deadline: Instant::now() + timeout + Duration::from_secs(5),
            what,
            host: placed.host.clone(),
        })
    }

    /// The agent of `host` opened the stream of command `request_id`: where to hand it, when
    /// that command is pending on that host (each id is taken once).
    pub fn exec_opened(&self, host: &str, request_id: u64) -> Option<oneshot::Sender<AgentExec>> {
        lock(&self.shared.agents)
            .get_mut(host)
            .and_then(|slot| slot.pending.remove(&request_id))
    }
}
