//! QEMU guests as virtual nodes.
//!
//! A guest ("VM virtual node") lives in its own network namespace, the *sandbox*, which the agent
//! creates and names exactly as for a namespace node. The agent realizes each of the node's links
//! into the sandbox as for a namespace node (one interface per link with the tenant's ifname, MTU
//! and tc shaping) but puts **no addresses or routes** on them. [`GuestRuntime::ensure`] then, for
//! each such interface, creates a TAP device in the sandbox, joins interface and TAP both ways
//! with tc (`ingress` qdisc, `u32 match u32 0 0`, `mirred egress redirect`), and starts QEMU
//! inside the sandbox with one NIC per TAP. Addresses, routes and the hostname reach the guest on
//! its kernel command line (the project's image) or in a cloud-init NoCloud seed (cloud images).
//!
//! The trait is **synchronous** and blocking (a start takes tens of milliseconds, a stop up to the
//! QMP grace period, an exec as long as the command): call it from `tokio::task::spawn_blocking`.
//! Implementations are `Send + Sync` and serialize operations on one node internally.
//!
//! Parts, one concept per module:
//! - [`accel`]: the KVM probe and the pure `auto|kvm|tcg` decision;
//! - [`qemu_args`]: QEMU's command line as data, rendered to strings;
//! - [`kernel_cmdline`]: the guest's network configuration on its kernel command line;
//! - [`channel`]: the command channel protocol (virtio-serial) used by `exec`;
//! - [`qmp`]: a minimal QMP client (query-status, quit);
//! - [`tap`]: the guest's TAP devices and their tc redirects, made through the host's `Kernel`;
//! - [`process`]: spawning QEMU in the sandbox, pidfiles, liveness and identity checks;
//! - [`image`]: guest images on disk (kernel + initrd, or a disk with a NoCloud seed);
//! - [`seed`]: the NoCloud seed of disk images;
//! - [`disk`]: a disk image guest's copy-on-write overlay and its seed volume;
//! - [`runtime`]: [`QemuRuntime`], the real implementation;
//! - `fake`: `RecordingGuestRuntime`, a recording fake for planner tests (under `cfg(test)` and
//!   the `testing` feature).

pub mod accel;
pub mod channel;
pub mod disk;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod image;
pub mod kernel_cmdline;
pub mod process;
pub mod qemu_args;
pub mod qmp;
pub mod runtime;
pub mod seed;
pub mod tap;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use accel::{HostGuestSupport, KvmVerdict, probe_host};
#[cfg(any(test, feature = "testing"))]
pub use fake::{GuestCall, RecordingGuestRuntime};
pub use runtime::{QemuRuntime, QemuRuntimeOptions};

use crate::mac::Mac;

/// Smallest guest memory that boots the project's image (the contract's constant).
pub const MIN_MEMORY_MB: u64 = vnet_proto::VM_MIN_MEMORY_MB;
/// Most vCPUs one guest may have.
pub const MAX_VCPUS: u32 = 64;

/// Network model of all NICs of one guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    /// Para-virtualized virtio-net (the default). Runs on `-M microvm` (virtio-mmio).
    #[default]
    Virtio,
    /// Emulated Intel e1000, for guests without virtio drivers. Needs PCI: runs on `-M q35`.
    E1000,
}

/// CPU architecture of a guest. The host runs it with `qemu-system-<arch>`; a guest of another
/// architecture than the host's runs under TCG only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GuestArch {
    /// The default.
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit Arm, on QEMU's `virt` machine.
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl GuestArch {
    /// Every architecture the runtime knows.
    pub const ALL: [GuestArch; 2] = [GuestArch::X86_64, GuestArch::Aarch64];

    /// The name in specs, manifests and QEMU's binary name.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "x86_64",
            GuestArch::Aarch64 => "aarch64",
        }
    }

    /// The architecture of `s` ("" is the default).
    pub fn parse(s: &str) -> Option<GuestArch> {
        match s {
            "" | "x86_64" => Some(GuestArch::X86_64),
            "aarch64" => Some(GuestArch::Aarch64),
            _ => None,
        }
    }

    /// The architecture of the machine this agent runs on.
    pub fn native() -> Option<GuestArch> {
        GuestArch::parse(std::env::consts::ARCH)
    }
}

impl fmt::Display for GuestArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CPU acceleration requested for a guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when the host probe proved it usable, TCG otherwise (logged with the reason).
    #[default]
    Auto,
    /// KVM or fail (with the probe's reason).
    Kvm,
    /// Binary translation, always available.
    Tcg,
}

/// The acceleration a guest actually runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelUsed {
    /// Hardware-assisted.
    Kvm,
    /// QEMU's dynamic binary translation.
    Tcg,
}

impl fmt::Display for AccelUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelUsed::Kvm => "kvm",
            AccelUsed::Tcg => "tcg",
        })
    }
}

/// One NIC of a guest: the sandbox interface the agent realized for one link, and how the guest
/// sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNic {
    /// The tenant's interface name; the agent's interface in the sandbox has this name, and the
    /// guest renames its NIC to it.
    pub ifname: String,
    /// The guest NIC's MAC (from the link's `NodeInterface.mac`, or [`Mac::derived`]).
    pub mac: Mac,
    /// Addresses inside the guest, with prefix length.
    pub addresses: Vec<IpNet>,
    /// The link's MTU (TAP and guest NIC get it).
    pub mtu: u32,
}

/// A static route inside the guest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRoute {
    /// Destination; `None` is the default route of `via`'s address family.
    pub destination: Option<IpNet>,
    /// Next hop.
    pub via: IpAddr,
}

/// Everything needed to run one guest. Built by the agent from a `VirtualNodeSpec` of kind VM and
/// the node's link interfaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// The controller's node id (`[a-z0-9]{1,12}`): names the run directory and QEMU's process.
    pub node_id: String,
    /// The tenant's node name: the guest's hostname (sanitized to a DNS label).
    pub name: String,
    /// The sandbox: a name under `/run/netns`, or an absolute path to a netns file.
    pub netns: String,
    /// vCPUs (1..=64).
    pub vcpus: u32,
    /// Guest memory in MiB (at least [`MIN_MEMORY_MB`]).
    pub memory_mb: u64,
    /// Image name known to the agent (`"default"`: the project's own image).
    pub image: String,
    /// NIC model of every NIC.
    pub nic: NicModel,
    /// Requested acceleration.
    pub accel: Accel,
    /// CPU architecture (the image must be of it).
    #[serde(default)]
    pub arch: GuestArch,
    /// One per link interface, in a stable order (the guest sees them in this order).
    pub nics: Vec<GuestNic>,
    /// Static routes inside the guest.
    pub routes: Vec<GuestRoute>,
}

impl GuestConfig {
    /// Path of the sandbox's namespace file.
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// Checks what the runtime relies on; the error names the offending field.
    pub fn validate(&self) -> Result<(), GuestError> {
        let bad = |m: String| {
            Err(GuestError::InvalidConfig(format!(
                "guest {}: {m}",
                self.node_id
            )))
        };
        if self.node_id.is_empty()
            || self.node_id.len() > 12
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(GuestError::InvalidConfig(format!(
                "node id {:?} must be 1-12 characters of [a-z0-9]",
                self.node_id
            )));
        }
        if self.netns.is_empty() {
            return bad("sandbox netns is empty".into());
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return bad(format!("vcpus {} is outside 1..={MAX_VCPUS}", self.vcpus));
        }
        if self.memory_mb < MIN_MEMORY_MB {
            return bad(format!(
                "memory_mb {} is below the minimum of {MIN_MEMORY_MB} MiB",
                self.memory_mb
            ));
        }
        if self.image.is_empty()
            || !self
                .image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            || self.image.starts_with('.')
        {
            return bad(format!("image name {:?} is not a plain name", self.image));
        }
        let mut names = std::collections::HashSet::new();
        let mut macs = std::collections::HashSet::new();
        for nic in &self.nics {
            if nic.ifname.is_empty()
                || nic.ifname.len() > 15
                || nic.ifname.contains(['/', ' ', ':', ',', '='])
            {
                return bad(format!("interface name {:?} is not valid", nic.ifname));
            }
            if !names.insert(nic.ifname.as_str()) {
                return bad(format!("interface {} appears twice", nic.ifname));
            }
            if !macs.insert(nic.mac) {
                return bad(format!("MAC {} appears twice", nic.mac));
            }
            if !(68..=65535).contains(&nic.mtu) {
                return bad(format!(
                    "interface {}: MTU {} is outside 68..=65535",
                    nic.ifname, nic.mtu
                ));
            }
        }
        for r in &self.routes {
            if let Some(d) = r.destination
                && d.addr().is_ipv4() != r.via.is_ipv4()
            {
                return bad(format!(
                    "route to {d} via {}: address families differ",
                    r.via
                ));
            }
        }
        Ok(())
    }
}

/// Path of a netns given as a name under `/run/netns` or as an absolute path.
pub fn netns_path(netns: &str) -> PathBuf {
    crate::host::netns::path_of(netns)
}

/// What [`GuestRuntime::ensure`] did and found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStatus {
    /// The node.
    pub node_id: String,
    /// QEMU's process id.
    pub pid: u32,
    /// Acceleration in use.
    pub accel: AccelUsed,
    /// What `ensure` had to do.
    pub action: EnsureAction,
    /// Times this guest was restarted after it had died (persisted in the run directory).
    pub restarts: u32,
}

/// What [`GuestRuntime::ensure`] had to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsureAction {
    /// Nothing ran: QEMU was started.
    Started,
    /// A guest with this configuration was already running (possibly started by an earlier agent
    /// process) and was adopted; its TAPs and redirects were re-checked.
    Adopted,
    /// The guest had died (crash, killed, powered off): it was started again.
    Restarted,
    /// A guest of this node ran with another configuration: it was stopped and started again.
    Replaced,
}

/// A guest found on the host (from run directories, pidfiles and `/proc`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedGuest {
    /// The node.
    pub node_id: String,
    /// QEMU's pid when it runs.
    pub pid: Option<u32>,
    /// QEMU runs (pid alive and its command line is this guest's).
    pub running: bool,
    /// The sandbox it was started in.
    pub netns: String,
    /// TAP devices created for it.
    pub taps: Vec<String>,
    /// Acceleration it was started with.
    pub accel: Option<AccelUsed>,
    /// Restarts after crashes.
    pub restarts: u32,
}

/// Result of a command run inside a guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// Exit status (128 + signal when killed; 137 when the guest-side timeout killed it, 127
    /// when the command was not found).
    pub exit_code: i32,
    /// Standard output, byte for byte.
    pub stdout: Vec<u8>,
    /// Standard error, byte for byte.
    pub stderr: Vec<u8>,
}

/// Errors of the guest runtime. Messages name the guest and the object that failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The configuration cannot run (names the field).
    #[error("invalid guest configuration: {0}")]
    InvalidConfig(String),
    /// No such guest is known to this runtime.
    #[error("guest {0} is not running on this host")]
    NotFound(String),
    /// The image is missing or incomplete.
    #[error("guest image {name:?}: {reason}")]
    Image {
        /// Image name.
        name: String,
        /// What is wrong, with the path.
        reason: String,
    },
    /// KVM was requested explicitly but the host cannot provide it.
    #[error("guest {node_id}: KVM requested but unusable on this host: {reason}")]
    KvmUnusable {
        /// The node.
        node_id: String,
        /// The probe's reason.
        reason: String,
    },
    /// The sandbox namespace does not exist.
    #[error("guest {node_id}: sandbox netns {netns} does not exist")]
    NoSandbox {
        /// The node.
        node_id: String,
        /// The netns name or path.
        netns: String,
    },
    /// A link the agent should have realized in the sandbox is missing.
    #[error("guest {node_id}: interface {ifname} is missing in sandbox {netns}")]
    MissingInterface {
        /// The node.
        node_id: String,
        /// The tenant interface.
        ifname: String,
        /// The sandbox.
        netns: String,
    },
    /// Making or removing the guest's TAPs and their redirects failed.
    #[error("guest {node_id}: in sandbox {netns}: {source}")]
    Net {
        /// The node.
        node_id: String,
        /// The sandbox.
        netns: String,
        /// The cause, naming the device.
        #[source]
        source: tap::TapError,
    },
    /// QEMU could not be started or exited during start-up.
    #[error("guest {node_id}: QEMU failed to start: {reason}")]
    Spawn {
        /// The node.
        node_id: String,
        /// QEMU's own message when it gave one.
        reason: String,
    },
    /// The command channel failed (guest not reachable, protocol error, timeout).
    #[error("guest {node_id}: command channel: {reason}")]
    Channel {
        /// The node.
        node_id: String,
        /// What went wrong.
        reason: String,
    },
    /// A command ran longer than allowed.
    #[error("guest {node_id}: command timed out after {timeout:?}")]
    ExecTimeout {
        /// The node.
        node_id: String,
        /// The limit.
        timeout: Duration,
    },
    /// QMP failed.
    #[error("guest {node_id}: QMP: {reason}")]
    Qmp {
        /// The node.
        node_id: String,
        /// What went wrong.
        reason: String,
    },
    /// A file in the run directory could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was attempted.
        what: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Runs guests on this host. See the module docs for the sandbox contract with the agent.
pub trait GuestRuntime: Send + Sync {
    /// Makes the guest run with `cfg`: idempotent. Starts it when absent, adopts one already
    /// running with the same configuration (after an agent restart) without rebooting it,
    /// restarts it when it died (and counts the restart), replaces it when it runs with another
    /// configuration. Creates TAPs and tc redirects in the sandbox; the sandbox and the link
    /// interfaces named by `cfg.nics` must exist. Returns once QEMU runs (the guest may still be
    /// booting: see [`GuestRuntime::wait_ready`]). On error nothing of this guest is left
    /// running or created.
    fn ensure(&self, cfg: &GuestConfig) -> Result<GuestStatus, GuestError>;

    /// Stops the guest (QMP `quit`, SIGKILL after a grace period), removes its TAPs and tc
    /// redirects (when the sandbox still exists) and its run directory. Idempotent: an unknown
    /// node is not an error. Call it before deleting the sandbox.
    fn stop(&self, node_id: &str) -> Result<(), GuestError>;

    /// Every guest this runtime finds in its run directory, running or dead.
    fn observed(&self) -> Result<Vec<ObservedGuest>, GuestError>;

    /// Runs `argv` inside the guest through the command channel.
    fn exec(
        &self,
        node_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, GuestError>;

    /// Waits until the guest's command channel answers (it booted and configured its NICs).
    fn wait_ready(&self, node_id: &str, timeout: Duration) -> Result<(), GuestError>;

    /// Reads the guest's serial console log: from `from` (a cursor returned by an earlier read)
    /// or, with `None`, its last `max_bytes`; at most `max_bytes`. A cursor into a log that was
    /// replaced since (the log is cut to its tail when a long-running guest restarts) reads the
    /// new log from its beginning. [`GuestError::NotFound`] when the guest is gone (stopped).
    fn console_read(
        &self,
        node_id: &str,
        from: Option<ConsoleCursor>,
        max_bytes: usize,
    ) -> Result<ConsoleChunk, GuestError>;

    /// Types `data` into the guest's serial console (a shell runs there in the project's image).
    /// What the guest answers appears in the console log.
    fn console_write(&self, node_id: &str, data: &[u8]) -> Result<(), GuestError>;

    /// The images this runtime can boot (reported to the controller in every hello).
    fn images(&self) -> Vec<image::ImageInfo>;

    /// The last `max_bytes` of the guest's serial console log.
    fn console(&self, node_id: &str, max_bytes: usize) -> Result<Vec<u8>, GuestError> {
        self.console_read(node_id, None, max_bytes).map(|c| c.data)
    }
}

/// A position in a guest's console log: which log (its inode: a cut log is a new file) and the
/// byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleCursor {
    /// Identity of the log file.
    pub log: u64,
    /// Bytes of that log already read.
    pub offset: u64,
}

/// What [`GuestRuntime::console_read`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleChunk {
    /// Console output, raw.
    pub data: Vec<u8>,
    /// Where the next read continues.
    pub next: ConsoleCursor,
}
