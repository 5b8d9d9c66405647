//! The YAML form of a VN spec (`vnctl apply -f vn.yaml`) and its translation to `vnet.v1.VnSpec`.
//!
//! The file is a serde type with `deny_unknown_fields` and camelCase keys, kept apart from the
//! proto message. Only structure is checked here (unknown keys, wrong types, link endpoints that
//! name no node, list lengths); every semantic rule (demands, addresses, pins, quotas) is the
//! controller's, checked once at its gRPC edge.
//!
//! ```yaml
//! name: red-net
//! provider: red            # optional: must match --provider
//! encapsulation: vxlan     # vxlan | vlan | auto
//! allowRevisitation: false
//! nodes:
//!   - {name: a, kind: netns, cpu: 10, memory: 64}          # memory in MiB, cpu in abstract units
//!   - {name: b, kind: netns, cpu: 10, memory: 64, host: h2}
//! links:
//!   - {endpoints: [a, b], bandwidth: 50, addresses: [10.0.0.1/24, 10.0.0.2/24]}   # Mbit/s
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vnet_proto::v1 as pb;

/// Why a spec file could not be turned into a `VnSpec`. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed YAML, an unknown key or a value of the wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid YAML, but the structure is wrong (e.g. a link naming an unknown node).
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// How a virtual link crosses a substrate link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncapsulationName {
    Auto,
    Vxlan,
    Vlan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKindName {
    Netns,
    Vm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NicName {
    Virtio,
    E1000,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelName {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IsolationName {
    Standard,
    DedicatedHosts,
}

/// What the controller does with the VN when a host or substrate link under it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryName {
    /// Move nodes of a lost host, reroute links around a dead link (the default).
    Reembed,
    /// Stay degraded until the host or link returns.
    Wait,
}

/// A VN spec as written in YAML.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VnFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<EncapsulationName>,
    #[serde(default)]
    pub allow_revisitation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_path_hops: Option<u32>,
    #[serde(default)]
    pub nestable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub share_with: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<AttributesFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryName>,
    /// At most this many nodes on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_nodes_per_host: Option<u32>,
    /// As few nodes per host as the hosts allow.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spread: bool,
    pub nodes: Vec<NodeFile>,
    #[serde(default)]
    pub links: Vec<LinkFile>,
}

/// Architectural attributes (a child VN may only narrow its parent's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributesFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<EncapsulationName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_link_bandwidth: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_node_kinds: Vec<NodeKindName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_nodes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_cpu: Option<u64>,
}

/// A virtual node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NodeKindName>,
    /// Abstract units (100 = one core). Signed so that a bad value reaches the controller's
    /// validation and gets its precise message.
    #[serde(default)]
    pub cpu: i64,
    /// MiB.
    #[serde(default)]
    pub memory: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<NicName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<AccelName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Guest CPU architecture: `x86_64` (default) or `aarch64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

/// A static route inside a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteFile {
    /// CIDR or "default".
    pub destination: String,
    pub via: String,
}

/// A virtual link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkFile {
    pub endpoints: Vec<String>,
    /// Mbit/s.
    #[serde(default)]
    pub bandwidth: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encapsulation: Option<EncapsulationName>,
    /// One-way added delay, e.g. `20ms`, `500us`, `1.5ms`, `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Each frame's delay is uniform in `delay +- jitter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// Random loss in percent, each direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Largest one-way latency of the substrate path the link may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
}

/// A duration of the spec (`20ms`, `500us`, `1.5ms`, `2s`; a bare number is milliseconds) in
/// microseconds.
pub fn duration_us(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "us" | "µs" => 1.0,
        "" | "ms" => 1_000.0,
        "s" => 1_000_000.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use us, ms or s, e.g. 20ms)"
            ));
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 20ms, 500us)"))?;
    let us = (v * scale).round();
    if !us.is_finite() || us > i64::MAX as f64 / 2.0 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(us as i64)
}

/// The spec's form of a duration in microseconds (`20ms`, `1500us`).
pub fn duration_text(us: i64) -> String {
    if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// Parses and structurally checks spec text; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<VnFile, SpecError> {
    let file: VnFile = serde_yaml_ng::from_str(text).map_err(|e| parse_error(path, &e))?;
    file.check()
        .map_err(|(field, message)| SpecError::Invalid {
            path: path.to_owned(),
            field,
            message,
        })?;
    Ok(file)
}

/// Reads, parses and structurally checks a file of one spec.
pub fn load(path: &Path) -> Result<VnFile, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// One VN spec of a source, with where it came from and (when the document is what
/// `vnctl get vn NAME -o yaml` prints) the generation it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecDoc {
    pub file: VnFile,
    /// The VN generation the document names (`generation:` next to `spec:`), if any.
    pub generation: Option<u64>,
    /// `path`, or `path` and the document's first line for a multi-document file.
    pub origin: String,
}

/// Every VN spec of `source`, as kubectl reads `-f`: a file (several YAML documents separated by
/// `---` lines), `-` for standard input, or a directory (its `*.yaml`, `*.yml` and `*.json`
/// files in name order, not recursive). A document is a spec, or a VN as `vnctl get vn -o
/// yaml|json` prints it (its `spec` is applied, its status ignored), or a list of those (`vnctl
/// get vns -o yaml`). Every document is checked before anything is returned: one bad document
/// fails the whole source, naming its file and line.
pub fn load_all(source: &Path) -> Result<Vec<SpecDoc>, SpecError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })
    };
    if source == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
            SpecError::Read {
                path: PathBuf::from("<stdin>"),
                source: e,
            }
        })?;
        return parse_all(Path::new("<stdin>"), &text);
    }
    if source.is_dir() {
        let entries = std::fs::read_dir(source).map_err(|e| SpecError::Read {
            path: source.to_owned(),
            source: e,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            out.extend(parse_all(&f, &read(&f)?)?);
        }
        return Ok(out);
    }
    parse_all(source, &read(source)?)
}

/// The documents of `text` (separated by `---` lines), each parsed and checked; line numbers in
/// errors are the file's.
pub fn parse_all(path: &Path, text: &str) -> Result<Vec<SpecDoc>, SpecError> {
    let mut chunks: Vec<(usize, String)> = vec![(0, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            chunks.push((i + 1, String::new()));
            continue;
        }
        let chunk = &mut chunks.last_mut().expect("one chunk").1;
        chunk.push_str(line);
        chunk.push('\n');
    }
    let several = chunks.len() > 1;
    let mut out = Vec::new();
    for (first, chunk) in chunks {
        let blank = chunk
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if blank {
            continue;
        }
        let origin = if several {
            format!("{}:{}", path.display(), first + 1)
        } else {
            path.display().to_string()
        };
        let shift = |e: SpecError| match e {
            SpecError::Parse {
                path,
                line,
                column,
                message,
            } => SpecError::Parse {
                path,
                line: line + first,
                column,
                message,
            },
            e => e,
        };
        for (file, generation) in parse_document(path, &chunk).map_err(shift)? {
            out.push(SpecDoc {
                file,
                generation,
                origin: origin.clone(),
            });
        }
    }
    if out.is_empty() {
        return Err(SpecError::Invalid {
            path: path.to_owned(),
            field: "(document)".into(),
            message: "no VN spec in it".into(),
        });
    }
    Ok(out)
}

/// One YAML document: a spec, a VN as `get -o yaml` prints it, or a list of those.
fn parse_document(path: &Path, text: &str) -> Result<Vec<(VnFile, Option<u64>)>, SpecError> {
    use serde_yaml_ng::Value;
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| parse_error(path, &e))?;
    let wrapped = |v: &Value| v.as_mapping().is_some_and(|m| m.contains_key("spec"));
    let items: Vec<&Value> = match &value {
        Value::Sequence(items) if items.iter().all(wrapped) => items.iter().collect(),
        v if wrapped(v) => vec![v],
        // A plain spec: parsed from the text, so that errors carry their line and column.
        _ => return Ok(vec![(parse(path, text)?, None)]),
    };
    let mut out = Vec::new();
    for (i, v) in items.into_iter().enumerate() {
        let invalid = |field: &str, message: String| SpecError::Invalid {
            path: path.to_owned(),
            field: field.into(),
            message,
        };
        let spec = v.get("spec").cloned().unwrap_or(Value::Null);
        let file: VnFile = serde_yaml_ng::from_value(spec)
            .map_err(|e| invalid(&format!("[{i}].spec"), e.to_string()))?;
        file.check()
            .map_err(|(field, message)| invalid(&format!("[{i}].spec.{field}"), message))?;
        let generation = v.get("generation").and_then(Value::as_u64);
        out.push((file, generation));
    }
    Ok(out)
}

fn parse_error(path: &Path, e: &serde_yaml_ng::Error) -> SpecError {
    let full = e.to_string();
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // serde_yaml_ng appends " at line L column C"; the location goes in front instead.
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    SpecError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

impl VnFile {
    /// Structural checks only: names present and unique, link endpoints that exist, list
    /// lengths. Returns the offending field path and a message.
    fn check(&self) -> Result<(), (String, String)> {
        if self.name.trim().is_empty() {
            return Err(("name".into(), "must not be empty".into()));
        }
        if self.nodes.is_empty() {
            return Err(("nodes".into(), "a VN needs at least one node".into()));
        }
        let mut names = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.trim().is_empty() {
                return Err((format!("nodes[{i}].name"), "must not be empty".into()));
            }
            if !names.insert(n.name.as_str()) {
                return Err((
                    format!("nodes[{i}].name"),
                    format!("duplicate node name {:?}", n.name),
                ));
            }
        }
        for (i, l) in self.links.iter().enumerate() {
            if l.endpoints.len() != 2 {
                return Err((
                    format!("links[{i}].endpoints"),
                    format!("a link joins exactly two nodes, got {}", l.endpoints.len()),
                ));
            }
            for (j, e) in l.endpoints.iter().enumerate() {
                if !names.contains(e.as_str()) {
                    let known: Vec<&str> = names.iter().copied().collect();
                    return Err((
                        format!("links[{i}].endpoints[{j}]"),
                        format!("unknown node {e:?} (nodes: {})", known.join(", ")),
                    ));
                }
            }
            for (field, d) in [
                ("delay", &l.delay),
                ("jitter", &l.jitter),
                ("maxDelay", &l.max_delay),
            ] {
                if let Some(d) = d {
                    duration_us(d).map_err(|e| (format!("links[{i}].{field}"), e))?;
                }
            }
            for (field, list) in [("addresses", &l.addresses), ("interfaces", &l.interfaces)] {
                if !list.is_empty() && list.len() != 2 {
                    return Err((
                        format!("links[{i}].{field}"),
                        format!(
                            "give none or two, one per endpoint in order, got {}",
                            list.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The proto message sent to the controller.
    pub fn to_proto(&self) -> pb::VnSpec {
        pb::VnSpec {
            name: self.name.clone(),
            provider: self.provider.clone().unwrap_or_default(),
            encapsulation: encap_to_proto(self.encapsulation) as i32,
            allow_revisitation: self.allow_revisitation,
            nodes: self.nodes.iter().map(NodeFile::to_proto).collect(),
            links: self.links.iter().map(LinkFile::to_proto).collect(),
            algorithm: self.algorithm.clone().unwrap_or_default(),
            max_path_hops: self.max_path_hops.unwrap_or(0),
            nestable: self.nestable,
            share_with: self.share_with.clone(),
            parent: self.parent.clone().unwrap_or_default(),
            parent_provider: self.parent_provider.clone().unwrap_or_default(),
            attributes: self.attributes.as_ref().map(AttributesFile::to_proto),
            recovery: match self.recovery {
                None => pb::RecoveryPolicy::Unspecified,
                Some(RecoveryName::Reembed) => pb::RecoveryPolicy::Reembed,
                Some(RecoveryName::Wait) => pb::RecoveryPolicy::Wait,
            } as i32,
            max_nodes_per_host: self.max_nodes_per_host.unwrap_or(0),
            spread: self.spread,
        }
    }

    /// The YAML form of a spec the controller holds (for `apply`'s comparison and `-o yaml`).
    pub fn from_proto(spec: &pb::VnSpec) -> Self {
        VnFile {
            name: spec.name.clone(),
            provider: non_empty(&spec.provider),
            encapsulation: encap_from_proto(spec.encapsulation),
            allow_revisitation: spec.allow_revisitation,
            algorithm: non_empty(&spec.algorithm),
            max_path_hops: (spec.max_path_hops != 0).then_some(spec.max_path_hops),
            nestable: spec.nestable,
            parent: non_empty(&spec.parent),
            parent_provider: non_empty(&spec.parent_provider),
            share_with: spec.share_with.clone(),
            attributes: spec.attributes.as_ref().map(AttributesFile::from_proto),
            recovery: match pb::RecoveryPolicy::try_from(spec.recovery) {
                Ok(pb::RecoveryPolicy::Reembed) => Some(RecoveryName::Reembed),
                Ok(pb::RecoveryPolicy::Wait) => Some(RecoveryName::Wait),
                _ => None,
            },
            max_nodes_per_host: (spec.max_nodes_per_host != 0).then_some(spec.max_nodes_per_host),
            spread: spec.spread,
            nodes: spec.nodes.iter().map(NodeFile::from_proto).collect(),
            links: spec.links.iter().map(LinkFile::from_proto).collect(),
        }
    }

    /// Fills in the defaults the controller applies to unset fields, so that a spec read back
    /// from the controller compares equal to the file it came from.
    fn normalized(&self) -> Self {
        let mut v = self.clone();
        v.encapsulation = Some(v.encapsulation.unwrap_or(EncapsulationName::Auto));
        for n in &mut v.nodes {
            n.kind = Some(n.kind.unwrap_or(NodeKindName::Netns));
        }
        for l in &mut v.links {
            if l.encapsulation == Some(EncapsulationName::Auto) {
                l.encapsulation = None;
            }
            for d in [&mut l.delay, &mut l.jitter, &mut l.max_delay] {
                if let Some(us) = d.as_deref().and_then(|t| duration_us(t).ok()) {
                    *d = (us != 0).then(|| duration_text(us));
                }
            }
            if l.loss == Some(0.0) {
                l.loss = None;
            }
        }
        if v.attributes.as_ref() == Some(&AttributesFile::default()) {
            v.attributes = None;
        }
        v
    }
}

impl NodeFile {
    fn to_proto(&self) -> pb::NodeSpec {
        pb::NodeSpec {
            name: self.name.clone(),
            kind: kind_to_proto(self.kind) as i32,
            cpu: self.cpu,
            memory_mb: self.memory,
            host: self.host.clone().unwrap_or_default(),
            location: self.location.clone().unwrap_or_default(),
            routes: self
                .routes
                .iter()
                .map(|r| pb::Route {
                    destination: r.destination.clone(),
                    via: r.via.clone(),
                })
                .collect(),
            image: self.image.clone().unwrap_or_default(),
            nic: match self.nic {
                None => pb::NicModel::Unspecified,
                Some(NicName::Virtio) => pb::NicModel::Virtio,
                Some(NicName::E1000) => pb::NicModel::E1000,
            } as i32,
            accel: match self.accel {
                None => pb::Acceleration::Unspecified,
                Some(AccelName::Auto) => pb::Acceleration::Auto,
                Some(AccelName::Kvm) => pb::Acceleration::Kvm,
                Some(AccelName::Tcg) => pb::Acceleration::Tcg,
            } as i32,
            vcpus: self.vcpus.unwrap_or(0),
            arch: self.arch.clone().unwrap_or_default(),
        }
    }

    fn from_proto(n: &pb::NodeSpec) -> Self {
        NodeFile {
            name: n.name.clone(),
            kind: kind_from_proto(n.kind),
            cpu: n.cpu,
            memory: n.memory_mb,
            host: non_empty(&n.host),
            location: non_empty(&n.location),
            routes: n
                .routes
                .iter()
                .map(|r| RouteFile {
                    destination: r.destination.clone(),
                    via: r.via.clone(),
                })
                .collect(),
            image: non_empty(&n.image),
            nic: match pb::NicModel::try_from(n.nic) {
                Ok(pb::NicModel::Virtio) => Some(NicName::Virtio),
                Ok(pb::NicModel::E1000) => Some(NicName::E1000),
                _ => None,
            },
            accel: match pb::Acceleration::try_from(n.accel) {
                Ok(pb::Acceleration::Auto) => Some(AccelName::Auto),
                Ok(pb::Acceleration::Kvm) => Some(AccelName::Kvm),
                Ok(pb::Acceleration::Tcg) => Some(AccelName::Tcg),
                _ => None,
            },
            vcpus: (n.vcpus != 0).then_some(n.vcpus),
            arch: non_empty(&n.arch),
        }
    }
}

impl LinkFile {
    fn to_proto(&self) -> pb::LinkSpec {
        pb::LinkSpec {
            endpoints: self.endpoints.clone(),
            bandwidth_mbps: self.bandwidth,
            addresses: self.addresses.clone(),
            interfaces: self.interfaces.clone(),
            encapsulation: encap_to_proto(self.encapsulation) as i32,
            // checked by `VnFile::check`; -1 makes the controller refuse it, naming the field
            delay_us: self
                .delay
                .as_deref()
                .map_or(0, |d| duration_us(d).unwrap_or(-1)),
            jitter_us: self
                .jitter
                .as_deref()
                .map_or(0, |d| duration_us(d).unwrap_or(-1)),
            loss_percent: self.loss.unwrap_or(0.0),
            max_delay_us: self
                .max_delay
                .as_deref()
                .map_or(0, |d| duration_us(d).unwrap_or(-1)),
        }
    }

    fn from_proto(l: &pb::LinkSpec) -> Self {
        let dur = |us: i64| (us != 0).then(|| duration_text(us));
        LinkFile {
            endpoints: l.endpoints.clone(),
            bandwidth: l.bandwidth_mbps,
            addresses: l.addresses.clone(),
            interfaces: l.interfaces.clone(),
            encapsulation: encap_from_proto(l.encapsulation),
            delay: dur(l.delay_us),
            jitter: dur(l.jitter_us),
            loss: (l.loss_percent != 0.0).then_some(l.loss_percent),
            max_delay: dur(l.max_delay_us),
        }
    }
}

impl AttributesFile {
    fn to_proto(&self) -> pb::VnAttributes {
        pb::VnAttributes {
            encapsulation: encap_to_proto(self.encapsulation) as i32,
            mtu: self.mtu,
            max_link_bandwidth_mbps: self.max_link_bandwidth,
            allowed_node_kinds: self
                .allowed_node_kinds
                .iter()
                .map(|k| kind_to_proto(Some(*k)) as i32)
                .collect(),
            isolation: match self.isolation {
                None => pb::IsolationLevel::Unspecified,
                Some(IsolationName::Standard) => pb::IsolationLevel::Standard,
                Some(IsolationName::DedicatedHosts) => pb::IsolationLevel::DedicatedHosts,
            } as i32,
            max_nodes: self.max_nodes,
            max_total_cpu: self.max_total_cpu,
        }
    }

    pub fn from_proto(a: &pb::VnAttributes) -> Self {
        AttributesFile {
            encapsulation: encap_from_proto(a.encapsulation),
            mtu: a.mtu,
            max_link_bandwidth: a.max_link_bandwidth_mbps,
            allowed_node_kinds: a
                .allowed_node_kinds
                .iter()
                .filter_map(|k| kind_from_proto(*k))
                .collect(),
            isolation: match pb::IsolationLevel::try_from(a.isolation) {
                Ok(pb::IsolationLevel::Standard) => Some(IsolationName::Standard),
                Ok(pb::IsolationLevel::DedicatedHosts) => Some(IsolationName::DedicatedHosts),
                _ => None,
            },
            max_nodes: a.max_nodes,
            max_total_cpu: a.max_total_cpu,
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn encap_to_proto(e: Option<EncapsulationName>) -> pb::Encapsulation {
    match e {
        None => pb::Encapsulation::Unspecified,
        Some(EncapsulationName::Auto) => pb::Encapsulation::Auto,
        Some(EncapsulationName::Vxlan) => pb::Encapsulation::Vxlan,
        Some(EncapsulationName::Vlan) => pb::Encapsulation::Vlan,
    }
}

fn encap_from_proto(e: i32) -> Option<EncapsulationName> {
    match pb::Encapsulation::try_from(e) {
        Ok(pb::Encapsulation::Auto) => Some(EncapsulationName::Auto),
        Ok(pb::Encapsulation::Vxlan) => Some(EncapsulationName::Vxlan),
        Ok(pb::Encapsulation::Vlan) => Some(EncapsulationName::Vlan),
        _ => None,
    }
}

fn kind_to_proto(k: Option<NodeKindName>) -> pb::NodeKind {
    match k {
        None => pb::NodeKind::Unspecified,
        Some(NodeKindName::Netns) => pb::NodeKind::Netns,
        Some(NodeKindName::Vm) => pb::NodeKind::Vm,
    }
}

fn kind_from_proto(k: i32) -> Option<NodeKindName> {
    match pb::NodeKind::try_from(k) {
        Ok(pb::NodeKind::Netns) => Some(NodeKindName::Netns),
        Ok(pb::NodeKind::Vm) => Some(NodeKindName::Vm),
        _ => None,
    }
}

/// Where a spec the controller holds (`applied`) differs from a file (`wanted`), one line per
/// difference (`nodes[b].cpu: 10 -> 20`). Fields the controller fills in for unset ones (the
/// provider, default encapsulation and node kind) do not count as differences.
pub fn diff(applied: &pb::VnSpec, wanted: &VnFile) -> Vec<String> {
    let mut have = VnFile::from_proto(applied).normalized();
    let want = wanted.normalized();
    if want.provider.is_none() {
        have.provider = None;
    }
    let have = keyed(serde_json::to_value(&have).expect("spec serializes"));
    let want = keyed(serde_json::to_value(&want).expect("spec serializes"));
    let mut out = Vec::new();
    diff_values("", &have, &want, &mut out);
    out
}

/// Turns the node and link lists into maps keyed by node name and by "a-b", so that a
/// difference names the node or link rather than a position.
fn keyed(mut v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    if let Some(obj) = v.as_object_mut() {
        if let Some(Value::Array(nodes)) = obj.remove("nodes") {
            let map: serde_json::Map<String, Value> = nodes
                .into_iter()
                .map(|n| {
                    let name = n["name"].as_str().unwrap_or_default().to_owned();
                    (name, n)
                })
                .collect();
            obj.insert("nodes".into(), Value::Object(map));
        }
        if let Some(Value::Array(links)) = obj.remove("links") {
            let mut map = serde_json::Map::new();
            for l in links {
                let ends: Vec<&str> = l["endpoints"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
                    .unwrap_or_default();
                let mut key = ends.join("-");
                while map.contains_key(&key) {
                    key.push('\'');
                }
                map.insert(key, l);
            }
            obj.insert("links".into(), Value::Object(map));
        }
    }
    v
}

fn diff_values(
    path: &str,
    have: &serde_json::Value,
    want: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            let keys: BTreeSet<&String> = h.keys().chain(w.keys()).collect();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else if path.ends_with("nodes") || path.ends_with("links") {
                    format!("{path}[{k}]")
                } else {
                    format!("{path}.{k}")
                };
                match (h.get(k), w.get(k)) {
                    (Some(a), Some(b)) => diff_values(&sub, a, b, out),
                    (Some(a), None) => out.push(format!("{sub}: {} -> (unset)", short(a))),
                    (None, Some(b)) => out.push(format!("{sub}: (unset) -> {}", short(b))),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {} -> {}", short(a), short(b))),
        _ => {}
    }
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        let head: String = s.chars().take(157).collect();
        format!("{head}...")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE4: &str = r#"
name: red-net
provider: red            # or from the caller's identity
encapsulation: vxlan     # vxlan | vlan | auto
allowRevisitation: false
nodes:
  - {name: a, kind: netns, cpu: 10, memory: 64}
  - {name: b, kind: netns, cpu: 10, memory: 64, host: h2}   # optional pin
  - {name: c, kind: vm, cpu: 20, memory: 256, image: default, nic: virtio}
links:
  - {endpoints: [a, b], bandwidth: 50, addresses: [10.0.0.1/24, 10.0.0.2/24]}   # Mbit/s
"#;

    fn p(text: &str) -> Result<VnFile, SpecError> {
        parse(Path::new("vn.yaml"), text)
    }

    #[test]
    fn impairments_and_spreading_parse_and_round_trip() {
        let text = "name: x\nspread: true\nnodes: [{name: a}, {name: b}]\nlinks:\n  - {endpoints: [a, b], bandwidth: 5, delay: 20ms, jitter: 1.5ms, loss: 5, maxDelay: 1s}\n";
        let f = p(text).unwrap();
        let spec = f.to_proto();
        let l = &spec.links[0];
        assert_eq!(
            (l.delay_us, l.jitter_us, l.loss_percent, l.max_delay_us),
            (20_000, 1_500, 5.0, 1_000_000)
        );
        assert!(spec.spread);
        let back = VnFile::from_proto(&spec);
        assert_eq!(back.links[0].jitter.as_deref(), Some("1500us"));
        assert_eq!(back.normalized(), f.normalized());
        for (d, us) in [
            ("500us", 500),
            ("2s", 2_000_000),
            ("7", 7_000),
            (" 3ms ", 3_000),
        ] {
            assert_eq!(duration_us(d), Ok(us), "{d}");
        }
    }

    #[test]
    fn a_bad_duration_names_its_field() {
        for (field, value, want) in [
            ("delay", "20 parsecs", "unknown unit"),
            ("jitter", "fast", "unknown unit \"fast\""),
            ("maxDelay", "ms", "is not a duration"),
        ] {
            let text = format!(
                "name: x\nnodes: [{{name: a}}, {{name: b}}]\nlinks:\n  - {{endpoints: [a, b], bandwidth: 5, {field}: \"{value}\"}}\n"
            );
            let e = p(&text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("links[0].{field}")) && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn issue_example_parses_into_the_proto() {
        let spec = p(ISSUE4).unwrap().to_proto();
        assert_eq!(spec.name, "red-net");
        assert_eq!(spec.provider, "red");
        assert_eq!(spec.encapsulation, pb::Encapsulation::Vxlan as i32);
        assert_eq!(spec.nodes.len(), 3);
        assert_eq!(spec.nodes[1].host, "h2");
        assert_eq!(spec.nodes[1].memory_mb, 64);
        assert_eq!(spec.nodes[2].kind, pb::NodeKind::Vm as i32);
        assert_eq!(spec.nodes[2].nic, pb::NicModel::Virtio as i32);
        assert_eq!(spec.nodes[2].image, "default");
        assert_eq!(spec.links[0].bandwidth_mbps, 50);
        assert_eq!(spec.links[0].addresses, ["10.0.0.1/24", "10.0.0.2/24"]);
        assert!(spec.attributes.is_none());
    }

    #[test]
    fn extended_fields_parse() {
        let text = r#"
name: x
encapsulation: vlan
algorithm: grc
maxPathHops: 3
nestable: true
shareWith: [blue]
parent: base
parentProvider: green
attributes: {encapsulation: vxlan, mtu: 1400, maxLinkBandwidth: 100, allowedNodeKinds: [netns],
             isolation: dedicatedHosts, maxNodes: 10, maxTotalCpu: 500}
nodes:
  - name: a
    location: rack1
    routes: [{destination: default, via: 10.0.0.2}]
  - {name: b, kind: vm, accel: tcg, vcpus: 2, nic: e1000}
links:
  - {endpoints: [a, b], bandwidth: 5, interfaces: [up0, up1], encapsulation: vxlan}
"#;
        let s = p(text).unwrap().to_proto();
        assert_eq!(s.algorithm, "grc");
        assert_eq!(s.max_path_hops, 3);
        assert!(s.nestable);
        assert_eq!(s.share_with, ["blue"]);
        assert_eq!(s.parent, "base");
        assert_eq!(s.parent_provider, "green");
        let a = s.attributes.unwrap();
        assert_eq!(a.mtu, Some(1400));
        assert_eq!(a.max_link_bandwidth_mbps, Some(100));
        assert_eq!(a.allowed_node_kinds, [pb::NodeKind::Netns as i32]);
        assert_eq!(a.isolation, pb::IsolationLevel::DedicatedHosts as i32);
        assert_eq!(s.nodes[0].routes[0].destination, "default");
        assert_eq!(s.nodes[0].location, "rack1");
        assert_eq!(s.nodes[1].accel, pb::Acceleration::Tcg as i32);
        assert_eq!(s.nodes[1].vcpus, 2);
        assert_eq!(s.nodes[1].nic, pb::NicModel::E1000 as i32);
        assert_eq!(s.links[0].interfaces, ["up0", "up1"]);
        assert_eq!(s.links[0].encapsulation, pb::Encapsulation::Vxlan as i32);
    }

    #[test]
    fn unknown_key_names_file_line_and_field() {
        let text = "name: x\nnodes:\n  - name: a\n    cpuu: 3\n";
        let e = p(text).unwrap_err().to_string();
        assert!(e.starts_with("vn.yaml:4:"), "{e}");
        assert!(e.contains("nodes[0]"), "{e}");
        assert!(e.contains("unknown field `cpuu`"), "{e}");
    }

    #[test]
    fn wrong_type_names_file_line_and_field() {
        let text = "name: x\nnodes:\n  - {name: a, cpu: lots}\n";
        let e = p(text).unwrap_err().to_string();
        assert!(e.starts_with("vn.yaml:3:"), "{e}");
        assert!(e.contains("nodes[0].cpu"), "{e}");
    }

    #[test]
    fn bad_enum_value_lists_the_choices() {
        let e = p("name: x\nencapsulation: gre\nnodes: [{name: a}]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("encapsulation"), "{e}");
        assert!(e.contains("vxlan"), "{e}");
    }

    #[test]
    fn negative_demands_are_left_to_the_controller() {
        let s = p("name: x\nnodes: [{name: a, cpu: -5}]\n")
            .unwrap()
            .to_proto();
        assert_eq!(s.nodes[0].cpu, -5);
    }

    #[test]
    fn unknown_endpoint_is_named() {
        let text = "name: x\nnodes: [{name: a}, {name: b}]\nlinks: [{endpoints: [a, zz]}]\n";
        let e = p(text).unwrap_err().to_string();
        assert_eq!(
            e,
            "vn.yaml: links[0].endpoints[1]: unknown node \"zz\" (nodes: a, b)"
        );
    }

    #[test]
    fn structural_errors() {
        let cases = [
            ("name: ''\nnodes: [{name: a}]\n", "name: must not be empty"),
            (
                "name: x\nnodes: []\n",
                "nodes: a VN needs at least one node",
            ),
            (
                "name: x\nnodes: [{name: a}, {name: a}]\n",
                "duplicate node name",
            ),
            (
                "name: x\nnodes: [{name: a}]\nlinks: [{endpoints: [a]}]\n",
                "exactly two nodes, got 1",
            ),
            (
                "name: x\nnodes: [{name: a}, {name: b}]\nlinks: [{endpoints: [a, b], addresses: [10.0.0.1/24]}]\n",
                "links[0].addresses: give none or two",
            ),
        ];
        for (text, want) in cases {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn every_example_spec_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                for d in load_all(&path).unwrap_or_else(|e| panic!("{e}")) {
                    assert!(!d.file.to_proto().nodes.is_empty());
                    n += 1;
                }
            }
        }
        assert!(n >= 5, "examples found: {n}");
    }

    #[test]
    fn several_documents_a_directory_and_get_output() {
        let dir = tempfile::tempdir().unwrap();
        let one = "name: a\nnodes: [{name: x}]\n";
        let two = "# two VNs\n---\nname: b\nnodes: [{name: x}]\n---\nname: c\nnodes: [{name: y}]\n";
        std::fs::write(dir.path().join("1.yaml"), one).unwrap();
        std::fs::write(dir.path().join("2.yml"), two).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a spec").unwrap();
        let names: Vec<String> = load_all(dir.path())
            .unwrap()
            .into_iter()
            .map(|d| d.file.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        // An error in the third document names the file's line.
        let bad = "name: b\nnodes: [{name: x}]\n---\nname: c\nnodes: [{name: y, cpus: 1}]\n";
        let e = parse_all(Path::new("f.yaml"), bad).unwrap_err().to_string();
        assert!(e.starts_with("f.yaml:5:"), "{e}");
        // What `vnctl get vn -o yaml` prints: its spec and its generation; status is ignored.
        let got = "name: a\nprovider: red\nstate: READY\ngeneration: 4\nnodes: [{node: x, host: h1}]\nspec:\n  name: a\n  provider: red\n  nodes: [{name: x}]\n";
        let d = parse_all(Path::new("g.yaml"), got).unwrap();
        assert_eq!((d[0].file.name.as_str(), d[0].generation), ("a", Some(4)));
        // ... and a list of them (`get vns -o yaml`).
        let list = format!("- {}", got.replace('\n', "\n  "));
        assert_eq!(parse_all(Path::new("l.yaml"), &list).unwrap().len(), 1);
        let e = parse_all(Path::new("e.yaml"), "---\n# nothing\n").unwrap_err();
        assert!(e.to_string().contains("no VN spec"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = load_all(Path::new("/nonexistent/vn.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot read spec /nonexistent/vn.yaml"),
            "{e}"
        );
    }

    #[test]
    fn proto_round_trip_has_no_diff() {
        let f = p(ISSUE4).unwrap();
        assert_eq!(diff(&f.to_proto(), &f), Vec::<String>::new());
        assert_eq!(VnFile::from_proto(&f.to_proto()), f);
    }

    #[test]
    fn controller_defaults_are_not_differences() {
        let f = p("name: x\nnodes: [{name: a}]\n").unwrap();
        let mut applied = f.to_proto();
        applied.provider = "red".into();
        applied.encapsulation = pb::Encapsulation::Auto as i32;
        applied.nodes[0].kind = pb::NodeKind::Netns as i32;
        assert!(diff(&applied, &f).is_empty());
    }

    #[test]
    fn differences_name_node_and_link() {
        let f = p(ISSUE4).unwrap();
        let mut applied = f.to_proto();
        applied.nodes[1].cpu = 99;
        applied.links[0].bandwidth_mbps = 10;
        applied.nodes.remove(2);
        let d = diff(&applied, &f);
        assert_eq!(
            d,
            [
                "links[a-b].bandwidth: 10 -> 50",
                "nodes[b].cpu: 99 -> 10",
                "nodes[c]: (unset) -> {\"cpu\":20,\"image\":\"default\",\"kind\":\"vm\",\"memory\":256,\"name\":\"c\",\"nic\":\"virtio\"}",
            ]
        );
    }
}
