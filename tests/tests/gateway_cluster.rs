//! Several gateway nodes on one Redis: fan-out across nodes, a node that
//! dies (SIGKILL) and a node that shuts down (SIGTERM). docs/PROTOCOL.md §8, docs/OPERATIONS.md.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use broker::protocol::{CloseCode, ServerFrame};
use broker_tests::gateway::{
    msg_fields, nodes, online, presence, publish_others, Client, Gateway, Options,
};
use broker_tests::{eventually_within, RedisServer};
use serde_json::json;

/// Reads `n` `msg` frames of `room` and checks they are seq 1..=n, in
/// order, each once, with `data.n == seq` and `from == (user, conn)`.
async fn expect_in_order(client: &mut Client, room: &str, n: u64, from: &(String, String)) {
    for expected in 1..=n {
        let frame = client.recv_msg().await;
        let (r, ev, data, seq, _epoch, f) = msg_fields(&frame);
        assert_eq!(r, room, "{}: room of message {expected}", client.user);
        assert_eq!(
            seq, expected,
            "{}: messages arrive once and in order",
            client.user
        );
        assert_eq!(ev, "tick");
        assert_eq!(
            data,
            &json!({"n": expected}),
            "{}: payload of seq {seq}",
            client.user
        );
        assert_eq!(f, Some(from), "{}: from of seq {seq}", client.user);
    }
}

#[tokio::test]
async fn messages_reach_members_on_every_node_once_and_in_order() {
    let redis = RedisServer::start();
    let a = Gateway::start(&redis, Options::default().node("node-a")).await;
    let b = Gateway::start(&redis, Options::default().node("node-b")).await;
    let room = "feed:x";

    let mut alice = a.connect("alice").await; // publisher, on A
    let mut bob = a.connect("bob").await; // on A
    let mut carol = b.connect("carol").await; // on B
    let mut dave = b.connect("dave").await; // on B, joins twice over two conns
    let mut dave2 = b.connect("dave").await;
    assert_eq!(alice.node, "node-a");
    assert_eq!(carol.node, "node-b");
    for c in [&mut alice, &mut bob, &mut carol, &mut dave, &mut dave2] {
        let ack = c.join(room).await;
        assert_eq!(ack["room"], room);
    }

    for i in 1..=50u64 {
        let seq = alice.publish(room, "tick", json!({"n": i})).await;
        assert_eq!(seq, i, "pub ack seq");
    }
    let from = ("alice".to_string(), alice.conn.clone());
    for c in [&mut alice, &mut bob, &mut carol, &mut dave, &mut dave2] {
        expect_in_order(c, room, 50, &from).await;
    }
    // Nothing more: a ping round trip flushes anything still in flight on
    // the same node, and no further msg arrived before its ack.
    for c in [&mut alice, &mut bob, &mut carol, &mut dave, &mut dave2] {
        c.ping().await;
        let extra: Vec<ServerFrame> = c
            .drain(Duration::from_millis(200))
            .await
            .into_iter()
            .filter(|f| matches!(f, ServerFrame::Msg { .. }))
            .collect();
        assert!(
            extra.is_empty(),
            "{}: duplicates after seq 50: {extra:?}",
            c.user
        );
    }

    // `others: true` skips the sending connection only.
    let ack = alice
        .ack(publish_others(room, "tick", &json!({"n": 51})))
        .await;
    assert_eq!(ack["seq"], 51);
    for c in [&mut bob, &mut carol, &mut dave, &mut dave2] {
        let frame = c.recv_msg().await;
        assert_eq!(
            msg_fields(&frame).3,
            51,
            "{} gets the others-only message",
            c.user
        );
    }
    // Bob is on alice's node: the hub delivered to both in one pass, so
    // a msg for alice would already be queued before her ping's ack.
    alice.ping().await;
    let leaked: Vec<ServerFrame> = alice
        .drain(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Msg { .. }))
        .collect();
    assert!(
        leaked.is_empty(),
        "the sender got its own others-only message: {leaked:?}"
    );

    // A client on node B publishes: node A's members get it with B's `from`.
    let seq = carol.publish(room, "tick", json!({"n": 52})).await;
    assert_eq!(seq, 52);
    let frame = bob.recv_msg().await;
    let (_, _, _, seq, _, f) = msg_fields(&frame);
    assert_eq!(seq, 52);
    assert_eq!(f, Some(&("carol".to_string(), carol.conn.clone())));
}

#[tokio::test]
async fn a_killed_node_loses_its_users_within_two_lease_periods() {
    let redis = RedisServer::start();
    let lease_ms = 1000;
    let a = Gateway::start(&redis, Options::default().node("node-a").lease_ms(lease_ms)).await;
    let mut b = Gateway::start(&redis, Options::default().node("node-b").lease_ms(lease_ms)).await;

    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    alice.join("chat:k").await;
    bob.join("chat:k").await;
    let (user, action) = alice.recv_presence("chat:k").await;
    assert_eq!((user.as_str(), action.as_str()), ("bob", "join"));
    assert_eq!(
        presence(&redis, "bob").len(),
        1,
        "bob is online before the kill"
    );

    b.kill();
    let killed = Instant::now();
    eventually_within(
        Duration::from_millis(2 * lease_ms + 300),
        "bob is gone from BROKER.PRESENCE after his node was killed",
        || {
            let conns = presence(&redis, "bob");
            if conns.is_empty() {
                Ok(())
            } else {
                Err(format!("{conns:?}"))
            }
        },
    );
    let gone_after = killed.elapsed();
    let (user, action) = alice.recv_presence("chat:k").await;
    assert_eq!(
        (user.as_str(), action.as_str()),
        ("bob", "leave"),
        "the member on the live node sees bob leave"
    );
    assert_eq!(
        nodes(&redis),
        vec!["node-a".to_string()],
        "only node-a is left in BROKER.NODES"
    );
    assert_eq!(
        presence(&redis, "alice").len(),
        1,
        "alice (node-a) is untouched"
    );
    eprintln!("bob was gone {gone_after:?} after the kill (lease {lease_ms} ms)");
    alice.ping().await;
}

#[tokio::test]
async fn sigterm_closes_clients_with_1012_and_releases_the_node() {
    let redis = RedisServer::start();
    let mut a = Gateway::start(&redis, Options::default().node("node-a")).await;
    let b = Gateway::start(&redis, Options::default().node("node-b")).await;

    let mut alice = a.connect("alice").await;
    let mut bob = a.connect("bob").await;
    let mut carol = b.connect("carol").await;
    alice.join("chat:s").await;
    carol.join("chat:s").await;
    assert_eq!(online(&redis), (3, 3));

    let status = a.terminate().await;
    assert!(
        status.success(),
        "the gateway exits 0 after SIGTERM: {status:?}"
    );
    // Right after the exit, before any lease could run out.
    let users: BTreeSet<String> = ["alice", "bob", "carol"]
        .iter()
        .filter(|u| !presence(&redis, u).is_empty())
        .map(|u| u.to_string())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["carol".to_string()]),
        "only carol (node-b) is online"
    );
    assert_eq!(online(&redis), (1, 1), "BROKER.ONLINE right after the exit");
    assert_eq!(
        nodes(&redis),
        vec!["node-b".to_string()],
        "node-a released its lease"
    );

    for c in [&mut alice, &mut bob] {
        let code = c.expect_close().await;
        assert_eq!(
            code,
            CloseCode::Restart.code(),
            "{} is told the server restarts",
            c.user
        );
    }
    let (user, action) = carol.recv_presence("chat:s").await;
    assert_eq!((user.as_str(), action.as_str()), ("alice", "leave"));
    carol.ping().await;
}
