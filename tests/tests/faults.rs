//! Faults between the parts: a stalled gateway↔Redis link, Redis restarted
//! with its data, a gateway killed outright. Each test stops by itself and
//! asserts what survived: no gap in any member's stream where history covers
//! it, presence clean, clients moved and recovered.

use std::time::Duration;

use broker::protocol::ServerFrame;
use broker_client::{Client, Event, Options as ClientOptions};
use broker_tests::gateway::{
    eventually_async, http_get, msg_fields, presence, publish, token, Client as WsClient, Gateway,
    Options,
};
use broker_tests::proxy::Proxy;
use broker_tests::{ok, run, Nodes, Publish, RedisServer, RoomMembers};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// Publishes `n` straight into the module (no gateway involved), kept in
/// history like the fixture's `feed` namespace does (100 for 300 s).
fn module_publish(redis: &RedisServer, room: &str, n: u64) -> u64 {
    let data = json!(n).to_string();
    let reply = run(
        &mut redis.client(),
        Publish::json(room, "m", &data).history(100, 300),
    );
    broker_tests::int(&reply) as u64
}

/// The sequence numbers of the next `count` messages `client` receives.
async fn seqs(client: &mut WsClient, count: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < count {
        let frame = client
            .recv_matching(WAIT, "a message", |f| matches!(f, ServerFrame::Msg { .. }))
            .await;
        let (_, _, data, seq, _, _) = msg_fields(&frame);
        assert_eq!(data, &json!(seq), "payload and seq agree");
        out.push(seq);
    }
    out
}

/// A gateway that reaches Redis through a proxy. Its lease (9 s) outlives
/// the stalls of these tests: the node stays registered, only its channel
/// misses messages.
async fn behind_proxy(redis: &RedisServer) -> (Proxy, Gateway) {
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let url = format!("redis://{}", proxy.addr);
    let gw = Gateway::start(redis, Options::default().lease_ms(9000).redis_url(&url)).await;
    (proxy, gw)
}

/// Waits until the gateway noticed its node channel stopped answering.
async fn channel_lost(gw: &Gateway) {
    eventually_async(WAIT, "the node channel is noticed dead", || async {
        match gw.log().contains("node channel did not answer PING") {
            true => Ok(()),
            false => Err("not yet".to_owned()),
        }
    })
    .await;
}

async fn wait_status(gw: &Gateway, path: &str, want: u16) {
    eventually_async(WAIT, &format!("{path} answers {want}"), || async {
        match http_get(gw.addr, path, None).await.status {
            s if s == want => Ok(()),
            s => Err(s.to_string()),
        }
    })
    .await;
}

#[tokio::test]
async fn a_stalled_redis_link_is_noticed_and_the_gap_repaired_from_history() {
    let redis = RedisServer::start();
    let (proxy, gw) = behind_proxy(&redis).await;
    let mut alice = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    let room = "feed:stall";
    alice.join(room).await;
    bob.join(room).await;
    for n in 1..=3 {
        module_publish(&redis, room, n);
    }
    assert_eq!(seqs(&mut alice, 3).await, [1, 2, 3]);
    assert_eq!(seqs(&mut bob, 3).await, [1, 2, 3]);

    // The link goes silent without closing: packets just stop.
    proxy.stall(true);
    channel_lost(&gw).await;
    let (code, _) = alice.err(publish(room, "m", &json!(0))).await;
    assert_eq!(
        code, "unavailable",
        "no stale answers while Redis is unreachable"
    );
    alice.ping().await;
    // Published meanwhile: the node's subscription cannot receive these.
    for n in 4..=8 {
        assert_eq!(module_publish(&redis, room, n), n);
    }
    // The link comes back; the stalled connections are dropped.
    proxy.cut();
    proxy.stall(false);
    wait_status(&gw, "/readyz", 200).await;
    for n in 9..=10 {
        module_publish(&redis, room, n);
    }
    let expected: Vec<u64> = (4..=10).collect();
    assert_eq!(seqs(&mut alice, 7).await, expected, "no gap, no duplicate");
    assert_eq!(seqs(&mut bob, 7).await, expected, "no gap, no duplicate");
    assert!(alice
        .drain(Duration::from_millis(300))
        .await
        .iter()
        .all(|f| !matches!(f, ServerFrame::Msg { .. })));
    assert_eq!(gw.metric("broker_gap_repaired_total").await, 5.0);
    assert_eq!(gw.metric("broker_gap_unrepaired_total").await, 0.0);
}

#[tokio::test]
async fn what_history_does_not_keep_is_counted_as_unrepaired() {
    let redis = RedisServer::start();
    let (proxy, gw) = behind_proxy(&redis).await;
    let mut alice = gw.connect("alice").await;
    // `feed` keeps 100 messages.
    let room = "feed:long";
    alice.join(room).await;
    proxy.stall(true);
    channel_lost(&gw).await;
    for n in 1..=130 {
        module_publish(&redis, room, n);
    }
    proxy.cut();
    proxy.stall(false);
    wait_status(&gw, "/readyz", 200).await;
    assert_eq!(seqs(&mut alice, 100).await, (31..=130).collect::<Vec<_>>());
    assert_eq!(gw.metric("broker_gap_repaired_total").await, 100.0);
    assert_eq!(gw.metric("broker_gap_unrepaired_total").await, 30.0);
}

#[tokio::test]
async fn redis_restarted_with_its_data_loses_no_message() {
    let mut redis = RedisServer::builder().appendonly().start();
    let gw = Gateway::start(&redis, Options::default().lease_ms(900)).await;
    let mut alice = gw.connect("alice").await;
    let room = "feed:restart";
    alice.join(room).await;
    for n in 1..=3 {
        module_publish(&redis, room, n);
    }
    assert_eq!(seqs(&mut alice, 3).await, [1, 2, 3]);
    redis.restart();
    // Right away, whether or not the node has subscribed again yet.
    for n in 4..=20 {
        assert_eq!(
            module_publish(&redis, room, n),
            n,
            "seq continues after the restart"
        );
    }
    assert_eq!(seqs(&mut alice, 17).await, (4..=20).collect::<Vec<_>>());
    // The module still knows the connection (from the AOF), and the node
    // is ready again.
    assert_eq!(presence(&redis, "alice").len(), 1);
    wait_status(&gw, "/readyz", 200).await;
    alice.ping().await;
}

#[tokio::test]
async fn redis_restarted_from_an_older_snapshot_gets_exact_presence_again() {
    let mut redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().lease_ms(900)).await;
    let room = "chat:snapshot";
    let mut alice = gw.connect("alice").await;
    alice.join(room).await;
    let mut bob = gw.connect("bob").await;
    bob.join(room).await;
    ok(&mut redis.client(), &["SAVE"]);
    // After the save: bob leaves, carol arrives. The file knows neither.
    bob.close().await;
    let mut carol = gw.connect("carol").await;
    carol.join(room).await;
    eventually_async(WAIT, "bob is gone before the restart", || async {
        presence(&redis, "bob")
            .is_empty()
            .then_some(())
            .ok_or("bob still online".to_string())
    })
    .await;

    redis.restart();
    // The gateway registers its connections again and the module drops the
    // ones it did not register (bob): presence is exact again.
    let members = eventually_async(WAIT, "presence exact after the restart", || async {
        let members = broker_tests::map(&run(&mut redis.client(), RoomMembers::new(room)));
        let users: Vec<String> = members.keys().cloned().collect();
        let online = (
            presence(&redis, "alice").len(),
            presence(&redis, "bob").len(),
        );
        if users == ["alice", "carol"] && online == (1, 0) {
            Ok(users)
        } else {
            Err(format!(
                "members {users:?}, alice/bob connections {online:?}"
            ))
        }
    })
    .await;
    assert_eq!(members, ["alice", "carol"]);
    wait_status(&gw, "/readyz", 200).await;
    // Both still get the room's messages.
    let seq = gw.publish(room, "m", json!("after")).await;
    for client in [&mut alice, &mut carol] {
        let frame = client
            .recv_matching(WAIT, "the message after the restart", |f| {
                matches!(f, ServerFrame::Msg { .. })
            })
            .await;
        assert_eq!(msg_fields(&frame).3, seq);
    }
}

#[tokio::test]
async fn a_killed_gateway_is_cleaned_up_and_its_clients_recover_elsewhere() {
    let redis = RedisServer::start();
    let mut gw1 = Gateway::start(&redis, Options::default().lease_ms(1000)).await;
    let gw2 = Gateway::start(&redis, Options::default().lease_ms(1000)).await;
    let proxy = Proxy::start(gw1.addr).await;
    let room = "chat:kill";

    let mut bob = gw2.connect("bob").await;
    bob.join(room).await;
    let alice = Client::connect(
        &format!("ws://{}/ws", proxy.addr),
        ClientOptions::token(token("alice", 3600, &[], &[])),
    )
    .await
    .expect("alice connects");
    let mut events = alice.events();
    let mut sub = alice.join(room).await.expect("alice joins");
    let (who, action) = bob.recv_presence(room).await;
    assert_eq!((who.as_str(), action.as_str()), ("alice", "join"));
    let first = gw2.publish(room, "m", json!(1)).await;
    assert_eq!(sub.next_msg().await.map(|m| m.seq), Some(first));

    // SIGKILL: no close frames, no lease release.
    proxy.retarget(gw2.addr);
    proxy.refuse(true);
    gw1.kill();
    proxy.cut();
    let killed = std::time::Instant::now();
    // Within two lease periods the module has dropped the dead node's
    // connections, and bob is told alice left.
    let (who, action) = bob.recv_presence(room).await;
    assert_eq!((who.as_str(), action.as_str()), ("alice", "leave"));
    assert!(
        killed.elapsed() < Duration::from_millis(2 * 1000 + 1500),
        "leave after {:?}",
        killed.elapsed()
    );
    assert!(presence(&redis, "alice").is_empty(), "alice is offline");
    let nodes = run(&mut redis.client(), Nodes);
    assert!(!format!("{nodes:?}").contains(&gw1.node), "{nodes:?}");

    // Published while alice is away; then she is let in on node 2.
    let missed: Vec<u64> = [
        gw2.publish(room, "m", json!(2)).await,
        gw2.publish(room, "m", json!(3)).await,
    ]
    .to_vec();
    proxy.refuse(false);
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Ok(Event::Connected(s))) => {
                assert_eq!(s.node, gw2.node);
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("alice did not reconnect: {other:?}"),
        }
    }
    for seq in missed {
        let m = tokio::time::timeout(WAIT, sub.next_msg())
            .await
            .expect("recovered in time");
        assert_eq!(m.map(|m| m.seq), Some(seq));
    }
    let (who, action) = bob.recv_presence(room).await;
    assert_eq!((who.as_str(), action.as_str()), ("alice", "join"));
    assert_eq!(presence(&redis, "alice").len(), 1);
}
