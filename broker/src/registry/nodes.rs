//! Gateway node leases: taking, renewing, expiring and releasing them, the
//! sharded channel a node reads, the incarnation (process) holding a node
//! id, what a node's lease must do after a load, and the listing a node
//! reconciles against.

use std::collections::HashSet;

use super::{PresenceEvent, Registry};
use crate::command::{ConnClose, NodeLease};
use crate::lifecycle::reason;

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
    /// The gateway process that holds the node id, once a lease named one.
    pub(super) incarnation: Option<String>,
    pub(super) conns: HashSet<String>,
    /// After a load: the connections the node has not registered again
    /// since (see [`Registry::after_load_step`]).
    pub(super) unconfirmed: Option<HashSet<String>>,
    /// Whether the node was already asked to register again.
    pub(super) asked: bool,
    /// Known here only from keys that moved in ([`Registry::merge`]), not
    /// from a lease of its own yet.
    pub(super) moved_in: bool,
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
    /// The leave events of those drops, and of the connections of a
    /// replaced incarnation.
    pub events: Vec<PresenceEvent>,
    /// Opened connections ended because another incarnation held the node
    /// id (`None`: no other incarnation did). The caller replicates a
    /// `NODE.RELEASE` before the lease when set.
    pub replaced: Option<u64>,
}

/// One connection in a `BROKER.NODE.CONNS` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConn {
    /// Connection id.
    pub conn: String,
    /// Its user.
    pub user: String,
    /// True when `CONN.OPEN` registered it here (not only a room member).
    pub opened: bool,
    /// Its rooms here, sorted.
    pub rooms: Vec<String>,
    /// The client address it holds a place of here (`IP.OPEN`), if any.
    pub ip_hold: Option<String>,
}

impl Registry {
    /// Takes or renews a node's lease (`BROKER.NODE.LEASE`) when it runs at
    /// `now_ms`, and names its channel when the lease does. A lease naming
    /// another incarnation than the one on record first releases the node
    /// (the old process's connections end, with leave events) and is then a
    /// new lease. With `reconcile` (a master; a replica follows the
    /// master's stream instead) it also takes the after-load step: the
    /// node's first lease since a load answers "new" so the node registers
    /// again, its next one without `REGISTERING` drops what the node did
    /// not register again.
    pub fn lease_node(&mut self, lease: &NodeLease, now_ms: u64, reconcile: bool) -> LeaseOutcome {
        let (mut dropped, mut events) = (Vec::new(), Vec::new());
        let mut replaced = None;
        let other_incarnation = self.nodes.get(&lease.node).is_some_and(|n| {
            matches!((&n.incarnation, &lease.incarnation), (Some(old), Some(new)) if old != new)
        });
        if other_incarnation {
            let (ended, leaves) =
                self.departing(reason::NODE_LOST, |r| r.release_node(&lease.node, None));
            events.extend(leaves);
            replaced = Some(ended);
        }
        let step = if reconcile {
            self.after_load_step(&lease.node, lease.registering)
        } else {
            AfterLoad::Nothing
        };
        let deadline_ms = lease.deadline_or(now_ms);
        let mut renewed = self.lease(&lease.node, lease.lease_ms, deadline_ms);
        if lease.channel.is_some() {
            self.set_node_channel(&lease.node, lease.channel.as_deref());
        }
        if let (Some(n), Some(id)) = (self.nodes.get_mut(&lease.node), &lease.incarnation) {
            n.incarnation = Some(id.clone());
        }
        match step {
            AfterLoad::Nothing => {}
            AfterLoad::Reregister => renewed = false,
            AfterLoad::Drop(stale) => {
                for (user, conn) in stale {
                    let (_, leaves) =
                        self.departing(reason::NODE_LOST, |r| r.close(&user, &conn, None));
                    events.extend(leaves);
                    dropped.push(ConnClose::new(&user, &conn));
                }
            }
        }
        LeaseOutcome {
            deadline_ms,
            renewed,
            dropped,
            events,
            replaced,
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
            incarnation: None,
            conns: HashSet::new(),
            unconfirmed: None,
            asked: false,
            moved_in: false,
        });
        entry.deadline_ms = deadline_ms;
        entry.lease_ms = lease_ms;
        entry.moved_in = false;
        renewed
    }

    /// What a lease of `node` must do after a load (the master calls it
    /// before [`Registry::lease`]; a replica follows the master's stream
    /// instead): nothing, ask the node to register again (its first lease
    /// since the load), or drop the connections it did not register again
    /// (its first one after that which is not `registering`), as
    /// `(user, conn)`.
    pub(super) fn after_load_step(&mut self, node: &str, registering: bool) -> AfterLoad {
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
        if registering {
            return AfterLoad::Nothing;
        }
        let stale = n.unconfirmed.take().unwrap_or_default();
        let mut out: Vec<(String, String)> = stale
            .into_iter()
            .filter_map(|conn| {
                self.conns
                    .get(conn.as_str())
                    .map(|c| (c.user.to_string(), conn))
            })
            .collect();
        out.sort();
        AfterLoad::Drop(out)
    }

    /// Notes that `node` registered `conn` again after a load; true when
    /// that changed something (it was still to be registered again).
    pub(super) fn confirm(&mut self, node: &str, conn: &str) -> bool {
        self.nodes
            .get_mut(node)
            .and_then(|n| n.unconfirmed.as_mut())
            .is_some_and(|set| set.remove(conn))
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

    /// Starts the after-load reconciliation once loading has ended (an RDB,
    /// an AOF with its replayed tail, a replica's full sync): every node
    /// gets a lease period to heartbeat, its next lease answers "new" so it
    /// registers its connections again, and the one after drops what it did
    /// not register ([`Registry::lease_node`]). Called when loading has
    /// *ended*, not while loading: an AOF tail replays old lease deadlines
    /// and the opens and joins of connections that have closed since.
    pub fn after_load(&mut self, now_ms: u64) {
        self.extend_leases(now_ms);
        for node in self.nodes.values_mut() {
            node.unconfirmed = Some(node.conns.clone());
            node.asked = false;
        }
    }

    /// Every connection this registry holds for `node`, sorted by id
    /// (`BROKER.NODE.CONNS`).
    pub fn node_conns(&self, node: &str) -> Vec<NodeConn> {
        let Some(n) = self.nodes.get(node) else {
            return Vec::new();
        };
        let mut out: Vec<NodeConn> = n
            .conns
            .iter()
            .filter_map(|id| {
                self.conns.get(id.as_str()).map(|c| NodeConn {
                    conn: id.clone(),
                    user: c.user.to_string(),
                    opened: c.opened.is_some(),
                    rooms: c.rooms.iter().map(|r| r.to_string()).collect(),
                    ip_hold: c.ip_hold.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.conn.cmp(&b.conn));
        out
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
                    .filter(|c| {
                        self.conns
                            .get(c.as_str())
                            .is_some_and(|c| c.opened.is_some())
                    })
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
            if self
                .conns
                .get(conn.as_str())
                .is_some_and(|c| c.opened.is_some())
            {
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
    use crate::registry::{PresenceChange, Snapshot};

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
        assert_eq!(
            back.after_load_step("n1", false),
            AfterLoad::Nothing,
            "still loading"
        );
        back.after_load(0);
        assert_eq!(back.after_load_step("n1", false), AfterLoad::Reregister);
        assert_eq!(
            back.after_load_step("n1", true),
            AfterLoad::Nothing,
            "registering"
        );
        // The gateway registers what is still alive: alice, not bob.
        back.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        join_present(&mut back, "chat:x", "alice", "a1", "n1", "e");
        assert_eq!(
            back.after_load_step("n1", false),
            AfterLoad::Drop(vec![("bob".into(), "b1".into())])
        );
        assert_eq!(back.after_load_step("n1", false), AfterLoad::Nothing);
        assert_eq!(back.after_load_step("n9", false), AfterLoad::Nothing);
        // A registry that was not loaded asks nothing.
        assert_eq!(r.after_load_step("n1", false), AfterLoad::Nothing);
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
        back.after_load(0);
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

    #[test]
    fn another_incarnation_ends_the_old_ones_connections() {
        let mut r = leased();
        let first = NodeLease::new("n1", 5000).incarnation("p1");
        r.lease_node(&first, 100, true);
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        join_present(&mut r, "chat:x", "alice", "a1", "n1", "e");
        join_present(&mut r, "chat:x", "carol", "c1", "n2", "e");
        // The same process renews: nothing ends.
        let again = r.lease_node(&first, 200, true);
        assert!(again.renewed && again.replaced.is_none());
        // A lease without an incarnation (an older gateway) changes nothing.
        assert!(r
            .lease_node(&NodeLease::new("n1", 5000), 250, true)
            .replaced
            .is_none());
        // A new process under the same node id.
        let second = r.lease_node(&NodeLease::new("n1", 5000).incarnation("p2"), 300, true);
        assert!(!second.renewed, "a new incarnation registers from scratch");
        assert_eq!(second.replaced, Some(1));
        assert_eq!(second.events.len(), 1);
        assert_eq!(
            (second.events[0].user.as_str(), second.events[0].change),
            ("alice", PresenceChange::Leave)
        );
        assert!(r.presence("alice").is_empty());
        assert_eq!(r.room_count("chat:x"), (1, 1));
        // Saved and loaded, the incarnation is kept.
        let mut back = Registry::new();
        back.restore(Snapshot::from_bytes(&r.snapshot().to_bytes().unwrap()).unwrap());
        assert!(back
            .lease_node(&NodeLease::new("n1", 5000).incarnation("p2"), 400, false)
            .replaced
            .is_none());
    }

    #[test]
    fn node_conns_lists_opened_and_member_only_connections() {
        let mut r = leased();
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        join_present(&mut r, "chat:x", "alice", "a1", "n1", "e");
        join_present(&mut r, "chat:y", "bob", "b1", "n1", "e");
        assert_eq!(
            r.node_conns("n1"),
            vec![
                NodeConn {
                    conn: "a1".into(),
                    user: "alice".into(),
                    opened: true,
                    rooms: vec!["chat:x".into()],
                    ip_hold: None,
                },
                NodeConn {
                    conn: "b1".into(),
                    user: "bob".into(),
                    opened: false,
                    rooms: vec!["chat:y".into()],
                    ip_hold: None,
                },
            ]
        );
        assert!(r.node_conns("n9").is_empty());
    }
}
