//! Failure recovery and maintenance decisions: which VNs a fault touches, which of them are
//! re-embedded (and what they must avoid) and which wait, and the record of a re-embedding
//! (what moved, why, how long it took). Pure: the runtime detects faults (a host's session lost
//! beyond its grace period, a substrate link its agents' probes find down, an operator's drain),
//! re-embeds with the same machinery as a live update ([`crate::replan`]) and passes the time in.

use std::net::IpAddr;

use crate::error::CoreError;
use crate::index::{Change, Event, EventKind, Index};
use crate::model::RecoveryPolicy;
use crate::record::{HostPhase, VnRecord, VnStatus};
use crate::replan::Avoid;
use crate::substrate::HostInfo;

/// What happened under some VNs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// A host's agent stayed away beyond the grace period.
    HostLost(String),
    /// A substrate link's probes found it down (debounced).
    LinkDown(String),
    /// An operator drains a host (planned: every VN moves, whatever its recovery policy).
    Drain(String),
}

impl Fault {
    /// "host h3 lost", "link h1-h2 down", "host h3 drained".
    pub fn cause(&self) -> String {
        match self {
            Fault::HostLost(h) => format!("host {h} lost"),
            Fault::LinkDown(l) => format!("link {l} down"),
            Fault::Drain(h) => format!("host {h} drained"),
        }
    }

    /// What a re-embedding after this fault must move off.
    pub fn avoid(&self) -> Avoid {
        let mut a = Avoid::default();
        match self {
            Fault::HostLost(h) | Fault::Drain(h) => {
                a.hosts.insert(h.clone());
            }
            Fault::LinkDown(l) => {
                a.links.insert(l.clone());
            }
        }
        a
    }

    /// The host of a host fault.
    pub fn host(&self) -> Option<&str> {
        match self {
            Fault::HostLost(h) | Fault::Drain(h) => Some(h),
            Fault::LinkDown(_) => None,
        }
    }
}

/// What to do with one VN a fault touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Re-embed it, keeping what the fault does not touch.
    Reembed,
    /// Leave it (degraded) until the host or link returns; the reason, for events.
    Wait(String),
}

/// Whether `rec` uses `fault`'s host (a node or a transit) or link (a hop).
pub fn touches(rec: &VnRecord, fault: &Fault) -> bool {
    if !rec.status.holds_resources() {
        return false;
    }
    match fault {
        Fault::HostLost(h) | Fault::Drain(h) => rec.placement.hosts().contains(h),
        Fault::LinkDown(l) => rec
            .placement
            .links
            .iter()
            .any(|pl| pl.hops.iter().any(|hop| &hop.link == l)),
    }
}

/// The decision for one VN touched by `fault`; `has_children`: other VNs are embedded in it.
pub fn decide(rec: &VnRecord, fault: &Fault, has_children: bool) -> Decision {
    if rec.nesting.is_some() {
        return Decision::Wait("a child VN is not re-embedded on its own".into());
    }
    if has_children {
        return Decision::Wait("it carries child VNs, which would lose their nodes".into());
    }
    let planned = matches!(fault, Fault::Drain(_));
    if !planned && rec.req.recovery == RecoveryPolicy::Wait {
        return Decision::Wait("its recovery policy is wait".into());
    }
    if let Some(h) = fault.host() {
        let pinned: Vec<&str> = rec
            .req
            .nodes
            .iter()
            .filter(|n| n.pin.as_deref() == Some(h))
            .map(|n| n.name.as_str())
            .collect();
        if !pinned.is_empty() {
            return Decision::Wait(format!(
                "node(s) {} pinned to {h} wait for it",
                pinned.join(", ")
            ));
        }
    }
    Decision::Reembed
}

/// One VN's fate after a fault, for the runtime and the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affected {
    pub vn_id: String,
    pub label: String,
    pub decision: Decision,
}

impl Index {
    /// Every VN `fault` touches, with what to do about it. VNs that hold nothing are skipped.
    /// A dead link under a VN with a node on a host whose agent is away waits: that host's
    /// grace period decides whether the node moves (its links die with its session).
    pub fn affected(&self, fault: &Fault) -> Vec<Affected> {
        self.records()
            .filter(|r| touches(r, fault))
            .map(|r| {
                let away = r
                    .placement
                    .nodes
                    .iter()
                    .map(|n| &n.host)
                    .find(|h| !self.registry.is_connected(h));
                let decision = match (fault, away) {
                    (Fault::LinkDown(_), Some(h)) => Decision::Wait(format!(
                        "host {h} is away: its grace period decides whether its nodes move"
                    )),
                    _ => decide(r, fault, self.nests().children(&r.vn_id).next().is_some()),
                };
                Affected {
                    vn_id: r.vn_id.clone(),
                    label: r.label(),
                    decision,
                }
            })
            .collect()
    }

    /// Holds the VNs that wait for `fault` to end: a READY one becomes DEGRADED with the
    /// reason (`link h1-h2 down: not re-embedded: its recovery policy is wait`), and each gets an
    /// event saying why it stays.
    pub fn hold(&mut self, fault: &Fault, affected: &[Affected]) -> Change {
        let mut change = Change::default();
        for a in affected {
            let Decision::Wait(why) = &a.decision else {
                continue;
            };
            let reason = format!("{}: not re-embedded: {why}", fault.cause());
            self.degrade_told(
                &a.vn_id,
                &[VnStatus::Ready, VnStatus::Degraded],
                reason,
                fault.host().unwrap_or_default(),
                &mut change,
            );
        }
        change
    }

    /// [`Index::degrade`] of `vn_id` from the statuses `from`, told by an event naming `host`
    /// whether or not its status changed.
    fn degrade_told(
        &mut self,
        vn_id: &str,
        from: &[VnStatus],
        reason: String,
        host: &str,
        change: &mut Change,
    ) {
        let Some(rec) = self.vns.get_mut(vn_id) else {
            return;
        };
        Self::degrade(rec, from, &reason, change);
        change
            .events
            .push(Event::of(rec, EventKind::Degraded, host, reason));
    }

    /// Notes on the record of `vn_id` (just re-embedded by `change`) the recovery from `fault`
    /// (at `fault_unix_ms`): what moved and when.
    pub fn note_recovery(
        &mut self,
        vn_id: &str,
        fault: &Fault,
        moved: Vec<String>,
        fault_unix_ms: u64,
        now_ms: u64,
        change: &mut Change,
    ) {
        let Some(rec) = self.vns.get_mut(vn_id) else {
            return;
        };
        rec.record_recovery(fault.cause(), moved, fault_unix_ms, now_ms);
        if rec.status == VnStatus::Ready {
            // Nothing to wait for: recovered at once.
            rec.finish_recovery(now_ms);
        }
        change.upserts.insert(vn_id.to_string(), rec.clone());
        change.status_changed = true;
    }

    /// A VN that could not be re-embedded stays DEGRADED, saying why.
    pub fn degrade_vn(&mut self, vn_id: &str, reason: &str) -> Change {
        let mut change = Change::default();
        let from = [VnStatus::Ready, VnStatus::Degraded, VnStatus::Updating];
        self.degrade_told(vn_id, &from, reason.to_string(), "", &mut change);
        change
    }

    /// The substrate link `link` goes down or comes back (as the runtime debounced the probes).
    /// Down: nothing new is routed over it (the runtime then re-embeds what crosses it). Up: the
    /// VNs held for it ([`Index::hold`]) are READY again when all their hosts are.
    pub fn set_link_down(&mut self, link: &str, down: bool) -> Change {
        let mut change = Change::default();
        if !self.registry.set_link_down(link, down) || down {
            return change;
        }
        let cause = Fault::LinkDown(link.to_string()).cause();
        for rec in self.vns.values_mut() {
            if rec.status == VnStatus::Degraded
                && rec.reason.starts_with(&format!("{cause}:"))
                && rec.hosts.values().all(|p| p.phase == HostPhase::Ready)
            {
                rec.status = VnStatus::Ready;
                rec.reason.clear();
                change.status_changed = true;
                change.events.push(Event::of(
                    rec,
                    EventKind::Ready,
                    "",
                    format!("link {link} is up again"),
                ));
                change.upserts.insert(rec.vn_id.clone(), rec.clone());
            }
        }
        change
    }

    /// Cordons or uncordons `host`; returns its record to persist.
    pub fn cordon(&mut self, host: &str, cordoned: bool) -> Result<HostInfo, CoreError> {
        self.registry
            .set_cordoned(host, cordoned)
            .cloned()
            .ok_or_else(|| CoreError::NotFound {
                name: format!("host {host}"),
            })
    }

    /// The substrate links of `host` to probe: (link, neighbour, own address, neighbour's).
    pub fn probe_neighbors(&self, host: &str) -> Vec<(String, String, IpAddr, IpAddr)> {
        self.registry
            .links()
            .iter()
            .filter_map(|l| {
                let other = if l.a == host {
                    &l.b
                } else if l.b == host {
                    &l.a
                } else {
                    return None;
                };
                let local = self.registry.address_on(l, host)?;
                let remote = self.registry.address_on(l, other)?;
                Some((l.id.clone(), other.clone(), local, remote))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::model::{Encap, NodeReq, VnReq};
    use crate::record::{Hop, PlacedLink, PlacedNode, Placement};

    fn rec(pin: Option<&str>, recovery: RecoveryPolicy) -> VnRecord {
        let node = |n: &str, pin: Option<&str>| NodeReq {
            pin: pin.map(Into::into),
            ..fixtures::node(n, 1, 1)
        };
        let placed = |h: &str, id: &str| PlacedNode {
            host: h.into(),
            node_id: id.into(),
            parent_node: None,
            context: None,
        };
        let hop = |link: &str, from: &str, to: &str| Hop {
            link: link.into(),
            from: from.into(),
            to: to.into(),
            encap: Encap::Vxlan,
            vni: Some(1),
            vlan_id: None,
            segment: String::new(),
            udp_port: 4789,
            from_address: "10.0.0.1".parse().unwrap(),
            to_address: "10.0.0.2".parse().unwrap(),
        };
        VnRecord {
            vn_id: "v1".into(),
            req: VnReq {
                recovery,
                ..fixtures::vn_req(
                    "x",
                    vec![node("a", None), node("b", pin)],
                    vec![fixtures::link(0, 1, 1)],
                )
            },
            spec_pb: vec![],
            status: VnStatus::Ready,
            reason: String::new(),
            created_unix_ms: 0,
            placement: Placement {
                nodes: vec![placed("h1", "n1"), placed("h3", "n2")],
                links: vec![PlacedLink {
                    link_id: "l1".into(),
                    path: vec!["h1".into(), "h2".into(), "h3".into()],
                    hops: vec![hop("h1-h2", "h1", "h2"), hop("h2-h3", "h2", "h3")],
                    mtu: 1450,
                    ifnames: ["e0".into(), "e0".into()],
                    macs: [1, 2],
                    hosts: vec![],
                    contexts: vec![],
                    segment_ids: vec![],
                    carrier: None,
                    path_delay_us: 0,
                }],
                algorithm: "test".into(),
                revenue: 0.0,
                cost: 0.0,
            },
            hosts: Default::default(),
            nesting: None,
            generation: 1,
            recoveries: vec![],
        }
    }

    #[test]
    fn a_fault_touches_nodes_transits_and_hops() {
        let r = rec(None, RecoveryPolicy::Reembed);
        assert!(touches(&r, &Fault::HostLost("h3".into())));
        // h2 only forwards the link: still touched.
        assert!(touches(&r, &Fault::HostLost("h2".into())));
        assert!(!touches(&r, &Fault::HostLost("h4".into())));
        assert!(touches(&r, &Fault::LinkDown("h2-h3".into())));
        assert!(!touches(&r, &Fault::LinkDown("h1-h3".into())));
        let mut failed = r.clone();
        failed.status = VnStatus::Failed;
        assert!(!touches(&failed, &Fault::HostLost("h3".into())));
    }

    #[test]
    fn policy_wait_and_pinned_nodes_wait_a_drain_moves_all_but_pins() {
        let lost = Fault::HostLost("h3".into());
        let down = Fault::LinkDown("h2-h3".into());
        let drain = Fault::Drain("h3".into());
        let r = rec(None, RecoveryPolicy::Reembed);
        assert_eq!(decide(&r, &lost, false), Decision::Reembed);
        assert_eq!(decide(&r, &down, false), Decision::Reembed);
        let w = rec(None, RecoveryPolicy::Wait);
        assert_eq!(
            decide(&w, &lost, false),
            Decision::Wait("its recovery policy is wait".into())
        );
        assert_eq!(decide(&w, &down, false), decide(&w, &lost, false));
        // A drain is planned: the policy does not hold it back.
        assert_eq!(decide(&w, &drain, false), Decision::Reembed);
        let p = rec(Some("h3"), RecoveryPolicy::Reembed);
        let Decision::Wait(why) = decide(&p, &lost, false) else {
            panic!("a pinned node must wait")
        };
        assert_eq!(why, "node(s) b pinned to h3 wait for it");
        assert!(matches!(decide(&p, &drain, false), Decision::Wait(_)));
        // A pin elsewhere does not hold a link's reroute back.
        assert_eq!(decide(&p, &down, false), Decision::Reembed);
        assert!(matches!(decide(&r, &lost, true), Decision::Wait(_)));
    }

    #[test]
    fn a_recovery_is_timed_from_the_fault_to_ready() {
        let mut r = rec(None, RecoveryPolicy::Reembed);
        let moved = vec!["node b h3 -> h4".to_string()];
        r.record_recovery(
            Fault::HostLost("h3".into()).cause(),
            moved.clone(),
            1_000,
            11_250,
        );
        assert_eq!(r.recoveries.len(), 1);
        assert_eq!(r.recoveries[0].moved, moved);
        assert_eq!(r.recoveries[0].reembedded_unix_ms, 11_250);
        assert_eq!(
            r.finish_recovery(13_000),
            "recovered from host h3 lost in 12000 ms (fault to READY)"
        );
        assert_eq!(r.recoveries[0].ready_unix_ms, Some(13_000));
        // Closed: a later READY (after a disconnect) says nothing about it.
        assert_eq!(r.finish_recovery(20_000), "");
        for i in 0..20 {
            r.record_recovery(Fault::LinkDown("h1-h2".into()).cause(), vec![], i, i);
        }
        assert_eq!(r.recoveries.len(), crate::record::MAX_RECOVERIES);
    }

    #[test]
    fn cordoned_hosts_and_down_links_leave_the_view_held_vns_return_with_the_link() {
        use crate::substrate::{LinkSource, Registry};
        let mut ix = Index::new(
            crate::index::IndexConfig::default(),
            Registry::new(
                LinkSource::FullMesh {
                    bandwidth_mbps: 100,
                },
                &[],
            ),
        );
        for (h, n) in [("h1", 1), ("h2", 2), ("h3", 3)] {
            ix.attach(crate::fixtures::host(h, n, 9000));
        }
        let r = rec(None, RecoveryPolicy::Wait).req;
        let view = |ix: &Index| ix.view(&ix.frame(&r).unwrap());
        assert_eq!(view(&ix).hosts.len(), 3);
        // A cordon survives the agent's next hello (which never sets it).
        ix.cordon("h2", true).unwrap();
        ix.attach(crate::fixtures::host("h2", 2, 9000));
        let ids: Vec<String> = view(&ix).hosts.iter().map(|h| h.id.clone()).collect();
        assert_eq!(ids, ["h1", "h3"]);
        assert!(matches!(
            ix.cordon("h9", true),
            Err(CoreError::NotFound { .. })
        ));
        ix.cordon("h2", false).unwrap();
        assert_eq!(view(&ix).hosts.len(), 3);

        // A link down is not offered; its neighbours are probed from both ends.
        assert!(ix.set_link_down("h1-h3", true).is_empty());
        let v = view(&ix);
        let at = v.links.iter().position(|l| l.id == "h1-h3").unwrap();
        assert_eq!(v.free[at], None);
        let n: Vec<String> = ix.probe_neighbors("h1").into_iter().map(|x| x.0).collect();
        assert_eq!(n, ["h1-h2", "h1-h3"]);

        // A VN held for the link is DEGRADED saying why, and READY again when it is up.
        let mut held = rec(None, RecoveryPolicy::Wait);
        held.placement.links[0].hops[0].link = "h1-h3".into();
        held.hosts.insert(
            "h1".into(),
            crate::record::HostProgress {
                since_generation: 1,
                phase: HostPhase::Ready,
            },
        );
        ix.vns.insert(held.vn_id.clone(), held);
        let fault = Fault::LinkDown("h1-h3".into());
        let affected = ix.affected(&fault);
        assert_eq!(affected.len(), 1);
        let c = ix.hold(&fault, &affected);
        assert_eq!(c.events.len(), 1);
        let r1 = ix.record("v1").unwrap();
        assert_eq!(r1.status, VnStatus::Degraded);
        assert_eq!(
            r1.reason,
            "link h1-h3 down: not re-embedded: its recovery policy is wait"
        );
        let c = ix.set_link_down("h1-h3", false);
        assert_eq!(c.events[0].message, "link h1-h3 is up again");
        assert_eq!(ix.record("v1").unwrap().status, VnStatus::Ready);
    }
}
