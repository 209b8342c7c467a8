//! Rooms: `JOIN`, `LEAVE`, `APPLY.LEAVE`, `ROOM.MEMBERS`, `ROOM.COUNT`,
//! `HISTORY`.

use super::args::{number, text, unknown, Arg, Args, ParseError};
use super::{Command, Departure, Keys, Linger};
use crate::names;
use crate::protocol::Since;

/// Reads `room user conn`, validated.
fn member<A: AsRef<[u8]>>(args: &mut Args<'_, A>) -> Result<[String; 3], ParseError> {
    Ok([
        args.name("room", names::validate_room)?,
        args.name("user", names::validate_user)?,
        args.name("conn", names::validate_conn)?,
    ])
}

/// `BROKER.JOIN room user conn node [PRESENCE] [MAXROOMS n] [SINCE seq
/// epoch] [EPOCH e]`: adds a connection to a room. Replicated with the
/// room's epoch ([`Join::replicated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The room.
    pub room: String,
    /// The connection's user.
    pub user: String,
    /// The connection.
    pub conn: String,
    /// The gateway node holding it.
    pub node: String,
    /// Turn on join and leave events for the room (`PRESENCE`).
    pub presence: bool,
    /// Refuse when the connection is in this many rooms already (`MAXROOMS`).
    pub max_rooms: Option<u32>,
    /// Recover what the client missed since this position (`SINCE`).
    pub since: Option<Since>,
    /// The epoch to give the room if the join creates it (`EPOCH`; the
    /// replicated form always has it).
    pub epoch: Option<String>,
}

impl Join {
    /// A plain join of `conn` (of `user`, on `node`) to `room`.
    pub fn new(room: &str, user: &str, conn: &str, node: &str) -> Join {
        Join::owned([room, user, conn, node].map(str::to_string))
    }

    /// [`Join::new`] from owned names (what `parse` read): room, user,
    /// conn, node.
    fn owned([room, user, conn, node]: [String; 4]) -> Join {
        Join {
            room,
            user,
            conn,
            node,
            presence: false,
            max_rooms: None,
            since: None,
            epoch: None,
        }
    }

    /// The same join with `PRESENCE`.
    pub fn with_presence(self) -> Join {
        Join {
            presence: true,
            ..self
        }
    }

    /// The same join with `MAXROOMS max`.
    pub fn max_rooms(self, max: u32) -> Join {
        Join {
            max_rooms: Some(max),
            ..self
        }
    }

    /// What replicas receive: the join with the room's epoch as the master
    /// has it, without `MAXROOMS` (the master checked it) and `SINCE` (a
    /// read).
    pub fn replicated(&self, room_epoch: &str) -> Join {
        self.clone().into_replicated(room_epoch.to_string())
    }

    /// [`Join::replicated`] without a copy, for the caller done with the
    /// join itself.
    pub fn into_replicated(self, room_epoch: String) -> Join {
        Join {
            max_rooms: None,
            since: None,
            epoch: Some(room_epoch),
            ..self
        }
    }
}

impl Join {
    /// The same join recovering what the client missed after `seq` of
    /// `epoch` (`SINCE seq epoch`).
    pub fn since(self, seq: u64, epoch: &str) -> Join {
        Join {
            since: Some(Since {
                seq,
                epoch: epoch.to_string(),
            }),
            ..self
        }
    }
}

impl Command for Join {
    const NAME: &'static str = "BROKER.JOIN";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Join, ParseError> {
        let mut args = Args::new(args);
        let [room, user, conn] = member(&mut args)?;
        let node = args.name("node", names::validate_node)?;
        let mut join = Join::owned([room, user, conn, node]);
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "PRESENCE" => join.presence = true,
                "MAXROOMS" => join.max_rooms = Some(args.u32("MAXROOMS")?),
                "SINCE" => {
                    join.since = Some(Since {
                        seq: args.u64("since seq")?,
                        epoch: args.string("since epoch")?,
                    })
                }
                "EPOCH" => join.epoch = Some(args.string("epoch")?),
                other => return Err(unknown(other)),
            }
        }
        Ok(join)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![
            text(&self.room),
            text(&self.user),
            text(&self.conn),
            text(&self.node),
        ];
        if self.presence {
            out.push(text("PRESENCE"));
        }
        if let Some(max) = self.max_rooms {
            out.extend([text("MAXROOMS"), number(max)]);
        }
        if let Some(since) = &self.since {
            out.extend([text("SINCE"), number(since.seq), text(&since.epoch)]);
        }
        if let Some(epoch) = &self.epoch {
            out.extend([text("EPOCH"), text(epoch)]);
        }
        out
    }
}

/// `BROKER.LEAVE room user conn [GRACE ms]`: removes a connection from a
/// room. `GRACE` says the connection went away (it did not ask to leave):
/// the user lingers for `ms` if this was its last connection in the room.
/// Replicated with `UNTIL` ([`Leave::replicated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leave {
    /// The room.
    pub room: String,
    /// The connection's user.
    pub user: String,
    /// The connection.
    pub conn: String,
    /// How long the user lingers, if it does.
    pub linger: Option<Linger>,
    /// The reason of the lifecycle events it causes (`REASON r`); the
    /// module's default when `None`.
    pub reason: Option<String>,
}

impl Leave {
    /// A leave request (no grace).
    pub fn new(room: &str, user: &str, conn: &str) -> Leave {
        Leave {
            room: room.to_string(),
            user: user.to_string(),
            conn: conn.to_string(),
            linger: None,
            reason: None,
        }
    }

    /// What replicas receive when it ran at `now_ms`: `GRACE` as `UNTIL`.
    pub fn replicated(&self, now_ms: u64) -> Leave {
        self.clone().into_replicated(now_ms)
    }

    /// [`Leave::replicated`] without a copy, for the caller done with the
    /// leave itself.
    pub fn into_replicated(self, now_ms: u64) -> Leave {
        Leave {
            linger: self.linger.map(|l| l.at(now_ms)),
            ..self
        }
    }
}

impl Leave {
    /// The same leave as a connection that went away: the user lingers for
    /// `ms` if this was its last connection in the room (`GRACE ms`).
    pub fn grace(self, ms: u64) -> Leave {
        Leave {
            linger: Some(Linger::Grace(ms)),
            ..self
        }
    }

    /// The same command with `reason` for the lifecycle events it causes
    /// (`REASON r`, `[a-z_]{1,32}`).
    pub fn reason(self, reason: &str) -> Leave {
        Leave {
            reason: Some(reason.to_string()),
            ..self
        }
    }
}

impl Command for Leave {
    const NAME: &'static str = "BROKER.LEAVE";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Leave, ParseError> {
        let mut args = Args::new(args);
        let [room, user, conn] = member(&mut args)?;
        let Departure { linger, reason } = Departure::parse(&mut args)?;
        Ok(Leave {
            room,
            user,
            conn,
            linger,
            reason,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![text(&self.room), text(&self.user), text(&self.conn)];
        Departure::write(self.linger, self.reason.as_deref(), &mut out);
        out
    }
}

/// `BROKER.APPLY.LEAVE room user`: ends a lingering presence and sends its
/// leave event. The module's timer does this when a grace runs out and
/// replicates it as this command; by hand it ends a grace early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyLeave {
    /// The room.
    pub room: String,
    /// The lingering user.
    pub user: String,
}

impl ApplyLeave {
    /// Ends `user`'s lingering presence in `room` now.
    pub fn new(room: &str, user: &str) -> ApplyLeave {
        ApplyLeave {
            room: room.to_string(),
            user: user.to_string(),
        }
    }
}

impl Command for ApplyLeave {
    const NAME: &'static str = "BROKER.APPLY.LEAVE";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<ApplyLeave, ParseError> {
        let mut args = Args::new(args);
        let room = args.name("room", names::validate_room)?;
        let user = args.name("user", names::validate_user)?;
        args.done()?;
        Ok(ApplyLeave { room, user })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.room), text(&self.user)]
    }
}

/// Reads the single `room` argument of a read command.
fn room_only<A: AsRef<[u8]>>(args: &[A]) -> Result<String, ParseError> {
    let mut args = Args::new(args);
    let room = args.name("room", names::validate_room)?;
    args.done()?;
    Ok(room)
}

/// `BROKER.ROOM.MEMBERS room [AFTER user] [LIMIT n]`: distinct users with
/// their connection counts, in name order, one page of at most `LIMIT`
/// ([`RoomMembers::DEFAULT_LIMIT`] without it, at most
/// [`RoomMembers::MAX_LIMIT`]) after `AFTER`. A full page may have more
/// behind it: ask again with `AFTER` = its last user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMembers {
    /// The room.
    pub room: String,
    /// Only users whose names sort after this one.
    pub after: Option<String>,
    /// At most this many users.
    pub limit: Option<u64>,
}

impl RoomMembers {
    /// Users one reply lists when `LIMIT` is not given.
    pub const DEFAULT_LIMIT: u64 = 1000;
    /// The largest `LIMIT`: a reply never holds Redis longer than this
    /// many users take.
    pub const MAX_LIMIT: u64 = 10_000;

    /// The first page of the members of `room`.
    pub fn new(room: &str) -> RoomMembers {
        RoomMembers {
            room: room.to_string(),
            after: None,
            limit: None,
        }
    }

    /// The same read, users after `user` only (`AFTER user`).
    pub fn after(self, user: &str) -> RoomMembers {
        RoomMembers {
            after: Some(user.to_string()),
            ..self
        }
    }

    /// The same read, at most `n` users (`LIMIT n`).
    pub fn limit(self, n: u64) -> RoomMembers {
        RoomMembers {
            limit: Some(n),
            ..self
        }
    }

    /// The page size this read asks for.
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(Self::DEFAULT_LIMIT) as usize
    }
}

impl Command for RoomMembers {
    const NAME: &'static str = "BROKER.ROOM.MEMBERS";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<RoomMembers, ParseError> {
        let mut args = Args::new(args);
        let mut read = RoomMembers::new(&args.name("room", names::validate_room)?);
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "AFTER" => read.after = Some(args.name("AFTER", names::validate_user)?),
                "LIMIT" => {
                    let n = args.u64("LIMIT")?;
                    if !(1..=Self::MAX_LIMIT).contains(&n) {
                        return Err(ParseError::Invalid(format!(
                            "LIMIT: must be 1 to {}",
                            Self::MAX_LIMIT
                        )));
                    }
                    read.limit = Some(n);
                }
                other => return Err(unknown(other)),
            }
        }
        Ok(read)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![text(&self.room)];
        if let Some(after) = &self.after {
            out.extend([text("AFTER"), text(after)]);
        }
        if let Some(limit) = self.limit {
            out.extend([text("LIMIT"), number(limit)]);
        }
        out
    }
}

/// `BROKER.ROOM.COUNT room`: users and connections, O(1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCount {
    /// The room.
    pub room: String,
}

impl RoomCount {
    /// The counts of `room`.
    pub fn new(room: &str) -> RoomCount {
        RoomCount {
            room: room.to_string(),
        }
    }
}

impl Command for RoomCount {
    const NAME: &'static str = "BROKER.ROOM.COUNT";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<RoomCount, ParseError> {
        Ok(RoomCount {
            room: room_only(args)?,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.room)]
    }
}

/// `BROKER.HISTORY room [SINCE seq] [LIMIT n]`: retained messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The room.
    pub room: String,
    /// Only messages after this sequence number (0 without it).
    pub since: Option<u64>,
    /// At most this many messages.
    pub limit: Option<u64>,
    /// Stop before the messages' total size passes this many bytes (the
    /// first message is always given).
    pub max_bytes: Option<u64>,
}

impl History {
    /// Everything `room` keeps.
    pub fn new(room: &str) -> History {
        History {
            room: room.to_string(),
            since: None,
            limit: None,
            max_bytes: None,
        }
    }

    /// The same read, only messages after `seq` (`SINCE seq`).
    pub fn since(self, seq: u64) -> History {
        History {
            since: Some(seq),
            ..self
        }
    }

    /// The same read, at most `n` messages (`LIMIT n`).
    pub fn limit(self, n: u64) -> History {
        History {
            limit: Some(n),
            ..self
        }
    }

    /// The same read, stopped before `n` bytes of messages (`MAXBYTES n`).
    pub fn max_bytes(self, n: u64) -> History {
        History {
            max_bytes: Some(n),
            ..self
        }
    }
}

impl Command for History {
    const NAME: &'static str = "BROKER.HISTORY";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<History, ParseError> {
        let mut args = Args::new(args);
        let room = args.name("room", names::validate_room)?;
        let (mut since, mut limit, mut max_bytes) = (None, None, None);
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "SINCE" => since = Some(args.u64("SINCE")?),
                "LIMIT" => limit = Some(args.u64("LIMIT")?),
                "MAXBYTES" => max_bytes = Some(args.u64("MAXBYTES")?),
                other => return Err(unknown(other)),
            }
        }
        Ok(History {
            room,
            since,
            limit,
            max_bytes,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![text(&self.room)];
        if let Some(since) = self.since {
            out.extend([text("SINCE"), number(since)]);
        }
        if let Some(limit) = self.limit {
            out.extend([text("LIMIT"), number(limit)]);
        }
        if let Some(max_bytes) = self.max_bytes {
            out.extend([text("MAXBYTES"), number(max_bytes)]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::round_trip;
    use super::*;

    #[test]
    fn join_round_trips_and_replicates_with_the_room_epoch() {
        let join = Join::parse(&[
            "chat:x", "alice", "c1", "n1", "presence", "MAXROOMS", "3", "SINCE", "4", "e0",
        ])
        .unwrap();
        assert!(join.presence);
        assert_eq!(join.max_rooms, Some(3));
        assert_eq!(
            join.since,
            Some(Since {
                seq: 4,
                epoch: "e0".into()
            })
        );
        round_trip(&join);
        let replicated = join.replicated("e1");
        assert_eq!(
            replicated.to_args(),
            Join::new("chat:x", "alice", "c1", "n1")
                .with_presence()
                .replicated("e1")
                .to_args()
        );
        let words: Vec<&[u8]> = vec![
            b"chat:x",
            b"alice",
            b"c1",
            b"n1",
            b"PRESENCE",
            b"EPOCH",
            b"e1",
        ];
        assert_eq!(replicated.to_args(), words);
        round_trip(&replicated);
        assert_eq!(
            Join::parse(&["chat:x", "alice", "c1"])
                .unwrap_err()
                .to_string(),
            "ERR wrong number of arguments: missing node"
        );
        assert_eq!(
            Join::parse(&["chat:x", "alice", "c1", "n1", "SINCE", "1"])
                .unwrap_err()
                .to_string(),
            "ERR syntax error: missing since epoch"
        );
    }

    #[test]
    fn leave_turns_grace_into_until() {
        let leave = Leave::parse(&["chat:x", "alice", "c1", "GRACE", "500"]).unwrap();
        assert_eq!(leave.linger, Some(Linger::Grace(500)));
        round_trip(&leave);
        let replicated = leave.replicated(1_000);
        assert_eq!(replicated.linger, Some(Linger::Until(1_500)));
        round_trip(&replicated);
        assert_eq!(replicated.replicated(9_999), replicated);
        let plain = Leave::parse(&["chat:x", "alice", "c1", "UNTIL", "9", "GRACE", "0"]).unwrap();
        assert_eq!(plain, Leave::new("chat:x", "alice", "c1"));
        assert_eq!(
            Leave::parse(&["chat:x", "alice", "c1", "GRACE", "3600001"])
                .unwrap_err()
                .to_string(),
            "ERR invalid GRACE ms: expected an integer in range"
        );
    }

    #[test]
    fn reads_of_a_room_round_trip() {
        round_trip(&ApplyLeave {
            room: "chat:x".into(),
            user: "alice".into(),
        });
        round_trip(&RoomMembers::new("chat:x"));
        round_trip(&RoomMembers::new("chat:x").after("bob").limit(2));
        assert_eq!(
            RoomMembers::parse(&["chat:x", "LIMIT", "0"])
                .unwrap_err()
                .to_string(),
            "ERR invalid LIMIT: must be 1 to 10000"
        );
        assert_eq!(RoomMembers::new("chat:x").page_size(), 1000);
        round_trip(&RoomCount {
            room: "chat:x".into(),
        });
        round_trip(&History {
            room: "chat:x".into(),
            since: Some(3),
            limit: Some(10),
            max_bytes: None,
        });
        round_trip(&History::new("chat:x").since(1).max_bytes(4096));
        assert_eq!(
            History::parse(&["chat:x", "LIMIT", "-1"])
                .unwrap_err()
                .to_string(),
            "ERR invalid LIMIT: expected an integer in range"
        );
        assert_eq!(
            RoomCount::parse(&[b"chat:x".as_slice(), b"\x01"])
                .unwrap_err()
                .to_string(),
            "ERR wrong number of arguments: unexpected argument '\\x01'"
        );
    }

    #[test]
    fn builders_write_what_parse_reads() {
        let join = Join::new("chat:a", "alice", "c1", "n1")
            .with_presence()
            .max_rooms(2)
            .since(3, "ep");
        let words: Vec<&[u8]> = vec![
            b"chat:a",
            b"alice",
            b"c1",
            b"n1",
            b"PRESENCE",
            b"MAXROOMS",
            b"2",
            b"SINCE",
            b"3",
            b"ep",
        ];
        assert_eq!(join.to_args(), words);
        round_trip(&join);
        let leave = Leave::new("chat:a", "alice", "c1").grace(500);
        assert_eq!(leave.linger, Some(Linger::Grace(500)));
        round_trip(&leave);
        round_trip(&ApplyLeave::new("chat:a", "alice"));
        round_trip(&RoomMembers::new("chat:a"));
        round_trip(&RoomCount::new("chat:a"));
        let history = History::new("chat:r").since(2).limit(1);
        let words: Vec<&[u8]> = vec![b"chat:r", b"SINCE", b"2", b"LIMIT", b"1"];
        assert_eq!(history.to_args(), words);
        round_trip(&history);
    }
}
