//! Validation of wire messages into domain types, once, at the gRPC edge. Every error names the
//! item that is wrong (`spec.nodes[2] (c)`, `spec.links[0] (a-b)`) and what is wrong with it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tonic::Status;
use vnet_proto::v1 as pb;

use crate::core::attributes::encap_name;
use crate::core::model::{
    Attributes, Encap, GuestReq, Isolation, Kind, LinkReq, MAX_LINKS, MAX_NAME_LEN, MAX_NODES,
    NodeReq, ParentRef, ProviderId, RouteSpec, VnReq,
};
use crate::core::nest::carrier_range;
use crate::core::substrate::{HostInfo, UnderlayIf};

/// Why a request was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Permission(String),
    #[error("{0}")]
    Precondition(String),
}

impl From<SpecError> for Status {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Invalid(m) => Status::invalid_argument(m),
            SpecError::Permission(m) => Status::permission_denied(m),
            SpecError::Precondition(m) => Status::failed_precondition(m),
        }
    }
}

fn invalid(msg: impl Into<String>) -> SpecError {
    SpecError::Invalid(msg.into())
}

/// Provider ids, VN names and host ids: `[a-z0-9]` first, then `[a-z0-9._-]`, at most 63.
pub fn check_identifier(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err("must start with a lowercase letter or a digit".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "character {c:?} is not allowed (use a-z, 0-9, '-', '_', '.')"
        ));
    }
    Ok(())
}

/// Node names: letters, digits, `-` and `_`, starting with a letter or digit, at most 63
/// (they become guests' host names).
fn check_node_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("name must not be empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("name longer than {MAX_NAME_LEN} characters"));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("name must start with a letter or a digit".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(format!("name: character {c:?} is not allowed"));
    }
    Ok(())
}

/// Linux interface names: 1..=15 bytes, no '/', ':', whitespace, not `.`/`..`/`lo`.
fn check_ifname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!("interface name {s:?} must have 1 to 15 characters"));
    }
    if s == "." || s == ".." || s == "lo" {
        return Err(format!("interface name {s:?} is reserved"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "interface name {s:?}: character {c:?} is not allowed"
        ));
    }
    Ok(())
}

fn encap(value: i32, what: &str) -> Result<Option<Encap>, SpecError> {
    match pb::Encapsulation::try_from(value) {
        Ok(pb::Encapsulation::Unspecified) => Ok(None),
        Ok(pb::Encapsulation::Auto | pb::Encapsulation::Vxlan) => Ok(Some(Encap::Vxlan)),
        Ok(pb::Encapsulation::Vlan) => Ok(Some(Encap::Vlan)),
        Err(_) => Err(invalid(format!("{what}: unknown encapsulation {value}"))),
    }
}

fn kind(value: i32, what: &str) -> Result<Kind, SpecError> {
    match pb::NodeKind::try_from(value) {
        Ok(pb::NodeKind::Unspecified | pb::NodeKind::Netns) => Ok(Kind::Netns),
        Ok(pb::NodeKind::Vm) => Ok(Kind::Vm),
        Err(_) => Err(invalid(format!(
            "{what}: unknown kind {value} (use netns or vm)"
        ))),
    }
}

fn cidr(s: &str, what: &str) -> Result<IpNet, SpecError> {
    if !s.contains('/') {
        return Err(invalid(format!(
            "{what}: address {s:?} is not in CIDR notation (add a prefix length, e.g. /24)"
        )));
    }
    s.parse::<IpNet>()
        .map_err(|_| invalid(format!("{what}: address {s:?} is not a valid CIDR")))
}

fn route(r: &pb::Route, what: &str) -> Result<RouteSpec, SpecError> {
    let destination = if r.destination == "default" {
        None
    } else {
        let net = r.destination.parse::<IpNet>().map_err(|_| {
            invalid(format!(
                "{what}: route destination {:?} is neither \"default\" nor a CIDR",
                r.destination
            ))
        })?;
        if net.trunc() != net {
            return Err(invalid(format!(
                "{what}: route destination {} has host bits set (did you mean {}?)",
                r.destination,
                net.trunc()
            )));
        }
        Some(net)
    };
    let via: IpAddr = r.via.parse().map_err(|_| {
        invalid(format!(
            "{what}: route via {:?} is not an IP address",
            r.via
        ))
    })?;
    if let Some(d) = destination
        && d.addr().is_ipv4() != via.is_ipv4()
    {
        return Err(invalid(format!(
            "{what}: route {} via {via} mixes address families",
            r.destination
        )));
    }
    Ok(RouteSpec { destination, via })
}

fn node(n: &pb::NodeSpec, what: &str) -> Result<NodeReq, SpecError> {
    check_node_name(&n.name).map_err(|e| invalid(format!("{what}: {e}")))?;
    let k = kind(n.kind, what)?;
    if n.cpu < 0 {
        return Err(invalid(format!("{what}: cpu {} must be >= 0", n.cpu)));
    }
    if n.memory_mb < 0 {
        return Err(invalid(format!(
            "{what}: memory_mb {} must be >= 0",
            n.memory_mb
        )));
    }
    let pin = (!n.host.is_empty()).then(|| n.host.clone());
    if let Some(p) = &pin {
        check_identifier(p).map_err(|e| invalid(format!("{what}: host {p:?} {e}")))?;
    }
    let location = (!n.location.is_empty()).then(|| n.location.clone());
    let routes = n
        .routes
        .iter()
        .map(|r| route(r, what))
        .collect::<Result<Vec<_>, _>>()?;
    let guest = match k {
        Kind::Netns => {
            if !n.image.is_empty() || n.nic != 0 || n.accel != 0 || n.vcpus != 0 {
                return Err(invalid(format!(
                    "{what}: image, nic, accel and vcpus apply to vm nodes only"
                )));
            }
            None
        }
        Kind::Vm => {
            if u64::try_from(n.memory_mb).unwrap_or(0) < vnet_proto::VM_MIN_MEMORY_MB {
                return Err(invalid(format!(
                    "{what}: a vm needs memory_mb >= {}, got {}",
                    vnet_proto::VM_MIN_MEMORY_MB,
                    n.memory_mb
                )));
            }
            if pb::NicModel::try_from(n.nic).is_err() {
                return Err(invalid(format!("{what}: unknown nic model {}", n.nic)));
            }
            if pb::Acceleration::try_from(n.accel).is_err() {
                return Err(invalid(format!("{what}: unknown accel {}", n.accel)));
            }
            if n.vcpus > 64 {
                return Err(invalid(format!("{what}: vcpus {} exceeds 64", n.vcpus)));
            }
            let image = if n.image.is_empty() {
                "default".to_string()
            } else {
                check_node_name(&n.image).map_err(|e| invalid(format!("{what}: image {e}")))?;
                n.image.clone()
            };
            Some(GuestReq {
                vcpus: n.vcpus.max(1),
                image,
                nic: if n.nic == 0 {
                    pb::NicModel::Virtio as i32
                } else {
                    n.nic
                },
                accel: if n.accel == 0 {
                    pb::Acceleration::Auto as i32
                } else {
                    n.accel
                },
            })
        }
    };
    Ok(NodeReq {
        name: n.name.clone(),
        kind: k,
        cpu: n.cpu as u64,
        memory_mb: n.memory_mb as u64,
        pin,
        location,
        routes,
        guest,
    })
}

/// Validates a spec for `caller` and returns the domain request and the spec to store (with the
/// provider filled in). `algorithms` are the known embedding algorithm names.
pub fn vn_spec(
    spec: Option<pb::VnSpec>,
    caller: &ProviderId,
    algorithms: &[&str],
) -> Result<(VnReq, pb::VnSpec), SpecError> {
    let mut spec = spec.ok_or_else(|| invalid("spec is required"))?;
    check_identifier(&spec.name).map_err(|e| invalid(format!("spec.name {:?}: {e}", spec.name)))?;
    if !spec.provider.is_empty() && spec.provider != caller.0 {
        return Err(SpecError::Permission(format!(
            "spec.provider {:?} does not match the caller {caller}",
            spec.provider
        )));
    }
    spec.provider = caller.0.clone();
    let parent = if spec.parent.is_empty() {
        if !spec.parent_provider.is_empty() {
            return Err(invalid("spec.parent_provider is set without spec.parent"));
        }
        None
    } else {
        check_identifier(&spec.parent)
            .map_err(|e| invalid(format!("spec.parent {:?}: {e}", spec.parent)))?;
        let provider = if spec.parent_provider.is_empty() {
            caller.clone()
        } else {
            check_identifier(&spec.parent_provider).map_err(|e| {
                invalid(format!(
                    "spec.parent_provider {:?}: {e}",
                    spec.parent_provider
                ))
            })?;
            ProviderId(spec.parent_provider.clone())
        };
        Some(ParentRef {
            provider,
            name: spec.parent.clone(),
        })
    };
    let attrs = spec.attributes.clone().unwrap_or_default();
    // AUTO lets the controller choose: as an attribute it constrains nothing.
    let attr_encap = match pb::Encapsulation::try_from(attrs.encapsulation) {
        Ok(pb::Encapsulation::Auto) => None,
        _ => encap(attrs.encapsulation, "spec.attributes.encapsulation")?,
    };
    let chosen = |v: i32| {
        !matches!(
            pb::Encapsulation::try_from(v),
            Ok(pb::Encapsulation::Unspecified | pb::Encapsulation::Auto)
        )
    };
    let spec_encap = encap(spec.encapsulation, "spec.encapsulation")?;
    if let (Some(a), Some(s)) = (attr_encap, spec_encap)
        && chosen(spec.encapsulation)
        && a != s
    {
        return Err(invalid(format!(
            "spec.encapsulation {} contradicts spec.attributes.encapsulation {}",
            encap_name(s),
            encap_name(a)
        )));
    }
    let vn_encap = attr_encap.or(spec_encap).unwrap_or(Encap::Vxlan);
    let vn_encap_explicit = attr_encap.is_some() || chosen(spec.encapsulation);
    if let Some(mtu) = attrs.mtu
        && !(68..=65535).contains(&mtu)
    {
        return Err(invalid(format!(
            "spec.attributes.mtu {mtu} is outside 68..65535"
        )));
    }
    let allowed: BTreeSet<Kind> = attrs
        .allowed_node_kinds
        .iter()
        .map(|k| kind(*k, "spec.attributes.allowed_node_kinds"))
        .collect::<Result<_, _>>()?;
    let isolation = match pb::IsolationLevel::try_from(attrs.isolation) {
        Ok(pb::IsolationLevel::Unspecified) => None,
        Ok(pb::IsolationLevel::Standard) => Some(Isolation::Standard),
        Ok(pb::IsolationLevel::DedicatedHosts) => Some(Isolation::DedicatedHosts),
        Err(_) => {
            return Err(invalid(format!(
                "spec.attributes.isolation: unknown level {}",
                attrs.isolation
            )));
        }
    };
    if spec.nodes.is_empty() {
        return Err(invalid("spec.nodes: a VN needs at least one node"));
    }
    if spec.nodes.len() > MAX_NODES {
        return Err(invalid(format!(
            "spec.nodes: {} nodes exceed the limit of {MAX_NODES}",
            spec.nodes.len()
        )));
    }
    if spec.links.len() > MAX_LINKS {
        return Err(invalid(format!(
            "spec.links: {} links exceed the limit of {MAX_LINKS}",
            spec.links.len()
        )));
    }
    if let Some(max) = attrs.max_nodes
        && spec.nodes.len() > max as usize
    {
        return Err(invalid(format!(
            "spec.nodes: {} nodes exceed spec.attributes.max_nodes {max}",
            spec.nodes.len()
        )));
    }
    let mut nodes = Vec::with_capacity(spec.nodes.len());
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let what = format!("spec.nodes[{i}] ({})", n.name);
        let nr = node(n, &what)?;
        if let Some(prev) = by_name.insert(n.name.as_str(), i) {
            return Err(invalid(format!(
                "{what}: duplicate node name {} (also spec.nodes[{prev}])",
                n.name
            )));
        }
        if !allowed.is_empty() && !allowed.contains(&nr.kind) {
            return Err(invalid(format!(
                "{what}: kind {} is not in spec.attributes.allowed_node_kinds",
                nr.kind.as_str()
            )));
        }
        nodes.push(nr);
    }
    let total_cpu: u64 = nodes.iter().map(|n| n.cpu).sum();
    if let Some(max) = attrs.max_total_cpu
        && total_cpu > max
    {
        return Err(invalid(format!(
            "spec.nodes: total cpu {total_cpu} exceeds spec.attributes.max_total_cpu {max}"
        )));
    }
    let mut links = Vec::with_capacity(spec.links.len());
    let mut pairs: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut addresses: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut ifnames: BTreeMap<(usize, String), String> = BTreeMap::new();
    let carrier = carrier_range();
    for (i, l) in spec.links.iter().enumerate() {
        let what = format!("spec.links[{i}] ({})", l.endpoints.join("-"));
        if l.endpoints.len() != 2 {
            return Err(invalid(format!(
                "{what}: a link needs exactly two endpoints, got {}",
                l.endpoints.len()
            )));
        }
        let end = |name: &str| {
            by_name
                .get(name)
                .copied()
                .ok_or_else(|| invalid(format!("{what}: unknown endpoint {name:?}")))
        };
        let (a, b) = (end(&l.endpoints[0])?, end(&l.endpoints[1])?);
        if a == b {
            return Err(invalid(format!(
                "{what}: both endpoints are node {}",
                l.endpoints[0]
            )));
        }
        if let Some(prev) = pairs.insert((a.min(b), a.max(b)), i) {
            return Err(invalid(format!(
                "{what}: duplicate link between {} and {} (also spec.links[{prev}])",
                l.endpoints[0], l.endpoints[1]
            )));
        }
        if l.bandwidth_mbps <= 0 {
            return Err(invalid(format!(
                "{what}: bandwidth_mbps must be > 0, got {}",
                l.bandwidth_mbps
            )));
        }
        if let Some(max) = attrs.max_link_bandwidth_mbps
            && l.bandwidth_mbps as u64 > max
        {
            return Err(invalid(format!(
                "{what}: bandwidth_mbps {} exceeds spec.attributes.max_link_bandwidth_mbps {max}",
                l.bandwidth_mbps
            )));
        }
        let addrs = match l.addresses.len() {
            0 => None,
            2 => {
                let x = cidr(&l.addresses[0], &what)?;
                let y = cidr(&l.addresses[1], &what)?;
                if x.addr().is_ipv4() != y.addr().is_ipv4() {
                    return Err(invalid(format!(
                        "{what}: addresses {x} and {y} mix address families"
                    )));
                }
                for addr in [x, y] {
                    if let Some(prev) = addresses.insert(addr.addr(), what.clone()) {
                        return Err(invalid(format!(
                            "{what}: address {} is used twice (also {prev})",
                            addr.addr()
                        )));
                    }
                }
                Some([x, y])
            }
            n => {
                return Err(invalid(format!(
                    "{what}: give zero or two addresses, got {n}"
                )));
            }
        };
        let interfaces = match l.interfaces.len() {
            0 => [None, None],
            2 => {
                for (side, (node_ix, name)) in [a, b].into_iter().zip(&l.interfaces).enumerate() {
                    check_ifname(name).map_err(|e| invalid(format!("{what}: {e}")))?;
                    if let Some(prev) = ifnames.insert((node_ix, name.clone()), what.clone()) {
                        return Err(invalid(format!(
                            "{what}: interface {name} of node {} is used twice (also {prev})",
                            l.endpoints[side]
                        )));
                    }
                }
                [Some(l.interfaces[0].clone()), Some(l.interfaces[1].clone())]
            }
            n => {
                return Err(invalid(format!(
                    "{what}: give zero or two interface names, got {n}"
                )));
            }
        };
        if spec.nestable
            && let Some(addrs) = &addrs
            && let Some(a) = addrs
                .iter()
                .find(|a| carrier.contains(&a.addr()) || a.contains(&carrier.addr()))
        {
            return Err(invalid(format!(
                "{what}: address {a} overlaps {carrier}, the range the controller assigns to the links of nestable VNs"
            )));
        }
        let link_encap = encap(l.encapsulation, &what)?.unwrap_or(vn_encap);
        if let Some(want) = attr_encap
            && link_encap != want
        {
            return Err(invalid(format!(
                "{what}: encapsulation {} contradicts spec.attributes.encapsulation {}",
                encap_name(link_encap),
                encap_name(want)
            )));
        }
        links.push(LinkReq {
            a,
            b,
            bandwidth_mbps: l.bandwidth_mbps as u64,
            addresses: addrs,
            interfaces,
            encap: link_encap,
            encap_explicit: vn_encap_explicit || chosen(l.encapsulation),
        });
    }
    let algorithm = if spec.algorithm.is_empty() {
        None
    } else if algorithms.contains(&spec.algorithm.as_str()) {
        Some(spec.algorithm.clone())
    } else {
        return Err(invalid(format!(
            "spec.algorithm: unknown algorithm {:?} (known: {})",
            spec.algorithm,
            algorithms.join(", ")
        )));
    };
    let share_with = spec
        .share_with
        .iter()
        .map(|p| {
            check_identifier(p)
                .map(|()| p.clone())
                .map_err(|e| invalid(format!("spec.share_with {p:?}: {e}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if !spec.nestable && !share_with.is_empty() {
        return Err(invalid(
            "spec.share_with is set but spec.nestable is false (only a nestable VN can be shared)",
        ));
    }
    let req = VnReq {
        name: spec.name.clone(),
        provider: caller.clone(),
        allow_revisitation: spec.allow_revisitation,
        nodes,
        links,
        algorithm,
        max_path_hops: (spec.max_path_hops > 0).then_some(spec.max_path_hops),
        attributes: Attributes {
            mtu: attrs.mtu,
            dedicated_hosts: isolation == Some(Isolation::DedicatedHosts),
            isolation,
            encap: attr_encap,
            max_link_bandwidth_mbps: attrs.max_link_bandwidth_mbps,
            allowed_kinds: (!allowed.is_empty()).then_some(allowed),
            max_nodes: attrs.max_nodes,
            max_total_cpu: attrs.max_total_cpu,
        },
        nestable: spec.nestable,
        share_with,
        parent,
    };
    Ok((req, spec))
}

/// A VN name in Get/Delete/Watch/Exec.
pub fn vn_name(name: &str, what: &str) -> Result<(), Status> {
    check_identifier(name).map_err(|e| Status::invalid_argument(format!("{what} {name:?}: {e}")))
}

/// An agent's hello, into the host it describes.
/// The largest generation an agent may report: far above any real count (one per change of a
/// host's desired state), far below where adding one wraps.
pub const MAX_GENERATION: u64 = 1 << 48;

pub fn hello(h: &pb::AgentHello, now_ms: u64) -> Result<HostInfo, Status> {
    let bad = |m: String| Status::invalid_argument(format!("hello: {m}"));
    check_identifier(&h.host_id).map_err(|e| bad(format!("host_id {:?}: {e}", h.host_id)))?;
    let underlay_address: IpAddr = h.underlay_address.parse().map_err(|_| {
        bad(format!(
            "underlay_address {:?} is not an IP address",
            h.underlay_address
        ))
    })?;
    let underlay = h
        .underlay
        .iter()
        .map(|u| {
            Ok(UnderlayIf {
                name: u.name.clone(),
                addresses: u
                    .addresses
                    .iter()
                    .map(|a| {
                        a.parse::<IpNet>().map_err(|_| {
                            bad(format!("underlay {}: address {a:?} is not a CIDR", u.name))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                mtu: u.mtu,
                mac: u.mac.clone(),
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    if h.applied_generation > MAX_GENERATION {
        return Err(bad(format!(
            "applied_generation {} is out of range (at most {MAX_GENERATION})",
            h.applied_generation
        )));
    }
    let cap = h.capacity.unwrap_or_default();
    let kinds = h
        .node_kinds
        .iter()
        .filter_map(|k| match pb::NodeKind::try_from(*k) {
            Ok(pb::NodeKind::Netns) => Some(Kind::Netns),
            Ok(pb::NodeKind::Vm) => Some(Kind::Vm),
            _ => None,
        })
        .collect();
    Ok(HostInfo {
        id: h.host_id.clone(),
        underlay_address,
        underlay,
        cpu: cap.cpu,
        memory_mb: cap.memory_mb,
        kinds,
        labels: h.labels.iter().cloned().collect(),
        capabilities_pb: h
            .capabilities
            .as_ref()
            .map(prost::Message::encode_to_vec)
            .unwrap_or_default(),
        agent_version: h.agent_version.clone(),
        boot_id: h.boot_id.clone(),
        last_seen_unix_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> ProviderId {
        ProviderId("red".into())
    }

    fn n(name: &str) -> pb::NodeSpec {
        pb::NodeSpec {
            name: name.into(),
            kind: pb::NodeKind::Netns as i32,
            cpu: 10,
            memory_mb: 64,
            ..Default::default()
        }
    }

    fn l(a: &str, b: &str, bw: i64) -> pb::LinkSpec {
        pb::LinkSpec {
            endpoints: vec![a.into(), b.into()],
            bandwidth_mbps: bw,
            ..Default::default()
        }
    }

    fn spec() -> pb::VnSpec {
        pb::VnSpec {
            name: "red-net".into(),
            nodes: vec![n("a"), n("b"), n("c")],
            links: vec![l("a", "b", 50), l("b", "c", 10)],
            ..Default::default()
        }
    }

    fn err(s: pb::VnSpec) -> SpecError {
        vn_spec(Some(s), &caller(), &["grc"]).unwrap_err()
    }

    #[test]
    fn accepts_a_good_spec_and_fills_the_provider() {
        let mut s = spec();
        s.links[0].addresses = vec!["10.0.0.1/24".into(), "10.0.0.2/24".into()];
        s.links[0].interfaces = vec!["up".into(), "down".into()];
        s.encapsulation = pb::Encapsulation::Vlan as i32;
        s.links[1].encapsulation = pb::Encapsulation::Vxlan as i32;
        let (req, stored) = vn_spec(Some(s), &caller(), &["grc"]).unwrap();
        assert_eq!(stored.provider, "red");
        assert_eq!(req.nodes.len(), 3);
        assert_eq!(req.links[0].encap, Encap::Vlan);
        assert_eq!(req.links[1].encap, Encap::Vxlan);
        assert_eq!(req.links[0].interfaces[1].as_deref(), Some("down"));
    }

    #[test]
    fn each_bad_input_names_the_item() {
        type Mutate = Box<dyn Fn(&mut pb::VnSpec)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (
                Box::new(|s| s.links[1].endpoints[1] = "z".into()),
                "spec.links[1] (b-z): unknown endpoint \"z\"",
            ),
            (
                Box::new(|s| s.nodes[2].name = "a".into()),
                "spec.nodes[2] (a): duplicate node name a",
            ),
            (
                Box::new(|s| s.links[0].bandwidth_mbps = 0),
                "spec.links[0] (a-b): bandwidth_mbps must be > 0",
            ),
            (
                Box::new(|s| s.links[0].bandwidth_mbps = -5),
                "bandwidth_mbps must be > 0, got -5",
            ),
            (
                Box::new(|s| {
                    s.links[0].addresses = vec!["10.0.0.300/24".into(), "10.0.0.2/24".into()]
                }),
                "address \"10.0.0.300/24\" is not a valid CIDR",
            ),
            (
                Box::new(|s| s.links[0].addresses = vec!["10.0.0.1".into(), "10.0.0.2/24".into()]),
                "not in CIDR notation",
            ),
            (
                Box::new(|s| s.links[0].addresses = vec!["10.0.0.1/24".into()]),
                "zero or two addresses",
            ),
            (
                Box::new(|s| {
                    s.links[0].addresses = vec!["10.0.0.1/24".into(), "10.0.0.2/24".into()];
                    s.links[1].addresses = vec!["10.0.0.1/24".into(), "10.0.0.3/24".into()];
                }),
                "spec.links[1] (b-c): address 10.0.0.1 is used twice (also spec.links[0] (a-b))",
            ),
            (
                Box::new(|s| s.nodes[1].kind = 9),
                "spec.nodes[1] (b): unknown kind 9",
            ),
            (
                Box::new(|s| s.nodes[0].cpu = -1),
                "spec.nodes[0] (a): cpu -1 must be >= 0",
            ),
            (
                Box::new(|s| s.nodes = (0..300).map(|i| n(&format!("n{i}"))).collect()),
                "300 nodes exceed the limit of 256",
            ),
            (
                Box::new(|s| s.links.push(l("b", "a", 5))),
                "spec.links[2] (b-a): duplicate link between b and a",
            ),
            (
                Box::new(|s| s.links.push(l("a", "a", 5))),
                "both endpoints are node a",
            ),
            (
                Box::new(|s| {
                    s.links[0].interfaces = vec!["this-is-far-too-long".into(), "x".into()]
                }),
                "1 to 15 characters",
            ),
            (
                Box::new(|s| {
                    s.links[0].interfaces = vec!["e".into(), "x".into()];
                    s.links[1].interfaces = vec!["x".into(), "y".into()];
                }),
                "interface x of node b is used twice",
            ),
            (
                Box::new(|s| s.name = "Red Net".into()),
                "spec.name \"Red Net\"",
            ),
            (Box::new(|s| s.nodes.clear()), "at least one node"),
            (
                Box::new(|s| s.algorithm = "magic".into()),
                "unknown algorithm \"magic\" (known: grc)",
            ),
            (
                Box::new(|s| {
                    s.nodes[0].routes = vec![pb::Route {
                        destination: "10.1.0.5/16".into(),
                        via: "10.0.0.1".into(),
                    }]
                }),
                "has host bits set",
            ),
            (
                Box::new(|s| {
                    s.nodes[0].routes = vec![pb::Route {
                        destination: "default".into(),
                        via: "gw".into(),
                    }]
                }),
                "route via \"gw\" is not an IP address",
            ),
            (
                Box::new(|s| s.links[0].encapsulation = 7),
                "spec.links[0] (a-b): unknown encapsulation 7",
            ),
            (
                Box::new(|s| {
                    s.nodes[0].kind = pb::NodeKind::Vm as i32;
                    s.nodes[0].memory_mb = 16;
                }),
                "a vm needs memory_mb >= 96, got 16",
            ),
            (
                Box::new(|s| s.nodes[0].image = "debian".into()),
                "apply to vm nodes only",
            ),
            (
                Box::new(|s| {
                    s.attributes = Some(pb::VnAttributes {
                        max_link_bandwidth_mbps: Some(20),
                        ..Default::default()
                    })
                }),
                "exceeds spec.attributes.max_link_bandwidth_mbps 20",
            ),
            (
                Box::new(|s| {
                    s.attributes = Some(pb::VnAttributes {
                        allowed_node_kinds: vec![pb::NodeKind::Vm as i32],
                        ..Default::default()
                    })
                }),
                "kind netns is not in spec.attributes.allowed_node_kinds",
            ),
        ];
        for (mutate, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let e = err(s);
            assert!(matches!(e, SpecError::Invalid(_)), "{e:?}");
            assert!(
                e.to_string().contains(needle),
                "{e} does not contain {needle}"
            );
        }
    }

    #[test]
    fn provider_mismatch_and_parent() {
        let mut s = spec();
        s.provider = "blue".into();
        assert!(matches!(err(s), SpecError::Permission(m) if m.contains("\"blue\"")));
        let mut s = spec();
        s.parent = "base".into();
        let (r, _) = vn_spec(Some(s.clone()), &caller(), &[]).unwrap();
        assert_eq!(
            r.parent,
            Some(ParentRef {
                provider: caller(),
                name: "base".into()
            })
        );
        s.parent_provider = "green".into();
        let (r, _) = vn_spec(Some(s.clone()), &caller(), &[]).unwrap();
        assert_eq!(r.parent.unwrap().to_string(), "green/base");
        s.parent = String::new();
        assert!(matches!(err(s), SpecError::Invalid(m) if m.contains("without spec.parent")));
        assert_eq!(
            vn_spec(None, &caller(), &[]).unwrap_err(),
            SpecError::Invalid("spec is required".into())
        );
    }

    #[test]
    fn recursion_fields_and_attributes() {
        let mut s = spec();
        s.share_with = vec!["blue".into()];
        assert!(matches!(err(s.clone()), SpecError::Invalid(m) if m.contains("nestable is false")));
        s.nestable = true;
        s.attributes = Some(pb::VnAttributes {
            encapsulation: pb::Encapsulation::Vxlan as i32,
            mtu: Some(1400),
            max_link_bandwidth_mbps: Some(100),
            allowed_node_kinds: vec![pb::NodeKind::Netns as i32],
            isolation: pb::IsolationLevel::DedicatedHosts as i32,
            max_nodes: Some(10),
            max_total_cpu: Some(500),
        });
        let (r, _) = vn_spec(Some(s.clone()), &caller(), &[]).unwrap();
        let a = &r.attributes;
        assert_eq!(a.encap, Some(Encap::Vxlan));
        assert_eq!(a.isolation, Some(Isolation::DedicatedHosts));
        assert!(a.dedicated_hosts);
        assert_eq!(a.allowed_kinds, Some([Kind::Netns].into()));
        assert_eq!((a.max_nodes, a.max_total_cpu), (Some(10), Some(500)));
        assert!(r.links.iter().all(|l| l.encap_explicit));
        // An attribute fixes the encapsulation of every link.
        let mut bad = s.clone();
        bad.links[1].encapsulation = pb::Encapsulation::Vlan as i32;
        assert!(
            matches!(err(bad), SpecError::Invalid(m) if m == "spec.links[1] (b-c): encapsulation vlan contradicts spec.attributes.encapsulation vxlan")
        );
        // Explicit addresses of a nestable VN stay out of the carrier range.
        let mut bad = s.clone();
        bad.links[0].addresses = vec!["100.64.0.1/24".into(), "100.64.0.2/24".into()];
        assert!(matches!(err(bad), SpecError::Invalid(m) if m.contains("overlaps 100.64.0.0/21")));
        // Without an attribute nothing is explicit: a child may inherit the encapsulation.
        let (r, _) = vn_spec(Some(spec()), &caller(), &[]).unwrap();
        assert!(r.links.iter().all(|l| !l.encap_explicit));
        assert_eq!(r.attributes.isolation, None);
    }

    #[test]
    fn hello_is_checked() {
        let mut h = pb::AgentHello {
            host_id: "h1".into(),
            underlay_address: "10.0.0.1".into(),
            node_kinds: vec![pb::NodeKind::Netns as i32],
            capacity: Some(pb::Resources {
                cpu: 400,
                memory_mb: 4096,
            }),
            ..Default::default()
        };
        let info = hello(&h, 5).unwrap();
        assert_eq!(info.cpu, 400);
        assert!(info.kinds.contains(&Kind::Netns));
        h.underlay_address = "nope".into();
        assert!(
            hello(&h, 5)
                .unwrap_err()
                .message()
                .contains("underlay_address")
        );
    }
}
