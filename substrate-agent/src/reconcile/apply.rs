//! The thin executor: runs a [`Plan`] against a [`Kernel`], phase by phase.
//!
//! Within a phase the operations are independent and run on a small pool of threads (namespace
//! creation dominates the cost of a build and the kernel lets it proceed in parallel). A slice
//! whose operation fails is marked failed with that first error; its remaining operations are
//! skipped and, at the end, everything of it on this host is torn down (all-or-nothing per host).
//! Other slices are unaffected. The executor decides nothing else: what to do comes from the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::guest::{self, GuestRuntime};
use crate::host::kernel::{Kernel, KernelError, PortSpec, VxlanSpec};
use crate::reconcile::observe::parallel_map;
use crate::reconcile::plan::{GuestRequest, Op, Plan, WireEndSpec};
use crate::reconcile::spec::VnId;
use crate::reconcile::state::Ledger;
use crate::vlan::config::{DatapathConfig, DatapathControl, Wire, WireEnd};

/// IPv4 VXLAN overhead: outer Ethernet is not counted, outer IPv4 20 + UDP 8 + VXLAN 8 + inner
/// Ethernet 14.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// IPv6 outer header is 40 bytes.
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// What the executor needs besides the plan.
pub struct Env<'a, K: Kernel + ?Sized> {
    pub kernel: &'a K,
    pub ledger: &'a dyn Ledger,
    pub datapath: &'a dyn DatapathControl,
    pub guests: Option<&'a dyn GuestRuntime>,
    /// Threads per phase.
    pub workers: usize,
    /// Set by the caller when a newer desired state arrived: stop between phases.
    pub cancel: Option<&'a AtomicBool>,
}

/// The outcome of one apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Slices that failed (planned failures included), with the first error.
    pub failed: BTreeMap<VnId, String>,
    /// Failures not tied to a slice.
    pub errors: Vec<String>,
    /// A newer desired state interrupted this apply.
    pub superseded: bool,
    /// Operations executed.
    pub ops_run: usize,
}

fn describe(op: &Op) -> String {
    match op {
        Op::DeleteNetns { name } => format!("delete namespace {name}"),
        Op::DeleteLink { ns, ifname } => format!("delete link {ifname} in {ns}"),
        Op::DeleteHostLink { ifname } => format!("delete host link {ifname}"),
        Op::DeleteRoute { ns, route } => format!("delete route {:?} in {ns}", route.destination),
        Op::StopGuest { node } => format!("stop guest {node}"),
        Op::CreateNetns { name, .. } => format!("create namespace {name}"),
        Op::CreateVeth { a, b, .. } => {
            format!("create veth {}/{} - {}/{}", a.ns, a.ifname, b.ns, b.ifname)
        }
        Op::CreateVxlan { dev, vni, link, .. } => {
            format!(
                "link {link}: create vxlan {} (vni {vni}) in {}",
                dev.ifname, dev.ns
            )
        }
        Op::CreateTap { dev, .. } => format!("create tap {} in {}", dev.ifname, dev.ns),
        Op::CreatePort(PortSpec { dev, outer, .. }) => {
            format!("create vlan port {} in {} ({outer})", dev.ifname, dev.ns)
        }
        Op::Shape { ns, ifname, mbps } => format!("shape {ifname} in {ns} to {mbps} Mbit/s"),
        Op::JoinTransit { ns, a, b } => format!("join {a} and {b} in {ns}"),
        Op::RedirectEgress { ns, from, to } => {
            format!("redirect what {from} sends to the relay {to} in {ns}")
        }
        Op::AddRoute { ns, route } => {
            format!(
                "add route {:?} via {} in {ns}",
                route.destination, route.via
            )
        }
        Op::EnsureGuest(g) => format!("start guest {}", g.node),
    }
}

fn run_op<K: Kernel + ?Sized>(env: &Env<'_, K>, op: &Op) -> Result<(), String> {
    let k = env.kernel;
    let ctx = |e: KernelError| format!("{}: {e}", describe(op));
    let tolerate_missing = |r: Result<(), KernelError>| match r {
        Err(e) if e.is_not_found() => Ok(()),
        r => r.map_err(ctx),
    };
    match op {
        Op::DeleteNetns { name } => tolerate_missing(k.delete_netns(name)),
        Op::DeleteLink { ns, ifname } => tolerate_missing(k.delete_link(Some(ns), ifname)),
        Op::DeleteHostLink { ifname } => tolerate_missing(k.delete_link(None, ifname)),
        Op::DeleteRoute { ns, route } => tolerate_missing(k.delete_route(ns, route)),
        Op::StopGuest { node } => match env.guests {
            Some(g) => g
                .stop(node.as_str())
                .map_err(|e| format!("{}: {e}", describe(op))),
            None => Ok(()),
        },
        Op::CreateNetns { name, tag } => k.create_netns(name, tag).map(|_| ()).map_err(ctx),
        Op::CreateVeth { a, b, tag } => k.create_veth(a, b, tag).map_err(ctx),
        Op::CreateVxlan {
            ctx: cns,
            dev,
            vni,
            port,
            local,
            remote,
            tag,
            link,
        } => {
            let route = k.route_to(cns.as_deref(), *remote).map_err(ctx)?;
            let overhead = if remote.is_ipv4() {
                VXLAN_OVERHEAD_V4
            } else {
                VXLAN_OVERHEAD_V6
            };
            let max = route.dev_mtu.saturating_sub(overhead);
            if dev.mtu > max {
                return Err(format!(
                    "link {link}: mtu {} exceeds what underlay {} (mtu {}) carries over VXLAN ({max})",
                    dev.mtu, route.dev, route.dev_mtu
                ));
            }
            k.create_vxlan(&VxlanSpec {
                ctx: cns.clone(),
                dev: dev.clone(),
                vni: *vni,
                port: *port,
                local: *local,
                remote: *remote,
                underlay_index: route.dev_index,
                tag: tag.clone(),
            })
            .map_err(ctx)
        }
        Op::CreateTap { dev, tag } => k.create_tap(dev, Some(tag)).map_err(ctx),
        Op::CreatePort(spec) => k.create_port(spec).map_err(ctx),
        Op::Shape { ns, ifname, mbps } => k.shape(ns, ifname, *mbps).map_err(ctx),
        Op::JoinTransit { ns, a, b } => k.join(ns, a, b).map_err(ctx),
        Op::RedirectEgress { ns, from, to } => k.redirect_egress(ns, from, to).map_err(ctx),
        Op::AddRoute { ns, route } => k.add_route(ns, route).map_err(ctx),
        Op::EnsureGuest(g) => match env.guests {
            Some(rt) => ensure_booted(env, rt, g).map_err(|e| format!("{}: {e}", describe(op))),
            None => Err(format!("{}: no guest runtime on this agent", describe(op))),
        },
    }
}

/// Runs the guest and waits until it booted: a slice with guests is ready when its guests answer
/// on their command channel (they configure their NICs before they serve it), not when QEMU
/// merely runs. A guest that does not boot within [`GUEST_BOOT_TIMEOUT`] fails its slice, with
/// the console's tail when QEMU died. An adopted guest answers at once. Waits in short steps so
/// that a newer desired state (`env.cancel`) is not held up by a slow boot.
fn ensure_booted<K: Kernel + ?Sized>(
    env: &Env<'_, K>,
    rt: &dyn GuestRuntime,
    g: &GuestRequest,
) -> Result<(), guest::GuestError> {
    rt.ensure(&g.config())?;
    let deadline = Instant::now() + GUEST_BOOT_TIMEOUT;
    loop {
        let step = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        let (node_id, reason) = match rt.wait_ready(g.node.as_str(), step) {
            Ok(()) => return Ok(()),
            Err(guest::GuestError::Channel { node_id, reason }) => (node_id, reason),
            Err(e) => return Err(e),
        };
        let reason = if env.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            format!("still booting when a newer desired state arrived ({reason})")
        } else if Instant::now() >= deadline {
            format!("did not boot within {GUEST_BOOT_TIMEOUT:?} ({reason})")
        } else {
            continue;
        };
        return Err(guest::GuestError::Channel { node_id, reason });
    }
}

/// How long a guest may take from start to answering on its command channel. The project's
/// image boots in about 3 s under TCG on an idle core; several guests booting at once on two
/// cores take several times that.
pub const GUEST_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Resolves the VLAN ends of the plan's wires into a datapath configuration. A VLAN hop needs its
/// neighbour directly connected (no gateway). Wires of `skip` slices are left out; failures are
/// recorded per slice.
fn datapath_config<K: Kernel + ?Sized>(
    env: &Env<'_, K>,
    plan: &Plan,
    skip: &BTreeMap<VnId, String>,
    failed: &mut BTreeMap<VnId, String>,
) -> DatapathConfig {
    let mut cfg = DatapathConfig::default();
    for w in &plan.wires {
        if skip.contains_key(&w.vn) || failed.contains_key(&w.vn) {
            continue;
        }
        let resolve = |e: &WireEndSpec| -> Result<WireEnd, String> {
            match e {
                WireEndSpec::Tap { ns, ifname } => Ok(WireEnd::Tap {
                    netns: ns.clone(),
                    ifname: ifname.clone(),
                }),
                WireEndSpec::Vlan {
                    ctx,
                    local: _,
                    remote,
                    vlan_id,
                } => {
                    let r = env
                        .kernel
                        .route_to(ctx.as_deref(), *remote)
                        .map_err(|e| format!("wire {}: vlan {vlan_id}: {e}", w.id))?;
                    if let Some(gw) = r.gateway {
                        return Err(format!(
                            "wire {}: vlan {vlan_id} hop to {remote} needs a directly connected neighbour, but the route goes via {gw} on {}",
                            w.id, r.dev
                        ));
                    }
                    Ok(WireEnd::Vlan {
                        netns: ctx.clone(),
                        dev: r.dev,
                        vlan_id: *vlan_id,
                    })
                }
            }
        };
        match (resolve(&w.a), resolve(&w.b)) {
            (Ok(a), Ok(b)) => {
                cfg.wires.insert(w.id.clone(), Wire { a, b });
            }
            (Err(e), _) | (_, Err(e)) => {
                failed.entry(w.vn.clone()).or_insert(e);
            }
        }
    }
    for r in &plan.relays {
        if !skip.contains_key(&r.vn) && !failed.contains_key(&r.vn) {
            cfg.relays.insert(r.id.clone(), r.cfg.clone());
        }
    }
    cfg
}

/// The slice a wire or relay id of the datapath belongs to.
fn served_by<'a>(plan: &'a Plan, id: &str) -> Option<&'a VnId> {
    plan.wires
        .iter()
        .find(|w| w.id == id)
        .map(|w| &w.vn)
        .or_else(|| plan.relays.iter().find(|r| r.id == id).map(|r| &r.vn))
}

/// Deletes every namespace of `vn` that the ledger records as ours.
fn teardown_slice<K: Kernel + ?Sized>(env: &Env<'_, K>, plan: &Plan, vn: &VnId) -> Vec<String> {
    let owned = env.ledger.namespaces();
    let mut errors = Vec::new();
    let names: Vec<String> = plan
        .slice_namespaces
        .get(vn)
        .into_iter()
        .flatten()
        .filter(|n| owned.contains_key(*n))
        .cloned()
        .collect();
    if let Some(g) = env.guests {
        for name in &names {
            if let Some(node) = name.rsplit('-').next()
                && let Err(e) = g.stop(node)
            {
                errors.push(format!("teardown of vn {vn}: stop guest {node}: {e}"));
            }
        }
    }
    let mut gone = Vec::new();
    for n in &names {
        match env.kernel.delete_netns(n) {
            Ok(()) => gone.push(n.clone()),
            Err(e) if e.is_not_found() => gone.push(n.clone()),
            Err(e) => errors.push(format!("teardown of vn {vn}: delete namespace {n}: {e}")),
        }
    }
    if let Err(e) = env.ledger.forget(&gone) {
        errors.push(e.to_string());
    }
    errors
}

/// Executes `plan`.
pub fn apply<K: Kernel + ?Sized>(env: &Env<'_, K>, plan: &Plan) -> ApplyReport {
    let mut report = ApplyReport {
        failed: plan.failed.clone(),
        ..Default::default()
    };
    let cancelled = || env.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    // Stages: removals first; then building, parents (depth 0) before children, whose tunnels
    // need the parents' links; guests last, after the VLAN datapath serves their links.
    let stage = |vn: &Option<VnId>, op: &Op| -> (u8, u32, u8) {
        let depth = vn
            .as_ref()
            .and_then(|v| plan.depth.get(v))
            .copied()
            .unwrap_or(0);
        match op.phase() {
            p @ 0..=1 => (0, 0, p),
            p @ 2..=5 => (1, depth, p),
            p => (2, depth, p),
        }
    };
    let stages: BTreeSet<(u8, u32, u8)> = plan.ops.iter().map(|(vn, op)| stage(vn, op)).collect();
    let mut datapath_done = false;
    let mut failed_at_datapath: Option<BTreeSet<VnId>> = None;
    for st in stages {
        if cancelled() {
            report.superseded = true;
            return report;
        }
        if st.0 == 2 && !datapath_done {
            configure_datapath(env, plan, &mut report);
            failed_at_datapath = Some(report.failed.keys().cloned().collect());
            datapath_done = true;
        }
        let ops: Vec<&(Option<VnId>, Op)> = plan
            .ops
            .iter()
            .filter(|(vn, op)| {
                stage(vn, op) == st && vn.as_ref().is_none_or(|v| !report.failed.contains_key(v))
            })
            .collect();
        run_stage(env, &ops, &mut report);
    }
    if cancelled() {
        report.superseded = true;
        return report;
    }
    if !datapath_done {
        configure_datapath(env, plan, &mut report);
    }
    finish(env, plan, &mut report, failed_at_datapath);
    report
}

/// Runs one stage's operations in parallel: the ledger records the intent to create namespaces
/// first; failures mark their slice; the ledger then confirms what was created and forgets what
/// was deleted.
fn run_stage<K: Kernel + ?Sized>(
    env: &Env<'_, K>,
    ops: &[&(Option<VnId>, Op)],
    report: &mut ApplyReport,
) {
    // Ownership: record the intent before creating.
    let creating: Vec<String> = ops
        .iter()
        .filter_map(|(_, op)| match op {
            Op::CreateNetns { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    if !creating.is_empty()
        && let Err(e) = env.ledger.intend(&creating)
    {
        report.errors.push(e.to_string());
        for (vn, _) in ops {
            if let Some(vn) = vn {
                report.failed.entry(vn.clone()).or_insert(e.to_string());
            }
        }
        return;
    }
    let results = parallel_map(ops, env.workers, |(_, op)| {
        if let Op::CreateNetns { name, tag } = op {
            return env
                .kernel
                .create_netns(name, tag)
                .map(Some)
                .map_err(|e| format!("{}: {e}", describe(op)));
        }
        run_op(env, op).map(|()| None)
    });
    report.ops_run += ops.len();
    let mut confirmed = Vec::new();
    let mut deleted = Vec::new();
    let mut failed_creates = Vec::new();
    for ((vn, op), r) in ops.iter().zip(results) {
        match r {
            Ok(inode) => match op {
                Op::CreateNetns { name, .. } => {
                    confirmed.push((name.clone(), inode.unwrap_or_default()))
                }
                Op::DeleteNetns { name } => deleted.push(name.clone()),
                _ => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, "operation failed");
                if let Op::CreateNetns { name, .. } = op {
                    failed_creates.push(name.clone());
                }
                match vn {
                    Some(vn) => {
                        report.failed.entry(vn.clone()).or_insert(e);
                    }
                    None => report.errors.push(e),
                }
            }
        }
    }
    for r in [
        env.ledger.confirm(&confirmed),
        env.ledger.forget(&deleted),
        // A namespace that could not be created is not ours (it may be a stranger's).
        env.ledger.forget(&failed_creates),
    ] {
        if let Err(e) = r {
            report.errors.push(e.to_string());
        }
    }
}

/// After the last stage: all-or-nothing per host, and the datapath without the wires of slices
/// that failed after it was configured (`failed_at_datapath`: the failed slices at that moment).
fn finish<K: Kernel + ?Sized>(
    env: &Env<'_, K>,
    plan: &Plan,
    report: &mut ApplyReport,
    failed_at_datapath: Option<BTreeSet<VnId>>,
) {
    // All-or-nothing per host: tear down what failed slices left.
    let to_tear: Vec<VnId> = report.failed.keys().cloned().collect();
    let mut teardown_errors = Vec::new();
    for vn in &to_tear {
        teardown_errors.extend(teardown_slice(env, plan, vn));
    }
    report.errors.extend(teardown_errors);
    // A slice with VLAN wires failed after the datapath was configured: drop its wires.
    if let Some(before) = failed_at_datapath {
        let late = report
            .failed
            .keys()
            .any(|vn| !before.contains(vn) && plan.serves(vn));
        if late {
            let mut ignored = BTreeMap::new();
            let cfg = datapath_config(env, plan, &report.failed.clone(), &mut ignored);
            if let Err(e) = env.datapath.configure(&cfg, false) {
                report.errors.push(e.to_string());
            }
        }
    }
}

fn configure_datapath<K: Kernel + ?Sized>(env: &Env<'_, K>, plan: &Plan, report: &mut ApplyReport) {
    let planned = report.failed.clone();
    let cfg = datapath_config(env, plan, &planned, &mut report.failed);
    if let Err(e) = env.datapath.configure(&cfg, plan.datapath_reattach) {
        if let crate::vlan::config::DatapathError::Wires(per_wire) = &e {
            // Only the slices whose wires failed.
            for (wire, err) in per_wire {
                if let Some(vn) = served_by(plan, wire) {
                    report
                        .failed
                        .entry(vn.clone())
                        .or_insert_with(|| format!("vlan datapath: wire {wire}: {err}"));
                }
            }
            let mut again = BTreeMap::new();
            let cfg = datapath_config(env, plan, &report.failed.clone(), &mut again);
            if let Err(e) = env.datapath.configure(&cfg, false) {
                report.errors.push(e.to_string());
            }
            return;
        }
        let msg = e.to_string();
        let vns: BTreeSet<VnId> = cfg
            .wires
            .keys()
            .chain(cfg.relays.keys())
            .filter_map(|id| served_by(plan, id).cloned())
            .collect();
        if vns.is_empty() {
            report.errors.push(msg);
        } else {
            for vn in vns {
                report.failed.entry(vn).or_insert_with(|| msg.clone());
            }
            // Serve what remains (the failed slices' wires removed).
            let mut again = BTreeMap::new();
            let cfg = datapath_config(env, plan, &report.failed.clone(), &mut again);
            if let Err(e) = env.datapath.configure(&cfg, false) {
                report.errors.push(e.to_string());
            }
        }
    }
}
