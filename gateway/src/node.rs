//! The node's two background duties: holding its lease in the module, and
//! receiving what the module publishes on the node's channel.
//!
//! Lease: renewed every third of `node.lease_ms`. When the module answers
//! that the lease is new although this node was serving (Redis lost its
//! data, or the lease ran out during an outage), the node registers every
//! live connection and room again before it reports ready.
//!
//! Channel: one Pub/Sub connection subscribed to `broker:node:<id>` (on a
//! cluster, one sharded channel per master: [`crate::shards`]),
//! pinged every third of `node.lease_ms` (a link that stalls without
//! closing is noticed too) and re-established with backoff whenever it
//! drops. Messages published meanwhile were not received: after every
//! re-subscription, before reading the channel again, the node fetches each
//! of its rooms' history after the last sequence number it delivered and
//! delivers what it missed, in order; the hub drops the duplicates that
//! then also arrive live.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::names;
use broker::protocol::{self, ServerFrame};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::app::App;
use crate::hub::Position;
use crate::store::StoreResult;

/// How long the node channel may take to answer a `PING` (at most; a third
/// of the lease when that is shorter).
const CHANNEL_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// History requests in flight during a gap repair.
const REPAIR_CONCURRENCY: usize = 32;
/// Rounds of a gap repair, 200 ms apart, before a room's gap is given up.
const REPAIR_ATTEMPTS: u32 = 10;

/// Keeps the lease until shutdown.
pub async fn hold_lease(app: Arc<App>) {
    let lease_ms = app.config.node.lease_ms;
    let every = Duration::from_millis((lease_ms / 3).max(100));
    let mut shutdown = app.shutdown.clone();
    let mut last_ok: Option<Instant> = None;
    loop {
        if app.shutting_down() {
            return;
        }
        match renew(&app, true).await {
            Ok(()) => last_ok = Some(Instant::now()),
            Err(err) => {
                let lost = last_ok.is_none_or(|t| t.elapsed() > Duration::from_millis(lease_ms));
                if lost && app.lease_held.swap(false, Ordering::Relaxed) {
                    tracing::warn!(node = %app.node, error = %err, "node lease lost");
                }
                if lost {
                    app.metrics.node_lease_held.set(0);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = app.lease_now.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Takes or renews the lease once (with the node's sharded channels on a
/// cluster). When the module answers that the lease is new although this
/// node was serving — Redis lost its data, loaded an older file, or the
/// lease ran out during an outage — every live connection and room is
/// registered again before the next lease call (the module drops, at that
/// call, what was not), and with `repair` the channel task is asked to
/// fetch what the rooms missed meanwhile. Lease calls are serialized, so
/// no renewal overtakes a re-registration.
pub(crate) async fn renew(app: &App, repair: bool) -> StoreResult<()> {
    let _one_at_a_time = app.lease_lock.lock().await;
    let renewed = app
        .store
        .lease(&app.node, app.config.node.lease_ms, &app.shards())
        .await?;
    if !renewed && app.served.load(Ordering::Relaxed) {
        tracing::warn!(node = %app.node, "lease was new; registering connections again");
        app.lease_held.store(false, Ordering::Relaxed);
        reregister(app).await;
        if repair {
            // While unregistered the node was sent nothing: fetch what its
            // rooms missed, with the channel paused.
            app.resubscribe.notify_one();
        }
    }
    app.served.store(true, Ordering::Relaxed);
    app.lease_held.store(true, Ordering::Relaxed);
    app.metrics.node_lease_held.set(1);
    Ok(())
}

/// Registers every live connection and its rooms again (no limits: these
/// connections were admitted already).
async fn reregister(app: &App) {
    for conn in app.hub.connections() {
        if let Err(err) = app
            .store
            .open(&conn.user, &conn.id, &app.node, &conn.ip, None)
            .await
        {
            tracing::warn!(conn = %conn.id, error = %err, "re-registration failed");
            continue;
        }
        for (room, presence) in conn.rooms_snapshot() {
            if let Err(err) = app
                .store
                .join(&room, &conn.user, &conn.id, &app.node, presence, None, None)
                .await
            {
                tracing::warn!(conn = %conn.id, room, error = %err, "re-join failed");
            }
        }
    }
}

/// Receives the node's channel until shutdown, reconnecting as needed. On
/// a cluster the node reads one sharded channel per master instead
/// ([`crate::shards`]).
pub async fn receive(app: Arc<App>, urls: Vec<String>) {
    if app.store.is_cluster() {
        return crate::shards::receive(app, urls).await;
    }
    let channel = names::node_channel(&app.node);
    let mut shutdown = app.shutdown.clone();
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    let mut seeds = urls.iter().cycle();
    loop {
        if app.shutting_down() {
            return;
        }
        let Some(url) = seeds.next() else { return };
        let attempt = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                let (sink, messages) = pubsub.split();
                tracing::info!(node = %app.node, channel, "subscribed");
                let mut link = ClassicLink { sink, messages };
                if let Served::Shutdown = serve(&app, &mut link, first).await {
                    return;
                }
                first = false;
                tracing::warn!(node = %app.node, "node channel subscription ended; subscribing again");
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
    /// The next envelope; `None` when the link dropped.
    fn next(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
    /// True when the link answered a `PING`.
    fn ping(&mut self) -> impl Future<Output = bool> + Send;
}

/// The classic subscription to `broker:node:<id>` on one Redis.
struct ClassicLink {
    sink: redis::aio::PubSubSink,
    messages: redis::aio::PubSubStream,
}

impl Link for ClassicLink {
    async fn next(&mut self) -> Option<Bytes> {
        let msg = self.messages.next().await?;
        Some(Bytes::copy_from_slice(msg.get_payload_bytes()))
    }

    async fn ping(&mut self) -> bool {
        self.sink.ping::<redis::Value>().await.is_ok()
    }
}

/// Why [`serve`] returned.
pub(crate) enum Served {
    /// The link dropped, stalled, or a re-subscription was asked for.
    Ended,
    /// The node is shutting down.
    Shutdown,
}

/// Delivers what `link` receives until it drops, misses a `PING` (sent
/// every third of the lease), a re-subscription is asked for, or the node
/// shuts down. Unless this is the `first` subscription, the rooms' gaps are
/// repaired first, while what arrives meanwhile waits in the link, unread.
pub(crate) async fn serve(app: &App, link: &mut impl Link, first: bool) -> Served {
    let ping_every = Duration::from_millis((app.config.node.lease_ms / 3).max(100));
    let ping_timeout = ping_every.min(CHANNEL_PING_TIMEOUT);
    let mut shutdown = app.shutdown.clone();
    if !first {
        repair(app).await;
    }
    app.subscribed.store(true, Ordering::Relaxed);
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let served = loop {
        tokio::select! {
            envelope = link.next() => match envelope {
                Some(envelope) => app.hub.dispatch(envelope),
                None => break Served::Ended,
            },
            _ = app.resubscribe.notified() => {
                tracing::info!(node = %app.node, "subscribing again to repair gaps");
                break Served::Ended;
            }
            _ = ping.tick() => {
                if !tokio::time::timeout(ping_timeout, link.ping()).await.unwrap_or(false) {
                    tracing::warn!(node = %app.node, "node channel did not answer PING");
                    break Served::Ended;
                }
            }
            _ = shutdown.changed() => break Served::Shutdown,
        }
    };
    app.subscribed.store(false, Ordering::Relaxed);
    served
}

/// Delivers what every local room missed while the channel was down: its
/// history after the last sequence number this node delivered.
pub(crate) async fn repair(app: &App) {
    let started = Instant::now();
    let mut todo = app.hub.positions();
    let rooms = todo.len();
    let (mut repaired, mut unrepaired) = (0u64, 0u64);
    // The command connection may still be reconnecting: retry the rooms
    // whose history failed, for a bounded time (the channel waits).
    for attempt in 1..=REPAIR_ATTEMPTS {
        let results: Vec<(Position, _)> = futures_util::stream::iter(std::mem::take(&mut todo))
            .map(|p| async move {
                let missed = fetch_missed(app, &p).await;
                (p, missed)
            })
            .buffer_unordered(REPAIR_CONCURRENCY)
            .collect()
            .await;
        for (p, missed) in results {
            match missed {
                Ok(m) => {
                    let fetched = m.messages.len() as u64;
                    repaired += app.hub.repair(&p.room, &m.epoch, m.messages);
                    unrepaired += m.count.saturating_sub(fetched);
                }
                Err(err) => {
                    if attempt == REPAIR_ATTEMPTS {
                        tracing::warn!(room = %p.room, error = %err, "gap repair: history failed");
                    }
                    todo.push(p);
                }
            }
        }
        if todo.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed = todo.len();
    app.metrics.gap_repaired.inc_by(repaired);
    app.metrics.gap_unrepaired.inc_by(unrepaired);
    tracing::info!(
        node = %app.node,
        rooms,
        repaired,
        unrepaired,
        failed,
        ms = started.elapsed().as_millis() as u64,
        "gap repair after the node channel came back"
    );
}

/// What a room missed after a [`Position`]: how many messages, and those
/// its history still holds, oldest first.
struct Missed {
    epoch: String,
    count: u64,
    messages: Vec<(u64, Bytes)>,
}

/// The history of `p.room` after `p.seq`; when the room was reset since (a
/// new epoch: Redis lost its data, or the room emptied and began again),
/// everything of the new epoch.
async fn fetch_missed(app: &App, p: &Position) -> StoreResult<Missed> {
    let mut history = app.store.history(&p.room, Some(p.seq), None).await?;
    let mut after = p.seq;
    if !p.epoch.is_empty() && p.epoch != history.epoch {
        history = app.store.history(&p.room, None, None).await?;
        after = 0;
    }
    let messages = history
        .messages
        .into_iter()
        .filter_map(|frame| match protocol::decode_server_frame(&frame) {
            Ok(ServerFrame::Msg { seq, .. }) => Some((seq, Bytes::from(frame))),
            _ => None,
        })
        .collect();
    Ok(Missed {
        epoch: history.epoch,
        count: history.seq.saturating_sub(after),
        messages,
    })
}
