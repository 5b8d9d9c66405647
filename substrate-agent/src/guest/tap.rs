//! The TAP devices of a guest inside its sandbox: one per NIC, named by [`tap_names`], created
//! and joined both ways to the NIC's link interface through the host's [`Kernel`] (`create_tap`,
//! `join`, `unjoin`, `delete_link`), as the planner's transit joins are. The agent's egress
//! shaping on the link interface (root qdisc) is untouched: a join uses only the ingress side.
//! The guest's TAPs carry no ownership tag: they are the runtime's, and the planner leaves
//! untagged links alone.

use super::GuestNic;
use crate::host::kernel::IfSpec;
use crate::host::kernel::{Kernel, KernelError};
use crate::reconcile::observed::LinkObs;

/// Which TAP serves which link interface of the sandbox (names only; the device is the host's).
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
    /// A link interface is missing.
    #[error("interface {0} is missing")]
    MissingInterface(String),
    /// A device of the TAP's name exists and is something else.
    #[error("{name} exists but is not a TAP (kind {kind:?})")]
    NotATap {
        /// The TAP's name.
        name: String,
        /// The kind the kernel reports.
        kind: String,
    },
    /// A kernel operation failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// The kind the kernel reports for a TAP.
const TUN_KIND: &str = "tun";

/// In the sandbox `ns`: for each pair, the TAP exists with the link's MTU and up (created
/// persistent when absent; one of another MTU, or down, is made anew), and both directions are
/// redirected. Idempotent. Returns the TAPs it created; on error it has removed those again.
pub fn ensure_taps(k: &dyn Kernel, ns: &str, pairs: &[TapPair]) -> Result<Vec<String>, TapError> {
    let links = k.ns_snapshot(ns)?.links;
    let mut created = Vec::new();
    let r = ensure_each(k, ns, pairs, &links, &mut created);
    if r.is_err() {
        for t in &created {
            let _ = k.delete_link(Some(ns), t);
        }
    }
    r.map(|()| created)
}

fn ensure_each(
    k: &dyn Kernel,
    ns: &str,
    pairs: &[TapPair],
    links: &[LinkObs],
    created: &mut Vec<String>,
) -> Result<(), TapError> {
    let find = |name: &str| links.iter().find(|l| l.name == name);
    for p in pairs {
        if find(&p.ifname).is_none() {
            return Err(TapError::MissingInterface(p.ifname.clone()));
        }
        let fresh = match find(&p.tap) {
            Some(l) if l.kind != TUN_KIND => {
                return Err(TapError::NotATap {
                    name: p.tap.clone(),
                    kind: l.kind.clone(),
                });
            }
            Some(l) if l.mtu == p.mtu && l.up => false,
            Some(_) => {
                k.delete_link(Some(ns), &p.tap)?;
                true
            }
            None => true,
        };
        if fresh {
            let dev = IfSpec {
                ns: ns.to_string(),
                ifname: p.tap.clone(),
                mtu: p.mtu,
                mac: None,
                addresses: vec![],
            };
            k.create_tap(&dev, None)?;
            created.push(p.tap.clone());
            // A redirect left on the interface pointed at an earlier TAP of this name.
            k.unjoin(ns, &p.ifname)?;
        }
        k.join(ns, &p.ifname, &p.tap)?;
    }
    Ok(())
}

/// In the sandbox `ns`: removes our redirects from the link interfaces and deletes the TAPs (only
/// TUN/TAP devices of those names). Missing objects are fine.
pub fn remove_taps(k: &dyn Kernel, ns: &str, pairs: &[TapPair]) -> Result<(), TapError> {
    let links = k.ns_snapshot(ns)?.links;
    let gone = |r: Result<(), KernelError>| match r {
        Err(e) if !e.is_not_found() => Err(TapError::Kernel(e)),
        _ => Ok(()),
    };
    for p in pairs {
        if links.iter().any(|l| l.name == p.ifname) {
            gone(k.unjoin(ns, &p.ifname))?;
        }
        if links.iter().any(|l| l.name == p.tap && l.kind == TUN_KIND) {
            gone(k.delete_link(Some(ns), &p.tap))?;
        }
    }
    Ok(())
}

/// Longest Linux interface name.
pub const IFNAMSIZ_MAX: usize = 15;

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
    use crate::mac::Mac;

    fn nic(n: &str) -> GuestNic {
        GuestNic {
            ifname: n.into(),
            mac: Mac::derived(n),
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
