//! Identifier allocators: VNIs (global, 24 bit), VLAN IDs (1..=4094 per substrate segment), MAC
//! addresses (locally administered) and the VN counter that names VNs, nodes and links.
//!
//! Allocation is next-fit from a cursor: a released identifier is handed out again only after
//! the cursor went once around the whole space, so an agent still tearing down an old VN never
//! meets its identifier reused at once. The held sets are not persisted on their own: they are
//! rebuilt from the held VNs (one source of truth); the cursors are persisted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub const VNI_MIN: u64 = 1;
pub const VNI_MAX: u64 = (1 << 24) - 1;
pub const VLAN_MIN: u64 = 1;
pub const VLAN_MAX: u64 = 4094;
pub const MAC_MAX: u64 = (1 << 24) - 1;
/// First three bytes of every MAC the controller hands out: locally administered, unicast.
pub const MAC_PREFIX: [u8; 3] = [0x02, 0x76, 0x6e];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no free {what} left")]
    Exhausted { what: String },
    #[error("{what} {value} is held twice")]
    Collision { what: String, value: u64 },
}

/// A pool of integer identifiers in `lo..=hi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPool {
    what: String,
    lo: u64,
    hi: u64,
    next: u64,
    held: BTreeSet<u64>,
}

impl IdPool {
    pub fn new(what: &str, lo: u64, hi: u64) -> Self {
        IdPool {
            what: what.to_string(),
            lo,
            hi,
            next: lo,
            held: BTreeSet::new(),
        }
    }

    pub fn cursor(&self) -> u64 {
        self.next
    }

    pub fn set_cursor(&mut self, c: u64) {
        self.next = c.clamp(self.lo, self.hi);
    }

    pub fn held(&self) -> &BTreeSet<u64> {
        &self.held
    }

    fn first_free_from(&self, start: u64, end: u64) -> Option<u64> {
        let mut candidate = start;
        for &h in self.held.range(start..=end) {
            if h != candidate {
                break;
            }
            candidate += 1;
        }
        (candidate <= end).then_some(candidate)
    }

    pub fn allocate(&mut self) -> Result<u64, AllocError> {
        let v = self
            .first_free_from(self.next, self.hi)
            .or_else(|| self.first_free_from(self.lo, self.hi))
            .ok_or_else(|| AllocError::Exhausted {
                what: self.what.clone(),
            })?;
        self.held.insert(v);
        self.next = if v == self.hi { self.lo } else { v + 1 };
        Ok(v)
    }

    /// Marks `v` held (restoring from the store); a second holder is a collision.
    pub fn reserve(&mut self, v: u64) -> Result<(), AllocError> {
        if v < self.lo || v > self.hi || !self.held.insert(v) {
            return Err(AllocError::Collision {
                what: self.what.clone(),
                value: v,
            });
        }
        Ok(())
    }

    pub fn release(&mut self, v: u64) {
        self.held.remove(&v);
    }
}

/// Persisted cursors of every allocator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    pub vn_counter: u64,
    pub vni: u64,
    pub mac: u64,
    pub vlan: BTreeMap<String, u64>,
}

/// Every allocator of the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocators {
    /// Number of VNs ever accepted: the next VN id is derived from it, never reused.
    pub vn_counter: u64,
    pub vni: IdPool,
    pub mac: IdPool,
    pub vlan: BTreeMap<String, IdPool>,
}

impl Default for Allocators {
    fn default() -> Self {
        Allocators {
            vn_counter: 0,
            vni: IdPool::new("VNI", VNI_MIN, VNI_MAX),
            mac: IdPool::new("MAC address", 1, MAC_MAX),
            vlan: BTreeMap::new(),
        }
    }
}

impl Allocators {
    pub fn from_cursors(c: &Cursors) -> Self {
        let mut a = Allocators {
            vn_counter: c.vn_counter,
            ..Allocators::default()
        };
        a.vni.set_cursor(c.vni);
        a.mac.set_cursor(c.mac);
        for (seg, cur) in &c.vlan {
            a.vlan_pool(seg).set_cursor(*cur);
        }
        a
    }

    /// Puts the cursors back to `c` (undoing a failed allocation whose identifiers were
    /// released); pools created since and still empty disappear.
    pub fn rewind(&mut self, c: &Cursors) {
        self.vn_counter = c.vn_counter;
        self.vni.set_cursor(c.vni);
        self.mac.set_cursor(c.mac);
        self.vlan
            .retain(|seg, pool| c.vlan.contains_key(seg) || !pool.held().is_empty());
        for (seg, cur) in &c.vlan {
            self.vlan_pool(seg).set_cursor(*cur);
        }
    }

    pub fn cursors(&self) -> Cursors {
        Cursors {
            vn_counter: self.vn_counter,
            vni: self.vni.cursor(),
            mac: self.mac.cursor(),
            vlan: self
                .vlan
                .iter()
                .map(|(s, p)| (s.clone(), p.cursor()))
                .collect(),
        }
    }

    pub fn vlan_pool(&mut self, segment: &str) -> &mut IdPool {
        self.vlan.entry(segment.to_string()).or_insert_with(|| {
            IdPool::new(&format!("VLAN ID in segment {segment}"), VLAN_MIN, VLAN_MAX)
        })
    }

    /// A fresh VN id: `v` and the counter in base 36 (at most 6 characters).
    pub fn next_vn_id(&mut self) -> String {
        self.vn_counter += 1;
        format!("v{}", base36(self.vn_counter))
    }
}

/// `n` in base 36 with digits `0-9a-z`.
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

/// Node id of node `index` of VN `vn_id` (the index is decimal, so the last `n` splits it).
pub fn node_id(vn_id: &str, index: usize) -> String {
    format!("{vn_id}n{index}")
}

/// Link id of link `index` of VN `vn_id`.
pub fn link_id(vn_id: &str, index: usize) -> String {
    format!("{vn_id}l{index}")
}

/// The MAC address for allocator value `v`.
pub fn mac_string(v: u64) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        MAC_PREFIX[0],
        MAC_PREFIX[1],
        MAC_PREFIX[2],
        (v >> 16) & 0xff,
        (v >> 8) & 0xff,
        v & 0xff
    )
}

/// Inverse of [`mac_string`] for MACs of this controller.
pub fn mac_value(mac: &str) -> Option<u64> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    if bytes.len() != 6 || bytes[..3] != MAC_PREFIX {
        return None;
    }
    Some((u64::from(bytes[3]) << 16) | (u64::from(bytes[4]) << 8) | u64::from(bytes[5]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_fit_does_not_reuse_at_once() {
        let mut p = IdPool::new("x", 1, 4);
        assert_eq!(p.allocate().unwrap(), 1);
        assert_eq!(p.allocate().unwrap(), 2);
        p.release(1);
        assert_eq!(p.allocate().unwrap(), 3);
        assert_eq!(p.allocate().unwrap(), 4);
        // wraps around and finds the released 1
        assert_eq!(p.allocate().unwrap(), 1);
        assert_eq!(
            p.allocate(),
            Err(AllocError::Exhausted { what: "x".into() })
        );
        p.release(3);
        assert_eq!(p.allocate().unwrap(), 3);
    }

    #[test]
    fn reserve_detects_collisions_and_range() {
        let mut p = IdPool::new("VNI", 1, 10);
        p.reserve(5).unwrap();
        assert!(matches!(
            p.reserve(5),
            Err(AllocError::Collision { value: 5, .. })
        ));
        assert!(p.reserve(0).is_err());
        assert!(p.reserve(11).is_err());
        p.set_cursor(5);
        assert_eq!(p.allocate().unwrap(), 6);
    }

    #[test]
    fn cursors_round_trip() {
        let mut a = Allocators::default();
        a.vni.allocate().unwrap();
        a.vlan_pool("s1").allocate().unwrap();
        a.next_vn_id();
        let c = a.cursors();
        let b = Allocators::from_cursors(&c);
        assert_eq!(b.cursors(), c);
    }

    #[test]
    fn ids_and_macs() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        let mut a = Allocators::default();
        assert_eq!(a.next_vn_id(), "v1");
        assert_eq!(node_id("v1", 12), "v1n12");
        assert_eq!(link_id("v1", 3), "v1l3");
        assert_eq!(mac_string(0x010203), "02:76:6e:01:02:03");
        assert_eq!(mac_value("02:76:6e:01:02:03"), Some(0x010203));
        assert_eq!(mac_value("02:00:6e:01:02:03"), None);
        // the longest ids fit the proto limits
        let vn = format!("v{}", base36(36u64.pow(5) - 1));
        assert!(vn.len() <= 8);
        assert!(node_id(&vn, 255).len() <= 12);
        assert!(link_id(&vn, 998).len() <= 10);
    }
}
