//! The agent's state directory: the ledger of what it owns and the last generation it applied.
//!
//! Ownership of a namespace is recorded as an intent (name, no inode) before the namespace is
//! created, and confirmed with its inode afterwards. A namespace is ours when the ledger names it
//! with the inode it has now; under an open intent (a crash between creating and confirming) it
//! is ours only if its loopback also carries our tag, set before it was published. A look-alike
//! made by someone else with the same name has another inode. No tenant can write here, so
//! nothing a tenant does inside its node (aliases, names, addresses) changes what is ours.
//!
//! The file is `state.json`, replaced atomically (write, fsync, rename).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Errors of the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// The host id this state belongs to.
    host_id: String,
    applied_generation: u64,
    /// Namespace name -> inode (`None`: intent, creation not confirmed).
    namespaces: BTreeMap<String, Option<u64>>,
    /// pid and start time of the userspace VLAN datapath this agent runs.
    #[serde(default)]
    datapath: Option<(u32, u64)>,
}

/// The ownership ledger.
pub trait Ledger: Send + Sync {
    /// Namespaces recorded as ours.
    fn namespaces(&self) -> BTreeMap<String, Option<u64>>;
    /// Records the intent to create these namespaces (before creating them).
    fn intend(&self, names: &[String]) -> Result<(), StateError>;
    /// Confirms created namespaces with their inodes.
    fn confirm(&self, entries: &[(String, u64)]) -> Result<(), StateError>;
    /// Forgets deleted namespaces.
    fn forget(&self, names: &[String]) -> Result<(), StateError>;
}

/// The state directory (or an in-memory stand-in when `dir` is `None`).
#[derive(Debug)]
pub struct StateDir {
    dir: Option<PathBuf>,
    state: Mutex<StateFile>,
}

impl StateDir {
    /// Opens (creating if needed) the state directory of `host_id`.
    pub fn open(dir: &Path, host_id: &str) -> Result<Self, StateError> {
        let io_err = |source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let path = dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice::<StateFile>(&b).map_err(|source| StateError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => StateFile {
                host_id: host_id.to_string(),
                ..Default::default()
            },
            Err(e) => return Err(io_err(e)),
        };
        if state.host_id != host_id {
            return Err(StateError::Io {
                path,
                source: io::Error::other(format!(
                    "belongs to host {:?}, not {host_id:?}",
                    state.host_id
                )),
            });
        }
        Ok(Self {
            dir: Some(dir.to_path_buf()),
            state: Mutex::new(state),
        })
    }

    /// A ledger kept in memory only (tests, benchmarks that must not persist).
    pub fn in_memory(host_id: &str) -> Self {
        Self {
            dir: None,
            state: Mutex::new(StateFile {
                host_id: host_id.to_string(),
                ..Default::default()
            }),
        }
    }

    /// The directory, if on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn save(&self, st: &StateFile) -> Result<(), StateError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let io_err = |source| StateError::Io {
            path: dir.clone(),
            source,
        };
        let tmp = dir.join("state.json.tmp");
        let data = serde_json::to_vec_pretty(st).expect("state serializes");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io_err)?;
            f.write_all(&data).map_err(io_err)?;
            f.sync_data().map_err(io_err)?;
        }
        std::fs::rename(&tmp, dir.join("state.json")).map_err(io_err)
    }

    fn update(&self, f: impl FnOnce(&mut StateFile)) -> Result<(), StateError> {
        let mut st = self.state.lock().expect("state lock");
        let before = st.clone();
        f(&mut st);
        if *st != before {
            self.save(&st)?;
        }
        Ok(())
    }

    pub fn applied_generation(&self) -> u64 {
        self.state.lock().expect("state lock").applied_generation
    }

    pub fn set_applied_generation(&self, generation: u64) -> Result<(), StateError> {
        self.update(|s| s.applied_generation = generation)
    }

    /// The recorded datapath process (pid, start time in clock ticks since boot).
    pub fn datapath(&self) -> Option<(u32, u64)> {
        self.state.lock().expect("state lock").datapath
    }

    pub fn set_datapath(&self, dp: Option<(u32, u64)>) -> Result<(), StateError> {
        self.update(|s| s.datapath = dp)
    }
}

impl Ledger for StateDir {
    fn namespaces(&self) -> BTreeMap<String, Option<u64>> {
        self.state.lock().expect("state lock").namespaces.clone()
    }

    fn intend(&self, names: &[String]) -> Result<(), StateError> {
        self.update(|s| {
            for n in names {
                s.namespaces.insert(n.clone(), None);
            }
        })
    }

    fn confirm(&self, entries: &[(String, u64)]) -> Result<(), StateError> {
        self.update(|s| {
            for (n, ino) in entries {
                s.namespaces.insert(n.clone(), Some(*ino));
            }
        })
    }

    fn forget(&self, names: &[String]) -> Result<(), StateError> {
        self.update(|s| {
            for n in names {
                s.namespaces.remove(n);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_persists_and_checks_host() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = StateDir::open(d.path(), "h1").unwrap();
            s.intend(&["vn-h1-a".into(), "vn-h1-b".into()]).unwrap();
            s.confirm(&[("vn-h1-a".into(), 42)]).unwrap();
            s.forget(&["vn-h1-b".into()]).unwrap();
            s.set_applied_generation(7).unwrap();
        }
        let s = StateDir::open(d.path(), "h1").unwrap();
        assert_eq!(s.applied_generation(), 7);
        assert_eq!(
            s.namespaces(),
            BTreeMap::from([("vn-h1-a".to_string(), Some(42))])
        );
        let e = StateDir::open(d.path(), "h2").unwrap_err().to_string();
        assert!(e.contains("belongs to host \"h1\""), "{e}");
    }

    #[test]
    fn corrupt_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("state.json"), b"{nope").unwrap();
        let e = StateDir::open(d.path(), "h1").unwrap_err().to_string();
        assert!(e.contains("state.json is corrupt"), "{e}");
    }
}
