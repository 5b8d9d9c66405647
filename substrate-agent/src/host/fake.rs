//! A recording fake of [`Kernel`]: an in-memory host that behaves like the kernel where the agent
//! relies on it (a veth end disappears with its peer's namespace, names are unique per namespace,
//! deleting what does not exist is "not found") and records every call.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::host::kernel::{
    IfSpec, Kernel, KernelError, NsEntry, NsSnapshot, PortSpec, RouteInfo, VxlanSpec,
};
use crate::reconcile::observed::{LinkObs, RouteObs};
use crate::reconcile::spec::Route;

#[derive(Debug, Clone, Default)]
struct FakeLink {
    obs: LinkObs,
    peer: Option<(String, String)>,
}

#[derive(Debug, Clone, Default)]
struct FakeNs {
    inode: u64,
    /// Reading it fails (a stray file or directory under /run/netns).
    unreadable: bool,
    lo_alias: Option<String>,
    links: BTreeMap<String, FakeLink>,
    routes: Vec<RouteObs>,
}

#[derive(Debug, Default)]
struct Host {
    namespaces: BTreeMap<String, FakeNs>,
    host_links: BTreeMap<String, LinkObs>,
    routes: BTreeMap<IpAddr, RouteInfo>,
    next_inode: u64,
    next_index: u32,
    calls: Vec<String>,
    fail_on: Vec<String>,
}

/// The fake kernel.
#[derive(Debug, Default)]
pub struct FakeKernel {
    host: Mutex<Host>,
}

impl FakeKernel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, as `op target` strings.
    pub fn calls(&self) -> Vec<String> {
        self.host.lock().unwrap().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.host.lock().unwrap().calls.clear();
    }

    /// Makes every call whose record contains `needle` fail.
    pub fn fail_on(&self, needle: &str) {
        self.host.lock().unwrap().fail_on.push(needle.to_string());
    }

    pub fn clear_failures(&self) {
        self.host.lock().unwrap().fail_on.clear();
    }

    /// A route the fake's `route_to` answers.
    pub fn add_underlay_route(&self, dst: IpAddr, info: RouteInfo) {
        self.host.lock().unwrap().routes.insert(dst, info);
    }

    /// Adds a namespace as someone else would (no tag), e.g. a look-alike.
    pub fn add_foreign_netns(&self, name: &str) {
        let mut h = self.host.lock().unwrap();
        h.next_inode += 1;
        let inode = h.next_inode + 1_000_000;
        h.namespaces.insert(
            name.to_string(),
            FakeNs {
                inode,
                ..Default::default()
            },
        );
    }

    /// Adds an entry under the namespace directory that is no namespace (reading it fails).
    pub fn add_unreadable_netns(&self, name: &str) {
        self.add_foreign_netns(name);
        if let Some(n) = self.host.lock().unwrap().namespaces.get_mut(name) {
            n.unreadable = true;
        }
    }

    /// Rewrites a namespace's loopback alias, as its tenant can.
    pub fn set_lo_alias(&self, ns: &str, alias: Option<&str>) {
        if let Some(n) = self.host.lock().unwrap().namespaces.get_mut(ns) {
            n.lo_alias = alias.map(str::to_string);
        }
    }

    /// Adds a tagged leftover link in the agent's own namespace.
    pub fn add_host_link(&self, name: &str, alias: &str) {
        let mut h = self.host.lock().unwrap();
        h.host_links.insert(
            name.to_string(),
            LinkObs {
                name: name.into(),
                alias: Some(alias.into()),
                ..Default::default()
            },
        );
    }

    /// Names of all namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        self.host
            .lock()
            .unwrap()
            .namespaces
            .keys()
            .cloned()
            .collect()
    }

    /// Links of a namespace.
    pub fn links(&self, ns: &str) -> Vec<LinkObs> {
        self.host
            .lock()
            .unwrap()
            .namespaces
            .get(ns)
            .map(|n| n.links.values().map(|l| l.obs.clone()).collect())
            .unwrap_or_default()
    }

    /// Mutates a link as a disturbance from outside would (e.g. someone sets it down).
    pub fn tamper_link(&self, ns: &str, ifname: &str, f: impl FnOnce(&mut LinkObs)) {
        let mut h = self.host.lock().unwrap();
        if let Some(l) = h
            .namespaces
            .get_mut(ns)
            .and_then(|n| n.links.get_mut(ifname))
        {
            f(&mut l.obs);
        }
    }

    /// Removes a link as someone else would.
    pub fn remove_link(&self, ns: &str, ifname: &str) {
        let mut h = self.host.lock().unwrap();
        remove_link(&mut h, ns, ifname);
    }

    fn record(&self, h: &mut Host, call: String) -> Result<(), KernelError> {
        let fail = h.fail_on.iter().any(|f| call.contains(f.as_str()));
        h.calls.push(call.clone());
        if fail {
            return Err(KernelError::other(call, "injected failure"));
        }
        Ok(())
    }
}

fn remove_link(h: &mut Host, ns: &str, ifname: &str) -> bool {
    let Some(l) = h
        .namespaces
        .get_mut(ns)
        .and_then(|n| n.links.remove(ifname))
    else {
        return false;
    };
    if let Some((pns, pname)) = l.peer
        && let Some(n) = h.namespaces.get_mut(&pns)
    {
        n.links.remove(&pname);
    }
    true
}

fn new_link(h: &mut Host, spec: &IfSpec, kind: &str, tag: &str) -> FakeLink {
    h.next_index += 1;
    FakeLink {
        obs: LinkObs {
            name: spec.ifname.clone(),
            index: h.next_index,
            kind: kind.into(),
            alias: Some(tag.into()),
            up: true,
            mtu: spec.mtu,
            addresses: spec.addresses.clone(),
            root_qdisc: None,
            root_rate: None,
            ingress_qdisc: false,
        },
        peer: None,
    }
}

fn ns_mut<'a>(h: &'a mut Host, ns: &str) -> Result<&'a mut FakeNs, KernelError> {
    h.namespaces
        .get_mut(ns)
        .ok_or_else(|| KernelError::NotFound {
            what: format!("namespace {ns}"),
        })
}

fn check_free(h: &Host, spec: &IfSpec) -> Result<(), KernelError> {
    let n = h
        .namespaces
        .get(&spec.ns)
        .ok_or_else(|| KernelError::NotFound {
            what: format!("namespace {}", spec.ns),
        })?;
    if n.links.contains_key(&spec.ifname) {
        return Err(KernelError::other(
            format!("link {} in {}", spec.ifname, spec.ns),
            "File exists",
        ));
    }
    Ok(())
}

impl Kernel for FakeKernel {
    fn list_netns(&self, prefix: &str) -> Result<Vec<NsEntry>, KernelError> {
        let h = self.host.lock().unwrap();
        Ok(h.namespaces
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, ns)| NsEntry {
                name: n.clone(),
                inode: ns.inode,
            })
            .collect())
    }

    fn ns_snapshot(&self, ns: &str) -> Result<NsSnapshot, KernelError> {
        let h = self.host.lock().unwrap();
        let n = h.namespaces.get(ns).ok_or_else(|| KernelError::NotFound {
            what: format!("namespace {ns}"),
        })?;
        if n.unreadable {
            return Err(KernelError::other(
                format!("namespace {ns}"),
                "not a network namespace",
            ));
        }
        Ok(NsSnapshot {
            lo_alias: n.lo_alias.clone(),
            links: n.links.values().map(|l| l.obs.clone()).collect(),
            routes: n.routes.clone(),
        })
    }

    fn host_links(&self, alias_prefix: &str) -> Result<Vec<LinkObs>, KernelError> {
        let h = self.host.lock().unwrap();
        Ok(h.host_links
            .values()
            .filter(|l| {
                l.alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(alias_prefix))
            })
            .cloned()
            .collect())
    }

    fn create_netns(&self, name: &str, tag: &str) -> Result<u64, KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(&mut h, format!("create_netns {name}"))?;
        if h.namespaces.contains_key(name) {
            return Err(KernelError::other(
                format!("namespace {name}"),
                "File exists",
            ));
        }
        h.next_inode += 1;
        let inode = h.next_inode;
        h.namespaces.insert(
            name.to_string(),
            FakeNs {
                inode,
                lo_alias: Some(tag.into()),
                ..Default::default()
            },
        );
        Ok(inode)
    }

    fn delete_netns(&self, name: &str) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(&mut h, format!("delete_netns {name}"))?;
        let Some(ns) = h.namespaces.remove(name) else {
            return Err(KernelError::NotFound {
                what: format!("namespace {name}"),
            });
        };
        for l in ns.links.values() {
            if let Some((pns, pname)) = &l.peer
                && let Some(n) = h.namespaces.get_mut(pns)
            {
                n.links.remove(pname);
            }
        }
        Ok(())
    }

    fn create_veth(&self, a: &IfSpec, b: &IfSpec, tag: &str) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(
            &mut h,
            format!("create_veth {}/{} {}/{}", a.ns, a.ifname, b.ns, b.ifname),
        )?;
        check_free(&h, a)?;
        check_free(&h, b)?;
        let mut la = new_link(&mut h, a, "veth", tag);
        let mut lb = new_link(&mut h, b, "veth", tag);
        la.peer = Some((b.ns.clone(), b.ifname.clone()));
        lb.peer = Some((a.ns.clone(), a.ifname.clone()));
        ns_mut(&mut h, &a.ns)?.links.insert(a.ifname.clone(), la);
        ns_mut(&mut h, &b.ns)?.links.insert(b.ifname.clone(), lb);
        Ok(())
    }

    fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(
            &mut h,
            format!(
                "create_vxlan {}/{} vni {} remote {}",
                spec.dev.ns, spec.dev.ifname, spec.vni, spec.remote
            ),
        )?;
        check_free(&h, &spec.dev)?;
        let l = new_link(&mut h, &spec.dev, "vxlan", &spec.tag);
        ns_mut(&mut h, &spec.dev.ns)?
            .links
            .insert(spec.dev.ifname.clone(), l);
        Ok(())
    }

    fn create_tap(&self, dev: &IfSpec, tag: Option<&str>) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(&mut h, format!("create_tap {}/{}", dev.ns, dev.ifname))?;
        check_free(&h, dev)?;
        let mut l = new_link(&mut h, dev, "tun", "");
        l.obs.alias = tag.map(str::to_string);
        ns_mut(&mut h, &dev.ns)?.links.insert(dev.ifname.clone(), l);
        Ok(())
    }

    fn create_port(&self, spec: &PortSpec) -> Result<(), KernelError> {
        let dev = &spec.dev;
        let mut h = self.host.lock().unwrap();
        self.record(
            &mut h,
            format!(
                "create_port {}/{} {}/{}",
                dev.ns,
                dev.ifname,
                spec.ctx.as_deref().unwrap_or("<host>"),
                spec.outer
            ),
        )?;
        check_free(&h, dev)?;
        let mut l = new_link(&mut h, dev, "veth", "");
        l.obs.alias = Some(spec.tag.clone());
        ns_mut(&mut h, &dev.ns)?.links.insert(dev.ifname.clone(), l);
        Ok(())
    }

    fn delete_link(&self, ns: Option<&str>, ifname: &str) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(
            &mut h,
            format!("delete_link {}/{ifname}", ns.unwrap_or("<host>")),
        )?;
        let found = match ns {
            Some(ns) => remove_link(&mut h, ns, ifname),
            None => h.host_links.remove(ifname).is_some(),
        };
        if found {
            Ok(())
        } else {
            Err(KernelError::NotFound {
                what: format!("link {ifname}"),
            })
        }
    }

    fn shape(&self, ns: &str, ifname: &str, mbps: u64) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(&mut h, format!("shape {ns}/{ifname} {mbps}"))?;
        let l = ns_mut(&mut h, ns)?
            .links
            .get_mut(ifname)
            .ok_or_else(|| KernelError::NotFound {
                what: format!("link {ifname} in {ns}"),
            })?;
        l.obs.root_qdisc = Some("tbf".into());
        l.obs.root_rate = Some(crate::host::tc::TbfParams::for_mbps(mbps).rate_bytes);
        Ok(())
    }

    fn join(&self, ns: &str, a: &str, b: &str) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(&mut h, format!("join {ns} {a} {b}"))?;
        let n = ns_mut(&mut h, ns)?;
        for d in [a, b] {
            n.links
                .get_mut(d)
                .ok_or_else(|| KernelError::NotFound {
                    what: format!("link {d} in {ns}"),
                })?
                .obs
                .ingress_qdisc = true;
        }
        Ok(())
    }

    fn redirect_egress(&self, ns: &str, from: &str, to: &str) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(&mut h, format!("redirect_egress {ns} {from} {to}"))?;
        let n = ns_mut(&mut h, ns)?;
        if !n.links.contains_key(to) {
            return Err(KernelError::NotFound {
                what: format!("link {to} in {ns}"),
            });
        }
        n.links
            .get_mut(from)
            .ok_or_else(|| KernelError::NotFound {
                what: format!("link {from} in {ns}"),
            })?
            .obs
            .ingress_qdisc = true;
        Ok(())
    }

    fn unjoin(&self, ns: &str, ifname: &str) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(&mut h, format!("unjoin {ns} {ifname}"))?;
        // The kernel keeps the ingress qdisc; only our filter goes, which a snapshot does not show.
        match ns_mut(&mut h, ns)?.links.contains_key(ifname) {
            true => Ok(()),
            false => Err(KernelError::NotFound {
                what: format!("link {ifname} in {ns}"),
            }),
        }
    }

    fn add_route(&self, ns: &str, route: &Route) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(
            &mut h,
            format!("add_route {ns} {:?} via {}", route.destination, route.via),
        )?;
        let r = RouteObs {
            destination: route.destination,
            via: route.via,
        };
        let n = ns_mut(&mut h, ns)?;
        n.routes.retain(|o| o.destination != r.destination);
        n.routes.push(r);
        Ok(())
    }

    fn delete_route(&self, ns: &str, route: &Route) -> Result<(), KernelError> {
        let mut h = self.host.lock().unwrap();
        self.record(&mut h, format!("delete_route {ns} {:?}", route.destination))?;
        let n = ns_mut(&mut h, ns)?;
        n.routes
            .retain(|o| !(o.destination == route.destination && o.via == route.via));
        Ok(())
    }

    fn route_to(&self, ns: Option<&str>, dst: IpAddr) -> Result<RouteInfo, KernelError> {
        let h = self.host.lock().unwrap();
        if let Some(ns) = ns
            && !h.namespaces.contains_key(ns)
        {
            return Err(KernelError::NotFound {
                what: format!("namespace {ns}"),
            });
        }
        h.routes
            .get(&dst)
            .cloned()
            .ok_or_else(|| KernelError::other(format!("route to {dst}"), "Network is unreachable"))
    }
}
