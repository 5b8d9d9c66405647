//! Addresses a caller gives: interface addresses of links, routes, and the subnets of one node.
//!
//! An interface address must be one a host can use as its own on a point-to-point link: not
//! unspecified, loopback, multicast, link-local (IPv4 169.254/16 is for autoconfiguration, and
//! the kernel gives every IPv6 interface its own fe80::/64 address) or broadcast, and not the
//! network or broadcast address of its own prefix. A /31 (RFC 3021) and a /32 have neither, so
//! both of their addresses are usable; in IPv6 the all-zero host of a prefix up to /126 is the
//! subnet-router anycast address (RFC 4291), while /127 (RFC 6164) and /128 have none.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use vnet_proto::v1 as pb;

use super::text::quote;
use super::{SpecError, invalid};
use crate::core::model::RouteSpec;

/// `s` as an address with its prefix length.
pub fn cidr(s: &str, what: &str) -> Result<IpNet, SpecError> {
    if !s.contains('/') {
        return Err(invalid(format!(
            "{what}: address {} is not in CIDR notation (add a prefix length, e.g. /24)",
            quote(s)
        )));
    }
    s.parse::<IpNet>()
        .map_err(|_| invalid(format!("{what}: address {} is not a valid CIDR", quote(s))))
}

/// Why `a` can never be a unicast address of a host's interface or a next hop, if it cannot.
fn special(a: IpAddr) -> Option<&'static str> {
    match a {
        IpAddr::V4(v) => special_v4(v),
        IpAddr::V6(v) => special_v6(v),
    }
}

fn special_v4(v: Ipv4Addr) -> Option<&'static str> {
    if v.is_unspecified() {
        Some("unspecified")
    } else if v.octets()[0] == 0 {
        Some("in 0.0.0.0/8 (\"this network\", RFC 1122)")
    } else if v.is_loopback() {
        Some("a loopback address (127.0.0.0/8)")
    } else if v.is_multicast() {
        Some("a multicast address (224.0.0.0/4)")
    } else if v.is_broadcast() {
        Some("the limited broadcast address")
    } else if v.is_link_local() {
        Some("link-local (169.254.0.0/16 is for address autoconfiguration)")
    } else {
        None
    }
}

fn special_v6(v: Ipv6Addr) -> Option<&'static str> {
    if v.is_unspecified() {
        Some("unspecified")
    } else if v.is_loopback() {
        Some("the loopback address")
    } else if v.is_multicast() {
        Some("a multicast address (ff00::/8)")
    } else if v.is_unicast_link_local() {
        Some("link-local (fe80::/10; the kernel gives every interface its own)")
    } else if v.to_ipv4_mapped().is_some() {
        Some("an IPv4-mapped address (::ffff:0:0/96)")
    } else {
        None
    }
}

/// Checks that `net` can be an interface's own address (see the module docs).
pub fn interface_address(net: IpNet, what: &str) -> Result<(), SpecError> {
    let a = net.addr();
    if let Some(why) = special(a) {
        return Err(invalid(format!(
            "{what}: address {net} is {why}, not usable as an interface address"
        )));
    }
    let bits = net.max_prefix_len() - net.prefix_len();
    if bits >= 2 && a == net.network() {
        let name = if a.is_ipv4() {
            "the network address"
        } else {
            "the subnet-router anycast address"
        };
        return Err(invalid(format!(
            "{what}: address {net} is {name} of {}, not usable as an interface address",
            net.trunc()
        )));
    }
    if bits >= 2 && a.is_ipv4() && a == net.broadcast() {
        return Err(invalid(format!(
            "{what}: address {net} is the broadcast address of {}, not usable as an interface address",
            net.trunc()
        )));
    }
    Ok(())
}

/// A static route of a node.
pub fn route(r: &pb::Route, what: &str) -> Result<RouteSpec, SpecError> {
    let destination = if r.destination == "default" {
        None
    } else {
        let net = r.destination.parse::<IpNet>().map_err(|_| {
            invalid(format!(
                "{what}: route destination {} is neither \"default\" nor a CIDR",
                quote(&r.destination)
            ))
        })?;
        if net.trunc() != net {
            return Err(invalid(format!(
                "{what}: route destination {net} has host bits set (did you mean {}?)",
                net.trunc()
            )));
        }
        Some(net)
    };
    let via: IpAddr = r.via.parse().map_err(|_| {
        invalid(format!(
            "{what}: route via {} is not an IP address",
            quote(&r.via)
        ))
    })?;
    if let Some(why) = special(via) {
        return Err(invalid(format!(
            "{what}: route via {via} is {why}, not usable as a next hop"
        )));
    }
    if let Some(d) = destination
        && d.addr().is_ipv4() != via.is_ipv4()
    {
        return Err(invalid(format!(
            "{what}: route {d} via {via} mixes address families"
        )));
    }
    Ok(RouteSpec { destination, via })
}

/// The subnets already on each node, to refuse a second interface of a node in an overlapping
/// subnet: the kernel would hold two routes for one destination and send through either.
pub struct NodeSubnets {
    /// Per node index: each subnet and the link it came from.
    subnets: Vec<Vec<(IpNet, String)>>,
}

impl NodeSubnets {
    pub fn new(nodes: usize) -> Self {
        NodeSubnets {
            subnets: vec![Vec::new(); nodes],
        }
    }

    /// Records `net` on node `node` (named `name`) for link `what`, unless it overlaps a subnet
    /// of another interface of that node.
    pub fn claim(
        &mut self,
        node: usize,
        name: &str,
        net: IpNet,
        what: &str,
    ) -> Result<(), SpecError> {
        let sub = net.trunc();
        let on_node = &mut self.subnets[node];
        if let Some((prev, at)) = on_node
            .iter()
            .find(|(p, _)| p.contains(&sub.network()) || sub.contains(&p.network()))
        {
            return Err(invalid(format!(
                "{what}: address {net} of node {name} overlaps subnet {prev} of the same node on {at} (one node's interfaces need disjoint subnets)"
            )));
        }
        on_node.push((sub, what.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> bool {
        interface_address(s.parse().unwrap(), "x").is_ok()
    }

    #[test]
    fn interface_addresses() {
        for good in [
            "10.0.0.1/24",
            "10.0.0.254/24",
            "10.0.0.0/31",
            "10.0.0.1/31",
            "10.0.0.0/32",
            "10.0.0.255/32",
            "2001:db8::1/64",
            "2001:db8::/127",
            "2001:db8::/128",
            "fd00::1/64",
        ] {
            assert!(ok(good), "{good}");
        }
        for bad in [
            "0.0.0.0/0",
            "0.1.2.3/8",
            "127.0.0.1/8",
            "224.0.0.5/24",
            "255.255.255.255/32",
            "169.254.1.1/16",
            "10.0.0.0/24",
            "10.0.0.255/24",
            "10.0.0.0/30",
            "10.0.0.3/30",
            "::/0",
            "::1/128",
            "ff02::1/64",
            "fe80::1/64",
            "::ffff:10.0.0.1/120",
            "2001:db8::/64",
            "2001:db8::/126",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }

    #[test]
    fn overlapping_subnets_of_one_node() {
        let mut s = NodeSubnets::new(2);
        s.claim(0, "a", "10.0.0.1/24".parse().unwrap(), "l0")
            .unwrap();
        s.claim(1, "b", "10.0.0.2/24".parse().unwrap(), "l0")
            .unwrap();
        s.claim(0, "a", "10.0.1.1/24".parse().unwrap(), "l1")
            .unwrap();
        let e = s
            .claim(0, "a", "10.0.0.5/16".parse().unwrap(), "l2")
            .unwrap_err();
        assert!(e.to_string().contains("overlaps subnet 10.0.0.0/24"), "{e}");
        let e = s
            .claim(0, "a", "10.0.1.9/30".parse().unwrap(), "l3")
            .unwrap_err();
        assert!(e.to_string().contains("on l1"), "{e}");
        s.claim(0, "a", "2001:db8::1/64".parse().unwrap(), "l4")
            .unwrap();
    }
}
