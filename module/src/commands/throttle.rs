//! `BROKER.THROTTLE`: GCRA rate limiting with redis-cell's reply.
//!
//! The algorithm is `broker::gcra` (pure, unit-tested); this file only reads
//! and writes the arrival time. The arrival time is a native string key
//! (nanoseconds since the Unix epoch) with a native expiry, written through
//! the low-level key API and replicated as `SET key tat PXAT ms` — the
//! *result* of the time-dependent decision, so a replica stores exactly what
//! the master stored instead of deciding again with its own clock.

use std::time::Duration;

use broker::command::{SetArrival, Throttle};
use broker::gcra::{self, Decision, Rate};
use redis_module::{raw, Context, RedisResult, RedisString, RedisValue};

use super::{parse, replicate};
use crate::error::{self, Error};
use crate::{guard, state};

/// `BROKER.THROTTLE key max_burst count period [quantity]`: GCRA, redis-cell's reply.
pub fn throttle(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_throttle)
}

fn run_throttle(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: Throttle = parse(argv)?;
    let key = RedisString::create_from_slice(ctx.get_raw(), &cmd.key);
    let decision = check(ctx, &key, &cmd.rate, cmd.quantity)?;
    Ok(RedisValue::Array(
        decision
            .reply()
            .iter()
            .map(|n| RedisValue::Integer(*n))
            .collect(),
    ))
}
/// Runs one GCRA decision on `key`: reads the stored arrival time, stores
/// the new one when allowed (and replicates it), counts limited calls.
pub fn check(
    ctx: &Context,
    key: &RedisString,
    rate: &Rate,
    quantity: i64,
) -> error::Result<Decision> {
    let now_ns = state::now_ns();
    let handle = ctx.open_key_writable(key);
    let tat = match handle.key_type() {
        raw::KeyType::Empty => None,
        raw::KeyType::String => {
            let dma = handle.as_string_dma().map_err(|_| Error::WrongType)?;
            let text = std::str::from_utf8(&dma).map_err(|_| Error::WrongType)?;
            Some(text.parse::<i64>().map_err(|_| Error::WrongType)?)
        }
        _ => return Err(Error::WrongType),
    };
    let decision = gcra::throttle(tat, now_ns, rate, quantity)?;
    match decision.store {
        Some((new_tat, ttl_ns)) => {
            let tat_text = new_tat.to_string();
            handle
                .write(&tat_text)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let ttl_ms = u64::try_from(ttl_ns.saturating_add(999_999) / 1_000_000)
                .unwrap_or(1)
                .max(1);
            handle
                .set_expire(Duration::from_millis(ttl_ms))
                .map_err(|e| Error::Internal(e.to_string()))?;
            let expire_at_ms = state::now_ms().saturating_add(ttl_ms);
            replicate(
                ctx,
                &SetArrival {
                    key: key.as_slice().to_vec(),
                    tat_ns: new_tat,
                    expire_at_ms,
                },
            );
        }
        None => {
            if decision.limited {
                state::with(|s| s.stats.throttled += 1);
            }
        }
    }
    Ok(decision)
}
