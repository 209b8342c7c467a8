//! Reconciliation: what Redis holds for this node against what it really
//! serves. A cleanup that timed out (`CONN.CLOSE`, `LEAVE` during a Redis
//! stall), a `CONN.OPEN` or `JOIN` that timed out here but ran in Redis,
//! or a registration lost with a failed command leave Redis and the node
//! disagreeing; nothing else would ever notice. So the node reads its
//! connections back (`BROKER.NODE.CONNS`, every master) after any command
//! failed for want of Redis, and every [`PERIODIC_LEASES`] lease periods
//! anyway, and fixes the difference: what Redis holds that the node does
//! not serve is closed or left (with leave events), what the node serves
//! that Redis lacks is registered or joined again (and then the channel
//! repairs the gaps of the rooms joined again from history). A ghost thus
//! outlives the stall that made it by at most one check, half a lease.
//!
//! On a cluster a connection whose address's slot is not its user's also
//! holds a place of its address there (`BROKER.IP.OPEN`, the per-IP
//! limit): a place held for a connection the node does not serve is given
//! back, a served connection lacking its place takes it again.
//!
//! Connections with a module call in flight ([`super::busy`]) are left for
//! the next round: Redis may not have run that call yet.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::command::{ConnClose, ConnOpen, IpClose, IpOpen, Join, Leave, NodeConns};
use broker::registry::NodeConn;
use futures_util::StreamExt;

use super::Node;
use crate::store::StoreResult;

/// A full check every this many lease periods even without errors.
pub const PERIODIC_LEASES: u64 = 12;
/// Fixes in flight at once.
const CONCURRENCY: usize = 64;

/// One connection as the node serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Connection id.
    pub conn: Arc<str>,
    /// Its user.
    pub user: Arc<str>,
    /// Its client address (for `CONN.OPEN`).
    pub ip: String,
    /// Its rooms, with their presence flags.
    pub rooms: Vec<(String, bool)>,
}

/// What one connection needs to agree again, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Register the served connection (`CONN.OPEN`, no limits).
    Open {
        conn: Arc<str>,
        user: Arc<str>,
        ip: String,
    },
    /// Join a served room Redis lacks.
    Join {
        conn: Arc<str>,
        user: Arc<str>,
        room: String,
        presence: bool,
    },
    /// Leave a room Redis holds that the node does not serve.
    Leave {
        conn: String,
        user: String,
        room: String,
    },
    /// Unregister a connection the node does not serve.
    Close { conn: String, user: String },
    /// Take the place of its address a served connection lacks
    /// (`IP.OPEN`, no limit).
    HoldIp {
        conn: Arc<str>,
        user: Arc<str>,
        ip: String,
    },
    /// Give back a place of an address the node does not need
    /// (`IP.CLOSE`).
    ReleaseIp { conn: String, ip: String },
}

impl Fix {
    /// The metric label of the fix.
    pub fn kind(&self) -> &'static str {
        match self {
            Fix::Open { .. } => "open",
            Fix::Join { .. } => "join",
            Fix::Leave { .. } => "leave",
            Fix::Close { .. } => "close",
            Fix::HoldIp { .. } => "hold_ip",
            Fix::ReleaseIp { .. } => "release_ip",
        }
    }
}

/// The fixes that make `held` (Redis's view) agree with `served`, one list
/// per connection, skipping the `busy` ones. `ip_apart(user, ip)` says
/// whether a connection holds a place of its address apart from its
/// `CONN.OPEN` ([`crate::store::Store::ip_apart`]).
pub fn plan(
    served: &[Served],
    held: &BTreeMap<String, NodeConn>,
    busy: &HashSet<Arc<str>>,
    ip_apart: impl Fn(&str, &str) -> bool,
) -> Vec<Vec<Fix>> {
    let mut out = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for s in served {
        seen.insert(&s.conn);
        if busy.contains(&s.conn) {
            continue;
        }
        let mut fixes = Vec::new();
        let h = held.get(&*s.conn);
        let wanted_hold = ip_apart(&s.user, &s.ip).then_some(s.ip.as_str());
        let held_hold = h.and_then(|h| h.ip_hold.as_deref());
        if let Some(other) = held_hold.filter(|&ip| Some(ip) != wanted_hold) {
            fixes.push(Fix::ReleaseIp {
                conn: s.conn.to_string(),
                ip: other.to_string(),
            });
        }
        if !h.is_some_and(|h| h.opened) {
            // `Store::open` takes the address's place too.
            fixes.push(Fix::Open {
                conn: s.conn.clone(),
                user: s.user.clone(),
                ip: s.ip.clone(),
            });
        } else if wanted_hold.is_some() && held_hold != wanted_hold {
            fixes.push(Fix::HoldIp {
                conn: s.conn.clone(),
                user: s.user.clone(),
                ip: s.ip.clone(),
            });
        }
        let held_rooms: &[String] = h.map(|h| h.rooms.as_slice()).unwrap_or(&[]);
        for (room, presence) in &s.rooms {
            if !held_rooms.contains(room) {
                fixes.push(Fix::Join {
                    conn: s.conn.clone(),
                    user: s.user.clone(),
                    room: room.clone(),
                    presence: *presence,
                });
            }
        }
        for room in held_rooms {
            if !s.rooms.iter().any(|(r, _)| r == room) {
                fixes.push(Fix::Leave {
                    conn: s.conn.to_string(),
                    user: s.user.to_string(),
                    room: room.clone(),
                });
            }
        }
        if !fixes.is_empty() {
            out.push(fixes);
        }
    }
    for (conn, h) in held {
        if seen.contains(conn.as_str()) || busy.contains(conn.as_str()) {
            continue;
        }
        let mut fixes: Vec<Fix> = h
            .rooms
            .iter()
            .map(|room| Fix::Leave {
                conn: conn.clone(),
                user: h.user.clone(),
                room: room.clone(),
            })
            .collect();
        if h.opened {
            fixes.push(Fix::Close {
                conn: conn.clone(),
                user: h.user.clone(),
            });
        }
        if let Some(ip) = &h.ip_hold {
            fixes.push(Fix::ReleaseIp {
                conn: conn.clone(),
                ip: ip.clone(),
            });
        }
        out.push(fixes);
    }
    out
}

/// Checks after Redis errors and periodically, until shutdown.
pub async fn run(node: Arc<Node>) {
    let every = Duration::from_millis((node.lease_ms / 2).max(100));
    let periodic = Duration::from_millis(node.lease_ms.saturating_mul(PERIODIC_LEASES));
    let mut shutdown = node.shutdown.clone();
    let mut checked_at: Option<(u64, Instant)> = None;
    // Asked for (after a re-registration): kept until a check succeeded,
    // since the lease may not be held yet when the request comes.
    let mut wanted = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = node.reconcile_now.notified() => wanted = true,
            _ = shutdown.changed() => return,
        }
        if node.shutting_down() {
            return;
        }
        let errors = node.store.unavailable_count();
        let due = wanted
            || match checked_at {
                None => node.served.load(std::sync::atomic::Ordering::Relaxed),
                Some((seen, at)) => seen != errors || at.elapsed() >= periodic,
            };
        // Not while the node registers again: that is a fix of its own, and
        // the check comes right after it.
        if !due || node.registering() || !node.lease_held() {
            continue;
        }
        match reconcile(&node).await {
            Ok(_) => {
                checked_at = Some((errors, Instant::now()));
                wanted = false;
            }
            Err(err) => tracing::debug!(node = %node.id, error = %err, "reconciliation postponed"),
        }
    }
}

/// One check: reads what Redis holds, fixes the difference. Returns the
/// number of fixes applied.
pub async fn reconcile(node: &Arc<Node>) -> StoreResult<u64> {
    let started = Instant::now();
    // A call that ends while the listing is read, or before the node's
    // view is taken, may have run in Redis after the listing: its
    // connection sits this round out, as does one still in flight (the
    // listing may or may not have seen it).
    node.busy.watch();
    let held = node.store.node_conns(&NodeConns::new(&node.id)).await;
    let served: Vec<Served> = node
        .hub
        .connections()
        .iter()
        .map(|c| Served {
            conn: c.id.clone(),
            user: c.user.clone(),
            ip: c.ip.clone(),
            rooms: c.rooms_snapshot(),
        })
        .collect();
    let busy = node.busy.since_watch();
    let held = held?;
    let plans = plan(&served, &held, &busy, |user, ip| {
        node.store.ip_apart(user, ip)
    });
    if plans.is_empty() {
        return Ok(0);
    }
    // A room joined again was sent nothing while Redis lacked the
    // membership: the channel repairs it from history once joined.
    let rejoins = plans
        .iter()
        .flatten()
        .any(|f| matches!(f, Fix::Open { .. } | Fix::Join { .. }));
    let rejoin = rejoins.then(|| node.begin_rejoin(true));
    let results: Vec<Applied> = futures_util::stream::iter(plans)
        .map(|fixes| apply(node, fixes))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    drop(rejoin);
    let applied: u64 = results.iter().map(|r| r.applied).sum();
    let failed: u64 = results.iter().map(|r| r.failed).sum();
    tracing::warn!(
        node = %node.id,
        held = held.len(),
        served = served.len(),
        applied,
        failed,
        ms = started.elapsed().as_millis() as u64,
        "reconciled what Redis holds with what the node serves"
    );
    Ok(applied)
}

/// What applying one connection's fixes did.
struct Applied {
    applied: u64,
    failed: u64,
}

/// Applies one connection's fixes in order; stops at its first failure
/// (the next round retries).
async fn apply(node: &Node, fixes: Vec<Fix>) -> Applied {
    let mut applied = 0;
    for fix in fixes {
        let kind = fix.kind();
        let done = match &fix {
            Fix::Open { conn, user, ip } => {
                let _busy = node.busy.hold(conn);
                node.store
                    .open(&ConnOpen::new(user, conn, &node.id, ip))
                    .await
            }
            Fix::Join {
                conn,
                user,
                room,
                presence,
            } => {
                let _busy = node.busy.hold(conn);
                let join = Join {
                    presence: *presence,
                    ..Join::new(room, user, conn, &node.id)
                };
                node.store.join(&join).await.map(|_| ())
            }
            Fix::Leave { conn, user, room } => {
                node.store.leave(&Leave::new(room, user, conn)).await
            }
            Fix::Close { conn, user } => node.store.close(&ConnClose::new(user, conn)).await,
            Fix::HoldIp { conn, user, ip } => {
                let _busy = node.busy.hold(conn);
                node.store
                    .hold_ip(&IpOpen::new(ip, user, conn, &node.id))
                    .await
            }
            Fix::ReleaseIp { conn, ip } => node
                .store
                .release_ip(&IpClose::new(ip, conn))
                .await
                .map(|_| ()),
        };
        match done {
            Ok(()) => {
                applied += 1;
                node.metrics
                    .reconcile_fixes
                    .with_label_values(&[kind])
                    .inc();
            }
            Err(err) => {
                tracing::debug!(node = %node.id, kind, error = %err, "reconciliation fix failed");
                return Applied { applied, failed: 1 };
            }
        }
    }
    Applied { applied, failed: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(conn: &str, user: &str, opened: bool, rooms: &[&str]) -> (String, NodeConn) {
        (
            conn.to_string(),
            NodeConn {
                conn: conn.to_string(),
                user: user.to_string(),
                opened,
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                ip_hold: None,
            },
        )
    }

    fn never_apart(_: &str, _: &str) -> bool {
        false
    }

    fn served(conn: &str, user: &str, rooms: &[&str]) -> Served {
        Served {
            conn: Arc::from(conn),
            user: Arc::from(user),
            ip: "ip".into(),
            rooms: rooms.iter().map(|r| (r.to_string(), true)).collect(),
        }
    }

    #[test]
    fn agreeing_views_need_nothing() {
        let held = BTreeMap::from([held("a1", "alice", true, &["chat:x", "user:alice"])]);
        let served = [served("a1", "alice", &["chat:x", "user:alice"])];
        assert!(plan(&served, &held, &HashSet::new(), never_apart).is_empty());
    }

    #[test]
    fn ghosts_are_left_and_closed() {
        let held = BTreeMap::from([
            held("g1", "ghost", true, &["chat:x"]),
            held("g2", "ghost", false, &["chat:y"]),
        ]);
        let plans = plan(&[], &held, &HashSet::new(), never_apart);
        assert_eq!(
            plans,
            vec![
                vec![
                    Fix::Leave {
                        conn: "g1".into(),
                        user: "ghost".into(),
                        room: "chat:x".into()
                    },
                    Fix::Close {
                        conn: "g1".into(),
                        user: "ghost".into()
                    },
                ],
                vec![Fix::Leave {
                    conn: "g2".into(),
                    user: "ghost".into(),
                    room: "chat:y".into()
                }],
            ]
        );
    }

    #[test]
    fn missing_registrations_and_stale_rooms_are_fixed() {
        let held = BTreeMap::from([held("a1", "alice", true, &["chat:old"])]);
        let served = [
            served("a1", "alice", &["chat:x"]),
            served("b1", "bob", &["user:bob"]),
        ];
        let plans = plan(&served, &held, &HashSet::new(), never_apart);
        let kinds: Vec<Vec<&str>> = plans
            .iter()
            .map(|p| p.iter().map(Fix::kind).collect())
            .collect();
        assert_eq!(kinds, vec![vec!["join", "leave"], vec!["open", "join"]]);
    }

    #[test]
    fn busy_connections_wait_for_the_next_round() {
        let held = BTreeMap::from([held("g1", "ghost", true, &[])]);
        let served = [served("b1", "bob", &["user:bob"])];
        let busy = HashSet::from([Arc::from("g1"), Arc::from("b1")]);
        assert!(plan(&served, &held, &busy, never_apart).is_empty());
    }

    #[test]
    fn places_of_addresses_are_taken_and_given_back() {
        // Apart: bob's address ("ip") has another slot than bob.
        let apart = |user: &str, _: &str| user == "bob";
        let mut with_place = held("b1", "bob", true, &[]);
        with_place.1.ip_hold = Some("ip".into());
        // Served and in place: nothing to do.
        let agree = BTreeMap::from([with_place.clone()]);
        assert!(plan(&[served("b1", "bob", &[])], &agree, &HashSet::new(), apart).is_empty());
        // Opened but without its place: taken again.
        let lacking = BTreeMap::from([held("b1", "bob", true, &[])]);
        assert_eq!(
            plan(
                &[served("b1", "bob", &[])],
                &lacking,
                &HashSet::new(),
                apart
            ),
            vec![vec![Fix::HoldIp {
                conn: Arc::from("b1"),
                user: Arc::from("bob"),
                ip: "ip".into()
            }]]
        );
        // Not registered at all: the open takes the place too.
        let kinds: Vec<Vec<&str>> = plan(
            &[served("b1", "bob", &[])],
            &BTreeMap::new(),
            &HashSet::new(),
            apart,
        )
        .iter()
        .map(|p| p.iter().map(Fix::kind).collect())
        .collect();
        assert_eq!(kinds, vec![vec!["open"]]);
        // A place of a connection the node does not serve (a stray one, or
        // one whose open was refused) is given back, with its close.
        assert_eq!(
            plan(&[], &agree, &HashSet::new(), apart),
            vec![vec![
                Fix::Close {
                    conn: "b1".into(),
                    user: "bob".into()
                },
                Fix::ReleaseIp {
                    conn: "b1".into(),
                    ip: "ip".into()
                },
            ]]
        );
        let mut only_place = held("g1", "ghost", false, &[]);
        only_place.1.ip_hold = Some("ip".into());
        assert_eq!(
            plan(&[], &BTreeMap::from([only_place]), &HashSet::new(), apart),
            vec![vec![Fix::ReleaseIp {
                conn: "g1".into(),
                ip: "ip".into()
            }]]
        );
        // A place the served connection does not need: given back.
        let mut alice = held("a1", "alice", true, &[]);
        alice.1.ip_hold = Some("other".into());
        assert_eq!(
            plan(
                &[served("a1", "alice", &[])],
                &BTreeMap::from([alice]),
                &HashSet::new(),
                apart
            ),
            vec![vec![Fix::ReleaseIp {
                conn: "a1".into(),
                ip: "other".into()
            }]]
        );
    }
}
