//! The capability probe, run at start-up and reported to the controller.
//!
//! Kernel features are tried, not guessed: a worker thread unshares a throw-away network namespace
//! and creates a veth pair, a VXLAN device, a TAP, an 802.1Q device and a TBF qdisc there, then
//! returns; the namespace and everything in it vanish with the thread's last reference. The BPF
//! 802.1Q datapath is tried the same way (load, attach to a veth). QEMU and
//! KVM come from the guest module's probe (KVM counts as usable only with vmx/svm, `/dev/kvm` and
//! a KVM module).

use std::io;

use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkUnspec, LinkVeth, LinkVlan, LinkVxlan};
use serde::Serialize;
use vnet_proto::v1 as pb;

use crate::host::rtnl::{CREATE, Rtnl};

/// What the probe found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Probe {
    pub netns: bool,
    pub veth: bool,
    pub tap: bool,
    pub vxlan: bool,
    pub kernel_vlan: bool,
    pub tc: bool,
    pub qemu_present: bool,
    pub qemu: String,
    pub kvm_usable: bool,
    pub kvm_reason: String,
    /// The BPF 802.1Q datapath loads and attaches here (cls_bpf, direct action).
    pub bpf_vlan: bool,
    /// The VLAN datapath in use: "bpf" or "userspace" (the agent sets it from its choice).
    pub vlan_datapath: String,
    /// Guest architectures a QEMU system emulator runs here for.
    pub guest_archs: Vec<String>,
    /// Per feature, why it failed.
    pub errors: Vec<String>,
}

impl Probe {
    pub fn to_proto(&self) -> pb::Capabilities {
        pb::Capabilities {
            netns: self.netns,
            veth: self.veth,
            tap: self.tap,
            vxlan: self.vxlan,
            kernel_vlan: self.kernel_vlan,
            tc: self.tc,
            qemu_present: self.qemu_present,
            qemu: self.qemu.clone(),
            kvm_usable: self.kvm_usable,
            kvm_reason: self.kvm_reason.clone(),
            vlan_datapath: self.vlan_datapath.clone(),
            // The relay needs TAP devices and tc (clsact egress + mirred); no netem here.
            impairment: if self.tap && self.tc {
                "relay".into()
            } else {
                String::new()
            },
            guest_archs: self.guest_archs.clone(),
            host_arch: std::env::consts::ARCH.into(),
        }
    }
}

fn try_kernel(errors: &mut Vec<String>) -> [bool; 6] {
    let mut found = [false; 6];
    let r = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<[bool; 6]> {
            let mut f = [false; 6];
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            f[0] = true;
            let mut r = Rtnl::new()?;
            let errs = std::cell::RefCell::new(Vec::new());
            let attempt = |name: &str, res: io::Result<Vec<RouteNetlinkMessage>>| {
                res.map(|_| true).unwrap_or_else(|e| {
                    errs.borrow_mut().push(format!("{name}: {e}"));
                    false
                })
            };
            f[1] = attempt(
                "veth",
                r.request(
                    RouteNetlinkMessage::NewLink(LinkVeth::new("pv0", "pv1").up().build()),
                    CREATE,
                ),
            );
            f[3] = attempt(
                "vxlan",
                r.request(
                    RouteNetlinkMessage::NewLink(
                        LinkVxlan::new("pvx0", 4242)
                            .remote("192.0.2.1".parse().expect("literal"))
                            .learning(false)
                            .build(),
                    ),
                    CREATE,
                ),
            );
            f[2] = match crate::host::tap::create_persistent("ptap0") {
                Ok(()) => true,
                Err(e) => {
                    errs.borrow_mut().push(format!("tap: {e}"));
                    false
                }
            };
            if f[1] {
                let idx = r
                    .get(RouteNetlinkMessage::GetLink(
                        LinkUnspec::new_with_name("pv0").build(),
                    ))
                    .ok()
                    .and_then(|m| {
                        m.into_iter().find_map(|m| match m {
                            RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                            _ => None,
                        })
                    });
                if let Some(idx) = idx {
                    f[4] = attempt(
                        "kernel 802.1Q",
                        r.request(
                            RouteNetlinkMessage::NewLink(LinkVlan::new("pv0.7", idx, 7).build()),
                            CREATE,
                        ),
                    );
                    f[5] = attempt(
                        "tc tbf",
                        r.request(
                            RouteNetlinkMessage::NewQueueDiscipline(crate::host::tc::tbf_qdisc(
                                idx, 10,
                            )),
                            CREATE,
                        ),
                    );
                }
            }
            // Persistent TAPs die with the namespace: nothing else holds it.
            let _ = crate::host::tap::attach("ptap0").map(|fd| {
                // SAFETY: TUNSETPERSIST with 0 makes the TAP vanish when `fd` closes.
                unsafe {
                    libc::ioctl(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        libc::TUNSETPERSIST,
                        0 as libc::c_ulong,
                    )
                };
            });
            let errs = errs.into_inner();
            if !errs.is_empty() {
                return Err(io::Error::other(errs.join("; ")));
            }
            Ok(f)
        })
        .join()
    });
    match r {
        Ok(Ok(f)) => found = f,
        Ok(Err(e)) => {
            // Partial results are in the message; re-derive the flags from it.
            let msg = e.to_string();
            found[0] = !msg.contains("Operation not permitted");
            for (i, name) in [
                (1, "veth:"),
                (2, "tap:"),
                (3, "vxlan:"),
                (4, "kernel 802.1Q:"),
                (5, "tc tbf:"),
            ] {
                found[i] = found[0] && !msg.contains(name);
            }
            errors.push(msg);
        }
        Err(_) => errors.push("probe thread panicked".into()),
    }
    found
}

/// Tries the BPF 802.1Q datapath in a throw-away namespace: loads the program (verifier, JIT)
/// and attaches it as a direct-action classifier to a veth's ingress. `Err` says what failed.
pub fn bpf_vlan() -> Result<(), String> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<(), String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare a network namespace: {e}"))?;
            let mut r = Rtnl::new().map_err(|e| format!("netlink: {e}"))?;
            r.request(
                RouteNetlinkMessage::NewLink(LinkVeth::new("pb0", "pb1").up().build()),
                CREATE,
            )
            .map_err(|e| format!("veth: {e}"))?;
            let idx = r
                .get(RouteNetlinkMessage::GetLink(
                    LinkUnspec::new_with_name("pb0").build(),
                ))
                .map_err(|e| format!("veth: {e}"))?
                .into_iter()
                .find_map(|m| match m {
                    RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                    _ => None,
                })
                .ok_or("veth: no index")?;
            crate::host::bpf::probe_attach(|fd| {
                r.request(
                    RouteNetlinkMessage::NewQueueDiscipline(crate::host::tc::ingress_qdisc(idx)),
                    CREATE,
                )?;
                r.request(
                    RouteNetlinkMessage::NewTrafficFilter(crate::host::tc::bpf_filter(
                        idx,
                        fd as u32,
                        crate::host::bpf::PROGRAM,
                    )),
                    CREATE,
                )
                .map(|_| ())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("probe thread panicked".into()))
    })
}

/// Runs the probe, with QEMU and KVM from the guest module's static probe.
pub fn probe(qemu_binary: &str) -> Probe {
    probe_with_guests(&crate::guest::probe_host(qemu_binary))
}

/// Runs the kernel part of the probe and reports `g` for QEMU and KVM. The agent passes its guest
/// runtime's verdict, which a KVM test boot may have overturned, so that what it reports is what
/// its guests will use.
pub fn probe_with_guests(g: &crate::guest::HostGuestSupport) -> Probe {
    let mut errors = Vec::new();
    let [netns, veth, tap, vxlan, kernel_vlan, tc] = try_kernel(&mut errors);
    let bpf_vlan = match bpf_vlan() {
        Ok(()) => true,
        Err(e) => {
            errors.push(format!("bpf 802.1Q: {e}"));
            false
        }
    };
    Probe {
        netns,
        veth,
        tap,
        vxlan,
        kernel_vlan,
        tc,
        qemu_present: g.qemu.is_some(),
        qemu: g.qemu_string(),
        kvm_usable: g.kvm.usable,
        kvm_reason: g.kvm.reason.clone(),
        bpf_vlan,
        vlan_datapath: if bpf_vlan { "bpf" } else { "userspace" }.into(),
        guest_archs: g.archs.iter().map(|a| a.to_string()).collect(),
        errors,
    }
}
