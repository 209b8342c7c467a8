//! The gateway's view of the broker module: typed calls to the `BROKER.*`
//! commands over one multiplexed, auto-reconnecting Redis connection — or,
//! with several `redis.url` seeds, a Redis Cluster connection that routes
//! each command by the slot of its first key (the room, or the user) and
//! follows `MOVED`/`ASK`. On a cluster every master keeps its own part of
//! the registry, so the node lease is taken on every master, and `ONLINE`
//! and `NODES` are summed over the masters.
//!
//! Every client action is one command here (one round trip); many
//! connections' commands share the same pipelined connection. Errors come
//! back as [`StoreError`]: a refusal by the module with its
//! [`Refusal`](broker::command::Refusal), or `Unavailable` when Redis
//! cannot be reached in time — which the gateway reports to clients as
//! `err unavailable` without closing them.
//!
//! On a cluster the store follows the topology (`topology.rs`): it reads
//! the slot map from the nodes on a timer and after unavailable replies,
//! and moves to a fresh cluster connection when a failover changed it.
//!
//! Here: the connection and the routing of commands (to the one server, to
//! a slot's master, to every master). The calls themselves are
//! `commands.rs`, reading their replies `reply.rs`, errors `error.rs`, the
//! cluster's topology `topology.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{Cmd, FromRedisValue, Value};
use tokio::sync::watch;

use crate::metrics::Metrics;

mod commands;
mod error;
mod reply;
mod topology;

pub use commands::{HistoryPage, Joined, Readiness, RpcRequest, ShardChannel};
pub use error::{Rejection, StoreError, StoreResult};
use reply::pairs;
use topology::Cluster;
pub use topology::{Master, SlotMap, Topology};

/// How long Redis may take to answer one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to one Redis server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One Redis, or a cluster (connected on first use, so the gateway starts
/// while the cluster is down, and connected again when its topology
/// changes).
#[derive(Clone)]
enum Backend {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// Typed access to the module.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    metrics: Arc<Metrics>,
    /// Commands that failed for want of Redis (not refusals) since start:
    /// any of them may have run or not, so the node reconciles after one.
    unavailable: Arc<AtomicU64>,
    /// The sharded channels a lease named so far (one per master: a new
    /// one is a master this node never leased, see [`Store::lease`]).
    leased_channels: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Store {
    /// Connects lazily to `urls`: one URL is one Redis, several are the
    /// seeds of a Redis Cluster. The gateway starts even when Redis is down;
    /// the connection is made (and remade) on use.
    ///
    /// # Errors
    /// When a URL is invalid.
    pub fn connect(urls: &[String], metrics: Arc<Metrics>) -> anyhow::Result<Store> {
        let backend = match urls {
            [url] => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                Backend::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            seeds => {
                let settings = topology::Settings {
                    connect_timeout: CONNECT_TIMEOUT,
                    response_timeout: RESPONSE_TIMEOUT,
                    retries: 3,
                };
                Backend::Cluster(Arc::new(Cluster::new(seeds, settings)?))
            }
        };
        Ok(Store {
            backend,
            metrics,
            unavailable: Arc::new(AtomicU64::new(0)),
            leased_channels: Arc::default(),
        })
    }

    /// How many commands failed for want of Redis since start (timeouts,
    /// lost connections): their effect in Redis is unknown.
    pub fn unavailable_count(&self) -> u64 {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// On a cluster, the topology commands are routed by now (connecting
    /// first when not connected); `None` on one Redis. The node's sharded
    /// subscription picks its channels from it.
    pub async fn topology(&self) -> StoreResult<Option<Topology>> {
        match &self.backend {
            Backend::Single(_) => Ok(None),
            Backend::Cluster(cluster) => cluster
                .topology()
                .await
                .map(Some)
                .map_err(StoreError::from_redis),
        }
    }

    /// On a cluster, a receiver whose value changes each time the store
    /// moves to a new cluster connection (a failover changed the slot map);
    /// `None` on one Redis. The sharded subscription follows it.
    pub fn topology_changes(&self) -> Option<watch::Receiver<u64>> {
        match &self.backend {
            Backend::Single(_) => None,
            Backend::Cluster(cluster) => Some(cluster.changes()),
        }
    }

    /// Asks for a check of the cluster's slot map soon (at most one per
    /// second), e.g. when a subscription to a master failed; does nothing
    /// on one Redis.
    pub fn check_topology(&self) {
        if let Backend::Cluster(cluster) = &self.backend {
            cluster.check_soon();
        }
    }

    /// The key of a user's publish rate in a namespace. On a cluster it
    /// carries the room as hash tag, so that it lives in the room's slot as
    /// `PUBLISH` needs: the limit then holds per user and room.
    pub fn rate_key(&self, namespace: &str, user: &str, room: &str) -> String {
        match self.backend {
            Backend::Single(_) => format!("broker:rate:{namespace}:{user}"),
            Backend::Cluster(_) => format!("broker:rate:{namespace}:{user}:{{{room}}}"),
        }
    }

    async fn run<T: FromRedisValue>(&self, name: &str, cmd: Cmd) -> StoreResult<T> {
        let started = Instant::now();
        let result = match &self.backend {
            Backend::Single(conn) => cmd.query_async::<T>(&mut conn.clone()).await,
            Backend::Cluster(cluster) => match cluster.conn().await {
                Ok(mut conn) => cmd.query_async::<T>(&mut conn).await,
                Err(err) => Err(err),
            },
        };
        self.observe(name, started, result)
    }

    /// Runs `cmd` on the master of `slot` (on the one server when not a
    /// cluster).
    async fn run_on_slot<T: FromRedisValue>(
        &self,
        name: &str,
        cmd: Cmd,
        slot: u16,
    ) -> StoreResult<T> {
        let cluster = match &self.backend {
            Backend::Single(_) => return self.run::<T>(name, cmd).await,
            Backend::Cluster(cluster) => cluster,
        };
        let started = Instant::now();
        let result = match cluster.conn().await {
            Ok(mut conn) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                conn.route_command(cmd, RoutingInfo::SingleNode(route))
                    .await
                    .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
            }
            Err(err) => Err(err),
        };
        self.observe(name, started, result)
    }

    /// Runs `cmd` on every master of a cluster (on the one server
    /// otherwise); one reply per master.
    async fn run_everywhere(&self, name: &str, cmd: Cmd) -> StoreResult<Vec<Value>> {
        let cluster = match &self.backend {
            Backend::Single(_) => return Ok(vec![self.run::<Value>(name, cmd).await?]),
            Backend::Cluster(cluster) => cluster,
        };
        let started = Instant::now();
        let result = match cluster.conn().await {
            Ok(mut conn) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                conn.route_command(cmd, all).await
            }
            Err(err) => Err(err),
        };
        let reply: Value = self.observe(name, started, result)?;
        let mut out = Vec::new();
        for (_, v) in pairs(reply)? {
            if let Value::ServerError(err) = v {
                return Err(StoreError::from_redis(err.into()));
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Records the duration and Redis's health, and types the result.
    fn observe<T: FromRedisValue>(
        &self,
        name: &str,
        started: Instant,
        result: redis::RedisResult<T>,
    ) -> StoreResult<T> {
        self.metrics
            .redis_command_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(v) => {
                self.metrics.redis_up.set(1);
                if let Backend::Cluster(cluster) = &self.backend {
                    cluster.note(false);
                }
                Ok(v)
            }
            Err(err) => {
                let err = StoreError::from_redis(err);
                let unavailable = matches!(err, StoreError::Unavailable(_));
                if unavailable {
                    self.metrics.redis_up.set(0);
                    self.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                if let Backend::Cluster(cluster) = &self.backend {
                    // A dead master answers nothing, not MOVED: look at the
                    // slot map again.
                    cluster.note(unavailable);
                }
                Err(err)
            }
        }
    }
}
