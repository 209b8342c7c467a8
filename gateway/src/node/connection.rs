//! One live connection as the node sees it ([`ConnShared`]): who it is,
//! its rooms, its outlet and its token's expiry; shared by its session, the
//! hub's fan-out, the keep-alive and the re-registration after a lost lease.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use broker::protocol::CloseCode;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::ws::Outlet;

/// Most `rpc` requests of one connection waiting for their answer; one
/// more is answered `rate_limited`.
pub const MAX_PENDING_RPCS: usize = 100;

/// An `rpc` waiting for the backend's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRpc {
    /// The request id.
    pub id: i64,
    /// When it was sent, [`crate::clock::mono_ms`].
    pub started_ms: u64,
    /// When it times out, [`crate::clock::mono_ms`].
    pub deadline_ms: u64,
}

/// Why an `rpc` could not be made pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcRefused {
    /// [`MAX_PENDING_RPCS`] are pending; one ends in `retry_ms` at the latest.
    Full {
        /// Until the earliest pending deadline.
        retry_ms: u64,
    },
    /// An `rpc` with the same id is pending.
    Duplicate,
}

/// What every part of the gateway may do with one live connection.
#[derive(Debug)]
pub struct ConnShared {
    /// Connection id (unique across nodes).
    pub id: Arc<str>,
    /// Authenticated user.
    pub user: Arc<str>,
    /// Client address.
    pub ip: String,
    /// Rooms joined, with whether presence events are on (for re-registering
    /// after a lost lease).
    pub rooms: Mutex<RoomFlags>,
    /// Its send queue and close request.
    pub outlet: Outlet,
    /// When its token expires, ms since the Unix epoch (a `refresh` moves it).
    pub exp_ms: AtomicU64,
    /// Whether `expiring` was sent for the current token.
    pub expiring_sent: AtomicBool,
    /// Memberships the backend decided (`BROKER.USER.JOIN` / `USER.LEAVE`),
    /// waiting for the session to carry them out; at most [`MAX_ORDERS`].
    orders: Mutex<Vec<Order>>,
    /// Wakes the session when an order arrives.
    order_ready: Notify,
    /// `rpc` requests waiting for their answer (at most
    /// [`MAX_PENDING_RPCS`]; empty, it holds no memory).
    rpcs: Mutex<Vec<PendingRpc>>,
}

/// Backend-decided memberships queued for one connection at most; more
/// are dropped (and logged): a backend that sends more joins at once than
/// a session can carry out is out of step with it.
pub const MAX_ORDERS: usize = 64;

/// A membership change the backend decided for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Join the room (`BROKER.USER.JOIN`).
    Join(String),
    /// Leave the room (`BROKER.USER.LEAVE`).
    Leave(String),
}

impl ConnShared {
    /// A registered connection.
    pub fn new(
        id: Arc<str>,
        user: Arc<str>,
        ip: String,
        outlet: Outlet,
        exp_s: u64,
    ) -> Arc<ConnShared> {
        Arc::new(ConnShared {
            id,
            user,
            ip,
            rooms: Mutex::new(RoomFlags::default()),
            outlet,
            exp_ms: AtomicU64::new(exp_s.saturating_mul(1000)),
            expiring_sent: AtomicBool::new(false),
            orders: Mutex::new(Vec::new()),
            order_ready: Notify::new(),
            rpcs: Mutex::new(Vec::new()),
        })
    }

    /// Queues a membership change for the session; false when the queue is
    /// full and the order was dropped.
    pub fn order(&self, order: Order) -> bool {
        let queued = self.orders.lock().is_ok_and(|mut orders| {
            let room = orders.len() < MAX_ORDERS;
            if room {
                orders.push(order);
            }
            room
        });
        if queued {
            self.order_ready.notify_one();
        }
        queued
    }

    /// Waits until an order is queued, then takes every queued one.
    pub async fn next_orders(&self) -> Vec<Order> {
        loop {
            let taken = self
                .orders
                .lock()
                .map(|mut orders| std::mem::take(&mut *orders))
                .unwrap_or_default();
            if !taken.is_empty() {
                return taken;
            }
            self.order_ready.notified().await;
        }
    }

    /// Makes `rpc` pending, unless [`MAX_PENDING_RPCS`] are or one with
    /// its id is; `now_ms` is [`crate::clock::mono_ms`].
    pub fn begin_rpc(&self, rpc: PendingRpc, now_ms: u64) -> Result<(), RpcRefused> {
        let mut rpcs = self
            .rpcs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if rpcs.iter().any(|p| p.id == rpc.id) {
            return Err(RpcRefused::Duplicate);
        }
        if rpcs.len() >= MAX_PENDING_RPCS {
            let first = rpcs.iter().map(|p| p.deadline_ms).min().unwrap_or(now_ms);
            return Err(RpcRefused::Full {
                retry_ms: first.saturating_sub(now_ms).max(1),
            });
        }
        rpcs.push(rpc);
        Ok(())
    }

    /// Ends the pending `rpc` `id` (answered, timed out or failed): what it
    /// was, or `None` when it is not pending (answered already, timed out,
    /// or never sent).
    pub fn end_rpc(&self, id: i64) -> Option<PendingRpc> {
        let mut rpcs = self
            .rpcs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = rpcs.iter().position(|p| p.id == id)?;
        let rpc = rpcs.swap_remove(at);
        if rpcs.is_empty() {
            *rpcs = Vec::new();
        }
        Some(rpc)
    }

    /// Queues a frame (see [`Outlet::send`]).
    pub fn send(&self, frame: Bytes, metrics: &Metrics) -> bool {
        self.outlet.send(frame, metrics)
    }

    /// Requests a close (see [`Outlet::close`]).
    pub fn close(&self, code: CloseCode, reason: &str) -> bool {
        self.outlet.close(code, reason)
    }

    /// Whether the connection is in `room` (as far as this node knows).
    pub fn is_member(&self, room: &str) -> bool {
        self.rooms.lock().is_ok_and(|r| r.contains_key(room))
    }

    /// Rooms joined, with their presence flags.
    pub fn rooms_snapshot(&self) -> Vec<(String, bool)> {
        self.rooms
            .lock()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

/// A connection's rooms and their presence flags, sorted by name: a small
/// vector rather than a `BTreeMap`, whose first node alone costs about 300
/// bytes — and most connections are in one or two rooms.
#[derive(Debug, Default)]
pub struct RoomFlags(Vec<(String, bool)>);

impl RoomFlags {
    fn find(&self, room: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(r, _)| r.as_str().cmp(room))
    }

    /// Whether the connection is in `room`.
    pub fn contains_key(&self, room: &str) -> bool {
        self.find(room).is_ok()
    }

    /// Adds `room` (or updates its flag).
    pub fn insert(&mut self, room: String, presence: bool) {
        match self.find(&room) {
            Ok(i) => self.0[i].1 = presence,
            Err(i) => {
                // Exactly the rooms it is in: most connections are in one
                // or two, and a doubling vector would hold four.
                self.0.reserve_exact(1);
                self.0.insert(i, (room, presence))
            }
        }
    }

    /// Removes `room`; its flag if it was there.
    pub fn remove(&mut self, room: &str) -> Option<bool> {
        self.find(room).ok().map(|i| self.0.remove(i).1)
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when in no room.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rooms and flags, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &bool)> {
        self.0.iter().map(|(r, p)| (r, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::outbox::QueueLimits;

    #[test]
    fn pending_rpcs_are_bounded_and_unique() {
        let (outlet, _queue) = Outlet::new(QueueLimits {
            frames: 4,
            bytes: 1024,
        });
        let conn = ConnShared::new("n.i.1".into(), "u".into(), "ip".into(), outlet, 0);
        let rpc = |id: i64, deadline_ms: u64| PendingRpc {
            id,
            started_ms: 0,
            deadline_ms,
        };
        for id in 0..MAX_PENDING_RPCS as i64 {
            assert_eq!(conn.begin_rpc(rpc(id, 5_000 + id as u64), 1_000), Ok(()));
        }
        assert_eq!(
            conn.begin_rpc(rpc(-1, 9_000), 1_000),
            Err(RpcRefused::Full { retry_ms: 4_000 })
        );
        assert_eq!(conn.end_rpc(7), Some(rpc(7, 5_007)));
        assert_eq!(conn.end_rpc(7), None);
        assert_eq!(
            conn.begin_rpc(rpc(8, 9_000), 1_000),
            Err(RpcRefused::Duplicate)
        );
        assert_eq!(conn.begin_rpc(rpc(-1, 9_000), 1_000), Ok(()));
    }

    #[test]
    fn room_flags_stay_sorted_and_unique() {
        let mut r = RoomFlags::default();
        r.insert("chat:b".into(), true);
        r.insert("chat:a".into(), false);
        r.insert("chat:b".into(), false);
        assert_eq!(r.len(), 2);
        assert!(r.contains_key("chat:a") && !r.contains_key("chat:c"));
        let all: Vec<(String, bool)> = r.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(
            all,
            vec![("chat:a".into(), false), ("chat:b".into(), false)]
        );
        assert_eq!(r.remove("chat:a"), Some(false));
        assert_eq!(r.remove("chat:a"), None);
        assert!(!r.is_empty());
    }
}
