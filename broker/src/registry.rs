//! The registry: gateway nodes, connections, presence and rooms, as plain data.
//!
//! The Redis module owns one [`Registry`] and turns commands into calls on it;
//! everything here is deterministic given its inputs (time, epochs and limits
//! are passed in), which is what lets a replica replay the master's commands
//! and end with the same state.
//!
//! Shape of the data, and the invariants every operation keeps:
//!
//! - a **node** exists while its lease is held; it lists every connection of
//!   its own that this registry knows (opened here, or a member of a room here);
//! - a **connection** belongs to one user and one node. It is *opened* when
//!   `CONN.OPEN` registered it (presence, limits); it may also exist only as a
//!   room member (on a Redis Cluster shard that holds the room but not the
//!   user). It is dropped when it is neither opened nor in any room;
//! - a **user** is online while it has at least one opened connection;
//! - a **room** holds its members, the per-user and per-node member counts
//!   (O(1) counts; fan-out goes to nodes, not members), its sequence, epoch
//!   and retained history. An empty room with no retained history is dropped,
//!   which loses its sequence: the next incarnation gets a new epoch.
//!
//! Presence events are computed here ([`PresenceEvent`]): a join for a user's
//! first connection in a room, a leave for its last.
//!
//! **After a load** (a restart from an RDB or AOF file, a replica's full
//! sync) the saved connections may be stale: some closed after the save.
//! The first lease of each loaded node then answers "new", so the gateway
//! registers its live connections and rooms again; its next lease drops
//! every connection of the node that was not registered again (with leave
//! events), so presence is exact again ([`Registry::after_load_step`]).
//!
//! **Presence grace.** When a connection goes away (closed, or its node
//! released) with a grace deadline, a user whose last connection that was
//! *lingers* in the room until the deadline instead of leaving: no leave
//! event, still listed by [`Registry::room_members`] (with 0 connections).
//! A join of the same user before the deadline resumes the presence without
//! a join event; at the deadline the caller's timer ends it
//! ([`Registry::end_lingering`]) and the leave event goes out then. So a
//! gateway restart whose clients reconnect within the grace makes no
//! leave/join pair.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::names;

/// Why a registry operation was refused. Each maps to one error code of
/// `docs/COMMANDS.md`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The node has no live lease: it must re-lease and re-register.
    #[error("NOLEASE node has no live lease")]
    NoLease,
    /// The user already has the maximum number of connections.
    #[error("LIMIT user")]
    UserLimit,
    /// The client address already has the maximum number of connections.
    #[error("LIMIT ip")]
    IpLimit,
    /// The connection id is registered for another user or node.
    #[error("CONFLICT connection id belongs to another user or node")]
    Conflict,
    /// The connection is already in the maximum number of rooms.
    #[error("TOOMANYROOMS connection is in too many rooms")]
    TooManyRooms,
    /// Another user's personal room.
    #[error("FORBIDDEN personal room of another user")]
    Forbidden,
    /// A publish `FROM` a connection that is not in the room.
    #[error("NOTMEMBER connection is not a member of the room")]
    NotMember,
}

/// What a node's lease must do after a load ([`Registry::after_load_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterLoad {
    /// Nothing: no load since, or already reconciled.
    Nothing,
    /// Answer "new lease": the node registers its connections again.
    Reregister,
    /// Drop these `(user, conn)`: not registered again since.
    Drop(Vec<(String, String)>),
}

/// Whether a presence event announces a join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's first connection entered the room.
    Join,
    /// The user's last connection left the room.
    Leave,
}

/// A presence event to deliver to the room's members on `nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// Room whose presence changed.
    pub room: String,
    /// The user who joined or left.
    pub user: String,
    /// Join or leave.
    pub change: PresenceChange,
    /// The room's epoch, for the envelope.
    pub epoch: String,
    /// Nodes hosting members of the room after the change.
    pub nodes: Vec<String>,
}

/// History settings of a room: keep the last `size` messages for `ttl_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryConfig {
    /// Messages kept; 0 keeps none.
    pub size: u32,
    /// How long a message is kept, in milliseconds; 0 means no age limit.
    pub ttl_ms: u64,
}

/// One retained message: the exact frame clients received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Sequence number in the room.
    pub seq: u64,
    /// Publish time (ms since the Unix epoch).
    pub ts_ms: u64,
    /// The encoded `msg` frame.
    #[serde(with = "serde_bytes_compat")]
    pub frame: Vec<u8>,
}

/// Serde helper so frames are stored as MessagePack `bin`, not integer arrays.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

#[derive(Debug, Clone)]
struct Node {
    deadline_ms: u64,
    lease_ms: u64,
    /// Sharded Pub/Sub channel the node reads on this shard (cluster only).
    channel: Option<String>,
    conns: HashSet<String>,
    /// After a load: the connections the node has not registered again
    /// since (see [`Registry::after_load_step`]).
    unconfirmed: Option<HashSet<String>>,
    /// Whether the node was already asked to register again.
    asked: bool,
}

#[derive(Debug, Clone)]
struct Conn {
    user: String,
    node: String,
    opened: Option<Opened>,
    rooms: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Opened {
    ip: String,
    at_ms: u64,
}

#[derive(Debug, Clone)]
struct Room {
    seq: u64,
    epoch: String,
    history: VecDeque<Stored>,
    config: HistoryConfig,
    presence_events: bool,
    members: HashSet<String>,
    users: HashMap<String, u32>,
    nodes: HashMap<String, u32>,
    /// Users whose last connection went away within a grace: user → until (ms).
    lingering: HashMap<String, u64>,
}

impl Room {
    fn new(epoch: String, config: HistoryConfig) -> Room {
        Room {
            seq: 0,
            epoch,
            history: VecDeque::new(),
            config,
            presence_events: false,
            members: HashSet::new(),
            users: HashMap::new(),
            nodes: HashMap::new(),
            lingering: HashMap::new(),
        }
    }

    /// Nothing left: no member, no lingering user, no retained message.
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.lingering.is_empty() && self.history.is_empty()
    }

    fn node_list(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.nodes.keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// Drops retained messages beyond the size limit or older than the TTL.
    fn trim(&mut self, now_ms: u64) {
        let size = self.config.size as usize;
        while self.history.len() > size {
            self.history.pop_front();
        }
        if self.config.ttl_ms > 0 {
            while let Some(first) = self.history.front() {
                if first.ts_ms.saturating_add(self.config.ttl_ms) <= now_ms {
                    self.history.pop_front();
                } else {
                    break;
                }
            }
        }
    }

    fn is_live(&self, stored: &Stored, now_ms: u64) -> bool {
        self.config.ttl_ms == 0 || stored.ts_ms.saturating_add(self.config.ttl_ms) > now_ms
    }
}

/// What [`Registry::join`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The user's first connection in the room.
    pub first: bool,
    /// The connection was already a member (nothing changed).
    pub already: bool,
    /// The room's sequence now.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// The epoch of a room this join created (for replication), if it did.
    pub created_epoch: Option<String>,
    /// The join event, when the room sends presence events.
    pub event: Option<PresenceEvent>,
}

/// Messages a reconnecting client missed, from [`Registry::recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery<'a> {
    /// True when `frames` holds every message after the client's position.
    pub recovered: bool,
    /// The missed frames, oldest first.
    pub frames: Vec<&'a [u8]>,
}

/// A read of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRead<'a> {
    /// The room's current sequence (0 for a room that does not exist).
    pub seq: u64,
    /// The room's epoch (empty for a room that does not exist).
    pub epoch: &'a str,
    /// Retained frames after the requested position, oldest first.
    pub frames: Vec<&'a [u8]>,
}

/// What a publish needs to know before it builds the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPlan {
    /// The sequence number this message gets.
    pub seq: u64,
    /// The room's epoch, or `None` when the publish creates the room.
    pub epoch: Option<String>,
    /// The history settings the message will be stored with.
    pub config: HistoryConfig,
    /// The sender's user id, when `from` was given.
    pub sender_user: Option<String>,
}

/// One connection in a presence reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Connection id.
    pub conn: String,
    /// Gateway node holding it.
    pub node: String,
    /// Client address.
    pub ip: String,
    /// Connect time, ms since the Unix epoch.
    pub connected_at_ms: u64,
    /// Rooms the connection is in (on this registry).
    pub rooms: Vec<String>,
}

/// One node in a `BROKER.NODES` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub node: String,
    /// Opened connections of the node.
    pub connections: u64,
    /// When the lease runs out, ms since the Unix epoch.
    pub deadline_ms: u64,
}

/// The broker's whole state on one Redis (one shard of a cluster).
#[derive(Debug, Default, Clone)]
pub struct Registry {
    nodes: HashMap<String, Node>,
    conns: HashMap<String, Conn>,
    users: HashMap<String, BTreeSet<String>>,
    ips: HashMap<String, u32>,
    rooms: HashMap<String, Room>,
    opened: u64,
    /// Lingering presences over all rooms (the timer skips its scan at 0).
    lingering: u64,
    namespace_history: HashMap<String, HistoryConfig>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Sets the history kept by rooms of `namespace` unless a publish says
    /// otherwise (the module's `HISTORY` arguments).
    pub fn set_namespace_history(&mut self, namespace: &str, config: HistoryConfig) {
        self.namespace_history.insert(namespace.to_string(), config);
    }

    fn default_history(&self, room: &str) -> HistoryConfig {
        names::split_room(room)
            .ok()
            .and_then(|(ns, _)| self.namespace_history.get(ns).copied())
            .unwrap_or_default()
    }

    // ----- nodes -----------------------------------------------------------

    /// Takes or renews `node`'s lease until `deadline_ms`. Returns true when
    /// the node already held a lease (a renewal), false when the lease is new
    /// — then the node must register its connections again.
    pub fn lease(&mut self, node: &str, lease_ms: u64, deadline_ms: u64) -> bool {
        let renewed = self.nodes.contains_key(node);
        let entry = self.nodes.entry(node.to_string()).or_insert_with(|| Node {
            deadline_ms,
            lease_ms,
            channel: None,
            conns: HashSet::new(),
            unconfirmed: None,
            asked: false,
        });
        entry.deadline_ms = deadline_ms;
        entry.lease_ms = lease_ms;
        renewed
    }

    /// What a lease of `node` must do after a load (the master calls it
    /// before [`Registry::lease`]; a replica follows the master's stream
    /// instead): nothing, ask the node to register again (its first lease
    /// since the load), or drop the connections it did not register again
    /// (its next one), as `(user, conn)`.
    pub fn after_load_step(&mut self, node: &str) -> AfterLoad {
        let Some(n) = self.nodes.get_mut(node) else {
            return AfterLoad::Nothing;
        };
        if n.unconfirmed.is_none() {
            return AfterLoad::Nothing;
        }
        if !n.asked {
            n.asked = true;
            return AfterLoad::Reregister;
        }
        let stale = n.unconfirmed.take().unwrap_or_default();
        let mut out: Vec<(String, String)> = stale
            .into_iter()
            .filter_map(|conn| self.conns.get(&conn).map(|c| (c.user.clone(), conn)))
            .collect();
        out.sort();
        AfterLoad::Drop(out)
    }

    /// Notes that `node` registered `conn` again after a load.
    fn confirm(&mut self, node: &str, conn: &str) {
        if let Some(set) = self
            .nodes
            .get_mut(node)
            .and_then(|n| n.unconfirmed.as_mut())
        {
            set.remove(conn);
        }
    }

    /// Sets the sharded Pub/Sub channel `node` reads on this shard; `None`
    /// means its classic channel ([`names::node_channel`]).
    pub fn set_node_channel(&mut self, node: &str, channel: Option<&str>) {
        if let Some(entry) = self.nodes.get_mut(node) {
            entry.channel = channel.map(str::to_string);
        }
    }

    /// The sharded channel `node` reads on this shard, if it named one.
    pub fn node_channel(&self, node: &str) -> Option<&str> {
        self.nodes.get(node).and_then(|n| n.channel.as_deref())
    }

    /// True when `node` holds a lease (expiry is decided by the caller's timer).
    pub fn has_lease(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Nodes whose lease ran out at `now_ms`, sorted.
    pub fn expired_nodes(&self, now_ms: u64) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.deadline_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        out.sort();
        out
    }

    /// Gives every node at least `now_ms + its lease` to heartbeat again;
    /// used after loading a saved state, whose deadlines may have passed.
    pub fn extend_leases(&mut self, now_ms: u64) {
        for node in self.nodes.values_mut() {
            node.deadline_ms = node.deadline_ms.max(now_ms.saturating_add(node.lease_ms));
        }
    }

    /// Live nodes, sorted by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut out: Vec<NodeInfo> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeInfo {
                node: id.clone(),
                connections: n
                    .conns
                    .iter()
                    .filter(|c| self.conns.get(*c).is_some_and(|c| c.opened.is_some()))
                    .count() as u64,
                deadline_ms: n.deadline_ms,
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Drops `node` with all its connections and memberships. Returns the
    /// number of opened connections dropped and the resulting leave events.
    /// With `linger_until`, users whose last connection this was linger in
    /// their rooms until then (module docs: presence grace).
    pub fn release_node(
        &mut self,
        node: &str,
        linger_until: Option<u64>,
    ) -> (u64, Vec<PresenceEvent>) {
        let Some(entry) = self.nodes.get(node) else {
            return (0, Vec::new());
        };
        let mut conns: Vec<String> = entry.conns.iter().cloned().collect();
        conns.sort();
        let mut events = Vec::new();
        let mut dropped = 0;
        for conn in conns {
            if self.conns.get(&conn).is_some_and(|c| c.opened.is_some()) {
                dropped += 1;
            }
            self.drop_conn(&conn, &mut events, linger_until);
        }
        self.nodes.remove(node);
        (dropped, events)
    }

    // ----- connections -----------------------------------------------------

    /// Registers an opened connection, enforcing the per-user and per-IP
    /// limits in the same step as the insert.
    ///
    /// # Errors
    /// [`RegistryError::NoLease`], [`RegistryError::Conflict`],
    /// [`RegistryError::UserLimit`], [`RegistryError::IpLimit`].
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &mut self,
        user: &str,
        conn: &str,
        node: &str,
        ip: &str,
        at_ms: u64,
        max_per_user: Option<u32>,
        max_per_ip: Option<u32>,
    ) -> Result<(), RegistryError> {
        if !self.nodes.contains_key(node) {
            return Err(RegistryError::NoLease);
        }
        if let Some(existing) = self.conns.get(conn) {
            if existing.user != user || existing.node != node {
                return Err(RegistryError::Conflict);
            }
            if existing.opened.is_some() {
                self.confirm(node, conn);
                return Ok(());
            }
        }
        let user_count = self.users.get(user).map_or(0, |c| c.len() as u32);
        if max_per_user.is_some_and(|max| user_count >= max) {
            return Err(RegistryError::UserLimit);
        }
        let ip_count = self.ips.get(ip).copied().unwrap_or(0);
        if max_per_ip.is_some_and(|max| ip_count >= max) {
            return Err(RegistryError::IpLimit);
        }
        let entry = self.attach_conn(user, conn, node);
        entry.opened = Some(Opened {
            ip: ip.to_string(),
            at_ms,
        });
        self.users
            .entry(user.to_string())
            .or_default()
            .insert(conn.to_string());
        *self.ips.entry(ip.to_string()).or_insert(0) += 1;
        self.opened += 1;
        Ok(())
    }

    /// Closes a connection of `user`: leaves all its rooms. Returns the
    /// number of rooms left and the resulting leave events. Unknown
    /// connections, or one of another user, change nothing. With
    /// `linger_until`, the user lingers where this was its last connection.
    pub fn close(
        &mut self,
        user: &str,
        conn: &str,
        linger_until: Option<u64>,
    ) -> (u64, Vec<PresenceEvent>) {
        match self.conns.get(conn) {
            Some(c) if c.user == user => {
                let rooms = c.rooms.len() as u64;
                let mut events = Vec::new();
                self.drop_conn(conn, &mut events, linger_until);
                (rooms, events)
            }
            _ => (0, Vec::new()),
        }
    }

    /// Gets or creates the connection entry and links it to its node.
    fn attach_conn(&mut self, user: &str, conn: &str, node: &str) -> &mut Conn {
        if let Some(n) = self.nodes.get_mut(node) {
            n.conns.insert(conn.to_string());
        }
        self.conns.entry(conn.to_string()).or_insert_with(|| Conn {
            user: user.to_string(),
            node: node.to_string(),
            opened: None,
            rooms: BTreeSet::new(),
        })
    }

    /// Removes a connection everywhere: rooms, user, IP, node.
    fn drop_conn(
        &mut self,
        conn: &str,
        events: &mut Vec<PresenceEvent>,
        linger_until: Option<u64>,
    ) {
        let Some(entry) = self.conns.get(conn) else {
            return;
        };
        let rooms: Vec<String> = entry.rooms.iter().cloned().collect();
        for room in rooms {
            if let Some(event) = self.remove_member(&room, conn, linger_until) {
                events.push(event);
            }
        }
        let Some(entry) = self.conns.remove(conn) else {
            return;
        };
        if let Some(opened) = entry.opened {
            self.unopen(&entry.user, conn, &opened.ip);
        }
        if let Some(node) = self.nodes.get_mut(&entry.node) {
            node.conns.remove(conn);
        }
    }

    fn unopen(&mut self, user: &str, conn: &str, ip: &str) {
        if let Some(set) = self.users.get_mut(user) {
            set.remove(conn);
            if set.is_empty() {
                self.users.remove(user);
            }
        }
        if let Some(count) = self.ips.get_mut(ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.ips.remove(ip);
            }
        }
        self.opened = self.opened.saturating_sub(1);
    }

    /// Drops a connection that is neither opened nor in a room.
    fn drop_if_unused(&mut self, conn: &str) {
        let unused = self
            .conns
            .get(conn)
            .is_some_and(|c| c.opened.is_none() && c.rooms.is_empty());
        if unused {
            if let Some(entry) = self.conns.remove(conn) {
                if let Some(node) = self.nodes.get_mut(&entry.node) {
                    node.conns.remove(conn);
                }
            }
        }
    }

    /// Users online and opened connections: `BROKER.ONLINE`, O(1).
    pub fn online(&self) -> (u64, u64) {
        (self.users.len() as u64, self.opened)
    }

    /// Number of rooms held.
    pub fn rooms_held(&self) -> u64 {
        self.rooms.len() as u64
    }

    /// Number of live nodes.
    pub fn node_count(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// The opened connections of `user`, sorted by connect time then id.
    pub fn presence(&self, user: &str) -> Vec<ConnInfo> {
        let Some(conns) = self.users.get(user) else {
            return Vec::new();
        };
        let mut out: Vec<ConnInfo> = conns
            .iter()
            .filter_map(|id| {
                let c = self.conns.get(id)?;
                let opened = c.opened.as_ref()?;
                Some(ConnInfo {
                    conn: id.clone(),
                    node: c.node.clone(),
                    ip: opened.ip.clone(),
                    connected_at_ms: opened.at_ms,
                    rooms: c.rooms.iter().cloned().collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.connected_at_ms
                .cmp(&b.connected_at_ms)
                .then(a.conn.cmp(&b.conn))
        });
        out
    }

    /// Every connection of `user` this registry knows, opened here or only
    /// a member of rooms here, with its rooms here; sorted by connection
    /// id. On a cluster a connection's rooms live on their rooms' shards:
    /// `BROKER.USER.ROOMS` on every master gathers them. O(connections on
    /// this shard): member-only connections are not indexed by user.
    pub fn user_rooms(&self, user: &str) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.user == user)
            .map(|(id, c)| (id.clone(), c.rooms.iter().cloned().collect()))
            .collect();
        out.sort();
        out
    }

    /// The opened connections of `user` with their nodes, for `BROKER.KICK`
    /// (a connection known here only as a room member is not listed).
    pub fn user_conns(&self, user: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .users
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| self.conns.get(id).map(|c| (id.clone(), c.node.clone())))
            .collect();
        out.sort();
        out
    }

    // ----- rooms -----------------------------------------------------------

    /// Adds `conn` to `room`. `new_epoch` is the epoch to give the room if
    /// this join creates it (the caller makes it random on a master, and
    /// passes the master's on a replica). `presence_events` turns on join and
    /// leave events for the room.
    ///
    /// # Errors
    /// [`RegistryError::NoLease`], [`RegistryError::Forbidden`],
    /// [`RegistryError::Conflict`], [`RegistryError::TooManyRooms`].
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        room: &str,
        user: &str,
        conn: &str,
        node: &str,
        presence_events: bool,
        max_rooms: Option<u32>,
        new_epoch: &str,
    ) -> Result<JoinOutcome, RegistryError> {
        if !self.nodes.contains_key(node) {
            return Err(RegistryError::NoLease);
        }
        if names::personal_room_owner(room).is_some_and(|owner| owner != user) {
            return Err(RegistryError::Forbidden);
        }
        if let Some(existing) = self.conns.get(conn) {
            if existing.user != user || existing.node != node {
                return Err(RegistryError::Conflict);
            }
            if existing.rooms.contains(room) {
                self.confirm(node, conn);
                let r = self.rooms.get_mut(room);
                let (seq, epoch) = match r {
                    Some(r) => {
                        r.presence_events |= presence_events;
                        (r.seq, r.epoch.clone())
                    }
                    None => (0, String::new()),
                };
                return Ok(JoinOutcome {
                    first: false,
                    already: true,
                    seq,
                    epoch,
                    created_epoch: None,
                    event: None,
                });
            }
            if max_rooms.is_some_and(|max| existing.rooms.len() as u32 >= max) {
                return Err(RegistryError::TooManyRooms);
            }
        }
        let default_config = self.default_history(room);
        let mut created_epoch = None;
        let r = self.rooms.entry(room.to_string()).or_insert_with(|| {
            created_epoch = Some(new_epoch.to_string());
            Room::new(new_epoch.to_string(), default_config)
        });
        r.presence_events |= presence_events;
        r.members.insert(conn.to_string());
        let user_conns = r.users.entry(user.to_string()).or_insert(0);
        *user_conns += 1;
        let first = *user_conns == 1;
        let resumed = first && r.lingering.remove(user).is_some();
        if resumed {
            self.lingering = self.lingering.saturating_sub(1);
        }
        *r.nodes.entry(node.to_string()).or_insert(0) += 1;
        let event = (first && !resumed && r.presence_events).then(|| PresenceEvent {
            room: room.to_string(),
            user: user.to_string(),
            change: PresenceChange::Join,
            epoch: r.epoch.clone(),
            nodes: r.node_list(),
        });
        let (seq, epoch) = (r.seq, r.epoch.clone());
        self.attach_conn(user, conn, node)
            .rooms
            .insert(room.to_string());
        self.confirm(node, conn);
        Ok(JoinOutcome {
            first,
            already: false,
            seq,
            epoch,
            created_epoch,
            event,
        })
    }

    /// Removes `conn` (of `user`) from `room`. Returns whether it was a
    /// member and the leave event, if any. With `linger_until` (a
    /// connection going away, not a leave request) the user lingers instead
    /// of leaving when this was its last connection in the room.
    pub fn leave(
        &mut self,
        room: &str,
        user: &str,
        conn: &str,
        linger_until: Option<u64>,
    ) -> (bool, Option<PresenceEvent>) {
        let member = self
            .conns
            .get(conn)
            .is_some_and(|c| c.user == user && c.rooms.contains(room));
        if !member {
            return (false, None);
        }
        let event = self.remove_member(room, conn, linger_until);
        self.drop_if_unused(conn);
        (true, event)
    }

    /// Removes one membership, keeping counts, and drops the room when it is
    /// empty and retains nothing.
    fn remove_member(
        &mut self,
        room: &str,
        conn: &str,
        linger_until: Option<u64>,
    ) -> Option<PresenceEvent> {
        let (user, node) = {
            let c = self.conns.get_mut(conn)?;
            c.rooms.remove(room);
            (c.user.clone(), c.node.clone())
        };
        let r = self.rooms.get_mut(room)?;
        if !r.members.remove(conn) {
            return None;
        }
        let last = match r.users.get_mut(&user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                r.users.remove(&user);
                true
            }
        };
        match r.nodes.get_mut(&node) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                r.nodes.remove(&node);
            }
        }
        let leaves = last && r.presence_events;
        let event = match linger_until {
            Some(until) if leaves => {
                if r.lingering.insert(user, until).is_none() {
                    self.lingering += 1;
                }
                None
            }
            _ => leaves.then(|| PresenceEvent {
                room: room.to_string(),
                user,
                change: PresenceChange::Leave,
                epoch: r.epoch.clone(),
                nodes: r.node_list(),
            }),
        };
        if r.is_empty() {
            self.rooms.remove(room);
        }
        event
    }

    /// Lingering presences whose grace ended by `now_ms`, as `(room, user)`,
    /// at most `max`.
    pub fn expired_lingering(&self, now_ms: u64, max: usize) -> Vec<(String, String)> {
        if self.lingering == 0 {
            return Vec::new();
        }
        let mut out: Vec<(String, String)> = self
            .rooms
            .iter()
            .flat_map(|(name, r)| {
                r.lingering
                    .iter()
                    .filter(move |(_, until)| **until <= now_ms)
                    .map(move |(user, _)| (name.clone(), user.clone()))
            })
            .take(max)
            .collect();
        out.sort();
        out
    }

    /// Ends `user`'s lingering presence in `room`: the leave event, or
    /// `None` when the user was not lingering there (it came back).
    pub fn end_lingering(&mut self, room: &str, user: &str) -> Option<PresenceEvent> {
        let r = self.rooms.get_mut(room)?;
        r.lingering.remove(user)?;
        self.lingering = self.lingering.saturating_sub(1);
        let event = PresenceEvent {
            room: room.to_string(),
            user: user.to_string(),
            change: PresenceChange::Leave,
            epoch: r.epoch.clone(),
            nodes: r.node_list(),
        };
        if r.is_empty() {
            self.rooms.remove(room);
        }
        Some(event)
    }

    /// Distinct users in `room` with their connection counts, sorted; a
    /// lingering user is listed with 0 connections.
    pub fn room_members(&self, room: &str) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .rooms
            .get(room)
            .map(|r| {
                r.users
                    .iter()
                    .map(|(u, n)| (u.clone(), *n))
                    .chain(r.lingering.keys().map(|u| (u.clone(), 0)))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Users and connections in `room`, O(1).
    pub fn room_count(&self, room: &str) -> (u64, u64) {
        self.rooms.get(room).map_or((0, 0), |r| {
            let users = r.users.len() + r.lingering.len();
            (users as u64, r.members.len() as u64)
        })
    }

    /// True when `conn` is a member of `room`.
    pub fn is_member(&self, room: &str, conn: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.contains(conn))
    }

    /// Nodes hosting members of `room`, sorted.
    pub fn room_nodes(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map(Room::node_list)
            .unwrap_or_default()
    }

    // ----- publish and history ---------------------------------------------

    /// Checks a publish and tells its sequence number. `from` is the sending
    /// connection (must be a member); `config` the history settings the
    /// gateway passed, if any.
    ///
    /// # Errors
    /// [`RegistryError::NotMember`].
    pub fn plan_publish(
        &self,
        room: &str,
        from: Option<&str>,
        config: Option<HistoryConfig>,
    ) -> Result<PublishPlan, RegistryError> {
        let existing = self.rooms.get(room);
        let sender_user = match from {
            Some(conn) => {
                if !existing.is_some_and(|r| r.members.contains(conn)) {
                    return Err(RegistryError::NotMember);
                }
                self.conns.get(conn).map(|c| c.user.clone())
            }
            None => None,
        };
        let config = config
            .unwrap_or_else(|| existing.map_or_else(|| self.default_history(room), |r| r.config));
        Ok(PublishPlan {
            seq: existing.map_or(1, |r| r.seq.saturating_add(1)),
            epoch: existing.map(|r| r.epoch.clone()),
            config,
            sender_user,
        })
    }

    /// Records a published message: sets the room's sequence and epoch
    /// (a different epoch resets the room's history), stores the frame when
    /// the room keeps history, and returns the nodes to deliver to. The same
    /// call replays the master's publish on a replica.
    pub fn apply_publish(
        &mut self,
        room: &str,
        seq: u64,
        epoch: &str,
        ts_ms: u64,
        config: HistoryConfig,
        frame: &[u8],
    ) -> Vec<String> {
        let r = self
            .rooms
            .entry(room.to_string())
            .or_insert_with(|| Room::new(epoch.to_string(), config));
        if r.epoch != epoch {
            r.epoch = epoch.to_string();
            r.history.clear();
        }
        r.seq = seq;
        r.config = config;
        if config.size > 0 {
            r.history.push_back(Stored {
                seq,
                ts_ms,
                frame: frame.to_vec(),
            });
        }
        r.trim(ts_ms);
        let nodes = r.node_list();
        if r.members.is_empty() && r.history.is_empty() {
            self.rooms.remove(room);
        }
        nodes
    }

    /// Retained frames of `room` after `since`, at most `limit`, that are
    /// still within the TTL at `now_ms`.
    pub fn history(
        &self,
        room: &str,
        since: u64,
        limit: Option<usize>,
        now_ms: u64,
    ) -> HistoryRead<'_> {
        let Some(r) = self.rooms.get(room) else {
            return HistoryRead {
                seq: 0,
                epoch: "",
                frames: Vec::new(),
            };
        };
        let frames = r
            .history
            .iter()
            .filter(|s| s.seq > since && r.is_live(s, now_ms))
            .take(limit.unwrap_or(usize::MAX))
            .map(|s| s.frame.as_slice())
            .collect();
        HistoryRead {
            seq: r.seq,
            epoch: &r.epoch,
            frames,
        }
    }

    /// What a client at `{since, epoch}` missed in `room`. `recovered` is
    /// true only when the epoch matches and every message after `since` is
    /// still retained.
    pub fn recover(&self, room: &str, since: u64, epoch: &str, now_ms: u64) -> Recovery<'_> {
        let Some(r) = self.rooms.get(room) else {
            return Recovery {
                recovered: false,
                frames: Vec::new(),
            };
        };
        if r.epoch != epoch || since > r.seq {
            return Recovery {
                recovered: false,
                frames: Vec::new(),
            };
        }
        let frames: Vec<&[u8]> = r
            .history
            .iter()
            .filter(|s| s.seq > since && r.is_live(s, now_ms))
            .map(|s| s.frame.as_slice())
            .collect();
        let missed = r.seq - since;
        Recovery {
            recovered: frames.len() as u64 == missed,
            frames,
        }
    }

    /// Rooms with no members whose retained history has all expired at
    /// `now_ms`: the sweep drops them (and replicates the drop).
    pub fn idle_rooms(&self, now_ms: u64, max: usize) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|(_, r)| {
                r.members.is_empty()
                    && r.lingering.is_empty()
                    && r.history.iter().all(|s| !r.is_live(s, now_ms))
            })
            .take(max)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Drops an empty room (no-op when it has members).
    pub fn drop_room(&mut self, room: &str) -> bool {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.members.is_empty() && r.lingering.is_empty())
        {
            self.rooms.remove(room);
            return true;
        }
        false
    }

    /// Gives back memory held by maps that grew for a crowd that has since
    /// left (a hash map keeps its capacity otherwise): each one under a
    /// quarter full shrinks. Cheap when there is nothing to do; the module's
    /// timer calls it.
    pub fn compact(&mut self) {
        fn shrink_map<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
            if m.capacity() > 64 && m.len() * 4 < m.capacity() {
                m.shrink_to_fit();
            }
        }
        fn shrink_set<K: Eq + std::hash::Hash>(m: &mut HashSet<K>) {
            if m.capacity() > 64 && m.len() * 4 < m.capacity() {
                m.shrink_to_fit();
            }
        }
        shrink_map(&mut self.nodes);
        shrink_map(&mut self.conns);
        shrink_map(&mut self.users);
        shrink_map(&mut self.ips);
        shrink_map(&mut self.rooms);
        for node in self.nodes.values_mut() {
            shrink_set(&mut node.conns);
        }
    }

    /// Clears everything but the namespace settings (FLUSHALL).
    pub fn clear(&mut self) {
        let namespace_history = std::mem::take(&mut self.namespace_history);
        *self = Registry {
            namespace_history,
            ..Registry::default()
        };
    }

    // ----- persistence -----------------------------------------------------

    /// The registry as a snapshot to save (the derived counts are rebuilt on
    /// load, so they cannot drift from the data).
    pub fn snapshot(&self) -> Snapshot {
        let mut nodes: Vec<SavedNode> = self
            .nodes
            .iter()
            .map(|(id, n)| SavedNode {
                id: id.clone(),
                deadline_ms: n.deadline_ms,
                lease_ms: n.lease_ms,
                channel: n.channel.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut conns: Vec<SavedConn> = self
            .conns
            .iter()
            .map(|(id, c)| SavedConn {
                id: id.clone(),
                user: c.user.clone(),
                node: c.node.clone(),
                opened: c.opened.clone(),
            })
            .collect();
        conns.sort_by(|a, b| a.id.cmp(&b.id));
        let mut rooms: Vec<SavedRoom> = self
            .rooms
            .iter()
            .map(|(name, r)| {
                let mut members: Vec<String> = r.members.iter().cloned().collect();
                members.sort();
                SavedRoom {
                    name: name.clone(),
                    seq: r.seq,
                    epoch: r.epoch.clone(),
                    config: r.config,
                    presence_events: r.presence_events,
                    history: r.history.iter().cloned().collect(),
                    members,
                    lingering: {
                        let mut l: Vec<(String, u64)> =
                            r.lingering.iter().map(|(u, t)| (u.clone(), *t)).collect();
                        l.sort();
                        l
                    },
                }
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            nodes,
            conns,
            rooms,
        }
    }

    /// Replaces the state with a saved snapshot, rebuilding every index.
    /// Entries that break an invariant (a connection of an unknown node, a
    /// member that is not a known connection) are skipped, not trusted.
    pub fn restore(&mut self, snapshot: Snapshot) {
        self.clear();
        for n in snapshot.nodes {
            let _ = self.lease(&n.id, n.lease_ms, n.deadline_ms);
            self.set_node_channel(&n.id, n.channel.as_deref());
        }
        for c in snapshot.conns {
            let Some(node) = self.nodes.get_mut(&c.node) else {
                continue;
            };
            node.conns.insert(c.id.clone());
            if let Some(opened) = &c.opened {
                self.users
                    .entry(c.user.clone())
                    .or_default()
                    .insert(c.id.clone());
                *self.ips.entry(opened.ip.clone()).or_insert(0) += 1;
                self.opened += 1;
            }
            self.conns.insert(
                c.id,
                Conn {
                    user: c.user,
                    node: c.node,
                    opened: c.opened,
                    rooms: BTreeSet::new(),
                },
            );
        }
        for saved in snapshot.rooms {
            let mut room = Room::new(saved.epoch, saved.config);
            room.seq = saved.seq;
            room.presence_events = saved.presence_events;
            room.history = saved.history.into();
            self.lingering += saved.lingering.len() as u64;
            room.lingering = saved.lingering.into_iter().collect();
            for member in saved.members {
                let Some(c) = self.conns.get_mut(&member) else {
                    continue;
                };
                c.rooms.insert(saved.name.clone());
                *room.users.entry(c.user.clone()).or_insert(0) += 1;
                *room.nodes.entry(c.node.clone()).or_insert(0) += 1;
                room.members.insert(member);
            }
            self.rooms.insert(saved.name, room);
        }
        let unused: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, c)| c.opened.is_none() && c.rooms.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in unused {
            self.drop_if_unused(&id);
        }
        for node in self.nodes.values_mut() {
            node.unconfirmed = Some(node.conns.clone());
        }
    }
}

/// The saved form of a [`Registry`] (module aux data, encoding version 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    nodes: Vec<SavedNode>,
    conns: Vec<SavedConn>,
    rooms: Vec<SavedRoom>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedNode {
    id: String,
    deadline_ms: u64,
    lease_ms: u64,
    /// Absent in snapshots saved before sharded Pub/Sub.
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedConn {
    id: String,
    user: String,
    node: String,
    opened: Option<Opened>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedRoom {
    name: String,
    seq: u64,
    epoch: String,
    config: HistoryConfig,
    presence_events: bool,
    history: Vec<Stored>,
    members: Vec<String>,
    /// Lingering users and their deadlines; absent in older snapshots.
    #[serde(default)]
    lingering: Vec<(String, u64)>,
}

impl Snapshot {
    /// Encodes the snapshot as MessagePack.
    ///
    /// # Errors
    /// When serialization fails (it does not for well-formed data).
    pub fn to_bytes(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec(self)
    }

    /// Decodes a snapshot written by [`Snapshot::to_bytes`].
    ///
    /// # Errors
    /// When the bytes are not a snapshot.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased() -> Registry {
        let mut r = Registry::new();
        r.lease("n1", 5000, 10_000);
        r.lease("n2", 5000, 10_000);
        r
    }

    #[test]
    fn open_requires_lease_and_enforces_limits() {
        let mut r = leased();
        assert_eq!(
            r.open("alice", "c0", "nx", "ip", 1, None, None),
            Err(RegistryError::NoLease)
        );
        for i in 0..5 {
            r.open(
                "alice",
                &format!("c{i}"),
                "n1",
                "1.1.1.1",
                1,
                Some(5),
                Some(20),
            )
            .unwrap();
        }
        assert_eq!(
            r.open("alice", "c5", "n1", "1.1.1.1", 1, Some(5), Some(20)),
            Err(RegistryError::UserLimit)
        );
        // re-opening an opened connection is idempotent and not counted
        r.open("alice", "c1", "n1", "1.1.1.1", 1, Some(5), Some(20))
            .unwrap();
        assert_eq!(r.online(), (1, 5));
        assert_eq!(
            r.open("bob", "c1", "n1", "1.1.1.1", 1, None, None),
            Err(RegistryError::Conflict)
        );
        assert_eq!(
            r.open("bob", "b1", "n1", "1.1.1.1", 1, None, Some(5)),
            Err(RegistryError::IpLimit)
        );
    }

    #[test]
    fn user_rooms_lists_member_only_connections_too() {
        let mut r = leased();
        r.open("alice", "c1", "n1", "ip", 1, None, None).unwrap();
        r.join("chat:a", "alice", "c1", "n1", false, None, "e")
            .unwrap();
        // c2 was opened on another shard; here it is only a room member.
        r.join("chat:b", "alice", "c2", "n2", false, None, "e")
            .unwrap();
        r.join("chat:a", "alice", "c2", "n2", false, None, "e")
            .unwrap();
        assert_eq!(
            r.user_rooms("alice"),
            vec![
                ("c1".to_string(), vec!["chat:a".to_string()]),
                (
                    "c2".to_string(),
                    vec!["chat:a".to_string(), "chat:b".to_string()]
                ),
            ]
        );
        assert_eq!(r.presence("alice").len(), 1, "PRESENCE: opened here only");
        assert!(r.user_rooms("bob").is_empty());
    }

    #[test]
    fn presence_events_fire_for_first_and_last_connection() {
        let mut r = leased();
        r.open("alice", "a1", "n1", "ip", 1, None, None).unwrap();
        r.open("alice", "a2", "n2", "ip", 2, None, None).unwrap();
        let j1 = r
            .join("chat:x", "alice", "a1", "n1", true, None, "e1")
            .unwrap();
        assert!(j1.first);
        assert_eq!(j1.created_epoch.as_deref(), Some("e1"));
        assert_eq!(j1.event.as_ref().unwrap().nodes, vec!["n1"]);
        let j2 = r
            .join("chat:x", "alice", "a2", "n2", true, None, "e2")
            .unwrap();
        assert!(!j2.first && j2.event.is_none() && j2.created_epoch.is_none());
        assert_eq!(j2.epoch, "e1");
        assert_eq!(r.room_count("chat:x"), (1, 2));
        assert_eq!(r.room_nodes("chat:x"), vec!["n1", "n2"]);
        let (was, ev) = r.leave("chat:x", "alice", "a1", None);
        assert!(was && ev.is_none());
        let (rooms, events) = r.close("alice", "a2", None);
        assert_eq!(rooms, 1);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].change, PresenceChange::Leave);
        assert_eq!(r.room_count("chat:x"), (0, 0));
        assert_eq!(r.rooms_held(), 0);
    }

    #[test]
    fn personal_room_is_owner_only() {
        let mut r = leased();
        assert_eq!(
            r.join("user:bob", "alice", "a1", "n1", false, None, "e")
                .unwrap_err(),
            RegistryError::Forbidden
        );
        assert!(r
            .join("user:alice", "alice", "a1", "n1", false, None, "e")
            .is_ok());
    }

    #[test]
    fn max_rooms_is_enforced() {
        let mut r = leased();
        r.join("chat:a", "u", "c", "n1", false, Some(2), "e")
            .unwrap();
        r.join("chat:b", "u", "c", "n1", false, Some(2), "e")
            .unwrap();
        assert_eq!(
            r.join("chat:c", "u", "c", "n1", false, Some(2), "e")
                .unwrap_err(),
            RegistryError::TooManyRooms
        );
        // joining a room it is already in is fine
        assert!(
            r.join("chat:a", "u", "c", "n1", false, Some(2), "e")
                .unwrap()
                .already
        );
    }

    #[test]
    fn release_node_cleans_everything_and_reports_leaves() {
        let mut r = leased();
        r.open("alice", "a1", "n1", "ip1", 1, None, None).unwrap();
        r.open("bob", "b1", "n2", "ip2", 1, None, None).unwrap();
        r.join("chat:x", "alice", "a1", "n1", true, None, "e")
            .unwrap();
        r.join("chat:x", "bob", "b1", "n2", true, None, "e")
            .unwrap();
        let (dropped, events) = r.release_node("n1", None);
        assert_eq!(dropped, 1);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].user, "alice");
        assert_eq!(events[0].nodes, vec!["n2"]);
        assert!(r.presence("alice").is_empty());
        assert_eq!(r.online(), (1, 1));
        assert!(!r.has_lease("n1"));
        assert_eq!(r.nodes().len(), 1);
    }

    #[test]
    fn publish_keeps_history_and_recovers() {
        let mut r = leased();
        r.join("chat:x", "u", "c", "n1", false, None, "e1").unwrap();
        let cfg = HistoryConfig {
            size: 3,
            ttl_ms: 1000,
        };
        for i in 1..=5u64 {
            let plan = r.plan_publish("chat:x", Some("c"), Some(cfg)).unwrap();
            assert_eq!(plan.seq, i);
            assert_eq!(plan.sender_user.as_deref(), Some("u"));
            let nodes = r.apply_publish("chat:x", plan.seq, "e1", 100 * i, cfg, &[i as u8]);
            assert_eq!(nodes, vec!["n1"]);
        }
        let h = r.history("chat:x", 0, None, 500);
        assert_eq!((h.seq, h.epoch), (5, "e1"));
        assert_eq!(h.frames, vec![&[3u8][..], &[4], &[5]]);
        assert_eq!(
            r.history("chat:x", 3, Some(1), 500).frames,
            vec![&[4u8][..]]
        );
        // expired by TTL at read time
        assert_eq!(
            r.history("chat:x", 0, None, 1350).frames,
            vec![&[4u8][..], &[5]]
        );
        let ok = r.recover("chat:x", 3, "e1", 500);
        assert!(ok.recovered);
        assert_eq!(ok.frames.len(), 2);
        assert!(!r.recover("chat:x", 1, "e1", 500).recovered); // gap
        assert!(!r.recover("chat:x", 3, "other", 500).recovered); // epoch changed
        assert!(r.recover("chat:x", 5, "e1", 500).recovered); // nothing missed
        assert_eq!(
            r.plan_publish("chat:x", Some("nope"), None).unwrap_err(),
            RegistryError::NotMember
        );
    }

    #[test]
    fn room_without_members_or_history_is_dropped_and_gets_a_new_epoch() {
        let mut r = leased();
        let plan = r.plan_publish("chat:y", None, None).unwrap();
        assert_eq!((plan.seq, plan.epoch.clone()), (1, None));
        r.apply_publish("chat:y", 1, "e1", 1, plan.config, b"x");
        assert_eq!(r.rooms_held(), 0);
        assert_eq!(r.plan_publish("chat:y", None, None).unwrap().seq, 1);
    }

    #[test]
    fn namespace_default_history_applies() {
        let mut r = leased();
        r.set_namespace_history("news", HistoryConfig { size: 2, ttl_ms: 0 });
        let plan = r.plan_publish("news:a", None, None).unwrap();
        r.apply_publish("news:a", plan.seq, "e", 1, plan.config, b"m");
        assert_eq!(r.history("news:a", 0, None, 10).frames.len(), 1);
    }

    #[test]
    fn snapshot_round_trip_rebuilds_indexes() {
        let mut r = leased();
        r.open("alice", "a1", "n1", "ip1", 7, None, None).unwrap();
        r.join("chat:x", "alice", "a1", "n1", true, None, "e1")
            .unwrap();
        r.join("chat:x", "bob", "b1", "n2", true, None, "e1")
            .unwrap();
        let cfg = HistoryConfig {
            size: 10,
            ttl_ms: 0,
        };
        r.apply_publish("chat:x", 1, "e1", 5, cfg, b"frame");
        r.set_node_channel("n2", Some("broker:node:n2:{7}"));
        let bytes = r.snapshot().to_bytes().unwrap();
        let mut back = Registry::new();
        back.restore(Snapshot::from_bytes(&bytes).unwrap());
        assert_eq!(back.snapshot(), r.snapshot());
        assert_eq!(back.online(), (1, 1));
        assert_eq!(back.room_count("chat:x"), (2, 2));
        assert_eq!(back.room_nodes("chat:x"), vec!["n1", "n2"]);
        assert_eq!(back.presence("alice")[0].rooms, vec!["chat:x"]);
        assert_eq!(
            back.history("chat:x", 0, None, 6).frames,
            vec![&b"frame"[..]]
        );
        assert_eq!(back.node_channel("n2"), Some("broker:node:n2:{7}"));
        assert_eq!(back.node_channel("n1"), None);
    }

    #[test]
    fn a_user_lingers_within_the_grace_and_resumes_without_events() {
        let mut r = leased();
        r.open("alice", "a1", "n1", "ip1", 1, None, None).unwrap();
        r.join("chat:x", "alice", "a1", "n1", true, None, "e1")
            .unwrap();
        r.join("chat:x", "bob", "b1", "n2", true, None, "e1")
            .unwrap();
        // n1 goes away with a grace: no leave, alice still listed.
        let (dropped, events) = r.release_node("n1", Some(5_000));
        assert_eq!((dropped, events.len()), (1, 0));
        assert_eq!(
            r.room_members("chat:x"),
            vec![("alice".into(), 0), ("bob".into(), 1)]
        );
        assert_eq!(r.room_count("chat:x"), (2, 1));
        assert_eq!(r.expired_lingering(4_999, 10), vec![]);
        // She is back on n2 before the deadline: no join event.
        let j = r
            .join("chat:x", "alice", "a2", "n2", true, None, "e1")
            .unwrap();
        assert!(j.event.is_none());
        assert_eq!(r.expired_lingering(10_000, 10), vec![]);
        assert_eq!(r.end_lingering("chat:x", "alice"), None);

        // Closed again with a grace and not back: the timer ends it.
        let (_, events) = r.close("alice", "a2", Some(6_000));
        assert!(events.is_empty());
        let r2 = r.clone();
        let expired = r.expired_lingering(6_000, 10);
        assert_eq!(expired, vec![("chat:x".to_string(), "alice".to_string())]);
        let leave = r.end_lingering("chat:x", "alice").unwrap();
        assert_eq!(
            (leave.change, leave.user.as_str()),
            (PresenceChange::Leave, "alice")
        );
        assert_eq!(leave.nodes, vec!["n2"]);
        assert_eq!(r.room_members("chat:x"), vec![("bob".into(), 1)]);

        // A leave request never lingers; lingering survives a snapshot.
        let mut back = Registry::new();
        back.restore(Snapshot::from_bytes(&r2.snapshot().to_bytes().unwrap()).unwrap());
        assert_eq!(back.expired_lingering(6_000, 10).len(), 1);
        let (_, ev) = back.leave("chat:x", "bob", "b1", Some(9_000));
        assert!(ev.is_none(), "bob lingers too");
        let mut plain = leased();
        plain
            .join("chat:y", "carol", "c1", "n1", true, None, "e")
            .unwrap();
        assert!(plain.leave("chat:y", "carol", "c1", None).1.is_some());
    }

    #[test]
    fn a_lingering_user_keeps_an_empty_room() {
        let mut r = leased();
        r.join("chat:z", "alice", "a1", "n1", true, None, "e1")
            .unwrap();
        r.leave("chat:z", "alice", "a1", Some(100));
        assert_eq!(r.rooms_held(), 1);
        assert!(r.idle_rooms(1_000, 10).is_empty());
        assert!(!r.drop_room("chat:z"));
        let leave = r.end_lingering("chat:z", "alice").unwrap();
        assert!(leave.nodes.is_empty());
        assert_eq!(r.rooms_held(), 0);
    }

    #[test]
    fn after_a_load_stale_connections_are_dropped_once_the_node_registered_again() {
        let mut r = leased();
        r.open("alice", "a1", "n1", "ip", 1, None, None).unwrap();
        r.open("bob", "b1", "n1", "ip", 1, None, None).unwrap();
        r.join("chat:x", "alice", "a1", "n1", true, None, "e")
            .unwrap();
        r.join("chat:x", "bob", "b1", "n1", true, None, "e")
            .unwrap();
        r.join("chat:x", "carol", "c1", "n2", true, None, "e")
            .unwrap();
        let mut back = Registry::new();
        back.restore(r.snapshot());
        assert_eq!(back.after_load_step("n1"), AfterLoad::Reregister);
        // The gateway registers what is still alive: alice, not bob.
        back.open("alice", "a1", "n1", "ip", 1, None, None).unwrap();
        back.join("chat:x", "alice", "a1", "n1", true, None, "e")
            .unwrap();
        assert_eq!(
            back.after_load_step("n1"),
            AfterLoad::Drop(vec![("bob".into(), "b1".into())])
        );
        assert_eq!(back.after_load_step("n1"), AfterLoad::Nothing);
        assert_eq!(back.after_load_step("n9"), AfterLoad::Nothing);
        // A registry that was not loaded asks nothing.
        assert_eq!(r.after_load_step("n1"), AfterLoad::Nothing);
    }

    #[test]
    fn compact_gives_back_what_a_crowd_left() {
        let mut r = leased();
        for i in 0..1000 {
            r.open(
                &format!("u{i}"),
                &format!("c{i}"),
                "n1",
                "ip",
                1,
                None,
                None,
            )
            .unwrap();
        }
        for i in 0..1000 {
            r.close(&format!("u{i}"), &format!("c{i}"), None);
        }
        assert!(r.conns.capacity() >= 1000);
        r.compact();
        assert!(r.conns.capacity() < 64, "{}", r.conns.capacity());
        assert!(r.users.capacity() < 64);
        assert!(r.nodes["n1"].conns.capacity() < 64);
        assert_eq!(r.online(), (0, 0));
    }

    #[test]
    fn snapshots_without_node_channels_still_load() {
        // Encoding version 1 as written before nodes had a channel.
        let old = rmp_serde::to_vec(&(
            vec![("n1".to_string(), 10_000u64, 5000u64)],
            Vec::<()>::new(),
            Vec::<()>::new(),
        ))
        .unwrap();
        let mut back = Registry::new();
        back.restore(Snapshot::from_bytes(&old).unwrap());
        assert!(back.has_lease("n1"));
        assert_eq!(back.node_channel("n1"), None);
    }

    #[test]
    fn expired_nodes_and_extension() {
        let mut r = leased();
        assert_eq!(r.expired_nodes(10_000), vec!["n1", "n2"]);
        r.extend_leases(20_000);
        assert!(r.expired_nodes(24_999).is_empty());
    }
}
