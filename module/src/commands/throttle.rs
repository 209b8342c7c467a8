//! `BROKER.THROTTLE`: GCRA rate limiting with redis-cell's reply.
//!
//! The algorithm is `broker::gcra` (pure, unit-tested); this file only reads
//! and writes the arrival time. The arrival time is a native string key
//! (nanoseconds since the Unix epoch) with a native expiry, written through
//! the low-level key API and replicated as `SET key tat PXAT ms` — the
//! *result* of the time-dependent decision, so a replica stores exactly what
//! the master stored instead of deciding again with its own clock.

use std::time::Duration;

use broker::command::{Command, SetArrival, Throttle};
use broker::gcra::{self, Decision, Rate};
use redis_module::key::RedisKeyWritable;
use redis_module::{raw, Context};

use super::parse_words;
use crate::error::{self, Error};
use crate::ffi::{self, HeldString};
use crate::guard::Argv;
use crate::state;

crate::raw_command! {
    /// `BROKER.THROTTLE key max_burst count period [quantity]`: GCRA,
    /// redis-cell's reply.
    throttle => run_throttle
}

fn run_throttle(ctx: &Context, argv: &Argv<'_>) -> error::Result<[i64; 5]> {
    let cmd: Throttle = parse_words(argv.words)?;
    // The key argument itself (parse checked that it is there).
    let key = argv
        .string(1)
        .ok_or_else(|| Error::Internal("no key argument".into()))?;
    let decision = check(ctx, key, &cmd.rate, cmd.quantity)?;
    Ok(decision.reply())
}
/// Runs one GCRA decision on `key`: reads the stored arrival time, stores
/// the new one when allowed (and replicates it), counts limited calls.
///
/// The hot path of every rate-limited call, so it allocates nothing of its
/// own: the arrival time is read and written in place (string DMA), and
/// the `SET` is replicated from stack buffers.
/// `key` is Redis's string of the key.
pub fn check(
    ctx: &Context,
    key: HeldString<'_>,
    rate: &Rate,
    quantity: i64,
) -> error::Result<Decision> {
    let now_ns = state::now_ns();
    let handle = RedisKeyWritable::open_with_redis_string(ctx.get_raw(), key.as_ptr());
    let key_type = handle.key_type();
    let mut dma = match key_type {
        raw::KeyType::Empty | raw::KeyType::String => {
            handle.as_string_dma().map_err(|_| Error::WrongType)?
        }
        _ => return Err(Error::WrongType),
    };
    let tat = if key_type == raw::KeyType::Empty {
        None
    } else {
        let text = std::str::from_utf8(&dma).map_err(|_| Error::WrongType)?;
        Some(text.parse::<i64>().map_err(|_| Error::WrongType)?)
    };
    let decision = gcra::throttle(tat, now_ns, rate, quantity)?;
    match decision.store {
        Some((new_tat, ttl_ns)) => {
            let mut tat_buf = [0u8; 24];
            let tat_text = decimal(&mut tat_buf, new_tat);
            dma.write(tat_text)
                .map_err(|e| Error::Internal(e.to_string()))?;
            let ttl_ms = u64::try_from(ttl_ns.saturating_add(999_999) / 1_000_000)
                .unwrap_or(1)
                .max(1);
            handle
                .set_expire(Duration::from_millis(ttl_ms))
                .map_err(|e| Error::Internal(e.to_string()))?;
            // The same clock reading as the decision's (one read per call).
            let now_ms = u64::try_from(now_ns / 1_000_000).unwrap_or(0);
            let expire_at_ms = now_ms.saturating_add(ttl_ms);
            let mut ms_buf = [0u8; 24];
            let ms_text = decimal(&mut ms_buf, i64::try_from(expire_at_ms).unwrap_or(i64::MAX));
            replicate_set(ctx, key, tat_text, ms_text);
        }
        None => {
            if decision.limited {
                state::with(|s| s.stats.throttled += 1);
            }
        }
    }
    Ok(decision)
}

/// `n` in decimal (as `{n}` formats it), written into the end of `buf`
/// digit by digit: the formatting machinery was 4 % of a THROTTLE.
fn decimal(buf: &mut [u8; 24], n: i64) -> &[u8] {
    // 24 bytes hold any i64 (20 digits and a sign).
    let mut pos = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    &buf[pos..]
}

/// Replicates `SET key tat PXAT ms` (what [`SetArrival`] describes).
fn replicate_set(ctx: &Context, key: HeldString<'_>, tat: &[u8], expire_at_ms: &[u8]) {
    // The command as the type describes it (checked in debug builds).
    debug_assert_eq!(SetArrival::NAME, "SET");
    ffi::replicate_set_pxat(ctx, key, tat, expire_at_ms);
}
