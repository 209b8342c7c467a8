//! The node's channel: what the module publishes for this node's
//! connections, received and handed to the hub.
//!
//! One Pub/Sub connection subscribed to `broker:node:<id>` (on a cluster,
//! one sharded channel per master: [`super::shards`]), pinged every third
//! of `node.lease_ms` (a link that stalls without closing is noticed too)
//! and re-established with backoff whenever it drops or its bounded inbox
//! overflows ([`super::inbox`]). Messages published meanwhile were not
//! received: after every re-subscription, before reading the channel again,
//! the node repairs the gaps from history ([`super::repair`]).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use broker::names;
use bytes::Bytes;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, Value};

use super::inbox::{self, Inbox};
use super::repair::repair;
use super::Node;

/// How long the node channel may take to answer a `PING` (at most; a third
/// of the lease when that is shorter).
const CHANNEL_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Receives the node's channel until shutdown, reconnecting as needed. On
/// a cluster the node reads one sharded channel per master instead
/// ([`super::shards`]).
pub async fn receive(node: Arc<Node>, urls: Vec<String>) {
    if node.store.is_cluster() {
        return super::shards::receive(node, urls).await;
    }
    let channel = names::node_channel(&node.id);
    let mut shutdown = node.shutdown.clone();
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    let mut seeds = urls.iter().cycle();
    loop {
        if node.shutting_down() {
            return;
        }
        let Some(url) = seeds.next() else { return };
        let attempt = async {
            // RESP3, so that messages come as pushes into the node's
            // bounded inbox.
            let info = url.as_str().into_connection_info()?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(settings))?;
            let (sender, inbox) = inbox::inbox(inbox::BUDGET_BYTES);
            let config = AsyncConnectionConfig::new()
                .set_push_sender(sender)
                .set_response_timeout(Some(CHANNEL_PING_TIMEOUT));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            conn.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ClassicLink { conn, inbox })
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(mut link)) => {
                backoff = Duration::from_millis(100);
                tracing::info!(node = %node.id, channel, "subscribed");
                if let Served::Shutdown = serve(&node, &mut link, first).await {
                    return;
                }
                first = false;
                tracing::warn!(node = %node.id, "node channel subscription ended; subscribing again");
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "subscribe failed"),
            Err(_) => tracing::debug!("subscribe timed out"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A live subscription to the node's channel (one Redis) or channels (a
/// cluster), as [`serve`] reads it.
pub(crate) trait Link {
    /// The next envelope; `None` when the link dropped or its inbox
    /// overflowed.
    fn next(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
    /// True when the link answered a `PING`.
    fn ping(&mut self) -> impl Future<Output = bool> + Send;
    /// True when the link ended because the hub fell behind
    /// ([`super::inbox`]).
    fn overflowed(&self) -> bool;
}

/// The classic subscription to `broker:node:<id>` on one Redis (RESP3: the
/// messages arrive as pushes in `inbox`).
struct ClassicLink {
    conn: redis::aio::MultiplexedConnection,
    inbox: Inbox,
}

impl Link for ClassicLink {
    async fn next(&mut self) -> Option<Bytes> {
        self.inbox.next_message().await
    }

    async fn ping(&mut self) -> bool {
        redis::cmd("PING")
            .query_async::<Value>(&mut self.conn)
            .await
            .is_ok()
    }

    fn overflowed(&self) -> bool {
        self.inbox.overflowed()
    }
}

/// Why [`serve`] returned.
pub(crate) enum Served {
    /// The link dropped or stalled.
    Ended,
    /// The node is shutting down.
    Shutdown,
}

/// Repairs the rooms' gaps once no rejoin runs ([`Node::begin_rejoin`]),
/// waiting at most one lease (then the repair runs again after the last
/// rejoin).
async fn repair_when_rejoined(node: &Node) {
    node.wait_rejoined(Duration::from_millis(node.lease_ms))
        .await;
    repair(node).await;
}

/// Delivers what `link` receives until it drops, misses a `PING` (sent
/// every third of the lease), or the node shuts down. Unless this is the
/// `first` subscription, the rooms' gaps are repaired first, and again
/// whenever [`Node::repair_gaps`] asks, while what arrives meanwhile waits
/// in the link, unread.
pub(crate) async fn serve(node: &Node, link: &mut impl Link, first: bool) -> Served {
    let ping_every = Duration::from_millis((node.lease_ms / 3).max(100));
    let ping_timeout = ping_every.min(CHANNEL_PING_TIMEOUT);
    let mut shutdown = node.shutdown.clone();
    if !first {
        repair_when_rejoined(node).await;
    }
    node.subscribed.store(true, Ordering::Relaxed);
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let served = loop {
        tokio::select! {
            envelope = link.next() => match envelope {
                Some(envelope) => node.hub.dispatch(envelope),
                None => {
                    if link.overflowed() {
                        tracing::warn!(
                            node = %node.id,
                            budget_bytes = inbox::BUDGET_BYTES,
                            "the hub fell behind the node channel: inbox overflowed; subscribing again"
                        );
                        node.metrics.inbox_overflows.inc();
                    }
                    break Served::Ended;
                }
            },
            _ = node.repair_gaps.notified() => {
                // What arrives meanwhile waits in the link, unread.
                repair_when_rejoined(node).await;
            }
            _ = ping.tick() => {
                if !tokio::time::timeout(ping_timeout, link.ping()).await.unwrap_or(false) {
                    tracing::warn!(node = %node.id, "node channel did not answer PING");
                    break Served::Ended;
                }
            }
            _ = shutdown.changed() => break Served::Shutdown,
        }
    };
    node.subscribed.store(false, Ordering::Relaxed);
    served
}
