//! Reads the host through [`Kernel`] into an [`Observed`], deciding ownership on the way.
//!
//! Ownership comes from the agent's ledger, which no tenant can write: a namespace is ours when
//! the ledger records it with the inode it has now (or records the open intent to create it and
//! its loopback carries our tag, which is set before the namespace is published: the crash window
//! between creating and confirming). The loopback tag of a recorded namespace only says what it
//! was built from; a tag that a tenant rewrote inside its node, or one that names another object,
//! reads as "built from something else", so the planner rebuilds or deletes the namespace, and
//! never leaks it.
//!
//! What cannot be read (a stray file or directory under our prefix, a namespace that vanished
//! half-way) is skipped and reported as a warning; it never stops the observation of the rest.

use std::collections::BTreeSet;

use crate::host::kernel::{Kernel, KernelError, NsEntry, NsSnapshot};
use crate::reconcile::naming::{Naming, NsRole, NsTag};
use crate::reconcile::observed::{NsObs, Observed};
use crate::reconcile::spec::VnId;
use crate::reconcile::state::Ledger;

/// What observation found, plus ledger entries whose namespace no longer exists (a rebooted host,
/// or a deletion that finished after a crash).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub observed: Observed,
    pub stale_records: Vec<String>,
    /// What could not be read and was skipped (the agent reports these to the controller).
    pub warnings: Vec<String>,
}

/// The stand-in tag of a namespace of ours whose tag is missing or not its own: matches nothing
/// desired, so the planner deletes it (and builds it anew where it is wanted).
fn unknown_tag() -> NsTag {
    NsTag {
        vn: String::new(),
        role: NsRole::Transit,
        fingerprint: "unknown".into(),
    }
}

/// The tag on a namespace's loopback, if it is ours and names this very namespace.
fn own_tag(naming: &Naming, name: &str, alias: Option<&str>) -> Option<NsTag> {
    let tag = naming.parse_ns_tag(alias?)?;
    let expected = match &tag.role {
        NsRole::Node(node) => naming.node_ns(node),
        NsRole::Transit => naming.transit_ns(&VnId::parse(&tag.vn).ok()?),
    };
    (expected == name).then_some(tag)
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
        let recorded = records.get(&entry.name);
        let snap: NsSnapshot = match snap {
            Ok(s) => s,
            // Deleted between listing and reading: it simply is not there.
            Err(e) if e.is_not_found() => continue,
            // Our open intent, but not a usable namespace (a crash between creating the file and
            // mounting the namespace on it): ours to remove.
            Err(e) if recorded == Some(&None) => {
                tracing::warn!(ns = %entry.name, error = %e, "half-created namespace of ours");
                out.observed
                    .namespaces
                    .insert(entry.name.clone(), empty_ns(unknown_tag()));
                continue;
            }
            // Not ours, or not a namespace at all (a stray file, a directory): skipped, never
            // built over, reported.
            Err(e) => {
                let w = format!(
                    "{} under this agent's prefix cannot be read and is skipped: {e}",
                    entry.name
                );
                tracing::warn!(ns = %entry.name, error = %e, "unreadable namespace skipped");
                out.warnings.push(w);
                out.observed.foreign.insert(entry.name.clone());
                continue;
            }
        };
        let tag = own_tag(naming, &entry.name, snap.lo_alias.as_deref());
        let tag = match (recorded, tag) {
            // Recorded with this inode: ours, whatever its loopback now says.
            (Some(Some(ino)), tag) if *ino == entry.inode => tag.unwrap_or_else(|| {
                tracing::warn!(ns = %entry.name, "namespace of ours lost its tag: rebuilt or removed");
                unknown_tag()
            }),
            // An open intent: ours only if it carries our tag (set before it was published).
            (Some(None), Some(tag)) => tag,
            (_, tag) => {
                if tag.is_some() {
                    tracing::warn!(
                        ns = %entry.name,
                        "namespace carries this agent's tag but is not in its ledger; leaving it alone"
                    );
                }
                out.observed.foreign.insert(entry.name.clone());
                continue;
            }
        };
        let mut ns = empty_ns(tag);
        ns.links = snap
            .links
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        ns.routes = snap.routes;
        out.observed.namespaces.insert(entry.name.clone(), ns);
    }
    out.observed.host_links = kernel.host_links(&format!("vnet:{}:", naming.host_id))?;
    Ok(out)
}

fn empty_ns(tag: NsTag) -> NsObs {
    NsObs {
        tag,
        links: Default::default(),
        routes: vec![],
    }
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
