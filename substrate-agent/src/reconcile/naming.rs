//! Names and ownership tags of the kernel objects the agent creates.
//!
//! - one named network namespace per virtual node: `<prefix>-<host>-<node>`;
//! - one transit namespace per VN on a host that forwards links of that VN: `<prefix>-<host>-<vn>-t`;
//! - transit devices inside a transit namespace: `x<link><a|b>` (at most 12 characters);
//! - every link the agent creates carries an `ifalias` tag set in the same `RTM_NEWLINK` that
//!   creates it: `vnet:<host>:<vn>:<link>:<fingerprint>`;
//! - every namespace the agent creates carries the tag on its loopback device, set inside the new
//!   namespace before it is bind-mounted under `/run/netns`:
//!   `vnet:<host>:<vn>:<node>|transit:<fingerprint>`. The tag says what a namespace was built
//!   from, not whose it is: ownership is the ledger's ([`crate::state`]), because a tenant can
//!   rewrite its node's loopback alias.
//!
//! The fingerprint is a stable hash of the object's desired spec, so a changed spec shows up as a
//! tag mismatch when the kernel is observed: no separate bookkeeping can drift from the kernel.

use std::fmt::Write as _;

use crate::reconcile::spec::{LinkId, Node, NodeId, Segment, Slice, VnId};

/// The identity an agent stamps on what it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub prefix: String,
    pub host_id: String,
}

/// What a namespace tag says about the namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NsRole {
    Node(NodeId),
    Transit,
}

/// A parsed namespace tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsTag {
    pub vn: String,
    pub role: NsRole,
    pub fingerprint: String,
}

/// A parsed link tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTag {
    pub vn: String,
    pub link: String,
    pub fingerprint: String,
}

impl Naming {
    pub fn new(prefix: impl Into<String>, host_id: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            host_id: host_id.into(),
        }
    }

    /// `<prefix>-<host>-`: every namespace name of this agent starts with it.
    pub fn ns_prefix(&self) -> String {
        format!("{}-{}-", self.prefix, self.host_id)
    }

    /// The namespace of a virtual node.
    pub fn node_ns(&self, node: &NodeId) -> String {
        format!("{}-{}-{}", self.prefix, self.host_id, node)
    }

    /// The transit namespace of a VN on this host.
    pub fn transit_ns(&self, vn: &VnId) -> String {
        format!("{}-{}-{}-t", self.prefix, self.host_id, vn)
    }

    /// A transit device (one per hop of a transit segment) inside the VN's transit namespace.
    pub fn transit_dev(link: &LinkId, side: char) -> String {
        format!("x{link}{side}")
    }

    /// The outer end of a BPF VLAN port: the host-side peer of the veth whose inner end is
    /// `ifname` in namespace `ns`. It lives in the link's context namespace (the agent's own, or a
    /// parent node's), where the BPF datapath pushes and pops the tag; 12 characters.
    pub fn port_dev(ns: &str, ifname: &str) -> String {
        format!(
            "vb{:010x}",
            fnv1a64(&format!("{ns}/{ifname}")) & 0xff_ffff_ffff
        )
    }

    fn tag_head(&self) -> String {
        format!("vnet:{}:", self.host_id)
    }

    /// The tag on the loopback of a node namespace.
    pub fn node_ns_tag(&self, vn: &VnId, node: &Node) -> String {
        format!(
            "{}{}:{}:{}",
            self.tag_head(),
            vn,
            node.id,
            fingerprint_node(node)
        )
    }

    /// The tag on the loopback of a transit namespace.
    pub fn transit_ns_tag(&self, vn: &VnId) -> String {
        format!("{}{}:transit:0", self.tag_head(), vn)
    }

    /// The tag on every interface of a segment.
    pub fn link_tag(&self, vn: &VnId, seg: &Segment) -> String {
        format!(
            "{}{}:{}:{}",
            self.tag_head(),
            vn,
            seg.link_id,
            fingerprint_segment(seg)
        )
    }

    /// Parses a namespace tag of this agent; `None` for anything else (another host's, a
    /// stranger's, none).
    pub fn parse_ns_tag(&self, alias: &str) -> Option<NsTag> {
        let rest = alias.strip_prefix(&self.tag_head())?;
        let mut it = rest.splitn(3, ':');
        let vn = it.next()?.to_string();
        let role = it.next()?;
        let fingerprint = it.next()?.to_string();
        let role = if role == "transit" {
            NsRole::Transit
        } else {
            NsRole::Node(NodeId::parse(role).ok()?)
        };
        Some(NsTag {
            vn,
            role,
            fingerprint,
        })
    }

    /// Parses a link tag of this agent.
    pub fn parse_link_tag(&self, alias: &str) -> Option<LinkTag> {
        let rest = alias.strip_prefix(&self.tag_head())?;
        let mut it = rest.splitn(3, ':');
        Some(LinkTag {
            vn: it.next()?.to_string(),
            link: it.next()?.to_string(),
            fingerprint: it.next()?.to_string(),
        })
    }
}

/// FNV-1a, 64 bit: the agent's one name hash, stable across builds and platforms (unlike
/// `DefaultHasher`). Fingerprints and derived MAC addresses both come from it.
pub fn fnv1a64(data: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// [`fnv1a64`] as 16 hex digits.
fn fnv1a(data: &str) -> String {
    format!("{:016x}", fnv1a64(data))
}

/// Fingerprint of what a node namespace is built from (its kind; routes are reconciled apart).
pub fn fingerprint_node(node: &Node) -> String {
    fnv1a(&format!("{:?}", node.kind))
}

/// Fingerprint of everything that shapes a segment's interfaces, except the shaping rate: a
/// bandwidth change is applied to the qdisc in place (the interfaces stay), so only whether the
/// segment is shaped at all counts.
pub fn fingerprint_segment(seg: &Segment) -> String {
    let mut s = String::new();
    let shaped = Segment {
        bandwidth_mbps: u64::from(seg.bandwidth_mbps > 0),
        ..seg.clone()
    };
    let _ = write!(s, "{:?}", shaped);
    fnv1a(&s)
}

/// All namespace names a slice needs on this host (node namespaces, and the transit namespace when
/// the slice has a transit segment that needs devices).
pub fn slice_namespaces(naming: &Naming, slice: &Slice) -> Vec<String> {
    let mut v: Vec<String> = slice.nodes.iter().map(|n| naming.node_ns(&n.id)).collect();
    if slice_needs_transit_ns(slice) {
        v.push(naming.transit_ns(&slice.vn_id));
    }
    v
}

/// A transit namespace is needed when some transit segment has a VXLAN hop (VLAN-VLAN transits
/// are rewritten by the userspace datapath and need no device).
pub fn slice_needs_transit_ns(slice: &Slice) -> bool {
    use crate::reconcile::spec::{Encap, SegmentShape};
    slice.links.iter().any(|l| match l.shape() {
        SegmentShape::Transit(a, b) => {
            !matches!((a.encap, b.encap), (Encap::Vlan { .. }, Encap::Vlan { .. }))
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::spec::NodeKind;

    #[test]
    fn names_and_tags_round_trip() {
        let n = Naming::new("vn", "h1");
        let vn = VnId::parse("a1").unwrap();
        let node = Node {
            id: NodeId::parse("n7").unwrap(),
            name: "web".into(),
            kind: NodeKind::Netns,
            routes: vec![],
        };
        assert_eq!(n.node_ns(&node.id), "vn-h1-n7");
        assert_eq!(n.transit_ns(&vn), "vn-h1-a1-t");
        let link = LinkId::parse("abcdefghij").unwrap();
        assert!(Naming::transit_dev(&link, 'a').len() <= 15);
        let tag = n.node_ns_tag(&vn, &node);
        let parsed = n.parse_ns_tag(&tag).unwrap();
        assert_eq!(parsed.vn, "a1");
        assert_eq!(parsed.role, NsRole::Node(node.id.clone()));
        assert_eq!(parsed.fingerprint, fingerprint_node(&node));
        assert_eq!(
            n.parse_ns_tag(&n.transit_ns_tag(&vn)).unwrap().role,
            NsRole::Transit
        );
        // Another host's tag is not ours.
        assert!(Naming::new("vn", "h2").parse_ns_tag(&tag).is_none());
        assert!(n.parse_ns_tag("").is_none());
        assert!(n.parse_ns_tag("vnet:h1").is_none());
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        assert_eq!(fnv1a(""), "cbf29ce484222325");
        assert_ne!(fnv1a("a"), fnv1a("b"));
    }
}
