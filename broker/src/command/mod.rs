//! The `BROKER.*` commands as types: one struct per command, each with
//! `parse` (from the arguments after the command name), `to_args` (the
//! arguments as the gateway sends them) and its key positions; those that
//! change state also say what replicas and the AOF receive (`replicated`,
//! absolute times and decided values only, so a replica never decides
//! with its own clock). And [`Refusal`], every refusal code the module
//! replies with.
//!
//! The module parses with these, the gateway sends them, the tests build
//! them: a command is written once.
//!
//! Every command, once:
//!
//! | command | type | family |
//! |---|---|---|
//! | `BROKER.PUBLISH` | [`Publish`] | [`publish`] |
//! | `BROKER.BROADCAST` | [`Broadcast`] | [`publish`] |
//! | `BROKER.APPLY.PUBLISH` | [`ApplyPublish`] | [`publish`] |
//! | `BROKER.APPLY.DROP` | [`ApplyDrop`] | [`publish`] |
//! | `BROKER.APPLY.LEAVE` | [`ApplyLeave`] | [`rooms`] |
//! | `BROKER.HISTORY` | [`History`] | [`rooms`] |
//! | `BROKER.JOIN` | [`Join`] | [`rooms`] |
//! | `BROKER.LEAVE` | [`Leave`] | [`rooms`] |
//! | `BROKER.ROOM.MEMBERS` | [`RoomMembers`] | [`rooms`] |
//! | `BROKER.ROOM.COUNT` | [`RoomCount`] | [`rooms`] |
//! | `BROKER.CONN.OPEN` | [`ConnOpen`] | [`connections`] |
//! | `BROKER.CONN.CLOSE` | [`ConnClose`] | [`connections`] |
//! | `BROKER.IP.OPEN` | [`IpOpen`] | [`connections`] |
//! | `BROKER.IP.CLOSE` | [`IpClose`] | [`connections`] |
//! | `BROKER.PRESENCE` | [`Presence`] | [`connections`] |
//! | `BROKER.USER.ROOMS` | [`UserRooms`] | [`connections`] |
//! | `BROKER.KICK` | [`Kick`] | [`connections`] |
//! | `BROKER.ONLINE` | [`Online`] | [`connections`] |
//! | `BROKER.THROTTLE` | [`Throttle`] | [`throttle`] |
//! | `BROKER.NODE.LEASE` | [`NodeLease`] | [`nodes`] |
//! | `BROKER.NODE.RELEASE` | [`NodeRelease`] | [`nodes`] |
//! | `BROKER.NODE.CONNS` | [`NodeConns`] | [`nodes`] |
//! | `BROKER.NODES` | [`Nodes`] | [`nodes`] |
//! | `BROKER.RPC.REPLY` | [`RpcReply`] | [`rpc`] |
//! | `BROKER.RPC.ERROR` | [`RpcError`] | [`rpc`] |

mod args;
pub mod connections;
pub mod keys;
pub mod membership;
pub mod nodes;
pub mod publish;
mod refusal;
pub mod rooms;
pub mod rpc;
pub mod throttle;

pub use args::{quoted, Arg, ParseError};
pub use connections::{ConnClose, ConnOpen, IpClose, IpOpen, Kick, Online, Presence, UserRooms};
pub use keys::ApplyKey;
pub use membership::{UserJoin, UserLeave};
pub use nodes::{EventsStream, NodeConns, NodeLease, NodeRelease, Nodes};
pub use publish::{validate_event, ApplyDrop, ApplyPublish, Broadcast, Publish, RateLimit};
pub use refusal::{LimitKind, Refusal};
pub use rooms::{ApplyLeave, History, Join, Leave, RoomCount, RoomMembers};
pub use rpc::{RpcError, RpcReply};
pub use throttle::{SetArrival, Throttle};

use args::{number, text, unknown, Args};

/// A `BROKER.*` command (or, for [`SetArrival`], the plain Redis command a
/// module command replicates as).
pub trait Command: Sized {
    /// The command's name as sent, e.g. `BROKER.JOIN`.
    const NAME: &'static str;
    /// Where its keys are in `argv`, as Redis's command table says it.
    const KEYS: Keys;

    /// Reads the arguments after the command name.
    ///
    /// # Errors
    /// A [`ParseError`] whose text is the module's error reply.
    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Self, ParseError>;

    /// The arguments after the command name, as the gateway sends them;
    /// [`Command::parse`] reads them back to the same value.
    fn to_args(&self) -> Vec<Arg<'_>>;
}

/// Key positions in `argv` (the command name is 0), as in Redis's command
/// table: first key, last key, step; all 0 for a keyless command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// Position of the first key; 0 when there is none.
    pub first: i32,
    /// Position of the last key.
    pub last: i32,
    /// Step between keys.
    pub step: i32,
}

impl Keys {
    /// No key: the command runs on any server (or every master) of a cluster.
    pub const NONE: Keys = Keys {
        first: 0,
        last: 0,
        step: 0,
    };
    /// One key, the first argument (a room, a user, a rate-limit key).
    pub const FIRST: Keys = Keys {
        first: 1,
        last: 1,
        step: 1,
    };
}

/// Longest presence grace a command may ask for (one hour).
pub const MAX_GRACE_MS: u64 = 3_600_000;

/// How long a departed user lingers in its rooms: the trailing
/// `[GRACE ms]` of a command that ends connections, or the `UNTIL ms` form
/// it replicates as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linger {
    /// `GRACE ms`: until `ms` after the command runs (ms > 0).
    Grace(u64),
    /// `UNTIL ms`: until this time, ms since the Unix epoch.
    Until(u64),
}

impl Linger {
    /// The `GRACE ms` of a command that ends connections: `None` for 0, as
    /// the module reads `GRACE 0`.
    pub fn grace(ms: u64) -> Option<Linger> {
        (ms > 0).then_some(Linger::Grace(ms))
    }

    /// The deadline, ms since the Unix epoch, when the command runs at `now_ms`.
    pub fn until(self, now_ms: u64) -> u64 {
        match self {
            Linger::Grace(ms) => now_ms.saturating_add(ms),
            Linger::Until(until) => until,
        }
    }

    /// The absolute form a replica receives (`GRACE` becomes `UNTIL`).
    pub fn at(self, now_ms: u64) -> Linger {
        Linger::Until(self.until(now_ms))
    }
}

/// The trailing options of a command that ends connections (`CONN.CLOSE`,
/// `LEAVE`, `NODE.RELEASE`): `GRACE ms` / `UNTIL ms` (how long the users
/// linger) and `REASON r` (the `reason` of the lifecycle events it causes,
/// `[a-z_]{1,32}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Departure {
    /// `None` without `GRACE`/`UNTIL` or with `GRACE 0`; the last one wins.
    pub(crate) linger: Option<Linger>,
    /// `None` without `REASON`.
    pub(crate) reason: Option<String>,
}

impl Departure {
    /// Reads the trailing options.
    fn parse<A: AsRef<[u8]>>(args: &mut Args<'_, A>) -> Result<Departure, ParseError> {
        let mut out = Departure::default();
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "GRACE" => {
                    let ms = args.u64("GRACE ms")?;
                    if ms > MAX_GRACE_MS {
                        return Err(ParseError::Integer("GRACE ms"));
                    }
                    out.linger = (ms > 0).then_some(Linger::Grace(ms));
                }
                "UNTIL" => out.linger = Some(Linger::Until(args.u64("UNTIL ms")?)),
                "REASON" => {
                    let reason = args.string("REASON")?;
                    if !crate::lifecycle::is_reason(&reason) {
                        return Err(ParseError::Invalid("REASON: expected [a-z_]{1,32}".into()));
                    }
                    out.reason = Some(reason);
                }
                other => return Err(unknown(other)),
            }
        }
        Ok(out)
    }

    /// Writes the options back.
    fn write<'a>(linger: Option<Linger>, reason: Option<&'a str>, out: &mut Vec<Arg<'a>>) {
        match linger {
            Some(Linger::Grace(ms)) => out.extend([text("GRACE"), number(ms)]),
            Some(Linger::Until(until)) => out.extend([text("UNTIL"), number(until)]),
            None => {}
        }
        if let Some(reason) = reason {
            out.extend([text("REASON"), text(reason)]);
        }
    }
}

/// Parses a command that takes no argument.
fn no_args<A: AsRef<[u8]>>(args: &[A]) -> Result<(), ParseError> {
    Args::new(args).done()
}
