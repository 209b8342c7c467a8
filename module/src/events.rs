//! The lifecycle stream (contract section 7): the events the registry
//! recorded during a command or a timer tick, appended with `XADD` to
//! `broker:events` — on a cluster to this master's own stream
//! `broker:events:{<tag>}` ([`broker::names::events_stream_in`]) — in the
//! same command, so they are in the same replication transaction and AOF
//! entry as the change itself and survive a gateway crash.
//!
//! Only a master writes them (not a replica applying the master's stream,
//! not a server replaying its AOF: those entries arrive as the master's
//! `XADD`s). The `XADD` is replicated as Redis rewrites it (explicit id,
//! exact trim), so replicas hold the same stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use broker::names;
use redis_module::{CallOptionsBuilder, CallResult, Context, ContextFlags, RedisValue};

use crate::{delivery, ffi, state};

/// The stream's `MAXLEN ~` from the `EVENTS` module argument; 0: no stream.
pub static MAXLEN: AtomicU64 = AtomicU64::new(10_000);

/// This master's stream name on a cluster, and when it was taken (ms).
static CLUSTER_STREAM: Mutex<Option<(String, u64)>> = Mutex::new(None);

/// How long a cluster stream name is used before the slot map is read again.
const CLUSTER_NAME_TTL_MS: u64 = 1000;

/// Appends what the registry recorded since the last call. Called after
/// every command ([`crate::guard::run`]) and timer tick.
pub fn flush(ctx: &Context) {
    let events = state::with(|s| s.registry.take_lifecycle());
    if events.is_empty() || !delivery::allowed(ctx) {
        return;
    }
    let maxlen = MAXLEN.load(Ordering::Relaxed);
    let Some(stream) = stream_name(ctx) else {
        state::with(|s| s.stats.events_failed += events.len() as u64);
        return;
    };
    let now = state::now_ms();
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let maxlen = maxlen.to_string();
    let (mut written, mut failed) = (0, 0);
    for event in &events {
        let fields = event.fields(now);
        let mut args: Vec<&[u8]> = Vec::with_capacity(5 + fields.len() * 2);
        args.extend([
            stream.as_bytes(),
            b"MAXLEN".as_slice(),
            b"~",
            maxlen.as_bytes(),
            b"*",
        ]);
        for (name, value) in &fields {
            args.push(name.as_bytes());
            args.push(value.as_bytes());
        }
        let appended = ffi::call_replicated(ctx, "XADD", &args).unwrap_or_else(|| {
            let reply: CallResult = ctx.call_ext("XADD", &options, args.as_slice());
            reply
                .map(|_| ())
                .map_err(|err| err.to_utf8_string().unwrap_or_default())
        });
        match appended {
            Ok(()) => written += 1,
            Err(err) => {
                failed += 1;
                if failed == 1 {
                    ctx.log_warning(&format!("broker: could not append to {stream}: {err}"));
                }
            }
        }
    }
    state::with(|s| {
        s.stats.events_written += written;
        s.stats.events_failed += failed;
    });
}

/// The stream this server writes: `broker:events`, or on a cluster the
/// one in a slot this master serves (`None` while it serves none).
pub fn stream_name(ctx: &Context) -> Option<String> {
    if !ctx.get_flags().contains(ContextFlags::CLUSTER) {
        return Some(names::EVENTS_STREAM.to_string());
    }
    let now = state::now_ms();
    let mut cached = CLUSTER_STREAM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((name, at)) = cached.as_ref() {
        if now.saturating_sub(*at) < CLUSTER_NAME_TTL_MS {
            return Some(name.clone());
        }
    }
    let slots = my_slots(ctx)?;
    let name =
        names::events_stream_in(|slot| slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))?;
    *cached = Some((name.clone(), now));
    Some(name)
}

/// The slot ranges this master serves, from `CLUSTER MYID` and `CLUSTER SLOTS`.
fn my_slots(ctx: &Context) -> Option<Vec<(u16, u16)>> {
    let me = match ctx.call("CLUSTER", &["MYID"]).ok()? {
        RedisValue::BulkString(s) | RedisValue::SimpleString(s) => s,
        RedisValue::BulkRedisString(s) => s.to_string_lossy(),
        _ => return None,
    };
    let RedisValue::Array(ranges) = ctx.call("CLUSTER", &["SLOTS"]).ok()? else {
        return None;
    };
    let mut out = Vec::new();
    for range in ranges {
        let RedisValue::Array(parts) = range else {
            continue;
        };
        let (
            Some(RedisValue::Integer(start)),
            Some(RedisValue::Integer(end)),
            Some(RedisValue::Array(master)),
        ) = (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let id = match master.get(2) {
            Some(RedisValue::BulkString(s) | RedisValue::SimpleString(s)) => s.clone(),
            Some(RedisValue::BulkRedisString(s)) => s.to_string_lossy(),
            _ => continue,
        };
        if id == me {
            let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(*end)) else {
                continue;
            };
            out.push((start, end));
        }
    }
    Some(out)
}
