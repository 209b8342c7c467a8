//! MessagePack, the one codec of the whole workspace: the [`Reader`], the
//! [`Writer`], the validator [`check`] and the JSON conversions
//! ([`to_json`], [`from_json`]).
//!
//! Every other part builds on these: the protocol frames
//! ([`crate::protocol`]), the node channel envelopes ([`crate::envelope`]),
//! publish payloads ([`crate::payload`]), and outside this crate the load
//! tool and the fuzz targets. Values that are already MessagePack (a
//! published `data`, a stored frame) are copied in raw with
//! [`Writer::raw`], never decoded and re-encoded.

mod json;
mod read;
mod write;

use thiserror::Error;

pub use json::{from_json, to_json};
pub use read::{as_bool, as_i64, as_str, as_uint, scalar, Item, Reader};
pub use write::Writer;

/// Deepest container nesting accepted in a value: an array inside an array
/// ... 64 levels is fine, 65 is refused. Deeper values are almost always
/// attacks on recursive decoders (the gateway's, or a client's).
pub const MAX_DEPTH: usize = 64;

/// Why MessagePack bytes (a payload, a frame, an envelope) were refused. The
/// `Display` text follows `ERR invalid payload: ` in a Redis error reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// Not well-formed MessagePack (e.g. the reserved marker `0xc1`).
    #[error("{0}")]
    InvalidPayload(String),
    /// `FORMAT json` text that serde_json refused.
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    /// A MessagePack `str`, or a `FORMAT string` payload, that is not UTF-8.
    #[error("string is not valid UTF-8")]
    NotUtf8,
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The input ends inside a value, or announces more bytes or elements
    /// than it holds.
    #[error("truncated MessagePack value")]
    Truncated,
    /// Bytes left over after the one value.
    #[error("trailing bytes after the MessagePack value")]
    TrailingBytes,
    /// Well-formed MessagePack that is not one of the node channel envelopes.
    #[error("not a node channel envelope")]
    InvalidEnvelope,
}

/// Checks that `bytes` is exactly one well-formed MessagePack value.
///
/// Nesting is at most [`MAX_DEPTH`], nothing follows the value, every `str`
/// is UTF-8, and every announced length fits in the remaining input (an
/// array announcing four billion elements in three bytes is refused at once,
/// never allocated for). Ext types and `bin` are accepted as they are. The
/// walk is a single pass without allocation: it runs on every publish.
///
/// # Errors
///
/// [`WireError::Truncated`], [`WireError::TrailingBytes`],
/// [`WireError::TooDeep`], [`WireError::NotUtf8`], or
/// [`WireError::InvalidPayload`] for the reserved marker `0xc1`.
pub fn check(bytes: &[u8]) -> Result<(), WireError> {
    let mut reader = Reader::new(bytes);
    reader.value()?;
    reader.finish()
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
