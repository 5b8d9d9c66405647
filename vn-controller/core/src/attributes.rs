//! Architectural attributes and their inheritance (recursion, issue 7).
//!
//! A child VN inherits every attribute of its parent and may only narrow it: an unset attribute
//! takes the parent's value, a set one must be at least as strict. What "strict" means per
//! attribute:
//!
//! | attribute | narrower is |
//! | --- | --- |
//! | `encapsulation` | the same (a parent fixing VXLAN admits only VXLAN) |
//! | `mtu`, `max_link_bandwidth_mbps` | smaller |
//! | `allowed_node_kinds` | a subset |
//! | `isolation` | stronger (`standard` < `dedicated_hosts`) |
//! | `max_nodes`, `max_total_cpu` (quota of the VN and its descendants) | smaller |
//!
//! The owner attribute (who may create children) is checked in [`crate::nest`]: a child's
//! `share_with` must stay within its parent's owner and `share_with`.
//!
//! [`inherit`] computes the effective attributes or names the first attribute that widens;
//! [`conform`] then checks the request itself (node kinds, link bandwidths, encapsulations,
//! its own size against the quotas) against them. Both are pure.

use std::collections::BTreeSet;
use std::fmt;

use crate::model::{Attributes, Encap, Isolation, Kind, VnReq};

/// A child's attribute that is wider than its parent's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("attributes.{attribute}: {child} widens the parent's {parent}")]
pub struct Widening {
    pub attribute: &'static str,
    pub child: String,
    pub parent: String,
}

pub fn encap_name(e: Encap) -> &'static str {
    match e {
        Encap::Vxlan => "vxlan",
        Encap::Vlan => "vlan",
    }
}

/// A set of node kinds as `[netns, vm]`.
pub struct Kinds<'a>(pub &'a BTreeSet<Kind>);

impl fmt::Display for Kinds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<&str> = self.0.iter().map(|k| k.as_str()).collect();
        write!(f, "[{}]", v.join(", "))
    }
}

fn widen(attribute: &'static str, child: impl ToString, parent: impl ToString) -> Widening {
    Widening {
        attribute,
        child: child.to_string(),
        parent: parent.to_string(),
    }
}

/// Smaller-is-narrower numbers: the child's value may not exceed the parent's.
fn at_most<T: Ord + Copy + ToString>(
    attribute: &'static str,
    parent: Option<T>,
    child: Option<T>,
) -> Result<Option<T>, Widening> {
    match (parent, child) {
        (Some(p), Some(c)) if c > p => Err(widen(attribute, c, p)),
        (p, c) => Ok(c.or(p)),
    }
}

/// The effective attributes of a VN on the substrate: what it asked for, isolation defaulting to
/// standard.
pub fn top_level(requested: &Attributes) -> Attributes {
    let isolation = requested.isolation_level();
    Attributes {
        isolation: Some(isolation),
        dedicated_hosts: isolation == Isolation::DedicatedHosts,
        ..requested.clone()
    }
}

/// The effective attributes of a child whose parent's effective attributes are `parent` and
/// which asked for `child`; the first attribute that widens its parent's is an error.
pub fn inherit(parent: &Attributes, child: &Attributes) -> Result<Attributes, Widening> {
    let encap = match (parent.encap, child.encap) {
        (Some(p), Some(c)) if p != c => {
            return Err(widen("encapsulation", encap_name(c), encap_name(p)));
        }
        (p, c) => c.or(p),
    };
    let mtu = at_most("mtu", parent.mtu, child.mtu)?;
    let max_link_bandwidth_mbps = at_most(
        "max_link_bandwidth_mbps",
        parent.max_link_bandwidth_mbps,
        child.max_link_bandwidth_mbps,
    )?;
    let allowed_kinds = match (&parent.allowed_kinds, &child.allowed_kinds) {
        (Some(p), Some(c)) if !c.is_subset(p) => {
            return Err(widen("allowed_node_kinds", Kinds(c), Kinds(p)));
        }
        (p, c) => c.clone().or_else(|| p.clone()),
    };
    let parent_isolation = parent.isolation_level();
    let isolation = match child.isolation {
        Some(c) if c < parent_isolation => {
            return Err(widen("isolation", c.as_str(), parent_isolation.as_str()));
        }
        Some(c) => c,
        None => parent_isolation,
    };
    let max_nodes = at_most("max_nodes", parent.max_nodes, child.max_nodes)?;
    let max_total_cpu = at_most("max_total_cpu", parent.max_total_cpu, child.max_total_cpu)?;
    Ok(Attributes {
        mtu,
        dedicated_hosts: isolation == Isolation::DedicatedHosts,
        isolation: Some(isolation),
        encap,
        max_link_bandwidth_mbps,
        allowed_kinds,
        max_nodes,
        max_total_cpu,
    })
}

/// Makes `req` obey the effective attributes `eff` (inherited from `from`, a VN label): links
/// whose encapsulation was defaulted take the inherited one; everything else must already
/// conform. On success `req.attributes` is `eff`.
pub fn conform(req: &mut VnReq, eff: &Attributes, from: &str) -> Result<(), String> {
    let inherited = |what: &str| format!("{what} (inherited from {from})");
    for (i, n) in req.nodes.iter().enumerate() {
        if let Some(allowed) = &eff.allowed_kinds
            && !allowed.contains(&n.kind)
        {
            return Err(format!(
                "spec.nodes[{i}] ({}): kind {} is not allowed by {}",
                n.name,
                n.kind.as_str(),
                inherited(&format!("attributes.allowed_node_kinds {}", Kinds(allowed)))
            ));
        }
    }
    if let Some(max) = eff.max_nodes
        && req.nodes.len() > max as usize
    {
        return Err(format!(
            "spec.nodes: {} nodes exceed {}",
            req.nodes.len(),
            inherited(&format!("attributes.max_nodes {max}"))
        ));
    }
    if let Some(max) = eff.max_total_cpu
        && req.total_cpu() > max
    {
        return Err(format!(
            "spec.nodes: total cpu {} exceeds {}",
            req.total_cpu(),
            inherited(&format!("attributes.max_total_cpu {max}"))
        ));
    }
    let names: Vec<String> = req
        .links
        .iter()
        .map(|l| format!("{}-{}", req.nodes[l.a].name, req.nodes[l.b].name))
        .collect();
    for (i, l) in req.links.iter_mut().enumerate() {
        let what = format!("spec.links[{i}] ({})", names[i]);
        if let Some(max) = eff.max_link_bandwidth_mbps
            && l.bandwidth_mbps > max
        {
            return Err(format!(
                "{what}: bandwidth {} Mbit/s exceeds {}",
                l.bandwidth_mbps,
                inherited(&format!("attributes.max_link_bandwidth_mbps {max}"))
            ));
        }
        if let Some(e) = eff.encap {
            if !l.encap_explicit {
                l.encap = e;
            } else if l.encap != e {
                return Err(format!(
                    "{what}: encapsulation {} contradicts {}",
                    encap_name(l.encap),
                    inherited(&format!("attributes.encapsulation {}", encap_name(e)))
                ));
            }
        }
    }
    req.attributes = eff.clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attributes {
        top_level(&Attributes {
            mtu: Some(1400),
            encap: Some(Encap::Vxlan),
            max_link_bandwidth_mbps: Some(100),
            allowed_kinds: Some([Kind::Netns].into()),
            isolation: Some(Isolation::DedicatedHosts),
            max_nodes: Some(10),
            max_total_cpu: Some(500),
            ..Attributes::default()
        })
    }

    #[test]
    fn unset_attributes_inherit_and_set_ones_narrow() {
        let p = attrs();
        assert_eq!(inherit(&p, &Attributes::default()).unwrap(), p);
        let narrower = Attributes {
            mtu: Some(1300),
            max_link_bandwidth_mbps: Some(50),
            max_nodes: Some(3),
            max_total_cpu: Some(100),
            allowed_kinds: Some([Kind::Netns].into()),
            isolation: Some(Isolation::DedicatedHosts),
            encap: Some(Encap::Vxlan),
            ..Attributes::default()
        };
        let e = inherit(&p, &narrower).unwrap();
        assert_eq!(e.mtu, Some(1300));
        assert_eq!(e.max_link_bandwidth_mbps, Some(50));
        assert_eq!(e.max_nodes, Some(3));
        assert!(e.dedicated_hosts);
        // A parent without limits: the child's own values.
        let free = top_level(&Attributes::default());
        assert_eq!(free.isolation, Some(Isolation::Standard));
        let e = inherit(&free, &narrower).unwrap();
        assert_eq!(e.max_total_cpu, Some(100));
    }

    #[test]
    fn each_widening_names_the_attribute_and_both_values() {
        let p = attrs();
        let cases: Vec<(Attributes, &str)> = vec![
            (
                Attributes {
                    mtu: Some(9000),
                    ..Default::default()
                },
                "attributes.mtu: 9000 widens the parent's 1400",
            ),
            (
                Attributes {
                    max_link_bandwidth_mbps: Some(101),
                    ..Default::default()
                },
                "attributes.max_link_bandwidth_mbps: 101 widens the parent's 100",
            ),
            (
                Attributes {
                    allowed_kinds: Some([Kind::Netns, Kind::Vm].into()),
                    ..Default::default()
                },
                "attributes.allowed_node_kinds: [netns, vm] widens the parent's [netns]",
            ),
            (
                Attributes {
                    isolation: Some(Isolation::Standard),
                    ..Default::default()
                },
                "attributes.isolation: standard widens the parent's dedicated_hosts",
            ),
            (
                Attributes {
                    encap: Some(Encap::Vlan),
                    ..Default::default()
                },
                "attributes.encapsulation: vlan widens the parent's vxlan",
            ),
            (
                Attributes {
                    max_nodes: Some(11),
                    ..Default::default()
                },
                "attributes.max_nodes: 11 widens the parent's 10",
            ),
            (
                Attributes {
                    max_total_cpu: Some(501),
                    ..Default::default()
                },
                "attributes.max_total_cpu: 501 widens the parent's 500",
            ),
        ];
        for (child, want) in cases {
            let e = inherit(&p, &child).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} does not start with {want}");
        }
    }

    fn req() -> VnReq {
        use crate::fixtures::{link, node, vn_req};
        vn_req(
            "c",
            vec![node("a", 10, 64), node("b", 10, 64)],
            vec![link(0, 1, 10)],
        )
    }

    #[test]
    fn conform_checks_the_request_against_inherited_attributes() {
        let mut eff = attrs();
        eff.encap = Some(Encap::Vlan);
        let mut r = req();
        conform(&mut r, &eff, "red/p").unwrap();
        assert_eq!(r.links[0].encap, Encap::Vlan, "a defaulted link inherits");
        assert_eq!(r.attributes, eff);

        let mut r = req();
        r.links[0].encap_explicit = true;
        let e = conform(&mut r, &eff, "red/p").unwrap_err();
        assert_eq!(
            e,
            "spec.links[0] (a-b): encapsulation vxlan contradicts attributes.encapsulation vlan (inherited from red/p)"
        );
        let mut r = req();
        r.nodes[1].kind = Kind::Vm;
        let e = conform(&mut r, &attrs(), "red/p").unwrap_err();
        assert_eq!(
            e,
            "spec.nodes[1] (b): kind vm is not allowed by attributes.allowed_node_kinds [netns] (inherited from red/p)"
        );
        let mut r = req();
        r.links[0].bandwidth_mbps = 500;
        let e = conform(&mut r, &attrs(), "red/p").unwrap_err();
        assert!(
            e.contains("bandwidth 500 Mbit/s exceeds attributes.max_link_bandwidth_mbps 100"),
            "{e}"
        );
        let mut r = req();
        let mut small = attrs();
        small.max_nodes = Some(1);
        assert!(
            conform(&mut r, &small, "red/p")
                .unwrap_err()
                .contains("2 nodes exceed attributes.max_nodes 1")
        );
        small.max_nodes = None;
        small.max_total_cpu = Some(15);
        assert!(
            conform(&mut r, &small, "red/p")
                .unwrap_err()
                .contains("total cpu 20 exceeds attributes.max_total_cpu 15")
        );
    }
}
