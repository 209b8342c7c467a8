//! Webhooks: the module's lifecycle stream POSTed to `webhooks.url`
//! (`docs/BACKENDS.md`, "Webhooks"; contract §7).
//!
//! Every node with `webhooks.url` set reads the events stream in one
//! consumer group, [`GROUP`], as consumer `<node id>`: on one Redis the
//! stream `broker:events`, on a cluster one stream per master
//! ([`broker::names::events_stream_in`], derived again whenever the store's
//! topology changes), one reader each ([`reader`]). The group is created
//! at `0` with `MKSTREAM`, so every entry the stream still holds when the
//! group is first made is delivered: the events of this node's own first
//! clients, which may come before the group exists, and a new master's
//! stream after a resharding, are not skipped. (Turning webhooks on for the
//! first time therefore delivers the backlog the stream keeps, at most the
//! module's `EVENTS` length.)
//!
//! A reader takes up to `batch_max` entries, acknowledges at once those
//! whose type `webhooks.events` does not name, and POSTs the others as one
//! body ([`entry::body`]) signed with `webhooks.secret` ([`sign`]). Only a
//! 2xx answer acknowledges them (`XACK`); anything else is retried, the
//! same body, after [`backoff`], until it succeeds or the node stops.
//! Before each retry the node claims the batch again for itself, which
//! resets its idle time. Entries idle longer than the claim time
//! ([`claim_idle`]) in any consumer's pending list, a dead node's for
//! instance, are taken over with `XAUTOCLAIM`; a node restarted under the
//! same id reads its own pending entries first.
//!
//! One batch is in flight per stream and node, so memory stays bounded by
//! `batch_max` entries per stream. The loop has its own Redis connections
//! ([`link`]), as a blocking read holds one.

pub mod entry;
pub mod link;
pub mod post;
pub mod reader;
pub mod sign;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::names;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionInfo, IntoConnectionInfo};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::store::Master;
use link::Link;
use post::Target;
use reader::Reader;

/// The consumer group every node reads the events streams in.
pub const GROUP: &str = "broker-webhooks";
/// How long one `XREADGROUP` waits for new entries.
pub const BLOCK: Duration = Duration::from_secs(1);
/// The wait before the first retry of a batch.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two retries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long setting up a cluster round (connecting) may take.
const ROUND_SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the readers need from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where batches go.
    pub target: Target,
    /// `webhooks.secret`.
    pub secret: Vec<u8>,
    /// `webhooks.events`.
    pub events: Vec<String>,
    /// `webhooks.batch_max`.
    pub batch_max: usize,
    /// `webhooks.timeout_ms`.
    pub timeout: Duration,
    /// How long an entry stays pending untouched before another node
    /// claims it ([`claim_idle`], or `testing.webhook_claim_idle_ms`).
    pub claim_idle: Duration,
}

impl Settings {
    /// The settings when `webhooks.url` is set; `None` when webhooks are
    /// off (or the URL cannot be used, which validation refuses first).
    pub fn from_config(config: &Config) -> Option<Settings> {
        let w = &config.webhooks;
        let url = w.url.as_deref()?;
        let target = match Target::parse(url) {
            Ok(target) => target,
            Err(err) => {
                tracing::error!(error = %err, "webhooks.url cannot be used; webhooks are off");
                return None;
            }
        };
        let timeout = Duration::from_millis(w.timeout_ms);
        Some(Settings {
            target,
            secret: w.secret.clone().unwrap_or_default().into_bytes(),
            events: w.events.clone(),
            batch_max: w.batch_max,
            timeout,
            claim_idle: config
                .testing
                .webhook_claim_idle_ms
                .map_or_else(|| claim_idle(timeout), Duration::from_millis),
        })
    }
}

/// The claim time for a POST timeout: 2 × ([`BACKOFF_MAX`] + timeout).
/// A node retrying a batch claims it again before every attempt, so its
/// entries are never idle longer than one wait plus one attempt; twice
/// that leaves a live node's batch alone (66 s with the default 3 s).
pub fn claim_idle(timeout: Duration) -> Duration {
    (BACKOFF_MAX + timeout) * 2
}

/// The wait before retry `attempt + 1`: a random time between half and
/// all of `min(BACKOFF_FIRST × 2^attempt, BACKOFF_MAX)`, so that nodes
/// retrying together spread out.
pub fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let half = full / 2;
    let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::random::<u64>() % spread.saturating_add(1))
}

/// Waits `wait` unless `stop` turns true first; false when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// The age of the oldest entry each reader holds undelivered.
#[derive(Debug, Default)]
pub struct Lag {
    /// Stream → the stream-id time (ms) of the oldest entry of the batch
    /// in flight.
    held: Mutex<BTreeMap<String, u64>>,
}

impl Lag {
    /// `stream`'s reader holds a batch whose oldest entry is from `ms`.
    pub fn hold(&self, stream: &str, ms: u64, metrics: &Metrics) {
        self.lock().insert(stream.to_owned(), ms);
        self.publish(metrics);
    }

    /// `stream`'s reader holds nothing now.
    pub fn release(&self, stream: &str, metrics: &Metrics) {
        self.lock().remove(stream);
        self.publish(metrics);
    }

    /// Seconds since the oldest held entry at `now_ms`; 0 when none.
    pub fn seconds(&self, now_ms: u64) -> f64 {
        self.lock()
            .values()
            .min()
            .map_or(0.0, |&oldest| now_ms.saturating_sub(oldest) as f64 / 1000.0)
    }

    /// Sets `broker_webhook_lag_seconds`.
    pub fn publish(&self, metrics: &Metrics) {
        metrics
            .webhook_lag
            .set(self.seconds(crate::clock::now_ms()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the readers share.
pub struct Shared {
    /// The settings.
    pub settings: Settings,
    /// The node: its id (the consumer name), store, metrics, shutdown.
    pub node: Arc<Node>,
    /// The lag of every reader.
    pub lag: Lag,
}

/// Starts the webhook loop when `webhooks.url` is set; it ends when the
/// node shuts down. `urls` are `redis.url`.
pub fn start(config: &Config, node: Arc<Node>, urls: Vec<String>) -> Option<JoinHandle<()>> {
    let settings = Settings::from_config(config)?;
    tracing::info!(
        group = GROUP,
        events = ?settings.events,
        batch_max = settings.batch_max,
        claim_idle_ms = settings.claim_idle.as_millis() as u64,
        "webhooks on"
    );
    Some(tokio::spawn(run(settings, node, urls)))
}

/// Runs the readers until the node shuts down.
pub async fn run(settings: Settings, node: Arc<Node>, urls: Vec<String>) {
    let shared = Arc::new(Shared {
        settings,
        node: node.clone(),
        lag: Lag::default(),
    });
    let ticker = tokio::spawn(tick_lag(shared.clone()));
    if node.store.is_cluster() {
        cluster(&shared, &urls).await;
    } else if let Some(url) = urls.first() {
        single(&shared, url).await;
    }
    ticker.abort();
    node.metrics.webhook_lag.set(0.0);
}

/// Keeps `broker_webhook_lag_seconds` current while a batch waits.
async fn tick_lag(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        shared.lag.publish(&shared.node.metrics);
    }
}

/// One Redis: one reader of `broker:events`.
async fn single(shared: &Arc<Shared>, url: &str) {
    let client = match redis::Client::open(url) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "webhooks: redis.url cannot be used");
            return;
        }
    };
    let link = Link::Single {
        client: Box::new(client),
        conn: None,
        response_timeout: BLOCK + link::RESPONSE_MARGIN,
    };
    Reader::new(shared.clone(), names::EVENTS_STREAM.to_owned(), link)
        .run(shared.node.shutdown.clone())
        .await;
}

/// A cluster: a round of readers, one per master's stream, until the
/// store's topology changes or the node shuts down; then the next round.
async fn cluster(shared: &Arc<Shared>, urls: &[String]) {
    let node = &shared.node;
    let mut shutdown = node.shutdown.clone();
    loop {
        if node.shutting_down() {
            return;
        }
        // Taken before the topology is read: a change meanwhile ends the
        // round at once.
        let changes = node.store.topology_changes();
        let setup = tokio::time::timeout(ROUND_SETUP_TIMEOUT, connect(node, urls)).await;
        let (conn, masters) = match setup {
            Ok(Ok(round)) => round,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "webhooks: cluster round could not start");
                node.store.check_topology();
                pause(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                tracing::debug!("webhooks: connecting to the cluster timed out");
                pause(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let readers: Vec<JoinHandle<()>> = masters
            .iter()
            .filter_map(|master| {
                let stream = names::events_stream_in(|slot| master.serves(slot))?;
                let link = Link::Cluster {
                    conn: conn.clone(),
                    slot: names::key_slot(stream.as_bytes()),
                };
                let reader = Reader::new(shared.clone(), stream, link);
                Some(tokio::spawn(reader.run(stop_rx.clone())))
            })
            .collect();
        match changes {
            Some(mut changes) => tokio::select! {
                _ = changes.changed() => tracing::info!("webhooks: cluster topology changed; reading the new masters' streams"),
                _ = shutdown.changed() => {}
            },
            None => {
                let _ = shutdown.changed().await;
            }
        }
        let _ = stop_tx.send(true);
        for reader in readers {
            let _ = reader.await;
        }
    }
}

/// The store's current masters, and a cluster connection for the round
/// (seeded with the nodes that reported them) whose response timeout
/// covers a blocking read.
async fn connect(node: &Node, urls: &[String]) -> anyhow::Result<(ClusterConnection, Vec<Master>)> {
    let topology = node
        .store
        .topology()
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?
        .ok_or_else(|| anyhow::anyhow!("not a cluster"))?;
    anyhow::ensure!(!topology.map.masters().is_empty(), "no slot map yet");
    let seeds: Vec<ConnectionInfo> = if topology.seeds.is_empty() {
        urls.iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<redis::RedisResult<_>>()?
    } else {
        topology.seeds.clone()
    };
    let client = ClusterClient::builder(seeds)
        .connection_timeout(link::CONNECT_TIMEOUT)
        .response_timeout(BLOCK + link::RESPONSE_MARGIN)
        .build()?;
    let conn = client.get_async_connection().await?;
    Ok((conn, topology.map.masters().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for attempt in 0..40 {
            let full = (BACKOFF_FIRST * 2u32.saturating_pow(attempt.min(16))).min(BACKOFF_MAX);
            for _ in 0..20 {
                let wait = backoff(attempt);
                assert!(
                    wait >= full / 2 && wait <= full,
                    "attempt {attempt}: {wait:?}"
                );
            }
        }
        assert!(backoff(0) <= Duration::from_millis(500));
        assert!(backoff(100) >= Duration::from_secs(15));
    }

    #[test]
    fn claim_time_covers_a_wait_and_an_attempt_twice() {
        assert_eq!(claim_idle(Duration::from_secs(3)), Duration::from_secs(66));
        assert_eq!(
            claim_idle(Duration::from_secs(60)),
            Duration::from_secs(180)
        );
    }

    #[test]
    fn lag_is_the_oldest_held_entry() {
        let metrics = Metrics::new();
        let lag = Lag::default();
        assert_eq!(lag.seconds(10_000), 0.0);
        lag.hold("a", 4_000, &metrics);
        lag.hold("b", 7_000, &metrics);
        assert_eq!(lag.seconds(10_000), 6.0);
        lag.release("a", &metrics);
        assert_eq!(lag.seconds(10_000), 3.0);
        lag.release("b", &metrics);
        assert_eq!(lag.seconds(10_000), 0.0);
        assert_eq!(metrics.webhook_lag.get(), 0.0);
    }
}
