//! Reads the host through [`Kernel`] into an [`Observed`], deciding ownership on the way.

use std::collections::BTreeSet;

use crate::host::kernel::{Kernel, KernelError, NsEntry, NsSnapshot};
use crate::reconcile::naming::Naming;
use crate::reconcile::observed::{NsObs, Observed};
use crate::reconcile::state::Ledger;

/// What observation found, plus ledger entries whose namespace no longer exists (a rebooted host,
/// or a deletion that finished after a crash).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub observed: Observed,
    pub stale_records: Vec<String>,
}

/// Observes every namespace under this agent's prefix, in parallel on `workers` threads.
pub fn observe<K: Kernel + ?Sized>(
    kernel: &K,
    naming: &Naming,
    ledger: &dyn Ledger,
    guests: BTreeSet<String>,
    workers: usize,
) -> Result<Observation, KernelError> {
    let entries = kernel.list_netns(&naming.ns_prefix())?;
    let records = ledger.namespaces();
    let snaps = parallel_map(&entries, workers, |e: &NsEntry| {
        (e.clone(), kernel.ns_snapshot(&e.name))
    });
    let mut out = Observation::default();
    out.observed.guests = guests;
    let present: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    for name in records.keys() {
        if !present.contains(name.as_str()) {
            out.stale_records.push(name.clone());
        }
    }
    for (entry, snap) in snaps {
        let snap: NsSnapshot = match snap {
            Ok(s) => s,
            // Deleted between listing and reading: it simply is not there.
            Err(e) if e.is_not_found() => continue,
            // Our open intent, but not a usable namespace (a crash between creating the file and
            // mounting the namespace on it): ours to remove. Listed with a tag that matches
            // nothing, so the planner deletes it and builds it anew.
            Err(e) if records.get(&entry.name) == Some(&None) => {
                tracing::warn!(ns = %entry.name, error = %e, "half-created namespace of ours");
                out.observed.namespaces.insert(
                    entry.name.clone(),
                    NsObs {
                        tag: crate::reconcile::naming::NsTag {
                            vn: String::new(),
                            role: crate::reconcile::naming::NsRole::Transit,
                            fingerprint: "broken".into(),
                        },
                        links: Default::default(),
                        routes: vec![],
                    },
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        let tag = snap
            .lo_alias
            .as_deref()
            .and_then(|a| naming.parse_ns_tag(a));
        let recorded = match records.get(&entry.name) {
            Some(Some(ino)) => *ino == entry.inode,
            Some(None) => true,
            None => false,
        };
        match tag {
            Some(tag) if recorded => {
                out.observed.namespaces.insert(
                    entry.name.clone(),
                    NsObs {
                        tag,
                        links: snap
                            .links
                            .into_iter()
                            .map(|l| (l.name.clone(), l))
                            .collect(),
                        routes: snap.routes,
                    },
                );
            }
            _ => {
                if tag.is_some() {
                    tracing::warn!(
                        ns = %entry.name,
                        "namespace carries this agent's tag but is not in its ledger; leaving it alone"
                    );
                }
                out.observed.foreign.insert(entry.name.clone());
            }
        }
    }
    out.observed.host_links = kernel.host_links(&format!("vnet:{}:", naming.host_id))?;
    Ok(out)
}

/// Maps `f` over `items` on up to `workers` threads, keeping order.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let workers = workers.max(1).min(items.len().max(1));
    if workers == 1 {
        return items.iter().map(&f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let r = f(&items[i]);
                    slots.lock().expect("results lock")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}
