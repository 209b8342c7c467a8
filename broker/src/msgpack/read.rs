//! The one MessagePack reader: a bounds-checked cursor that yields one item
//! header at a time, and the walk over one whole value that checks it.
//!
//! The bytes come from anyone on the internet (client frames) or from any
//! Redis client (`BROKER.PUBLISH` payloads), so nothing here panics,
//! recurses on input or allocates by an announced length.

use super::{WireError, MAX_DEPTH};

/// One MessagePack item: a scalar with its content, or a container header
/// with its element count (its elements follow in the input).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// A non-negative integer (positive fixint and `uint 8..64`).
    Uint(u64),
    /// A negative fixint or `int 8..64` (which may hold a non-negative value).
    Int(i64),
    /// `float 32`.
    F32(f32),
    /// `float 64`.
    F64(f64),
    /// A UTF-8 string.
    Str(&'a str),
    /// Binary data.
    Bin(&'a [u8]),
    /// An extension value: its type and data.
    Ext(i8, &'a [u8]),
    /// An array header: this many values follow.
    Array(usize),
    /// A map header: this many key/value pairs follow.
    Map(usize),
}

/// A read position in a byte slice. Every read is bounds-checked and fails
/// with [`WireError::Truncated`] rather than panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Fails with [`WireError::TrailingBytes`] unless the whole input was
    /// read.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// A big-endian unsigned integer of `n` (1, 2, 4 or 8) bytes.
    fn be(&mut self, n: usize) -> Result<u64, WireError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A length field of `n` bytes.
    fn len_field(&mut self, n: usize) -> Result<usize, WireError> {
        usize::try_from(self.be(n)?).map_err(|_| WireError::Truncated)
    }

    fn str(&mut self, n: usize) -> Result<Item<'a>, WireError> {
        std::str::from_utf8(self.take(n)?)
            .map(Item::Str)
            .map_err(|_| WireError::NotUtf8)
    }

    fn ext(&mut self, n: usize) -> Result<Item<'a>, WireError> {
        let ty = self.byte()? as i8;
        Ok(Item::Ext(ty, self.take(n)?))
    }

    /// A container of `values` values. Each takes at least one byte, so a
    /// count beyond the remaining input is a lie and is refused here, before
    /// anyone sizes a buffer by it.
    fn container(&self, values: usize, item: Item<'a>) -> Result<Item<'a>, WireError> {
        if values > self.remaining() {
            Err(WireError::Truncated)
        } else {
            Ok(item)
        }
    }

    /// Reads the next item's header and, for scalars, its content.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] when the input ends inside the item or a
    /// container announces more values than the input could hold,
    /// [`WireError::NotUtf8`] for a `str` that is not UTF-8, and
    /// [`WireError::InvalidPayload`] for the reserved marker `0xc1`.
    pub fn item(&mut self) -> Result<Item<'a>, WireError> {
        let marker = self.byte()?;
        match marker {
            0x00..=0x7f => Ok(Item::Uint(u64::from(marker))),
            0x80..=0x8f => {
                let n = usize::from(marker & 0x0f);
                self.container(2 * n, Item::Map(n))
            }
            0x90..=0x9f => {
                let n = usize::from(marker & 0x0f);
                self.container(n, Item::Array(n))
            }
            0xa0..=0xbf => self.str(usize::from(marker & 0x1f)),
            0xc0 => Ok(Item::Nil),
            0xc1 => Err(WireError::InvalidPayload(
                "reserved MessagePack marker 0xc1".to_owned(),
            )),
            0xc2 => Ok(Item::Bool(false)),
            0xc3 => Ok(Item::Bool(true)),
            // bin 8/16/32: a length of 1, 2 or 4 bytes, then the data.
            0xc4..=0xc6 => {
                let n = self.len_field(1 << (marker - 0xc4))?;
                Ok(Item::Bin(self.take(n)?))
            }
            // ext 8/16/32: a length, a type byte, then the data.
            0xc7..=0xc9 => {
                let n = self.len_field(1 << (marker - 0xc7))?;
                self.ext(n)
            }
            0xca => Ok(Item::F32(f32::from_bits(self.be(4)? as u32))),
            0xcb => Ok(Item::F64(f64::from_bits(self.be(8)?))),
            0xcc..=0xcf => Ok(Item::Uint(self.be(1 << (marker - 0xcc))?)),
            0xd0 => Ok(Item::Int(i64::from(self.be(1)? as u8 as i8))),
            0xd1 => Ok(Item::Int(i64::from(self.be(2)? as u16 as i16))),
            0xd2 => Ok(Item::Int(i64::from(self.be(4)? as u32 as i32))),
            0xd3 => Ok(Item::Int(self.be(8)? as i64)),
            // fixext 1/2/4/8/16: a type byte and that much data.
            0xd4..=0xd8 => self.ext(1 << (marker - 0xd4)),
            0xd9..=0xdb => {
                let n = self.len_field(1 << (marker - 0xd9))?;
                self.str(n)
            }
            // array 16/32, map 16/32: a length of 2 or 4 bytes.
            0xdc | 0xdd => {
                let n = self.len_field(2 << (marker - 0xdc))?;
                self.container(n, Item::Array(n))
            }
            0xde | 0xdf => {
                let n = self.len_field(2 << (marker - 0xde))?;
                self.container(n.saturating_mul(2), Item::Map(n))
            }
            0xe0..=0xff => Ok(Item::Int(i64::from(marker as i8))),
        }
    }

    /// Steps over exactly one value, checking it on the way, and returns its
    /// bytes: well-formed, at most [`MAX_DEPTH`] containers deep, every `str`
    /// UTF-8, every announced length backed by input. Iterative, with a fixed
    /// stack of pending element counts, so it neither recurses nor
    /// allocates.
    ///
    /// A value nested too deep is still walked to its end (counting the
    /// values owed instead of stacking them), so input that is both too deep
    /// and cut short is reported as truncated.
    ///
    /// # Errors
    ///
    /// Those of [`Reader::item`], and [`WireError::TooDeep`].
    pub fn value(&mut self) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        // pending[i]: values still to read in the i-th enclosing container.
        let mut pending = [0usize; MAX_DEPTH];
        let mut depth = 0usize;
        let mut top_level_done = false;
        loop {
            // Close the containers that are complete, then claim the slot of
            // the next value.
            while depth > 0 && pending.get(depth - 1) == Some(&0) {
                depth -= 1;
            }
            if depth == 0 {
                if top_level_done {
                    break;
                }
                top_level_done = true;
            } else if let Some(slot) = pending.get_mut(depth - 1) {
                *slot -= 1;
            }
            let elements = match self.item()? {
                Item::Array(n) => n,
                // `item` checked that 2n fits in the input.
                Item::Map(n) => n.saturating_mul(2),
                _ => continue,
            };
            // `depth` containers enclose this one; it would be number
            // depth + 1.
            match pending.get_mut(depth) {
                Some(slot) => {
                    if elements > 0 {
                        *slot = elements;
                        depth += 1;
                    }
                }
                None => {
                    let owed = pending.iter().sum::<usize>().saturating_add(elements);
                    self.skip(owed)?;
                    return Err(WireError::TooDeep);
                }
            }
        }
        self.buf.get(start..self.pos).ok_or(WireError::Truncated)
    }

    /// Steps over `owed` values without looking at their depth: a single
    /// count of the values still owed stands in for the stack.
    fn skip(&mut self, mut owed: usize) -> Result<(), WireError> {
        while owed > 0 {
            owed -= 1;
            let inner = match self.item()? {
                Item::Array(n) => n,
                Item::Map(n) => n.saturating_mul(2),
                _ => 0,
            };
            owed = owed.saturating_add(inner);
            // Every value owed takes at least one more byte.
            if owed > self.remaining() {
                return Err(WireError::Truncated);
            }
        }
        Ok(())
    }
}

/// The item of a raw value that is one scalar (read whole); containers and
/// malformed bytes give `None`.
pub fn scalar(raw: &[u8]) -> Option<Item<'_>> {
    let mut r = Reader::new(raw);
    let item = r.item().ok()?;
    r.at_end().then_some(item)
}

/// A raw value that is a `str`.
pub fn as_str(raw: &[u8]) -> Option<&str> {
    match scalar(raw)? {
        Item::Str(s) => Some(s),
        _ => None,
    }
}

/// A raw value that is a non-negative integer (in any integer encoding).
pub fn as_uint(raw: &[u8]) -> Option<u64> {
    match scalar(raw)? {
        Item::Uint(n) => Some(n),
        Item::Int(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

/// A raw value that is an integer in the `i64` range.
pub fn as_i64(raw: &[u8]) -> Option<i64> {
    match scalar(raw)? {
        Item::Uint(n) => i64::try_from(n).ok(),
        Item::Int(n) => Some(n),
        _ => None,
    }
}

/// A raw value that is a boolean.
pub fn as_bool(raw: &[u8]) -> Option<bool> {
    match scalar(raw)? {
        Item::Bool(b) => Some(b),
        _ => None,
    }
}
