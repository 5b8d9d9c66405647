//! Console sessions: a tenant's `Console` call relayed to the agent of the guest's host.
//!
//! [`Controller::console`] checks the caller's VN and node (a guest, on an attached host),
//! registers a route for the session in the host's agent slot and sends `ConsoleStart` over the
//! agent's `Attach` stream. The agent's `ConsoleOutput` messages come back through
//! [`Controller::console_output`] into the session's channel. Dropping the [`ConsoleSession`]
//! (the caller went away) removes the route and sends `ConsoleStop`. When the agent's session
//! ends, its slot and with it every route are dropped: the channel closes without an end, which
//! the session reports as the host having gone away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use vnet_proto::v1 as pb;

use super::{ControlError, Controller, lock};
use crate::core::model::{Kind, ProviderId};

/// Events of one session that may wait for the caller; one that falls further behind is ended.
const OUTPUT_QUEUE: usize = 256;

/// Session ids: unique in this process (and so on every agent stream).
static SESSION_SEQ: AtomicU64 = AtomicU64::new(0);

/// What the caller asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleOpts {
    /// Bytes of the log's tail to send first.
    pub tail_bytes: u32,
    /// Keep sending what the guest prints.
    pub follow: bool,
    /// Accept input (implies follow).
    pub interactive: bool,
}

/// What a session delivers.
#[derive(Debug, PartialEq)]
pub enum ConsoleEvent {
    /// Console output.
    Data(Vec<u8>),
    /// The session ended normally (a tail without follow was sent).
    End,
    /// The session ended with an error.
    Failed(ControlError),
}

/// The routing entry of one session in its host's agent slot.
pub(super) struct Route {
    tx: mpsc::Sender<ConsoleEvent>,
    /// Why the channel closed without an end, when the controller closed it (overflow).
    reason: Arc<Mutex<Option<ControlError>>>,
    what: String,
}

/// An open console session. Dropping it ends the session on the agent.
pub struct ConsoleSession {
    output: mpsc::Receiver<ConsoleEvent>,
    reason: Arc<Mutex<Option<ControlError>>>,
    input: Option<mpsc::Sender<pb::controller_message::Msg>>,
    ctl: Controller,
    host: String,
    epoch: u64,
    id: u64,
    what: String,
    done: bool,
}

impl ConsoleSession {
    /// The next event; after [`ConsoleEvent::End`] or [`ConsoleEvent::Failed`], `None`.
    pub async fn next(&mut self) -> Option<ConsoleEvent> {
        if self.done {
            return None;
        }
        let e = match self.output.recv().await {
            Some(e) => e,
            None => ConsoleEvent::Failed(lock(&self.reason).take().unwrap_or_else(|| {
                ControlError::Unavailable(format!(
                    "{}: host {} went away (its agent disconnected)",
                    self.what, self.host
                ))
            })),
        };
        self.done = !matches!(e, ConsoleEvent::Data(_));
        Some(e)
    }

    /// Types `data` into the console. Fails for a session that is not interactive, or when the
    /// host went away.
    pub async fn input(&self, data: Vec<u8>) -> Result<(), ControlError> {
        let tx = self.input.as_ref().ok_or_else(|| {
            ControlError::InvalidArgument(format!(
                "{}: input needs an interactive session (ConsoleOpen.interactive)",
                self.what
            ))
        })?;
        tx.send(pb::controller_message::Msg::ConsoleInput(
            pb::ConsoleInput {
                session_id: self.id,
                data,
            },
        ))
        .await
        .map_err(|_| {
            ControlError::Unavailable(format!("{}: host {} went away", self.what, self.host))
        })
    }
}

impl Drop for ConsoleSession {
    fn drop(&mut self) {
        let mut agents = lock(&self.ctl.shared.agents);
        if let Some(slot) = agents.get_mut(&self.host).filter(|s| s.epoch == self.epoch) {
            slot.end_console(self.id);
        }
    }
}

impl super::AgentSlot {
    /// Forgets the route of session `id` and, when it was still open, ends it on the agent. A
    /// full queue means the agent's stream is stuck; the session ends with the stream then.
    fn end_console(&mut self, id: u64) {
        if self.consoles.remove(&id).is_some() {
            let _ = self
                .console_tx
                .try_send(pb::controller_message::Msg::ConsoleStop(pb::ConsoleStop {
                    session_id: id,
                }));
        }
    }
}

impl Controller {
    /// Opens a console session on the guest `node` of the caller's VN `vn`.
    #[tracing::instrument(skip(self))]
    pub async fn console(
        &self,
        provider: &ProviderId,
        vn: &str,
        node: &str,
        opts: ConsoleOpts,
    ) -> Result<ConsoleSession, ControlError> {
        let (rec, i) = self.running_node(provider, vn, node)?;
        let kind = rec.req.nodes[i].kind;
        if kind != Kind::Vm {
            return Err(ControlError::Precondition(format!(
                "console is for vm nodes: node {node} of VN {vn} is a {} node (use exec)",
                kind.as_str()
            )));
        }
        let placed = &rec.placement.nodes[i];
        let what = format!("console of {vn}/{node}");
        let id = SESSION_SEQ.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, output) = mpsc::channel(OUTPUT_QUEUE);
        let reason = Arc::new(Mutex::new(None));
        let (console_tx, epoch) = self.with_slot(&placed.host, node, |slot| {
            slot.consoles.insert(
                id,
                Route {
                    tx,
                    reason: reason.clone(),
                    what: what.clone(),
                },
            );
            (slot.console_tx.clone(), slot.epoch)
        })?;
        // From here on, dropping the session unregisters it (and stops it on the agent).
        let session = ConsoleSession {
            output,
            reason,
            input: opts.interactive.then(|| console_tx.clone()),
            ctl: self.clone(),
            host: placed.host.clone(),
            epoch,
            id,
            what,
            done: false,
        };
        console_tx
            .send(pb::controller_message::Msg::ConsoleStart(
                pb::ConsoleStart {
                    session_id: id,
                    node_id: placed.node_id.clone(),
                    tail_bytes: opts.tail_bytes,
                    follow: opts.follow || opts.interactive,
                    interactive: opts.interactive,
                },
            ))
            .await
            .map_err(|_| ControlError::Unavailable(format!("host {} went away", placed.host)))?;
        Ok(session)
    }

    /// Console output from the agent of `host` (session `epoch`).
    pub fn console_output(&self, host: &str, epoch: u64, out: pb::ConsoleOutput) {
        let mut agents = lock(&self.shared.agents);
        let Some(slot) = agents.get_mut(host).filter(|s| s.epoch == epoch) else {
            return;
        };
        let Some(route) = slot.consoles.get(&out.session_id) else {
            // Ended on our side already (the caller left); the agent was told.
            return;
        };
        let mut events = Vec::with_capacity(2);
        if !out.data.is_empty() {
            events.push(ConsoleEvent::Data(out.data));
        }
        if out.end {
            events.push(if out.error.is_empty() {
                ConsoleEvent::End
            } else {
                ConsoleEvent::Failed(ControlError::Precondition(format!(
                    "{}: {}",
                    route.what, out.error
                )))
            });
        }
        let mut overflow = false;
        for e in events {
            match route.tx.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    overflow = true;
                    break;
                }
                // The caller left; its drop removes the route.
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        if overflow {
            *lock(&route.reason) = Some(ControlError::Unavailable(format!(
                "{}: the caller did not keep up with the console output",
                route.what
            )));
            slot.end_console(out.session_id);
        } else if out.end {
            slot.consoles.remove(&out.session_id);
        }
    }
}
