//! Client -> server frames: [`ClientFrame`], its decoder (for the gateway:
//! the bytes come from anyone on the internet) and its encoder (for clients,
//! tests and the load tool).

use super::fields::{quote, scan, Fields, FrameError};
use super::frame_header;
use crate::msgpack::{as_bool, as_i64, as_str, as_uint, Writer};

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
        /// An ephemeral message: no sequence, no history, skipped by
        /// members whose send queue is over half full.
        volatile: bool,
    },
    /// `rpc`: a request for the backends (appended to the RPC stream).
    Rpc {
        /// Request id.
        id: i64,
        /// The method name ([`validate_method`]).
        method: String,
        /// The exact MessagePack bytes of the `data` value (checked, not
        /// decoded).
        data: Vec<u8>,
    },
    /// `presence`: who is in a room, one page of users at a time.
    Presence {
        /// Request id.
        id: i64,
        /// The room.
        room: String,
        /// Only users whose names sort after this one (the `next` of the
        /// previous page).
        after: Option<String>,
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
            | ClientFrame::Rpc { id, .. }
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
            | ClientFrame::Rpc { id, .. }
            | ClientFrame::Ping { id } => *id = new,
        }
    }

    /// The frame's `t`: `"auth"`, `"join"`, `"leave"`, `"pub"`, `"presence"`,
    /// `"history"`, `"refresh"`, `"rpc"` or `"ping"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Auth { .. } => "auth",
            ClientFrame::Join { .. } => "join",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::Pub { .. } => "pub",
            ClientFrame::Presence { .. } => "presence",
            ClientFrame::History { .. } => "history",
            ClientFrame::Refresh { .. } => "refresh",
            ClientFrame::Rpc { .. } => "rpc",
            ClientFrame::Ping { .. } => "ping",
        }
    }
}

/// A raw value that is an integer from 0 to `u32::MAX`.
fn as_u32(raw: &[u8]) -> Option<u32> {
    as_uint(raw).and_then(|n| u32::try_from(n).ok())
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

/// Longest `method` of an `rpc` frame, in bytes.
pub const MAX_METHOD_LEN: usize = 100;

/// Checks the `method` of an `rpc`: 1 to [`MAX_METHOD_LEN`] bytes of
/// printable ASCII (`!` to `~`: no space, no control character), so a
/// backend can route on it and log it as it is.
///
/// # Errors
/// The reason, for the `bad_frame` answer.
pub fn validate_method(method: &str) -> Result<(), String> {
    if method.is_empty() || method.len() > MAX_METHOD_LEN {
        return Err(format!("method must be 1 to {MAX_METHOD_LEN} bytes"));
    }
    if !method.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("method must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// Keys of client frames.
const CLIENT_KEYS: [&str; 12] = [
    "t", "id", "token", "room", "ev", "data", "others", "since", "limit", "after", "volatile",
    "method",
];

/// `t` of every client frame.
pub(super) const CLIENT_KINDS: [&str; 9] = [
    "auth", "join", "leave", "pub", "presence", "history", "refresh", "ping", "rpc",
];

/// Decodes one binary WebSocket message from a client.
///
/// The message must be exactly one MessagePack map with string keys; `t`
/// names the frame and `id` (an integer in the i64 range) is required on
/// every frame. Unknown keys are ignored; optional fields may be absent or
/// `nil`. Every value is checked with [`crate::msgpack::check`], so nesting
/// deeper than [`crate::msgpack::MAX_DEPTH`] anywhere, a `str` that is not UTF-8, or a
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

fn client_frame(f: &Fields<'_, 12>) -> Result<ClientFrame, String> {
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
            volatile: f
                .optional("volatile", "a boolean", as_bool)?
                .unwrap_or(false),
        },
        "rpc" => {
            let method = f.string("method")?;
            validate_method(&method)?;
            ClientFrame::Rpc {
                id,
                method,
                data: f.required("data", "a MessagePack value", |raw| Some(raw.to_vec()))?,
            }
        }
        "presence" => ClientFrame::Presence {
            id,
            room: f.string("room")?,
            after: f.optional("after", "a string", as_str)?.map(str::to_owned),
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

/// Encodes a client frame (for clients, tests and load tools): keys `t`,
/// `id`, then the fields in the contract's order. Optional fields are left
/// out when `None`, and `others` and `volatile` when false. `data` is copied in raw and must
/// be one MessagePack value; an empty `data` is sent as `nil`.
pub fn encode_client_frame(frame: &ClientFrame) -> Vec<u8> {
    let kind = frame.kind();
    let text_len = match frame {
        ClientFrame::Auth { token, .. } | ClientFrame::Refresh { token, .. } => token.len(),
        ClientFrame::Join { room, since, .. } => {
            room.len() + since.as_ref().map_or(0, |s| 24 + s.epoch.len())
        }
        ClientFrame::Pub { room, ev, data, .. } => room.len() + ev.len() + data.len(),
        ClientFrame::Rpc { method, data, .. } => method.len() + data.len(),
        ClientFrame::Presence { room, after, .. } => {
            room.len() + after.as_ref().map_or(0, |a| 8 + a.len())
        }
        ClientFrame::Leave { room, .. } | ClientFrame::History { room, .. } => room.len(),
        ClientFrame::Ping { .. } => 0,
    };
    let mut out = Writer::with_capacity(48 + text_len);
    match frame {
        ClientFrame::Auth { id, token } | ClientFrame::Refresh { id, token } => {
            frame_header(&mut out, 3, kind)
                .str("id")
                .int(*id)
                .str("token")
                .str(token);
        }
        ClientFrame::Join { id, room, since } => {
            frame_header(&mut out, 3 + usize::from(since.is_some()), kind)
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
        ClientFrame::Leave { id, room } => {
            frame_header(&mut out, 3, kind)
                .str("id")
                .int(*id)
                .str("room")
                .str(room);
        }
        ClientFrame::Presence { id, room, after } => {
            frame_header(&mut out, 3 + usize::from(after.is_some()), kind)
                .str("id")
                .int(*id)
                .str("room")
                .str(room);
            if let Some(after) = after {
                out.str("after").str(after);
            }
        }
        ClientFrame::Pub {
            id,
            room,
            ev,
            data,
            others,
            volatile,
        } => {
            let len = 5 + usize::from(*others) + usize::from(*volatile);
            frame_header(&mut out, len, kind)
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
            if *volatile {
                out.str("volatile").bool(true);
            }
        }
        ClientFrame::Rpc { id, method, data } => {
            frame_header(&mut out, 4, kind)
                .str("id")
                .int(*id)
                .str("method")
                .str(method)
                .str("data");
            if data.is_empty() {
                out.nil();
            } else {
                out.raw(data);
            }
        }
        ClientFrame::History {
            id,
            room,
            since,
            limit,
        } => {
            let len = 3 + usize::from(since.is_some()) + usize::from(limit.is_some());
            frame_header(&mut out, len, kind)
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
            frame_header(&mut out, 2, kind).str("id").int(*id);
        }
    }
    out.into_vec()
}
