//! Shared core of the broker, used by the Redis module and the gateway.
//!
//! Everything here is plain Rust with no Redis and no async runtime, so it is
//! unit-tested in memory:
//!
//! - [`names`]: validation of room, user, connection and node names, and the
//!   names derived from them (personal rooms, node channels).
//! - [`gcra`]: the generic cell rate algorithm behind `BROKER.THROTTLE`,
//!   matching redis-cell's `CL.THROTTLE` figure for figure.
//! - [`wire`]: MessagePack encoding of the frames the module builds once and
//!   every gateway forwards unchanged, payload checks, and the envelopes on the
//!   per-node Pub/Sub channels.
//! - [`protocol`]: the WebSocket protocol v1 — client and server frames,
//!   their MessagePack codec, and the contract's error and close codes.
//! - [`command`]: every `BROKER.*` command as a type (parse, arguments,
//!   replicated form, key positions) and [`command::Refusal`], the refusal
//!   codes the module replies with.
//! - [`registry`]: the state machine of nodes, connections, presence, rooms,
//!   sequences and history that the module keeps in Redis, in one folder
//!   part per thing it holds.

/// The version of the module's command surface, in `INFO broker` as
/// `broker_api`. Raised whenever the module gains a command or an option the
/// gateway relies on, so that a gateway built with a newer one reports not
/// ready (`/readyz`) against an older module rather than failing requests.
/// 2: `BROKER.USER.ROOMS`.
pub const MODULE_API: u32 = 2;

pub mod command;
pub mod gcra;
pub mod names;
pub mod protocol;
pub mod registry;
pub mod wire;
