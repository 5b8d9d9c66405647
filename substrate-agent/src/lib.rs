//! The substrate agent: the per-host daemon that realizes virtual nodes and links.
//!
//! Data flow: the controller's `DesiredState` is validated into [`spec::Desired`] at the edge
//! ([`session`]); [`observe::observe`] reads the host through the [`kernel::Kernel`] trait into an
//! [`observed::Observed`]; the pure [`plan::plan`] computes operations; [`apply::apply`] runs them
//! on the kernel (the Linux implementation is [`linux`], the recording fake [`fake`]). VLAN links
//! use the userspace datapath in [`vlan`]; VM nodes are handed to a [`guest::GuestRuntime`].

pub mod agent;
pub mod apply;
pub mod bench;
pub mod cleanup;
pub mod console;
pub mod exec;
pub mod fake;
pub mod guest;
pub mod kernel;
pub mod linux;
pub mod naming;
pub mod netns;
pub mod observe;
pub mod observed;
pub mod plan;
pub mod probe;
pub mod rtnl;
pub mod sandbox;
pub mod spec;
pub mod state;
pub mod tap;
pub mod tc;
pub mod vlan;
