//! The topology picture as Graphviz DOT, readable at 50 virtual nodes.
//!
//! - One cluster per host, the hosts laid out as a grid (rows of ceil(sqrt(hosts))), each host's
//!   virtual nodes as a grid inside it; the grids are held by invisible edges, so virtual links
//!   (drawn with `constraint=false`) never move anything.
//! - A virtual node that carries child VNs is itself a cluster with the child's nodes inside it
//!   (and so on down), labelled with its name.
//! - One colour per provider (legend at the bottom); node borders and links in it.
//! - Links whose ends share a host (or a parent node) are drawn one by one; the others are
//!   bundled: one edge per provider and substrate path between the two ends' clusters, its width
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
    fn cluster(&self) -> String {
        match self {
            Place::Host(h) => format!("cluster_host:{h}"),
            Place::Node(n) => format!("cluster_{n}"),
        }
    }

    fn anchor(&self) -> String {
        match self {
            Place::Host(h) => format!("anchor:host:{h}"),
            Place::Node(n) => format!("anchor:{n}"),
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
            nodes.sort_by(|a, b| natural(a.0).cmp(&natural(b.0)));
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
        self.colors.get(vn.provider.as_str()).copied().unwrap_or("black")
    }

    /// The host a place is on.
    fn host_of(&self, p: &Place) -> String {
        match p {
            Place::Host(h) => h.clone(),
            Place::Node(n) => self
                .place_of
                .get(n)
                .map_or_else(String::new, |pp| self.host_of(pp)),
        }
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

/// The whole picture.
pub fn to_dot(t: &pb::Topology, opts: Options) -> String {
    let m = Model::new(t);
    let mut hosts: Vec<&pb::Host> = t.hosts.iter().collect();
    hosts.sort_by(|a, b| natural(&a.id).cmp(&natural(&b.id)));
    let mut host_ids: Vec<String> = hosts.iter().map(|h| h.id.clone()).collect();
    // Hosts named by placements or links but not registered still get a cluster.
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
    let mut o = String::new();
    o.push_str("graph vnet {\n");
    o.push_str(
        "  graph [fontname=\"Helvetica\", compound=true, newrank=true, nodesep=0.2, ranksep=0.35, \
         splines=true, outputorder=edgesfirst, pad=0.3];\n",
    );
    o.push_str(
        "  node [fontname=\"Helvetica\", fontsize=10, shape=circle, fixedsize=true, width=0.5, \
         style=filled, penwidth=1.5];\n",
    );
    o.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    let by_id: BTreeMap<&str, &pb::Host> = hosts.iter().map(|h| (h.id.as_str(), *h)).collect();
    for h in &host_ids {
        write_host(&mut o, &m, h, by_id.get(h.as_str()).copied());
    }
    host_grid(&mut o, &m, &host_ids);
    write_substrate_links(&mut o, t);
    write_links(&mut o, &m, opts);
    write_legend(&mut o, &m);
    o.push_str("}\n");
    o
}

/// A host's cluster: its name, capacity and what is free, then its virtual nodes.
fn write_host(o: &mut String, m: &Model<'_>, id: &str, h: Option<&pb::Host>) {
    let mut title = vec![id.to_string()];
    match h {
        Some(h) => {
            if let (Some(c), Some(r)) = (&h.capacity, &h.residual) {
                title.push(format!(
                    "cpu {}/{} free, mem {}/{} MiB free",
                    r.cpu, c.cpu, r.memory_mb, c.memory_mb
                ));
            }
            if !h.connected {
                title.push("(disconnected)".into());
            }
        }
        None => title.push("(not registered)".into()),
    }
    let connected = h.is_some_and(|h| h.connected);
    let place = Place::Host(id.to_string());
    let _ = writeln!(o, "  subgraph {} {{", q(&place.cluster()));
    let _ = writeln!(
        o,
        "    label={}; labeljust=l; fontsize=12; style=\"rounded,filled\"; fillcolor=\"#f4f4f4\"; color={}; penwidth=2;",
        label(&title),
        q(if connected { "#555555" } else { "red" })
    );
    write_contents(o, m, &place, "    ");
    o.push_str("  }\n");
}

/// A place's anchor and its virtual nodes as a grid (carriers as clusters of their own).
fn write_contents(o: &mut String, m: &Model<'_>, place: &Place, indent: &str) {
    let _ = writeln!(
        o,
        "{indent}{} [shape=point, width=0.01, style=invis, label=\"\"];",
        q(&place.anchor())
    );
    let items = m.inside.get(place).cloned().unwrap_or_default();
    let mut grid_ids = Vec::with_capacity(items.len());
    for id in &items {
        let (i, name) = m.owner[id];
        let vn = m.vns[i];
        let color = m.color_of(vn);
        if m.carriers.contains(id) {
            let sub = Place::Node(id.clone());
            let _ = writeln!(o, "{indent}subgraph {} {{", q(&sub.cluster()));
            let _ = writeln!(
                o,
                "{indent}  label={}; labeljust=l; fontsize=10; fontcolor={}; style=\"rounded,filled\"; fillcolor={}; color={}; penwidth=1.5;",
                label(&[format!("{name} ({})", vn.name)]),
                q(color),
                q(&tint(color)),
                q(color)
            );
            write_contents(o, m, &sub, &format!("{indent}  "));
            let _ = writeln!(o, "{indent}}}");
            grid_ids.push(sub.anchor());
        } else {
            let _ = writeln!(
                o,
                "{indent}{} [label={}, color={}, fillcolor={}];",
                q(id),
                q(name),
                q(color),
                q(&tint(color))
            );
            grid_ids.push(id.clone());
        }
    }
    // Rows of ceil(sqrt(n)): each item above the one of the next row in its column.
    let cols = (grid_ids.len() as f64).sqrt().ceil().max(1.0) as usize;
    let _ = writeln!(
        o,
        "{indent}{} -- {} [style=invis];",
        q(&place.anchor()),
        q(grid_ids.first().map_or(&place.anchor(), |s| s))
    );
    for (k, id) in grid_ids.iter().enumerate() {
        if k >= cols {
            let _ = writeln!(
                o,
                "{indent}{} -- {} [style=invis];",
                q(&grid_ids[k - cols]),
                q(id)
            );
        } else if k > 0 {
            let _ = writeln!(
                o,
                "{indent}{} -- {} [style=invis];",
                q(&place.anchor()),
                q(id)
            );
        }
    }
}

/// Hosts in rows of ceil(sqrt(hosts)): every host below the one above it in its column.
fn host_grid(o: &mut String, m: &Model<'_>, hosts: &[String]) {
    let cols = (hosts.len() as f64).sqrt().ceil().max(1.0) as usize;
    for (k, h) in hosts.iter().enumerate().skip(cols) {
        let above = Place::Host(hosts[k - cols].clone());
        let below = Place::Host(h.clone());
        // From every node of the upper host's last row, so the lower host starts under it.
        let bottom = m
            .inside
            .get(&above)
            .and_then(|v| v.last().cloned())
            .map_or_else(|| above.anchor(), |id| grid_id(m, &id));
        let _ = writeln!(
            o,
            "  {} -- {} [style=invis, minlen=2];",
            q(&bottom),
            q(&below.anchor())
        );
    }
    // Hosts of one row side by side.
    for row in hosts.chunks(cols) {
        let anchors: Vec<String> = row
            .iter()
            .map(|h| q(&Place::Host(h.clone()).anchor()))
            .collect();
        let _ = writeln!(o, "  {{ rank=same; {} }}", anchors.join("; "));
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

/// Substrate links: gray, between host clusters, with free bandwidth and latency.
fn write_substrate_links(o: &mut String, t: &pb::Topology) {
    let mut links: Vec<&pb::SubstrateLink> = t.links.iter().collect();
    links.sort_by(|a, b| (&a.a, &a.b).cmp(&(&b.a, &b.b)));
    for l in links {
        let (a, b) = (Place::Host(l.a.clone()), Place::Host(l.b.clone()));
        let mut lines = vec![format!("{}/{} Mbit/s free", l.residual_mbps, l.bandwidth_mbps)];
        if let Some(lat) = l.latency_ms {
            lines.push(format!("{lat} ms"));
        }
        let _ = writeln!(
            o,
            "  {} -- {} [ltail={}, lhead={}, constraint=false, color=\"#bbbbbb\", penwidth=4, fontcolor=\"#777777\", label={}];",
            q(&a.anchor()),
            q(&b.anchor()),
            q(&a.cluster()),
            q(&b.cluster()),
            label(&lines)
        );
    }
}

/// One link's label: hops' identifiers, bandwidth and impairments.
fn link_text(l: &pb::EmbeddedLink) -> String {
    let mut parts = vec![format!("{}-{}", l.a, l.b)];
    let ids: Vec<&str> = l.hops.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
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
                let text = if opts.labels { link_text(l) } else { String::new() };
                let _ = writeln!(
                    o,
                    "  {} -- {} [constraint=false, color={}, fontcolor={}, penwidth=1.2, label={}];",
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
                (pb_.clone(), pa.clone(), l.path.iter().rev().cloned().collect())
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
            "  {} -- {} [ltail={}, lhead={}, constraint=false, color={}, fontcolor={}, penwidth={:.1}, label={}];",
            q(&from.anchor()),
            q(&to.anchor()),
            q(&from.cluster()),
            q(&to.cluster()),
            q(color),
            q(color),
            (1.0 + (n as f64).sqrt()).min(6.0),
            label(&lines)
        );
        let _ = m.host_of(&from);
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
        assert_eq!(d.matches("subgraph \"cluster_host:").count(), 2, "{d}");
        // a carries sub's nodes: a cluster inside h1's, holding x and y
        let h1 = d.find("subgraph \"cluster_host:h1\"").unwrap();
        let a = d.find("subgraph \"cluster_vn:red/big/a\"").unwrap();
        let x = d.find("\"vn:blue/sub/x\" [label=\"x\"").unwrap();
        let h2 = d.find("subgraph \"cluster_host:h2\"").unwrap();
        assert!(h1 < a && a < x && x < h2, "{d}");
        assert_eq!(d.matches('{').count(), d.matches('}').count());
    }

    #[test]
    fn one_colour_per_provider() {
        let d = to_dot(&topo(), Options::default());
        assert!(d.contains("\"vn:blue/sub/x\" [label=\"x\", color=\"#1f77b4\""), "{d}");
        assert!(d.contains("\"vn:red/big/c\" [label=\"c\", color=\"#d62728\""), "{d}");
        let others = provider_colors(&["acme", "zeta", "red"].into());
        assert_eq!(others["red"], "#d62728");
        assert_eq!(others["acme"], "#1f77b4", "the first colour red does not hold");
        assert_ne!(others["acme"], others["zeta"]);
        assert!(d.contains("<b>blue</b>: sub (2 nodes, in red/big)"), "{d}");
        assert!(d.contains("<b>red</b>: big (3 nodes)"), "{d}");
    }

    #[test]
    fn links_between_hosts_are_bundled_by_path() {
        let d = to_dot(&topo(), Options::default());
        let bundles: Vec<&str> = d
            .lines()
            .filter(|l| l.contains("lhead=\"cluster_host:h2\"") && l.contains("#d62728"))
            .collect();
        assert_eq!(bundles.len(), 1, "{d}");
        assert!(bundles[0].contains("label=\"2 links\\n20 Mbit/s\""), "{d}");
        // co-located: one by one, unlabelled without --labels
        assert!(d.contains("-- \"vn:red/big/b\" [constraint=false"), "{d}");
        let l = to_dot(&topo(), Options { labels: true });
        assert!(l.contains("a-c vni 4097 10M delay 20ms"), "{l}");
        assert!(l.contains("x-y 10M delay 20ms"), "{l}");
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(natural("n10").cmp(&natural("n9")), std::cmp::Ordering::Greater);
    }
}
