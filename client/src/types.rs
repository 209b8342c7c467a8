//! What the client hands to its user: messages, events, answers and errors.

use std::time::Duration;

use broker::protocol::{ErrorCode, ServerFrame};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The gateway refused the WebSocket upgrade with this HTTP status (401
    /// bad token, 403 origin, 429 connection limit).
    #[error("upgrade refused with HTTP {0}")]
    Refused(u16),
    /// The connection could not be made (I/O, handshake, no `welcome`).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The server closed the connection with this code before the `welcome`.
    #[error("closed by the server with {code}: {reason}")]
    CloseCode {
        /// The WebSocket close code (PROTOCOL.md, close codes).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The server answered with `err`.
    #[error("{code}: {msg}")]
    Server {
        /// The contract's error code (`not_member`, `rate_limited`, ...).
        code: String,
        /// Human-readable detail.
        msg: String,
        /// When to retry, for `rate_limited`.
        retry_ms: Option<u64>,
    },
    /// A backend answered the `rpc` with `BROKER.RPC.ERROR` (the server's
    /// `err` `rpc_error`).
    #[error("rpc_error {code}: {msg}")]
    Rpc {
        /// The backend's own code (the frame's `rpc_code`).
        code: String,
        /// The backend's message.
        msg: String,
    },
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection dropped before the answer came; the request may or may
    /// not have been carried out.
    #[error("disconnected before the answer")]
    Disconnected,
    /// The client was closed, or gave up reconnecting.
    #[error("client closed")]
    Closed,
    /// This client already has a subscription to the room.
    #[error("already joined {0}")]
    AlreadyJoined(String),
    /// The token provider failed.
    #[error("token provider: {0}")]
    Token(String),
    /// The data could not be encoded as MessagePack.
    #[error("encoding the data: {0}")]
    Encode(String),
    /// The server's answer did not have the documented shape.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl Error {
    /// The contract's error code of an `err` answer.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => ErrorCode::parse(code),
            Error::Rpc { .. } => Some(ErrorCode::RpcError),
            _ => None,
        }
    }
}

/// The `welcome` of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The connection id.
    pub conn: String,
    /// The user (the token's `sub`).
    pub user: String,
    /// The gateway node serving it.
    pub node: String,
    /// The token's expiry, Unix seconds.
    pub exp: u64,
}

/// A message in a room.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The room (`*` or `namespace:*` for a broadcast).
    pub room: String,
    /// Event name.
    pub ev: String,
    /// The payload (MessagePack decoded into JSON terms).
    pub data: Value,
    /// Sequence number in the room (0 for broadcasts and personal messages).
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// Publish time, ms since the Unix epoch.
    pub ts: u64,
    /// `(user, conn)` of the publishing client, when a client published.
    pub from: Option<(String, String)>,
    /// An ephemeral message (`seq` 0, never in history or a recovery).
    pub volatile: bool,
}

impl Message {
    /// The payload as a `T`.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }

    /// From a decoded `msg` frame.
    pub(crate) fn from_frame(frame: ServerFrame) -> Option<Message> {
        match frame {
            ServerFrame::Msg {
                room,
                ev,
                data,
                seq,
                epoch,
                ts,
                from,
                volatile,
            } => Some(Message {
                room,
                ev,
                data,
                seq,
                epoch,
                ts,
                from,
                volatile,
            }),
            _ => None,
        }
    }

    /// From a `msg` frame inside a `history` ack (already in JSON terms).
    fn from_json(v: &Value) -> Result<Message, Error> {
        let s = |k: &str| -> Result<String, Error> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| Error::Protocol(format!("history message without {k}: {v}")))
        };
        let from = v.get("from").and_then(|f| {
            Some((
                f.get("user")?.as_str()?.to_owned(),
                f.get("conn")?.as_str()?.to_owned(),
            ))
        });
        Ok(Message {
            room: s("room")?,
            ev: s("ev")?,
            data: v.get("data").cloned().unwrap_or(Value::Null),
            seq: field_u64(v, "seq")?,
            epoch: s("epoch")?,
            ts: field_u64(v, "ts")?,
            from,
            volatile: false,
        })
    }
}

/// What a [`crate::Subscription`] delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// A message, in `seq` order, never twice.
    Msg(Message),
    /// A user's first connection joined or last one left.
    Presence {
        /// The user.
        user: String,
        /// `join` or `leave`.
        action: String,
    },
    /// After a reconnect, the server could not replay every missed message
    /// (history too short or the room was reset): some were lost.
    RecoveryFailed,
    /// The gateway's own link to Redis dropped and history no longer held
    /// some of the room's messages (the server's `missed` frame): they are
    /// lost for this connection, and a rejoin with `since` will not bring
    /// them back. Reload the room's state from your application; messages
    /// continue after `seq`.
    Missed {
        /// The room's epoch now.
        epoch: String,
        /// The room's sequence number after the gap.
        seq: u64,
        /// How many messages were lost, when known.
        count: Option<u64>,
    },
}

/// Connection-level events, from [`crate::Client::events`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Connected (again); every subscription is being joined again.
    Connected(Session),
    /// The connection dropped; `code` is the WebSocket close code (1006
    /// when there was none).
    Disconnected {
        /// Close code.
        code: u16,
        /// Close reason, or what went wrong.
        reason: String,
    },
    /// The next reconnect attempt comes after `delay`.
    Reconnecting {
        /// 1-based attempt number since the last connection.
        attempt: u32,
        /// Wait before it.
        delay: Duration,
    },
    /// A subscribed room could not be fully recovered after a reconnect.
    RecoveryFailed {
        /// The room.
        room: String,
    },
    /// Messages of a room were lost for this connection (the server's
    /// `missed` frame; see [`RoomEvent::Missed`]). Also sent for a room
    /// without a subscription.
    Missed {
        /// The room.
        room: String,
        /// The room's epoch now.
        epoch: String,
        /// The room's sequence number after the gap.
        seq: u64,
        /// How many messages were lost, when known.
        count: Option<u64>,
    },
    /// The backend put this connection into a room (`BROKER.USER.JOIN`);
    /// its messages after `seq` arrive as [`Event::Message`].
    Joined {
        /// The room.
        room: String,
        /// The room's sequence number at the join.
        seq: u64,
        /// The room's epoch.
        epoch: String,
    },
    /// The backend took this connection out of a room (`BROKER.USER.LEAVE`).
    Left {
        /// The room.
        room: String,
    },
    /// The server accepted a refreshed token (after `expiring`).
    Refreshed {
        /// The new token's expiry, Unix seconds.
        exp: u64,
    },
    /// A message for no subscription: the personal room `user:<sub>` or a
    /// broadcast.
    Message(Message),
    /// An `err` frame that answers no request (e.g. `bad_frame`).
    Error {
        /// Error code.
        code: String,
        /// Detail.
        msg: String,
    },
    /// The client stopped for good: closed, or gave up (4003, or 4001
    /// without a token provider, or reconnecting turned off).
    Closed {
        /// Why.
        reason: String,
    },
}

/// The `ack` of a `join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAck {
    /// The room's sequence number at the join.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// Whether every message after the given `since` was replayed.
    pub recovered: bool,
}

impl JoinAck {
    pub(crate) fn from_ack(v: &Value) -> Result<JoinAck, Error> {
        Ok(JoinAck {
            seq: field_u64(v, "seq")?,
            epoch: field_str(v, "epoch"),
            recovered: v.get("recovered").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

/// The `ack` of a `presence` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// `(user, connections)` of each user in the room.
    pub users: Vec<(String, u64)>,
    /// Number of users.
    pub count: u64,
    /// Set when this is one page of a bigger room: the `after` of the
    /// next page ([`crate::Client::presence`] reads every page).
    pub next: Option<String>,
}

impl Presence {
    pub(crate) fn from_ack(v: &Value) -> Result<Presence, Error> {
        let users = field_array(v, "users")?
            .iter()
            .map(|u| {
                let user = u.get("user").and_then(Value::as_str).unwrap_or_default();
                (
                    user.to_owned(),
                    u.get("conns").and_then(Value::as_u64).unwrap_or(0),
                )
            })
            .collect();
        Ok(Presence {
            users,
            count: field_u64(v, "count")?,
            next: v.get("next").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// The `ack` of a `history` request.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Retained messages, oldest first.
    pub messages: Vec<Message>,
    /// The room's current sequence number.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// True when retained messages follow the last one given (the answer
    /// was capped by size): ask again with `since` = its `seq`.
    pub more: bool,
}

impl History {
    pub(crate) fn from_ack(v: &Value) -> Result<History, Error> {
        let messages = field_array(v, "messages")?
            .iter()
            .map(Message::from_json)
            .collect::<Result<_, _>>()?;
        Ok(History {
            messages,
            seq: field_u64(v, "seq")?,
            epoch: field_str(v, "epoch"),
            more: v.get("more").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

/// The array field `key` of an answer.
fn field_array<'a>(v: &'a Value, key: &str) -> Result<&'a Vec<Value>, Error> {
    v.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Protocol(format!("no array {key} in {v}")))
}

/// The string field `key` of an answer, empty when missing.
fn field_str(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The unsigned integer field `key` of an answer.
pub(crate) fn field_u64(v: &Value, key: &str) -> Result<u64, Error> {
    v.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::Protocol(format!("no integer {key} in {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_ack_parses_messages() {
        let ack = json!({
            "seq": 7, "epoch": "e1",
            "messages": [
                {"t": "msg", "room": "chat:a", "ev": "m", "data": {"x": 1}, "seq": 6, "epoch": "e1", "ts": 10,
                 "from": {"user": "u", "conn": "c"}},
                {"t": "msg", "room": "chat:a", "ev": "m", "data": null, "seq": 7, "epoch": "e1", "ts": 11},
            ],
        });
        let h = History::from_ack(&ack).unwrap();
        assert_eq!((h.seq, h.epoch.as_str(), h.messages.len()), (7, "e1", 2));
        assert_eq!(h.messages[0].from, Some(("u".into(), "c".into())));
        assert_eq!(
            h.messages[0].data_as::<serde_json::Map<_, _>>().unwrap()["x"],
            1
        );
        assert_eq!(h.messages[1].from, None);
        assert!(History::from_ack(&json!({"seq": 1})).is_err());
    }

    #[test]
    fn presence_and_join_acks_parse() {
        let p =
            Presence::from_ack(&json!({"users": [{"user": "a", "conns": 2}], "count": 1})).unwrap();
        assert_eq!(p.users, vec![("a".to_owned(), 2)]);
        let j =
            JoinAck::from_ack(&json!({"room": "r:x", "seq": 3, "epoch": "e", "recovered": true}))
                .unwrap();
        assert_eq!(
            j,
            JoinAck {
                seq: 3,
                epoch: "e".into(),
                recovered: true
            }
        );
        assert_eq!(
            Error::Server {
                code: "not_member".into(),
                msg: String::new(),
                retry_ms: None
            }
            .code(),
            Some(ErrorCode::NotMember)
        );
    }
}
