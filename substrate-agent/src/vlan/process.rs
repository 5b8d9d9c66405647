//! The agent's side of the datapath process: spawn, adopt after an agent restart, reconfigure
//! (write the config file, SIGHUP, wait for the status file), stop.
//!
//! Why a separate process: an agent restart (upgrade, crash) must not disturb tenants. The
//! datapath holds the TAP file descriptors and the AF_PACKET sockets; it runs in its own session
//! (setsid) so it survives the agent, and the new agent adopts it by pid and start time recorded
//! in the state directory. If it dies, the next reconcile starts it again; the TAP devices are
//! persistent, so the tenants' interfaces and addresses stay in place meanwhile.
//!
//! Ownership from before the start: a pid can only be written down after the fork, so a crash in
//! between would orphan a datapath that holds the TAP devices (the next one gets `EBUSY`). The
//! intent is therefore recorded first, as an exclusive `flock` on `vlan-datapath.lock` in the state
//! directory, taken by the agent before it forks and inherited by the child (the agent closes its
//! copy once the child runs). The lock is held exactly as long as some process of ours may be a
//! datapath, also between fork and exec. On start, the agent takes the lock: if it can, nothing
//! of ours runs; if it cannot, it finds the holders through `/proc/*/fd`, keeps the recorded
//! datapath and kills every other holder (an orphan of a crash), before anything is spawned.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{DatapathConfig, DatapathControl, DatapathError};
use super::datapath::{ConfigFile, StatusFile};
use crate::reconcile::state::StateDir;

/// How long to wait for the datapath to load a config.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a killed orphan to let go of the lock.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(5);

/// Test hook of the crash tests: `POINT:MS:MARKER` makes the process that reaches `POINT` of a
/// datapath start create the file `MARKER` and sleep `MS` milliseconds there, so a test can kill
/// the agent at that moment. Points, in order: `intent` (lock taken, before the fork), `exec`
/// (in the child, before exec), `spawned` (child runs, pid not yet recorded), `recorded` (pid
/// recorded, config not yet loaded), `loaded` (the datapath reported the config).
pub const PAUSE_ENV: &str = "VNET_TEST_DATAPATH_PAUSE";

/// A parsed [`PAUSE_ENV`].
#[derive(Debug, Clone)]
struct Pause {
    point: String,
    ms: u64,
    marker: std::ffi::CString,
}

impl Pause {
    fn from_env() -> Option<Self> {
        let v = std::env::var(PAUSE_ENV).ok()?;
        let mut it = v.splitn(3, ':');
        let (point, ms, marker) = (it.next()?, it.next()?.parse().ok()?, it.next()?);
        Some(Pause {
            point: point.to_string(),
            ms,
            marker: std::ffi::CString::new(marker).ok()?,
        })
    }

    /// Marks and sleeps if `point` is the chosen one. Only async-signal-safe calls, so it may
    /// also run in a forked child before exec.
    fn at(&self, point: &str) {
        if self.point != point {
            return;
        }
        // SAFETY: open(2), close(2) and nanosleep(2) are async-signal-safe; the path is a valid
        // NUL-terminated string owned by `self`.
        unsafe {
            let fd = libc::open(
                self.marker.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            if fd >= 0 {
                libc::close(fd);
            }
            let ts = libc::timespec {
                tv_sec: (self.ms / 1000) as libc::time_t,
                tv_nsec: ((self.ms % 1000) * 1_000_000) as libc::c_long,
            };
            libc::nanosleep(&ts, std::ptr::null_mut());
        }
    }
}

/// Controls one datapath process per agent.
pub struct ProcessDatapath {
    exe: PathBuf,
    dir: PathBuf,
    state: Arc<StateDir>,
    nonce: AtomicU64,
    lock: Mutex<()>,
    pause: Option<Pause>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Io { what, source }
}

/// The kernel state of a process (`R`, `S`, `Z`, ...), `None` when it does not exist.
fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

/// Pids of the processes that have `file` open (by device and inode), this one excepted.
fn holders_of(file: &std::fs::File) -> io::Result<Vec<u32>> {
    let me = file.metadata()?;
    let own = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == own {
            continue;
        }
        // Processes come and go, and some fds are unreadable: skip what cannot be read.
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == me.dev() && m.ino() == me.ino())
        });
        if holds {
            out.push(pid);
        }
    }
    Ok(out)
}

/// Takes the exclusive lock without waiting; `false` when another open file holds it.
///
/// Plain flock(2), not `nix::fcntl::Flock`: that one unlocks when dropped, which would release
/// the lock the child shares; closing our descriptor keeps it for the child.
fn try_lock(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock(2) on a valid open fd; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl ProcessDatapath {
    /// `exe` is the agent's own binary (it has the hidden `vlan-datapath` subcommand).
    pub fn new(exe: PathBuf, state: Arc<StateDir>) -> io::Result<Self> {
        let dir = state
            .dir()
            .map(Path::to_path_buf)
            .ok_or_else(|| io::Error::other("the datapath needs an on-disk state directory"))?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let dp = Self {
            exe,
            dir,
            state,
            nonce: AtomicU64::new(nonce),
            lock: Mutex::new(()),
            pause: Pause::from_env(),
        };
        dp.recover().map_err(io::Error::other)?;
        Ok(dp)
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("vlan-datapath.lock")
    }

    fn open_lock(&self) -> Result<std::fs::File, DatapathError> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.lock_path())
            .map_err(io_err("datapath lock"))
    }

    /// After an agent start: keeps the recorded datapath if it runs, kills every other process
    /// that holds the datapath lock (a datapath or a child not yet exec'd, orphaned by a crash of
    /// the agent between fork and recording its pid), and forgets a record that is dead.
    fn recover(&self) -> Result<(), DatapathError> {
        let running = self.running_pid();
        self.kill_orphans(running)?;
        if running.is_none() && self.state.datapath().is_some() {
            tracing::info!("the recorded vlan datapath is gone");
            self.state
                .set_datapath(None)
                .map_err(|e| DatapathError::Config(e.to_string()))?;
        }
        Ok(())
    }

    /// Kills every holder of the datapath lock except `keep`, and waits until they are gone.
    /// Returns the lock taken when nothing holds it any more (`None`: `keep` holds it).
    fn kill_orphans(&self, keep: Option<u32>) -> Result<Option<std::fs::File>, DatapathError> {
        let lock = self.open_lock()?;
        let t = Instant::now();
        loop {
            if try_lock(&lock).map_err(io_err("datapath lock"))? {
                return Ok(Some(lock));
            }
            let holders = holders_of(&lock).map_err(io_err("find the datapath lock's holders"))?;
            let orphans: Vec<u32> = holders
                .into_iter()
                .filter(|p| Some(*p) != keep && proc_state(*p).is_some_and(|s| s != 'Z'))
                .collect();
            if orphans.is_empty() && keep.is_some() {
                return Ok(None);
            }
            if t.elapsed() > ORPHAN_TIMEOUT {
                return Err(DatapathError::Config(format!(
                    "processes {orphans:?} still hold {} after SIGKILL",
                    self.lock_path().display()
                )));
            }
            for pid in orphans {
                tracing::warn!(pid, "killing an orphaned vlan datapath process");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("vlan-datapath.json")
    }

    fn status_path(&self) -> PathBuf {
        self.dir.join("vlan-datapath.status.json")
    }

    /// The recorded datapath, if it still runs (same pid, same start time, our binary).
    pub fn running_pid(&self) -> Option<u32> {
        let (pid, start) = self.state.datapath()?;
        if start_time(pid)? != start {
            return None;
        }
        // A zombie (dead, not yet reaped) does not forward anything.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        if stat[stat.rfind(')')? + 1..].trim_start().starts_with('Z') {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.contains("vlan-datapath").then_some(pid)
    }

    fn read_status(&self) -> Option<StatusFile> {
        let b = std::fs::read(self.status_path()).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn spawn(&self) -> Result<u32, DatapathError> {
        use std::os::unix::process::CommandExt;
        // The intent: the lock, taken before the fork and inherited by the child.
        let lock = self
            .kill_orphans(None)?
            .ok_or_else(|| DatapathError::Config("datapath lock still held".into()))?;
        let lock_fd = lock.as_raw_fd();
        let pause = self.pause.clone();
        if let Some(p) = &pause {
            p.at("intent");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vlan-datapath.log"))
            .map_err(io_err("datapath log"))?;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("vlan-datapath")
            .arg("--config")
            .arg(self.config_path())
            .arg("--status")
            .arg(self.status_path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(io_err("datapath log"))?)
            .stderr(log);
        // SAFETY: setsid(2) and fcntl(2) are async-signal-safe, and so is `Pause::at`. setsid
        // detaches the child from the agent's session so that stopping the agent (or its
        // terminal) does not stop the datapath; clearing FD_CLOEXEC keeps the lock in the child.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if libc::fcntl(lock_fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(p) = &pause {
                    p.at("exec");
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(io_err(format!("start {}", self.exe.display())))?;
        // The child holds the lock now; the agent's copy must not keep it past the child's life.
        drop(lock);
        let pid = child.id();
        if let Some(p) = &self.pause {
            p.at("spawned");
        }
        // Reap it from a thread if it exits while this agent runs (no zombie).
        std::thread::spawn(move || {
            let mut c = child;
            let _ = c.wait();
        });
        let start = start_time(pid).unwrap_or_default();
        self.state
            .set_datapath(Some((pid, start)))
            .map_err(|e| DatapathError::Config(e.to_string()))?;
        tracing::info!(pid, "vlan datapath started");
        if let Some(p) = &self.pause {
            p.at("recorded");
        }
        Ok(pid)
    }

    fn stop(&self, pid: u32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) && start_time(pid).is_some() {
            // A zombie still has /proc/PID/stat; check its state.
            if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!(pid, "vlan datapath stopped");
    }
}

impl DatapathControl for ProcessDatapath {
    fn serves_relays(&self) -> bool {
        true
    }

    fn healthy(&self) -> bool {
        let _g = self.lock.lock().expect("datapath lock");
        !self.config_path().exists() || self.running_pid().is_some()
    }

    fn configure(&self, cfg: &DatapathConfig, reattach: bool) -> Result<(), DatapathError> {
        cfg.validate().map_err(DatapathError::Config)?;
        let _g = self.lock.lock().expect("datapath lock");
        let running = self.running_pid();
        if cfg.is_empty() {
            if let Some(pid) = running {
                self.stop(pid);
            }
            if self.state.datapath().is_some() {
                self.state
                    .set_datapath(None)
                    .map_err(|e| DatapathError::Config(e.to_string()))?;
            }
            let _ = std::fs::remove_file(self.config_path());
            let _ = std::fs::remove_file(self.status_path());
            return Ok(());
        }
        // Already serving exactly this, without errors: leave it alone.
        if let (Some(_), false) = (running, reattach) {
            let current = std::fs::read(self.config_path())
                .ok()
                .and_then(|b| serde_json::from_slice::<ConfigFile>(&b).ok());
            let status = self.read_status();
            if let (Some(c), Some(s)) = (current, status)
                && c.config == *cfg
                && s.nonce == c.nonce
                && s.errors.is_empty()
            {
                return Ok(());
            }
        }
        let nonce = self.nonce.fetch_add(1, Ordering::Relaxed) + 1;
        let file = ConfigFile {
            nonce,
            config: cfg.clone(),
        };
        let tmp = self.dir.join("vlan-datapath.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&file).expect("serializes"))
            .map_err(io_err("write datapath config"))?;
        std::fs::rename(&tmp, self.config_path()).map_err(io_err("write datapath config"))?;
        let pid = match running {
            Some(pid) => {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .map_err(|e| io_err("signal datapath")(io::Error::from_raw_os_error(e as i32)))?;
                pid
            }
            None => self.spawn()?,
        };
        let t = Instant::now();
        loop {
            if let Some(s) = self.read_status()
                && s.nonce == nonce
                && s.pid == pid
            {
                if let Some(p) = &self.pause {
                    p.at("loaded");
                }
                if s.errors.is_empty() {
                    return Ok(());
                }
                return Err(DatapathError::Wires(s.errors));
            }
            if t.elapsed() > LOAD_TIMEOUT {
                return Err(DatapathError::Config(format!(
                    "process {pid} did not load its configuration within {LOAD_TIMEOUT:?} (see {})",
                    self.dir.join("vlan-datapath.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
