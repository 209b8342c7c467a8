//! The module's one error type and its mapping to Redis error replies.
//!
//! Every failure of a command ends here, so every error reply starts with a
//! code from `docs/COMMANDS.md` that a gateway can match on: `ERR` for bad
//! arguments ([`ParseError`]), a [`Refusal`] code for a refused command.

use broker::command::{ParseError, Refusal};
use broker::msgpack::WireError;
use redis_module::RedisError;
use thiserror::Error;

/// Why a command failed.
#[derive(Debug, Error)]
pub enum Error {
    /// Bad arguments: missing, extra, not an integer, an invalid name...
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A payload that is not what its `FORMAT` says.
    #[error("ERR invalid payload: {0}")]
    Payload(#[from] WireError),
    /// A refusal (limits, lease, membership, rate...).
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// An invalid GCRA rate (`count`/`period` not positive...).
    #[error("ERR invalid rate: {0}")]
    Rate(#[from] broker::gcra::GcraError),
    /// The rate-limit key holds something that is not an arrival time.
    #[error("WRONGTYPE rate-limit key does not hold an integer arrival time")]
    WrongType,
    /// Something that should not happen (a caught panic, an encoding failure).
    #[error("ERR internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The Redis error reply: the message, its first word the code, with
    /// control characters escaped (an error reply is one line of text, and
    /// the message may quote a client's argument).
    pub fn into_redis(self) -> RedisError {
        RedisError::String(printable(&self.to_string()))
    }
}

/// `text` with control characters written as `\u{..}`.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Result of a command body.
pub type Result<T> = std::result::Result<T, Error>;
