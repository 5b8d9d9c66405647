//! The substrate agent library.
pub mod guest;
