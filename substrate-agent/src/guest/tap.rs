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

use super::GuestNic;

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
