//! The controller library.
