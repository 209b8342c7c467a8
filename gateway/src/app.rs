//! What every part of a gateway node shares: configuration, the JWT
//! verifier, the module client, the local hub, metrics and the node's
//! identity and lease state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use crate::auth::Authenticator;
use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::shards::ShardChannel;
use crate::store::Store;

/// The node's shared state.
pub struct App {
    /// Configuration (immutable after start).
    pub config: Config,
    /// This node's id.
    pub node: String,
    /// JWT verification.
    pub auth: Authenticator,
    /// The module.
    pub store: Store,
    /// Local connections and rooms.
    pub hub: Hub,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Whose `X-Forwarded-For` names the client (`trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
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
    /// Asks the channel task to subscribe again and repair gaps (after the
    /// node's connections were registered again).
    pub resubscribe: Notify,
    /// Flips to true when the node shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// On a cluster, the node's sharded channel on each master (named in
    /// every lease); empty until the channel task has read the slot map.
    shards: Mutex<Vec<ShardChannel>>,
    conn_counter: AtomicU64,
}

impl App {
    /// Builds the shared state.
    pub fn new(
        config: Config,
        node: String,
        auth: Authenticator,
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> App {
        let pending_limit = config.limits.send_queue;
        // Checked by `Config::validate` already.
        let trusted_proxies = TrustedProxies::parse(&config.trusted_proxies).unwrap_or_default();
        App {
            trusted_proxies,
            config,
            node,
            auth,
            store,
            hub: Hub::new(metrics.clone(), pending_limit),
            metrics,
            lease_held: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            served: AtomicBool::new(false),
            lease_lock: tokio::sync::Mutex::new(()),
            lease_now: Notify::new(),
            resubscribe: Notify::new(),
            shutdown,
            shards: Mutex::new(Vec::new()),
            conn_counter: AtomicU64::new(0),
        }
    }

    /// A connection id unique across nodes: `<node>.<counter in base 36>`.
    pub fn next_conn_id(&self) -> Arc<str> {
        let n = self.conn_counter.fetch_add(1, Ordering::Relaxed) + 1;
        Arc::from(format!("{}.{}", self.node, base36(n)))
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
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
