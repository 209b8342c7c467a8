//! Between Socket.IO and protocol v1 (`docs/SOCKETIO.md`, "Events"): a
//! client's EVENT becomes the [`ClientFrame`] the gateway already serves
//! ([`request`]), and every protocol v1 server frame the connection is sent
//! becomes the Socket.IO packets its client expects ([`Outgoing::packets`]).
//! So a Socket.IO connection gets the same dispatch, policies, limits and
//! module calls as a `/ws` one, and the hub's fan-out stays one frame for
//! every recipient.

use serde_json::json;

use super::packet::{Body, Packet, RESERVED_EVENTS};
use super::value::{Object, SioValue};
use super::{encode_ws, ParserKind, WsFrame};
use crate::msgpack::{self, Writer};
use crate::protocol::{validate_method, ClientFrame, Since};

/// The prefix of the reserved events, which act directly.
pub const RESERVED_PREFIX: &str = "broker:";
/// Most rooms a recovery offset names (the rest are not recovered).
pub const MAX_OFFSET_ROOMS: usize = 256;

/// The protocol v1 request a client EVENT stands for: a reserved
/// `broker:*` event or, for any other name, an `rpc` with the event name
/// as `method` and the argument list as `data`. `id` becomes the request's
/// id.
///
/// # Errors
///
/// A short reason (answered `bad_frame`) for an unknown reserved event or
/// arguments of the wrong shape.
pub fn request(id: i64, name: &str, args: Vec<SioValue>) -> Result<ClientFrame, String> {
    let Some(action) = name.strip_prefix(RESERVED_PREFIX) else {
        validate_method(name)?;
        return Ok(ClientFrame::Rpc {
            id,
            method: name.to_owned(),
            data: to_msgpack(&SioValue::Array(args)),
        });
    };
    let arg = args.into_iter().next().unwrap_or(SioValue::Null);
    let SioValue::Object(fields) = arg else {
        return Err(format!("{name}: the argument must be an object"));
    };
    let fields = Fields(fields);
    Ok(match action {
        "join" => ClientFrame::Join {
            id,
            room: fields.string("room")?,
            since: fields.since()?,
        },
        "leave" => ClientFrame::Leave {
            id,
            room: fields.string("room")?,
        },
        "publish" => ClientFrame::Pub {
            id,
            room: fields.string("room")?,
            ev: fields.string("ev").and_then(|ev| {
                if deliverable(&ev) {
                    Ok(ev)
                } else {
                    Err(format!(
                        "ev {ev:?} is reserved (Socket.IO's or the broker's)"
                    ))
                }
            })?,
            data: to_msgpack(fields.get("data").unwrap_or(&SioValue::Null)),
            others: fields.flag("others")?,
            volatile: fields.flag("volatile")?,
        },
        "presence" => ClientFrame::Presence {
            id,
            room: fields.string("room")?,
            after: fields.opt_string("after")?,
        },
        "history" => ClientFrame::History {
            id,
            room: fields.string("room")?,
            since: fields.opt_uint("since")?,
            limit: fields
                .opt_uint("limit")?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        },
        "refresh" => ClientFrame::Refresh {
            id,
            token: fields.string("token")?,
        },
        _ => return Err(format!("unknown reserved event {name:?}")),
    })
}

/// Whether a room message named `ev` may reach Socket.IO clients: not a
/// name socket.io-client keeps for itself (`connect`, `disconnect`, ...,
/// which it refuses or runs its own handlers for) and not a `broker:*`
/// name (the server's events). Such messages, from `/ws` clients or
/// backends, are not delivered to Socket.IO connections.
pub fn deliverable(ev: &str) -> bool {
    !RESERVED_EVENTS.contains(&ev) && !ev.starts_with(RESERVED_PREFIX)
}

/// A value as MessagePack bytes (a buffer as `bin`).
pub fn to_msgpack(value: &SioValue) -> Vec<u8> {
    let mut out = Writer::with_capacity(64);
    value.write_msgpack(&mut out);
    out.into_vec()
}

/// MessagePack bytes as a value: buffers stay buffers; what
/// [`SioValue::from_msgpack`] refuses (other ext types) goes through
/// [`msgpack::to_json`] (ext as `{type, data}`).
pub fn from_msgpack(raw: &[u8]) -> SioValue {
    SioValue::from_msgpack(raw)
        .unwrap_or_else(|_| msgpack::to_json(raw).map_or(SioValue::Null, SioValue::from_json))
}

/// The fields of a reserved event's argument object.
struct Fields(Object);

impl Fields {
    fn get(&self, key: &str) -> Option<&SioValue> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, SioValue::Null))
    }

    fn string(&self, key: &str) -> Result<String, String> {
        self.opt_string(key)?
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(SioValue::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("field `{key}` must be a string")),
        }
    }

    fn opt_uint(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(SioValue::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("field `{key}` must be a non-negative integer")),
            Some(_) => Err(format!("field `{key}` must be a non-negative integer")),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some(SioValue::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("field `{key}` must be a boolean")),
        }
    }

    /// `since: {seq, epoch}`.
    fn since(&self) -> Result<Option<Since>, String> {
        let Some(since) = self.get("since") else {
            return Ok(None);
        };
        let seq = since.get("seq").and_then(|v| match v {
            SioValue::Number(n) => n.as_u64(),
            _ => None,
        });
        match (seq, since.get("epoch").and_then(SioValue::as_str)) {
            (Some(seq), Some(epoch)) => Ok(Some(Since {
                seq,
                epoch: epoch.to_owned(),
            })),
            _ => Err("field `since` must be {seq, epoch}".to_owned()),
        }
    }
}

/// Where a connection is in each room it got messages from: the recovery
/// offset's content. One per connection, updated by every `msg` it is sent.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    rooms: Vec<(String, String, u64)>,
}

impl Positions {
    /// Notes that the connection got `seq` of `room` in `epoch`.
    pub fn saw(&mut self, room: &str, epoch: &str, seq: u64) {
        match self.rooms.iter_mut().find(|(r, _, _)| r == room) {
            Some(entry) => {
                if entry.1 != epoch {
                    entry.1 = epoch.to_owned();
                }
                entry.2 = seq;
            }
            None => self.rooms.push((room.to_owned(), epoch.to_owned(), seq)),
        }
    }

    /// The offset: `[[room, epoch, seq], ...]` as JSON text, for the rooms
    /// `in_room` says the connection is still in (the others are
    /// forgotten).
    pub fn offset(&mut self, in_room: impl Fn(&str) -> bool) -> String {
        self.rooms.retain(|(room, _, _)| in_room(room));
        let rooms: Vec<_> = self
            .rooms
            .iter()
            .take(MAX_OFFSET_ROOMS)
            .map(|(room, epoch, seq)| json!([room, epoch, seq]))
            .collect();
        serde_json::Value::Array(rooms).to_string()
    }
}

/// Reads a recovery offset ([`Positions::offset`]): each room with the
/// `since` to join it with. `None` for anything else (a client's own
/// string, a cut-off offset): no room is recovered then.
pub fn parse_offset(text: &str) -> Option<Vec<(String, Since)>> {
    if text.len() > MAX_OFFSET_ROOMS * 400 {
        return None;
    }
    let rooms: Vec<(String, String, u64)> = serde_json::from_str(text).ok()?;
    if rooms.len() > MAX_OFFSET_ROOMS {
        return None;
    }
    Some(
        rooms
            .into_iter()
            .map(|(room, epoch, seq)| (room, Since { seq, epoch }))
            .collect(),
    )
}

/// The server's CONNECT answer: `{sid, pid}`.
pub fn connect_answer(sid: &str, pid: &str) -> Packet {
    Packet::main(Body::Connect(Some(vec![
        ("sid".to_owned(), SioValue::str(sid)),
        ("pid".to_owned(), SioValue::str(pid)),
    ])))
}

/// A CONNECT_ERROR `{message, data: {code}}` on `nsp`.
pub fn connect_error(nsp: &str, message: &str, code: Option<&str>) -> Packet {
    let mut error = vec![("message".to_owned(), SioValue::str(message))];
    if let Some(code) = code {
        error.push((
            "data".to_owned(),
            SioValue::Object(vec![("code".to_owned(), SioValue::str(code))]),
        ));
    }
    Packet {
        nsp: nsp.to_owned(),
        body: Body::ConnectError(SioValue::Object(error)),
    }
}

/// What one protocol v1 server frame becomes.
pub struct Outgoing;

impl Outgoing {
    /// The packets for a v1 server `frame`, appended to `out`, the frame
    /// decoded once: its own packet, unless the Socket.IO client gets
    /// nothing for it (`welcome`, whose part is the CONNECT answer; the
    /// answer to a request sent without an ack callback; a frame that
    /// cannot be read), then `broker:offset` when it changed the
    /// connection's rooms. `positions` follows the connection's rooms for
    /// the recovery offset, which `in_room` filters.
    pub fn packets(
        frame: &[u8],
        positions: &mut Positions,
        in_room: impl Fn(&str) -> bool,
        out: &mut Vec<Packet>,
    ) {
        let SioValue::Object(fields) = from_msgpack(frame) else {
            return;
        };
        // Read first: the frame's own packet consumes the fields.
        let changed = rooms_changed(&fields, positions);
        out.extend(packet(fields, positions, &in_room));
        if changed {
            out.push(Packet::main(Body::Event {
                id: None,
                name: OFFSET_EVENT.to_owned(),
                args: vec![SioValue::String(positions.offset(&in_room))],
            }));
        }
    }
}

/// The packet for a v1 server frame's `fields`, if the client gets one
/// ([`Outgoing::packets`]).
fn packet(
    mut fields: Object,
    positions: &mut Positions,
    in_room: impl Fn(&str) -> bool,
) -> Option<Packet> {
    let mut take = |key: &str| -> Option<SioValue> {
        let at = fields.iter().position(|(k, _)| k == key)?;
        Some(fields.remove(at).1)
    };
    let kind = take("t")?;
    let event = |name: &str, args: Vec<SioValue>| {
        Some(Packet::main(Body::Event {
            id: None,
            name: name.to_owned(),
            args,
        }))
    };
    match kind.as_str()? {
        "msg" => {
            let message = RoomMessage::from_fields(fields)?;
            if message.seq > 0 {
                positions.saw(&message.room, &message.epoch, message.seq);
            }
            let offset = SioValue::String(positions.offset(in_room));
            Some(message.packet(offset))
        }
        "ack" => {
            let id = ack_id(&take("id")?)?;
            let data = take("data").unwrap_or(SioValue::Null);
            Some(Packet::main(Body::Ack {
                id,
                args: vec![ack_data(data)],
            }))
        }
        "err" => {
            let id = take("id").and_then(|id| ack_id(&id));
            let mut error = Vec::new();
            for key in ["code", "msg", "retry_ms", "rpc_code"] {
                if let Some(value) = take(key) {
                    error.push((key.to_owned(), value));
                }
            }
            match id {
                Some(id) => Some(Packet::main(Body::Ack {
                    id,
                    args: vec![SioValue::Object(vec![(
                        "error".to_owned(),
                        SioValue::Object(error),
                    )])],
                })),
                None => event("broker:error", vec![SioValue::Object(error)]),
            }
        }
        "presence" => event("broker:presence-event", vec![SioValue::Object(fields)]),
        "joined" => event("broker:joined", vec![SioValue::Object(fields)]),
        "left" => event("broker:left", vec![SioValue::Object(fields)]),
        "expiring" => event("broker:expiring", vec![SioValue::Object(fields)]),
        "missed" => event("broker:missed", vec![SioValue::Object(fields)]),
        _ => None,
    }
}

/// A room message (`msg` frame) as its Socket.IO event: `[ev, data, meta,
/// offset]`, the offset being each recipient's own.
struct RoomMessage {
    ev: String,
    data: SioValue,
    meta: Object,
    room: String,
    epoch: String,
    seq: u64,
}

impl RoomMessage {
    /// Reads a `msg` frame's fields (`t` taken off); `None` for a frame
    /// that is not a deliverable room message.
    fn from_fields(mut fields: Object) -> Option<RoomMessage> {
        let mut take = |key: &str| -> Option<SioValue> {
            let at = fields.iter().position(|(k, _)| k == key)?;
            Some(fields.remove(at).1)
        };
        let room = take("room")?;
        let ev = take("ev")?;
        let ev = ev.as_str().filter(|ev| deliverable(ev))?.to_owned();
        let data = take("data").unwrap_or(SioValue::Null);
        let seq = take("seq")?;
        let epoch = take("epoch")?;
        let mut meta = vec![
            ("room".to_owned(), room.clone()),
            ("seq".to_owned(), seq.clone()),
            ("epoch".to_owned(), epoch.clone()),
        ];
        for key in ["ts", "from", "volatile"] {
            if let Some(value) = take(key) {
                meta.push((key.to_owned(), value));
            }
        }
        let seq = match &seq {
            SioValue::Number(n) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        Some(RoomMessage {
            ev,
            data,
            meta,
            room: room.as_str()?.to_owned(),
            epoch: epoch.as_str()?.to_owned(),
            seq,
        })
    }

    fn packet(self, offset: SioValue) -> Packet {
        Packet::main(Body::Event {
            id: None,
            name: self.ev,
            args: vec![self.data, SioValue::Object(self.meta), offset],
        })
    }
}

/// A string no recovery offset is (offsets are JSON arrays): the place
/// where each recipient's offset goes in a [`SharedMessage`].
const OFFSET_SLOT: &str = "\u{1}offset\u{1}";

/// A room message transcoded once for all its Socket.IO recipients of one
/// parser: the encoded frames with the recovery offset cut out, so each
/// recipient costs a copy and its own offset, not a transcoding.
#[derive(Debug)]
pub struct SharedMessage {
    room: String,
    epoch: String,
    seq: u64,
    /// The first frame up to the offset, and after it.
    head: Vec<u8>,
    tail: Vec<u8>,
    /// Whether the first frame is text (default parser) or binary.
    text: bool,
    /// The frames after the first (the default parser's attachments).
    attachments: Vec<WsFrame>,
}

impl SharedMessage {
    /// Transcodes a protocol v1 `msg` frame for `kind`; `None` for any
    /// other frame, or a message Socket.IO clients do not get.
    pub fn new(frame: &[u8], kind: ParserKind) -> Option<SharedMessage> {
        let SioValue::Object(mut fields) = from_msgpack(frame) else {
            return None;
        };
        let at = fields.iter().position(|(k, _)| k == "t")?;
        if fields.remove(at).1.as_str() != Some("msg") {
            return None;
        }
        let message = RoomMessage::from_fields(fields)?;
        let (room, epoch, seq) = (message.room.clone(), message.epoch.clone(), message.seq);
        let mut frames = encode_ws(kind, &message.packet(SioValue::str(OFFSET_SLOT))).into_iter();
        let (first, text) = match frames.next()? {
            WsFrame::Text(t) => (t.into_bytes(), true),
            WsFrame::Binary(b) => (b, false),
        };
        // The slot as the encoder wrote it: a JSON string, or a msgpack str.
        let slot = if text {
            serde_json::to_string(OFFSET_SLOT).ok()?.into_bytes()
        } else {
            to_msgpack(&SioValue::str(OFFSET_SLOT))
        };
        let at = first
            .windows(slot.len())
            .rposition(|w| w == slot.as_slice())?;
        Some(SharedMessage {
            room,
            epoch,
            seq,
            head: first[..at].to_vec(),
            tail: first[at + slot.len()..].to_vec(),
            text,
            attachments: frames.collect(),
        })
    }

    /// The frames for one recipient: notes the message in its `positions`
    /// and puts its offset in.
    pub fn frames_for(
        &self,
        positions: &mut Positions,
        in_room: impl Fn(&str) -> bool,
        out: &mut Vec<WsFrame>,
    ) {
        if self.seq > 0 {
            positions.saw(&self.room, &self.epoch, self.seq);
        }
        let offset = positions.offset(in_room);
        let slot = if self.text {
            serde_json::to_string(&offset)
                .unwrap_or_default()
                .into_bytes()
        } else {
            to_msgpack(&SioValue::String(offset))
        };
        let mut first = Vec::with_capacity(self.head.len() + slot.len() + self.tail.len());
        first.extend_from_slice(&self.head);
        first.extend_from_slice(&slot);
        first.extend_from_slice(&self.tail);
        out.push(if self.text {
            // Head and tail are the parts of a UTF-8 text cut at an ASCII
            // quote; the slot is JSON text.
            WsFrame::Text(String::from_utf8(first).unwrap_or_default())
        } else {
            WsFrame::Binary(first)
        });
        out.extend(self.attachments.iter().cloned());
    }
}

/// The name of the event that carries only a recovery offset, sent after
/// each change of the connection's rooms ([`Outgoing::packets`]).
pub const OFFSET_EVENT: &str = "broker:offset";

/// Whether the frame of `fields` changed the connection's rooms (the ack
/// of a `join` or a `leave`, also one sent without an ack callback; a
/// backend's `joined` / `left`): then `broker:offset` follows it, so the
/// client's recovery offset names every room it is in, not only those it
/// got a message from since. `positions` notes a joined room.
fn rooms_changed(fields: &Object, positions: &mut Positions) -> bool {
    let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    match get("t").and_then(SioValue::as_str) {
        Some("ack") => match get("data") {
            // A join's ack: {room, seq, epoch, recovered}.
            Some(data @ SioValue::Object(_)) if data.get("recovered").is_some() => {
                note(positions, data)
            }
            // A leave's ack: {}.
            Some(SioValue::Object(pairs)) => pairs.is_empty(),
            _ => false,
        },
        Some("joined") => {
            let room = get("room").and_then(SioValue::as_str);
            let epoch = get("epoch").and_then(SioValue::as_str);
            let seq = get("seq");
            note_parts(positions, room, epoch, seq)
        }
        Some("left") => true,
        _ => false,
    }
}

/// Notes the position `{room, seq, epoch}` says; true when it said one.
fn note(positions: &mut Positions, at: &SioValue) -> bool {
    let room = at.get("room").and_then(SioValue::as_str);
    let epoch = at.get("epoch").and_then(SioValue::as_str);
    note_parts(positions, room, epoch, at.get("seq"))
}

/// [`note`] of a position given as its parts.
fn note_parts(
    positions: &mut Positions,
    room: Option<&str>,
    epoch: Option<&str>,
    seq: Option<&SioValue>,
) -> bool {
    let seq = match seq {
        Some(SioValue::Number(n)) => n.as_u64(),
        _ => None,
    };
    match (room, epoch, seq) {
        (Some(room), Some(epoch), Some(seq)) => {
            positions.saw(room, epoch, seq);
            true
        }
        _ => false,
    }
}

/// A protocol v1 ack's data as the Socket.IO ack's argument: an `rpc`'s
/// (the only ack data that is `{data}` alone) is the backend's reply
/// itself; a `history` page's messages lose protocol v1's `t`.
fn ack_data(data: SioValue) -> SioValue {
    match data {
        SioValue::Object(mut fields) if fields.len() == 1 && fields[0].0 == "data" => {
            fields.remove(0).1
        }
        SioValue::Object(mut fields) => {
            for (key, value) in &mut fields {
                if let (true, SioValue::Array(messages)) = (key == "messages", value) {
                    for message in messages {
                        if let SioValue::Object(m) = message {
                            m.retain(|(k, _)| k != "t");
                        }
                    }
                }
            }
            SioValue::Object(fields)
        }
        other => other,
    }
}

/// A request id as the client's ack id: requests sent without an ack
/// callback have negative ids (their answers are dropped).
fn ack_id(id: &SioValue) -> Option<u64> {
    match id {
        SioValue::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame's own packet ([`Outgoing::packets`] without the
    /// `broker:offset` that may follow).
    fn own(frame: &[u8], p: &mut Positions, in_room: impl Fn(&str) -> bool) -> Option<Packet> {
        let mut out = Vec::new();
        Outgoing::packets(frame, p, in_room, &mut out);
        out.into_iter()
            .find(|x| !matches!(&x.body, Body::Event { name, .. } if name == OFFSET_EVENT))
    }

    /// The `broker:offset` event that follows the frame, if any.
    fn offset_event(
        frame: &[u8],
        p: &mut Positions,
        in_room: impl Fn(&str) -> bool,
    ) -> Option<Packet> {
        let mut out = Vec::new();
        Outgoing::packets(frame, p, in_room, &mut out);
        out.into_iter()
            .find(|x| matches!(&x.body, Body::Event { name, .. } if name == OFFSET_EVENT))
    }
    use crate::protocol::{self, ErrorCode, Sender};

    fn obj(pairs: &[(&str, SioValue)]) -> SioValue {
        SioValue::Object(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    fn num(n: u64) -> SioValue {
        SioValue::Number(n.into())
    }

    #[test]
    fn reserved_events_become_their_requests() {
        let join = request(
            3,
            "broker:join",
            vec![obj(&[
                ("room", SioValue::str("chat:a")),
                (
                    "since",
                    obj(&[("seq", num(4)), ("epoch", SioValue::str("e1"))]),
                ),
            ])],
        )
        .unwrap();
        assert_eq!(
            join,
            ClientFrame::Join {
                id: 3,
                room: "chat:a".into(),
                since: Some(Since {
                    seq: 4,
                    epoch: "e1".into()
                })
            }
        );
        let publish = request(
            -1,
            "broker:publish",
            vec![obj(&[
                ("room", SioValue::str("chat:a")),
                ("ev", SioValue::str("chat")),
                (
                    "data",
                    SioValue::Array(vec![SioValue::Binary(vec![1, 2]), num(7)]),
                ),
                ("others", SioValue::Bool(true)),
            ])],
        )
        .unwrap();
        let ClientFrame::Pub {
            id, data, others, ..
        } = publish
        else {
            panic!("{publish:?}")
        };
        assert_eq!((id, others), (-1, true));
        assert_eq!(data, vec![0x92, 0xc4, 2, 1, 2, 7], "bin stays bin");
        for (name, arg, why) in [
            ("broker:join", SioValue::str("chat:a"), "must be an object"),
            ("broker:join", obj(&[]), "missing field `room`"),
            (
                "broker:publish",
                obj(&[("room", SioValue::str("r")), ("ev", num(1))]),
                "`ev` must be a string",
            ),
            ("broker:nope", obj(&[]), "unknown reserved event"),
            (
                "broker:history",
                obj(&[("room", SioValue::str("r")), ("since", SioValue::str("x"))]),
                "`since` must be",
            ),
        ] {
            let err = request(1, name, vec![arg]).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn other_events_are_rpcs_with_the_argument_list() {
        let rpc = request(9, "order.create", vec![obj(&[("x", num(1))]), num(2)]).unwrap();
        let ClientFrame::Rpc { id, method, data } = rpc else {
            panic!()
        };
        assert_eq!((id, method.as_str()), (9, "order.create"));
        assert_eq!(
            msgpack::to_json(&data).unwrap(),
            serde_json::json!([{"x": 1}, 2])
        );
        assert!(request(1, "bad method!", vec![]).is_err());
    }

    #[test]
    fn messages_carry_meta_and_an_offset_of_the_rooms_still_joined() {
        let data = {
            let mut w = Writer::with_capacity(8);
            w.map(1).str("b").bin(&[9, 9]);
            w.into_vec()
        };
        let from = Sender {
            user: "alice",
            conn: "n1.1.1",
        };
        let frame = protocol::encode_msg_frame("chat:a", "chat", &data, 5, "ep", 1000, Some(from));
        let mut positions = Positions::default();
        positions.saw("chat:gone", "x", 1);
        let packet = own(&frame, &mut positions, |r| r != "chat:gone").unwrap();
        let Body::Event { id, name, args } = packet.body else {
            panic!()
        };
        assert_eq!((id, name.as_str()), (None, "chat"));
        assert_eq!(args[0], obj(&[("b", SioValue::Binary(vec![9, 9]))]));
        assert_eq!(args[1].get("seq"), Some(&num(5)));
        assert_eq!(args[1].get("room"), Some(&SioValue::str("chat:a")));
        assert_eq!(
            args[1].get("from").and_then(|f| f.get("user")),
            Some(&SioValue::str("alice"))
        );
        let offset = args[2].as_str().unwrap();
        assert_eq!(offset, r#"[["chat:a","ep",5]]"#);
        let parsed = parse_offset(offset).unwrap();
        assert_eq!(parsed[0].0, "chat:a");
        assert_eq!(parsed[0].1.seq, 5);
        assert!(parse_offset("hello").is_none());
    }

    #[test]
    fn a_shared_message_gives_each_recipient_what_its_own_transcoding_would() {
        let mut data = Writer::with_capacity(16);
        data.map(2)
            .str("b")
            .bin(&[7, 8])
            .str("q")
            .str("a \u{1}offset\u{1} \"x\"");
        let data = data.into_vec();
        let from = Sender {
            user: "alice",
            conn: "n1.1.1",
        };
        let frame = protocol::encode_msg_frame("chat:a", "chat", &data, 9, "ep", 5, Some(from));
        for kind in [ParserKind::Default, ParserKind::Msgpack] {
            let shared = SharedMessage::new(&frame, kind).expect("a room message");
            for rooms in [vec!["chat:a"], vec!["chat:a", "chat:b"]] {
                let mut mine = Positions::default();
                mine.saw("chat:b", "eb", 3);
                let mut theirs = mine.clone();
                let in_room = |r: &str| rooms.contains(&r);
                let mut got = Vec::new();
                shared.frames_for(&mut mine, in_room, &mut got);
                let packet = own(&frame, &mut theirs, in_room).unwrap();
                assert_eq!(got, encode_ws(kind, &packet), "{kind:?} {rooms:?}");
            }
        }
        let ack = protocol::encode_ack_raw(1, &protocol::ack_pub(1));
        assert!(SharedMessage::new(&ack, ParserKind::Default).is_none());
        let reserved = protocol::encode_msg_frame("r", "connect", &[0xc0], 1, "e", 1, None);
        assert!(SharedMessage::new(&reserved, ParserKind::Msgpack).is_none());
    }

    #[test]
    fn acks_and_errors_by_whether_the_client_waits() {
        let ack = protocol::encode_ack_raw(4, &protocol::ack_pub(12));
        let mut p = Positions::default();
        let packet = own(&ack, &mut p, |_| true).unwrap();
        assert_eq!(
            packet.body,
            Body::Ack {
                id: 4,
                args: vec![obj(&[("seq", num(12))])]
            }
        );
        let rpc = protocol::encode_ack_raw(5, &protocol::ack_rpc(&[0x92, 1, 2]));
        let Body::Ack { args, .. } = own(&rpc, &mut p, |_| true).unwrap().body else {
            panic!()
        };
        assert_eq!(
            args,
            vec![SioValue::Array(vec![num(1), num(2)])],
            "the reply itself"
        );
        let silent = protocol::encode_ack_raw(-3, &protocol::ack_pub(12));
        assert!(own(&silent, &mut p, |_| true).is_none());
        let err = protocol::encode_err(Some(4), ErrorCode::NotMember, "join first", None);
        let Body::Ack { args, .. } = own(&err, &mut p, |_| true).unwrap().body else {
            panic!()
        };
        assert_eq!(
            args[0].get("error").and_then(|e| e.get("code")),
            Some(&SioValue::str("not_member"))
        );
        let unsolicited = protocol::encode_err(Some(-2), ErrorCode::RateLimited, "slow", Some(50));
        let Body::Event { name, args, .. } = own(&unsolicited, &mut p, |_| true).unwrap().body
        else {
            panic!()
        };
        assert_eq!(name, "broker:error");
        assert_eq!(args[0].get("retry_ms"), Some(&num(50)));
        for ev in [
            "disconnect",
            "connect",
            "broker:presence-event",
            "broker:error",
        ] {
            let spoof = protocol::encode_msg_frame("r", ev, &[0xc0], 1, "e", 1, None);
            assert!(own(&spoof, &mut p, |_| true).is_none(), "{ev}");
            let publish = request(
                1,
                "broker:publish",
                vec![obj(&[
                    ("room", SioValue::str("r")),
                    ("ev", SioValue::str(ev)),
                ])],
            );
            assert!(publish.unwrap_err().contains("reserved"), "{ev}");
        }
        let join = protocol::encode_ack_raw(-4, &protocol::ack_join("chat:j", 7, "ej", false));
        let Body::Event { name, args, .. } =
            offset_event(&join, &mut p, |r| r == "chat:j").unwrap().body
        else {
            panic!()
        };
        assert_eq!(name, OFFSET_EVENT);
        assert_eq!(args, vec![SioValue::str(r#"[["chat:j","ej",7]]"#)]);
        let leave = protocol::encode_ack_raw(3, &protocol::ack_empty());
        let Body::Event { args, .. } = offset_event(&leave, &mut p, |_| false).unwrap().body else {
            panic!()
        };
        assert_eq!(args, vec![SioValue::str("[]")], "the room left is gone");
        assert!(offset_event(&ack, &mut p, |_| true).is_none());
        let welcome = protocol::encode_welcome("c", "u", "n", 1, 2);
        assert!(own(&welcome, &mut p, |_| true).is_none());
        let presence = protocol::encode_presence_frame("r", "bob", protocol::PresenceAction::Join);
        let Body::Event { name, args, .. } = own(&presence, &mut p, |_| true).unwrap().body else {
            panic!()
        };
        assert_eq!(name, "broker:presence-event");
        assert_eq!(args[0].get("action"), Some(&SioValue::str("join")));
    }
}
