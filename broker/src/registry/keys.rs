//! The registry as keys of Redis's keyspace, so that resharding a Redis
//! Cluster moves it with the slots.
//!
//! Every name a command routes by is a key when it has state here:
//!
//! - a **room** (`chat:lobby`): its members, sequence, epoch, history and
//!   lingering users;
//! - a **user** (`alice`) with connections opened here: those connections
//!   (node, address, connect time): the user's presence;
//! - a **client address** (`198.51.100.7`) with places held here
//!   (`IP.OPEN`): the connections holding them.
//!
//! One name can be two of these (a user id that is also an address), so a
//! key's state is everything named by it. [`Registry::save_key`] writes a
//! key's state as a [`Snapshot`] (with the user and node of each connection
//! it names, and those nodes' leases); [`Registry::merge`] adds one (a
//! `RESTORE`, the target of a `MIGRATE`, a load); [`Registry::remove_key`]
//! takes one away (a `DEL`, the source of a `MIGRATE`). Neither makes
//! lifecycle or presence events: the state moved, nobody came or went.
//!
//! What is not a key is derived from the keys and kept right by those three
//! calls: a connection's record (its user, node, rooms here, opened or not,
//! place held), a node's connections, the counts of `ONLINE` and of each
//! address. The nodes' leases are per server, not per slot (every master
//! holds every node's lease), and are saved apart (the module's aux data).
//!
//! The module keeps the keyspace in step: after each command it asks which
//! names' state began or ended ([`Registry::take_touched`]) and creates or
//! deletes their keys ([`Registry::key_exists`]).

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::{saved_room, SavedConn, SavedNode};
use super::{Conn, Name, Registry, Room, Snapshot};

/// Rough bytes of a hash table or tree entry beyond its key and value:
/// the figure `MEMORY USAGE` adds per member, as Redis's own estimates do.
const ENTRY_OVERHEAD: usize = 32;

/// The addresses a connection counts for: the one it was opened with and
/// the one it holds a place of (once when they are the same).
fn counted_ips(conn: &Conn) -> BTreeSet<String> {
    conn.opened
        .iter()
        .map(|o| o.ip.clone())
        .chain(conn.ip_hold.iter().cloned())
        .collect()
}

impl Registry {
    /// True when `name` has state here, so its key must exist: a room, a
    /// user with opened connections, or an address with places.
    pub fn key_exists(&self, name: &str) -> bool {
        self.rooms.contains_key(name)
            || self.users.contains_key(name)
            || self.places.contains_key(name)
    }

    /// The names whose state began or ended since the last call, sorted and
    /// without repeats (their keys must be created or deleted).
    pub fn take_touched(&mut self) -> Vec<String> {
        if self.touched.is_empty() {
            return Vec::new();
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// Every name that has state here, sorted (after loading a snapshot
    /// saved before keys, the module creates them all).
    pub fn key_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self
            .rooms
            .keys()
            .chain(self.users.keys())
            .chain(self.places.keys())
            .collect();
        names.into_iter().cloned().collect()
    }

    /// The state under key `name`: the room, the user's opened connections,
    /// the places of the address, with the user and node of every
    /// connection named and those nodes' leases (without their channels,
    /// which name a slot of this server). Sorted, so equal state saves
    /// equal bytes. Empty when `name` has no state here.
    pub fn save_key(&self, name: &str) -> Snapshot {
        let mut conns: BTreeMap<String, SavedConn> = BTreeMap::new();
        fn saved<'a>(
            conns: &'a mut BTreeMap<String, SavedConn>,
            id: &str,
            c: &Conn,
        ) -> &'a mut SavedConn {
            conns.entry(id.to_string()).or_insert_with(|| SavedConn {
                id: id.to_string(),
                user: c.user.to_string(),
                node: c.node.to_string(),
                opened: None,
                ip_hold: None,
            })
        }
        let mut rooms = Vec::new();
        if let Some(room) = self.rooms.get(name) {
            for member in &room.members {
                if let Some(c) = self.conns.get(member.as_str()) {
                    saved(&mut conns, member, c);
                }
            }
            rooms.push(saved_room(name, room));
        }
        for id in self.users.get(name).into_iter().flatten() {
            if let Some(c) = self.conns.get(id.as_str()) {
                saved(&mut conns, id, c).opened = c.opened.clone();
            }
        }
        for id in self.places.get(name).into_iter().flatten() {
            if let Some(c) = self.conns.get(id.as_str()) {
                saved(&mut conns, id, c).ip_hold = c.ip_hold.clone();
            }
        }
        let node_ids: BTreeSet<&str> = conns.values().map(|c| c.node.as_str()).collect();
        let nodes = node_ids
            .into_iter()
            .filter_map(|id| {
                let n = self.nodes.get(id)?;
                Some(SavedNode {
                    id: id.to_string(),
                    deadline_ms: n.deadline_ms,
                    lease_ms: n.lease_ms,
                    channel: None,
                    incarnation: n.incarnation.clone(),
                })
            })
            .collect();
        Snapshot {
            nodes,
            conns: conns.into_values().collect(),
            rooms,
        }
    }

    /// True when everything `snapshot` holds is named by key `name`: its
    /// rooms, the users of its opened connections and the addresses of its
    /// places. A key restored under another name than it was saved with
    /// fails this, and is not added.
    pub fn named_by(snapshot: &Snapshot, name: &str) -> bool {
        snapshot.rooms.iter().all(|r| r.name == name)
            && snapshot
                .conns
                .iter()
                .all(|c| c.opened.is_none() || c.user == name)
            && snapshot
                .conns
                .iter()
                .all(|c| c.ip_hold.as_deref().is_none_or(|ip| ip == name))
    }

    /// Adds a key's saved state (or, from [`Registry::restore`], a whole
    /// registry's) to what is here, rebuilding the derived indexes: a
    /// node not known here gets the lease it had where it was saved, plus
    /// one lease period (so its connections go when that runs out, unless
    /// the node renews it here); a room already here is replaced. A connection known here for
    /// another user or node, or of an unknown node, is skipped, and so is
    /// every membership of it. No events.
    pub fn merge(&mut self, snapshot: Snapshot) {
        for n in snapshot.nodes {
            // One lease period past the saved deadline: the node learns of
            // this server (a master just added to a cluster) at its next
            // slot-map check, which may come after its lease elsewhere was
            // due for renewal. Keys moving in later extend it again until
            // the node leases here itself.
            let deadline = n.deadline_ms.saturating_add(n.lease_ms);
            match self.nodes.get_mut(&n.id) {
                Some(node) => {
                    if node.moved_in && node.deadline_ms < deadline {
                        node.deadline_ms = deadline;
                    }
                }
                None => {
                    let _ = self.lease(&n.id, n.lease_ms, deadline);
                    if let Some(node) = self.nodes.get_mut(&n.id) {
                        node.incarnation = n.incarnation;
                        node.moved_in = true;
                    }
                }
            }
        }
        let mut named: Vec<String> = Vec::with_capacity(snapshot.conns.len());
        for c in snapshot.conns {
            if !self.nodes.contains_key(&c.node) {
                continue;
            }
            if let Some(existing) = self.conns.get(c.id.as_str()) {
                if existing.user != c.user.as_str() || existing.node != c.node.as_str() {
                    continue;
                }
            }
            let entry = self.attach_conn(&c.user, &c.id, &c.node);
            let before = counted_ips(entry);
            let newly_opened = entry.opened.is_none() && c.opened.is_some();
            if newly_opened {
                entry.opened = c.opened;
            }
            let new_hold = match (&entry.ip_hold, c.ip_hold) {
                (None, Some(ip)) => {
                    entry.ip_hold = Some(ip.clone());
                    Some(ip)
                }
                _ => None,
            };
            let after = counted_ips(entry);
            for ip in after.difference(&before) {
                *self.ips.entry(ip.clone()).or_insert(0) += 1;
            }
            if newly_opened {
                self.users
                    .entry(c.user.clone())
                    .or_default()
                    .insert(c.id.clone());
                self.opened += 1;
            }
            if let Some(ip) = new_hold {
                self.places.entry(ip).or_default().insert(c.id.clone());
            }
            named.push(c.id);
        }
        for saved in snapshot.rooms {
            if self.rooms.contains_key(&saved.name) {
                self.remove_room_state(&saved.name);
            }
            let mut room = Room::new(saved.epoch, saved.config);
            room.seq = saved.seq;
            room.presence_events = saved.presence_events;
            room.history = saved.history.into();
            self.lingering += saved.lingering.len() as u64;
            room.lingering = saved.lingering.into_iter().collect();
            for member in saved.members {
                let Some(c) = self.conns.get_mut(member.as_str()) else {
                    continue;
                };
                c.rooms.insert(Name::from(saved.name.as_str()));
                *room.users.entry(c.user.to_string()).or_insert(0) += 1;
                *room.nodes.entry(c.node.to_string()).or_insert(0) += 1;
                room.members.insert(member);
            }
            self.rooms.insert(saved.name, room);
        }
        for id in named {
            self.drop_if_unused(&id);
        }
    }

    /// Takes away the state under key `name` (a `DEL`, the source of a
    /// `MIGRATE`): the room, the user's opened connections (they are no
    /// longer opened here), the places of the address. Connections left
    /// with nothing here are dropped. No events: for the connections this
    /// is no leave and no disconnect.
    pub fn remove_key(&mut self, name: &str) {
        self.remove_room_state(name);
        if let Some(ids) = self.users.remove(name) {
            for id in ids {
                let Some(c) = self.conns.get_mut(id.as_str()) else {
                    continue;
                };
                let before = counted_ips(c);
                if c.opened.take().is_some() {
                    self.opened = self.opened.saturating_sub(1);
                }
                let after = counted_ips(c);
                for ip in before.difference(&after) {
                    self.uncount_ip(ip);
                }
                self.drop_if_unused(&id);
            }
        }
        if let Some(ids) = self.places.remove(name) {
            for id in ids {
                let Some(c) = self.conns.get_mut(id.as_str()) else {
                    continue;
                };
                let before = counted_ips(c);
                if c.ip_hold.as_deref() == Some(name) {
                    c.ip_hold = None;
                }
                let after = counted_ips(c);
                for ip in before.difference(&after) {
                    self.uncount_ip(ip);
                }
                self.drop_if_unused(&id);
            }
        }
    }

    /// Removes a room and its memberships, without events.
    fn remove_room_state(&mut self, name: &str) {
        let Some(room) = self.rooms.remove(name) else {
            return;
        };
        self.lingering = self.lingering.saturating_sub(room.lingering.len() as u64);
        for member in room.members {
            if let Some(c) = self.conns.get_mut(member.as_str()) {
                c.rooms.remove(name);
            }
            self.drop_if_unused(&member);
        }
    }

    /// About how many bytes the state under key `name` takes (`MEMORY
    /// USAGE`): the room with its members, counts and retained frames; the
    /// user's opened connections; the address's places. The records of
    /// connections shared with other keys are not counted.
    pub fn key_mem_usage(&self, name: &str) -> usize {
        let text = |s: &str| s.len() + ENTRY_OVERHEAD;
        let mut bytes = text(name);
        if let Some(r) = self.rooms.get(name) {
            bytes += std::mem::size_of::<Room>() + r.epoch.len();
            bytes += r.members.iter().map(|m| text(m)).sum::<usize>();
            bytes += r.users.keys().map(|u| text(u) + 4).sum::<usize>();
            bytes += r.nodes.keys().map(|n| text(n) + 4).sum::<usize>();
            bytes += r.lingering.keys().map(|u| text(u) + 8).sum::<usize>();
            bytes += r
                .history
                .iter()
                .map(|s| s.frame.len() + std::mem::size_of_val(s))
                .sum::<usize>();
        }
        let conn_bytes = |id: &String| {
            text(id)
                + std::mem::size_of::<Conn>()
                + self
                    .conns
                    .get(id.as_str())
                    .and_then(|c| c.opened.as_ref())
                    .map_or(0, |o| o.ip.len())
        };
        bytes += self
            .users
            .get(name)
            .into_iter()
            .flatten()
            .map(conn_bytes)
            .sum::<usize>();
        bytes += self
            .places
            .get(name)
            .into_iter()
            .flatten()
            .map(|id| text(id))
            .sum::<usize>();
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::IpOpen;
    use crate::registry::test_support::{alice_and_bob_in_chat_x, applied, join_present, leased};
    use crate::registry::HistoryConfig;

    /// A registry with alice (a1 on n1, from 1.2.3.4) in chat:x with bob
    /// (b1 on n2, opened on another shard), a retained message, and a
    /// place of 5.6.7.8 held by carol's c1.
    fn populated() -> Registry {
        let mut r = alice_and_bob_in_chat_x();
        r.hold_ip(&IpOpen::new("5.6.7.8", "carol", "c1", "n2"))
            .unwrap();
        r
    }

    /// Moves key `name` from `from` to `to` as a `MIGRATE` does.
    fn migrate(from: &mut Registry, to: &mut Registry, name: &str) {
        let bytes = from.save_key(name).to_bytes().unwrap();
        let snapshot = Snapshot::from_bytes(&bytes).unwrap();
        assert!(Registry::named_by(&snapshot, name));
        to.merge(snapshot);
        from.remove_key(name);
    }

    #[test]
    fn every_name_with_state_is_a_key_and_touched_when_it_begins_or_ends() {
        let mut r = populated();
        assert_eq!(r.take_touched(), ["5.6.7.8", "alice", "chat:x"]);
        assert_eq!(r.key_names(), ["5.6.7.8", "alice", "chat:x"]);
        assert!(r.take_touched().is_empty());
        join_present(&mut r, "chat:x", "dave", "d1", "n1", "e1");
        assert!(r.take_touched().is_empty(), "the room existed");
        r.close("alice", "a1", None);
        assert_eq!(r.take_touched(), ["alice"], "chat:x keeps bob and history");
        assert!(!r.key_exists("alice"));
        r.release_ip("5.6.7.8", "c1");
        assert_eq!(r.take_touched(), ["5.6.7.8"]);
        assert!(!r.key_exists("5.6.7.8"));
    }

    #[test]
    fn moving_every_key_moves_the_registry() {
        let mut from = populated();
        let before = from.snapshot();
        let mut to = leased();
        for name in from.key_names() {
            migrate(&mut from, &mut to, &name);
        }
        assert!(from.key_names().is_empty());
        assert_eq!(from.online(), (0, 0));
        assert!(from.conns.is_empty(), "no connection left behind");
        assert!(from.nodes["n1"].conns.is_empty());
        assert!(from.take_lifecycle().is_empty());
        assert_eq!(to.snapshot(), before);
        assert_eq!(to.online(), (1, 1));
        assert_eq!(to.room_count("chat:x"), (2, 2));
        assert_eq!(to.ip_count("1.2.3.4"), 1);
        assert_eq!(to.ip_count("5.6.7.8"), 1);
        assert_eq!(to.history("chat:x", 0, None, 6).frames, vec![&b"frame"[..]]);
    }

    #[test]
    fn a_user_moved_apart_from_its_rooms_keeps_them_here() {
        let mut from = populated();
        let mut to = leased();
        migrate(&mut from, &mut to, "alice");
        assert_eq!(from.online(), (0, 0));
        assert_eq!(from.room_count("chat:x"), (2, 2), "a1 is still a member");
        assert_eq!(from.ip_count("1.2.3.4"), 0);
        assert_eq!(to.online(), (1, 1));
        assert_eq!(to.presence("alice")[0].rooms, Vec::<String>::new());
        migrate(&mut from, &mut to, "chat:x");
        assert_eq!(to.presence("alice")[0].rooms, vec!["chat:x"]);
        assert!(!from.conns.contains_key("a1"));
    }

    #[test]
    fn an_unknown_node_comes_with_its_lease() {
        let mut from = populated();
        let mut to = Registry::new();
        migrate(&mut from, &mut to, "chat:x");
        assert!(to.has_lease("n1") && to.has_lease("n2"));
        // leased() gives 5,000 ms leases due at 10,000: one more period here.
        assert_eq!(to.nodes["n1"].deadline_ms, 15_000);
        // A key moving in later, after a renewal there, extends it...
        from.lease("n1", 5000, 20_000);
        migrate(&mut from, &mut to, "alice");
        assert_eq!(to.nodes["n1"].deadline_ms, 25_000);
        // ...until the node leases here itself.
        to.lease("n1", 5000, 26_000);
        from.lease("n2", 5000, 40_000);
        migrate(&mut from, &mut to, "5.6.7.8");
        assert_eq!(to.nodes["n1"].deadline_ms, 26_000);
        assert_eq!(to.nodes["n2"].deadline_ms, 45_000, "n2 still only moved in");
        assert_eq!(to.room_count("chat:x"), (2, 2));
        assert_eq!(to.node_conns("n2")[0].conn, "b1");
    }

    #[test]
    fn a_key_restored_under_another_name_is_refused() {
        let r = populated();
        assert!(!Registry::named_by(&r.save_key("chat:x"), "chat:y"));
        assert!(!Registry::named_by(&r.save_key("alice"), "bob"));
        assert!(!Registry::named_by(&r.save_key("5.6.7.8"), "alice"));
        assert!(Registry::named_by(&r.save_key("nothing"), "other"));
    }

    #[test]
    fn memory_usage_grows_with_members_and_history() {
        let mut r = populated();
        let base = r.key_mem_usage("chat:x");
        join_present(&mut r, "chat:x", "erin", "e1", "n1", "e1");
        let more = r.key_mem_usage("chat:x");
        assert!(more > base);
        let cfg = HistoryConfig {
            size: 10,
            ttl_ms: 0,
        };
        r.apply_publish(&applied("chat:x", 2, "e1", 6, cfg, &[0; 1000]));
        assert!(r.key_mem_usage("chat:x") >= more + 1000);
    }
}
