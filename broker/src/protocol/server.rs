//! Server -> client frames, all in one place: the encoders the gateway uses
//! (`welcome`, `err`, `expiring`, `missed`, `ack` and the data of every
//! `ack`), the
//! encoders of the `msg` and `presence` frames the module builds once per
//! event and every gateway forwards unchanged, and [`ServerFrame`] with its
//! decoder for clients and tests.
//!
//! Keys are written in the contract's order. Values that are already
//! MessagePack (a published `data`, stored `msg` frames in a `history` ack)
//! are spliced in raw, never decoded and re-encoded.

use super::fields::{quote, scan, Fields, FrameError};
use super::{frame_header, ErrorCode};
use crate::msgpack::{as_bool, as_i64, as_str, as_uint, Item, Reader, Writer};

/// Who published a client message: the `from` field of a `msg` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender<'a> {
    /// The publishing user (the token's `sub`).
    pub user: &'a str,
    /// The publishing connection.
    pub conn: &'a str,
}

/// What a `presence` frame announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceAction {
    /// The user's first connection entered the room.
    Join,
    /// The user's last connection left the room.
    Leave,
}

impl PresenceAction {
    /// `"join"` or `"leave"`, as in the frame's `action` field.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceAction::Join => "join",
            PresenceAction::Leave => "leave",
        }
    }
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
        /// The payload, decoded with [`crate::msgpack::to_json`].
        data: serde_json::Value,
        /// Sequence number in the room (0 for a broadcast).
        seq: u64,
        /// The room's epoch.
        epoch: String,
        /// Publish time, ms since the Unix epoch.
        ts: u64,
        /// `(user, conn)` of the publishing client, when a client published.
        from: Option<(String, String)>,
        /// An ephemeral message (`seq` 0, not in history).
        volatile: bool,
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
        /// The result, decoded with [`crate::msgpack::to_json`].
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
        /// The backend's own code, for `rpc_error`.
        rpc_code: Option<String>,
    },
    /// `expiring`: the token expires in `in_ms`; send `refresh`.
    Expiring {
        /// Milliseconds until the token's `exp`.
        in_ms: u64,
    },
    /// `missed`: messages of a room the connection is in could not be
    /// delivered (the node's link to Redis dropped and history no longer
    /// held them); live messages continue after `seq`.
    Missed {
        /// The room.
        room: String,
        /// The room's epoch now.
        epoch: String,
        /// The room's sequence number after the gap.
        seq: u64,
        /// How many messages were not delivered, when known.
        count: Option<u64>,
    },
    /// `joined`: the backend put this connection into a room
    /// (`BROKER.USER.JOIN`); messages after `seq` follow.
    Joined {
        /// The room.
        room: String,
        /// The room's sequence number at the join.
        seq: u64,
        /// The room's epoch.
        epoch: String,
    },
    /// `left`: the backend took this connection out of a room
    /// (`BROKER.USER.LEAVE`).
    Left {
        /// The room.
        room: String,
    },
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

/// Keys of server frames.
const SERVER_KEYS: [&str; 22] = [
    "t", "id", "data", "code", "msg", "retry_ms", "conn", "user", "node", "ping_ms", "exp", "room",
    "ev", "seq", "epoch", "ts", "from", "action", "in_ms", "count", "volatile", "rpc_code",
];

/// Decodes one server → client message (for clients and tests), with the
/// same checks as [`super::decode_client_frame`]. `data` values become
/// `serde_json::Value` as in [`crate::msgpack::to_json`] (bin → array of
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

fn server_frame(f: &Fields<'_, 22>) -> Result<ServerFrame, String> {
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
            volatile: f
                .optional("volatile", "a boolean", as_bool)?
                .unwrap_or(false),
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
            rpc_code: f
                .optional("rpc_code", "a string", as_str)?
                .map(str::to_owned),
        },
        "expiring" => ServerFrame::Expiring {
            in_ms: f.uint("in_ms")?,
        },
        "joined" => ServerFrame::Joined {
            room: f.string("room")?,
            seq: f.uint("seq")?,
            epoch: f.string("epoch")?,
        },
        "left" => ServerFrame::Left {
            room: f.string("room")?,
        },
        "missed" => ServerFrame::Missed {
            room: f.string("room")?,
            epoch: f.string("epoch")?,
            seq: f.uint("seq")?,
            count: f.optional("count", "a non-negative integer", as_uint)?,
        },
        other => return Err(format!("unknown frame type {}", quote(other))),
    })
}

/// The `t` of a frame the broker encoded (its first key, as every encoder
/// here writes it), read without decoding the rest: `"ack"`, `"err"`...
/// `None` when the frame does not start with `t`.
pub fn frame_type(frame: &[u8]) -> Option<&str> {
    let mut r = Reader::new(frame);
    match (r.item().ok()?, r.item().ok()?, r.item().ok()?) {
        (Item::Map(_), Item::Str("t"), Item::Str(kind)) => Some(kind),
        _ => None,
    }
}

/// Encodes a `msg` frame: the map `{t: "msg", room, ev, data, seq, epoch, ts,
/// from?}` in exactly that key order, with `from: {user, conn}` only for a
/// client's publish. `data` must already be one MessagePack value (as
/// returned by [`crate::payload::encode_payload`]); it is copied in raw.
pub fn encode_msg_frame(
    room: &str,
    ev: &str,
    data: &[u8],
    seq: u64,
    epoch: &str,
    ts_ms: u64,
    from: Option<Sender<'_>>,
) -> Vec<u8> {
    msg_frame(room, ev, data, seq, epoch, ts_ms, from, false)
}

/// Encodes the `msg` frame of an ephemeral (volatile) message: as
/// [`encode_msg_frame`] with `seq` 0, then `volatile: true` last.
pub fn encode_volatile_msg_frame(
    room: &str,
    ev: &str,
    data: &[u8],
    epoch: &str,
    ts_ms: u64,
    from: Option<Sender<'_>>,
) -> Vec<u8> {
    msg_frame(room, ev, data, 0, epoch, ts_ms, from, true)
}

#[allow(clippy::too_many_arguments)]
fn msg_frame(
    room: &str,
    ev: &str,
    data: &[u8],
    seq: u64,
    epoch: &str,
    ts_ms: u64,
    from: Option<Sender<'_>>,
    volatile: bool,
) -> Vec<u8> {
    let from_len = from.map_or(0, |s| 16 + s.user.len() + s.conn.len());
    let mut out =
        Writer::with_capacity(74 + room.len() + ev.len() + data.len() + epoch.len() + from_len);
    let len = 7 + usize::from(from.is_some()) + usize::from(volatile);
    frame_header(&mut out, len, "msg")
        .str("room")
        .str(room)
        .str("ev")
        .str(ev)
        .str("data")
        .raw(data)
        .str("seq")
        .uint(seq)
        .str("epoch")
        .str(epoch)
        .str("ts")
        .uint(ts_ms);
    if let Some(sender) = from {
        out.str("from")
            .map(2)
            .str("user")
            .str(sender.user)
            .str("conn")
            .str(sender.conn);
    }
    if volatile {
        out.str("volatile").bool(true);
    }
    out.into_vec()
}

/// Encodes a `presence` frame: `{t: "presence", room, user, action}`.
pub fn encode_presence_frame(room: &str, user: &str, action: PresenceAction) -> Vec<u8> {
    let mut out = Writer::with_capacity(48 + room.len() + user.len());
    frame_header(&mut out, 4, "presence")
        .str("room")
        .str(room)
        .str("user")
        .str(user)
        .str("action")
        .str(action.as_str());
    out.into_vec()
}

/// Encodes `welcome`: `{t, conn, user, node, ping_ms, exp}`, the first frame
/// of an authenticated connection. `exp` is the token's expiry in Unix
/// seconds.
pub fn encode_welcome(conn: &str, user: &str, node: &str, ping_ms: u64, exp: u64) -> Vec<u8> {
    let mut out = Writer::with_capacity(80 + conn.len() + user.len() + node.len());
    frame_header(&mut out, 6, "welcome")
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
    let mut out = Writer::with_capacity(64 + msg.len());
    frame_header(&mut out, len, "err");
    if let Some(id) = id {
        out.str("id").int(id);
    }
    out.str("code").str(code.as_str()).str("msg").str(msg);
    if let Some(retry_ms) = retry_ms {
        out.str("retry_ms").uint(retry_ms);
    }
    out.into_vec()
}

/// Encodes the `err` answering an `rpc` the backend refused:
/// `{t, id, code: "rpc_error", msg, rpc_code}` (`BROKER.RPC.ERROR`).
pub fn encode_rpc_err(id: i64, rpc_code: &str, msg: &str) -> Vec<u8> {
    let mut out = Writer::with_capacity(64 + msg.len() + rpc_code.len());
    frame_header(&mut out, 5, "err")
        .str("id")
        .int(id)
        .str("code")
        .str(ErrorCode::RpcError.as_str())
        .str("msg")
        .str(msg)
        .str("rpc_code")
        .str(rpc_code);
    out.into_vec()
}

/// Encodes `expiring`: `{t, in_ms}`, ms until the token's `exp`.
pub fn encode_expiring(in_ms: u64) -> Vec<u8> {
    let mut out = Writer::with_capacity(24);
    frame_header(&mut out, 2, "expiring")
        .str("in_ms")
        .uint(in_ms);
    out.into_vec()
}

/// Encodes `joined`: `{t, room, seq, epoch}` — the backend put the
/// connection into `room` (`BROKER.USER.JOIN`), which is at `seq`.
pub fn encode_joined(room: &str, seq: u64, epoch: &str) -> Vec<u8> {
    let mut out = Writer::with_capacity(40 + room.len() + epoch.len());
    frame_header(&mut out, 4, "joined")
        .str("room")
        .str(room)
        .str("seq")
        .uint(seq)
        .str("epoch")
        .str(epoch);
    out.into_vec()
}

/// Encodes `left`: `{t, room}` — the backend took the connection out of
/// `room` (`BROKER.USER.LEAVE`).
pub fn encode_left(room: &str) -> Vec<u8> {
    let mut out = Writer::with_capacity(24 + room.len());
    frame_header(&mut out, 2, "left").str("room").str(room);
    out.into_vec()
}

/// Encodes `missed`: `{t, room, epoch, seq, count?}`. Messages of `room`
/// up to `seq` (at `epoch`) could not be delivered to the member; `count`
/// (left out when `None`: not known) says how many.
pub fn encode_missed(room: &str, epoch: &str, seq: u64, count: Option<u64>) -> Vec<u8> {
    let mut out = Writer::with_capacity(56 + room.len() + epoch.len());
    frame_header(&mut out, 4 + usize::from(count.is_some()), "missed")
        .str("room")
        .str(room)
        .str("epoch")
        .str(epoch)
        .str("seq")
        .uint(seq);
    if let Some(count) = count {
        out.str("count").uint(count);
    }
    out.into_vec()
}

/// Encodes `ack`: `{t, id, data}`, with `data` the raw MessagePack bytes of
/// one value (from the `ack_*` builders), spliced in without re-encoding.
pub fn encode_ack_raw(id: i64, data: &[u8]) -> Vec<u8> {
    let mut out = Writer::with_capacity(24 + data.len());
    frame_header(&mut out, 3, "ack")
        .str("id")
        .int(id)
        .str("data")
        .raw(data);
    out.into_vec()
}

/// `ack` data of `auth`: `{user, exp}`.
pub fn ack_auth(user: &str, exp: u64) -> Vec<u8> {
    let mut out = Writer::with_capacity(24 + user.len());
    out.map(2).str("user").str(user).str("exp").uint(exp);
    out.into_vec()
}

/// `ack` data of `join`: `{room, seq, epoch, recovered}`. `recovered` is true
/// when `since` was given and every missed message was replayed before the
/// ack.
pub fn ack_join(room: &str, seq: u64, epoch: &str, recovered: bool) -> Vec<u8> {
    let mut out = Writer::with_capacity(48 + room.len() + epoch.len());
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
    let mut out = Writer::with_capacity(1);
    out.map(0);
    out.into_vec()
}

/// `ack` data of `pub`: `{seq}`, the message's sequence number.
pub fn ack_pub(seq: u64) -> Vec<u8> {
    let mut out = Writer::with_capacity(16);
    out.map(1).str("seq").uint(seq);
    out.into_vec()
}

/// `ack` data of `rpc`: `{data}`, the backend's answer (one MessagePack
/// value, spliced in raw).
pub fn ack_rpc(data: &[u8]) -> Vec<u8> {
    let mut out = Writer::with_capacity(8 + data.len());
    out.map(1).str("data").raw(data);
    out.into_vec()
}

/// `ack` data of `presence`: `{users: [{user, conns}], count}`.
pub fn ack_presence(users: &[(String, u64)], count: u64) -> Vec<u8> {
    ack_presence_page(users, count, None)
}

/// `ack` data of `presence` for one page of a big room: `{users, count,
/// next}`, `next` (present only when more users follow) being the `after`
/// of the request for the next page.
pub fn ack_presence_page(users: &[(String, u64)], count: u64, next: Option<&str>) -> Vec<u8> {
    let users_len: usize = users.iter().map(|(user, _)| user.len() + 24).sum();
    let mut out = Writer::with_capacity(40 + users_len + next.map_or(0, str::len));
    out.map(2 + usize::from(next.is_some()))
        .str("users")
        .array(users.len());
    for (user, conns) in users {
        out.map(2).str("user").str(user).str("conns").uint(*conns);
    }
    out.str("count").uint(count);
    if let Some(next) = next {
        out.str("next").str(next);
    }
    out.into_vec()
}

/// `ack` data of `history`: `{messages: [msg...], seq, epoch}`, each message
/// an encoded `msg` frame spliced in raw (a map, not a `bin`).
pub fn ack_history(messages: &[&[u8]], seq: u64, epoch: &str) -> Vec<u8> {
    ack_history_page(messages, seq, epoch, false)
}

/// `ack` data of `history` that may be one page of several: with `more`,
/// the map also holds `more: true` (retained messages follow the last one
/// given; ask again with `since` = its `seq`).
pub fn ack_history_page(messages: &[&[u8]], seq: u64, epoch: &str, more: bool) -> Vec<u8> {
    let messages_len: usize = messages.iter().map(|m| m.len()).sum();
    let mut out = Writer::with_capacity(56 + messages_len + epoch.len());
    out.map(3 + usize::from(more))
        .str("messages")
        .array(messages.len());
    for message in messages {
        out.raw(message);
    }
    out.str("seq").uint(seq).str("epoch").str(epoch);
    if more {
        out.str("more").bool(true);
    }
    out.into_vec()
}

/// `ack` data of `refresh`: `{exp}`, the new token's expiry (Unix seconds).
pub fn ack_refresh(exp: u64) -> Vec<u8> {
    let mut out = Writer::with_capacity(16);
    out.map(1).str("exp").uint(exp);
    out.into_vec()
}

/// `ack` data of `ping`: `{ts}`, the server's time in ms.
pub fn ack_ping(ts: u64) -> Vec<u8> {
    let mut out = Writer::with_capacity(16);
    out.map(1).str("ts").uint(ts);
    out.into_vec()
}
