//! `BROKER.PUBLISH` and its replication form `BROKER.APPLY.PUBLISH`.
//!
//! One call does the whole publish: membership check of the sender, rate
//! limit, sequence number, history, and fan-out. The `msg` frame is encoded
//! once here; the same bytes go into history and, wrapped in one envelope,
//! to every interested node.

use broker::gcra::Rate;
use broker::names;
use broker::registry::HistoryConfig;
use broker::wire::{self, Format, Sender};
use redis_module::{Context, RedisResult, RedisString, RedisValue};

use crate::args::{unknown, Args};
use crate::commands::throttle;
use crate::error::{self, Error};
use crate::{delivery, guard, reply, state};

/// Longest event name accepted.
const MAX_EVENT_LEN: usize = 256;

/// The `RATE key burst count period` option.
struct RateOption<'a> {
    key: &'a RedisString,
    rate: Rate,
}

/// `BROKER.PUBLISH room event payload [options]`: sequence, history, fan-out in one call.
pub fn publish(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    if ctx.is_keys_position_request() {
        report_keys(ctx, &args);
        return Ok(RedisValue::NoReply);
    }
    guard::run(ctx, args, run_publish)
}

/// `BROKER.BROADCAST event payload [FORMAT f] [NS namespace]`: a server
/// message to every connection on every node (or, with `NS`, to connections
/// in a room of that namespace). Not stored, no sequence: the frame's `room`
/// is `*` (or `namespace:*`), `seq` 0 and `epoch` empty.
pub fn broadcast(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_broadcast)
}

fn run_broadcast(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let event = args.str("event")?;
    check_event(event)?;
    let payload = args.bytes("payload")?;
    let (mut format, mut namespace) = (Format::Msgpack, None);
    while !args.is_empty() {
        match args.keyword()?.as_str() {
            "FORMAT" => format = format_option(&mut args)?,
            "NS" => {
                let ns = args.str("namespace")?;
                names::validate_namespace(ns)?;
                namespace = Some(ns);
            }
            other => return Err(unknown(other)),
        }
    }
    let data = wire::encode_payload(format, payload)?;
    let room = namespace.map_or_else(|| "*".to_string(), |ns| format!("{ns}:*"));
    let ts = state::now_ms();
    let frame = wire::encode_msg_frame(&room, event, &data, 0, "", ts, None);
    let envelope = wire::encode_broadcast_envelope(namespace, &frame, ts);
    let nodes = state::with(|s| {
        let nodes: Vec<String> = s.registry.nodes().into_iter().map(|n| n.node).collect();
        delivery::to_nodes(ctx, &s.registry, &mut s.stats, &nodes, &envelope);
        nodes.len() as u64
    });
    Ok(reply::int(nodes))
}

/// Tells Redis (`COMMAND GETKEYS`, cluster routing) which arguments are
/// keys: the room, and the key after `RATE` when there is one.
fn report_keys(ctx: &Context, argv: &[RedisString]) {
    ctx.key_at_pos(1);
    let mut pos = 4;
    while pos < argv.len() {
        let word = argv[pos].as_slice();
        let takes = match word.to_ascii_uppercase().as_slice() {
            b"FORMAT" | b"EXCEPT" | b"FROM" => 1,
            b"HISTORY" => 2,
            b"RATE" => {
                if pos + 1 < argv.len() {
                    ctx.key_at_pos((pos + 1) as i32);
                }
                4
            }
            _ => 0,
        };
        pos += 1 + takes;
    }
}

/// Reads the value of a `FORMAT` option.
fn format_option(args: &mut Args<'_>) -> error::Result<Format> {
    let name = args.str("format")?;
    Format::parse(name).ok_or_else(|| Error::Syntax(format!("unknown format '{name}'")))
}

fn check_event(event: &str) -> error::Result<()> {
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(Error::Syntax(format!(
            "event must be 1 to {MAX_EVENT_LEN} bytes"
        )));
    }
    Ok(())
}

fn run_publish(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let room = args.str("room")?;
    names::validate_room(room)?;
    let event = args.str("event")?;
    check_event(event)?;
    let payload = args.bytes("payload")?;
    let (mut format, mut except, mut from, mut config, mut rate) =
        (Format::Msgpack, None, None, None, None);
    while !args.is_empty() {
        match args.keyword()?.as_str() {
            "FORMAT" => format = format_option(&mut args)?,
            "EXCEPT" => {
                let conn = args.str("conn")?;
                names::validate_conn(conn)?;
                except = Some(conn);
            }
            "FROM" => {
                let conn = args.str("conn")?;
                names::validate_conn(conn)?;
                from = Some(conn);
            }
            "HISTORY" => {
                let size = args.u32("history size")?;
                let ttl_s = args.u64("history ttl")?;
                config = Some(HistoryConfig {
                    size,
                    ttl_ms: ttl_s.saturating_mul(1000),
                });
            }
            "RATE" => {
                let key = args.raw("RATE key")?;
                let burst = args.i64("RATE burst")?;
                let rate_value = Rate {
                    max_burst: burst.saturating_sub(1),
                    count: args.i64("RATE count")?,
                    period_s: args.i64("RATE period")?,
                };
                if burst < 1 {
                    return Err(Error::Integer("RATE burst"));
                }
                rate = Some(RateOption {
                    key,
                    rate: rate_value,
                });
            }
            other => return Err(unknown(other)),
        }
    }
    let data = wire::encode_payload(format, payload)?;

    // Membership first: a refused publish must not use up rate budget.
    let plan = state::with(|s| s.registry.plan_publish(room, from, config))?;
    if let Some(limit) = &rate {
        let decision = throttle::check(ctx, limit.key, &limit.rate, 1)?;
        if decision.limited {
            return Err(Error::RateLimited {
                retry_ms: decision.retry_after_ms.max(1),
            });
        }
    }

    let seq = state::with(|s| {
        let epoch = plan.epoch.clone().unwrap_or_else(|| s.new_epoch());
        let ts = state::now_ms();
        let sender = match (from, plan.sender_user.as_deref()) {
            (Some(conn), Some(user)) => Some(Sender { user, conn }),
            _ => None,
        };
        let frame = wire::encode_msg_frame(room, event, &data, plan.seq, &epoch, ts, sender);
        let nodes = s
            .registry
            .apply_publish(room, plan.seq, &epoch, ts, plan.config, &frame);
        replicate_apply(ctx, room, plan.seq, &epoch, ts, plan.config, &frame);
        s.stats.publishes += 1;
        let envelope = wire::encode_msg_envelope(room, plan.seq, &epoch, except, &frame, ts);
        delivery::to_nodes(ctx, &s.registry, &mut s.stats, &nodes, &envelope);
        plan.seq
    });
    Ok(reply::int(seq))
}

fn replicate_apply(
    ctx: &Context,
    room: &str,
    seq: u64,
    epoch: &str,
    ts: u64,
    config: HistoryConfig,
    frame: &[u8],
) {
    let (seq, ts, size, ttl) = (
        seq.to_string(),
        ts.to_string(),
        config.size.to_string(),
        config.ttl_ms.to_string(),
    );
    ctx.replicate(
        "BROKER.APPLY.PUBLISH",
        &[
            room.as_bytes(),
            seq.as_bytes(),
            epoch.as_bytes(),
            ts.as_bytes(),
            size.as_bytes(),
            ttl.as_bytes(),
            frame,
        ],
    );
}

/// `BROKER.APPLY.PUBLISH`: the replication form of a publish.
pub fn apply_publish(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_apply)
}

/// Stores a message exactly as the master did. Delivers nothing: the master
/// already delivered it.
fn run_apply(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let room = args.str("room")?;
    names::validate_room(room)?;
    let seq = args.u64("seq")?;
    let epoch = args.str("epoch")?;
    let ts = args.u64("ts")?;
    let config = HistoryConfig {
        size: args.u32("history size")?,
        ttl_ms: args.u64("history ttl_ms")?,
    };
    let frame = args.bytes("frame")?;
    args.done()?;
    wire::check_msgpack(frame)?;
    state::with(|s| {
        s.registry
            .apply_publish(room, seq, epoch, ts, config, frame);
        s.stats.publishes += 1;
    });
    ctx.replicate_verbatim();
    Ok(reply::int(seq))
}

/// `BROKER.APPLY.DROP room`: the replication form of the sweep dropping an idle room.
pub fn apply_drop(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_drop)
}

/// Drops an empty room whose history expired (the master's sweep decided).
fn run_drop(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let room = args.str("room")?;
    names::validate_room(room)?;
    args.done()?;
    let dropped = state::with(|s| s.registry.drop_room(room));
    if dropped {
        ctx.replicate_verbatim();
    }
    Ok(reply::int(u64::from(dropped)))
}
