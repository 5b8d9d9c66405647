//! Fault injection on a running testbed, for experiments and tests: a host's agent stopped
//! (SIGTERM), killed (SIGKILL), started or restarted, optionally with the host's underlay links
//! taken down or up with it; one underlay link between two host namespaces down or up.
//!
//! A link is taken down at both ends (`ip link set down`), which also drops the routes over it;
//! bringing it up restores the testbed's /32 routes that use it (`ip route replace`). The agents'
//! probes notice either within a few probe intervals and the controller decides.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::layout::{Layout, LinkLayout, NetOp};
use super::net::{IpRoute2, Net};
use super::{Record, daemon, require_root};

/// What to do to a host's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    /// SIGTERM (then SIGKILL after 10 s).
    Stop,
    /// Start it when it is not running.
    Start,
    /// SIGKILL: the agent has no chance to say goodbye.
    Kill,
    /// Stop, then start.
    Restart,
}

impl HostAction {
    fn as_str(self) -> &'static str {
        match self {
            HostAction::Stop => "stopped",
            HostAction::Start => "started",
            HostAction::Kill => "killed",
            HostAction::Restart => "restarted",
        }
    }
}

fn load(state_dir: &Path) -> anyhow::Result<Record> {
    let state_dir = std::path::absolute(state_dir)?;
    Record::load(&state_dir)?.with_context(|| {
        format!(
            "no testbed recorded in {} (vnctl testbed up first)",
            state_dir.display()
        )
    })
}

/// The underlay link between hosts `a` and `b` (either order).
pub fn find_link<'a>(layout: &'a Layout, a: &str, b: &str) -> anyhow::Result<&'a LinkLayout> {
    for h in [a, b] {
        anyhow::ensure!(
            layout.host(h).is_some(),
            "no host {h} in this testbed (hosts: {})",
            layout
                .hosts
                .iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    layout
        .links
        .iter()
        .find(|l| (l.link.a == a && l.link.b == b) || (l.link.a == b && l.link.b == a))
        .with_context(|| format!("hosts {a} and {b} share no underlay link"))
}

/// The operations that take link `l` down, or up again with the routes over it.
pub fn link_ops(layout: &Layout, l: &LinkLayout, up: bool) -> Vec<NetOp> {
    let ends = [
        (&l.a_netns, &l.a_if, &l.link.a, l.link.b_address.addr()),
        (&l.b_netns, &l.b_if, &l.link.b, l.link.a_address.addr()),
    ];
    let mut ops = Vec::new();
    for (ns, dev, _, _) in ends {
        ops.push(if up {
            NetOp::Up {
                netns: Some(ns.clone()),
                dev: dev.clone(),
            }
        } else {
            NetOp::Down {
                netns: ns.clone(),
                dev: dev.clone(),
            }
        });
    }
    if up {
        // The kernel dropped the routes via the neighbour when the link went down.
        for (ns, _, host, peer) in ends {
            let Some(h) = layout.host(host) else { continue };
            for r in h.routes.iter().filter(|r| r.via == peer) {
                ops.push(NetOp::ReplaceRoute {
                    netns: ns.clone(),
                    route: r.clone(),
                });
            }
        }
    }
    ops
}

/// `vnctl testbed link down|up A B`.
pub fn link(state_dir: &Path, a: &str, b: &str, up: bool) -> anyhow::Result<()> {
    require_root("testbed link")?;
    let record = load(state_dir)?;
    let l = find_link(&record.layout, a, b)?;
    let mut net = IpRoute2;
    for op in link_ops(&record.layout, l, up) {
        net.apply(&op)?;
    }
    println!(
        "underlay link {} ({}:{} - {}:{}) {}",
        l.link.id,
        l.link.a,
        l.a_if,
        l.link.b,
        l.b_if,
        if up { "up" } else { "down" }
    );
    Ok(())
}

/// `vnctl testbed host stop|start|kill|restart HOST [--links]`: `links` also takes every
/// underlay link of the host down (stop, kill) or up (start, restart).
pub fn host(state_dir: &Path, id: &str, action: HostAction, links: bool) -> anyhow::Result<()> {
    require_root("testbed host")?;
    let record = load(state_dir)?;
    let h = record.layout.host(id).with_context(|| {
        format!(
            "no host {id} in this testbed (hosts: {})",
            record
                .layout
                .hosts
                .iter()
                .map(|h| h.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let spec = record.agent_daemon(h);
    let stops = matches!(
        action,
        HostAction::Stop | HostAction::Kill | HostAction::Restart
    );
    if stops {
        match (action, daemon::running(&spec)) {
            (HostAction::Kill, Some(pid)) => {
                kill(Pid::from_raw(pid), Signal::SIGKILL)
                    .with_context(|| format!("SIGKILL to {} (pid {pid})", spec.name))?;
                // Gone, and the pidfile with it (as a stop leaves it).
                daemon::stop(&spec, Duration::from_secs(5))?;
            }
            (HostAction::Kill | HostAction::Stop, None) => {
                anyhow::bail!("the agent of {id} is not running")
            }
            _ => {
                daemon::stop(&spec, Duration::from_secs(10))?;
            }
        }
    }
    let host_links: Vec<&LinkLayout> = record
        .layout
        .links
        .iter()
        .filter(|l| l.link.a == id || l.link.b == id)
        .collect();
    let mut net = IpRoute2;
    if links {
        let up = matches!(action, HostAction::Start | HostAction::Restart);
        for l in &host_links {
            for op in link_ops(&record.layout, l, up) {
                net.apply(&op)?;
            }
        }
    }
    let mut verb = action.as_str();
    if matches!(action, HostAction::Start | HostAction::Restart) {
        match daemon::running(&spec) {
            // `start --links` of a running agent (resumed by `testbed up`): only the links.
            Some(_) if links => verb = "running already",
            Some(pid) => anyhow::bail!("the agent of {id} is running already (pid {pid})"),
            None => {
                std::fs::create_dir_all(record.agent_state_dir(id))?;
                daemon::spawn(&spec)?;
            }
        }
    }
    println!(
        "agent of {id} {}{}",
        verb,
        if links {
            format!(
                "; its {} underlay link(s) {}",
                host_links.len(),
                if matches!(action, HostAction::Start | HostAction::Restart) {
                    "up"
                } else {
                    "down"
                }
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::layout::Naming;
    use super::super::net::argv;
    use super::super::topology;
    use super::*;

    fn layout() -> Layout {
        let s = topology::resolve(&topology::full_mesh(3, 100)).unwrap();
        Layout::new(&s, &Naming::default()).unwrap()
    }

    #[test]
    fn links_are_found_in_either_order_and_unknown_ones_named() {
        let l = layout();
        assert_eq!(find_link(&l, "h2", "h1").unwrap().link.id, "h1-h2");
        let e = find_link(&l, "h1", "h9").unwrap_err().to_string();
        assert_eq!(e, "no host h9 in this testbed (hosts: h1, h2, h3)");
    }

    #[test]
    fn down_then_up_restores_routes_over_the_link() {
        let l = layout();
        let link = find_link(&l, "h1", "h2").unwrap();
        let down: Vec<String> = link_ops(&l, link, false)
            .iter()
            .map(|o| argv(o).join(" "))
            .collect();
        assert_eq!(
            down,
            [
                "ip -n h1 link set dev to-h2 down",
                "ip -n h2 link set dev to-h1 down"
            ]
        );
        let up: Vec<String> = link_ops(&l, link, true)
            .iter()
            .map(|o| argv(o).join(" "))
            .collect();
        assert_eq!(
            up[..2],
            [
                "ip -n h1 link set dev to-h2 up",
                "ip -n h2 link set dev to-h1 up"
            ]
        );
        // Every route either host has via the other end of this link is put back.
        let via_h2 = l
            .host("h1")
            .unwrap()
            .routes
            .iter()
            .filter(|r| r.via == link.link.b_address.addr())
            .count();
        let via_h1 = l
            .host("h2")
            .unwrap()
            .routes
            .iter()
            .filter(|r| r.via == link.link.a_address.addr())
            .count();
        assert_eq!(up.len(), 2 + via_h1 + via_h2);
        assert!(
            up[2..].iter().all(|c| c.contains(" route replace ")),
            "{up:?}"
        );
    }
}
