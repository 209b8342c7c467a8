//! Rooms: `JOIN`, `LEAVE`, `APPLY.LEAVE`, `ROOM.MEMBERS`, `ROOM.COUNT`, `HISTORY`.

use broker::command::{ApplyLeave, History, Join, Leave, RoomCount, RoomMembers};
use broker::lifecycle;
use redis_module::redisvalue::RedisValueKey;
use redis_module::{raw, Context, RedisResult, RedisString, RedisValue};

use super::{parse, parse_words, replicate};
use crate::error;
use crate::guard::{self, Argv};
use crate::reply::{self, Field, RawReply};
use crate::{delivery, state};

crate::raw_command! {
    /// `BROKER.JOIN room user conn node [PRESENCE] [MAXROOMS n] [SINCE seq
    /// epoch] [EPOCH e]`: adds a connection to a room.
    join => join_room
}

/// `JOIN`'s reply: a map of `first`, `seq`, `epoch`, `recovered`, `messages`.
struct Joined {
    first: bool,
    seq: u64,
    epoch: String,
    recovered: bool,
    messages: Vec<Vec<u8>>,
}

impl RawReply for Joined {
    fn send(&self, ctx: *mut raw::RedisModuleCtx) {
        reply::send_map(
            ctx,
            [
                ("first", Field::Int(u64::from(self.first))),
                ("seq", Field::Int(self.seq)),
                ("epoch", Field::Text(&self.epoch)),
                ("recovered", Field::Int(u64::from(self.recovered))),
                ("messages", Field::Frames(&self.messages)),
            ],
        );
    }
}

fn join_room(ctx: &Context, argv: &Argv<'_>) -> error::Result<Joined> {
    let mut cmd: Join = parse_words(argv.words)?;
    // A read, after the join; the replicated join has none.
    let since = cmd.since.take();
    let now = state::now_ms();
    state::with(|s| {
        // A room that exists keeps its epoch: a new one is made only for a
        // join that may create the room.
        let new_epoch = match &cmd.epoch {
            Some(e) => e.clone(),
            None if s.registry.has_room(&cmd.room) => String::new(),
            None => s.new_epoch(),
        };
        let outcome = s.registry.join(&cmd, &new_epoch)?;
        if let Some(event) = &outcome.event {
            delivery::presence(ctx, &s.registry, &mut s.stats, std::slice::from_ref(event));
        }
        let (recovered, messages) = match &since {
            Some(since) => {
                let r = s.registry.recover(&cmd.room, since.seq, &since.epoch, now);
                let frames = r.frames.iter().map(|f| f.to_vec()).collect();
                (r.recovered, frames)
            }
            None => (false, Vec::new()),
        };
        let replicated = cmd.into_replicated(outcome.epoch);
        if outcome.changed {
            replicate(ctx, &replicated);
        }
        Ok(Joined {
            first: outcome.first,
            seq: outcome.seq,
            epoch: replicated.epoch.unwrap_or_default(),
            recovered,
            messages,
        })
    })
}

crate::raw_command! {
    /// `BROKER.LEAVE room user conn [GRACE ms]`: removes a connection from a
    /// room. `GRACE` says the connection went away (it did not ask to
    /// leave): the user lingers for `ms` if this was its last connection in
    /// the room.
    leave => leave_room
}

fn leave_room(ctx: &Context, argv: &Argv<'_>) -> error::Result<u64> {
    let cmd: Leave = parse_words(argv.words)?;
    let now = state::now_ms();
    let until = cmd.linger.map(|l| l.until(now));
    let was_member = state::with(|s| {
        let reason = cmd.reason.as_deref().unwrap_or(lifecycle::reason::CLIENT);
        let (was_member, event) = s
            .registry
            .departing(reason, |r| r.leave(&cmd.room, &cmd.user, &cmd.conn, until));
        if let Some(event) = &event {
            delivery::presence(ctx, &s.registry, &mut s.stats, std::slice::from_ref(event));
        }
        was_member
    });
    if was_member {
        replicate(ctx, &cmd.into_replicated(now));
    }
    Ok(u64::from(was_member))
}

/// `BROKER.APPLY.LEAVE room user`: ends a lingering presence and sends its
/// leave event. The module's timer does this when a grace runs out and
/// replicates it as this command; by hand it ends a grace early.
pub fn apply_leave(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_apply_leave)
}

fn run_apply_leave(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: ApplyLeave = parse(argv)?;
    Ok(reply::int(u64::from(end_lingering(ctx, &cmd))))
}

/// Ends a lingering presence, delivers its leave event and replicates it;
/// shared with the sweep. False when the user was not lingering there.
pub fn end_lingering(ctx: &Context, cmd: &ApplyLeave) -> bool {
    let ended = state::with(|s| {
        let event = s.registry.end_lingering(&cmd.room, &cmd.user);
        if let Some(event) = &event {
            delivery::presence(ctx, &s.registry, &mut s.stats, std::slice::from_ref(event));
        }
        event.is_some()
    });
    if ended {
        replicate(ctx, cmd);
    }
    ended
}

/// `BROKER.ROOM.MEMBERS room [AFTER user] [LIMIT n]`: one page of the
/// room's distinct users with their connection counts, in name order.
pub fn room_members(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, members)
}

fn members(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: RoomMembers = parse(argv)?;
    let page = state::with(|s| {
        s.registry
            .room_members_page(&cmd.room, cmd.after.as_deref(), cmd.page_size())
    });
    let map = page
        .users
        .into_iter()
        .map(|(user, n)| (RedisValueKey::String(user), reply::int(u64::from(n))))
        .collect();
    Ok(RedisValue::OrderedMap(map))
}

/// `BROKER.ROOM.COUNT room`: users and connections, O(1).
pub fn room_count(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, count)
}

fn count(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: RoomCount = parse(argv)?;
    let (users, conns) = state::with(|s| s.registry.room_count(&cmd.room));
    Ok(reply::map([
        ("users", reply::int(users)),
        ("connections", reply::int(conns)),
    ]))
}

/// `BROKER.HISTORY room [SINCE seq] [LIMIT n] [MAXBYTES n]`: retained
/// messages, and whether more are retained after the last one given.
pub fn history(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, read_history)
}

fn read_history(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: History = parse(argv)?;
    let limit = cmd.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let max_bytes = cmd
        .max_bytes
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let now = state::now_ms();
    Ok(state::with(|s| {
        let read =
            s.registry
                .history_page(&cmd.room, cmd.since.unwrap_or(0), limit, max_bytes, now);
        reply::map([
            ("seq", reply::int(read.seq)),
            ("epoch", reply::text(read.epoch)),
            ("messages", reply::frames(&read.frames)),
            ("more", reply::int(u64::from(read.more))),
        ])
    }))
}
