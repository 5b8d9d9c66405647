//! The scale benchmark behind `substrate-agent bench` (driven by `deploy/bench/agent-scale.sh`):
//! builds N netns virtual nodes, each with one link (N/2 veth pairs with addresses), through the
//! agent's own observe -> plan -> apply path on the real kernel, then tears them down the same way
//! (an empty desired state).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vnet_proto::v1 as pb;

use crate::host::kernel::Kernel;
use crate::reconcile::apply::{Env, apply};
use crate::reconcile::naming::Naming;
use crate::reconcile::observe::observe;
use crate::reconcile::plan::{PlanContext, plan};
use crate::reconcile::spec::Desired;
use crate::reconcile::state::StateDir;
use crate::vlan::config::FakeDatapath;

/// Timings of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleResult {
    pub vnodes: usize,
    pub links: usize,
    pub workers: usize,
    pub create_s: f64,
    pub create_ops: usize,
    /// A second reconcile of the same desired state: observe all, plan, nothing to apply.
    pub resync_s: f64,
    pub teardown_s: f64,
    pub teardown_ops: usize,
    pub namespaces_after_create: usize,
    pub namespaces_after_teardown: usize,
}

/// The desired state of the benchmark: `n` nodes in one VN, node 2i linked to node 2i+1.
pub fn scale_desired(n: usize, bandwidth_mbps: u64) -> pb::DesiredState {
    let nodes = (0..n)
        .map(|i| pb::VirtualNodeSpec {
            node_id: format!("b{i}"),
            name: format!("b{i}"),
            kind: pb::NodeKind::Netns as i32,
            routes: vec![],
            guest: None,
        })
        .collect();
    let links = (0..n / 2)
        .map(|i| {
            let ep = |node: usize, host: u32| pb::Endpoint {
                kind: Some(pb::endpoint::Kind::Node(pb::NodeInterface {
                    node_id: format!("b{node}"),
                    ifname: "eth0".into(),
                    addresses: vec![format!(
                        "10.{}.{}.{}/30",
                        (i >> 6) & 0xff,
                        (i & 0x3f) << 2,
                        host
                    )],
                    mac: String::new(),
                })),
            };
            pb::LinkSegment {
                link_id: format!("l{i}"),
                mtu: 1500,
                bandwidth_mbps,
                a: Some(ep(2 * i, 1)),
                b: Some(ep(2 * i + 1, 2)),
                context_node_id: String::new(),
                ..Default::default()
            }
        })
        .collect();
    pb::DesiredState {
        generation: 1,
        vns: vec![pb::VnSlice {
            vn_id: "bench".into(),
            label: "bench/scale".into(),
            context_node_id: String::new(),
            depth: 0,
            nodes,
            links,
        }],
    }
}

fn converge<K: Kernel>(
    kernel: &K,
    naming: &Naming,
    ledger: &StateDir,
    desired: &Desired,
    workers: usize,
) -> anyhow::Result<(Duration, usize)> {
    let t = Instant::now();
    let obs = observe(kernel, naming, ledger, BTreeSet::new(), workers)?;
    let p = plan(
        naming,
        desired,
        &obs.observed,
        PlanContext {
            guests_supported: false,
            vlan_bpf: false,
        },
    );
    let dp = FakeDatapath::default();
    let env = Env {
        kernel,
        ledger,
        datapath: &dp,
        guests: None,
        workers,
        cancel: None,
    };
    let r = apply(&env, &p);
    let elapsed = t.elapsed();
    if !r.failed.is_empty() || !r.errors.is_empty() {
        anyhow::bail!("apply failed: {:?} {:?}", r.failed, r.errors);
    }
    Ok((elapsed, r.ops_run))
}

/// Runs the benchmark with the given prefix/host id (namespaces are `<prefix>-<host>-b<i>`).
pub fn run_scale<K: Kernel>(
    kernel: &K,
    naming: &Naming,
    vnodes: usize,
    bandwidth_mbps: u64,
    workers: usize,
) -> anyhow::Result<ScaleResult> {
    let ledger = StateDir::in_memory(&naming.host_id);
    let desired = Desired::from_proto(&scale_desired(vnodes, bandwidth_mbps));
    anyhow::ensure!(desired.invalid.is_empty(), "{:?}", desired.invalid);
    let count = || -> anyhow::Result<usize> { Ok(kernel.list_netns(&naming.ns_prefix())?.len()) };
    let (create, create_ops) = converge(kernel, naming, &ledger, &desired, workers)?;
    let after_create = count()?;
    let (resync, resync_ops) = converge(kernel, naming, &ledger, &desired, workers)?;
    anyhow::ensure!(
        resync_ops == 0,
        "a converged host planned {resync_ops} operations"
    );
    let (teardown, teardown_ops) = converge(kernel, naming, &ledger, &Desired::default(), workers)?;
    Ok(ScaleResult {
        vnodes,
        links: vnodes / 2,
        workers,
        create_s: create.as_secs_f64(),
        create_ops,
        resync_s: resync.as_secs_f64(),
        teardown_s: teardown.as_secs_f64(),
        teardown_ops,
        namespaces_after_create: after_create,
        namespaces_after_teardown: count()?,
    })
}

/// The desired state of the throughput benchmark on one side (`side` 1 or 2): node `p<side>` with
/// a VXLAN link (eth0, 10.97.0.<side>/24, VNI 9001, MTU 1500: the underlay needs 1550) and a userspace-VLAN link (eth1,
/// 10.96.0.<side>/24, VLAN 901) to the other side over the underlay `local` -> `remote`.
pub fn link_desired(side: u8, local: &str, remote: &str) -> pb::DesiredState {
    let node = format!("p{side}");
    let ep_node = |ifname: &str, addr: String| pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Node(pb::NodeInterface {
            node_id: node.clone(),
            ifname: ifname.into(),
            addresses: vec![addr],
            mac: String::new(),
        })),
    };
    let ep_hop = |encap: pb::Encapsulation, vni: u32, vlan_id: u32| pb::Endpoint {
        kind: Some(pb::endpoint::Kind::Tunnel(pb::TunnelHop {
            encapsulation: encap as i32,
            vni,
            vlan_id,
            udp_port: 0,
            local_address: local.into(),
            remote_address: remote.into(),
            neighbor: String::new(),
        })),
    };
    pb::DesiredState {
        generation: 1,
        vns: vec![pb::VnSlice {
            vn_id: "tput".into(),
            label: "bench/throughput".into(),
            context_node_id: String::new(),
            depth: 0,
            nodes: vec![pb::VirtualNodeSpec {
                node_id: node.clone(),
                name: node.clone(),
                kind: pb::NodeKind::Netns as i32,
                routes: vec![],
                guest: None,
            }],
            links: vec![
                pb::LinkSegment {
                    link_id: "vx".into(),
                    // The testbed's underlay is 1550 (cli/src/testbed/layout.rs
                    // DEFAULT_UNDERLAY_MTU), so the controller gives VXLAN links 1500.
                    mtu: 1500,
                    bandwidth_mbps: 0,
                    a: Some(ep_node("eth0", format!("10.97.0.{side}/24"))),
                    b: Some(ep_hop(pb::Encapsulation::Vxlan, 9001, 0)),
                    context_node_id: String::new(),
                    ..Default::default()
                },
                pb::LinkSegment {
                    link_id: "vl".into(),
                    mtu: 1500,
                    bandwidth_mbps: 0,
                    a: Some(ep_node("eth1", format!("10.96.0.{side}/24"))),
                    b: Some(ep_hop(pb::Encapsulation::Vlan, 0, 901)),
                    context_node_id: String::new(),
                    ..Default::default()
                },
            ],
        }],
    }
}

/// One observe -> plan -> apply pass with a real ledger and datapath (for `bench-link`).
pub fn apply_once<K: Kernel>(
    kernel: &K,
    naming: &Naming,
    ledger: &StateDir,
    datapath: &dyn crate::vlan::config::DatapathControl,
    desired: &pb::DesiredState,
) -> anyhow::Result<()> {
    let desired = Desired::from_proto(desired);
    anyhow::ensure!(desired.invalid.is_empty(), "{:?}", desired.invalid);
    let obs = observe(kernel, naming, ledger, BTreeSet::new(), 2)?;
    let p = plan(
        naming,
        &desired,
        &obs.observed,
        PlanContext {
            guests_supported: false,
            vlan_bpf: datapath.bpf(),
        },
    );
    let env = Env {
        kernel,
        ledger,
        datapath,
        guests: None,
        workers: 2,
        cancel: None,
    };
    let r = apply(&env, &p);
    if !r.failed.is_empty() || !r.errors.is_empty() {
        anyhow::bail!("apply failed: {:?} {:?}", r.failed, r.errors);
    }
    Ok(())
}
