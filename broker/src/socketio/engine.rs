//! Engine.IO v4 packets: the transport layer under Socket.IO.
//!
//! A packet is a one-digit type and optional data: `open` (0, the handshake
//! JSON), `close` (1), `ping` (2), `pong` (3), `message` (4, text or binary),
//! `upgrade` (5), `noop` (6). On WebSocket each packet is one frame: a text
//! frame holds `<type>[<data>]` (`4hello`, `2probe`), a binary frame is a
//! binary `message` as raw bytes with no type prefix. On HTTP long-polling a
//! request or response body is a *payload*: packets joined by the record
//! separator `\x1e`, a binary message written as `b` + base64.
//!
//! The decoders take the caller's size limits and are as strict as the
//! specification: only `ping`/`pong` carry data (`probe`, during the
//! upgrade), `close`/`upgrade`/`noop` carry none.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The record separator joining the packets of a long-polling payload.
pub const SEPARATOR: char = '\x1e';

/// The only Engine.IO protocol version accepted (`EIO=4`).
pub const PROTOCOL: &str = "4";

/// Why Engine.IO input was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// An empty packet (no type character).
    #[error("empty packet")]
    Empty,
    /// A type character other than `0`..`6` (or `b` in a payload).
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// Data after a type that carries none (`close`, `upgrade`, `noop`), or
    /// ping/pong data other than `probe`.
    #[error("unexpected data after packet type {0}")]
    UnexpectedData(u8),
    /// An `open` packet whose JSON is not the handshake object.
    #[error("invalid handshake: {0}")]
    BadHandshake(String),
    /// `b` + text that is not standard base64.
    #[error("invalid base64")]
    BadBase64,
    /// A packet or payload longer than the caller's limit.
    #[error("longer than {0} bytes")]
    TooLarge(usize),
    /// A payload with more packets than the caller's limit.
    #[error("more than {0} packets in one payload")]
    TooManyPackets(usize),
    /// A payload body that is not UTF-8.
    #[error("payload is not UTF-8")]
    NotUtf8,
    /// A text packet to be written into a payload that holds the separator.
    #[error("text holds the record separator")]
    SeparatorInText,
    /// An `EIO` query parameter other than `4` (or none).
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    /// A `transport` query parameter other than `polling` / `websocket`.
    #[error("unknown transport")]
    UnknownTransport,
}

/// The `transport` query parameter of an Engine.IO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `polling`: HTTP long-polling.
    Polling,
    /// `websocket`.
    WebSocket,
}

impl Transport {
    /// Reads the `transport` query parameter.
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownTransport`] when absent or unknown.
    pub fn parse(value: Option<&str>) -> Result<Transport, EngineError> {
        match value {
            Some("polling") => Ok(Transport::Polling),
            Some("websocket") => Ok(Transport::WebSocket),
            _ => Err(EngineError::UnknownTransport),
        }
    }
}

/// Checks the `EIO` query parameter: exactly `4`.
///
/// # Errors
///
/// [`EngineError::UnsupportedVersion`] when absent or anything else (`3`,
/// `abc`).
pub fn check_version(eio: Option<&str>) -> Result<(), EngineError> {
    if eio == Some(PROTOCOL) {
        Ok(())
    } else {
        Err(EngineError::UnsupportedVersion)
    }
}

/// The JSON payload of the `open` packet (the handshake).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Handshake {
    /// The session id, sent back by the client as `sid` on every request.
    pub sid: String,
    /// Transports the client may upgrade to (`["websocket"]` on polling,
    /// `[]` on WebSocket).
    pub upgrades: Vec<String>,
    /// Milliseconds between the server's pings.
    pub ping_interval: u64,
    /// Milliseconds the server waits for a pong.
    pub ping_timeout: u64,
    /// Largest payload (bytes) the server accepts in one polling request.
    pub max_payload: u64,
}

/// The data of a `message` packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// A text message (a text WebSocket frame, or text in a payload).
    Text(&'a str),
    /// A binary message (a binary WebSocket frame, or `b` + base64 in a
    /// payload, decoded).
    Binary(Cow<'a, [u8]>),
}

/// One Engine.IO packet. Decoded packets borrow the input (a base64 binary
/// message is decoded into an owned buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    /// `0` + handshake JSON: the server's first packet.
    Open(Handshake),
    /// `1`: close the session.
    Close,
    /// `2`, or `2probe` (the client's probe of a new WebSocket).
    Ping {
        /// Carries `probe`.
        probe: bool,
    },
    /// `3`, or `3probe` (the server's answer to the probe).
    Pong {
        /// Carries `probe`.
        probe: bool,
    },
    /// `4` + text, or a binary message.
    Message(Data<'a>),
    /// `5`: the client switches to the probed WebSocket.
    Upgrade,
    /// `6`: the server's answer that ends a pending poll during an upgrade.
    Noop,
}

impl EnginePacket<'_> {
    /// The packet type's digit.
    pub fn type_digit(&self) -> u8 {
        match self {
            EnginePacket::Open(_) => b'0',
            EnginePacket::Close => b'1',
            EnginePacket::Ping { .. } => b'2',
            EnginePacket::Pong { .. } => b'3',
            EnginePacket::Message(_) => b'4',
            EnginePacket::Upgrade => b'5',
            EnginePacket::Noop => b'6',
        }
    }
}

/// One WebSocket message as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// Decodes a text packet: a WebSocket text frame, or one packet of a
/// polling payload (where `b` + base64 is a binary message).
///
/// # Errors
///
/// [`EngineError::TooLarge`] past `max_len` bytes, [`EngineError::Empty`],
/// [`EngineError::UnknownType`], [`EngineError::UnexpectedData`],
/// [`EngineError::BadHandshake`], [`EngineError::BadBase64`].
pub fn decode_text(text: &str, max_len: usize) -> Result<EnginePacket<'_>, EngineError> {
    if text.len() > max_len {
        return Err(EngineError::TooLarge(max_len));
    }
    let mut chars = text.chars();
    let kind = chars.next().ok_or(EngineError::Empty)?;
    let data = chars.as_str();
    let none = |packet: EnginePacket<'static>| {
        if data.is_empty() {
            Ok(packet)
        } else {
            Err(EngineError::UnexpectedData(packet.type_digit() - b'0'))
        }
    };
    let probe = |digit: u8| match data {
        "" => Ok(false),
        "probe" => Ok(true),
        _ => Err(EngineError::UnexpectedData(digit)),
    };
    match kind {
        '0' => serde_json::from_str(data)
            .map(EnginePacket::Open)
            .map_err(|e| EngineError::BadHandshake(e.to_string())),
        '1' => none(EnginePacket::Close),
        '2' => Ok(EnginePacket::Ping { probe: probe(2)? }),
        '3' => Ok(EnginePacket::Pong { probe: probe(3)? }),
        '4' => Ok(EnginePacket::Message(Data::Text(data))),
        '5' => none(EnginePacket::Upgrade),
        '6' => none(EnginePacket::Noop),
        'b' => Ok(EnginePacket::Message(Data::Binary(Cow::Owned(
            base64_decode(data).ok_or(EngineError::BadBase64)?,
        )))),
        other => Err(EngineError::UnknownType(other)),
    }
}

/// Decodes a WebSocket binary frame: always a binary `message`, the bytes as
/// they are.
///
/// # Errors
///
/// [`EngineError::TooLarge`] past `max_len` bytes.
pub fn decode_binary(bytes: &[u8], max_len: usize) -> Result<EnginePacket<'_>, EngineError> {
    if bytes.len() > max_len {
        return Err(EngineError::TooLarge(max_len));
    }
    Ok(EnginePacket::Message(Data::Binary(Cow::Borrowed(bytes))))
}

/// Decodes an HTTP long-polling request body: packets separated by `\x1e`.
/// The whole body is at most `max_payload` bytes (the handshake's
/// `maxPayload`) and holds at most `max_packets` packets; an empty body is
/// refused.
///
/// # Errors
///
/// [`EngineError::TooLarge`], [`EngineError::NotUtf8`],
/// [`EngineError::TooManyPackets`], and those of [`decode_text`] for the
/// first bad packet (the whole body is refused, as the reference server
/// does).
pub fn decode_payload(
    body: &[u8],
    max_payload: usize,
    max_packets: usize,
) -> Result<Vec<EnginePacket<'_>>, EngineError> {
    if body.len() > max_payload {
        return Err(EngineError::TooLarge(max_payload));
    }
    let text = std::str::from_utf8(body).map_err(|_| EngineError::NotUtf8)?;
    let mut packets = Vec::new();
    for part in text.split(SEPARATOR) {
        if packets.len() == max_packets {
            return Err(EngineError::TooManyPackets(max_packets));
        }
        packets.push(decode_text(part, max_payload)?);
    }
    Ok(packets)
}

/// The text of a packet: `<type>[<data>]`, with a binary message as `b` +
/// base64 (its form in a polling payload).
pub fn encode_text(packet: &EnginePacket<'_>) -> String {
    let mut out = String::new();
    push_text(&mut out, packet);
    out
}

fn push_text(out: &mut String, packet: &EnginePacket<'_>) {
    match packet {
        EnginePacket::Message(Data::Binary(bytes)) => {
            out.push('b');
            base64_encode(out, bytes);
        }
        _ => {
            out.push(char::from(packet.type_digit()));
            match packet {
                EnginePacket::Open(handshake) => out.push_str(&encode_handshake(handshake)),
                EnginePacket::Ping { probe: true } | EnginePacket::Pong { probe: true } => {
                    out.push_str("probe");
                }
                EnginePacket::Message(Data::Text(text)) => out.push_str(text),
                _ => {}
            }
        }
    }
}

/// The handshake as the `open` packet's JSON:
/// `{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`.
pub fn encode_handshake(handshake: &Handshake) -> String {
    // A struct of strings and integers always serializes.
    serde_json::to_string(handshake).unwrap_or_default()
}

/// A packet as one WebSocket frame: a binary message as a binary frame of
/// its raw bytes, everything else as a text frame.
pub fn encode_ws(packet: &EnginePacket<'_>) -> WsFrame {
    match packet {
        EnginePacket::Message(Data::Binary(bytes)) => WsFrame::Binary(bytes.to_vec()),
        _ => WsFrame::Text(encode_text(packet)),
    }
}

/// A long-polling response body: the packets joined by `\x1e`, binary
/// messages as `b` + base64.
///
/// # Errors
///
/// [`EngineError::SeparatorInText`] when a text message holds `\x1e` (it
/// would split into two packets; Socket.IO's JSON never holds it raw).
pub fn encode_payload(packets: &[EnginePacket<'_>]) -> Result<String, EngineError> {
    let mut out = String::new();
    for (i, packet) in packets.iter().enumerate() {
        if let EnginePacket::Message(Data::Text(text)) = packet {
            if text.contains(SEPARATOR) {
                return Err(EngineError::SeparatorInText);
            }
        }
        if i > 0 {
            out.push(SEPARATOR);
        }
        push_text(&mut out, packet);
    }
    Ok(out)
}

/// Engine.IO packets already framed for WebSocket ([`WsFrame`]: a text
/// frame is one packet's text, a binary frame one binary message) as one
/// long-polling payload: joined by the separator, binary as `b` + base64.
/// Text packets from Socket.IO's JSON never hold the separator (JSON
/// escapes it); one that does is written as it is and the client refuses it.
pub fn frames_payload(frames: &[WsFrame]) -> String {
    let mut out = String::new();
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        match frame {
            WsFrame::Text(text) => out.push_str(text),
            WsFrame::Binary(bytes) => {
                out.push('b');
                base64_encode(&mut out, bytes);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Base64, the standard alphabet (RFC 4648 section 4). Encoding pads with `=`;
// decoding accepts padded or unpadded input, refuses any other character, a
// misplaced `=` and a length that no byte string has (4n + 1).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    let sextet = |n: u32, shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sextet(n, 18));
        out.push(sextet(n, 12));
        out.push(if chunk.len() > 1 { sextet(n, 6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(n, 0) } else { '=' });
    }
}

fn base64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes base64 text; `None` when it is not valid base64.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let body = match bytes {
        [rest @ .., b'=', b'='] if bytes.len() & 3 == 0 => rest,
        [rest @ .., b'='] if bytes.len() & 3 == 0 => rest,
        _ => bytes,
    };
    if body.len() & 3 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for &c in chunk {
            n = (n << 6) | base64_value(c)?;
        }
        // A chunk of k sextets holds k - 1 bytes (k = 2, 3) or 3 (k = 4).
        n <<= 6 * (4 - chunk.len() as u32);
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice([a, b, c].get(..chunk.len() - 1)?);
    }
    Some(out)
}
