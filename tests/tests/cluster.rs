//! The broker on a Redis Cluster (3 masters, 3 replicas, the module on
//! every server): rooms on every shard, presence, recovery, a dead gateway
//! cleaned up by every shard, a master failover, and what the fan-out costs
//! on the cluster bus (sharded Pub/Sub: nothing beyond the room's shard).

use std::time::Duration;

use broker::protocol::ServerFrame;
use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{
    eventually_async, join_since, msg_fields, presence_req, Gateway, Options,
};
use broker_tests::{int, map, text, History, Presence, RoomCount};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn gateway(cluster: &RedisCluster, lease_ms: u64) -> Gateway {
    Gateway::start(
        &cluster.servers[0],
        Options::default()
            .lease_ms(lease_ms)
            .redis_cluster(&cluster.urls()),
    )
    .await
}

fn room_users(cluster: &RedisCluster, room: &str) -> i64 {
    int(&map(&cluster.run(RoomCount::new(room)))["users"])
}

#[tokio::test]
async fn rooms_on_every_shard_presence_and_recovery() {
    let cluster = RedisCluster::start(3);
    let gw1 = gateway(&cluster, 5000).await;
    let gw2 = gateway(&cluster, 5000).await;
    let rooms = cluster.room_per_shard("feed");
    assert_eq!(rooms.len(), 3, "one room per master: {rooms:?}");

    let mut alice = gw1.connect("alice").await;
    let mut bob = gw2.connect("bob").await;
    for room in &rooms {
        alice.join(room).await;
        bob.join(room).await;
    }
    for room in &rooms {
        assert_eq!(alice.publish(room, "m", json!(room)).await, 1);
        let frame = bob.recv_msg().await;
        let (r, _, data, seq, _, from) = msg_fields(&frame);
        assert_eq!((r, seq, data), (room.as_str(), 1, &json!(room)));
        assert_eq!(from.map(|f| f.0.as_str()), Some("alice"));
        let ack = bob.ack(presence_req(room)).await;
        assert_eq!(ack["count"], 2, "{room}: {ack}");
        assert_eq!(
            room_users(&cluster, room),
            2,
            "ROOM.COUNT on {room}'s shard"
        );
    }
    // Each user is online on its own shard; the gateway sums them all.
    for user in ["alice", "bob"] {
        let p = map(&cluster.run(Presence::new(user)));
        assert_eq!(text(&p["status"]), "online", "{user}");
    }
    // PRESENCE on alice's shard knows the rooms there; the gateway gathers
    // the others from every master (`BROKER.USER.ROOMS`).
    let mut everywhere: Vec<String> = rooms.clone();
    everywhere.push("user:alice".into());
    everywhere.sort();
    let her_shard = cluster.master_of("alice").port();
    let on_her_shard: Vec<String> = everywhere
        .iter()
        .filter(|r| cluster.master_of(r).port() == her_shard)
        .cloned()
        .collect();
    let p = map(&cluster.run(Presence::new("alice")));
    let conn = map(&broker_tests::array(&p["conns"])[0]);
    let mut listed: Vec<String> = broker_tests::array(&conn["rooms"])
        .iter()
        .map(text)
        .collect();
    listed.sort();
    assert_eq!(
        listed, on_her_shard,
        "PRESENCE lists the rooms of its shard"
    );
    let p = gw2.admin_get("/api/users/alice/presence").await.json();
    assert_eq!(p["connections"], 1, "{p}");
    assert_eq!(
        p["conns"][0]["conn"].as_str(),
        Some(alice.conn.as_str()),
        "{p}"
    );
    assert_eq!(p["conns"][0]["rooms"], json!(everywhere), "{p}");

    let online = gw1.admin_get("/api/online").await.json();
    assert_eq!(
        (online["users"].as_u64(), online["connections"].as_u64()),
        (Some(2), Some(2)),
        "{online}"
    );
    assert_eq!(
        online["nodes"].as_array().map(Vec::len),
        Some(2),
        "{online}"
    );

    // Bob goes away; what is published meanwhile comes back with `since`.
    let epoch = text(&map(&cluster.run(History::new(&rooms[0])))["epoch"]);
    bob.close().await;
    for n in 2..=4 {
        assert_eq!(alice.publish(&rooms[0], "m", json!(n)).await, n);
    }
    let mut bob = gw1.connect("bob").await;
    let id = bob.send_request(join_since(&rooms[0], 1, &epoch)).await;
    let mut replayed = Vec::new();
    loop {
        match bob.recv().await {
            ServerFrame::Ack { id: got, data } if got == id => {
                assert_eq!(data["recovered"], true, "{data}");
                break;
            }
            f @ ServerFrame::Msg { .. } => replayed.push(msg_fields(&f).3),
            _ => {}
        }
    }
    assert_eq!(replayed, [2, 3, 4]);
}

#[tokio::test]
async fn a_killed_gateway_is_cleaned_up_on_every_shard() {
    let cluster = RedisCluster::start(3);
    let mut gw1 = gateway(&cluster, 1000).await;
    let gw2 = gateway(&cluster, 1000).await;
    let rooms = cluster.room_per_shard("chat");
    let mut alice = gw1.connect("alice").await;
    let mut bob = gw2.connect("bob").await;
    for room in &rooms {
        bob.join(room).await;
        alice.join(room).await;
        let (who, action) = bob.recv_presence(room).await;
        assert_eq!((who.as_str(), action.as_str()), ("alice", "join"));
    }
    gw1.kill();
    for room in &rooms {
        let (who, action) = bob.recv_presence(room).await;
        assert_eq!(
            (who.as_str(), action.as_str()),
            ("alice", "leave"),
            "{room}"
        );
        assert_eq!(room_users(&cluster, room), 1, "{room}: only bob is left");
    }
    let p = map(&cluster.run(Presence::new("alice")));
    assert_eq!(text(&p["status"]), "offline");
    let _ = alice.drain(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_master_failover_keeps_sequence_and_history() {
    let mut cluster = RedisCluster::start(3);
    let gw = gateway(&cluster, 5000).await;
    let room = cluster.room_per_shard("feed").remove(0);
    let mut bob = gw.connect("bob").await;
    bob.join(&room).await;
    for n in 1..=5 {
        assert_eq!(gw.publish(&room, "m", json!(n)).await, n);
        assert_eq!(msg_fields(&bob.recv_msg().await).3, n);
    }
    // Let the replica catch up (WAIT), then take its master away.
    let master = cluster.master_index(&room);
    cluster.wait_replicated(&room);
    assert_eq!(cluster.fail_master_of(&room), master);
    assert_ne!(cluster.master_index(&room), master, "a replica took over");

    // The gateway follows the new topology; the room's sequence goes on and
    // its history is intact.
    let seq = eventually_async(WAIT, "publishing works after the failover", || async {
        let resp = gw
            .admin_post("/api/publish", &json!({"room": room, "ev": "m", "data": 6}))
            .await;
        match resp.status {
            200 => Ok(resp.json()["seq"].as_u64().unwrap_or(0)),
            _ => Err(resp.body),
        }
    })
    .await;
    assert_eq!(seq, 6, "the sequence continues on the promoted replica");
    let h = map(&cluster.run(History::new(&room)));
    assert_eq!(broker_tests::array(&h["messages"]).len(), 6);
    let frame = bob
        .recv_matching(WAIT, "message 6", |f| matches!(f, ServerFrame::Msg { .. }))
        .await;
    assert_eq!(msg_fields(&frame).3, 6);
    bob.ping().await;
}

/// Pub/Sub messages sent over the cluster bus so far, summed over the
/// servers: classic (`PUBLISH`) and sharded (`SPUBLISH`) ones.
fn bus_publishes(cluster: &RedisCluster) -> i64 {
    cluster
        .servers
        .iter()
        .map(|s| {
            let info = text(&broker_tests::ok(&mut s.client(), &["CLUSTER", "INFO"]));
            info.lines()
                .filter_map(|l| {
                    l.strip_prefix("cluster_stats_messages_publish_sent:")
                        .or_else(|| l.strip_prefix("cluster_stats_messages_publishshard_sent:"))
                })
                .filter_map(|v| v.trim().parse::<i64>().ok())
                .sum::<i64>()
        })
        .sum()
}

/// Cluster-bus messages per publish on a cluster of `masters` masters with
/// a replica each: `(classic PUBLISH, broker publish)`, 100 of each, the
/// broker's through a gateway with a member on another gateway.
async fn bus_cost(masters: usize) -> (f64, f64) {
    let cluster = RedisCluster::start(masters);
    let gw = gateway(&cluster, 5000).await;
    let other = gateway(&cluster, 5000).await;
    let room = cluster.room_per_shard("feed").remove(0);
    let mut bob = other.connect("bob").await;
    bob.join(&room).await;
    let n = 100;
    let before = bus_publishes(&cluster);
    for i in 0..n {
        cluster.on(&room, &["PUBLISH", "some-channel", &i.to_string()]);
    }
    let classic = (bus_publishes(&cluster) - before) as f64 / f64::from(n);
    let before = bus_publishes(&cluster);
    for i in 1..=n {
        gw.publish(&room, "m", json!(i)).await;
    }
    for _ in 1..=n {
        bob.recv_msg().await;
    }
    let broker = (bus_publishes(&cluster) - before) as f64 / f64::from(n);
    let replicas = broker_tests::info_field(
        &mut cluster.master_of(&room).client(),
        "replication",
        "connected_slaves",
    );
    println!(
        "cluster bus messages per publish, {masters} masters + {masters} replicas: \
         classic PUBLISH {classic:.2}, broker publish {broker:.2} \
         (the room's master has {replicas:?} replicas)"
    );
    (classic, broker)
}

#[tokio::test]
async fn fan_out_stays_on_the_rooms_shard() {
    let (classic, broker) = bus_cost(3).await;
    // Classic PUBLISH is relayed to the other nodes (5 here; 4 while a bus
    // link is being re-established, as seen once in CI). The broker's
    // sharded publish reaches only the shard's one replica.
    assert!(classic >= 3.0, "{classic}");
    assert!(broker <= 1.0, "{broker}");
}

#[tokio::test]
async fn fan_out_cost_does_not_grow_with_the_cluster() {
    let (classic, broker) = bus_cost(6).await;
    assert!(classic >= 8.0, "{classic}");
    assert!(broker <= 1.0, "{broker}");
}
