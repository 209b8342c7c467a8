//! Socket.IO v5 packets and the default parser (`socket.io-parser`).
//!
//! A packet is one text message:
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]`, the
//! namespace written only when it is not `/`. A packet whose payload holds
//! binary values is a BINARY_EVENT (5) or BINARY_ACK (6): each buffer is
//! replaced by `{"_placeholder":true,"num":n}` and sent as its own binary
//! message right after the text, in order. The decoder gives such a packet
//! back as an EVENT or ACK with [`SioValue::Binary`] in place once all its
//! buffers arrived ([`Reassembly`]).
//!
//! Validation follows the reference decoder's `isPayloadValid`, a little
//! stricter where noted on [`PacketError`].

use std::cell::RefCell;

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use thiserror::Error;

use super::value::{parse_json, JsonError, Object, Ser, SioValue};
use crate::msgpack::WireError;

/// Event names a client may not emit: they mean something to the Socket.IO
/// libraries themselves.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;

/// The main namespace.
pub const MAIN_NAMESPACE: &str = "/";

/// Packet types on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// 0: join a namespace (client), or its acceptance (server).
    Connect = 0,
    /// 1: leave a namespace.
    Disconnect = 1,
    /// 2: an event.
    Event = 2,
    /// 3: the acknowledgement of an event.
    Ack = 3,
    /// 4: a refused CONNECT.
    ConnectError = 4,
    /// 5: an event with binary attachments (default parser only).
    BinaryEvent = 5,
    /// 6: an acknowledgement with binary attachments (default parser only).
    BinaryAck = 6,
}

impl PacketType {
    /// The type of a number, if it is one.
    pub fn from_number(n: u64) -> Option<PacketType> {
        Some(match n {
            0 => PacketType::Connect,
            1 => PacketType::Disconnect,
            2 => PacketType::Event,
            3 => PacketType::Ack,
            4 => PacketType::ConnectError,
            5 => PacketType::BinaryEvent,
            6 => PacketType::BinaryAck,
            _ => return None,
        })
    }
}

/// Why a Socket.IO packet was refused. Any of these ends the connection, as
/// the reference server does on a decoding error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    /// An empty message.
    #[error("empty packet")]
    Empty,
    /// A type other than 0..6 (0..4 with the msgpack parser).
    #[error("unknown packet type")]
    UnknownType,
    /// The attachment count of a BINARY_* packet is missing, not digits, or
    /// not followed by `-`; or a placeholder that does not match the
    /// attachments (a `num` out of range, used twice, a buffer no
    /// placeholder uses: the reference only checks the range).
    #[error("illegal attachments")]
    IllegalAttachments,
    /// More attachments than the limit.
    #[error("too many attachments (limit {0})")]
    TooManyAttachments(usize),
    /// Attachments larger in total than the limit.
    #[error("attachments larger than {0} bytes")]
    AttachmentsTooLarge(usize),
    /// A namespace that does not start with `/`, is longer than
    /// [`MAX_NAMESPACE_LEN`] or holds a control character or `,`.
    #[error("invalid namespace")]
    InvalidNamespace,
    /// An ack id that overflows u64, is missing on an ACK, or is present on
    /// a CONNECT, DISCONNECT or CONNECT_ERROR (where the reference ignores it).
    #[error("invalid ack id")]
    InvalidAckId,
    /// A payload that is not JSON (or MessagePack) or not the shape the type
    /// needs (see [`Packet`]); the reason says which.
    #[error("invalid payload: {0}")]
    InvalidPayload(&'static str),
    /// A payload nested deeper than [`crate::msgpack::MAX_DEPTH`].
    #[error("payload nested too deep")]
    TooDeep,
    /// A text message while a binary packet still waits for buffers.
    #[error("text message while reconstructing a binary packet")]
    UnexpectedText,
    /// A binary message when no binary packet waits for one.
    #[error("binary message when no attachment is expected")]
    UnexpectedBinary,
    /// MessagePack that is not well-formed (msgpack parser).
    #[error("invalid MessagePack: {0}")]
    Msgpack(WireError),
}

/// Bounds on what a client may make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most binary attachments of one packet (the reference's default
    /// `maxAttachments` is 10).
    pub max_attachments: usize,
    /// Most bytes of all the attachments of one packet together.
    pub max_attachment_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_attachments: 10,
            max_attachment_bytes: 1_000_000,
        }
    }
}

/// A decoded Socket.IO packet: its namespace and what it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The namespace, `/` by default.
    pub nsp: String,
    /// Type and payload.
    pub body: Body,
}

/// What a packet carries; BINARY_EVENT and BINARY_ACK are an [`Body::Event`]
/// and an [`Body::Ack`] with buffers in their arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// CONNECT: from a client, the `auth` object if any; from the server,
    /// `{sid}`.
    Connect(Option<Object>),
    /// DISCONNECT: no payload.
    Disconnect,
    /// EVENT: a payload array whose first element is the event name (a
    /// string, not one of [`RESERVED_EVENTS`]).
    Event {
        /// The ack id, when the sender waits for an acknowledgement.
        id: Option<u64>,
        /// The event name.
        name: String,
        /// The arguments after the name.
        args: Vec<SioValue>,
    },
    /// ACK: the acknowledged id and a payload array (possibly empty).
    Ack {
        /// The id of the acknowledged event.
        id: u64,
        /// The acknowledgement's arguments.
        args: Vec<SioValue>,
    },
    /// CONNECT_ERROR: a string or an object (`{message, data?}`).
    ConnectError(SioValue),
}

impl Packet {
    /// A packet on the main namespace.
    pub fn main(body: Body) -> Packet {
        Packet {
            nsp: MAIN_NAMESPACE.to_owned(),
            body,
        }
    }

    /// The type this packet has on the wire with the default parser
    /// (BINARY_* when its arguments hold buffers).
    pub fn wire_type(&self) -> PacketType {
        match &self.body {
            Body::Connect(_) => PacketType::Connect,
            Body::Disconnect => PacketType::Disconnect,
            Body::Event { args, .. } if args.iter().any(SioValue::has_binary) => {
                PacketType::BinaryEvent
            }
            Body::Event { .. } => PacketType::Event,
            Body::Ack { args, .. } if args.iter().any(SioValue::has_binary) => {
                PacketType::BinaryAck
            }
            Body::Ack { .. } => PacketType::Ack,
            Body::ConnectError(_) => PacketType::ConnectError,
        }
    }
}

/// Checks a namespace (see [`PacketError::InvalidNamespace`]).
///
/// # Errors
///
/// [`PacketError::InvalidNamespace`].
pub fn check_namespace(nsp: &str) -> Result<(), PacketError> {
    let ok = nsp.starts_with('/')
        && nsp.len() <= MAX_NAMESPACE_LEN
        && !nsp.chars().any(|c| c == ',' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(PacketError::InvalidNamespace)
    }
}

/// Builds a packet from its decoded parts, checking them as the reference
/// parsers do (shared by both parsers; `kind` is EVENT or ACK for the
/// BINARY_* types, whose buffers are already in place).
pub(crate) fn build(
    kind: PacketType,
    nsp: String,
    id: Option<u64>,
    data: Option<SioValue>,
) -> Result<Packet, PacketError> {
    check_namespace(&nsp)?;
    let no_id = |body| match id {
        None => Ok(body),
        Some(_) => Err(PacketError::InvalidAckId),
    };
    let body = match kind {
        PacketType::Connect => no_id(Body::Connect(match data {
            None => None,
            Some(SioValue::Object(auth)) => Some(auth),
            Some(_) => return Err(PacketError::InvalidPayload("CONNECT needs an object")),
        }))?,
        PacketType::Disconnect => match data {
            None => no_id(Body::Disconnect)?,
            Some(_) => return Err(PacketError::InvalidPayload("DISCONNECT has no payload")),
        },
        PacketType::ConnectError => match data {
            Some(v @ (SioValue::String(_) | SioValue::Object(_))) => no_id(Body::ConnectError(v))?,
            _ => {
                return Err(PacketError::InvalidPayload(
                    "CONNECT_ERROR needs a string or an object",
                ))
            }
        },
        PacketType::Event | PacketType::BinaryEvent => {
            let Some(SioValue::Array(mut items)) = data else {
                return Err(PacketError::InvalidPayload("EVENT needs an array"));
            };
            if items.is_empty() {
                return Err(PacketError::InvalidPayload("EVENT needs an event name"));
            }
            let SioValue::String(name) = items.remove(0) else {
                return Err(PacketError::InvalidPayload("event name must be a string"));
            };
            if RESERVED_EVENTS.contains(&name.as_str()) {
                return Err(PacketError::InvalidPayload("reserved event name"));
            }
            Body::Event {
                id,
                name,
                args: items,
            }
        }
        PacketType::Ack | PacketType::BinaryAck => {
            let Some(SioValue::Array(args)) = data else {
                return Err(PacketError::InvalidPayload("ACK needs an array"));
            };
            let id = id.ok_or(PacketError::InvalidAckId)?;
            Body::Ack { id, args }
        }
    };
    Ok(Packet { nsp, body })
}

/// What a text message decoded to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A whole packet.
    Packet(Packet),
    /// A BINARY_* header: its buffers follow as binary messages.
    Pending(Reassembly),
}

/// Digits at the start of `s`: their value (`None` on u64 overflow) and
/// count.
fn digits(s: &[u8]) -> (Option<u64>, usize) {
    let len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let value = s.get(..len).and_then(|d| {
        d.iter().try_fold(0u64, |acc, &b| {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
    });
    (value, len)
}

/// Decodes one text message of the default parser.
///
/// # Errors
///
/// [`PacketError::Empty`], [`PacketError::UnknownType`],
/// [`PacketError::IllegalAttachments`], [`PacketError::TooManyAttachments`],
/// [`PacketError::InvalidNamespace`], [`PacketError::InvalidAckId`],
/// [`PacketError::InvalidPayload`], [`PacketError::TooDeep`].
pub fn decode_text(text: &str, limits: &Limits) -> Result<Decoded, PacketError> {
    let bytes = text.as_bytes();
    let first = *bytes.first().ok_or(PacketError::Empty)?;
    let kind = first
        .checked_sub(b'0')
        .and_then(|n| PacketType::from_number(u64::from(n)))
        .ok_or(PacketError::UnknownType)?;
    // Every boundary below follows an ASCII byte, so slicing `text` there
    // stays on a character boundary.
    let mut i = 1;
    let binary = matches!(kind, PacketType::BinaryEvent | PacketType::BinaryAck);
    let mut attachments = 0usize;
    if binary {
        let rest = bytes.get(i..).unwrap_or_default();
        let (count, len) = digits(rest);
        if len == 0 || rest.get(len) != Some(&b'-') {
            return Err(PacketError::IllegalAttachments);
        }
        attachments = count
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= limits.max_attachments)
            .ok_or(PacketError::TooManyAttachments(limits.max_attachments))?;
        i += len + 1;
    }
    let nsp = if bytes.get(i) == Some(&b'/') {
        let end = bytes
            .iter()
            .skip(i)
            .position(|&b| b == b',')
            .map_or(bytes.len(), |p| i + p);
        let nsp = text.get(i..end).unwrap_or_default().to_owned();
        i = if end < bytes.len() { end + 1 } else { end };
        nsp
    } else {
        MAIN_NAMESPACE.to_owned()
    };
    let rest = bytes.get(i..).unwrap_or_default();
    let (id, len) = digits(rest);
    let id = match (len, id) {
        (0, _) => None,
        (_, Some(id)) => Some(id),
        (_, None) => return Err(PacketError::InvalidAckId),
    };
    i += len;
    let payload = text.get(i..).unwrap_or_default();
    let data = if payload.is_empty() {
        None
    } else {
        Some(parse_json(payload).map_err(|e| match e {
            JsonError::TooDeep => PacketError::TooDeep,
            JsonError::Invalid => PacketError::InvalidPayload("not JSON"),
        })?)
    };
    if !binary {
        return build(kind, nsp, id, data).map(Decoded::Packet);
    }
    // Check the header's shape now, before any buffer is held for it.
    let header = build(kind, nsp, id, data)?;
    let mut used = vec![false; attachments];
    match &header.body {
        Body::Event { args, .. } | Body::Ack { args, .. } => {
            for arg in args {
                mark_placeholders(arg, &mut used)?;
            }
        }
        _ => return Err(PacketError::IllegalAttachments),
    }
    if used.iter().any(|u| !u) {
        return Err(PacketError::IllegalAttachments);
    }
    let reassembly = Reassembly {
        header,
        expected: attachments,
        buffers: Vec::with_capacity(attachments),
        bytes: 0,
        max_bytes: limits.max_attachment_bytes,
    };
    if attachments == 0 {
        return Ok(Decoded::Packet(reassembly.header));
    }
    Ok(Decoded::Pending(reassembly))
}

/// The attachment number of a placeholder object, `Ok(None)` for any other
/// value. An object with `_placeholder: true` must be exactly
/// `{"_placeholder": true, "num": n}`.
fn placeholder(value: &SioValue) -> Result<Option<usize>, PacketError> {
    let SioValue::Object(pairs) = value else {
        return Ok(None);
    };
    if value.get("_placeholder") != Some(&SioValue::Bool(true)) {
        return Ok(None);
    }
    match (pairs.len(), value.get("num")) {
        (2, Some(SioValue::Number(n))) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or(PacketError::IllegalAttachments),
        _ => Err(PacketError::IllegalAttachments),
    }
}

/// Marks the attachments `value`'s placeholders use; each exactly once.
/// Recursion is bounded by the depth the JSON parser enforced.
fn mark_placeholders(value: &SioValue, used: &mut [bool]) -> Result<(), PacketError> {
    if let Some(num) = placeholder(value)? {
        let slot = used.get_mut(num).ok_or(PacketError::IllegalAttachments)?;
        if *slot {
            return Err(PacketError::IllegalAttachments);
        }
        *slot = true;
        return Ok(());
    }
    match value {
        SioValue::Array(items) => items.iter().try_for_each(|v| mark_placeholders(v, used)),
        SioValue::Object(pairs) => pairs
            .iter()
            .try_for_each(|(_, v)| mark_placeholders(v, used)),
        _ => Ok(()),
    }
}

/// Puts the buffers in place of the placeholders (checked by
/// [`mark_placeholders`]: each number in range, used once).
fn fill_placeholders(value: &mut SioValue, buffers: &mut [Option<Vec<u8>>]) {
    if let Ok(Some(num)) = placeholder(value) {
        if let Some(bytes) = buffers.get_mut(num).and_then(Option::take) {
            *value = SioValue::Binary(bytes);
        }
        return;
    }
    match value {
        SioValue::Array(items) => items.iter_mut().for_each(|v| fill_placeholders(v, buffers)),
        SioValue::Object(pairs) => pairs
            .iter_mut()
            .for_each(|(_, v)| fill_placeholders(v, buffers)),
        _ => {}
    }
}

/// A BINARY_EVENT or BINARY_ACK waiting for its buffers: it takes exactly
/// the announced number of binary messages, within the byte limit, then
/// gives the packet with every placeholder replaced by its buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reassembly {
    header: Packet,
    expected: usize,
    buffers: Vec<Vec<u8>>,
    bytes: usize,
    max_bytes: usize,
}

impl Reassembly {
    /// Buffers still expected.
    pub fn remaining(&self) -> usize {
        self.expected - self.buffers.len()
    }

    /// Takes the next binary message. Returns the packet after the last one.
    ///
    /// # Errors
    ///
    /// [`PacketError::AttachmentsTooLarge`] past the byte limit,
    /// [`PacketError::UnexpectedBinary`] once complete.
    pub fn push(&mut self, buffer: Vec<u8>) -> Result<Option<Packet>, PacketError> {
        if self.remaining() == 0 {
            return Err(PacketError::UnexpectedBinary);
        }
        self.bytes = self.bytes.saturating_add(buffer.len());
        if self.bytes > self.max_bytes {
            return Err(PacketError::AttachmentsTooLarge(self.max_bytes));
        }
        self.buffers.push(buffer);
        if self.remaining() > 0 {
            return Ok(None);
        }
        let mut buffers: Vec<Option<Vec<u8>>> = std::mem::take(&mut self.buffers)
            .into_iter()
            .map(Some)
            .collect();
        let mut packet = self.header.clone();
        if let Body::Event { args, .. } | Body::Ack { args, .. } = &mut packet.body {
            args.iter_mut()
                .for_each(|v| fill_placeholders(v, &mut buffers));
        }
        self.expected = 0;
        Ok(Some(packet))
    }
}

/// A packet encoded for the default parser: the text message, then each
/// attachment as a binary message, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded<'a> {
    /// The text message (without the Engine.IO `4`).
    pub text: String,
    /// The buffers, borrowed from the packet.
    pub attachments: Vec<&'a [u8]>,
}

/// The payload array of an EVENT (`[name, ...args]`) or ACK (`[...args]`).
struct Args<'a, 'b> {
    name: Option<&'a str>,
    args: &'a [SioValue],
    buffers: &'b RefCell<Vec<&'a [u8]>>,
}

impl Serialize for Args<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.args.len() + usize::from(self.name.is_some())))?;
        if let Some(name) = self.name {
            seq.serialize_element(name)?;
        }
        for value in self.args {
            seq.serialize_element(&Ser {
                value,
                buffers: Some(self.buffers),
            })?;
        }
        seq.end()
    }
}

/// Encodes a packet for the default parser. Buffers in an EVENT or ACK
/// become placeholders and attachments (type 5 or 6); a buffer in a CONNECT
/// or CONNECT_ERROR payload, where the protocol has no attachments, is
/// written as the array of its byte numbers.
pub fn encode(packet: &Packet) -> Encoded<'_> {
    let buffers = RefCell::new(Vec::new());
    let (id, json) = match &packet.body {
        Body::Connect(None) | Body::Disconnect => (None, String::new()),
        Body::Connect(Some(auth)) => (None, object_text(auth)),
        Body::ConnectError(data) => (None, super::value::json_text(data)),
        Body::Event { id, name, args } => (
            *id,
            args_text(&Args {
                name: Some(name),
                args,
                buffers: &buffers,
            }),
        ),
        Body::Ack { id, args } => (
            Some(*id),
            args_text(&Args {
                name: None,
                args,
                buffers: &buffers,
            }),
        ),
    };
    let attachments = buffers.into_inner();
    let kind = match (&packet.body, attachments.is_empty()) {
        (Body::Connect(_), _) => PacketType::Connect,
        (Body::Disconnect, _) => PacketType::Disconnect,
        (Body::ConnectError(_), _) => PacketType::ConnectError,
        (Body::Event { .. }, true) => PacketType::Event,
        (Body::Event { .. }, false) => PacketType::BinaryEvent,
        (Body::Ack { .. }, true) => PacketType::Ack,
        (Body::Ack { .. }, false) => PacketType::BinaryAck,
    } as u8;
    let mut text = String::with_capacity(json.len() + packet.nsp.len() + 24);
    text.push(char::from(b'0' + kind));
    if !attachments.is_empty() {
        text.push_str(&attachments.len().to_string());
        text.push('-');
    }
    if packet.nsp != MAIN_NAMESPACE {
        text.push_str(&packet.nsp);
        text.push(',');
    }
    if let Some(id) = id {
        text.push_str(&id.to_string());
    }
    text.push_str(&json);
    Encoded { text, attachments }
}

fn object_text(pairs: &Object) -> String {
    // Cloning keeps one serializer; CONNECT payloads are small.
    super::value::json_text(&SioValue::Object(pairs.clone()))
}

fn args_text(args: &Args<'_, '_>) -> String {
    // Strings, finite numbers and containers always serialize.
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    if args.serialize(&mut ser).is_err() {
        return String::from("[]");
    }
    String::from_utf8(out).unwrap_or_default()
}
