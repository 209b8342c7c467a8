//! Whole client messages out of WebSocket frames: the frame reader, the
//! reassembly of fragments, and the control frames handled on the way (a
//! ping is owed its pong, a close frame is answered, every frame counts as
//! the client being heard from). A protocol error, an oversized message or
//! the client's close requests the connection's close on its [`Outlet`].

use broker::protocol::CloseCode;

use super::fragment::{Assembler, Reassembled};
use super::outlet::Outlet;
use super::reader::{opcode, FrameSource, ReadError};
use super::socket::ClientRead;

/// The reading side of one connection. Its `next` future must never be
/// dropped half-way through a frame (the header bytes are consumed before
/// the whole frame is there), so the request loop polls one `next` to
/// completion while it serves timers alongside it.
pub struct MessageReader {
    reader: FrameSource<ClientRead>,
    assembler: Assembler,
    outlet: Outlet,
    max: usize,
}

/// What [`MessageReader::next`] read.
pub enum Read {
    /// A whole binary message: one protocol frame.
    Message(Vec<u8>),
    /// A whole text message (not part of protocol v1; Socket.IO's), its
    /// bytes, not checked as UTF-8 yet.
    Text(Vec<u8>),
    /// The connection is closing (its close was requested on the outlet).
    Closed,
    /// A control frame was handled and nothing more is buffered: go back
    /// to waiting (without a read in flight).
    Idle,
}

impl MessageReader {
    /// Reads messages of at most `max` bytes from `read`; closes go to
    /// `outlet`.
    pub fn new(read: ClientRead, outlet: Outlet, max: usize) -> MessageReader {
        MessageReader {
            reader: FrameSource::new(read, max),
            assembler: Assembler::default(),
            outlet,
            max,
        }
    }

    /// Sends closes and pongs to `outlet` from now on (a Socket.IO probe
    /// becoming its session's transport).
    pub fn set_outlet(&mut self, outlet: Outlet) {
        self.outlet = outlet;
    }

    /// Waits, holding no buffer, until bytes of a next frame are there
    /// (see [`FrameSource::fill`]). Cancel-safe.
    pub async fn fill(&mut self) {
        self.reader.fill().await;
    }

    /// Reads the next complete message. Closes (and returns `Closed`) on a
    /// protocol error, an oversize message or the client's close.
    pub async fn next(&mut self) -> Read {
        let max = self.max;
        loop {
            let frame = match self.reader.next().await {
                Ok(frame) => frame,
                Err(ReadError::TooLarge) => {
                    self.outlet.close(CloseCode::TooLarge, "frame too large");
                    return Read::Closed;
                }
                Err(ReadError::Protocol(why)) => {
                    self.outlet.close(CloseCode::ProtocolError, why);
                    return Read::Closed;
                }
                Err(ReadError::Closed) => {
                    self.outlet.close(CloseCode::Abnormal, "connection lost");
                    return Read::Closed;
                }
            };
            if frame.opcode == opcode::PING {
                self.outlet.pong(frame.payload.clone());
            }
            self.outlet.touch();
            match self.assembler.push(frame, max) {
                Reassembled::Binary(data) => return Read::Message(data),
                Reassembled::Text(data) => return Read::Text(data),
                Reassembled::Nothing if self.assembler.is_idle() && !self.reader.has_buffered() => {
                    return Read::Idle;
                }
                Reassembled::Nothing => continue,
                Reassembled::Close(code) => {
                    self.outlet.close(code, "closed by client");
                    return Read::Closed;
                }
                Reassembled::TooLarge => {
                    self.outlet.close(CloseCode::TooLarge, "message too large");
                    return Read::Closed;
                }
                Reassembled::Invalid => {
                    self.outlet
                        .close(CloseCode::ProtocolError, "invalid fragmentation");
                    return Read::Closed;
                }
            }
        }
    }
}
