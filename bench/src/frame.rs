//! The few protocol frames the tool reads on its hot path, scanned in place.
//!
//! A fan-out run delivers hundreds of thousands of `msg` frames a second to
//! this process, which shares the machine's cores with the gateways it
//! measures. [`broker::protocol::decode_server_frame`] builds owned strings
//! and a `serde_json::Value` for every frame; here a `msg` or an `ack` is
//! walked once, borrowing from the buffer, and only the fields the figures
//! need are kept. Any other frame (welcome, err, presence...) goes through
//! the project's own decoder, so the two can never disagree on those.
//!
//! The payload the tool publishes is a MessagePack array `[sent_ns, phase]`:
//! the send time in nanoseconds since the Unix epoch (publisher and
//! receivers share this machine's clock) and the scenario phase it belongs
//! to, so a message delivered after its phase ended is still counted there.

use broker::msgpack::{as_i64, as_str, as_uint, Item, Reader, Writer};
use broker::protocol::{decode_server_frame, ServerFrame};

/// What a server frame means to the tool.
#[derive(Debug, PartialEq)]
pub enum Incoming<'a> {
    /// A message in a room.
    Msg {
        /// The room.
        room: &'a str,
        /// The room's epoch.
        epoch: &'a str,
        /// Its sequence number in the room.
        seq: u64,
        /// The raw MessagePack `data`.
        data: &'a [u8],
    },
    /// A request succeeded.
    Ack {
        /// The request id.
        id: i64,
    },
    /// A request failed, or the server reports a problem.
    Err {
        /// The request id, when it answers one.
        id: Option<i64>,
        /// The contract's error code.
        code: String,
        /// Detail.
        msg: String,
    },
    /// The first frame of a connection.
    Welcome,
    /// Anything else (presence, expiring): counted, not used.
    Other,
    /// Not a frame the protocol allows.
    Invalid(String),
}

/// Reads one server frame.
pub fn parse(bytes: &[u8]) -> Incoming<'_> {
    match scan(bytes) {
        Some(Fast::Msg {
            room,
            epoch,
            seq,
            data,
        }) => Incoming::Msg {
            room,
            epoch,
            seq,
            data,
        },
        Some(Fast::Ack { id }) => Incoming::Ack { id },
        None => match decode_server_frame(bytes) {
            Ok(ServerFrame::Err { id, code, msg, .. }) => Incoming::Err { id, code, msg },
            Ok(ServerFrame::Welcome { .. }) => Incoming::Welcome,
            Ok(ServerFrame::Ack { id, .. }) => Incoming::Ack { id },
            Ok(ServerFrame::Msg { .. }) => {
                Incoming::Invalid("msg frame the scanner refused".into())
            }
            Ok(_) => Incoming::Other,
            Err(err) => Incoming::Invalid(err.reason),
        },
    }
}

/// Encodes the benchmark payload `[sent_ns, phase]`.
pub fn payload(sent_ns: u64, phase: u8) -> Vec<u8> {
    let mut out = Writer::with_capacity(12);
    out.array(2).uint(sent_ns).uint(u64::from(phase));
    out.into_vec()
}

/// Reads a payload written by [`payload`]: `(sent_ns, phase)`.
pub fn read_payload(data: &[u8]) -> Option<(u64, u8)> {
    let mut r = Reader::new(data);
    let Item::Array(2) = r.item().ok()? else {
        return None;
    };
    let Item::Uint(sent) = r.item().ok()? else {
        return None;
    };
    let Item::Uint(phase) = r.item().ok()? else {
        return None;
    };
    Some((sent, u8::try_from(phase).ok()?))
}

enum Fast<'a> {
    Msg {
        room: &'a str,
        epoch: &'a str,
        seq: u64,
        data: &'a [u8],
    },
    Ack {
        id: i64,
    },
}

/// The fast path: a `msg` with `room`, `epoch`, `seq` and `data`, or an `ack` with
/// `id`. `None` for anything else, including malformed input.
fn scan(bytes: &[u8]) -> Option<Fast<'_>> {
    let mut r = Reader::new(bytes);
    let Item::Map(n) = r.item().ok()? else {
        return None;
    };
    let (mut t, mut room, mut epoch, mut seq, mut data, mut id) =
        (None, None, None, None, None, None);
    for _ in 0..n {
        let Item::Str(key) = r.item().ok()? else {
            return None;
        };
        let value = r.value().ok()?;
        match key {
            "t" => t = Some(as_str(value)?),
            "room" => room = Some(as_str(value)?),
            "epoch" => epoch = Some(as_str(value)?),
            "seq" => seq = Some(as_uint(value)?),
            "id" => id = Some(as_i64(value)?),
            "data" => data = Some(value),
            _ => {}
        }
    }
    r.finish().ok()?;
    match t? {
        "msg" => Some(Fast::Msg {
            room: room?,
            epoch: epoch?,
            seq: seq?,
            data: data?,
        }),
        "ack" => {
            data?;
            Some(Fast::Ack { id: id? })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::protocol::{encode_ack_raw, encode_err, encode_welcome, ErrorCode};
    use broker::protocol::{encode_msg_frame, encode_presence_frame, PresenceAction, Sender};

    #[test]
    fn reads_msg_frames_as_the_module_writes_them() {
        let data = payload(1_700_000_000_123_456_789, 2);
        for from in [
            None,
            Some(Sender {
                user: "u1",
                conn: "c-1",
            }),
        ] {
            let frame = encode_msg_frame("chat:bench", "b", &data, 77, "ep", 5, from);
            assert_eq!(
                parse(&frame),
                Incoming::Msg {
                    room: "chat:bench",
                    epoch: "ep",
                    seq: 77,
                    data: &data
                }
            );
        }
        assert_eq!(read_payload(&data), Some((1_700_000_000_123_456_789, 2)));
        assert_eq!(read_payload(&[0xc0]), None);
    }

    #[test]
    fn reads_acks_errs_and_the_rest() {
        let ack = encode_ack_raw(-5, &broker::protocol::ack_pub(9));
        assert_eq!(parse(&ack), Incoming::Ack { id: -5 });
        let ack = encode_ack_raw(i64::MAX, &broker::protocol::ack_empty());
        assert_eq!(parse(&ack), Incoming::Ack { id: i64::MAX });
        let err = encode_err(Some(3), ErrorCode::RateLimited, "slow", Some(10));
        assert_eq!(
            parse(&err),
            Incoming::Err {
                id: Some(3),
                code: "rate_limited".into(),
                msg: "slow".into()
            }
        );
        assert_eq!(
            parse(&encode_welcome("c", "u", "n", 1, 2)),
            Incoming::Welcome
        );
        let presence = encode_presence_frame("chat:a", "u", PresenceAction::Join);
        assert_eq!(parse(&presence), Incoming::Other);
        assert!(matches!(parse(&[0x93, 1, 2]), Incoming::Invalid(_)));
        // Truncated frames are refused, never read past the end.
        for cut in 0..ack.len() {
            assert!(matches!(parse(&ack[..cut]), Incoming::Invalid(_)));
        }
    }
}
