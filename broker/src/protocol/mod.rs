//! The WebSocket protocol v1 (described in full in `docs/PROTOCOL.md`):
//! every WebSocket binary message is one MessagePack map with string keys,
//! `t` naming its type.
//!
//! - [`codes`]: [`ErrorCode`] (the `code` of an `err` frame) and
//!   [`CloseCode`] (the WebSocket close codes).
//! - [`client`]: [`ClientFrame`], decoded by the gateway from bytes anyone on
//!   the internet sends ([`decode_client_frame`]: never panics, never
//!   recurses on input, never allocates by an announced length), and encoded
//!   by clients and tests ([`encode_client_frame`]).
//! - [`server`]: every server frame -- the gateway's `welcome`, `err`,
//!   `expiring`, `missed` and `ack`s, the module's `msg` and `presence` (encoded once
//!   per event, forwarded unchanged) -- and [`ServerFrame`] with its decoder
//!   for clients and tests.
//!
//! Both decoders read a frame map with one scanner (`fields`): the values
//! of the keys the frame type knows, each checked once as MessagePack
//! (well-formed, at most [`crate::msgpack::MAX_DEPTH`] deep, UTF-8 strings);
//! unknown keys are ignored so later protocol versions can add fields.

pub mod client;
pub mod codes;
mod fields;
pub mod server;

pub use client::{
    decode_client_frame, encode_client_frame, validate_method, ClientFrame, Since, MAX_METHOD_LEN,
};
pub use codes::{CloseCode, ErrorCode};
pub use fields::FrameError;
pub use server::{
    ack_auth, ack_empty, ack_history, ack_history_page, ack_join, ack_ping, ack_presence,
    ack_presence_page, ack_pub, ack_refresh, ack_rpc, decode_server_frame, encode_ack_raw,
    encode_err, encode_expiring, encode_joined, encode_left, encode_missed, encode_msg_frame,
    encode_presence_frame, encode_rpc_err, encode_volatile_msg_frame, encode_welcome, frame_type,
    PresenceAction, Sender, ServerFrame,
};

use crate::msgpack::Writer;

/// Starts a frame: a map of `len` entries whose first is `t: kind`.
fn frame_header<'w>(out: &'w mut Writer, len: usize, kind: &str) -> &'w mut Writer {
    out.map(len).str("t").str(kind)
}

#[cfg(test)]
mod tests;
