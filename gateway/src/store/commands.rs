//! The typed calls: one method per `BROKER.*` command the gateway sends
//! (and `INFO broker` for readiness), with the replies they read.

use std::collections::{BTreeMap, BTreeSet};

use redis::{FromRedisValue, Value};

use super::error::{StoreError, StoreResult};
use super::reply::{as_int, as_text, module_api, pairs, to_json, Fields};
use super::Store;

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

/// One master's channel for this node on a Redis Cluster (see
/// `node/shards.rs`): named in the lease sent to that master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardChannel {
    /// A slot of the master (the channel's own slot): routes the lease.
    pub slot: u16,
    /// `broker:node:<node>:{<tag>}`.
    pub channel: String,
}

impl Store {
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
