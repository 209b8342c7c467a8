//! What a failed module call means, typed once: [`StoreError`] says whether
//! Redis was unreachable, the module refused, or a reply had an unexpected
//! shape; a refusal carries a [`Rejection`], whose refusal codes are the
//! module's own [`Refusal`] values (see `docs/COMMANDS.md`).
//! [`Rejection::parse`] is the only place that reads an error reply's text:
//! the rest of the gateway matches values.

use broker::command::Refusal;
use broker::names::NameError;
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
        rejection: Rejection,
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

/// What an error reply of the module means to the gateway: one of the
/// module's refusal codes ([`Refusal`], shared with the module), a payload
/// or room the module found invalid, or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A refusal code (`LIMIT`, `NOLEASE`, `NOTMEMBER`, `RATELIMITED`...).
    Refused(Refusal),
    /// `ERR invalid payload: ...`: the data is not what its format says.
    InvalidPayload,
    /// `ERR invalid room name`.
    InvalidRoom,
    /// Any other error (`ERR syntax error`, `WRONGTYPE`...): a request the
    /// gateway should not have sent.
    Other,
}

/// The retry delay of a `RATELIMITED` reply that does not state one.
const DEFAULT_RETRY_MS: u64 = 1000;

impl Rejection {
    /// What an error reply's `code` (its first word) and `detail` (the
    /// rest) stand for. The one place that reads the module's error texts:
    /// refusals through [`Refusal::parse`], the two `ERR`s the gateway tells
    /// apart by the texts the broker crate writes them with.
    pub fn parse(code: &str, detail: &str) -> Rejection {
        if let Some(refusal) = Refusal::parse(&format!("{code} {detail}")) {
            return Rejection::Refused(refusal);
        }
        match code {
            "RATELIMITED" => Rejection::Refused(Refusal::RateLimited {
                retry_ms: DEFAULT_RETRY_MS,
            }),
            "ERR" if detail.starts_with(INVALID_PAYLOAD) => Rejection::InvalidPayload,
            "ERR" if detail == NameError::Room.to_string() => Rejection::InvalidRoom,
            _ => Rejection::Other,
        }
    }
}

/// How the module's reply to a payload that is not what its format says
/// begins, after `ERR `.
const INVALID_PAYLOAD: &str = "invalid payload:";

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
            rejection: Rejection::parse(code, detail),
            code: code.to_string(),
            detail: detail.to_string(),
        }
    }

    /// What the module's error reply meant, when it sent one.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            StoreError::Refused { rejection, .. } => Some(*rejection),
            _ => None,
        }
    }

    /// The module's refusal code, when it refused with one.
    pub fn refusal(&self) -> Option<Refusal> {
        match self.rejection()? {
            Rejection::Refused(refusal) => Some(refusal),
            _ => None,
        }
    }
}

/// Result of a module call.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use broker::command::LimitKind;

    use super::*;

    #[test]
    fn every_module_refusal_text_is_typed() {
        for (text, rejection) in [
            (
                "LIMIT user",
                Rejection::Refused(Refusal::Limit(LimitKind::User)),
            ),
            (
                "LIMIT ip",
                Rejection::Refused(Refusal::Limit(LimitKind::Ip)),
            ),
            (
                "NOLEASE node has no live lease",
                Rejection::Refused(Refusal::NoLease),
            ),
            (
                "CONFLICT connection id belongs to another user or node",
                Rejection::Refused(Refusal::Conflict),
            ),
            (
                "TOOMANYROOMS connection is in too many rooms",
                Rejection::Refused(Refusal::TooManyRooms),
            ),
            (
                "FORBIDDEN personal room of another user",
                Rejection::Refused(Refusal::Forbidden),
            ),
            (
                "NOTMEMBER connection is not a member of the room",
                Rejection::Refused(Refusal::NotMember),
            ),
            (
                "RATELIMITED 250",
                Rejection::Refused(Refusal::RateLimited { retry_ms: 250 }),
            ),
            (
                "RATELIMITED",
                Rejection::Refused(Refusal::RateLimited { retry_ms: 1000 }),
            ),
            (
                "RATELIMITED soon",
                Rejection::Refused(Refusal::RateLimited { retry_ms: 1000 }),
            ),
            (
                "ERR invalid payload: not valid JSON",
                Rejection::InvalidPayload,
            ),
            ("ERR invalid room name", Rejection::InvalidRoom),
            ("ERR syntax error: unknown option X", Rejection::Other),
            (
                "WRONGTYPE rate-limit key does not hold an integer arrival time",
                Rejection::Other,
            ),
        ] {
            let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
            assert_eq!(Rejection::parse(code, detail), rejection, "{text}");
            let err = StoreError::refused(code, detail);
            assert_eq!(err.rejection(), Some(rejection), "{text}");
            assert_eq!(err.to_string().trim_end(), text, "the text stays whole");
        }
    }

    #[test]
    fn a_payload_refusal_naming_a_room_is_still_a_payload_refusal() {
        assert_eq!(
            Rejection::parse("ERR", "invalid payload: room field"),
            Rejection::InvalidPayload
        );
    }

    #[test]
    fn only_refusals_have_a_refusal() {
        assert_eq!(StoreError::Unavailable("down".into()).rejection(), None);
        assert_eq!(StoreError::Reply("odd".into()).rejection(), None);
    }
}
