//! The substrate agent library.
