//! The durable store: one redb file (`controller.redb` in the state directory).
//!
//! Tables: `vns` (VN id -> JSON `VnRecord`, with its embedding and identifiers), `hosts` (host id
//! -> JSON `HostInfo` from the last hello), `generations` (host id -> desired generation) and
//! `meta` (allocator cursors, schema version). Every [`Change`] is written in one transaction
//! with immediate durability, so a crash leaves either all of an operation or none of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::core::alloc::Cursors;
use crate::core::index::Change;
use crate::core::record::VnRecord;
use crate::core::substrate::HostInfo;

const VNS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("vns");
const HOSTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("hosts");
const GENERATIONS: TableDefinition<'_, &str, u64> = TableDefinition::new("generations");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

const SCHEMA_KEY: &str = "schema";
const SCHEMA: &[u8] = b"1";
const CURSORS_KEY: &str = "cursors";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {path}")]
    Db {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("store record {key} is corrupt")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store schema {found:?} is not the supported {SCHEMA:?}")]
    Schema { found: String },
}

/// Everything the store holds.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<VnRecord>,
    pub hosts: Vec<HostInfo>,
    pub generations: BTreeMap<String, u64>,
    pub cursors: Cursors,
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("controller.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Db {
            path: path.clone(),
            source: e.into(),
        })?;
        let store = Store { db, path };
        store.init()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    fn init(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            tx.open_table(VNS).map_err(|e| self.err(e))?;
            tx.open_table(HOSTS).map_err(|e| self.err(e))?;
            tx.open_table(GENERATIONS).map_err(|e| self.err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let found = meta
                .get(SCHEMA_KEY)
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_vec());
            match found {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA).map_err(|e| self.err(e))?;
                }
                Some(v) if v == SCHEMA => {}
                Some(v) => {
                    return Err(StoreError::Schema {
                        found: String::from_utf8_lossy(&v).into_owned(),
                    });
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut out = Loaded::default();
        let vns = tx.open_table(VNS).map_err(|e| self.err(e))?;
        for item in vns.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.records.push(decode(k.value(), v.value())?);
        }
        let hosts = tx.open_table(HOSTS).map_err(|e| self.err(e))?;
        for item in hosts.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.hosts.push(decode(k.value(), v.value())?);
        }
        let gens = tx.open_table(GENERATIONS).map_err(|e| self.err(e))?;
        for item in gens.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.generations.insert(k.value().to_string(), v.value());
        }
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        if let Some(v) = meta.get(CURSORS_KEY).map_err(|e| self.err(e))? {
            out.cursors = decode(CURSORS_KEY, v.value())?;
        }
        Ok(out)
    }

    /// Writes one change in one durable transaction.
    pub fn apply(&self, change: &Change) -> Result<(), StoreError> {
        self.apply_all(&[change], &[], true)
    }

    /// Writes several changes (in order) and host records in one transaction; without
    /// `durable`, the commit becomes durable with the next durable one (redb `Durability::None`).
    pub fn apply_all(
        &self,
        changes: &[&Change],
        hosts: &[&HostInfo],
        durable: bool,
    ) -> Result<(), StoreError> {
        let empty = |c: &Change| {
            c.upserts.is_empty()
                && c.removed.is_empty()
                && c.generations.is_empty()
                && c.cursors.is_none()
        };
        if hosts.is_empty() && changes.iter().all(|c| empty(c)) {
            return Ok(());
        }
        let mut tx = self.db.begin_write().map_err(|e| self.err(e))?;
        if !durable {
            tx.set_durability(Durability::None)
                .map_err(|e| self.err(e))?;
        }
        {
            let mut vns = tx.open_table(VNS).map_err(|e| self.err(e))?;
            let mut gens = tx.open_table(GENERATIONS).map_err(|e| self.err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            let mut host_table = tx.open_table(HOSTS).map_err(|e| self.err(e))?;
            for h in hosts {
                host_table
                    .insert(h.id.as_str(), encode(*h).as_slice())
                    .map_err(|e| self.err(e))?;
            }
            for change in changes {
                for (id, rec) in &change.upserts {
                    vns.insert(id.as_str(), encode(rec).as_slice())
                        .map_err(|e| self.err(e))?;
                }
                for id in &change.removed {
                    vns.remove(id.as_str()).map_err(|e| self.err(e))?;
                }
                for (h, g) in &change.generations {
                    gens.insert(h.as_str(), *g).map_err(|e| self.err(e))?;
                }
                if let Some(c) = &change.cursors {
                    meta.insert(CURSORS_KEY, encode(c).as_slice())
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }
}
