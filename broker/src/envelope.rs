//! The node channel: what the module sends to each gateway node over Pub/Sub
//! (`broker:node:<node>` or its sharded form), and its decoder in the
//! gateway.
//!
//! An envelope is a MessagePack array whose first element names its kind.
//! It wraps a client-bound frame the module encoded once (as `bin`), so the
//! gateway forwards the same bytes to every local member: [`decode_envelope`]
//! borrows the frame from the received message instead of copying it.

use crate::msgpack::{Item, Reader, WireError, Writer};

/// One decoded node channel envelope, borrowing from the received bytes.
///
/// `frame` is a sub-slice of the input, so a gateway holding the message as
/// `Bytes` can `slice_ref` it and fan it out without copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// A room message: send `frame` to every local member of `room` except
    /// the connection `except`.
    Msg {
        /// The room.
        room: &'a str,
        /// The message's sequence number in the room.
        seq: u64,
        /// The room's epoch.
        epoch: &'a str,
        /// A connection that must not receive it (`others: true`).
        except: Option<&'a str>,
        /// The encoded `msg` frame.
        frame: &'a [u8],
        /// Publish time (ms since the Unix epoch), for latency metrics.
        ts: u64,
    },
    /// A server broadcast: send `frame` to every local connection, or with
    /// `namespace`, to every local connection in a room of that namespace.
    Broadcast {
        /// Restricts the broadcast to members of this namespace's rooms.
        namespace: Option<&'a str>,
        /// The encoded `msg` frame.
        frame: &'a [u8],
        /// Publish time (ms since the Unix epoch).
        ts: u64,
    },
    /// A presence event: send `frame` to every local member of `room`.
    Presence {
        /// The room.
        room: &'a str,
        /// The room's epoch.
        epoch: &'a str,
        /// The encoded `presence` frame.
        frame: &'a [u8],
    },
    /// An ephemeral room message (`pub` with `volatile`): send `frame` to
    /// the local members of `room` except `except`, skipping those whose
    /// send queue is over half full. It has no sequence number.
    Volatile {
        /// The room.
        room: &'a str,
        /// A connection that must not receive it (`others: true`).
        except: Option<&'a str>,
        /// The encoded `msg` frame (`seq` 0, `volatile: true`).
        frame: &'a [u8],
        /// Publish time (ms since the Unix epoch).
        ts: u64,
    },
    /// A backend's answer to an `rpc` of the local connection `conn`.
    RpcReply {
        /// The connection that sent the `rpc`.
        conn: &'a str,
        /// The `rpc`'s request id.
        id: i64,
        /// The encoded `ack` or `err` frame for the client.
        frame: &'a [u8],
    },
    /// Close these local connections of `user` with `reason`.
    Kick {
        /// The user being kicked.
        user: &'a str,
        /// The user's connections on this node.
        conns: Vec<&'a str>,
        /// Close reason for the client.
        reason: &'a str,
    },
    /// Put these local connections of `user` into `room` (`join`), or take
    /// them out: `BROKER.USER.JOIN` / `USER.LEAVE`.
    Membership {
        /// The user.
        user: &'a str,
        /// The user's connections on this node.
        conns: Vec<&'a str>,
        /// The room.
        room: &'a str,
        /// True to join, false to leave.
        join: bool,
    },
}

/// Wraps a `msg` frame for a node channel: `["msg", room, seq, epoch,
/// except_conn | nil, frame (bin), ts]`.
pub fn encode_msg_envelope(
    room: &str,
    seq: u64,
    epoch: &str,
    except: Option<&str>,
    frame: &[u8],
    ts: u64,
) -> Vec<u8> {
    let except_len = except.map_or(0, str::len);
    let mut out = Writer::with_capacity(40 + room.len() + epoch.len() + except_len + frame.len());
    out.array(7)
        .str("msg")
        .str(room)
        .uint(seq)
        .str(epoch)
        .opt_str(except)
        .bin(frame)
        .uint(ts);
    out.into_vec()
}

/// Wraps a broadcast `msg` frame for a node channel: `["broadcast",
/// namespace | nil, frame (bin), ts]`.
pub fn encode_broadcast_envelope(namespace: Option<&str>, frame: &[u8], ts: u64) -> Vec<u8> {
    let mut out = Writer::with_capacity(32 + namespace.map_or(0, str::len) + frame.len());
    out.array(4)
        .str("broadcast")
        .opt_str(namespace)
        .bin(frame)
        .uint(ts);
    out.into_vec()
}

/// Wraps a `presence` frame for a node channel: `["presence", room, 0, epoch,
/// nil, frame (bin)]` -- the same shape as a message, so a gateway can share
/// the fan-out path.
pub fn encode_presence_envelope(room: &str, epoch: &str, frame: &[u8]) -> Vec<u8> {
    let mut out = Writer::with_capacity(32 + room.len() + epoch.len() + frame.len());
    out.array(6)
        .str("presence")
        .str(room)
        .uint(0)
        .str(epoch)
        .nil()
        .bin(frame);
    out.into_vec()
}

/// Wraps an ephemeral `msg` frame for a node channel: `["volatile", room,
/// except_conn | nil, frame (bin), ts]`.
pub fn encode_volatile_envelope(
    room: &str,
    except: Option<&str>,
    frame: &[u8],
    ts: u64,
) -> Vec<u8> {
    let except_len = except.map_or(0, str::len);
    let mut out = Writer::with_capacity(32 + room.len() + except_len + frame.len());
    out.array(5)
        .str("volatile")
        .str(room)
        .opt_str(except)
        .bin(frame)
        .uint(ts);
    out.into_vec()
}

/// Wraps a backend's answer to an `rpc` for the node of `conn`:
/// `["rpc", conn, id, frame (bin)]`.
pub fn encode_rpc_reply_envelope(conn: &str, id: i64, frame: &[u8]) -> Vec<u8> {
    let mut out = Writer::with_capacity(24 + conn.len() + frame.len());
    out.array(4).str("rpc").str(conn).int(id).bin(frame);
    out.into_vec()
}

/// Tells a node to close connections: `["kick", user, [conn...], reason]`.
pub fn encode_kick_envelope(user: &str, conns: &[&str], reason: &str) -> Vec<u8> {
    let conns_len: usize = conns.iter().map(|c| c.len() + 5).sum();
    let mut out = Writer::with_capacity(24 + user.len() + conns_len + reason.len());
    out.array(4).str("kick").str(user).array(conns.len());
    for conn in conns {
        out.str(conn);
    }
    out.str(reason);
    out.into_vec()
}

/// Tells a node to put connections of a user into a room, or take them out
/// (`BROKER.USER.JOIN` / `USER.LEAVE`): `["membership", user, [conn...],
/// room, "join" | "leave"]`.
pub fn encode_membership_envelope(user: &str, conns: &[&str], room: &str, join: bool) -> Vec<u8> {
    let conns_len: usize = conns.iter().map(|c| c.len() + 5).sum();
    let mut out = Writer::with_capacity(40 + user.len() + conns_len + room.len());
    out.array(5).str("membership").str(user).array(conns.len());
    for conn in conns {
        out.str(conn);
    }
    out.str(room).str(if join { "join" } else { "leave" });
    out.into_vec()
}

/// The next element, which must be an array of `str`.
fn texts<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a str>, WireError> {
    let count = match r.item()? {
        Item::Array(n) => n,
        _ => return Err(WireError::InvalidEnvelope),
    };
    // `item` bounded `count` by the input length.
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(text(r)?);
    }
    Ok(out)
}

/// The next element of an envelope, which must be a `str`.
fn text<'a>(r: &mut Reader<'a>) -> Result<&'a str, WireError> {
    match r.item()? {
        Item::Str(s) => Ok(s),
        _ => Err(WireError::InvalidEnvelope),
    }
}

/// The next element, which must be a `str` or `nil`.
fn opt_text<'a>(r: &mut Reader<'a>) -> Result<Option<&'a str>, WireError> {
    match r.item()? {
        Item::Str(s) => Ok(Some(s)),
        Item::Nil => Ok(None),
        _ => Err(WireError::InvalidEnvelope),
    }
}

/// The next element, which must be a non-negative integer.
fn number(r: &mut Reader<'_>) -> Result<u64, WireError> {
    match r.item()? {
        Item::Uint(n) => Ok(n),
        Item::Int(n) => u64::try_from(n).map_err(|_| WireError::InvalidEnvelope),
        _ => Err(WireError::InvalidEnvelope),
    }
}

/// The next element, which must be an integer in the i64 range.
fn signed(r: &mut Reader<'_>) -> Result<i64, WireError> {
    match r.item()? {
        Item::Int(n) => Ok(n),
        Item::Uint(n) => i64::try_from(n).map_err(|_| WireError::InvalidEnvelope),
        _ => Err(WireError::InvalidEnvelope),
    }
}

/// The next element, which must be a `bin`.
fn binary<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], WireError> {
    match r.item()? {
        Item::Bin(b) => Ok(b),
        _ => Err(WireError::InvalidEnvelope),
    }
}

/// Decodes one node channel envelope, borrowing strings and the frame from
/// `bytes`. The frame itself is not checked: the module built it.
///
/// # Errors
///
/// [`WireError::InvalidEnvelope`] for an unknown kind, a wrong element count
/// or type; [`WireError::Truncated`], [`WireError::TrailingBytes`],
/// [`WireError::NotUtf8`] as in [`crate::msgpack::check`].
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope<'_>, WireError> {
    let mut r = Reader::new(bytes);
    let len = match r.item()? {
        Item::Array(n) => n,
        _ => return Err(WireError::InvalidEnvelope),
    };
    if len == 0 {
        return Err(WireError::InvalidEnvelope);
    }
    let kind = text(&mut r)?;
    let envelope = match (kind, len) {
        ("msg", 7) => Envelope::Msg {
            room: text(&mut r)?,
            seq: number(&mut r)?,
            epoch: text(&mut r)?,
            except: opt_text(&mut r)?,
            frame: binary(&mut r)?,
            ts: number(&mut r)?,
        },
        ("broadcast", 4) => Envelope::Broadcast {
            namespace: opt_text(&mut r)?,
            frame: binary(&mut r)?,
            ts: number(&mut r)?,
        },
        ("presence", 6) => {
            let room = text(&mut r)?;
            number(&mut r)?;
            let epoch = text(&mut r)?;
            // Always nil today; a connection here is tolerated and ignored.
            opt_text(&mut r)?;
            let frame = binary(&mut r)?;
            Envelope::Presence { room, epoch, frame }
        }
        ("volatile", 5) => Envelope::Volatile {
            room: text(&mut r)?,
            except: opt_text(&mut r)?,
            frame: binary(&mut r)?,
            ts: number(&mut r)?,
        },
        ("rpc", 4) => Envelope::RpcReply {
            conn: text(&mut r)?,
            id: signed(&mut r)?,
            frame: binary(&mut r)?,
        },
        ("kick", 4) => {
            let user = text(&mut r)?;
            let conns = texts(&mut r)?;
            let reason = text(&mut r)?;
            Envelope::Kick {
                user,
                conns,
                reason,
            }
        }
        ("membership", 5) => {
            let user = text(&mut r)?;
            let conns = texts(&mut r)?;
            let room = text(&mut r)?;
            let join = match text(&mut r)? {
                "join" => true,
                "leave" => false,
                _ => return Err(WireError::InvalidEnvelope),
            };
            Envelope::Membership {
                user,
                conns,
                room,
                join,
            }
        }
        _ => return Err(WireError::InvalidEnvelope),
    };
    r.finish()?;
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::msgpack::{self, testing::mp};
    use crate::protocol::{encode_msg_frame, encode_presence_frame, PresenceAction};

    /// True when `part` points into `whole` (no copy was made).
    fn is_subslice(part: &[u8], whole: &[u8]) -> bool {
        let range = whole.as_ptr_range();
        part.is_empty() || (range.contains(&part.as_ptr()) && part.as_ptr_range().end <= range.end)
    }

    #[test]
    fn membership_envelope_round_trip() {
        for join in [true, false] {
            let bytes = encode_membership_envelope("alice", &["c1", "c2"], "support:t1", join);
            assert_eq!(msgpack::check(&bytes), Ok(()));
            assert_eq!(
                decode_envelope(&bytes).unwrap(),
                Envelope::Membership {
                    user: "alice",
                    conns: vec!["c1", "c2"],
                    room: "support:t1",
                    join,
                }
            );
        }
        let mut bad = encode_membership_envelope("alice", &["c1"], "support:t1", true);
        let n = bad.len();
        bad[n - 4..].copy_from_slice(b"jump");
        assert_eq!(decode_envelope(&bad), Err(WireError::InvalidEnvelope));
    }

    #[test]
    fn msg_envelope_round_trip() {
        let frame = encode_msg_frame("chat:lobby", "m", &[0x01], 7, "ep", 9, None);
        for except in [None, Some("c-1")] {
            let bytes = encode_msg_envelope("chat:lobby", 7, "ep", except, &frame, 9);
            assert_eq!(msgpack::check(&bytes), Ok(()));
            let env = decode_envelope(&bytes).unwrap();
            assert_eq!(
                env,
                Envelope::Msg {
                    room: "chat:lobby",
                    seq: 7,
                    epoch: "ep",
                    except,
                    frame: &frame,
                    ts: 9,
                }
            );
            let Envelope::Msg { frame: got, .. } = env else {
                unreachable!()
            };
            assert!(is_subslice(got, &bytes));
        }
        let v = msgpack::to_json(&encode_msg_envelope("a:b", 3, "ep", None, &[1, 2], 5)).unwrap();
        assert_eq!(v, json!(["msg", "a:b", 3, "ep", null, [1, 2], 5]));
    }

    #[test]
    fn broadcast_envelope_round_trip() {
        for ns in [None, Some("chat")] {
            let bytes = encode_broadcast_envelope(ns, &[0xc0], 12);
            assert_eq!(
                decode_envelope(&bytes),
                Ok(Envelope::Broadcast {
                    namespace: ns,
                    frame: &[0xc0],
                    ts: 12
                })
            );
        }
    }

    #[test]
    fn presence_envelope_round_trip() {
        let frame = encode_presence_frame("chat:lobby", "bob", PresenceAction::Leave);
        let bytes = encode_presence_envelope("chat:lobby", "ep", &frame);
        let v = msgpack::to_json(&bytes).unwrap();
        assert_eq!(v[0], json!("presence"));
        assert_eq!(v[2], json!(0));
        assert_eq!(v[4], json!(null));
        let env = decode_envelope(&bytes).unwrap();
        assert_eq!(
            env,
            Envelope::Presence {
                room: "chat:lobby",
                epoch: "ep",
                frame: &frame
            }
        );
        let Envelope::Presence { frame: got, .. } = env else {
            unreachable!()
        };
        assert!(is_subslice(got, &bytes));
    }

    #[test]
    fn kick_envelope_round_trip() {
        for conns in [vec![], vec!["c1"], vec!["c1", "c2", "c3"]] {
            let bytes = encode_kick_envelope("alice", &conns, "banned");
            assert_eq!(
                decode_envelope(&bytes),
                Ok(Envelope::Kick {
                    user: "alice",
                    conns: conns.clone(),
                    reason: "banned"
                })
            );
        }
        let bytes = encode_kick_envelope("alice", &["c1"], "");
        assert_eq!(
            msgpack::to_json(&bytes),
            Ok(json!(["kick", "alice", ["c1"], ""]))
        );
    }

    #[test]
    fn volatile_envelope_round_trip() {
        let frame =
            crate::protocol::encode_volatile_msg_frame("chat:a", "typing", &[0xc3], "ep", 4, None);
        for except in [None, Some("c-1")] {
            let bytes = encode_volatile_envelope("chat:a", except, &frame, 4);
            assert_eq!(msgpack::check(&bytes), Ok(()));
            let env = decode_envelope(&bytes).unwrap();
            assert_eq!(
                env,
                Envelope::Volatile {
                    room: "chat:a",
                    except,
                    frame: &frame,
                    ts: 4,
                }
            );
            let Envelope::Volatile { frame: got, .. } = env else {
                unreachable!()
            };
            assert!(is_subslice(got, &bytes));
        }
        let v = msgpack::to_json(&encode_volatile_envelope("a:b", None, &[1], 5)).unwrap();
        assert_eq!(v, json!(["volatile", "a:b", null, [1], 5]));
    }

    #[test]
    fn rpc_reply_envelope_round_trip() {
        for id in [0, 7, -3, i64::MAX, i64::MIN] {
            let frame = crate::protocol::encode_ack_raw(id, &crate::protocol::ack_rpc(&[0xc0]));
            let bytes = encode_rpc_reply_envelope("n1.i.3", id, &frame);
            let env = decode_envelope(&bytes).unwrap();
            assert_eq!(
                env,
                Envelope::RpcReply {
                    conn: "n1.i.3",
                    id,
                    frame: &frame
                }
            );
            let Envelope::RpcReply { frame: got, .. } = env else {
                unreachable!()
            };
            assert!(is_subslice(got, &bytes));
        }
        let bad = [
            mp(&json!(["rpc", "c", "1", [1]])),
            mp(&json!(["rpc", "c", 1])),
            mp(&json!(["rpc", 5, 1, [1]])),
            mp(&json!(["volatile", "a:b", null, [1]])),
            mp(&json!(["volatile", "a:b", 3, [1], 1])),
        ];
        for bytes in &bad {
            assert_eq!(decode_envelope(bytes), Err(WireError::InvalidEnvelope));
        }
        // An id beyond i64 is refused, not wrapped.
        let mut out = Writer::with_capacity(32);
        out.array(4).str("rpc").str("c").uint(u64::MAX).bin(&[0xc0]);
        assert_eq!(
            decode_envelope(&out.into_vec()),
            Err(WireError::InvalidEnvelope)
        );
    }

    #[test]
    fn decode_envelope_rejects_garbage() {
        let invalid = [
            mp(&json!({"t": "msg"})),
            mp(&json!([])),
            mp(&json!(["nope", "a", 1, "e", null, "x"])),
            mp(&json!(["msg", "a", 1, "e", null])),
            mp(&json!(["msg", "a", -1, "e", null, [1]])),
            mp(&json!(["msg", "a", "1", "e", null, [1]])),
            mp(&json!(["msg", 1, 1, "e", null, [1]])),
            mp(&json!(["msg", "a", 1, "e", 5, [1]])),
            // The frame as an array rather than bin.
            mp(&json!(["msg", "a", 1, "e", null, [1]])),
            mp(&json!(["kick", "u", "c1", "r"])),
            mp(&json!(["kick", "u", [1], "r"])),
            mp(&json!(["kick", "u", ["c"]])),
            mp(&json!([1, 2, 3, 4])),
        ];
        for bytes in &invalid {
            assert_eq!(
                decode_envelope(bytes),
                Err(WireError::InvalidEnvelope),
                "{bytes:02x?}"
            );
        }
        let good = encode_msg_envelope("a:b", 1, "e", None, &[0xc0], 1);
        for end in 0..good.len() {
            assert_eq!(decode_envelope(&good[..end]), Err(WireError::Truncated));
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode_envelope(&trailing), Err(WireError::TrailingBytes));
        let huge_kick = [
            0x94, 0xa4, b'k', b'i', b'c', b'k', 0xa1, b'u', 0xdd, 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(decode_envelope(&huge_kick), Err(WireError::Truncated));
    }

    /// Random bytes and random mutations of valid values never panic, and
    /// the checker, the JSON decoder and the envelope decoder agree on
    /// what is well-formed.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            encode_msg_envelope("a:b", 9, "ep", Some("c"), &[0x81, 0xa1, b'k', 0x01], 3),
            encode_kick_envelope("u", &["c1", "c2"], "bye"),
            mp(&json!({"a": [1, -2, 3.5, "x", null, true, {"b": [[], {}]}]})),
        ];
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 24) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut b = seeds[round % seeds.len()].clone();
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
                if next() % 4 == 0 {
                    b.truncate((next() as usize) % (b.len() + 1));
                }
                b
            };
            let checked = msgpack::check(&bytes);
            assert_eq!(
                msgpack::to_json(&bytes).map(|_| ()),
                checked,
                "{bytes:02x?}"
            );
            if decode_envelope(&bytes).is_ok() {
                assert_eq!(checked, Ok(()), "{bytes:02x?}");
            }
        }
    }
}
