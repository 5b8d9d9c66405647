//! Link impairments without netem: a userspace delay line per impaired node interface.
//!
//! This kernel has no `sch_netem` and no delaying qdisc, so an impaired interface `X` hands every
//! frame it sends to a relay: tc clsact egress on `X` redirects (u32 match-all + mirred) to a
//! persistent TAP `R` beside it in the node's namespace (shaped with TBF like any node
//! interface); the relay reads `R`, drops a frame with the link's loss probability, holds the rest
//! in a timer queue for delay +- jitter, and sends each when due on `X` through an AF_PACKET
//! socket with `PACKET_QDISC_BYPASS` (so it skips `X`'s egress hook and is not redirected again).
//! Frames `X` receives are untouched: each end impairs what it sends, so each direction is
//! impaired once.
//!
//! - [`queue`]: the delay line (pure: loss, delay, jitter, a bounded timer queue);
//! - [`relay`]: the relay threads, run inside the agent's datapath helper process (its config
//!   carries them next to the VLAN wires), so they survive agent restarts and are adopted with it.
pub mod queue;
pub mod relay;

use serde::{Deserialize, Serialize};

/// One impaired interface: where it is, the relay TAP beside it, and what to do to its frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// The node's named namespace.
    pub netns: String,
    /// The tenant's interface whose sent frames are impaired.
    pub dev: String,
    /// The relay's TAP in the same namespace.
    pub tap: String,
    pub delay_us: u64,
    pub jitter_us: u64,
    pub loss_ppm: u32,
}

/// The name of the relay TAP of segment `link_id` (at most 12 bytes).
pub fn relay_tap(link_id: &str) -> String {
    format!("ir{link_id}")
}
