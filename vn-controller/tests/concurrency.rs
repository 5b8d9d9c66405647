//! 50 concurrent creates never oversubscribe a host or a link, and never share an identifier.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use tonic::Code;
use vn_controller::standin::Behaviour;
use vnet_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_never_oversubscribe() {
    let dir = tempfile::tempdir().unwrap();
    // Five hosts of 100 cpu, full mesh of 300 Mbit/s links: room for far fewer than 50 VNs of
    // 3 x 20 cpu and 2 x 40 Mbit/s, so commits race for the last capacity.
    let h = Harness::start(dir.path(), |c| {
        c.links = vn_controller::core::substrate::LinkSource::FullMesh {
            bandwidth_mbps: 300,
        };
    })
    .await;
    let _agents = h.agents(5, 100, 100_000, Behaviour::Ready).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut c = h.vns().await;
        tasks.push(tokio::spawn(async move {
            let mut spec = chain(&format!("vn{i}"), 20, 40);
            spec.encapsulation = if i % 2 == 0 {
                pb::Encapsulation::Vlan as i32
            } else {
                pb::Encapsulation::Vxlan as i32
            };
            c.create(req("red", create(spec))).await
        }));
    }
    let mut accepted = Vec::new();
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(vn) => accepted.push(vn.into_inner()),
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                rejected += 1;
            }
        }
    }
    assert!(
        !accepted.is_empty() && rejected > 0,
        "{} accepted",
        accepted.len()
    );

    // Recompute the load from the placements and check it against the capacities.
    let mut s = h.substrate().await;
    let hosts = s
        .list_hosts(admin(pb::ListHostsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let links = s
        .list_links(admin(pb::ListLinksRequest {}))
        .await
        .unwrap()
        .into_inner()
        .links;
    let mut cpu: BTreeMap<String, u64> = BTreeMap::new();
    let mut bw: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut vnis = BTreeSet::new();
    let mut vlans = BTreeSet::new();
    let mut macs = BTreeSet::new();
    for vn in &accepted {
        for n in &vn.nodes {
            *cpu.entry(n.host.clone()).or_default() += 20;
        }
        for l in &vn.links {
            for hop in &l.hops {
                let key = if hop.from < hop.to {
                    (hop.from.clone(), hop.to.clone())
                } else {
                    (hop.to.clone(), hop.from.clone())
                };
                *bw.entry(key).or_default() += l.bandwidth_mbps;
                if hop.vni != 0 {
                    assert!(vnis.insert(hop.vni), "VNI {} handed out twice", hop.vni);
                }
                if hop.vlan_id != 0 {
                    // one segment (the full mesh): VLAN IDs unique across it
                    assert!(vlans.insert(hop.vlan_id), "VLAN {} twice", hop.vlan_id);
                }
            }
            for m in &l.macs {
                assert!(macs.insert(m.clone()), "MAC {m} twice");
            }
        }
    }
    assert!(!vnis.is_empty() && !vlans.is_empty());
    for host in &hosts {
        let used = cpu.get(&host.id).copied().unwrap_or(0);
        let cap = host.capacity.unwrap().cpu;
        assert!(
            used <= cap,
            "host {} oversubscribed: {used} > {cap}",
            host.id
        );
        assert_eq!(host.residual.unwrap().cpu, cap - used, "host {}", host.id);
    }
    for l in &links {
        let key = if l.a < l.b {
            (l.a.clone(), l.b.clone())
        } else {
            (l.b.clone(), l.a.clone())
        };
        let used = bw.get(&key).copied().unwrap_or(0);
        assert!(used <= l.bandwidth_mbps, "link {} oversubscribed", l.id);
        assert_eq!(l.residual_mbps, l.bandwidth_mbps - used, "link {}", l.id);
    }
    // Rejected requests left no trace.
    let list = h
        .vns()
        .await
        .list(req("red", pb::ListVnsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.vns.len(), accepted.len());
    h.stop().await;
}
