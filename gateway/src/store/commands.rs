//! The typed calls: one method per `BROKER.*` command the gateway sends
//! (and `INFO broker` for readiness), each taking the command's type from
//! [`broker::command`] -- the same type the module parses -- and reading
//! its reply.

use std::collections::{BTreeMap, BTreeSet};

use broker::command::{
    Broadcast, Command, ConnClose, ConnOpen, History, IpClose, IpOpen, Join, Kick, Leave,
    NodeConns, NodeLease, NodeRelease, Nodes, Online, Presence, Publish, RoomCount, RoomMembers,
    UserJoin, UserLeave, UserRooms,
};
use broker::registry::NodeConn;
use redis::{Cmd, FromRedisValue, Value};

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

/// A command as the Redis client sends it, and the label of its latency
/// metric: the name without `BROKER.`, lower case (`join`, `conn.open`).
fn request<C: Command>(command: &C) -> (String, Cmd) {
    let mut cmd = redis::cmd(C::NAME);
    for arg in command.to_args() {
        cmd.arg(arg.as_ref());
    }
    let label = C::NAME.trim_start_matches("BROKER.").to_ascii_lowercase();
    (label, cmd)
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
pub struct HistoryPage {
    /// The room's current sequence.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// Retained `msg` frames, oldest first.
    pub messages: Vec<Vec<u8>>,
    /// True when retained messages after the last one were left out (the
    /// read's `LIMIT` or `MAXBYTES`).
    pub more: bool,
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

/// One client `rpc` as the gateway appends it to the RPC stream
/// ([`broker::names::RPC_STREAM`]).
#[derive(Debug, Clone)]
pub struct RpcRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The `data` value's MessagePack bytes, as the client sent them.
    pub data: &'a [u8],
    /// The same value as JSON text.
    pub json: &'a str,
    /// The connection's user.
    pub user: &'a str,
    /// The connection (the key of `BROKER.RPC.REPLY`).
    pub conn: &'a str,
    /// This node.
    pub node: &'a str,
    /// The request id.
    pub id: i64,
    /// When the client stops waiting, ms since the Unix epoch.
    pub deadline_ms: u64,
    /// The stream's approximate cap (`MAXLEN ~`).
    pub maxlen: u64,
}

impl Store {
    /// Appends a client `rpc` to the RPC stream: one `XADD ... MAXLEN ~`
    /// on the stream's one key (on a cluster, routed by it to its master).
    pub async fn append_rpc(&self, rpc: &RpcRequest<'_>) -> StoreResult<()> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(broker::names::RPC_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(rpc.maxlen)
            .arg("*")
            .arg("method")
            .arg(rpc.method)
            .arg("data")
            .arg(rpc.data)
            .arg("json")
            .arg(rpc.json)
            .arg("user")
            .arg(rpc.user)
            .arg("conn")
            .arg(rpc.conn)
            .arg("node")
            .arg(rpc.node)
            .arg("id")
            .arg(rpc.id)
            .arg("deadline")
            .arg(rpc.deadline_ms);
        let _: Value = self.run("xadd.rpc", cmd).await?;
        Ok(())
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
    pub async fn lease(&self, lease: &NodeLease, shards: &[ShardChannel]) -> StoreResult<bool> {
        let replies = if shards.is_empty() {
            let (label, cmd) = request(lease);
            self.run_everywhere(&label, cmd).await?
        } else {
            let calls = shards.iter().map(|shard| {
                let (label, cmd) = request(&NodeLease {
                    channel: Some(shard.channel.clone()),
                    ..lease.clone()
                });
                async move { self.run_on_slot::<Value>(&label, cmd, shard.slot).await }
            });
            futures_util::future::try_join_all(calls).await?
        };
        // A master this node never leased before (one added to the cluster,
        // whose slots are moving in) held nothing of it: a new lease there
        // is no loss, and asks for no registration again. A master that
        // took over slots (a failover) serves the same smallest slot, so
        // the same channel: a new lease there is a loss.
        let mut known = self
            .leased_channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut renewed_everywhere = true;
        for (i, reply) in replies.into_iter().enumerate() {
            let (_deadline, renewed): (u64, u64) =
                redis::from_redis_value(reply).map_err(|e| StoreError::Reply(e.to_string()))?;
            let first_lease_there = shards
                .get(i)
                .is_some_and(|shard| known.insert(shard.channel.clone()));
            renewed_everywhere &= renewed == 1 || first_lease_there;
        }
        Ok(renewed_everywhere)
    }

    /// Drops the node and everything it holds, on every master (graceful
    /// shutdown; users linger in their rooms with a `GRACE`); the number
    /// of connections dropped.
    pub async fn release(&self, release: &NodeRelease) -> StoreResult<u64> {
        let (label, cmd) = request(release);
        let mut dropped = 0;
        for reply in self.run_everywhere(&label, cmd).await? {
            dropped += as_int(reply)?;
        }
        Ok(dropped)
    }

    /// True when the connections of `user` from `ip` are counted for the
    /// address apart from `CONN.OPEN`: on a cluster whose hash slot of the
    /// address differs from the user's. `CONN.OPEN` routes by the user, so
    /// its count of an address is per shard; the address's own slot holds
    /// the count for every shard instead (`BROKER.IP.OPEN`).
    pub fn ip_apart(&self, user: &str, ip: &str) -> bool {
        self.is_cluster()
            && broker::names::key_slot(user.as_bytes()) != broker::names::key_slot(ip.as_bytes())
    }

    /// Registers a connection within its per-user and per-IP limits
    /// (none: re-registration after a lost lease). One `CONN.OPEN` on one
    /// Redis, or when the address's slot is the user's. Otherwise the
    /// connection first takes a place of its address in the address's slot
    /// (`IP.OPEN`, with the per-IP limit), then `CONN.OPEN` (the per-user
    /// limit); when that refuses or fails, the place is given back.
    pub async fn open(&self, open: &ConnOpen) -> StoreResult<()> {
        if !self.ip_apart(&open.user, &open.ip) {
            let (label, cmd) = request(open);
            let _: Value = self.run(&label, cmd).await?;
            return Ok(());
        }
        self.hold_ip(&IpOpen {
            max_ip: open.max_ip,
            ..IpOpen::new(&open.ip, &open.user, &open.conn, &open.node)
        })
        .await?;
        let (label, cmd) = request(&ConnOpen {
            max_ip: None,
            ..open.clone()
        });
        let opened = self.run::<Value>(&label, cmd).await;
        if let Err(err) = opened {
            if let Err(release) = self.release_ip(&IpClose::new(&open.ip, &open.conn)).await {
                tracing::warn!(conn = %open.conn, error = %release, "could not give back the address's place; the reconciliation will");
            }
            return Err(err);
        }
        Ok(())
    }

    /// Removes a connection and its memberships; with a `GRACE`, its user
    /// lingers in rooms where this was its last connection. Does not give
    /// back a place of its address: [`Store::close_from`] does both.
    pub async fn close(&self, close: &ConnClose) -> StoreResult<()> {
        let (label, cmd) = request(close);
        let _: Value = self.run(&label, cmd).await?;
        Ok(())
    }

    /// Removes a connection from `ip` ([`Store::close`]) and, when its
    /// address is counted apart ([`Store::ip_apart`]), gives back its
    /// place (`IP.CLOSE`) at the same time. Both are tried; the first
    /// error is returned.
    pub async fn close_from(&self, close: &ConnClose, ip: &str) -> StoreResult<()> {
        if !self.ip_apart(&close.user, ip) {
            return self.close(close).await;
        }
        let release = IpClose::new(ip, &close.conn);
        let (closed, released) = futures_util::join!(self.close(close), self.release_ip(&release));
        closed.and(released.map(|_| ()))
    }

    /// Takes a place of a client address for a connection (`IP.OPEN`).
    pub async fn hold_ip(&self, hold: &IpOpen) -> StoreResult<()> {
        let (label, cmd) = request(hold);
        let _: Value = self.run(&label, cmd).await?;
        Ok(())
    }

    /// Gives back a connection's place of a client address (`IP.CLOSE`);
    /// true when it held one.
    pub async fn release_ip(&self, release: &IpClose) -> StoreResult<bool> {
        let (label, cmd) = request(release);
        Ok(as_int(self.run(&label, cmd).await?)? == 1)
    }

    /// Joins a room; with `SINCE`, also returns what was missed.
    pub async fn join(&self, join: &Join) -> StoreResult<Joined> {
        let (label, cmd) = request(join);
        let reply: Value = self.run(&label, cmd).await?;
        let fields = Fields::new(reply)?;
        Ok(Joined {
            first: fields.int("first")? == 1,
            seq: fields.int("seq")?,
            epoch: fields.text("epoch")?,
            recovered: fields.int("recovered")? == 1,
            messages: fields.frames("messages")?,
        })
    }

    /// Leaves a room. A `GRACE` says the connection went away (not a leave
    /// request): its user lingers if this was its last connection in the
    /// room.
    pub async fn leave(&self, leave: &Leave) -> StoreResult<()> {
        let (label, cmd) = request(leave);
        let _: Value = self.run(&label, cmd).await?;
        Ok(())
    }

    /// Publishes; returns the sequence number.
    pub async fn publish(&self, publish: &Publish) -> StoreResult<u64> {
        let (label, cmd) = request(publish);
        self.run(&label, cmd).await
    }

    /// A server broadcast to every connection (or those in a namespace).
    pub async fn broadcast(&self, broadcast: &Broadcast) -> StoreResult<u64> {
        let (label, cmd) = request(broadcast);
        self.run(&label, cmd).await
    }

    /// Retained messages of a room.
    pub async fn history(&self, history: &History) -> StoreResult<HistoryPage> {
        let (label, cmd) = request(history);
        let fields = Fields::new(self.run(&label, cmd).await?)?;
        Ok(HistoryPage {
            seq: fields.int("seq")?,
            epoch: fields.text("epoch")?,
            messages: fields.frames("messages")?,
            // Absent from a module older than `MAXBYTES`.
            more: fields.get("more").is_ok_and(|v| as_int(v.clone()) == Ok(1)),
        })
    }

    /// One page of a room's distinct users with their connection counts, in
    /// name order (see [`RoomMembers`] for the page's size and start).
    pub async fn members(&self, members: &RoomMembers) -> StoreResult<Vec<(String, u64)>> {
        let (label, cmd) = request(members);
        let reply: Value = self.run(&label, cmd).await?;
        let mut out = Vec::new();
        for (k, v) in pairs(reply)? {
            out.push((as_text(k)?, as_int(v)?));
        }
        Ok(out)
    }

    /// Users and connections of a room, `(users, connections)`.
    pub async fn room_count(&self, count: &RoomCount) -> StoreResult<(u64, u64)> {
        let (label, cmd) = request(count);
        let fields = Fields::new(self.run(&label, cmd).await?)?;
        Ok((fields.int("users")?, fields.int("connections")?))
    }

    /// A user's presence as the module reports it, converted to JSON.
    pub async fn presence_json(&self, user: &str) -> StoreResult<serde_json::Value> {
        let (label, cmd) = request(&Presence {
            user: user.to_string(),
        });
        let reply: Value = self.run(&label, cmd).await?;
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
        let (label, cmd) = request(&UserRooms {
            user: user.to_string(),
        });
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for reply in self.run_everywhere(&label, cmd).await? {
            let Value::Array(items) = reply else {
                return Err(StoreError::Reply(format!("USER.ROOMS: {reply:?}")));
            };
            for item in items {
                let fields = Fields::new(item)?;
                let rooms = fields.texts("rooms")?;
                out.entry(fields.text("conn")?).or_default().extend(rooms);
            }
        }
        Ok(out)
    }

    /// What Redis holds for a node, over every master of a cluster: per
    /// connection its user, whether it is opened (on some master), its
    /// rooms (on every master) and the address it holds a place of (on
    /// some master), by connection id.
    pub async fn node_conns(&self, list: &NodeConns) -> StoreResult<BTreeMap<String, NodeConn>> {
        let (label, cmd) = request(list);
        let mut out: BTreeMap<String, NodeConn> = BTreeMap::new();
        for reply in self.run_everywhere(&label, cmd).await? {
            let Value::Array(items) = reply else {
                return Err(StoreError::Reply(format!("NODE.CONNS: {reply:?}")));
            };
            for item in items {
                let fields = Fields::new(item)?;
                let conn = fields.text("conn")?;
                let entry = out.entry(conn.clone()).or_insert_with(|| NodeConn {
                    conn,
                    user: String::new(),
                    opened: false,
                    rooms: Vec::new(),
                    ip_hold: None,
                });
                entry.user = fields.text("user")?;
                entry.opened |= fields.int("opened")? == 1;
                entry.rooms.extend(fields.texts("rooms")?);
                // Absent from a module older than api 4.
                if let Ok(ip) = fields.text("ip_hold") {
                    if !ip.is_empty() {
                        entry.ip_hold = Some(ip);
                    }
                }
            }
        }
        for entry in out.values_mut() {
            entry.rooms.sort();
            entry.rooms.dedup();
        }
        Ok(out)
    }

    /// Tells every node to close the user's connections.
    pub async fn kick(&self, kick: &Kick) -> StoreResult<u64> {
        let (label, cmd) = request(kick);
        self.run(&label, cmd).await
    }

    /// `BROKER.USER.JOIN`: the number of connections told.
    pub async fn user_join(&self, join: &UserJoin) -> StoreResult<u64> {
        let (label, cmd) = request(join);
        self.run(&label, cmd).await
    }

    /// `BROKER.USER.LEAVE`: the number of connections told.
    pub async fn user_leave(&self, leave: &UserLeave) -> StoreResult<u64> {
        let (label, cmd) = request(leave);
        self.run(&label, cmd).await
    }

    /// Users and connections, summed over the masters of a cluster (a user
    /// lives on one shard, so the sums are exact).
    pub async fn online(&self) -> StoreResult<(u64, u64)> {
        let (mut users, mut conns) = (0, 0);
        let (label, cmd) = request(&Online);
        for reply in self.run_everywhere(&label, cmd).await? {
            let fields = Fields::new(reply)?;
            users += fields.int("users")?;
            conns += fields.int("connections")?;
        }
        Ok((users, conns))
    }

    /// Live gateway nodes with their connections, summed over the masters
    /// of a cluster: `(node, connections, earliest lease deadline ms)`.
    pub async fn nodes(&self) -> StoreResult<Vec<(String, u64, u64)>> {
        let mut nodes: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let (label, cmd) = request(&Nodes);
        for reply in self.run_everywhere(&label, cmd).await? {
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
