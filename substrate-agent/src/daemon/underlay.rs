//! Underlay liveness: the agent probes each substrate link to a neighbour (the controller names
//! them in an `UnderlayProbe`) with ICMP echo from its own address on the link to the
//! neighbour's, over the interface that holds its address, and reports the state of every link
//! (`UnderlayReport`) whenever one changes. A link is down after `misses` unanswered probes in a
//! row and up again after one answer; the controller debounces further and decides.
//!
//! Why ICMP: it needs nothing of the neighbour's agent, so a link whose far host still runs but
//! whose agent is restarting stays up, and a host that lost its links but kept its agent is
//! seen from both sides. The prober is one thread with a raw socket per link (the agent runs
//! with CAP_NET_RAW), bound to the link's interface so that a reply cannot come another way.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, bind, recvfrom, sendto,
    setsockopt, socket, sockopt,
};
use tokio::sync::watch;
use vnet_proto::v1 as pb;

/// One link to probe, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbor {
    pub link_id: String,
    pub neighbor: String,
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
}

/// A validated `UnderlayProbe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub neighbors: Vec<Neighbor>,
    pub interval: Duration,
    pub misses: u32,
}

/// Most links one host probes.
const MAX_NEIGHBORS: usize = 256;

impl ProbeConfig {
    /// Checks the controller's message: IPv4 addresses, sane interval and count, bounded size.
    pub fn from_proto(p: &pb::UnderlayProbe) -> Result<ProbeConfig, String> {
        if p.neighbors.len() > MAX_NEIGHBORS {
            return Err(format!(
                "{} neighbours exceed the limit of {MAX_NEIGHBORS}",
                p.neighbors.len()
            ));
        }
        if !(50..=60_000).contains(&p.interval_ms) || !(1..=100).contains(&p.misses) {
            return Err(format!(
                "interval {} ms or misses {} out of range (50..60000, 1..100)",
                p.interval_ms, p.misses
            ));
        }
        let neighbors = p
            .neighbors
            .iter()
            .map(|n| {
                let addr = |s: &str, what: &str| {
                    s.parse::<Ipv4Addr>().map_err(|_| {
                        format!("link {}: {what} {s:?} is not an IPv4 address", n.link_id)
                    })
                };
                Ok(Neighbor {
                    link_id: n.link_id.chars().take(64).collect(),
                    neighbor: n.neighbor.chars().take(64).collect(),
                    local: addr(&n.local_address, "local address")?,
                    remote: addr(&n.remote_address, "remote address")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ProbeConfig {
            neighbors,
            interval: Duration::from_millis(u64::from(p.interval_ms)),
            misses: p.misses,
        })
    }
}

/// What the prober knows of one link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LinkState {
    /// `None` until the first answer or `misses` misses.
    up: Option<bool>,
    misses: u32,
    detail: String,
}

impl LinkState {
    /// One probe's outcome; true when the reported state changed.
    fn record(&mut self, answered: bool, why: &str, misses: u32) -> bool {
        let before = self.up;
        if answered {
            self.misses = 0;
            self.up = Some(true);
            self.detail.clear();
        } else {
            self.misses = self.misses.saturating_add(1);
            if self.misses >= misses {
                self.up = Some(false);
                self.detail = why.to_string();
            }
        }
        before != self.up
    }
}

/// The report of every link whose state is known.
fn report(cfg: &ProbeConfig, states: &[LinkState]) -> pb::UnderlayReport {
    pb::UnderlayReport {
        links: cfg
            .neighbors
            .iter()
            .zip(states)
            .filter_map(|(n, s)| {
                s.up.map(|up| pb::UnderlayLinkState {
                    link_id: n.link_id.clone(),
                    up,
                    detail: s.detail.clone(),
                })
            })
            .collect(),
    }
}

/// A running prober; dropping it stops the thread.
pub struct Prober {
    stop: Arc<AtomicBool>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts probing `cfg`'s links; every change of state is sent on `out`.
pub fn start(cfg: ProbeConfig, out: watch::Sender<Option<pb::UnderlayReport>>) -> Prober {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::Builder::new()
        .name("underlay-probe".into())
        .spawn(move || run(cfg, out, s))
        .map(drop)
        .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the underlay prober"));
    Prober { stop }
}

/// The interface holding `addr` (to bind a probe to the link itself).
fn device_of(addr: Ipv4Addr) -> Option<String> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|i| {
        let a = i.address.as_ref()?.as_sockaddr_in()?.ip();
        (a == addr).then_some(i.interface_name)
    })
}

/// A raw ICMP socket from `local`, bound to its interface when one holds it.
fn open(n: &Neighbor) -> Result<OwnedFd, String> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )
    .map_err(|e| format!("raw ICMP socket: {e}"))?;
    if let Some(dev) = device_of(n.local) {
        setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(dev))
            .map_err(|e| format!("bind to the interface of {}: {e}", n.local))?;
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(n.local, 0)),
    )
    .map_err(|e| format!("bind {}: {e}", n.local))?;
    Ok(fd)
}

/// The internet checksum of `b`.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with identifier `id` and sequence `seq`.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"vnet-underlay-probe");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// `(id, seq)` of an echo reply in a raw IPv4 packet (header included).
fn echo_reply(packet: &[u8]) -> Option<(u16, u16)> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    if icmp.len() < 8 || icmp[0] != 0 || icmp[1] != 0 {
        return None;
    }
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// The probe identifier of neighbour `i` (distinct per link of this process).
fn ident(i: usize) -> u16 {
    (std::process::id() as u16)
        .wrapping_mul(31)
        .wrapping_add(i as u16)
}

fn run(cfg: ProbeConfig, out: watch::Sender<Option<pb::UnderlayReport>>, stop: Arc<AtomicBool>) {
    let mut states = vec![LinkState::default(); cfg.neighbors.len()];
    let mut sockets: Vec<Option<OwnedFd>> = cfg.neighbors.iter().map(|_| None).collect();
    let mut seq: u16 = 0;
    tracing::info!(links = cfg.neighbors.len(), interval = ?cfg.interval, misses = cfg.misses, "probing the underlay");
    while !stop.load(Ordering::Relaxed) {
        seq = seq.wrapping_add(1);
        let tick_end = Instant::now() + cfg.interval;
        let mut why: Vec<String> = vec![String::new(); cfg.neighbors.len()];
        for (i, n) in cfg.neighbors.iter().enumerate() {
            if sockets[i].is_none() {
                match open(n) {
                    Ok(fd) => sockets[i] = Some(fd),
                    Err(e) => why[i] = e,
                }
            }
            if let Some(fd) = &sockets[i] {
                let to = SockaddrIn::from(SocketAddrV4::new(n.remote, 0));
                let pkt = echo_request(ident(i), seq);
                if let Err(e) = sendto(
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    &pkt,
                    &to,
                    MsgFlags::empty(),
                ) {
                    why[i] = format!("send to {}: {e}", n.remote);
                }
            }
        }
        let answered = collect(&cfg, &sockets, seq, tick_end);
        let mut changed = false;
        for (i, n) in cfg.neighbors.iter().enumerate() {
            let w = if why[i].is_empty() {
                format!("no answer from {} within {:?}", n.remote, cfg.interval)
            } else {
                why[i].clone()
            };
            if states[i].record(answered[i], &w, cfg.misses) {
                changed = true;
                tracing::warn!(link = %n.link_id, neighbor = %n.neighbor, up = ?states[i].up, detail = %states[i].detail, "underlay link state");
                if states[i].up == Some(false) {
                    // A fresh socket next time (the interface may have been re-created).
                    sockets[i] = None;
                }
            }
        }
        if changed {
            out.send_replace(Some(report(&cfg, &states)));
        }
        let now = Instant::now();
        if tick_end > now {
            std::thread::sleep(tick_end - now);
        }
    }
}

/// Reads echo replies for `seq` until `until`; per neighbour, whether its answer came.
fn collect(cfg: &ProbeConfig, sockets: &[Option<OwnedFd>], seq: u16, until: Instant) -> Vec<bool> {
    let mut answered = vec![false; cfg.neighbors.len()];
    let want: BTreeMap<usize, (Ipv4Addr, u16)> = cfg
        .neighbors
        .iter()
        .enumerate()
        .filter(|(i, _)| sockets[*i].is_some())
        .map(|(i, n)| (i, (n.remote, ident(i))))
        .collect();
    let mut buf = [0u8; 1500];
    loop {
        if want.keys().all(|i| answered[*i]) {
            return answered;
        }
        let now = Instant::now();
        if now >= until {
            return answered;
        }
        let idx: Vec<usize> = want.keys().copied().filter(|i| !answered[*i]).collect();
        let mut fds: Vec<PollFd<'_>> = idx
            .iter()
            .filter_map(|i| sockets[*i].as_ref())
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = (until - now).as_millis().clamp(1, 60_000) as u16;
        if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) <= 0 {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
            .collect();
        drop(fds);
        for (k, i) in idx.iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let Some(fd) = &sockets[*i] else { continue };
            while let Ok((len, from)) =
                recvfrom::<SockaddrIn>(std::os::fd::AsRawFd::as_raw_fd(fd), &mut buf)
            {
                let (remote, id) = want[i];
                let from_ok = from.is_some_and(|a| a.ip() == remote);
                if from_ok && echo_reply(&buf[..len]) == Some((id, seq)) {
                    answered[*i] = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let n = |l: &str, r: &str| pb::UnderlayNeighbor {
            link_id: "h1-h2".into(),
            neighbor: "h2".into(),
            local_address: l.into(),
            remote_address: r.into(),
        };
        let p = |ns: Vec<pb::UnderlayNeighbor>, interval_ms, misses| pb::UnderlayProbe {
            neighbors: ns,
            interval_ms,
            misses,
        };
        let ok = ProbeConfig::from_proto(&p(vec![n("10.0.0.1", "10.0.0.2")], 300, 3)).unwrap();
        assert_eq!(ok.neighbors[0].remote, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ok.interval, Duration::from_millis(300));
        let e = ProbeConfig::from_proto(&p(vec![n("10.0.0.1", "h2")], 300, 3)).unwrap_err();
        assert_eq!(
            e,
            "link h1-h2: remote address \"h2\" is not an IPv4 address"
        );
        assert!(ProbeConfig::from_proto(&p(vec![], 10, 3)).is_err());
        assert!(ProbeConfig::from_proto(&p(vec![], 300, 0)).is_err());
    }

    #[test]
    fn down_after_misses_up_after_one_answer() {
        let mut s = LinkState::default();
        assert!(!s.record(false, "x", 3));
        assert!(!s.record(false, "x", 3));
        assert_eq!(s.up, None);
        assert!(s.record(false, "no answer", 3));
        assert_eq!((s.up, s.detail.as_str()), (Some(false), "no answer"));
        assert!(!s.record(false, "no answer", 3));
        assert!(s.record(true, "", 3));
        assert_eq!(s.up, Some(true));
        assert!(!s.record(true, "", 3));
    }

    #[test]
    fn echo_packets() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0, "a correct checksum sums to zero");
        // A reply: a 20-byte IPv4 header, then type 0 with the same id and sequence.
        let mut reply = vec![0x45u8];
        reply.extend([0u8; 19]);
        let mut icmp = req.clone();
        icmp[0] = 0;
        reply.extend(icmp);
        assert_eq!(echo_reply(&reply), Some((0x1234, 7)));
        reply[20] = 8;
        assert_eq!(echo_reply(&reply), None);
        assert_eq!(echo_reply(&[0x45]), None);
    }
}
