//! The relay threads: one per impaired interface, inside the datapath helper process.
//!
//! A thread owns the relay TAP's file and an AF_PACKET socket bound to the impaired device
//! (opened inside the node's namespace, protocol 0 so it receives nothing, `PACKET_QDISC_BYPASS`
//! so its sends skip the device's egress redirect). It waits with `ppoll` until a frame arrives or
//! the next queued one is due, with a timer slack of 1 us, so a frame leaves within tens of
//! microseconds of its due time on an idle machine.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::RelayConfig;
use super::queue::{DelayLine, Offer};
use crate::host::netns;
use crate::host::packet::{self, ifindex};

/// Frames relayed, lost and dropped (queue full) by every relay of this process.
pub static RELAYED: AtomicU64 = AtomicU64::new(0);
pub static LOST: AtomicU64 = AtomicU64::new(0);

/// Longest wait without a due frame: how soon a stop request is seen.
const IDLE: Duration = Duration::from_millis(200);
const BUF: usize = 65536 + 64;

struct Running {
    cfg: RelayConfig,
    tap_index: u32,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The relays of the process, by id.
#[derive(Default)]
pub struct Relays {
    running: HashMap<String, Running>,
}

/// An AF_PACKET socket that only sends, on `ifindex` of the calling thread's namespace.
fn send_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let fd = packet::bound_socket(ifindex, 0)?;
    packet::setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
    Ok(fd)
}

/// Opens the TAP (non-blocking) and the send socket of `cfg` inside its namespace.
fn open(cfg: &RelayConfig, home: &File) -> io::Result<(File, u32, OwnedFd)> {
    let ns = netns::open(&cfg.netns)?;
    netns::within(&ns, home, || -> io::Result<(File, u32, OwnedFd)> {
        let tap_index = ifindex(&cfg.tap)?;
        let dev_index = ifindex(&cfg.dev)?;
        let tap = crate::host::tap::attach(&cfg.tap)
            .map_err(|e| io::Error::new(e.kind(), format!("attach tap {}: {e}", cfg.tap)))?;
        // SAFETY: fcntl on a descriptor `tap` owns.
        unsafe {
            let fl = libc::fcntl(tap.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(tap.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let sock = send_socket(dev_index)
            .map_err(|e| io::Error::new(e.kind(), format!("packet socket on {}: {e}", cfg.dev)))?;
        Ok((tap, tap_index, sock))
    })?
}

/// Waits until `fd` is readable or `timeout` passed.
fn wait_readable(fd: i32, timeout: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one live pollfd, a live timespec, no signal mask.
    unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
}

/// Runs the calling thread under SCHED_FIFO at the lowest real-time priority: a frame due now
/// must leave now, also on a loaded host (measured: +1.5 ms per frame at a load of 19 on two
/// cores under the normal scheduler). The thread sleeps in `ppoll` between frames, and the
/// kernel's real-time throttling keeps a flood from starving the host. Without the privilege,
/// the relay runs unprivileged and says so.
fn realtime() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler(0, ..) changes the calling thread's policy; `param` is live.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if r != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "impairment relay: no real-time priority, delays may run late under load");
    }
}

/// Serves one relay until `stop`.
fn run(cfg: RelayConfig, tap: File, sock: OwnedFd, stop: Arc<AtomicBool>) {
    // SAFETY: prctl(PR_SET_TIMERSLACK) changes only this thread's timer slack (1 us).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
    realtime();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    let mut line = DelayLine::new(cfg.delay_us, cfg.jitter_us, cfg.loss_ppm, seed);
    let mut buf = vec![0u8; BUF];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Some(f) = line.pop_due(now) {
            // SAFETY: sends `f.len()` initialized bytes on a bound packet socket.
            let r = unsafe { libc::send(sock.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            if r > 0 {
                RELAYED.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wait = line
            .next_due()
            .map_or(IDLE, |t| t.saturating_duration_since(now).min(IDLE));
        if !wait.is_zero() {
            wait_readable(tap.as_raw_fd(), wait);
        }
        let now = Instant::now();
        while let Ok(n) = (&tap).read(&mut buf) {
            if n == 0 {
                break;
            }
            if line.offer(buf[..n].to_vec(), now) != Offer::Queued {
                LOST.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Relays {
    /// Serves exactly `cfgs`: unchanged relays whose TAP is the same device keep running; returns
    /// errors per relay id.
    pub fn reload(
        &mut self,
        cfgs: &BTreeMap<String, RelayConfig>,
        home: &File,
    ) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|id| !cfgs.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.stop(&id);
        }
        for (id, cfg) in cfgs {
            if let Some(r) = self.running.get(id)
                && r.cfg == *cfg
                && current_tap_index(cfg, home).ok() == Some(r.tap_index)
                && !r.thread.is_finished()
            {
                continue;
            }
            self.stop(id);
            match open(cfg, home) {
                Ok((tap, tap_index, sock)) => {
                    let stop = Arc::new(AtomicBool::new(false));
                    let (c, s) = (cfg.clone(), stop.clone());
                    let thread = std::thread::spawn(move || run(c, tap, sock, s));
                    self.running.insert(
                        id.clone(),
                        Running {
                            cfg: cfg.clone(),
                            tap_index,
                            stop,
                            thread,
                        },
                    );
                }
                Err(e) => {
                    errors.insert(
                        id.clone(),
                        format!("impairment relay in {}: {e}", cfg.netns),
                    );
                }
            }
        }
        errors
    }

    fn stop(&mut self, id: &str) {
        if let Some(r) = self.running.remove(id) {
            r.stop.store(true, Ordering::Relaxed);
            let _ = r.thread.join();
        }
    }

    pub fn stop_all(&mut self) {
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id);
        }
    }

    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

fn current_tap_index(cfg: &RelayConfig, home: &File) -> io::Result<u32> {
    let ns = netns::open(&cfg.netns)?;
    netns::within(&ns, home, || ifindex(&cfg.tap))?
}
