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

    /// Queues a frame (see [`Outlet::send`]).
    pub fn send(&self, frame: Bytes, metrics: &Metrics) -> bool {
        self.outlet.send(frame, metrics)
    }

    /// Requests a close (see [`Outlet::close`]).
    pub fn close(&self, code: CloseCode, reason: &str) -> bool {
        self.outlet.close(code, reason)
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
            Err(i) => self.0.insert(i, (room, presence)),
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
    use super::RoomFlags;

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
