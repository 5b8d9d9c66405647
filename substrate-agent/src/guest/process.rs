//! QEMU processes: started inside the sandbox's network namespace (through the host's
//! [`crate::host::netns::spawn_in`]) in a session of their own (they survive the agent), found
//! again through the pidfile, and recognized by their command line before anything is signalled.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::qemu_args::QemuCommand;

/// Starts `cmd` detached: in the sandbox namespace `netns` (a name or an absolute path), in a
/// session of its own (`setsid`: no signal from the agent's terminal or process group reaches it,
/// and it outlives the agent), with stdin from `/dev/null` and stdout/stderr appended to `log`.
/// Returns the child; the caller waits for QEMU to become ready and reaps it through
/// [`reap_exited`] once it is dead.
pub fn spawn_detached_in_netns(
    cmd: &QemuCommand,
    netns: &str,
    log: &Path,
) -> Result<std::process::Child, String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let mut c = Command::new(&cmd.binary);
    c.args(&cmd.args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which is
    // async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    crate::host::netns::spawn_in(netns, &mut c)
        .map_err(|e| format!("cannot run {} in netns {netns}: {e}", cmd.binary))
}

/// The pid in a pidfile, if it holds one.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The argv of a live process (empty when it is gone or a kernel thread).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `argv` is the QEMU of this guest: `-pidfile` names our pidfile and `-name` our process
/// name. Pure.
pub fn argv_is_guest(argv: &[String], name: &str, pidfile: &Path) -> bool {
    let pidfile = pidfile.to_string_lossy();
    let after = |flag: &str| {
        argv.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    };
    after("-name") == Some(name) && after("-pidfile") == Some(pidfile.as_ref())
}

/// Whether `pid` is alive and is the QEMU of this guest (a zombie counts as gone).
pub fn is_guest_process(pid: u32, name: &str, pidfile: &Path) -> bool {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        if let Some(rest) = stat.rsplit_once(')')
            && rest.1.trim_start().starts_with('Z')
        {
            // A zombie: collect it at once if it is our child (a QEMU this process started).
            reap_exited(pid, Duration::ZERO);
            return false;
        }
    }
    argv_is_guest(&cmdline(pid), name, pidfile)
}

/// After `pid` was seen gone: collects it if it is our child, waiting up to `timeout` for an
/// exiting process to turn into a zombie. Returns at once for a process that is not our child.
pub fn reap_exited(pid: u32, timeout: Duration) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: Signal) -> Result<(), nix::Error> {
    kill(Pid::from_raw(pid as i32), sig)
}

/// Waits until `pid` is no longer the guest's process, at most `timeout`. True when gone.
pub fn wait_gone(pid: u32, name: &str, pidfile: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_guest_process(pid, name, pidfile) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_only_its_own_qemu() {
        let argv: Vec<String> = ["qemu", "-name", "vnet-n1", "-pidfile", "/run/g/n1/qemu.pid"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(argv_is_guest(
            &argv,
            "vnet-n1",
            Path::new("/run/g/n1/qemu.pid")
        ));
        assert!(!argv_is_guest(
            &argv,
            "vnet-n2",
            Path::new("/run/g/n1/qemu.pid")
        ));
        assert!(!argv_is_guest(
            &argv,
            "vnet-n1",
            Path::new("/run/h/n1/qemu.pid")
        ));
        assert!(!argv_is_guest(
            &[],
            "vnet-n1",
            Path::new("/run/g/n1/qemu.pid")
        ));
    }

    #[test]
    fn own_process_is_not_a_guest_and_pidfiles_parse() {
        let me = std::process::id();
        assert!(!cmdline(me).is_empty());
        assert!(!is_guest_process(me, "vnet-x", Path::new("/nonexistent")));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pid");
        std::fs::write(&p, "1234\n").unwrap();
        assert_eq!(read_pidfile(&p), Some(1234));
        std::fs::write(&p, "x").unwrap();
        assert_eq!(read_pidfile(&p), None);
    }
}
