//! The parts of one phase (a Redis Cluster or one Redis, three gateways),
//! the publisher, the probes and the faults.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{try_http, Gateway, Options};
use broker_tests::proxy::Proxy;
use broker_tests::RedisServer;
use serde_json::json;

use crate::redis_view::{masters, topology};
use crate::sim::Rng;

/// The gateways' node ids: fixed, so a restart comes back as the same node.
pub const NODES: [&str; 3] = ["gw-a", "gw-b", "gw-c"];

/// The namespace of the harness's rooms: history long enough to cover any
/// fault, no join/leave events (they would multiply the traffic).
const NAMESPACE: &str = "
[namespaces.chaos]
history = 1000
history_ttl_s = 900
join_leave = false
";

/// Where the module runs in a phase.
pub enum Backend {
    /// 3 masters and 3 replicas.
    Cluster(RedisCluster),
    /// One Redis; each gateway reaches it through its own proxy.
    Single {
        /// The server.
        server: RedisServer,
        /// One per gateway, same order.
        proxies: Vec<Proxy>,
    },
}

/// The running parts of a phase.
pub struct World {
    /// The module's servers.
    pub backend: Backend,
    /// The gateways, in [`NODES`] order.
    pub gateways: Vec<Gateway>,
    /// What the publisher and the probes share.
    pub publish: Arc<Publisher>,
}

/// The background publisher's state and counters.
pub struct Publisher {
    /// Admin listeners, in [`NODES`] order.
    pub admins: Vec<SocketAddr>,
    /// Whether each gateway's process runs.
    pub up: Vec<AtomicBool>,
    /// While set, nothing new is published.
    pub paused: AtomicBool,
    /// Set at the end of the phase.
    pub stop: AtomicBool,
    /// Publishes in flight.
    pub inflight: AtomicU64,
    /// Publishes answered 200.
    pub acked: AtomicU64,
    /// Publishes answered otherwise or not at all.
    pub failed: AtomicU64,
}

fn gateway_options(lease_ms: u64, node: &str) -> Options {
    let mut o = Options::default()
        .node(node)
        .lease_ms(lease_ms)
        .max_conns_per_ip(1_000_000);
    o.max_conns_per_user = 50;
    o.extra_toml = NAMESPACE.to_string();
    o
}

impl World {
    /// A cluster (`cluster`) or one Redis (with AOF when `aof`), and three
    /// gateways on it.
    pub async fn start(cluster: bool, aof: bool, lease_ms: u64) -> World {
        let (backend, gateways) = if cluster {
            let c = RedisCluster::start(3);
            let mut gws = Vec::new();
            for node in NODES {
                let o = gateway_options(lease_ms, node).redis_cluster(&c.urls());
                gws.push(Gateway::start(&c.servers[0], o).await);
            }
            (Backend::Cluster(c), gws)
        } else {
            let mut b = RedisServer::builder();
            if aof {
                b = b.server_args(["--appendonly", "yes", "--aof-use-rdb-preamble", "yes"]);
            }
            let server = b.start();
            let mut proxies = Vec::new();
            let mut gws = Vec::new();
            for node in NODES {
                let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).await;
                let url = format!("redis://{}", proxy.addr);
                gws.push(
                    Gateway::start(&server, gateway_options(lease_ms, node).redis_url(&url)).await,
                );
                proxies.push(proxy);
            }
            (Backend::Single { server, proxies }, gws)
        };
        let publish = Arc::new(Publisher {
            admins: gateways.iter().map(|g| g.admin).collect(),
            up: gateways.iter().map(|_| AtomicBool::new(true)).collect(),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            inflight: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        World {
            backend,
            gateways,
            publish,
        }
    }

    /// Whether the module runs on a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// Every Redis server's port.
    pub fn ports(&self) -> Vec<u16> {
        match &self.backend {
            Backend::Cluster(c) => c.servers.iter().map(RedisServer::port).collect(),
            Backend::Single { server, .. } => vec![server.port()],
        }
    }

    /// Every server, for their logs.
    pub fn servers(&self) -> Vec<&RedisServer> {
        match &self.backend {
            Backend::Cluster(c) => c.servers.iter().collect(),
            Backend::Single { server, .. } => vec![server],
        }
    }

    /// The master ports now.
    pub fn masters(&self) -> Vec<u16> {
        topology(&self.ports(), self.is_cluster())
            .map(|t| masters(&t))
            .unwrap_or_default()
    }

    /// Servers whose process exited by itself (a crash): each is started
    /// again on its port and directory, as a service manager would; their
    /// ports are returned.
    pub fn restart_crashed(&mut self) -> Vec<u16> {
        let servers: Vec<&mut RedisServer> = match &mut self.backend {
            Backend::Cluster(c) => c.servers.iter_mut().collect(),
            Backend::Single { server, .. } => vec![server],
        };
        let mut out = Vec::new();
        for s in servers {
            if s.exited() {
                out.push(s.port());
                tokio::task::block_in_place(|| s.start_again());
            }
        }
        out
    }

    /// The gateways that are not ready now (by node id).
    pub async fn unready(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.gateways {
            let ready = tokio::time::timeout(Duration::from_secs(2), g.is_ready())
                .await
                .unwrap_or(false);
            if !ready {
                out.push(g.node.clone());
            }
        }
        out
    }
}

/// One `POST /api/publish` with a 3 s limit; true on 200.
pub async fn publish_once(admin: SocketAddr, room: &str, n: u64) -> bool {
    let body = json!({"room": room, "ev": "m", "data": n});
    let req = try_http(admin, "POST", "/api/publish", Some(&body), None);
    matches!(
        tokio::time::timeout(Duration::from_secs(3), req).await,
        Ok(Ok(resp)) if resp.status == 200
    )
}

/// Publishes `rate` messages a second to random rooms through random live
/// gateways until stopped.
pub async fn run_publisher(p: Arc<Publisher>, rooms: Vec<String>, rate: u64, seed: u64) {
    let mut rng = Rng::new(seed, 0);
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut n = 0;
    while !p.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if p.paused.load(Ordering::Relaxed) {
            continue;
        }
        let up: Vec<usize> = (0..p.admins.len())
            .filter(|&i| p.up[i].load(Ordering::Relaxed))
            .collect();
        if up.is_empty() {
            continue;
        }
        let admin = p.admins[up[rng.below(up.len())]];
        let room = rooms[rng.below(rooms.len())].clone();
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            p.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        n += 1;
        p.inflight.fetch_add(1, Ordering::Relaxed);
        let p = p.clone();
        tokio::spawn(async move {
            if publish_once(admin, &room, n).await {
                p.acked.fetch_add(1, Ordering::Relaxed);
            } else {
                p.failed.fetch_add(1, Ordering::Relaxed);
            }
            p.inflight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Waits until no publish is in flight (at most `limit`).
pub async fn drain_publishes(p: &Publisher, limit: Duration) {
    let deadline = Instant::now() + limit;
    while p.inflight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One publish through every gateway to every probe room (one per master):
/// true when all succeed.
pub async fn probe(p: &Publisher, probe_rooms: &[String]) -> bool {
    let mut all = Vec::new();
    for &admin in &p.admins {
        for room in probe_rooms {
            all.push(publish_once(admin, room, 0));
        }
    }
    futures_util::future::join_all(all)
        .await
        .into_iter()
        .all(|ok| ok)
}

/// A fault kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of a gateway, restarted with the same node id at once or ~2 s later.
    GatewayKill,
    /// SIGKILL of a master; restarted after the failover (it rejoins as a replica).
    MasterKill,
    /// `CLIENT PAUSE 3500 WRITE` or `ALL` on a master.
    Pause,
    /// `DEBUG SLEEP 3` on a master.
    Sleep,
    /// The link between a gateway and Redis cut (and refused) for 1–4 s.
    Cut,
    /// Redis restarted from an RDB saved ~1.5 s before (churn in between).
    RestartRdb,
    /// Redis restarted from its AOF (`appendonly yes`, RDB preamble).
    RestartAof,
}

impl Fault {
    /// Every kind, in the order of the `--faults` flag.
    pub const ALL: [Fault; 7] = [
        Fault::GatewayKill,
        Fault::MasterKill,
        Fault::Pause,
        Fault::Sleep,
        Fault::Cut,
        Fault::RestartRdb,
        Fault::RestartAof,
    ];

    /// Its name on the command line and in the figures.
    pub fn name(self) -> &'static str {
        match self {
            Fault::GatewayKill => "gateway-kill",
            Fault::MasterKill => "master-kill",
            Fault::Pause => "pause",
            Fault::Sleep => "sleep",
            Fault::Cut => "cut",
            Fault::RestartRdb => "restart-rdb",
            Fault::RestartAof => "restart-aof",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Waits until every running server of the cluster agrees on 16384 slots
/// served by masters that answer; false after `limit`.
fn cluster_settled(ports: &[u16], dead: Option<u16>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let mut good = true;
        let mut any = false;
        for &p in ports {
            if Some(p) == dead {
                continue;
            }
            let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{p}/")) else {
                continue;
            };
            let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(300)) else {
                continue;
            };
            let _ = con.set_read_timeout(Some(Duration::from_secs(2)));
            any = true;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut con)
                .unwrap_or_default();
            if !info.contains("cluster_state:ok") {
                good = false;
                break;
            }
            match topology(&[p], true) {
                Ok(t) if dead.is_none_or(|d| t.iter().all(|r| r.2 != d)) => {}
                _ => {
                    good = false;
                    break;
                }
            }
        }
        if good && any {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Whether every master of the cluster has a replica online.
fn replicas_online(masters: &[u16]) -> bool {
    masters.iter().all(|&p| {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{p}/")) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(300)) else {
            return false;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut con)
            .unwrap_or_default();
        info.lines()
            .any(|l| l.starts_with("slave0:") && l.contains("state=online"))
    })
}

fn redis_cmd(port: u16, args: &[&str], timeout: Duration) -> Result<(), String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    con.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(&mut con)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// What an injection did.
pub struct Injected {
    /// When the fault ended (the process restarted, the pause ran out...).
    pub ended: Instant,
    /// What exactly was done.
    pub what: String,
}

impl World {
    /// Injects `fault`; `freeze` is called once the fault starts (for
    /// `restart-rdb`, after the save and the churn that follows it).
    pub async fn inject(
        &mut self,
        fault: Fault,
        rng: &mut Rng,
        freeze: impl FnOnce(),
    ) -> Result<Injected, String> {
        match fault {
            Fault::GatewayKill => {
                let i = rng.below(self.gateways.len());
                let delay = if rng.chance(0.5) { 0 } else { 2000 };
                freeze();
                self.gateways[i].kill();
                self.publish.up[i].store(false, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                self.gateways[i].respawn();
                self.publish.up[i].store(true, Ordering::Relaxed);
                Ok(Injected {
                    ended: Instant::now(),
                    what: format!("SIGKILL {}, restarted after {delay} ms", NODES[i]),
                })
            }
            Fault::MasterKill => {
                let Backend::Cluster(c) = &mut self.backend else {
                    return Err("not a cluster".into());
                };
                let ports: Vec<u16> = c.servers.iter().map(RedisServer::port).collect();
                let ms = topology(&ports, true).map(|t| masters(&t))?;
                let ready = tokio::task::block_in_place(|| {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        if replicas_online(&ms) {
                            return true;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    false
                });
                if !ready {
                    return Err("a master has no replica online".into());
                }
                let port = ms[rng.below(ms.len())];
                let idx = c
                    .servers
                    .iter()
                    .position(|s| s.port() == port)
                    .ok_or("no such server")?;
                freeze();
                let t = Instant::now();
                c.servers[idx].kill();
                let failed_over = tokio::task::block_in_place(|| {
                    cluster_settled(&ports, Some(port), Duration::from_secs(30))
                });
                let took = t.elapsed();
                tokio::task::block_in_place(|| c.servers[idx].start_again());
                let ended = Instant::now();
                tokio::task::block_in_place(|| {
                    cluster_settled(&ports, None, Duration::from_secs(30))
                });
                if !failed_over {
                    return Err(format!("no failover within 30 s of killing master {port}"));
                }
                Ok(Injected {
                    ended,
                    what: format!("SIGKILL master {port}, failover seen after {took:?}, restarted"),
                })
            }
            Fault::Pause | Fault::Sleep => {
                let ms = self.masters();
                if ms.is_empty() {
                    return Err("no master".into());
                }
                let port = ms[rng.below(ms.len())];
                freeze();
                let what = if fault == Fault::Pause {
                    let mode = if rng.chance(0.5) { "WRITE" } else { "ALL" };
                    tokio::task::block_in_place(|| {
                        redis_cmd(
                            port,
                            &["CLIENT", "PAUSE", "3500", mode],
                            Duration::from_secs(5),
                        )
                    })?;
                    tokio::time::sleep(Duration::from_millis(3500)).await;
                    format!("CLIENT PAUSE 3500 {mode} on {port}")
                } else {
                    tokio::task::block_in_place(|| {
                        redis_cmd(port, &["DEBUG", "SLEEP", "3"], Duration::from_secs(10))
                    })?;
                    format!("DEBUG SLEEP 3 on {port}")
                };
                let ended = Instant::now();
                if self.is_cluster() {
                    let ports = self.ports();
                    tokio::task::block_in_place(|| {
                        cluster_settled(&ports, None, Duration::from_secs(30))
                    });
                }
                Ok(Injected { ended, what })
            }
            Fault::Cut => {
                let Backend::Single { proxies, .. } = &self.backend else {
                    return Err("not a single Redis".into());
                };
                let i = rng.below(proxies.len());
                let hold = rng.ms(1000, 4000);
                freeze();
                proxies[i].refuse(true);
                proxies[i].cut();
                tokio::time::sleep(hold).await;
                proxies[i].refuse(false);
                Ok(Injected {
                    ended: Instant::now(),
                    what: format!("link of {} to Redis cut for {hold:?}", NODES[i]),
                })
            }
            Fault::RestartAof => {
                let Backend::Single { server, .. } = &mut self.backend else {
                    return Err("not a single Redis".into());
                };
                freeze();
                tokio::task::block_in_place(|| server.restart());
                Ok(Injected {
                    ended: Instant::now(),
                    what: "Redis restarted (SHUTDOWN NOSAVE, loads its AOF)".into(),
                })
            }
            Fault::RestartRdb => {
                let Backend::Single { server, .. } = &mut self.backend else {
                    return Err("not a single Redis".into());
                };
                // Nothing is published between the save and the restart, so
                // the RDB holds every message: only presence is older.
                self.publish.paused.store(true, Ordering::Relaxed);
                drain_publishes(&self.publish, Duration::from_secs(10)).await;
                let port = server.port();
                let saved = tokio::task::block_in_place(|| {
                    redis_cmd(port, &["SAVE"], Duration::from_secs(10))
                });
                if let Err(e) = saved {
                    self.publish.paused.store(false, Ordering::Relaxed);
                    return Err(format!("SAVE: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(1500)).await;
                freeze();
                tokio::task::block_in_place(|| server.restart());
                self.publish.paused.store(false, Ordering::Relaxed);
                Ok(Injected {
                    ended: Instant::now(),
                    what: "SAVE, 1.5 s of churn, Redis restarted from the RDB".into(),
                })
            }
        }
    }
}
