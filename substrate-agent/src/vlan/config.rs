//! The userspace VLAN datapath's configuration: a set of wires, each joining two ends.
//!
//! A TAP end is a persistent TAP device in a named namespace (the tenant's interface, or a transit
//! device); a VLAN end is an underlay device in a namespace (`None`: the datapath's own, which is
//! the agent's) plus the 802.1Q VLAN ID used on it. Frames read from one end leave on the other,
//! tagged or untagged as the end requires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything the datapath serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathConfig {
    /// Wires by id (`<vn>:<link>[:<side>]`).
    pub wires: BTreeMap<String, Wire>,
}

/// Two ends joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wire {
    pub a: WireEnd,
    pub b: WireEnd,
}

/// One end of a wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum WireEnd {
    Tap {
        netns: String,
        ifname: String,
    },
    Vlan {
        netns: Option<String>,
        dev: String,
        vlan_id: u16,
    },
}

impl DatapathConfig {
    /// Checks that no (namespace, device, VLAN ID) and no TAP is used by two wires.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen: BTreeMap<&WireEnd, &str> = BTreeMap::new();
        for (id, w) in &self.wires {
            if w.a == w.b {
                return Err(format!("wire {id}: both ends are {:?}", w.a));
            }
            for e in [&w.a, &w.b] {
                if let Some(other) = seen.insert(e, id) {
                    return Err(format!("wire {id}: {e:?} is already used by wire {other}"));
                }
            }
        }
        Ok(())
    }
}

/// Errors of the datapath control.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("vlan datapath: {0}")]
    Config(String),
    #[error("vlan datapath: {}", .0.iter().map(|(w, e)| format!("wire {w}: {e}")).collect::<Vec<_>>().join("; "))]
    Wires(BTreeMap<String, String>),
    #[error("vlan datapath: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Starts, reconfigures and stops the datapath.
pub trait DatapathControl: Send + Sync {
    /// Makes the datapath serve exactly `cfg` (an empty config stops it). `reattach`: TAP devices
    /// were recreated, so re-open them even where the config did not change.
    fn configure(&self, cfg: &DatapathConfig, reattach: bool) -> Result<(), DatapathError>;

    /// False when the datapath should be serving wires but is not running (it died): the agent
    /// then reconciles at once instead of waiting for the next resync.
    fn healthy(&self) -> bool {
        true
    }

    /// True for the BPF datapath: the planner then builds VLAN ports as veth pairs, not TAPs.
    fn bpf(&self) -> bool {
        false
    }
}

/// The datapath in use and the others, which are kept empty: switching a host between the BPF
/// and the userspace datapath tears down what the previous one served.
pub struct SelectedDatapath {
    pub active: Box<dyn DatapathControl>,
    pub others: Vec<Box<dyn DatapathControl>>,
}

impl DatapathControl for SelectedDatapath {
    fn configure(&self, cfg: &DatapathConfig, reattach: bool) -> Result<(), DatapathError> {
        for o in &self.others {
            o.configure(&DatapathConfig::default(), false)?;
        }
        self.active.configure(cfg, reattach)
    }

    fn healthy(&self) -> bool {
        self.active.healthy()
    }

    fn bpf(&self) -> bool {
        self.active.bpf()
    }
}

/// A recording stand-in for tests.
#[derive(Debug, Default)]
pub struct FakeDatapath {
    pub configs: std::sync::Mutex<Vec<(DatapathConfig, bool)>>,
}

impl DatapathControl for FakeDatapath {
    fn configure(&self, cfg: &DatapathConfig, reattach: bool) -> Result<(), DatapathError> {
        cfg.validate().map_err(DatapathError::Config)?;
        self.configs
            .lock()
            .expect("lock")
            .push((cfg.clone(), reattach));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_vlan_end_is_rejected() {
        let v = WireEnd::Vlan {
            netns: None,
            dev: "eth0".into(),
            vlan_id: 10,
        };
        let t = |n: &str| WireEnd::Tap {
            netns: n.into(),
            ifname: "eth0".into(),
        };
        let mut c = DatapathConfig::default();
        c.wires.insert(
            "a:1".into(),
            Wire {
                a: t("x"),
                b: v.clone(),
            },
        );
        assert!(c.validate().is_ok());
        c.wires.insert("a:2".into(), Wire { a: t("y"), b: v });
        assert!(
            c.validate()
                .unwrap_err()
                .contains("already used by wire a:1")
        );
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<DatapathConfig>(&json).unwrap(), c);
    }
}
