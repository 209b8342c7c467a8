//! The persistence form of the registry: what an RDB carries, and rebuilding
//! every index from it (the after-load reconciliation starts when loading
//! has ended: [`Registry::after_load`]).

use serde::{Deserialize, Serialize};

use super::connections::Opened;
use super::{HistoryConfig, Registry, Room, Stored};

impl Registry {
    /// The nodes' leases alone: what the module saves as aux data, since
    /// the rest of the state is saved with its keys.
    pub fn leases_snapshot(&self) -> Snapshot {
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
        Snapshot {
            nodes,
            conns: Vec::new(),
            rooms: Vec::new(),
        }
    }

    /// The registry as a snapshot to save (the derived counts are rebuilt on
    /// load, so they cannot drift from the data).
    pub fn snapshot(&self) -> Snapshot {
        let Snapshot { nodes, .. } = self.leases_snapshot();
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
            .map(|(name, r)| saved_room(name, r))
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
        let Snapshot {
            nodes,
            conns,
            rooms,
        } = snapshot;
        for n in nodes {
            let _ = self.lease(&n.id, n.lease_ms, n.deadline_ms);
            self.set_node_channel(&n.id, n.channel.as_deref());
            if let Some(node) = self.nodes.get_mut(&n.id) {
                node.incarnation = n.incarnation;
            }
        }
        self.merge(Snapshot {
            nodes: Vec::new(),
            conns,
            rooms,
        });
        // A load is no event, and the keys are made by the caller.
        self.take_lifecycle();
        self.touched.clear();
    }
}

/// The saved form of one room (members sorted, so equal rooms save equal
/// bytes: a replica's digest matches its master's).
pub(super) fn saved_room(name: &str, r: &Room) -> SavedRoom {
    let mut members: Vec<String> = r.members.iter().cloned().collect();
    members.sort();
    SavedRoom {
        name: name.to_string(),
        seq: r.seq,
        epoch: r.epoch.clone(),
        config: r.config,
        presence_events: r.presence_events,
        history: r.history.iter().cloned().collect(),
        members,
        lingering: r.lingering.iter().map(|(u, t)| (u.clone(), *t)).collect(),
    }
}

/// The saved form of a [`Registry`] (module aux data, encoding version 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub(super) nodes: Vec<SavedNode>,
    pub(super) conns: Vec<SavedConn>,
    pub(super) rooms: Vec<SavedRoom>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedNode {
    pub(super) id: String,
    pub(super) deadline_ms: u64,
    pub(super) lease_ms: u64,
    /// Absent in snapshots saved before sharded Pub/Sub.
    #[serde(default)]
    pub(super) channel: Option<String>,
    /// Absent in snapshots saved before incarnations.
    #[serde(default)]
    pub(super) incarnation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedConn {
    pub(super) id: String,
    pub(super) user: String,
    pub(super) node: String,
    pub(super) opened: Option<Opened>,
    /// The address the connection holds a place of (`IP.OPEN`); absent in
    /// snapshots saved before places.
    #[serde(default)]
    pub(super) ip_hold: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SavedRoom {
    pub(super) name: String,
    pub(super) seq: u64,
    pub(super) epoch: String,
    pub(super) config: HistoryConfig,
    pub(super) presence_events: bool,
    pub(super) history: Vec<Stored>,
    pub(super) members: Vec<String>,
    /// Lingering users and their deadlines; absent in older snapshots.
    #[serde(default)]
    pub(super) lingering: Vec<(String, u64)>,
}

impl Snapshot {
    /// True when it holds nothing (no node, connection or room).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.conns.is_empty() && self.rooms.is_empty()
    }

    /// The same without the nodes' leases: what a key's digest covers (a
    /// lease renewal changes no key).
    pub fn without_leases(mut self) -> Snapshot {
        self.nodes.clear();
        self
    }

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
    use crate::registry::test_support::{alice_and_bob_in_chat_x, leased};

    #[test]
    fn snapshot_round_trip_rebuilds_indexes() {
        let mut r = alice_and_bob_in_chat_x();
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
