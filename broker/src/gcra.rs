//! The generic cell rate algorithm (GCRA) behind `BROKER.THROTTLE` and
//! `BROKER.PUBLISH ... RATE`, matching redis-cell's `CL.THROTTLE` figure for
//! figure so that clients written for redis-cell read our replies unchanged.
//!
//! # How GCRA works
//!
//! Instead of a bucket that a background process refills, GCRA keeps one
//! number per key: the *theoretical arrival time* (TAT), the moment at which
//! the key would be back to "no recent requests" if requests had arrived at
//! exactly the allowed rate.
//!
//! - The **emission interval** is the nominal gap between two requests:
//!   `period / count` (2 s for 30 per minute).
//! - The **delay variation tolerance** is how far ahead of the nominal
//!   schedule a caller may run: `emission_interval * (max_burst + 1)`. It is
//!   the size of the bucket, measured in time.
//! - A request of `quantity` units moves the TAT forward by
//!   `emission_interval * quantity`, starting from now if the TAT is in the
//!   past. It is allowed when the new TAT is at most the tolerance ahead of
//!   now; otherwise it is limited and the TAT is left as it was.
//!
//! The only state is the TAT, and it is only needed until it is reached (after
//! that the key behaves exactly like an absent one), so the caller stores it
//! with an expiry of `new_tat - now`.
//!
//! # Purity and replication
//!
//! [`throttle`] takes the stored TAT and the current time and returns the
//! decision plus what to store; it reads no clock and touches no Redis. The
//! module therefore replicates the *result* (`SET key tat PXAT ms`), never the
//! decision itself, and a replica never consults its own clock.
//!
//! # Faithfulness to redis-cell
//!
//! The arithmetic follows redis-cell 0.5: the emission interval is
//! `period_ns / count` computed in `f64` and truncated to whole nanoseconds;
//! `remaining` divides whole microseconds in `f64`; the seconds in the reply
//! truncate and then add one when the duration has a non-zero millisecond
//! part (so 1.5 s → 2, 2.0004 s → 2). All intermediate values are `i128`, so
//! no argument, however large, can overflow or panic; results are saturated
//! to `i64`. Where redis-cell would divide by zero microseconds (an emission
//! interval under 1 µs) this module divides nanoseconds instead.

use thiserror::Error;

/// Nanoseconds per second.
const NS_PER_S: i128 = 1_000_000_000;
/// Nanoseconds per millisecond.
const NS_PER_MS: i128 = 1_000_000;
/// Nanoseconds per microsecond.
const NS_PER_US: i128 = 1_000;

/// Parameters of one throttle call: at most `max_burst + 1` units back to
/// back, `count` units per `period_s` seconds on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units allowed back to back beyond the first (redis-cell's
    /// `max_burst`; a namespace's `burst` is `max_burst + 1`).
    pub max_burst: i64,
    /// Units per period.
    pub count: i64,
    /// Length of the period in seconds.
    pub period_s: i64,
}

impl Rate {
    /// The emission interval in nanoseconds: `period_s * 1e9 / count`,
    /// computed in `f64` and truncated, as redis-cell does.
    ///
    /// # Errors
    ///
    /// [`GcraError::InvalidRate`] when `count` or `period_s` is not positive,
    /// `max_burst` is negative, or the interval truncates to zero
    /// nanoseconds (more than a billion units per second), which redis-cell
    /// also refuses ("zero rates are not supported").
    pub fn emission_interval_ns(&self) -> Result<i64, GcraError> {
        if self.count <= 0 || self.period_s <= 0 || self.max_burst < 0 {
            return Err(GcraError::InvalidRate);
        }
        let period_ns = i128::from(self.period_s) * NS_PER_S;
        // `as` from f64 saturates, so a huge period gives i64::MAX, not UB.
        let interval = (period_ns as f64 / self.count as f64) as i64;
        if interval <= 0 {
            return Err(GcraError::InvalidRate);
        }
        Ok(interval)
    }
}

/// Why a throttle call was refused before any decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GcraError {
    /// `count <= 0`, `period_s <= 0`, `max_burst < 0`, or a rate faster than
    /// one unit per nanosecond.
    #[error("count and period must be positive, max_burst must not be negative")]
    InvalidRate,
    /// A negative quantity.
    #[error("quantity must not be negative")]
    InvalidQuantity,
}

/// Result of a throttle decision, in redis-cell's reply shape plus what the
/// caller must store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request was refused.
    pub limited: bool,
    /// `max_burst + 1`: units allowed back to back (`X-RateLimit-Limit`).
    pub limit: i64,
    /// Units still allowed right now after this decision
    /// (`X-RateLimit-Remaining`).
    pub remaining: i64,
    /// Whole seconds (rounded up) until this request would be allowed; `-1`
    /// when allowed, and also when it can never be allowed because `quantity`
    /// exceeds the limit (`Retry-After`).
    pub retry_after_s: i64,
    /// Whole seconds (rounded up as redis-cell does) until the key is back to
    /// its full limit (`X-RateLimit-Reset`).
    pub reset_after_s: i64,
    /// Like `retry_after_s` in milliseconds, rounded up (at least 1 when
    /// limited); `-1` when `retry_after_s` is `-1`. The gateway's `retry_ms`.
    pub retry_after_ms: i64,
    /// When allowed with a positive quantity: the new theoretical arrival
    /// time to store (ns since the Unix epoch) and how long to keep it (ns,
    /// always > 0). `None` means "write nothing": the request was limited, or
    /// it was a `quantity` 0 peek, which in redis-cell rewrites the same
    /// arrival time (or one that expires at once) and so changes nothing.
    pub store: Option<(i64, i64)>,
}

impl Decision {
    /// The `CL.THROTTLE` reply: `[limited (0/1), limit, remaining,
    /// retry_after_s, reset_after_s]`.
    pub fn reply(&self) -> [i64; 5] {
        [
            i64::from(self.limited),
            self.limit,
            self.remaining,
            self.retry_after_s,
            self.reset_after_s,
        ]
    }
}

/// Saturates an `i128` into `i64`.
fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// A duration in whole seconds the way redis-cell replies: the `f64` seconds
/// truncated toward zero, plus one when the millisecond part is positive.
fn reply_seconds(ns: i128) -> i64 {
    let secs = ns / NS_PER_S;
    let subsec = ns % NS_PER_S;
    let whole = (secs as f64 + subsec as f64 / NS_PER_S as f64) as i64;
    if subsec / NS_PER_MS > 0 {
        whole.saturating_add(1)
    } else {
        whole
    }
}

/// A positive duration in milliseconds, rounded up.
fn ceil_ms(ns: i128) -> i64 {
    clamp_i64((ns + NS_PER_MS - 1).div_euclid(NS_PER_MS))
}

/// Decides one request of `quantity` units against `rate`.
///
/// `tat_ns` is the stored theoretical arrival time (`None` when the key is
/// absent) and `now_ns` the current time, both in nanoseconds since the Unix
/// epoch. A `quantity` of 0 only peeks: the reply describes the key's state
/// and nothing is stored.
///
/// A stored TAT that is already in the past counts as "now" (in Redis the key
/// would have expired by then).
///
/// # Errors
///
/// [`GcraError::InvalidRate`] for a rate that [`Rate::emission_interval_ns`]
/// refuses, [`GcraError::InvalidQuantity`] for a negative `quantity`.
pub fn throttle(
    tat_ns: Option<i64>,
    now_ns: i64,
    rate: &Rate,
    quantity: i64,
) -> Result<Decision, GcraError> {
    let interval = i128::from(rate.emission_interval_ns()?);
    if quantity < 0 {
        return Err(GcraError::InvalidQuantity);
    }
    // Every product below is at most (2^63)^2 = 2^126, well inside i128.
    let tolerance = interval * (i128::from(rate.max_burst) + 1);
    let increment = interval * i128::from(quantity);
    let now = i128::from(now_ns);
    let tat = tat_ns.map_or(now, i128::from).max(now);

    let new_tat = tat + increment;
    let allow_at = new_tat - tolerance;
    let diff = now - allow_at;

    let limited = diff < 0;
    let (ttl, retry) = if limited {
        // A request bigger than the whole bucket can never pass: no retry
        // time, as in redis-cell.
        let retry = (increment <= tolerance).then_some(-diff);
        (tat - now, retry)
    } else {
        (new_tat - now, None)
    };

    let next = tolerance - ttl;
    let remaining = if next > -interval {
        let (num, den) = if interval >= NS_PER_US {
            (next / NS_PER_US, interval / NS_PER_US)
        } else {
            (next, interval)
        };
        (num as f64 / den as f64) as i64
    } else {
        0
    };

    let store = if limited || quantity == 0 {
        None
    } else {
        let stored_tat = clamp_i64(new_tat);
        let keep = i128::from(stored_tat) - now;
        (keep > 0).then(|| (stored_tat, clamp_i64(keep)))
    };

    Ok(Decision {
        limited,
        limit: rate.max_burst.saturating_add(1),
        remaining,
        retry_after_s: retry.map_or(-1, reply_seconds),
        reset_after_s: reply_seconds(ttl),
        retry_after_ms: retry.map_or(-1, ceil_ms),
        store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const MS: i64 = 1_000_000;
    /// An arbitrary "now": 2023-11-14T22:13:20Z.
    const T0: i64 = 1_700_000_000 * S;

    fn rate(max_burst: i64, count: i64, period_s: i64) -> Rate {
        Rate {
            max_burst,
            count,
            period_s,
        }
    }

    /// An in-memory key: applies `store` the way the module does and drops
    /// the key once its TTL has passed.
    #[derive(Default)]
    struct Key {
        tat: Option<i64>,
        expires_at: i64,
    }

    impl Key {
        fn call(&mut self, now: i64, rate: &Rate, quantity: i64) -> Decision {
            if self.tat.is_some() && now >= self.expires_at {
                self.tat = None;
            }
            let d = throttle(self.tat, now, rate, quantity).unwrap();
            if let Some((tat, ttl)) = d.store {
                assert!(ttl > 0);
                assert_eq!(tat - now, ttl);
                self.tat = Some(tat);
                self.expires_at = now + ttl;
            }
            d
        }
    }

    #[test]
    fn readme_example() {
        // CL.THROTTLE user123 15 30 60 1 on a fresh key.
        let d = throttle(None, T0, &rate(15, 30, 60), 1).unwrap();
        assert_eq!(d.reply(), [0, 16, 15, -1, 2]);
        assert_eq!(d.retry_after_ms, -1);
        assert_eq!(d.store, Some((T0 + 2 * S, 2 * S)));
    }

    #[test]
    fn burst_then_limited() {
        let r = rate(4, 1, 1);
        let mut key = Key::default();
        for i in 0..5 {
            let d = key.call(T0, &r, 1);
            assert!(!d.limited, "request {i}");
            assert_eq!(d.remaining, 4 - i);
            assert_eq!(d.reset_after_s, i + 1);
            assert_eq!(d.retry_after_s, -1);
        }
        let d = key.call(T0, &r, 1);
        assert_eq!(d.reply(), [1, 5, 0, 1, 5]);
        assert_eq!(d.retry_after_ms, 1000);
        assert_eq!(d.store, None);
    }

    /// redis-cell's own test table (`it_rate_limits`): limit 5, 1 per second.
    /// Columns: ms after start, quantity, remaining, reset_after (ms),
    /// retry_after (ms, -1 = none), limited.
    #[test]
    fn redis_cell_table() {
        let r = rate(4, 1, 1);
        let cases: [(i64, i64, i64, i64, i64, bool); 15] = [
            (0, 6, 5, 0, -1, true),
            (0, 1, 4, 1000, -1, false),
            (0, 1, 3, 2000, -1, false),
            (0, 1, 2, 3000, -1, false),
            (0, 1, 1, 4000, -1, false),
            (0, 1, 0, 5000, -1, false),
            (0, 1, 0, 5000, 1000, true),
            (3000, 1, 2, 3000, -1, false),
            (3100, 1, 1, 3900, -1, false),
            (4000, 1, 1, 4000, -1, false),
            (8000, 1, 4, 1000, -1, false),
            (9500, 1, 4, 1000, -1, false),
            (9500, 0, 4, 1000, -1, false),
            (9500, 2, 2, 3000, -1, false),
            (9500, 5, 2, 3000, 3000, true),
        ];
        let mut key = Key::default();
        for (i, &(at_ms, qty, remaining, reset_ms, retry_ms, limited)) in cases.iter().enumerate() {
            let d = key.call(T0 + at_ms * MS, &r, qty);
            assert_eq!(d.limited, limited, "case {i}");
            assert_eq!(d.limit, 5, "case {i}");
            assert_eq!(d.remaining, remaining, "case {i}");
            assert_eq!(d.retry_after_ms, retry_ms, "case {i}");
            let retry_s = if retry_ms < 0 {
                -1
            } else {
                (retry_ms + 999) / 1000
            };
            assert_eq!(d.retry_after_s, retry_s, "case {i}");
            assert_eq!(d.reset_after_s, (reset_ms + 999) / 1000, "case {i}");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        // 10 per second: interval 100 ms, limit 2.
        let r = rate(1, 10, 1);
        let d = throttle(None, T0, &r, 2).unwrap();
        assert!(!d.limited);
        let (tat, _) = d.store.unwrap();
        assert_eq!(tat, T0 + 200 * MS);
        let d = throttle(Some(tat), T0 + 30 * MS, &r, 1).unwrap();
        assert!(d.limited);
        assert_eq!(d.retry_after_ms, 70);
        assert_eq!(d.retry_after_s, 1);
        assert_eq!(d.reset_after_s, 1);
        assert_eq!(d.remaining, 0);

        // 1 per 10 s, limit 1, retry 9.5 s → 10 s.
        let r = rate(0, 1, 10);
        let (tat, _) = throttle(None, T0, &r, 1).unwrap().store.unwrap();
        let d = throttle(Some(tat), T0 + 500 * MS, &r, 1).unwrap();
        assert_eq!(d.reply(), [1, 1, 0, 10, 10]);
        assert_eq!(d.retry_after_ms, 9_500);
    }

    #[test]
    fn sub_millisecond_parts_do_not_round_up_seconds() {
        // redis-cell adds one second only for a non-zero *millisecond* part.
        assert_eq!(reply_seconds(2 * i128::from(S) + 400_000), 2);
        assert_eq!(reply_seconds(2 * i128::from(S) + 1_000_000), 3);
        assert_eq!(reply_seconds(0), 0);
        assert_eq!(reply_seconds(999_999), 0);
        assert_eq!(reply_seconds(1_000_000), 1);
        assert_eq!(reply_seconds(-i128::from(S)), -1);
        assert_eq!(ceil_ms(1), 1);
        assert_eq!(ceil_ms(1_000_000), 1);
        assert_eq!(ceil_ms(1_000_001), 2);
    }

    #[test]
    fn quantity_zero_peeks_without_storing() {
        let r = rate(15, 30, 60);
        let d = throttle(None, T0, &r, 0).unwrap();
        assert_eq!(d.reply(), [0, 16, 16, -1, 0]);
        assert_eq!(d.store, None);

        let tat = T0 + 10 * S;
        let d = throttle(Some(tat), T0, &r, 0).unwrap();
        assert_eq!(d.reply(), [0, 16, 11, -1, 10]);
        assert_eq!(d.store, None);

        // Peeking a full bucket is still "allowed".
        let tat = T0 + 32 * S;
        let d = throttle(Some(tat), T0, &r, 0).unwrap();
        assert_eq!(d.reply(), [0, 16, 0, -1, 32]);
    }

    #[test]
    fn quantity_larger_than_burst_is_never_allowed() {
        let r = rate(2, 1, 1);
        let d = throttle(None, T0, &r, 4).unwrap();
        assert_eq!(d.reply(), [1, 3, 3, -1, 0]);
        assert_eq!(d.retry_after_ms, -1);
        assert_eq!(d.store, None);
        // Exactly the limit passes on an empty key.
        let d = throttle(None, T0, &r, 3).unwrap();
        assert_eq!(d.reply(), [0, 3, 0, -1, 3]);
    }

    #[test]
    fn past_tat_counts_as_absent() {
        let r = rate(15, 30, 60);
        let fresh = throttle(None, T0, &r, 1).unwrap();
        let stale = throttle(Some(T0 - 100 * S), T0, &r, 1).unwrap();
        assert_eq!(fresh, stale);
    }

    #[test]
    fn recovers_over_time() {
        let r = rate(0, 1, 1);
        let mut key = Key::default();
        assert!(!key.call(T0, &r, 1).limited);
        assert!(key.call(T0 + 999 * MS, &r, 1).limited);
        assert!(!key.call(T0 + S, &r, 1).limited);
        assert!(key.call(T0 + S + 1, &r, 1).limited);
    }

    #[test]
    fn invalid_arguments() {
        assert_eq!(
            throttle(None, T0, &rate(1, 0, 1), 1),
            Err(GcraError::InvalidRate)
        );
        assert_eq!(
            throttle(None, T0, &rate(1, -1, 1), 1),
            Err(GcraError::InvalidRate)
        );
        assert_eq!(
            throttle(None, T0, &rate(1, 1, 0), 1),
            Err(GcraError::InvalidRate)
        );
        assert_eq!(
            throttle(None, T0, &rate(1, 1, -5), 1),
            Err(GcraError::InvalidRate)
        );
        assert_eq!(
            throttle(None, T0, &rate(-1, 1, 1), 1),
            Err(GcraError::InvalidRate)
        );
        assert_eq!(
            throttle(None, T0, &rate(1, 1, 1), -1),
            Err(GcraError::InvalidQuantity)
        );
        // More than one unit per nanosecond truncates to a zero interval.
        assert_eq!(
            throttle(None, T0, &rate(1, 2_000_000_000, 1), 1),
            Err(GcraError::InvalidRate)
        );
    }

    #[test]
    fn interval_truncates_like_redis_cell() {
        assert_eq!(rate(0, 3, 1).emission_interval_ns(), Ok(333_333_333));
        assert_eq!(rate(0, 30, 60).emission_interval_ns(), Ok(2 * S));
        assert_eq!(rate(0, 1_000_000_000, 1).emission_interval_ns(), Ok(1));
    }

    #[test]
    fn sub_microsecond_interval_has_sane_remaining() {
        // 1 s / 4e8 = 2.5 ns, truncated to a 2 ns interval; limit 10.
        let r = rate(9, 400_000_000, 1);
        let d = throttle(None, T0, &r, 1).unwrap();
        assert!(!d.limited);
        assert_eq!(d.remaining, 9);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let max = i64::MAX;
        let cases = [
            rate(max, 1, max),
            rate(max, max, max),
            rate(0, 1, max),
            rate(max, max, 1),
            rate(max - 1, 1, 1),
        ];
        for r in cases {
            for qty in [0, 1, 2, max] {
                for tat in [None, Some(0), Some(T0), Some(max), Some(i64::MIN)] {
                    for now in [0, T0, max, i64::MIN] {
                        // Errors are fine (a rate too fast); panics are not.
                        if let Ok(d) = throttle(tat, now, &r, qty) {
                            if let Some((_, ttl)) = d.store {
                                assert!(ttl > 0);
                            }
                            assert!(d.limit >= 1);
                        }
                    }
                }
            }
        }
        let d = throttle(None, T0, &rate(max, 1, max), 1).unwrap();
        assert!(!d.limited);
        assert_eq!(d.limit, max);
        assert_eq!(d.store, Some((max, max - T0)));
    }

    #[test]
    fn reply_shape() {
        let d = Decision {
            limited: true,
            limit: 3,
            remaining: 0,
            retry_after_s: 2,
            reset_after_s: 5,
            retry_after_ms: 1500,
            store: None,
        };
        assert_eq!(d.reply(), [1, 3, 0, 2, 5]);
    }
}
