//! The node: what one gateway process holds for all its connections, below
//! any one session.
//!
//! - [`Node`] (here): the node's identity, its module client, hub, metrics
//!   and lease state, shared by the tasks below and by the sessions.
//! - [`lease`]: taking and renewing the node lease; re-registration.
//! - [`reconcile`]: what Redis holds for the node against what it serves.
//! - [`busy`]: connections with a module call in flight.
//! - [`channel`]: the node's Pub/Sub channel, received into the hub.
//! - [`shards`]: the channels on a Redis Cluster (one per master).
//! - [`inbox`]: the bounded queue between the Redis client and the hub.
//! - [`repair`]: filling the rooms' gaps from history after a link drop.
//! - [`hub`]: local rooms and the fan-out of what the channel delivers.
//! - [`connection`]: one live connection as the node sees it.
//! - [`keepalive`]: the one timer for pings, idle timeouts and expiries.

pub mod busy;
pub mod channel;
pub mod connection;
pub mod hub;
pub mod inbox;
pub mod keepalive;
pub mod lease;
mod members;
pub mod reconcile;
pub mod repair;
pub mod shards;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;
use broker::command::Refusal;

use crate::store::{ShardChannel, Store, StoreResult};
pub use busy::{Busy, BusyGuard};
pub use connection::ConnShared;
pub use hub::Hub;

/// The node's shared state.
pub struct Node {
    /// This node's id.
    pub id: String,
    /// This process's name in the node's leases: a restart under the same
    /// node id is another incarnation, whose first lease ends the old
    /// one's connections in the module.
    pub incarnation: String,
    /// The lease period (`node.lease_ms`).
    pub lease_ms: u64,
    /// The module.
    pub store: Store,
    /// Local connections and rooms.
    pub hub: Hub,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// True while the node holds its lease (for `/readyz`).
    pub lease_held: AtomicBool,
    /// True while the node's Pub/Sub subscription is live.
    pub subscribed: AtomicBool,
    /// True once the node held a lease (it may have live connections).
    pub served: AtomicBool,
    /// Serializes lease calls with the re-registration they may start.
    pub lease_lock: tokio::sync::Mutex<()>,
    /// Wakes the lease task early (e.g. after a `NOLEASE` refusal).
    pub lease_now: Notify,
    /// True while the node registers its connections again.
    pub registering: AtomicBool,
    /// Set when a loss of the lease asks for one more re-registration.
    pub reregister_again: AtomicBool,
    /// Re-registrations and reconciliations joining rooms again now (see
    /// [`Node::begin_rejoin`]).
    rejoining: AtomicUsize,
    /// Wakes whoever waits for the rejoins to end.
    rejoined: Notify,
    /// Set when gaps were repaired while rooms were still being joined
    /// again: another repair follows the last rejoin.
    repair_after_rejoin: AtomicBool,
    /// Connections with a module call in flight (see [`busy`]).
    pub busy: Arc<Busy>,
    /// Wakes the reconciliation early.
    pub reconcile_now: Notify,
    /// Asks the channel task to repair gaps: it stops delivering, waits
    /// until no rejoin runs, fetches what the rooms missed from history,
    /// and goes on with the live messages its link kept meanwhile.
    pub repair_gaps: Notify,
    /// Flips to true when the node shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// On a cluster, the node's sharded channel on each master (named in
    /// every lease); empty until the channel task has read the slot map.
    shards: Mutex<Vec<ShardChannel>>,
}

impl Node {
    /// A node that holds no lease yet; `send_queue` bounds what a joining
    /// member buffers in the hub.
    pub fn new(
        id: String,
        lease_ms: u64,
        store: Store,
        metrics: Arc<Metrics>,
        send_queue: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Node {
        Node {
            id,
            incarnation: new_incarnation(),
            lease_ms,
            store,
            hub: Hub::new(metrics.clone(), send_queue),
            metrics,
            lease_held: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            served: AtomicBool::new(false),
            lease_lock: tokio::sync::Mutex::new(()),
            lease_now: Notify::new(),
            registering: AtomicBool::new(false),
            reregister_again: AtomicBool::new(false),
            rejoining: AtomicUsize::new(0),
            rejoined: Notify::new(),
            repair_after_rejoin: AtomicBool::new(false),
            busy: Arc::new(Busy::default()),
            reconcile_now: Notify::new(),
            repair_gaps: Notify::new(),
            shutdown,
            shards: Mutex::new(Vec::new()),
        }
    }

    /// The node's sharded channels (empty when not on a cluster).
    pub fn shards(&self) -> Vec<ShardChannel> {
        self.shards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records the node's sharded channels after a slot map was read.
    pub fn set_shards(&self, shards: Vec<ShardChannel>) {
        *self
            .shards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = shards;
    }

    /// True once shutdown began.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// True while the node registers its connections again.
    pub fn registering(&self) -> bool {
        self.registering.load(Ordering::Relaxed)
    }

    /// Starts joining rooms again that Redis lost for this node (a
    /// re-registration, a reconciliation's joins), and asks the channel
    /// for a gap repair, which waits until the returned guard is dropped.
    ///
    /// Why: a room is sent nothing between losing the membership and
    /// joining again, and history holds what it missed only up to the join;
    /// were live messages after the join delivered first, the repair would
    /// start after them and skip the hole.
    /// `ask_repair` false: the caller's own subscription is about to
    /// start and repairs anyway (after waiting for this).
    pub fn begin_rejoin(self: &Arc<Self>, ask_repair: bool) -> RejoinGuard {
        self.rejoining.fetch_add(1, Ordering::AcqRel);
        if ask_repair {
            self.repair_gaps.notify_one();
        }
        RejoinGuard { node: self.clone() }
    }

    /// Waits (up to `limit`) until no rejoin runs. When one still runs, the
    /// repair that follows is repeated after the last rejoin.
    pub async fn wait_rejoined(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ended = self.rejoined.notified();
            if self.rejoining.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                self.repair_after_rejoin.store(true, Ordering::Release);
                return;
            }
        }
    }

    /// True while the node holds its lease (and is not re-registering).
    pub fn lease_held(&self) -> bool {
        self.lease_held.load(Ordering::Relaxed)
    }

    /// Runs `call`, and on a cluster tries it again for up to
    /// [`NEW_MASTER_WAIT`] while it is refused for want of this node's
    /// lease although the node holds it. That is a master that just took
    /// slots over (a reshard moving rooms or users to a master added to the
    /// cluster): the lease reaches it after the next slot-map check, which
    /// the refusal asks for now.
    pub async fn on_new_masters<T, F>(&self, mut call: impl FnMut() -> F) -> StoreResult<T>
    where
        F: std::future::Future<Output = StoreResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + NEW_MASTER_WAIT;
        let mut wait = Duration::from_millis(50);
        loop {
            let result = call().await;
            let no_lease = matches!(&result, Err(e) if e.refusal() == Some(Refusal::NoLease));
            if !no_lease
                || !self.store.is_cluster()
                || !self.lease_held()
                || tokio::time::Instant::now() + wait > deadline
            {
                return result;
            }
            self.store.check_topology();
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }
}

/// How long a command refused by a master that does not know the node yet
/// is tried again ([`Node::on_new_masters`]): the slot-map check it asks for
/// runs at most once a second, then the lease goes out.
const NEW_MASTER_WAIT: Duration = Duration::from_secs(4);

/// Held while rooms are joined again ([`Node::begin_rejoin`]).
pub struct RejoinGuard {
    node: Arc<Node>,
}

impl Drop for RejoinGuard {
    fn drop(&mut self) {
        let node = &self.node;
        if node.rejoining.fetch_sub(1, Ordering::AcqRel) == 1 {
            node.rejoined.notify_waiters();
            if node.repair_after_rejoin.swap(false, Ordering::AcqRel) {
                node.repair_gaps.notify_one();
            }
        }
    }
}

/// A fresh incarnation name: 10 random base-36 digits.
fn new_incarnation() -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..10)
        .map(|_| char::from(DIGITS[rand::random_range(0..36)]))
        .collect()
}
