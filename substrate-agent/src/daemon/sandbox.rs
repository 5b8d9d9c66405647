//! The confinement of a tenant's command in a namespace node (`substrate-agent exec-sandbox`).
//!
//! The agent starts its own binary with this subcommand for every exec into a namespace node.
//! The helper runs as root, single-threaded (unsharing a mount namespace needs that), and:
//!
//! 1. joins the node's network namespace (`setns`), then unshares a mount, pid, IPC and UTS
//!    namespace;
//! 2. forks the command's process, which is pid 1 of the new pid namespace (so it sees only its
//!    own processes, signals no host process, and when it exits the kernel kills everything it
//!    left behind), and which
//!    - makes every mount private and the whole tree read-only and nosuid (`mount_setattr`,
//!      recursive), then mounts a fresh `/proc` (its pid namespace), a fresh read-only `/sys`
//!      (its network namespace), private tmpfs on `/tmp` and `/run` (which hides the host's
//!      `/run/netns`, guests' sockets and locks) and a minimal `/dev`, and covers the agent's
//!      state directory with an empty tmpfs;
//!    - sets resource limits ([`Limits`]);
//!    - becomes an unprivileged uid of its own (`FIRST_UID` + the helper's pid: unique while
//!      it runs, so per-uid limits are per exec), without supplementary groups, keeping only
//!      `CAP_NET_ADMIN` and `CAP_NET_RAW` (permitted, effective, inheritable, ambient; the
//!      bounding set holds nothing else), with `no_new_privs`;
//!    - installs the seccomp filters of [`filters`] and execs the command;
//! 3. waits for it, kills it on SIGTERM/SIGINT/SIGHUP (the agent's timeout or cancellation) or
//!    at its own deadline (a backstop should the agent be gone), and exits with its status
//!    (128 + N for signal N).
//!
//! No user namespace: capabilities held in a child user namespace do not apply to the node's
//! network namespace (owned by the initial one), so `ip addr add` would fail. The capabilities
//! are the initial namespace's, and they act only on the namespace the process is in: joining
//! another needs `CAP_SYS_ADMIN` (and `setns`, which the filter refuses), and none is visible.

use std::ffi::CString;
use std::time::{Duration, Instant};

use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The first uid of the range the commands run as.
pub const FIRST_UID: u32 = 2_000_000_000;
/// Exit code when the sandbox could not be set up (the reason is on stderr).
pub const SETUP_FAILED: i32 = 126;
/// Exit code when the program was not found.
pub const NOT_FOUND: i32 = 127;

/// Resource limits of a confined command (all its processes together where the kernel counts
/// per uid: processes; per process otherwise). Its CPU time is limited to its deadline too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Processes and threads (`RLIMIT_NPROC`, per uid, and the uid is the exec's own).
    pub processes: u64,
    /// Address space of each process (`RLIMIT_AS`), bytes.
    pub address_space: u64,
    /// Open files of each process.
    pub open_files: u64,
    /// Bytes of the private `/tmp`.
    pub tmp_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            processes: 64,
            address_space: 1 << 30,
            open_files: 1024,
            tmp_bytes: 64 << 20,
        }
    }
}

/// What the helper runs.
#[derive(Clone, Debug)]
pub struct Confinement {
    /// The node's named network namespace (`/run/netns/NAME`).
    pub netns: std::path::PathBuf,
    /// The helper kills the command after this long (a backstop: the agent's own timeout
    /// comes first).
    pub deadline: Duration,
    /// stdin is a terminal: the command gets it as its controlling terminal.
    pub tty: bool,
    pub limits: Limits,
    /// Directories covered by an empty read-only tmpfs (the agent's state directory: it names
    /// every tenant's nodes).
    pub hide: Vec<std::path::PathBuf>,
    pub argv: Vec<String>,
}

/// The capabilities a confined command keeps.
pub fn kept_caps() -> CapsHashSet {
    [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW]
        .into_iter()
        .collect()
}

/// The seccomp filters: every system call is allowed except these, which fail with EPERM
/// (`clone3`: ENOSYS, so that the C library falls back to `clone`, whose flags can be checked):
/// namespace changes (`setns`, `unshare`, `clone` with a `CLONE_NEW*` flag), mounts and the new
/// mount API, `chroot`/`pivot_root`, module loading, `bpf`, `perf_event_open`, tracing other
/// processes (`ptrace`, `process_vm_*`, `kcmp`, `pidfd_getfd`), `kexec_*`, `reboot`, swap,
/// keyrings, `userfaultfd`, file handles, `acct`, `quotactl`, `syslog`, clock and I/O privilege
/// changes; x32 system call numbers. Most of them also need a capability the command does not
/// hold; the filter is the second wall.
pub fn filters() -> Result<Vec<BpfProgram>, seccompiler::Error> {
    let deny = [
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kcmp,
        libc::SYS_pidfd_getfd,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_keyctl,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_lookup_dcookie,
    ];
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        deny.into_iter().map(|nr| (nr, vec![])).collect();
    let ns_flags = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWTIME,
    ];
    let mut clone_rules = Vec::new();
    for f in ns_flags {
        let f = f as u32 as u64;
        clone_rules.push(SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(f),
            f,
        )?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let arch = std::env::consts::ARCH.try_into()?;
    let denied: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?
    .try_into()?;
    // clone3 passes its flags in memory, which a filter cannot read: refuse it as unknown.
    let clone3: BpfProgram = SeccompFilter::new(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?
    .try_into()?;
    // Three programs (one filter has one action on a match): the kernel runs all and the
    // strictest answer wins.
    Ok(vec![denied, clone3, no_x32()])
}

/// Refuses the x32 system call numbers (`nr | 0x4000_0000`), which pass an x86-64 arch check
/// and would reach the same kernel functions under numbers the deny list does not name (on
/// kernels built with x32 support).
fn no_x32() -> BpfProgram {
    let op = |code: u32, k: u32, jt: u8, jf: u8| seccompiler::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        // The system call number: offset 0 of seccomp_data.
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        op(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0x4000_0000,
            0,
            1,
        ),
        op(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
            0,
            0,
        ),
        op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
    ]
}

/// Errors of setting up the sandbox (reported on the command's stderr).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccompiler::Error),
    #[error("argument {0:?} contains a NUL byte")]
    Nul(String),
    #[error("empty command")]
    Empty,
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Sys { what, source }
}

/// Runs the helper: returns the exit code for the process (the command's, or [`SETUP_FAILED`]).
pub fn run(c: &Confinement) -> i32 {
    match run_inner(c) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vnet exec: cannot confine the command: {e}");
            SETUP_FAILED
        }
    }
}

fn run_inner(c: &Confinement) -> Result<i32, SandboxError> {
    if c.argv.is_empty() {
        return Err(SandboxError::Empty);
    }
    let argv: Vec<CString> = c
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| SandboxError::Nul(a.clone())))
        .collect::<Result<_, _>>()?;
    let ns = std::fs::File::open(&c.netns).map_err(|source| SandboxError::Io {
        what: format!("open {}", c.netns.display()),
        source,
    })?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(sys("join the node's network namespace"))?;
    drop(ns);
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(sys("unshare mount, pid, ipc and uts namespaces"))?;
    // Signals the helper waits for, blocked before the fork so none is lost.
    let mut waited = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        waited.add(s);
    }
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), Some(&mut old))
        .map_err(sys("block signals"))?;
    let uid = FIRST_UID + std::process::id();
    let filters = filters()?;
    // SAFETY: this process is single-threaded (the helper runs before any runtime starts), so
    // the child may run arbitrary code after the fork.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            let code = match confine_and_exec(c, &argv, uid, &old, &filters) {
                Err(e) => {
                    eprintln!("vnet exec: cannot confine the command: {e}");
                    SETUP_FAILED
                }
                Ok(never) => match never {},
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(supervise(child, &waited, c.deadline)),
    }
}

/// Waits for `child`; kills it on a termination signal or at `deadline`.
fn supervise(child: Pid, waited: &SigSet, deadline: Duration) -> i32 {
    let end = Instant::now() + deadline;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => {}
            Err(_) => return SETUP_FAILED,
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = kill(child, Signal::SIGKILL);
            continue;
        }
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: sigtimedwait reads the set and the timespec, both live for the call; the
        // siginfo pointer may be null.
        let sig = unsafe { libc::sigtimedwait(waited.as_ref(), std::ptr::null_mut(), &ts) };
        if sig == libc::SIGTERM || sig == libc::SIGINT || sig == libc::SIGHUP {
            // pid 1 of its namespace: SIGKILL from here ends it and everything it started.
            let _ = kill(child, Signal::SIGKILL);
        }
    }
}

fn confine_and_exec(
    c: &Confinement,
    argv: &[CString],
    uid: u32,
    mask: &SigSet,
    filters: &[BpfProgram],
) -> Result<std::convert::Infallible, SandboxError> {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    mounts(c.limits.tmp_bytes)?;
    for dir in &c.hide {
        // An absent directory has nothing to hide.
        if dir.is_dir() {
            let d = dir.to_string_lossy();
            let flags =
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
            mount_fs("tmpfs", &d, "tmpfs", flags, Some("mode=0755,size=4k"))?;
        }
    }
    nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    limits(&c.limits, c.deadline)?;
    if c.tty {
        nix::unistd::setsid().map_err(sys("setsid"))?;
        // SAFETY: TIOCSCTTY on fd 0 with an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(SandboxError::Sys {
                what: "make the terminal the controlling one".into(),
                source: nix::Error::last(),
            });
        }
    }
    drop_privileges(uid)?;
    // The credentials changed, which cleared the parent-death signal: set it again.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: resetting dispositions to the default is always sound; SIGPIPE is ignored by the
    // Rust runtime and an ignored disposition would survive exec.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None).map_err(sys("restore signals"))?;
    for f in filters {
        seccompiler::apply_filter(f)?;
    }
    let e = nix::unistd::execvp(&argv[0], argv).unwrap_err();
    eprintln!("vnet exec: cannot run {:?}: {e}", c.argv[0]);
    // SAFETY: _exit ends the child without running the parent's atexit handlers.
    unsafe {
        libc::_exit(if e == nix::Error::ENOENT {
            NOT_FOUND
        } else {
            SETUP_FAILED
        })
    }
}

fn mount_fs(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SandboxError> {
    mount(Some(src), target, Some(fstype), flags, data)
        .map_err(sys(format!("mount {fstype} on {target}")))
}

/// The mount namespace's tree (see the module doc).
fn mounts(tmp_bytes: u64) -> Result<(), SandboxError> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(sys("make mounts private"))?;
    read_only_tree()?;
    let hard = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", hard, None)?;
    mount_fs("sysfs", "/sys", "sysfs", hard | MsFlags::MS_RDONLY, None)?;
    mount_fs(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&format!("mode=1777,size={tmp_bytes}")),
    )?;
    mount_fs("tmpfs", "/run", "tmpfs", hard, Some("mode=0755,size=64k"))?;
    dev()
}

/// `/dev`: a tmpfs holding bind mounts of the harmless devices only and the terminals (the
/// host's disks, `/dev/kvm`, `/dev/mem` ... are not there). Built under the fresh `/run` while
/// the host's `/dev` is still visible, then moved over it.
fn dev() -> Result<(), SandboxError> {
    let none: Option<&str> = None;
    let io = |what: String| move |source| SandboxError::Io { what, source };
    let stage = "/run/.dev";
    std::fs::create_dir(stage).map_err(io(format!("create {stage}")))?;
    mount_fs(
        "tmpfs",
        stage,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = format!("{stage}/{d}");
        std::fs::File::create(&target).map_err(io(format!("create {target}")))?;
        let src = format!("/dev/{d}");
        mount(
            Some(src.as_str()),
            target.as_str(),
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(sys(format!("bind {src}")))?;
    }
    let pts = format!("{stage}/pts");
    std::fs::create_dir(&pts).map_err(io(format!("create {pts}")))?;
    mount(Some("/dev/pts"), pts.as_str(), none, MsFlags::MS_BIND, none)
        .map_err(sys("bind /dev/pts"))?;
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let link = format!("{stage}/{name}");
        std::os::unix::fs::symlink(to, &link).map_err(io(format!("create {link}")))?;
    }
    mount(Some(stage), "/dev", none, MsFlags::MS_MOVE, none).map_err(sys("move /dev"))?;
    Ok(())
}

/// Every mount read-only and nosuid, recursively, in this mount namespace only.
fn read_only_tree() -> Result<(), SandboxError> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let root = c"/";
    // SAFETY: mount_setattr reads a NUL-terminated path and `size_of::<MountAttr>()` bytes of
    // `attr`, both live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            root.as_ptr(),
            libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(SandboxError::Sys {
            what: "make the tree read-only".into(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

fn limits(l: &Limits, deadline: Duration) -> Result<(), SandboxError> {
    use nix::sys::resource::{Resource, setrlimit};
    for (r, v, what) in [
        (Resource::RLIMIT_CPU, deadline.as_secs() + 1, "cpu time"),
        (Resource::RLIMIT_NPROC, l.processes, "processes"),
        (Resource::RLIMIT_AS, l.address_space, "address space"),
        (Resource::RLIMIT_NOFILE, l.open_files, "open files"),
        (Resource::RLIMIT_CORE, 0, "core size"),
    ] {
        setrlimit(r, v, v).map_err(sys(format!("limit {what}")))?;
    }
    Ok(())
}

fn drop_privileges(uid: u32) -> Result<(), SandboxError> {
    let keep = kept_caps();
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    nix::unistd::setgroups(&[]).map_err(sys("drop supplementary groups"))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1) };
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(uid));
    nix::unistd::setresgid(g, g, g).map_err(sys(format!("setresgid {uid}")))?;
    nix::unistd::setresuid(u, u, u).map_err(sys(format!("setresuid {uid}")))?;
    caps::set(None, CapSet::Permitted, &keep)?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Inheritable, &keep)?;
    for cap in &keep {
        caps::raise(None, CapSet::Ambient, *cap)?;
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SandboxError::Sys {
            what: "no_new_privs".into(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_build_for_this_architecture() {
        let f = filters().unwrap();
        assert_eq!(f.len(), 3);
        // The arch check, the deny list with clone's flag tests, the default.
        assert!(f[0].len() > 60, "{}", f[0].len());
        assert!(!f[1].is_empty());
    }

    #[test]
    fn only_network_capabilities_are_kept() {
        let k = kept_caps();
        assert_eq!(k.len(), 2);
        assert!(k.contains(&Capability::CAP_NET_ADMIN) && k.contains(&Capability::CAP_NET_RAW));
        assert!(!k.contains(&Capability::CAP_SYS_ADMIN));
    }
}
