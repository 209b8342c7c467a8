//! Old paths of what moved to [`crate::msgpack`], [`crate::payload`],
//! [`crate::envelope`] and [`crate::protocol::server`], kept while the other
//! crates move over. Nothing is defined here.

pub use crate::envelope::{
    decode_envelope, encode_broadcast_envelope, encode_kick_envelope, encode_msg_envelope,
    encode_presence_envelope, Envelope,
};
pub use crate::msgpack::{
    check as check_msgpack, to_json as decode_value_json, WireError, MAX_DEPTH,
};
pub use crate::payload::{encode_payload, Format};
pub use crate::protocol::server::{
    encode_msg_frame, encode_presence_frame, PresenceAction, Sender,
};
