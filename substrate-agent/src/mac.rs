//! Ethernet (MAC) addresses: one type for the whole agent, parsed once where a string comes in
//! (the controller's `NodeInterface.mac`, a guest's record on disk) and derived stably for a
//! guest NIC whose link carries none.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A unicast Ethernet address (never multicast, never all zeroes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

/// A string that is not a unicast MAC address; the message quotes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MacError(pub String);

impl Mac {
    /// Parses `aa:bb:cc:dd:ee:ff`; rejects multicast and all-zero addresses.
    pub fn parse(s: &str) -> Result<Self, MacError> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || MacError(format!("mac {s:?} is not of the form aa:bb:cc:dd:ee:ff"));
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if b[0] & 1 == 1 {
            return Err(MacError(format!("mac {s} is a multicast address")));
        }
        if b == [0; 6] {
            return Err(MacError(format!("mac {s} is all zeroes")));
        }
        Ok(Self(b))
    }

    /// A stable, locally administered unicast address derived from `seed` (the agent's one name
    /// hash, [`crate::reconcile::naming::fnv1a64`]), for guest NICs whose link carries no MAC.
    pub fn derived(seed: &str) -> Mac {
        let b = crate::reconcile::naming::fnv1a64(seed).to_be_bytes();
        Mac([0x52, 0x56, b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mac::parse(s)
    }
}

impl TryFrom<String> for Mac {
    type Error = MacError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Mac::parse(&s)
    }
}

impl From<Mac> for String {
    fn from(m: Mac) -> String {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_addresses_are_stable_local_unicast() {
        let m = Mac::derived("n1/eth0");
        assert_eq!(m, Mac::derived("n1/eth0"));
        assert_ne!(m, Mac::derived("n1/eth1"));
        assert_eq!(m.0[0], 0x52, "locally administered, unicast");
        assert_eq!(Mac::parse(&m.to_string()), Ok(m));
    }

    #[test]
    fn serde_round_trips_and_rejects_bad_strings() {
        let m = Mac::parse("52:56:00:00:00:01").unwrap();
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, "\"52:56:00:00:00:01\"");
        assert_eq!(serde_json::from_str::<Mac>(&j).unwrap(), m);
        assert!(serde_json::from_str::<Mac>("\"01:00:00:00:00:01\"").is_err());
    }
}
