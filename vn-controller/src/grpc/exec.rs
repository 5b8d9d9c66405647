//! `VirtualNetworks.Exec` (the tenant's side) and `AgentControl.Exec` (the agent's side) of one
//! command, relayed message by message. The tenant is the caller's credential; the agent is
//! the host its client certificate names, which must be the host it claims.
//!
//! The tenant's first message must be an `ExecStart` (validated here, once); the command is
//! started by [`Controller::exec`], which waits for the agent to open `AgentControl.Exec` for
//! it. Then two tasks relay: stdin and window sizes down (the tenant half-closing the call is
//! end of file), stdout and stderr up as the command writes them, then its exit. Each direction
//! goes through a channel of [`QUEUE`] messages, so a tenant that reads slowly holds back its
//! own command only (HTTP/2 flow control on both calls does the rest). A command that did not
//! end by itself ends the call with a status: FAILED_PRECONDITION (it could not run),
//! DEADLINE_EXCEEDED (its timeout), RESOURCE_EXHAUSTED (its output limit), UNAVAILABLE (its host
//! went away).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vnet_proto::v1 as pb;

use crate::runtime::controller::{AgentExec, Controller, ExecOpts, ExecSession};

use super::{identity, status, validate};

/// Messages that may wait in each direction.
pub const QUEUE: usize = 4;
/// Most arguments of a command.
pub const MAX_ARGS: usize = 4096;
/// Most bytes of all arguments together.
pub const MAX_ARGV_BYTES: usize = 256 << 10;
/// Longest node name quoted back.
const MAX_NODE_LEN: usize = 253;
/// Largest terminal side.
const MAX_TTY_SIDE: u32 = 10_000;

pub type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecResponse, Status>> + Send>>;
pub type AgentExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecDown, Status>> + Send>>;

fn window(w: &pb::WindowSize, what: &str) -> Result<(u32, u32), Status> {
    if !(1..=MAX_TTY_SIDE).contains(&w.rows) || !(1..=MAX_TTY_SIDE).contains(&w.cols) {
        return Err(Status::invalid_argument(format!(
            "{what} {}x{} is not within 1..={MAX_TTY_SIDE} rows and columns",
            w.rows, w.cols
        )));
    }
    Ok((w.rows, w.cols))
}

/// Validates the opening message: (vn, node, options).
pub fn start(s: &pb::ExecStart) -> Result<(String, String, ExecOpts), Status> {
    validate::vn_name(&s.vn, "vn")?;
    if s.node.is_empty() {
        return Err(Status::invalid_argument("node is required"));
    }
    if s.node.len() > MAX_NODE_LEN {
        return Err(Status::invalid_argument(format!(
            "node: name longer than {MAX_NODE_LEN} bytes"
        )));
    }
    if s.argv.first().is_none_or(String::is_empty) {
        return Err(Status::invalid_argument("argv must name a program"));
    }
    if s.argv.len() > MAX_ARGS {
        return Err(Status::invalid_argument(format!(
            "argv has {} arguments, more than {MAX_ARGS}",
            s.argv.len()
        )));
    }
    let bytes: usize = s.argv.iter().map(String::len).sum();
    if bytes > MAX_ARGV_BYTES {
        return Err(Status::invalid_argument(format!(
            "argv has {bytes} bytes, more than {MAX_ARGV_BYTES}"
        )));
    }
    if let Some(i) = s.argv.iter().position(|a| a.contains('\0')) {
        return Err(Status::invalid_argument(format!(
            "argv[{i}] contains a NUL byte"
        )));
    }
    let tty = match (s.tty, &s.size) {
        (false, _) => None,
        (true, None) => Some((24, 80)),
        (true, Some(w)) => Some(window(w, "size")?),
    };
    Ok((
        s.vn.clone(),
        s.node.clone(),
        ExecOpts {
            argv: s.argv.clone(),
            timeout_ms: s.timeout_ms,
            tty,
        },
    ))
}

fn down(msg: pb::exec_down::Msg) -> pb::ExecDown {
    pb::ExecDown { msg: Some(msg) }
}

fn response(msg: pb::exec_response::Msg) -> Result<pb::ExecResponse, Status> {
    Ok(pb::ExecResponse { msg: Some(msg) })
}

/// Serves one tenant's `Exec` call.
pub async fn serve(
    ctl: &Controller,
    req: Request<Streaming<pb::ExecRequest>>,
) -> Result<Response<ExecStream>, Status> {
    let caller = identity::provider(ctl, &req)?;
    let mut inbound = req.into_inner();
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the stream ended before an ExecStart"))?;
    let Some(pb::exec_request::Msg::Start(s)) = first.msg else {
        return Err(Status::invalid_argument(
            "the first message of Exec must be an ExecStart",
        ));
    };
    let (vn, node, opts) = start(&s)?;
    let session = ctl.exec(&caller, &vn, &node, opts).await.map_err(status)?;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(relay_input(inbound, session.agent.down.clone(), tx.clone()));
    tokio::spawn(relay_output(session, tx, ctl.shutdown_signal()));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// The tenant's stdin and window sizes to the agent, until end of file.
async fn relay_input(
    mut inbound: Streaming<pb::ExecRequest>,
    agent: mpsc::Sender<pb::ExecDown>,
    tx: mpsc::Sender<Result<pb::ExecResponse, Status>>,
) {
    loop {
        let m = tokio::select! {
            m = inbound.message() => m,
            _ = agent.closed() => return,
        };
        let msg = match m {
            Ok(Some(pb::ExecRequest {
                msg: Some(pb::exec_request::Msg::Stdin(d)),
            })) => pb::exec_down::Msg::Stdin(d),
            Ok(Some(pb::ExecRequest {
                msg: Some(pb::exec_request::Msg::Resize(w)),
            })) => match window(&w, "resize") {
                Ok((rows, cols)) => pb::exec_down::Msg::Resize(pb::WindowSize { rows, cols }),
                Err(st) => {
                    let _ = tx.send(Err(st)).await;
                    return;
                }
            },
            Ok(Some(pb::ExecRequest {
                msg: Some(pb::exec_request::Msg::Start(_)),
            })) => {
                let st = Status::invalid_argument("ExecStart may only be the first message");
                let _ = tx.send(Err(st)).await;
                return;
            }
            Ok(Some(pb::ExecRequest { msg: None })) => continue,
            Ok(None) => pb::exec_down::Msg::StdinEof(true),
            // The caller went away; the output side notices too.
            Err(_) => return,
        };
        let eof = matches!(msg, pb::exec_down::Msg::StdinEof(_));
        if agent.send(down(msg)).await.is_err() || eof {
            return;
        }
    }
}

/// The command's output to the tenant, then its exit (or why it ended).
async fn relay_output(
    session: ExecSession,
    tx: mpsc::Sender<Result<pb::ExecResponse, Status>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let ExecSession {
        agent: AgentExec { mut up, down },
        deadline,
        what,
        host,
    } = session;
    // Held until the end: dropping it ends the agent's call (and so the command).
    let _down = down;
    loop {
        let m = tokio::select! {
            m = up.recv() => m,
            _ = tokio::time::sleep_until(deadline.into()) => {
                let _ = tx.send(Err(Status::deadline_exceeded(format!(
                    "{what}: no exit from host {host} by the command's timeout"
                )))).await;
                return;
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                let _ = tx.send(Err(Status::unavailable("controller is shutting down"))).await;
                return;
            }
            // The caller went away.
            _ = tx.closed() => return,
        };
        let item = match m.and_then(|m| m.msg) {
            Some(pb::exec_up::Msg::Stdout(d)) => response(pb::exec_response::Msg::Stdout(d)),
            Some(pb::exec_up::Msg::Stderr(d)) => response(pb::exec_response::Msg::Stderr(d)),
            Some(pb::exec_up::Msg::Exit(e)) => {
                let _ = tx.send(exit(e, &what)).await;
                return;
            }
            Some(pb::exec_up::Msg::Open(_)) => continue,
            None => {
                let _ = tx
                    .send(Err(Status::unavailable(format!(
                        "{what}: host {host} went away during the command"
                    ))))
                    .await;
                return;
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

/// The last message of a call from the command's exit.
fn exit(e: pb::ExecExit, what: &str) -> Result<pb::ExecResponse, Status> {
    let msg = format!("{what}: {}", e.error);
    match pb::ExecFailure::try_from(e.failure).unwrap_or(pb::ExecFailure::NotRun) {
        pb::ExecFailure::None => response(pb::exec_response::Msg::Exit(e)),
        pb::ExecFailure::NotRun => Err(Status::failed_precondition(msg)),
        pb::ExecFailure::Timeout => Err(Status::deadline_exceeded(msg)),
        pb::ExecFailure::OutputLimit => Err(Status::resource_exhausted(msg)),
        pb::ExecFailure::Cancelled => Err(Status::cancelled(msg)),
    }
}

/// Serves an agent's `AgentControl.Exec` call: hands its two ends to the waiting command.
pub async fn open(
    ctl: &Controller,
    req: Request<Streaming<pb::ExecUp>>,
) -> Result<Response<AgentExecStream>, Status> {
    // The connection's certificate names the host, as for `Attach`: an agent may take only its
    // own host's commands.
    let certified = identity::host(ctl, &req)?;
    let mut inbound = req.into_inner();
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the stream ended before an ExecAgentOpen"))?;
    let Some(pb::exec_up::Msg::Open(o)) = first.msg else {
        return Err(Status::invalid_argument(
            "the first message of AgentControl.Exec must be an ExecAgentOpen",
        ));
    };
    validate::check_identifier(&o.host_id)
        .map_err(|e| Status::invalid_argument(format!("host_id: {e}")))?;
    if let Some(id) = certified.filter(|id| *id != o.host_id) {
        tracing::warn!(certificate = %id, claimed = %o.host_id, "agent opened an exec as another host, refused");
        return Err(Status::permission_denied(format!(
            "this connection's certificate names host {id}; it may not open an exec as {}",
            o.host_id
        )));
    }
    // The host as the agent names it, like its hello; the request id, random and taken once,
    // is what ties this call to the command.
    let waiting = ctl.exec_opened(&o.host_id, o.request_id).ok_or_else(|| {
        Status::not_found(format!(
            "no command {} is waiting for host {}",
            o.request_id, o.host_id
        ))
    })?;
    let (up_tx, up) = mpsc::channel(QUEUE);
    let (down, down_rx) = mpsc::channel(QUEUE);
    waiting
        .send(AgentExec { up, down })
        .map_err(|_| Status::cancelled("the caller went away"))?;
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                m = inbound.message() => m,
                _ = up_tx.closed() => return,
            };
            match m {
                Ok(Some(m)) => {
                    if up_tx.send(m).await.is_err() {
                        return;
                    }
                }
                // Without an exit first, the relay reports the host gone.
                Ok(None) | Err(_) => return,
            }
        }
    });
    Ok(Response::new(Box::pin(
        ReceiverStream::new(down_rx).map(Ok),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(argv: &[&str]) -> pb::ExecStart {
        pb::ExecStart {
            vn: "web".into(),
            node: "a".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn start_is_validated_once() {
        let (vn, node, o) = start(&st(&["cat"])).unwrap();
        assert_eq!((vn.as_str(), node.as_str(), o.tty), ("web", "a", None));
        let bad = |s: pb::ExecStart, words: &str| {
            let e = start(&s).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(words), "{e:?}");
        };
        bad(st(&[]), "argv must name a program");
        bad(st(&[""]), "argv must name a program");
        bad(st(&["a\0b"]), "argv[0] contains a NUL");
        let many: Vec<&str> = vec!["x"; MAX_ARGS + 1];
        bad(st(&many), "arguments, more than");
        let big = "y".repeat(MAX_ARGV_BYTES + 1);
        bad(st(&[&big]), "bytes, more than");
        let mut s = st(&["sh"]);
        s.node = "n".repeat(10_000);
        bad(s, "node: name longer");
        let mut s = st(&["sh"]);
        s.tty = true;
        s.size = Some(pb::WindowSize { rows: 0, cols: 80 });
        bad(s, "size 0x80");
        let mut s = st(&["sh"]);
        s.tty = true;
        assert_eq!(start(&s).unwrap().2.tty, Some((24, 80)));
    }

    #[test]
    fn failures_become_statuses() {
        let e = |f: pb::ExecFailure| pb::ExecExit {
            exit_code: -1,
            error: "why".into(),
            failure: f as i32,
        };
        let code = |f| exit(e(f), "exec in web/a").unwrap_err().code();
        assert_eq!(
            code(pb::ExecFailure::NotRun),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            code(pb::ExecFailure::Timeout),
            tonic::Code::DeadlineExceeded
        );
        assert_eq!(
            code(pb::ExecFailure::OutputLimit),
            tonic::Code::ResourceExhausted
        );
        let ok = exit(
            pb::ExecExit {
                exit_code: 3,
                ..Default::default()
            },
            "x",
        )
        .unwrap();
        assert!(matches!(
            ok.msg,
            Some(pb::exec_response::Msg::Exit(pb::ExecExit {
                exit_code: 3,
                ..
            }))
        ));
    }
}
