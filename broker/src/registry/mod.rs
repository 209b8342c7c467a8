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
//!   user). It is dropped when it is neither opened, nor in any room, nor
//!   holding a place of an address;
//! - a connection may also hold a **place of a client address** here
//!   (`IP.OPEN`: on a cluster, the address's count lives in the address's
//!   slot while the connection is opened on its user's shard). The count of
//!   an address is the number of connections opened here with it or
//!   holding a place of it, each counted once; a connection that is only a
//!   place is no presence;
//! - a **user** is online while it has at least one opened connection;
//! - a **room** holds its members, the per-user and per-node member counts
//!   (O(1) counts; fan-out goes to nodes, not members), its sequence, epoch
//!   and retained history. An empty room with no retained history is dropped,
//!   which loses its sequence: the next incarnation gets a new epoch.
//!
//! - a **name has state** (and the module keeps a key of that name) while
//!   it is a room held here, a user with an opened connection here, or an
//!   address with a place here; every begin and end of that is recorded
//!   for the module ([`Registry::take_touched`], `keys.rs`). Adding a
//!   key's saved state ([`Registry::merge`]) and taking it away
//!   ([`Registry::remove_key`]) keep every invariant above and make no
//!   events: the state moved, nobody came or went.
//!
//! Presence events are computed here ([`PresenceEvent`]): a join for a user's
//! first connection in a room, a leave for its last.
//!
//! **After a load** (a restart from an RDB or AOF file, a replica's full
//! sync) the saved connections may be stale: some closed after the save.
//! Once loading has ended ([`Registry::after_load`]) the first lease of
//! each loaded node answers "new", so the gateway registers its live
//! connections and rooms again; its next lease that is not marked
//! `REGISTERING` drops every connection of the node that was not registered
//! again (with leave events), so presence is exact again
//! ([`Registry::lease_node`]).
//!
//! **Incarnations.** A gateway process names itself in its leases; a lease
//! of the same node id from another process (a restart under a pinned node
//! id) ends the old process's connections first, with leave events.
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
//!
//! Map of the folder, by what each part holds:
//!
//! - `nodes.rs`: gateway node leases and the after-load reconciliation.
//! - `connections.rs`: opened connections, per-user and per-IP counts,
//!   presence reads.
//! - `rooms.rs`: memberships, presence events, lingering users.
//! - `history.rs`: sequences, epochs and retained messages of rooms.
//! - `snapshot.rs`: the persistence form, and rebuilding the indexes from it.
//! - `keys.rs`: the state as keys of Redis's keyspace: a room, a user, an
//!   address; saving one key's state, adding it (a `RESTORE`, a load) and
//!   removing it (a `DEL`, the source of a `MIGRATE`), so that resharding
//!   a Redis Cluster moves it.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::lifecycle::{self, EventType};
use crate::names;

mod connections;
mod history;
mod keys;
mod name;
mod nodes;
mod rooms;
mod snapshot;

use connections::Conn;
pub use connections::ConnInfo;
pub use history::{HistoryConfig, HistoryRead, PublishPlan, Recovery, Stored};
use name::Name;
use nodes::Node;
pub use nodes::{LeaseOutcome, NodeConn, NodeInfo};
use rooms::Room;
pub use rooms::{JoinOutcome, MembersPage, PresenceChange, PresenceEvent};
pub use snapshot::Snapshot;

/// The broker's whole state on one Redis (one shard of a cluster).
#[derive(Debug, Default, Clone)]
pub struct Registry {
    nodes: HashMap<String, Node>,
    conns: HashMap<Name, Conn>,
    users: HashMap<String, BTreeSet<String>>,
    ips: HashMap<String, u32>,
    /// Client address → the connections holding a place of it here
    /// (`IP.OPEN`); an address with places is a key (see `keys.rs`).
    places: HashMap<String, BTreeSet<String>>,
    rooms: HashMap<String, Room>,
    opened: u64,
    /// Lingering presences over all rooms (the timer skips its scan at 0).
    lingering: u64,
    namespace_history: HashMap<String, HistoryConfig>,
    /// Lifecycle events recorded since the last take; `None` when off.
    lifecycle: Option<Vec<lifecycle::Event>>,
    /// The reason given to the departures being made (see [`Registry::departing`]).
    departure: Option<String>,
    /// Names whose key may have appeared or gone since the last
    /// [`Registry::take_touched`]: a room, a user or an address whose
    /// state here began or ended.
    touched: Vec<String>,
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
        shrink_map(&mut self.places);
        shrink_map(&mut self.rooms);
        for node in self.nodes.values_mut() {
            shrink_set(&mut node.conns);
        }
    }

    /// Clears everything but the namespace settings and whether lifecycle
    /// events are recorded (FLUSHALL).
    pub fn clear(&mut self) {
        let namespace_history = std::mem::take(&mut self.namespace_history);
        let lifecycle = self.lifecycle.as_ref().map(|_| Vec::new());
        *self = Registry {
            namespace_history,
            lifecycle,
            ..Registry::default()
        };
    }

    /// Turns the recording of lifecycle events on or off (the module's
    /// `EVENTS` argument; off drops what was recorded).
    pub fn record_lifecycle(&mut self, on: bool) {
        self.lifecycle = on.then(Vec::new);
    }

    /// The lifecycle events recorded since the last call, oldest first.
    pub fn take_lifecycle(&mut self) -> Vec<lifecycle::Event> {
        self.lifecycle
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Runs `f` with `reason` as the reason of every disconnect and leave
    /// it makes (they are `client` otherwise).
    pub fn departing<R>(&mut self, reason: &str, f: impl FnOnce(&mut Registry) -> R) -> R {
        if self.lifecycle.is_none() {
            return f(self);
        }
        let before = self.departure.replace(reason.to_string());
        let out = f(self);
        self.departure = before;
        out
    }

    /// Records one lifecycle event when recording is on.
    fn note(
        &mut self,
        kind: EventType,
        (user, conn, node): (&str, &str, &str),
        room: Option<&str>,
        connected_at_ms: Option<u64>,
    ) {
        let Some(journal) = self.lifecycle.as_mut() else {
            return;
        };
        let departs = matches!(
            kind,
            EventType::Disconnect | EventType::Leave | EventType::Offline
        );
        let reason = departs.then(|| {
            self.departure
                .clone()
                .unwrap_or_else(|| lifecycle::reason::CLIENT.to_string())
        });
        journal.push(lifecycle::Event {
            kind,
            user: user.to_string(),
            conn: conn.to_string(),
            node: node.to_string(),
            room: room.map(str::to_string),
            reason,
            connected_at_ms,
        });
    }
}

/// Helpers shared by the unit tests of every part.
#[cfg(test)]
mod test_support {
    use super::Registry;

    use crate::command::{ApplyPublish, Join};

    use super::HistoryConfig;

    /// The replication form of a publish, from its parts.
    pub fn applied(
        room: &str,
        seq: u64,
        epoch: &str,
        ts_ms: u64,
        history: HistoryConfig,
        frame: &[u8],
    ) -> ApplyPublish {
        ApplyPublish {
            room: room.to_string(),
            seq,
            epoch: epoch.to_string(),
            ts_ms,
            history,
            frame: frame.to_vec(),
        }
    }

    /// Joins `conn` of `user` on `node` to `room` with presence, which a
    /// test expects to succeed.
    pub fn join_present(
        r: &mut Registry,
        room: &str,
        user: &str,
        conn: &str,
        node: &str,
        epoch: &str,
    ) {
        r.join(&Join::new(room, user, conn, node).with_presence(), epoch)
            .expect("join");
    }

    /// [`leased`] with alice (`a1` on `n1`, opened from 1.2.3.4) and bob
    /// (`b1` on `n2`, a member only) in `chat:x` with presence, epoch `e1`,
    /// and one retained message (seq 1, `frame`).
    pub fn alice_and_bob_in_chat_x() -> Registry {
        let mut r = leased();
        r.open(
            &crate::command::ConnOpen::new("alice", "a1", "n1", "1.2.3.4"),
            7,
        )
        .expect("open");
        join_present(&mut r, "chat:x", "alice", "a1", "n1", "e1");
        join_present(&mut r, "chat:x", "bob", "b1", "n2", "e1");
        let cfg = HistoryConfig {
            size: 10,
            ttl_ms: 0,
        };
        r.apply_publish(&applied("chat:x", 1, "e1", 5, cfg, b"frame"));
        r
    }

    /// A registry with nodes `n1` and `n2` leased.
    pub fn leased() -> Registry {
        let mut r = Registry::new();
        r.lease("n1", 5000, 10_000);
        r.lease("n2", 5000, 10_000);
        r
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{ConnOpen, NodeLease};
    use crate::lifecycle::{reason, EventType};
    use crate::registry::test_support::{join_present, leased};

    use super::Registry;

    /// The recorded events as `type user conn room reason`.
    fn journal(r: &mut Registry) -> Vec<String> {
        r.take_lifecycle()
            .into_iter()
            .map(|e| {
                format!(
                    "{} {} {} {} {}",
                    e.kind,
                    e.user,
                    e.conn,
                    e.room.as_deref().unwrap_or("-"),
                    e.reason.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    #[test]
    fn lifecycle_events_follow_every_change_and_only_changes() {
        let mut r = leased();
        assert!(r.take_lifecycle().is_empty());
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        assert!(r.take_lifecycle().is_empty(), "off by default");
        r.record_lifecycle(true);
        r.open(&ConnOpen::new("alice", "a2", "n1", "ip"), 10)
            .unwrap();
        r.open(&ConnOpen::new("bob", "b1", "n2", "ip"), 10).unwrap();
        r.open(&ConnOpen::new("bob", "b1", "n2", "ip"), 10).unwrap();
        join_present(&mut r, "chat:x", "alice", "a2", "n1", "e");
        join_present(&mut r, "chat:x", "alice", "a2", "n1", "e");
        join_present(&mut r, "user:alice", "alice", "a2", "n1", "e");
        assert_eq!(
            journal(&mut r),
            [
                "connect alice a2 - -",
                "connect bob b1 - -",
                "online bob b1 - -",
                "join alice a2 chat:x -",
            ],
            "a second open or join of the same connection is no event; personal rooms are left out"
        );
        r.departing(reason::KICKED, |r| r.close("alice", "a2", None));
        r.leave("chat:x", "alice", "a2", None);
        let events = r.take_lifecycle();
        assert_eq!(events[1].kind, EventType::Disconnect);
        assert_eq!(events[1].connected_at_ms, Some(10));
        let lines: Vec<String> = events
            .iter()
            .map(|e| format!("{} {}", e.kind, e.reason.as_deref().unwrap_or("-")))
            .collect();
        assert_eq!(lines, ["leave kicked", "disconnect kicked"], "alice has a1");
        r.close("alice", "a1", None);
        assert_eq!(
            journal(&mut r),
            ["disconnect alice a1 - client", "offline alice a1 - client"]
        );
    }

    #[test]
    fn a_lost_node_reports_every_connection_as_node_lost() {
        let mut r = leased();
        r.record_lifecycle(true);
        r.lease_node(&NodeLease::new("n1", 5000).incarnation("i1"), 0, true);
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        join_present(&mut r, "chat:x", "alice", "a1", "n1", "e");
        r.take_lifecycle();
        r.lease_node(&NodeLease::new("n1", 5000).incarnation("i2"), 0, true);
        assert_eq!(
            journal(&mut r),
            [
                "leave alice a1 chat:x node_lost",
                "disconnect alice a1 - node_lost",
                "offline alice a1 - node_lost",
            ]
        );
        r.open(&ConnOpen::new("bob", "b1", "n2", "ip"), 1).unwrap();
        r.take_lifecycle();
        r.departing(reason::NODE_LOST, |r| r.release_node("n2", None));
        assert_eq!(
            journal(&mut r),
            [
                "disconnect bob b1 - node_lost",
                "offline bob b1 - node_lost"
            ]
        );
    }

    #[test]
    fn compact_gives_back_what_a_crowd_left() {
        let mut r = leased();
        for i in 0..1000 {
            r.open(
                &ConnOpen::new(&format!("u{i}"), &format!("c{i}"), "n1", "ip"),
                1,
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
}
