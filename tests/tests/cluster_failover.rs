//! A master of a 3+3 Redis Cluster killed with SIGKILL (not stopped: its
//! clients see a dead address, not a closed connection). The gateway must
//! follow the promoted replica: publishing into the room works again soon
//! after `cluster_state:ok`, the room's sequence goes on, and the node's
//! sharded subscription moves to the new master so members get new
//! messages live. docs/OPERATIONS.md ("Cluster failover").

use std::time::{Duration, Instant};

use broker::protocol::ServerFrame;
use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{msg_fields, publish, Client, Gateway, Options};
use serde_json::json;

/// How long after `cluster_state:ok` publishing must work again.
const RECOVERY: Duration = Duration::from_secs(10);

/// Publishes `n` as `client` until it is acked or `deadline` passes;
/// returns the ack's seq.
async fn publish_until(client: &mut Client, room: &str, n: u64, deadline: Instant) -> u64 {
    let mut last = String::new();
    while Instant::now() < deadline {
        match client.request(publish(room, "m", &json!(n))).await {
            ServerFrame::Ack { data, .. } => {
                return data["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("pub ack has a seq: {data}"))
            }
            other => last = format!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pub {n} into {room} not acked in time; last answer: {last}");
}

/// `POST /api/publish` until it answers 200 or `deadline` passes; returns
/// the seq.
async fn http_publish_until(gw: &Gateway, room: &str, n: u64, deadline: Instant) -> u64 {
    let mut last = String::new();
    while Instant::now() < deadline {
        let resp = gw
            .admin_post("/api/publish", &json!({"room": room, "ev": "m", "data": n}))
            .await;
        if resp.status == 200 {
            return resp.json()["seq"].as_u64().unwrap_or(0);
        }
        last = format!("{} {}", resp.status, resp.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("POST /api/publish {n} into {room} not 200 in time; last answer: {last}");
}

/// The `msg` frames of `room` that `client` receives within `wait`, until
/// it has seen `upto`; their seqs in arrival order.
async fn seqs_until(client: &mut Client, room: &str, upto: u64, wait: Duration) -> Vec<u64> {
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    while !seen.contains(&upto) {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_within(left).await {
            Some(frame @ ServerFrame::Msg { .. }) => {
                let (r, _, _, seq, _, _) = msg_fields(&frame);
                if r == room {
                    seen.push(seq);
                }
            }
            Some(_) => {}
            None => panic!(
                "{}: no message {upto} of {room} within {wait:?}; got {seen:?}",
                client.user
            ),
        }
    }
    seen
}

#[tokio::test]
async fn a_killed_master_is_followed_to_its_promoted_replica() {
    let mut cluster = RedisCluster::start(3);
    // The room whose master is the first seed: the dead server is also the
    // first address the gateway was given.
    let seed_port = cluster.servers[0].port();
    let room = cluster
        .room_per_shard("feed")
        .into_iter()
        .find(|r| cluster.master_of(r).port() == seed_port)
        .unwrap_or_else(|| panic!("no room on the first seed (port {seed_port})"));
    // A lease longer than the failover (node timeout 2 s + election): a
    // lease that runs out on the dead shard drops the node's members there
    // until it re-registers them, which is another matter than this test's.
    let gw = Gateway::start(
        &cluster.servers[0],
        Options::default()
            .lease_ms(15000)
            .redis_cluster(&cluster.urls()),
    )
    .await;

    let mut alice = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    alice.join(&room).await;
    bob.join(&room).await;
    for n in 1..=5 {
        assert_eq!(alice.publish(&room, "m", json!(n)).await, n);
        assert_eq!(msg_fields(&bob.recv_msg().await).3, n);
    }
    // Let the replica catch up (WAIT), then kill its master.
    let master = cluster.master_index(&room);
    cluster.wait_replicated(&room);
    let killed = Instant::now();
    let (dead, ok_at) = cluster.kill_master_of(&room);
    assert_eq!(dead, master);
    assert_ne!(cluster.master_index(&room), master, "a replica took over");
    eprintln!(
        "failover: cluster_state:ok {:?} after the SIGKILL",
        ok_at - killed
    );

    // Within RECOVERY of cluster_state:ok, a client's pub is acked...
    let deadline = ok_at + RECOVERY;
    let seq = publish_until(&mut alice, &room, 6, deadline).await;
    let pub_after = ok_at.elapsed();
    assert!(seq > 5, "the sequence continues: {seq}");
    // ... and so is the HTTP API's.
    let http_seq = http_publish_until(&gw, &room, 7, deadline).await;
    let http_after = ok_at.elapsed();
    assert!(http_seq > seq, "{http_seq} after {seq}");
    eprintln!(
        "after cluster_state:ok: pub acked in {pub_after:?}, POST /api/publish 200 in {http_after:?}"
    );

    // Bob, the other member, gets them (live or by the gap repair of the
    // node's new subscription), in order...
    let got = seqs_until(&mut bob, &room, http_seq, RECOVERY).await;
    assert!(
        got.windows(2).all(|w| w[0] < w[1]) && got.iter().all(|&s| s > 5),
        "in order, after 5: {got:?}"
    );
    assert!(got.contains(&seq), "{got:?} has {seq}");
    // ... and from now on live: the subscription is on the new master.
    for n in 8..=10 {
        let seq = alice.publish(&room, "m", json!(n)).await;
        let got = seqs_until(&mut bob, &room, seq, Duration::from_secs(2)).await;
        assert_eq!(got, vec![seq], "message {n} arrives live, once");
    }
    bob.ping().await;
}
