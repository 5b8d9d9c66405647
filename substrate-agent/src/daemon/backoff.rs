//! The agent's reconnect back-off: exponential between failed dials, reset by a healthy session.
//!
//! A session is healthy when it attached and stayed attached for at least `healthy_after`: the
//! controller was there and took the agent. After such a session (typically ended by a
//! controller restart) the agent dials again quickly; a controller that accepts and drops at once
//! does not reset it, so a crash-looping controller is not hammered.

use std::time::Duration;

/// Delays between dials of the controller.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    healthy_after: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, healthy_after: Duration) -> Self {
        Self {
            initial,
            max,
            healthy_after,
            current: initial,
        }
    }

    /// The agent's policy: 200 ms doubling up to 5 s, reset after 2 s attached.
    pub fn agent() -> Self {
        Self::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
            Duration::from_secs(2),
        )
    }

    /// The delay before the next dial, after a session that stayed attached for `attached_for`
    /// (`None`: it never attached: connect or attach failed).
    pub fn next_delay(&mut self, attached_for: Option<Duration>) -> Duration {
        if attached_for.is_some_and(|d| d >= self.healthy_after) {
            self.current = self.initial;
        }
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn failed_dials_double_up_to_the_cap() {
        let mut b = Backoff::agent();
        let d: Vec<u64> = (0..7)
            .map(|_| b.next_delay(None).as_millis() as u64)
            .collect();
        assert_eq!(d, [200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn a_healthy_session_resets_the_delay() {
        let mut b = Backoff::agent();
        for _ in 0..6 {
            b.next_delay(None);
        }
        assert_eq!(b.next_delay(None), ms(5000));
        // A long session ended by a controller restart: dial again at once.
        assert_eq!(b.next_delay(Some(Duration::from_secs(3600))), ms(200));
        assert_eq!(b.next_delay(None), ms(400));
        // Every later healthy session resets again (not only the first).
        assert_eq!(b.next_delay(Some(ms(2000))), ms(200));
    }

    #[test]
    fn a_session_dropped_at_once_does_not_reset() {
        let mut b = Backoff::agent();
        b.next_delay(None);
        b.next_delay(None);
        assert_eq!(b.next_delay(Some(ms(50))), ms(800));
        assert_eq!(b.next_delay(Some(ms(1999))), ms(1600));
    }
}
