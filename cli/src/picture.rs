//! The topology picture as Graphviz DOT, readable at 50 virtual nodes.
//!
//! The layout is computed here, not by Graphviz: every box and node has a pinned position and
//! `neato -n2` only draws (routing `dot` with clusters, compound edges and unconstrained edges
//! crashed Graphviz 2.42 on ordinary testbed pictures).
//! - One box per host, the hosts as a grid (rows of ceil(sqrt(hosts)), odd columns half a row
//!   lower so that links between non-adjacent hosts pass by the ones between), each host's
//!   virtual nodes as a grid inside it.
//! - A virtual node that carries child VNs is itself a box with the child's nodes inside it
//!   (and so on down), labelled with its name and VN.
//! - One colour per provider (legend at the bottom); node borders and links in it.
//! - Links whose ends share a host (or a parent node) are drawn one by one; the others are
//!   bundled: one edge per provider and substrate path between the two ends' boxes, its width
//!   growing with the number of links, labelled with the count (and `via` for transit hops).
//! - With `labels`, every link also says its VNI/VLAN per hop, bandwidth and delay.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use vnet_proto::v1 as pb;

/// What the picture shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Identifiers, bandwidth and impairments on every link.
    pub labels: bool,
}

/// One colour per provider, in the order of their names.
pub const PALETTE: &[&str] = &[
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Providers named after a colour get it; the others take the palette's remaining colours in
/// the order of their names.
fn provider_colors<'a>(providers: &BTreeSet<&'a str>) -> BTreeMap<&'a str, &'static str> {
    const NAMED: &[(&str, &str)] = &[
        ("red", "#d62728"),
        ("blue", "#1f77b4"),
        ("green", "#2ca02c"),
        ("orange", "#ff7f0e"),
        ("purple", "#9467bd"),
        ("brown", "#8c564b"),
        ("pink", "#e377c2"),
        ("cyan", "#17becf"),
    ];
    let mut out = BTreeMap::new();
    for p in providers {
        if let Some((_, c)) = NAMED.iter().find(|(n, _)| n == p) {
            out.insert(*p, *c);
        }
    }
    let unused: Vec<&'static str> = PALETTE
        .iter()
        .copied()
        .filter(|c| !out.values().any(|u| u == c))
        .collect();
    let mut free = unused.iter().cycle();
    for p in providers {
        if !out.contains_key(p) {
            out.insert(*p, free.next().copied().unwrap_or("black"));
        }
    }
    out
}

/// A lighter tint of a palette colour for node fills.
fn tint(color: &str) -> String {
    format!("{color}22")
}

/// A DOT double-quoted string.
pub fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Lines of a label, each escaped, joined by DOT's `\n`.
fn label(lines: &[String]) -> String {
    let escaped: Vec<String> = lines
        .iter()
        .map(|l| l.replace('\\', "\\\\").replace('"', "\\\""))
        .collect();
    format!("\"{}\"", escaped.join("\\n"))
}

/// A virtual node: `provider/vn/node`.
fn vid(vn: &pb::EmbeddedVn, node: &str) -> String {
    format!("vn:{}/{}/{}", vn.provider, vn.name, node)
}

/// Where something sits: a host, or a virtual node (by its id) that carries children.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Host(String),
    Node(String),
}

impl Place {
    fn anchor(&self) -> String {
        match self {
            Place::Host(h) => format!("box:host:{h}"),
            Place::Node(n) => format!("box:{n}"),
        }
    }
}

/// The picture's model: what is inside which place.
struct Model<'a> {
    vns: Vec<&'a pb::EmbeddedVn>,
    colors: BTreeMap<&'a str, &'static str>,
    /// Place of every virtual node id.
    place_of: BTreeMap<String, Place>,
    /// Virtual node ids inside each place, in order.
    inside: BTreeMap<Place, Vec<String>>,
    /// Virtual node ids that carry children (drawn as clusters).
    carriers: BTreeSet<String>,
    /// The VN of every virtual node id (index into `vns`) and its name.
    owner: BTreeMap<String, (usize, &'a str)>,
}

impl<'a> Model<'a> {
    fn new(t: &'a pb::Topology) -> Self {
        let mut vns: Vec<&pb::EmbeddedVn> = t.vns.iter().collect();
        vns.sort_by_key(|v| (v.depth, v.provider.clone(), v.name.clone()));
        let providers: BTreeSet<&str> = vns.iter().map(|v| v.provider.as_str()).collect();
        let colors = provider_colors(&providers);
        let by_label: BTreeMap<String, &pb::EmbeddedVn> = vns
            .iter()
            .map(|v| (format!("{}/{}", v.provider, v.name), *v))
            .collect();
        let mut m = Model {
            vns,
            colors,
            place_of: BTreeMap::new(),
            inside: BTreeMap::new(),
            carriers: BTreeSet::new(),
            owner: BTreeMap::new(),
        };
        for (i, vn) in m.vns.clone().into_iter().enumerate() {
            let parent = by_label.get(&vn.parent).copied();
            let mut nodes: Vec<(&String, &String)> = vn.placement.iter().collect();
            nodes.sort_by_key(|a| natural(a.0));
            for (node, target) in nodes {
                let id = vid(vn, node);
                let place = match parent {
                    Some(p) if !vn.parent.is_empty() => {
                        let pid = vid(p, target);
                        m.carriers.insert(pid.clone());
                        Place::Node(pid)
                    }
                    _ => Place::Host(target.clone()),
                };
                m.owner.insert(id.clone(), (i, node.as_str()));
                m.inside.entry(place.clone()).or_default().push(id.clone());
                m.place_of.insert(id, place);
            }
        }
        m
    }

    fn color_of(&self, vn: &pb::EmbeddedVn) -> &'static str {
        self.colors
            .get(vn.provider.as_str())
            .copied()
            .unwrap_or("black")
    }
}

/// Sort key that puts `n2` before `n10`.
fn natural(s: &str) -> (String, u64, String) {
    let digits_at = s.find(|c: char| c.is_ascii_digit()).unwrap_or(s.len());
    let (head, tail) = s.split_at(digits_at);
    let end = tail
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(tail.len());
    let n = tail[..end].parse().unwrap_or(0);
    (head.to_string(), n, tail[end..].to_string())
}

/// Points: a virtual node's cell, the padding inside a box, a box's title band, the gap between
/// hosts (room for link labels).
const CELL: f64 = 54.0;
const PAD: f64 = 10.0;
const TITLE_HOST: f64 = 38.0;
const TITLE_NODE: f64 = 20.0;
const GAP: f64 = 120.0;

/// Width in points a title needs (Helvetica, about 0.6 of the font size a character).
fn text_width(lines: &[String], fontsize: f64) -> f64 {
    lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as f64 * fontsize * 0.62 + 16.0
}

/// The size (w, h) of a place's box: a grid of its items (cells of the largest item), under its
/// title, at least as wide as the title.
fn size_of(m: &Model<'_>, place: &Place, title: &[String]) -> (f64, f64) {
    let items = m.inside.get(place).map_or(&[][..], Vec::as_slice);
    let (cw, ch) = cell_of(m, items);
    let cols = grid_cols(items.len());
    let rows = items.len().div_ceil(cols.max(1));
    let (head, fontsize) = if matches!(place, Place::Host(_)) {
        (TITLE_HOST, 12.0)
    } else {
        (TITLE_NODE, 10.0)
    };
    let w = (2.0 * PAD + cols as f64 * cw).max(text_width(title, fontsize));
    let h = head + PAD + rows as f64 * ch;
    (w, h.max(head + PAD))
}

fn cell_of(m: &Model<'_>, items: &[String]) -> (f64, f64) {
    items.iter().fold((CELL, CELL), |(w, h), id| {
        if m.carriers.contains(id) {
            let (sw, sh) = size_of(m, &Place::Node(id.clone()), &node_title(m, id));
            (w.max(sw + PAD), h.max(sh + PAD))
        } else {
            (w, h)
        }
    })
}

fn grid_cols(n: usize) -> usize {
    (n as f64).sqrt().ceil().max(1.0) as usize
}

fn node_title(m: &Model<'_>, id: &str) -> Vec<String> {
    let (i, name) = m.owner[id];
    vec![format!("{name} ({})", m.vns[i].name)]
}

fn host_title(id: &str, h: Option<&pb::Host>) -> Vec<String> {
    let mut title = vec![id.to_string()];
    match h {
        Some(h) => {
            if let (Some(c), Some(r)) = (&h.capacity, &h.residual) {
                title.push(format!(
                    "cpu {}/{}, mem {}/{} MiB free",
                    r.cpu, c.cpu, r.memory_mb, c.memory_mb
                ));
            }
            if !h.connected {
                title.push("(disconnected)".into());
            }
        }
        None => title.push("(not registered)".into()),
    }
    title
}

/// The whole picture. Every position is computed here and pinned (`pos="x,y!"`), so Graphviz
/// (`neato -n2`) only draws: boxes as nodes, children declared after (and so drawn over) their
/// box, links as lines clipped at the boxes' borders.
pub fn to_dot(t: &pb::Topology, opts: Options) -> String {
    let m = Model::new(t);
    let mut hosts: Vec<&pb::Host> = t.hosts.iter().collect();
    hosts.sort_by_key(|a| natural(&a.id));
    let mut host_ids: Vec<String> = hosts.iter().map(|h| h.id.clone()).collect();
    // Hosts named by placements or links but not registered still get a box.
    let named = m
        .inside
        .keys()
        .filter_map(|p| match p {
            Place::Host(h) => Some(h.clone()),
            Place::Node(_) => None,
        })
        .chain(t.links.iter().flat_map(|l| [l.a.clone(), l.b.clone()]));
    for h in named {
        if !host_ids.contains(&h) {
            host_ids.push(h);
        }
    }
    let by_id: BTreeMap<&str, &pb::Host> = hosts.iter().map(|h| (h.id.as_str(), *h)).collect();
    let mut o = String::new();
    o.push_str("graph vnet {\n");
    o.push_str(
        "  graph [fontname=\"Helvetica\", splines=curved, outputorder=nodesfirst, pad=0.3];\n",
    );
    o.push_str(
        "  node [fontname=\"Helvetica\", fontsize=10, shape=circle, fixedsize=true, width=0.5, \
         style=filled, penwidth=1.5];\n",
    );
    o.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    // Hosts in rows of ceil(sqrt(hosts)): columns as wide as their widest host, rows as tall as
    // their tallest.
    let titles: Vec<Vec<String>> = host_ids
        .iter()
        .map(|h| host_title(h, by_id.get(h.as_str()).copied()))
        .collect();
    let sizes: Vec<(f64, f64)> = host_ids
        .iter()
        .zip(&titles)
        .map(|(h, t)| size_of(&m, &Place::Host(h.clone()), t))
        .collect();
    let cols = grid_cols(host_ids.len());
    let mut col_w = vec![0.0f64; cols];
    let mut row_h = vec![0.0f64; host_ids.len().div_ceil(cols)];
    for (k, (w, h)) in sizes.iter().enumerate() {
        col_w[k % cols] = col_w[k % cols].max(*w);
        row_h[k / cols] = row_h[k / cols].max(*h);
    }
    // Odd columns sit half a row lower (a brick pattern), so that a link between the hosts left
    // and right of one passes by it instead of through it.
    let shift = row_h.iter().copied().fold(0.0, f64::max) / 2.0 + GAP / 4.0;
    for (k, h) in host_ids.iter().enumerate() {
        let x = col_w[..k % cols].iter().sum::<f64>() + (k % cols) as f64 * GAP;
        let y = row_h[..k / cols].iter().sum::<f64>()
            + (k / cols) as f64 * GAP
            + if k % cols % 2 == 1 { shift } else { 0.0 };
        let connected = by_id.get(h.as_str()).is_some_and(|h| h.connected);
        let style = BoxStyle {
            color: if connected { "#555555" } else { "red" }.into(),
            fill: "#f4f4f4".into(),
            fontcolor: "black".into(),
            fontsize: 12,
        };
        let place = Place::Host(h.clone());
        write_box(&mut o, &m, &place, &titles[k], (x, y), sizes[k], &style);
    }
    write_substrate_links(&mut o, t, opts);
    write_links(&mut o, &m, opts);
    write_legend(&mut o, &m);
    o.push_str("}\n");
    o
}

/// How a box is drawn.
struct BoxStyle {
    color: String,
    fill: String,
    fontcolor: String,
    fontsize: u32,
}

/// A place's box with its top-left corner at `at` (points, y down), then what is inside it.
fn write_box(
    o: &mut String,
    m: &Model<'_>,
    place: &Place,
    title: &[String],
    at: (f64, f64),
    size: (f64, f64),
    style: &BoxStyle,
) {
    let (x, y) = at;
    let (w, h) = size;
    let _ = writeln!(
        o,
        "  {} [shape=box, style=\"rounded,filled\", fixedsize=true, pos=\"{:.1},{:.1}!\", width={:.3}, height={:.3}, labelloc=t, label={}, color={}, fillcolor={}, fontcolor={}, fontsize={}];",
        q(&place.anchor()),
        x + w / 2.0,
        -(y + h / 2.0),
        w / 72.0,
        h / 72.0,
        label(title),
        q(&style.color),
        q(&style.fill),
        q(&style.fontcolor),
        style.fontsize
    );
    let items = m.inside.get(place).cloned().unwrap_or_default();
    let (cw, ch) = cell_of(m, &items);
    let cols = grid_cols(items.len());
    let head = if matches!(place, Place::Host(_)) {
        TITLE_HOST
    } else {
        TITLE_NODE
    };
    for (k, id) in items.iter().enumerate() {
        let cx = x + PAD + (k % cols) as f64 * cw;
        let cy = y + head + (k / cols) as f64 * ch;
        let (i, name) = m.owner[id];
        let color = m.color_of(m.vns[i]);
        if m.carriers.contains(id) {
            let sub = Place::Node(id.clone());
            let t = node_title(m, id);
            let (sw, sh) = size_of(m, &sub, &t);
            let style = BoxStyle {
                color: color.into(),
                fill: tint(color),
                fontcolor: color.into(),
                fontsize: 10,
            };
            write_box(o, m, &sub, &t, (cx + (cw - sw) / 2.0, cy), (sw, sh), &style);
        } else {
            let _ = writeln!(
                o,
                "  {} [label={}, pos=\"{:.1},{:.1}!\", color={}, fillcolor={}];",
                q(id),
                q(name),
                cx + cw / 2.0,
                -(cy + ch / 2.0),
                q(color),
                q(&tint(color))
            );
        }
    }
}

/// The node a grid edge can attach to for a virtual node id.
fn grid_id(m: &Model<'_>, id: &str) -> String {
    if m.carriers.contains(id) {
        Place::Node(id.to_string()).anchor()
    } else {
        id.to_string()
    }
}

/// Substrate links: light gray, between host clusters; with `labels`, their free bandwidth and
/// latency.
fn write_substrate_links(o: &mut String, t: &pb::Topology, opts: Options) {
    let mut links: Vec<&pb::SubstrateLink> = t.links.iter().collect();
    links.sort_by(|a, b| (&a.a, &a.b).cmp(&(&b.a, &b.b)));
    for l in links {
        let (a, b) = (Place::Host(l.a.clone()), Place::Host(l.b.clone()));
        let mut lines = Vec::new();
        if opts.labels {
            lines.push(format!(
                "{}/{} Mbit/s free",
                l.residual_mbps, l.bandwidth_mbps
            ));
            if let Some(lat) = l.latency_ms {
                lines.push(format!("{lat} ms"));
            }
        }
        let _ = writeln!(
            o,
            "  {} -- {} [color=\"#d0d0d0\", penwidth=3, fontcolor=\"#888888\", label={}];",
            q(&a.anchor()),
            q(&b.anchor()),
            label(&lines)
        );
    }
}

/// One link's label: hops' identifiers, bandwidth and impairments.
fn link_text(l: &pb::EmbeddedLink) -> String {
    let mut parts = vec![format!("{}-{}", l.a, l.b)];
    let ids: Vec<&str> = l
        .hops
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !ids.is_empty() {
        parts.push(ids.join("/"));
    }
    parts.push(format!("{}M", l.bandwidth_mbps));
    let imp = crate::output::impairment_text(l.delay_us, l.jitter_us, l.loss_percent);
    if imp != "-" {
        parts.push(imp);
    }
    parts.join(" ")
}

/// Virtual links: one by one inside a place, bundled by provider and path between places.
fn write_links(o: &mut String, m: &Model<'_>, opts: Options) {
    // (provider, from place, to place, path) -> links
    type Bundle<'a> = BTreeMap<(String, Place, Place, Vec<String>), Vec<&'a pb::EmbeddedLink>>;
    let mut bundles: Bundle<'_> = BTreeMap::new();
    for vn in &m.vns {
        let color = m.color_of(vn);
        for l in &vn.links {
            let (a, b) = (vid(vn, &l.a), vid(vn, &l.b));
            let (Some(pa), Some(pb_)) = (m.place_of.get(&a), m.place_of.get(&b)) else {
                continue;
            };
            if pa == pb_ {
                let text = if opts.labels {
                    link_text(l)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "  {} -- {} [color={}, fontcolor={}, penwidth=1.2, label={}];",
                    q(&grid_id(m, &a)),
                    q(&grid_id(m, &b)),
                    q(color),
                    q(color),
                    q(&text)
                );
                continue;
            }
            let (from, to, path) = if pa <= pb_ {
                (pa.clone(), pb_.clone(), l.path.clone())
            } else {
                (
                    pb_.clone(),
                    pa.clone(),
                    l.path.iter().rev().cloned().collect(),
                )
            };
            bundles
                .entry((vn.provider.clone(), from, to, path))
                .or_default()
                .push(l);
        }
    }
    for ((provider, from, to, path), links) in bundles {
        let color = m.colors.get(provider.as_str()).copied().unwrap_or("black");
        let n = links.len();
        let mut lines = vec![if n == 1 {
            "1 link".to_string()
        } else {
            format!("{n} links")
        }];
        if path.len() > 2 {
            lines.push(format!("via {}", path[1..path.len() - 1].join(", ")));
        }
        if opts.labels {
            lines.extend(links.iter().map(|l| link_text(l)));
        } else {
            let bw: u64 = links.iter().map(|l| l.bandwidth_mbps).sum();
            lines.push(format!("{bw} Mbit/s"));
        }
        let _ = writeln!(
            o,
            "  {} -- {} [color={}, fontcolor={}, penwidth={:.1}, label={}];",
            q(&from.anchor()),
            q(&to.anchor()),
            q(color),
            q(color),
            (1.0 + (n as f64).sqrt()).min(6.0),
            label(&lines)
        );
    }
}

/// Providers and their VNs, each in its colour, under the picture.
fn write_legend(o: &mut String, m: &Model<'_>) {
    if m.vns.is_empty() {
        return;
    }
    let mut per: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for vn in &m.vns {
        let mut s = format!("{} ({} nodes", vn.name, vn.placement.len());
        if vn.depth > 0 {
            let _ = write!(s, ", in {}", vn.parent);
        }
        s.push(')');
        per.entry(vn.provider.as_str()).or_default().push(s);
    }
    let mut rows = String::new();
    for (p, vns) in per {
        let color = m.colors[p];
        let _ = write!(
            rows,
            "<tr><td bgcolor=\"{color}\" width=\"14\"></td><td align=\"left\"><b>{}</b>: {}</td></tr>",
            html(p),
            html(&vns.join(", "))
        );
    }
    let _ = writeln!(
        o,
        "  label=<<table border=\"0\" cellspacing=\"4\">{rows}</table>>; labelloc=b; labeljust=l;"
    );
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str) -> pb::Host {
        pb::Host {
            id: id.into(),
            connected: true,
            ..Default::default()
        }
    }

    fn link(a: &str, b: &str, path: &[&str]) -> pb::EmbeddedLink {
        pb::EmbeddedLink {
            a: a.into(),
            b: b.into(),
            bandwidth_mbps: 10,
            path: path.iter().map(|s| s.to_string()).collect(),
            hops: vec!["vni 4097".into(); path.len().saturating_sub(1)],
            delay_us: 20_000,
            ..Default::default()
        }
    }

    /// red/big: a, b on h1, c on h2; blue/sub (child of red/big) x, y inside a.
    fn topo() -> pb::Topology {
        pb::Topology {
            hosts: vec![host("h1"), host("h2")],
            links: vec![pb::SubstrateLink {
                id: "h1-h2".into(),
                a: "h1".into(),
                b: "h2".into(),
                bandwidth_mbps: 1000,
                residual_mbps: 950,
                ..Default::default()
            }],
            vns: vec![
                pb::EmbeddedVn {
                    name: "big".into(),
                    provider: "red".into(),
                    placement: [
                        ("a".into(), "h1".into()),
                        ("b".into(), "h1".into()),
                        ("c".into(), "h2".into()),
                    ]
                    .into(),
                    links: vec![
                        link("a", "b", &["h1"]),
                        link("a", "c", &["h1", "h2"]),
                        link("b", "c", &["h1", "h2"]),
                    ],
                    ..Default::default()
                },
                pb::EmbeddedVn {
                    name: "sub".into(),
                    provider: "blue".into(),
                    parent: "red/big".into(),
                    depth: 1,
                    placement: [("x".into(), "a".into()), ("y".into(), "a".into())].into(),
                    links: vec![link("x", "y", &["a"])],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn one_cluster_per_host_and_nested_nodes_inside_their_parent() {
        let d = to_dot(&topo(), Options::default());
        assert!(d.starts_with("graph vnet {"), "{d}");
        assert_eq!(
            d.matches("\"box:host:").count(),
            2 + 2 + 2,
            "two boxes, two links: {d}"
        );
        // a carries sub's nodes: a box drawn after h1's, inside it, holding x and y
        let pos = |id: &str| -> (f64, f64, f64, f64) {
            let line = d
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("\"{id}\" [")))
                .unwrap_or_else(|| panic!("{id}: {d}"));
            let p = line.split("pos=\"").nth(1).unwrap();
            let p = &p[..p.find('!').unwrap()];
            let (x, y) = p.split_once(',').unwrap();
            let dim = |k: &str| {
                line.split(&format!("{k}=")).nth(1).map_or(0.5, |v| {
                    v.split(',').next().unwrap().parse::<f64>().unwrap()
                }) * 72.0
            };
            (
                x.parse().unwrap(),
                y.parse().unwrap(),
                dim("width"),
                dim("height"),
            )
        };
        let inside = |outer: (f64, f64, f64, f64), inner: (f64, f64, f64, f64)| {
            (inner.0 - outer.0).abs() + inner.2 / 2.0 <= outer.2 / 2.0
                && (inner.1 - outer.1).abs() + inner.3 / 2.0 <= outer.3 / 2.0
        };
        let (h1, h2, a) = (
            pos("box:host:h1"),
            pos("box:host:h2"),
            pos("box:vn:red/big/a"),
        );
        let (x, y, c) = (
            pos("vn:blue/sub/x"),
            pos("vn:blue/sub/y"),
            pos("vn:red/big/c"),
        );
        assert!(inside(h1, a) && inside(a, x) && inside(a, y), "{d}");
        assert!(inside(h2, c) && !inside(h1, c), "{d}");
        assert!(h2.0 > h1.0, "h2 right of h1: {d}");
        let order = |id: &str| d.find(&format!("\"{id}\" [")).unwrap();
        assert!(order("box:host:h1") < order("box:vn:red/big/a"));
        assert!(order("box:vn:red/big/a") < order("vn:blue/sub/x"));
        assert_eq!(d.matches('{').count(), d.matches('}').count());
    }

    #[test]
    fn one_colour_per_provider() {
        let d = to_dot(&topo(), Options::default());
        let line = |id: &str| {
            d.lines()
                .find(|l| l.contains(&format!("\"{id}\" [label=")))
                .unwrap_or_else(|| panic!("{id}: {d}"))
                .to_string()
        };
        assert!(line("vn:blue/sub/x").contains("color=\"#1f77b4\""), "{d}");
        assert!(line("vn:red/big/c").contains("color=\"#d62728\""), "{d}");
        let others = provider_colors(&["acme", "zeta", "red"].into());
        assert_eq!(others["red"], "#d62728");
        assert_eq!(
            others["acme"], "#1f77b4",
            "the first colour red does not hold"
        );
        assert_ne!(others["acme"], others["zeta"]);
        assert!(d.contains("<b>blue</b>: sub (2 nodes, in red/big)"), "{d}");
        assert!(d.contains("<b>red</b>: big (3 nodes)"), "{d}");
    }

    #[test]
    fn links_between_hosts_are_bundled_by_path() {
        let d = to_dot(&topo(), Options::default());
        let bundles: Vec<&str> = d
            .lines()
            .filter(|l| l.contains("-- \"box:host:h2\"") && l.contains("#d62728"))
            .collect();
        assert_eq!(bundles.len(), 1, "{d}");
        assert!(bundles[0].contains("label=\"2 links\\n20 Mbit/s\""), "{d}");
        // co-located: one by one, unlabelled without --labels
        assert!(
            d.contains("\"box:vn:red/big/a\" -- \"vn:red/big/b\" [color=\"#d62728\""),
            "{d}"
        );
        let l = to_dot(&topo(), Options { labels: true });
        assert!(l.contains("a-c vni 4097 10M delay 20ms"), "{l}");
        assert!(l.contains("x-y 10M delay 20ms"), "{l}");
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            natural("n10").cmp(&natural("n9")),
            std::cmp::Ordering::Greater
        );
    }
}
