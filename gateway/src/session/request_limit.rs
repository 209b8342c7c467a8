//! The per-connection request budget (`limits.requests`): every request
//! but `pub` (which its namespace's `rate` limits per user, in Redis) takes
//! one unit of a GCRA bucket kept in the connection itself — a connection
//! lives on one node, so no Redis round trip is needed. Over it the
//! request is answered `rate_limited` with `retry_ms` and not run.
//!
//! Why: join/leave cycling sends presence events to every member of the
//! room, and `presence`, `history` and `refresh` (a signature check each)
//! cost the node and Redis; without a budget one connection could make
//! them as fast as it can send.

use broker::gcra::{self, Rate};

use crate::clock::mono_ms;
use crate::config::RateConfig;

/// One connection's bucket: only the theoretical arrival time (8 bytes),
/// the rate comes from the config on each request.
#[derive(Debug, Default)]
pub(super) struct RequestLimit {
    tat_ns: Option<i64>,
}

impl RequestLimit {
    /// Takes one request out of the budget `limit` now; `Err(retry_ms)`
    /// when over it.
    pub(super) fn take(&mut self, limit: &RateConfig) -> Result<(), u64> {
        self.take_at(limit, now_ns())
    }

    /// Charges `units` more requests' worth of the budget for an answer
    /// that cost more than one request (a full `presence` page, a big
    /// `history` page), without refusing anything now: the budget goes
    /// into debt and the next requests wait for it.
    pub(super) fn charge(&mut self, limit: &RateConfig, units: u64) {
        self.charge_at(limit, units, now_ns());
    }

    fn charge_at(&mut self, limit: &RateConfig, units: u64, now_ns: i64) {
        if units == 0 || limit.count == 0 {
            return;
        }
        let period_ns = i128::from(limit.period_s.min(i64::MAX as u64)) * 1_000_000_000;
        let interval_ns = period_ns / i128::from(limit.count);
        let debt = interval_ns.saturating_mul(i128::from(units));
        let from = i128::from(self.tat_ns.unwrap_or(now_ns).max(now_ns));
        self.tat_ns = Some(i64::try_from(from + debt).unwrap_or(i64::MAX / 2));
    }

    fn take_at(&mut self, limit: &RateConfig, now_ns: i64) -> Result<(), u64> {
        let rate = Rate {
            max_burst: i64::from(limit.burst).saturating_sub(1),
            count: i64::from(limit.count),
            period_s: i64::try_from(limit.period_s).unwrap_or(i64::MAX),
        };
        // A rate the config validation let through is valid; should it not
        // be, the request is not limited rather than refused.
        let Ok(decision) = gcra::throttle(self.tat_ns, now_ns, &rate, 1) else {
            return Ok(());
        };
        if decision.limited {
            return Err(u64::try_from(decision.retry_after_ms.max(1)).unwrap_or(1));
        }
        if let Some((tat, _)) = decision.store {
            self.tat_ns = Some(tat);
        }
        Ok(())
    }
}

/// The monotonic clock in nanoseconds, as the GCRA counts.
fn now_ns() -> i64 {
    i64::try_from(mono_ms()).unwrap_or(i64::MAX / 2) * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        // 10 per second, 5 back to back.
        let limit = RateConfig {
            count: 10,
            period_s: 1,
            burst: 5,
        };
        let mut bucket = RequestLimit::default();
        let t0 = 1_000 * MS;
        for i in 0..5 {
            assert_eq!(
                bucket.take_at(&limit, t0),
                Ok(()),
                "request {i} of the burst"
            );
        }
        let retry = bucket.take_at(&limit, t0).expect_err("the 6th is limited");
        assert!((1..=100).contains(&retry), "retry {retry} ms");
        // One emission interval (100 ms) later there is room for one more.
        assert_eq!(bucket.take_at(&limit, t0 + 100 * MS), Ok(()));
        assert!(bucket.take_at(&limit, t0 + 100 * MS).is_err());
        // After a quiet second the whole burst is back.
        for _ in 0..5 {
            assert_eq!(bucket.take_at(&limit, t0 + 1_200 * MS), Ok(()));
        }
    }

    #[test]
    fn a_charge_puts_the_budget_in_debt() {
        // 10 per second (100 ms each), 5 back to back.
        let limit = RateConfig {
            count: 10,
            period_s: 1,
            burst: 5,
        };
        let mut bucket = RequestLimit::default();
        let t0 = 1_000 * MS;
        assert_eq!(bucket.take_at(&limit, t0), Ok(()));
        // An answer worth 9 more requests: the burst is spent and then
        // some, so the next request waits about 0.5 s.
        bucket.charge_at(&limit, 9, t0);
        let retry = bucket.take_at(&limit, t0).expect_err("in debt");
        assert!((500..=600).contains(&retry), "retry {retry} ms");
        assert_eq!(bucket.take_at(&limit, t0 + 600 * MS), Ok(()));
        bucket.charge_at(&limit, 0, t0 + 600 * MS);
    }
}
