//! 802.1Q VLAN links without kernel VLAN devices: a userspace datapath.
//!
//! - [`config`]: what the datapath serves (wires between TAP devices and underlay VLANs), and the
//!   control trait the executor uses;
pub mod config;
