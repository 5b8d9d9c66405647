//! Durable stores of the controller's state, beside the runtime that writes to them.

mod redb;

pub use self::redb::{Loaded, Store, StoreError};
