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
//! back in the node's bounded inbox ([`super::inbox`]). When any link drops
//! (a `Disconnection` push), stops answering `PING`, the inbox overflows,
//! or a failover moves a master, the node starts over:
//! reads the slot map again, renews the lease with the channels, subscribes
//! again, and repairs the gaps from history before it reads live messages
//! (as [`super::channel::receive`] does for one Redis).

use std::sync::Arc;
use std::time::Duration;

use broker::names;
use bytes::Bytes;
use redis::cluster::ClusterClient;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::Value;

use super::channel::{self, Link, Served};
use super::inbox::{self, Inbox};
use super::{lease, Node};
use crate::store::ShardChannel;

/// How long discovering the slot map, connecting and subscribing may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long Redis may take to answer a command on the subscription
/// connection (its `PING`s included).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A master and the slot ranges it serves, from `CLUSTER SLOTS`.
#[derive(Debug, Default)]
struct Master {
    addr: String,
    ranges: Vec<(u16, u16)>,
}

/// The node's channel on each master of the cluster, in master order.
fn channels_for(node: &str, masters: &[Master]) -> Vec<ShardChannel> {
    masters
        .iter()
        .filter_map(|m| {
            let channel = names::shard_channel(node, |slot| {
                m.ranges.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
            })?;
            Some(ShardChannel {
                slot: names::key_slot(channel.as_bytes()),
                channel,
            })
        })
        .collect()
}

/// Reads the masters and their slots from a `CLUSTER SLOTS` reply.
fn parse_slots(reply: Value) -> Option<Vec<Master>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut masters: Vec<Master> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        let addr = match (master.first(), master.get(1)) {
            (Some(Value::BulkString(host)), Some(Value::Int(port))) => {
                format!("{}:{port}", String::from_utf8_lossy(host))
            }
            _ => return None,
        };
        let (lo, hi) = (u16::try_from(*lo).ok()?, u16::try_from(*hi).ok()?);
        match masters.iter_mut().find(|m| m.addr == addr) {
            Some(m) => m.ranges.push((lo, hi)),
            None => masters.push(Master {
                addr,
                ranges: vec![(lo, hi)],
            }),
        }
    }
    masters.sort_by(|a, b| a.addr.cmp(&b.addr));
    Some(masters)
}

/// Everything one subscription round needs, set up.
struct Subscribed {
    conn: redis::cluster_async::ClusterConnection,
    pushes: Inbox,
    shards: Vec<ShardChannel>,
}

impl Link for Subscribed {
    async fn next(&mut self) -> Option<Bytes> {
        self.pushes.next_message().await
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

/// Discovers the masters, connects and subscribes to the node's channel on
/// each of them.
async fn subscribe(node: &Node, seeds: &[String]) -> redis::RedisResult<Subscribed> {
    let (tx, pushes) = inbox::inbox(inbox::BUDGET_BYTES);
    let client = ClusterClient::builder(seeds.iter().map(String::as_str))
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(RESPONSE_TIMEOUT)
        .build()?;
    let mut conn = client.get_async_connection().await?;
    let slots = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(redis::cluster_routing::SingleNodeRoutingInfo::Random),
        )
        .await?;
    let masters = parse_slots(slots).ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Client, "unreadable CLUSTER SLOTS reply"))
    })?;
    let shards = channels_for(&node.id, &masters);
    for shard in &shards {
        conn.ssubscribe(&shard.channel).await?;
    }
    Ok(Subscribed {
        conn,
        pushes,
        shards,
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
                    sleep_or_shutdown(&mut shutdown, backoff).await;
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
    use super::*;

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
        let masters = parse_slots(reply).unwrap();
        assert_eq!(masters.len(), 3);
        assert_eq!(masters[2].ranges, vec![(10923, 16383), (100, 200)]);
        let shards = channels_for("gw-1", &masters);
        assert_eq!(shards.len(), 3);
        for (shard, master) in shards.iter().zip(&masters) {
            assert!(names::is_node_channel("gw-1", &shard.channel));
            assert_eq!(shard.slot, names::key_slot(shard.channel.as_bytes()));
            assert!(master
                .ranges
                .iter()
                .any(|&(lo, hi)| lo <= shard.slot && shard.slot <= hi));
        }
    }

    #[test]
    fn unreadable_slot_replies_are_refused() {
        assert!(parse_slots(Value::Int(1)).is_none());
        assert!(parse_slots(Value::Array(vec![Value::Array(vec![int(0)])])).is_none());
    }
}
