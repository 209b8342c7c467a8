//! A small world builder for the module tests: one `redis-server` with the
//! module, a connection to it, and the nodes, connections and rooms a test
//! needs, each set up in one line, so a test states only what it is about.
//!
//! ```no_run
//! use broker_tests::*;
//! let mut w = World::start();
//! w.node("n1");
//! let alice = w.open("alice", "c1", "n1");
//! let joined = w.join(&alice, "chat:a");
//! assert_eq!(int(&joined["first"]), 1);
//! assert_eq!(w.count("chat:a"), (1, 1));
//! ```
//!
//! Every command goes through [`crate::commands`]; [`World::ok`],
//! [`World::err`] and [`World::call`] run any of them, and `w.con` is there
//! for raw arrays ([`crate::ok`]) when the raw arguments are the point.

use std::collections::BTreeMap;

use redis::{Connection, RedisResult, Value};

use crate::commands::{
    send, Command, ConnClose, ConnOpen, History, Join, Leave, NodeLease, Online, Presence, Publish,
    RoomCount, RoomMembers,
};
use crate::{err_line, info_field, int, map, text, Builder, Message, RedisServer, Subscriber};

/// How long [`World::node`] leases a node: longer than any test runs.
pub const LEASE_MS: u64 = 60_000;

/// The address [`World::open`] registers connections from.
pub const LOCALHOST: &str = "127.0.0.1";

/// A server with the module and one connection to it.
pub struct World {
    /// The server; for [`Subscriber`]s, more clients, restarts, replicas.
    pub server: RedisServer,
    /// The world's own connection (RESP2 unless [`World::resp3`]).
    pub con: Connection,
}

/// A user's connection on a node, as the registry knows it. Plain data:
/// [`World::open`] registers one, [`Conn::new`] only names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// The user id.
    pub user: String,
    /// The connection id.
    pub conn: String,
    /// The node holding it.
    pub node: String,
}

impl Conn {
    /// Names a connection without registering it.
    pub fn new(user: impl Into<String>, conn: impl Into<String>, node: impl Into<String>) -> Self {
        Conn {
            user: user.into(),
            conn: conn.into(),
            node: node.into(),
        }
    }

    /// `CONN.OPEN` of this connection from `ip` (add limits, `AT`).
    pub fn open_from(&self, ip: &str) -> ConnOpen {
        ConnOpen::new(&self.user, &self.conn, &self.node, ip)
    }

    /// `JOIN room` of this connection (add `PRESENCE`, `SINCE`, ...).
    pub fn join(&self, room: &str) -> Join {
        Join::new(room, &self.user, &self.conn, &self.node)
    }

    /// `LEAVE room` of this connection.
    pub fn leave(&self, room: &str) -> Leave {
        Leave::new(room, &self.user, &self.conn)
    }

    /// `CONN.CLOSE` of this connection.
    pub fn close(&self) -> ConnClose {
        ConnClose::new(&self.user, &self.conn)
    }

    /// A `FORMAT string` publish to `room` `FROM` this connection.
    pub fn publish(&self, room: &str, payload: &str) -> Publish {
        Publish::string(room, "ev", payload).from_conn(&self.conn)
    }
}

impl World {
    /// A server with the default arguments.
    pub fn start() -> World {
        World::with(RedisServer::builder())
    }

    /// A server with extra module or server arguments.
    pub fn with(builder: Builder) -> World {
        let server = builder.start();
        let con = server.client();
        World { server, con }
    }

    /// A server whose module gets `args` (e.g. `HISTORY chat 10 60`).
    pub fn with_module_args<I, S>(args: I) -> World
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        World::with(RedisServer::builder().module_args(args))
    }

    /// The same world, its connection speaking RESP3 (maps arrive as maps).
    pub fn resp3(mut self) -> World {
        self.con = self.server.client_resp3();
        self
    }

    /// A new RESP2 connection to the server.
    pub fn client(&self) -> Connection {
        self.server.client()
    }

    /// Restarts the server on its port and directory (it loads its RDB or
    /// AOF) and reconnects.
    pub fn restart(&mut self) {
        self.server.restart();
        self.con = self.server.client();
    }

    // -- running commands ---------------------------------------------------

    /// Runs `command` and returns the reply (errors as `Err`).
    pub fn call(&mut self, command: impl Command) -> RedisResult<Value> {
        send(&mut self.con, &command)
    }

    /// Runs `command` and panics on an error reply.
    pub fn ok(&mut self, command: impl Command) -> Value {
        send(&mut self.con, &command)
            .unwrap_or_else(|e| panic!("{} failed: {}", command.describe(), err_line(&e)))
    }

    /// Runs `command`, expects an error reply and returns its full line.
    pub fn err(&mut self, command: impl Command) -> String {
        match send(&mut self.con, &command) {
            Ok(v) => panic!("{} should fail but replied {v:?}", command.describe()),
            Err(e) => err_line(&e),
        }
    }

    /// Runs `command` and reads its integer reply.
    pub fn int(&mut self, command: impl Command) -> i64 {
        int(&self.ok(command))
    }

    /// Runs `command` and reads its map reply.
    pub fn map(&mut self, command: impl Command) -> BTreeMap<String, Value> {
        map(&self.ok(command))
    }

    // -- nodes and connections ------------------------------------------------

    /// Leases `node` for [`LEASE_MS`]: a live gateway node.
    pub fn node(&mut self, node: &str) -> &mut World {
        self.ok(NodeLease::new(node, LEASE_MS));
        self
    }

    /// Leases each of `nodes` (see [`World::node`]).
    pub fn nodes(&mut self, nodes: &[&str]) -> &mut World {
        for n in nodes {
            self.node(n);
        }
        self
    }

    /// Registers `conn` of `user` on `node` from [`LOCALHOST`], expecting
    /// `OK`; the node must be leased.
    pub fn open(&mut self, user: &str, conn: &str, node: &str) -> Conn {
        let c = Conn::new(user, conn, node);
        let reply = self.ok(c.open_from(LOCALHOST));
        assert_eq!(text(&reply), "OK", "CONN.OPEN {user} {conn} {node}");
        c
    }

    /// `CONN.CLOSE` of `conn`; returns how many rooms it left.
    pub fn close(&mut self, conn: &Conn) -> i64 {
        self.int(conn.close())
    }

    // -- rooms ----------------------------------------------------------------

    /// A plain `JOIN` of `conn` to `room`; returns the reply map.
    pub fn join(&mut self, conn: &Conn, room: &str) -> BTreeMap<String, Value> {
        self.map(conn.join(room))
    }

    /// A `JOIN ... PRESENCE` of `conn` to `room`; returns the reply map.
    pub fn join_presence(&mut self, conn: &Conn, room: &str) -> BTreeMap<String, Value> {
        self.map(conn.join(room).with_presence())
    }

    /// `LEAVE` of `conn` from `room`; 1 when it was a member.
    pub fn leave(&mut self, conn: &Conn, room: &str) -> i64 {
        self.int(conn.leave(room))
    }

    /// `ROOM.COUNT room` as (users, connections).
    pub fn count(&mut self, room: &str) -> (i64, i64) {
        let m = self.map(RoomCount::new(room));
        (int(&m["users"]), int(&m["connections"]))
    }

    /// `ROOM.MEMBERS room` as (user, connections), sorted by user.
    pub fn members(&mut self, room: &str) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self
            .map(RoomMembers::new(room))
            .iter()
            .map(|(k, v)| (k.clone(), int(v)))
            .collect();
        v.sort();
        v
    }

    // -- messages -------------------------------------------------------------

    /// A `FORMAT string` publish of event `ev`; returns the sequence.
    pub fn publish(&mut self, room: &str, payload: &str) -> i64 {
        self.int(Publish::string(room, "ev", payload))
    }

    /// `HISTORY room` (everything kept) as its reply map.
    pub fn history(&mut self, room: &str) -> BTreeMap<String, Value> {
        self.map(History::new(room))
    }

    /// The room's current sequence number (0 for a room never published to).
    pub fn seq(&mut self, room: &str) -> i64 {
        int(&self.history(room)["seq"])
    }

    // -- reading state --------------------------------------------------------

    /// `PRESENCE user` as its reply map.
    pub fn presence(&mut self, user: &str) -> BTreeMap<String, Value> {
        self.map(Presence::new(user))
    }

    /// `online` or `offline`.
    pub fn status(&mut self, user: &str) -> String {
        text(&self.presence(user)["status"])
    }

    /// `ONLINE` as (users, connections).
    pub fn online(&mut self) -> (i64, i64) {
        let m = self.map(Online);
        (int(&m["users"]), int(&m["connections"]))
    }

    /// One field of `INFO broker`.
    pub fn info(&mut self, name: &str) -> Option<String> {
        info_field(&mut self.con, "broker", name)
    }

    // -- node channels --------------------------------------------------------

    /// Subscribes to the `broker:node:<node>` channel of each node.
    pub fn listen(&self, nodes: &[&str]) -> Subscriber {
        Subscriber::nodes(&self.server, nodes)
    }

    /// Everything `sub` got so far, up to a fence sent on the world's
    /// connection (see [`Subscriber::fence`]).
    pub fn fence(&mut self, sub: &Subscriber) -> Vec<Message> {
        sub.fence(&mut self.con)
    }
}
