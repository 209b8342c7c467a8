//! The broker's Redis module: the single source of truth for gateway nodes,
//! connections, presence, rooms, sequence numbers, history and rate limits.
//!
//! Map of the crate:
//!
//! - [`commands`]: the `BROKER.*` commands, one file per family; each parses
//!   its arguments into the command's type ([`broker::command`]), calls the
//!   registry ([`broker::registry`]), replicates the command's deterministic
//!   form and delivers what it must ([`delivery`]).
//! - [`state`]: the one global [`broker::registry::Registry`] and counters.
//! - [`keys`]: the registry as keys (a room, a user, an address), so that
//!   resharding a cluster moves it; [`persist`]: the nodes' leases in and
//!   out of RDB files (aux data); [`loading`] starts the after-load
//!   reconciliation once loading ended, and follows flushes.
//! - [`sweep`]: the timer that expires node leases and drops idle rooms.
//! - [`ffi`]: every call into Redis's C API that the crate does not wrap,
//!   each with its `SAFETY` comment. The hot commands are plain
//!   `extern "C"` functions ([`guard::raw`], `raw_command!`): theirs are the
//!   only `unsafe` blocks outside `ffi`, handing it Redis's own pointers.
//! - [`error`]: the one error type; [`guard`] turns errors and panics into
//!   error replies (and catches panics in timers, events and persistence
//!   callbacks), so nothing a client sends can take Redis down.
//!
//! `docs/COMMANDS.md` is the user-facing description of every command.

pub mod commands;
pub mod delivery;
pub mod error;
pub mod events;
pub mod ffi;
pub mod guard;
pub mod info;
pub mod keys;
pub mod loading;
pub mod persist;
pub mod reply;
pub mod state;
pub mod sweep;

use std::ffi::CStr;
use std::sync::atomic::Ordering;

use broker::command::{self as cmd, Command};
use broker::registry::HistoryConfig;
use redis_module::{redis_module, Context, RedisString, Status};

use crate::ffi::REGISTRY_TYPE;

/// Reads the module arguments (`HISTORY ns size ttl_s`, `SWEEP_MS ms`,
/// `EVENTS maxlen`).
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
            "EVENTS" => {
                let maxlen: u64 = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n <= 100_000_000)
                    .ok_or("EVENTS must be an integer from 0 (off) to 100000000")?;
                events::MAXLEN.store(maxlen, Ordering::Relaxed);
            }
            other => return Err(format!("unknown module argument '{other}'")),
        }
    }
    let on = events::MAXLEN.load(Ordering::Relaxed) > 0;
    state::with(|s| s.registry.record_lifecycle(on));
    let _ = ctx;
    Ok(())
}

/// The hot commands, registered with plain command functions
/// ([`guard::raw`]) rather than through `redis_module!`: name, function,
/// flags, key positions (the command types' own, `Command::KEYS`).
#[rustfmt::skip]
const RAW_COMMANDS: [(&CStr, ffi::CommandFn, &CStr, cmd::Keys); 4] = [
    (c"broker.publish", commands::publish::publish, c"write deny-oom getkeys-api", cmd::Publish::KEYS),
    (c"broker.join", commands::rooms::join, c"write deny-oom fast", cmd::Join::KEYS),
    (c"broker.leave", commands::rooms::leave, c"write fast", cmd::Leave::KEYS),
    (c"broker.throttle", commands::throttle::throttle, c"write deny-oom fast", cmd::Throttle::KEYS),
];

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    for (name, handler, flags, keys) in RAW_COMMANDS {
        if !ffi::create_command(ctx, name, handler, flags, keys) {
            ctx.log_warning(&format!("broker: could not create command {name:?}"));
            return Status::Err;
        }
    }
    if let Err(msg) = configure(ctx, args) {
        ctx.log_warning(&format!("broker: {msg}"));
        return Status::Err;
    }
    if !ffi::watch_client_pause(ctx) {
        ctx.log_warning("broker: no command filters: CLIENT PAUSE is not seen by the lease timer");
    }
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
        ["broker.apply.key", commands::keys::apply_key, "write deny-oom", cmd::ApplyKey::KEYS.first, cmd::ApplyKey::KEYS.last, cmd::ApplyKey::KEYS.step, ""],
        // name, handler, flags, first key, last key, key step, ACL categories;
        // the key positions are the command types' own (`Command::KEYS`).
        // BROKER.PUBLISH, JOIN, LEAVE and THROTTLE are in `RAW_COMMANDS`.
        ["broker.broadcast", commands::publish::broadcast, "pubsub", cmd::Broadcast::KEYS.first, cmd::Broadcast::KEYS.last, cmd::Broadcast::KEYS.step, ""],
        ["broker.apply.publish", commands::publish::apply_publish, "write deny-oom", cmd::ApplyPublish::KEYS.first, cmd::ApplyPublish::KEYS.last, cmd::ApplyPublish::KEYS.step, ""],
        ["broker.apply.drop", commands::publish::apply_drop, "write", cmd::ApplyDrop::KEYS.first, cmd::ApplyDrop::KEYS.last, cmd::ApplyDrop::KEYS.step, ""],
        ["broker.apply.leave", commands::rooms::apply_leave, "write", cmd::ApplyLeave::KEYS.first, cmd::ApplyLeave::KEYS.last, cmd::ApplyLeave::KEYS.step, ""],
        ["broker.history", commands::rooms::history, "readonly", cmd::History::KEYS.first, cmd::History::KEYS.last, cmd::History::KEYS.step, ""],
        ["broker.room.members", commands::rooms::room_members, "readonly", cmd::RoomMembers::KEYS.first, cmd::RoomMembers::KEYS.last, cmd::RoomMembers::KEYS.step, ""],
        ["broker.room.count", commands::rooms::room_count, "readonly fast", cmd::RoomCount::KEYS.first, cmd::RoomCount::KEYS.last, cmd::RoomCount::KEYS.step, ""],
        ["broker.conn.open", commands::connections::conn_open, "write deny-oom fast", cmd::ConnOpen::KEYS.first, cmd::ConnOpen::KEYS.last, cmd::ConnOpen::KEYS.step, ""],
        ["broker.conn.close", commands::connections::conn_close, "write fast", cmd::ConnClose::KEYS.first, cmd::ConnClose::KEYS.last, cmd::ConnClose::KEYS.step, ""],
        ["broker.ip.open", commands::connections::ip_open, "write deny-oom fast", cmd::IpOpen::KEYS.first, cmd::IpOpen::KEYS.last, cmd::IpOpen::KEYS.step, ""],
        ["broker.ip.close", commands::connections::ip_close, "write fast", cmd::IpClose::KEYS.first, cmd::IpClose::KEYS.last, cmd::IpClose::KEYS.step, ""],
        ["broker.presence", commands::connections::presence, "readonly fast", cmd::Presence::KEYS.first, cmd::Presence::KEYS.last, cmd::Presence::KEYS.step, ""],
        ["broker.user.rooms", commands::connections::user_rooms, "readonly", cmd::UserRooms::KEYS.first, cmd::UserRooms::KEYS.last, cmd::UserRooms::KEYS.step, ""],
        ["broker.kick", commands::connections::kick, "pubsub fast", cmd::Kick::KEYS.first, cmd::Kick::KEYS.last, cmd::Kick::KEYS.step, ""],
        ["broker.user.join", commands::connections::user_join, "pubsub fast", cmd::UserJoin::KEYS.first, cmd::UserJoin::KEYS.last, cmd::UserJoin::KEYS.step, ""],
        ["broker.user.leave", commands::connections::user_leave, "pubsub fast", cmd::UserLeave::KEYS.first, cmd::UserLeave::KEYS.last, cmd::UserLeave::KEYS.step, ""],
        ["broker.online", commands::connections::online, "readonly fast", cmd::Online::KEYS.first, cmd::Online::KEYS.last, cmd::Online::KEYS.step, ""],
        ["broker.node.lease", commands::nodes::node_lease, "write fast", cmd::NodeLease::KEYS.first, cmd::NodeLease::KEYS.last, cmd::NodeLease::KEYS.step, ""],
        ["broker.node.release", commands::nodes::node_release, "write fast", cmd::NodeRelease::KEYS.first, cmd::NodeRelease::KEYS.last, cmd::NodeRelease::KEYS.step, ""],
        ["broker.node.conns", commands::nodes::node_conns, "readonly", cmd::NodeConns::KEYS.first, cmd::NodeConns::KEYS.last, cmd::NodeConns::KEYS.step, ""],
        ["broker.events.stream", commands::nodes::events_stream, "readonly fast", cmd::EventsStream::KEYS.first, cmd::EventsStream::KEYS.last, cmd::EventsStream::KEYS.step, ""],
        ["broker.rpc.reply", commands::rpc::rpc_reply, "pubsub fast", cmd::RpcReply::KEYS.first, cmd::RpcReply::KEYS.last, cmd::RpcReply::KEYS.step, ""],
        ["broker.rpc.error", commands::rpc::rpc_error, "pubsub fast", cmd::RpcError::KEYS.first, cmd::RpcError::KEYS.last, cmd::RpcError::KEYS.step, ""],
        ["broker.nodes", commands::nodes::nodes, "readonly fast", cmd::Nodes::KEYS.first, cmd::Nodes::KEYS.last, cmd::Nodes::KEYS.step, ""],
    ],
    event_handlers: [
        [@GENERIC @LOADED: keys::on_key_event],
    ],
}
