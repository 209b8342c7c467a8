//! Messages: `PUBLISH`, `BROADCAST`, and the replication forms
//! `APPLY.PUBLISH` (a publish as the master decided it) and `APPLY.DROP`
//! (the master's sweep dropping an idle room).

use super::args::{number, text, unknown, Arg, Args, ParseError};
use super::{Command, Keys};
use crate::gcra::Rate;
use crate::names;
use crate::payload::Format;
use crate::registry::HistoryConfig;

/// Longest event name accepted.
pub const MAX_EVENT_LEN: usize = 256;

/// The `RATE key burst count period` option of a publish: a GCRA limit on
/// the key (redis-cell's figures, `burst` = `max_burst + 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The rate-limit key (any bytes; a key of the command).
    pub key: Vec<u8>,
    /// The limit.
    pub rate: Rate,
}

/// `BROKER.PUBLISH room event payload [FORMAT f] [FROM conn] [EXCEPT conn]
/// [HISTORY size ttl_s] [RATE key burst count period] [VOLATILE]`:
/// sequence, history and fan-out in one call. Replicated as the
/// [`ApplyPublish`] the master built ([`Publish::applied`]). With
/// `VOLATILE` the message gets no sequence number and is not stored
/// (`HISTORY` is then ignored): nothing is replicated but the rate
/// limit's arrival time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The room.
    pub room: String,
    /// The event name (1 to [`MAX_EVENT_LEN`] bytes).
    pub event: String,
    /// The payload, in `format`.
    pub payload: Vec<u8>,
    /// How to read the payload.
    pub format: Format,
    /// The sending connection, which must be a member (`FROM`).
    pub from: Option<String>,
    /// A connection not to deliver to (`EXCEPT`).
    pub except: Option<String>,
    /// History settings for the room (`HISTORY size ttl_s`).
    pub history: Option<HistoryConfig>,
    /// A rate limit to pass first (`RATE`).
    pub rate: Option<RateLimit>,
    /// An ephemeral message: no sequence, no history (`VOLATILE`).
    pub volatile: bool,
}

impl Publish {
    /// A publish of `payload` (MessagePack) with no option.
    pub fn new(room: &str, event: &str, payload: &[u8]) -> Publish {
        Publish::owned(room.to_string(), event.to_string(), payload.to_vec())
    }

    /// [`Publish::new`] from owned parts (what `parse` read).
    fn owned(room: String, event: String, payload: Vec<u8>) -> Publish {
        Publish {
            room,
            event,
            payload,
            format: Format::Msgpack,
            from: None,
            except: None,
            history: None,
            rate: None,
            volatile: false,
        }
    }

    /// Tells Redis (`COMMAND GETKEYS`, cluster routing) which arguments are
    /// keys: positions in `args` (after the command name) of the room and
    /// of the key after `RATE` when there is one. Reads the words only, so
    /// it answers for arguments that would not parse.
    pub fn key_positions<A: AsRef<[u8]>>(args: &[A]) -> Vec<usize> {
        let mut keys = vec![0];
        let mut pos = 3;
        while pos < args.len() {
            let takes = match args[pos].as_ref().to_ascii_uppercase().as_slice() {
                b"FORMAT" | b"EXCEPT" | b"FROM" => 1,
                b"HISTORY" => 2,
                b"RATE" => {
                    if pos + 1 < args.len() {
                        keys.push(pos + 1);
                    }
                    4
                }
                _ => 0,
            };
            pos += 1 + takes;
        }
        keys
    }

    /// The replication form of this publish, once the master decided its
    /// sequence, epoch, time, history settings and frame.
    pub fn applied(
        &self,
        seq: u64,
        epoch: String,
        ts_ms: u64,
        history: HistoryConfig,
        frame: Vec<u8>,
    ) -> ApplyPublish {
        ApplyPublish {
            room: self.room.clone(),
            seq,
            epoch,
            ts_ms,
            history,
            frame,
        }
    }
}

/// Builders for the options of a publish, for the callers that build one
/// (the tests, a gateway); each returns the same publish with one option set.
impl Publish {
    /// A publish of `text` delivered as a string (`FORMAT string`).
    pub fn string(room: &str, event: &str, text: &str) -> Publish {
        Publish::new(room, event, text.as_bytes()).format(Format::String)
    }

    /// A publish of JSON `text`, converted to MessagePack (`FORMAT json`).
    pub fn json(room: &str, event: &str, text: &str) -> Publish {
        Publish::new(room, event, text.as_bytes()).format(Format::Json)
    }

    /// The same publish with `FORMAT format`.
    pub fn format(self, format: Format) -> Publish {
        Publish { format, ..self }
    }

    /// The same publish sent by `conn`, which must be a member (`FROM conn`).
    pub fn from_conn(self, conn: &str) -> Publish {
        Publish {
            from: Some(conn.to_string()),
            ..self
        }
    }

    /// The same publish not delivered to `conn` (`EXCEPT conn`).
    pub fn except(self, conn: &str) -> Publish {
        Publish {
            except: Some(conn.to_string()),
            ..self
        }
    }

    /// The same publish with the room's history settings
    /// (`HISTORY size ttl_s`).
    pub fn history(self, size: u32, ttl_s: u64) -> Publish {
        Publish {
            history: Some(HistoryConfig {
                size,
                ttl_ms: ttl_s.saturating_mul(1000),
            }),
            ..self
        }
    }

    /// The same publish as an ephemeral message (`VOLATILE`).
    pub fn volatile(self) -> Publish {
        Publish {
            volatile: true,
            ..self
        }
    }

    /// The same publish behind a rate limit on `key`
    /// (`RATE key burst count period_s`, `burst` counted as the command
    /// does: `max_burst + 1`).
    pub fn rate(self, key: impl AsRef<[u8]>, burst: i64, count: i64, period_s: i64) -> Publish {
        Publish {
            rate: Some(RateLimit {
                key: key.as_ref().to_vec(),
                rate: Rate {
                    max_burst: burst.saturating_sub(1),
                    count,
                    period_s,
                },
            }),
            ..self
        }
    }
}

impl Broadcast {
    /// A broadcast of `payload` (MessagePack) to every connection.
    pub fn new(event: &str, payload: &[u8]) -> Broadcast {
        Broadcast {
            event: event.to_string(),
            payload: payload.to_vec(),
            format: Format::Msgpack,
            namespace: None,
        }
    }

    /// The same broadcast with `FORMAT format`.
    pub fn format(self, format: Format) -> Broadcast {
        Broadcast { format, ..self }
    }

    /// The same broadcast only to rooms of `namespace` (`NS namespace`).
    pub fn namespace(self, namespace: &str) -> Broadcast {
        Broadcast {
            namespace: Some(namespace.to_string()),
            ..self
        }
    }
}

/// Reads the value of a `FORMAT` option.
pub(super) fn format_option<A: AsRef<[u8]>>(args: &mut Args<'_, A>) -> Result<Format, ParseError> {
    let name = args.str("format")?;
    Format::parse(name).ok_or_else(|| ParseError::Syntax(format!("unknown format '{name}'")))
}

/// Checks an event name (`ev`): 1 to [`MAX_EVENT_LEN`] bytes. The gateway
/// checks it too, so that a client's over-long `ev` is its own error
/// (`bad_frame`), not a refusal by the module.
///
/// # Errors
/// The reason, for the error reply.
pub fn validate_event(event: &str) -> Result<(), String> {
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(format!("event must be 1 to {MAX_EVENT_LEN} bytes"));
    }
    Ok(())
}

/// Reads an event name.
fn event<A: AsRef<[u8]>>(args: &mut Args<'_, A>) -> Result<String, ParseError> {
    let event = args.str("event")?;
    validate_event(event).map_err(ParseError::Syntax)?;
    Ok(event.to_string())
}

impl Command for Publish {
    const NAME: &'static str = "BROKER.PUBLISH";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Publish, ParseError> {
        let mut args = Args::new(args);
        let room = args.name("room", names::validate_room)?;
        let event = event(&mut args)?;
        let mut publish = Publish::owned(room, event, args.bytes("payload")?.to_vec());
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "FORMAT" => publish.format = format_option(&mut args)?,
                "EXCEPT" => publish.except = Some(args.name("conn", names::validate_conn)?),
                "FROM" => publish.from = Some(args.name("conn", names::validate_conn)?),
                "HISTORY" => {
                    let size = args.u32("history size")?;
                    let ttl_s = args.u64("history ttl")?;
                    publish.history = Some(HistoryConfig {
                        size,
                        ttl_ms: ttl_s.saturating_mul(1000),
                    });
                }
                "RATE" => {
                    let key = args.bytes("RATE key")?.to_vec();
                    let burst = args.i64("RATE burst")?;
                    let rate = Rate {
                        max_burst: burst.saturating_sub(1),
                        count: args.i64("RATE count")?,
                        period_s: args.i64("RATE period")?,
                    };
                    if burst < 1 {
                        return Err(ParseError::Integer("RATE burst"));
                    }
                    publish.rate = Some(RateLimit { key, rate });
                }
                "VOLATILE" => publish.volatile = true,
                other => return Err(unknown(other)),
            }
        }
        Ok(publish)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![
            text(&self.room),
            text(&self.event),
            Arg::Borrowed(&self.payload),
            text("FORMAT"),
            text(self.format.as_str()),
        ];
        if let Some(from) = &self.from {
            out.extend([text("FROM"), text(from)]);
        }
        if let Some(except) = &self.except {
            out.extend([text("EXCEPT"), text(except)]);
        }
        if let Some(history) = &self.history {
            out.extend([
                text("HISTORY"),
                number(history.size),
                number(history.ttl_ms / 1000),
            ]);
        }
        if let Some(limit) = &self.rate {
            out.extend([
                text("RATE"),
                Arg::Borrowed(&limit.key),
                number(limit.rate.max_burst.saturating_add(1)),
                number(limit.rate.count),
                number(limit.rate.period_s),
            ]);
        }
        if self.volatile {
            out.push(text("VOLATILE"));
        }
        out
    }
}

/// `BROKER.BROADCAST event payload [FORMAT f] [NS namespace]`: a server
/// message to every connection on every node (or, with `NS`, to connections
/// in a room of that namespace). Not stored, not replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    /// The event name.
    pub event: String,
    /// The payload, in `format`.
    pub payload: Vec<u8>,
    /// How to read the payload.
    pub format: Format,
    /// Only to rooms of this namespace (`NS`).
    pub namespace: Option<String>,
}

impl Command for Broadcast {
    const NAME: &'static str = "BROKER.BROADCAST";
    const KEYS: Keys = Keys::NONE;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Broadcast, ParseError> {
        let mut args = Args::new(args);
        let event = event(&mut args)?;
        let payload = args.bytes("payload")?.to_vec();
        let (mut format, mut namespace) = (Format::Msgpack, None);
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "FORMAT" => format = format_option(&mut args)?,
                "NS" => namespace = Some(args.name("namespace", names::validate_namespace)?),
                other => return Err(unknown(other)),
            }
        }
        Ok(Broadcast {
            event,
            payload,
            format,
            namespace,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![
            text(&self.event),
            Arg::Borrowed(&self.payload),
            text("FORMAT"),
            text(self.format.as_str()),
        ];
        if let Some(ns) = &self.namespace {
            out.extend([text("NS"), text(ns)]);
        }
        out
    }
}

/// `BROKER.APPLY.PUBLISH room seq epoch ts size ttl_ms frame`: a publish as
/// the master decided it. Stores the message exactly so; delivers nothing
/// (the master did). Replicated as itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyPublish {
    /// The room.
    pub room: String,
    /// The message's sequence number.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// Publish time, ms since the Unix epoch.
    pub ts_ms: u64,
    /// The history settings the message is stored with.
    pub history: HistoryConfig,
    /// The encoded `msg` frame.
    pub frame: Vec<u8>,
}

impl Command for ApplyPublish {
    const NAME: &'static str = "BROKER.APPLY.PUBLISH";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<ApplyPublish, ParseError> {
        let mut args = Args::new(args);
        let cmd = ApplyPublish {
            room: args.name("room", names::validate_room)?,
            seq: args.u64("seq")?,
            epoch: args.string("epoch")?,
            ts_ms: args.u64("ts")?,
            history: HistoryConfig {
                size: args.u32("history size")?,
                ttl_ms: args.u64("history ttl_ms")?,
            },
            frame: args.bytes("frame")?.to_vec(),
        };
        args.done()?;
        Ok(cmd)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![
            text(&self.room),
            number(self.seq),
            text(&self.epoch),
            number(self.ts_ms),
            number(self.history.size),
            number(self.history.ttl_ms),
            Arg::Borrowed(&self.frame),
        ]
    }
}

/// `BROKER.APPLY.DROP room`: drops an empty room whose history expired (the
/// master's sweep decided). Replicated as itself when it dropped the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyDrop {
    /// The room.
    pub room: String,
}

impl Command for ApplyDrop {
    const NAME: &'static str = "BROKER.APPLY.DROP";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<ApplyDrop, ParseError> {
        let mut args = Args::new(args);
        let room = args.name("room", names::validate_room)?;
        args.done()?;
        Ok(ApplyDrop { room })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.room)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::round_trip;
    use super::*;

    #[test]
    fn publish_reads_every_option_and_writes_them_back() {
        let args: [&[u8]; 18] = [
            b"chat:x", b"ev", b"{}", b"format", b"JSON", b"FROM", b"c1", b"EXCEPT", b"c2",
            b"HISTORY", b"5", b"60", b"RATE", b"k\xff", b"3", b"10", b"1", b"FORMAT",
        ];
        // A value is missing after the last keyword: a syntax error.
        assert_eq!(
            Publish::parse(&args).unwrap_err().to_string(),
            "ERR syntax error: missing format"
        );
        let publish = Publish::parse(&args[..17]).unwrap();
        assert_eq!(publish.format, Format::Json);
        assert_eq!(publish.from.as_deref(), Some("c1"));
        assert_eq!(publish.except.as_deref(), Some("c2"));
        assert_eq!(
            publish.history,
            Some(HistoryConfig {
                size: 5,
                ttl_ms: 60_000
            })
        );
        let limit = publish.rate.clone().unwrap();
        assert_eq!(limit.key, b"k\xff");
        assert_eq!(
            limit.rate,
            Rate {
                max_burst: 2,
                count: 10,
                period_s: 1
            }
        );
        round_trip(&publish);
        round_trip(&Publish::new("chat:y", "e", b"\x90"));
        assert_eq!(Publish::key_positions(&args[..17]), vec![0, 13]);
    }

    #[test]
    fn publish_errors_are_the_module_replies() {
        let cases: [(&[&str], &str); 8] = [
            (
                &["chat:x", "ev"],
                "ERR wrong number of arguments: missing payload",
            ),
            (&["nope", "ev", "p"], "ERR invalid room name"),
            (
                &["chat:x", "", "p"],
                "ERR syntax error: event must be 1 to 256 bytes",
            ),
            (
                &["chat:x", "ev", "p", "FORMAT", "xml"],
                "ERR syntax error: unknown format 'xml'",
            ),
            (
                &["chat:x", "ev", "p", "RATE", "k", "0", "1", "1"],
                "ERR invalid RATE burst: expected an integer in range",
            ),
            (
                &["chat:x", "ev", "p", "HISTORY", "1", "x"],
                "ERR invalid history ttl: expected an integer in range",
            ),
            (
                &["chat:x", "ev", "p", "LOUD"],
                "ERR syntax error: unknown option 'LOUD'",
            ),
            (
                &["chat:x", "ev", "p", "FROM", "a b"],
                "ERR invalid connection id",
            ),
        ];
        for (args, reply) in cases {
            assert_eq!(Publish::parse(args).unwrap_err().to_string(), reply);
        }
        assert_eq!(
            Publish::key_positions(&["chat:x", "ev", "p", "RATE"]),
            vec![0]
        );
    }

    #[test]
    fn broadcast_apply_publish_and_drop_round_trip() {
        round_trip(&Broadcast {
            event: "ev".into(),
            payload: b"[1]".to_vec(),
            format: Format::Json,
            namespace: Some("chat".into()),
        });
        round_trip(&ApplyPublish {
            room: "chat:x".into(),
            seq: 7,
            epoch: "e1".into(),
            ts_ms: 123,
            history: HistoryConfig {
                size: 3,
                ttl_ms: 1500,
            },
            frame: vec![0x81, 0xa1, b'a', 1],
        });
        round_trip(&ApplyDrop {
            room: "chat:x".into(),
        });
        assert_eq!(
            ApplyDrop::parse(&["chat:x", "more"])
                .unwrap_err()
                .to_string(),
            "ERR wrong number of arguments: unexpected argument 'more'"
        );
    }

    #[test]
    fn builders_write_what_parse_reads() {
        let built = Publish::string("chat:x", "ev", "hi")
            .from_conn("c1")
            .except("c2")
            .history(2, 60)
            .rate("k", 2, 1, 60)
            .volatile();
        let words: Vec<&[u8]> = vec![
            b"chat:x",
            b"ev",
            b"hi",
            b"FORMAT",
            b"string",
            b"FROM",
            b"c1",
            b"EXCEPT",
            b"c2",
            b"HISTORY",
            b"2",
            b"60",
            b"RATE",
            b"k",
            b"2",
            b"1",
            b"60",
            b"VOLATILE",
        ];
        assert_eq!(built.to_args(), words);
        assert_eq!(Publish::parse(&words).unwrap(), built);
        assert_eq!(Publish::json("chat:x", "ev", "[1]").format, Format::Json);
        // VOLATILE takes no value and is no key; it may come anywhere.
        let args = ["chat:x", "ev", "p", "volatile", "RATE", "k", "1", "1", "1"];
        let parsed = Publish::parse(&args).unwrap();
        assert!(parsed.volatile);
        assert_eq!(Publish::key_positions(&args), vec![0, 5]);
        assert!(!Publish::parse(&["chat:x", "ev", "p"]).unwrap().volatile);
        let broadcast = Broadcast::new("ev", b"x")
            .format(Format::String)
            .namespace("chat");
        let words: Vec<&[u8]> = vec![b"ev", b"x", b"FORMAT", b"string", b"NS", b"chat"];
        assert_eq!(broadcast.to_args(), words);
        round_trip(&broadcast);
    }
}
