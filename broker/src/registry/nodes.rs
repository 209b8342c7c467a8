//! Gateway node leases: taking, renewing, expiring and releasing them, the
//! sharded channel a node reads, and what a node's lease must do after a load.

use std::collections::HashSet;

use super::{PresenceEvent, Registry};
use crate::command::{ConnClose, NodeLease};

/// What a node's lease must do after a load ([`Registry::after_load_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AfterLoad {
    /// Nothing: no load since, or already reconciled.
    Nothing,
    /// Answer "new lease": the node registers its connections again.
    Reregister,
    /// Drop these `(user, conn)`: not registered again since.
    Drop(Vec<(String, String)>),
}

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) deadline_ms: u64,
    pub(super) lease_ms: u64,
    /// Sharded Pub/Sub channel the node reads on this shard (cluster only).
    pub(super) channel: Option<String>,
    pub(super) conns: HashSet<String>,
    /// After a load: the connections the node has not registered again
    /// since (see [`Registry::after_load_step`]).
    pub(super) unconfirmed: Option<HashSet<String>>,
    /// Whether the node was already asked to register again.
    pub(super) asked: bool,
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

/// What [`Registry::lease_node`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOutcome {
    /// When the lease runs out, ms since the Unix epoch.
    pub deadline_ms: u64,
    /// True when the node keeps its registrations; false for a new lease
    /// (or the first one after a load): the node must register its
    /// connections and rooms again.
    pub renewed: bool,
    /// The connections dropped because the node did not register them again
    /// after a load, as the closes replicas receive.
    pub dropped: Vec<ConnClose>,
    /// The leave events of those drops.
    pub events: Vec<PresenceEvent>,
}

impl Registry {
    /// Takes or renews a node's lease (`BROKER.NODE.LEASE`) when it runs at
    /// `now_ms`, and names its channel when the lease does. With
    /// `reconcile` (a master; a replica follows the master's stream
    /// instead) it also takes the after-load step: the node's first lease
    /// since a load answers "new" so the node registers again, its next one
    /// drops what the node did not register again.
    pub fn lease_node(&mut self, lease: &NodeLease, now_ms: u64, reconcile: bool) -> LeaseOutcome {
        let step = if reconcile {
            self.after_load_step(&lease.node)
        } else {
            AfterLoad::Nothing
        };
        let deadline_ms = lease.deadline_or(now_ms);
        let mut renewed = self.lease(&lease.node, lease.lease_ms, deadline_ms);
        if lease.channel.is_some() {
            self.set_node_channel(&lease.node, lease.channel.as_deref());
        }
        let (mut dropped, mut events) = (Vec::new(), Vec::new());
        match step {
            AfterLoad::Nothing => {}
            AfterLoad::Reregister => renewed = false,
            AfterLoad::Drop(stale) => {
                for (user, conn) in stale {
                    events.extend(self.close(&user, &conn, None).1);
                    dropped.push(ConnClose::new(&user, &conn));
                }
            }
        }
        LeaseOutcome {
            deadline_ms,
            renewed,
            dropped,
            events,
        }
    }

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
    pub(super) fn after_load_step(&mut self, node: &str) -> AfterLoad {
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
    pub(super) fn confirm(&mut self, node: &str, conn: &str) {
        if let Some(set) = self
            .nodes
            .get_mut(node)
            .and_then(|n| n.unconfirmed.as_mut())
        {
            set.remove(conn);
        }
    }

    /// Sets the sharded Pub/Sub channel `node` reads on this shard; `None`
    /// means its classic channel ([`crate::names::node_channel`]).
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ConnOpen;
    use crate::registry::test_support::{join_present, leased};
    use crate::registry::PresenceChange;

    #[test]
    fn release_node_cleans_everything_and_reports_leaves() {
        let mut r = leased();
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip1"), 1)
            .unwrap();
        r.open(&ConnOpen::new("bob", "b1", "n2", "ip2"), 1).unwrap();
        join_present(&mut r, "chat:x", "alice", "a1", "n1", "e");
        join_present(&mut r, "chat:x", "bob", "b1", "n2", "e");
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
    fn after_a_load_stale_connections_are_dropped_once_the_node_registered_again() {
        let mut r = leased();
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        r.open(&ConnOpen::new("bob", "b1", "n1", "ip"), 1).unwrap();
        join_present(&mut r, "chat:x", "alice", "a1", "n1", "e");
        join_present(&mut r, "chat:x", "bob", "b1", "n1", "e");
        join_present(&mut r, "chat:x", "carol", "c1", "n2", "e");
        let mut back = Registry::new();
        back.restore(r.snapshot());
        assert_eq!(back.after_load_step("n1"), AfterLoad::Reregister);
        // The gateway registers what is still alive: alice, not bob.
        back.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        join_present(&mut back, "chat:x", "alice", "a1", "n1", "e");
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
    fn expired_nodes_and_extension() {
        let mut r = leased();
        assert_eq!(r.expired_nodes(10_000), vec!["n1", "n2"]);
        r.extend_leases(20_000);
        assert!(r.expired_nodes(24_999).is_empty());
    }

    #[test]
    fn a_master_lease_after_a_load_asks_again_then_drops_what_was_not_registered() {
        let mut r = leased();
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        r.open(&ConnOpen::new("bob", "b1", "n1", "ip"), 1).unwrap();
        join_present(&mut r, "chat:x", "bob", "b1", "n1", "e");
        join_present(&mut r, "chat:x", "carol", "c1", "n2", "e");
        let lease = NodeLease::new("n1", 5000);
        // Not loaded: a renewal, nothing dropped.
        let plain = r.clone().lease_node(&lease, 100, true);
        assert_eq!((plain.deadline_ms, plain.renewed), (5100, true));
        assert!(plain.dropped.is_empty() && plain.events.is_empty());

        let mut back = Registry::new();
        back.restore(r.snapshot());
        // A replica follows the master's stream: no step of its own.
        let replica = back.clone().lease_node(&lease, 100, false);
        assert!(replica.renewed && replica.dropped.is_empty());

        let first = back.lease_node(&lease, 100, true);
        assert!(!first.renewed, "the node must register again");
        back.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        let second = back.lease_node(
            &NodeLease {
                deadline: Some(9_000),
                channel: Some("broker:node:n1:{3}".into()),
                ..lease.clone()
            },
            200,
            true,
        );
        assert_eq!((second.deadline_ms, second.renewed), (9_000, true));
        assert_eq!(second.dropped, vec![ConnClose::new("bob", "b1")]);
        assert_eq!(second.events.len(), 1);
        assert_eq!(
            (second.events[0].user.as_str(), second.events[0].change),
            ("bob", PresenceChange::Leave)
        );
        assert_eq!(second.events[0].nodes, vec!["n2"]);
        assert_eq!(back.node_channel("n1"), Some("broker:node:n1:{3}"));
        assert!(back.lease_node(&lease, 300, true).dropped.is_empty());
        assert_eq!(back.online(), (1, 1));
    }
}
