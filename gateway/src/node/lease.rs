//! The node lease: taken and renewed in the module every third of
//! `node.lease_ms`, naming this process's incarnation (so a restart under
//! the same node id ends the dead process's connections in the module).
//! When the module answers that the lease is new although this node was
//! serving (Redis lost its data, loaded a file, or the lease ran out
//! during an outage), the node registers every live connection and room
//! again — pipelined, while the lease keeps being renewed with
//! `REGISTERING` — and reports ready once that is done.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::command::{ConnOpen, Join, NodeLease};
use futures_util::StreamExt;

use super::Node;
use crate::store::StoreResult;

/// Connections registered again at once (each: its open, then its joins
/// together); many commands share the pipelined Redis connection.
const REREGISTER_CONCURRENCY: usize = 128;

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
/// node was serving, the re-registration starts in the background (with
/// `repair`, the channel task then fetches what the rooms missed); the
/// leases sent meanwhile say `REGISTERING`, so the module's after-load
/// reconciliation waits for it, and the node reports ready again once it
/// is done and a lease was renewed after it.
pub(crate) async fn renew(node: &Arc<Node>, repair: bool) -> StoreResult<()> {
    let _one_at_a_time = node.lease_lock.lock().await;
    let registering = node.registering();
    let lease = NodeLease::new(&node.id, node.lease_ms)
        .incarnation(&node.incarnation)
        .registering(registering);
    let renewed = node.store.lease(&lease, &node.shards()).await?;
    let was_serving = node.served.swap(true, Ordering::Relaxed);
    if !renewed && was_serving {
        tracing::warn!(node = %node.id, "lease was new; registering connections again");
        node.lease_held.store(false, Ordering::Relaxed);
        node.metrics.node_lease_held.set(0);
        start_reregistration(node.clone(), repair);
        return Ok(());
    }
    if !registering && !node.registering() {
        node.lease_held.store(true, Ordering::Relaxed);
        node.metrics.node_lease_held.set(1);
    }
    Ok(())
}

/// Starts registering every live connection again, unless that runs
/// already (then it runs once more when done: what it registered before
/// the newer loss was dropped again).
fn start_reregistration(node: Arc<Node>, repair: bool) {
    node.reregister_again.store(true, Ordering::Relaxed);
    if node.registering.swap(true, Ordering::Relaxed) {
        return;
    }
    // While unregistered the node was sent nothing: the channel stops
    // delivering now and repairs from history once the rooms are joined
    // again. Taken before the task starts, so that a subscription starting
    // right after this call waits for it too.
    let rejoin = node.begin_rejoin(repair);
    tokio::spawn(async move {
        while node.reregister_again.swap(false, Ordering::Relaxed) {
            reregister(&node).await;
        }
        drop(rejoin);
        node.registering.store(false, Ordering::Relaxed);
        // A lease without REGISTERING now: the module drops what was not
        // registered again, and the node reports ready.
        node.lease_now.notify_one();
        // Registrations that failed are the reconciliation's to fix.
        node.reconcile_now.notify_one();
    });
}

/// Registers every live connection and its rooms again (no limits: these
/// connections were admitted already), many at once.
async fn reregister(node: &Node) {
    let started = Instant::now();
    let conns = node.hub.connections();
    let count = conns.len();
    let failed: usize = futures_util::stream::iter(conns)
        .map(|conn| async move {
            let _busy = node.busy.hold(&conn.id);
            let open = ConnOpen::new(&conn.user, &conn.id, &node.id, &conn.ip);
            if let Err(err) = node.store.open(&open).await {
                tracing::debug!(conn = %conn.id, error = %err, "re-registration failed");
                return 1;
            }
            let joins = conn.rooms_snapshot().into_iter().map(|(room, presence)| {
                let conn = &conn;
                async move {
                    let join = Join {
                        presence,
                        ..Join::new(&room, &conn.user, &conn.id, &node.id)
                    };
                    node.store.join(&join).await.is_err()
                }
            });
            futures_util::future::join_all(joins)
                .await
                .into_iter()
                .filter(|failed| *failed)
                .count()
        })
        .buffer_unordered(REREGISTER_CONCURRENCY)
        .collect::<Vec<usize>>()
        .await
        .into_iter()
        .sum();
    node.metrics
        .reregistration_seconds
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        node = %node.id,
        connections = count,
        failed,
        ms = started.elapsed().as_millis() as u64,
        "connections registered again"
    );
}
