//! Connections and presence: `CONN.OPEN`, `CONN.CLOSE`, `IP.OPEN`,
//! `IP.CLOSE`, `PRESENCE`, `USER.ROOMS`, `KICK`, `USER.JOIN`, `USER.LEAVE`,
//! `ONLINE`.

use broker::command::{
    ConnClose, ConnOpen, IpClose, IpOpen, Kick, Online, Presence, UserJoin, UserLeave, UserRooms,
};
use broker::envelope;
use broker::lifecycle;
use redis_module::{Context, RedisResult, RedisString, RedisValue};

use super::{parse, replicate};
use crate::error;
use crate::{delivery, guard, reply, state};

/// `BROKER.CONN.OPEN user conn node ip [MAXUSER n] [MAXIP n] [AT ms]`: registers a connection within the limits.
pub fn conn_open(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, open)
}

fn open(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: ConnOpen = parse(argv)?;
    let now = state::now_ms();
    state::with(|s| s.registry.open(&cmd, now))?;
    replicate(ctx, &cmd.replicated(now));
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// `BROKER.CONN.CLOSE user conn [GRACE ms]`: removes a connection and its
/// memberships; with `GRACE`, a user whose last connection it was lingers in
/// its rooms for `ms` before the leave events go out.
pub fn conn_close(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, close)
}

fn close(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: ConnClose = parse(argv)?;
    let now = state::now_ms();
    let until = cmd.linger.map(|l| l.until(now));
    let rooms = state::with(|s| {
        let reason = cmd.reason.as_deref().unwrap_or(lifecycle::reason::CLIENT);
        let (rooms, events) = s
            .registry
            .departing(reason, |r| r.close(&cmd.user, &cmd.conn, until));
        delivery::presence(ctx, &s.registry, &mut s.stats, &events);
        rooms
    });
    replicate(ctx, &cmd.replicated(now));
    Ok(reply::int(rooms))
}

/// `BROKER.IP.OPEN ip user conn node [MAXIP n]`: takes a place of a client
/// address for a connection opened on another shard, within the limit.
pub fn ip_open(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, hold_ip)
}

fn hold_ip(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: IpOpen = parse(argv)?;
    state::with(|s| s.registry.hold_ip(&cmd))?;
    replicate(ctx, &cmd.replicated());
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// `BROKER.IP.CLOSE ip conn`: gives back the place `IP.OPEN` took.
pub fn ip_close(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, release_ip)
}

fn release_ip(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: IpClose = parse(argv)?;
    let released = state::with(|s| s.registry.release_ip(&cmd.ip, &cmd.conn));
    if released {
        replicate(ctx, &cmd);
    }
    Ok(reply::int(u64::from(released)))
}

/// `BROKER.USER.ROOMS user`: the rooms on this shard of each of the user's
/// connections, including connections opened on another shard. Keyless, so
/// that it can be sent to every master of a cluster.
pub fn user_rooms(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, read_user_rooms)
}

fn read_user_rooms(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: UserRooms = parse(argv)?;
    let conns = state::with(|s| s.registry.user_rooms(&cmd.user));
    Ok(RedisValue::Array(
        conns
            .iter()
            .map(|(conn, rooms)| {
                reply::map([("conn", reply::text(conn)), ("rooms", reply::texts(rooms))])
            })
            .collect(),
    ))
}

/// `BROKER.PRESENCE user`: the user's connections.
pub fn presence(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, read_presence)
}

fn read_presence(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: Presence = parse(argv)?;
    let conns = state::with(|s| s.registry.presence(&cmd.user));
    let status = if conns.is_empty() {
        "offline"
    } else {
        "online"
    };
    Ok(reply::map([
        ("status", reply::text(status)),
        ("connections", reply::int(conns.len() as u64)),
        (
            "conns",
            RedisValue::Array(
                conns
                    .iter()
                    .map(|c| {
                        reply::map([
                            ("conn", reply::text(&c.conn)),
                            ("node", reply::text(&c.node)),
                            ("ip", reply::text(&c.ip)),
                            ("connected_at", reply::int(c.connected_at_ms)),
                            ("rooms", reply::texts(&c.rooms)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]))
}

/// `BROKER.KICK user [reason]`: tells the nodes holding the user's connections to close them.
pub fn kick(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, kick_user)
}

fn kick_user(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: Kick = parse(argv)?;
    let told = state::with(|s| {
        let mut told = 0;
        for (node, conns) in s.registry.user_conns_by_node(&cmd.user) {
            let ids: Vec<&str> = conns.iter().map(String::as_str).collect();
            let envelope = envelope::encode_kick_envelope(&cmd.user, &ids, cmd.reason());
            delivery::to_nodes(ctx, &s.registry, &mut s.stats, &[node], &envelope);
            told += conns.len() as u64;
        }
        told
    });
    Ok(reply::int(told))
}

/// `BROKER.USER.JOIN user room`: tells the nodes holding the user's
/// connections to join them to the room.
pub fn user_join(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, |ctx, argv| {
        let cmd: UserJoin = parse(argv)?;
        Ok(reply::int(tell_membership(ctx, &cmd.user, &cmd.room, true)))
    })
}

/// `BROKER.USER.LEAVE user room`: tells the nodes holding the user's
/// connections to take them out of the room.
pub fn user_leave(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, |ctx, argv| {
        let cmd: UserLeave = parse(argv)?;
        Ok(reply::int(tell_membership(
            ctx, &cmd.user, &cmd.room, false,
        )))
    })
}

/// Sends one membership envelope to each node with connections of `user`;
/// the number of connections told. The nodes make the change themselves
/// (a `JOIN` / `LEAVE` on the room's shard, as for a client's request), so
/// this command changes no state here and is not replicated.
fn tell_membership(ctx: &Context, user: &str, room: &str, join: bool) -> u64 {
    state::with(|s| {
        let mut told = 0;
        for (node, conns) in s.registry.user_conns_by_node(user) {
            let ids: Vec<&str> = conns.iter().map(String::as_str).collect();
            let envelope = envelope::encode_membership_envelope(user, &ids, room, join);
            delivery::to_nodes(ctx, &s.registry, &mut s.stats, &[node], &envelope);
            told += conns.len() as u64;
        }
        told
    })
}

/// `BROKER.ONLINE`: users and connections, O(1).
pub fn online(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, count_online)
}

fn count_online(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let Online = parse(argv)?;
    let (users, conns) = state::with(|s| s.registry.online());
    Ok(reply::map([
        ("users", reply::int(users)),
        ("connections", reply::int(conns)),
    ]))
}
