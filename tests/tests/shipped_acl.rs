//! The Redis ACL that `config/redis.conf` ships for the gateways (the
//! commented `user broker-gateway ...` line) is enough for everything a
//! gateway does, on one Redis and on a cluster: readiness, connections,
//! rooms, publishing, presence, history, the admin API, leases and the
//! node's (sharded) channel. Read from the file, so the two cannot drift.

use std::time::Duration;

use broker::protocol::{ClientFrame, ServerFrame};
use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{http_get, msg_fields, Gateway, Options};
use broker_tests::RedisServer;
use serde_json::json;

const PASSWORD: &str = "acl-test-password";

/// The `ACL SETUSER` arguments of the shipped user `name`
/// (`broker-gateway`, `broker-backend`), with the test's password.
fn shipped_user(name: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/redis.conf");
    let conf = std::fs::read_to_string(path).expect("read config/redis.conf");
    let prefix = format!("user {name} ");
    let line = conf
        .lines()
        .find_map(|l| l.trim_start_matches('#').trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("config/redis.conf names a {name} user"));
    std::iter::once(name.to_string())
        .chain(line.split_whitespace().map(|rule| match rule {
            r if r.starts_with('>') => format!(">{PASSWORD}"),
            r => r.to_string(),
        }))
        .collect()
}

/// Creates the shipped user on `server` (the default user stays on: the
/// fixtures inspect Redis with it).
fn add_user(server: &RedisServer) {
    add_shipped_user(server, "broker-gateway");
}

/// Creates the shipped user `name` on `server`.
fn add_shipped_user(server: &RedisServer, name: &str) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER");
    for arg in shipped_user(name) {
        cmd.arg(arg);
    }
    let reply: redis::Value = cmd.query(&mut server.client()).expect("ACL SETUSER");
    assert_eq!(reply, redis::Value::Okay);
}

/// `url` with the shipped user's credentials.
fn with_user(url: &str) -> String {
    url.replacen(
        "redis://",
        &format!("redis://broker-gateway:{PASSWORD}@"),
        1,
    )
}

/// What a gateway does for its clients and its backends, through `gw`.
async fn everything_works(gw: &Gateway, room: &str) {
    assert_eq!(http_get(gw.addr, "/readyz", None).await.status, 200);
    let mut alice = gw.connect("alice").await;
    alice.join(room).await;
    let mut bob = gw.connect("bob").await;
    bob.join(room).await;
    assert_eq!(alice.recv_presence(room).await.1, "join");
    let seq = alice.publish(room, "m", json!("hi")).await;
    let frame = bob
        .recv_matching(Duration::from_secs(5), "alice's message", |f| {
            matches!(f, ServerFrame::Msg { .. })
        })
        .await;
    assert_eq!(msg_fields(&frame).3, seq);
    let http_seq = gw.publish(room, "m", json!("from a backend")).await;
    assert_eq!(http_seq, seq + 1);
    let presence = alice.ack(broker_tests::gateway::presence_req(room)).await;
    assert_eq!(presence["count"], 2, "{presence}");
    let history = alice
        .ack(broker_tests::gateway::history(room, None, None))
        .await;
    assert_eq!(history["seq"], http_seq, "{history}");
    for path in [
        "/api/online".to_string(),
        "/api/users/alice/presence".to_string(),
        format!("/api/rooms/{room}/presence"),
    ] {
        let resp = gw.admin_get(&path).await;
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
    }
    let resp = gw
        .admin_post("/api/broadcast", &json!({"ev": "notice", "data": 1}))
        .await;
    assert_eq!(resp.status, 200, "broadcast: {resp:?}");
    // A client's rpc is appended to broker:rpc by the gateway (XADD); the
    // backend's answer is the test's concern, not the ACL's: it times out.
    alice
        .send(&ClientFrame::Rpc {
            id: 990,
            method: "acl:check".into(),
            data: broker_tests::gateway::msgpack(&json!({})),
        })
        .await;
    let resp = gw
        .admin_post("/api/users/bob/join", &json!({"room": "chat:acl-joined"}))
        .await;
    assert_eq!(resp.status, 200, "user join: {resp:?}");
    let joined = bob
        .recv_matching(Duration::from_secs(5), "joined", |f| {
            matches!(f, ServerFrame::Joined { .. })
        })
        .await;
    assert!(matches!(joined, ServerFrame::Joined { .. }));
    let resp = gw.admin_post("/api/users/bob/disconnect", &json!({})).await;
    assert_eq!(resp.status, 200, "disconnect: {resp:?}");
    bob.expect_close().await;
    let log = gw.log();
    assert!(!log.contains("NOPERM"), "a command the ACL refuses:\n{log}");
}

#[tokio::test]
async fn the_shipped_acl_serves_a_gateway_on_one_redis() {
    let redis = RedisServer::start();
    add_user(&redis);
    let url = with_user(&redis.url());
    let gw = Gateway::start(&redis, Options::default().lease_ms(1000).redis_url(&url)).await;
    everything_works(&gw, "chat:acl").await;
}

#[tokio::test]
async fn the_shipped_acl_serves_a_gateway_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    for server in &cluster.servers {
        add_user(server);
    }
    let urls: Vec<String> = cluster.urls().iter().map(|u| with_user(u)).collect();
    let gw = Gateway::start(
        &cluster.servers[0],
        Options::default().lease_ms(1000).redis_cluster(&urls),
    )
    .await;
    for room in cluster.room_per_shard("chat") {
        everything_works(&gw, &room).await;
    }
}

#[tokio::test]
async fn the_shipped_acl_serves_a_backend() {
    // What a backend does (docs/BACKENDS.md, clients/node): publish, read
    // presence, decide memberships, answer rpcs, consume the lifecycle
    // stream and the rpc stream, as the shipped broker-backend user.
    let redis = RedisServer::start();
    add_user(&redis);
    add_shipped_user(&redis, "broker-backend");
    let gw = Gateway::start(
        &redis,
        Options::default()
            .lease_ms(1000)
            .redis_url(&with_user(&redis.url())),
    )
    .await;
    let mut alice = gw.connect("alice").await;
    let url = redis.url().replacen(
        "redis://",
        &format!("redis://broker-backend:{PASSWORD}@"),
        1,
    );
    let mut backend = redis::Client::open(url).unwrap().get_connection().unwrap();
    // `ok` panics with the command and the error (a NOPERM names the command).
    let run = broker_tests::ok;
    run(
        &mut backend,
        &["BROKER.PUBLISH", "chat:acl", "m", "1", "FORMAT", "json"],
    );
    run(&mut backend, &["BROKER.PRESENCE", "alice"]);
    run(&mut backend, &["BROKER.ROOM.COUNT", "chat:acl"]);
    run(&mut backend, &["BROKER.USER.JOIN", "alice", "chat:acl-b"]);
    run(&mut backend, &["BROKER.USER.LEAVE", "alice", "chat:acl-b"]);
    run(&mut backend, &["BROKER.EVENTS.STREAM"]);
    run(
        &mut backend,
        &["XGROUP", "CREATE", "broker:events", "crm", "0", "MKSTREAM"],
    );
    let read = run(
        &mut backend,
        &[
            "XREADGROUP",
            "GROUP",
            "crm",
            "w1",
            "COUNT",
            "1",
            "STREAMS",
            "broker:events",
            ">",
        ],
    );
    let entry_id = broker_tests::text(
        &broker_tests::array(
            &broker_tests::array(&broker_tests::array(&broker_tests::array(&read)[0])[1])[0],
        )[0],
    );
    run(&mut backend, &["XACK", "broker:events", "crm", &entry_id]);
    run(
        &mut backend,
        &[
            "XGROUP",
            "CREATE",
            "broker:rpc",
            "backends",
            "$",
            "MKSTREAM",
        ],
    );
    alice
        .send(&ClientFrame::Rpc {
            id: 7,
            method: "acl:check".into(),
            data: broker_tests::gateway::msgpack(&json!({})),
        })
        .await;
    let read = run(
        &mut backend,
        &[
            "XREADGROUP",
            "GROUP",
            "backends",
            "b1",
            "COUNT",
            "1",
            "BLOCK",
            "5000",
            "STREAMS",
            "broker:rpc",
            ">",
        ],
    );
    assert!(format!("{read:?}").contains("acl:check"), "{read:?}");
    run(
        &mut backend,
        &[
            "BROKER.RPC.REPLY",
            &alice.conn,
            "7",
            "\"ok\"",
            "FORMAT",
            "json",
        ],
    );
    let ack = alice
        .recv_matching(Duration::from_secs(5), "the rpc answer", |f| {
            matches!(f, ServerFrame::Ack { id: 7, .. })
        })
        .await;
    assert!(matches!(ack, ServerFrame::Ack { .. }));
    run(&mut backend, &["BROKER.KICK", "alice"]);
    let refused = redis::cmd("BROKER.CONN.OPEN")
        .arg("mallory")
        .arg("n1.abcd.1")
        .arg("n1")
        .arg("127.0.0.1")
        .query::<redis::Value>(&mut backend)
        .unwrap_err();
    assert!(refused.to_string().contains("NOPERM"), "{refused}");
}
