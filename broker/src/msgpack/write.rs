//! The one MessagePack writer: chainable calls into a growing buffer, so an
//! encoder reads like the value it writes.
//!
//! Writes go to an `rmp` [`ByteBuf`], which cannot fail to grow (its error
//! type is `Infallible`); every write result is unwrapped by exhaustive
//! matching, which the compiler proves never takes the error arm.
//! MessagePack cannot express a `str`, `bin` or container of 4 Gi or more;
//! lengths saturate, and the inputs here (Redis arguments, frames) are far
//! below that.

use std::convert::Infallible;

use rmp::encode::{self, ByteBuf, ValueWriteError};

/// The value of a write into a [`ByteBuf`], which cannot fail.
fn infallible<T>(result: Result<T, ValueWriteError<Infallible>>) -> T {
    match result {
        Ok(value) => value,
        Err(ValueWriteError::InvalidMarkerWrite(e) | ValueWriteError::InvalidDataWrite(e)) => {
            match e {}
        }
    }
}

/// Saturating `usize` -> `u32` for MessagePack lengths (see the module docs).
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A MessagePack writer. Each call appends one item (a scalar, or a
/// container header whose elements the next calls write).
#[derive(Debug, Default)]
pub struct Writer(ByteBuf);

impl Writer {
    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer(ByteBuf::with_capacity(capacity))
    }

    /// A map header: `len` key/value pairs follow.
    pub fn map(&mut self, len: usize) -> &mut Writer {
        infallible(encode::write_map_len(&mut self.0, len32(len)));
        self
    }

    /// An array header: `len` values follow.
    pub fn array(&mut self, len: usize) -> &mut Writer {
        infallible(encode::write_array_len(&mut self.0, len32(len)));
        self
    }

    /// A `str`.
    pub fn str(&mut self, s: &str) -> &mut Writer {
        infallible(encode::write_str(&mut self.0, s));
        self
    }

    /// A `str`, or `nil` for `None`.
    pub fn opt_str(&mut self, s: Option<&str>) -> &mut Writer {
        match s {
            Some(s) => self.str(s),
            None => self.nil(),
        }
    }

    /// A `bin`.
    pub fn bin(&mut self, b: &[u8]) -> &mut Writer {
        infallible(encode::write_bin(&mut self.0, b));
        self
    }

    /// An unsigned integer in its most compact form.
    pub fn uint(&mut self, v: u64) -> &mut Writer {
        infallible(encode::write_uint(&mut self.0, v));
        self
    }

    /// A signed integer in its most compact form (non-negative values as
    /// uint).
    pub fn int(&mut self, v: i64) -> &mut Writer {
        infallible(encode::write_sint(&mut self.0, v));
        self
    }

    /// A `float 64`.
    pub fn f64(&mut self, v: f64) -> &mut Writer {
        infallible(encode::write_f64(&mut self.0, v));
        self
    }

    /// A boolean.
    pub fn bool(&mut self, v: bool) -> &mut Writer {
        match encode::write_bool(&mut self.0, v) {
            Ok(()) => {}
            Err(e) => match e {},
        }
        self
    }

    /// `nil`.
    pub fn nil(&mut self) -> &mut Writer {
        match encode::write_nil(&mut self.0) {
            Ok(()) => {}
            Err(e) => match e {},
        }
        self
    }

    /// The bytes of an already-encoded value, copied in as they are (a
    /// published `data`, a stored frame): never decoded and re-encoded.
    pub fn raw(&mut self, raw: &[u8]) -> &mut Writer {
        self.0.as_mut_vec().extend_from_slice(raw);
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.0.as_slice().len()
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer, for the JSON converter that patches container headers
    /// in place.
    pub(crate) fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        self.0.as_mut_vec()
    }

    /// The encoded bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_vec()
    }
}
