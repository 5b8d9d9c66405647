//! Exact accounting of what held VNs use on each host and substrate link, and the check that a
//! proposed mapping fits the residual substrate. This is the controller's own guard: whatever an
//! embedding algorithm proposes is checked here, under the commit lock, before it is accepted.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ProviderId, VnReq};
use crate::substrate::Registry;

/// What an embedding algorithm proposes for a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    /// Host of each node, in the order of `VnReq::nodes`.
    pub node_hosts: Vec<String>,
    /// Substrate link ids of each virtual link, from its `a` end to its `b` end.
    pub link_paths: Vec<Vec<String>>,
    pub algorithm: String,
    pub revenue: f64,
    pub cost: f64,
}

/// How strictly [`Usage::check`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckMode {
    /// Accepting a new VN: every constraint must hold.
    Commit,
    /// Re-committing a stored VN at start-up: only the structure must hold.
    Restore,
}

/// Used capacity per host and link, and which providers occupy each host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu: BTreeMap<String, u64>,
    pub memory_mb: BTreeMap<String, u64>,
    pub bandwidth_mbps: BTreeMap<String, u64>,
    /// host -> provider -> (VNs of that provider on the host, of which with dedicated hosts)
    occupants: BTreeMap<String, BTreeMap<ProviderId, (u32, u32)>>,
}

/// Follows `links` from `from`; returns the hosts visited (first `from`, last the far end).
/// One-way latency of a path of substrate link ids, microseconds (links without a latency
/// count 0; unknown ids are skipped, [`walk_path`] refuses them).
pub fn path_delay_us(reg: &Registry, links: &[String]) -> u64 {
    links
        .iter()
        .filter_map(|id| reg.link(id)?.latency_ms)
        .map(|ms| (ms * 1000.0).round().max(0.0) as u64)
        .fold(0u64, u64::saturating_add)
}

pub fn walk_path(reg: &Registry, from: &str, links: &[String]) -> Result<Vec<String>, String> {
    let mut path = vec![from.to_string()];
    for id in links {
        let l = reg
            .link(id)
            .ok_or_else(|| format!("unknown substrate link {id}"))?;
        let cur = path.last().expect("non-empty");
        if l.a != *cur && l.b != *cur {
            return Err(format!("substrate link {id} does not touch host {cur}"));
        }
        let next = l.other(cur).to_string();
        if path.contains(&next) {
            return Err(format!("path visits host {next} twice"));
        }
        path.push(next);
    }
    Ok(path)
}

impl Usage {
    pub fn host_cpu(&self, h: &str) -> u64 {
        self.cpu.get(h).copied().unwrap_or(0)
    }

    pub fn host_memory(&self, h: &str) -> u64 {
        self.memory_mb.get(h).copied().unwrap_or(0)
    }

    pub fn link_bandwidth(&self, l: &str) -> u64 {
        self.bandwidth_mbps.get(l).copied().unwrap_or(0)
    }

    /// Whether `h` carries a VN of another provider than `p`, or a dedicated VN of another one.
    fn foreign(&self, h: &str, p: &ProviderId) -> (bool, bool) {
        let Some(occ) = self.occupants.get(h) else {
            return (false, false);
        };
        let mut any = false;
        let mut dedicated = false;
        for (q, (n, d)) in occ {
            if q != p && *n > 0 {
                any = true;
                dedicated |= *d > 0;
            }
        }
        (any, dedicated)
    }

    /// Hosts that `req` must not use because of dedicated-host isolation.
    pub fn excluded_hosts(&self, req: &VnReq) -> BTreeSet<String> {
        self.occupants
            .keys()
            .filter(|h| {
                let (any, dedicated) = self.foreign(h, &req.provider);
                dedicated || (req.attributes.dedicated_hosts && any)
            })
            .cloned()
            .collect()
    }

    /// Checks a proposed mapping against the residual substrate and every constraint of the
    /// request. Returns the host path of each link, or the reason it does not fit.
    ///
    /// With [`CheckMode::Commit`] everything must hold, including attachment. With
    /// [`CheckMode::Restore`] (re-committing a stored VN) only the structure must hold (hosts and
    /// links exist, paths join the ends, pins and revisitation match): what may legitimately have
    /// changed since (capacities or labels reported by a re-registered agent, attachment,
    /// isolation) is returned as warnings, because the VN exists on its hosts regardless.
    pub fn check(
        &self,
        reg: &Registry,
        req: &VnReq,
        m: &Mapping,
        mode: CheckMode,
    ) -> Result<(Vec<Vec<String>>, Vec<String>), String> {
        let mut warnings = Vec::new();
        let require_connected = mode == CheckMode::Commit;
        let mut soft = |msg: String| -> Result<(), String> {
            match mode {
                CheckMode::Commit => Err(msg),
                CheckMode::Restore => {
                    warnings.push(msg);
                    Ok(())
                }
            }
        };
        if m.node_hosts.len() != req.nodes.len() || m.link_paths.len() != req.links.len() {
            return Err("the mapping does not cover the request".into());
        }
        let excluded = self.excluded_hosts(req);
        let mut cpu: BTreeMap<&str, u64> = BTreeMap::new();
        let mut mem: BTreeMap<&str, u64> = BTreeMap::new();
        for (n, h) in req.nodes.iter().zip(&m.node_hosts) {
            let host = reg
                .host(h)
                .ok_or_else(|| format!("node {}: unknown host {h}", n.name))?;
            if require_connected && !reg.is_connected(h) {
                return Err(format!("node {}: host {h} is not attached", n.name));
            }
            if let Some(pin) = &n.pin
                && pin != h
            {
                return Err(format!("node {}: pinned to {pin}, placed on {h}", n.name));
            }
            if let Some(loc) = &n.location
                && !host.labels.contains(loc)
            {
                soft(format!("node {}: host {h} lacks label {loc}", n.name))?;
            }
            if !host.kinds.contains(&n.kind) {
                soft(format!(
                    "node {}: host {h} does not run {} nodes",
                    n.name,
                    n.kind.as_str()
                ))?;
            }
            if let Some(g) = &n.guest
                && !host.runs_image(&g.image, &g.arch)
            {
                soft(format!(
                    "node {}: host {h} does not run {} guests of image {}",
                    n.name, g.arch, g.image
                ))?;
            }
            if excluded.contains(h) {
                soft(format!(
                    "node {}: host {h} is excluded by dedicated-host isolation",
                    n.name
                ))?;
            }
            // Saturating sums: too large a demand exceeds every capacity instead of wrapping.
            let c = cpu.entry(h).or_default();
            *c = c.saturating_add(n.cpu);
            let m = mem.entry(h).or_default();
            *m = m.saturating_add(n.memory_mb);
        }
        if !req.allow_revisitation && cpu.len() < req.nodes.len() {
            return Err("two nodes share a host but revisitation is not allowed".into());
        }
        for msg in self.host_shortfalls(reg, &cpu, &mem) {
            soft(msg)?;
        }
        let mut bw: BTreeMap<&str, u64> = BTreeMap::new();
        let mut paths = Vec::with_capacity(req.links.len());
        for (i, (l, links)) in req.links.iter().zip(&m.link_paths).enumerate() {
            let from = &m.node_hosts[l.a];
            let path = walk_path(reg, from, links).map_err(|e| format!("link {i}: {e}"))?;
            let to = &m.node_hosts[l.b];
            if path.last() != Some(to) {
                return Err(format!(
                    "link {i}: path ends at {:?}, not {to}",
                    path.last()
                ));
            }
            if let Some(max) = req.max_path_hops
                && links.len() > max as usize
            {
                return Err(format!("link {i}: {} hops exceed {max}", links.len()));
            }
            if let Some(max) = l.max_delay_us {
                let d = path_delay_us(reg, links);
                if d > max {
                    return Err(format!(
                        "link {i}: the path's delay {d} us exceeds max_delay_us {max}"
                    ));
                }
            }
            for id in links {
                let sl = reg.link(id).expect("walked");
                if require_connected && !reg.link_usable(sl) {
                    return Err(format!("link {i}: substrate link {id} is not attached"));
                }
                if path[1..path.len() - 1].iter().any(|h| excluded.contains(h)) {
                    soft(format!("link {i}: transit host excluded by isolation"))?;
                }
                let b = bw.entry(id).or_default();
                *b = b.saturating_add(l.bandwidth_mbps);
            }
            paths.push(path);
        }
        for msg in self.link_shortfalls(reg, &bw) {
            soft(msg)?;
        }
        Ok((paths, warnings))
    }

    /// Hosts whose free cpu or memory is less than `cpu` and `mem` ask of them.
    fn host_shortfalls(
        &self,
        reg: &Registry,
        cpu: &BTreeMap<&str, u64>,
        mem: &BTreeMap<&str, u64>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (h, c) in cpu {
            let host = reg.host(h).expect("checked by check");
            if self.host_cpu(h).saturating_add(*c) > host.cpu {
                out.push(format!(
                    "host {h}: cpu {c} requested, {} free",
                    host.cpu.saturating_sub(self.host_cpu(h))
                ));
            }
            let mm = mem[h];
            if self.host_memory(h).saturating_add(mm) > host.memory_mb {
                out.push(format!(
                    "host {h}: memory {mm} MiB requested, {} MiB free",
                    host.memory_mb.saturating_sub(self.host_memory(h))
                ));
            }
        }
        out
    }

    /// Substrate links whose free bandwidth is less than `bw` asks of them.
    fn link_shortfalls(&self, reg: &Registry, bw: &BTreeMap<&str, u64>) -> Vec<String> {
        let mut out = Vec::new();
        for (id, b) in bw {
            let sl = reg.link(id).expect("walked");
            if self.link_bandwidth(id).saturating_add(*b) > sl.bandwidth_mbps {
                out.push(format!(
                    "substrate link {id}: {b} Mbit/s requested, {} free",
                    sl.bandwidth_mbps.saturating_sub(self.link_bandwidth(id))
                ));
            }
        }
        out
    }

    fn apply(&mut self, req: &VnReq, node_hosts: &[String], hop_links: &[Vec<String>], add: bool) {
        fn upd(map: &mut BTreeMap<String, u64>, k: &str, v: u64, add: bool) {
            let e = map.entry(k.to_string()).or_default();
            *e = if add {
                e.saturating_add(v)
            } else {
                e.saturating_sub(v)
            };
            if *e == 0 {
                map.remove(k);
            }
        }
        for (n, h) in req.nodes.iter().zip(node_hosts) {
            upd(&mut self.cpu, h, n.cpu, add);
            upd(&mut self.memory_mb, h, n.memory_mb, add);
        }
        for (l, links) in req.links.iter().zip(hop_links) {
            for id in links {
                upd(&mut self.bandwidth_mbps, id, l.bandwidth_mbps, add);
            }
        }
        let hosts: BTreeSet<&String> = node_hosts.iter().collect();
        for h in hosts {
            let occ = self.occupants.entry(h.clone()).or_default();
            let e = occ.entry(req.provider.clone()).or_default();
            let d = u32::from(req.attributes.dedicated_hosts);
            if add {
                e.0 += 1;
                e.1 += d;
            } else {
                e.0 = e.0.saturating_sub(1);
                e.1 = e.1.saturating_sub(d);
            }
            if e.0 == 0 {
                occ.remove(&req.provider);
            }
            if occ.is_empty() {
                self.occupants.remove(h);
            }
        }
    }

    pub fn add(&mut self, req: &VnReq, node_hosts: &[String], hop_links: &[Vec<String>]) {
        self.apply(req, node_hosts, hop_links, true);
    }

    pub fn remove(&mut self, req: &VnReq, node_hosts: &[String], hop_links: &[Vec<String>]) {
        self.apply(req, node_hosts, hop_links, false);
    }
}
