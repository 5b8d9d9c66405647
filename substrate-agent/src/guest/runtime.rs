//! [`QemuRuntime`]: the real [`GuestRuntime`]. One run directory per guest under `state_dir`
//! (default `/run/vnet/guests/<node_id>/`) holds what survives an agent restart:
//!
//! | file | what |
//! | --- | --- |
//! | `guest.json` | the runtime's record: configuration, acceleration, TAPs, argv, restarts |
//! | `qemu.pid` | QEMU's pidfile (`-pidfile`) |
//! | `qmp.sock` | QMP monitor |
//! | `cmd.sock` | command channel (virtio-serial port `vnet.cmd`) |
//! | `console.sock`, `console.log` | serial console: attachable socket, and everything it printed |
//! | `qemu.log` | QEMU's own messages (the reason when it refuses to start) |
//!
//! A new runtime object (e.g. after an agent restart) finds running guests through the record,
//! the pidfile and `/proc/<pid>/cmdline`, and adopts them when their argv is what the desired
//! configuration renders to.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::accel::{HostGuestSupport, decide_kvm, gather_kvm_facts, probe_host, resolve_accel};
use super::channel::{Channel, ChannelError};
use super::disk::{ensure_overlay, write_seed};
use super::image::{self, BaseDisk};
use super::kernel_cmdline::guest_kernel_cmdline;
use super::process::{
    is_guest_process, read_pidfile, reap_exited, signal, spawn_detached_in_netns, wait_gone,
};
use super::qemu_args::{Drive, LaunchInputs, Machine, RunPaths, guest_command, process_name};
use super::qmp::Qmp;
use super::seed::nocloud_seed;
use super::tap::{TapError, TapPair, ensure_taps, remove_taps, tap_names};
use super::{
    AccelUsed, ConsoleChunk, ConsoleCursor, EnsureAction, ExecOutput, GuestArch, GuestConfig,
    GuestError, GuestRuntime, GuestStatus, KvmVerdict, ObservedGuest,
};
use crate::host::kernel::Kernel;

/// A console log longer than this is cut to its last [`CONSOLE_LOG_KEEP`] bytes when the guest
/// (re)starts; QEMU appends while it runs.
const CONSOLE_LOG_MAX: u64 = 4 << 20;
const CONSOLE_LOG_KEEP: u64 = 256 << 10;

/// Limit of the KVM test boot in [`QemuRuntime::new`] (a KVM boot reaches init in well under a
/// second; a broken KVM hangs).
pub const KVM_TEST_BOOT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long QEMU may take to set up its devices and answer QMP.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Where and how the runtime works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuRuntimeOptions {
    /// Run directories (one per guest). On tmpfs: a host reboot ends the guests too.
    pub state_dir: PathBuf,
    /// Images (`<images_dir>/<name>/image.json`).
    pub images_dir: PathBuf,
    /// QEMU binary (x86_64 guests).
    pub qemu_binary: String,
    /// QEMU binary of aarch64 guests.
    pub qemu_aarch64_binary: String,
    /// `-cpu` of aarch64 guests under TCG.
    pub aarch64_cpu: String,
    /// Tools that make a disk image's overlay and seed.
    pub disk_tools: super::disk::DiskTools,
    /// Firmware for q35 guests (qboot boots faster than SeaBIOS); `None`: QEMU's default.
    pub qboot_rom: Option<PathBuf>,
    /// TCG translation cache, MiB.
    pub tb_size_mb: u32,
    /// How long `stop` waits after QMP `quit` before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for QemuRuntimeOptions {
    fn default() -> Self {
        let qboot = PathBuf::from("/usr/share/qemu/qboot.rom");
        QemuRuntimeOptions {
            state_dir: PathBuf::from("/run/vnet/guests"),
            images_dir: PathBuf::from("/var/lib/vnet/images"),
            qemu_binary: "qemu-system-x86_64".into(),
            qemu_aarch64_binary: "qemu-system-aarch64".into(),
            // The A57 model: `max` adds pointer authentication, which TCG emulates slowly.
            aarch64_cpu: "cortex-a57".into(),
            disk_tools: Default::default(),
            qboot_rom: qboot.is_file().then_some(qboot),
            tb_size_mb: 32,
            stop_grace: Duration::from_secs(3),
        }
    }
}

/// The runtime's record of one guest (`guest.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestRecord {
    config: GuestConfig,
    accel: AccelUsed,
    /// (tenant ifname, TAP)
    taps: Vec<(String, String)>,
    argv: Vec<String>,
    restarts: u32,
    /// QEMU's pid once started (also after QEMU removed its pidfile on exit).
    #[serde(default)]
    pid: Option<u32>,
    /// The QEMU binary (absent in records of older agents: the x86_64 one).
    #[serde(default)]
    binary: Option<String>,
}

impl GuestRecord {
    fn pairs(&self) -> Vec<TapPair> {
        self.taps
            .iter()
            .map(|(i, t)| TapPair {
                ifname: i.clone(),
                tap: t.clone(),
                mtu: self
                    .config
                    .nics
                    .iter()
                    .find(|n| &n.ifname == i)
                    .map_or(1500, |n| n.mtu),
            })
            .collect()
    }
}

/// The QEMU-backed guest runtime. Synchronous; see the module docs of [`super`].
pub struct QemuRuntime {
    opts: QemuRuntimeOptions,
    support: HostGuestSupport,
    /// The host's kernel layer: TAPs and tc redirects in the sandboxes.
    kernel: Arc<dyn Kernel>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    exec_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// What `ensure` starts for a configuration (see [`QemuRuntime::launch`]).
struct Launch {
    accel: AccelUsed,
    /// Why this acceleration (logged).
    why: String,
    /// (tenant ifname, TAP) per NIC.
    names: Vec<(String, String)>,
    cmd: super::qemu_args::QemuCommand,
    pairs: Vec<TapPair>,
    /// A disk image's base and the guest's overlay on it.
    disk: Option<(BaseDisk, PathBuf)>,
}

/// What `ensure` does about what it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    /// Keep the running guest (its TAPs and redirects are re-checked).
    Adopt,
    /// Start QEMU, after stopping the running one when `kill`.
    Start {
        kill: bool,
        action: EnsureAction,
        restarts: u32,
    },
}

/// The lifecycle decision. `prev`: the recorded argv and restart count; `running`: the recorded
/// QEMU runs; `wedged`: asked only for a running guest of the same argv. Pure but for `wedged`.
fn decide(
    prev: Option<(&[String], u32)>,
    running: bool,
    wedged: impl FnOnce() -> bool,
    argv: &[String],
) -> Lifecycle {
    let start = |kill, action, restarts| Lifecycle::Start {
        kill,
        action,
        restarts,
    };
    match (prev, running) {
        (Some((old, r)), true) if old == argv => {
            if wedged() {
                start(true, EnsureAction::Restarted, r + 1)
            } else {
                Lifecycle::Adopt
            }
        }
        (Some((_, r)), true) => start(true, EnsureAction::Replaced, r),
        (Some((_, r)), false) => start(false, EnsureAction::Restarted, r + 1),
        (None, true) => start(true, EnsureAction::Started, 0),
        (None, false) => start(false, EnsureAction::Started, 0),
    }
}

/// Reaps the recorded QEMU of a guest found dead, when this process started it.
fn collect_dead(rec: Option<&GuestRecord>) {
    if let Some(pid) = rec.and_then(|r| r.pid) {
        reap_exited(pid, Duration::from_millis(500));
    }
}

fn valid_node_id(id: &str) -> Result<(), GuestError> {
    if id.is_empty()
        || id.len() > 12
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(GuestError::InvalidConfig(format!(
            "node id {id:?} must be 1-12 characters of [a-z0-9]"
        )));
    }
    Ok(())
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> GuestError {
    let what = what.to_string();
    let path = path.to_path_buf();
    move |source| GuestError::Io { what, path, source }
}

fn tap_err(node_id: &str, netns: &str, e: TapError) -> GuestError {
    match e {
        TapError::MissingInterface(ifname) => GuestError::MissingInterface {
            node_id: node_id.into(),
            ifname,
            netns: netns.into(),
        },
        source => GuestError::Net {
            node_id: node_id.into(),
            netns: netns.into(),
            source,
        },
    }
}

impl QemuRuntime {
    /// A runtime with `opts`, probing the host (QEMU version, KVM verdict, TSC rate). When the
    /// static checks call KVM usable and the `default` image exists, a test boot under
    /// `-accel kvm` (at most [`KVM_TEST_BOOT_TIMEOUT`]) must confirm it, else guests use TCG.
    /// Creates `state_dir`. Report [`QemuRuntime::support`] in the agent's capabilities.
    pub fn new(
        opts: QemuRuntimeOptions,
        kernel: Arc<dyn Kernel>,
    ) -> Result<QemuRuntime, GuestError> {
        let support = probe_host(&opts.qemu_binary);
        let mut rt = Self::with_support(opts, support, kernel)?;
        rt.confirm_kvm();
        Ok(rt)
    }

    /// When the static checks call KVM usable and the `default` image exists, a test boot under
    /// `-accel kvm` (at most [`KVM_TEST_BOOT_TIMEOUT`]) confirms or overturns the verdict.
    pub fn confirm_kvm(&mut self) {
        if self.support.kvm.usable && image::load(&self.opts.images_dir, "default").is_ok() {
            self.probe_kvm_with_test_boot("default", KVM_TEST_BOOT_TIMEOUT);
        }
    }

    /// A runtime with a given probe result; `kernel` makes the TAPs and redirects in sandboxes.
    pub fn with_support(
        mut opts: QemuRuntimeOptions,
        support: HostGuestSupport,
        kernel: Arc<dyn Kernel>,
    ) -> Result<QemuRuntime, GuestError> {
        std::fs::create_dir_all(&opts.state_dir).map_err(io_err(
            "cannot create guest state directory",
            &opts.state_dir,
        ))?;
        // QEMU is started with "/" as its working directory: every path it gets must be absolute.
        opts.state_dir = std::fs::canonicalize(&opts.state_dir)
            .map_err(io_err("cannot resolve", &opts.state_dir))?;
        if opts.images_dir.is_relative()
            && let Ok(p) = std::fs::canonicalize(&opts.images_dir)
        {
            opts.images_dir = p;
        }
        info!(
            qemu = %support.qemu_string(),
            kvm_usable = support.kvm.usable,
            kvm_reason = %support.kvm.reason,
            tsc_khz = ?support.tsc_khz,
            "guest runtime ready"
        );
        Ok(QemuRuntime {
            opts,
            support,
            kernel,
            locks: Mutex::new(HashMap::new()),
            exec_locks: Mutex::new(HashMap::new()),
        })
    }

    /// What the probe found (for `AgentHello.capabilities`).
    pub fn support(&self) -> &HostGuestSupport {
        &self.support
    }

    /// The guest's serial console socket: connect to it (e.g. `socat - UNIX-CONNECT:PATH`) for an
    /// interactive shell on the guest's console; everything is also logged to `console.log`.
    pub fn console_socket(&self, node_id: &str) -> Result<PathBuf, GuestError> {
        valid_node_id(node_id)?;
        let p = self.paths(node_id).console_sock();
        if p.exists() {
            Ok(p)
        } else {
            Err(GuestError::NotFound(node_id.into()))
        }
    }

    /// The options in force.
    pub fn options(&self) -> &QemuRuntimeOptions {
        &self.opts
    }

    /// When the static checks call KVM usable, confirms it with a test boot of `image` under
    /// `-accel kvm` (at most `timeout`), and updates the verdict either way. Does nothing when
    /// KVM is already judged unusable.
    pub fn probe_kvm_with_test_boot(&mut self, image: &str, timeout: Duration) {
        if !self.support.kvm.usable {
            return;
        }
        let mut facts = gather_kvm_facts();
        facts.test_boot = Some(self.test_boot(image, AccelUsed::Kvm, timeout));
        self.support.kvm = decide_kvm(&facts);
        info!(kvm_usable = self.support.kvm.usable, reason = %self.support.kvm.reason, "KVM test boot");
    }

    /// Boots `image` without NICs under `accel` until its init prints `VNET-PROBE-OK`, then ends
    /// it. Returns the time that took.
    pub fn test_boot(
        &self,
        image: &str,
        accel: AccelUsed,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let img = image::load(&self.opts.images_dir, image).map_err(|e| e.to_string())?;
        let mut args: Vec<String> = vec![];
        for a in [
            &super::qemu_args::AccelArg {
                accel,
                tb_size_mb: self.opts.tb_size_mb,
            } as &dyn super::qemu_args::QemuArg,
            &Machine::Microvm,
        ] {
            args.extend(a.render());
        }
        if accel == AccelUsed::Kvm {
            args.extend(["-cpu".into(), "host".into()]);
        }
        let mut append = "console=ttyS0 panic=-1 quiet vnet.probe=1".to_string();
        if let Some(k) = self.support.tsc_khz {
            append.push_str(&format!(" tsc_early_khz={k}"));
        }
        args.extend(
            [
                "-m",
                "128M",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-serial",
                "stdio",
                "-kernel",
            ]
            .map(String::from),
        );
        args.push(img.kernel.to_string_lossy().into_owned());
        args.push("-initrd".into());
        args.push(img.initrd.to_string_lossy().into_owned());
        args.push("-append".into());
        args.push(append);
        let start = Instant::now();
        let mut child = Command::new(&self.opts.qemu_binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.opts.qemu_binary))?;
        let mut out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(13).any(|w| w == b"VNET-PROBE-OK") {
                    let _ = tx.send(());
                    break;
                }
            }
        });
        let r = match rx.recv_timeout(timeout) {
            Ok(()) => Ok(start.elapsed()),
            Err(_) => Err(format!("no init output within {timeout:?}")),
        };
        let _ = child.kill();
        let status = child.wait();
        let _ = reader.join();
        match (&r, status) {
            (Err(e), Ok(st)) if !st.success() && st.code().is_some() => {
                let mut msg = String::new();
                if let Some(mut e2) = child.stderr.take() {
                    let _ = e2.read_to_string(&mut msg);
                }
                Err(format!("{e}; QEMU exited with {st}: {}", msg.trim()))
            }
            _ => r,
        }
    }

    fn lock_of(map: &Mutex<HashMap<String, Arc<Mutex<()>>>>, id: &str) -> Arc<Mutex<()>> {
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn paths(&self, node_id: &str) -> RunPaths {
        RunPaths::new(&self.opts.state_dir, node_id)
    }

    fn read_record(&self, paths: &RunPaths) -> Result<Option<GuestRecord>, GuestError> {
        let p = paths.record();
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| GuestError::Io {
                    what: "corrupt guest record".into(),
                    path: p,
                    source: std::io::Error::other(e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &p)(e)),
        }
    }

    fn write_record(&self, paths: &RunPaths, rec: &GuestRecord) -> Result<(), GuestError> {
        let p = paths.record();
        let tmp = paths.dir.join(".guest.json.new");
        let text = serde_json::to_vec_pretty(rec).map_err(|e| GuestError::Io {
            what: "cannot encode guest record".into(),
            path: p.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&tmp, text).map_err(io_err("cannot write", &tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err("cannot write", &p))
    }

    /// QEMU's pid when this guest's QEMU runs.
    fn running_pid(&self, node_id: &str, paths: &RunPaths) -> Option<u32> {
        let pid = read_pidfile(&paths.pidfile())?;
        is_guest_process(pid, &process_name(node_id), &paths.pidfile()).then_some(pid)
    }

    /// Ends QEMU: QMP quit, then SIGKILL after the grace period.
    fn kill_guest(&self, node_id: &str, pid: u32, paths: &RunPaths) -> Result<(), GuestError> {
        let name = process_name(node_id);
        let pidfile = paths.pidfile();
        let quit = Qmp::connect(&paths.qmp(), Duration::from_secs(1)).and_then(|mut q| q.quit());
        if let Err(e) = &quit {
            warn!(node_id, error = %e, "QMP quit failed; killing");
        }
        if quit.is_ok() && wait_gone(pid, &name, &pidfile, self.opts.stop_grace) {
            reap_exited(pid, Duration::from_secs(2));
            return Ok(());
        }
        let _ = signal(pid, Signal::SIGKILL);
        if wait_gone(pid, &name, &pidfile, Duration::from_secs(5)) {
            reap_exited(pid, Duration::from_secs(2));
            Ok(())
        } else {
            Err(GuestError::Qmp {
                node_id: node_id.into(),
                reason: format!("QEMU pid {pid} survived SIGKILL"),
            })
        }
    }

    /// Whether QMP reports a state from which the guest will not continue by itself.
    fn is_wedged(&self, node_id: &str, paths: &RunPaths) -> bool {
        match Qmp::connect(&paths.qmp(), Duration::from_secs(2)).and_then(|mut q| q.status()) {
            Ok(s) => {
                let wedged = matches!(s.as_str(), "shutdown" | "guest-panicked" | "internal-error");
                if wedged {
                    warn!(node_id, status = %s, "guest is not running");
                }
                wedged
            }
            // Busy or slow monitor: the process lives; do not reboot a guest for that.
            Err(e) => {
                warn!(node_id, error = %e, "QMP query-status failed; keeping the guest");
                false
            }
        }
    }

    fn start(
        &self,
        cfg: &GuestConfig,
        paths: &RunPaths,
        rec: &GuestRecord,
        pairs: &[TapPair],
        fresh_dir: bool,
    ) -> Result<u32, GuestError> {
        let netns = &cfg.netns;
        for f in [
            paths.pidfile(),
            paths.qmp(),
            paths.cmd(),
            paths.console_sock(),
        ] {
            let _ = std::fs::remove_file(f);
        }
        let created = match ensure_taps(&*self.kernel, netns, pairs) {
            Ok(c) => c,
            Err(e) => {
                // ensure_taps removed what it had created itself.
                if fresh_dir {
                    let _ = std::fs::remove_dir_all(&paths.dir);
                }
                return Err(tap_err(&cfg.node_id, &cfg.netns, e));
            }
        };
        let undo = |created: &[String]| {
            let undo_pairs: Vec<TapPair> = pairs
                .iter()
                .filter(|p| created.contains(&p.tap))
                .cloned()
                .collect();
            if let Err(e) = remove_taps(&*self.kernel, netns, &undo_pairs) {
                warn!(node_id = %cfg.node_id, error = %e, "rollback: cannot remove TAPs");
            }
            if fresh_dir {
                let _ = std::fs::remove_dir_all(&paths.dir);
            }
        };
        if let Err(e) = self.write_record(paths, rec) {
            undo(&created);
            return Err(e);
        }
        // Bound the log across restarts: keep the tail of what earlier runs printed.
        let log = paths.console_log();
        // A new file (renamed over the old one), so that console readers notice the cut.
        if std::fs::metadata(&log).is_ok_and(|m| m.len() > CONSOLE_LOG_MAX) {
            let tail = self.console_tail(paths, CONSOLE_LOG_KEEP as usize);
            let tmp = paths.dir.join(".console.log.new");
            if std::fs::write(&tmp, tail).is_ok() {
                let _ = std::fs::rename(&tmp, &log);
            }
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            let _ = writeln!(
                f,
                "\n=== vnet: starting guest {} (restarts: {}) ===",
                cfg.node_id, rec.restarts
            );
        }
        let cmd = super::qemu_args::QemuCommand {
            binary: rec
                .binary
                .clone()
                .unwrap_or_else(|| self.opts.qemu_binary.clone()),
            args: rec.argv.clone(),
        };
        let mut child = match spawn_detached_in_netns(&cmd, netns, &paths.qemu_log()) {
            Ok(c) => c,
            Err(reason) => {
                undo(&created);
                return Err(GuestError::Spawn {
                    node_id: cfg.node_id.clone(),
                    reason,
                });
            }
        };
        let pid = child.id();
        // QEMU answers QMP once its main loop runs, i.e. after every device (TAPs included) was
        // set up; an early exit means it refused the configuration.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                undo(&created);
                let log = std::fs::read_to_string(paths.qemu_log()).unwrap_or_default();
                return Err(GuestError::Spawn {
                    node_id: cfg.node_id.clone(),
                    reason: format!("QEMU exited with {status}: {}", last_lines(&log, 5)),
                });
            }
            let up = read_pidfile(&paths.pidfile()) == Some(pid)
                && Qmp::connect(&paths.qmp(), Duration::from_millis(500))
                    .and_then(|mut q| q.status())
                    .is_ok();
            if up {
                let mut rec = rec.clone();
                rec.pid = Some(pid);
                if let Err(e) = self.write_record(paths, &rec) {
                    warn!(node_id = %cfg.node_id, error = %e, "cannot record QEMU's pid");
                }
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                undo(&created);
                return Err(GuestError::Spawn {
                    node_id: cfg.node_id.clone(),
                    reason: format!("QEMU did not answer QMP within {START_TIMEOUT:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What `ensure` would start for `cfg`: acceleration (and why), TAP names, QEMU's command
    /// line and the TAP of each NIC.
    fn launch(&self, cfg: &GuestConfig, paths: &RunPaths) -> Result<Launch, GuestError> {
        let img = image::load(&self.opts.images_dir, &cfg.image)?;
        if img.arch != cfg.arch {
            return Err(GuestError::InvalidConfig(format!(
                "guest {}: image {} is {}, the node asks for {}",
                cfg.node_id, cfg.image, img.arch, cfg.arch
            )));
        }
        let native = GuestArch::native() == Some(cfg.arch);
        let (accel, why) = if native {
            resolve_accel(cfg.accel, &self.support.kvm)
        } else {
            resolve_accel(cfg.accel, &KvmVerdict::foreign(cfg.arch))
        }
        .map_err(|reason| GuestError::KvmUnusable {
            node_id: cfg.node_id.clone(),
            reason,
        })?;
        let machine = Machine::for_guest(cfg.arch, cfg.nic);
        let root = img.disk.as_ref().map(|d| d.root.as_str());
        let append = guest_kernel_cmdline(cfg, machine, self.support.tsc_khz, root)?;
        let disk = img
            .disk
            .clone()
            .map(|b| (paths.overlay(&b.digest), b))
            .map(|(o, b)| (b, o));
        let drives: Vec<Drive> = match &disk {
            Some((_, overlay)) => vec![
                Drive {
                    id: "root".into(),
                    path: overlay.clone(),
                    format: "qcow2".into(),
                    read_only: false,
                    machine,
                },
                Drive {
                    id: "seed".into(),
                    path: paths.seed_iso(),
                    format: "raw".into(),
                    read_only: true,
                    machine,
                },
            ],
            None => vec![],
        };
        let (binary, tcg_cpu) = match cfg.arch {
            GuestArch::X86_64 => (&self.opts.qemu_binary, None),
            GuestArch::Aarch64 => (
                &self.opts.qemu_aarch64_binary,
                Some(self.opts.aarch64_cpu.as_str()),
            ),
        };
        let names = tap_names(&cfg.nics);
        let nics: Vec<_> = cfg
            .nics
            .iter()
            .cloned()
            .zip(names.iter().map(|(_, t)| t.clone()))
            .collect();
        let cmd = guest_command(
            &cfg.node_id,
            cfg.vcpus,
            cfg.memory_mb,
            cfg.nic,
            &nics,
            &LaunchInputs {
                qemu_binary: binary,
                accel,
                tb_size_mb: self.opts.tb_size_mb,
                kernel: &img.kernel,
                initrd: &img.initrd,
                machine,
                tcg_cpu,
                drives,
                append,
                qboot: self.opts.qboot_rom.as_deref(),
                paths,
            },
        );
        let pairs: Vec<TapPair> = nics
            .iter()
            .map(|(n, t)| TapPair {
                ifname: n.ifname.clone(),
                tap: t.clone(),
                mtu: n.mtu,
            })
            .collect();
        Ok(Launch {
            accel,
            why,
            names,
            cmd,
            pairs,
            disk,
        })
    }

    /// A disk image's overlay (kept across restarts) and a fresh NoCloud seed of `cfg`.
    fn prepare_disk(
        &self,
        cfg: &GuestConfig,
        paths: &RunPaths,
        base: &BaseDisk,
        overlay: &Path,
    ) -> Result<(), GuestError> {
        let tools = &self.opts.disk_tools;
        ensure_overlay(&cfg.node_id, tools, base, overlay)?;
        write_seed(&cfg.node_id, tools, &nocloud_seed(cfg), &paths.seed_iso())
    }

    /// Removes the TAPs of the old configuration (`prev`) that the new one does not use.
    fn remove_stale_taps(
        &self,
        cfg: &GuestConfig,
        prev: Option<&GuestRecord>,
        pairs: &[TapPair],
    ) -> Result<(), GuestError> {
        if let Some(rec) = prev {
            let stale: Vec<TapPair> = rec
                .pairs()
                .into_iter()
                .filter(|p| !pairs.iter().any(|q| q.tap == p.tap && q.ifname == p.ifname))
                .collect();
            if !stale.is_empty() {
                let old_ns = rec.config.netns_path();
                if old_ns.exists() {
                    remove_taps(&*self.kernel, &rec.config.netns, &stale)
                        .map_err(|e| tap_err(&cfg.node_id, &rec.config.netns, e))?;
                }
            }
        }
        Ok(())
    }

    /// The last `max` bytes of the console log (empty when it cannot be read).
    fn console_tail(&self, paths: &RunPaths, max: usize) -> Vec<u8> {
        read_log(&paths.console_log(), None, max)
            .map(|c| c.data)
            .unwrap_or_default()
    }

    fn channel_err(node_id: &str, e: ChannelError, timeout: Duration) -> GuestError {
        match e {
            ChannelError::Timeout(_) => GuestError::ExecTimeout {
                node_id: node_id.into(),
                timeout,
            },
            other => GuestError::Channel {
                node_id: node_id.into(),
                reason: other.to_string(),
            },
        }
    }
}

impl GuestRuntime for QemuRuntime {
    fn images(&self) -> Vec<image::ImageInfo> {
        image::catalogue(&self.opts.images_dir)
    }

    fn ensure(&self, cfg: &GuestConfig) -> Result<GuestStatus, GuestError> {
        cfg.validate()?;
        let lock = Self::lock_of(&self.locks, &cfg.node_id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let netns = cfg.netns_path();
        if !netns.exists() {
            return Err(GuestError::NoSandbox {
                node_id: cfg.node_id.clone(),
                netns: cfg.netns.clone(),
            });
        }
        let paths = self.paths(&cfg.node_id);
        let Launch {
            accel,
            why,
            names,
            cmd,
            pairs,
            disk,
        } = self.launch(cfg, &paths)?;
        let prev = self.read_record(&paths)?;
        let pid = self.running_pid(&cfg.node_id, &paths);
        if pid.is_none() {
            collect_dead(prev.as_ref());
        }

        let decision = decide(
            prev.as_ref().map(|r| (r.argv.as_slice(), r.restarts)),
            pid.is_some(),
            || self.is_wedged(&cfg.node_id, &paths),
            &cmd.args,
        );
        let (action, restarts) = match (decision, &prev, pid) {
            (Lifecycle::Adopt, Some(rec), Some(pid)) => {
                let created = ensure_taps(&*self.kernel, &cfg.netns, &pairs)
                    .map_err(|e| tap_err(&cfg.node_id, &cfg.netns, e))?;
                if created.is_empty() {
                    info!(node_id = %cfg.node_id, pid, "guest adopted");
                    return Ok(GuestStatus {
                        node_id: cfg.node_id.clone(),
                        pid,
                        accel: rec.accel,
                        action: EnsureAction::Adopted,
                        restarts: rec.restarts,
                    });
                }
                // A TAP had vanished under the running QEMU: its NIC is dead; reboot.
                warn!(node_id = %cfg.node_id, taps = ?created, "TAPs were missing; restarting guest");
                self.kill_guest(&cfg.node_id, pid, &paths)?;
                (EnsureAction::Restarted, rec.restarts + 1)
            }
            (
                Lifecycle::Start {
                    kill,
                    action,
                    restarts,
                },
                _,
                pid,
            ) => {
                if kill && let Some(pid) = pid {
                    info!(node_id = %cfg.node_id, pid, ?action, "stopping the running QEMU first");
                    self.kill_guest(&cfg.node_id, pid, &paths)?;
                }
                if action == EnsureAction::Restarted {
                    warn!(node_id = %cfg.node_id, restarts, "guest had died or was wedged; restarting");
                }
                (action, restarts)
            }
            (Lifecycle::Adopt, _, _) => {
                unreachable!("decide adopts only a recorded, running guest")
            }
        };
        self.remove_stale_taps(cfg, prev.as_ref(), &pairs)?;
        let fresh_dir = !paths.dir.exists();
        std::fs::create_dir_all(&paths.dir)
            .map_err(io_err("cannot create run directory", &paths.dir))?;
        if let Some((base, overlay)) = &disk
            && let Err(e) = self.prepare_disk(cfg, &paths, base, overlay)
        {
            if fresh_dir && prev.is_none() {
                let _ = std::fs::remove_dir_all(&paths.dir);
            }
            return Err(e);
        }
        let rec = GuestRecord {
            config: cfg.clone(),
            accel,
            taps: names,
            argv: cmd.args.clone(),
            restarts,
            pid: None,
            binary: Some(cmd.binary.clone()),
        };
        let pid = self.start(cfg, &paths, &rec, &pairs, fresh_dir && prev.is_none())?;
        info!(node_id = %cfg.node_id, pid, ?action, accel = %accel, why = %why, restarts, "guest started");
        Ok(GuestStatus {
            node_id: cfg.node_id.clone(),
            pid,
            accel,
            action,
            restarts,
        })
    }

    fn stop(&self, node_id: &str) -> Result<(), GuestError> {
        valid_node_id(node_id)?;
        let lock = Self::lock_of(&self.locks, node_id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let paths = self.paths(node_id);
        if let Some(pid) = self.running_pid(node_id, &paths) {
            self.kill_guest(node_id, pid, &paths)?;
        }
        let rec = self.read_record(&paths)?;
        collect_dead(rec.as_ref());
        if let Some(rec) = rec {
            let netns = rec.config.netns_path();
            if netns.exists() {
                remove_taps(&*self.kernel, &rec.config.netns, &rec.pairs())
                    .map_err(|e| tap_err(node_id, &rec.config.netns, e))?;
            }
        }
        match std::fs::remove_dir_all(&paths.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot remove run directory", &paths.dir)(e)),
        }
        info!(node_id, "guest stopped");
        Ok(())
    }

    fn observed(&self) -> Result<Vec<ObservedGuest>, GuestError> {
        let dir = match std::fs::read_dir(&self.opts.state_dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_err("cannot list", &self.opts.state_dir)(e)),
        };
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if valid_node_id(&id).is_err() || !entry.path().is_dir() {
                continue;
            }
            let paths = self.paths(&id);
            let rec = self.read_record(&paths).ok().flatten();
            let pid = self.running_pid(&id, &paths);
            out.push(ObservedGuest {
                node_id: id,
                pid,
                running: pid.is_some(),
                netns: rec
                    .as_ref()
                    .map(|r| r.config.netns.clone())
                    .unwrap_or_default(),
                taps: rec
                    .as_ref()
                    .map(|r| r.taps.iter().map(|(_, t)| t.clone()).collect())
                    .unwrap_or_default(),
                accel: rec.as_ref().map(|r| r.accel),
                restarts: rec.as_ref().map_or(0, |r| r.restarts),
            });
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(out)
    }

    fn exec(
        &self,
        node_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, GuestError> {
        valid_node_id(node_id)?;
        let paths = self.paths(node_id);
        if self.running_pid(node_id, &paths).is_none() {
            return Err(GuestError::NotFound(node_id.into()));
        }
        let lock = Self::lock_of(&self.exec_locks, node_id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut ch = Channel::connect(&paths.cmd()).map_err(|e| GuestError::Channel {
            node_id: node_id.into(),
            reason: format!("cannot connect to {}: {e}", paths.cmd().display()),
        })?;
        ch.hello(timeout.max(Duration::from_secs(5)))
            .map_err(|e| Self::channel_err(node_id, e, timeout))?;
        ch.exec(argv, timeout)
            .map_err(|e| Self::channel_err(node_id, e, timeout))
    }

    fn wait_ready(&self, node_id: &str, timeout: Duration) -> Result<(), GuestError> {
        valid_node_id(node_id)?;
        let paths = self.paths(node_id);
        let deadline = Instant::now() + timeout;
        let lock = Self::lock_of(&self.exec_locks, node_id);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            if self.running_pid(node_id, &paths).is_none() {
                let tail = String::from_utf8_lossy(&self.console_tail(&paths, 600)).into_owned();
                return Err(GuestError::Spawn {
                    node_id: node_id.into(),
                    reason: format!("QEMU is not running; console tail:\n{tail}"),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match Channel::connect(&paths.cmd()) {
                Ok(mut ch) => match ch.hello(left.min(Duration::from_secs(3))) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(GuestError::Channel {
            node_id: node_id.into(),
            reason: format!("not ready within {timeout:?} ({last})"),
        })
    }

    fn console_read(
        &self,
        node_id: &str,
        from: Option<ConsoleCursor>,
        max_bytes: usize,
    ) -> Result<ConsoleChunk, GuestError> {
        valid_node_id(node_id)?;
        let paths = self.paths(node_id);
        if !paths.dir.exists() {
            return Err(GuestError::NotFound(node_id.into()));
        }
        let log = paths.console_log();
        match read_log(&log, from, max_bytes) {
            Ok(c) => Ok(c),
            // Created before QEMU starts; absent only while the run directory is being removed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(GuestError::NotFound(node_id.into()))
            }
            Err(e) => Err(io_err("cannot read", &log)(e)),
        }
    }

    fn console_write(&self, node_id: &str, data: &[u8]) -> Result<(), GuestError> {
        valid_node_id(node_id)?;
        let paths = self.paths(node_id);
        if self.running_pid(node_id, &paths).is_none() {
            return Err(GuestError::NotFound(node_id.into()));
        }
        // One short connection per write: QEMU's socket chardev serves one client at a time and
        // writes the guest's output to it; a connection kept open would have to be drained, or
        // the guest's UART would stall. The output is read from the log instead.
        let sock = paths.console_sock();
        let fail = |e: std::io::Error| GuestError::Channel {
            node_id: node_id.into(),
            reason: format!("console socket {}: {e}", sock.display()),
        };
        let mut s = std::os::unix::net::UnixStream::connect(&sock).map_err(fail)?;
        s.set_write_timeout(Some(CONSOLE_WRITE_TIMEOUT))
            .map_err(fail)?;
        s.write_all(data).map_err(fail)?;
        // QEMU drops the connection as soon as it sees the hang-up, even with bytes unread (the
        // serial port takes them only as fast as its FIFO drains): close only once QEMU has
        // read everything.
        let deadline = Instant::now() + CONSOLE_WRITE_TIMEOUT;
        loop {
            let mut unread: libc::c_int = 0;
            // SAFETY: TIOCOUTQ (SIOCOUTQ) on a socket we own writes one c_int through the valid
            // pointer we pass.
            let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut unread) };
            if rc != 0 {
                return Err(fail(std::io::Error::last_os_error()));
            }
            if unread == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(fail(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the guest did not take {unread} typed bytes"),
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// How long a console write may wait for QEMU to take the bytes.
const CONSOLE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the console log at `path` (see [`GuestRuntime::console_read`]).
fn read_log(path: &Path, from: Option<ConsoleCursor>, max: usize) -> std::io::Result<ConsoleChunk> {
    use std::os::unix::fs::MetadataExt;
    let mut f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    let (ino, len) = (meta.ino(), meta.len());
    let start = match from {
        None => len.saturating_sub(max as u64),
        Some(c) if c.log == ino && c.offset <= len => c.offset,
        // Another log (cut at a restart) or one that shrank: read the new one from its start.
        Some(_) => 0,
    };
    let want = (len - start).min(max as u64);
    let mut data = Vec::with_capacity(want as usize);
    f.seek(SeekFrom::Start(start))?;
    f.take(want).read_to_end(&mut data)?;
    Ok(ConsoleChunk {
        next: ConsoleCursor {
            log: ino,
            offset: start + data.len() as u64,
        },
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn lifecycle_decisions() {
        let a = argv("-m 128M");
        let b = argv("-m 256M");
        let never = || panic!("wedged asked needlessly");
        assert_eq!(
            decide(None, false, never, &a),
            Lifecycle::Start {
                kill: false,
                action: EnsureAction::Started,
                restarts: 0
            }
        );
        // A QEMU runs under our pidfile but without a record: replace it.
        assert_eq!(
            decide(None, true, never, &a),
            Lifecycle::Start {
                kill: true,
                action: EnsureAction::Started,
                restarts: 0
            }
        );
        assert_eq!(decide(Some((&a, 2)), true, || false, &a), Lifecycle::Adopt);
        assert_eq!(
            decide(Some((&a, 2)), true, || true, &a),
            Lifecycle::Start {
                kill: true,
                action: EnsureAction::Restarted,
                restarts: 3
            }
        );
        assert_eq!(
            decide(Some((&a, 2)), true, never, &b),
            Lifecycle::Start {
                kill: true,
                action: EnsureAction::Replaced,
                restarts: 2
            }
        );
        assert_eq!(
            decide(Some((&a, 2)), false, never, &a),
            Lifecycle::Start {
                kill: false,
                action: EnsureAction::Restarted,
                restarts: 3
            }
        );
    }

    #[test]
    fn console_log_reads_follow_and_notice_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, b"0123456789").unwrap();
        // The tail, then nothing new.
        let c = read_log(&log, None, 4).unwrap();
        assert_eq!(c.data, b"6789");
        assert_eq!(c.next.offset, 10);
        assert!(read_log(&log, Some(c.next), 4).unwrap().data.is_empty());
        // Appended output, in pieces of at most `max`.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"abcdef").unwrap();
        let a = read_log(&log, Some(c.next), 4).unwrap();
        assert_eq!(a.data, b"abcd");
        let b = read_log(&log, Some(a.next), 4).unwrap();
        assert_eq!(b.data, b"ef");
        // A tail larger than the log is the whole log.
        assert_eq!(read_log(&log, None, 100).unwrap().data, b"0123456789abcdef");
        // Cut at a restart: a new file renamed over the old one; the reader starts it over.
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, b"XY").unwrap();
        std::fs::rename(&tmp, &log).unwrap();
        let n = read_log(&log, Some(b.next), 100).unwrap();
        assert_eq!(n.data, b"XY");
        assert_ne!(n.next.log, b.next.log);
        // Missing log: NotFound, which the runtime reports as a stopped guest.
        std::fs::remove_file(&log).unwrap();
        assert_eq!(
            read_log(&log, None, 1).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    #[test]
    fn log_tail_keeps_last_nonempty_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(last_lines("", 3), "");
    }
}
