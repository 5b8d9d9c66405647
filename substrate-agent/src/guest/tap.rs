//! TAP devices of a guest inside its sandbox, and the tc redirects that join each TAP to the
//! link interface the agent realized (the kernel layer of the runtime).
//!
//! Per NIC, in the sandbox namespace:
//! ```text
//!   tc qdisc  replace dev IF  ingress
//!   tc filter replace dev IF  parent ffff: pref 49 protocol all u32 match u32 0 0 \
//!        action mirred egress redirect dev TAP
//!   (and the same from TAP to IF)
//! ```
//! The agent's egress shaping on IF (root qdisc) is untouched: only the ingress side is used.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use futures::TryStreamExt;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::tc::{
    TcActionAttribute, TcActionMirrorOption, TcActionOption, TcAttribute, TcFilterU32Option,
    TcHandle, TcMessage, TcOption,
};
use rtnetlink::{Handle, LinkUnspec};

use super::GuestNic;

/// `ETH_P_ALL` in network byte order, as tc's `protocol all`.
const PROTO_ALL: u16 = 0x0003u16.to_be();

/// One NIC's interface and TAP in the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapPair {
    /// The link interface the agent realized (tenant ifname).
    pub ifname: String,
    /// Our TAP.
    pub tap: String,
    /// MTU for the TAP (the link's).
    pub mtu: u32,
}

/// Errors of the TAP layer; the runtime adds the guest's name.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The sandbox namespace cannot be entered.
    #[error("cannot enter netns {path}: {source}")]
    Netns {
        /// Its path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A link interface is missing.
    #[error("interface {0} is missing")]
    MissingInterface(String),
    /// An operation failed.
    #[error("{what}: {source}")]
    Op {
        /// What was attempted, naming the device.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn op(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> TapError {
    let what = what.into();
    move |e| TapError::Op {
        what,
        source: nl_io(&e),
    }
}

fn nl_io(e: &rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

fn nl_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// Runs `f` on a thread that joined the network namespace at `netns`, with a netlink handle bound
/// there (a netlink socket belongs to the namespace of the thread that opened it).
fn in_netns<T, F, Fut>(netns: &Path, f: F) -> Result<T, TapError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, TapError>>,
{
    let ns_err = |source| TapError::Netns {
        path: netns.display().to_string(),
        source,
    };
    let ns = File::open(netns).map_err(ns_err)?;
    let path = netns.display().to_string();
    std::thread::spawn(move || {
        let ns_fail = |source| TapError::Netns {
            path: path.clone(),
            source,
        };
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| ns_fail(e.into()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ns_fail)?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(ns_fail)?;
            let task = tokio::spawn(conn);
            let r = f(handle).await;
            task.abort();
            r
        })
    })
    .join()
    .unwrap_or_else(|_| {
        Err(TapError::Op {
            what: "netns worker thread panicked".into(),
            source: std::io::Error::other("panic"),
        })
    })
}

/// Index and kind of the link `name`, if it exists.
async fn link(h: &Handle, name: &str) -> Result<Option<(u32, Option<InfoKind>)>, TapError> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(Some((m.header.index, link_kind(&m)))),
        Ok(None) => Ok(None),
        Err(e) if nl_errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(op(format!("look up {name}"))(e)),
    }
}

fn link_kind(m: &LinkMessage) -> Option<InfoKind> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// Creates a persistent TAP named `name` in the current thread's namespace.
fn create_tap(name: &str) -> Result<(), TapError> {
    let fail = |source| TapError::Op {
        what: format!("create TAP {name}"),
        source,
    };
    let dev = tun_rs::DeviceBuilder::new()
        .name(name)
        .layer(tun_rs::Layer::L2)
        .enable(false)
        .build_sync()
        .map_err(fail)?;
    dev.persist().map_err(fail)?;
    Ok(())
}

/// Ingress filters of `ifindex` at our priority, with the ifindex each redirects to.
async fn our_redirects(h: &Handle, ifindex: u32) -> Result<Vec<Option<u32>>, TapError> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    };
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut h = h.clone();
    let mut resp = h
        .request(req)
        .map_err(op(format!("list filters of ifindex {ifindex}")))?;
    let mut out = Vec::new();
    use futures::StreamExt;
    while let Some(m) = resp.next().await {
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(f)) => {
                if (f.header.info >> 16) as u16 != REDIRECT_PREF {
                    continue;
                }
                // A dump shows the filter's root node too; only nodes with options count.
                if let Some(t) = redirect_target(&f) {
                    out.push(Some(t));
                } else if f
                    .attributes
                    .iter()
                    .any(|a| matches!(a, TcAttribute::Options(o) if !o.is_empty()))
                {
                    out.push(None);
                }
            }
            NetlinkPayload::Error(e) if e.code.is_some() => {
                // No ingress qdisc yet: nothing of ours.
                if e.raw_code().abs() == libc::EINVAL || e.raw_code().abs() == libc::ENOENT {
                    return Ok(vec![]);
                }
                return Err(TapError::Op {
                    what: format!("list filters of ifindex {ifindex}"),
                    source: e.to_io(),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The ifindex a u32 + mirred filter redirects to.
pub fn redirect_target(f: &TcMessage) -> Option<u32> {
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

/// Deletes every ingress filter of `ifindex` at our priority.
async fn delete_redirects(h: &Handle, ifindex: u32) -> Result<(), TapError> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: TcHandle::MIN_INGRESS,
    };
    msg.header.info = (u32::from(REDIRECT_PREF) << 16) | u32::from(PROTO_ALL);
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelTrafficFilter(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut h = h.clone();
    let mut resp = h
        .request(req)
        .map_err(op(format!("delete filters of ifindex {ifindex}")))?;
    use futures::StreamExt;
    while let Some(m) = resp.next().await {
        if let NetlinkPayload::Error(e) = m.payload
            && e.code.is_some()
        {
            let c = e.raw_code().abs();
            if c != libc::ENOENT && c != libc::EINVAL {
                return Err(TapError::Op {
                    what: format!("delete filters of ifindex {ifindex}"),
                    source: e.to_io(),
                });
            }
        }
    }
    Ok(())
}

/// Makes sure `ifindex` has an ingress qdisc (an existing ingress or clsact qdisc is kept).
async fn ensure_ingress(h: &Handle, ifindex: u32, name: &str) -> Result<(), TapError> {
    let h = h.clone();
    match h.qdisc().add(ifindex as i32).ingress().execute().await {
        Ok(()) => Ok(()),
        Err(e) if nl_errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(op(format!("add ingress qdisc to {name}"))(e)),
    }
}

/// `from`'s ingress redirects everything to `to` (replacing whatever we had there).
async fn ensure_redirect(
    h: &Handle,
    from: (u32, &str),
    to: (u32, &str),
    force: bool,
) -> Result<(), TapError> {
    ensure_ingress(h, from.0, from.1).await?;
    let existing = our_redirects(h, from.0).await?;
    if !force && existing.len() == 1 && existing[0] == Some(to.0) {
        return Ok(());
    }
    if !existing.is_empty() {
        delete_redirects(h, from.0).await?;
    }
    let h = h.clone();
    h.traffic_filter(from.0 as i32)
        .add()
        .ingress()
        .priority(REDIRECT_PREF)
        .protocol(PROTO_ALL)
        .redirect(to.0)
        .map_err(op(format!("build redirect {} -> {}", from.1, to.1)))?
        .execute()
        .await
        .map_err(op(format!("redirect {} -> {}", from.1, to.1)))
}

/// In the sandbox at `netns`: for each pair, the TAP exists (created persistent when absent),
/// has the link's MTU and is up, and both directions are redirected. Idempotent. Returns the
/// TAPs it created (so a failed start can remove exactly those).
pub fn ensure_taps(netns: &Path, pairs: &[TapPair]) -> Result<Vec<String>, TapError> {
    let pairs = pairs.to_vec();
    in_netns(netns, move |h| async move {
        let mut created = Vec::new();
        let r = async {
            for p in &pairs {
                let (if_idx, _) = link(&h, &p.ifname)
                    .await?
                    .ok_or_else(|| TapError::MissingInterface(p.ifname.clone()))?;
                let fresh = match link(&h, &p.tap).await? {
                    Some((_, Some(InfoKind::Tun))) => false,
                    Some((_, kind)) => {
                        return Err(TapError::Op {
                            what: format!("{} exists but is not a TAP ({kind:?})", p.tap),
                            source: std::io::Error::from_raw_os_error(libc::EEXIST),
                        });
                    }
                    None => {
                        create_tap(&p.tap)?;
                        created.push(p.tap.clone());
                        true
                    }
                };
                let (tap_idx, _) = link(&h, &p.tap)
                    .await?
                    .ok_or_else(|| TapError::MissingInterface(p.tap.clone()))?;
                h.link()
                    .set(LinkUnspec::new_with_index(tap_idx).mtu(p.mtu).up().build())
                    .execute()
                    .await
                    .map_err(op(format!("set {} mtu {} up", p.tap, p.mtu)))?;
                ensure_redirect(&h, (if_idx, &p.ifname), (tap_idx, &p.tap), fresh).await?;
                ensure_redirect(&h, (tap_idx, &p.tap), (if_idx, &p.ifname), fresh).await?;
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => Ok(created),
            Err(e) => {
                for t in &created {
                    if let Ok(Some((idx, _))) = link(&h, t).await {
                        let _ = h.link().del(idx).execute().await;
                    }
                }
                Err(e)
            }
        }
    })
}

/// In the sandbox at `netns`: removes our redirects from the link interfaces and deletes the
/// TAPs (only TUN/TAP devices of those names). Missing objects are fine.
pub fn remove_taps(netns: &Path, pairs: &[TapPair]) -> Result<(), TapError> {
    let pairs = pairs.to_vec();
    in_netns(netns, move |h| async move {
        for p in &pairs {
            if let Some((if_idx, _)) = link(&h, &p.ifname).await? {
                delete_redirects(&h, if_idx).await?;
            }
            if let Some((tap_idx, Some(InfoKind::Tun))) = link(&h, &p.tap).await? {
                match h.link().del(tap_idx).execute().await {
                    Ok(()) => {}
                    Err(e) if nl_errno(&e) == Some(libc::ENODEV) => {}
                    Err(e) => return Err(op(format!("delete TAP {}", p.tap))(e)),
                }
            }
        }
        Ok(())
    })
}

/// Whether each TAP exists in the sandbox (for observation). A missing sandbox gives `Err`.
pub fn taps_present(netns: &Path, taps: &[String]) -> Result<Vec<bool>, TapError> {
    let taps = taps.to_vec();
    in_netns(netns, move |h| async move {
        let mut out = Vec::new();
        for t in &taps {
            out.push(matches!(link(&h, t).await?, Some((_, Some(InfoKind::Tun)))));
        }
        Ok(out)
    })
}

/// Longest Linux interface name.
pub const IFNAMSIZ_MAX: usize = 15;

/// Filter priority of our redirects on the ingress qdisc (our own, so re-applying replaces it).
pub const REDIRECT_PREF: u16 = 49;

/// TAP name for each NIC, paired with the NIC's ifname: `t-<ifname>` cut to 15 characters; when
/// two would collide (or collide with a tenant interface), `t<index>-<ifname>` cut likewise, then
/// `tap-vnet<index>`. Pure and stable for a given NIC list.
pub fn tap_names(nics: &[GuestNic]) -> Vec<(String, String)> {
    let tenant: std::collections::HashSet<&str> = nics.iter().map(|n| n.ifname.as_str()).collect();
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(nics.len());
    for (i, nic) in nics.iter().enumerate() {
        let candidates = [
            cut(&format!("t-{}", nic.ifname)),
            cut(&format!("t{i}-{}", nic.ifname)),
            format!("tap-vnet{i}"),
        ];
        let name = candidates
            .into_iter()
            .find(|c| !taken.contains(c) && !tenant.contains(c.as_str()))
            .unwrap_or_else(|| format!("tv{i}"));
        taken.insert(name.clone());
        out.push((nic.ifname.clone(), name));
    }
    out
}

fn cut(s: &str) -> String {
    s.chars().take(IFNAMSIZ_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::MacAddr;

    fn nic(n: &str) -> GuestNic {
        GuestNic {
            ifname: n.into(),
            mac: MacAddr::derived(n),
            addresses: vec![],
            mtu: 1500,
        }
    }

    #[test]
    fn names_are_prefixed_cut_and_unique() {
        let n = tap_names(&[nic("eth0"), nic("abcdefghijklmn1"), nic("abcdefghijklmn2")]);
        assert_eq!(n[0], ("eth0".into(), "t-eth0".into()));
        assert_eq!(n[1].1, "t-abcdefghijklm");
        assert_eq!(n[2].1, "t2-abcdefghijkl");
        assert!(n.iter().all(|(_, t)| t.len() <= 15));
    }

    #[test]
    fn tenant_interface_named_like_a_tap_is_avoided() {
        let n = tap_names(&[nic("t-x"), nic("x")]);
        assert_eq!(n[0].1, "t-t-x");
        assert_eq!(n[1].1, "t1-x");
    }
}
