//! The BPF 802.1Q datapath: `bpf/vlan.bpf.c` (compiled by `build.rs`, embedded here), loaded with
//! `aya` and attached as a cls_bpf direct-action classifier through the agent's own netlink layer.
//!
//! One *instance* per context namespace that carries VLAN links (the agent's own, or a parent
//! node's for a nested VN): the program, a forwarding map `(ingress ifindex, VLAN ID) -> (ifindex,
//! ID, action)`, a map of the devices the classifier is attached to, and per-CPU drop counters.
//! Ifindexes are per namespace, hence one instance each. The maps are pinned under
//! `/sys/fs/bpf/vnet/<prefix>-<host>/<namespace | _agent>/`, which is the ownership record: it
//! survives the agent, and everything found there is ours. A restarted agent reopens the pinned
//! maps, loads the same program (same tag) and finds it attached: it keeps the classifiers as they
//! are, so traffic never stops. Teardown detaches (removing an ingress qdisc only if the devices
//! map says we added it), then unpins.
//!
//! The same [`DatapathControl`] as the userspace datapath: a wire between a node-side device and a
//! VLAN on a substrate device. Here the node-side device is the inner end of a veth pair
//! ([`crate::host::kernel::Kernel::create_port`]); the outer end, in the context namespace, is
//! named by [`Naming::port_dev`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader, Pod};

use crate::host::kernel::KernelError;
use crate::reconcile::naming::Naming;
use crate::vlan::config::{DatapathConfig, DatapathControl, DatapathError, Wire, WireEnd};

/// The classifier's name (ELF symbol, program name, `TCA_BPF_NAME`).
pub const PROGRAM: &str = "vnet_vlan";
const FWD: &str = "vnet_vlan_fwd";
const DEVS: &str = "vnet_vlan_devs";
const CNT: &str = "vnet_vlan_cnt";
/// Every agent's pins live below this directory.
pub const PIN_ROOT: &str = "/sys/fs/bpf/vnet";
/// Instance directory of the agent's own namespace.
const AGENT_NS_DIR: &str = "_agent";
/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Key vid of a port entry (see the C source).
const PORT_KEY: u16 = 0xffff;
const ACT_PUSH: u16 = 1;
const ACT_POP: u16 = 2;
const ACT_REWRITE: u16 = 3;
/// Devices-map flag: the agent added the device's ingress qdisc.
const ADDED_QDISC: u32 = 1;
/// Devices-map key (no device has ifindex 0) holding the inode of the namespace the recorded
/// ifindexes belong to.
const NS_KEY: u32 = 0;

/// Counter slots (see the C source).
pub const COUNTERS: [&str; 4] = ["unknown_vid", "foreign_tpid", "tag_error", "forwarded"];

/// The compiled program.
fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vlan.bpf.o"))
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FwdKey {
    pub ifindex: u32,
    pub vid: u16,
    pub pad: u16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwdVal {
    pub ifindex: u32,
    pub vid: u16,
    pub action: u16,
}

// SAFETY: plain `repr(C)` structs of integers without padding, as in the C source.
unsafe impl Pod for FwdKey {}
// SAFETY: as above.
unsafe impl Pod for FwdVal {}

/// The netlink side the datapath needs, served by [`crate::host::linux::LinuxKernel`]. `ns`:
/// a named namespace, `None` the agent's own.
pub trait TcBpf: Send + Sync {
    fn ifindex(&self, ns: Option<&str>, ifname: &str) -> Result<u32, KernelError>;
    /// The name and tag of the program in our classifier on `ifindex`'s ingress, if any.
    fn bpf_attached(
        &self,
        ns: Option<&str>,
        ifindex: u32,
    ) -> Result<Option<(String, [u8; 8])>, KernelError>;
    /// Puts our classifier (program `fd`) on `ifindex`'s ingress, replacing one of ours; returns
    /// true when it had to add the ingress qdisc.
    fn bpf_attach(
        &self,
        ns: Option<&str>,
        ifindex: u32,
        fd: BorrowedFd<'_>,
        name: &str,
    ) -> Result<bool, KernelError>;
    /// Removes our classifier (and the ingress qdisc when `drop_qdisc`); a missing device or
    /// filter is fine.
    fn bpf_detach(
        &self,
        ns: Option<&str>,
        ifindex: u32,
        drop_qdisc: bool,
    ) -> Result<(), KernelError>;
    /// The inode of a namespace (`None`: it does not exist). Ifindexes mean something only in
    /// the namespace they were recorded in.
    fn ns_inode(&self, ns: Option<&str>) -> Option<u32>;
}

/// What one instance must hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InstanceWant {
    pub devs: BTreeSet<u32>,
    pub fwd: BTreeMap<FwdKey, FwdVal>,
}

/// A loaded instance.
struct Instance {
    ebpf: Ebpf,
    fwd: BpfHashMap<MapData, FwdKey, FwdVal>,
    devs: BpfHashMap<MapData, u32, u32>,
    cnt: PerCpuArray<MapData, u64>,
    tag: [u8; 8],
}

fn bpf_err(what: impl std::fmt::Display) -> impl FnOnce(String) -> DatapathError {
    let what = what.to_string();
    move |e| DatapathError::Config(format!("bpf: {what}: {e}"))
}

fn kerr(e: KernelError) -> String {
    e.to_string()
}

/// Loads the program (maps pinned in `pins`, reused when they exist there). `None`: unpinned
/// maps (the capability probe).
fn load(pins: Option<&Path>) -> Result<(Ebpf, [u8; 8]), String> {
    let mut loader = EbpfLoader::new();
    let paths: Vec<(&str, PathBuf)> = pins
        .map(|d| [FWD, DEVS, CNT].map(|m| (m, d.join(m))).to_vec())
        .unwrap_or_default();
    for (m, p) in &paths {
        loader.map_pin_path(m, p.as_path());
    }
    let mut ebpf = loader
        .load(object())
        .map_err(|e| format!("load object: {e}"))?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROGRAM)
        .ok_or("no program vnet_vlan in the object")?
        .try_into()
        .map_err(|e| format!("program type: {e}"))?;
    prog.load().map_err(|e| format!("verifier: {e}"))?;
    let tag = prog
        .info()
        .map_err(|e| format!("program info: {e}"))?
        .tag()
        .to_be_bytes();
    Ok((ebpf, tag))
}

/// Empties an instance's maps without touching any device.
fn forget_all(
    fwd: &mut BpfHashMap<MapData, FwdKey, FwdVal>,
    devs: &mut BpfHashMap<MapData, u32, u32>,
) -> Result<(), String> {
    let keys: Vec<FwdKey> = fwd.keys().filter_map(Result::ok).collect();
    for k in &keys {
        fwd.remove(k).map_err(|e| e.to_string())?;
    }
    let ds: Vec<u32> = devs.keys().filter_map(Result::ok).collect();
    for d in &ds {
        devs.remove(d).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The program's fd (as long as `ebpf` lives).
fn prog_fd(ebpf: &Ebpf) -> Result<BorrowedFd<'_>, String> {
    let p = ebpf.program(PROGRAM).ok_or("no program vnet_vlan")?;
    Ok(p.fd().map_err(|e| e.to_string())?.as_fd())
}

/// Loads the program and attaches it to `ifindex` through `attach`, without pins: the capability
/// probe's test (in a throw-away namespace).
pub fn probe_attach(attach: impl FnOnce(i32) -> std::io::Result<()>) -> Result<(), String> {
    let (ebpf, _) = load(None)?;
    let fd = prog_fd(&ebpf)?;
    attach(fd.as_raw_fd()).map_err(|e| format!("attach cls_bpf: {e}"))
}

/// Mounts bpffs on `/sys/fs/bpf` unless it is one already (systemd does this at boot; a bare
/// container or VM may not have it).
pub fn ensure_bpffs() -> std::io::Result<()> {
    let dir = Path::new("/sys/fs/bpf");
    let c = std::ffi::CString::new("/sys/fs/bpf").expect("literal");
    // SAFETY: `statfs` is plain data; all zeroes is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer and `c` a NUL-terminated path.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

/// The entries a wire needs, in its context namespace.
fn wire_want(tc: &dyn TcBpf, w: &Wire) -> Result<(Option<String>, InstanceWant), String> {
    let mut want = InstanceWant::default();
    let key = |ifindex, vid| FwdKey {
        ifindex,
        vid,
        pad: 0,
    };
    let val = |ifindex, vid, action| FwdVal {
        ifindex,
        vid,
        action,
    };
    let ctx = match (&w.a, &w.b) {
        (
            WireEnd::Tap { netns, ifname },
            WireEnd::Vlan {
                netns: ctx,
                dev,
                vlan_id,
            },
        )
        | (
            WireEnd::Vlan {
                netns: ctx,
                dev,
                vlan_id,
            },
            WireEnd::Tap { netns, ifname },
        ) => {
            let c = ctx.as_deref();
            let port = tc
                .ifindex(c, &Naming::port_dev(netns, ifname))
                .map_err(kerr)?;
            let ul = tc.ifindex(c, dev).map_err(kerr)?;
            want.fwd
                .insert(key(port, PORT_KEY), val(ul, *vlan_id, ACT_PUSH));
            want.fwd.insert(key(ul, *vlan_id), val(port, 0, ACT_POP));
            want.devs.extend([port, ul]);
            ctx.clone()
        }
        (
            WireEnd::Vlan {
                netns: ca,
                dev: da,
                vlan_id: va,
            },
            WireEnd::Vlan {
                netns: cb,
                dev: db,
                vlan_id: vb,
            },
        ) => {
            if ca != cb {
                return Err("the two VLAN hops of a transit are in different namespaces".into());
            }
            let c = ca.as_deref();
            let (ia, ib) = (
                tc.ifindex(c, da).map_err(kerr)?,
                tc.ifindex(c, db).map_err(kerr)?,
            );
            want.fwd.insert(key(ia, *va), val(ib, *vb, ACT_REWRITE));
            want.fwd.insert(key(ib, *vb), val(ia, *va, ACT_REWRITE));
            want.devs.extend([ia, ib]);
            ca.clone()
        }
        (WireEnd::Tap { .. }, WireEnd::Tap { .. }) => {
            return Err("a wire between two ports has no VLAN".into());
        }
    };
    Ok((ctx, want))
}

/// The BPF datapath of one agent.
pub struct BpfDatapath {
    tc: Arc<dyn TcBpf>,
    dir: PathBuf,
    instances: Mutex<HashMap<Option<String>, Instance>>,
}

impl BpfDatapath {
    /// `naming`: the agent's prefix and host id name its pin directory.
    pub fn new(tc: Arc<dyn TcBpf>, naming: &Naming) -> std::io::Result<Self> {
        ensure_bpffs()?;
        let dir = Path::new(PIN_ROOT).join(format!("{}-{}", naming.prefix, naming.host_id));
        Ok(Self {
            tc,
            dir,
            instances: Mutex::new(HashMap::new()),
        })
    }

    /// The pin directory of this agent.
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    fn inst_dir(&self, ns: Option<&str>) -> PathBuf {
        self.dir.join(ns.unwrap_or(AGENT_NS_DIR))
    }

    /// Instances that have a pin directory.
    fn pinned(&self) -> BTreeSet<Option<String>> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return BTreeSet::new();
        };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .map(|n| (n != AGENT_NS_DIR).then_some(n))
            .collect()
    }

    fn open<'a>(
        &self,
        insts: &'a mut HashMap<Option<String>, Instance>,
        ns: Option<&str>,
    ) -> Result<&'a mut Instance, String> {
        let key = ns.map(str::to_string);
        if !insts.contains_key(&key) {
            let dir = self.inst_dir(ns);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let (mut ebpf, tag) = load(Some(&dir))?;
            let take = |e: &mut Ebpf, m: &str| e.take_map(m).ok_or(format!("no map {m}"));
            let fwd = BpfHashMap::try_from(take(&mut ebpf, FWD)?).map_err(|e| e.to_string())?;
            let devs = BpfHashMap::try_from(take(&mut ebpf, DEVS)?).map_err(|e| e.to_string())?;
            let cnt = PerCpuArray::try_from(take(&mut ebpf, CNT)?).map_err(|e| e.to_string())?;
            insts.insert(
                key.clone(),
                Instance {
                    ebpf,
                    fwd,
                    devs,
                    cnt,
                    tag,
                },
            );
        }
        Ok(insts.get_mut(&key).expect("inserted"))
    }

    /// Makes one instance hold exactly `want`: classifiers first, then entries; stale entries
    /// before their classifiers go.
    fn sync(&self, i: &mut Instance, ns: Option<&str>, want: &InstanceWant) -> Result<(), String> {
        let fd = prog_fd(&i.ebpf)?;
        let here = self.tc.ns_inode(ns).ok_or("the namespace is gone")?;
        if i.devs.get(&NS_KEY, 0).is_ok_and(|rec| rec != here) {
            // Recorded in a namespace of the same name that is gone: its devices (and our
            // classifiers on them) went with it, and its ifindexes mean nothing here.
            forget_all(&mut i.fwd, &mut i.devs)?;
        }
        i.devs.insert(NS_KEY, here, 0).map_err(|e| e.to_string())?;
        for &d in &want.devs {
            let current = self.tc.bpf_attached(ns, d).map_err(kerr)?;
            let recorded = i.devs.get(&d, 0).ok();
            if current.as_ref() == Some(&(PROGRAM.to_string(), i.tag)) && recorded.is_some() {
                continue; // ours, same code: adopted as it is
            }
            let flags = recorded.unwrap_or(0);
            i.devs.insert(d, flags, 0).map_err(|e| e.to_string())?;
            if self.tc.bpf_attach(ns, d, fd, PROGRAM).map_err(kerr)? {
                i.devs
                    .insert(d, flags | ADDED_QDISC, 0)
                    .map_err(|e| e.to_string())?;
            }
        }
        let have: Vec<FwdKey> = i.fwd.keys().filter_map(Result::ok).collect();
        for k in have.iter().filter(|k| !want.fwd.contains_key(k)) {
            i.fwd.remove(k).map_err(|e| e.to_string())?;
        }
        for (k, v) in &want.fwd {
            if i.fwd.get(k, 0).ok().as_ref() != Some(v) {
                i.fwd.insert(k, v, 0).map_err(|e| e.to_string())?;
            }
        }
        let attached: Vec<(u32, u32)> = i
            .devs
            .iter()
            .filter_map(Result::ok)
            .filter(|(d, _)| *d != NS_KEY && !want.devs.contains(d))
            .collect();
        for (d, flags) in attached {
            self.tc
                .bpf_detach(ns, d, flags & ADDED_QDISC != 0)
                .map_err(kerr)?;
            i.devs.remove(&d).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Detaches everything of an instance and removes its pins.
    fn remove(
        &self,
        insts: &mut HashMap<Option<String>, Instance>,
        ns: Option<&str>,
    ) -> Result<(), String> {
        let i = self.open(insts, ns)?;
        let here = self.tc.ns_inode(ns);
        let recorded = i.devs.get(&NS_KEY, 0).ok();
        if here.is_some() && (recorded.is_none() || recorded == here) {
            self.sync(i, ns, &InstanceWant::default())?;
        }
        insts.remove(&ns.map(str::to_string));
        let dir = self.inst_dir(ns);
        for m in [FWD, DEVS, CNT] {
            match std::fs::remove_file(dir.join(m)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("unpin {}: {e}", dir.join(m).display()));
                }
                _ => {}
            }
        }
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("remove {}: {e}", dir.display()))
            }
            _ => {
                let _ = std::fs::remove_dir(&self.dir);
                Ok(())
            }
        }
    }

    /// Per-CPU counters summed, per instance (`None`: the agent's namespace).
    pub fn counters(&self) -> BTreeMap<Option<String>, [u64; 4]> {
        let insts = self.instances.lock().expect("bpf instances");
        insts
            .iter()
            .map(|(ns, i)| {
                let mut c = [0u64; 4];
                for (slot, v) in c.iter_mut().enumerate() {
                    if let Ok(per_cpu) = i.cnt.get(&(slot as u32), 0) {
                        *v = per_cpu.iter().sum();
                    }
                }
                (ns.clone(), c)
            })
            .collect()
    }
}

impl DatapathControl for BpfDatapath {
    fn configure(&self, cfg: &DatapathConfig, _reattach: bool) -> Result<(), DatapathError> {
        cfg.validate().map_err(DatapathError::Config)?;
        let mut per_wire: BTreeMap<String, String> = BTreeMap::new();
        let mut want: BTreeMap<Option<String>, (InstanceWant, Vec<String>)> = BTreeMap::new();
        for (id, w) in &cfg.wires {
            match wire_want(self.tc.as_ref(), w) {
                Ok((ctx, w)) => {
                    let e = want.entry(ctx).or_default();
                    e.0.devs.extend(w.devs);
                    e.0.fwd.extend(w.fwd);
                    e.1.push(id.clone());
                }
                Err(e) => {
                    per_wire.insert(id.clone(), e);
                }
            }
        }
        let mut insts = self.instances.lock().expect("bpf instances");
        for (ns, (w, ids)) in &want {
            let r = self
                .open(&mut insts, ns.as_deref())
                .and_then(|i| self.sync(i, ns.as_deref(), w));
            if let Err(e) = r {
                for id in ids {
                    per_wire.insert(id.clone(), format!("bpf: {e}"));
                }
            }
        }
        let stale: Vec<Option<String>> = self
            .pinned()
            .into_iter()
            .chain(insts.keys().cloned())
            .filter(|ns| !want.contains_key(ns))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for ns in stale {
            self.remove(&mut insts, ns.as_deref())
                .map_err(bpf_err(format!(
                    "remove the instance of {}",
                    ns.as_deref().unwrap_or("the agent's namespace")
                )))?;
        }
        if per_wire.is_empty() {
            Ok(())
        } else {
            Err(DatapathError::Wires(per_wire))
        }
    }

    fn bpf(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Devices by (namespace, name): ifindex = position + 10.
    struct Devs(Vec<(Option<&'static str>, String)>);

    impl TcBpf for Devs {
        fn ifindex(&self, ns: Option<&str>, ifname: &str) -> Result<u32, KernelError> {
            self.0
                .iter()
                .position(|(n, d)| *n == ns && d == ifname)
                .map(|i| i as u32 + 10)
                .ok_or(KernelError::NotFound {
                    what: format!("link {ifname}"),
                })
        }
        fn bpf_attached(
            &self,
            _: Option<&str>,
            _: u32,
        ) -> Result<Option<(String, [u8; 8])>, KernelError> {
            Ok(None)
        }
        fn bpf_attach(
            &self,
            _: Option<&str>,
            _: u32,
            _: BorrowedFd<'_>,
            _: &str,
        ) -> Result<bool, KernelError> {
            Ok(false)
        }
        fn bpf_detach(&self, _: Option<&str>, _: u32, _: bool) -> Result<(), KernelError> {
            Ok(())
        }
        fn ns_inode(&self, _: Option<&str>) -> Option<u32> {
            Some(1)
        }
    }

    fn k(ifindex: u32, vid: u16) -> FwdKey {
        FwdKey {
            ifindex,
            vid,
            pad: 0,
        }
    }

    fn v(ifindex: u32, vid: u16, action: u16) -> FwdVal {
        FwdVal {
            ifindex,
            vid,
            action,
        }
    }

    #[test]
    fn wires_become_port_dispatch_and_transit_entries() {
        let port = Naming::port_dev("vn-h1-a1", "eth1");
        let tc = Devs(vec![
            (None, "ul0".into()),
            (None, "ul1".into()),
            (None, port.clone()),
            (Some("vn-h1-p"), "ul0".into()),
        ]);
        let vlan = |netns: Option<&str>, dev: &str, vlan_id| WireEnd::Vlan {
            netns: netns.map(str::to_string),
            dev: dev.into(),
            vlan_id,
        };
        let tap = WireEnd::Tap {
            netns: "vn-h1-a1".into(),
            ifname: "eth1".into(),
        };
        // Node side: the port pushes 101 towards ul0; 101 on ul0 is popped into the port's peer.
        let (ns, w) = wire_want(
            &tc,
            &Wire {
                a: tap.clone(),
                b: vlan(None, "ul0", 101),
            },
        )
        .unwrap();
        assert_eq!(ns, None);
        assert_eq!(w.devs, BTreeSet::from([10, 12]));
        assert_eq!(
            w.fwd,
            BTreeMap::from([
                (k(12, PORT_KEY), v(10, 101, ACT_PUSH)),
                (k(10, 101), v(12, 0, ACT_POP))
            ])
        );
        // Transit: 7 on ul0 <-> 8 on ul1, rewritten both ways.
        let (_, w) = wire_want(
            &tc,
            &Wire {
                a: vlan(None, "ul0", 7),
                b: vlan(None, "ul1", 8),
            },
        )
        .unwrap();
        assert_eq!(
            w.fwd,
            BTreeMap::from([
                (k(10, 7), v(11, 8, ACT_REWRITE)),
                (k(11, 8), v(10, 7, ACT_REWRITE))
            ])
        );
        // A nested VN's instance lives in its context namespace.
        let (ns, w) = wire_want(
            &tc,
            &Wire {
                a: vlan(Some("vn-h1-p"), "ul0", 5),
                b: vlan(Some("vn-h1-p"), "ul0", 6),
            },
        )
        .unwrap();
        assert_eq!((ns.as_deref(), w.devs.len()), (Some("vn-h1-p"), 1));
        // Errors name what is wrong.
        let e = wire_want(
            &tc,
            &Wire {
                a: vlan(None, "ul0", 5),
                b: vlan(Some("vn-h1-p"), "ul0", 6),
            },
        )
        .unwrap_err();
        assert!(e.contains("different namespaces"), "{e}");
        let e = wire_want(
            &tc,
            &Wire {
                a: tap,
                b: vlan(None, "nope", 5),
            },
        )
        .unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }
}
