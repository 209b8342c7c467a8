//! Gateway node leases: `NODE.LEASE`, `NODE.RELEASE`, `NODES`,
//! `NODE.CONNS`.

use broker::command::{EventsStream, NodeConns, NodeLease, NodeRelease, Nodes};
use broker::lifecycle;
use redis_module::{Context, RedisResult, RedisString, RedisValue};

use super::{parse, replicate};
use crate::error;
use crate::{delivery, guard, reply, state};

/// `BROKER.NODE.LEASE node ttl_ms [DEADLINE ms] [CHANNEL channel]
/// [INCARNATION id] [REGISTERING]`: takes or renews a node lease. `CHANNEL`
/// names the sharded Pub/Sub channel the node reads on this shard of a
/// cluster; a lease without it keeps the channel named before (none: the
/// node's messages go to its classic channel). A lease from another
/// incarnation than the one on record ends the old one's connections
/// first; replicas receive that as a `NODE.RELEASE` before the lease.
pub fn node_lease(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, lease)
}

fn lease(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: NodeLease = parse(argv)?;
    let now = state::now_ms();
    // After a load the master reconciles (see `Registry::lease_node`); a
    // replica follows the master's stream instead.
    let reconcile = delivery::allowed(ctx);
    let outcome = state::with(|s| {
        let outcome = s.registry.lease_node(&cmd, now, reconcile);
        delivery::presence(ctx, &s.registry, &mut s.stats, &outcome.events);
        outcome
    });
    if let Some(ended) = outcome.replaced {
        replicate(ctx, &NodeRelease::new(&cmd.node));
        ctx.log_notice(&format!(
            "broker: node {} came back as a new process; {ended} connection(s) of the old one ended",
            cmd.node
        ));
    }
    replicate(ctx, &cmd.replicated(now));
    for close in &outcome.dropped {
        replicate(ctx, close);
    }
    if !outcome.dropped.is_empty() {
        ctx.log_notice(&format!(
            "broker: node {} did not register {} connection(s) again after the load; dropped",
            cmd.node,
            outcome.dropped.len()
        ));
    }
    Ok(RedisValue::Array(vec![
        reply::int(outcome.deadline_ms),
        reply::int(u64::from(outcome.renewed)),
    ]))
}

/// `BROKER.NODE.RELEASE node [GRACE ms]`: drops a node and everything it
/// holds; with `GRACE`, its users linger in their rooms for `ms` (a restart
/// whose clients come back in time makes no leave/join pair).
pub fn node_release(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, release)
}

fn release(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: NodeRelease = parse(argv)?;
    Ok(reply::int(release_node(ctx, &cmd, state::now_ms())))
}

/// Drops a node, delivers the leave events (users linger instead when the
/// release has a grace) and replicates the release; shared with the lease
/// timer. Returns the number of opened connections dropped.
pub fn release_node(ctx: &Context, cmd: &NodeRelease, now_ms: u64) -> u64 {
    let until = cmd.linger.map(|l| l.until(now_ms));
    let dropped = state::with(|s| {
        let reason = cmd.reason.as_deref().unwrap_or(lifecycle::reason::SHUTDOWN);
        let (dropped, events) = s
            .registry
            .departing(reason, |r| r.release_node(&cmd.node, until));
        delivery::presence(ctx, &s.registry, &mut s.stats, &events);
        dropped
    });
    replicate(ctx, &cmd.replicated(now_ms));
    dropped
}

/// `BROKER.EVENTS.STREAM`: the lifecycle stream this server writes, or
/// nil (`EVENTS 0`, or a cluster node that serves no slot).
pub fn events_stream(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, name_events_stream)
}

fn name_events_stream(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let EventsStream = parse(argv)?;
    let on = crate::events::MAXLEN.load(std::sync::atomic::Ordering::Relaxed) > 0;
    Ok(
        match on.then(|| crate::events::stream_name(ctx)).flatten() {
            Some(name) => reply::text(&name),
            None => RedisValue::Null,
        },
    )
}

/// `BROKER.NODE.CONNS node`: what this Redis holds for a node — per
/// connection its id, user, whether it was opened here, and its rooms here.
pub fn node_conns(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, conns)
}

fn conns(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: NodeConns = parse(argv)?;
    let conns = state::with(|s| s.registry.node_conns(&cmd.node));
    Ok(RedisValue::Array(
        conns
            .into_iter()
            .map(|c| {
                reply::map([
                    ("conn", reply::text(&c.conn)),
                    ("user", reply::text(&c.user)),
                    ("opened", reply::int(u64::from(c.opened))),
                    ("rooms", reply::texts(&c.rooms)),
                    ("ip_hold", reply::text(c.ip_hold.as_deref().unwrap_or(""))),
                ])
            })
            .collect(),
    ))
}

/// `BROKER.NODES`: live nodes.
pub fn nodes(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, list)
}

fn list(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let Nodes = parse(argv)?;
    let nodes = state::with(|s| s.registry.nodes());
    Ok(RedisValue::Array(
        nodes
            .into_iter()
            .map(|n| {
                reply::map([
                    ("node", reply::text(&n.node)),
                    ("connections", reply::int(n.connections)),
                    ("lease_deadline_ms", reply::int(n.deadline_ms)),
                ])
            })
            .collect(),
    ))
}
