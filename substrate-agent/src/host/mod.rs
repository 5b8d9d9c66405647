//! The agent's one kernel layer: everything that touches the host's network stack goes through
//! the [`kernel::Kernel`] trait, served on Linux by [`linux::LinuxKernel`] over a small blocking
//! rtnetlink client ([`rtnl`]), named namespaces ([`netns`]), AF_PACKET sockets ([`packet`]), traffic-control messages ([`tc`])
//! and TAP devices ([`tap`]); the BPF 802.1Q datapath ([`bpf`]) attaches through it. The planner's executor and the guest runtime both use it; the
//! recording fake (`fake`) stands in for it in tests.

pub mod bpf;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod kernel;
pub mod linux;
pub mod netns;
pub mod packet;
pub mod rtnl;
pub mod tap;
pub mod tc;
