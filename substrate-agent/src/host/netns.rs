//! Named network namespaces, created exactly as iproute2's `ip netns add` creates them, so that
//! `ip netns list` and `ip netns exec` work from the root namespace:
//!
//! 1. `/run/netns` is a shared mount point (bind-mounted onto itself once if it is not one);
//! 2. an empty file `/run/netns/NAME` is created exclusively;
//! 3. the calling thread unshares `CLONE_NEWNET` (only this thread moves), configures the new
//!    namespace from inside (loopback up, ownership tag on loopback), bind-mounts
//!    `/proc/thread-self/ns/net` onto the file, and returns to its original namespace.
//!
//! Deletion is `umount2(MNT_DETACH)` plus `unlink`, as `ip netns delete` does, after killing the
//! processes still inside (a tenant's leftover command would pin it). The kernel frees the
//! namespace (and every device in it) asynchronously once nothing references it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

/// Path of a namespace given by name (under `/run/netns`) or as an absolute path to a namespace
/// file (e.g. `/proc/PID/ns/net`).
pub fn path_of(name: &str) -> PathBuf {
    if name.starts_with('/') {
        PathBuf::from(name)
    } else {
        Path::new(NETNS_DIR).join(name)
    }
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Makes `/run/netns` exist and be a shared mount point (idempotent).
pub fn prepare_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_DIR)?;
    let mut bound = false;
    loop {
        match mount(
            None::<&str>,
            NETNS_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::Error::EINVAL) if !bound => {
                // Not a mount point yet: bind it onto itself, then make it shared.
                mount(
                    Some(NETNS_DIR),
                    NETNS_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(nix_io)?;
                bound = true;
            }
            Err(e) => return Err(nix_io(e)),
        }
    }
}

/// The network namespace of the calling thread.
pub fn current() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// Opens a named namespace. Anything else under that name (a stray file, a directory, a
/// symbolic link, a FIFO that would block) is refused with `InvalidData`, without following or
/// blocking.
pub fn open(name: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path_of(name))?;
    let fs = nix::sys::statfs::fstatfs(&f).map_err(nix_io)?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a network namespace",
        ));
    }
    Ok(f)
}

/// Moves the calling thread into `ns` for the duration of `f`, then back into `home`.
///
/// Panics (aborting the agent) if it cannot return: a worker thread left in a tenant's namespace
/// would silently act on the wrong namespace afterwards.
pub fn within<R>(ns: &File, home: &File, f: impl FnOnce() -> R) -> io::Result<R> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(nix_io)?;
    let r = f();
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        panic!("cannot return to the agent's network namespace: {e}");
    }
    Ok(r)
}

/// Creates the named namespace `name`; `init` runs inside it before it is published under
/// `/run/netns`. Returns the namespace's inode. On error nothing is left behind.
pub fn create<R>(
    name: &str,
    home: &File,
    init: impl FnOnce() -> io::Result<R>,
) -> io::Result<(u64, R)> {
    let path = path_of(name);
    // O_EXCL: a namespace (or any file) of that name that is not ours stays untouched.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let undo_file = |e: io::Error| {
        let _ = std::fs::remove_file(&path);
        e
    };
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(nix_io)
        .map_err(undo_file)?;
    let inside = (|| {
        let r = init()?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_io)?;
        Ok::<R, io::Error>(r)
    })();
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        panic!("cannot return to the agent's network namespace: {e}");
    }
    let r = inside.map_err(undo_file)?;
    let ino = std::fs::metadata(&path)?.ino();
    Ok((ino, r))
}

/// Kills every process (but this one) whose network namespace is `ns`: a command a tenant left
/// running in its node would otherwise keep the namespace, and every device in it, alive after
/// the name is gone. Returns the pids signalled.
fn kill_members(ns: &File) -> io::Result<Vec<u32>> {
    let me = ns.metadata()?;
    let own = std::process::id();
    let mut killed = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // Processes come and go: what cannot be read is not in the namespace any more.
        let inside = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| m.dev() == me.dev() && m.ino() == me.ino());
        if inside && pid != own {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed.push(pid);
        }
    }
    Ok(killed)
}

/// Unmounts and removes a named namespace, killing the processes left inside it first. `NotFound`
/// when there is no such name.
pub fn delete(name: &str) -> io::Result<()> {
    let path = path_of(name);
    if let Ok(ns) = open(name) {
        let killed = kill_members(&ns)?;
        if !killed.is_empty() {
            tracing::warn!(ns = name, pids = ?killed, "killed processes left in a deleted namespace");
        }
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(nix::Error::ENOENT) => return Err(io::Error::from(io::ErrorKind::NotFound)),
        Err(e) => return Err(nix_io(e)),
    }
    std::fs::remove_file(&path)
}

/// Named namespaces whose name starts with `prefix`, with their inodes.
pub fn list(prefix: &str) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(NETNS_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        // Not followed: a symbolic link is listed as itself (and refused when opened). An entry
        // that cannot be read is listed with inode 0 (matching no record of ours), so that one
        // stray entry never hides the others; reading it fails and is reported then.
        match std::fs::symlink_metadata(e.path()) {
            Ok(m) => out.push((name, m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => out.push((name, 0)),
        }
    }
    out.sort();
    Ok(out)
}

/// Spawns `cmd` inside the namespace `name` (a name or an absolute path, as [`path_of`]): the
/// child enters it between fork and exec, after whatever `pre_exec` hooks `cmd` already has; the
/// calling thread stays where it is.
pub fn spawn_in(name: &str, cmd: &mut Command) -> io::Result<Child> {
    let ns = File::open(path_of(name))?;
    let fd = ns.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which is
    // async-signal-safe; `fd` is the namespace file, which the parent holds open until `spawn`
    // returned, so it is valid in the child.
    unsafe {
        cmd.pre_exec(move || {
            let ns = std::os::fd::BorrowedFd::borrow_raw(fd);
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(nix_io)
        });
    }
    let child = cmd.spawn();
    drop(ns);
    child
}

/// Enters a named namespace for the rest of this thread's (or, before any thread is spawned, the
/// process's) life: the agent's `--netns`.
pub fn enter_for_good(name: &str) -> io::Result<()> {
    let f = open(name)?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(nix_io)
}
