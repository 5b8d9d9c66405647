//! The scale benchmark behind `substrate-agent bench` (driven by `deploy/bench/agent-scale.sh`):
//! builds N netns virtual nodes, each with one link (N/2 veth pairs with addresses), through the
//! agent's own observe -> plan -> apply path on the real kernel, then tears them down the same way
//! (an empty desired state).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vnet_proto::v1 as pb;

use crate::apply::{Env, apply};
use crate::kernel::Kernel;
use crate::naming::Naming;
use crate::observe::observe;
use crate::plan::{PlanContext, plan};
use crate::spec::Desired;
use crate::state::StateDir;
use crate::vlan::config::FakeDatapath;

/// Timings of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleResult {
    pub vnodes: usize,
    pub links: usize,
    pub workers: usize,
    pub create_s: f64,
    pub create_ops: usize,
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
    let (teardown, teardown_ops) = converge(kernel, naming, &ledger, &Desired::default(), workers)?;
    Ok(ScaleResult {
        vnodes,
        links: vnodes / 2,
        workers,
        create_s: create.as_secs_f64(),
        create_ops,
        teardown_s: teardown.as_secs_f64(),
        teardown_ops,
        namespaces_after_create: after_create,
        namespaces_after_teardown: count()?,
    })
}
