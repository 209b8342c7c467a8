//! MessagePack on the wire: payload checks, the `msg` and `presence` frames
//! the module encodes once, and the envelopes on each node's Pub/Sub channel.
//!
//! The module builds every client-bound frame exactly once per publish and
//! every gateway forwards those bytes unchanged to each local member, so the
//! encoding lives here, next to its decoder, and is written with the
//! low-level `rmp` functions: the published `data` is already one MessagePack
//! value and is spliced into the frame as raw bytes, never decoded and
//! re-encoded.
//!
//! - [`check_msgpack`] guards the publish path: exactly one well-formed value,
//!   at most [`MAX_DEPTH`] containers deep, no trailing bytes, every announced
//!   length backed by real input. It walks the bytes once without
//!   allocating.
//! - [`encode_payload`] turns a `BROKER.PUBLISH` payload (`FORMAT msgpack`,
//!   `json` or `string`) into that one value.
//! - [`encode_msg_frame`] and [`encode_presence_frame`] build frames;
//!   [`encode_msg_envelope`], [`encode_presence_envelope`] and
//!   [`encode_kick_envelope`] wrap them for a node channel, and
//!   [`decode_envelope`] unwraps them in the gateway without copying the
//!   frame.
//!
//! MessagePack cannot express a `str` or `bin` of 4 GiB or more; the inputs
//! here are Redis arguments (512 MB at most by default), far below that.

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;

use rmp::encode::{self, ByteBuf, ValueWriteError};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

/// Deepest container nesting accepted in a payload: an array inside an array
/// ... 64 levels is fine, 65 is refused. Deeper values are almost always
/// attacks on recursive decoders (the gateway's, or a client's).
pub const MAX_DEPTH: usize = 64;

/// Why a payload, frame or envelope was refused. The `Display` text follows
/// `ERR invalid payload: ` in a Redis error reply.
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

/// Payload formats of `BROKER.PUBLISH ... FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One MessagePack value, checked and copied (the default).
    #[default]
    Msgpack,
    /// JSON text, converted to MessagePack.
    Json,
    /// Bytes delivered as a MessagePack string; must be UTF-8.
    String,
}

impl Format {
    /// Parses a `FORMAT` argument, ignoring ASCII case: `msgpack`, `json` or
    /// `string`.
    pub fn parse(s: &str) -> Option<Format> {
        [Format::Msgpack, Format::Json, Format::String]
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
    }

    /// The lower-case name, as accepted by [`Format::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Msgpack => "msgpack",
            Format::Json => "json",
            Format::String => "string",
        }
    }
}

/// Who published a client message: the `from` field of a `msg` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender<'a> {
    /// The publishing user (the token's `sub`).
    pub user: &'a str,
    /// The publishing connection.
    pub conn: &'a str,
}

/// What a `presence` frame announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceAction {
    /// The user's first connection entered the room.
    Join,
    /// The user's last connection left the room.
    Leave,
}

impl PresenceAction {
    /// `"join"` or `"leave"`, as in the frame's `action` field.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceAction::Join => "join",
            PresenceAction::Leave => "leave",
        }
    }
}

/// One decoded node channel envelope, borrowing from the received bytes.
///
/// `frame` is a sub-slice of the input, so a gateway holding the message as
/// `Bytes` can `slice_ref` it and fan it out without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// A room message: send `frame` to every local member of `room` except
    /// the connection `except`.
    Msg {
        /// The room.
        room: &'a str,
        /// The message's sequence number in the room.
        seq: u64,
        /// The room's epoch.
        epoch: &'a str,
        /// A connection that must not receive it (`others: true`).
        except: Option<&'a str>,
        /// The encoded `msg` frame.
        frame: &'a [u8],
        /// Publish time (ms since the Unix epoch), for latency metrics.
        ts: u64,
    },
    /// A server broadcast: send `frame` to every local connection, or with
    /// `namespace`, to every local connection in a room of that namespace.
    Broadcast {
        /// Restricts the broadcast to members of this namespace's rooms.
        namespace: Option<&'a str>,
        /// The encoded `msg` frame.
        frame: &'a [u8],
        /// Publish time (ms since the Unix epoch).
        ts: u64,
    },
    /// A presence event: send `frame` to every local member of `room`.
    Presence {
        /// The room.
        room: &'a str,
        /// The room's epoch.
        epoch: &'a str,
        /// The encoded `presence` frame.
        frame: &'a [u8],
    },
    /// Close these local connections of `user` with `reason`.
    Kick {
        /// The user being kicked.
        user: &'a str,
        /// The user's connections on this node.
        conns: Vec<&'a str>,
        /// Close reason for the client.
        reason: &'a str,
    },
}

// ---------------------------------------------------------------------------
// Encoding helpers. A `ByteBuf` cannot fail to grow (its error type is
// `Infallible`), so every write result is unwrapped by exhaustive matching,
// which the compiler proves can never take the error arm.

/// The value of a write into a [`ByteBuf`], which cannot fail.
fn infallible<T>(result: Result<T, ValueWriteError<Infallible>>) -> T {
    match result {
        Ok(value) => value,
        Err(ValueWriteError::InvalidMarkerWrite(e) | ValueWriteError::InvalidDataWrite(e)) => {
            match e {}
        }
    }
}

/// Saturating `usize` → `u32` for MessagePack lengths (see the module docs).
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn put_str(buf: &mut ByteBuf, s: &str) {
    infallible(encode::write_str(buf, s));
}

fn put_bin(buf: &mut ByteBuf, b: &[u8]) {
    infallible(encode::write_bin(buf, b));
}

fn put_uint(buf: &mut ByteBuf, v: u64) {
    infallible(encode::write_uint(buf, v));
}

fn put_nil(buf: &mut ByteBuf) {
    match encode::write_nil(buf) {
        Ok(()) => {}
        Err(e) => match e {},
    }
}

fn put_map_len(buf: &mut ByteBuf, len: usize) {
    infallible(encode::write_map_len(buf, len32(len)));
}

fn put_array_len(buf: &mut ByteBuf, len: usize) {
    infallible(encode::write_array_len(buf, len32(len)));
}

/// Writes the raw bytes of an already-encoded value.
fn put_raw(buf: &mut ByteBuf, raw: &[u8]) {
    buf.as_mut_vec().extend_from_slice(raw);
}

// ---------------------------------------------------------------------------
// Decoding: a cursor over the input that yields one header at a time.

/// One MessagePack item: a scalar with its content, or a container header
/// with its element count (its elements follow).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Item<'a> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Ext(i8, &'a [u8]),
    Array(usize),
    Map(usize),
}

/// A read position in a byte slice. Every read is bounds-checked and fails
/// with [`WireError::Truncated`], never panics.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
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

    fn str(&mut self, n: usize) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::NotUtf8)
    }

    fn ext(&mut self, n: usize) -> Result<Item<'a>, WireError> {
        let ty = self.byte()? as i8;
        Ok(Item::Ext(ty, self.take(n)?))
    }

    /// A container of `elements` values: each takes at least one byte, so a
    /// count beyond the remaining input is a lie and is refused here, before
    /// anyone sizes a buffer by it.
    fn container(&self, elements: usize) -> Result<(), WireError> {
        if elements > self.remaining() {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    fn array(&mut self, n: usize) -> Result<Item<'a>, WireError> {
        self.container(n)?;
        Ok(Item::Array(n))
    }

    fn map(&mut self, n: usize) -> Result<Item<'a>, WireError> {
        self.container(n.saturating_mul(2))?;
        Ok(Item::Map(n))
    }

    /// Reads the next item's header and, for scalars, its content.
    fn item(&mut self) -> Result<Item<'a>, WireError> {
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Item::Uint(u64::from(marker)),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f))?,
            0x90..=0x9f => self.array(usize::from(marker & 0x0f))?,
            0xa0..=0xbf => Item::Str(self.str(usize::from(marker & 0x1f))?),
            0xc0 => Item::Nil,
            0xc1 => {
                return Err(WireError::InvalidPayload(
                    "reserved MessagePack marker 0xc1".to_owned(),
                ))
            }
            0xc2 => Item::Bool(false),
            0xc3 => Item::Bool(true),
            0xc4 => {
                let n = self.len_field(1)?;
                Item::Bin(self.take(n)?)
            }
            0xc5 => {
                let n = self.len_field(2)?;
                Item::Bin(self.take(n)?)
            }
            0xc6 => {
                let n = self.len_field(4)?;
                Item::Bin(self.take(n)?)
            }
            0xc7 => {
                let n = self.len_field(1)?;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.len_field(2)?;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.len_field(4)?;
                self.ext(n)?
            }
            0xca => Item::F32(f32::from_bits(self.be(4)? as u32)),
            0xcb => Item::F64(f64::from_bits(self.be(8)?)),
            0xcc => Item::Uint(self.be(1)?),
            0xcd => Item::Uint(self.be(2)?),
            0xce => Item::Uint(self.be(4)?),
            0xcf => Item::Uint(self.be(8)?),
            0xd0 => Item::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Item::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Item::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Item::Int(self.be(8)? as i64),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xd9 => {
                let n = self.len_field(1)?;
                Item::Str(self.str(n)?)
            }
            0xda => {
                let n = self.len_field(2)?;
                Item::Str(self.str(n)?)
            }
            0xdb => {
                let n = self.len_field(4)?;
                Item::Str(self.str(n)?)
            }
            0xdc => {
                let n = self.len_field(2)?;
                self.array(n)?
            }
            0xdd => {
                let n = self.len_field(4)?;
                self.array(n)?
            }
            0xde => {
                let n = self.len_field(2)?;
                self.map(n)?
            }
            0xdf => {
                let n = self.len_field(4)?;
                self.map(n)?
            }
            0xe0..=0xff => Item::Int(i64::from(marker as i8)),
        })
    }

    /// Skips exactly one value, checking it on the way. Iterative, with a
    /// fixed stack of pending element counts, so it neither recurses nor
    /// allocates.
    fn skip_value(&mut self) -> Result<(), WireError> {
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
                    return Ok(());
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
            let slot = pending.get_mut(depth).ok_or(WireError::TooDeep)?;
            if elements > 0 {
                *slot = elements;
                depth += 1;
            }
        }
    }

    /// Expects a `str`.
    fn expect_str(&mut self) -> Result<&'a str, WireError> {
        match self.item()? {
            Item::Str(s) => Ok(s),
            _ => Err(WireError::InvalidEnvelope),
        }
    }

    /// Expects a non-negative integer.
    fn expect_uint(&mut self) -> Result<u64, WireError> {
        match self.item()? {
            Item::Uint(n) => Ok(n),
            Item::Int(n) => u64::try_from(n).map_err(|_| WireError::InvalidEnvelope),
            _ => Err(WireError::InvalidEnvelope),
        }
    }

    /// Expects a `bin`.
    fn expect_bin(&mut self) -> Result<&'a [u8], WireError> {
        match self.item()? {
            Item::Bin(b) => Ok(b),
            _ => Err(WireError::InvalidEnvelope),
        }
    }

    /// Expects a `str` or `nil`.
    fn expect_opt_str(&mut self) -> Result<Option<&'a str>, WireError> {
        match self.item()? {
            Item::Str(s) => Ok(Some(s)),
            Item::Nil => Ok(None),
            _ => Err(WireError::InvalidEnvelope),
        }
    }

    /// Fails unless the whole input was consumed.
    fn finish(&self) -> Result<(), WireError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
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
pub fn check_msgpack(bytes: &[u8]) -> Result<(), WireError> {
    let mut reader = Reader::new(bytes);
    reader.skip_value()?;
    reader.finish()
}

/// Turns a `BROKER.PUBLISH` payload into one MessagePack value, the frame's
/// `data`.
///
/// - [`Format::Msgpack`]: checked with [`check_msgpack`] and copied.
/// - [`Format::Json`]: parsed with serde_json and re-encoded, keeping the
///   order of object keys: objects → maps with `str` keys, arrays → arrays,
///   integers → the smallest MessagePack int (u64/i64 range), other numbers →
///   float 64, strings → `str`, booleans → bool, `null` → nil. Nesting is
///   limited to [`MAX_DEPTH`] as for MessagePack payloads.
/// - [`Format::String`]: must be UTF-8; encoded as a MessagePack `str`.
///
/// # Errors
///
/// The errors of [`check_msgpack`]; [`WireError::InvalidJson`] or
/// [`WireError::TooDeep`] for JSON; [`WireError::NotUtf8`] for a string.
pub fn encode_payload(format: Format, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    match format {
        Format::Msgpack => {
            check_msgpack(payload)?;
            Ok(payload.to_vec())
        }
        Format::Json => json_to_msgpack(payload),
        Format::String => {
            let text = std::str::from_utf8(payload).map_err(|_| WireError::NotUtf8)?;
            let mut buf = ByteBuf::with_capacity(text.len() + 5);
            put_str(&mut buf, text);
            Ok(buf.into_vec())
        }
    }
}

/// Encodes a `msg` frame: the map `{t: "msg", room, ev, data, seq, epoch, ts,
/// from?}` in exactly that key order, with `from: {user, conn}` only for a
/// client's publish. `data` must already be one MessagePack value (as
/// returned by [`encode_payload`]); it is copied in raw.
pub fn encode_msg_frame(
    room: &str,
    ev: &str,
    data: &[u8],
    seq: u64,
    epoch: &str,
    ts_ms: u64,
    from: Option<Sender<'_>>,
) -> Vec<u8> {
    let from_len = from.map_or(0, |s| 16 + s.user.len() + s.conn.len());
    let mut buf =
        ByteBuf::with_capacity(64 + room.len() + ev.len() + data.len() + epoch.len() + from_len);
    put_map_len(&mut buf, if from.is_some() { 8 } else { 7 });
    put_str(&mut buf, "t");
    put_str(&mut buf, "msg");
    put_str(&mut buf, "room");
    put_str(&mut buf, room);
    put_str(&mut buf, "ev");
    put_str(&mut buf, ev);
    put_str(&mut buf, "data");
    put_raw(&mut buf, data);
    put_str(&mut buf, "seq");
    put_uint(&mut buf, seq);
    put_str(&mut buf, "epoch");
    put_str(&mut buf, epoch);
    put_str(&mut buf, "ts");
    put_uint(&mut buf, ts_ms);
    if let Some(sender) = from {
        put_str(&mut buf, "from");
        put_map_len(&mut buf, 2);
        put_str(&mut buf, "user");
        put_str(&mut buf, sender.user);
        put_str(&mut buf, "conn");
        put_str(&mut buf, sender.conn);
    }
    buf.into_vec()
}

/// Encodes a `presence` frame: `{t: "presence", room, user, action}`.
pub fn encode_presence_frame(room: &str, user: &str, action: PresenceAction) -> Vec<u8> {
    let mut buf = ByteBuf::with_capacity(48 + room.len() + user.len());
    put_map_len(&mut buf, 4);
    put_str(&mut buf, "t");
    put_str(&mut buf, "presence");
    put_str(&mut buf, "room");
    put_str(&mut buf, room);
    put_str(&mut buf, "user");
    put_str(&mut buf, user);
    put_str(&mut buf, "action");
    put_str(&mut buf, action.as_str());
    buf.into_vec()
}

/// Wraps a `msg` frame for a node channel: `["msg", room, seq, epoch,
/// except_conn | nil, frame (bin), ts]`.
pub fn encode_msg_envelope(
    room: &str,
    seq: u64,
    epoch: &str,
    except: Option<&str>,
    frame: &[u8],
    ts: u64,
) -> Vec<u8> {
    let except_len = except.map_or(0, str::len);
    let mut buf = ByteBuf::with_capacity(40 + room.len() + epoch.len() + except_len + frame.len());
    put_array_len(&mut buf, 7);
    put_str(&mut buf, "msg");
    put_str(&mut buf, room);
    put_uint(&mut buf, seq);
    put_str(&mut buf, epoch);
    match except {
        Some(conn) => put_str(&mut buf, conn),
        None => put_nil(&mut buf),
    }
    put_bin(&mut buf, frame);
    put_uint(&mut buf, ts);
    buf.into_vec()
}

/// Wraps a broadcast `msg` frame for a node channel: `["broadcast",
/// namespace | nil, frame (bin), ts]`.
pub fn encode_broadcast_envelope(namespace: Option<&str>, frame: &[u8], ts: u64) -> Vec<u8> {
    let mut buf = ByteBuf::with_capacity(32 + namespace.map_or(0, str::len) + frame.len());
    put_array_len(&mut buf, 4);
    put_str(&mut buf, "broadcast");
    match namespace {
        Some(ns) => put_str(&mut buf, ns),
        None => put_nil(&mut buf),
    }
    put_bin(&mut buf, frame);
    put_uint(&mut buf, ts);
    buf.into_vec()
}

/// Wraps a `presence` frame for a node channel: `["presence", room, 0, epoch,
/// nil, frame (bin)]` — the same shape as a message, so a gateway can share
/// the fan-out path.
pub fn encode_presence_envelope(room: &str, epoch: &str, frame: &[u8]) -> Vec<u8> {
    let mut buf = ByteBuf::with_capacity(32 + room.len() + epoch.len() + frame.len());
    put_array_len(&mut buf, 6);
    put_str(&mut buf, "presence");
    put_str(&mut buf, room);
    put_uint(&mut buf, 0);
    put_str(&mut buf, epoch);
    put_nil(&mut buf);
    put_bin(&mut buf, frame);
    buf.into_vec()
}

/// Tells a node to close connections: `["kick", user, [conn...], reason]`.
pub fn encode_kick_envelope(user: &str, conns: &[&str], reason: &str) -> Vec<u8> {
    let conns_len: usize = conns.iter().map(|c| c.len() + 5).sum();
    let mut buf = ByteBuf::with_capacity(24 + user.len() + conns_len + reason.len());
    put_array_len(&mut buf, 4);
    put_str(&mut buf, "kick");
    put_str(&mut buf, user);
    put_array_len(&mut buf, conns.len());
    for conn in conns {
        put_str(&mut buf, conn);
    }
    put_str(&mut buf, reason);
    buf.into_vec()
}

/// Decodes one node channel envelope, borrowing strings and the frame from
/// `bytes`. The frame itself is not checked: the module built it.
///
/// # Errors
///
/// [`WireError::InvalidEnvelope`] for an unknown kind, a wrong element count
/// or type; [`WireError::Truncated`], [`WireError::TrailingBytes`],
/// [`WireError::NotUtf8`] as in [`check_msgpack`].
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope<'_>, WireError> {
    let mut r = Reader::new(bytes);
    let len = match r.item()? {
        Item::Array(n) => n,
        _ => return Err(WireError::InvalidEnvelope),
    };
    if len == 0 {
        return Err(WireError::InvalidEnvelope);
    }
    let kind = r.expect_str()?;
    let envelope = match (kind, len) {
        ("msg", 7) => {
            let room = r.expect_str()?;
            let seq = r.expect_uint()?;
            let epoch = r.expect_str()?;
            let except = r.expect_opt_str()?;
            let frame = r.expect_bin()?;
            let ts = r.expect_uint()?;
            Envelope::Msg {
                room,
                seq,
                epoch,
                except,
                frame,
                ts,
            }
        }
        ("broadcast", 4) => {
            let namespace = r.expect_opt_str()?;
            let frame = r.expect_bin()?;
            let ts = r.expect_uint()?;
            Envelope::Broadcast {
                namespace,
                frame,
                ts,
            }
        }
        ("presence", 6) => {
            let room = r.expect_str()?;
            r.expect_uint()?;
            let epoch = r.expect_str()?;
            // Always nil today; a connection here is tolerated and ignored.
            r.expect_opt_str()?;
            let frame = r.expect_bin()?;
            Envelope::Presence { room, epoch, frame }
        }
        ("kick", 4) => {
            let user = r.expect_str()?;
            let count = match r.item()? {
                Item::Array(n) => n,
                _ => return Err(WireError::InvalidEnvelope),
            };
            // `item` bounded `count` by the input length.
            let mut conns = Vec::with_capacity(count);
            for _ in 0..count {
                conns.push(r.expect_str()?);
            }
            let reason = r.expect_str()?;
            Envelope::Kick {
                user,
                conns,
                reason,
            }
        }
        _ => return Err(WireError::InvalidEnvelope),
    };
    r.finish()?;
    Ok(envelope)
}

/// Decodes one MessagePack value into a `serde_json::Value`, for tests, logs
/// and the gateway's JSON admin API.
///
/// The value is first checked as by [`check_msgpack`]. Mappings that JSON
/// lacks: `bin` → array of byte numbers; ext → `{"type": t, "data": [bytes]}`;
/// a non-string map key → its JSON text (`1` → `"1"`); NaN and infinite
/// floats → `null`.
///
/// # Errors
///
/// The errors of [`check_msgpack`].
pub fn decode_value_json(bytes: &[u8]) -> Result<serde_json::Value, WireError> {
    check_msgpack(bytes)?;
    let mut reader = Reader::new(bytes);
    // Recursion is bounded by MAX_DEPTH, which check_msgpack enforced.
    to_json(&mut reader)
}

/// Longest JSON text of a non-string map key in [`decode_value_json`].
const MAX_KEY_TEXT: usize = 256;

fn to_json(r: &mut Reader<'_>) -> Result<serde_json::Value, WireError> {
    use serde_json::Value;
    let bytes_json = |b: &[u8]| Value::Array(b.iter().map(|&x| Value::from(x)).collect());
    Ok(match r.item()? {
        Item::Nil => Value::Null,
        Item::Bool(b) => Value::Bool(b),
        Item::Uint(n) => Value::from(n),
        Item::Int(n) => Value::from(n),
        Item::F32(f) => {
            serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        }
        Item::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Item::Str(s) => Value::String(s.to_owned()),
        Item::Bin(b) => bytes_json(b),
        Item::Ext(ty, data) => {
            let mut map = serde_json::Map::new();
            map.insert("type".to_owned(), Value::from(ty));
            map.insert("data".to_owned(), bytes_json(data));
            Value::Object(map)
        }
        Item::Array(n) => {
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(to_json(r)?);
            }
            Value::Array(items)
        }
        Item::Map(n) => {
            let mut map = serde_json::Map::new();
            for _ in 0..n {
                // JSON keys are strings: another key is written as its
                // JSON text, cut to MAX_KEY_TEXT bytes. Without the cut,
                // maps used as keys of maps used as keys ... grow
                // exponentially with the depth (each level escapes the
                // quotes of the one below): found by the fuzzer.
                let key = match to_json(r)? {
                    Value::String(s) => s,
                    other => {
                        let mut text = other.to_string();
                        if text.len() > MAX_KEY_TEXT {
                            let mut end = MAX_KEY_TEXT;
                            while !text.is_char_boundary(end) {
                                end -= 1;
                            }
                            text.truncate(end);
                        }
                        text
                    }
                };
                map.insert(key, to_json(r)?);
            }
            Value::Object(map)
        }
    })
}

// ---------------------------------------------------------------------------
// JSON → MessagePack, streamed straight from serde_json's parser into the
// output (no intermediate `serde_json::Value`), which keeps object key order
// and costs one pass.

/// Converts JSON text to one MessagePack value.
fn json_to_msgpack(text: &[u8]) -> Result<Vec<u8>, WireError> {
    let too_deep = Cell::new(false);
    let mut buf = ByteBuf::with_capacity(text.len() + 8);
    let mut de = serde_json::Deserializer::from_slice(text);
    let seed = JsonToMsgpack {
        buf: &mut buf,
        depth: 0,
        too_deep: &too_deep,
    };
    let result = seed.deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(buf.into_vec()),
        Err(_) if too_deep.get() => Err(WireError::TooDeep),
        Err(e) => Err(WireError::InvalidJson(e.to_string())),
    }
}

/// A serde seed/visitor that writes each JSON value it is handed as
/// MessagePack into `buf`.
struct JsonToMsgpack<'o> {
    buf: &'o mut ByteBuf,
    /// Containers enclosing the value about to be read.
    depth: usize,
    /// Set when the error being returned is the depth limit, so the caller
    /// can report [`WireError::TooDeep`] rather than a JSON syntax error.
    too_deep: &'o Cell<bool>,
}

impl JsonToMsgpack<'_> {
    /// A seed for a child value of the current container.
    fn child(&mut self) -> JsonToMsgpack<'_> {
        JsonToMsgpack {
            buf: &mut *self.buf,
            depth: self.depth + 1,
            too_deep: self.too_deep,
        }
    }

    /// Starts a container: checks the depth, reserves one byte for its
    /// header and returns the header's position.
    fn open<E: serde::de::Error>(&mut self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            self.too_deep.set(true);
            return Err(E::custom("nested too deep"));
        }
        let vec = self.buf.as_mut_vec();
        let start = vec.len();
        vec.push(0);
        Ok(start)
    }

    /// Writes the header of a finished container of `n` elements at `start`:
    /// the one reserved byte for up to 15 elements (the common case, no
    /// copy), else a 3- or 5-byte header spliced in.
    fn close<E: serde::de::Error>(
        &mut self,
        start: usize,
        n: usize,
        [fix, m16, m32]: [u8; 3],
    ) -> Result<(), E> {
        let (header, header_len): ([u8; 5], usize) = if n <= 15 {
            ([fix | n as u8, 0, 0, 0, 0], 1)
        } else if let Ok(n) = u16::try_from(n) {
            let [a, b] = n.to_be_bytes();
            ([m16, a, b, 0, 0], 3)
        } else if let Ok(n) = u32::try_from(n) {
            let [a, b, c, d] = n.to_be_bytes();
            ([m32, a, b, c, d], 5)
        } else {
            return Err(E::custom("too many elements"));
        };
        let header = header.get(..header_len).unwrap_or(&[]);
        let vec = self.buf.as_mut_vec();
        if start >= vec.len() {
            return Err(E::custom("internal error: lost container header"));
        }
        vec.splice(start..=start, header.iter().copied());
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for JsonToMsgpack<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonToMsgpack<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        match encode::write_bool(self.buf, v) {
            Ok(()) => Ok(()),
            Err(e) => match e {},
        }
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        infallible(encode::write_sint(self.buf, v));
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        put_uint(self.buf, v);
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        infallible(encode::write_f64(self.buf, v));
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        put_str(self.buf, v);
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        put_nil(self.buf);
        Ok(())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        put_nil(self.buf);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let start = self.open::<A::Error>()?;
        let mut n = 0usize;
        while seq.next_element_seed(self.child())?.is_some() {
            n += 1;
        }
        self.close(start, n, [0x90, 0xdc, 0xdd])
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let start = self.open::<A::Error>()?;
        let mut n = 0usize;
        // JSON keys are strings; serde_json hands them to `visit_str`.
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
            n += 1;
        }
        self.close(start, n, [0x80, 0xde, 0xdf])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// `levels` nested one-element arrays around `inner`.
    fn nested_arrays(levels: usize, inner: &[u8]) -> Vec<u8> {
        let mut v = vec![0x91; levels];
        v.extend_from_slice(inner);
        v
    }

    /// The keys of a top-level map, in order.
    fn map_keys(bytes: &[u8]) -> Vec<String> {
        let mut r = Reader::new(bytes);
        let Item::Map(n) = r.item().unwrap() else {
            panic!("not a map")
        };
        let mut keys = Vec::new();
        for _ in 0..n {
            keys.push(r.expect_str().unwrap().to_owned());
            r.skip_value().unwrap();
        }
        assert!(r.at_end());
        keys
    }

    fn mp<T: serde::Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec(v).unwrap()
    }

    #[test]
    fn formats() {
        assert_eq!(Format::parse("msgpack"), Some(Format::Msgpack));
        assert_eq!(Format::parse("JSON"), Some(Format::Json));
        assert_eq!(Format::parse("String"), Some(Format::String));
        assert_eq!(Format::parse("text"), None);
        assert_eq!(Format::parse(""), None);
        assert_eq!(Format::default(), Format::Msgpack);
        for f in [Format::Msgpack, Format::Json, Format::String] {
            assert_eq!(Format::parse(f.as_str()), Some(f));
        }
    }

    #[test]
    fn check_accepts_every_kind_of_value() {
        let good: Vec<Vec<u8>> = vec![
            vec![0xc0],
            vec![0xc2],
            vec![0xc3],
            vec![0x00],
            vec![0x7f],
            vec![0xe0],
            vec![0xff],
            vec![0xcc, 1],
            vec![0xcd, 1, 2],
            vec![0xce, 1, 2, 3, 4],
            vec![0xcf, 1, 2, 3, 4, 5, 6, 7, 8],
            vec![0xd0, 0x80],
            vec![0xd1, 1, 2],
            vec![0xd2, 1, 2, 3, 4],
            vec![0xd3, 1, 2, 3, 4, 5, 6, 7, 8],
            vec![0xca, 0x3f, 0x80, 0, 0],
            vec![0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0],
            vec![0xa0],
            vec![0xa2, b'h', b'i'],
            vec![0xd9, 2, b'h', b'i'],
            vec![0xda, 0, 2, b'h', b'i'],
            vec![0xdb, 0, 0, 0, 2, b'h', b'i'],
            vec![0xc4, 0],
            vec![0xc4, 2, 0xff, 0x00],
            vec![0xc5, 0, 1, 0xc1],
            vec![0xc6, 0, 0, 0, 1, 0xff],
            vec![0xd4, 1, 0],
            vec![0xd5, 1, 0, 0],
            vec![0xd6, 0xff, 0, 0, 0, 0],
            vec![0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
            [vec![0xd8, 5], vec![0; 16]].concat(),
            vec![0xc7, 0, 3],
            vec![0xc7, 2, 3, 0xc1, 0xc1],
            vec![0xc8, 0, 1, 3, 0],
            vec![0xc9, 0, 0, 0, 1, 3, 0],
            vec![0x90],
            vec![0x80],
            vec![0xdc, 0, 0],
            vec![0xdd, 0, 0, 0, 0],
            vec![0xde, 0, 0],
            vec![0xdf, 0, 0, 0, 0],
            vec![0x92, 0x01, 0xa1, b'x'],
            vec![0xdc, 0, 2, 0xc0, 0xc0],
            vec![0xde, 0, 1, 0xa1, b'k', 0x90],
            // {"a": {"b": [1, {"c": nil}]}}
            vec![
                0x81, 0xa1, b'a', 0x81, 0xa1, b'b', 0x92, 0x01, 0x81, 0xa1, b'c', 0xc0,
            ],
            // A map with a non-string key.
            vec![0x81, 0x01, 0x02],
            mp(&json!({"text": "héllo", "n": [1, -2, 3.5, u64::MAX, i64::MIN], "ok": true})),
            mp(&vec![vec![1u8; 20]; 70000]),
        ];
        for bytes in &good {
            assert_eq!(check_msgpack(bytes), Ok(()), "{bytes:02x?}");
        }
    }

    #[test]
    fn check_rejects_truncated_input() {
        assert_eq!(check_msgpack(&[]), Err(WireError::Truncated));
        let value = mp(&json!({"a": [1, 2, {"b": "text", "c": 1.5}], "d": u64::MAX}));
        for end in 0..value.len() {
            assert_eq!(
                check_msgpack(&value[..end]),
                Err(WireError::Truncated),
                "prefix {end}"
            );
        }
        for bytes in [
            &[0xcd, 1][..],
            &[0xcb, 0, 0],
            &[0xa3, b'a'],
            &[0xd9],
            &[0xc4, 3, 1],
            &[0xd8, 1, 0],
            &[0xc7, 1],
            &[0x92, 0xc0],
        ] {
            assert_eq!(
                check_msgpack(bytes),
                Err(WireError::Truncated),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn check_rejects_lengths_the_input_cannot_hold() {
        // Array32 announcing 2^32-1 elements followed by 3 bytes.
        let huge = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0, 0xc0];
        assert_eq!(check_msgpack(&huge), Err(WireError::Truncated));
        let huge_map = [0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0];
        assert_eq!(check_msgpack(&huge_map), Err(WireError::Truncated));
        // A map of 2 pairs needs at least 4 bytes.
        assert_eq!(
            check_msgpack(&[0x82, 0xc0, 0xc0, 0xc0]),
            Err(WireError::Truncated)
        );
        let huge_str = [0xdb, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert_eq!(check_msgpack(&huge_str), Err(WireError::Truncated));
        let huge_bin = [0xc6, 0xff, 0xff, 0xff, 0xff, 0];
        assert_eq!(check_msgpack(&huge_bin), Err(WireError::Truncated));
        let huge_ext = [0xc9, 0xff, 0xff, 0xff, 0xff, 1, 0];
        assert_eq!(check_msgpack(&huge_ext), Err(WireError::Truncated));
    }

    #[test]
    fn check_rejects_trailing_bytes() {
        assert_eq!(check_msgpack(&[0xc0, 0xc0]), Err(WireError::TrailingBytes));
        assert_eq!(
            check_msgpack(&[0x91, 0x01, 0x02]),
            Err(WireError::TrailingBytes)
        );
        let mut two = mp(&json!({"a": 1}));
        two.extend(mp(&json!({"a": 1})));
        assert_eq!(check_msgpack(&two), Err(WireError::TrailingBytes));
    }

    #[test]
    fn check_limits_depth() {
        assert_eq!(check_msgpack(&nested_arrays(64, &[0xc0])), Ok(()));
        assert_eq!(check_msgpack(&nested_arrays(63, &[0x90])), Ok(()));
        assert_eq!(
            check_msgpack(&nested_arrays(65, &[0xc0])),
            Err(WireError::TooDeep)
        );
        // An empty container is still a level.
        assert_eq!(
            check_msgpack(&nested_arrays(64, &[0x90])),
            Err(WireError::TooDeep)
        );
        // Maps count too: 64 levels of {"k": ...}.
        let mut maps = Vec::new();
        for _ in 0..64 {
            maps.extend([0x81, 0xa1, b'k']);
        }
        maps.push(0xc0);
        assert_eq!(check_msgpack(&maps), Ok(()));
        let mut deeper = vec![0x81, 0xa1, b'k'];
        deeper.extend(&maps);
        assert_eq!(check_msgpack(&deeper), Err(WireError::TooDeep));
        // Depth is nesting, not the number of containers in total.
        let mut wide = vec![0xdc, 0x01, 0x00];
        for _ in 0..256 {
            wide.extend(nested_arrays(63, &[0x01]));
        }
        assert_eq!(check_msgpack(&wide), Ok(()));
    }

    #[test]
    fn check_rejects_bad_utf8_and_reserved_marker() {
        assert_eq!(check_msgpack(&[0xa2, 0xc3, 0x28]), Err(WireError::NotUtf8));
        assert_eq!(
            check_msgpack(&[0x81, 0xa1, b'k', 0xd9, 1, 0xff]),
            Err(WireError::NotUtf8)
        );
        assert!(matches!(
            check_msgpack(&[0xc1]),
            Err(WireError::InvalidPayload(_))
        ));
        assert!(matches!(
            check_msgpack(&[0x92, 0x01, 0xc1]),
            Err(WireError::InvalidPayload(_))
        ));
        // Inside bin and ext, any byte goes.
        assert_eq!(check_msgpack(&[0xc4, 2, 0xc3, 0x28]), Ok(()));
    }

    #[test]
    fn payload_msgpack_is_checked_and_copied() {
        let value = mp(&json!({"text": "hi"}));
        assert_eq!(encode_payload(Format::Msgpack, &value), Ok(value.clone()));
        assert_eq!(
            encode_payload(Format::Msgpack, &value[..3]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            encode_payload(Format::Msgpack, b"{\"text\":\"hi\"}"),
            Err(WireError::TrailingBytes)
        );
    }

    #[test]
    fn payload_string() {
        assert_eq!(
            encode_payload(Format::String, b"hi"),
            Ok(vec![0xa2, b'h', b'i'])
        );
        assert_eq!(encode_payload(Format::String, b""), Ok(vec![0xa0]));
        let long = "x".repeat(300);
        let encoded = encode_payload(Format::String, long.as_bytes()).unwrap();
        assert_eq!(&encoded[..3], &[0xda, 0x01, 0x2c]);
        assert_eq!(decode_value_json(&encoded), Ok(json!(long)));
        assert_eq!(
            encode_payload(Format::String, &[0xff, 0xfe]),
            Err(WireError::NotUtf8)
        );
    }

    #[test]
    fn payload_json_converts_values() {
        let cases = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(127),
            json!(128),
            json!(-1),
            json!(-33),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-0.25),
            json!(1e300),
            json!("héllo \"quoted\" \n"),
            json!([]),
            json!({}),
            json!([1, "two", [3], {"four": 4}]),
            json!({"text": "hi", "n": 1, "nested": {"list": [null, true, 2.5]}}),
        ];
        for case in cases {
            let text = serde_json::to_vec(&case).unwrap();
            let encoded = encode_payload(Format::Json, &text).unwrap();
            assert_eq!(check_msgpack(&encoded), Ok(()), "{case}");
            assert_eq!(decode_value_json(&encoded), Ok(case.clone()), "{case}");
            let via_serde: Value = rmp_serde::from_slice(&encoded).unwrap();
            assert_eq!(via_serde, case);
        }
    }

    #[test]
    fn payload_json_picks_compact_encodings() {
        assert_eq!(encode_payload(Format::Json, b"1"), Ok(vec![0x01]));
        assert_eq!(encode_payload(Format::Json, b"-1"), Ok(vec![0xff]));
        assert_eq!(
            encode_payload(Format::Json, b"300"),
            Ok(vec![0xcd, 0x01, 0x2c])
        );
        assert_eq!(
            encode_payload(Format::Json, b"-200"),
            Ok(vec![0xd1, 0xff, 0x38])
        );
        assert_eq!(
            encode_payload(Format::Json, b"1.0"),
            Ok([vec![0xcb], 1.0f64.to_be_bytes().to_vec()].concat())
        );
        assert_eq!(encode_payload(Format::Json, b"null"), Ok(vec![0xc0]));
        assert_eq!(
            encode_payload(Format::Json, b" [true, \"a\"] \n"),
            Ok(vec![0x92, 0xc3, 0xa1, b'a'])
        );
        assert_eq!(
            encode_payload(Format::Json, br#"{"a":{}}"#),
            Ok(vec![0x81, 0xa1, b'a', 0x80])
        );
    }

    #[test]
    fn payload_json_keeps_key_order() {
        let encoded =
            encode_payload(Format::Json, br#"{"zeta":1,"alpha":2,"mid":{"b":1,"a":2}}"#).unwrap();
        assert_eq!(map_keys(&encoded), ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn payload_json_large_containers() {
        for n in [15usize, 16, 65535, 65536] {
            let list: Vec<u8> = vec![7; n];
            let text = serde_json::to_vec(&list).unwrap();
            let encoded = encode_payload(Format::Json, &text).unwrap();
            let expected_header: &[u8] = match n {
                15 => &[0x9f],
                16 => &[0xdc, 0, 16],
                65535 => &[0xdc, 0xff, 0xff],
                _ => &[0xdd, 0, 1, 0, 0],
            };
            assert!(encoded.starts_with(expected_header), "{n}");
            assert_eq!(encoded.len(), expected_header.len() + n);
            assert_eq!(check_msgpack(&encoded), Ok(()));

            let map: serde_json::Map<String, Value> =
                (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
            let text = serde_json::to_vec(&map).unwrap();
            let encoded = encode_payload(Format::Json, &text).unwrap();
            assert_eq!(decode_value_json(&encoded), Ok(Value::Object(map)), "{n}");
        }
        // Big containers nested inside others get their headers in place.
        let doc = json!({"a": vec![1; 20], "b": [vec![2; 70000], {"c": vec!["x"; 17]}]});
        let encoded = encode_payload(Format::Json, &serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(decode_value_json(&encoded), Ok(doc));
    }

    #[test]
    fn payload_json_limits_depth() {
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(encode_payload(Format::Json, ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            encode_payload(Format::Json, deep.as_bytes()),
            Err(WireError::TooDeep)
        );
        let deeper = format!("{}{}", "{\"k\":".repeat(200), "}".repeat(200));
        assert_eq!(
            encode_payload(Format::Json, deeper.as_bytes()),
            Err(WireError::TooDeep)
        );
    }

    #[test]
    fn payload_json_rejects_bad_text() {
        for text in [
            &b""[..],
            b"{",
            b"[1,]",
            b"{\"a\" 1}",
            b"1 2",
            b"{} x",
            b"'single'",
            b"\"\xff\"",
            b"NaN",
        ] {
            assert!(
                matches!(
                    encode_payload(Format::Json, text),
                    Err(WireError::InvalidJson(_))
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn msg_frame_fields_and_order() {
        let data = encode_payload(Format::Json, br#"{"text":"hi"}"#).unwrap();
        let frame = encode_msg_frame(
            "chat:lobby",
            "message",
            &data,
            42,
            "e1",
            1_700_000_000_000,
            None,
        );
        assert_eq!(
            map_keys(&frame),
            ["t", "room", "ev", "data", "seq", "epoch", "ts"]
        );
        let value: Value = rmp_serde::from_slice(&frame).unwrap();
        assert_eq!(
            value,
            json!({
                "t": "msg", "room": "chat:lobby", "ev": "message", "data": {"text": "hi"},
                "seq": 42, "epoch": "e1", "ts": 1_700_000_000_000u64
            })
        );
        assert_eq!(check_msgpack(&frame), Ok(()));

        let sender = Sender {
            user: "alice",
            conn: "c1",
        };
        let frame = encode_msg_frame(
            "chat:lobby",
            "message",
            &[0xc0],
            u64::MAX,
            "e1",
            0,
            Some(sender),
        );
        assert_eq!(
            map_keys(&frame),
            ["t", "room", "ev", "data", "seq", "epoch", "ts", "from"]
        );
        assert_eq!(
            decode_value_json(&frame),
            Ok(json!({
                "t": "msg", "room": "chat:lobby", "ev": "message", "data": null,
                "seq": u64::MAX, "epoch": "e1", "ts": 0,
                "from": {"user": "alice", "conn": "c1"}
            }))
        );
    }

    #[test]
    fn msg_frame_splices_data_verbatim() {
        // A binary payload with an ext inside survives untouched.
        let data = [0x92, 0xc4, 2, 0xde, 0xad, 0xd4, 7, 1];
        let frame = encode_msg_frame("r:x", "e", &data, 1, "ep", 5, None);
        assert!(frame.windows(data.len()).any(|w| w == data));
        assert_eq!(check_msgpack(&frame), Ok(()));
        assert_eq!(
            decode_value_json(&frame).unwrap()["data"],
            json!([[0xde, 0xad], {"type": 7, "data": [1]}])
        );
    }

    #[test]
    fn presence_frame() {
        for (action, text) in [
            (PresenceAction::Join, "join"),
            (PresenceAction::Leave, "leave"),
        ] {
            assert_eq!(action.as_str(), text);
            let frame = encode_presence_frame("chat:lobby", "bob", action);
            assert_eq!(map_keys(&frame), ["t", "room", "user", "action"]);
            assert_eq!(
                decode_value_json(&frame),
                Ok(json!({"t": "presence", "room": "chat:lobby", "user": "bob", "action": text}))
            );
        }
    }

    /// True when `part` points into `whole` (no copy was made).
    fn is_subslice(part: &[u8], whole: &[u8]) -> bool {
        let range = whole.as_ptr_range();
        part.is_empty() || (range.contains(&part.as_ptr()) && part.as_ptr_range().end <= range.end)
    }

    #[test]
    fn msg_envelope_round_trip() {
        let frame = encode_msg_frame("chat:lobby", "m", &[0x01], 7, "ep", 9, None);
        for except in [None, Some("c-1")] {
            let bytes = encode_msg_envelope("chat:lobby", 7, "ep", except, &frame, 9);
            assert_eq!(check_msgpack(&bytes), Ok(()));
            let env = decode_envelope(&bytes).unwrap();
            assert_eq!(
                env,
                Envelope::Msg {
                    room: "chat:lobby",
                    seq: 7,
                    epoch: "ep",
                    except,
                    frame: &frame,
                    ts: 9,
                }
            );
            let Envelope::Msg { frame: got, .. } = env else {
                unreachable!()
            };
            assert!(is_subslice(got, &bytes));
        }
        let v = decode_value_json(&encode_msg_envelope("a:b", 3, "ep", None, &[1, 2], 5)).unwrap();
        assert_eq!(v, json!(["msg", "a:b", 3, "ep", null, [1, 2], 5]));
    }

    #[test]
    fn broadcast_envelope_round_trip() {
        for ns in [None, Some("chat")] {
            let bytes = encode_broadcast_envelope(ns, &[0xc0], 12);
            assert_eq!(
                decode_envelope(&bytes),
                Ok(Envelope::Broadcast {
                    namespace: ns,
                    frame: &[0xc0],
                    ts: 12
                })
            );
        }
    }

    #[test]
    fn presence_envelope_round_trip() {
        let frame = encode_presence_frame("chat:lobby", "bob", PresenceAction::Leave);
        let bytes = encode_presence_envelope("chat:lobby", "ep", &frame);
        let v = decode_value_json(&bytes).unwrap();
        assert_eq!(v[0], json!("presence"));
        assert_eq!(v[2], json!(0));
        assert_eq!(v[4], json!(null));
        let env = decode_envelope(&bytes).unwrap();
        assert_eq!(
            env,
            Envelope::Presence {
                room: "chat:lobby",
                epoch: "ep",
                frame: &frame
            }
        );
        let Envelope::Presence { frame: got, .. } = env else {
            unreachable!()
        };
        assert!(is_subslice(got, &bytes));
    }

    #[test]
    fn kick_envelope_round_trip() {
        for conns in [vec![], vec!["c1"], vec!["c1", "c2", "c3"]] {
            let bytes = encode_kick_envelope("alice", &conns, "banned");
            assert_eq!(
                decode_envelope(&bytes),
                Ok(Envelope::Kick {
                    user: "alice",
                    conns: conns.clone(),
                    reason: "banned"
                })
            );
        }
        let bytes = encode_kick_envelope("alice", &["c1"], "");
        assert_eq!(
            decode_value_json(&bytes),
            Ok(json!(["kick", "alice", ["c1"], ""]))
        );
    }

    #[test]
    fn decode_envelope_rejects_garbage() {
        let invalid = [
            mp(&json!({"t": "msg"})),
            mp(&json!([])),
            mp(&json!(["nope", "a", 1, "e", null, "x"])),
            mp(&json!(["msg", "a", 1, "e", null])),
            mp(&json!(["msg", "a", -1, "e", null, [1]])),
            mp(&json!(["msg", "a", "1", "e", null, [1]])),
            mp(&json!(["msg", 1, 1, "e", null, [1]])),
            mp(&json!(["msg", "a", 1, "e", 5, [1]])),
            // The frame as an array rather than bin.
            mp(&json!(["msg", "a", 1, "e", null, [1]])),
            mp(&json!(["kick", "u", "c1", "r"])),
            mp(&json!(["kick", "u", [1], "r"])),
            mp(&json!(["kick", "u", ["c"]])),
            mp(&json!([1, 2, 3, 4])),
        ];
        for bytes in &invalid {
            assert_eq!(
                decode_envelope(bytes),
                Err(WireError::InvalidEnvelope),
                "{bytes:02x?}"
            );
        }
        let good = encode_msg_envelope("a:b", 1, "e", None, &[0xc0], 1);
        for end in 0..good.len() {
            assert_eq!(decode_envelope(&good[..end]), Err(WireError::Truncated));
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode_envelope(&trailing), Err(WireError::TrailingBytes));
        let huge_kick = [
            0x94, 0xa4, b'k', b'i', b'c', b'k', 0xa1, b'u', 0xdd, 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(decode_envelope(&huge_kick), Err(WireError::Truncated));
    }

    #[test]
    fn maps_as_keys_of_maps_stay_small_in_json() {
        // {{{... {"a": 1} ...: nil}: nil}: nil}, 60 levels: the key text of
        // each level escapes the one below, so uncapped it doubles each time.
        let mut bytes = vec![0x81u8; 60];
        bytes.extend_from_slice(&[0xa1, b'a', 0x01]);
        bytes.extend(std::iter::repeat_n(0xc0, 59));
        let v = decode_value_json(&bytes).expect("valid MessagePack");
        assert!(
            v.to_string().len() < 4 * MAX_KEY_TEXT,
            "{}",
            v.to_string().len()
        );
    }

    #[test]
    fn decode_value_json_mappings() {
        assert_eq!(decode_value_json(&[0xc4, 2, 1, 2]), Ok(json!([1, 2])));
        assert_eq!(
            decode_value_json(&[0xd4, 0xff, 9]),
            Ok(json!({"type": -1, "data": [9]}))
        );
        assert_eq!(decode_value_json(&[0x81, 0x01, 0x02]), Ok(json!({"1": 2})));
        let nan = [vec![0xcb], f64::NAN.to_be_bytes().to_vec()].concat();
        assert_eq!(decode_value_json(&nan), Ok(Value::Null));
        assert_eq!(decode_value_json(&[0xca, 0x3f, 0xc0, 0, 0]), Ok(json!(1.5)));
        assert_eq!(decode_value_json(&[0xd0, 0x80]), Ok(json!(-128)));
        assert_eq!(decode_value_json(&[0xd1, 0x80, 0x00]), Ok(json!(-32768)));
        assert_eq!(
            decode_value_json(&[0xd2, 0x80, 0, 0, 0]),
            Ok(json!(i32::MIN))
        );
        assert_eq!(
            decode_value_json(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Ok(json!(i64::MIN))
        );
        assert_eq!(decode_value_json(&[0xe0]), Ok(json!(-32)));
        assert_eq!(
            decode_value_json(&[0xc0, 0xc0]),
            Err(WireError::TrailingBytes)
        );
    }

    /// Random bytes and random mutations of valid values never panic, and
    /// the checker, the JSON decoder and the envelope decoder agree on
    /// what is well-formed.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            encode_msg_envelope("a:b", 9, "ep", Some("c"), &[0x81, 0xa1, b'k', 0x01], 3),
            encode_kick_envelope("u", &["c1", "c2"], "bye"),
            mp(&json!({"a": [1, -2, 3.5, "x", null, true, {"b": [[], {}]}]})),
        ];
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 24) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut b = seeds[round % seeds.len()].clone();
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
                if next() % 4 == 0 {
                    b.truncate((next() as usize) % (b.len() + 1));
                }
                b
            };
            let checked = check_msgpack(&bytes);
            assert_eq!(
                decode_value_json(&bytes).map(|_| ()),
                checked,
                "{bytes:02x?}"
            );
            if decode_envelope(&bytes).is_ok() {
                assert_eq!(checked, Ok(()), "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            WireError::Truncated.to_string(),
            "truncated MessagePack value"
        );
        assert_eq!(
            WireError::TooDeep.to_string(),
            "nested deeper than 64 levels"
        );
        assert_eq!(
            WireError::InvalidJson("x".into()).to_string(),
            "not valid JSON: x"
        );
    }
}
