//! The broker's Redis module: the single source of truth for gateway nodes,
//! connections, presence, rooms, sequence numbers, history and rate limits.
//!
//! Map of the crate:
//!
//! - [`commands`]: the `BROKER.*` commands, one file per family; each parses
//!   its arguments ([`args`]), calls the registry ([`broker::registry`]),
//!   replicates what it did and delivers what it must ([`delivery`]).
//! - [`state`]: the one global [`broker::registry::Registry`] and counters.
//! - [`persist`]: the registry in and out of RDB files (aux data).
//! - [`sweep`]: the timer that expires node leases and drops idle rooms.
//! - [`ffi`]: every `unsafe` call, each with its `SAFETY` comment.
//! - [`error`]: the one error type; [`guard`] turns errors and panics into
//!   error replies, so nothing a client sends can take Redis down.
//!
//! `docs/COMMANDS.md` is the user-facing description of every command.

pub mod args;
pub mod commands;
pub mod delivery;
pub mod error;
pub mod ffi;
pub mod guard;
pub mod info;
pub mod persist;
pub mod reply;
pub mod state;
pub mod sweep;

use std::sync::atomic::Ordering;

use broker::registry::HistoryConfig;
use redis_module::{redis_module, Context, RedisString, Status};

use crate::ffi::REGISTRY_TYPE;

/// Reads the module arguments (`HISTORY ns size ttl_s`, `SWEEP_MS ms`).
fn configure(ctx: &Context, argv: &[RedisString]) -> Result<(), String> {
    let text: Vec<String> = argv.iter().map(|a| a.to_string_lossy()).collect();
    let mut it = text.iter();
    while let Some(word) = it.next() {
        match word.to_ascii_uppercase().as_str() {
            "HISTORY" => {
                let (Some(ns), Some(size), Some(ttl)) = (it.next(), it.next(), it.next()) else {
                    return Err("HISTORY needs <namespace> <size> <ttl_s>".into());
                };
                let size: u32 = size
                    .parse()
                    .map_err(|_| "HISTORY size must be an integer")?;
                let ttl: u64 = ttl
                    .parse()
                    .map_err(|_| "HISTORY ttl_s must be an integer")?;
                broker::names::validate_room(&format!("{ns}:x"))
                    .map_err(|_| format!("HISTORY namespace '{ns}' is invalid"))?;
                state::with(|s| {
                    s.registry.set_namespace_history(
                        ns,
                        HistoryConfig {
                            size,
                            ttl_ms: ttl.saturating_mul(1000),
                        },
                    )
                });
            }
            "SWEEP_MS" => {
                let ms: u64 = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|ms| (10..=60_000).contains(ms))
                    .ok_or("SWEEP_MS must be an integer from 10 to 60000")?;
                sweep::SWEEP_MS.store(ms, Ordering::Relaxed);
            }
            other => return Err(format!("unknown module argument '{other}'")),
        }
    }
    let _ = ctx;
    Ok(())
}

/// Warns when AOF rewrites would not carry the registry (it lives in the
/// RDB preamble's aux data).
fn check_aof_preamble(ctx: &Context) {
    if let Ok(redis_module::RedisValue::Array(values)) =
        ctx.call("CONFIG", &["GET", "aof-use-rdb-preamble"])
    {
        let off = values.iter().any(|v| {
            matches!(v, redis_module::RedisValue::SimpleString(s) | redis_module::RedisValue::BulkString(s) if s == "no")
        });
        if off {
            ctx.log_warning(
                "broker: aof-use-rdb-preamble is 'no': an AOF rewrite would drop the broker registry; set it to 'yes'",
            );
        }
    }
}

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    if let Err(msg) = configure(ctx, args) {
        ctx.log_warning(&format!("broker: {msg}"));
        return Status::Err;
    }
    check_aof_preamble(ctx);
    sweep::start(ctx);
    Status::Ok
}

redis_module! {
    name: "broker",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [REGISTRY_TYPE],
    init: init,
    commands: [
        // name, handler, flags, first key, last key, key step, ACL categories
        ["broker.publish", commands::publish::publish, "write deny-oom getkeys-api", 1, 1, 1, ""],
        ["broker.broadcast", commands::publish::broadcast, "pubsub", 0, 0, 0, ""],
        ["broker.apply.publish", commands::publish::apply_publish, "write deny-oom", 1, 1, 1, ""],
        ["broker.apply.drop", commands::publish::apply_drop, "write", 1, 1, 1, ""],
        ["broker.apply.leave", commands::rooms::apply_leave, "write", 1, 1, 1, ""],
        ["broker.history", commands::rooms::history, "readonly", 1, 1, 1, ""],
        ["broker.join", commands::rooms::join, "write deny-oom fast", 1, 1, 1, ""],
        ["broker.leave", commands::rooms::leave, "write fast", 1, 1, 1, ""],
        ["broker.room.members", commands::rooms::room_members, "readonly", 1, 1, 1, ""],
        ["broker.room.count", commands::rooms::room_count, "readonly fast", 1, 1, 1, ""],
        ["broker.conn.open", commands::connections::conn_open, "write deny-oom fast", 1, 1, 1, ""],
        ["broker.conn.close", commands::connections::conn_close, "write fast", 1, 1, 1, ""],
        ["broker.presence", commands::connections::presence, "readonly fast", 1, 1, 1, ""],
        ["broker.user.rooms", commands::connections::user_rooms, "readonly", 0, 0, 0, ""],
        ["broker.kick", commands::connections::kick, "pubsub fast", 1, 1, 1, ""],
        ["broker.online", commands::connections::online, "readonly fast", 0, 0, 0, ""],
        ["broker.throttle", commands::throttle::throttle, "write deny-oom fast", 1, 1, 1, ""],
        ["broker.node.lease", commands::nodes::node_lease, "write fast", 0, 0, 0, ""],
        ["broker.node.release", commands::nodes::node_release, "write fast", 0, 0, 0, ""],
        ["broker.nodes", commands::nodes::nodes, "readonly fast", 0, 0, 0, ""],
    ],
}
