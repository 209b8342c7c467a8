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
    let mut buf = Vec::with_capacity(12);
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut buf, 2);
    let _ = rmp::encode::write_uint(&mut buf, sent_ns);
    let _ = rmp::encode::write_uint(&mut buf, u64::from(phase));
    buf
}

/// Reads a payload written by [`payload`]: `(sent_ns, phase)`.
pub fn read_payload(data: &[u8]) -> Option<(u64, u8)> {
    let mut cur = Cursor { buf: data, pos: 0 };
    match cur.item()? {
        Item::Array(2) => {}
        _ => return None,
    }
    let Item::Uint(sent) = cur.item()? else {
        return None;
    };
    let Item::Uint(phase) = cur.item()? else {
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
    let mut cur = Cursor { buf: bytes, pos: 0 };
    let Item::Map(n) = cur.item()? else {
        return None;
    };
    let (mut t, mut room, mut epoch, mut seq, mut data, mut id) =
        (None, None, None, None, None, None);
    for _ in 0..n {
        let Item::Str(key) = cur.item()? else {
            return None;
        };
        match key {
            "t" => match cur.item()? {
                Item::Str(s) => t = Some(s),
                _ => return None,
            },
            "room" => match cur.item()? {
                Item::Str(s) => room = Some(s),
                _ => return None,
            },
            "epoch" => match cur.item()? {
                Item::Str(s) => epoch = Some(s),
                _ => return None,
            },
            "seq" => match cur.item()? {
                Item::Uint(v) => seq = Some(v),
                _ => return None,
            },
            "id" => match cur.item()? {
                Item::Uint(v) => id = i64::try_from(v).ok(),
                Item::Int(v) => id = Some(v),
                _ => return None,
            },
            "data" => {
                let start = cur.pos;
                cur.skip_value()?;
                data = Some(&bytes[start..cur.pos]);
            }
            _ => cur.skip_value()?,
        }
    }
    if cur.pos != bytes.len() {
        return None;
    }
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

/// One MessagePack header (and a scalar's content).
#[derive(Clone, Copy)]
enum Item<'a> {
    Uint(u64),
    Int(i64),
    Str(&'a str),
    Array(usize),
    Map(usize),
    /// nil, bool, float, bin, ext: already skipped.
    Scalar,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        )
    }

    fn skip(&mut self, n: usize) -> Option<Item<'a>> {
        self.take(n)?;
        Some(Item::Scalar)
    }

    fn item(&mut self) -> Option<Item<'a>> {
        let marker = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(match marker {
            0x00..=0x7f => Item::Uint(u64::from(marker)),
            0x80..=0x8f => Item::Map(usize::from(marker & 0x0f)),
            0x90..=0x9f => Item::Array(usize::from(marker & 0x0f)),
            0xa0..=0xbf => {
                let s = self.take(usize::from(marker & 0x1f))?;
                Item::Str(std::str::from_utf8(s).ok()?)
            }
            0xc0 | 0xc2 | 0xc3 => Item::Scalar,
            0xc1 => return None,
            0xc4..=0xc6 => {
                let n = self.be(1 << (marker - 0xc4))? as usize;
                self.skip(n)?
            }
            0xc7..=0xc9 => {
                let n = self.be(1 << (marker - 0xc7))? as usize;
                self.skip(n.checked_add(1)?)?
            }
            0xca => self.skip(4)?,
            0xcb => self.skip(8)?,
            0xcc..=0xcf => Item::Uint(self.be(1 << (marker - 0xcc))?),
            0xd0 => Item::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Item::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Item::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Item::Int(self.be(8)? as i64),
            0xd4..=0xd8 => self.skip(1 + (1 << (marker - 0xd4)))?,
            0xd9..=0xdb => {
                let n = self.be(1 << (marker - 0xd9))? as usize;
                Item::Str(std::str::from_utf8(self.take(n)?).ok()?)
            }
            0xdc | 0xdd => Item::Array(self.be(2 << (marker - 0xdc))? as usize),
            0xde | 0xdf => Item::Map(self.be(2 << (marker - 0xde))? as usize),
            0xe0..=0xff => Item::Int(i64::from(marker as i8)),
        })
    }

    /// Skips one whole value, containers included, without recursion: a
    /// count of the values still owed.
    fn skip_value(&mut self) -> Option<()> {
        let mut owed: usize = 1;
        while owed > 0 {
            owed -= 1;
            match self.item()? {
                Item::Array(n) => owed = owed.checked_add(n)?,
                Item::Map(n) => owed = owed.checked_add(n.checked_mul(2)?)?,
                _ => {}
            }
            // Every owed value takes at least one byte.
            if owed > self.buf.len() - self.pos {
                return None;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::protocol::{encode_ack_raw, encode_err, encode_welcome, ErrorCode};
    use broker::wire::{encode_msg_frame, encode_presence_frame, PresenceAction, Sender};

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
