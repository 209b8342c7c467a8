//! Connections: opening and closing them within the per-user and per-IP
//! limits, the places of client addresses held for connections opened on
//! another shard (`IP.OPEN`), dropping them everywhere, and the presence
//! reads by user.
//!
//! The count of an address (`ips`) is the number of connections here that
//! are opened with it or hold a place of it (`ip_hold`); a connection
//! opened here with the address it holds a place of (the user's and the
//! address's slots differ but are on one shard) counts once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Name, PresenceEvent, Registry};
use crate::command::{ConnOpen, IpOpen, LimitKind, Refusal};
use crate::lifecycle::EventType;

#[derive(Debug, Clone)]
pub(super) struct Conn {
    pub(super) user: Name,
    pub(super) node: Name,
    pub(super) opened: Option<Opened>,
    pub(super) rooms: BTreeSet<Name>,
    /// The client address this connection holds a place of here
    /// (`IP.OPEN`); when it is also opened here with that address, it
    /// counts once.
    pub(super) ip_hold: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Opened {
    pub(super) ip: String,
    pub(super) at_ms: u64,
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

impl Registry {
    /// Registers an opened connection, enforcing the per-user and per-IP
    /// limits in the same step as the insert. `now_ms` is the connect time
    /// when the command names none (`AT`).
    ///
    /// # Errors
    /// [`Refusal::NoLease`], [`Refusal::Conflict`],
    /// [`Refusal::Limit`] (user or ip).
    pub fn open(&mut self, open: &ConnOpen, now_ms: u64) -> Result<(), Refusal> {
        let (user, conn, node, ip) = (&*open.user, &*open.conn, &*open.node, &*open.ip);
        let (max_per_user, max_per_ip) = (open.max_user, open.max_ip);
        let at_ms = open.at_or(now_ms);
        if !self.nodes.contains_key(node) {
            return Err(Refusal::NoLease);
        }
        let mut holds_place = false;
        if let Some(existing) = self.conns.get(conn) {
            if existing.user != user || existing.node != node {
                return Err(Refusal::Conflict);
            }
            if existing.opened.is_some() {
                self.confirm(node, conn);
                return Ok(());
            }
            holds_place = existing.ip_hold.as_deref() == Some(ip);
        }
        let user_count = self.users.get(user).map_or(0, |c| c.len() as u32);
        if max_per_user.is_some_and(|max| user_count >= max) {
            return Err(Refusal::Limit(LimitKind::User));
        }
        let ip_count = self.ips.get(ip).copied().unwrap_or(0);
        if !holds_place && max_per_ip.is_some_and(|max| ip_count >= max) {
            return Err(Refusal::Limit(LimitKind::Ip));
        }
        let entry = self.attach_conn(user, conn, node);
        entry.opened = Some(Opened {
            ip: ip.to_string(),
            at_ms,
        });
        // A place `IP.OPEN` took here counts for the opened connection.
        if !holds_place {
            *self.ips.entry(ip.to_string()).or_insert(0) += 1;
        }
        self.users
            .entry(user.to_string())
            .or_default()
            .insert(conn.to_string());
        if user_count == 0 {
            self.touched.push(user.to_string());
        }
        self.opened += 1;
        self.confirm(node, conn);
        self.note(EventType::Connect, (user, conn, node), None, None);
        if user_count == 0 {
            self.note(EventType::Online, (user, conn, node), None, None);
        }
        Ok(())
    }

    /// Takes a place of `hold.ip` for a connection opened on another shard
    /// (`BROKER.IP.OPEN`), within `MAXIP` in the same step. Taking it again
    /// for the same connection and address changes nothing (and counts as
    /// registered again after a load); so does taking it for a connection
    /// opened here with that address, which counts already.
    ///
    /// # Errors
    /// [`Refusal::NoLease`]; [`Refusal::Conflict`] when the connection is
    /// another user's or node's, or holds or was opened with another
    /// address; [`Refusal::Limit`] (ip).
    pub fn hold_ip(&mut self, hold: &IpOpen) -> Result<(), Refusal> {
        let (ip, user, conn, node) = (&*hold.ip, &*hold.user, &*hold.conn, &*hold.node);
        if !self.nodes.contains_key(node) {
            return Err(Refusal::NoLease);
        }
        if let Some(existing) = self.conns.get(conn) {
            if existing.user != user || existing.node != node {
                return Err(Refusal::Conflict);
            }
            let opened_ip = existing.opened.as_ref().map(|o| o.ip.as_str());
            match (existing.ip_hold.as_deref(), opened_ip) {
                (Some(held), _) if held == ip => {
                    self.confirm(node, conn);
                    return Ok(());
                }
                (Some(_), _) => return Err(Refusal::Conflict),
                (None, Some(opened)) if opened != ip => return Err(Refusal::Conflict),
                (None, _) => {}
            }
        }
        // Opened here with this address: it counts already.
        let counted = self
            .conns
            .get(conn)
            .and_then(|c| c.opened.as_ref())
            .is_some();
        let ip_count = self.ips.get(ip).copied().unwrap_or(0);
        if !counted && hold.max_ip.is_some_and(|max| ip_count >= max) {
            return Err(Refusal::Limit(LimitKind::Ip));
        }
        let entry = self.attach_conn(user, conn, node);
        entry.ip_hold = Some(ip.to_string());
        self.add_place(ip, conn);
        if !counted {
            *self.ips.entry(ip.to_string()).or_insert(0) += 1;
        }
        self.confirm(node, conn);
        Ok(())
    }

    /// Gives back the place of `ip` that `conn` holds here
    /// (`BROKER.IP.CLOSE`); true when it held one. A connection opened here
    /// with that address keeps counting (`CONN.CLOSE` ends it).
    pub fn release_ip(&mut self, ip: &str, conn: &str) -> bool {
        let Some(entry) = self.conns.get_mut(conn) else {
            return false;
        };
        if entry.ip_hold.as_deref() != Some(ip) {
            return false;
        }
        entry.ip_hold = None;
        if entry.opened.is_none() {
            self.uncount_ip(ip);
        }
        self.remove_place(ip, conn);
        self.drop_if_unused(conn);
        true
    }

    /// Records that `conn` holds a place of `ip` (the address's key).
    pub(super) fn add_place(&mut self, ip: &str, conn: &str) {
        let holders = self.places.entry(ip.to_string()).or_default();
        if holders.is_empty() {
            self.touched.push(ip.to_string());
        }
        holders.insert(conn.to_string());
    }

    /// Records that `conn` no longer holds a place of `ip`.
    pub(super) fn remove_place(&mut self, ip: &str, conn: &str) {
        if let Some(holders) = self.places.get_mut(ip) {
            holders.remove(conn);
            if holders.is_empty() {
                self.places.remove(ip);
                self.touched.push(ip.to_string());
            }
        }
    }

    /// The number of connections here counted for `ip` (opened with it or
    /// holding a place of it).
    pub fn ip_count(&self, ip: &str) -> u32 {
        self.ips.get(ip).copied().unwrap_or(0)
    }

    pub(super) fn uncount_ip(&mut self, ip: &str) {
        if let Some(count) = self.ips.get_mut(ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.ips.remove(ip);
            }
        }
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
    pub(super) fn attach_conn(&mut self, user: &str, conn: &str, node: &str) -> &mut Conn {
        if let Some(n) = self.nodes.get_mut(node) {
            n.conns.insert(conn.to_string());
        }
        self.conns.entry(Name::from(conn)).or_insert_with(|| Conn {
            user: Name::from(user),
            node: Name::from(node),
            opened: None,
            rooms: BTreeSet::new(),
            ip_hold: None,
        })
    }

    /// Removes a connection everywhere: rooms, user, IP, node.
    pub(super) fn drop_conn(
        &mut self,
        conn: &str,
        events: &mut Vec<PresenceEvent>,
        linger_until: Option<u64>,
    ) {
        let Some(entry) = self.conns.get(conn) else {
            return;
        };
        let rooms: Vec<String> = entry.rooms.iter().map(|r| r.to_string()).collect();
        for room in rooms {
            if let Some(event) = self.remove_member(&room, conn, linger_until) {
                events.push(event);
            }
        }
        let Some(entry) = self.conns.remove(conn) else {
            return;
        };
        if let Some(ip) = &entry.ip_hold {
            if entry.opened.as_ref().is_none_or(|o| &o.ip != ip) {
                self.uncount_ip(ip);
            }
            self.remove_place(ip, conn);
        }
        if let Some(opened) = entry.opened {
            self.unopen(&entry.user, conn, &opened.ip);
            let who = (&*entry.user, conn, &*entry.node);
            self.note(EventType::Disconnect, who, None, Some(opened.at_ms));
            if !self.users.contains_key(entry.user.as_str()) {
                self.note(EventType::Offline, who, None, None);
            }
        }
        if let Some(node) = self.nodes.get_mut(entry.node.as_str()) {
            node.conns.remove(conn);
        }
    }

    pub(super) fn unopen(&mut self, user: &str, conn: &str, ip: &str) {
        if let Some(set) = self.users.get_mut(user) {
            set.remove(conn);
            if set.is_empty() {
                self.users.remove(user);
                self.touched.push(user.to_string());
            }
        }
        self.uncount_ip(ip);
        self.opened = self.opened.saturating_sub(1);
    }

    /// Drops a connection that is neither opened, nor in a room, nor holding
    /// a place of an address.
    pub(super) fn drop_if_unused(&mut self, conn: &str) {
        let unused = self
            .conns
            .get(conn)
            .is_some_and(|c| c.opened.is_none() && c.rooms.is_empty() && c.ip_hold.is_none());
        if unused {
            if let Some(entry) = self.conns.remove(conn) {
                if let Some(node) = self.nodes.get_mut(entry.node.as_str()) {
                    node.conns.remove(conn);
                }
            }
        }
    }

    /// The opened connections of `user`, sorted by connect time then id.
    pub fn presence(&self, user: &str) -> Vec<ConnInfo> {
        let Some(conns) = self.users.get(user) else {
            return Vec::new();
        };
        let mut out: Vec<ConnInfo> = conns
            .iter()
            .filter_map(|id| {
                let c = self.conns.get(id.as_str())?;
                let opened = c.opened.as_ref()?;
                Some(ConnInfo {
                    conn: id.clone(),
                    node: c.node.to_string(),
                    ip: opened.ip.clone(),
                    connected_at_ms: opened.at_ms,
                    rooms: c.rooms.iter().map(|r| r.to_string()).collect(),
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
            .map(|(id, c)| {
                (
                    id.to_string(),
                    c.rooms.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The opened connections of `user` grouped by the node holding them,
    /// for `BROKER.KICK` (one message per node): nodes sorted, each node's
    /// connections sorted. A connection known here only as a room member is
    /// not listed.
    pub fn user_conns_by_node(&self, user: &str) -> Vec<(String, Vec<String>)> {
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in self.users.get(user).into_iter().flatten() {
            if let Some(c) = self.conns.get(id.as_str()) {
                by_node
                    .entry(c.node.to_string())
                    .or_default()
                    .push(id.clone());
            }
        }
        by_node.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ConnOpen, Join};
    use crate::registry::test_support::leased;

    #[test]
    fn open_requires_lease_and_enforces_limits() {
        let mut r = leased();
        assert_eq!(
            r.open(&ConnOpen::new("alice", "c0", "nx", "ip"), 1),
            Err(Refusal::NoLease)
        );
        for i in 0..5 {
            r.open(
                &ConnOpen {
                    max_user: Some(5),
                    max_ip: Some(20),
                    ..ConnOpen::new("alice", &format!("c{i}"), "n1", "1.1.1.1")
                },
                1,
            )
            .unwrap();
        }
        assert_eq!(
            r.open(
                &ConnOpen {
                    max_user: Some(5),
                    max_ip: Some(20),
                    ..ConnOpen::new("alice", "c5", "n1", "1.1.1.1")
                },
                1
            ),
            Err(Refusal::Limit(LimitKind::User))
        );
        // re-opening an opened connection is idempotent and not counted
        r.open(
            &ConnOpen {
                max_user: Some(5),
                max_ip: Some(20),
                ..ConnOpen::new("alice", "c1", "n1", "1.1.1.1")
            },
            1,
        )
        .unwrap();
        assert_eq!(r.online(), (1, 5));
        assert_eq!(
            r.open(&ConnOpen::new("bob", "c1", "n1", "1.1.1.1"), 1),
            Err(Refusal::Conflict)
        );
        assert_eq!(
            r.open(
                &ConnOpen {
                    max_user: None,
                    max_ip: Some(5),
                    ..ConnOpen::new("bob", "b1", "n1", "1.1.1.1")
                },
                1
            ),
            Err(Refusal::Limit(LimitKind::Ip))
        );
    }

    #[test]
    fn ip_places_count_with_opened_connections_and_are_given_back() {
        let mut r = leased();
        let ip = "2001:db8:1:2::/64";
        let hold = |conn: &str, user: &str| IpOpen::new(ip, user, conn, "n1").max_ip(3);
        assert_eq!(
            r.hold_ip(&IpOpen::new(ip, "a", "x", "nx")),
            Err(Refusal::NoLease)
        );
        // One connection opened here, two places for connections opened on
        // other shards: the address is full.
        r.open(&ConnOpen::new("alice", "a1", "n1", ip).max_ip(3), 1)
            .unwrap();
        r.hold_ip(&hold("b1", "bob")).unwrap();
        r.hold_ip(&hold("c1", "carol")).unwrap();
        assert_eq!(r.ip_count(ip), 3);
        assert_eq!(
            r.hold_ip(&hold("d1", "dave")),
            Err(Refusal::Limit(LimitKind::Ip))
        );
        assert_eq!(
            r.open(&ConnOpen::new("dave", "d1", "n1", ip).max_ip(3), 1),
            Err(Refusal::Limit(LimitKind::Ip))
        );
        // Again for the same connection: nothing changes, even when full.
        r.hold_ip(&hold("b1", "bob")).unwrap();
        assert_eq!(r.ip_count(ip), 3);
        // For a connection opened here with the address: it counts once.
        r.hold_ip(&hold("a1", "alice")).unwrap();
        assert_eq!(r.ip_count(ip), 3);
        assert!(r.release_ip(ip, "a1"), "the place is given back");
        assert_eq!(r.ip_count(ip), 3, "the open still counts");
        // Another user, node or address for a known connection: refused.
        assert_eq!(r.hold_ip(&hold("b1", "eve")), Err(Refusal::Conflict));
        assert_eq!(
            r.hold_ip(&IpOpen::new("1.2.3.4", "bob", "b1", "n1")),
            Err(Refusal::Conflict)
        );
        // Places are not presence.
        assert!(r.presence("bob").is_empty());
        assert_eq!(r.online(), (1, 1));
        assert_eq!(r.nodes()[0].connections, 1);
        // Given back: the place is free, the entry gone.
        assert!(r.release_ip(ip, "b1"));
        assert!(!r.release_ip(ip, "b1"));
        assert!(!r.release_ip(ip, "a1"), "opened, not a place");
        assert_eq!(r.ip_count(ip), 2);
        assert!(r.node_conns("n1").iter().all(|c| c.conn != "b1"));
        // The user and the address on one shard: the connection holds a
        // place and is opened, and counts once, even when full.
        r.hold_ip(&hold("b2", "bob")).unwrap();
        assert_eq!(r.ip_count(ip), 3);
        r.open(&ConnOpen::new("bob", "b2", "n1", ip).max_ip(3), 1)
            .unwrap();
        assert_eq!(r.ip_count(ip), 3);
        let listed = r.node_conns("n1");
        let b2 = listed.iter().find(|c| c.conn == "b2").expect("b2");
        assert!(b2.opened && b2.ip_hold.as_deref() == Some(ip));
        r.close("bob", "b2", None);
        assert_eq!(r.ip_count(ip), 2);
        r.hold_ip(&hold("b3", "bob")).unwrap();
        r.open(&ConnOpen::new("bob", "b3", "n1", ip), 1).unwrap();
        assert!(r.release_ip(ip, "b3"));
        assert_eq!(r.ip_count(ip), 3, "b3 still counts as opened");
        r.close("bob", "b3", None);
        assert_eq!(r.ip_count(ip), 2);
        // A node's end gives its places back.
        r.hold_ip(&IpOpen::new(ip, "erin", "e1", "n2")).unwrap();
        assert_eq!(r.ip_count(ip), 3);
        r.release_node("n2", None);
        assert_eq!(r.ip_count(ip), 2);
        // CONN.CLOSE of a connection that holds a place here ends it too.
        assert!(r.close("carol", "c1", None).0 == 0);
        assert_eq!(r.ip_count(ip), 1);
    }

    #[test]
    fn user_rooms_lists_member_only_connections_too() {
        let mut r = leased();
        r.open(&ConnOpen::new("alice", "c1", "n1", "ip"), 1)
            .unwrap();
        r.join(&Join::new("chat:a", "alice", "c1", "n1"), "e")
            .unwrap();
        // c2 was opened on another shard; here it is only a room member.
        r.join(&Join::new("chat:b", "alice", "c2", "n2"), "e")
            .unwrap();
        r.join(&Join::new("chat:a", "alice", "c2", "n2"), "e")
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
    fn kick_groups_a_users_opened_connections_by_node() {
        let mut r = leased();
        for (conn, node) in [("c3", "n1"), ("c1", "n2"), ("c2", "n1")] {
            r.open(&ConnOpen::new("alice", conn, node, "ip"), 1)
                .unwrap();
        }
        // Known here only as a room member: not kicked from this shard.
        r.join(&Join::new("chat:a", "alice", "c9", "n2"), "e")
            .unwrap();
        assert_eq!(
            r.user_conns_by_node("alice"),
            vec![
                ("n1".to_string(), vec!["c2".to_string(), "c3".to_string()]),
                ("n2".to_string(), vec!["c1".to_string()]),
            ]
        );
        assert!(r.user_conns_by_node("bob").is_empty());
    }
}
