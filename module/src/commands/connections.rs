//! Connections and presence: `CONN.OPEN`, `CONN.CLOSE`, `PRESENCE`, `KICK`,
//! `ONLINE`.

use broker::{names, wire};
use redis_module::{Context, RedisResult, RedisString, RedisValue};

use crate::args::{self, unknown, Args};
use crate::error;
use crate::{delivery, guard, reply, state};

/// `BROKER.CONN.OPEN user conn node ip [MAXUSER n] [MAXIP n] [AT ms]`: registers a connection within the limits.
pub fn conn_open(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, open)
}

fn open(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let user = args.str("user")?;
    names::validate_user(user)?;
    let conn = args.str("conn")?;
    names::validate_conn(conn)?;
    let node = args.str("node")?;
    names::validate_node(node)?;
    let ip = args.str("ip")?;
    names::validate_ip(ip)?;
    let (mut max_user, mut max_ip, mut at) = (None, None, None);
    while !args.is_empty() {
        match args.keyword()?.as_str() {
            "MAXUSER" => max_user = Some(args.u32("MAXUSER")?),
            "MAXIP" => max_ip = Some(args.u32("MAXIP")?),
            "AT" => at = Some(args.u64("AT")?),
            other => return Err(unknown(other)),
        }
    }
    let at = at.unwrap_or_else(state::now_ms);
    state::with(|s| s.registry.open(user, conn, node, ip, at, max_user, max_ip))?;
    let at_s = at.to_string();
    ctx.replicate(
        "BROKER.CONN.OPEN",
        &[user, conn, node, ip, "AT", at_s.as_str()],
    );
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// `BROKER.CONN.CLOSE user conn [GRACE ms]`: removes a connection and its
/// memberships; with `GRACE`, a user whose last connection it was lingers in
/// its rooms for `ms` before the leave events go out.
pub fn conn_close(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, close)
}

fn close(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let user = args.str("user")?;
    names::validate_user(user)?;
    let conn = args.str("conn")?;
    names::validate_conn(conn)?;
    let until = args::linger_until(&mut args, state::now_ms())?;
    let rooms = state::with(|s| {
        let (rooms, events) = s.registry.close(user, conn, until);
        delivery::presence(ctx, &s.registry, &mut s.stats, &events);
        rooms
    });
    match until {
        Some(until) => {
            let until = until.to_string();
            ctx.replicate("BROKER.CONN.CLOSE", &[user, conn, "UNTIL", until.as_str()]);
        }
        None => ctx.replicate_verbatim(),
    }
    Ok(reply::int(rooms))
}

/// `BROKER.USER.ROOMS user`: the rooms on this shard of each of the user's
/// connections, including connections opened on another shard. Keyless, so
/// that it can be sent to every master of a cluster.
pub fn user_rooms(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, read_user_rooms)
}

fn read_user_rooms(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let user = args.str("user")?;
    names::validate_user(user)?;
    args.done()?;
    let conns = state::with(|s| s.registry.user_rooms(user));
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
    let mut args = Args::new(argv);
    let user = args.str("user")?;
    names::validate_user(user)?;
    args.done()?;
    let conns = state::with(|s| s.registry.presence(user));
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
    let mut args = Args::new(argv);
    let user = args.str("user")?;
    names::validate_user(user)?;
    let reason = if args.is_empty() {
        "kicked"
    } else {
        args.str("reason")?
    };
    args.done()?;
    let told = state::with(|s| {
        let conns = s.registry.user_conns(user);
        let mut nodes: Vec<&str> = conns.iter().map(|(_, n)| n.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        for node in nodes {
            let ids: Vec<&str> = conns
                .iter()
                .filter(|(_, n)| n == node)
                .map(|(c, _)| c.as_str())
                .collect();
            let envelope = wire::encode_kick_envelope(user, &ids, reason);
            delivery::to_nodes(
                ctx,
                &s.registry,
                &mut s.stats,
                &[node.to_string()],
                &envelope,
            );
        }
        conns.len() as u64
    });
    Ok(reply::int(told))
}

/// `BROKER.ONLINE`: users and connections, O(1).
pub fn online(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, count_online)
}

fn count_online(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    Args::new(argv).done()?;
    let (users, conns) = state::with(|s| s.registry.online());
    Ok(reply::map([
        ("users", reply::int(users)),
        ("connections", reply::int(conns)),
    ]))
}
