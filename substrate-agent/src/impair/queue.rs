//! The delay line: random loss, then a timer queue ordered by due time.
//!
//! Each frame offered at `now` is dropped with probability `loss_ppm / 10^6`, else due at
//! `now + delay + u` with `u` uniform in `[-jitter, +jitter]` (frames may overtake one another
//! when jitter exceeds their spacing, as with netem). At most [`DelayLine::LIMIT`] frames wait;
//! beyond that a frame is dropped, as a full queue would.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A small, fast pseudo-random generator (SplitMix64): loss and jitter need no cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// What happened to an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    Lost,
    Full,
}

/// Frames waiting for their due time.
#[derive(Debug)]
pub struct DelayLine {
    delay: Duration,
    jitter_us: u64,
    loss_ppm: u32,
    rng: SplitMix,
    seq: u64,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    frames: std::collections::HashMap<u64, Vec<u8>>,
}

impl DelayLine {
    /// Most frames held at once.
    pub const LIMIT: usize = 10_000;

    pub fn new(delay_us: u64, jitter_us: u64, loss_ppm: u32, seed: u64) -> Self {
        DelayLine {
            delay: Duration::from_micros(delay_us),
            jitter_us: jitter_us.min(delay_us),
            loss_ppm,
            rng: SplitMix::new(seed),
            seq: 0,
            heap: BinaryHeap::new(),
            frames: std::collections::HashMap::new(),
        }
    }

    /// The delay one frame gets.
    fn sample_delay(&mut self) -> Duration {
        if self.jitter_us == 0 {
            return self.delay;
        }
        let u = self.rng.below(2 * self.jitter_us + 1);
        (self.delay + Duration::from_micros(u))
            .saturating_sub(Duration::from_micros(self.jitter_us))
    }

    /// Offers a frame received at `now`.
    pub fn offer(&mut self, frame: Vec<u8>, now: Instant) -> Offer {
        if self.loss_ppm > 0 && self.rng.below(1_000_000) < u64::from(self.loss_ppm) {
            return Offer::Lost;
        }
        if self.frames.len() >= Self::LIMIT {
            return Offer::Full;
        }
        let due = now + self.sample_delay();
        self.seq += 1;
        self.heap.push(Reverse((due, self.seq)));
        self.frames.insert(self.seq, frame);
        Offer::Queued
    }

    /// When the next frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The next frame due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        let Reverse((t, seq)) = *self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        self.frames.remove(&seq)
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_leave_after_the_delay_in_order() {
        let t0 = Instant::now();
        let mut d = DelayLine::new(20_000, 0, 0, 1);
        for i in 0..3u8 {
            let at = t0 + Duration::from_millis(u64::from(i));
            assert_eq!(d.offer(vec![i], at), Offer::Queued);
        }
        assert_eq!(d.next_due(), Some(t0 + Duration::from_millis(20)));
        assert_eq!(d.pop_due(t0 + Duration::from_micros(19_999)), None);
        assert_eq!(d.pop_due(t0 + Duration::from_millis(20)), Some(vec![0]));
        assert_eq!(d.pop_due(t0 + Duration::from_millis(21)), Some(vec![1]));
        assert_eq!(d.pop_due(t0 + Duration::from_millis(21)), None);
        assert_eq!(d.pop_due(t0 + Duration::from_secs(1)), Some(vec![2]));
        assert!(d.is_empty());
    }

    #[test]
    fn jitter_spreads_delays_uniformly_within_the_bounds() {
        let t0 = Instant::now();
        let mut d = DelayLine::new(10_000, 4_000, 0, 7);
        let delays: Vec<i64> = (0..20_000)
            .map(|_| {
                d.offer(vec![], t0);
                let due = d.next_due().unwrap();
                d.pop_due(due).unwrap();
                (due - t0).as_micros() as i64
            })
            .collect();
        assert!(delays.iter().all(|&us| (6_000..=14_000).contains(&us)));
        let mean = delays.iter().sum::<i64>() as f64 / delays.len() as f64;
        assert!((mean - 10_000.0).abs() < 100.0, "mean {mean}");
        let var = delays
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / delays.len() as f64;
        // uniform on [-4000, 4000]: standard deviation 4000 / sqrt(3) = 2309
        assert!((var.sqrt() - 2309.0).abs() < 60.0, "sd {}", var.sqrt());
    }

    #[test]
    fn loss_drops_the_stated_share() {
        let t0 = Instant::now();
        let mut d = DelayLine::new(0, 0, 50_000, 3);
        let lost = (0..100_000)
            .filter(|_| d.offer(vec![], t0) == Offer::Lost)
            .count();
        assert!((4_700..5_300).contains(&lost), "lost {lost} of 100000");
        let mut none = DelayLine::new(0, 0, 0, 3);
        assert!((0..10_000).all(|_| none.offer(vec![], t0) == Offer::Queued));
    }

    #[test]
    fn a_full_queue_drops() {
        let t0 = Instant::now();
        let mut d = DelayLine::new(1_000_000, 0, 0, 1);
        for _ in 0..DelayLine::LIMIT {
            assert_eq!(d.offer(vec![0], t0), Offer::Queued);
        }
        assert_eq!(d.offer(vec![0], t0), Offer::Full);
        assert_eq!(d.len(), DelayLine::LIMIT);
    }
}
