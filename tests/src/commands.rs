//! The `BROKER.*` commands the tests send, built in one place.
//!
//! One struct per command the tests speak, with the options they use as
//! builder methods, and [`Command::to_args`]: the arguments after the
//! command name, in the order the gateway sends them (`gateway/src/store.rs`).
//! [`crate::World`] and the fixture helpers ([`crate::lease`],
//! [`crate::open`], [`crate::publish_str`], [`crate::populate`], ...) run these, so
//! test bodies say `Join::new(room, user, conn, node).presence()` instead of
//! a positional array. When the broker crate's own command types
//! (`broker::command::*`) land, these structs become those, and no test body
//! changes.
//!
//! Tests about argument parsing and error texts (`bad_input.rs`,
//! `module_fuzz.rs`) keep sending raw arrays with [`crate::call`]: the raw
//! arguments are what they test.

use redis::{Connection, RedisResult, Value};

/// A command the module answers: its name and its arguments.
pub trait Command {
    /// The command name, e.g. `BROKER.JOIN`.
    fn name(&self) -> &'static str;

    /// The arguments after the name, as bytes.
    fn to_args(&self) -> Vec<Vec<u8>>;

    /// The command as a `redis::Cmd`, e.g. for a pipeline
    /// (`pipe.add_command(publish.to_cmd())`).
    fn to_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd(self.name());
        for a in self.to_args() {
            cmd.arg(a);
        }
        cmd
    }

    /// Name and arguments as text, for failure messages.
    fn describe(&self) -> String {
        let mut out = self.name().to_string();
        for a in self.to_args() {
            out.push(' ');
            out.push_str(&String::from_utf8_lossy(&a));
        }
        out
    }
}

/// Runs `command` on `con` and returns the reply (errors as `Err`).
pub fn send(con: &mut Connection, command: &impl Command) -> RedisResult<Value> {
    command.to_cmd().query(con)
}

/// Collects arguments: text, numbers and bytes all become byte strings.
#[derive(Default)]
struct Args(Vec<Vec<u8>>);

impl Args {
    fn s(mut self, a: impl AsRef<str>) -> Self {
        self.0.push(a.as_ref().as_bytes().to_vec());
        self
    }
    fn n(mut self, n: impl ToString) -> Self {
        self.0.push(n.to_string().into_bytes());
        self
    }
    fn b(mut self, b: &[u8]) -> Self {
        self.0.push(b.to_vec());
        self
    }
    /// `KEYWORD value` when `value` is set.
    fn opt(self, keyword: &str, value: &Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.s(keyword).n(v.to_string()),
            None => self,
        }
    }
    /// `KEYWORD` alone when `on`.
    fn flag(self, keyword: &str, on: bool) -> Self {
        if on {
            self.s(keyword)
        } else {
            self
        }
    }
}

// ---------------------------------------------------------------------------
// Nodes

/// `BROKER.NODE.LEASE node ttl_ms [CHANNEL ch] [DEADLINE ms]`.
#[derive(Debug, Clone)]
pub struct NodeLease {
    /// The node id.
    pub node: String,
    /// How long the lease lasts from now.
    pub ttl_ms: u64,
    /// The sharded Pub/Sub channel the node listens on.
    pub channel: Option<String>,
    /// An absolute deadline instead of now + ttl.
    pub deadline_ms: Option<i64>,
}

impl NodeLease {
    /// A lease of `ttl_ms` for `node`.
    pub fn new(node: impl Into<String>, ttl_ms: u64) -> Self {
        NodeLease {
            node: node.into(),
            ttl_ms,
            channel: None,
            deadline_ms: None,
        }
    }
    /// `CHANNEL channel`.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }
    /// `DEADLINE ms`.
    pub fn deadline(mut self, ms: i64) -> Self {
        self.deadline_ms = Some(ms);
        self
    }
}

impl Command for NodeLease {
    fn name(&self) -> &'static str {
        "BROKER.NODE.LEASE"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default()
            .s(&self.node)
            .n(self.ttl_ms)
            .opt("CHANNEL", &self.channel)
            .opt("DEADLINE", &self.deadline_ms)
            .0
    }
}

/// `BROKER.NODE.RELEASE node [GRACE ms]`.
#[derive(Debug, Clone)]
pub struct NodeRelease {
    /// The node id.
    pub node: String,
    /// How long its users linger in their rooms.
    pub grace_ms: Option<u64>,
}

impl NodeRelease {
    /// Releases `node` at once.
    pub fn new(node: impl Into<String>) -> Self {
        NodeRelease {
            node: node.into(),
            grace_ms: None,
        }
    }
    /// `GRACE ms`.
    pub fn grace(mut self, ms: u64) -> Self {
        self.grace_ms = Some(ms);
        self
    }
}

impl Command for NodeRelease {
    fn name(&self) -> &'static str {
        "BROKER.NODE.RELEASE"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default().s(&self.node).opt("GRACE", &self.grace_ms).0
    }
}

/// `BROKER.NODES`.
#[derive(Debug, Clone, Copy)]
pub struct Nodes;

impl Command for Nodes {
    fn name(&self) -> &'static str {
        "BROKER.NODES"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------
// Connections

/// `BROKER.CONN.OPEN user conn node ip [AT ms] [MAXUSER n] [MAXIP n]`.
#[derive(Debug, Clone)]
pub struct ConnOpen {
    /// The user id.
    pub user: String,
    /// The connection id.
    pub conn: String,
    /// The node holding the connection.
    pub node: String,
    /// The client's address.
    pub ip: String,
    /// `connected_at` instead of now.
    pub at_ms: Option<i64>,
    /// Connections per user, this one included.
    pub max_user: Option<u32>,
    /// Connections per address, this one included.
    pub max_ip: Option<u32>,
}

impl ConnOpen {
    /// A connection from `ip`, without limits.
    pub fn new(
        user: impl Into<String>,
        conn: impl Into<String>,
        node: impl Into<String>,
        ip: impl Into<String>,
    ) -> Self {
        ConnOpen {
            user: user.into(),
            conn: conn.into(),
            node: node.into(),
            ip: ip.into(),
            at_ms: None,
            max_user: None,
            max_ip: None,
        }
    }
    /// `AT ms`.
    pub fn at(mut self, ms: i64) -> Self {
        self.at_ms = Some(ms);
        self
    }
    /// `MAXUSER n`.
    pub fn max_user(mut self, n: u32) -> Self {
        self.max_user = Some(n);
        self
    }
    /// `MAXIP n`.
    pub fn max_ip(mut self, n: u32) -> Self {
        self.max_ip = Some(n);
        self
    }
}

impl Command for ConnOpen {
    fn name(&self) -> &'static str {
        "BROKER.CONN.OPEN"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default()
            .s(&self.user)
            .s(&self.conn)
            .s(&self.node)
            .s(&self.ip)
            .opt("AT", &self.at_ms)
            .opt("MAXUSER", &self.max_user)
            .opt("MAXIP", &self.max_ip)
            .0
    }
}

/// `BROKER.CONN.CLOSE user conn [GRACE ms]`.
#[derive(Debug, Clone)]
pub struct ConnClose {
    /// The user id.
    pub user: String,
    /// The connection id.
    pub conn: String,
    /// How long the user lingers in the connection's rooms.
    pub grace_ms: Option<u64>,
}

impl ConnClose {
    /// Closes `conn` of `user` at once.
    pub fn new(user: impl Into<String>, conn: impl Into<String>) -> Self {
        ConnClose {
            user: user.into(),
            conn: conn.into(),
            grace_ms: None,
        }
    }
    /// `GRACE ms`.
    pub fn grace(mut self, ms: u64) -> Self {
        self.grace_ms = Some(ms);
        self
    }
}

impl Command for ConnClose {
    fn name(&self) -> &'static str {
        "BROKER.CONN.CLOSE"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default()
            .s(&self.user)
            .s(&self.conn)
            .opt("GRACE", &self.grace_ms)
            .0
    }
}

/// `BROKER.PRESENCE user`.
#[derive(Debug, Clone)]
pub struct Presence(pub String);

impl Presence {
    /// The presence of `user`.
    pub fn new(user: impl Into<String>) -> Self {
        Presence(user.into())
    }
}

impl Command for Presence {
    fn name(&self) -> &'static str {
        "BROKER.PRESENCE"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default().s(&self.0).0
    }
}

/// `BROKER.ONLINE`.
#[derive(Debug, Clone, Copy)]
pub struct Online;

impl Command for Online {
    fn name(&self) -> &'static str {
        "BROKER.ONLINE"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

/// `BROKER.KICK user [reason]`.
#[derive(Debug, Clone)]
pub struct Kick {
    /// The user whose connections close.
    pub user: String,
    /// Why, passed to the clients.
    pub reason: Option<String>,
}

impl Kick {
    /// Kicks `user` without a reason.
    pub fn new(user: impl Into<String>) -> Self {
        Kick {
            user: user.into(),
            reason: None,
        }
    }
    /// The reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

impl Command for Kick {
    fn name(&self) -> &'static str {
        "BROKER.KICK"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        let args = Args::default().s(&self.user);
        match &self.reason {
            Some(r) => args.s(r).0,
            None => args.0,
        }
    }
}

// ---------------------------------------------------------------------------
// Rooms

/// `BROKER.JOIN room user conn node [PRESENCE] [MAXROOMS n] [SINCE seq epoch]`.
#[derive(Debug, Clone)]
pub struct Join {
    /// The room.
    pub room: String,
    /// The user id.
    pub user: String,
    /// The connection id.
    pub conn: String,
    /// The node holding the connection.
    pub node: String,
    /// Whether the room announces joins and leaves.
    pub presence: bool,
    /// Rooms per connection, this one included.
    pub max_rooms: Option<u32>,
    /// The last `(seq, epoch)` the client saw, to recover from.
    pub since: Option<(u64, String)>,
}

impl Join {
    /// A plain join of `conn` to `room`.
    pub fn new(
        room: impl Into<String>,
        user: impl Into<String>,
        conn: impl Into<String>,
        node: impl Into<String>,
    ) -> Self {
        Join {
            room: room.into(),
            user: user.into(),
            conn: conn.into(),
            node: node.into(),
            presence: false,
            max_rooms: None,
            since: None,
        }
    }
    /// `PRESENCE`.
    pub fn presence(mut self) -> Self {
        self.presence = true;
        self
    }
    /// `MAXROOMS n`.
    pub fn max_rooms(mut self, n: u32) -> Self {
        self.max_rooms = Some(n);
        self
    }
    /// `SINCE seq epoch`.
    pub fn since(mut self, seq: u64, epoch: impl Into<String>) -> Self {
        self.since = Some((seq, epoch.into()));
        self
    }
}

impl Command for Join {
    fn name(&self) -> &'static str {
        "BROKER.JOIN"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        let args = Args::default()
            .s(&self.room)
            .s(&self.user)
            .s(&self.conn)
            .s(&self.node)
            .flag("PRESENCE", self.presence)
            .opt("MAXROOMS", &self.max_rooms);
        match &self.since {
            Some((seq, epoch)) => args.s("SINCE").n(seq).s(epoch).0,
            None => args.0,
        }
    }
}

/// `BROKER.LEAVE room user conn [GRACE ms]`.
#[derive(Debug, Clone)]
pub struct Leave {
    /// The room.
    pub room: String,
    /// The user id.
    pub user: String,
    /// The connection id.
    pub conn: String,
    /// How long the user lingers in the room.
    pub grace_ms: Option<u64>,
}

impl Leave {
    /// `conn` leaves `room` at once.
    pub fn new(room: impl Into<String>, user: impl Into<String>, conn: impl Into<String>) -> Self {
        Leave {
            room: room.into(),
            user: user.into(),
            conn: conn.into(),
            grace_ms: None,
        }
    }
    /// `GRACE ms`.
    pub fn grace(mut self, ms: u64) -> Self {
        self.grace_ms = Some(ms);
        self
    }
}

impl Command for Leave {
    fn name(&self) -> &'static str {
        "BROKER.LEAVE"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default()
            .s(&self.room)
            .s(&self.user)
            .s(&self.conn)
            .opt("GRACE", &self.grace_ms)
            .0
    }
}

/// `BROKER.APPLY.LEAVE room user`: ends a lingering user's stay at once.
#[derive(Debug, Clone)]
pub struct ApplyLeave {
    /// The room.
    pub room: String,
    /// The lingering user.
    pub user: String,
}

impl ApplyLeave {
    /// Ends `user`'s lingering in `room`.
    pub fn new(room: impl Into<String>, user: impl Into<String>) -> Self {
        ApplyLeave {
            room: room.into(),
            user: user.into(),
        }
    }
}

impl Command for ApplyLeave {
    fn name(&self) -> &'static str {
        "BROKER.APPLY.LEAVE"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default().s(&self.room).s(&self.user).0
    }
}

/// `BROKER.ROOM.MEMBERS room`.
#[derive(Debug, Clone)]
pub struct RoomMembers(pub String);

impl RoomMembers {
    /// The members of `room`.
    pub fn new(room: impl Into<String>) -> Self {
        RoomMembers(room.into())
    }
}

impl Command for RoomMembers {
    fn name(&self) -> &'static str {
        "BROKER.ROOM.MEMBERS"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default().s(&self.0).0
    }
}

/// `BROKER.ROOM.COUNT room`.
#[derive(Debug, Clone)]
pub struct RoomCount(pub String);

impl RoomCount {
    /// The counts of `room`.
    pub fn new(room: impl Into<String>) -> Self {
        RoomCount(room.into())
    }
}

impl Command for RoomCount {
    fn name(&self) -> &'static str {
        "BROKER.ROOM.COUNT"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default().s(&self.0).0
    }
}

// ---------------------------------------------------------------------------
// Messages

/// `BROKER.PUBLISH room ev payload [FORMAT f] [FROM conn] [EXCEPT conn]
/// [HISTORY size ttl_s] [RATE key burst count period_s]`.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The room.
    pub room: String,
    /// The event name.
    pub ev: String,
    /// The payload, as sent.
    pub payload: Vec<u8>,
    /// `msgpack`, `json` or `string`; the module's default when unset.
    pub format: Option<String>,
    /// The sending connection (must be a member).
    pub from: Option<String>,
    /// A connection that does not get the message.
    pub except: Option<String>,
    /// The room's history settings `(size, ttl_s)`.
    pub history: Option<(u32, u64)>,
    /// A rate limit `(key, burst, count, period_s)`.
    pub rate: Option<(String, u32, u32, u64)>,
}

impl Publish {
    /// Publishes `payload` as is, in the module's default format.
    pub fn new(room: impl Into<String>, ev: impl Into<String>, payload: impl AsRef<[u8]>) -> Self {
        Publish {
            room: room.into(),
            ev: ev.into(),
            payload: payload.as_ref().to_vec(),
            format: None,
            from: None,
            except: None,
            history: None,
            rate: None,
        }
    }
    /// A `FORMAT string` publish: the payload is delivered as a string.
    pub fn string(room: impl Into<String>, ev: impl Into<String>, payload: &str) -> Self {
        Publish::new(room, ev, payload).format("string")
    }
    /// A `FORMAT json` publish: the payload is converted.
    pub fn json(room: impl Into<String>, ev: impl Into<String>, payload: &str) -> Self {
        Publish::new(room, ev, payload).format("json")
    }
    /// `FORMAT format`.
    pub fn format(mut self, format: impl Into<String>) -> Self {
        self.format = Some(format.into());
        self
    }
    /// `FROM conn`.
    pub fn from(mut self, conn: impl Into<String>) -> Self {
        self.from = Some(conn.into());
        self
    }
    /// `EXCEPT conn`.
    pub fn except(mut self, conn: impl Into<String>) -> Self {
        self.except = Some(conn.into());
        self
    }
    /// `HISTORY size ttl_s`.
    pub fn history(mut self, size: u32, ttl_s: u64) -> Self {
        self.history = Some((size, ttl_s));
        self
    }
    /// `RATE key burst count period_s`.
    pub fn rate(mut self, key: impl Into<String>, burst: u32, count: u32, period_s: u64) -> Self {
        self.rate = Some((key.into(), burst, count, period_s));
        self
    }
}

impl Command for Publish {
    fn name(&self) -> &'static str {
        "BROKER.PUBLISH"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        let mut args = Args::default()
            .s(&self.room)
            .s(&self.ev)
            .b(&self.payload)
            .opt("FORMAT", &self.format)
            .opt("FROM", &self.from)
            .opt("EXCEPT", &self.except);
        if let Some((size, ttl)) = self.history {
            args = args.s("HISTORY").n(size).n(ttl);
        }
        if let Some((key, burst, count, period)) = &self.rate {
            args = args.s("RATE").s(key).n(burst).n(count).n(period);
        }
        args.0
    }
}

/// `BROKER.BROADCAST ev payload [FORMAT f] [NS namespace]`.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// The event name.
    pub ev: String,
    /// The payload, as sent.
    pub payload: Vec<u8>,
    /// `msgpack`, `json` or `string`; the module's default when unset.
    pub format: Option<String>,
    /// Only the rooms of this namespace.
    pub namespace: Option<String>,
}

impl Broadcast {
    /// Broadcasts `payload` as is, in the module's default format.
    pub fn new(ev: impl Into<String>, payload: impl AsRef<[u8]>) -> Self {
        Broadcast {
            ev: ev.into(),
            payload: payload.as_ref().to_vec(),
            format: None,
            namespace: None,
        }
    }
    /// `FORMAT format`.
    pub fn format(mut self, format: impl Into<String>) -> Self {
        self.format = Some(format.into());
        self
    }
    /// `NS namespace`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
}

impl Command for Broadcast {
    fn name(&self) -> &'static str {
        "BROKER.BROADCAST"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default()
            .s(&self.ev)
            .b(&self.payload)
            .opt("FORMAT", &self.format)
            .opt("NS", &self.namespace)
            .0
    }
}

/// `BROKER.HISTORY room [SINCE seq] [LIMIT n]`.
#[derive(Debug, Clone)]
pub struct History {
    /// The room.
    pub room: String,
    /// Only messages after this seq.
    pub since: Option<u64>,
    /// At most this many messages.
    pub limit: Option<u64>,
}

impl History {
    /// Everything `room` keeps.
    pub fn new(room: impl Into<String>) -> Self {
        History {
            room: room.into(),
            since: None,
            limit: None,
        }
    }
    /// `SINCE seq`.
    pub fn since(mut self, seq: u64) -> Self {
        self.since = Some(seq);
        self
    }
    /// `LIMIT n`.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }
}

impl Command for History {
    fn name(&self) -> &'static str {
        "BROKER.HISTORY"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        Args::default()
            .s(&self.room)
            .opt("SINCE", &self.since)
            .opt("LIMIT", &self.limit)
            .0
    }
}

/// `BROKER.THROTTLE key burst count period_s [quantity]`.
#[derive(Debug, Clone)]
pub struct Throttle {
    /// The key holding the arrival time.
    pub key: String,
    /// Extra units beyond the steady rate.
    pub burst: u32,
    /// Units per period.
    pub count: u32,
    /// The period in seconds.
    pub period_s: u64,
    /// Units this call takes; the module's default (1) when unset.
    pub quantity: Option<u32>,
}

impl Throttle {
    /// One unit of `count` per `period_s` with `burst` on `key`.
    pub fn new(key: impl Into<String>, burst: u32, count: u32, period_s: u64) -> Self {
        Throttle {
            key: key.into(),
            burst,
            count,
            period_s,
            quantity: None,
        }
    }
    /// The quantity argument.
    pub fn quantity(mut self, n: u32) -> Self {
        self.quantity = Some(n);
        self
    }
}

impl Command for Throttle {
    fn name(&self) -> &'static str {
        "BROKER.THROTTLE"
    }
    fn to_args(&self) -> Vec<Vec<u8>> {
        let args = Args::default()
            .s(&self.key)
            .n(self.burst)
            .n(self.count)
            .n(self.period_s);
        match self.quantity {
            Some(q) => args.n(q).0,
            None => args.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(c: &impl Command) -> String {
        c.describe()
    }

    #[test]
    fn arguments_come_in_the_gateways_order() {
        assert_eq!(
            line(
                &Join::new("chat:a", "alice", "c1", "n1")
                    .presence()
                    .max_rooms(2)
                    .since(3, "ep")
            ),
            "BROKER.JOIN chat:a alice c1 n1 PRESENCE MAXROOMS 2 SINCE 3 ep"
        );
        assert_eq!(
            line(
                &Publish::string("chat:a", "ev", "hi")
                    .from("c1")
                    .except("c2")
                    .history(2, 60)
                    .rate("k", 2, 1, 60)
            ),
            "BROKER.PUBLISH chat:a ev hi FORMAT string FROM c1 EXCEPT c2 HISTORY 2 60 RATE k 2 1 60"
        );
        assert_eq!(
            line(
                &ConnOpen::new("a", "c1", "n1", "::1")
                    .at(5)
                    .max_user(2)
                    .max_ip(3)
            ),
            "BROKER.CONN.OPEN a c1 n1 ::1 AT 5 MAXUSER 2 MAXIP 3"
        );
        assert_eq!(
            line(&NodeLease::new("n1", 60_000).channel("ch").deadline(9)),
            "BROKER.NODE.LEASE n1 60000 CHANNEL ch DEADLINE 9"
        );
        assert_eq!(
            line(&Throttle::new("k", 15, 30, 60)),
            "BROKER.THROTTLE k 15 30 60"
        );
        assert_eq!(line(&Kick::new("bob")), "BROKER.KICK bob");
        assert_eq!(
            line(&History::new("r").since(2).limit(1)),
            "BROKER.HISTORY r SINCE 2 LIMIT 1"
        );
    }
}
