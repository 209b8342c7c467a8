//! Rooms: `JOIN`, `LEAVE`, `ROOM.MEMBERS`, `ROOM.COUNT`, `HISTORY`.

use broker::names;
use redis_module::{Context, RedisResult, RedisString, RedisValue};

use crate::args::{self, unknown, Args};
use crate::error;
use crate::{delivery, guard, reply, state};

/// Reads `room user conn node`, validated.
fn member_args<'a>(args: &mut Args<'a>) -> error::Result<(&'a str, &'a str, &'a str)> {
    let room = args.str("room")?;
    names::validate_room(room)?;
    let user = args.str("user")?;
    names::validate_user(user)?;
    let conn = args.str("conn")?;
    names::validate_conn(conn)?;
    Ok((room, user, conn))
}

/// `BROKER.JOIN room user conn node [PRESENCE] [MAXROOMS n] [SINCE seq epoch] [EPOCH e]`: adds a connection to a room.
pub fn join(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, join_room)
}

fn join_room(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let (room, user, conn) = member_args(&mut args)?;
    let node = args.str("node")?;
    names::validate_node(node)?;
    let (mut presence, mut max_rooms, mut since, mut epoch) = (false, None, None, None);
    while !args.is_empty() {
        match args.keyword()?.as_str() {
            "PRESENCE" => presence = true,
            "MAXROOMS" => max_rooms = Some(args.u32("MAXROOMS")?),
            "SINCE" => since = Some((args.u64("since seq")?, args.str("since epoch")?)),
            "EPOCH" => epoch = Some(args.str("epoch")?),
            other => return Err(unknown(other)),
        }
    }
    let now = state::now_ms();
    let value = state::with(|s| -> error::Result<RedisValue> {
        let new_epoch = match epoch {
            Some(e) => e.to_string(),
            None => s.new_epoch(),
        };
        let outcome = s
            .registry
            .join(room, user, conn, node, presence, max_rooms, &new_epoch)?;
        if let Some(event) = &outcome.event {
            delivery::presence(ctx, &s.registry, &mut s.stats, std::slice::from_ref(event));
        }
        let mut replicated = vec![room, user, conn, node];
        if presence {
            replicated.push("PRESENCE");
        }
        replicated.extend(["EPOCH", outcome.epoch.as_str()]);
        ctx.replicate("BROKER.JOIN", replicated.as_slice());
        let (recovered, frames) = match since {
            Some((seq, epoch)) => {
                let r = s.registry.recover(room, seq, epoch, now);
                (r.recovered, reply::frames(&r.frames))
            }
            None => (false, RedisValue::Array(Vec::new())),
        };
        Ok(reply::map([
            ("first", reply::int(u64::from(outcome.first))),
            ("seq", reply::int(outcome.seq)),
            ("epoch", reply::text(&outcome.epoch)),
            ("recovered", reply::int(u64::from(recovered))),
            ("messages", frames),
        ]))
    })?;
    Ok(value)
}

/// `BROKER.LEAVE room user conn [GRACE ms]`: removes a connection from a
/// room. `GRACE` says the connection went away (it did not ask to leave):
/// the user lingers for `ms` if this was its last connection in the room.
pub fn leave(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, leave_room)
}

fn leave_room(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let (room, user, conn) = member_args(&mut args)?;
    let until = args::linger_until(&mut args, state::now_ms())?;
    let was_member = state::with(|s| {
        let (was_member, event) = s.registry.leave(room, user, conn, until);
        if let Some(event) = &event {
            delivery::presence(ctx, &s.registry, &mut s.stats, std::slice::from_ref(event));
        }
        was_member
    });
    match until {
        _ if !was_member => {}
        Some(until) => {
            let until = until.to_string();
            ctx.replicate("BROKER.LEAVE", &[room, user, conn, "UNTIL", until.as_str()]);
        }
        None => ctx.replicate_verbatim(),
    }
    Ok(reply::int(u64::from(was_member)))
}

/// `BROKER.APPLY.LEAVE room user`: ends a lingering presence and sends its
/// leave event. The module's timer does this when a grace runs out and
/// replicates it as this command; by hand it ends a grace early.
pub fn apply_leave(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, end_lingering)
}

fn end_lingering(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let room = args.str("room")?;
    names::validate_room(room)?;
    let user = args.str("user")?;
    names::validate_user(user)?;
    args.done()?;
    let ended = state::with(|s| {
        let event = s.registry.end_lingering(room, user);
        if let Some(event) = &event {
            delivery::presence(ctx, &s.registry, &mut s.stats, std::slice::from_ref(event));
        }
        event.is_some()
    });
    if ended {
        ctx.replicate_verbatim();
    }
    Ok(reply::int(u64::from(ended)))
}

/// Reads the single `room` argument of a read command.
fn room_only(argv: &[RedisString]) -> error::Result<&str> {
    let mut args = Args::new(argv);
    let room = args.str("room")?;
    names::validate_room(room)?;
    args.done()?;
    Ok(room)
}

/// `BROKER.ROOM.MEMBERS room`: distinct users with their connection counts.
pub fn room_members(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, members)
}

fn members(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let room = room_only(argv)?;
    let members = state::with(|s| s.registry.room_members(room));
    let map = members
        .into_iter()
        .map(|(user, n)| {
            (
                redis_module::redisvalue::RedisValueKey::String(user),
                reply::int(u64::from(n)),
            )
        })
        .collect();
    Ok(RedisValue::OrderedMap(map))
}

/// `BROKER.ROOM.COUNT room`: users and connections, O(1).
pub fn room_count(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, count)
}

fn count(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let room = room_only(argv)?;
    let (users, conns) = state::with(|s| s.registry.room_count(room));
    Ok(reply::map([
        ("users", reply::int(users)),
        ("connections", reply::int(conns)),
    ]))
}

/// `BROKER.HISTORY room [SINCE seq] [LIMIT n]`: retained messages.
pub fn history(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, read_history)
}

fn read_history(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let room = args.str("room")?;
    names::validate_room(room)?;
    let (mut since, mut limit) = (0, None);
    while !args.is_empty() {
        match args.keyword()?.as_str() {
            "SINCE" => since = args.u64("SINCE")?,
            "LIMIT" => limit = Some(usize::try_from(args.u64("LIMIT")?).unwrap_or(usize::MAX)),
            other => return Err(unknown(other)),
        }
    }
    let now = state::now_ms();
    Ok(state::with(|s| {
        let read = s.registry.history(room, since, limit, now);
        reply::map([
            ("seq", reply::int(read.seq)),
            ("epoch", reply::text(read.epoch)),
            ("messages", reply::frames(&read.frames)),
        ])
    }))
}
