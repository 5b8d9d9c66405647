//! The durable store: one redb file (`controller.redb` in the state directory).
//!
//! Tables: `vns` (VN id -> JSON `VnRecord`, with its embedding and identifiers), `hosts` (host id
//! -> JSON `HostInfo` from the last hello), `generations` (host id -> desired generation) and
//! `meta` (allocator cursors, schema version, writer epoch, the last trimmed event) and `events`
//! (sequence number -> JSON `StoredEvent`, the newest `EVENTS_KEPT`). Every [`Change`] is written in one transaction
//! with immediate durability, so a crash leaves either all of an operation or none of it.

use std::path::{Path, PathBuf};

use ::redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::core::index::Change;
use crate::core::store::{
    EVENTS_KEPT, Loaded, Seq, Store, StoreError, StoredEvent, Write, batch_is_empty, decode,
    encode, writes,
};
use crate::core::substrate::HostInfo;

const VNS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("vns");
const HOSTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("hosts");
const GENERATIONS: TableDefinition<'_, &str, u64> = TableDefinition::new("generations");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

const SCHEMA_KEY: &str = "schema";
const SCHEMA: &[u8] = b"1";
const CURSORS_KEY: &str = "cursors";
const EPOCH_KEY: &str = "epoch";
const TRIMMED_KEY: &str = "events_trimmed";

/// The store in one redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("controller.redb");
        let db = Database::create(&path).map_err(|e| backend(&path, e))?;
        let store = RedbStore { db, path };
        store.init()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl Into<::redb::Error>) -> StoreError {
        backend(&self.path, e)
    }

    fn init(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            tx.open_table(VNS).map_err(|e| self.err(e))?;
            tx.open_table(HOSTS).map_err(|e| self.err(e))?;
            tx.open_table(GENERATIONS).map_err(|e| self.err(e))?;
            tx.open_table(EVENTS).map_err(|e| self.err(e))?;
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
                        supported: String::from_utf8_lossy(SCHEMA).into_owned(),
                    });
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

impl RedbStore {
    /// Appends `events` and trims the table to the newest [`EVENTS_KEPT`], recording the last
    /// trimmed sequence number (a watcher resuming before it gets a snapshot).
    fn write_events(
        &self,
        tx: &::redb::WriteTransaction,
        meta: &mut ::redb::Table<'_, &str, &[u8]>,
        events: &[&StoredEvent],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut table = tx.open_table(EVENTS).map_err(|e| self.err(e))?;
        for e in events {
            table
                .insert(e.seq, encode(*e).as_slice())
                .map_err(|e| self.err(e))?;
        }
        let mut trimmed = None;
        while table.len().map_err(|e| self.err(e))? > EVENTS_KEPT {
            match table.pop_first().map_err(|e| self.err(e))? {
                Some((k, _)) => trimmed = Some(k.value()),
                None => break,
            }
        }
        if let Some(t) = trimmed {
            meta.insert(TRIMMED_KEY, encode(&t).as_slice())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

fn backend(path: &Path, e: impl Into<::redb::Error>) -> StoreError {
    StoreError::Backend {
        location: path.display().to_string(),
        source: Box::new(e.into()),
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Loaded, StoreError> {
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
        if let Some(v) = meta.get(EPOCH_KEY).map_err(|e| self.err(e))? {
            out.epoch = decode(EPOCH_KEY, v.value())?;
        }
        let events = tx.open_table(EVENTS).map_err(|e| self.err(e))?;
        if let Some((k, _)) = events.last().map_err(|e| self.err(e))? {
            out.last_seq = k.value();
        }
        Ok(out)
    }

    fn begin_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(EPOCH_KEY, encode(&epoch).as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn events_after(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        let trimmed: Seq = match meta.get(TRIMMED_KEY).map_err(|e| self.err(e))? {
            Some(v) => decode(TRIMMED_KEY, v.value())?,
            None => 0,
        };
        let events = tx.open_table(EVENTS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in events
            .range(after.saturating_add(1)..)
            .map_err(|e| self.err(e))?
            .take(limit)
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push(decode(&format!("event {}", k.value()), v.value())?);
        }
        Ok((out, trimmed > after))
    }

    /// Without `durable`, the commit becomes durable with the next durable one (redb
    /// `Durability::None`).
    fn apply_all(
        &self,
        changes: &[(&Change, &[StoredEvent])],
        hosts: &[&HostInfo],
        durable: bool,
    ) -> Result<(), StoreError> {
        if batch_is_empty(changes, hosts) {
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
            for w in changes.iter().flat_map(|(c, _)| writes(c)) {
                match w {
                    Write::Vn(id, Some(rec)) => vns.insert(id, rec.as_slice()).map(drop),
                    Write::Vn(id, None) => vns.remove(id).map(drop),
                    Write::Generation(h, g) => gens.insert(h, g).map(drop),
                    Write::Cursors(c) => meta.insert(CURSORS_KEY, c.as_slice()).map(drop),
                }
                .map_err(|e| self.err(e))?;
            }
            let events: Vec<&StoredEvent> = changes.iter().flat_map(|(_, e)| *e).collect();
            self.write_events(&tx, &mut meta, &events)?;
        }
        tx.commit().map_err(|e| self.err(e))
    }
}
