//! A local Redis Cluster for the cluster tests: 3 masters and 3 replicas
//! on free loopback ports, each with the module loaded, joined by
//! `redis-cli --cluster create`.

use std::time::{Duration, Instant};

use redis::Value;

use crate::{array, int, ok, text, RedisServer};

/// How long the cluster may take to agree on its slots after creation or a
/// failover.
const SETTLE: Duration = Duration::from_secs(30);

/// A running cluster; every server is killed on `Drop`.
pub struct RedisCluster {
    /// The servers, masters first as `--cluster create` paired them.
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` masters with one replica each and waits until
    /// `cluster_state:ok` everywhere.
    ///
    /// # Panics
    /// When the cluster does not form within 30 s.
    pub fn start(masters: usize) -> RedisCluster {
        let servers: Vec<RedisServer> = (0..masters * 2)
            .map(|_| {
                RedisServer::builder()
                    .server_args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ])
                    .start()
            })
            .collect();
        let mut cmd = std::process::Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for s in &servers {
            cmd.arg(format!("127.0.0.1:{}", s.port()));
        }
        cmd.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = cmd.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { servers };
        cluster.wait_ok();
        cluster
    }

    /// Every server's `redis://` URL (the gateway's seeds).
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// Waits until every running server reports `cluster_state:ok` and
    /// agrees on which masters serve all 16384 slots.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let problem = self.servers.iter().find_map(|s| {
                let Ok(mut con) = crate::try_connect(&s.url(), Duration::from_secs(1)) else {
                    return None; // stopped on purpose
                };
                let info = text(&ok(&mut con, &["CLUSTER", "INFO"]));
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    return Some(format!("{}: {info}", s.port()));
                }
                None
            });
            match problem {
                None => return,
                Some(p) if Instant::now() > deadline => {
                    panic!("the cluster is not ok within {SETTLE:?}: {p}")
                }
                Some(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Waits until the master of `key` streams its writes to a replica and
    /// that replica has acknowledged all of them (`WAIT 1`), so a failover
    /// that follows loses nothing. The replica's first sync can take the
    /// diskless-sync delay (5 s) after the cluster formed.
    ///
    /// # Panics
    /// When no replica is online and acknowledging within 30 s.
    pub fn wait_replicated(&self, key: &str) {
        let mut master = self.master_of(key).client();
        let deadline = Instant::now() + SETTLE;
        loop {
            let info = text(&ok(&mut master, &["INFO", "replication"]));
            let online = info
                .lines()
                .any(|l| l.starts_with("slave") && l.contains("state=online"));
            if online && int(&ok(&mut master, &["WAIT", "1", "1000"])) >= 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no replica of {key}'s master acknowledges within {SETTLE:?}: {info}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the master of `key` and waits until its replica has taken over
    /// and the cluster is ok again; returns the stopped server's index.
    ///
    /// # Panics
    /// When no failover happens within 30 s.
    pub fn fail_master_of(&mut self, key: &str) -> usize {
        let old = self.master_index(key);
        let old_port = self.servers[old].port();
        self.servers[old].stop();
        let deadline = Instant::now() + SETTLE;
        while self.master_port(key) == old_port {
            assert!(Instant::now() < deadline, "no failover within {SETTLE:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_ok();
        old
    }

    /// Kills the master of `key` with SIGKILL (no `SHUTDOWN`: its clients
    /// see a dead address, not a closed connection), waits until its
    /// replica has taken over and every live server reports
    /// `cluster_state:ok`, and returns the killed server's index and when
    /// the cluster was seen ok again.
    ///
    /// # Panics
    /// When no failover happens within 30 s.
    pub fn kill_master_of(&mut self, key: &str) -> (usize, Instant) {
        let old = self.master_index(key);
        let old_port = self.servers[old].port();
        // A child module sees the crate root's private fields.
        if let Some(mut child) = self.servers[old].child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
        let deadline = Instant::now() + SETTLE;
        while self.master_port(key) == old_port {
            assert!(Instant::now() < deadline, "no failover within {SETTLE:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_ok();
        (old, Instant::now())
    }

    /// The server that is master for `key`'s slot now.
    ///
    /// # Panics
    /// When no running server claims it.
    pub fn master_of(&self, key: &str) -> &RedisServer {
        let port = self.master_port(key);
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .unwrap_or_else(|| panic!("no server on port {port}"))
    }

    /// Index in [`RedisCluster::servers`] of the master for `key`.
    pub fn master_index(&self, key: &str) -> usize {
        let port = self.master_port(key);
        self.servers
            .iter()
            .position(|s| s.port() == port)
            .unwrap_or_else(|| panic!("no server on port {port}"))
    }

    fn master_port(&self, key: &str) -> u16 {
        for s in &self.servers {
            let Ok(mut con) = crate::try_connect(&s.url(), Duration::from_secs(1)) else {
                continue;
            };
            let slot = int(&ok(&mut con, &["CLUSTER", "KEYSLOT", key]));
            for range in array(&ok(&mut con, &["CLUSTER", "SLOTS"])) {
                let range = array(&range);
                if int(&range[0]) <= slot && slot <= int(&range[1]) {
                    let master = array(&range[2]);
                    return int(&master[1]) as u16;
                }
            }
        }
        panic!("no server knows the master of {key}");
    }

    /// Runs a command on the master of `key`.
    pub fn on(&self, key: &str, args: &[&str]) -> Value {
        ok(&mut self.master_of(key).client(), args)
    }

    /// Runs a typed command on the master of its first key (the room or
    /// user it is about), as a cluster client routes it.
    ///
    /// # Panics
    /// For a keyless command, or on an error reply.
    pub fn run<C: broker::command::Command>(&self, command: C) -> Value {
        let first = usize::try_from(C::KEYS.first).unwrap_or(0);
        assert!(first > 0, "{} has no key to route by", C::NAME);
        let key = broker::command::Command::to_args(&command)
            .get(first - 1)
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_else(|| panic!("{} without its key", C::NAME));
        crate::run(&mut self.master_of(&key).client(), command)
    }

    /// Room names of namespace `ns`, one per master, so a test spans every
    /// shard.
    pub fn room_per_shard(&self, ns: &str) -> Vec<String> {
        let mut seen = std::collections::BTreeMap::new();
        for n in 0.. {
            let room = format!("{ns}:r{n}");
            seen.entry(self.master_port(&room)).or_insert(room);
            if seen.len() == self.servers.len() / 2 || n > 1000 {
                break;
            }
        }
        seen.into_values().collect()
    }
}
