//! Following a Redis Cluster's topology: which master serves which slots,
//! and the cluster connection that routes by it.
//!
//! The `redis` crate's cluster client reads the slot map when it connects
//! and again on `MOVED`, but a connection error only makes it dial the same
//! address again. When a master dies (SIGKILL, a lost host) nothing answers
//! `MOVED`: the client keeps dialing the dead address, and the slots its
//! replica now serves stay unreachable. So the store reads the slot map
//! itself, from every node it knows (the seeds and every node a slot map
//! named), and when the map most nodes report differs from the one in use it
//! builds a fresh cluster connection, seeded with the nodes that reported
//! the new map. A check runs
//!
//! - every [`CHECK_EVERY`] (like Lettuce's periodic refresh), and
//! - when a command fails as unavailable (connection error, timeout,
//!   `CLUSTERDOWN`...), at most once per [`CHECK_SPACING`] (like Lettuce's
//!   adaptive refresh).
//!
//! When commands have failed for [`FAILING_REBUILD`] without a success and
//! the map did not change, the connection is rebuilt anyway (at most once
//! per [`FAILING_REBUILD`]). Asking a node is bounded by the connect
//! timeout, and all nodes are asked at once, so a dead seed costs at most
//! one connect timeout. Every new connection bumps a counter that the
//! node's sharded subscription watches ([`Store::topology_changes`]), so
//! it subscribes again on the new masters.
//!
//! [`Store::topology_changes`]: super::Store::topology_changes

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisError, RedisResult, Value,
};
use tokio::sync::watch;

/// The least time between two checks of the slot map that failing
/// commands ask for.
pub const CHECK_SPACING: Duration = Duration::from_secs(1);
/// The time between two checks when nothing asks for one.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long commands may fail (with no success between) before the
/// connection is rebuilt although the slot map did not change.
pub const FAILING_REBUILD: Duration = Duration::from_secs(5);
/// How long building a cluster connection may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connect, how long callers get that error again instead
/// of each trying once more.
const CONNECT_ERROR_HOLD: Duration = Duration::from_millis(500);

/// A master and the slot ranges it serves (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// `host:port`.
    pub addr: String,
    /// Inclusive slot ranges, sorted.
    pub ranges: Vec<(u16, u16)>,
}

impl Master {
    /// True when `slot` is one of this master's.
    pub fn serves(&self, slot: u16) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
    }
}

/// The masters of a cluster and their slots, as `CLUSTER SLOTS` reports
/// them, in address order: two nodes that agree on who serves what have
/// equal maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    masters: Vec<Master>,
}

impl SlotMap {
    /// The masters, in address order.
    pub fn masters(&self) -> &[Master] {
        &self.masters
    }

    /// Reads a `CLUSTER SLOTS` reply of the node at `host`; also returns
    /// every node it names (masters and replicas) as `(host, port)`. A
    /// node without a known address (an empty host, or `?`) is taken to be
    /// on `host`, as the `redis` crate does.
    pub fn parse(reply: Value, host: &str) -> Option<(SlotMap, Vec<(String, u16)>)> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut masters: Vec<Master> = Vec::new();
        let mut nodes: Vec<(String, u16)> = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(lo)), Some(Value::Int(hi))) = (fields.first(), fields.get(1))
            else {
                return None;
            };
            let (lo, hi) = (u16::try_from(*lo).ok()?, u16::try_from(*hi).ok()?);
            let mut listed = fields.iter().skip(2).map(|node| node_addr(node, host));
            let master = listed.next()??;
            for node in listed.flatten() {
                nodes.push(node);
            }
            let addr = format!("{}:{}", master.0, master.1);
            nodes.push(master);
            match masters.iter_mut().find(|m| m.addr == addr) {
                Some(m) => m.ranges.push((lo, hi)),
                None => masters.push(Master {
                    addr,
                    ranges: vec![(lo, hi)],
                }),
            }
        }
        for m in &mut masters {
            m.ranges.sort_unstable();
        }
        masters.sort_by(|a, b| a.addr.cmp(&b.addr));
        nodes.sort();
        nodes.dedup();
        Some((SlotMap { masters }, nodes))
    }
}

/// `(host, port)` of one node entry of a `CLUSTER SLOTS` range.
fn node_addr(node: &Value, queried: &str) -> Option<(String, u16)> {
    let Value::Array(node) = node else {
        return None;
    };
    let host = match node.first() {
        Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
        Some(Value::SimpleString(host)) => host.clone(),
        _ => return None,
    };
    let host = if host.is_empty() || host == "?" {
        queried.to_string()
    } else {
        host
    };
    let Some(Value::Int(port)) = node.get(1) else {
        return None;
    };
    Some((host, u16::try_from(*port).ok()?))
}

/// What the store routes by on a cluster now: the slot map, and the nodes
/// that reported it (seeds for another cluster connection).
#[derive(Debug, Clone)]
pub struct Topology {
    /// The slot map most nodes reported when the connection was built.
    pub map: SlotMap,
    /// The nodes that reported it (with the seeds' credentials and TLS).
    pub seeds: Vec<ConnectionInfo>,
}

/// How the store's cluster connections are made.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    /// Connecting to one node.
    pub connect_timeout: Duration,
    /// One command.
    pub response_timeout: Duration,
    /// Retries of a command inside the cluster client.
    pub retries: u32,
}

impl Settings {
    fn client(&self, seeds: Vec<ConnectionInfo>) -> RedisResult<ClusterClient> {
        ClusterClient::builder(seeds)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            .retries(self.retries)
            .build()
    }
}

/// The connection in use and what it was built from.
struct Current {
    conn: ClusterConnection,
    topology: Topology,
    built: Instant,
}

#[derive(Default)]
struct State {
    current: Option<Current>,
    /// Every node seen, by `host:port`: the seeds and the nodes slot maps
    /// named.
    known: BTreeMap<String, ConnectionInfo>,
    last_check: Option<Instant>,
    /// Since when commands fail with no success between.
    failing_since: Option<Instant>,
    last_connect_error: Option<(Instant, RedisError)>,
    watching: bool,
}

/// A Redis Cluster as the store uses it: the current connection, rebuilt
/// when the topology changes.
pub(super) struct Cluster {
    settings: Settings,
    state: Mutex<State>,
    /// One connect or check at a time.
    building: tokio::sync::Mutex<()>,
    /// Bumped on every new connection.
    changes: watch::Sender<u64>,
}

impl Cluster {
    /// A cluster reached through `urls` (connected on first use).
    pub(super) fn new(urls: &[String], settings: Settings) -> RedisResult<Cluster> {
        let seeds = urls
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        // Checks the URLs as the cluster client will use them.
        settings.client(seeds.clone())?;
        let known = seeds
            .into_iter()
            .map(|info| (info.addr().to_string(), info))
            .collect();
        Ok(Cluster {
            settings,
            state: Mutex::new(State {
                known,
                ..State::default()
            }),
            building: tokio::sync::Mutex::new(()),
            changes: watch::channel(0).0,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn current_conn(&self) -> Option<ClusterConnection> {
        self.state().current.as_ref().map(|c| c.conn.clone())
    }

    /// The connection in use, connecting first when there is none.
    pub(super) async fn conn(self: &Arc<Self>) -> RedisResult<ClusterConnection> {
        self.watch();
        if let Some(conn) = self.current_conn() {
            return Ok(conn);
        }
        let _one = self.building.lock().await;
        if let Some(conn) = self.current_conn() {
            return Ok(conn);
        }
        if let Some((at, err)) = &self.state().last_connect_error {
            if at.elapsed() < CONNECT_ERROR_HOLD {
                return Err(err.clone());
            }
        }
        let surveyed = self.survey(None).await;
        match self.build(surveyed).await {
            Ok(conn) => Ok(conn),
            Err(err) => {
                self.state().last_connect_error = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    /// The topology in use (connecting first when there is none).
    pub(super) async fn topology(self: &Arc<Self>) -> RedisResult<Topology> {
        self.conn().await?;
        self.state()
            .current
            .as_ref()
            .map(|c| c.topology.clone())
            .ok_or_else(|| RedisError::from((ErrorKind::Io, "no cluster connection")))
    }

    /// A receiver that sees every new connection.
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records a command's outcome; an unavailable one asks for a check of
    /// the slot map (at most one per [`CHECK_SPACING`]).
    pub(super) fn note(self: &Arc<Self>, unavailable: bool) {
        {
            let mut state = self.state();
            if !unavailable {
                state.failing_since = None;
                return;
            }
            state.failing_since.get_or_insert_with(Instant::now);
        }
        self.check_soon();
    }

    /// Starts a check of the slot map in the background, unless one ran
    /// less than [`CHECK_SPACING`] ago.
    pub(super) fn check_soon(self: &Arc<Self>) {
        if self
            .state()
            .last_check
            .is_some_and(|t| t.elapsed() < CHECK_SPACING)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cluster = self.clone();
        runtime.spawn(async move { cluster.check().await });
    }

    /// Starts the periodic check once; it ends when the store is dropped.
    fn watch(self: &Arc<Self>) {
        {
            let mut state = self.state();
            if state.watching {
                return;
            }
            state.watching = true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Cluster> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                let Some(cluster) = weak.upgrade() else {
                    return;
                };
                cluster.check().await;
            }
        });
    }

    /// Reads the slot map from every known node; builds a new connection
    /// when the map most nodes report is not the one in use, or when
    /// commands have failed for [`FAILING_REBUILD`].
    async fn check(self: &Arc<Self>) {
        {
            let mut state = self.state();
            if state
                .last_check
                .is_some_and(|t| t.elapsed() < CHECK_SPACING)
            {
                return;
            }
            state.last_check = Some(Instant::now());
        }
        // A connect or another check is under way: it reads the map too.
        let Ok(_one) = self.building.try_lock() else {
            return;
        };
        let Some((in_use, built)) = self
            .state()
            .current
            .as_ref()
            .map(|c| (c.topology.map.clone(), c.built))
        else {
            return; // not connected yet: the next command connects
        };
        let surveyed = self.survey(Some(&in_use)).await;
        let failing = self
            .state()
            .failing_since
            .is_some_and(|t| t.elapsed() >= FAILING_REBUILD)
            && built.elapsed() >= FAILING_REBUILD;
        let changed = surveyed.as_ref().is_some_and(|t| t.map != in_use);
        if changed {
            tracing::info!(
                masters = ?surveyed.as_ref().map(|t| t.map.masters().iter().map(|m| m.addr.as_str()).collect::<Vec<_>>()),
                "cluster slot map changed; connecting to the new topology"
            );
        } else if failing {
            tracing::warn!("cluster commands keep failing; connecting again");
        } else {
            return;
        }
        if let Err(err) = self.build(surveyed).await {
            tracing::warn!(error = %err, "cluster reconnect failed; keeping the old connection");
        }
    }

    /// Asks every known node for its slot map at once; returns the map
    /// most of them report (the one in use on a tie) and who reported it.
    async fn survey(&self, in_use: Option<&SlotMap>) -> Option<Topology> {
        let known: Vec<ConnectionInfo> = self.state().known.values().cloned().collect();
        let answers = futures_util::future::join_all(
            known
                .iter()
                .map(|info| ask_slots(info.clone(), self.settings.connect_timeout)),
        )
        .await;
        let mut votes: Vec<Topology> = Vec::new();
        let mut learned: Vec<ConnectionInfo> = Vec::new();
        for (info, answer) in known.iter().zip(answers) {
            let Some((map, nodes)) = answer else {
                continue;
            };
            learned.extend(
                nodes
                    .into_iter()
                    .map(|(host, port)| with_addr(info, host, port)),
            );
            match votes.iter_mut().find(|t| t.map == map) {
                Some(t) => t.seeds.push(info.clone()),
                None => votes.push(Topology {
                    map,
                    seeds: vec![info.clone()],
                }),
            }
        }
        {
            let mut state = self.state();
            for info in learned {
                state.known.entry(info.addr().to_string()).or_insert(info);
            }
        }
        votes.into_iter().max_by_key(|t| {
            (
                t.seeds.len(),
                in_use.is_some_and(|m| *m == t.map),
                // A map that serves more slots wins the remaining ties.
                t.map
                    .masters()
                    .iter()
                    .flat_map(|m| &m.ranges)
                    .map(|&(lo, hi)| u32::from(hi.saturating_sub(lo)) + 1)
                    .sum::<u32>(),
            )
        })
    }

    /// Connects to the cluster through the nodes that reported `surveyed`
    /// (through every known node when none did) and puts the connection in
    /// use.
    async fn build(&self, surveyed: Option<Topology>) -> RedisResult<ClusterConnection> {
        let topology = surveyed.unwrap_or_else(|| Topology {
            map: SlotMap::default(),
            seeds: self.state().known.values().cloned().collect(),
        });
        let client = self.settings.client(topology.seeds.clone())?;
        let conn = tokio::time::timeout(BUILD_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "cluster connect timed out")))??;
        {
            let mut state = self.state();
            state.current = Some(Current {
                conn: conn.clone(),
                topology,
                built: Instant::now(),
            });
            state.last_connect_error = None;
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(conn)
    }
}

/// `template` (its credentials, TLS and database) at another address.
fn with_addr(template: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    template.clone().set_addr(addr)
}

/// One node's `CLUSTER SLOTS`, or `None` when it cannot be reached within
/// `timeout` (to connect, and again to answer).
async fn ask_slots(
    info: ConnectionInfo,
    timeout: Duration,
) -> Option<(SlotMap, Vec<(String, u16)>)> {
    let host = match info.addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
        _ => String::new(),
    };
    let client = redis::Client::open(info).ok()?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let asked = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(&mut conn)
            .await
    };
    let reply = tokio::time::timeout(timeout * 2, asked).await.ok()?.ok()?;
    SlotMap::parse(reply, &host)
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
    fn masters_and_their_ranges_in_a_stable_order() {
        let reply = Value::Array(vec![
            Value::Array(vec![int(10923), int(16383), node("127.0.0.1", 7002)]),
            Value::Array(vec![
                int(0),
                int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![int(5461), int(10922), node("", 7001)]),
            Value::Array(vec![int(100), int(200), node("127.0.0.1", 7002)]),
        ]);
        let (map, nodes) = SlotMap::parse(reply, "10.0.0.1").unwrap();
        let addrs: Vec<&str> = map.masters().iter().map(|m| m.addr.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.1:7001", "127.0.0.1:7000", "127.0.0.1:7002"]);
        assert_eq!(map.masters()[2].ranges, vec![(100, 200), (10923, 16383)]);
        assert!(map.masters()[2].serves(150) && !map.masters()[2].serves(201));
        assert_eq!(nodes.len(), 4, "{nodes:?}");
        assert!(nodes.contains(&("127.0.0.1".to_string(), 7003)));
    }

    #[test]
    fn the_same_assignment_is_the_same_map() {
        let a = Value::Array(vec![
            Value::Array(vec![int(0), int(99), node("h", 1)]),
            Value::Array(vec![int(100), int(16383), node("h", 2)]),
        ]);
        let b = Value::Array(vec![
            Value::Array(vec![int(100), int(16383), node("h", 2), node("h", 3)]),
            Value::Array(vec![int(0), int(99), node("h", 1)]),
        ]);
        let c = Value::Array(vec![
            Value::Array(vec![int(0), int(99), node("h", 3)]),
            Value::Array(vec![int(100), int(16383), node("h", 2)]),
        ]);
        let (a, _) = SlotMap::parse(a, "h").unwrap();
        let (b, _) = SlotMap::parse(b, "h").unwrap();
        let (c, _) = SlotMap::parse(c, "h").unwrap();
        assert_eq!(a, b, "replicas and order do not matter");
        assert_ne!(a, c, "a promoted replica is a new map");
    }

    #[test]
    fn unreadable_slot_replies_are_refused() {
        assert!(SlotMap::parse(Value::Int(1), "h").is_none());
        assert!(SlotMap::parse(Value::Array(vec![Value::Array(vec![int(0)])]), "h").is_none());
        assert!(SlotMap::parse(
            Value::Array(vec![Value::Array(vec![int(0), int(1), int(2)])]),
            "h"
        )
        .is_none());
    }

    #[test]
    fn discovered_nodes_keep_the_seed_settings() {
        let seed = "redis://user:secret@127.0.0.1:7000/"
            .into_connection_info()
            .unwrap();
        let other = with_addr(&seed, "127.0.0.2".into(), 7005);
        assert_eq!(other.addr().to_string(), "127.0.0.2:7005");
        assert_eq!(other.redis_settings().password(), Some("secret"));
        assert_eq!(other.redis_settings().username(), Some("user"));
    }
}
