//! The WebSocket protocol v1 (described in full in
//! `docs/PROTOCOL.md`): the frames clients send and receive, their codec,
//! and the contract's error and close codes.
//!
//! Every WebSocket binary message is one MessagePack map with string keys;
//! `t` names its type. This module holds both directions:
//!
//! - [`decode_client_frame`] parses what a client sends into a
//!   [`ClientFrame`]. The bytes come from anyone on the internet, so the
//!   decoder never panics, never recurses on input, and never allocates by an
//!   announced length: it walks the map once, keeps the raw bytes of the keys
//!   it knows, checks every value with [`wire::check_msgpack`] (well-formed,
//!   at most [`wire::MAX_DEPTH`] deep, UTF-8 strings) and ignores unknown
//!   keys, so later protocol versions can add fields. A `pub`'s `data` is kept
//!   as its exact bytes: it travels to `BROKER.PUBLISH` and on to every member
//!   without being decoded.
//! - The server encoders ([`encode_welcome`], [`encode_err`],
//!   [`encode_expiring`], [`encode_ack_raw`] and the `ack_*` builders of ack
//!   data) write keys in the contract's order. Acks splice already-encoded
//!   values in raw, like [`wire::encode_msg_frame`]: a `history` ack carries
//!   the module's stored `msg` frames byte for byte.
//! - For clients and tests: [`encode_client_frame`] and
//!   [`decode_server_frame`] (which owns its result and turns `data` values
//!   into `serde_json::Value` with [`wire::decode_value_json`]).
//!
//! `msg` and `presence` frames are encoded by the module (see [`wire`]); the
//! gateway forwards them unchanged, so they have no encoder here.

use std::convert::Infallible;

use rmp::encode::{self, ByteBuf, ValueWriteError};
use thiserror::Error;

use crate::wire::{self, WireError};

/// Close codes of the contract, sent in the WebSocket close frame.
pub mod close {
    /// The token is missing, invalid or expired (also: no `auth` frame in
    /// time).
    pub const TOKEN: u16 = 4001;
    /// Forbidden, e.g. the user was kicked.
    pub const FORBIDDEN: u16 = 4003;
    /// Policy: slow consumer, repeated bad frames, idle timeout.
    pub const POLICY: u16 = 4008;
    /// Too many connections for the user or the IP.
    pub const CONN_LIMIT: u16 = 4029;
    /// A message larger than `limits.max_frame_bytes`.
    pub const TOO_LARGE: u16 = 1009;
    /// The server is restarting: reconnect, possibly elsewhere.
    pub const RESTART: u16 = 1012;
    /// Internal server error.
    pub const INTERNAL: u16 = 1011;
}

/// Error codes of the contract: the `code` of an `err` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message is not a valid frame (not a map, unknown `t`, a missing or
    /// mistyped field, a text message...).
    BadFrame,
    /// No valid token (wrong `auth`/`refresh` token, or a request before
    /// `auth`).
    Unauthorized,
    /// Authenticated, but not allowed (namespace policy, another user's
    /// personal room).
    Forbidden,
    /// The room name is not `namespace:name` with valid parts.
    InvalidRoom,
    /// The request needs membership of the room (`pub`, `leave`).
    NotMember,
    /// Over the namespace's publish rate; `retry_ms` says when to retry.
    RateLimited,
    /// The connection is already in `limits.max_rooms_per_conn` rooms.
    TooManyRooms,
    /// `data` larger than the namespace's `max_payload`.
    PayloadTooLarge,
    /// Redis is unreachable or the node is re-registering; retry later.
    Unavailable,
    /// A server bug.
    Internal,
}

impl ErrorCode {
    /// Every code, in the contract's order.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadFrame,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::InvalidRoom,
        ErrorCode::NotMember,
        ErrorCode::RateLimited,
        ErrorCode::TooManyRooms,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as it appears on the wire, e.g. `"bad_frame"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::NotMember => "not_member",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code named `s` (exactly as [`ErrorCode::as_str`] writes it).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == s)
    }
}

/// Position in a room's stream: the last sequence number a client saw and
/// the room's epoch at that time (the `since` of a `join`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// Last sequence number seen.
    pub seq: u64,
    /// The room's epoch when it was seen.
    pub epoch: String,
}

/// A decoded client → server frame. Every request carries the client's `id`,
/// echoed in its `ack` or `err`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `auth`: authenticate with a JWT (when the upgrade carried none).
    Auth {
        /// Request id.
        id: i64,
        /// The JWT.
        token: String,
    },
    /// `join`: enter a room, optionally recovering missed messages.
    Join {
        /// Request id.
        id: i64,
        /// The room.
        room: String,
        /// Where the client left off.
        since: Option<Since>,
    },
    /// `leave`: leave a room.
    Leave {
        /// Request id.
        id: i64,
        /// The room.
        room: String,
    },
    /// `pub`: publish to a room.
    Pub {
        /// Request id.
        id: i64,
        /// The room.
        room: String,
        /// Event name.
        ev: String,
        /// The exact MessagePack bytes of the `data` value (checked, not
        /// decoded).
        data: Vec<u8>,
        /// Skip the publishing connection.
        others: bool,
    },
    /// `presence`: who is in a room.
    Presence {
        /// Request id.
        id: i64,
        /// The room.
        room: String,
    },
    /// `history`: retained messages of a room.
    History {
        /// Request id.
        id: i64,
        /// The room.
        room: String,
        /// Only messages with a greater sequence number.
        since: Option<u64>,
        /// At most this many messages.
        limit: Option<u32>,
    },
    /// `refresh`: replace the connection's token before it expires.
    Refresh {
        /// Request id.
        id: i64,
        /// The new JWT.
        token: String,
    },
    /// `ping`: application-level round trip.
    Ping {
        /// Request id.
        id: i64,
    },
}

impl ClientFrame {
    /// The request id.
    pub fn id(&self) -> i64 {
        match self {
            ClientFrame::Auth { id, .. }
            | ClientFrame::Join { id, .. }
            | ClientFrame::Leave { id, .. }
            | ClientFrame::Pub { id, .. }
            | ClientFrame::Presence { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Refresh { id, .. }
            | ClientFrame::Ping { id } => *id,
        }
    }

    /// Replaces the request id (clients number requests as they send them).
    pub fn set_id(&mut self, new: i64) {
        match self {
            ClientFrame::Auth { id, .. }
            | ClientFrame::Join { id, .. }
            | ClientFrame::Leave { id, .. }
            | ClientFrame::Pub { id, .. }
            | ClientFrame::Presence { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Refresh { id, .. }
            | ClientFrame::Ping { id } => *id = new,
        }
    }

    /// The frame's `t`: `"auth"`, `"join"`, `"leave"`, `"pub"`, `"presence"`,
    /// `"history"`, `"refresh"` or `"ping"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Join { .. } => "join",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::Pub { .. } => "pub",
            ClientFrame::Presence { .. } => "presence",
            ClientFrame::History { .. } => "history",
            ClientFrame::Refresh { .. } => "refresh",
            ClientFrame::Ping { .. } => "ping",
        }
    }
}

/// Why a frame was refused. `id` is the request id when it could be read, so
/// the `err` `bad_frame` can echo it; `reason` is a short English text for the
/// `err`'s `msg`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct FrameError {
    /// The frame's `id`, when it was an integer.
    pub id: Option<i64>,
    /// What was wrong.
    pub reason: String,
}

/// A decoded server → client frame, for clients and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// `welcome`: the first frame of an authenticated connection.
    Welcome {
        /// The connection id.
        conn: String,
        /// The user (the token's `sub`).
        user: String,
        /// The gateway node serving the connection.
        node: String,
        /// Interval of the server's WebSocket pings, in ms.
        ping_ms: u64,
        /// The token's expiry (Unix seconds).
        exp: u64,
    },
    /// `msg`: a message in a room.
    Msg {
        /// The room (`*` or `namespace:*` for a broadcast).
        room: String,
        /// Event name.
        ev: String,
        /// The payload, decoded with [`wire::decode_value_json`].
        data: serde_json::Value,
        /// Sequence number in the room (0 for a broadcast).
        seq: u64,
        /// The room's epoch.
        epoch: String,
        /// Publish time, ms since the Unix epoch.
        ts: u64,
        /// `(user, conn)` of the publishing client, when a client published.
        from: Option<(String, String)>,
    },
    /// `presence`: a user's first connection joined, or last one left.
    Presence {
        /// The room.
        room: String,
        /// The user.
        user: String,
        /// `join` or `leave`.
        action: String,
    },
    /// `ack`: a request succeeded.
    Ack {
        /// The request id.
        id: i64,
        /// The result, decoded with [`wire::decode_value_json`].
        data: serde_json::Value,
    },
    /// `err`: a request failed, or the server reports a problem.
    Err {
        /// The request id, when answering a request.
        id: Option<i64>,
        /// One of the contract's error codes ([`ErrorCode::parse`]).
        code: String,
        /// Human-readable detail.
        msg: String,
        /// When to retry, for `rate_limited`.
        retry_ms: Option<u64>,
    },
    /// `expiring`: the token expires in `in_ms`; send `refresh`.
    Expiring {
        /// Milliseconds until the token's `exp`.
        in_ms: u64,
    },
}

// ---------------------------------------------------------------------------
// Decoding: a cursor that reads one MessagePack header at a time.

/// One MessagePack item: a scalar the protocol reads, a container header
/// with its element count, or `Other` (float, bin, ext: skipped whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item<'a> {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Str(&'a str),
    Array(usize),
    Map(usize),
    Other,
}

/// A read position in a byte slice; every read is bounds-checked.
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

    fn str(&mut self, n: usize) -> Result<Item<'a>, WireError> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(Item::Str)
            .map_err(|_| WireError::NotUtf8)
    }

    /// Skips `n` bytes of content (bin, ext, float).
    fn other(&mut self, n: usize) -> Result<Item<'a>, WireError> {
        self.take(n)?;
        Ok(Item::Other)
    }

    /// A container of `values` values. Each takes at least one byte, so a
    /// count beyond the remaining input is refused at once.
    fn container(&self, values: usize, item: Item<'a>) -> Result<Item<'a>, WireError> {
        if values > self.remaining() {
            Err(WireError::Truncated)
        } else {
            Ok(item)
        }
    }

    /// Reads the next item's header and, for scalars, its content.
    fn item(&mut self) -> Result<Item<'a>, WireError> {
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
            // bin 8/16/32: length of 1, 2, 4 bytes.
            0xc4..=0xc6 => {
                let n = self.len_field(1 << (marker - 0xc4))?;
                self.other(n)
            }
            // ext 8/16/32: length, then a type byte, then the data.
            0xc7..=0xc9 => {
                let n = self.len_field(1 << (marker - 0xc7))?;
                self.other(n.saturating_add(1))
            }
            0xca => self.other(4),
            0xcb => self.other(8),
            0xcc..=0xcf => Ok(Item::Uint(self.be(1 << (marker - 0xcc))?)),
            0xd0 => Ok(Item::Int(i64::from(self.be(1)? as u8 as i8))),
            0xd1 => Ok(Item::Int(i64::from(self.be(2)? as u16 as i16))),
            0xd2 => Ok(Item::Int(i64::from(self.be(4)? as u32 as i32))),
            0xd3 => Ok(Item::Int(self.be(8)? as i64)),
            // fixext 1/2/4/8/16: a type byte and that much data.
            0xd4..=0xd8 => self.other(1 + (1 << (marker - 0xd4))),
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

    /// Steps over one value and returns its bytes. Iterative: a single count
    /// of the values still owed stands in for a stack, so any nesting costs
    /// neither recursion nor memory. (The depth limit is applied afterwards
    /// by [`wire::check_msgpack`].)
    fn skip_value(&mut self) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        let mut owed = 1usize;
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
        self.buf.get(start..self.pos).ok_or(WireError::Truncated)
    }

    /// The bytes of the next value, checked as a payload: well-formed, at
    /// most [`wire::MAX_DEPTH`] deep, UTF-8 strings.
    fn value(&mut self) -> Result<&'a [u8], WireError> {
        let raw = self.skip_value()?;
        wire::check_msgpack(raw)?;
        Ok(raw)
    }
}

/// The item of a raw value that is one scalar (the reader consumes it
/// whole); containers and malformed bytes give `None`.
fn scalar(raw: &[u8]) -> Option<Item<'_>> {
    let mut r = Reader::new(raw);
    let item = r.item().ok()?;
    r.at_end().then_some(item)
}

fn as_str(raw: &[u8]) -> Option<&str> {
    match scalar(raw)? {
        Item::Str(s) => Some(s),
        _ => None,
    }
}

fn as_uint(raw: &[u8]) -> Option<u64> {
    match scalar(raw)? {
        Item::Uint(n) => Some(n),
        Item::Int(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

fn as_u32(raw: &[u8]) -> Option<u32> {
    as_uint(raw).and_then(|n| u32::try_from(n).ok())
}

fn as_i64(raw: &[u8]) -> Option<i64> {
    match scalar(raw)? {
        Item::Uint(n) => i64::try_from(n).ok(),
        Item::Int(n) => Some(n),
        _ => None,
    }
}

fn as_bool(raw: &[u8]) -> Option<bool> {
    match scalar(raw)? {
        Item::Bool(b) => Some(b),
        _ => None,
    }
}

/// A `since` of a `join`: the map `{seq, epoch}` (other keys ignored).
fn as_since(raw: &[u8]) -> Option<Since> {
    let (f, scanned) = scan(raw, &["seq", "epoch"]);
    scanned.ok()?;
    Some(Since {
        seq: as_uint(f.raw("seq")?)?,
        epoch: as_str(f.raw("epoch")?)?.to_owned(),
    })
}

/// A `from` of a `msg`: the map `{user, conn}` as `(user, conn)`.
fn as_sender(raw: &[u8]) -> Option<(String, String)> {
    let (f, scanned) = scan(raw, &["user", "conn"]);
    scanned.ok()?;
    Some((
        as_str(f.raw("user")?)?.to_owned(),
        as_str(f.raw("conn")?)?.to_owned(),
    ))
}

/// At most this many characters of client text are quoted back in errors.
const QUOTE_CHARS: usize = 32;

/// `s` in quotes, cut to [`QUOTE_CHARS`] characters.
fn quote(s: &str) -> String {
    let mut cut: String = s.chars().take(QUOTE_CHARS).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// The values of the known keys of one frame map, as raw MessagePack.
struct Fields<'a, const N: usize> {
    keys: &'static [&'static str; N],
    values: [Option<&'a [u8]>; N],
}

impl<'a, const N: usize> Fields<'a, N> {
    /// The raw value of `key`, if the map had it.
    fn raw(&self, key: &str) -> Option<&'a [u8]> {
        let index = self.keys.iter().position(|k| *k == key)?;
        self.values.get(index).copied().flatten()
    }

    /// A required field, read with `parse`; `what` names the expected type
    /// in the error.
    fn required<T>(
        &self,
        key: &str,
        what: &str,
        parse: impl FnOnce(&'a [u8]) -> Option<T>,
    ) -> Result<T, String> {
        let raw = self
            .raw(key)
            .ok_or_else(|| format!("missing field `{key}`"))?;
        parse(raw).ok_or_else(|| format!("field `{key}` must be {what}"))
    }

    /// An optional field: absent and `nil` are both `None`.
    fn optional<T>(
        &self,
        key: &str,
        what: &str,
        parse: impl FnOnce(&'a [u8]) -> Option<T>,
    ) -> Result<Option<T>, String> {
        match self.raw(key) {
            None | Some([0xc0]) => Ok(None),
            Some(raw) => parse(raw)
                .map(Some)
                .ok_or_else(|| format!("field `{key}` must be {what}")),
        }
    }

    fn str(&self, key: &str) -> Result<&'a str, String> {
        self.required(key, "a string", as_str)
    }

    fn string(&self, key: &str) -> Result<String, String> {
        self.str(key).map(str::to_owned)
    }

    fn uint(&self, key: &str) -> Result<u64, String> {
        self.required(key, "a non-negative integer", as_uint)
    }

    /// The `data` field decoded to JSON.
    fn json(&self, key: &str) -> Result<serde_json::Value, String> {
        let raw = self
            .raw(key)
            .ok_or_else(|| format!("missing field `{key}`"))?;
        wire::decode_value_json(raw).map_err(|e| format!("field `{key}`: {e}"))
    }
}

/// Reads one frame map, keeping the raw values of `keys`. Returns what was
/// read even on error, so the caller can still find the request id.
fn scan<'a, const N: usize>(
    bytes: &'a [u8],
    keys: &'static [&'static str; N],
) -> (Fields<'a, N>, Result<(), String>) {
    let mut fields = Fields {
        keys,
        values: [None; N],
    };
    let result = scan_into(bytes, &mut fields);
    (fields, result)
}

fn scan_into<'a, const N: usize>(
    bytes: &'a [u8],
    fields: &mut Fields<'a, N>,
) -> Result<(), String> {
    let mut r = Reader::new(bytes);
    let entries = match r.item() {
        Ok(Item::Map(n)) => n,
        Ok(_) => return Err("frame is not a MessagePack map".to_owned()),
        Err(e) => return Err(e.to_string()),
    };
    // `item` checked that the input holds 2 × `entries` values' worth of
    // bytes, so this loop is bounded by the input length.
    let mut first_error = None;
    for _ in 0..entries {
        let key_raw = r.value().map_err(|e| e.to_string())?;
        let key = as_str(key_raw);
        let slot = key.and_then(|k| fields.keys.iter().position(|known| *known == k));
        let value = r.value().map_err(|e| match (key, slot) {
            (Some(k), Some(_)) => format!("field `{k}`: {e}"),
            _ => e.to_string(),
        })?;
        match (key, slot.and_then(|i| fields.values.get_mut(i))) {
            (None, _) => {
                first_error.get_or_insert_with(|| "map keys must be strings".to_owned());
            }
            (Some(k), Some(stored)) => {
                if stored.is_some() {
                    first_error.get_or_insert_with(|| format!("duplicate field `{k}`"));
                } else {
                    *stored = Some(value);
                }
            }
            // Unknown keys are ignored.
            (Some(_), None) => {}
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if r.at_end() {
        Ok(())
    } else {
        Err("trailing bytes after the frame".to_owned())
    }
}

/// Keys of client frames.
const CLIENT_KEYS: [&str; 9] = [
    "t", "id", "token", "room", "ev", "data", "others", "since", "limit",
];

/// `t` of every client frame.
const CLIENT_KINDS: [&str; 8] = [
    "auth", "join", "leave", "pub", "presence", "history", "refresh", "ping",
];

/// Decodes one binary WebSocket message from a client.
///
/// The message must be exactly one MessagePack map with string keys; `t`
/// names the frame and `id` (an integer in the i64 range) is required on
/// every frame. Unknown keys are ignored; optional fields may be absent or
/// `nil`. Every value is checked with [`wire::check_msgpack`], so nesting
/// deeper than [`wire::MAX_DEPTH`] anywhere, a `str` that is not UTF-8, or a
/// length the input cannot hold is refused; nothing is allocated by an
/// announced length and nothing recurses on input.
///
/// # Errors
///
/// A [`FrameError`] (answered with `err` `bad_frame`) carrying the `id` when
/// it could be read: not a map, a non-string or duplicate key, a missing or
/// mistyped field, an unknown `t`, truncated or malformed MessagePack, or
/// trailing bytes.
pub fn decode_client_frame(bytes: &[u8]) -> Result<ClientFrame, FrameError> {
    let (fields, scanned) = scan(bytes, &CLIENT_KEYS);
    let id = fields.raw("id").and_then(as_i64);
    scanned
        .and_then(|()| client_frame(&fields))
        .map_err(|reason| FrameError { id, reason })
}

fn client_frame(f: &Fields<'_, 9>) -> Result<ClientFrame, String> {
    let t = f.str("t")?;
    if !CLIENT_KINDS.contains(&t) {
        return Err(format!("unknown frame type {}", quote(t)));
    }
    let id = f.required("id", "an integer (i64)", as_i64)?;
    Ok(match t {
        "auth" => ClientFrame::Auth {
            id,
            token: f.string("token")?,
        },
        "join" => ClientFrame::Join {
            id,
            room: f.string("room")?,
            since: f.optional("since", "a map {seq, epoch}", as_since)?,
        },
        "leave" => ClientFrame::Leave {
            id,
            room: f.string("room")?,
        },
        "pub" => ClientFrame::Pub {
            id,
            room: f.string("room")?,
            ev: f.string("ev")?,
            data: f.required("data", "a MessagePack value", |raw| Some(raw.to_vec()))?,
            others: f.optional("others", "a boolean", as_bool)?.unwrap_or(false),
        },
        "presence" => ClientFrame::Presence {
            id,
            room: f.string("room")?,
        },
        "history" => ClientFrame::History {
            id,
            room: f.string("room")?,
            since: f.optional("since", "a non-negative integer", as_uint)?,
            limit: f.optional("limit", "an integer from 0 to 4294967295", as_u32)?,
        },
        "refresh" => ClientFrame::Refresh {
            id,
            token: f.string("token")?,
        },
        _ => ClientFrame::Ping { id },
    })
}

/// Keys of server frames.
const SERVER_KEYS: [&str; 19] = [
    "t", "id", "data", "code", "msg", "retry_ms", "conn", "user", "node", "ping_ms", "exp", "room",
    "ev", "seq", "epoch", "ts", "from", "action", "in_ms",
];

/// Decodes one server → client message (for clients and tests), with the
/// same checks as [`decode_client_frame`]. `data` values become
/// `serde_json::Value` as in [`wire::decode_value_json`] (bin → array of
/// bytes, ext → `{type, data}`).
///
/// # Errors
///
/// A [`FrameError`] for anything but a well-formed server frame.
pub fn decode_server_frame(bytes: &[u8]) -> Result<ServerFrame, FrameError> {
    let (fields, scanned) = scan(bytes, &SERVER_KEYS);
    let id = fields.raw("id").and_then(as_i64);
    scanned
        .and_then(|()| server_frame(&fields))
        .map_err(|reason| FrameError { id, reason })
}

fn server_frame(f: &Fields<'_, 19>) -> Result<ServerFrame, String> {
    Ok(match f.str("t")? {
        "welcome" => ServerFrame::Welcome {
            conn: f.string("conn")?,
            user: f.string("user")?,
            node: f.string("node")?,
            ping_ms: f.uint("ping_ms")?,
            exp: f.uint("exp")?,
        },
        "msg" => ServerFrame::Msg {
            room: f.string("room")?,
            ev: f.string("ev")?,
            data: f.json("data")?,
            seq: f.uint("seq")?,
            epoch: f.string("epoch")?,
            ts: f.uint("ts")?,
            from: f.optional("from", "a map {user, conn}", as_sender)?,
        },
        "presence" => ServerFrame::Presence {
            room: f.string("room")?,
            user: f.string("user")?,
            action: f.string("action")?,
        },
        "ack" => ServerFrame::Ack {
            id: f.required("id", "an integer (i64)", as_i64)?,
            data: f.json("data")?,
        },
        "err" => ServerFrame::Err {
            id: f.optional("id", "an integer (i64)", as_i64)?,
            code: f.string("code")?,
            msg: f.string("msg")?,
            retry_ms: f.optional("retry_ms", "a non-negative integer", as_uint)?,
        },
        "expiring" => ServerFrame::Expiring {
            in_ms: f.uint("in_ms")?,
        },
        other => return Err(format!("unknown frame type {}", quote(other))),
    })
}

// ---------------------------------------------------------------------------
// Encoding. A `ByteBuf` cannot fail to grow (its error type is
// `Infallible`), so write results are unwrapped by exhaustive matching.

/// The value of a write into a [`ByteBuf`], which cannot fail.
fn infallible<T>(result: Result<T, ValueWriteError<Infallible>>) -> T {
    match result {
        Ok(value) => value,
        Err(ValueWriteError::InvalidMarkerWrite(e) | ValueWriteError::InvalidDataWrite(e)) => {
            match e {}
        }
    }
}

/// Saturating `usize` → `u32` for MessagePack lengths; frames are far
/// smaller than 4 GiB.
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A MessagePack writer with chainable calls, so an encoder reads like the
/// frame it writes.
struct Out(ByteBuf);

impl Out {
    fn new(capacity: usize) -> Out {
        Out(ByteBuf::with_capacity(capacity))
    }

    fn map(&mut self, len: usize) -> &mut Out {
        infallible(encode::write_map_len(&mut self.0, len32(len)));
        self
    }

    fn array(&mut self, len: usize) -> &mut Out {
        infallible(encode::write_array_len(&mut self.0, len32(len)));
        self
    }

    fn str(&mut self, s: &str) -> &mut Out {
        infallible(encode::write_str(&mut self.0, s));
        self
    }

    fn uint(&mut self, v: u64) -> &mut Out {
        infallible(encode::write_uint(&mut self.0, v));
        self
    }

    /// The most compact integer form (non-negative values as uint).
    fn int(&mut self, v: i64) -> &mut Out {
        infallible(encode::write_sint(&mut self.0, v));
        self
    }

    fn bool(&mut self, v: bool) -> &mut Out {
        match encode::write_bool(&mut self.0, v) {
            Ok(()) => {}
            Err(e) => match e {},
        }
        self
    }

    fn nil(&mut self) -> &mut Out {
        match encode::write_nil(&mut self.0) {
            Ok(()) => {}
            Err(e) => match e {},
        }
        self
    }

    /// The bytes of an already-encoded value, copied in as they are.
    fn raw(&mut self, raw: &[u8]) -> &mut Out {
        self.0.as_mut_vec().extend_from_slice(raw);
        self
    }

    /// The header of a frame: a map of `len` entries, starting `t: kind`.
    fn frame(&mut self, len: usize, kind: &str) -> &mut Out {
        self.map(len).str("t").str(kind)
    }

    fn into_vec(self) -> Vec<u8> {
        self.0.into_vec()
    }
}

/// Encodes a client frame (for clients, tests and load tools): keys `t`,
/// `id`, then the fields in the contract's order. Optional fields are left
/// out when `None`, and `others` when false. `data` is copied in raw and must
/// be one MessagePack value; an empty `data` is sent as `nil`.
pub fn encode_client_frame(frame: &ClientFrame) -> Vec<u8> {
    let kind = frame.kind();
    let text_len = match frame {
        ClientFrame::Auth { token, .. } | ClientFrame::Refresh { token, .. } => token.len(),
        ClientFrame::Join { room, since, .. } => {
            room.len() + since.as_ref().map_or(0, |s| 24 + s.epoch.len())
        }
        ClientFrame::Pub { room, ev, data, .. } => room.len() + ev.len() + data.len(),
        ClientFrame::Leave { room, .. }
        | ClientFrame::Presence { room, .. }
        | ClientFrame::History { room, .. } => room.len(),
        ClientFrame::Ping { .. } => 0,
    };
    let mut out = Out::new(48 + text_len);
    match frame {
        ClientFrame::Auth { id, token } | ClientFrame::Refresh { id, token } => {
            out.frame(3, kind)
                .str("id")
                .int(*id)
                .str("token")
                .str(token);
        }
        ClientFrame::Join { id, room, since } => {
            out.frame(3 + usize::from(since.is_some()), kind)
                .str("id")
                .int(*id)
                .str("room")
                .str(room);
            if let Some(since) = since {
                out.str("since")
                    .map(2)
                    .str("seq")
                    .uint(since.seq)
                    .str("epoch")
                    .str(&since.epoch);
            }
        }
        ClientFrame::Leave { id, room } | ClientFrame::Presence { id, room } => {
            out.frame(3, kind).str("id").int(*id).str("room").str(room);
        }
        ClientFrame::Pub {
            id,
            room,
            ev,
            data,
            others,
        } => {
            out.frame(5 + usize::from(*others), kind)
                .str("id")
                .int(*id)
                .str("room")
                .str(room)
                .str("ev")
                .str(ev)
                .str("data");
            if data.is_empty() {
                out.nil();
            } else {
                out.raw(data);
            }
            if *others {
                out.str("others").bool(true);
            }
        }
        ClientFrame::History {
            id,
            room,
            since,
            limit,
        } => {
            let len = 3 + usize::from(since.is_some()) + usize::from(limit.is_some());
            out.frame(len, kind)
                .str("id")
                .int(*id)
                .str("room")
                .str(room);
            if let Some(since) = since {
                out.str("since").uint(*since);
            }
            if let Some(limit) = limit {
                out.str("limit").uint(u64::from(*limit));
            }
        }
        ClientFrame::Ping { id } => {
            out.frame(2, kind).str("id").int(*id);
        }
    }
    out.into_vec()
}

/// Encodes `welcome`: `{t, conn, user, node, ping_ms, exp}`, the first frame
/// of an authenticated connection. `exp` is the token's expiry in Unix
/// seconds.
pub fn encode_welcome(conn: &str, user: &str, node: &str, ping_ms: u64, exp: u64) -> Vec<u8> {
    let mut out = Out::new(80 + conn.len() + user.len() + node.len());
    out.frame(6, "welcome")
        .str("conn")
        .str(conn)
        .str("user")
        .str(user)
        .str("node")
        .str(node)
        .str("ping_ms")
        .uint(ping_ms)
        .str("exp")
        .uint(exp);
    out.into_vec()
}

/// Encodes `err`: `{t, id?, code, msg, retry_ms?}`. `id` is left out when the
/// error answers no request (e.g. a text message), `retry_ms` when `None`.
pub fn encode_err(id: Option<i64>, code: ErrorCode, msg: &str, retry_ms: Option<u64>) -> Vec<u8> {
    let len = 3 + usize::from(id.is_some()) + usize::from(retry_ms.is_some());
    let mut out = Out::new(64 + msg.len());
    out.frame(len, "err");
    if let Some(id) = id {
        out.str("id").int(id);
    }
    out.str("code").str(code.as_str()).str("msg").str(msg);
    if let Some(retry_ms) = retry_ms {
        out.str("retry_ms").uint(retry_ms);
    }
    out.into_vec()
}

/// Encodes `expiring`: `{t, in_ms}`, ms until the token's `exp`.
pub fn encode_expiring(in_ms: u64) -> Vec<u8> {
    let mut out = Out::new(24);
    out.frame(2, "expiring").str("in_ms").uint(in_ms);
    out.into_vec()
}

/// Encodes `ack`: `{t, id, data}`, with `data` the raw MessagePack bytes of
/// one value (from the `ack_*` builders), spliced in without re-encoding.
pub fn encode_ack_raw(id: i64, data: &[u8]) -> Vec<u8> {
    let mut out = Out::new(24 + data.len());
    out.frame(3, "ack").str("id").int(id).str("data").raw(data);
    out.into_vec()
}

/// `ack` data of `auth`: `{user, exp}`.
pub fn ack_auth(user: &str, exp: u64) -> Vec<u8> {
    let mut out = Out::new(24 + user.len());
    out.map(2).str("user").str(user).str("exp").uint(exp);
    out.into_vec()
}

/// `ack` data of `join`: `{room, seq, epoch, recovered}`. `recovered` is true
/// when `since` was given and every missed message was replayed before the
/// ack.
pub fn ack_join(room: &str, seq: u64, epoch: &str, recovered: bool) -> Vec<u8> {
    let mut out = Out::new(48 + room.len() + epoch.len());
    out.map(4)
        .str("room")
        .str(room)
        .str("seq")
        .uint(seq)
        .str("epoch")
        .str(epoch)
        .str("recovered")
        .bool(recovered);
    out.into_vec()
}

/// `ack` data of `leave`: `{}`.
pub fn ack_empty() -> Vec<u8> {
    let mut out = Out::new(1);
    out.map(0);
    out.into_vec()
}

/// `ack` data of `pub`: `{seq}`, the message's sequence number.
pub fn ack_pub(seq: u64) -> Vec<u8> {
    let mut out = Out::new(16);
    out.map(1).str("seq").uint(seq);
    out.into_vec()
}

/// `ack` data of `presence`: `{users: [{user, conns}], count}`.
pub fn ack_presence(users: &[(String, u64)], count: u64) -> Vec<u8> {
    let users_len: usize = users.iter().map(|(user, _)| user.len() + 24).sum();
    let mut out = Out::new(32 + users_len);
    out.map(2).str("users").array(users.len());
    for (user, conns) in users {
        out.map(2).str("user").str(user).str("conns").uint(*conns);
    }
    out.str("count").uint(count);
    out.into_vec()
}

/// `ack` data of `history`: `{messages: [msg...], seq, epoch}`, each message
/// an encoded `msg` frame spliced in raw (a map, not a `bin`).
pub fn ack_history(messages: &[&[u8]], seq: u64, epoch: &str) -> Vec<u8> {
    let messages_len: usize = messages.iter().map(|m| m.len()).sum();
    let mut out = Out::new(48 + messages_len + epoch.len());
    out.map(3).str("messages").array(messages.len());
    for message in messages {
        out.raw(message);
    }
    out.str("seq").uint(seq).str("epoch").str(epoch);
    out.into_vec()
}

/// `ack` data of `refresh`: `{exp}`, the new token's expiry (Unix seconds).
pub fn ack_refresh(exp: u64) -> Vec<u8> {
    let mut out = Out::new(16);
    out.map(1).str("exp").uint(exp);
    out.into_vec()
}

/// `ack` data of `ping`: `{ts}`, the server's time in ms.
pub fn ack_ping(ts: u64) -> Vec<u8> {
    let mut out = Out::new(16);
    out.map(1).str("ts").uint(ts);
    out.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_msg_frame, encode_presence_frame, PresenceAction, Sender};
    use serde_json::{json, Value};

    fn mp<T: serde::Serialize>(v: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The keys of a top-level map, in order.
    fn map_keys(bytes: &[u8]) -> Vec<String> {
        let mut r = Reader::new(bytes);
        let Item::Map(n) = r.item().unwrap() else {
            panic!("not a map")
        };
        let mut keys = Vec::new();
        for _ in 0..n {
            keys.push(as_str(r.skip_value().unwrap()).unwrap().to_owned());
            r.skip_value().unwrap();
        }
        assert!(r.at_end());
        keys
    }

    /// A map written by hand: `entries` are (raw key, raw value) pairs.
    fn raw_map(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Out::new(64);
        out.map(entries.len());
        for (k, v) in entries {
            out.raw(k).raw(v);
        }
        out.into_vec()
    }

    fn s(text: &str) -> Vec<u8> {
        let mut out = Out::new(8);
        out.str(text);
        out.into_vec()
    }

    fn err_of(bytes: &[u8]) -> FrameError {
        match decode_client_frame(bytes) {
            Err(e) => e,
            Ok(f) => panic!("accepted {f:?} from {bytes:02x?}"),
        }
    }

    fn all_frames() -> Vec<ClientFrame> {
        let since = Since {
            seq: 17,
            epoch: "5f0c3a9e12d47b86".into(),
        };
        vec![
            ClientFrame::Auth {
                id: 1,
                token: "eyJhbGciOi.x.y".into(),
            },
            ClientFrame::Join {
                id: 2,
                room: "chat:lobby".into(),
                since: None,
            },
            ClientFrame::Join {
                id: -3,
                room: "chat:lobby".into(),
                since: Some(since.clone()),
            },
            ClientFrame::Join {
                id: 4,
                room: "chat:x".into(),
                since: Some(Since {
                    seq: u64::MAX,
                    epoch: String::new(),
                }),
            },
            ClientFrame::Leave {
                id: i64::MAX,
                room: "chat:lobby".into(),
            },
            ClientFrame::Pub {
                id: i64::MIN,
                room: "chat:lobby".into(),
                ev: "message".into(),
                data: mp(&json!({"text": "héllo"})),
                others: false,
            },
            ClientFrame::Pub {
                id: 0,
                room: "chat:lobby".into(),
                ev: "".into(),
                data: vec![0xc0],
                others: true,
            },
            ClientFrame::Presence {
                id: 300,
                room: "chat:lobby".into(),
            },
            ClientFrame::History {
                id: 70_000,
                room: "chat:lobby".into(),
                since: None,
                limit: None,
            },
            ClientFrame::History {
                id: -70_000,
                room: "chat:lobby".into(),
                since: Some(0),
                limit: Some(u32::MAX),
            },
            ClientFrame::History {
                id: 5,
                room: "chat:lobby".into(),
                since: Some(1 << 40),
                limit: None,
            },
            ClientFrame::History {
                id: 6,
                room: "chat:lobby".into(),
                since: None,
                limit: Some(0),
            },
            ClientFrame::Refresh {
                id: 7,
                token: "t2".into(),
            },
            ClientFrame::Ping { id: -1 },
        ]
    }

    #[test]
    fn close_codes() {
        assert_eq!(
            [
                close::TOKEN,
                close::FORBIDDEN,
                close::POLICY,
                close::CONN_LIMIT,
                close::TOO_LARGE,
                close::RESTART,
                close::INTERNAL
            ],
            [4001, 4003, 4008, 4029, 1009, 1012, 1011]
        );
    }

    #[test]
    fn error_codes() {
        let names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "bad_frame",
                "unauthorized",
                "forbidden",
                "invalid_room",
                "not_member",
                "rate_limited",
                "too_many_rooms",
                "payload_too_large",
                "unavailable",
                "internal"
            ]
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("BAD_FRAME"), None);
        assert_eq!(ErrorCode::parse(""), None);
    }

    #[test]
    fn client_frames_round_trip() {
        for frame in all_frames() {
            let bytes = encode_client_frame(&frame);
            assert_eq!(wire::check_msgpack(&bytes), Ok(()), "{frame:?}");
            assert_eq!(decode_client_frame(&bytes), Ok(frame.clone()));
            let keys = map_keys(&bytes);
            assert_eq!(&keys[..2], ["t", "id"], "{frame:?}");
            let v = wire::decode_value_json(&bytes).unwrap();
            assert_eq!(v["t"], json!(frame.kind()));
            assert_eq!(v["id"], json!(frame.id()));
        }
    }

    #[test]
    fn client_frame_field_order() {
        let frames = all_frames();
        let expected: [&[&str]; 14] = [
            &["t", "id", "token"],
            &["t", "id", "room"],
            &["t", "id", "room", "since"],
            &["t", "id", "room", "since"],
            &["t", "id", "room"],
            &["t", "id", "room", "ev", "data"],
            &["t", "id", "room", "ev", "data", "others"],
            &["t", "id", "room"],
            &["t", "id", "room"],
            &["t", "id", "room", "since", "limit"],
            &["t", "id", "room", "since"],
            &["t", "id", "room", "limit"],
            &["t", "id", "token"],
            &["t", "id"],
        ];
        for (frame, keys) in frames.iter().zip(expected) {
            assert_eq!(map_keys(&encode_client_frame(frame)), keys, "{frame:?}");
        }
        let join = encode_client_frame(&frames[2]);
        assert_eq!(
            wire::decode_value_json(&join).unwrap()["since"],
            json!({"seq": 17, "epoch": "5f0c3a9e12d47b86"})
        );
    }

    #[test]
    fn id_and_kind() {
        let kinds: Vec<(&str, i64)> = all_frames().iter().map(|f| (f.kind(), f.id())).collect();
        assert_eq!(
            kinds,
            [
                ("auth", 1),
                ("join", 2),
                ("join", -3),
                ("join", 4),
                ("leave", i64::MAX),
                ("pub", i64::MIN),
                ("pub", 0),
                ("presence", 300),
                ("history", 70_000),
                ("history", -70_000),
                ("history", 5),
                ("history", 6),
                ("refresh", 7),
                ("ping", -1)
            ]
        );
        for kind in CLIENT_KINDS {
            assert!(all_frames().iter().any(|f| f.kind() == kind), "{kind}");
        }
    }

    #[test]
    fn pub_data_is_spliced_verbatim() {
        let deep64 = [vec![0x91; 64], vec![0xc0]].concat();
        let cases: Vec<Vec<u8>> = vec![
            vec![0x01],
            vec![0xc0],
            vec![0x80],
            vec![0x90],
            mp(&json!({"a": {"b": {"c": [1, 2, {"d": null}]}}, "e": "f"})),
            // bin 8 and bin 16
            vec![0xc4, 3, 0, 0xff, 0xc1],
            [vec![0xc5, 0x01, 0x00], vec![0xab; 256]].concat(),
            // fixext 1, fixext 16, ext 8 with type -1
            vec![0xd4, 0x05, 0x42],
            [vec![0xd8, 0x01], vec![0x11; 16]].concat(),
            vec![0xc7, 2, 0xff, 0xaa, 0xbb],
            // map with a non-string key and a float inside an array
            vec![
                0x81, 0x01, 0x92, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xca, 0, 0, 0, 0,
            ],
            // a non-compact encoding stays non-compact
            vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 5],
            vec![0xd9, 1, b'x'],
            deep64,
        ];
        for data in cases {
            for others in [false, true] {
                let frame = ClientFrame::Pub {
                    id: 9,
                    room: "chat:lobby".into(),
                    ev: "m".into(),
                    data: data.clone(),
                    others,
                };
                let bytes = encode_client_frame(&frame);
                assert!(bytes.windows(data.len()).any(|w| w == data));
                let decoded = decode_client_frame(&bytes).unwrap();
                let ClientFrame::Pub { data: got, .. } = &decoded else {
                    panic!("{decoded:?}")
                };
                assert_eq!(got, &data, "{}", hex(&data));
                assert_eq!(decoded, frame);
            }
        }
        // `data` placed first and last among the keys.
        let data = mp(&json!([{"x": [1, 2]}, "y"]));
        let first = raw_map(&[
            (&s("data"), &data),
            (&s("t"), &s("pub")),
            (&s("room"), &s("a:b")),
            (&s("ev"), &s("e")),
            (&s("id"), &[0x05]),
        ]);
        let ClientFrame::Pub { data: got, .. } = decode_client_frame(&first).unwrap() else {
            panic!()
        };
        assert_eq!(got, data);
    }

    #[test]
    fn empty_data_is_sent_as_nil() {
        let frame = ClientFrame::Pub {
            id: 1,
            room: "a:b".into(),
            ev: "e".into(),
            data: vec![],
            others: false,
        };
        let decoded = decode_client_frame(&encode_client_frame(&frame)).unwrap();
        let ClientFrame::Pub { data, .. } = decoded else {
            panic!()
        };
        assert_eq!(data, [0xc0]);
    }

    #[test]
    fn decoder_is_lenient_where_it_may_be() {
        // Any key order, unknown keys (of any shape) ignored, nil optionals.
        let bytes = mp(&json!({
            "room": "chat:lobby", "x-trace": {"deep": [1, 2, {"k": "v"}]},
            "since": null, "id": 12, "t": "join", "v": 1
        }));
        assert_eq!(
            decode_client_frame(&bytes),
            Ok(ClientFrame::Join {
                id: 12,
                room: "chat:lobby".into(),
                since: None
            })
        );
        let bytes =
            mp(&json!({"t": "history", "id": 1, "room": "a:b", "since": null, "limit": null}));
        assert_eq!(
            decode_client_frame(&bytes),
            Ok(ClientFrame::History {
                id: 1,
                room: "a:b".into(),
                since: None,
                limit: None
            })
        );
        let bytes =
            mp(&json!({"t": "pub", "id": 1, "room": "a:b", "ev": "e", "data": 1, "others": null}));
        assert!(matches!(
            decode_client_frame(&bytes),
            Ok(ClientFrame::Pub { others: false, .. })
        ));
        // Extra keys inside `since` are ignored too.
        let bytes = mp(&json!({"t": "join", "id": 1, "room": "a:b",
            "since": {"epoch": "e", "seq": 3, "extra": true}}));
        assert_eq!(
            decode_client_frame(&bytes),
            Ok(ClientFrame::Join {
                id: 1,
                room: "a:b".into(),
                since: Some(Since {
                    seq: 3,
                    epoch: "e".into()
                })
            })
        );
        // Integers in any width and signedness, when the value fits.
        let t = s("t");
        let ping = s("ping");
        let id = s("id");
        for (raw, want) in [
            (&[0xd0, 0x05][..], 5i64),
            (&[0xd0, 0xfb][..], -5),
            (&[0xcc, 0xff][..], 255),
            (&[0xcd, 0x01, 0x00][..], 256),
            (&[0xce, 0xff, 0xff, 0xff, 0xff][..], 4_294_967_295),
            (
                &[0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
                i64::MAX,
            ),
            (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0][..], i64::MIN),
            (&[0xd1, 0xff, 0xff][..], -1),
            (&[0xd2, 0, 0, 0, 7][..], 7),
            (&[0xe0][..], -32),
        ] {
            let bytes = raw_map(&[(&t, &ping), (&id, raw)]);
            assert_eq!(
                decode_client_frame(&bytes),
                Ok(ClientFrame::Ping { id: want }),
                "{raw:02x?}"
            );
        }
        // Non-compact string and map headers.
        let bytes = [
            &[0xde, 0x00, 0x02][..],
            &[0xd9, 1, b't'],
            &[0xda, 0, 4],
            b"ping",
            &[0xdb, 0, 0, 0, 2],
            b"id",
            &[0x01],
        ]
        .concat();
        assert_eq!(decode_client_frame(&bytes), Ok(ClientFrame::Ping { id: 1 }));
        // Positive values written as signed ints are accepted as uints.
        let bytes = raw_map(&[
            (&t, &s("history")),
            (&id, &[0x01]),
            (&s("room"), &s("a:b")),
            (&s("since"), &[0xd3, 0, 0, 0, 0, 0, 0, 0, 9]),
            (&s("limit"), &[0xd0, 10]),
        ]);
        assert_eq!(
            decode_client_frame(&bytes),
            Ok(ClientFrame::History {
                id: 1,
                room: "a:b".into(),
                since: Some(9),
                limit: Some(10)
            })
        );
    }

    #[test]
    fn refuses_what_is_not_a_map() {
        let cases: [&[u8]; 10] = [
            br#"{"t":"join","id":1,"room":"chat:lobby"}"#,
            b"hello",
            b"\x00\x01\x02",
            &[0x92, 0x01, 0x02],
            &[0xa4, b'j', b'o', b'i', b'n'],
            &[0xc0],
            &[0xc3],
            &[0xcb, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xc4, 1, 0x80],
            &[0xd4, 1, 0x80],
        ];
        for bytes in cases {
            let e = err_of(bytes);
            assert_eq!(e.id, None);
            assert!(e.reason.contains("not a MessagePack map"), "{e:?}");
        }
        assert_eq!(
            err_of(b""),
            FrameError {
                id: None,
                reason: "truncated MessagePack value".into()
            }
        );
        assert!(err_of(&[0xc1]).reason.contains("0xc1"));
    }

    // One case per line: rustfmt would spread each over five.
    #[rustfmt::skip]
    #[test]
    fn refuses_bad_fields_with_the_id() {
        let cases: Vec<(Value, Option<i64>, &str)> = vec![
            (json!({"id": 1, "room": "a:b"}), Some(1), "missing field `t`"),
            (json!({"t": 5, "id": 1}), Some(1), "field `t` must be a string"),
            (json!({"t": "nope", "id": 7}), Some(7), "unknown frame type \"nope\""),
            (json!({"t": "PING", "id": 7}), Some(7), "unknown frame type"),
            (json!({"t": "ping"}), None, "missing field `id`"),
            (json!({"t": "ping", "id": "1"}), None, "field `id` must be an integer"),
            (json!({"t": "ping", "id": 1.0}), None, "field `id` must be an integer"),
            (json!({"t": "ping", "id": null}), None, "field `id` must be an integer"),
            (json!({"t": "ping", "id": [1]}), None, "field `id` must be an integer"),
            (json!({"t": "ping", "id": u64::MAX}), None, "field `id` must be an integer"),
            (json!({"t": "join", "id": 2}), Some(2), "missing field `room`"),
            (json!({"t": "join", "id": 2, "room": 5}), Some(2), "field `room` must be a string"),
            (json!({"t": "join", "id": 2, "room": null}), Some(2), "field `room` must be a string"),
            (json!({"t": "join", "id": 2, "room": ["a:b"]}), Some(2), "field `room` must be a string"),
            (json!({"t": "join", "id": 3, "room": "a:b", "since": 5}), Some(3), "field `since` must be a map"),
            (json!({"t": "join", "id": 3, "room": "a:b", "since": [1, "e"]}), Some(3), "field `since` must be a map"),
            (json!({"t": "join", "id": 3, "room": "a:b", "since": {"seq": 1}}), Some(3), "field `since` must be a map"),
            (json!({"t": "join", "id": 3, "room": "a:b", "since": {"epoch": "e"}}), Some(3), "field `since` must be a map"),
            (json!({"t": "join", "id": 3, "room": "a:b", "since": {"seq": "1", "epoch": "e"}}), Some(3), "field `since` must be a map"),
            (json!({"t": "join", "id": 3, "room": "a:b", "since": {"seq": -1, "epoch": "e"}}), Some(3), "field `since` must be a map"),
            (json!({"t": "join", "id": 3, "room": "a:b", "since": {"seq": 1, "epoch": 2}}), Some(3), "field `since` must be a map"),
            (json!({"t": "history", "id": 4, "room": "a:b", "since": {"seq": 1, "epoch": "e"}}), Some(4), "field `since` must be a non-negative integer"),
            (json!({"t": "history", "id": 4, "room": "a:b", "since": -1}), Some(4), "field `since` must be a non-negative integer"),
            (json!({"t": "history", "id": 4, "room": "a:b", "limit": -1}), Some(4), "field `limit` must be an integer from 0"),
            (json!({"t": "history", "id": 4, "room": "a:b", "limit": 4_294_967_296u64}), Some(4), "field `limit` must be an integer from 0"),
            (json!({"t": "history", "id": 4, "room": "a:b", "limit": "10"}), Some(4), "field `limit`"),
            (json!({"t": "pub", "id": 5, "room": "a:b", "ev": "e"}), Some(5), "missing field `data`"),
            (json!({"t": "pub", "id": 5, "room": "a:b", "data": 1}), Some(5), "missing field `ev`"),
            (json!({"t": "pub", "id": 5, "room": "a:b", "ev": 1, "data": 1}), Some(5), "field `ev` must be a string"),
            (json!({"t": "pub", "id": 5, "room": "a:b", "ev": "e", "data": 1, "others": 1}), Some(5), "field `others` must be a boolean"),
            (json!({"t": "pub", "id": 5, "room": "a:b", "ev": "e", "data": 1, "others": "true"}), Some(5), "field `others` must be a boolean"),
            (json!({"t": "auth", "id": 6}), Some(6), "missing field `token`"),
            (json!({"t": "auth", "id": 6, "token": 1}), Some(6), "field `token` must be a string"),
            (json!({"t": "refresh", "id": 6, "token": {}}), Some(6), "field `token` must be a string"),
            (json!({"t": "leave", "id": 8}), Some(8), "missing field `room`"),
            (json!({"t": "presence", "id": 8, "room": true}), Some(8), "field `room` must be a string"),
            (json!({}), None, "missing field `t`"),
        ];
        for (value, id, reason) in cases {
            let e = err_of(&mp(&value));
            assert_eq!(e.id, id, "{value}");
            assert!(e.reason.contains(reason), "{value}: {e:?}");
        }
    }

    #[test]
    fn unknown_type_is_quoted_and_cut() {
        let long = "x".repeat(1000);
        let e = err_of(&mp(&json!({"t": long, "id": 1})));
        assert_eq!(
            e.reason,
            format!("unknown frame type \"{}…\"", "x".repeat(32))
        );
        let e = err_of(&mp(&json!({"t": "a\"b\n", "id": 1})));
        assert_eq!(e.reason, r#"unknown frame type "a\"b\n""#);
    }

    #[test]
    fn refuses_bad_keys() {
        let t = s("t");
        let ping = s("ping");
        let id = s("id");
        // A non-string key, before and after the id.
        for bytes in [
            raw_map(&[(&[0x01], &[0x02]), (&t, &ping), (&id, &[0x03])]),
            raw_map(&[(&t, &ping), (&id, &[0x03]), (&[0x92, 0x01, 0x02], &[0x02])]),
            raw_map(&[(&t, &ping), (&id, &[0x03]), (&[0xc0], &[0x02])]),
        ] {
            assert_eq!(
                err_of(&bytes),
                FrameError {
                    id: Some(3),
                    reason: "map keys must be strings".into()
                }
            );
        }
        // Duplicate known keys; the first id is echoed.
        let bytes = raw_map(&[(&t, &ping), (&id, &[0x01]), (&id, &[0x02])]);
        assert_eq!(
            err_of(&bytes),
            FrameError {
                id: Some(1),
                reason: "duplicate field `id`".into()
            }
        );
        let bytes = raw_map(&[(&t, &ping), (&t, &s("join")), (&id, &[0x01])]);
        assert_eq!(err_of(&bytes).reason, "duplicate field `t`");
        // Duplicate unknown keys are as ignorable as any unknown key.
        let x = s("x");
        let bytes = raw_map(&[(&t, &ping), (&x, &[1]), (&x, &[2]), (&id, &[0x01])]);
        assert_eq!(decode_client_frame(&bytes), Ok(ClientFrame::Ping { id: 1 }));
    }

    #[test]
    fn refuses_invalid_utf8() {
        let t = s("t");
        let id = s("id");
        let room = s("room");
        let bad = [0xa2, 0xc3, 0x28];
        let in_room = raw_map(&[(&t, &s("join")), (&id, &[0x04]), (&room, &bad)]);
        assert_eq!(
            err_of(&in_room),
            FrameError {
                id: Some(4),
                reason: "field `room`: string is not valid UTF-8".into()
            }
        );
        let in_key = raw_map(&[(&t, &s("ping")), (&id, &[0x04]), (&bad, &[0x01])]);
        assert_eq!(
            err_of(&in_key),
            FrameError {
                id: Some(4),
                reason: "string is not valid UTF-8".into()
            }
        );
        let data = [0x91, 0xa1, 0xff];
        let in_data = raw_map(&[
            (&t, &s("pub")),
            (&id, &[0x04]),
            (&room, &s("a:b")),
            (&s("ev"), &s("e")),
            (&s("data"), &data),
        ]);
        assert_eq!(
            err_of(&in_data),
            FrameError {
                id: Some(4),
                reason: "field `data`: string is not valid UTF-8".into()
            }
        );
        let in_t = raw_map(&[(&id, &[0x04]), (&t, &[0xa1, 0x80])]);
        assert_eq!(err_of(&in_t).id, Some(4));
    }

    #[test]
    fn refuses_truncated_and_trailing() {
        for frame in all_frames() {
            let bytes = encode_client_frame(&frame);
            for end in 0..bytes.len() {
                let e = err_of(&bytes[..end]);
                // The id is echoed once it was read whole.
                if let Some(id) = e.id {
                    assert_eq!(id, frame.id());
                }
                assert!(
                    e.reason.contains("truncated") || e.reason.contains("missing field"),
                    "{frame:?} cut at {end}: {e:?}"
                );
            }
            let mut trailing = bytes.clone();
            trailing.push(0x00);
            assert_eq!(
                err_of(&trailing),
                FrameError {
                    id: Some(frame.id()),
                    reason: "trailing bytes after the frame".into()
                }
            );
            let twice = [bytes.clone(), bytes].concat();
            assert_eq!(err_of(&twice).reason, "trailing bytes after the frame");
        }
        // A cut inside `data`, after the id was read.
        let frame = ClientFrame::Pub {
            id: 42,
            room: "a:b".into(),
            ev: "e".into(),
            data: mp(&json!({"k": [1, 2, 3]})),
            others: false,
        };
        let bytes = encode_client_frame(&frame);
        let e = err_of(&bytes[..bytes.len() - 1]);
        assert_eq!(
            e,
            FrameError {
                id: Some(42),
                reason: "field `data`: truncated MessagePack value".into()
            }
        );
    }

    fn pub_with_data(data: &[u8]) -> Vec<u8> {
        raw_map(&[
            (&s("t"), &s("pub")),
            (&s("id"), &[0x0b]),
            (&s("room"), &s("a:b")),
            (&s("ev"), &s("e")),
            (&s("data"), data),
        ])
    }

    #[test]
    fn refuses_deep_nesting() {
        let ok = [vec![0x91; 64], vec![0x01]].concat();
        assert!(decode_client_frame(&pub_with_data(&ok)).is_ok());
        for deep in [
            [vec![0x91; 65], vec![0x01]].concat(),
            [[0x81, 0xa1, b'k'].repeat(65), vec![0x01]].concat(),
            [vec![0x91; 100_000], vec![0x01]].concat(),
        ] {
            assert_eq!(
                err_of(&pub_with_data(&deep)),
                FrameError {
                    id: Some(11),
                    reason: "field `data`: nested deeper than 64 levels".into()
                }
            );
        }
        // Under an unknown key as well.
        let deep = [vec![0x91; 65], vec![0x01]].concat();
        let bytes = raw_map(&[(&s("t"), &s("ping")), (&s("id"), &[0x01]), (&s("x"), &deep)]);
        assert_eq!(
            err_of(&bytes),
            FrameError {
                id: Some(1),
                reason: "nested deeper than 64 levels".into()
            }
        );
        // And unterminated deep nesting is simply truncated.
        let open = vec![0x91; 100_000];
        assert_eq!(
            err_of(&pub_with_data(&open)).reason,
            "field `data`: truncated MessagePack value"
        );
    }

    #[test]
    fn refuses_lying_lengths() {
        let lies: [&[u8]; 9] = [
            &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0xdc, 0xff, 0xff, 0x01],
            &[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01],
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
            &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00],
            &[0x9f, 0x01],
            // Each array is small, but together they owe more than is left.
            &[0x93, 0x93, 0x93, 0x01, 0x01],
            &[0xd8, 0x01, 0x00],
        ];
        for lie in lies {
            assert_eq!(
                err_of(&pub_with_data(lie)),
                FrameError {
                    id: Some(11),
                    reason: "field `data`: truncated MessagePack value".into()
                },
                "{lie:02x?}"
            );
        }
        // The frame map itself announcing four billion entries.
        let top = [
            0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b't', 0xa4, b'p', b'i', b'n', b'g',
        ];
        assert_eq!(err_of(&top).reason, "truncated MessagePack value");
        // A long frame made of many small unknown keys is fine (linear).
        let mut big = Out::new(1 << 20);
        big.map(2 + 20_000).str("t").str("ping").str("id").int(1);
        for i in 0..20_000u64 {
            big.str("k").uint(i);
        }
        assert_eq!(
            decode_client_frame(&big.into_vec()),
            Ok(ClientFrame::Ping { id: 1 })
        );
    }

    /// Random bytes and mutations of valid frames never panic, and whatever
    /// decodes re-encodes to a frame that decodes the same.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<Vec<u8>> = all_frames().iter().map(encode_client_frame).collect();
        let mut decoded = 0;
        for round in 0..30_000usize {
            let bytes: Vec<u8> = if round % 3 == 0 {
                let len = (next() % 40) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut b = seeds[round % seeds.len()].clone();
                for _ in 0..=(next() % 2) {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
                if next() % 4 == 0 {
                    b.truncate((next() as usize) % (b.len() + 1));
                }
                b
            };
            match decode_client_frame(&bytes) {
                Ok(frame) => {
                    decoded += 1;
                    let again = encode_client_frame(&frame);
                    assert_eq!(decode_client_frame(&again), Ok(frame), "{bytes:02x?}");
                }
                Err(e) => assert!(!e.reason.is_empty()),
            }
            let _ = decode_server_frame(&bytes);
        }
        assert!(decoded > 100, "{decoded}");
    }

    #[test]
    fn welcome_err_expiring_round_trip() {
        let welcome = encode_welcome("c-1", "alice", "node-a", 25_000, 1_700_000_000);
        assert_eq!(
            map_keys(&welcome),
            ["t", "conn", "user", "node", "ping_ms", "exp"]
        );
        assert_eq!(
            decode_server_frame(&welcome),
            Ok(ServerFrame::Welcome {
                conn: "c-1".into(),
                user: "alice".into(),
                node: "node-a".into(),
                ping_ms: 25_000,
                exp: 1_700_000_000
            })
        );

        for (id, retry_ms, keys) in [
            (None, None, &["t", "code", "msg"][..]),
            (Some(-4), None, &["t", "id", "code", "msg"][..]),
            (None, Some(1500), &["t", "code", "msg", "retry_ms"][..]),
            (
                Some(i64::MAX),
                Some(0),
                &["t", "id", "code", "msg", "retry_ms"][..],
            ),
        ] {
            for code in ErrorCode::ALL {
                let bytes = encode_err(id, code, "slow down", retry_ms);
                assert_eq!(map_keys(&bytes), keys);
                assert_eq!(
                    decode_server_frame(&bytes),
                    Ok(ServerFrame::Err {
                        id,
                        code: code.as_str().into(),
                        msg: "slow down".into(),
                        retry_ms
                    })
                );
            }
        }
        assert_eq!(
            wire::decode_value_json(&encode_err(Some(3), ErrorCode::RateLimited, "m", Some(250))),
            Ok(json!({"t": "err", "id": 3, "code": "rate_limited", "msg": "m", "retry_ms": 250}))
        );

        let expiring = encode_expiring(30_000);
        assert_eq!(map_keys(&expiring), ["t", "in_ms"]);
        assert_eq!(
            decode_server_frame(&expiring),
            Ok(ServerFrame::Expiring { in_ms: 30_000 })
        );
    }

    #[test]
    fn acks_round_trip() {
        let users = vec![("alice".to_string(), 2u64), ("bob".to_string(), 1)];
        let cases: Vec<(Vec<u8>, Value, &[&str])> = vec![
            (
                ack_auth("alice", 1_700_000_000),
                json!({"user": "alice", "exp": 1_700_000_000u64}),
                &["user", "exp"][..],
            ),
            (
                ack_join("chat:lobby", 42, "ep", true),
                json!({"room": "chat:lobby", "seq": 42, "epoch": "ep", "recovered": true}),
                &["room", "seq", "epoch", "recovered"][..],
            ),
            (ack_empty(), json!({}), &[][..]),
            (ack_pub(u64::MAX), json!({"seq": u64::MAX}), &["seq"][..]),
            (
                ack_presence(&users, 2),
                json!({"users": [{"user": "alice", "conns": 2}, {"user": "bob", "conns": 1}], "count": 2}),
                &["users", "count"][..],
            ),
            (
                ack_presence(&[], 0),
                json!({"users": [], "count": 0}),
                &["users", "count"][..],
            ),
            (
                ack_history(&[], 0, ""),
                json!({"messages": [], "seq": 0, "epoch": ""}),
                &["messages", "seq", "epoch"][..],
            ),
            (ack_refresh(9), json!({"exp": 9}), &["exp"][..]),
            (
                ack_ping(1_700_000_000_123),
                json!({"ts": 1_700_000_000_123u64}),
                &["ts"][..],
            ),
        ];
        for (data, want, keys) in cases {
            assert_eq!(map_keys(&data), keys);
            let bytes = encode_ack_raw(7, &data);
            assert_eq!(map_keys(&bytes), ["t", "id", "data"]);
            assert!(bytes.ends_with(&data));
            assert_eq!(wire::check_msgpack(&bytes), Ok(()));
            assert_eq!(
                decode_server_frame(&bytes),
                Ok(ServerFrame::Ack { id: 7, data: want })
            );
        }
        let negative = encode_ack_raw(-9, &ack_empty());
        assert_eq!(
            decode_server_frame(&negative),
            Ok(ServerFrame::Ack {
                id: -9,
                data: json!({})
            })
        );
    }

    #[test]
    fn history_ack_carries_msg_frames_as_maps() {
        let alice = Sender {
            user: "alice",
            conn: "c-1",
        };
        let first = encode_msg_frame(
            "chat:lobby",
            "message",
            &mp(&json!({"text": "hi"})),
            1,
            "ep",
            10,
            Some(alice),
        );
        let second = encode_msg_frame("chat:lobby", "note", &[0xc4, 2, 1, 2], 2, "ep", 11, None);
        let data = ack_history(&[&first, &second], 2, "ep");
        let bytes = encode_ack_raw(5, &data);
        // The stored frames are in the ack byte for byte.
        assert!(bytes.windows(first.len()).any(|w| w == first));
        assert!(bytes.windows(second.len()).any(|w| w == second));
        let ServerFrame::Ack { id, data } = decode_server_frame(&bytes).unwrap() else {
            panic!("not an ack")
        };
        assert_eq!(id, 5);
        assert_eq!(
            data,
            json!({
                "messages": [
                    {"t": "msg", "room": "chat:lobby", "ev": "message", "data": {"text": "hi"},
                     "seq": 1, "epoch": "ep", "ts": 10, "from": {"user": "alice", "conn": "c-1"}},
                    {"t": "msg", "room": "chat:lobby", "ev": "note", "data": [1, 2],
                     "seq": 2, "epoch": "ep", "ts": 11}
                ],
                "seq": 2,
                "epoch": "ep"
            })
        );
        assert!(data["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_object));
    }

    #[test]
    fn module_frames_decode() {
        let data = mp(&json!({"text": "hi", "n": [1, 2.5, null]}));
        let sender = Sender {
            user: "alice",
            conn: "c-1",
        };
        for from in [None, Some(sender)] {
            let frame = encode_msg_frame(
                "chat:lobby",
                "message",
                &data,
                42,
                "ep",
                1_700_000_000_000,
                from,
            );
            assert_eq!(
                decode_server_frame(&frame),
                Ok(ServerFrame::Msg {
                    room: "chat:lobby".into(),
                    ev: "message".into(),
                    data: json!({"text": "hi", "n": [1, 2.5, null]}),
                    seq: 42,
                    epoch: "ep".into(),
                    ts: 1_700_000_000_000,
                    from: from.map(|s| (s.user.to_owned(), s.conn.to_owned())),
                })
            );
        }
        // A broadcast: room `*`, seq 0, empty epoch.
        let frame = encode_msg_frame("*", "notice", &[0xa1, b'x'], 0, "", 5, None);
        assert!(matches!(
            decode_server_frame(&frame),
            Ok(ServerFrame::Msg { seq: 0, ref room, .. }) if room == "*"
        ));
        for action in [PresenceAction::Join, PresenceAction::Leave] {
            let frame = encode_presence_frame("chat:lobby", "bob", action);
            assert_eq!(
                decode_server_frame(&frame),
                Ok(ServerFrame::Presence {
                    room: "chat:lobby".into(),
                    user: "bob".into(),
                    action: action.as_str().into()
                })
            );
        }
    }

    #[test]
    fn server_decoder_refuses_bad_frames() {
        let cases: Vec<(Value, Option<i64>, &str)> = vec![
            (json!({"t": "hello"}), None, "unknown frame type"),
            (json!({"t": "ack", "data": {}}), None, "missing field `id`"),
            (
                json!({"t": "ack", "id": 3}),
                Some(3),
                "missing field `data`",
            ),
            (
                json!({"t": "err", "id": 3, "code": "internal"}),
                Some(3),
                "missing field `msg`",
            ),
            (
                json!({"t": "err", "id": "x", "code": "internal", "msg": ""}),
                None,
                "field `id` must be an integer",
            ),
            (
                json!({"t": "welcome", "conn": "c", "user": "u", "node": "n", "ping_ms": -1, "exp": 1}),
                None,
                "field `ping_ms`",
            ),
            (
                json!({"t": "msg", "room": "a:b", "ev": "e", "data": 1, "seq": 1, "epoch": "e", "ts": 1, "from": "alice"}),
                None,
                "field `from` must be a map",
            ),
            (
                json!({"t": "msg", "room": "a:b", "ev": "e", "seq": 1, "epoch": "e", "ts": 1}),
                None,
                "missing field `data`",
            ),
            (json!({"t": "expiring"}), None, "missing field `in_ms`"),
            (json!([1]), None, "not a MessagePack map"),
        ];
        for (value, id, reason) in cases {
            let e = decode_server_frame(&mp(&value)).unwrap_err();
            assert_eq!(e.id, id, "{value}");
            assert!(e.reason.contains(reason), "{value}: {e:?}");
        }
        // Unknown keys are ignored, nil optionals are absent.
        let bytes = mp(
            &json!({"t": "err", "code": "internal", "msg": "m", "id": null, "retry_ms": null, "x": 1}),
        );
        assert_eq!(
            decode_server_frame(&bytes),
            Ok(ServerFrame::Err {
                id: None,
                code: "internal".into(),
                msg: "m".into(),
                retry_ms: None
            })
        );
    }

    #[test]
    fn frame_error_displays_its_reason() {
        let e = err_of(&[0x01]);
        assert_eq!(e.to_string(), "frame is not a MessagePack map");
    }

    /// The worked example of docs/PROTOCOL.md, byte for byte.
    #[test]
    fn protocol_doc_example() {
        let join = encode_client_frame(&ClientFrame::Join {
            id: 1,
            room: "chat:lobby".into(),
            since: None,
        });
        assert_eq!(
            hex(&join),
            "83 a1 74 a4 6a 6f 69 6e a2 69 64 01 a4 72 6f 6f 6d \
             aa 63 68 61 74 3a 6c 6f 62 62 79"
        );
        assert_eq!(join.len(), 28);
        let ack = encode_ack_raw(1, &ack_join("chat:lobby", 42, "5f0c3a9e12d47b86", false));
        assert_eq!(
            hex(&ack),
            "83 a1 74 a3 61 63 6b a2 69 64 01 a4 64 61 74 61 \
             84 a4 72 6f 6f 6d aa 63 68 61 74 3a 6c 6f 62 62 79 \
             a3 73 65 71 2a \
             a5 65 70 6f 63 68 b0 35 66 30 63 33 61 39 65 31 32 64 34 37 62 38 36 \
             a9 72 65 63 6f 76 65 72 65 64 c2"
        );
        assert_eq!(ack.len(), 72);
        let since = encode_client_frame(&ClientFrame::Join {
            id: 2,
            room: "chat:lobby".into(),
            since: Some(Since {
                seq: 42,
                epoch: "5f0c3a9e12d47b86".into(),
            }),
        });
        assert_eq!(
            hex(&since),
            "84 a1 74 a4 6a 6f 69 6e a2 69 64 02 a4 72 6f 6f 6d \
             aa 63 68 61 74 3a 6c 6f 62 62 79 \
             a5 73 69 6e 63 65 82 a3 73 65 71 2a \
             a5 65 70 6f 63 68 b0 35 66 30 63 33 61 39 65 31 32 64 34 37 62 38 36"
        );
        let pubf = encode_client_frame(&ClientFrame::Pub {
            id: 3,
            room: "chat:lobby".into(),
            ev: "message".into(),
            data: mp(&json!({"text": "hi"})),
            others: false,
        });
        assert_eq!(
            hex(&pubf),
            "85 a1 74 a3 70 75 62 a2 69 64 03 a4 72 6f 6f 6d \
             aa 63 68 61 74 3a 6c 6f 62 62 79 a2 65 76 a7 6d 65 73 73 61 67 65 \
             a4 64 61 74 61 81 a4 74 65 78 74 a2 68 69"
        );
    }
}
