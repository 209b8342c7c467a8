//! Socket.IO compatibility, the codec only (no I/O, no async): what
//! unmodified `socket.io-client` 4.x apps send and expect at `/socket.io/`
//! (described in `docs/SOCKETIO.md`, "Wire formats").
//!
//! - [`engine`]: Engine.IO v4 packets, on WebSocket frames and in HTTP
//!   long-polling payloads, and the `open` handshake.
//!
//! Every decoder takes input from anyone on
//! the internet: it never panics, bounds the depth of values
//! ([`crate::msgpack::MAX_DEPTH`]) before anything recurses on them, and
//! sizes nothing by an announced length.

pub mod engine;

pub use engine::{Data, EngineError, EnginePacket, Handshake, Transport, WsFrame};

#[cfg(test)]
mod tests;
