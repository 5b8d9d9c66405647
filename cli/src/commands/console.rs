//! `vnctl console VN NODE [--tail BYTES] [-f] [-i]`: the serial console of a guest (a node of
//! kind `vm`).
//!
//! Without flags: the tail of the console log (the boot log, for a guest that just started),
//! then exit. `-f` keeps printing what the guest prints until interrupted (or until the guest
//! stops: an error). `-i` also types standard input into the console, where the project's image
//! runs a shell: on a terminal in raw mode, until `Ctrl-]` detaches; from a pipe, until the input
//! ended and the console then stayed quiet for `--idle`.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};

/// The byte that detaches an interactive session on a terminal (Ctrl-], as in telnet and virsh).
pub const DETACH: u8 = 0x1d;
/// How long a detaching session lets the last typed bytes travel before it cancels the call.
const DETACH_GRACE: Duration = Duration::from_millis(250);

/// Show, follow or attach to the serial console of a guest.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// The VN.
    pub vn: String,
    /// The guest (its node name in the spec).
    pub node: String,
    /// Bytes of the console log to show first (at most 1 MiB; 0: none).
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    pub tail: u32,
    /// Keep printing what the guest prints.
    #[arg(short, long)]
    pub follow: bool,
    /// Type standard input into the console (implies --follow). On a terminal, Ctrl-] detaches.
    #[arg(short, long)]
    pub interactive: bool,
    /// With -i and input from a pipe: after the input ended, leave once the console was quiet
    /// this long.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
}

/// Where the typed input comes from.
pub enum Input {
    /// Not interactive.
    None,
    /// A pipe or file: everything is sent; its end starts the `--idle` countdown.
    Stream(Box<dyn Read + Send>),
    /// A terminal (already in raw mode): `Ctrl-]` ends the session.
    Terminal(Box<dyn Read + Send>),
}

/// Restores the terminal's settings when dropped.
pub(crate) struct RawMode {
    fd: std::io::Stdin,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode.
    pub(crate) fn enter() -> anyhow::Result<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let fd = std::io::stdin();
        let saved =
            tcgetattr(&fd).map_err(|e| anyhow::anyhow!("reading terminal settings: {e}"))?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&fd, SetArg::TCSANOW, &raw)
            .map_err(|e| anyhow::anyhow!("setting the terminal to raw mode: {e}"))?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(&self.fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Reads `input` on a thread of its own (a blocking read cannot be cancelled; the thread is left
/// behind when the session ends) and hands the chunks over. `None` marks the end.
fn pump(mut input: Box<dyn Read + Send>, terminal: bool) -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let (data, end) = match chunk.iter().position(|b| terminal && *b == DETACH) {
                Some(i) => (&chunk[..i], true),
                None => (chunk, n == 0),
            };
            if !data.is_empty() && tx.blocking_send(Some(data.to_vec())).is_err() {
                return;
            }
            if end {
                let _ = tx.blocking_send(None);
                return;
            }
        }
    });
    rx
}

impl ConsoleArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        let stdin = std::io::stdin();
        let (input, _raw) = if !self.interactive {
            (Input::None, None)
        } else if stdin.is_terminal() {
            let raw = RawMode::enter()?;
            eprint!("console of {}/{}: Ctrl-] detaches\r\n", self.vn, self.node);
            (Input::Terminal(Box::new(stdin)), Some(raw))
        } else {
            (Input::Stream(Box::new(stdin)), None)
        };
        let mut out = std::io::stdout();
        block_on(self.execute(opts, input, &mut out))
    }

    /// The session: output goes to `out` as it arrives.
    pub async fn execute(
        &self,
        opts: &ControllerOpts,
        input: Input,
        out: &mut (dyn Write + Send),
    ) -> anyhow::Result<()> {
        let ctl = Controller::connect(opts).await?;
        let what = format!("console of vn {} node {}", self.vn, self.node);
        let (req_tx, req_rx) = mpsc::channel::<pb::ConsoleRequest>(16);
        req_tx
            .send(pb::ConsoleRequest {
                msg: Some(pb::console_request::Msg::Open(pb::ConsoleOpen {
                    vn: self.vn.clone(),
                    node: self.node.clone(),
                    tail_bytes: Some(self.tail),
                    follow: self.follow || self.interactive,
                    interactive: self.interactive,
                })),
            })
            .await?;
        let mut stream = ctl
            .vns()
            .console(ReceiverStream::new(req_rx))
            .await
            .map_err(|s| rpc_error(&what, s))?
            .into_inner();
        let (mut typed, terminal) = match input {
            Input::None => (None, false),
            Input::Stream(r) => (Some(pump(r, false)), false),
            Input::Terminal(r) => (Some(pump(r, true)), true),
        };
        // Keeps the request stream open while not interactive (a half-close ends nothing, but
        // there is no reason to send one).
        let mut req_tx = Some(req_tx);
        // Set once the input ended (pipe): leave after `idle` without output.
        let mut quiet_until: Option<tokio::time::Instant> = None;
        loop {
            let idle = async {
                match quiet_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(m)) => {
                        out.write_all(&m.data)?;
                        out.flush()?;
                        if quiet_until.is_some() {
                            quiet_until = Some(tokio::time::Instant::now() + self.idle);
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(s) => {
                        if terminal {
                            eprint!("\r\n");
                        }
                        return Err(rpc_error(&what, s));
                    }
                },
                chunk = async { typed.as_mut().expect("guarded").recv().await }, if typed.is_some() => {
                    match chunk.flatten() {
                        Some(data) => {
                            let tx = req_tx.as_ref().expect("open while typing");
                            let msg = pb::ConsoleRequest { msg: Some(pb::console_request::Msg::Input(data)) };
                            if tx.send(msg).await.is_err() {
                                // The call ended; its status follows on the stream.
                                typed = None;
                            }
                        }
                        None if terminal => {
                            // Let what was typed just before leave (the request stream ends
                            // after it), then cancel the call.
                            drop(req_tx.take());
                            tokio::time::sleep(DETACH_GRACE).await;
                            eprint!("\r\ndetached from the console of {}/{}\r\n", self.vn, self.node);
                            return Ok(());
                        }
                        None => {
                            typed = None;
                            req_tx = None;
                            quiet_until = Some(tokio::time::Instant::now() + self.idle);
                        }
                    }
                },
                _ = idle => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeController, Outcome};

    fn args(node: &str, tail: u32, follow: bool, interactive: bool) -> ConsoleArgs {
        ConsoleArgs {
            vn: "lab".into(),
            node: node.into(),
            tail,
            follow,
            interactive,
            idle: Duration::from_secs(1),
        }
    }

    async fn opts() -> (FakeController, ControllerOpts) {
        FakeController::serving(Outcome::Ready, Some("red")).await
    }

    #[tokio::test]
    async fn prints_the_tail_and_exits() {
        let (fake, opts) = opts().await;
        let mut out = Vec::new();
        args("vm", 100, false, false)
            .execute(&opts, Input::None, &mut out)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "boot log of lab/vm (tail 100)\n"
        );
        assert_eq!(fake.providers_seen(), [Some("red".to_string())]);
    }

    #[tokio::test]
    async fn a_netns_node_is_a_clear_error() {
        let (_fake, opts) = opts().await;
        let mut out = Vec::new();
        let e = args("ns", 100, false, false)
            .execute(&opts, Input::None, &mut out)
            .await
            .unwrap_err();
        let line = crate::error::one_line(&e);
        assert!(
            line.starts_with("console of vn lab node ns: not possible now: ")
                && line.contains("console is for vm nodes"),
            "{line}"
        );
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn piped_input_is_typed_then_quiet_ends_the_session() {
        let (fake, opts) = opts().await;
        let mut out = Vec::new();
        let input = Input::Stream(Box::new(std::io::Cursor::new(b"uname\nuptime\n".to_vec())));
        args("vm", 0, false, true)
            .execute(&opts, input, &mut out)
            .await
            .unwrap();
        // The fake echoes what is typed, after its one line of tail.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "boot log of lab/vm (tail 0)\nuname\nuptime\n"
        );
        assert_eq!(fake.console_input(), b"uname\nuptime\n");
    }

    #[tokio::test]
    async fn on_a_terminal_ctrl_right_bracket_detaches() {
        let (fake, opts) = opts().await;
        let mut out = Vec::new();
        // Everything after Ctrl-] stays untyped; the session ends without waiting.
        let input = Input::Terminal(Box::new(std::io::Cursor::new(b"ls\n\x1dreboot\n".to_vec())));
        let t = std::time::Instant::now();
        args("vm", 0, false, true)
            .execute(&opts, input, &mut out)
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        // What was typed before Ctrl-] arrived, nothing after it.
        for _ in 0..100 {
            if !fake.console_input().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fake.console_input(), b"ls\n");
    }
}
