//! The Linux implementation of [`Kernel`]: rtnetlink for links, addresses, routes and tc; mounts
//! for named namespaces; ioctl for TAP devices. No `ip` or `tc` process is forked.
//!
//! Every namespace the agent works in gets one handle: an open file of the namespace (for
//! `IFLA_NET_NS_FD`) and a netlink socket created inside it (a socket acts on the namespace it was
//! created in). Links are created in one `RTM_NEWLINK` directly in their target namespace: a veth
//! pair with each end in its node's namespace, a VXLAN device sent from the context namespace
//! (where its UDP socket then lives) with `IFLA_NET_NS_FD` of the node's namespace. So no device
//! of ours ever exists in the host's namespace, not even for a moment.
//!
//! The kernel ignores `IFLA_IFALIAS` on creation (measured: `ip link add ... alias X` leaves no
//! alias), so the ownership tag is set right after creation. A crash in between leaves an
//! untagged link inside a namespace that is ours: the planner sees an unhealthy segment there and
//! rebuilds it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{AddressMessageBuilder, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan};

use crate::host::kernel::{
    IfSpec, Kernel, KernelError, NsEntry, NsSnapshot, PortSpec, RouteInfo, VxlanSpec,
};
use crate::host::netns;
use crate::host::rtnl::{CREATE, REPLACE, Rtnl};
use crate::host::tc;
use crate::reconcile::naming::Naming;
use crate::reconcile::observed::{LinkObs, RouteObs};
use crate::reconcile::spec::Route;

struct NsHandle {
    file: File,
    rtnl: Mutex<Rtnl>,
}

/// The real kernel.
pub struct LinuxKernel {
    /// The agent's own namespace (threads return here).
    home: File,
    host: Mutex<Vec<Rtnl>>,
    handles: Mutex<HashMap<String, Arc<NsHandle>>>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> KernelError {
    let what = what.into();
    move |e| KernelError::os(what, e)
}

fn link_by_name(ifname: &str) -> LinkMessage {
    LinkUnspec::new_with_name(ifname).build()
}

/// Index of `ifname` in the socket's namespace.
fn index_of(rtnl: &mut Rtnl, ifname: &str) -> io::Result<u32> {
    let msgs = rtnl.get(RouteNetlinkMessage::GetLink(link_by_name(ifname)))?;
    msgs.into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
            _ => None,
        })
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
}

/// Sets the ownership tag and brings the link up (a veth peer cannot be created up in another
/// namespace: the kernel answers ENOTCONN, measured).
fn tag_and_up(rtnl: &mut Rtnl, index: u32, alias: &str) -> io::Result<()> {
    let msg = LinkUnspec::new_with_index(index).alias(alias).up().build();
    rtnl.request(RouteNetlinkMessage::SetLink(msg), 0)
        .map(|_| ())
}

fn add_address(rtnl: &mut Rtnl, index: u32, addr: &IpNet) -> io::Result<()> {
    let msg: AddressMessage = match addr {
        IpNet::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(index)
            .address(a.addr(), a.prefix_len())
            .build(),
        IpNet::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(index)
            .address(a.addr(), a.prefix_len())
            .build(),
    };
    rtnl.request(RouteNetlinkMessage::NewAddress(msg), REPLACE)
        .map(|_| ())
}

fn route_message(route: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    let (family, dst, plen) = match route.destination {
        Some(d) => (
            if d.addr().is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            },
            Some(d.addr()),
            d.prefix_len(),
        ),
        None => (
            if route.via.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            },
            None,
            0,
        ),
    };
    m.header = RouteHeader {
        address_family: family,
        destination_prefix_length: plen,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Static,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..Default::default()
    };
    if let Some(d) = dst {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(d)));
    }
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::from(route.via)));
    m
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

/// A link as the kernel describes it: index, state, name, alias, MTU, kind.
fn link_obs(l: &LinkMessage) -> LinkObs {
    let mut o = LinkObs {
        index: l.header.index,
        up: l.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => o.name = n.clone(),
            LinkAttribute::IfAlias(s) => o.alias = Some(s.clone()),
            LinkAttribute::Mtu(m) => o.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        o.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    o
}

/// Names of the veth devices in the socket's namespace.
fn veth_names(rtnl: &mut Rtnl) -> io::Result<Vec<String>> {
    let veth = InfoKind::Veth.to_string();
    let mut names = Vec::new();
    for m in rtnl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))? {
        if let RouteNetlinkMessage::NewLink(l) = m {
            let o = link_obs(&l);
            if o.kind == veth {
                names.push(o.name);
            }
        }
    }
    Ok(names)
}

/// The loopback's alias, the other links (with addresses and qdisc kinds) and the static routes.
fn snapshot(rtnl: &mut Rtnl) -> io::Result<(Option<String>, Vec<LinkObs>, Vec<RouteObs>)> {
    let mut lo_alias = None;
    let mut links: Vec<LinkObs> = Vec::new();
    for m in rtnl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))? {
        let RouteNetlinkMessage::NewLink(l) = m else {
            continue;
        };
        let mut o = link_obs(&l);
        if l.header.flags.contains(LinkFlags::Loopback) || o.name == "lo" {
            lo_alias = o.alias.take();
        } else {
            links.push(o);
        }
    }
    for m in rtnl.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))? {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        let addr = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let (Some(ip), Some(l)) = (addr, links.iter_mut().find(|l| l.index == a.header.index))
            && let Ok(net) = IpNet::new(ip, a.header.prefix_len)
        {
            l.addresses.push(net);
        }
    }
    for m in rtnl.dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))? {
        let RouteNetlinkMessage::NewQueueDiscipline(q) = m else {
            continue;
        };
        let kind = q.attributes.iter().find_map(|x| match x {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        });
        let Some(l) = links.iter_mut().find(|l| l.index as i32 == q.header.index) else {
            continue;
        };
        match kind.as_deref() {
            Some("ingress") | Some("clsact") => l.ingress_qdisc = true,
            Some(k) if q.header.parent == TcHandle::ROOT && k != "noqueue" && k != "noop" => {
                l.root_qdisc = Some(k.to_string());
                l.root_rate = (k == "tbf").then(|| tc::tbf_rate(&q)).flatten();
            }
            _ => {}
        }
    }
    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        for m in rtnl.dump(RouteNetlinkMessage::GetRoute(req))? {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.protocol != RouteProtocol::Static
                || r.header.table != RouteHeader::RT_TABLE_MAIN
            {
                continue;
            }
            let mut dst = None;
            let mut via = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = route_addr(d),
                    RouteAttribute::Gateway(g) => via = route_addr(g),
                    _ => {}
                }
            }
            let Some(via) = via else { continue };
            let destination = match dst {
                Some(d) => IpNet::new(d, r.header.destination_prefix_length).ok(),
                None if r.header.destination_prefix_length == 0 => None,
                None => continue,
            };
            routes.push(RouteObs { destination, via });
        }
    }
    Ok((lo_alias, links, routes))
}

impl LinuxKernel {
    /// Prepares `/run/netns` and remembers the calling thread's namespace as the agent's own.
    pub fn new() -> io::Result<Self> {
        netns::prepare_dir()?;
        Ok(Self {
            home: netns::current()?,
            host: Mutex::new(Vec::new()),
            handles: Mutex::new(HashMap::new()),
        })
    }

    fn with_host<R>(&self, f: impl FnOnce(&mut Rtnl) -> io::Result<R>) -> io::Result<R> {
        let sock = self.host.lock().expect("host pool").pop();
        let mut sock = match sock {
            Some(s) => s,
            None => Rtnl::new()?,
        };
        let r = f(&mut sock);
        self.host.lock().expect("host pool").push(sock);
        r
    }

    fn handle(&self, ns: &str) -> Result<Arc<NsHandle>, KernelError> {
        if let Some(h) = self.handles.lock().expect("handles").get(ns) {
            return Ok(h.clone());
        }
        let file = netns::open(ns).map_err(io_err(format!("namespace {ns}")))?;
        let rtnl = netns::within(&file, &self.home, Rtnl::new)
            .and_then(|r| r)
            .map_err(io_err(format!("netlink socket in namespace {ns}")))?;
        let h = Arc::new(NsHandle {
            file,
            rtnl: Mutex::new(rtnl),
        });
        self.handles
            .lock()
            .expect("handles")
            .insert(ns.to_string(), h.clone());
        Ok(h)
    }

    fn forget(&self, ns: &str) {
        self.handles.lock().expect("handles").remove(ns);
    }

    fn in_ns<R>(
        &self,
        ns: &str,
        what: impl Into<String>,
        f: impl FnOnce(&mut Rtnl) -> io::Result<R>,
    ) -> Result<R, KernelError> {
        let h = self.handle(ns)?;
        let mut r = h.rtnl.lock().expect("ns socket");
        f(&mut r).map_err(io_err(what))
    }

    fn in_ctx<R>(
        &self,
        ctx: Option<&str>,
        what: impl Into<String>,
        f: impl FnOnce(&mut Rtnl) -> io::Result<R>,
    ) -> Result<R, KernelError> {
        match ctx {
            Some(ns) => self.in_ns(ns, what, f),
            None => self.with_host(f).map_err(io_err(what)),
        }
    }

    /// Deletes, node end first, the BPF VLAN ports of namespace `ns` whose outer end is in the
    /// agent's own namespace ([`Naming::port_dev`]). The kernel destroys a deleted namespace's
    /// devices in the background: the outer end would outlive the namespace by a moment, and a
    /// port created again at once would find its name taken. Deleting one end of a veth removes
    /// both before the call returns. Best effort: a namespace that cannot be read (a crash's
    /// half-made one) or a port that cannot be deleted is left to the namespace's deletion.
    fn delete_host_ports(&self, ns: &str) {
        let veths = match self.in_ns(ns, format!("read namespace {ns}"), veth_names) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "no ports deleted before the namespace");
                return;
            }
        };
        for ifname in veths {
            let outer = Naming::port_dev(ns, &ifname);
            if self.with_host(|r| index_of(r, &outer)).is_err() {
                continue;
            }
            let deleted = self.in_ns(ns, format!("vlan port {outer} - {ns}/{ifname}"), |r| {
                r.request(RouteNetlinkMessage::DelLink(link_by_name(&ifname)), 0)
                    .map(|_| ())
            });
            if let Err(e) = deleted {
                tracing::warn!(error = %e, "left to the namespace's deletion");
            }
        }
    }

    /// Tag, up, addresses.
    fn finish_if(&self, dev: &IfSpec, tag: &str) -> Result<(), KernelError> {
        self.in_ns(
            &dev.ns,
            format!("configure {} in {}", dev.ifname, dev.ns),
            |r| {
                let idx = index_of(r, &dev.ifname)?;
                tag_and_up(r, idx, tag)?;
                for a in &dev.addresses {
                    add_address(r, idx, a)?;
                }
                Ok(())
            },
        )
    }
}

/// `from`'s ingress redirects everything to `to`: our filter is kept when it does exactly that and
/// replaced otherwise (so a join is idempotent). An ingress or clsact qdisc already there is kept.
fn redirect(r: &mut Rtnl, from: u32, to: u32) -> io::Result<()> {
    match r.request(
        RouteNetlinkMessage::NewQueueDiscipline(tc::ingress_qdisc(from)),
        CREATE,
    ) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
        _ => {}
    }
    let ours: Vec<Option<u32>> = r
        .dump(RouteNetlinkMessage::GetTrafficFilter(tc::our_filters(from)))?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficFilter(f) => tc::our_redirect(f),
            _ => None,
        })
        .collect();
    if ours == [Some(to)] {
        return Ok(());
    }
    if !ours.is_empty() {
        unredirect(r, from)?;
    }
    r.request(
        RouteNetlinkMessage::NewTrafficFilter(tc::redirect_filter(from, to)),
        CREATE,
    )
    .map(|_| ())
}

/// Deletes our filters from `ifindex`'s ingress; none there (or no ingress qdisc) is fine.
fn unredirect(r: &mut Rtnl, ifindex: u32) -> io::Result<()> {
    match r.request(
        RouteNetlinkMessage::DelTrafficFilter(tc::our_filters(ifindex)),
        0,
    ) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
        r => r.map(|_| ()),
    }
}

fn apply_if<T>(b: LinkMessageBuilder<T>, dev: &IfSpec, ns_fd: i32) -> LinkMessageBuilder<T> {
    let b = b.mtu(dev.mtu).setns_by_fd(ns_fd);
    match dev.mac {
        Some(m) => b.address(m.0.to_vec()),
        None => b,
    }
}

impl crate::host::bpf::TcBpf for LinuxKernel {
    fn ifindex(&self, ns: Option<&str>, ifname: &str) -> Result<u32, KernelError> {
        self.in_ctx(
            ns,
            format!("link {ifname} in {}", ns.unwrap_or("the host namespace")),
            |r| index_of(r, ifname),
        )
    }

    fn bpf_attached(
        &self,
        ns: Option<&str>,
        ifindex: u32,
    ) -> Result<Option<(String, [u8; 8])>, KernelError> {
        let what = format!(
            "bpf classifier of link {ifindex} in {}",
            ns.unwrap_or("the host namespace")
        );
        self.in_ctx(ns, what, |r| {
            match r.dump(RouteNetlinkMessage::GetTrafficFilter(tc::bpf_filters(
                ifindex,
            ))) {
                Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                    RouteNetlinkMessage::NewTrafficFilter(f) => tc::our_bpf(f),
                    _ => None,
                })),
                // No ingress qdisc (EINVAL) or no device.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn bpf_attach(
        &self,
        ns: Option<&str>,
        ifindex: u32,
        fd: std::os::fd::BorrowedFd<'_>,
        name: &str,
    ) -> Result<bool, KernelError> {
        let what = format!(
            "attach bpf classifier to link {ifindex} in {}",
            ns.unwrap_or("the host namespace")
        );
        self.in_ctx(ns, what, |r| {
            let added = match r.request(
                RouteNetlinkMessage::NewQueueDiscipline(tc::ingress_qdisc(ifindex)),
                CREATE,
            ) {
                Ok(_) => true,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
                Err(e) => return Err(e),
            };
            r.request(
                RouteNetlinkMessage::NewTrafficFilter(tc::bpf_filter(
                    ifindex,
                    fd.as_raw_fd() as u32,
                    name,
                )),
                REPLACE,
            )?;
            Ok(added)
        })
    }

    fn bpf_detach(
        &self,
        ns: Option<&str>,
        ifindex: u32,
        drop_qdisc: bool,
    ) -> Result<(), KernelError> {
        let what = format!(
            "detach bpf classifier from link {ifindex} in {}",
            ns.unwrap_or("the host namespace")
        );
        let gone = |e: &io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENODEV)
            )
        };
        self.in_ctx(ns, what, |r| {
            match r.request(
                RouteNetlinkMessage::DelTrafficFilter(tc::bpf_filters(ifindex)),
                0,
            ) {
                Err(e) if !gone(&e) => return Err(e),
                _ => {}
            }
            if drop_qdisc {
                match r.request(
                    RouteNetlinkMessage::DelQueueDiscipline(tc::ingress_qdisc(ifindex)),
                    0,
                ) {
                    Err(e) if !gone(&e) => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })
    }

    fn ns_inode(&self, ns: Option<&str>) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        let m = match ns {
            Some(n) => std::fs::metadata(std::path::Path::new(netns::NETNS_DIR).join(n)),
            None => self.home.metadata(),
        };
        m.ok().map(|m| m.ino() as u32)
    }
}

impl Kernel for LinuxKernel {
    fn list_netns(&self, prefix: &str) -> Result<Vec<NsEntry>, KernelError> {
        let list: Vec<NsEntry> = netns::list(prefix)
            .map_err(io_err(netns::NETNS_DIR))?
            .into_iter()
            .map(|(name, inode)| NsEntry { name, inode })
            .collect();
        // A cached handle pins its namespace (and every device in it): drop the handles of
        // namespaces someone else removed from /run/netns, so the kernel can free them.
        self.handles.lock().expect("handles").retain(|name, h| {
            !name.starts_with(prefix)
                || list.iter().any(|e| {
                    &e.name == name
                        && h.file
                            .metadata()
                            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == e.inode)
                })
        });
        Ok(list)
    }

    fn ns_snapshot(&self, ns: &str) -> Result<NsSnapshot, KernelError> {
        let (lo_alias, links, routes) = self.in_ns(ns, format!("read namespace {ns}"), snapshot)?;
        Ok(NsSnapshot {
            lo_alias,
            links,
            routes,
        })
    }

    fn host_links(&self, alias_prefix: &str) -> Result<Vec<LinkObs>, KernelError> {
        let (_, links, _) = self
            .with_host(snapshot)
            .map_err(io_err("read the agent's namespace"))?;
        Ok(links
            .into_iter()
            .filter(|l| {
                l.alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(alias_prefix))
            })
            .collect())
    }

    fn create_netns(&self, name: &str, tag: &str) -> Result<u64, KernelError> {
        let (inode, rtnl) = netns::create(name, &self.home, || {
            let mut r = Rtnl::new()?;
            let msg = LinkUnspec::new_with_index(1).up().alias(tag).build();
            r.request(RouteNetlinkMessage::SetLink(msg), 0)?;
            Ok(r)
        })
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KernelError::other(format!("namespace {name}"), "exists already")
            } else {
                KernelError::os(format!("namespace {name}"), e)
            }
        })?;
        let file = netns::open(name).map_err(io_err(format!("namespace {name}")))?;
        self.handles.lock().expect("handles").insert(
            name.to_string(),
            Arc::new(NsHandle {
                file,
                rtnl: Mutex::new(rtnl),
            }),
        );
        Ok(inode)
    }

    fn delete_netns(&self, name: &str) -> Result<(), KernelError> {
        self.delete_host_ports(name);
        self.forget(name);
        netns::delete(name).map_err(io_err(format!("namespace {name}")))
    }

    fn create_veth(&self, a: &IfSpec, b: &IfSpec, tag: &str) -> Result<(), KernelError> {
        let ha = self.handle(&a.ns)?;
        let hb = self.handle(&b.ns)?;
        let peer = apply_if(LinkUnspec::new_with_name(&b.ifname), b, hb.file.as_raw_fd()).build();
        let msg = apply_if(LinkVeth::new(&a.ifname, &b.ifname), a, ha.file.as_raw_fd())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.with_host(|r| r.request(RouteNetlinkMessage::NewLink(msg), CREATE))
            .map_err(io_err(format!(
                "veth {}/{} - {}/{}",
                a.ns, a.ifname, b.ns, b.ifname
            )))?;
        self.finish_if(a, tag)?;
        self.finish_if(b, tag)
    }

    fn create_vxlan(&self, spec: &VxlanSpec) -> Result<(), KernelError> {
        let target = self.handle(&spec.dev.ns)?;
        let mut b = LinkVxlan::new(&spec.dev.ifname, spec.vni)
            .dev(spec.underlay_index)
            .port(spec.port)
            .learning(false);
        b = match (spec.local, spec.remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => b.local(l).remote(r),
            (IpAddr::V6(l), IpAddr::V6(r)) => b.local6(l).remote6(r),
            _ => {
                return Err(KernelError::other(
                    format!("vxlan {}", spec.dev.ifname),
                    "local and remote address families differ",
                ));
            }
        };
        let msg = apply_if(b, &spec.dev, target.file.as_raw_fd()).build();
        self.in_ctx(
            spec.ctx.as_deref(),
            format!(
                "vxlan {} (vni {}) in {} from {}",
                spec.dev.ifname,
                spec.vni,
                spec.dev.ns,
                spec.ctx.as_deref().unwrap_or("the host namespace")
            ),
            |r| r.request(RouteNetlinkMessage::NewLink(msg), CREATE),
        )?;
        self.finish_if(&spec.dev, &spec.tag)
    }

    fn create_tap(&self, dev: &IfSpec, tag: Option<&str>) -> Result<(), KernelError> {
        let h = self.handle(&dev.ns)?;
        netns::within(&h.file, &self.home, || {
            crate::host::tap::create_persistent(&dev.ifname)
        })
        .and_then(|r| r)
        .map_err(io_err(format!("tap {} in {}", dev.ifname, dev.ns)))?;
        self.in_ns(
            &dev.ns,
            format!("configure tap {} in {}", dev.ifname, dev.ns),
            |r| {
                let idx = index_of(r, &dev.ifname)?;
                let mut b = LinkUnspec::new_with_index(idx).mtu(dev.mtu).up();
                if let Some(tag) = tag {
                    b = b.alias(tag);
                }
                if let Some(m) = dev.mac {
                    b = b.address(m.0.to_vec());
                }
                r.request(RouteNetlinkMessage::SetLink(b.build()), 0)?;
                for a in &dev.addresses {
                    add_address(r, idx, a)?;
                }
                Ok(())
            },
        )
    }

    fn create_port(&self, spec: &PortSpec) -> Result<(), KernelError> {
        let (dev, ctx, outer) = (&spec.dev, spec.ctx.as_deref(), spec.outer.as_str());
        let inner = self.handle(&dev.ns)?;
        let peer = apply_if(
            LinkUnspec::new_with_name(&dev.ifname),
            dev,
            inner.file.as_raw_fd(),
        )
        .build();
        let msg = LinkVeth::new(outer, &dev.ifname)
            .mtu(dev.mtu)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.in_ctx(
            ctx,
            format!(
                "vlan port {outer} in {} - {}/{}",
                ctx.unwrap_or("the host namespace"),
                dev.ns,
                dev.ifname
            ),
            |r| r.request(RouteNetlinkMessage::NewLink(msg), CREATE),
        )?;
        self.finish_if(dev, &spec.tag)
    }

    fn delete_link(&self, ns: Option<&str>, ifname: &str) -> Result<(), KernelError> {
        self.in_ctx(
            ns,
            format!("link {ifname} in {}", ns.unwrap_or("the host namespace")),
            |r| {
                r.request(RouteNetlinkMessage::DelLink(link_by_name(ifname)), 0)
                    .map(|_| ())
            },
        )
    }

    fn shape(&self, ns: &str, ifname: &str, mbps: u64) -> Result<(), KernelError> {
        self.in_ns(ns, format!("tbf qdisc on {ifname} in {ns}"), |r| {
            let idx = index_of(r, ifname)?;
            r.request(
                RouteNetlinkMessage::NewQueueDiscipline(tc::tbf_qdisc(idx, mbps)),
                REPLACE,
            )
            .map(|_| ())
        })
    }

    fn join(&self, ns: &str, a: &str, b: &str) -> Result<(), KernelError> {
        self.in_ns(
            ns,
            format!("tc redirect between {a} and {b} in {ns}"),
            |r| {
                let ia = index_of(r, a)?;
                let ib = index_of(r, b)?;
                redirect(r, ia, ib)?;
                redirect(r, ib, ia)
            },
        )
    }

    fn redirect_egress(&self, ns: &str, from: &str, to: &str) -> Result<(), KernelError> {
        self.in_ns(
            ns,
            format!("tc egress redirect from {from} to {to} in {ns}"),
            |r| {
                let (ifrom, ito) = (index_of(r, from)?, index_of(r, to)?);
                match r.request(
                    RouteNetlinkMessage::NewQueueDiscipline(tc::clsact_qdisc(ifrom)),
                    CREATE,
                ) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                    _ => {}
                }
                match r.request(
                    RouteNetlinkMessage::DelTrafficFilter(tc::our_egress_filters(ifrom)),
                    0,
                ) {
                    Err(e) if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => {
                        return Err(e);
                    }
                    _ => {}
                }
                r.request(
                    RouteNetlinkMessage::NewTrafficFilter(tc::egress_redirect_filter(ifrom, ito)),
                    CREATE,
                )
                .map(|_| ())
            },
        )
    }

    fn unjoin(&self, ns: &str, ifname: &str) -> Result<(), KernelError> {
        self.in_ns(ns, format!("remove tc redirect of {ifname} in {ns}"), |r| {
            let idx = index_of(r, ifname)?;
            unredirect(r, idx)
        })
    }

    fn add_route(&self, ns: &str, route: &Route) -> Result<(), KernelError> {
        self.in_ns(
            ns,
            format!("route {:?} via {} in {ns}", route.destination, route.via),
            |r| {
                r.request(RouteNetlinkMessage::NewRoute(route_message(route)), REPLACE)
                    .map(|_| ())
            },
        )
    }

    fn delete_route(&self, ns: &str, route: &Route) -> Result<(), KernelError> {
        self.in_ns(
            ns,
            format!("route {:?} via {} in {ns}", route.destination, route.via),
            |r| {
                r.request(RouteNetlinkMessage::DelRoute(route_message(route)), 0)
                    .map(|_| ())
            },
        )
    }

    fn route_to(&self, ns: Option<&str>, dst: IpAddr) -> Result<RouteInfo, KernelError> {
        let what = format!("route to {dst} in {}", ns.unwrap_or("the host namespace"));
        self.in_ctx(ns, what, |r| {
            let mut q = RouteMessage::default();
            q.header.address_family = if dst.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            q.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
            q.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst)));
            let ans = r.get(RouteNetlinkMessage::GetRoute(q))?;
            let route = ans
                .into_iter()
                .find_map(|m| match m {
                    RouteNetlinkMessage::NewRoute(r) => Some(r),
                    _ => None,
                })
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENETUNREACH))?;
            let mut oif = None;
            let mut gateway = None;
            for a in &route.attributes {
                match a {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Gateway(g) => gateway = route_addr(g),
                    _ => {}
                }
            }
            let oif = oif.ok_or_else(|| io::Error::from_raw_os_error(libc::ENETUNREACH))?;
            if route.header.kind == RouteType::Local {
                return Err(io::Error::other(format!(
                    "{dst} is an address of this host"
                )));
            }
            let mut get = LinkMessage::default();
            get.header.index = oif;
            let link = r
                .get(RouteNetlinkMessage::GetLink(get))?
                .into_iter()
                .find_map(|m| match m {
                    RouteNetlinkMessage::NewLink(l) => Some(l),
                    _ => None,
                })
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
            let mut dev = String::new();
            let mut mtu = 0;
            for a in &link.attributes {
                match a {
                    LinkAttribute::IfName(n) => dev = n.clone(),
                    LinkAttribute::Mtu(m) => mtu = *m,
                    _ => {}
                }
            }
            Ok(RouteInfo {
                dev,
                dev_index: oif,
                dev_mtu: mtu,
                gateway,
            })
        })
    }
}

/// The agent namespace's interfaces that can carry substrate traffic (all but loopback), with
/// addresses, MTU and MAC, for the AgentHello.
pub fn underlay_interfaces() -> io::Result<Vec<vnet_proto::v1::UnderlayInterface>> {
    let mut r = Rtnl::new()?;
    let mut out = Vec::new();
    let mut by_index = HashMap::new();
    for m in r.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))? {
        let RouteNetlinkMessage::NewLink(l) = m else {
            continue;
        };
        if l.header.flags.contains(LinkFlags::Loopback) {
            continue;
        }
        let mut u = vnet_proto::v1::UnderlayInterface::default();
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => u.name = n.clone(),
                LinkAttribute::Mtu(m) => u.mtu = *m,
                LinkAttribute::Address(mac) if mac.len() == 6 => {
                    u.mac = mac
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }
                _ => {}
            }
        }
        by_index.insert(l.header.index, out.len());
        out.push(u);
    }
    for m in r.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))? {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        let Some(&i) = by_index.get(&a.header.index) else {
            continue;
        };
        if let Some(ip) = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        }) && let Ok(net) = IpNet::new(ip, a.header.prefix_len)
        {
            out[i].addresses.push(net.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_messages() {
        let r = route_message(&Route {
            destination: None,
            via: "10.0.0.1".parse().unwrap(),
        });
        assert_eq!(r.header.address_family, AddressFamily::Inet);
        assert_eq!(r.header.destination_prefix_length, 0);
        assert_eq!(r.header.protocol, RouteProtocol::Static);
        assert!(
            !r.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
        let r = route_message(&Route {
            destination: Some("2001:db8::/32".parse().unwrap()),
            via: "fe80::1".parse().unwrap(),
        });
        assert_eq!(r.header.address_family, AddressFamily::Inet6);
        assert_eq!(r.header.destination_prefix_length, 32);
        assert!(
            r.attributes
                .contains(&RouteAttribute::Gateway(RouteAddress::Inet6(
                    "fe80::1".parse().unwrap()
                )))
        );
    }
}
