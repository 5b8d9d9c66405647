//! Durable stores of the controller's state, beside the runtime that writes to them. Each
//! implements the core's [`Store`] trait: `redb` (one file, the default) and `etcd` (replicated,
//! for several controller replicas with one leader).

pub mod etcd;
mod redb;

#[cfg(any(test, feature = "testing"))]
pub use self::etcd::have_etcd;
pub use self::etcd::{EtcdConfig, EtcdStore, Role};
pub use self::redb::RedbStore;
pub use crate::core::store::{Loaded, Seq, Store, StoreError, StoredEvent};
