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

/// A server started for a cluster (cluster mode, 2 s node timeout).
fn cluster_server() -> RedisServer {
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
}

/// Runs `redis-cli` with `args`; returns its output.
///
/// # Panics
/// When it cannot run or fails.
pub fn redis_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(args)
        .output()
        .expect("run redis-cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("[ERR]"),
        "redis-cli {args:?} failed:\n{text}"
    );
    text
}

impl RedisCluster {
    /// Starts `masters` masters with one replica each and waits until
    /// `cluster_state:ok` everywhere.
    ///
    /// # Panics
    /// When the cluster does not form within 30 s.
    pub fn start(masters: usize) -> RedisCluster {
        let servers: Vec<RedisServer> = (0..masters * 2).map(|_| cluster_server()).collect();
        let addrs: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        redis_cli(&args);
        let cluster = RedisCluster { servers };
        cluster.wait_ok();
        cluster
    }

    /// Adds a master without slots and a replica of it (`redis-cli
    /// --cluster add-node`, then `--cluster-slave`), waits until every
    /// server knows both and the replica is in sync; returns the new
    /// master's index in [`RedisCluster::servers`].
    ///
    /// # Panics
    /// When `redis-cli` fails or the nodes do not join within 30 s.
    pub fn add_master(&mut self) -> usize {
        let seed = format!("127.0.0.1:{}", self.servers[0].port());
        let master = cluster_server();
        let addr = format!("127.0.0.1:{}", master.port());
        redis_cli(&["--cluster", "add-node", &addr, &seed]);
        let id = text(&ok(&mut master.client(), &["CLUSTER", "MYID"]));
        self.servers.push(master);
        self.wait_known(&id);
        let replica = cluster_server();
        let replica_addr = format!("127.0.0.1:{}", replica.port());
        redis_cli(&[
            "--cluster",
            "add-node",
            &replica_addr,
            &seed,
            "--cluster-slave",
            "--cluster-master-id",
            &id,
        ]);
        let replica_id = text(&ok(&mut replica.client(), &["CLUSTER", "MYID"]));
        self.servers.push(replica);
        self.wait_known(&replica_id);
        let index = self.servers.len() - 2;
        let deadline = Instant::now() + SETTLE;
        loop {
            let info = text(&ok(
                &mut self.servers[index].client(),
                &["INFO", "replication"],
            ));
            if info.contains("state=online") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new replica is not in sync: {info}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        index
    }

    /// Waits until every running server lists node `id` in `CLUSTER NODES`.
    fn wait_known(&self, id: &str) {
        let deadline = Instant::now() + SETTLE;
        while !self.servers.iter().all(|s| {
            crate::try_connect(&s.url(), Duration::from_secs(1))
                .is_ok_and(|mut con| text(&ok(&mut con, &["CLUSTER", "NODES"])).contains(id))
        }) {
            assert!(
                Instant::now() < deadline,
                "node {id} is not known within {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cluster node id of server `index`.
    pub fn node_id(&self, index: usize) -> String {
        text(&ok(&mut self.servers[index].client(), &["CLUSTER", "MYID"]))
    }

    /// How many slots server `index` serves as a master.
    pub fn slot_count(&self, index: usize) -> i64 {
        let port = i64::from(self.servers[index].port());
        array(&ok(&mut self.servers[0].client(), &["CLUSTER", "SLOTS"]))
            .iter()
            .map(array)
            .filter(|range| int(&array(&range[2])[1]) == port)
            .map(|range| int(&range[1]) - int(&range[0]) + 1)
            .sum()
    }

    /// The first `n` names `<prefix><i>` whose hash slot master `index`
    /// serves now.
    pub fn names_on(&self, index: usize, prefix: &str, n: usize) -> Vec<String> {
        let port = i64::from(self.servers[index].port());
        let ranges: Vec<(i64, i64)> =
            array(&ok(&mut self.servers[0].client(), &["CLUSTER", "SLOTS"]))
                .iter()
                .map(array)
                .filter(|range| int(&array(&range[2])[1]) == port)
                .map(|range| (int(&range[0]), int(&range[1])))
                .collect();
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .filter(|name| {
                let slot = i64::from(broker::names::key_slot(name.as_bytes()));
                ranges.iter().any(|&(lo, hi)| lo <= slot && slot <= hi)
            })
            .take(n)
            .collect()
    }

    /// The `redis-cli` arguments that move `slots` slots from master `from`
    /// to master `to` (`--cluster reshard`: keys move with `MIGRATE`, 10 per
    /// call); run them with [`redis_cli`].
    pub fn reshard_args(&self, from: usize, to: usize, slots: i64) -> Vec<String> {
        [
            "--cluster".to_string(),
            "reshard".into(),
            format!("127.0.0.1:{}", self.servers[from].port()),
            "--cluster-from".into(),
            self.node_id(from),
            "--cluster-to".into(),
            self.node_id(to),
            "--cluster-slots".into(),
            slots.to_string(),
            "--cluster-yes".into(),
            "--cluster-pipeline".into(),
            "10".into(),
        ]
        .into()
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
