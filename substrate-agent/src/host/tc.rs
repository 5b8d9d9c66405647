//! Traffic-control messages: egress shaping (TBF) and the transit join (ingress qdisc, u32
//! match-all filter, mirred egress redirect). Built as `netlink-packet-route` values; the kernel
//! here has neither `matchall` nor `flower`, so the join uses `u32 match u8 0 0`.
//!
//! `netlink-packet-route` has no typed TBF options; the two attributes are encoded here from
//! `<linux/pkt_sched.h>` (`struct tc_tbf_qopt`, `TCA_TBF_PARMS`, `TCA_TBF_BURST`, `TCA_TBF_RATE64`).

use rtnetlink::packet_core::DefaultNla;
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption,
    TcFilterU32, TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption,
    TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `htons(ETH_P_ALL)`.
const ETH_P_ALL_BE: u16 = 0x0003u16.to_be();

/// Priority of our redirect filters on an ingress qdisc: ours alone, so that a join can find,
/// keep or replace exactly its own filter and leave anyone else's alone.
pub const REDIRECT_PREF: u16 = 49;

/// Priority of the BPF 802.1Q datapath's classifier on an ingress qdisc (ours alone, as above).
pub const BPF_PREF: u16 = 48;

/// Token bucket parameters for a rate in Mbit/s: bytes per second, burst and queue limit in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfParams {
    pub rate_bytes: u64,
    pub burst: u32,
    pub limit: u32,
}

impl TbfParams {
    /// Burst: 10 ms worth of tokens, at least 32 KiB (enough for GSO/TSO bursts from veth);
    /// queue limit: about 100 ms at the rate plus the burst, at least 64 KiB.
    pub fn for_mbps(mbps: u64) -> Self {
        let rate_bytes = mbps.saturating_mul(1_000_000) / 8;
        let burst = (rate_bytes / 100).clamp(32 * 1024, u32::MAX as u64 / 4) as u32;
        let limit = (rate_bytes / 10 + burst as u64).clamp(64 * 1024, u32::MAX as u64 / 2) as u32;
        Self {
            rate_bytes,
            burst,
            limit,
        }
    }

    /// `struct tc_tbf_qopt`: rate and peakrate (`struct tc_ratespec`, 12 bytes each), limit,
    /// buffer, mtu (u32 each), native endian.
    fn qopt(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(36);
        // rate: cell_log u8, linklayer u8, overhead u16, cell_align i16, mpu u16, rate u32
        v.push(0);
        v.push(TC_LINKLAYER_ETHERNET);
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&0i16.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&(self.rate_bytes.min(u32::MAX as u64) as u32).to_ne_bytes());
        // peakrate: unused
        v.extend_from_slice(&[0u8; 12]);
        v.extend_from_slice(&self.limit.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes()); // buffer: given by TCA_TBF_BURST
        v.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only with peakrate
        v
    }
}

/// `tc qdisc replace dev IFINDEX root handle 1: tbf rate R burst B limit L`.
pub fn tbf_qdisc(ifindex: u32, mbps: u64) -> TcMessage {
    let p = TbfParams::for_mbps(mbps);
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = TcHandle::ROOT;
    m.header.handle = TcHandle { major: 1, minor: 0 };
    m.attributes.push(TcAttribute::Kind("tbf".into()));
    let mut opts = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, p.qopt())),
        TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            p.burst.to_ne_bytes().to_vec(),
        )),
    ];
    if p.rate_bytes > u32::MAX as u64 {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            p.rate_bytes.to_ne_bytes().to_vec(),
        )));
    }
    m.attributes.push(TcAttribute::Options(opts));
    m
}

/// `tc qdisc add dev IFINDEX ingress`.
pub fn ingress_qdisc(ifindex: u32) -> TcMessage {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = TcHandle::from(0xffff_0000);
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    m
}

/// The filters at [`REDIRECT_PREF`] on the ingress qdisc of `ifindex`: a dump request
/// (`tc filter show dev IFINDEX ingress pref 49`) and, as it is, a delete request.
pub fn our_filters(ifindex: u32) -> TcMessage {
    let mut m = TcMessage::with_index(ifindex as i32);
    m.header.parent = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    m.header.info = u32::from(TcHandle {
        major: REDIRECT_PREF,
        minor: ETH_P_ALL_BE,
    });
    m
}

/// The filters at [`BPF_PREF`] on the ingress qdisc of `ifindex` (dump or delete request).
pub fn bpf_filters(ifindex: u32) -> TcMessage {
    let mut m = our_filters(ifindex);
    m.header.info = u32::from(TcHandle {
        major: BPF_PREF,
        minor: ETH_P_ALL_BE,
    });
    m
}

/// `tc filter replace dev IFINDEX ingress pref 48 handle 1 protocol all bpf direct-action fd FD
/// name NAME`: replacing in place swaps the program without a moment in which no filter runs.
pub fn bpf_filter(ifindex: u32, prog_fd: u32, name: &str) -> TcMessage {
    let mut m = bpf_filters(ifindex);
    m.header.handle = TcHandle { major: 0, minor: 1 };
    m.attributes
        .push(TcAttribute::Kind(TcFilterBpf::KIND.to_string()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_string())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    m
}

/// A BPF classifier of ours as dumped: its program's name and tag (`None`: not one of ours, or
/// the filter's root node that a dump shows without options).
pub fn our_bpf(f: &TcMessage) -> Option<(String, [u8; 8])> {
    if (f.header.info >> 16) as u16 != BPF_PREF {
        return None;
    }
    let opts = f.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(o) => Some(o),
        _ => None,
    })?;
    let name = opts.iter().find_map(|o| match o {
        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => Some(n.clone()),
        _ => None,
    })?;
    let tag = opts.iter().find_map(|o| match o {
        TcOption::Bpf(TcFilterBpfOption::ProgTag(t)) => Some(*t),
        _ => None,
    })?;
    Some((name, tag))
}

/// `tc filter add dev FROM parent ffff: pref 49 protocol all u32 match u8 0 0 action mirred
/// egress redirect dev TO`.
pub fn redirect_filter(from: u32, to: u32) -> TcMessage {
    let mut m = our_filters(from);
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()];
    let mut mirror = TcMirror::default();
    mirror.generic = TcActionGeneric::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    m.attributes
        .push(TcAttribute::Kind(TcFilterU32::KIND.to_string()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    m
}

/// What a dumped filter message is, to a join: `None` when it is not one of our redirects
/// (another priority, or the filter's root node that a dump shows without options),
/// `Some(Some(ifindex))` for our redirect to `ifindex`, `Some(None)` for anything else of ours.
pub fn our_redirect(f: &TcMessage) -> Option<Option<u32>> {
    if (f.header.info >> 16) as u16 != REDIRECT_PREF {
        return None;
    }
    if let Some(t) = redirect_target(f) {
        return Some(Some(t));
    }
    f.attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Options(o) if !o.is_empty()))
        .then_some(None)
}

/// The ifindex a u32 + mirred filter redirects to.
fn redirect_target(f: &TcMessage) -> Option<u32> {
    f.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcOption::U32(TcFilterU32Option::Action(actions)) => actions.iter().find_map(|act| {
                act.attributes.iter().find_map(|aa| match aa {
                    TcActionAttribute::Options(aos) => aos.iter().find_map(|ao| match ao {
                        TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) => Some(p.ifindex),
                        _ => None,
                    }),
                    _ => None,
                })
            }),
            _ => None,
        }),
        _ => None,
    })
}

/// The rate (bytes per second) of a TBF qdisc as the kernel dumps it: `TCA_OPTIONS` nesting
/// `TCA_TBF_PARMS` (whose `rate.rate` is the rate, capped at `u32::MAX`) and, above that,
/// `TCA_TBF_RATE64`. `None` when the message carries neither.
pub fn tbf_rate(q: &TcMessage) -> Option<u64> {
    use rtnetlink::packet_core::{Nla, NlasIterator};
    let opts = q.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(o) => Some(o),
        _ => None,
    })?;
    let (mut rate32, mut rate64) = (None, None);
    for o in opts {
        let TcOption::Other(nla) = o else { continue };
        let mut value = vec![0u8; nla.value_len()];
        nla.emit_value(&mut value);
        for inner in NlasIterator::new(&value[..]).flatten() {
            let v = inner.value();
            match inner.kind() {
                TCA_TBF_PARMS if v.len() >= 12 => {
                    rate32 = v[8..12].try_into().ok().map(u32::from_ne_bytes);
                }
                TCA_TBF_RATE64 if v.len() >= 8 => {
                    rate64 = v[..8].try_into().ok().map(u64::from_ne_bytes);
                }
                _ => {}
            }
        }
    }
    rate64.or(rate32.map(u64::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A qdisc dump as the kernel sends it: one `TCA_OPTIONS` whose payload nests the TBF
    /// attributes (parsed by `netlink-packet-route` as one opaque attribute).
    fn dumped(mbps: u64) -> TcMessage {
        use rtnetlink::packet_core::Emitable;
        let TcAttribute::Options(inner) = tbf_qdisc(3, mbps).attributes.remove(1) else {
            panic!("options")
        };
        let nlas: Vec<DefaultNla> = inner
            .into_iter()
            .map(|o| match o {
                TcOption::Other(n) => n,
                _ => panic!("tbf options are opaque"),
            })
            .collect();
        let mut payload = vec![0u8; nlas.as_slice().buffer_len()];
        nlas.as_slice().emit(&mut payload);
        let mut m = TcMessage::with_index(3);
        m.attributes.push(TcAttribute::Kind("tbf".into()));
        m.attributes.push(TcAttribute::Options(vec![TcOption::Other(
            DefaultNla::new(2, payload),
        )]));
        m
    }

    #[test]
    fn tbf_rate_is_read_back_from_a_dump() {
        assert_eq!(tbf_rate(&dumped(50)), Some(6_250_000));
        assert_eq!(tbf_rate(&dumped(100_000)), Some(12_500_000_000));
        assert_eq!(tbf_rate(&ingress_qdisc(3)), None);
    }

    #[test]
    fn tbf_parameters() {
        let p = TbfParams::for_mbps(50);
        assert_eq!(p.rate_bytes, 6_250_000);
        assert_eq!(p.burst, 62_500);
        assert_eq!(p.limit, 625_000 + 62_500);
        assert_eq!(p.qopt().len(), 36);
        let small = TbfParams::for_mbps(1);
        assert_eq!(small.burst, 32 * 1024);
        assert_eq!(small.limit, 64 * 1024);
        assert!(TbfParams::for_mbps(100_000).rate_bytes > u32::MAX as u64);
        let m = tbf_qdisc(7, 100_000);
        let TcAttribute::Options(o) = &m.attributes[1] else {
            panic!()
        };
        assert_eq!(o.len(), 3, "RATE64 attribute above 34 Gbit/s");
    }

    #[test]
    fn a_redirect_is_recognized_by_priority_and_target() {
        let f = redirect_filter(3, 7);
        assert_eq!(our_redirect(&f), Some(Some(7)));
        assert_eq!(our_redirect(&our_filters(3)), None, "root node: no options");
        let mut other = redirect_filter(3, 7);
        other.header.info = u32::from(TcHandle {
            major: 1,
            minor: ETH_P_ALL_BE,
        });
        assert_eq!(our_redirect(&other), None, "another priority");
    }
}
