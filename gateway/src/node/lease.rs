//! The node lease: taken and renewed in the module every third of
//! `node.lease_ms`. When the module answers that the lease is new although
//! this node was serving (Redis lost its data, or the lease ran out during
//! an outage), the node registers every live connection and room again
//! before it reports ready.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::command::{ConnOpen, Join, NodeLease};

use super::Node;
use crate::store::StoreResult;

/// Keeps the lease until shutdown.
pub async fn hold_lease(node: Arc<Node>) {
    let lease_ms = node.lease_ms;
    let every = Duration::from_millis((lease_ms / 3).max(100));
    let mut shutdown = node.shutdown.clone();
    let mut last_ok: Option<Instant> = None;
    loop {
        if node.shutting_down() {
            return;
        }
        match renew(&node, true).await {
            Ok(()) => last_ok = Some(Instant::now()),
            Err(err) => {
                let lost = last_ok.is_none_or(|t| t.elapsed() > Duration::from_millis(lease_ms));
                if lost && node.lease_held.swap(false, Ordering::Relaxed) {
                    tracing::warn!(node = %node.id, error = %err, "node lease lost");
                }
                if lost {
                    node.metrics.node_lease_held.set(0);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = node.lease_now.notified() => {}
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
pub(crate) async fn renew(node: &Node, repair: bool) -> StoreResult<()> {
    let _one_at_a_time = node.lease_lock.lock().await;
    let renewed = node
        .store
        .lease(&NodeLease::new(&node.id, node.lease_ms), &node.shards())
        .await?;
    if !renewed && node.served.load(Ordering::Relaxed) {
        tracing::warn!(node = %node.id, "lease was new; registering connections again");
        node.lease_held.store(false, Ordering::Relaxed);
        reregister(node).await;
        if repair {
            // While unregistered the node was sent nothing: fetch what its
            // rooms missed, with the channel paused.
            node.resubscribe.notify_one();
        }
    }
    node.served.store(true, Ordering::Relaxed);
    node.lease_held.store(true, Ordering::Relaxed);
    node.metrics.node_lease_held.set(1);
    Ok(())
}

/// Registers every live connection and its rooms again (no limits: these
/// connections were admitted already).
async fn reregister(node: &Node) {
    for conn in node.hub.connections() {
        if let Err(err) = node
            .store
            .open(&ConnOpen::new(&conn.user, &conn.id, &node.id, &conn.ip))
            .await
        {
            tracing::warn!(conn = %conn.id, error = %err, "re-registration failed");
            continue;
        }
        for (room, presence) in conn.rooms_snapshot() {
            let join = Join {
                presence,
                ..Join::new(&room, &conn.user, &conn.id, &node.id)
            };
            if let Err(err) = node.store.join(&join).await {
                tracing::warn!(conn = %conn.id, room, error = %err, "re-join failed");
            }
        }
    }
}
