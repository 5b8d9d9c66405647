//! The kernel side of the testbed: one trait, an implementation that runs iproute2 (`ip`, `tc`),
//! and a recording fake for tests.
//!
//! Why iproute2 and not netlink here: the testbed creates a few dozen objects once (not a hot
//! path), iproute2 is a required system package anyway, `ip netns add` creates named namespaces
//! exactly as every other tool expects, and TBF is not in netlink-packet-route. Each command's
//! stderr becomes part of the error, which names the command.

#[cfg(test)]
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use anyhow::Context;
use ipnet::Ipv4Net;

use super::layout::NetOp;

/// A root-namespace link as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Absent,
    Present { alias: String },
}

/// What the testbed needs from the kernel.
pub trait Net {
    fn apply(&mut self, op: &NetOp) -> anyhow::Result<()>;
    /// Inode of a named namespace (`/run/netns/NAME`), if it exists.
    fn netns_inode(&self, name: &str) -> Option<u64>;
    fn delete_netns(&mut self, name: &str) -> anyhow::Result<()>;
    fn root_link(&self, name: &str) -> anyhow::Result<LinkState>;
    fn delete_root_link(&mut self, name: &str) -> anyhow::Result<()>;
    /// IPv4 addresses configured in the root namespace (to refuse a clashing management subnet).
    fn root_addresses(&self) -> anyhow::Result<Vec<Ipv4Net>>;
}

/// TBF burst: at least one timer tick's worth of bytes at `mbit` (HZ 250), and at least 32 KiB.
pub fn tbf_burst_bytes(mbit: u64) -> u64 {
    (mbit * 1_000_000 / 8 / 250).max(32 * 1024)
}

/// The argv that realizes an op with iproute2.
pub fn argv(op: &NetOp) -> Vec<String> {
    fn ip(netns: &Option<String>, rest: &[&str]) -> Vec<String> {
        let mut v = vec!["ip".to_owned()];
        if let Some(ns) = netns {
            v.extend(["-n".to_owned(), ns.clone()]);
        }
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match op {
        NetOp::AddNetns { name } => s(&["ip", "netns", "add", name]),
        NetOp::AddBridge { name } => s(&["ip", "link", "add", name, "type", "bridge"]),
        NetOp::AddVethToNetns {
            name,
            peer,
            peer_netns,
        } => s(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_netns,
        ]),
        NetOp::AddVethBetween {
            a_netns,
            a,
            b_netns,
            b,
        } => s(&[
            "ip", "link", "add", a, "netns", a_netns, "type", "veth", "peer", "name", b, "netns",
            b_netns,
        ]),
        NetOp::SetAlias { dev, alias } => s(&["ip", "link", "set", "dev", dev, "alias", alias]),
        NetOp::SetMaster { dev, master } => s(&["ip", "link", "set", "dev", dev, "master", master]),
        NetOp::SetMtu { netns, dev, mtu } => {
            ip(netns, &["link", "set", "dev", dev, "mtu", &mtu.to_string()])
        }
        NetOp::AddAddress { netns, dev, cidr } => {
            ip(netns, &["addr", "add", &cidr.to_string(), "dev", dev])
        }
        NetOp::Up { netns, dev } => ip(netns, &["link", "set", "dev", dev, "up"]),
        NetOp::Sysctl { netns, key, value } => s(&[
            "ip",
            "netns",
            "exec",
            netns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ]),
        NetOp::Shape { netns, dev, mbit } => s(&[
            "tc",
            "-n",
            netns,
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{mbit}mbit"),
            "burst",
            &tbf_burst_bytes(*mbit).to_string(),
            "latency",
            "50ms",
        ]),
        NetOp::Down { netns, dev } => s(&["ip", "-n", netns, "link", "set", "dev", dev, "down"]),
        NetOp::AddRoute { netns, route } | NetOp::ReplaceRoute { netns, route } => s(&[
            "ip",
            "-n",
            netns,
            "route",
            if matches!(op, NetOp::AddRoute { .. }) {
                "add"
            } else {
                "replace"
            },
            &route.dst.to_string(),
            "via",
            &route.via.to_string(),
            "src",
            &route.src.to_string(),
        ]),
    }
}

fn run(argv: &[String]) -> anyhow::Result<String> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("cannot run {} (is iproute2 installed?)", argv[0]))?;
    if !out.status.success() {
        anyhow::bail!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// iproute2.
#[derive(Debug, Default)]
pub struct IpRoute2;

impl Net for IpRoute2 {
    fn apply(&mut self, op: &NetOp) -> anyhow::Result<()> {
        run(&argv(op)).map(drop)
    }

    fn netns_inode(&self, name: &str) -> Option<u64> {
        std::fs::metadata(format!("/run/netns/{name}"))
            .ok()
            .map(|m| m.ino())
    }

    fn delete_netns(&mut self, name: &str) -> anyhow::Result<()> {
        run(&["ip".into(), "netns".into(), "delete".into(), name.into()]).map(drop)
    }

    fn root_link(&self, name: &str) -> anyhow::Result<LinkState> {
        let out = Command::new("ip")
            .args(["-j", "link", "show", "dev", name])
            .output()
            .context("cannot run ip (is iproute2 installed?)")?;
        if !out.status.success() {
            return Ok(LinkState::Absent);
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing `ip -j link show`")?;
        let alias = v[0]["ifalias"].as_str().unwrap_or_default().to_owned();
        Ok(LinkState::Present { alias })
    }

    fn delete_root_link(&mut self, name: &str) -> anyhow::Result<()> {
        run(&[
            "ip".into(),
            "link".into(),
            "delete".into(),
            "dev".into(),
            name.into(),
        ])
        .map(drop)
    }

    fn root_addresses(&self) -> anyhow::Result<Vec<Ipv4Net>> {
        let out = run(&[
            "ip".into(),
            "-j".into(),
            "-4".into(),
            "addr".into(),
            "show".into(),
        ])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j addr`")?;
        let mut nets = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64())
                    && let Ok(n) = format!("{local}/{len}").parse()
                {
                    nets.push(n);
                }
            }
        }
        Ok(nets)
    }
}

/// Records ops and keeps a model of namespaces and root links; fails on request.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeNet {
    pub log: Vec<String>,
    pub netns: BTreeMap<String, u64>,
    pub links: BTreeMap<String, String>,
    pub addresses: Vec<Ipv4Net>,
    /// Fail the op whose argv contains this text.
    pub fail_on: Option<String>,
    /// This link disappears by itself just before we delete it (as a veth does when its
    /// peer's namespace goes): the delete fails with "Cannot find device".
    pub vanish_on_delete: Option<String>,
    pub next_inode: u64,
}

#[cfg(test)]
impl Net for FakeNet {
    fn apply(&mut self, op: &NetOp) -> anyhow::Result<()> {
        let line = argv(op).join(" ");
        if let Some(f) = &self.fail_on
            && line.contains(f.as_str())
        {
            anyhow::bail!("`{line}` failed: injected");
        }
        self.log.push(line);
        match op {
            NetOp::AddNetns { name } => {
                anyhow::ensure!(!self.netns.contains_key(name), "netns {name} exists");
                self.next_inode += 1;
                self.netns.insert(name.clone(), 4000 + self.next_inode);
            }
            NetOp::AddBridge { name } | NetOp::AddVethToNetns { name, .. } => {
                anyhow::ensure!(!self.links.contains_key(name), "link {name} exists");
                self.links.insert(name.clone(), String::new());
            }
            NetOp::SetAlias { dev, alias } => {
                if let Some(a) = self.links.get_mut(dev) {
                    *a = alias.clone();
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn netns_inode(&self, name: &str) -> Option<u64> {
        self.netns.get(name).copied()
    }

    fn delete_netns(&mut self, name: &str) -> anyhow::Result<()> {
        self.log.push(format!("ip netns delete {name}"));
        self.netns.remove(name).context("no such netns")?;
        Ok(())
    }

    fn root_link(&self, name: &str) -> anyhow::Result<LinkState> {
        Ok(match self.links.get(name) {
            None => LinkState::Absent,
            Some(alias) => LinkState::Present {
                alias: alias.clone(),
            },
        })
    }

    fn delete_root_link(&mut self, name: &str) -> anyhow::Result<()> {
        self.log.push(format!("ip link delete dev {name}"));
        if self.vanish_on_delete.as_deref() == Some(name) {
            self.links.remove(name);
            anyhow::bail!("Cannot find device \"{name}\"");
        }
        self.links.remove(name).context("no such link")?;
        Ok(())
    }

    fn root_addresses(&self) -> anyhow::Result<Vec<Ipv4Net>> {
        Ok(self.addresses.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::Route;
    use super::*;

    #[test]
    fn argv_per_op() {
        let ops = [
            (
                NetOp::AddVethBetween {
                    a_netns: "h1".into(),
                    a: "to-h2".into(),
                    b_netns: "h2".into(),
                    b: "to-h1".into(),
                },
                "ip link add to-h2 netns h1 type veth peer name to-h1 netns h2",
            ),
            (
                NetOp::AddAddress {
                    netns: Some("h1".into()),
                    dev: "to-h2".into(),
                    cidr: "10.255.0.1/30".parse().unwrap(),
                },
                "ip -n h1 addr add 10.255.0.1/30 dev to-h2",
            ),
            (
                NetOp::Shape {
                    netns: "h1".into(),
                    dev: "to-h2".into(),
                    mbit: 1000,
                },
                "tc -n h1 qdisc replace dev to-h2 root tbf rate 1000mbit burst 500000 latency 50ms",
            ),
            (
                NetOp::AddRoute {
                    netns: "h2".into(),
                    route: Route {
                        dst: "10.255.1.2/32".parse().unwrap(),
                        via: "10.255.2.2".parse().unwrap(),
                        src: "10.255.0.2".parse().unwrap(),
                    },
                },
                "ip -n h2 route add 10.255.1.2/32 via 10.255.2.2 src 10.255.0.2",
            ),
            (
                NetOp::Up {
                    netns: None,
                    dev: "vnmgmt0".into(),
                },
                "ip link set dev vnmgmt0 up",
            ),
        ];
        for (op, want) in ops {
            assert_eq!(argv(&op).join(" "), want);
        }
    }

    #[test]
    fn burst_grows_with_rate() {
        assert_eq!(tbf_burst_bytes(50), 32 * 1024);
        assert_eq!(tbf_burst_bytes(1000), 500_000);
    }
}
