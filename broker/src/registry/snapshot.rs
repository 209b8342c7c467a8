//! The persistence form of the registry: what an RDB carries, and rebuilding
//! every index from it (the after-load reconciliation starts when loading
//! has ended: [`Registry::after_load`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::connections::Opened;
use super::{Conn, HistoryConfig, Name, Registry, Room, Stored};

impl Registry {
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
                incarnation: n.incarnation.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut conns: Vec<SavedConn> = self
            .conns
            .iter()
            .map(|(id, c)| SavedConn {
                id: id.to_string(),
                user: c.user.to_string(),
                node: c.node.to_string(),
                opened: c.opened.clone(),
                ip_hold: c.ip_hold.clone(),
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
            if let Some(node) = self.nodes.get_mut(&n.id) {
                node.incarnation = n.incarnation;
            }
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
            // A place of an address, unless the connection counts for it
            // as opened already.
            let ip_hold = c.ip_hold;
            if let Some(ip) = &ip_hold {
                if c.opened.as_ref().is_none_or(|o| &o.ip != ip) {
                    *self.ips.entry(ip.clone()).or_insert(0) += 1;
                }
            }
            self.conns.insert(
                Name::from(c.id),
                Conn {
                    user: Name::from(c.user),
                    node: Name::from(c.node),
                    opened: c.opened,
                    rooms: BTreeSet::new(),
                    ip_hold,
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
        let unused: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, c)| c.opened.is_none() && c.rooms.is_empty() && c.ip_hold.is_none())
            .map(|(id, _)| id.to_string())
            .collect();
        for id in unused {
            self.drop_if_unused(&id);
        }
        // A load is no event: what was saved happened before.
        self.take_lifecycle();
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
    /// Absent in snapshots saved before incarnations.
    #[serde(default)]
    incarnation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedConn {
    id: String,
    user: String,
    node: String,
    opened: Option<Opened>,
    /// The address the connection holds a place of (`IP.OPEN`); absent in
    /// snapshots saved before places.
    #[serde(default)]
    ip_hold: Option<String>,
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
    use crate::command::{ConnOpen, IpOpen};
    use crate::registry::test_support::{applied, join_present, leased};

    #[test]
    fn snapshot_round_trip_rebuilds_indexes() {
        let mut r = leased();
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip1"), 7)
            .unwrap();
        join_present(&mut r, "chat:x", "alice", "a1", "n1", "e1");
        join_present(&mut r, "chat:x", "bob", "b1", "n2", "e1");
        let cfg = HistoryConfig {
            size: 10,
            ttl_ms: 0,
        };
        r.apply_publish(&applied("chat:x", 1, "e1", 5, cfg, b"frame"));
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
    fn places_of_addresses_are_saved() {
        let mut r = leased();
        r.hold_ip(&IpOpen::new("1.2.3.4", "bob", "b1", "n2").max_ip(2))
            .unwrap();
        r.open(&ConnOpen::new("alice", "a1", "n1", "1.2.3.4"), 7)
            .unwrap();
        let mut back = Registry::new();
        back.restore(Snapshot::from_bytes(&r.snapshot().to_bytes().unwrap()).unwrap());
        assert_eq!(back.snapshot(), r.snapshot());
        assert_eq!(back.ip_count("1.2.3.4"), 2);
        assert_eq!(
            back.hold_ip(&IpOpen::new("1.2.3.4", "carol", "c1", "n1").max_ip(2)),
            Err(crate::command::Refusal::Limit(
                crate::command::LimitKind::Ip
            ))
        );
        assert!(back.release_ip("1.2.3.4", "b1"));
        assert_eq!(back.ip_count("1.2.3.4"), 1);
        // A snapshot written before places (connections without the field).
        let old = rmp_serde::to_vec(&(
            vec![("n1".to_string(), 10_000u64, 5000u64)],
            vec![(
                "a1".to_string(),
                "alice".to_string(),
                "n1".to_string(),
                Some(("1.2.3.4".to_string(), 7u64)),
            )],
            Vec::<()>::new(),
        ))
        .unwrap();
        let mut back = Registry::new();
        back.restore(Snapshot::from_bytes(&old).unwrap());
        assert_eq!(back.ip_count("1.2.3.4"), 1);
        assert_eq!(back.online(), (1, 1));
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
}
