//! The testbed's daemons as real, detached processes: own session (they outlive vnctl), stdout
//! and stderr appended to a log file, a pidfile; stopped with SIGTERM, then SIGKILL, only after
//! `/proc/PID/cmdline` shows that the pid is still the process we started (pidfiles go stale after
//! a crash or a reboot, and pids are reused).

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How to start one daemon and how to recognise it later.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// For messages: "controller", "agent h1".
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub pidfile: PathBuf,
    /// An argument only our instance has (its state directory).
    pub marker: String,
}

/// Starts the daemon detached. The returned `Child` lets the caller notice an early exit.
pub fn spawn(spec: &DaemonSpec) -> anyhow::Result<Child> {
    for p in [&spec.log, &spec.pidfile] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        // Plain text in the log files (tracing colours its output unless told not to).
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; it runs in the
    // forked child before exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
    std::fs::write(&spec.pidfile, format!("{}\n", child.id()))
        .with_context(|| format!("writing {}", spec.pidfile.display()))?;
    Ok(child)
}

/// The pid in `pidfile` if that process is alive and is our daemon.
pub fn running(spec: &DaemonSpec) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(&spec.pidfile)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_ours(pid, spec).then_some(pid)
}

fn is_ours(pid: i32, spec: &DaemonSpec) -> bool {
    if pid <= 1 || is_zombie(pid) {
        return false;
    }
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let Some(prog) = spec.program.file_name() else {
        return false;
    };
    let argv0_matches = args
        .first()
        .map(|a| Path::new(a).file_name() == Some(prog))
        .unwrap_or(false);
    argv0_matches && args.iter().any(|a| a == &spec.marker)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .map(|state| state == 'Z' || state == 'X')
        .unwrap_or(true)
}

/// How a stop went.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running (no pidfile, stale pidfile, or someone else's process).
    NotRunning,
    Terminated,
    Killed,
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Removes the pidfile.
pub fn stop(spec: &DaemonSpec, grace: Duration) -> anyhow::Result<Stopped> {
    let outcome = match running(spec) {
        None => Stopped::NotRunning,
        Some(pid) => {
            let p = Pid::from_raw(pid);
            let _ = kill(p, Signal::SIGTERM);
            if wait_gone(pid, spec, grace) {
                Stopped::Terminated
            } else {
                let _ = kill(p, Signal::SIGKILL);
                anyhow::ensure!(
                    wait_gone(pid, spec, Duration::from_secs(5)),
                    "{} (pid {pid}) survived SIGKILL",
                    spec.name
                );
                Stopped::Killed
            }
        }
    };
    match std::fs::remove_file(&spec.pidfile) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context(format!("removing {}", spec.pidfile.display())),
    }
    Ok(outcome)
}

fn wait_gone(pid: i32, spec: &DaemonSpec, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if !is_ours(pid, spec) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_ours(pid, spec)
}

/// The last `n` lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &Path, marker: &str) -> DaemonSpec {
        DaemonSpec {
            name: "sleeper".into(),
            program: crate::which::on_path("sleep").expect("sleep on PATH"),
            args: vec!["300".into(), marker.into()],
            log: dir.join("logs/sleeper.log"),
            pidfile: dir.join("run/sleeper.pid"),
            marker: marker.into(),
        }
    }

    #[test]
    fn spawn_recognise_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        // `sleep 300 300` sleeps 600 s; the second argument doubles as our marker.
        let spec = sleeper(dir.path(), "300");
        let mut child = spawn(&spec).unwrap();
        let pid = running(&spec).expect("running");
        assert_eq!(pid as u32, child.id());
        // Own session: the daemon is not in our process group.
        let sid = nix::unistd::getsid(Some(Pid::from_raw(pid))).unwrap();
        assert_eq!(sid.as_raw(), pid);
        // Another marker: not recognised as ours.
        let other = DaemonSpec {
            marker: "not-this-one".into(),
            ..spec.clone()
        };
        assert_eq!(running(&other), None);
        // Stopping reaps nothing (the child is ours here), so reap concurrently.
        let reaper = std::thread::spawn(move || child.wait());
        assert_eq!(
            stop(&spec, Duration::from_secs(5)).unwrap(),
            Stopped::Terminated
        );
        reaper.join().unwrap().unwrap();
        assert!(!spec.pidfile.exists());
        assert_eq!(
            stop(&spec, Duration::from_secs(1)).unwrap(),
            Stopped::NotRunning
        );
    }

    #[test]
    fn stale_pidfile_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let spec = sleeper(dir.path(), "300");
        std::fs::create_dir_all(spec.pidfile.parent().unwrap()).unwrap();
        // Our own pid: alive, but not a `sleep` with the marker.
        std::fs::write(&spec.pidfile, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running(&spec), None);
        assert_eq!(
            stop(&spec, Duration::from_secs(1)).unwrap(),
            Stopped::NotRunning
        );
        assert!(!spec.pidfile.exists());
    }

    #[test]
    fn tail_of_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "b\nc");
        assert!(tail(&dir.path().join("none"), 2).contains("cannot read"));
    }
}
