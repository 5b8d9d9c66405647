//! Persistent TAP devices (the kernel's tun driver, `ioctl(TUNSETIFF)`); tun cannot be created
//! over rtnetlink.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// Builds a `struct ifreq` naming `ifname` with `flags`.
fn ifreq(ifname: &str, flags: libc::c_int) -> io::Result<libc::ifreq> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?} is not 1-15 bytes"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    Ok(req)
}

/// Opens `/dev/net/tun` attached to the TAP `ifname` of the calling thread's namespace (creating
/// it if it does not exist), without packet information headers.
pub fn attach(ifname: &str) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = ifreq(ifname, libc::IFF_TAP | libc::IFF_NO_PI)?;
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` that lives for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Creates a persistent TAP `ifname` in the calling thread's namespace; it outlives this process
/// and is served by whoever attaches to it later.
pub fn create_persistent(ifname: &str) -> io::Result<()> {
    let f = attach(ifname)?;
    // SAFETY: TUNSETPERSIST takes an integer argument.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
