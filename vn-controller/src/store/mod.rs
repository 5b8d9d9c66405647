//! Durable stores of the controller's state, beside the runtime that writes to them. Each
//! implements the core's [`Store`] trait.

mod redb;

pub use self::redb::RedbStore;
pub use crate::core::store::{Loaded, Store, StoreError};
