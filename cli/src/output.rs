//! What vnctl prints: kubectl-style tables, `describe` text, and JSON/YAML views.
//!
//! The proto messages do not derive serde, and their JSON would show enums as numbers, so each
//! printable object has a view type here (camelCase keys, enums as words) built from the proto.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tabwriter::TabWriter;
use vnet_proto::v1 as pb;

use crate::spec::{AttributesFile, VnFile};

/// `-o table|json|yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML.
pub fn print_structured<T: Serialize>(format: Format, value: &T) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(value)?,
        Format::Table => unreachable!("tables are printed by the caller"),
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// Renders rows as an aligned table (columns separated by two spaces, no borders).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut tw = TabWriter::new(Vec::new()).padding(2);
    let _ = writeln!(tw, "{}", header.join("\t"));
    for r in rows {
        let _ = writeln!(tw, "{}", r.join("\t"));
    }
    let bytes = tw.into_inner().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // tabwriter pads the last column too; trailing blanks only get in the way of diffs.
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `READY` for `VN_STATE_READY`.
pub fn vn_state(s: i32) -> &'static str {
    match pb::VnState::try_from(s) {
        Ok(pb::VnState::Provisioning) => "PROVISIONING",
        Ok(pb::VnState::Ready) => "READY",
        Ok(pb::VnState::Degraded) => "DEGRADED",
        Ok(pb::VnState::Failed) => "FAILED",
        Ok(pb::VnState::Deleting) => "DELETING",
        Ok(pb::VnState::Deleted) => "DELETED",
        Ok(pb::VnState::Updating) => "UPDATING",
        _ => "UNKNOWN",
    }
}

pub fn event_kind(k: i32) -> &'static str {
    match pb::VnEventKind::try_from(k) {
        Ok(pb::VnEventKind::Snapshot) => "SNAPSHOT",
        Ok(pb::VnEventKind::Accepted) => "ACCEPTED",
        Ok(pb::VnEventKind::Rejected) => "REJECTED",
        Ok(pb::VnEventKind::HostProgress) => "HOST",
        Ok(pb::VnEventKind::Ready) => "READY",
        Ok(pb::VnEventKind::Degraded) => "DEGRADED",
        Ok(pb::VnEventKind::Failed) => "FAILED",
        Ok(pb::VnEventKind::Deleted) => "DELETED",
        Ok(pb::VnEventKind::Updated) => "UPDATED",
        _ => "UNKNOWN",
    }
}

pub fn encapsulation(e: i32) -> &'static str {
    match pb::Encapsulation::try_from(e) {
        Ok(pb::Encapsulation::Auto) => "auto",
        Ok(pb::Encapsulation::Vxlan) => "vxlan",
        Ok(pb::Encapsulation::Vlan) => "vlan",
        _ => "-",
    }
}

pub fn node_kind(k: i32) -> &'static str {
    match pb::NodeKind::try_from(k) {
        Ok(pb::NodeKind::Netns) => "netns",
        Ok(pb::NodeKind::Vm) => "vm",
        _ => "-",
    }
}

/// `3m`, `2h`, `5d`: time since a unix-ms timestamp, kubectl style.
pub fn age(unix_ms: u64, now: SystemTime) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let then = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let secs = now.duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// RFC 3339 in UTC, seconds precision.
pub fn timestamp(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

// ----- virtual networks -----

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VnView {
    pub name: String,
    pub provider: String,
    pub state: &'static str,
    /// Generation of the spec and placement (`vnctl apply` of this output updates only this
    /// generation).
    pub generation: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub algorithm: String,
    pub revenue: f64,
    pub cost: f64,
    pub created: String,
    pub depth: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Per-host provisioning state.
    pub hosts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<AttributesFile>,
    pub nodes: Vec<NodeView>,
    pub links: Vec<LinkView>,
    /// Re-embeddings after faults or drains, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recoveries: Vec<RecoveryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<VnFile>,
}

/// One re-embedding: why, what moved, and how long it took from the fault.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryView {
    pub cause: String,
    pub moved: Vec<String>,
    pub fault: String,
    pub reembedded: String,
    /// `None`: not READY again yet.
    pub ready: Option<String>,
    /// Fault to re-embedding, ms.
    pub reembedded_after_ms: u64,
    /// Fault to READY, ms (`None`: not READY yet).
    pub ready_after_ms: Option<u64>,
}

impl RecoveryView {
    fn from_proto(r: &pb::RecoveryRecord) -> Self {
        let ready = (r.ready_unix_ms > 0).then_some(r.ready_unix_ms);
        RecoveryView {
            cause: r.cause.clone(),
            moved: r.moved.clone(),
            fault: timestamp(r.fault_unix_ms),
            reembedded: timestamp(r.reembedded_unix_ms),
            ready: ready.map(timestamp),
            reembedded_after_ms: r.reembedded_unix_ms.saturating_sub(r.fault_unix_ms),
            ready_after_ms: ready.map(|t| t.saturating_sub(r.fault_unix_ms)),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub node: String,
    pub host: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent_node: String,
    pub node_id: String,
    pub kind: &'static str,
    pub cpu: i64,
    pub memory_mb: i64,
    /// Nestable VNs: what child VNs use of this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children_cpu: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children_memory_mb: Option<u64>,
    /// vm nodes: how the guest runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestView>,
}

/// How a guest runs (the controller's `GuestPlacement`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestView {
    pub accel: String,
    pub arch: String,
    pub machine: String,
    pub nic: String,
    pub image: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    pub endpoints: Vec<String>,
    pub bandwidth_mbps: u64,
    pub path: Vec<String>,
    pub hops: Vec<HopView>,
    pub mtu: u32,
    pub addresses: Vec<String>,
    pub interfaces: Vec<String>,
    pub macs: Vec<String>,
    /// Nestable VNs: the bandwidth child VNs reserve on this link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children_bandwidth_mbps: Option<u64>,
    /// One-way impairments in force (delay at least the path's).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub delay_us: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub jitter_us: u64,
    #[serde(skip_serializing_if = "is_zero_f")]
    pub loss_percent: f64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub path_delay_us: u64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn is_zero_f(v: &f64) -> bool {
    *v == 0.0
}

/// A link's impairments for people: `delay 20ms +-5ms, loss 5%`, or `-`.
pub fn impairment_text(delay_us: u64, jitter_us: u64, loss_percent: f64) -> String {
    let ms = |us: u64| crate::spec::duration_text(us as i64);
    let mut parts = Vec::new();
    if delay_us > 0 {
        let mut d = format!("delay {}", ms(delay_us));
        if jitter_us > 0 {
            d.push_str(&format!(" +-{}", ms(jitter_us)));
        }
        parts.push(d);
    }
    if loss_percent > 0.0 {
        parts.push(format!("loss {loss_percent}%"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HopView {
    pub from: String,
    pub to: String,
    pub encapsulation: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    pub vni: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub vlan_id: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub udp_port: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl VnView {
    pub fn from_proto(vn: &pb::VirtualNetwork) -> Self {
        let spec_nodes: BTreeMap<&str, &pb::NodeSpec> = vn
            .spec
            .iter()
            .flat_map(|s| s.nodes.iter())
            .map(|n| (n.name.as_str(), n))
            .collect();
        let nestable = vn.spec.as_ref().is_some_and(|s| s.nestable);
        VnView {
            name: vn.name.clone(),
            provider: vn.provider.clone(),
            state: vn_state(vn.state),
            generation: vn.generation,
            reason: vn.reason.clone(),
            algorithm: vn.algorithm.clone(),
            revenue: vn.revenue,
            cost: vn.cost,
            created: timestamp(vn.created_unix_ms),
            depth: vn.depth,
            children: vn.children.clone(),
            hosts: vn
                .hosts
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            attributes: vn.attributes.as_ref().map(AttributesFile::from_proto),
            nodes: vn
                .nodes
                .iter()
                .map(|p| {
                    let spec = spec_nodes.get(p.node.as_str());
                    NodeView {
                        node: p.node.clone(),
                        host: p.host.clone(),
                        parent_node: p.parent_node.clone(),
                        node_id: p.node_id.clone(),
                        // Unset means the controller's default, a namespace.
                        kind: spec
                            .map(|s| match node_kind(s.kind) {
                                "-" => "netns",
                                k => k,
                            })
                            .unwrap_or("-"),
                        cpu: spec.map(|s| s.cpu).unwrap_or(0),
                        memory_mb: spec.map(|s| s.memory_mb).unwrap_or(0),
                        children_cpu: nestable.then_some(p.children_cpu),
                        children_memory_mb: nestable.then_some(p.children_memory_mb),
                        guest: p.guest.as_ref().map(|g| GuestView {
                            accel: g.accel.clone(),
                            arch: g.arch.clone(),
                            machine: g.machine.clone(),
                            nic: g.nic.clone(),
                            image: g.image.clone(),
                        }),
                    }
                })
                .collect(),
            links: vn
                .links
                .iter()
                .map(|l| LinkView {
                    endpoints: l.endpoints.clone(),
                    bandwidth_mbps: l.bandwidth_mbps,
                    path: l.path.clone(),
                    hops: l
                        .hops
                        .iter()
                        .map(|h| HopView {
                            from: h.from.clone(),
                            to: h.to.clone(),
                            encapsulation: encapsulation(h.encapsulation),
                            vni: h.vni,
                            vlan_id: h.vlan_id,
                            udp_port: h.udp_port,
                        })
                        .collect(),
                    mtu: l.mtu,
                    addresses: l.addresses.clone(),
                    interfaces: l.interfaces.clone(),
                    macs: l.macs.clone(),
                    children_bandwidth_mbps: nestable.then_some(l.children_bandwidth_mbps),
                    delay_us: l.delay_us,
                    jitter_us: l.jitter_us,
                    loss_percent: l.loss_percent,
                    path_delay_us: l.path_delay_us,
                })
                .collect(),
            recoveries: vn.recoveries.iter().map(RecoveryView::from_proto).collect(),
            spec: vn.spec.as_ref().map(VnFile::from_proto),
        }
    }
}

/// `vnctl get vns`.
pub fn vns_table(vns: &[pb::VirtualNetwork], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = vns
        .iter()
        .map(|vn| {
            let mut hosts: Vec<&str> = vn.nodes.iter().map(|n| n.host.as_str()).collect();
            hosts.sort_unstable();
            hosts.dedup();
            vec![
                vn.name.clone(),
                vn_state(vn.state).into(),
                vn.nodes
                    .len()
                    .max(vn.spec.as_ref().map_or(0, |s| s.nodes.len()))
                    .to_string(),
                vn.links
                    .len()
                    .max(vn.spec.as_ref().map_or(0, |s| s.links.len()))
                    .to_string(),
                dash(&hosts.join(",")),
                dash(&vn.algorithm),
                age(vn.created_unix_ms, now),
                dash(&vn.reason),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "NODES",
            "LINKS",
            "HOSTS",
            "ALGORITHM",
            "AGE",
            "REASON",
        ],
        &rows,
    )
}

/// The parent of `vn` as `provider/name` (`None` on the substrate).
pub fn parent_label(vn: &pb::VirtualNetwork) -> Option<String> {
    let spec = vn.spec.as_ref().filter(|s| !s.parent.is_empty())?;
    let owner = if spec.parent_provider.is_empty() {
        &vn.provider
    } else {
        &spec.parent_provider
    };
    Some(format!("{owner}/{}", spec.parent))
}

/// `vnctl get vns --tree`: the caller's VNs as a hierarchy. A VN whose parent belongs to another
/// provider is a root marked `(in provider/name)`; children of other providers in the caller's
/// VNs (shared VNs) are leaves shown as `provider/name`, since the caller cannot see into them.
pub fn vns_tree(vns: &[pb::VirtualNetwork], now: SystemTime) -> String {
    let by_name: BTreeMap<&str, &pb::VirtualNetwork> =
        vns.iter().map(|v| (v.name.as_str(), v)).collect();
    let own_parent = |v: &pb::VirtualNetwork| {
        parent_label(v).filter(|p| {
            p.split_once('/')
                .is_some_and(|(owner, name)| owner == v.provider && by_name.contains_key(name))
        })
    };
    let mut roots: Vec<&pb::VirtualNetwork> =
        vns.iter().filter(|v| own_parent(v).is_none()).collect();
    roots.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    // (vn or a foreign child's label, prefix of its line, prefix of its children's lines)
    fn walk<'a>(
        by_name: &BTreeMap<&str, &'a pb::VirtualNetwork>,
        vn: &'a pb::VirtualNetwork,
        head: String,
        tail: String,
        root_note: Option<String>,
        now: SystemTime,
        rows: &mut Vec<Vec<String>>,
    ) {
        let placement: Vec<&str> = {
            let mut p: Vec<&str> = vn
                .nodes
                .iter()
                .map(|n| {
                    if n.parent_node.is_empty() {
                        n.host.as_str()
                    } else {
                        n.parent_node.as_str()
                    }
                })
                .collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        let name = match root_note {
            Some(n) => format!("{head}{} (in {n})", vn.name),
            None => format!("{head}{}", vn.name),
        };
        rows.push(vec![
            name,
            vn_state(vn.state).into(),
            vn.depth.to_string(),
            vn.nodes
                .len()
                .max(vn.spec.as_ref().map_or(0, |s| s.nodes.len()))
                .to_string(),
            dash(&placement.join(",")),
            age(vn.created_unix_ms, now),
        ]);
        let mut kids = vn.children.clone();
        kids.sort();
        for (i, k) in kids.iter().enumerate() {
            let last = i + 1 == kids.len();
            let (h, t) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            match by_name.get(k.as_str()) {
                Some(child) if !k.contains('/') => walk(
                    by_name,
                    child,
                    format!("{tail}{h}"),
                    format!("{tail}{t}"),
                    None,
                    now,
                    rows,
                ),
                _ => rows.push(vec![
                    format!("{tail}{h}{k}"),
                    "-".into(),
                    (vn.depth + 1).to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]),
            }
        }
    }
    for r in roots {
        let note = parent_label(r);
        walk(
            &by_name,
            r,
            String::new(),
            String::new(),
            note,
            now,
            &mut rows,
        );
    }
    table(&["NAME", "STATE", "DEPTH", "NODES", "IN", "AGE"], &rows)
}

/// `vnctl describe vn NAME`.
pub fn describe_vn(vn: &pb::VirtualNetwork) -> String {
    let v = VnView::from_proto(vn);
    let mut out = describe_header(vn, &v);
    describe_hosts(&v, &mut out);
    describe_nodes(&v, &mut out);
    describe_guests(&v, &mut out);
    describe_links(&v, &mut out);
    describe_children_use(&v, &mut out);
    describe_recoveries(&v, &mut out);
    out
}

/// `Recoveries:`: re-embeddings after faults or drains (none: nothing printed).
fn describe_recoveries(v: &VnView, out: &mut String) {
    if v.recoveries.is_empty() {
        return;
    }
    out.push_str("Recoveries:\n");
    let rows: Vec<Vec<String>> = v
        .recoveries
        .iter()
        .map(|r| {
            vec![
                r.fault.clone(),
                r.cause.clone(),
                dash(&r.moved.join("; ")),
                format!("{} ms", r.reembedded_after_ms),
                r.ready_after_ms
                    .map_or_else(|| "not yet".into(), |ms| format!("{ms} ms")),
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &["FAULT", "CAUSE", "MOVED", "RE-EMBEDDED", "READY"],
        &rows,
    )));
}

/// The `Key: value` lines at the top of `describe vn`.
fn describe_header(vn: &pb::VirtualNetwork, v: &VnView) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, val: String| out.push_str(&format!("{:<12}{}\n", format!("{k}:"), val));
    kv("Name", v.name.clone());
    kv("Provider", v.provider.clone());
    kv("State", v.state.into());
    if !v.reason.is_empty() {
        kv("Reason", v.reason.clone());
    }
    kv(
        "Embedding",
        format!(
            "{} (revenue {:.1}, cost {:.1})",
            dash(&v.algorithm),
            v.revenue,
            v.cost
        ),
    );
    kv("Created", v.created.clone());
    kv("Depth", v.depth.to_string());
    if let Some(spec) = &vn.spec {
        if let Some(p) = parent_label(vn) {
            kv("Parent", p);
        }
        kv(
            "Encap",
            encapsulation(spec.encapsulation).replace('-', "auto"),
        );
    }
    if !v.children.is_empty() {
        kv("Children", v.children.join(", "));
    }
    if let Some(a) = &v.attributes {
        let parts = attribute_words(a);
        if !parts.is_empty() {
            kv("Attributes", parts.join(" "));
        }
    }
    out
}

/// The attributes that are set, each as `name=value` in the spelling of a spec.
fn attribute_words(a: &AttributesFile) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(m) = a.mtu {
        parts.push(format!("mtu={m}"));
    }
    if let Some(b) = a.max_link_bandwidth {
        parts.push(format!("maxLinkBandwidth={b}Mbit/s"));
    }
    if let Some(e) = a.encapsulation {
        parts.push(format!("encapsulation={e:?}").to_lowercase());
    }
    if let Some(i) = a.isolation {
        // As written in a spec (`dedicatedHosts`), not as the Rust variant.
        let name = serde_json::to_value(i)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{i:?}"));
        parts.push(format!("isolation={name}"));
    }
    if let Some(n) = a.max_nodes {
        parts.push(format!("maxNodes={n}"));
    }
    if let Some(c) = a.max_total_cpu {
        parts.push(format!("maxTotalCpu={c}"));
    }
    if !a.allowed_node_kinds.is_empty() {
        let kinds: Vec<String> = a
            .allowed_node_kinds
            .iter()
            .map(|k| format!("{k:?}").to_lowercase())
            .collect();
        parts.push(format!("allowedNodeKinds={}", kinds.join(",")));
    }
    parts
}

/// `Hosts:`: each host's provisioning state.
fn describe_hosts(v: &VnView, out: &mut String) {
    out.push_str("Hosts:\n");
    if v.hosts.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = v
            .hosts
            .iter()
            .map(|(h, s)| vec![h.clone(), s.clone()])
            .collect();
        out.push_str(&indent(&table(&["HOST", "STATE"], &rows)));
    }
}

/// `Nodes:`: where each virtual node runs and what it holds.
fn describe_nodes(v: &VnView, out: &mut String) {
    out.push_str("Nodes:\n");
    if v.nodes.is_empty() {
        out.push_str("  (not placed)\n");
    } else {
        let rows: Vec<Vec<String>> = v
            .nodes
            .iter()
            .map(|n| {
                let host = if n.parent_node.is_empty() {
                    n.host.clone()
                } else {
                    format!("{} (in {})", n.host, n.parent_node)
                };
                vec![
                    n.node.clone(),
                    host,
                    dash(&n.node_id),
                    n.kind.into(),
                    n.cpu.to_string(),
                    format!("{}Mi", n.memory_mb),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["NODE", "HOST", "NODE-ID", "KIND", "CPU", "MEMORY"],
            &rows,
        )));
    }
}

/// `Guests:`: per vm node, the accelerator, architecture, machine type, NIC model and image.
fn describe_guests(v: &VnView, out: &mut String) {
    let rows: Vec<Vec<String>> = v
        .nodes
        .iter()
        .filter_map(|n| {
            let g = n.guest.as_ref()?;
            let nic = match g.nic.as_str() {
                "virtio" => "virtio (paravirtualized)".to_string(),
                "e1000" => "e1000 (emulated)".to_string(),
                other => other.to_string(),
            };
            Some(vec![
                n.node.clone(),
                dash(&g.accel),
                dash(&g.arch),
                dash(&g.machine),
                nic,
                dash(&g.image),
            ])
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str("Guests:\n");
    out.push_str(&indent(&table(
        &["NODE", "ACCEL", "ARCH", "MACHINE", "NIC", "IMAGE"],
        &rows,
    )));
}

/// `Links:`: each virtual link's path, hops, MTU, interfaces and addresses.
fn describe_links(v: &VnView, out: &mut String) {
    out.push_str("Links:\n");
    if v.links.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = v
            .links
            .iter()
            .map(|l| {
                let hops: Vec<String> = l.hops.iter().map(hop_text).collect();
                vec![
                    l.endpoints.join("-"),
                    format!("{}Mbit/s", l.bandwidth_mbps),
                    l.mtu.to_string(),
                    if l.path.is_empty() {
                        "-".into()
                    } else {
                        l.path.join(" > ")
                    },
                    if hops.is_empty() {
                        "local veth".into()
                    } else {
                        hops.join("; ")
                    },
                    pair(&l.interfaces),
                    pair(&l.addresses),
                    impairment_text(l.delay_us, l.jitter_us, l.loss_percent),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &[
                "LINK",
                "BANDWIDTH",
                "MTU",
                "PATH",
                "HOPS",
                "INTERFACES",
                "ADDRESSES",
                "IMPAIRMENT",
            ],
            &rows,
        )));
    }
}

/// For a nestable VN: what its children use of each node and link, of the capacity.
fn describe_children_use(v: &VnView, out: &mut String) {
    if v.nodes.iter().any(|n| n.children_cpu.is_some()) {
        // What the children's embeddings may still use is the rest.
        out.push_str("Used by children (of the capacity):\n");
        let rows: Vec<Vec<String>> = v
            .nodes
            .iter()
            .filter_map(|n| {
                Some(vec![
                    n.node.clone(),
                    format!("{}/{}", n.children_cpu?, n.cpu),
                    format!("{}Mi/{}Mi", n.children_memory_mb?, n.memory_mb),
                ])
            })
            .collect();
        out.push_str(&indent(&table(&["NODE", "CPU", "MEMORY"], &rows)));
        let rows: Vec<Vec<String>> = v
            .links
            .iter()
            .filter_map(|l| {
                Some(vec![
                    l.endpoints.join("-"),
                    format!("{}/{}Mbit/s", l.children_bandwidth_mbps?, l.bandwidth_mbps),
                ])
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&indent(&table(&["LINK", "BANDWIDTH"], &rows)));
        }
    }
}

fn hop_text(h: &HopView) -> String {
    let id = match h.encapsulation {
        "vxlan" => format!("vni {}", h.vni),
        "vlan" => format!("id {}", h.vlan_id),
        _ => String::new(),
    };
    format!("{}>{} {} {}", h.from, h.to, h.encapsulation, id)
        .trim_end()
        .to_owned()
}

fn pair(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

// ----- substrate -----

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostView {
    pub id: String,
    pub connected: bool,
    /// Cordoned by an operator: takes no new node.
    pub cordoned: bool,
    pub underlay_address: String,
    pub underlay: Vec<UnderlayView>,
    pub capacity: ResourcesView,
    pub residual: ResourcesView,
    pub node_kinds: Vec<&'static str>,
    pub labels: Vec<String>,
    pub capabilities: Option<CapabilitiesView>,
    pub desired_generation: u64,
    pub observed_generation: u64,
    pub last_seen: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnderlayView {
    pub name: String,
    pub addresses: Vec<String>,
    pub mtu: u32,
    pub mac: String,
}

#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesView {
    pub cpu: u64,
    pub memory_mb: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilitiesView {
    pub netns: bool,
    pub veth: bool,
    pub tap: bool,
    pub vxlan: bool,
    pub kernel_vlan: bool,
    pub tc: bool,
    pub qemu_present: bool,
    pub qemu: String,
    pub kvm_usable: bool,
    pub kvm_reason: String,
    pub vlan_datapath: String,
    /// How link delay, jitter and loss are realized ("relay", "netem", or "").
    pub impairment: String,
    /// Guest architectures the host runs.
    pub guest_archs: Vec<String>,
    pub host_arch: String,
}

fn resources(r: Option<&pb::Resources>) -> ResourcesView {
    r.map(|r| ResourcesView {
        cpu: r.cpu,
        memory_mb: r.memory_mb,
    })
    .unwrap_or_default()
}

impl HostView {
    pub fn from_proto(h: &pb::Host) -> Self {
        HostView {
            id: h.id.clone(),
            connected: h.connected,
            cordoned: h.cordoned,
            underlay_address: h.underlay_address.clone(),
            underlay: h
                .underlay
                .iter()
                .map(|u| UnderlayView {
                    name: u.name.clone(),
                    addresses: u.addresses.clone(),
                    mtu: u.mtu,
                    mac: u.mac.clone(),
                })
                .collect(),
            capacity: resources(h.capacity.as_ref()),
            residual: resources(h.residual.as_ref()),
            node_kinds: h.node_kinds.iter().map(|k| node_kind(*k)).collect(),
            labels: h.labels.clone(),
            capabilities: h.capabilities.as_ref().map(|c| CapabilitiesView {
                netns: c.netns,
                veth: c.veth,
                tap: c.tap,
                vxlan: c.vxlan,
                kernel_vlan: c.kernel_vlan,
                tc: c.tc,
                qemu_present: c.qemu_present,
                qemu: c.qemu.clone(),
                kvm_usable: c.kvm_usable,
                kvm_reason: c.kvm_reason.clone(),
                vlan_datapath: c.vlan_datapath.clone(),
                impairment: c.impairment.clone(),
                guest_archs: c.guest_archs.clone(),
                host_arch: c.host_arch.clone(),
            }),
            desired_generation: h.desired_generation,
            observed_generation: h.observed_generation,
            last_seen: timestamp(h.last_seen_unix_ms),
        }
    }
}

/// `vnctl get hosts`.
pub fn hosts_table(hosts: &[pb::Host]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let v = HostView::from_proto(h);
            vec![
                v.id,
                if v.connected { "yes" } else { "no" }.into(),
                if v.cordoned { "cordoned" } else { "yes" }.into(),
                dash(&v.underlay_address),
                format!("{}/{}", v.residual.cpu, v.capacity.cpu),
                format!("{}/{}Mi", v.residual.memory_mb, v.capacity.memory_mb),
                dash(&v.node_kinds.join(",")),
                format!("{}/{}", v.observed_generation, v.desired_generation),
                v.capabilities
                    .as_ref()
                    .map(|c| dash(&c.vlan_datapath))
                    .unwrap_or_else(|| "-".into()),
                v.capabilities
                    .as_ref()
                    .map(|c| dash(&c.impairment))
                    .unwrap_or_else(|| "-".into()),
                v.capabilities
                    .as_ref()
                    .map(|c| if c.kvm_usable { "yes" } else { "no" }.to_owned())
                    .unwrap_or_else(|| "-".into()),
                v.capabilities
                    .as_ref()
                    .map(|c| dash(&c.guest_archs.join(",")))
                    .unwrap_or_else(|| "-".into()),
                dash(&v.labels.join(",")),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "CONNECTED",
            "SCHEDULABLE",
            "UNDERLAY",
            "CPU(FREE/ALL)",
            "MEMORY(FREE/ALL)",
            "KINDS",
            "GEN(OBS/DES)",
            "VLAN",
            "IMPAIR",
            "KVM",
            "GUEST-ARCHS",
            "LABELS",
        ],
        &rows,
    )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubstrateLinkView {
    pub id: String,
    pub a: String,
    pub b: String,
    pub bandwidth_mbps: u64,
    pub residual_mbps: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    pub a_address: String,
    pub b_address: String,
    pub segment: String,
    /// Its agents' probes find it down.
    pub down: bool,
}

impl SubstrateLinkView {
    pub fn from_proto(l: &pb::SubstrateLink) -> Self {
        SubstrateLinkView {
            id: l.id.clone(),
            a: l.a.clone(),
            b: l.b.clone(),
            bandwidth_mbps: l.bandwidth_mbps,
            residual_mbps: l.residual_mbps,
            latency_ms: l.latency_ms,
            a_address: l.a_address.clone(),
            b_address: l.b_address.clone(),
            segment: l.segment.clone(),
            down: l.down,
        }
    }
}

/// `vnctl get links`.
pub fn links_table(links: &[pb::SubstrateLink]) -> String {
    let rows: Vec<Vec<String>> = links
        .iter()
        .map(|l| {
            vec![
                dash(&l.id),
                if l.down { "down" } else { "up" }.into(),
                l.a.clone(),
                l.b.clone(),
                format!("{}Mbit/s", l.bandwidth_mbps),
                format!("{}Mbit/s", l.residual_mbps),
                l.latency_ms
                    .map(|v| format!("{v}ms"))
                    .unwrap_or_else(|| "-".into()),
                format!("{} - {}", dash(&l.a_address), dash(&l.b_address)),
                dash(&l.segment),
            ]
        })
        .collect();
    table(
        &[
            "LINK",
            "STATE",
            "A",
            "B",
            "BANDWIDTH",
            "FREE",
            "LATENCY",
            "ADDRESSES",
            "SEGMENT",
        ],
        &rows,
    )
}

/// A guest image and the hosts that hold it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    pub name: String,
    pub format: String,
    pub arch: String,
    pub size_bytes: u64,
    pub digest: String,
    pub hosts: Vec<String>,
}

impl ImageView {
    pub fn from_proto(o: &pb::ImageOffer) -> Self {
        let i = o.image.clone().unwrap_or_default();
        ImageView {
            name: i.name,
            format: i.format,
            arch: i.arch,
            size_bytes: i.size_bytes,
            digest: i.digest,
            hosts: o.hosts.clone(),
        }
    }
}

/// Bytes as people read them (binary units, one decimal).
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// `vnctl get images`: the digest is cut to 19 characters (`sha256:` and 12 hex digits).
pub fn images_table(offers: &[pb::ImageOffer]) -> String {
    let rows: Vec<Vec<String>> = offers
        .iter()
        .map(|o| {
            let v = ImageView::from_proto(o);
            vec![
                v.name,
                dash(&v.format),
                dash(&v.arch),
                size(v.size_bytes),
                dash(&v.digest.chars().take(19).collect::<String>()),
                v.hosts.join(","),
            ]
        })
        .collect();
    table(
        &["IMAGE", "FORMAT", "ARCH", "SIZE", "DIGEST", "HOSTS"],
        &rows,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_vn() -> pb::VirtualNetwork {
        let spec = crate::spec::parse(
            std::path::Path::new("t.yaml"),
            "name: red-net\nprovider: red\nencapsulation: vxlan\nnodes:\n  - {name: a, cpu: 10, memory: 64, host: h1}\n  - {name: b, cpu: 20, memory: 128}\nlinks:\n  - {endpoints: [a, b], bandwidth: 50, addresses: [10.0.0.1/24, 10.0.0.2/24]}\n",
        )
        .unwrap()
        .to_proto();
        pb::VirtualNetwork {
            name: "red-net".into(),
            provider: "red".into(),
            spec: Some(spec),
            state: pb::VnState::Ready as i32,
            nodes: vec![
                pb::NodePlacement {
                    node: "a".into(),
                    host: "h1".into(),
                    parent_node: String::new(),
                    node_id: "n1".into(),
                    children_cpu: 0,
                    children_memory_mb: 0,
                    guest: None,
                },
                pb::NodePlacement {
                    node: "b".into(),
                    host: "h3".into(),
                    parent_node: String::new(),
                    node_id: "n2".into(),
                    children_cpu: 0,
                    children_memory_mb: 0,
                    guest: Some(pb::GuestPlacement {
                        accel: "tcg".into(),
                        arch: "aarch64".into(),
                        machine: "virt".into(),
                        nic: "virtio".into(),
                        image: "default-aarch64 (kernel)".into(),
                    }),
                },
            ],
            links: vec![pb::LinkPlacement {
                endpoints: vec!["a".into(), "b".into()],
                bandwidth_mbps: 50,
                path: vec!["h1".into(), "h2".into(), "h3".into()],
                hops: vec![
                    pb::HopPlacement {
                        from: "h1".into(),
                        to: "h2".into(),
                        encapsulation: pb::Encapsulation::Vxlan as i32,
                        vni: 4097,
                        vlan_id: 0,
                        udp_port: 4789,
                    },
                    pb::HopPlacement {
                        from: "h2".into(),
                        to: "h3".into(),
                        encapsulation: pb::Encapsulation::Vlan as i32,
                        vni: 0,
                        vlan_id: 12,
                        udp_port: 0,
                    },
                ],
                mtu: 1450,
                addresses: vec!["10.0.0.1/24".into(), "10.0.0.2/24".into()],
                interfaces: vec!["eth0".into(), "eth0".into()],
                macs: vec!["02:00:00:00:00:01".into(), "02:00:00:00:00:02".into()],
                children_bandwidth_mbps: 0,
                delay_us: 20_000,
                jitter_us: 5_000,
                loss_percent: 5.0,
                path_delay_us: 0,
            }],
            algorithm: "grc".into(),
            revenue: 130.0,
            cost: 230.0,
            created_unix_ms: 1_700_000_000_000,
            hosts: [
                ("h1".to_string(), "READY".to_string()),
                ("h3".to_string(), "READY".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn images_table_names_each_offer() {
        let offer = pb::ImageOffer {
            image: Some(pb::GuestImage {
                name: "default".into(),
                format: "kernel".into(),
                arch: "x86_64".into(),
                size_bytes: 31_457_280,
                digest: "sha256:0123456789abcdef0123".into(),
            }),
            hosts: vec!["h1".into(), "h2".into()],
        };
        let t = images_table(&[offer]);
        assert!(t.starts_with("IMAGE"), "{t}");
        let row = t.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "default",
                "kernel",
                "x86_64",
                "30.0MiB",
                "sha256:0123456789ab",
                "h1,h2"
            ]
        );
        assert_eq!(size(512), "512B");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["x".into(), "1".into()],
                vec!["yyyy".into(), "2".into()],
            ],
        );
        assert_eq!(t, "A     LONGER\nx     1\nyyyy  2\n");
    }

    #[test]
    fn vns_table_lists_state_hosts_and_age() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 300_000);
        let t = vns_table(&[sample_vn()], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{t}");
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            ["red-net", "READY", "2", "1", "h1,h3", "grc", "5m", "-"]
        );
    }

    #[test]
    fn tree_nests_children_under_their_parents() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 300_000);
        let vn = |name: &str, parent: &str, parent_provider: &str, depth: u32, kids: &[&str]| {
            let mut v = sample_vn();
            v.name = name.into();
            v.depth = depth;
            v.children = kids.iter().map(|k| k.to_string()).collect();
            let spec = v.spec.as_mut().unwrap();
            spec.parent = parent.into();
            spec.parent_provider = parent_provider.into();
            if !parent.is_empty() {
                for n in &mut v.nodes {
                    n.parent_node = format!("{parent}-{}", n.node);
                }
            }
            v
        };
        let vns = vec![
            vn("g", "c", "", 2, &[]),
            vn("p", "", "", 0, &["c", "blue/bc", "d"]),
            vn("c", "p", "", 1, &["g"]),
            vn("d", "p", "red", 1, &[]),
            vn("x", "base", "green", 1, &[]),
        ];
        let t = vns_tree(&vns, now);
        let state_col = t.lines().next().unwrap().find("STATE").unwrap();
        let names: Vec<String> = t
            .lines()
            .map(|l| {
                l.chars()
                    .take(state_col)
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "NAME",
                "p",
                "├─ blue/bc",
                "├─ c",
                "│  └─ g",
                "└─ d",
                "x (in green/base)",
            ],
            "{t}"
        );
        let g = t.lines().find(|l| l.contains("└─ g")).unwrap();
        let cols: Vec<&str> = g.split_whitespace().collect();
        assert_eq!(cols[3..], ["READY", "2", "2", "c-a,c-b", "5m"], "{t}");
        let p = t.lines().nth(1).unwrap();
        assert!(p.contains("h1,h3"), "{t}");
    }

    #[test]
    fn describe_shows_placement_paths_and_identifiers() {
        let d = describe_vn(&sample_vn());
        assert!(d.contains("State:      READY"), "{d}");
        assert!(d.contains("h1 > h2 > h3"), "{d}");
        assert!(d.contains("h1>h2 vxlan vni 4097"), "{d}");
        assert!(d.contains("h2>h3 vlan id 12"), "{d}");
        assert!(d.contains("1450"), "{d}");
        let node_b = d
            .lines()
            .find(|l| l.trim_start().starts_with("b "))
            .unwrap();
        let cols: Vec<&str> = node_b.split_whitespace().collect();
        assert_eq!(cols, ["b", "h3", "n2", "netns", "20", "128Mi"]);
    }

    #[test]
    fn describe_shows_how_each_guest_runs() {
        let d = describe_vn(&sample_vn());
        let rows: Vec<Vec<&str>> = d
            .split("Guests:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{d}"))
            .lines()
            .take(2)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["NODE", "ACCEL", "ARCH", "MACHINE", "NIC", "IMAGE"],
                vec![
                    "b",
                    "tcg",
                    "aarch64",
                    "virt",
                    "virtio",
                    "(paravirtualized)",
                    "default-aarch64",
                    "(kernel)"
                ],
            ]
        );
        let json = serde_json::to_value(VnView::from_proto(&sample_vn())).unwrap();
        assert_eq!(json["nodes"][1]["guest"]["machine"], "virt", "{json}");
        assert!(json["nodes"][0].get("guest").is_none(), "{json}");
    }

    #[test]
    fn a_nestable_vn_shows_what_its_children_use() {
        let plain = describe_vn(&sample_vn());
        assert!(!plain.contains("Used by children"), "{plain}");
        let json = serde_json::to_value(VnView::from_proto(&sample_vn())).unwrap();
        assert!(json["nodes"][0].get("childrenCpu").is_none(), "{json}");

        let mut vn = sample_vn();
        vn.spec.as_mut().unwrap().nestable = true;
        vn.nodes[0].children_cpu = 4;
        vn.nodes[0].children_memory_mb = 32;
        vn.links[0].children_bandwidth_mbps = 30;
        let d = describe_vn(&vn);
        let after: Vec<Vec<&str>> = d
            .split("Used by children (of the capacity):\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{d}"))
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            after,
            [
                vec!["NODE", "CPU", "MEMORY"],
                vec!["a", "4/10", "32Mi/64Mi"],
                vec!["b", "0/20", "0Mi/128Mi"],
                vec!["LINK", "BANDWIDTH"],
                vec!["a-b", "30/50Mbit/s"],
            ]
        );
        let json = serde_json::to_value(VnView::from_proto(&vn)).unwrap();
        assert_eq!(json["nodes"][0]["childrenCpu"], 4, "{json}");
        assert_eq!(json["links"][0]["childrenBandwidthMbps"], 30, "{json}");
    }

    #[test]
    fn describe_writes_attributes_as_a_spec_would() {
        let vn = pb::VirtualNetwork {
            attributes: Some(pb::VnAttributes {
                isolation: pb::IsolationLevel::DedicatedHosts as i32,
                encapsulation: pb::Encapsulation::Vxlan as i32,
                allowed_node_kinds: vec![pb::NodeKind::Netns as i32],
                mtu: Some(1400),
                ..Default::default()
            }),
            ..sample_vn()
        };
        let d = describe_vn(&vn);
        let line = d.lines().find(|l| l.starts_with("Attributes:")).unwrap();
        for w in [
            "mtu=1400",
            "encapsulation=vxlan",
            "isolation=dedicatedHosts",
            "allowedNodeKinds=netns",
        ] {
            assert!(line.contains(w), "{w} not in {line}");
        }
    }

    #[test]
    fn json_view_uses_words_for_enums() {
        let v = serde_json::to_value(VnView::from_proto(&sample_vn())).unwrap();
        assert_eq!(v["state"], "READY");
        assert_eq!(v["links"][0]["hops"][0]["encapsulation"], "vxlan");
        assert_eq!(v["links"][0]["hops"][0]["vni"], 4097);
        assert!(v["links"][0]["hops"][0].get("vlanId").is_none());
        assert_eq!(v["links"][0]["hops"][1]["vlanId"], 12);
        assert_eq!(v["nodes"][1]["host"], "h3");
        assert_eq!(v["spec"]["encapsulation"], "vxlan");
        assert_eq!(v["created"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ages() {
        let t0 = 1_000_000u64;
        let at = |s: u64| UNIX_EPOCH + Duration::from_millis(t0 + s * 1000);
        assert_eq!(age(t0, at(5)), "5s");
        assert_eq!(age(t0, at(600)), "10m");
        assert_eq!(age(t0, at(3 * 3600)), "3h");
        assert_eq!(age(t0, at(3 * 86400)), "3d");
        assert_eq!(age(0, at(1)), "-");
    }

    #[test]
    fn hosts_and_links_tables() {
        let h = pb::Host {
            id: "h1".into(),
            underlay_address: "10.255.0.1".into(),
            connected: true,
            capacity: Some(pb::Resources {
                cpu: 200,
                memory_mb: 1024,
            }),
            residual: Some(pb::Resources {
                cpu: 150,
                memory_mb: 512,
            }),
            node_kinds: vec![pb::NodeKind::Netns as i32, pb::NodeKind::Vm as i32],
            cordoned: true,
            ..Default::default()
        };
        let t = hosts_table(&[h]);
        let cols: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "h1",
                "yes",
                "cordoned",
                "10.255.0.1",
                "150/200",
                "512/1024Mi",
                "netns,vm",
                "0/0",
                "-",
                "-",
                "-",
                "-",
                "-"
            ]
        );
        let l = pb::SubstrateLink {
            id: "h1-h2".into(),
            a: "h1".into(),
            b: "h2".into(),
            bandwidth_mbps: 1000,
            residual_mbps: 950,
            latency_ms: Some(1.0),
            a_address: "10.255.0.1".into(),
            b_address: "10.255.0.2".into(),
            segment: "h1-h2".into(),
            down: true,
        };
        let t = links_table(&[l]);
        assert!(t.lines().nth(1).unwrap().contains("950Mbit/s"), "{t}");
        assert!(t.lines().nth(1).unwrap().starts_with("h1-h2  down "), "{t}");
    }
}
