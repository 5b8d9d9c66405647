//! Several controller replicas, one of which leads: the list an agent or a client was given and
//! the one it talks to now. After a failure it moves to the leader a follower named
//! ([`crate::LEADER_METADATA_KEY`]) when that is one of the list, else to the next one.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Controller addresses (`http(s)://host:port`), and which one is current.
#[derive(Debug)]
pub struct Replicas {
    addrs: Vec<String>,
    current: AtomicUsize,
}

impl Replicas {
    /// From a comma-separated list (one that names no address is kept whole, so that the
    /// connection fails naming it).
    pub fn parse(list: &str) -> Self {
        let mut addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            addrs.push(list.to_owned());
        }
        Replicas {
            addrs,
            current: AtomicUsize::new(0),
        }
    }

    /// Whether there is more than one address to move between.
    pub fn several(&self) -> bool {
        self.addrs.len() > 1
    }

    /// The address in use.
    pub fn current(&self) -> &str {
        &self.addrs[self.current.load(Ordering::SeqCst) % self.addrs.len()]
    }

    /// Moves on after a failure of the current address: to the leader `hint` names
    /// (`host:port`) when it is in the list (returns true), else to the next address.
    pub fn after_failure(&self, hint: Option<&str>) -> bool {
        if let Some(h) = hint
            && let Some(i) = self.addrs.iter().position(|a| authority(a) == h)
        {
            self.current.store(i, Ordering::SeqCst);
            return true;
        }
        let i = self.current.load(Ordering::SeqCst);
        self.current
            .store((i + 1) % self.addrs.len(), Ordering::SeqCst);
        false
    }
}

/// `host:port` of a URL (`scheme://host:port/...`).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// The leader a follower named in its refusal, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    status
        .metadata()
        .get(crate::LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_hint_or_the_next() {
        let r = Replicas::parse(" https://a:1, https://b:2 ,,http://c:3/");
        assert!(r.several());
        assert_eq!(r.current(), "https://a:1");
        assert!(!r.after_failure(None));
        assert_eq!(r.current(), "https://b:2");
        assert!(r.after_failure(Some("c:3")));
        assert_eq!(r.current(), "http://c:3/");
        // A hint outside the list: the next one (wrapping).
        assert!(!r.after_failure(Some("d:4")));
        assert_eq!(r.current(), "https://a:1");
        assert_eq!(Replicas::parse(" , ").current(), " , ");
        assert!(!Replicas::parse("https://a:1").several());
    }

    #[test]
    fn hint_only_on_unavailable() {
        let mut st = tonic::Status::unavailable("follower");
        st.metadata_mut()
            .insert(crate::LEADER_METADATA_KEY, "b:2".parse().unwrap());
        assert_eq!(leader_hint(&st).as_deref(), Some("b:2"));
        let mut other = tonic::Status::internal("x");
        other
            .metadata_mut()
            .insert(crate::LEADER_METADATA_KEY, "b:2".parse().unwrap());
        assert_eq!(leader_hint(&other), None);
    }
}
