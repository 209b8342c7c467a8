//! Socket.IO compatibility, the pure part (no I/O, no async): what
//! unmodified `socket.io-client` 4.x apps send and expect at `/socket.io/`
//! (described in `docs/SOCKETIO.md`, "Wire formats").
//!
//! - [`engine`]: Engine.IO v4 packets, on WebSocket frames and in HTTP
//!   long-polling payloads, and the `open` handshake.
//! - [`packet`]: Socket.IO v5 packets ([`Packet`]) and the default parser
//!   (text, with binary attachments reassembled by [`Reassembly`]).
//! - [`msgpack_parser`]: the `socket.io-msgpack-parser` format (one
//!   MessagePack map per binary message).
//! - [`SioValue`]: an argument value, JSON plus binary buffers.
//! - [`bridge`]: Socket.IO events to protocol v1 requests, and protocol v1
//!   server frames to Socket.IO packets.
//!
//! A connection's parser is told from its first Socket.IO packet
//! ([`ParserKind::detect`]); a [`Decoder`] then reads every Engine.IO
//! `message` of that connection. Every decoder takes input from anyone on
//! the internet: it never panics, bounds the depth of values
//! ([`crate::msgpack::MAX_DEPTH`]) before anything recurses on them, and
//! sizes nothing by an announced length.

pub mod bridge;
pub mod engine;
pub mod msgpack_parser;
pub mod packet;
mod value;

pub use engine::{Data, EngineError, EnginePacket, Handshake, Transport, WsFrame};
pub use packet::{Body, Decoded, Encoded, Limits, Packet, PacketError, PacketType, Reassembly};
pub use value::{Object, SioValue};

/// Which Socket.IO parser a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserKind {
    /// `socket.io-parser`, the default: text packets, binary attachments.
    Default,
    /// `socket.io-msgpack-parser`: one binary MessagePack map per packet.
    Msgpack,
}

impl ParserKind {
    /// Tells the parser from the client's first Engine.IO `message` (its
    /// CONNECT): a text message starting with `0` is the default parser; a
    /// binary message starting with a MessagePack map marker (fixmap,
    /// map 16, map 32) is the msgpack parser. Anything else is neither
    /// (`None`: close the connection). The rule holds on both transports:
    /// on long-polling a binary message arrives as `b` + base64, which
    /// [`engine::decode_text`] turns back into bytes.
    pub fn detect(first: &Data<'_>) -> Option<ParserKind> {
        match first {
            Data::Text(text) if text.starts_with('0') => Some(ParserKind::Default),
            Data::Binary(bytes) => match bytes.first() {
                Some(0x80..=0x8f | 0xde | 0xdf) => Some(ParserKind::Msgpack),
                _ => None,
            },
            Data::Text(_) => None,
        }
    }
}

/// The per-connection decoder: Engine.IO `message` data in, Socket.IO
/// packets out, with the reassembly state of the default parser.
#[derive(Debug, Clone)]
pub struct Decoder {
    kind: ParserKind,
    limits: Limits,
    pending: Option<Reassembly>,
}

impl Decoder {
    /// A decoder for a connection using `kind`.
    pub fn new(kind: ParserKind, limits: Limits) -> Decoder {
        Decoder {
            kind,
            limits,
            pending: None,
        }
    }

    /// The connection's parser.
    pub fn kind(&self) -> ParserKind {
        self.kind
    }

    /// True while a binary packet waits for attachments.
    pub fn is_reassembling(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes one `message`'s data. Returns a packet when one is complete
    /// (`None` while a BINARY_* packet waits for buffers).
    ///
    /// # Errors
    ///
    /// The decoders' errors, [`PacketError::UnexpectedText`] for text in the
    /// middle of a binary packet or with the msgpack parser, and
    /// [`PacketError::UnexpectedBinary`] for a buffer nobody waits for. The
    /// connection should then be closed.
    pub fn feed(&mut self, data: Data<'_>) -> Result<Option<Packet>, PacketError> {
        match (self.kind, data) {
            (ParserKind::Msgpack, Data::Binary(bytes)) => msgpack_parser::decode(&bytes).map(Some),
            (ParserKind::Msgpack, Data::Text(_)) => Err(PacketError::UnexpectedText),
            (ParserKind::Default, Data::Text(text)) => {
                if self.pending.is_some() {
                    return Err(PacketError::UnexpectedText);
                }
                match packet::decode_text(text, &self.limits)? {
                    Decoded::Packet(packet) => Ok(Some(packet)),
                    Decoded::Pending(reassembly) => {
                        self.pending = Some(reassembly);
                        Ok(None)
                    }
                }
            }
            (ParserKind::Default, Data::Binary(bytes)) => {
                let reassembly = self.pending.as_mut().ok_or(PacketError::UnexpectedBinary)?;
                let done = reassembly.push(bytes.into_owned())?;
                if done.is_some() {
                    self.pending = None;
                }
                Ok(done)
            }
        }
    }
}

/// A packet as the WebSocket frames of Engine.IO `message`s: with the
/// default parser `4` + the text, then each attachment as a binary frame;
/// with the msgpack parser one binary frame.
pub fn encode_ws(kind: ParserKind, packet: &Packet) -> Vec<WsFrame> {
    match kind {
        ParserKind::Msgpack => vec![WsFrame::Binary(msgpack_parser::encode(packet))],
        ParserKind::Default => {
            let encoded = packet::encode(packet);
            let mut frames = Vec::with_capacity(1 + encoded.attachments.len());
            frames.push(WsFrame::Text(format!("4{}", encoded.text)));
            frames.extend(
                encoded
                    .attachments
                    .iter()
                    .map(|b| WsFrame::Binary(b.to_vec())),
            );
            frames
        }
    }
}

#[cfg(test)]
mod tests;
