//! The module's one error type and its mapping to Redis error replies.
//!
//! Every failure of a command ends here, so every error reply starts with a
//! code from `docs/COMMANDS.md` that a gateway can match on.

use broker::names::NameError;
use broker::registry::RegistryError;
use broker::wire::WireError;
use redis_module::RedisError;
use thiserror::Error;

/// Why a command failed.
#[derive(Debug, Error)]
pub enum Error {
    /// A required argument is missing.
    #[error("ERR wrong number of arguments: {0}")]
    Arity(String),
    /// An argument that is not valid (e.g. not UTF-8).
    #[error("ERR invalid {0}")]
    Invalid(String),
    /// Unknown option, missing option value, or extra arguments.
    #[error("ERR syntax error: {0}")]
    Syntax(String),
    /// An argument that should be an integer in range is not.
    #[error("ERR invalid {0}: expected an integer in range")]
    Integer(&'static str),
    /// An invalid name (room, user, conn, node, ip).
    #[error("ERR {0}")]
    Name(#[from] NameError),
    /// A payload that is not what its `FORMAT` says.
    #[error("ERR invalid payload: {0}")]
    Payload(#[from] WireError),
    /// A refusal of the registry (limits, lease, membership...).
    #[error("{0}")]
    Registry(#[from] RegistryError),
    /// A publish over its rate limit.
    #[error("RATELIMITED {retry_ms}")]
    RateLimited {
        /// Milliseconds until a publish would be allowed.
        retry_ms: i64,
    },
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

/// A client's argument for an error message: up to 32 bytes, printable
/// ASCII as is, every other byte as `\xNN`, so the reply stays valid text.
pub fn quoted(arg: &[u8]) -> String {
    let mut out = String::new();
    for &b in arg.iter().take(32) {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Result of a command body.
pub type Result<T> = std::result::Result<T, Error>;
