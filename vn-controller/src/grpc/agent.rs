//! `vnet.v1.AgentControl`: one bidirectional `Attach` stream per agent.
//!
//! The connection's client certificate names the host (see [`identity::host`]); the hello must
//! name the same host, one the operator's topology lists. The first message must be an
//! `AgentHello`. The controller answers at once with the host's whole desired state, then with
//! every newer one, interleaved with exec commands. Reports flow the other way. When the stream
//! ends, the host's VNs degrade (and move, if it stays away: [`crate::runtime::controller`]'s
//! failover). After the first desired state the agent is told which underlay links to probe;
//! it reports their state (`UnderlayReport`). Each command's input and output travel on an `Exec` call of
//! their own ([`super::exec`]), bound to the host the same way.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vnet_proto::v1 as pb;
use vnet_proto::v1::agent_control_server::AgentControl;

use crate::runtime::controller::Controller;

use super::{convert, identity, status, validate};

#[derive(Clone, Debug)]
pub struct AgentService {
    ctl: Controller,
}

impl AgentService {
    pub fn new(ctl: Controller) -> Self {
        AgentService { ctl }
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentControl for AgentService {
    type AttachStream = Outbound;

    #[tracing::instrument(skip_all)]
    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let certified = identity::host(&self.ctl, &req)?;
        // Agents attach to the leader; a follower names it.
        self.ctl.require_leader().map_err(status)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before an AgentHello"))?;
        let Some(pb::agent_message::Msg::Hello(hello)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first message of Attach must be an AgentHello",
            ));
        };
        let mut info = validate::hello(&hello, convert::now_ms())?;
        match &certified {
            Some(id) if *id != info.id => {
                tracing::warn!(certificate = %id, hello = %info.id, "agent claimed another host, refused");
                return Err(Status::permission_denied(format!(
                    "this connection's certificate names host {id}; it may not attach as {}",
                    info.id
                )));
            }
            Some(_) => {}
            None => tracing::warn!(host = %info.id, "--insecure: believing the hello's host id"),
        }
        self.ctl.admit_host(&mut info).map_err(status)?;
        let handle = self
            .ctl
            .attach(info, hello.applied_generation)
            .await
            .ok_or_else(|| Status::unavailable("controller is shutting down"))?;
        let host = handle.host.clone();
        let epoch = handle.epoch;
        let (tx, rx) = mpsc::channel::<Result<pb::ControllerMessage, Status>>(16);
        spawn_outbound(self.ctl.clone(), handle, tx.clone());

        // Inbound: reports and exec results until the stream ends.
        let ctl = self.ctl.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                match msg {
                    Ok(pb::AgentMessage {
                        msg: Some(pb::agent_message::Msg::Observed(o)),
                    }) => ctl.observe(&host, o).await,
                    Ok(pb::AgentMessage {
                        msg: Some(pb::agent_message::Msg::ConsoleOutput(o)),
                    }) => ctl.console_output(&host, epoch, o),
                    Ok(pb::AgentMessage {
                        msg: Some(pb::agent_message::Msg::Underlay(u)),
                    }) => ctl.underlay_report(&host, &u),
                    Ok(pb::AgentMessage {
                        msg: Some(pb::agent_message::Msg::Hello(_)),
                    }) => {
                        tracing::warn!(%host, "a second hello on one stream is ignored");
                    }
                    Ok(pb::AgentMessage { msg: None }) => {}
                    Err(e) => {
                        tracing::info!(%host, error = %e, "agent stream failed");
                        break;
                    }
                }
            }
            ctl.detach(&host, epoch).await;
        });
        drop(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type ExecStream = super::exec::AgentExecStream;

    #[tracing::instrument(skip_all)]
    async fn exec(
        &self,
        req: Request<Streaming<pb::ExecUp>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        super::exec::open(&self.ctl, req).await
    }
}

/// Outbound on Attach: the desired state now and at every change, the probe configuration
/// after it when it changed (a full mesh grows as hosts register), exec commands and console
/// messages.
fn spawn_outbound(
    ctl: Controller,
    handle: crate::runtime::controller::AgentHandle,
    out_tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
) {
    let mut desired = handle.desired;
    let mut exec = handle.exec;
    let mut console = handle.console;
    let mut shutdown = ctl.shutdown_signal();
    let mut probe_sent: Option<pb::UnderlayProbe> = None;
    let probe_host = handle.host.clone();
    let mut links_changed = ctl.links_changed();
    tokio::spawn(async move {
        let mut send_desired = true;
        loop {
            if send_desired {
                let snapshot = desired.borrow_and_update().clone();
                let d = super::slice::desired_state(&snapshot);
                let msg = pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::Desired(d)),
                };
                if out_tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            let probe = ctl.probe_config(&probe_host);
            if probe_sent.as_ref() != Some(&probe) {
                probe_sent = Some(probe.clone());
                let msg = pb::ControllerMessage {
                    msg: Some(pb::controller_message::Msg::Probe(probe)),
                };
                if out_tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            send_desired = false;
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() { return; }
                    send_desired = true;
                }
                cmd = exec.recv() => match cmd {
                    Some(c) => {
                        let msg = pb::ControllerMessage { msg: Some(pb::controller_message::Msg::Exec(c)) };
                        if out_tx.send(Ok(msg)).await.is_err() { return; }
                    }
                    // This session was replaced by a newer one of the same host.
                    None => {
                        let _ = out_tx.send(Err(Status::aborted("replaced by a newer session of this host"))).await;
                        return;
                    }
                },
                // Closes together with `exec` (handled there).
                Some(c) = console.recv() => {
                    let msg = pb::ControllerMessage { msg: Some(c) };
                    if out_tx.send(Ok(msg)).await.is_err() { return; }
                }
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                    let _ = out_tx.send(Err(Status::unavailable("controller is shutting down"))).await;
                    return;
                }
                _ = out_tx.closed() => return,
                // The loop's head sends the new probe configuration.
                Ok(()) = links_changed.changed() => {}
            }
        }
    });
}
