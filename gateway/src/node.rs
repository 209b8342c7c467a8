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
//! drops or its bounded inbox overflows ([`crate::inbox`]). Messages
//! published meanwhile were not received: after every re-subscription,
//! before reading the channel again, the node fetches each
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
use redis::{AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, Value};

use crate::app::App;
use crate::hub::Position;
use crate::inbox::{self, Inbox};
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
                tracing::info!(node = %app.node, channel, "subscribed");
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
    /// The next envelope; `None` when the link dropped or its inbox
    /// overflowed.
    fn next(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
    /// True when the link answered a `PING`.
    fn ping(&mut self) -> impl Future<Output = bool> + Send;
    /// True when the link ended because the hub fell behind
    /// ([`crate::inbox`]).
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
                None => {
                    if link.overflowed() {
                        tracing::warn!(
                            node = %app.node,
                            budget_bytes = inbox::BUDGET_BYTES,
                            "the hub fell behind the node channel: inbox overflowed; subscribing again"
                        );
                        app.metrics.inbox_overflows.inc();
                    }
                    break Served::Ended;
                }
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
