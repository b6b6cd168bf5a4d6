//! Capped exponential back-off with jitter, for whatever reconnects: the
//! client's `--reconnect` and editor, and a cluster node's Redis
//! connection.
//!
//! The waits grow exponentially from [`FIRST_DELAY`] to [`MAX_DELAY`], each
//! drawn at random from the upper half of its range, so that many clients
//! cut off together do not come back together.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The first wait.
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Capped exponential back-off with jitter.
#[derive(Debug)]
pub struct Backoff {
    /// The upper bound of the next wait.
    ceiling: Duration,
    /// Attempts since the last success.
    pub attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            ceiling: FIRST_DELAY,
            attempt: 0,
        }
    }
}

impl Backoff {
    /// The next wait: between half the ceiling and the ceiling, which then
    /// doubles up to [`MAX_DELAY`].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(MAX_DELAY);
        self.attempt += 1;
        let half = ceiling / 2;
        half + half.mul_f64(random_fraction())
    }

    /// A connection succeeded: the next loss starts from the first delay.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// A number in [0, 1) that differs between processes and calls (the
/// standard library's randomly keyed hasher; jitter needs no more).
fn random_fraction() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos() as u64),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_its_cap_with_jitter_and_starts_again_after_a_success() {
        let mut backoff = Backoff::default();
        let mut ceiling = FIRST_DELAY;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(MAX_DELAY);
        }
        assert_eq!(backoff.attempt, 10);
        assert!(backoff.next_delay() >= MAX_DELAY / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST_DELAY);
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let delays: std::collections::BTreeSet<_> =
            (0..20).map(|_| Backoff::default().next_delay()).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
