//! The WebSocket layer of `/ws` (RFC 6455), below any protocol meaning:
//!
//! - [`socket`]: the bare TCP stream taken out of hyper's upgrade.
//! - [`reader`]: one frame at a time, with what a server must refuse.
//! - [`fragment`]: reassembly of fragmented messages, with the size cap.
//! - [`message`]: whole messages out of frames, control frames handled.
//! - [`close`]: the close codes and the rules of the close handshake.
//! - [`outbox`]: a connection's bounded send queue and its signals.
//! - [`outlet`]: the handle everyone but the writer sends through.
//! - [`writer`]: frame encoding and the connection's writer task.
//!
//! Nothing here knows about rooms, users or the module.

pub mod close;
pub mod fragment;
pub mod message;
pub mod outbox;
pub mod outlet;
pub mod reader;
pub mod socket;
pub mod writer;

pub use outbox::CloseReason;
pub use outlet::Outlet;
