//! The datapath process (`substrate-agent vlan-datapath`): serves the wires of its config file.
//!
//! Per underlay device (a namespace + device pair): one AF_PACKET socket, bound to the device,
//! promiscuous, `PACKET_AUXDATA` on (the kernel strips the 802.1Q tag before the socket sees the
//! frame and reports it in the auxiliary data) and `PACKET_IGNORE_OUTGOING` on (or the socket
//! would read its own sends); one receive thread that demultiplexes by VLAN ID. Per TAP: the
//! attached file and one reader thread that pushes the wire's tag and sends on the underlay.
//! VLAN-to-VLAN wires (transit) re-tag in the receive thread.
//!
//! SIGHUP re-reads the config: unchanged ends keep running (a TAP is re-attached only when its
//! device was recreated, detected by its ifindex); tables are swapped under a lock. SIGTERM
//! stops. After each (re)load the process writes a status file the agent waits for.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::config::{DatapathConfig, Wire, WireEnd};
use super::frame::{ETH_HLEN, VLAN_HLEN, pop_inband, push_tag};
use crate::host::netns;
use crate::host::packet::{self, setsockopt_int};

/// The config file: the agent bumps `nonce` on every write.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub nonce: u64,
    pub config: DatapathConfig,
}

/// The status file: which config was loaded, and what failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatusFile {
    pub nonce: u64,
    pub pid: u32,
    /// Wire id -> error.
    pub errors: BTreeMap<String, String>,
    /// Frames forwarded so far (all wires).
    pub frames: u64,
}

const POLL_MS: i32 = 200;
const BUF: usize = 65536 + 64;

type UlKey = (Option<String>, String);
type TapKey = (String, String);

#[derive(Clone)]
enum Dest {
    Tap(Arc<Tap>),
    Vlan(Arc<Underlay>, u16),
}

struct Underlay {
    key: UlKey,
    fd: OwnedFd,
    table: RwLock<HashMap<u16, Dest>>,
    stop: AtomicBool,
}

struct Tap {
    key: TapKey,
    file: File,
    ifindex: u32,
    dest: RwLock<Option<Dest>>,
    stop: AtomicBool,
}

static FRAMES: AtomicU64 = AtomicU64::new(0);

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn ifindex_in(home: &File, ns: Option<&str>, name: &str) -> io::Result<u32> {
    let idx = match ns {
        Some(ns) => netns::within(&netns::open(ns)?, home, || packet::ifindex(name))?,
        None => packet::ifindex(name),
    };
    idx.map_err(|e| {
        let place = ns.unwrap_or("the host namespace");
        io::Error::new(e.kind(), format!("{e} in {place}"))
    })
}

/// An AF_PACKET socket on `dev` of the calling thread's namespace.
fn packet_socket(dev: &str, ifindex: u32) -> io::Result<OwnedFd> {
    let fd = packet::bound_socket(ifindex, libc::ETH_P_ALL as u16)
        .map_err(|e| io::Error::new(e.kind(), format!("packet socket on {dev}: {e}")))?;
    setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)?;
    setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
    // Sends skip the qdisc layer (the underlay's own qdisc, if any, is not ours to use).
    let _ = setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
    // The default receive buffer (about 200 KiB, some 90 frames) overflows under one TCP stream
    // while the thread is descheduled: measured 37,000 retransmits in 4 s. Root may exceed
    // rmem_max.
    let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
    let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
    // SAFETY: packet_mreq is plain old data; all-zero is valid.
    let mut mreq: libc::packet_mreq = unsafe { zeroed() };
    mreq.mr_ifindex = ifindex as i32;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    // SAFETY: passes a pointer to a live packet_mreq and its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq as *const libc::packet_mreq as *const libc::c_void,
            size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_err(&format!("promiscuous mode on {dev}")));
    }
    Ok(fd)
}

fn poll_in(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    let r = unsafe { libc::poll(&mut p, 1, POLL_MS) };
    r > 0 && p.revents & libc::POLLIN != 0
}

fn send_tagged(ul: &Underlay, frame: &[u8], vid: u16, out: &mut [u8]) {
    if let Some(n) = push_tag(frame, vid, out) {
        // SAFETY: sends `n` initialized bytes of `out` on a bound packet socket.
        let r = unsafe { libc::send(ul.fd.as_raw_fd(), out.as_ptr() as *const libc::c_void, n, 0) };
        if r > 0 {
            FRAMES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn deliver(dest: &Dest, frame: &[u8], out: &mut [u8]) {
    match dest {
        Dest::Tap(t) => {
            if (&t.file).write(frame).is_ok() {
                FRAMES.fetch_add(1, Ordering::Relaxed);
            }
        }
        Dest::Vlan(ul, vid) => send_tagged(ul, frame, *vid, out),
    }
}

/// Frames taken per `recvmmsg` call.
const BATCH: usize = 32;
/// Receive buffer per frame (room for GRO-merged frames should an underlay have GRO on).
const RX_FRAME: usize = BUF;

/// The VLAN ID of a received frame from its PACKET_AUXDATA control message.
///
/// # Safety
/// `msg` must describe control data the kernel wrote for this message.
unsafe fn aux_vlan(msg: &libc::msghdr) -> Option<u16> {
    let mut vid = None;
    // SAFETY: the caller guarantees `msg`'s control buffer is the kernel's; the CMSG macros stay
    // inside `msg_controllen`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::tpacket_auxdata);
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    vid = Some(aux.tp_vlan_tci & 0x0fff);
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    vid
}

fn underlay_loop(ul: Arc<Underlay>) {
    let mut bufs = vec![vec![0u8; RX_FRAME]; BATCH];
    // Room for one tpacket_auxdata control message per frame.
    let mut cbufs = vec![[0u64; 16]; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain old data; all-zero is valid.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    let mut out = vec![0u8; RX_FRAME + VLAN_HLEN];
    let mut untag = vec![0u8; RX_FRAME];
    let fd = ul.fd.as_raw_fd();
    let mut idle = false;
    while !ul.stop.load(Ordering::Relaxed) {
        // Poll only when the socket ran dry.
        if idle && !poll_in(fd) {
            continue;
        }
        for (k, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_iov = &mut iovs[k];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = cbufs[k].as_mut_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_controllen = size_of::<[u64; 16]>();
            m.msg_len = 0;
        }
        // SAFETY: every mmsghdr points at live buffers of the sizes given.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        idle = got <= 0;
        if idle {
            continue;
        }
        // Held for one batch: a reload waits at most that long.
        let table = ul.table.read().expect("table");
        for k in 0..got as usize {
            let n = (msgs[k].msg_len as usize).min(RX_FRAME);
            // SAFETY: the kernel filled this message's control data in the call above.
            let vid = unsafe { aux_vlan(&msgs[k].msg_hdr) };
            let (vid, frame): (u16, &[u8]) = match vid {
                Some(v) => (v, &bufs[k][..n]),
                None => match pop_inband(&bufs[k][..n], &mut untag) {
                    Some((v, m)) => (v, &untag[..m]),
                    None => continue, // untagged: not ours
                },
            };
            if frame.len() < ETH_HLEN {
                continue;
            }
            if let Some(d) = table.get(&vid) {
                deliver(d, frame, &mut out);
            }
        }
    }
}

/// Batch slot size of the TAP reader.
const TX_FRAME: usize = 16384;

/// Sends `lens.len()` tagged frames from `outs` on `ul` with one `sendmmsg`.
fn send_batch(ul: &Underlay, outs: &mut [Vec<u8>], lens: &[usize]) {
    let mut iovs: Vec<libc::iovec> = outs
        .iter_mut()
        .zip(lens)
        .map(|(b, &n)| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: n,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain old data; all-zero is valid.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut off = 0;
    while off < msgs.len() {
        // SAFETY: every mmsghdr points at a live, initialized buffer of the length given.
        let r = unsafe {
            libc::sendmmsg(
                ul.fd.as_raw_fd(),
                msgs[off..].as_mut_ptr(),
                (msgs.len() - off) as libc::c_uint,
                0,
            )
        };
        if r <= 0 {
            break; // dropped, as a full NIC queue would
        }
        FRAMES.fetch_add(r as u64, Ordering::Relaxed);
        off += r as usize;
    }
}

fn tap_loop(tap: Arc<Tap>) {
    let mut buf = vec![0u8; BUF];
    let mut out = vec![0u8; BUF + VLAN_HLEN];
    // Batch slots sized for ordinary MTUs (a TAP without vnet headers hands out MTU-sized frames);
    // a bigger frame goes out on its own.
    let mut outs = vec![vec![0u8; TX_FRAME]; BATCH];
    let mut lens = Vec::with_capacity(BATCH);
    let fd = tap.file.as_raw_fd();
    // Non-blocking reads; poll only when the TAP ran dry.
    // SAFETY: fcntl on a descriptor this thread's Tap owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let mut idle = false;
    while !tap.stop.load(Ordering::Relaxed) {
        if idle && !poll_in(fd) {
            continue;
        }
        let dest = tap.dest.read().expect("dest").clone();
        // Read what is queued (up to a batch), tag it, send it with one system call.
        lens.clear();
        while lens.len() < BATCH {
            let n = match (&tap.file).read(&mut buf) {
                Ok(n) => n,
                Err(_) => {
                    idle = true;
                    break;
                }
            };
            idle = false;
            if n < ETH_HLEN {
                continue;
            }
            match &dest {
                Some(Dest::Vlan(_, vid)) if n + VLAN_HLEN <= TX_FRAME => {
                    if let Some(m) = push_tag(&buf[..n], *vid, &mut outs[lens.len()]) {
                        lens.push(m);
                    }
                }
                // A frame too big for a batch slot, or a TAP-to-TAP wire: one at a time.
                Some(d) => deliver(d, &buf[..n], &mut out),
                None => {}
            }
        }
        if let (Some(Dest::Vlan(ul, _)), false) = (&dest, lens.is_empty()) {
            send_batch(ul, &mut outs[..lens.len()], &lens);
        }
    }
}

struct Runtime {
    home: File,
    underlays: HashMap<UlKey, (Arc<Underlay>, JoinHandle<()>)>,
    taps: HashMap<TapKey, (Arc<Tap>, JoinHandle<()>)>,
    relays: crate::impair::relay::Relays,
}

impl Runtime {
    fn open_underlay(&self, ns: Option<&str>, dev: &str) -> io::Result<Arc<Underlay>> {
        let idx = ifindex_in(&self.home, ns, dev)?;
        let fd = match ns {
            Some(n) => netns::within(&netns::open(n)?, &self.home, || packet_socket(dev, idx))??,
            None => packet_socket(dev, idx)?,
        };
        Ok(Arc::new(Underlay {
            key: (ns.map(str::to_string), dev.to_string()),
            fd,
            table: RwLock::new(HashMap::new()),
            stop: AtomicBool::new(false),
        }))
    }

    fn open_tap(&self, ns: &str, ifname: &str) -> io::Result<Arc<Tap>> {
        let nsf = netns::open(ns)?;
        let (file, idx) = netns::within(&nsf, &self.home, || -> io::Result<(File, u32)> {
            let idx = packet::ifindex(ifname)?;
            Ok((crate::host::tap::attach(ifname)?, idx))
        })??;
        Ok(Arc::new(Tap {
            key: (ns.to_string(), ifname.to_string()),
            file,
            ifindex: idx,
            dest: RwLock::new(None),
            stop: AtomicBool::new(false),
        }))
    }

    /// Serves exactly `cfg`; returns errors per wire.
    fn reload(&mut self, cfg: &DatapathConfig) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        let mut uls: HashMap<UlKey, Arc<Underlay>> = HashMap::new();
        let mut taps: HashMap<TapKey, Arc<Tap>> = HashMap::new();
        let mut ul_tables: HashMap<UlKey, HashMap<u16, Dest>> = HashMap::new();
        let mut tap_dest: HashMap<TapKey, Dest> = HashMap::new();
        for (id, Wire { a, b }) in &cfg.wires {
            let mut open = |e: &WireEnd| -> io::Result<Dest> {
                match e {
                    WireEnd::Vlan {
                        netns,
                        dev,
                        vlan_id,
                    } => {
                        let key = (netns.clone(), dev.clone());
                        let ul = match uls.get(&key) {
                            Some(u) => u.clone(),
                            None => {
                                let u = match self.underlays.get(&key) {
                                    Some((u, _)) => u.clone(),
                                    None => self.open_underlay(netns.as_deref(), dev)?,
                                };
                                uls.insert(key, u.clone());
                                u
                            }
                        };
                        Ok(Dest::Vlan(ul, *vlan_id))
                    }
                    WireEnd::Tap { netns, ifname } => {
                        let key = (netns.clone(), ifname.clone());
                        if let Some(t) = taps.get(&key) {
                            return Ok(Dest::Tap(t.clone()));
                        }
                        let current = netns::open(netns).and_then(|f| {
                            netns::within(&f, &self.home, || packet::ifindex(ifname))?
                        });
                        let t = match (self.taps.get(&key), current) {
                            (Some((t, _)), Ok(idx)) if t.ifindex == idx => t.clone(),
                            _ => self.open_tap(netns, ifname)?,
                        };
                        taps.insert(key, t.clone());
                        Ok(Dest::Tap(t))
                    }
                }
            };
            let ends = open(a).and_then(|da| Ok((da, open(b)?)));
            let (da, db) = match ends {
                Ok(x) => x,
                Err(e) => {
                    errors.insert(id.clone(), e.to_string());
                    continue;
                }
            };
            let mut link = |from: &Dest, to: &Dest| match from {
                Dest::Vlan(u, vid) => {
                    ul_tables
                        .entry(u.key.clone())
                        .or_default()
                        .insert(*vid, to.clone());
                }
                Dest::Tap(t) => {
                    tap_dest.insert(t.key.clone(), to.clone());
                }
            };
            link(&da, &db);
            link(&db, &da);
        }
        // Swap in the new tables and destinations, start threads for new ends.
        for (key, ul) in &uls {
            *ul.table.write().expect("table") = ul_tables.remove(key).unwrap_or_default();
            if !self.underlays.contains_key(key) {
                let u = ul.clone();
                let h = std::thread::spawn(move || underlay_loop(u));
                self.underlays.insert(key.clone(), (ul.clone(), h));
            }
        }
        for (key, t) in &taps {
            *t.dest.write().expect("dest") = tap_dest.remove(key);
            let fresh = self
                .taps
                .get(key)
                .is_none_or(|(old, _)| !Arc::ptr_eq(old, t));
            if fresh {
                if let Some((old, h)) = self.taps.remove(key) {
                    stop_tap(old, h);
                }
                let tt = t.clone();
                let h = std::thread::spawn(move || tap_loop(tt));
                self.taps.insert(key.clone(), (t.clone(), h));
            }
        }
        // Stop what is no longer used.
        let gone_taps: Vec<TapKey> = self
            .taps
            .keys()
            .filter(|k| !taps.contains_key(*k))
            .cloned()
            .collect();
        for k in gone_taps {
            if let Some((t, h)) = self.taps.remove(&k) {
                stop_tap(t, h);
            }
        }
        let gone_uls: Vec<UlKey> = self
            .underlays
            .keys()
            .filter(|k| !uls.contains_key(*k))
            .cloned()
            .collect();
        for k in gone_uls {
            if let Some((u, h)) = self.underlays.remove(&k) {
                u.stop.store(true, Ordering::Relaxed);
                let _ = h.join();
                u.table.write().expect("table").clear();
            }
        }
        errors
    }

    fn stop_all(&mut self) {
        self.relays.stop_all();
        for (_, (t, h)) in self.taps.drain() {
            stop_tap(t, h);
        }
        for (_, (u, h)) in self.underlays.drain() {
            u.stop.store(true, Ordering::Relaxed);
            let _ = h.join();
            u.table.write().expect("table").clear();
        }
    }
}

fn stop_tap(t: Arc<Tap>, h: JoinHandle<()>) {
    t.stop.store(true, Ordering::Relaxed);
    let _ = h.join();
    *t.dest.write().expect("dest") = None;
}

fn write_status(path: &Path, st: &StatusFile) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(st).map_err(io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

fn read_config(path: &Path) -> io::Result<ConfigFile> {
    let b = std::fs::read(path)?;
    serde_json::from_slice(&b).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

/// Runs the datapath until SIGTERM or SIGINT.
pub fn run(config: PathBuf, status: PathBuf) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    let mut set = SigSet::empty();
    set.add(Signal::SIGHUP);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Blocked here, before any thread exists, so every thread inherits the mask and the signals
    // are taken synchronously by sigwait below.
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    let mut rt = Runtime {
        home: netns::current()?,
        underlays: HashMap::new(),
        taps: HashMap::new(),
        relays: Default::default(),
    };
    let pid = std::process::id();
    loop {
        let (nonce, errors) = match read_config(&config) {
            Ok(c) => {
                let mut errors = rt.reload(&c.config);
                errors.extend(rt.relays.reload(&c.config.relays, &rt.home));
                (c.nonce, errors)
            }
            Err(e) => (0, BTreeMap::from([("config".to_string(), e.to_string())])),
        };
        for (w, e) in &errors {
            tracing::warn!(wire = %w, error = %e, "wire not served");
        }
        tracing::info!(
            nonce,
            taps = rt.taps.len(),
            underlays = rt.underlays.len(),
            relays = rt.relays.len(),
            "loaded"
        );
        write_status(
            &status,
            &StatusFile {
                nonce,
                pid,
                errors,
                frames: FRAMES.load(Ordering::Relaxed),
            },
        )?;
        match set.wait()? {
            Signal::SIGHUP => continue,
            _ => break,
        }
    }
    rt.stop_all();
    Ok(())
}
