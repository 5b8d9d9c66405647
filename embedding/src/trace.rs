//! The neutral JSON trace format of the shared VNE workloads, and single substrate/request files.
//!
//! ```json
//! {"substrate": {"nodes": [{"id": 0, "cpu": 94}], "links": [{"u": 0, "v": 18, "bw": 98}]},
//!  "requests": [{"id": 0, "arrival": 8.0, "lifetime": 85.2,
//!                "nodes": [{"id": 0, "cpu": 17}], "links": [{"u": 0, "v": 3, "bw": 20}]}]}
//! ```
//!
//! Ids are integers or strings. Demands and capacities must be non-negative integers (`20` or
//! `20.0`); anything else is rejected with an error naming the item (`request 17, node 3: cpu
//! ...`). Optional extensions: substrate nodes `memory`, `kinds` (`["netns","vm"]`), `labels`;
//! substrate links `latency_ms`; request nodes `memory`, `kind`, `host`, `candidates`,
//! `location`; requests `options` (`allow_revisitation`, `allow_path_split`, `max_path_hops`).
//! Unknown fields are errors (a typo must not silently drop a constraint). Requests must be
//! connected; the substrate must have at least one node.

use serde::Deserialize;
use serde_json::Value;

use crate::request::{RequestError, RequestOptions, VirtualNode, VnRequest};
use crate::substrate::{NodeKind, Substrate, SubstrateError, SubstrateLink, SubstrateNode};

/// Why a trace, substrate or request file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// Not valid JSON, or the wrong shape (missing or unknown field).
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A value is out of range or of the wrong type.
    #[error("{item}: {reason}")]
    Invalid {
        /// Which item, e.g. `request 17, node 3`.
        item: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The substrate graph is inconsistent.
    #[error("substrate: {0}")]
    Substrate(#[source] SubstrateError),
    /// A request graph is inconsistent.
    #[error("request {id}: {source}")]
    Request {
        /// The request id.
        id: String,
        /// What is wrong.
        #[source]
        source: RequestError,
    },
}

/// A request of a trace with its timing.
#[derive(Clone, Debug)]
pub struct TimedRequest {
    /// Arrival time.
    pub arrival: f64,
    /// Lifetime; departure is `arrival + lifetime`.
    pub lifetime: f64,
    /// The request (its id is the trace id as a string).
    pub request: VnRequest,
}

/// A workload: a substrate and requests in arrival order of the file.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The substrate.
    pub substrate: Substrate,
    /// The requests, in file order.
    pub requests: Vec<TimedRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrace {
    #[serde(default)]
    #[allow(dead_code)]
    meta: Option<Value>,
    substrate: RawSubstrate,
    #[serde(default)]
    requests: Vec<RawRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubstrate {
    nodes: Vec<RawSubstrateNode>,
    #[serde(default)]
    links: Vec<RawLink>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubstrateNode {
    id: Value,
    cpu: Value,
    #[serde(default)]
    memory: Option<Value>,
    #[serde(default)]
    kinds: Option<Vec<NodeKind>>,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    u: Value,
    v: Value,
    bw: Value,
    #[serde(default)]
    latency_ms: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    id: Value,
    #[serde(default)]
    arrival: Option<Value>,
    #[serde(default)]
    lifetime: Option<Value>,
    nodes: Vec<RawVirtualNode>,
    #[serde(default)]
    links: Vec<RawLink>,
    #[serde(default)]
    options: Option<RequestOptions>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVirtualNode {
    id: Value,
    cpu: Value,
    #[serde(default)]
    memory: Option<Value>,
    #[serde(default)]
    kind: Option<NodeKind>,
    #[serde(default)]
    host: Option<Value>,
    #[serde(default)]
    candidates: Option<Vec<Value>>,
    #[serde(default)]
    location: Option<String>,
}

fn invalid(item: &str, reason: String) -> TraceError {
    TraceError::Invalid {
        item: item.to_owned(),
        reason,
    }
}

/// An id: a non-negative integer or a non-empty string.
fn id_of(v: &Value, item: &str) -> Result<String, TraceError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(invalid(
            item,
            format!("id must be a non-negative integer or a non-empty string, got {other}"),
        )),
    }
}

/// A demand or capacity: a non-negative integer (integral floats accepted).
fn amount(v: &Value, item: &str, field: &str) -> Result<u64, TraceError> {
    let bad = |what: &str| invalid(item, format!("{field} {what}, got {v}"));
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_u64() {
                Ok(x)
            } else if n.as_i64().is_some_and(|x| x < 0) {
                Err(bad("must not be negative"))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f < 0.0 {
                    Err(bad("must not be negative"))
                } else if f.fract() != 0.0 || !f.is_finite() || f > 9.0e15 {
                    Err(bad("must be a whole number"))
                } else {
                    Ok(f as u64)
                }
            }
        }
        _ => Err(bad("must be a non-negative integer")),
    }
}

/// A time: a finite non-negative number.
fn time(v: &Value, item: &str, field: &str) -> Result<f64, TraceError> {
    match v.as_f64() {
        Some(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(invalid(
            item,
            format!("{field} must be a finite non-negative number, got {v}"),
        )),
    }
}

fn build_substrate(raw: RawSubstrate) -> Result<Substrate, TraceError> {
    if raw.nodes.is_empty() {
        return Err(invalid("substrate", "has no nodes".into()));
    }
    let mut s = Substrate::new();
    for (k, n) in raw.nodes.iter().enumerate() {
        let item = format!("substrate node #{k}");
        let id = id_of(&n.id, &item)?;
        let item = format!("substrate node {id}");
        let mut node = SubstrateNode::new(id, amount(&n.cpu, &item, "cpu")?);
        if let Some(m) = &n.memory {
            node = node.with_memory_mb(amount(m, &item, "memory")?);
        }
        if let Some(kinds) = &n.kinds {
            node = node.with_kinds(kinds.iter().copied());
        }
        for l in &n.labels {
            node = node.with_label(l.clone());
        }
        s.add_node(node).map_err(TraceError::Substrate)?;
    }
    for (k, l) in raw.links.iter().enumerate() {
        let item = format!("substrate link #{k}");
        let (u, v) = (id_of(&l.u, &item)?, id_of(&l.v, &item)?);
        let item = format!("substrate link {u}-{v}");
        let mut link = SubstrateLink::new(amount(&l.bw, &item, "bw")?);
        if let Some(lat) = &l.latency_ms {
            link = link.with_latency_ms(time(lat, &item, "latency_ms")?);
        }
        s.add_link(&u, &v, link).map_err(TraceError::Substrate)?;
    }
    Ok(s)
}

fn build_request(raw: &RawRequest, index: usize) -> Result<TimedRequest, TraceError> {
    let id = id_of(&raw.id, &format!("request #{index}"))?;
    let item = format!("request {id}");
    let arrival = match &raw.arrival {
        Some(v) => time(v, &item, "arrival")?,
        None => 0.0,
    };
    let lifetime = match &raw.lifetime {
        Some(v) => time(v, &item, "lifetime")?,
        None => f64::INFINITY,
    };
    let req_err = |source| TraceError::Request {
        id: id.clone(),
        source,
    };
    let mut r = VnRequest::new(id.clone());
    if let Some(o) = &raw.options {
        r.set_options(o.clone().with_max_path_hops(o.max_path_hops));
    }
    for (k, n) in raw.nodes.iter().enumerate() {
        let nid = id_of(&n.id, &format!("{item}, node #{k}"))?;
        let nitem = format!("{item}, node {nid}");
        let mut vn = VirtualNode::new(nid, amount(&n.cpu, &nitem, "cpu")?);
        if let Some(m) = &n.memory {
            vn = vn.with_memory_mb(amount(m, &nitem, "memory")?);
        }
        if let Some(kind) = n.kind {
            vn = vn.with_kind(kind);
        }
        if let Some(h) = &n.host {
            vn = vn.pinned_to(id_of(h, &format!("{nitem}, host"))?);
        }
        if let Some(c) = &n.candidates {
            let hosts = c
                .iter()
                .map(|h| id_of(h, &format!("{nitem}, candidates")))
                .collect::<Result<Vec<_>, _>>()?;
            vn = vn.with_candidates(hosts);
        }
        if let Some(loc) = &n.location {
            vn = vn.with_location(loc.clone());
        }
        r.add_node(vn).map_err(req_err)?;
    }
    for (k, l) in raw.links.iter().enumerate() {
        let litem = format!("{item}, link #{k}");
        let (u, v) = (id_of(&l.u, &litem)?, id_of(&l.v, &litem)?);
        let litem = format!("{item}, link {u}-{v}");
        if l.latency_ms.is_some() {
            return Err(invalid(&litem, "virtual links take no latency_ms".into()));
        }
        let bw = amount(&l.bw, &litem, "bw")?;
        r.add_link(&u, &v, bw).map_err(req_err)?;
    }
    r.ensure_connected().map_err(req_err)?;
    Ok(TimedRequest {
        arrival,
        lifetime,
        request: r,
    })
}

/// Parses a whole trace.
pub fn parse_trace(json: &str) -> Result<Trace, TraceError> {
    let raw: RawTrace = serde_json::from_str(json)?;
    let substrate = build_substrate(raw.substrate)?;
    let mut seen = std::collections::HashSet::new();
    let mut requests = Vec::with_capacity(raw.requests.len());
    for (i, r) in raw.requests.iter().enumerate() {
        let t = build_request(r, i)?;
        if !seen.insert(t.request.id().to_owned()) {
            return Err(invalid(
                &format!("request {}", t.request.id()),
                "id is used twice".into(),
            ));
        }
        requests.push(t);
    }
    Ok(Trace {
        substrate,
        requests,
    })
}

/// Parses a substrate file: `{"nodes": [...], "links": [...]}`, or a whole trace (its substrate
/// is taken).
pub fn parse_substrate(json: &str) -> Result<Substrate, TraceError> {
    let v: Value = serde_json::from_str(json)?;
    if v.get("substrate").is_some() {
        return parse_trace(json).map(|t| t.substrate);
    }
    build_substrate(serde_json::from_value(v)?)
}

/// Parses one request file (a trace request; `arrival` and `lifetime` optional).
pub fn parse_request(json: &str) -> Result<TimedRequest, TraceError> {
    let raw: RawRequest = serde_json::from_str(json)?;
    build_request(&raw, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"meta": {"x": 1},
        "substrate": {"nodes": [{"id": 0, "cpu": 50}, {"id": 1, "cpu": 60.0}],
                      "links": [{"u": 0, "v": 1, "bw": 70}]},
        "requests": [{"id": 5, "arrival": 1.5, "lifetime": 10,
                      "nodes": [{"id": 0, "cpu": 3}, {"id": 1, "cpu": 0}],
                      "links": [{"u": 0, "v": 1, "bw": 0}]}]}"#;

    #[test]
    fn parses_the_shared_format() {
        let t = parse_trace(OK).unwrap();
        assert_eq!(t.substrate.node_count(), 2);
        assert_eq!(t.substrate.total_cpu(), 110);
        assert_eq!(t.requests[0].request.id(), "5");
        assert_eq!(t.requests[0].request.links()[0].bandwidth, 0);
        assert_eq!(t.requests[0].lifetime, 10.0);
    }

    fn err(json: &str) -> String {
        parse_trace(json).unwrap_err().to_string()
    }

    #[test]
    fn bad_input_names_the_item() {
        let neg = OK.replace(r#"{"id": 0, "cpu": 3}"#, r#"{"id": 0, "cpu": -3}"#);
        let m = err(&neg);
        assert!(
            m.contains("request 5, node 0") && m.contains("negative"),
            "{m}"
        );
        let nan = OK.replace(r#""bw": 70"#, r#""bw": "lots""#);
        let m = err(&nan);
        assert!(
            m.contains("substrate link 0-1") && m.contains("\"lots\""),
            "{m}"
        );
        let frac = OK.replace(r#""cpu": 60.0"#, r#""cpu": 60.5"#);
        assert!(err(&frac).contains("whole number"));
        let unknown = OK.replace(
            r#""links": [{"u": 0, "v": 1, "bw": 0}]"#,
            r#""links": [{"u": 0, "v": 9, "bw": 0}]"#,
        );
        let m = err(&unknown);
        assert!(m.contains("request 5") && m.contains("`9`"), "{m}");
        let disconnected = OK.replace(r#""links": [{"u": 0, "v": 1, "bw": 0}]"#, r#""links": []"#);
        assert!(err(&disconnected).contains("not connected"));
        let empty = r#"{"substrate": {"nodes": [], "links": []}, "requests": []}"#;
        assert!(err(empty).contains("substrate: has no nodes"));
        assert!(err("{not json").contains("malformed JSON"));
        let typo = OK.replace(r#""lifetime": 10"#, r#""lifetim": 10"#);
        assert!(err(&typo).contains("lifetim"));
        let bad_sub = OK.replace(
            r#"{"u": 0, "v": 1, "bw": 70}"#,
            r#"{"u": 0, "v": 7, "bw": 70}"#,
        );
        assert!(err(&bad_sub).contains("unknown node `7`"));
    }

    #[test]
    fn single_files() {
        let s =
            parse_substrate(r#"{"nodes": [{"id": "h1", "cpu": 5, "labels": ["eu"]}]}"#).unwrap();
        assert!(s.node(s.find("h1").unwrap()).labels.contains("eu"));
        assert_eq!(parse_substrate(OK).unwrap().node_count(), 2);
        let r = parse_request(
            r#"{"id": "web", "nodes": [{"id": "a", "cpu": 1, "kind": "vm", "location": "eu"}],
                "options": {"allow_revisitation": true, "max_path_hops": 3}}"#,
        )
        .unwrap();
        assert_eq!(r.request.nodes()[0].kind, NodeKind::Vm);
        assert!(r.request.options().allow_revisitation);
        assert_eq!(r.request.options().max_path_hops, Some(3));
    }
}

/// An id as JSON: a number when it is a canonical non-negative integer, else a string.
pub fn id_value(id: &str) -> Value {
    match id.parse::<u64>() {
        Ok(n) if n.to_string() == id => Value::from(n),
        _ => Value::from(id),
    }
}

/// Serialises a trace in the format [`parse_trace`] reads (extension fields only when set).
pub fn trace_json(trace: &Trace, meta: Option<Value>) -> Value {
    use serde_json::json;
    let s = &trace.substrate;
    let nodes: Vec<Value> = s
        .node_indices()
        .map(|h| {
            let n = s.node(h);
            let mut o = json!({"id": id_value(&n.id), "cpu": n.cpu});
            if n.memory_mb > 0 {
                o["memory"] = json!(n.memory_mb);
            }
            if n.kinds.len() != NodeKind::ALL.len() {
                o["kinds"] = json!(n.kinds);
            }
            if !n.labels.is_empty() {
                o["labels"] = json!(n.labels);
            }
            o
        })
        .collect();
    let links: Vec<Value> = s
        .link_indices()
        .map(|e| {
            let (a, b) = s.endpoints(e);
            let l = s.link(e);
            let mut o = json!({"u": id_value(&s.node(a).id), "v": id_value(&s.node(b).id), "bw": l.bandwidth});
            if let Some(lat) = l.latency_ms {
                o["latency_ms"] = json!(lat);
            }
            o
        })
        .collect();
    let requests: Vec<Value> = trace
        .requests
        .iter()
        .map(|t| {
            let r = &t.request;
            let mut o = json!({
                "id": id_value(r.id()),
                "arrival": t.arrival,
                "lifetime": t.lifetime,
                "nodes": r.nodes().iter().map(|n| {
                    let mut v = json!({"id": id_value(&n.id), "cpu": n.cpu});
                    if n.memory_mb > 0 { v["memory"] = json!(n.memory_mb); }
                    if n.kind != NodeKind::Netns { v["kind"] = json!(n.kind); }
                    if let Some(h) = &n.pinned_host { v["host"] = id_value(h); }
                    if let Some(c) = &n.candidates { v["candidates"] = c.iter().map(|h| id_value(h)).collect(); }
                    if let Some(l) = &n.location { v["location"] = json!(l); }
                    v
                }).collect::<Vec<_>>(),
                "links": r.links().iter().map(|l| json!({
                    "u": id_value(&r.nodes()[l.u].id),
                    "v": id_value(&r.nodes()[l.v].id),
                    "bw": l.bandwidth,
                })).collect::<Vec<_>>(),
            });
            if r.options() != &RequestOptions::default() {
                o["options"] = serde_json::to_value(r.options()).expect("plain struct");
            }
            o
        })
        .collect();
    let mut out = json!({"substrate": {"nodes": nodes, "links": links}, "requests": requests});
    if let Some(m) = meta {
        out["meta"] = m;
    }
    out
}

#[cfg(test)]
mod roundtrip {
    use super::*;

    #[test]
    fn generated_trace_round_trips() {
        let cfg = crate::generator::WaxmanConfig {
            nodes: 20,
            requests: 30,
            ..Default::default()
        };
        let t = crate::generator::generate(&cfg).unwrap();
        let text = trace_json(&t, Some(serde_json::json!({"generator": "test"}))).to_string();
        let back = parse_trace(&text).unwrap();
        assert_eq!(back.substrate.total_cpu(), t.substrate.total_cpu());
        assert_eq!(back.requests.len(), 30);
        assert_eq!(
            back.requests[7].request.links(),
            t.requests[7].request.links()
        );
        assert_eq!(back.requests[7].lifetime, t.requests[7].lifetime);
    }
}
