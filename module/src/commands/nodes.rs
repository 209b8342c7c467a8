//! Gateway node leases: `NODE.LEASE`, `NODE.RELEASE`, `NODES`.

use broker::names;
use broker::registry::AfterLoad;
use redis_module::{Context, RedisResult, RedisString, RedisValue};

use crate::args::{self, unknown, Args};
use crate::error::{self, Error};
use crate::{delivery, guard, reply, state};

/// Longest lease a node may ask for (one day): a typo must not keep a dead
/// node's connections in presence for years.
const MAX_LEASE_MS: u64 = 86_400_000;

/// `BROKER.NODE.LEASE node ttl_ms [DEADLINE ms] [CHANNEL channel]`: takes or
/// renews a node lease. `CHANNEL` names the sharded Pub/Sub channel the node
/// reads on this shard of a cluster; a lease without it keeps the channel
/// named before (none: the node's messages go to its classic channel).
pub fn node_lease(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, lease)
}

fn lease(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let node = args.str("node")?;
    names::validate_node(node)?;
    let lease_ms = args.u64("lease ttl_ms")?;
    if lease_ms == 0 || lease_ms > MAX_LEASE_MS {
        return Err(Error::Integer("lease ttl_ms"));
    }
    let mut deadline = None;
    let mut channel = None;
    while !args.is_empty() {
        match args.keyword()?.as_str() {
            "DEADLINE" => deadline = Some(args.u64("deadline")?),
            "CHANNEL" => {
                let name = args.str("channel")?;
                if !names::is_node_channel(node, name) {
                    return Err(Error::Invalid(format!(
                        "channel: expected {}:{{<digits>}}",
                        names::node_channel(node)
                    )));
                }
                channel = Some(name);
            }
            other => return Err(unknown(other)),
        }
    }
    let deadline = deadline.unwrap_or_else(|| state::now_ms().saturating_add(lease_ms));
    // After a load, the master asks the node to register again, then drops
    // what it did not (a replica follows the master's stream instead).
    let decides = delivery::allowed(ctx);
    let (renewed, dropped) = state::with(|s| {
        let step = if decides {
            s.registry.after_load_step(node)
        } else {
            AfterLoad::Nothing
        };
        let mut renewed = s.registry.lease(node, lease_ms, deadline);
        if channel.is_some() {
            s.registry.set_node_channel(node, channel);
        }
        let mut dropped = Vec::new();
        match step {
            AfterLoad::Nothing => {}
            AfterLoad::Reregister => renewed = false,
            AfterLoad::Drop(stale) => {
                for (user, conn) in stale {
                    let (_, events) = s.registry.close(&user, &conn, None);
                    delivery::presence(ctx, &s.registry, &mut s.stats, &events);
                    dropped.push((user, conn));
                }
            }
        }
        (renewed, dropped)
    });
    let (lease_s, deadline_s) = (lease_ms.to_string(), deadline.to_string());
    let mut replicated = vec![node, lease_s.as_str(), "DEADLINE", deadline_s.as_str()];
    if let Some(channel) = channel {
        replicated.extend(["CHANNEL", channel]);
    }
    ctx.replicate("BROKER.NODE.LEASE", replicated.as_slice());
    for (user, conn) in &dropped {
        ctx.replicate("BROKER.CONN.CLOSE", &[user.as_str(), conn.as_str()]);
    }
    if !dropped.is_empty() {
        ctx.log_notice(&format!(
            "broker: node {node} did not register {} connection(s) again after the load; dropped",
            dropped.len()
        ));
    }
    Ok(RedisValue::Array(vec![
        reply::int(deadline),
        reply::int(u64::from(renewed)),
    ]))
}

/// `BROKER.NODE.RELEASE node [GRACE ms]`: drops a node and everything it
/// holds; with `GRACE`, its users linger in their rooms for `ms` (a restart
/// whose clients come back in time makes no leave/join pair).
pub fn node_release(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, release)
}

fn release(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let mut args = Args::new(argv);
    let node = args.str("node")?;
    names::validate_node(node)?;
    let until = args::linger_until(&mut args, state::now_ms())?;
    let dropped = release_node(ctx, node, until);
    match until {
        Some(until) => {
            let until = until.to_string();
            ctx.replicate("BROKER.NODE.RELEASE", &[node, "UNTIL", until.as_str()]);
        }
        None => ctx.replicate_verbatim(),
    }
    Ok(reply::int(dropped))
}

/// Drops a node and delivers the leave events (users linger until
/// `linger_until` instead, when given); shared with the lease timer.
pub fn release_node(ctx: &Context, node: &str, linger_until: Option<u64>) -> u64 {
    state::with(|s| {
        let (dropped, events) = s.registry.release_node(node, linger_until);
        delivery::presence(ctx, &s.registry, &mut s.stats, &events);
        dropped
    })
}

/// `BROKER.NODES`: live nodes.
pub fn nodes(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, list)
}

fn list(_ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    Args::new(argv).done()?;
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
