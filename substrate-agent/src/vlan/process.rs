//! The agent's side of the datapath process: spawn, adopt after an agent restart, reconfigure
//! (write the config file, SIGHUP, wait for the status file), stop.
//!
//! Why a separate process: an agent restart (upgrade, crash) must not disturb tenants. The
//! datapath holds the TAP file descriptors and the AF_PACKET sockets; it runs in its own session
//! (setsid) so it survives the agent, and the new agent adopts it by pid and start time recorded
//! in the state directory. If it dies, the next reconcile starts it again; the TAP devices are
//! persistent, so the tenants' interfaces and addresses stay in place meanwhile.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{DatapathConfig, DatapathControl, DatapathError};
use super::datapath::{ConfigFile, StatusFile};
use crate::reconcile::state::StateDir;

/// How long to wait for the datapath to load a config.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Controls one datapath process per agent.
pub struct ProcessDatapath {
    exe: PathBuf,
    dir: PathBuf,
    state: Arc<StateDir>,
    nonce: AtomicU64,
    lock: Mutex<()>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Io { what, source }
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
        Ok(Self {
            exe,
            dir,
            state,
            nonce: AtomicU64::new(nonce),
            lock: Mutex::new(()),
        })
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
        // SAFETY: setsid(2) is async-signal-safe; it detaches the child from the agent's session
        // so that stopping the agent (or its terminal) does not stop the datapath.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(io_err(format!("start {}", self.exe.display())))?;
        let pid = child.id();
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
    fn healthy(&self) -> bool {
        let _g = self.lock.lock().expect("datapath lock");
        !self.config_path().exists() || self.running_pid().is_some()
    }

    fn configure(&self, cfg: &DatapathConfig, reattach: bool) -> Result<(), DatapathError> {
        cfg.validate().map_err(DatapathError::Config)?;
        let _g = self.lock.lock().expect("datapath lock");
        let running = self.running_pid();
        if cfg.wires.is_empty() {
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
