//! Reconnect delays: exponential, capped, with part of each delay randomized
//! so that the clients of a restarted node do not all come back at once.

use std::time::Duration;

/// How long to wait before reconnect attempt `n`: `min · 2^(n-1)`, capped at
/// `max`, of which the top `jitter` share is random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first attempt (before jitter).
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Share of the delay that is random, 0.0 (none) to 1.0 (all of it).
    pub jitter: f64,
}

impl Default for Backoff {
    /// 250 ms doubling to 10 s, half of it random (socket.io-client's
    /// defaults are 1 s, 5 s and 0.5).
    fn default() -> Backoff {
        Backoff {
            min: Duration::from_millis(250),
            max: Duration::from_secs(10),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based) given a uniform random
    /// number `random` in `[0, 1)`.
    pub fn delay_with(&self, attempt: u32, random: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let cap = self
            .min
            .saturating_mul(1u32 << exponent)
            .min(self.max)
            .max(self.min.min(self.max));
        let share = (self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0)).min(1.0);
        cap.mul_f64(1.0 - share)
    }

    /// The delay before attempt `attempt` (1-based), randomized.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff {
            min: ms(100),
            max: ms(1000),
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=6).map(|n| b.delay_with(n, 0.7)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(b.delay_with(u32::MAX, 0.0), ms(1000));
    }

    #[test]
    fn jitter_takes_at_most_its_share() {
        let b = Backoff {
            min: ms(1000),
            max: ms(8000),
            jitter: 0.5,
        };
        assert_eq!(b.delay_with(1, 0.0), ms(1000));
        assert_eq!(b.delay_with(1, 0.5), ms(750));
        let top = b.delay_with(2, 0.999_999).as_secs_f64();
        assert!((top - 1.000_001).abs() < 1e-6, "{top}");
        for n in 1..20 {
            let d = b.delay(n);
            assert!(
                d >= b.delay_with(n, 1.0) && d <= b.delay_with(n, 0.0),
                "{d:?}"
            );
        }
    }
}
