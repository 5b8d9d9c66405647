//! One command in a node of this host, as a stream both ways.
//!
//! Namespace nodes: the command runs under `substrate-agent exec-sandbox` ([`crate::sandbox`]),
//! confined to the node. Its stdout and stderr are read in chunks of at most [`CHUNK`] bytes and
//! sent as they come through `out`, a bounded channel feeding the command's own gRPC stream: when
//! the controller (or the tenant behind it) reads slowly, sends wait, the pipes fill and the
//! command blocks on write. The agent so holds at most a few chunks per command whatever it
//! prints. Input (stdin bytes, end of file, window sizes) arrives on `input`. The command ends
//! by itself, at its timeout, when its output passes the limit, or when the caller goes away
//! (`gone`); the last two and the timeout kill it (SIGTERM to the helper, which kills the pid
//! namespace; SIGKILL of the helper after a grace period).
//!
//! At most [`MAX_PER_NODE`] commands run at once in one node and [`MAX_PER_HOST`] on the host;
//! more are refused (not queued).
//!
//! Guests: the guest's command channel answers with the whole output at once (bounded by the
//! channel, see `guest::channel`); it is sent in chunks the same way. Guests get no stdin and no
//! terminal over exec (`vnctl console -i` is their interactive shell).

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use vnet_proto::v1 as pb;

/// Largest output chunk.
pub const CHUNK: usize = 32 << 10;
/// How long a command has after SIGTERM of its helper before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);
/// The PATH of confined commands.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Commands that may run at once in one node, and on this host.
pub const MAX_PER_NODE: usize = 8;
pub const MAX_PER_HOST: usize = 64;

/// Commands running, per node namespace.
static RUNNING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A place among the running commands; released when dropped.
struct Slot(String);

impl Slot {
    /// A place for a command in `netns`, or why there is none.
    fn take(netns: &str) -> Result<Slot, String> {
        let mut r = RUNNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.len() >= MAX_PER_HOST {
            return Err(format!(
                "this host runs {MAX_PER_HOST} commands already: try again later"
            ));
        }
        if r.iter().filter(|n| *n == netns).count() >= MAX_PER_NODE {
            return Err(format!(
                "the node runs {MAX_PER_NODE} commands already: try again later"
            ));
        }
        r.push(netns.to_string());
        Ok(Slot(netns.to_string()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut r = RUNNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = r.iter().position(|n| *n == self.0) {
            r.swap_remove(i);
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// Run under a pseudo-terminal of this size (rows, cols).
    pub tty: Option<(u16, u16)>,
    /// Bytes of output (stdout and stderr together) after which the command is ended.
    pub max_output: u64,
    /// Directories of the agent the command must not read (its state directory).
    pub hide: Vec<std::path::PathBuf>,
}

/// Input for a running command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Stdin(Vec<u8>),
    Eof,
    Resize(u16, u16),
}

/// The end of a command that did not run or was ended.
pub fn failed(failure: pb::ExecFailure, error: String) -> pb::ExecExit {
    pb::ExecExit {
        exit_code: -1,
        error,
        failure: failure as i32,
    }
}

fn up(msg: pb::exec_up::Msg) -> pb::ExecUp {
    pb::ExecUp { msg: Some(msg) }
}

/// Sends `data` in chunks; false when the receiver is gone.
pub async fn send_chunked(out: &mpsc::Sender<pb::ExecUp>, data: &[u8], stderr: bool) -> bool {
    for c in data.chunks(CHUNK) {
        let m = if stderr {
            pb::exec_up::Msg::Stderr(c.to_vec())
        } else {
            pb::exec_up::Msg::Stdout(c.to_vec())
        };
        if out.send(up(m)).await.is_err() {
            return false;
        }
    }
    true
}

/// Output accounting shared by a command's readers.
struct Budget {
    used: AtomicU64,
    limit: u64,
    over: Notify,
}

impl Budget {
    /// How many of `n` new bytes may still be sent; notifies once the limit is passed.
    fn take(&self, n: usize) -> usize {
        let before = self.used.fetch_add(n as u64, Ordering::Relaxed);
        let left = self.limit.saturating_sub(before);
        if (n as u64) > left {
            self.over.notify_one();
        }
        (n as u64).min(left) as usize
    }
}

/// Reads `r` to its end, sending chunks through `out`.
async fn pump(
    mut r: impl AsyncRead + Unpin,
    stderr: bool,
    out: mpsc::Sender<pb::ExecUp>,
    budget: Arc<Budget>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return, // a terminal's master reads EIO once the slave closed
            Ok(n) => n,
        };
        let k = budget.take(n);
        if k > 0 && !send_chunked(&out, &buf[..k], stderr).await {
            return;
        }
        if k < n {
            return;
        }
    }
}

/// Writes input to the command: stdin bytes in order, end of file, terminal sizes.
async fn feed(
    mut stdin: impl AsyncWrite + Unpin,
    pty: Option<Arc<OwnedFd>>,
    mut input: mpsc::Receiver<Input>,
) {
    while let Some(i) = input.recv().await {
        match i {
            Input::Stdin(d) => {
                if stdin.write_all(&d).await.is_err() || stdin.flush().await.is_err() {
                    // The command closed its stdin: what follows is dropped.
                    while input.recv().await.is_some() {}
                    return;
                }
            }
            // A terminal has no end of file of its own: EOT, as a user typing ^D.
            Input::Eof if pty.is_some() => {
                let _ = stdin.write_all(&[4]).await;
            }
            Input::Eof => return,
            Input::Resize(rows, cols) => {
                if let Some(m) = &pty {
                    set_size(m, rows, cols);
                }
            }
        }
    }
}

fn set_size(master: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives for the call; the fd is open.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// The helper's command line.
fn sandbox_command(netns: &str, spec: &ExecSpec) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg("exec-sandbox")
        .arg("--netns")
        .arg(crate::host::netns::path_of(netns))
        .arg("--deadline-ms")
        .arg((spec.timeout + GRACE * 2).as_millis().to_string());
    if spec.tty.is_some() {
        cmd.arg("--tty");
    }
    for dir in &spec.hide {
        cmd.arg("--hide").arg(dir);
    }
    cmd.arg("--")
        .args(&spec.argv)
        .env_clear()
        .env("PATH", PATH)
        .env("HOME", "/tmp")
        .kill_on_drop(true);
    if spec.tty.is_some() {
        cmd.env("TERM", "xterm");
    }
    cmd
}

/// How a command's wait ended.
enum Ended {
    Exited(std::process::ExitStatus),
    Failed(pb::ExecFailure, String),
}

/// Runs `spec` confined in the named namespace `netns`; returns how it ended. Output goes to
/// `out` (stdout and stderr messages only; the caller sends the exit).
pub async fn run_in_netns(
    netns: &str,
    spec: &ExecSpec,
    input: mpsc::Receiver<Input>,
    out: mpsc::Sender<pb::ExecUp>,
    mut gone: oneshot::Receiver<()>,
) -> pb::ExecExit {
    if spec.argv.is_empty() {
        return failed(pb::ExecFailure::NotRun, "argv is empty".into());
    }
    let _slot = match Slot::take(netns) {
        Ok(s) => s,
        Err(e) => return failed(pb::ExecFailure::NotRun, e),
    };
    let mut cmd = sandbox_command(netns, spec);
    let budget = Arc::new(Budget {
        used: AtomicU64::new(0),
        limit: spec.max_output,
        over: Notify::new(),
    });
    let mut readers = Vec::new();
    let mut child = match spec.tty {
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    return failed(pb::ExecFailure::NotRun, format!("start the sandbox: {e}"));
                }
            };
            let (Some(i), Some(o), Some(e)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return failed(
                    pb::ExecFailure::NotRun,
                    "the sandbox's pipes are missing".into(),
                );
            };
            readers.push(tokio::spawn(pump(o, false, out.clone(), budget.clone())));
            readers.push(tokio::spawn(pump(e, true, out.clone(), budget.clone())));
            tokio::spawn(feed(i, None, input));
            child
        }
        Some((rows, cols)) => match spawn_tty(&mut cmd, rows, cols) {
            Ok((child, master)) => {
                let master = Arc::new(master);
                let (r, w) = match (dup_file(&master), dup_file(&master)) {
                    (Ok(r), Ok(w)) => (r, w),
                    (Err(e), _) | (_, Err(e)) => {
                        return failed(pb::ExecFailure::NotRun, format!("terminal: {e}"));
                    }
                };
                readers.push(tokio::spawn(pump(r, false, out.clone(), budget.clone())));
                tokio::spawn(feed(w, Some(master), input));
                child
            }
            Err(e) => return failed(pb::ExecFailure::NotRun, e),
        },
    };
    let ended = tokio::select! {
        s = child.wait() => match s {
            Ok(s) => Ended::Exited(s),
            Err(e) => Ended::Failed(pb::ExecFailure::NotRun, format!("waiting for the command: {e}")),
        },
        _ = tokio::time::sleep(spec.timeout) => Ended::Failed(
            pb::ExecFailure::Timeout,
            format!("timed out after {} ms", spec.timeout.as_millis()),
        ),
        _ = budget.over.notified() => Ended::Failed(
            pb::ExecFailure::OutputLimit,
            format!("output passed the limit of {} bytes", spec.max_output),
        ),
        _ = &mut gone => Ended::Failed(pb::ExecFailure::Cancelled, "the caller went away".into()),
    };
    if matches!(ended, Ended::Failed(..)) {
        stop(&mut child).await;
    }
    // The command's pid namespace is gone with it, so the pipes reach their end now; a reader
    // still waiting for a slow caller gets until the grace period is over.
    for r in readers {
        let abort = r.abort_handle();
        if tokio::time::timeout(GRACE, r).await.is_err() {
            abort.abort();
        }
    }
    match ended {
        Ended::Exited(s) => pb::ExecExit {
            exit_code: exit_code(s),
            error: String::new(),
            failure: pb::ExecFailure::None as i32,
        },
        Ended::Failed(f, e) => failed(f, e),
    }
}

/// SIGTERM to the helper (it kills the command's pid namespace), SIGKILL after [`GRACE`].
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// Spawns `cmd` with a new pseudo-terminal's slave as stdin, stdout and stderr; returns the
/// child and the master.
fn spawn_tty(
    cmd: &mut tokio::process::Command,
    rows: u16,
    cols: u16,
) -> Result<(tokio::process::Child, OwnedFd), String> {
    let ws = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| format!("open a terminal: {e}"))?;
    let slave = std::fs::File::from(pty.slave);
    let io = |f: &std::fs::File| {
        f.try_clone()
            .map(Stdio::from)
            .map_err(|e| format!("terminal: {e}"))
    };
    cmd.stdin(io(&slave)?)
        .stdout(io(&slave)?)
        .stderr(io(&slave)?);
    let child = cmd.spawn().map_err(|e| format!("start the sandbox: {e}"))?;
    Ok((child, pty.master))
}

fn dup_file(fd: &OwnedFd) -> std::io::Result<tokio::fs::File> {
    Ok(tokio::fs::File::from_std(std::fs::File::from(
        fd.try_clone()?,
    )))
}

/// Runs `argv` in a guest through its command channel and sends the output in chunks.
pub async fn run_in_guest(
    guests: Arc<dyn crate::guest::GuestRuntime>,
    node_id: &str,
    spec: &ExecSpec,
    out: &mpsc::Sender<pb::ExecUp>,
) -> pb::ExecExit {
    if spec.tty.is_some() {
        return failed(
            pb::ExecFailure::NotRun,
            format!(
                "exec with a terminal is for netns nodes: {node_id} is a guest (its interactive shell is vnctl console -i)"
            ),
        );
    }
    let (id, argv, timeout) = (node_id.to_string(), spec.argv.clone(), spec.timeout);
    let o = match tokio::task::spawn_blocking(move || guests.exec(&id, &argv, timeout)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return failed(pb::ExecFailure::NotRun, e.to_string()),
        Err(e) => return failed(pb::ExecFailure::NotRun, format!("exec task: {e}")),
    };
    let limit = usize::try_from(spec.max_output).unwrap_or(usize::MAX);
    let out_n = o.stdout.len().min(limit);
    let err_n = o.stderr.len().min(limit - out_n);
    if !send_chunked(out, &o.stdout[..out_n], false).await
        || !send_chunked(out, &o.stderr[..err_n], true).await
    {
        return failed(pb::ExecFailure::Cancelled, "the caller went away".into());
    }
    if out_n + err_n < o.stdout.len() + o.stderr.len() {
        return failed(
            pb::ExecFailure::OutputLimit,
            format!("output passed the limit of {} bytes", spec.max_output),
        );
    }
    pb::ExecExit {
        exit_code: o.exit_code,
        error: String::new(),
        failure: pb::ExecFailure::None as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_per_node_are_limited_and_released() {
        let node = "exec-test-slots";
        let held: Vec<Slot> = (0..MAX_PER_NODE)
            .map(|_| Slot::take(node).unwrap())
            .collect();
        let e = Slot::take(node).err().unwrap();
        assert!(e.contains("the node runs 8 commands"), "{e}");
        drop(held);
        drop(Slot::take(node).unwrap());
    }

    #[test]
    fn budget_cuts_at_the_limit_and_notifies() {
        let b = Budget {
            used: AtomicU64::new(0),
            limit: 10,
            over: Notify::new(),
        };
        assert_eq!(b.take(4), 4);
        assert_eq!(b.take(4), 4);
        assert_eq!(b.take(4), 2);
        assert_eq!(b.take(4), 0);
    }

    #[tokio::test]
    async fn chunks_are_bounded() {
        let (tx, mut rx) = mpsc::channel(16);
        let data = vec![7u8; CHUNK * 2 + 5];
        let sender = tokio::spawn(async move { send_chunked(&tx, &data, true).await });
        let mut sizes = vec![];
        while let Some(m) = rx.recv().await {
            match m.msg {
                Some(pb::exec_up::Msg::Stderr(d)) => sizes.push(d.len()),
                other => panic!("{other:?}"),
            }
        }
        assert!(sender.await.unwrap());
        assert_eq!(sizes, [CHUNK, CHUNK, 5]);
    }

    #[tokio::test]
    async fn a_pump_stops_at_the_budget() {
        let (tx, mut rx) = mpsc::channel(64);
        let budget = Arc::new(Budget {
            used: AtomicU64::new(0),
            limit: 100_000,
            over: Notify::new(),
        });
        let src: &[u8] = &[1u8; 300_000];
        pump(src, false, tx, budget.clone()).await;
        let mut total = 0;
        while let Some(m) = rx.recv().await {
            if let Some(pb::exec_up::Msg::Stdout(d)) = m.msg {
                assert!(d.len() <= CHUNK);
                total += d.len();
            }
        }
        assert_eq!(total, 100_000);
        // The limit was passed: whoever waits for it is woken.
        tokio::time::timeout(Duration::from_secs(1), budget.over.notified())
            .await
            .unwrap();
    }
}
