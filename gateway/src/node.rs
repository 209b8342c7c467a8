//! The node's two background duties: holding its lease in the module, and
//! receiving what the module publishes on the node's channel.
//!
//! Lease: renewed every third of `node.lease_ms`. When the module answers
//! that the lease is new although this node was serving (Redis lost its
//! data, or the lease ran out during an outage), the node registers every
//! live connection and room again before it reports ready.
//!
//! Channel: one Pub/Sub connection subscribed to `broker:node:<id>`,
//! re-established with backoff whenever it drops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::names;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::app::App;

/// Keeps the lease until shutdown.
pub async fn hold_lease(app: Arc<App>) {
    let lease_ms = app.config.node.lease_ms;
    let every = Duration::from_millis((lease_ms / 3).max(100));
    let mut shutdown = app.shutdown.clone();
    let mut last_ok: Option<Instant> = None;
    let mut served = false;
    loop {
        if app.shutting_down() {
            return;
        }
        match app.store.lease(&app.node, lease_ms).await {
            Ok(renewed) => {
                if !renewed && served {
                    tracing::warn!(node = %app.node, "lease was lost; registering connections again");
                    app.lease_held.store(false, Ordering::Relaxed);
                    reregister(&app).await;
                }
                served = true;
                last_ok = Some(Instant::now());
                app.lease_held.store(true, Ordering::Relaxed);
                app.metrics.node_lease_held.set(1);
            }
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

/// Receives the node's channel until shutdown, reconnecting as needed.
pub async fn receive(app: Arc<App>, url: String) {
    let channel = names::node_channel(&app.node);
    let mut shutdown = app.shutdown.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        if app.shutting_down() {
            return;
        }
        let attempt = async {
            let client = redis::Client::open(url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(mut pubsub)) => {
                backoff = Duration::from_millis(100);
                app.subscribed.store(true, Ordering::Relaxed);
                tracing::info!(node = %app.node, channel, "subscribed");
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        msg = messages.next() => match msg {
                            Some(msg) => app.hub.dispatch(Bytes::copy_from_slice(msg.get_payload_bytes())),
                            None => break,
                        },
                        _ = shutdown.changed() => return,
                    }
                }
                app.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!(node = %app.node, "node channel subscription lost; reconnecting");
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
