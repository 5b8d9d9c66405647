//! 802.1Q VLAN links without kernel VLAN devices: the userspace datapath, used where the BPF
//! datapath (`crate::host::bpf`) does not load or when asked for (`--vlan-datapath userspace`).
//!
//! - [`config`]: what the datapath serves (wires between TAP devices and underlay VLANs), and the
//!   control trait the executor uses (served by both datapaths, [`config::SelectedDatapath`]
//!   picks one);
//! - [`frame`]: tag push/pop with `pnet_packet`;
//! - [`datapath`]: the datapath process itself (AF_PACKET + PACKET_AUXDATA, TAP readers);
//! - [`process`]: spawning, adopting and reconfiguring that process from the agent.
pub mod config;
pub mod datapath;
pub mod frame;
pub mod process;
