//! `vnctl exec [-i] [-t] VN NODE -- CMD...`: run a command inside a virtual node, as a stream
//! both ways. Standard input is sent as it is read (a pipe or file always; a terminal with
//! `-i`), its end is the command's end of file; stdout and stderr are written raw as they
//! arrive; the command's exit code becomes vnctl's. `-t` runs it under a pseudo-terminal (an
//! interactive shell: `vnctl exec -it VN NODE -- sh`), with this terminal in raw mode and its
//! size followed.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use tokio::sync::mpsc;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};
use crate::commands::console::RawMode;
use crate::error::Exited;

/// Bytes of stdin per message.
const CHUNK: usize = 32 << 10;

/// Run a command inside a virtual node.
#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// The VN.
    pub vn: String,
    /// The virtual node (its name in the spec).
    pub node: String,
    /// How long the command may run (0: the controller's default).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Send standard input also when it is a terminal (a pipe or a file is always sent).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run the command under a pseudo-terminal (netns nodes).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command and its arguments (after `--`).
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "CMD")]
    pub argv: Vec<String>,
}

fn req(msg: pb::exec_request::Msg) -> pb::ExecRequest {
    pb::ExecRequest { msg: Some(msg) }
}

/// The size of the terminal on stdout (or stdin).
fn window_size() -> Option<pb::WindowSize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into `ws`, which lives for the call.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(pb::WindowSize {
                rows: u32::from(ws.ws_row),
                cols: u32::from(ws.ws_col),
            });
        }
    }
    None
}

/// Reads stdin on a thread of its own (a blocking read cannot be cancelled; the thread is left
/// behind when the command ends) and sends it; the sender's drop is end of file.
fn send_stdin(tx: mpsc::Sender<pb::ExecRequest>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let m = req(pb::exec_request::Msg::Stdin(buf[..n].to_vec()));
                    if tx.blocking_send(m).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Sends the terminal's new size at every SIGWINCH.
fn follow_size(tx: mpsc::Sender<pb::ExecRequest>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut winch = signal(SignalKind::window_change())?;
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some(w) = window_size()
                && tx
                    .send(req(pb::exec_request::Msg::Resize(w)))
                    .await
                    .is_err()
            {
                return;
            }
        }
    });
    Ok(())
}

impl ExecArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        block_on(self.execute(opts))
    }

    pub async fn execute(&self, opts: &ControllerOpts) -> anyhow::Result<()> {
        let ctl = Controller::connect(opts).await?;
        let what = format!("exec in vn {} node {}", self.vn, self.node);
        let stdin_terminal = std::io::stdin().is_terminal();
        let size = if self.tty { window_size() } else { None };
        let (tx, rx) = mpsc::channel::<pb::ExecRequest>(4);
        tx.send(req(pb::exec_request::Msg::Start(pb::ExecStart {
            vn: self.vn.clone(),
            node: self.node.clone(),
            argv: self.argv.clone(),
            timeout_ms: u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX),
            tty: self.tty,
            size,
        })))
        .await?;
        let _raw = if self.tty && stdin_terminal {
            Some(RawMode::enter()?)
        } else {
            None
        };
        if self.tty && stdin_terminal {
            follow_size(tx.clone())?;
        }
        if self.interactive || !stdin_terminal {
            send_stdin(tx);
        } else {
            drop(tx);
        }
        // The call may legitimately take as long as the command (0: the controller decides).
        let call_timeout =
            (!self.timeout.is_zero()).then(|| self.timeout + Duration::from_secs(10));
        let mut out = ctl.exec(rx, call_timeout, &what).await?;
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        let code = loop {
            let Some(m) = out.message().await.map_err(|s| rpc_error(&what, s))? else {
                anyhow::bail!("{what}: the controller ended the call without the command's exit");
            };
            match m.msg {
                Some(pb::exec_response::Msg::Stdout(d)) => {
                    stdout.write_all(&d)?;
                    stdout.flush()?;
                }
                Some(pb::exec_response::Msg::Stderr(d)) => {
                    stderr.write_all(&d)?;
                    stderr.flush()?;
                }
                Some(pb::exec_response::Msg::Exit(e)) => break e.exit_code,
                None => {}
            }
        };
        if code != 0 {
            return Err(Exited(code).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeController, Outcome};

    #[tokio::test]
    async fn remote_exit_code_becomes_ours() {
        let addr = FakeController::new(Outcome::Ready).serve().await;
        let opts = ControllerOpts {
            controller: addr,
            provider: Some("red".into()),
            ..Default::default()
        };
        let run = |argv: &[&str]| ExecArgs {
            vn: "web".into(),
            node: "a".into(),
            timeout: Duration::from_secs(5),
            interactive: false,
            tty: false,
            argv: argv.iter().map(|s| s.to_string()).collect(),
        };
        run(&["true"]).execute(&opts).await.unwrap();
        let e = run(&["sh", "exit=7"]).execute(&opts).await.unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 7);
        assert!(e.downcast_ref::<Exited>().is_some());
    }
}
