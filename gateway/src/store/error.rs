//! What a failed module call means, typed once: [`StoreError`] says whether
//! Redis was unreachable, the module refused, or a reply had an unexpected
//! shape; a refusal carries a [`Refusal`], the module's code as an enum
//! value (see `docs/COMMANDS.md`). [`Refusal::parse`] is the only place
//! that reads a refusal's text: the rest of the gateway matches values.

use thiserror::Error;

/// Why a module call failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// Redis did not answer (down, restarting, cut off, timed out).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The module refused the request.
    #[error("{code} {detail}")]
    Refused {
        /// What the refusal means.
        refusal: Refusal,
        /// The first word of the error reply (`NOTMEMBER`, `LIMIT`,
        /// `ERR`...), kept for the admin API's error text and the logs.
        code: String,
        /// The rest of the error reply.
        detail: String,
    },
    /// A reply of an unexpected shape.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// The refusals the module sends (`broker::registry::RegistryError`, the
/// module's rate limit and argument errors), as the gateway tells them
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `LIMIT user`: the user holds its maximum of connections.
    UserLimit,
    /// `LIMIT ip`: the client address holds its maximum of connections.
    IpLimit,
    /// `NOLEASE`: this node has no live lease (it must lease again).
    NoLease,
    /// `CONFLICT`: the connection id belongs to another user or node.
    Conflict,
    /// `TOOMANYROOMS`: the connection is in its maximum of rooms.
    TooManyRooms,
    /// `FORBIDDEN`: another user's personal room.
    Forbidden,
    /// `NOTMEMBER`: a publish from a connection that is not in the room.
    NotMember,
    /// `RATELIMITED <retry_ms>`: a publish over its rate limit.
    RateLimited {
        /// Milliseconds until a publish would be allowed (1000 when the
        /// reply did not say).
        retry_ms: u64,
    },
    /// `ERR invalid payload: ...`: the data is not what its format says.
    InvalidPayload,
    /// `ERR ...` about a room (an invalid room name).
    InvalidRoom,
    /// Any other code (`ERR syntax error`, `WRONGTYPE`...): a request the
    /// gateway should not have sent.
    Other,
}

/// The retry delay of a `RATELIMITED` reply that does not state one.
const DEFAULT_RETRY_MS: u64 = 1000;

impl Refusal {
    /// The refusal an error reply's `code` (its first word) and `detail`
    /// (the rest) stand for. The one place that reads refusal texts.
    pub fn parse(code: &str, detail: &str) -> Refusal {
        match code {
            "LIMIT" if detail == "ip" => Refusal::IpLimit,
            "LIMIT" => Refusal::UserLimit,
            "NOLEASE" => Refusal::NoLease,
            "CONFLICT" => Refusal::Conflict,
            "TOOMANYROOMS" => Refusal::TooManyRooms,
            "FORBIDDEN" => Refusal::Forbidden,
            "NOTMEMBER" => Refusal::NotMember,
            "RATELIMITED" => Refusal::RateLimited {
                retry_ms: detail
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(DEFAULT_RETRY_MS),
            },
            "ERR" if detail.starts_with("invalid payload") => Refusal::InvalidPayload,
            "ERR" if detail.contains("room") => Refusal::InvalidRoom,
            _ => Refusal::Other,
        }
    }
}

impl StoreError {
    /// Types a Redis client error: transient Redis states and connection
    /// failures are `Unavailable`, error replies are refusals.
    pub(crate) fn from_redis(err: redis::RedisError) -> StoreError {
        // Redis states that pass (loading a file, a failover, a busy
        // script): not a refusal of the request.
        const TRANSIENT: [&str; 8] = [
            "LOADING",
            "READONLY",
            "CLUSTERDOWN",
            "TRYAGAIN",
            "MASTERDOWN",
            "BUSY",
            "MOVED",
            "ASK",
        ];
        if err.code().is_some_and(|code| TRANSIENT.contains(&code)) {
            return StoreError::Unavailable(err.to_string());
        }
        match err.kind() {
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => {
                StoreError::refused(err.code().unwrap_or("ERR"), err.detail().unwrap_or(""))
            }
            _ => StoreError::Unavailable(err.to_string()),
        }
    }

    /// A refusal from an error reply's code and detail.
    pub fn refused(code: &str, detail: &str) -> StoreError {
        StoreError::Refused {
            refusal: Refusal::parse(code, detail),
            code: code.to_string(),
            detail: detail.to_string(),
        }
    }

    /// The refusal, when the module refused.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            StoreError::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }
}

/// Result of a module call.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_refusal_text_is_typed() {
        for (text, refusal) in [
            ("LIMIT user", Refusal::UserLimit),
            ("LIMIT ip", Refusal::IpLimit),
            ("NOLEASE node has no live lease", Refusal::NoLease),
            (
                "CONFLICT connection id belongs to another user or node",
                Refusal::Conflict,
            ),
            (
                "TOOMANYROOMS connection is in too many rooms",
                Refusal::TooManyRooms,
            ),
            (
                "FORBIDDEN personal room of another user",
                Refusal::Forbidden,
            ),
            (
                "NOTMEMBER connection is not a member of the room",
                Refusal::NotMember,
            ),
            ("RATELIMITED 250", Refusal::RateLimited { retry_ms: 250 }),
            ("RATELIMITED", Refusal::RateLimited { retry_ms: 1000 }),
            ("RATELIMITED soon", Refusal::RateLimited { retry_ms: 1000 }),
            (
                "ERR invalid payload: not valid JSON",
                Refusal::InvalidPayload,
            ),
            ("ERR invalid room name", Refusal::InvalidRoom),
            ("ERR syntax error: unknown option X", Refusal::Other),
            (
                "WRONGTYPE rate-limit key does not hold an integer arrival time",
                Refusal::Other,
            ),
        ] {
            let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
            assert_eq!(Refusal::parse(code, detail), refusal, "{text}");
            let err = StoreError::refused(code, detail);
            assert_eq!(err.refusal(), Some(refusal), "{text}");
            assert_eq!(err.to_string().trim_end(), text, "the text stays whole");
        }
    }

    #[test]
    fn a_payload_refusal_naming_a_room_is_still_a_payload_refusal() {
        assert_eq!(
            Refusal::parse("ERR", "invalid payload: room field"),
            Refusal::InvalidPayload
        );
    }

    #[test]
    fn only_refusals_have_a_refusal() {
        assert_eq!(StoreError::Unavailable("down".into()).refusal(), None);
        assert_eq!(StoreError::Reply("odd".into()).refusal(), None);
    }
}
