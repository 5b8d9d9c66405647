//! AF_PACKET sockets bound to one device of the calling thread's namespace, and the look-ups
//! they need: the VLAN datapath's underlay sockets and the impairment relay's send sockets are
//! both opened here.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The index of device `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("device {name} not found"),
        )),
        i => Ok(i),
    }
}

/// Sets an integer socket option.
pub fn setsockopt_int(fd: &OwnedFd, level: i32, opt: i32, val: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live i32 and its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &val as *const i32 as *const libc::c_void,
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_err("setsockopt"));
    }
    Ok(())
}

/// A raw AF_PACKET socket bound to `ifindex`, receiving the frames of `protocol` (an EtherType
/// in host order, e.g. `ETH_P_ALL`; 0 receives nothing, for a socket that only sends).
pub fn bound_socket(ifindex: u32, protocol: u16) -> io::Result<OwnedFd> {
    let proto = protocol.to_be();
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if raw < 0 {
        return Err(last_err("socket(AF_PACKET)"));
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binds with a pointer to a live sockaddr_ll and its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_err(&format!("bind to ifindex {ifindex}")));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_device_is_named_in_the_error() {
        let e = ifindex("vnet-no-such-dev").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("vnet-no-such-dev"), "{e}");
    }

    #[test]
    fn loopback_has_an_index() {
        assert!(ifindex("lo").unwrap() > 0);
    }
}
