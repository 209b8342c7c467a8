//! The node's channels on a Redis Cluster: one sharded Pub/Sub channel per
//! master, so that a room's messages stay on the room's shard.
//!
//! A classic `PUBLISH` in a cluster is relayed over the cluster bus to every
//! other node (masters and replicas alike). A sharded one (`SPUBLISH`, or
//! `RedisModule_PublishMessageShard` in the module) goes only to the
//! shard's own replicas — but only subscribers of a channel whose slot the
//! shard owns can receive it. So the node picks, for each master, a channel
//! `broker:node:<node>:{<tag>}` that hashes into that master's slots
//! ([`broker::names::shard_channel`]), names it in its lease on that master
//! (`NODE.LEASE ... CHANNEL`), and subscribes to all of them with
//! `SSUBSCRIBE`, each routed to its master.
//!
//! The subscriptions share one RESP3 cluster connection whose pushes come
//! back in the node's bounded inbox ([`super::inbox`]). The masters and
//! their slots are the ones the store routes by ([`Store::topology`]), and
//! the subscription connection is seeded with the nodes that reported
//! them. When any link drops (a `Disconnection` push), stops answering
//! `PING`, the inbox overflows, or the store moves to a new topology (a
//! failover: [`Store::topology_changes`]), the node starts over: takes the
//! slot map again, renews the lease with the channels (so that a promoted
//! master learns them), subscribes again, and repairs the gaps from
//! history before it reads live messages (as [`super::channel::receive`]
//! does for one Redis). A failed subscription asks the store to check the
//! slot map ([`Store::check_topology`]).
//!
//! [`Store::topology`]: crate::store::Store::topology
//! [`Store::topology_changes`]: crate::store::Store::topology_changes
//! [`Store::check_topology`]: crate::store::Store::check_topology

use std::sync::Arc;
use std::time::Duration;

use broker::names;
use bytes::Bytes;
use redis::cluster::ClusterClient;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{ConnectionInfo, IntoConnectionInfo};
use tokio::sync::watch;

use super::channel::{self, Link, Served};
use super::inbox::{self, Inbox};
use super::{lease, Node};
use crate::store::{Master, ShardChannel};

/// How long taking the slot map, connecting and subscribing may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long Redis may take to answer a command on the subscription
/// connection (its `PING`s included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's channel on each master of the cluster, in master order.
fn channels_for(node: &str, masters: &[Master]) -> Vec<ShardChannel> {
    masters
        .iter()
        .filter_map(|m| {
            let channel = names::shard_channel(node, |slot| m.serves(slot))?;
            Some(ShardChannel {
                slot: names::key_slot(channel.as_bytes()),
                channel,
            })
        })
        .collect()
}

/// Everything one subscription round needs, set up.
struct Subscribed {
    conn: redis::cluster_async::ClusterConnection,
    pushes: Inbox,
    shards: Vec<ShardChannel>,
    /// The store's topology changes: a new one ends this round.
    changes: Option<watch::Receiver<u64>>,
}

impl Link for Subscribed {
    async fn next(&mut self) -> Option<Bytes> {
        let Subscribed {
            pushes, changes, ..
        } = self;
        let Some(changes) = changes else {
            return pushes.next_message().await;
        };
        tokio::select! {
            message = pushes.next_message() => message,
            Ok(()) = changes.changed() => {
                tracing::info!("cluster topology changed; subscribing on the new masters");
                None
            }
        }
    }

    async fn ping(&mut self) -> bool {
        let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        self.conn
            .route_command(redis::cmd("PING").clone(), all)
            .await
            .is_ok()
    }

    fn overflowed(&self) -> bool {
        self.pushes.overflowed()
    }
}

/// Why a subscription round could not start.
fn setup_error(what: impl std::fmt::Display) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "sharded subscribe", what.to_string()))
}

/// Takes the store's slot map, connects and subscribes to the node's
/// channel on each master.
async fn subscribe(node: &Node, seeds: &[String]) -> redis::RedisResult<Subscribed> {
    // Taken before the topology is read: a change while subscribing ends
    // the round at once.
    let changes = node.store.topology_changes();
    let topology = node
        .store
        .topology()
        .await
        .map_err(setup_error)?
        .ok_or_else(|| setup_error("not a cluster"))?;
    if topology.map.masters().is_empty() {
        return Err(setup_error("no slot map yet"));
    }
    let seeds: Vec<ConnectionInfo> = if topology.seeds.is_empty() {
        seeds
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<redis::RedisResult<_>>()?
    } else {
        topology.seeds
    };
    let (tx, pushes) = inbox::inbox(inbox::BUDGET_BYTES);
    let client = ClusterClient::builder(seeds)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(RESPONSE_TIMEOUT)
        .build()?;
    let mut conn = client.get_async_connection().await?;
    let shards = channels_for(&node.id, topology.map.masters());
    for shard in &shards {
        conn.ssubscribe(&shard.channel).await?;
    }
    Ok(Subscribed {
        conn,
        pushes,
        shards,
        changes,
    })
}

/// Receives the node's sharded channels until shutdown, starting over
/// whenever a link or the topology changes.
pub async fn receive(node: Arc<Node>, seeds: Vec<String>) {
    let mut shutdown = node.shutdown.clone();
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        if node.shutting_down() {
            return;
        }
        match tokio::time::timeout(SETUP_TIMEOUT, subscribe(&node, &seeds)).await {
            Ok(Ok(mut sub)) => {
                // Every master must know the channel before the node counts
                // as subscribed: renew the lease with it now.
                node.set_shards(sub.shards.clone());
                // (No separate repair: this subscription repairs anyway.)
                if let Err(err) = lease::renew(&node, false).await {
                    tracing::warn!(error = %err, "lease with sharded channels failed");
                    node.store.check_topology();
                    sleep_or_shutdown(&mut shutdown, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                backoff = Duration::from_millis(100);
                tracing::info!(node = %node.id, shards = sub.shards.len(), "subscribed to sharded channels");
                if let Served::Shutdown = channel::serve(&node, &mut sub, first).await {
                    return;
                }
                first = false;
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "sharded subscribe failed"),
            Err(_) => tracing::debug!("sharded subscribe timed out"),
        }
        // A link that dropped or failed may be a master that died.
        node.store.check_topology();
        sleep_or_shutdown(&mut shutdown, backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn sleep_or_shutdown(shutdown: &mut tokio::sync::watch::Receiver<bool>, wait: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;
    use crate::store::SlotMap;

    fn int(n: i64) -> Value {
        Value::Int(n)
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn one_channel_per_master_inside_its_slots() {
        let reply = Value::Array(vec![
            Value::Array(vec![int(0), int(5460), node("127.0.0.1", 7000)]),
            Value::Array(vec![int(5461), int(10922), node("127.0.0.1", 7001)]),
            Value::Array(vec![int(10923), int(16383), node("127.0.0.1", 7002)]),
            Value::Array(vec![int(100), int(200), node("127.0.0.1", 7002)]),
        ]);
        let (map, _) = SlotMap::parse(reply, "127.0.0.1").unwrap();
        let masters = map.masters();
        assert_eq!(masters.len(), 3);
        let shards = channels_for("gw-1", masters);
        assert_eq!(shards.len(), 3);
        for (shard, master) in shards.iter().zip(masters) {
            assert!(names::is_node_channel("gw-1", &shard.channel));
            assert_eq!(shard.slot, names::key_slot(shard.channel.as_bytes()));
            assert!(master.serves(shard.slot));
        }
    }
}
