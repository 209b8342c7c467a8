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
//! back as [`StoreError`]: a refusal by the module with its code, or
//! `Unavailable` when Redis cannot be reached in time — which the gateway
//! reports to clients as `err unavailable` without closing them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{Cmd, FromRedisValue, Value};
use thiserror::Error;
use tokio::sync::OnceCell;

use crate::metrics::Metrics;
use crate::shards::ShardChannel;

/// Why a module call failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// Redis did not answer (down, restarting, cut off, timed out).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The module refused: `code` is the first word of its error reply
    /// (`NOTMEMBER`, `RATELIMITED`, `LIMIT`, `NOLEASE`, `ERR`...).
    #[error("{code} {detail}")]
    Refused {
        /// The error code.
        code: String,
        /// The rest of the message.
        detail: String,
    },
    /// A reply of an unexpected shape.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

impl StoreError {
    fn from_redis(err: redis::RedisError) -> StoreError {
        // Redis states that pass (loading a file, a failover, a busy
        // script): not a refusal of the request.
        const TRANSIENT: [&str; 8] = [
            "LOADING",
            "READONLY",
            "CLUSTERDOWN",
            "TRYAGAIN",
            "MASTERDOWN",
            "BUSY",
            "MOVED",
            "ASK",
        ];
        if err.code().is_some_and(|code| TRANSIENT.contains(&code)) {
            return StoreError::Unavailable(err.to_string());
        }
        match err.kind() {
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => StoreError::Refused {
                code: err.code().unwrap_or("ERR").to_string(),
                detail: err.detail().unwrap_or("").to_string(),
            },
            _ => StoreError::Unavailable(err.to_string()),
        }
    }

    /// True for a refusal with this code.
    pub fn is(&self, code: &str) -> bool {
        matches!(self, StoreError::Refused { code: c, .. } if c == code)
    }
}

/// Result of a module call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Whether Redis can serve this gateway: what `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The module is loaded (on every master) with the commands needed.
    Ready,
    /// A Redis (a master) answers without the module loaded.
    NoModule,
    /// The module is older than [`broker::MODULE_API`]: its `broker_api`.
    OldModule(u32),
}

/// What `BROKER.JOIN` answered.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    /// The user's first connection in the room.
    pub first: bool,
    /// The room's sequence at the join.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// All missed messages were returned.
    pub recovered: bool,
    /// Missed `msg` frames, oldest first.
    pub messages: Vec<Vec<u8>>,
}

/// What `BROKER.HISTORY` answered.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The room's current sequence.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// Retained `msg` frames, oldest first.
    pub messages: Vec<Vec<u8>>,
}

/// The options of one client publish.
#[derive(Debug, Clone)]
pub struct PublishRequest<'a> {
    /// Target room.
    pub room: &'a str,
    /// Event name.
    pub ev: &'a str,
    /// Payload bytes in `format`.
    pub payload: &'a [u8],
    /// `msgpack`, `json` or `string`.
    pub format: &'a str,
    /// Sending connection (membership check, `from`).
    pub from: Option<&'a str>,
    /// Connection that must not receive it.
    pub except: Option<&'a str>,
    /// History size and TTL (seconds) of the namespace.
    pub history: Option<(u32, u64)>,
    /// Rate limit: key, burst, count, period_s.
    pub rate: Option<(String, u32, u32, u64)>,
}

/// How long Redis may take to answer one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to one Redis server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One Redis, or a cluster (connected on first use, so the gateway starts
/// while the cluster is down).
#[derive(Clone)]
enum Backend {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

struct Cluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl Cluster {
    async fn conn(&self) -> redis::RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// Typed access to the module.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    metrics: Arc<Metrics>,
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
                let client = ClusterClient::builder(seeds.iter().map(String::as_str))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(3)
                    .build()?;
                Backend::Cluster(Arc::new(Cluster {
                    client,
                    conn: OnceCell::new(),
                }))
            }
        };
        Ok(Store { backend, metrics })
    }

    /// True on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
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
                Ok(v)
            }
            Err(err) => {
                let err = StoreError::from_redis(err);
                if matches!(err, StoreError::Unavailable(_)) {
                    self.metrics.redis_up.set(0);
                }
                Err(err)
            }
        }
    }

    /// Whether every Redis (every master) answers `INFO broker` with a
    /// module at least as new as [`broker::MODULE_API`]: used by `/readyz`.
    pub async fn ready(&self) -> StoreResult<Readiness> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("broker");
        let mut oldest = None;
        for reply in self.run_everywhere("info", cmd).await? {
            let info = String::from_redis_value(reply)
                .map_err(|e| StoreError::Reply(format!("INFO broker: {e}")))?;
            let Some(seen) = module_api(&info) else {
                return Ok(Readiness::NoModule);
            };
            oldest = Some(oldest.map_or(seen, |o: u32| o.min(seen)));
        }
        Ok(match oldest {
            Some(api) if api < broker::MODULE_API => Readiness::OldModule(api),
            _ => Readiness::Ready,
        })
    }

    /// Takes or renews the node lease (on every master of a cluster); true
    /// when it was a renewal everywhere. With `shards` (a cluster whose
    /// masters the node reads by sharded Pub/Sub) each master is sent the
    /// lease naming its own channel.
    pub async fn lease(
        &self,
        node: &str,
        lease_ms: u64,
        shards: &[ShardChannel],
    ) -> StoreResult<bool> {
        let mut cmd = redis::cmd("BROKER.NODE.LEASE");
        cmd.arg(node).arg(lease_ms);
        let replies = if shards.is_empty() {
            self.run_everywhere("node.lease", cmd).await?
        } else {
            let calls = shards.iter().map(|shard| {
                let mut cmd = cmd.clone();
                cmd.arg("CHANNEL").arg(&shard.channel);
                self.run_on_slot::<Value>("node.lease", cmd, shard.slot)
            });
            futures_util::future::try_join_all(calls).await?
        };
        let mut renewed_everywhere = true;
        for reply in replies {
            let (_deadline, renewed): (u64, u64) =
                redis::from_redis_value(reply).map_err(|e| StoreError::Reply(e.to_string()))?;
            renewed_everywhere &= renewed == 1;
        }
        Ok(renewed_everywhere)
    }

    /// Drops the node and everything it holds, on every master (graceful
    /// shutdown), its users lingering `grace_ms` in their rooms; the number
    /// of connections dropped.
    pub async fn release(&self, node: &str, grace_ms: u64) -> StoreResult<u64> {
        let mut cmd = redis::cmd("BROKER.NODE.RELEASE");
        cmd.arg(node);
        if grace_ms > 0 {
            cmd.arg("GRACE").arg(grace_ms);
        }
        let mut dropped = 0;
        for reply in self.run_everywhere("node.release", cmd).await? {
            dropped += as_int(reply)?;
        }
        Ok(dropped)
    }

    /// Registers a connection within the per-user and per-IP limits
    /// (`None` limits: re-registration after a lost lease).
    pub async fn open(
        &self,
        user: &str,
        conn: &str,
        node: &str,
        ip: &str,
        limits: Option<(u32, u32)>,
    ) -> StoreResult<()> {
        let mut cmd = redis::cmd("BROKER.CONN.OPEN");
        cmd.arg(user).arg(conn).arg(node).arg(ip);
        if let Some((per_user, per_ip)) = limits {
            cmd.arg("MAXUSER").arg(per_user).arg("MAXIP").arg(per_ip);
        }
        let _: Value = self.run("conn.open", cmd).await?;
        Ok(())
    }

    /// Removes a connection and its memberships; with a `grace_ms` above 0,
    /// its user lingers that long in rooms where this was its last
    /// connection.
    pub async fn close(&self, user: &str, conn: &str, grace_ms: u64) -> StoreResult<()> {
        let mut cmd = redis::cmd("BROKER.CONN.CLOSE");
        cmd.arg(user).arg(conn);
        if grace_ms > 0 {
            cmd.arg("GRACE").arg(grace_ms);
        }
        let _: Value = self.run("conn.close", cmd).await?;
        Ok(())
    }

    /// Joins a room; with `since`, also returns what was missed.
    #[allow(clippy::too_many_arguments)]
    pub async fn join(
        &self,
        room: &str,
        user: &str,
        conn: &str,
        node: &str,
        presence: bool,
        max_rooms: Option<u32>,
        since: Option<(u64, &str)>,
    ) -> StoreResult<Joined> {
        let mut cmd = redis::cmd("BROKER.JOIN");
        cmd.arg(room).arg(user).arg(conn).arg(node);
        if presence {
            cmd.arg("PRESENCE");
        }
        if let Some(max) = max_rooms {
            cmd.arg("MAXROOMS").arg(max);
        }
        if let Some((seq, epoch)) = since {
            cmd.arg("SINCE").arg(seq).arg(epoch);
        }
        let reply: Value = self.run("join", cmd).await?;
        let fields = Fields::new(reply)?;
        Ok(Joined {
            first: fields.int("first")? == 1,
            seq: fields.int("seq")?,
            epoch: fields.text("epoch")?,
            recovered: fields.int("recovered")? == 1,
            messages: fields.frames("messages")?,
        })
    }

    /// Leaves a room. A `grace_ms` above 0 says the connection went away
    /// (not a leave request): its user lingers that long if this was its
    /// last connection in the room.
    pub async fn leave(
        &self,
        room: &str,
        user: &str,
        conn: &str,
        grace_ms: u64,
    ) -> StoreResult<()> {
        let mut cmd = redis::cmd("BROKER.LEAVE");
        cmd.arg(room).arg(user).arg(conn);
        if grace_ms > 0 {
            cmd.arg("GRACE").arg(grace_ms);
        }
        let _: Value = self.run("leave", cmd).await?;
        Ok(())
    }

    /// Publishes; returns the sequence number.
    pub async fn publish(&self, req: &PublishRequest<'_>) -> StoreResult<u64> {
        let mut cmd = redis::cmd("BROKER.PUBLISH");
        cmd.arg(req.room).arg(req.ev).arg(req.payload);
        cmd.arg("FORMAT").arg(req.format);
        if let Some(from) = req.from {
            cmd.arg("FROM").arg(from);
        }
        if let Some(except) = req.except {
            cmd.arg("EXCEPT").arg(except);
        }
        if let Some((size, ttl_s)) = req.history {
            cmd.arg("HISTORY").arg(size).arg(ttl_s);
        }
        if let Some((key, burst, count, period)) = &req.rate {
            cmd.arg("RATE").arg(key).arg(burst).arg(count).arg(period);
        }
        self.run("publish", cmd).await
    }

    /// A server broadcast to every connection (or those in `namespace`).
    pub async fn broadcast(
        &self,
        ev: &str,
        json: &[u8],
        namespace: Option<&str>,
    ) -> StoreResult<u64> {
        let mut cmd = redis::cmd("BROKER.BROADCAST");
        cmd.arg(ev).arg(json).arg("FORMAT").arg("json");
        if let Some(ns) = namespace {
            cmd.arg("NS").arg(ns);
        }
        self.run("broadcast", cmd).await
    }

    /// Retained messages of a room.
    pub async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: Option<u32>,
    ) -> StoreResult<History> {
        let mut cmd = redis::cmd("BROKER.HISTORY");
        cmd.arg(room);
        if let Some(since) = since {
            cmd.arg("SINCE").arg(since);
        }
        if let Some(limit) = limit {
            cmd.arg("LIMIT").arg(limit);
        }
        let fields = Fields::new(self.run("history", cmd).await?)?;
        Ok(History {
            seq: fields.int("seq")?,
            epoch: fields.text("epoch")?,
            messages: fields.frames("messages")?,
        })
    }

    /// Distinct users of a room with their connection counts.
    pub async fn members(&self, room: &str) -> StoreResult<Vec<(String, u64)>> {
        let mut cmd = redis::cmd("BROKER.ROOM.MEMBERS");
        cmd.arg(room);
        let reply: Value = self.run("room.members", cmd).await?;
        let mut out = Vec::new();
        for (k, v) in pairs(reply)? {
            out.push((as_text(k)?, as_int(v)?));
        }
        Ok(out)
    }

    /// A user's presence as the module reports it, converted to JSON.
    pub async fn presence_json(&self, user: &str) -> StoreResult<serde_json::Value> {
        let mut cmd = redis::cmd("BROKER.PRESENCE");
        cmd.arg(user);
        let reply: Value = self.run("presence", cmd).await?;
        let mut presence = to_json(reply);
        if self.is_cluster() {
            let rooms = self.user_rooms(user).await?;
            if let Some(conns) = presence["conns"].as_array_mut() {
                for conn in conns {
                    let all = conn["conn"].as_str().and_then(|id| rooms.get(id));
                    if let Some(all) = all {
                        conn["rooms"] = serde_json::json!(all);
                    }
                }
            }
        }
        Ok(presence)
    }

    /// The rooms of each of `user`'s connections over every master: on a
    /// cluster `PRESENCE` (on the user's shard) knows only the rooms there.
    async fn user_rooms(&self, user: &str) -> StoreResult<BTreeMap<String, BTreeSet<String>>> {
        let mut cmd = redis::cmd("BROKER.USER.ROOMS");
        cmd.arg(user);
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for reply in self.run_everywhere("user.rooms", cmd).await? {
            let Value::Array(items) = reply else {
                return Err(StoreError::Reply(format!("USER.ROOMS: {reply:?}")));
            };
            for item in items {
                let fields = Fields::new(item)?;
                let rooms = match fields.get("rooms")? {
                    Value::Array(rooms) => rooms
                        .iter()
                        .filter_map(|r| String::from_redis_value(r.clone()).ok())
                        .collect::<Vec<String>>(),
                    other => return Err(StoreError::Reply(format!("USER.ROOMS rooms: {other:?}"))),
                };
                out.entry(fields.text("conn")?).or_default().extend(rooms);
            }
        }
        Ok(out)
    }

    /// Tells every node to close the user's connections.
    pub async fn kick(&self, user: &str, reason: &str) -> StoreResult<u64> {
        let mut cmd = redis::cmd("BROKER.KICK");
        cmd.arg(user).arg(reason);
        self.run("kick", cmd).await
    }

    /// Users and connections, summed over the masters of a cluster (a user
    /// lives on one shard, so the sums are exact).
    pub async fn online(&self) -> StoreResult<(u64, u64)> {
        let (mut users, mut conns) = (0, 0);
        for reply in self
            .run_everywhere("online", redis::cmd("BROKER.ONLINE"))
            .await?
        {
            let fields = Fields::new(reply)?;
            users += fields.int("users")?;
            conns += fields.int("connections")?;
        }
        Ok((users, conns))
    }

    /// Live gateway nodes with their connections, summed over the masters
    /// of a cluster: `(node, connections, earliest lease deadline ms)`.
    pub async fn nodes(&self) -> StoreResult<Vec<(String, u64, u64)>> {
        let mut nodes: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for reply in self
            .run_everywhere("nodes", redis::cmd("BROKER.NODES"))
            .await?
        {
            let Value::Array(items) = reply else {
                return Err(StoreError::Reply(format!("NODES: {reply:?}")));
            };
            for item in items {
                let fields = Fields::new(item)?;
                let entry = nodes.entry(fields.text("node")?).or_insert((0, u64::MAX));
                entry.0 += fields.int("connections")?;
                entry.1 = entry.1.min(fields.int("lease_deadline_ms")?);
            }
        }
        Ok(nodes
            .into_iter()
            .map(|(node, (conns, deadline))| (node, conns, deadline))
            .collect())
    }
}

/// A map reply (RESP2 flat array or RESP3 map) by field name.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn new(reply: Value) -> StoreResult<Fields> {
        let mut out = Vec::new();
        for (k, v) in pairs(reply)? {
            out.push((as_text(k)?, v));
        }
        Ok(Fields(out))
    }

    fn get(&self, name: &str) -> StoreResult<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| StoreError::Reply(format!("missing field {name}")))
    }

    fn int(&self, name: &str) -> StoreResult<u64> {
        as_int(self.get(name)?.clone())
    }

    fn text(&self, name: &str) -> StoreResult<String> {
        as_text(self.get(name)?.clone())
    }

    fn frames(&self, name: &str) -> StoreResult<Vec<Vec<u8>>> {
        match self.get(name)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::BulkString(b) => Ok(b.clone()),
                    _ => Err(StoreError::Reply(format!("{name}: not a bulk string"))),
                })
                .collect(),
            _ => Err(StoreError::Reply(format!("{name}: not an array"))),
        }
    }
}

/// The module's `broker_api` from an `INFO broker` text; `None` without
/// the module (an empty section). A module from before `broker_api` existed
/// counts as 1.
fn module_api(info: &str) -> Option<u32> {
    if !info.lines().any(|line| line.starts_with("broker_")) {
        return None;
    }
    let api = info
        .lines()
        .find_map(|line| line.trim_end().strip_prefix("broker_api:"))
        .and_then(|v| v.parse::<u32>().ok());
    Some(api.unwrap_or(1))
}

fn pairs(reply: Value) -> StoreResult<Vec<(Value, Value)>> {
    match reply {
        Value::Map(items) => Ok(items),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
        other => Err(StoreError::Reply(format!("expected a map, got {other:?}"))),
    }
}

fn as_int(v: Value) -> StoreResult<u64> {
    match v {
        Value::Int(n) => u64::try_from(n).map_err(|_| StoreError::Reply("negative integer".into())),
        other => Err(StoreError::Reply(format!(
            "expected an integer, got {other:?}"
        ))),
    }
}

fn as_text(v: Value) -> StoreResult<String> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|_| StoreError::Reply("not UTF-8".into()))
        }
        Value::SimpleString(s) => Ok(s),
        other => Err(StoreError::Reply(format!("expected text, got {other:?}"))),
    }
}

/// A module reply as JSON, for the admin API (maps become objects when
/// their keys are text; RESP2 flat arrays stay arrays except where the
/// caller knows the shape).
fn to_json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Int(n) => J::from(n),
        Value::BulkString(b) => J::String(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) => J::String(s),
        Value::Okay => J::String("OK".into()),
        Value::Array(items) => {
            // A flat `field value` array whose fields are the known presence
            // fields reads better as an object.
            let is_map = items.len() % 2 == 0
                && !items.is_empty()
                && items.chunks(2).all(|kv| {
                    matches!(&kv[0], Value::BulkString(b) if matches!(b.as_slice(),
                        b"status" | b"connections" | b"conns" | b"conn" | b"node" | b"ip" | b"connected_at" | b"rooms"))
                });
            if is_map {
                let mut obj = serde_json::Map::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if let J::String(k) = to_json(k) {
                        obj.insert(k, to_json(v));
                    }
                }
                J::Object(obj)
            } else {
                J::Array(items.into_iter().map(to_json).collect())
            }
        }
        Value::Map(items) => {
            let mut obj = serde_json::Map::new();
            for (k, v) in items {
                if let J::String(k) = to_json(k) {
                    obj.insert(k, to_json(v));
                }
            }
            J::Object(obj)
        }
        other => J::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::module_api;

    #[test]
    fn module_api_reads_info_broker() {
        let now = "# broker\r\nbroker_version:0.1.0\r\nbroker_api:2\r\nbroker_nodes:1\r\n";
        assert_eq!(module_api(now), Some(2));
        let before_the_field = "# broker\r\nbroker_nodes:0\r\nbroker_connections:0\r\n";
        assert_eq!(module_api(before_the_field), Some(1));
        assert_eq!(module_api(""), None, "INFO broker without the module");
    }
}
