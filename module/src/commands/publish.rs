//! `BROKER.PUBLISH`, `BROKER.BROADCAST`, and the replication forms
//! `BROKER.APPLY.PUBLISH` and `BROKER.APPLY.DROP`.
//!
//! One call does the whole publish: membership check of the sender, rate
//! limit, sequence number, history, and fan-out. The `msg` frame is encoded
//! once here; the same bytes go into history and, wrapped in one envelope,
//! to every interested node.

use std::os::raw::c_int;

use broker::command::{ApplyDrop, ApplyPublish, Broadcast, Publish, Refusal};
use broker::protocol::{self, Sender};
use broker::{envelope, msgpack, payload};
use redis_module::{raw, Context, RedisResult, RedisString, RedisValue};

use super::{parse, parse_words, replicate, throttle};
use crate::error;
use crate::guard::{self, Argv};
use crate::{delivery, ffi, reply, state};

/// `BROKER.PUBLISH room event payload [options]`: sequence, history, fan-out
/// in one call; with `VOLATILE` fan-out only (reply 0). A plain command
/// function ([`guard::raw`]).
///
/// # Safety
/// Called by Redis only, with the command's arguments.
pub unsafe extern "C" fn publish(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    let context = Context::new(ctx);
    if context.is_keys_position_request() {
        // SAFETY: Redis's own arguments.
        let reported = unsafe {
            ffi::with_args(argv, argc, |words| {
                guard::quietly(|| report_keys(&context, words.get(1..).unwrap_or_default()))
            })
        };
        return if reported.is_some() {
            raw::Status::Ok as c_int
        } else {
            raw::Status::Err as c_int
        };
    }
    // SAFETY: Redis's own arguments.
    unsafe { guard::raw(ctx, argv, argc, run_publish) }
}

/// Tells Redis (`COMMAND GETKEYS`, cluster routing) which arguments are
/// keys, as [`Publish::key_positions`] finds them.
fn report_keys(ctx: &Context, args: &[&[u8]]) {
    for pos in Publish::key_positions(args) {
        // Positions after the command name; Redis counts the name as 0.
        ctx.key_at_pos(i32::try_from(pos + 1).unwrap_or(i32::MAX));
    }
}

/// `BROKER.BROADCAST event payload [FORMAT f] [NS namespace]`: a server
/// message to every connection on every node (or, with `NS`, to connections
/// in a room of that namespace). Not stored, no sequence: the frame's `room`
/// is `*` (or `namespace:*`), `seq` 0 and `epoch` empty.
pub fn broadcast(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_broadcast)
}

fn run_broadcast(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: Broadcast = parse(argv)?;
    let data = payload::encode_payload(cmd.format, &cmd.payload)?;
    let namespace = cmd.namespace.as_deref();
    let room = namespace.map_or_else(|| "*".to_string(), |ns| format!("{ns}:*"));
    let ts = state::now_ms();
    let frame = protocol::encode_msg_frame(&room, &cmd.event, &data, 0, "", ts, None);
    let envelope = envelope::encode_broadcast_envelope(namespace, &frame, ts);
    let nodes = state::with(|s| {
        let nodes: Vec<String> = s.registry.nodes().into_iter().map(|n| n.node).collect();
        delivery::to_nodes(ctx, &s.registry, &mut s.stats, &nodes, &envelope);
        nodes.len() as u64
    });
    Ok(reply::int(nodes))
}

fn run_publish(ctx: &Context, argv: &Argv<'_>) -> error::Result<u64> {
    let cmd: Publish = parse_words(argv.words)?;
    let data = payload::encode_payload(cmd.format, &cmd.payload)?;

    // Membership first: a refused publish must not use up rate budget.
    let plan = state::with(|s| {
        s.registry
            .plan_publish(&cmd.room, cmd.from.as_deref(), cmd.history)
    })?;
    if let Some(limit) = &cmd.rate {
        let key = RedisString::create_from_slice(ctx.get_raw(), &limit.key);
        let decision = throttle::check(ctx, (&key).into(), &limit.rate, 1)?;
        if decision.limited {
            let retry_ms = u64::try_from(decision.retry_after_ms.max(1)).unwrap_or(1);
            return Err(Refusal::RateLimited { retry_ms }.into());
        }
    }

    if cmd.volatile {
        // No sequence, no history, nothing replicated (the rate limit's
        // arrival time was): the room's current members get it, now.
        state::with(|s| {
            let epoch = plan.epoch.as_deref().unwrap_or("");
            let ts = state::now_ms();
            let sender = match (cmd.from.as_deref(), plan.sender_user.as_deref()) {
                (Some(conn), Some(user)) => Some(Sender { user, conn }),
                _ => None,
            };
            let frame = protocol::encode_volatile_msg_frame(
                &cmd.room, &cmd.event, &data, epoch, ts, sender,
            );
            let envelope =
                envelope::encode_volatile_envelope(&cmd.room, cmd.except.as_deref(), &frame, ts);
            let nodes = s.registry.room_nodes(&cmd.room);
            delivery::to_nodes(ctx, &s.registry, &mut s.stats, &nodes, &envelope);
        });
        return Ok(0);
    }

    let seq = state::with(|s| {
        let epoch = plan.epoch.clone().unwrap_or_else(|| s.new_epoch());
        let ts = state::now_ms();
        let sender = match (cmd.from.as_deref(), plan.sender_user.as_deref()) {
            (Some(conn), Some(user)) => Some(Sender { user, conn }),
            _ => None,
        };
        let frame =
            protocol::encode_msg_frame(&cmd.room, &cmd.event, &data, plan.seq, &epoch, ts, sender);
        let applied = cmd.applied(plan.seq, epoch, ts, plan.config, frame);
        let nodes = s.registry.apply_publish(&applied);
        replicate(ctx, &applied);
        s.stats.publishes += 1;
        let envelope = envelope::encode_msg_envelope(
            &cmd.room,
            applied.seq,
            &applied.epoch,
            cmd.except.as_deref(),
            &applied.frame,
            ts,
        );
        delivery::to_nodes(ctx, &s.registry, &mut s.stats, &nodes, &envelope);
        applied.seq
    });
    Ok(seq)
}

/// `BROKER.APPLY.PUBLISH`: the replication form of a publish.
pub fn apply_publish(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_apply)
}

/// Stores a message exactly as the master did. Delivers nothing: the master
/// already delivered it.
fn run_apply(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: ApplyPublish = parse(argv)?;
    msgpack::check(&cmd.frame)?;
    state::with(|s| {
        s.registry.check_apply(&cmd)?;
        s.registry.apply_publish(&cmd);
        s.stats.publishes += 1;
        Ok::<(), error::Error>(())
    })?;
    replicate(ctx, &cmd);
    Ok(reply::int(cmd.seq))
}

/// `BROKER.APPLY.DROP room`: the replication form of the sweep dropping an idle room.
pub fn apply_drop(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_drop)
}

/// Drops an empty room whose history expired (the master's sweep decided).
fn run_drop(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: ApplyDrop = parse(argv)?;
    Ok(reply::int(u64::from(drop_room(ctx, &cmd))))
}

/// Drops the room when it is still idle and replicates the drop; shared
/// with the sweep.
pub fn drop_room(ctx: &Context, cmd: &ApplyDrop) -> bool {
    let dropped = state::with(|s| s.registry.drop_room(&cmd.room));
    if dropped {
        replicate(ctx, cmd);
    }
    dropped
}
