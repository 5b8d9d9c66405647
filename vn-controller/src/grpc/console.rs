//! `VirtualNetworks.Console`: a guest's serial console, relayed from its host's agent.
//!
//! The first request message must be a `ConsoleOpen` (validated here, once); the session is
//! opened by [`Controller::console`]. Output flows back until the session ends (the tail was
//! sent, the guest stopped, the host went away) or the caller cancels the call. Later request
//! messages of an interactive session are typed into the console; the caller half-closing its
//! side ends nothing (a follower simply has nothing to type).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vnet_proto::v1 as pb;

use crate::runtime::controller::{ConsoleEvent, ConsoleOpts, Controller};

use super::{identity, status, validate};

/// Tail sent when the request does not say.
pub const DEFAULT_TAIL: u32 = 64 << 10;
/// Largest tail a request may ask for.
pub const MAX_TAIL: u32 = 1 << 20;

pub type ConsoleStream = Pin<Box<dyn Stream<Item = Result<pb::ConsoleResponse, Status>> + Send>>;

/// Validates the opening message: (vn, node, options).
pub fn open(o: &pb::ConsoleOpen) -> Result<(String, String, ConsoleOpts), Status> {
    validate::vn_name(&o.vn, "vn")?;
    if o.node.is_empty() {
        return Err(Status::invalid_argument("node is required"));
    }
    let tail_bytes = o.tail_bytes.unwrap_or(DEFAULT_TAIL);
    if tail_bytes > MAX_TAIL {
        return Err(Status::invalid_argument(format!(
            "tail_bytes {tail_bytes} is above the limit of {MAX_TAIL}"
        )));
    }
    Ok((
        o.vn.clone(),
        o.node.clone(),
        ConsoleOpts {
            tail_bytes,
            follow: o.follow || o.interactive,
            interactive: o.interactive,
        },
    ))
}

/// Serves one `Console` call.
pub async fn serve(
    ctl: &Controller,
    req: Request<Streaming<pb::ConsoleRequest>>,
) -> Result<Response<ConsoleStream>, Status> {
    let caller = identity::provider(ctl, &req)?;
    let mut inbound = req.into_inner();
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the stream ended before a ConsoleOpen"))?;
    let Some(pb::console_request::Msg::Open(o)) = first.msg else {
        return Err(Status::invalid_argument(
            "the first message of Console must be a ConsoleOpen",
        ));
    };
    let (vn, node, opts) = open(&o)?;
    let mut session = ctl
        .console(&caller, &vn, &node, opts)
        .await
        .map_err(status)?;
    let (tx, rx) = mpsc::channel::<Result<pb::ConsoleResponse, Status>>(16);
    // Input from the caller, handed to the session task (which owns the session).
    let (in_tx, mut in_rx) = mpsc::channel::<Result<Vec<u8>, Status>>(64);
    tokio::spawn(async move {
        loop {
            // Ends with the session too: dropping `inbound` lets go of the caller's side.
            let m = tokio::select! {
                m = inbound.next() => m,
                _ = in_tx.closed() => return,
            };
            let Some(m) = m else { return };
            let item = match m {
                Ok(pb::ConsoleRequest {
                    msg: Some(pb::console_request::Msg::Input(data)),
                }) => Ok(data),
                Ok(pb::ConsoleRequest {
                    msg: Some(pb::console_request::Msg::Open(_)),
                }) => Err(Status::invalid_argument(
                    "ConsoleOpen may only be the first message",
                )),
                Ok(pb::ConsoleRequest { msg: None }) => continue,
                // The caller went away; the response side notices too.
                Err(_) => return,
            };
            let stop = item.is_err();
            if in_tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let mut shutdown = ctl.shutdown_signal();
    tokio::spawn(async move {
        let mut input_open = true;
        loop {
            tokio::select! {
                ev = session.next() => match ev {
                    Some(ConsoleEvent::Data(data)) => {
                        if tx.send(Ok(pb::ConsoleResponse { data })).await.is_err() {
                            return;
                        }
                    }
                    Some(ConsoleEvent::End) | None => return,
                    Some(ConsoleEvent::Failed(e)) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                },
                m = in_rx.recv(), if input_open => match m {
                    Some(Ok(data)) => {
                        if let Err(e) = session.input(data).await {
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    }
                    Some(Err(st)) => {
                        let _ = tx.send(Err(st)).await;
                        return;
                    }
                    None => input_open = false,
                },
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                    let _ = tx.send(Err(Status::unavailable("controller is shutting down"))).await;
                    return;
                }
                // The caller cancelled: dropping the session stops it on the agent.
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(vn: &str, node: &str, tail: Option<u32>) -> pb::ConsoleOpen {
        pb::ConsoleOpen {
            vn: vn.into(),
            node: node.into(),
            tail_bytes: tail,
            follow: false,
            interactive: false,
        }
    }

    #[test]
    fn open_is_validated_once() {
        let (vn, node, o) = open(&req("web", "vm", None)).unwrap();
        assert_eq!((vn.as_str(), node.as_str()), ("web", "vm"));
        assert_eq!(o.tail_bytes, DEFAULT_TAIL);
        assert!(!o.follow && !o.interactive);
        assert_eq!(open(&req("web", "vm", Some(0))).unwrap().2.tail_bytes, 0);
        let e = open(&req("web", "vm", Some(MAX_TAIL + 1))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("tail_bytes"), "{e}");
        let e = open(&req("web", "", None)).unwrap_err();
        assert!(e.message().contains("node"), "{e}");
        let e = open(&req("Bad Name", "vm", None)).unwrap_err();
        assert!(e.message().contains("vn"), "{e}");
        // Interactive implies follow.
        let mut i = req("web", "vm", None);
        i.interactive = true;
        let o = open(&i).unwrap().2;
        assert!(o.follow && o.interactive);
    }
}
