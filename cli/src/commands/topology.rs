//! `vnctl topology [--svg FILE]`: the substrate (hosts, links, residual capacities) and where the
//! caller's VNs are embedded, as Graphviz DOT; rendered to SVG by `dot` when it is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use vnet_proto::v1 as pb;

use crate::client::{Controller, ControllerOpts, block_on, rpc_error};

/// Print the substrate and the embedded VNs as Graphviz DOT.
#[derive(Debug, clap::Args)]
pub struct TopologyArgs {
    /// Write an SVG rendering to FILE (needs Graphviz `dot`) instead of printing DOT.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

impl TopologyArgs {
    pub fn run(self, opts: &ControllerOpts) -> anyhow::Result<()> {
        let topo = block_on(async {
            let ctl = Controller::connect(opts).await?;
            anyhow::Ok(
                ctl.substrate()
                    .get_topology(pb::GetTopologyRequest {})
                    .await
                    .map_err(|s| rpc_error("get topology", s))?
                    .into_inner(),
            )
        })?;
        let dot = to_dot(&topo);
        match &self.svg {
            None => print!("{dot}"),
            Some(out) => render_svg(&dot, out)?,
        }
        Ok(())
    }
}

fn render_svg(dot: &str, out: &std::path::Path) -> anyhow::Result<()> {
    let Some(prog) = crate::which::on_path("dot") else {
        anyhow::bail!(
            "Graphviz `dot` is not on PATH, so no SVG was written: install graphviz \
             (apt-get install graphviz), or run without --svg to print DOT"
        );
    };
    let mut child = Command::new(&prog)
        .args(["-Tsvg", "-o"])
        .arg(out)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", prog.display()))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(dot.as_bytes())
        .context("feeding dot")?;
    let res = child.wait_with_output().context("waiting for dot")?;
    if !res.status.success() {
        anyhow::bail!(
            "dot failed ({}): {}",
            res.status,
            String::from_utf8_lossy(&res.stderr).trim()
        );
    }
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// A DOT double-quoted string.
fn q(s: &str) -> String {
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

const PALETTE: &[&str] = &[
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn vnode_id(vn: &pb::EmbeddedVn, node: &str) -> String {
    format!("vn:{}/{}/{}", vn.provider, vn.name, node)
}

/// The whole picture: one cluster per host with the virtual nodes placed there, substrate links
/// between hosts (bandwidth and what is left), virtual links dashed in their VN's colour and
/// labelled with their substrate path.
pub fn to_dot(t: &pb::Topology) -> String {
    let mut hosts: Vec<&pb::Host> = t.hosts.iter().collect();
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let mut links: Vec<&pb::SubstrateLink> = t.links.iter().collect();
    links.sort_by(|a, b| (&a.a, &a.b).cmp(&(&b.a, &b.b)));
    let mut vns: Vec<&pb::EmbeddedVn> = t.vns.iter().collect();
    vns.sort_by(|a, b| (&a.provider, &a.name).cmp(&(&b.provider, &b.name)));

    // Virtual nodes per host (VNs on the substrate) and per parent VN (children).
    let mut on_host: OnHost<'_> = BTreeMap::new();
    let host_ids: BTreeSet<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
    for (i, vn) in vns.iter().enumerate() {
        for (node, target) in &vn.placement {
            if vn.parent.is_empty() || host_ids.contains(target.as_str()) {
                on_host
                    .entry(target.as_str())
                    .or_default()
                    .push((i, vn, node.as_str()));
            }
        }
    }

    let mut o = String::new();
    o.push_str("graph vnet {\n");
    o.push_str("  graph [fontname=\"Helvetica\", compound=true, overlap=false];\n");
    o.push_str("  node [fontname=\"Helvetica\", fontsize=10];\n");
    o.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    write_hosts(&mut o, &hosts, &links, &on_host);
    write_substrate_links(&mut o, &links);
    for (i, vn) in vns.iter().enumerate() {
        write_vn(&mut o, i, vn, &vns, &host_ids);
    }
    o.push_str("}\n");
    o
}

/// The virtual nodes placed on each host: (index of the VN, the VN, the node's name).
type OnHost<'a> = BTreeMap<&'a str, Vec<(usize, &'a pb::EmbeddedVn, &'a str)>>;

/// One cluster per registered host, then one per host that links or placements name but that
/// is not registered.
fn write_hosts(
    o: &mut String,
    hosts: &[&pb::Host],
    links: &[&pb::SubstrateLink],
    on_host: &OnHost<'_>,
) {
    let mut hosts_seen: Vec<&str> = Vec::new();
    for h in hosts {
        hosts_seen.push(&h.id);
        let mut lines = vec![h.id.clone()];
        if !h.underlay_address.is_empty() {
            lines.push(h.underlay_address.clone());
        }
        if let (Some(c), Some(r)) = (&h.capacity, &h.residual) {
            lines.push(format!("cpu {}/{} free", r.cpu, c.cpu));
            lines.push(format!("mem {}/{} MiB free", r.memory_mb, c.memory_mb));
        }
        if !h.connected {
            lines.push("(disconnected)".into());
        }
        write_host(o, &h.id, &lines, h.connected, on_host.get(h.id.as_str()));
    }
    // Hosts named by links or placements but not registered.
    let mut extra: Vec<&str> = links
        .iter()
        .flat_map(|l| [l.a.as_str(), l.b.as_str()])
        .chain(on_host.keys().copied())
        .filter(|h| !hosts_seen.contains(h))
        .collect();
    extra.sort_unstable();
    extra.dedup();
    for h in extra {
        write_host(
            o,
            h,
            &[h.to_owned(), "(not registered)".into()],
            false,
            on_host.get(h),
        );
    }
}

/// Substrate links between hosts, labelled with their free bandwidth and latency.
fn write_substrate_links(o: &mut String, links: &[&pb::SubstrateLink]) {
    for l in links {
        let mut lines = vec![format!(
            "{}/{} Mbit/s free",
            l.residual_mbps, l.bandwidth_mbps
        )];
        if let Some(lat) = l.latency_ms {
            lines.push(format!("{lat} ms"));
        }
        o.push_str(&format!(
            "  {} -- {} [label={}, penwidth=2];\n",
            q(&format!("host:{}", l.a)),
            q(&format!("host:{}", l.b)),
            label(&lines)
        ));
    }
}

/// VN `i` of `vns`: a child's nodes hanging off its parent's virtual nodes, and its virtual
/// links dashed in its colour, labelled with their substrate paths.
fn write_vn(
    o: &mut String,
    i: usize,
    vn: &pb::EmbeddedVn,
    vns: &[&pb::EmbeddedVn],
    host_ids: &BTreeSet<&str>,
) {
    let color = PALETTE[i % PALETTE.len()];
    // Children: their nodes hang off the parent's virtual nodes.
    if !vn.parent.is_empty() {
        let parent = vns
            .iter()
            .find(|p| p.name == vn.parent && p.provider == vn.provider)
            .or_else(|| vns.iter().find(|p| p.name == vn.parent));
        for (node, target) in &vn.placement {
            if host_ids.contains(target.as_str()) {
                continue;
            }
            write_vnode(o, "  ", vn, node, color);
            if let Some(p) = parent {
                o.push_str(&format!(
                    "  {} -- {} [style=dotted, color={}];\n",
                    q(&vnode_id(vn, node)),
                    q(&vnode_id(p, target)),
                    q(color)
                ));
            }
        }
    }
    let mut paths: Vec<(&String, &String)> = vn.link_paths.iter().collect();
    paths.sort();
    for (ends, path) in paths {
        let Some((a, b)) = split_ends(vn, ends) else {
            continue;
        };
        o.push_str(&format!(
            "  {} -- {} [style=dashed, color={}, fontcolor={}, label={}];\n",
            q(&vnode_id(vn, a)),
            q(&vnode_id(vn, b)),
            q(color),
            q(color),
            label(&[path.split(',').collect::<Vec<_>>().join(" > ")])
        ));
    }
}

/// A virtual node: an ellipse in its VN's colour, labelled with its name and its VN's.
fn write_vnode(o: &mut String, indent: &str, vn: &pb::EmbeddedVn, node: &str, color: &str) {
    o.push_str(&format!(
        "{indent}{} [label={}, shape=ellipse, color={}, fontcolor={}];\n",
        q(&vnode_id(vn, node)),
        label(&[node.to_owned(), format!("{}/{}", vn.provider, vn.name)]),
        q(color),
        q(color)
    ));
}

/// Splits a link key "a-b" into two node names of the VN (names may contain '-').
fn split_ends<'a>(vn: &pb::EmbeddedVn, key: &'a str) -> Option<(&'a str, &'a str)> {
    key.match_indices('-').find_map(|(i, _)| {
        let (a, b) = (&key[..i], &key[i + 1..]);
        (vn.placement.contains_key(a) && vn.placement.contains_key(b)).then_some((a, b))
    })
}

fn write_host(
    o: &mut String,
    id: &str,
    lines: &[String],
    connected: bool,
    vnodes: Option<&Vec<(usize, &pb::EmbeddedVn, &str)>>,
) {
    o.push_str(&format!("  subgraph {} {{\n", q(&format!("cluster_{id}"))));
    o.push_str(&format!(
        "    label={}; style=rounded; color={};\n",
        q(id),
        q(if connected { "gray40" } else { "red" })
    ));
    o.push_str(&format!(
        "    {} [label={}, shape=box3d];\n",
        q(&format!("host:{id}")),
        label(lines)
    ));
    for (i, vn, node) in vnodes.into_iter().flatten() {
        write_vnode(o, "    ", vn, node, PALETTE[i % PALETTE.len()]);
    }
    o.push_str("  }\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> pb::Topology {
        pb::Topology {
            hosts: vec![
                pb::Host {
                    id: "h1".into(),
                    connected: true,
                    ..Default::default()
                },
                pb::Host {
                    id: "h2".into(),
                    connected: true,
                    ..Default::default()
                },
            ],
            links: vec![pb::SubstrateLink {
                id: "h1-h2".into(),
                a: "h1".into(),
                b: "h2".into(),
                bandwidth_mbps: 1000,
                residual_mbps: 950,
                ..Default::default()
            }],
            vns: vec![pb::EmbeddedVn {
                name: "red-net".into(),
                provider: "red".into(),
                parent: String::new(),
                placement: [("a".into(), "h1".into()), ("b-2".into(), "h2".into())].into(),
                link_paths: [("a-b-2".into(), "h1,h2".into())].into(),
            }],
        }
    }

    #[test]
    fn dot_has_hosts_links_and_placements() {
        let d = to_dot(&topo());
        assert!(d.starts_with("graph vnet {"), "{d}");
        assert!(d.contains("subgraph \"cluster_h1\""), "{d}");
        assert!(
            d.contains("\"host:h1\" -- \"host:h2\" [label=\"950/1000 Mbit/s free\""),
            "{d}"
        );
        assert!(
            d.contains("\"vn:red/red-net/a\" [label=\"a\\nred/red-net\""),
            "{d}"
        );
        assert!(
            d.contains("\"vn:red/red-net/a\" -- \"vn:red/red-net/b-2\" [style=dashed"),
            "{d}"
        );
        assert_eq!(d.matches('{').count(), d.matches('}').count());
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(q("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn dot_renders_when_graphviz_is_installed() {
        let Some(dot) = crate::which::on_path("dot") else {
            println!("SKIP dot_renders_when_graphviz_is_installed: graphviz `dot` not on PATH");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.svg");
        let _ = dot;
        render_svg(&to_dot(&topo()), &out).unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
    }
}
