//! The lifecycle stream (contract section 7, docs/BACKENDS.md): the module
//! appends connect, online, join, leave, disconnect and offline entries in
//! the command that changes the state — with the reason the gateway gives,
//! and `node_lost` for every connection of a node that died.

use std::collections::BTreeMap;
use std::time::Duration;

use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{leave, token, Gateway, Options};
use broker_tests::{array, eventually, eventually_within, text, RedisServer};
use redis::Value;

/// One stream entry's fields.
type Entry = BTreeMap<String, String>;

/// Every entry of `stream` on `redis`, oldest first.
fn entries(redis: &RedisServer, stream: &str) -> Vec<Entry> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut redis.client())
        .expect("XRANGE");
    array(&reply)
        .iter()
        .map(|entry| {
            let parts = array(entry);
            let fields = array(&parts[1]);
            fields
                .chunks(2)
                .map(|kv| (text(&kv[0]), text(&kv[1])))
                .collect()
        })
        .collect()
}

/// The entries about `conn`, as `type[/room][/reason]` words.
fn story(entries: &[Entry], conn: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["conn"] == conn)
        .map(|e| {
            let mut word = e["type"].clone();
            for extra in ["room", "reason"] {
                if let Some(v) = e.get(extra) {
                    word.push('/');
                    word.push_str(v);
                }
            }
            word
        })
        .collect()
}

#[tokio::test]
async fn a_connection_s_life_is_in_the_stream_in_order() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().node("gw-life")).await;
    let mut alice = gw.connect("alice").await;
    let conn = alice.conn.clone();
    alice.join("chat:lobby").await;
    alice.join("chat:side").await;
    alice.request(leave("chat:side")).await;
    alice.close().await;
    let all = eventually("alice's disconnect is in the stream", || {
        let all = entries(&redis, "broker:events");
        if story(&all, &conn).iter().any(|w| w.starts_with("offline")) {
            Ok(all)
        } else {
            Err(format!("{:?}", story(&all, &conn)))
        }
    });
    assert_eq!(
        story(&all, &conn),
        [
            "connect",
            "online",
            "join/chat:lobby",
            "join/chat:side",
            "leave/chat:side/client",
            "leave/chat:lobby/client",
            "disconnect/client",
            "offline/client",
        ],
        "personal rooms are left out"
    );
    let disconnect = all
        .iter()
        .find(|e| e["conn"] == conn && e["type"] == "disconnect")
        .unwrap();
    assert_eq!(disconnect["user"], "alice");
    assert_eq!(disconnect["node"], "gw-life");
    let duration: u64 = disconnect["duration_ms"].parse().unwrap();
    assert!(duration < 60_000, "{duration}");
    let ts: u64 = disconnect["ts"].parse().unwrap();
    assert!(ts > 1_700_000_000_000, "ms since the epoch: {ts}");
    let mut con = redis.client();
    let name: String = redis::cmd("BROKER.EVENTS.STREAM").query(&mut con).unwrap();
    assert_eq!(name, "broker:events");
}

#[tokio::test]
async fn a_second_connection_is_no_new_online_and_a_kick_says_kicked() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let a1 = gw.connect("bob").await;
    let a2 = gw.connect("bob").await;
    let mut con = redis.client();
    let told: i64 = redis::cmd("BROKER.KICK")
        .arg("bob")
        .query(&mut con)
        .unwrap();
    assert_eq!(told, 2);
    let all = eventually("both kicked connections are gone", || {
        let all = entries(&redis, "broker:events");
        let offline = all.iter().filter(|e| e["type"] == "offline").count();
        if offline == 1 && story(&all, &a2.conn).len() >= 2 && story(&all, &a1.conn).len() >= 2 {
            Ok(all)
        } else {
            Err(format!("{all:?}"))
        }
    });
    assert_eq!(story(&all, &a1.conn)[..2], ["connect", "online"]);
    assert_eq!(
        story(&all, &a2.conn)[0],
        "connect",
        "bob was online already"
    );
    for conn in [&a1.conn, &a2.conn] {
        assert!(
            story(&all, conn).contains(&"disconnect/kicked".to_string()),
            "{:?}",
            story(&all, conn)
        );
    }
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str()).collect();
    assert_eq!(types.iter().filter(|t| **t == "online").count(), 1);
    assert_eq!(
        types.last(),
        Some(&"offline"),
        "offline after the last disconnect"
    );
}

#[tokio::test]
async fn an_expired_token_says_token_expired() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().leeway_s(0)).await;
    let client = gw.connect_token(&token("carol", 2, &[], &[])).await;
    let all = eventually_within(Duration::from_secs(15), "carol's token ran out", || {
        let all = entries(&redis, "broker:events");
        let s = story(&all, &client.conn);
        if s.iter().any(|w| w.starts_with("disconnect")) {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    assert!(
        all.contains(&"disconnect/token_expired".to_string()),
        "{all:?}"
    );
}

#[tokio::test]
async fn a_killed_node_leaves_node_lost_entries_for_each_of_its_connections() {
    let redis = RedisServer::start();
    let mut dying = Gateway::start(
        &redis,
        Options::default()
            .node("gw-dying")
            .lease_ms(1000)
            .max_conns_per_ip(1000),
    )
    .await;
    let other = Gateway::start(
        &redis,
        Options::default().node("gw-staying").max_conns_per_ip(1000),
    )
    .await;
    let mut conns = Vec::new();
    let mut clients = Vec::new();
    for i in 0..60 {
        let mut c = dying.connect(&format!("u{i}")).await;
        c.join("chat:crowd").await;
        conns.push(c.conn.clone());
        clients.push(c);
    }
    let mut staying = other.connect("u0").await; // u0 stays online elsewhere
    staying.join("chat:crowd").await;
    dying.kill();
    let all = eventually_within(Duration::from_secs(15), "the lease ran out", || {
        let all = entries(&redis, "broker:events");
        let lost = all
            .iter()
            .filter(|e| {
                e["type"] == "disconnect"
                    && e.get("reason").map(String::as_str) == Some("node_lost")
            })
            .count();
        if lost == conns.len() {
            Ok(all)
        } else {
            Err(format!("{lost} node_lost disconnects"))
        }
    });
    for conn in &conns {
        let s = story(&all, conn);
        assert_eq!(
            &s[3..5],
            ["leave/chat:crowd/node_lost", "disconnect/node_lost"],
            "{conn}: {s:?}"
        );
        assert!(all
            .iter()
            .any(|e| e["conn"] == *conn && e["node"] == "gw-dying"));
    }
    let offline: Vec<&str> = all
        .iter()
        .filter(|e| e["type"] == "offline")
        .inspect(|e| assert_eq!(e["reason"], "node_lost", "{e:?}"))
        .map(|e| e["user"].as_str())
        .collect();
    assert_eq!(offline.len(), 59, "every user but u0, who is still online");
    assert!(!offline.contains(&"u0"));
    assert!(story(&all, &staying.conn)
        .iter()
        .all(|w| !w.starts_with("disconnect")));
    drop(clients);
}

#[tokio::test]
async fn events_0_writes_no_stream() {
    let redis = RedisServer::builder().module_args(["EVENTS", "0"]).start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice = gw.connect("alice").await;
    alice.join("chat:x").await;
    alice.close().await;
    let mut con = redis.client();
    eventually("alice is gone", || {
        let online: i64 = redis::cmd("EXISTS")
            .arg("broker:events")
            .query(&mut redis.client())
            .unwrap();
        let users = broker_tests::gateway::online(&redis).0;
        if users == 0 && online == 0 {
            Ok(())
        } else {
            Err(format!("users {users}, stream exists {online}"))
        }
    });
    let name: Value = redis::cmd("BROKER.EVENTS.STREAM").query(&mut con).unwrap();
    assert_eq!(name, Value::Nil);
}

#[test]
fn the_stream_is_capped_replicated_and_not_written_twice_by_a_replay() {
    let master = RedisServer::builder()
        .module_args(["EVENTS", "50"])
        .appendonly()
        .start();
    let replica = RedisServer::builder()
        .module_args(["EVENTS", "50"])
        .replica_of(&master)
        .start();
    let mut con = master.client();
    redis::cmd("BROKER.NODE.LEASE")
        .arg("n1")
        .arg(60_000)
        .query::<Value>(&mut con)
        .unwrap();
    for i in 0..200 {
        let (user, conn) = (format!("u{i}"), format!("n1.abcd.{i}"));
        redis::cmd("BROKER.CONN.OPEN")
            .arg(&user)
            .arg(&conn)
            .arg("n1")
            .arg("127.0.0.1")
            .query::<Value>(&mut con)
            .unwrap();
        redis::cmd("BROKER.CONN.CLOSE")
            .arg(&user)
            .arg(&conn)
            .arg("REASON")
            .arg("idle")
            .query::<Value>(&mut con)
            .unwrap();
    }
    let len: u64 = redis::cmd("XLEN")
        .arg("broker:events")
        .query(&mut con)
        .unwrap();
    assert!(
        (50..200).contains(&len),
        "capped near 50 with MAXLEN ~: {len}"
    );
    let last = entries(&master, "broker:events").pop().unwrap();
    assert_eq!(last["type"], "offline");
    assert_eq!(last["user"], "u199");
    let ids = |server: &RedisServer| -> Vec<String> {
        let reply: Value = redis::cmd("XRANGE")
            .arg("broker:events")
            .arg("-")
            .arg("+")
            .query(&mut server.client())
            .unwrap();
        array(&reply).iter().map(|e| text(&array(e)[0])).collect()
    };
    let on_master = ids(&master);
    eventually("the replica has the master's stream", || {
        let on_replica = ids(&replica);
        if on_replica == on_master {
            Ok(())
        } else {
            Err(format!(
                "{} vs {} entries",
                on_replica.len(),
                on_master.len()
            ))
        }
    });
    let disconnects = entries(&master, "broker:events")
        .into_iter()
        .filter(|e| e["type"] == "disconnect")
        .all(|e| e["reason"] == "idle");
    assert!(disconnects, "REASON is carried into the entries");
    // A restart replays the AOF: the module's commands run again while
    // loading, and must not append a second copy of their events.
    let mut master = master;
    master.restart();
    assert_eq!(
        ids(&master),
        on_master,
        "no entry added or lost by the replay"
    );
}

#[test]
fn on_a_cluster_each_master_writes_its_own_stream_in_its_own_slots() {
    let cluster = RedisCluster::start(3);
    let mut names = Vec::new();
    for server in &cluster.servers[..3] {
        let name: String = redis::cmd("BROKER.EVENTS.STREAM")
            .query(&mut server.client())
            .unwrap();
        let slot = broker::names::key_slot(name.as_bytes());
        let owner = cluster.master_of(&name);
        assert_eq!(
            owner.port(),
            server.port(),
            "{name} (slot {slot}) is served by its writer"
        );
        names.push(name);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "{names:?}");
    // A connection is opened on its user's shard and joins on the room's.
    for server in &cluster.servers[..3] {
        redis::cmd("BROKER.NODE.LEASE")
            .arg("n1")
            .arg(60_000)
            .query::<Value>(&mut server.client())
            .unwrap();
    }
    cluster.on(
        "alice",
        &["BROKER.CONN.OPEN", "alice", "n1.abcd.1", "n1", "127.0.0.1"],
    );
    let room = cluster
        .room_per_shard("chat")
        .into_iter()
        .find(|r| cluster.master_index(r) != cluster.master_index("alice"))
        .unwrap();
    cluster.on(&room, &["BROKER.JOIN", &room, "alice", "n1.abcd.1", "n1"]);
    let stream_of = |key: &str| -> (usize, String) {
        let i = cluster.master_index(key);
        let server = &cluster.servers[i];
        let name: String = redis::cmd("BROKER.EVENTS.STREAM")
            .query(&mut server.client())
            .unwrap();
        (i, name)
    };
    let (ui, user_stream) = stream_of("alice");
    let (ri, room_stream) = stream_of(&room);
    let user_entries = entries(&cluster.servers[ui], &user_stream);
    let types: Vec<&str> = user_entries.iter().map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["connect", "online"]);
    let room_entries = entries(&cluster.servers[ri], &room_stream);
    assert_eq!(room_entries.len(), 1, "{room_entries:?}");
    assert_eq!(room_entries[0]["type"], "join");
    assert_eq!(room_entries[0]["room"], room);
}
