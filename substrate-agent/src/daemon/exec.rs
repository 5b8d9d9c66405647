//! `ExecCommand` for namespace nodes: runs argv in the node's network namespace (the child calls
//! `setns` between fork and exec), with a timeout, capturing stdout and stderr.

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::Duration;

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Set when the command could not run at all or was killed by the timeout.
    pub error: String,
}

/// Output kept per stream.
pub const MAX_OUTPUT: usize = 4 << 20;

/// Runs `argv` inside the named namespace `netns`.
pub async fn exec_in_netns(netns: &str, argv: &[String], timeout: Duration) -> ExecOutcome {
    let fail = |e: String| ExecOutcome {
        exit_code: -1,
        error: e,
        ..Default::default()
    };
    let Some((prog, args)) = argv.split_first() else {
        return fail("argv is empty".into());
    };
    let ns = match crate::host::netns::open(netns) {
        Ok(f) => f,
        Err(e) => return fail(format!("namespace {netns}: {e}")),
    };
    let fd = ns.as_raw_fd();
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which is
    // async-signal-safe; `fd` stays open in the parent (and so in the child) until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot run {prog:?} in {netns}: {e}")),
    };
    drop(ns);
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let mut stdout = out.stdout;
            let mut stderr = out.stderr;
            stdout.truncate(MAX_OUTPUT);
            stderr.truncate(MAX_OUTPUT);
            ExecOutcome {
                exit_code: out.status.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + out.status.signal().unwrap_or(0)
                }),
                stdout,
                stderr,
                error: String::new(),
            }
        }
        Ok(Err(e)) => fail(format!("waiting for {prog:?}: {e}")),
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => fail(format!(
            "{prog:?} timed out after {} ms",
            timeout.as_millis()
        )),
    }
}
