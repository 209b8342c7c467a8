//! Shared core of the broker, used by the Redis module and the gateway.
//!
//! Everything here is plain Rust with no Redis and no async runtime, so it is
//! unit-tested in memory:
//!
//! - [`names`]: validation of room, user, connection and node names, and the
//!   names derived from them (personal rooms, node channels).
//! - [`gcra`]: the generic cell rate algorithm behind `BROKER.THROTTLE`,
//!   matching redis-cell's `CL.THROTTLE` figure for figure.
//! - [`msgpack`]: the one MessagePack reader, writer, validator and JSON
//!   conversion of the workspace.
//! - [`protocol`]: the WebSocket protocol v1 -- error and close codes, client
//!   frames, and every server frame (including the `msg` and `presence`
//!   frames the module encodes once and every gateway forwards unchanged).
//! - [`payload`]: the `FORMAT` of a publish and its conversion to the one
//!   MessagePack value a `msg` frame carries.
//! - [`envelope`]: what the module sends on each node's Pub/Sub channel.
//! - [`socketio`]: the Engine.IO v4 / Socket.IO v5 codec (both parsers) for
//!   `socket.io-client` apps.
//! - [`command`]: every `BROKER.*` command as a type (parse, arguments,
//!   replicated form, key positions) and [`command::Refusal`], the refusal
//!   codes the module replies with.
//! - [`lifecycle`]: the lifecycle events the module writes to the
//!   `broker:events` stream.
//! - [`registry`]: the state machine of nodes, connections, presence, rooms,
//!   sequences and history that the module keeps in Redis, in one folder
//!   part per thing it holds.

/// The version of the module's command surface, in `INFO broker` as
/// `broker_api`. Raised whenever the module gains a command or an option the
/// gateway relies on, so that a gateway built with a newer one reports not
/// ready (`/readyz`) against an older module rather than failing requests.
/// 2: `BROKER.USER.ROOMS`. 3: `NODE.LEASE … INCARNATION … REGISTERING`,
/// `BROKER.NODE.CONNS`. 4: `BROKER.IP.OPEN`, `BROKER.IP.CLOSE` (the
/// per-IP limit across a cluster's shards), `ip_hold` in `NODE.CONNS`.
/// 5: the lifecycle stream and `REASON` on `CONN.CLOSE`, `LEAVE` and
/// `NODE.RELEASE`; `BROKER.EVENTS.STREAM`.
pub const MODULE_API: u32 = 5;

pub mod command;
pub mod envelope;
pub mod gcra;
pub mod lifecycle;
pub mod msgpack;
pub mod names;
pub mod payload;
pub mod protocol;
pub mod registry;
pub mod socketio;
