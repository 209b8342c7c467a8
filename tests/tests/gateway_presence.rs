//! Presence through a gateway: what `BROKER.PRESENCE` says about live
//! WebSocket connections, the `presence` request, and join/leave events.
//! docs/PROTOCOL.md §4, docs/COMMANDS.md.

use std::time::Duration;

use broker_tests::gateway::{leave, online, presence, presence_req, Gateway, Options};
use broker_tests::{eventually, RedisServer};
use serde_json::json;

#[tokio::test]
async fn broker_presence_matches_live_connections() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice1 = gw.connect("alice").await;
    let alice2 = gw.connect("alice").await;
    let bob = gw.connect("bob").await;
    alice1.join("chat:p").await;

    let conns = presence(&redis, "alice");
    let ids: Vec<&str> = conns.iter().map(|c| c.conn.as_str()).collect();
    let mut expected = vec![alice1.conn.as_str(), alice2.conn.as_str()];
    expected.sort();
    assert_eq!(ids, expected, "alice's connections are the two live ones");
    for c in &conns {
        assert_eq!(c.node, gw.node, "{} is on the gateway's node", c.conn);
        assert!(
            c.rooms.contains(&"user:alice".to_string()),
            "every connection is in its personal room: {c:?}"
        );
    }
    let first = conns
        .iter()
        .find(|c| c.conn == alice1.conn)
        .expect("alice1");
    assert_eq!(
        first.rooms,
        vec!["chat:p".to_string(), "user:alice".to_string()]
    );
    assert_eq!(presence(&redis, "bob").len(), 1);
    assert_eq!(online(&redis), (2, 3));

    // A connection that goes away disappears from the module.
    let alice1_id = alice1.conn.clone();
    alice1.close().await;
    eventually(
        "alice's closed connection is gone from BROKER.PRESENCE",
        || {
            let conns = presence(&redis, "alice");
            if conns.len() == 1 && conns[0].conn == alice2.conn {
                Ok(())
            } else {
                Err(format!("{conns:?} (closed: {alice1_id})"))
            }
        },
    );
    // Dropped without a close handshake (TCP reset) as well.
    drop(bob);
    eventually("bob is offline after his socket dropped", || {
        let conns = presence(&redis, "bob");
        if conns.is_empty() {
            Ok(())
        } else {
            Err(format!("{conns:?}"))
        }
    });
    assert_eq!(online(&redis), (1, 1));
    alice2.close().await;
    eventually("nobody is online", || match online(&redis) {
        (0, 0) => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

#[tokio::test]
async fn join_and_leave_events_for_first_in_and_last_out() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let room = "chat:x";
    let mut alice = gw.connect("alice").await;
    alice.join(room).await;

    let mut bob1 = gw.connect("bob").await;
    bob1.join(room).await;
    assert_eq!(
        alice.recv_presence(room).await,
        ("bob".into(), "join".into())
    );

    // bob's second connection is no second join: the next event alice
    // sees is carol's.
    let mut bob2 = gw.connect("bob").await;
    bob2.join(room).await;
    let mut carol = gw.connect("carol").await;
    carol.join(room).await;
    assert_eq!(
        alice.recv_presence(room).await,
        ("carol".into(), "join".into()),
        "a user's second connection must not produce a second join"
    );

    let ack = alice.ack(presence_req(room)).await;
    let mut users = ack["users"].as_array().cloned().unwrap_or_default();
    users.sort_by_key(|u| u["user"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        users,
        vec![
            json!({"user": "alice", "conns": 1}),
            json!({"user": "bob", "conns": 2}),
            json!({"user": "carol", "conns": 1}),
        ],
        "presence ack: {ack}"
    );
    assert_eq!(ack["count"], 3, "presence ack count: {ack}");

    // bob's first connection leaving is not bob leaving: the next event is
    // carol's leave.
    assert_eq!(bob1.ack(leave(room)).await, json!({}));
    assert_eq!(carol.ack(leave(room)).await, json!({}));
    assert_eq!(
        alice.recv_presence(room).await,
        ("carol".into(), "leave".into()),
        "leaving with one of two connections must not announce a leave"
    );
    // Last one out.
    bob2.ack(leave(room)).await;
    assert_eq!(
        alice.recv_presence(room).await,
        ("bob".into(), "leave".into())
    );

    // Disconnecting is leaving too.
    let mut dave = gw.connect("dave").await;
    dave.join(room).await;
    assert_eq!(
        alice.recv_presence(room).await,
        ("dave".into(), "join".into())
    );
    dave.close().await;
    assert_eq!(
        alice.recv_presence(room).await,
        ("dave".into(), "leave".into())
    );

    // Leaving a room one is not in.
    let (code, _) = bob1.err(leave(room)).await;
    assert_eq!(code, "not_member");
    // Nothing else about other users is pending for alice.
    let rest: Vec<_> = alice
        .drain(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|f| matches!(f, broker::protocol::ServerFrame::Presence { room: r, user, .. } if r == room && user != "alice"))
        .collect();
    assert!(rest.is_empty(), "unexpected presence events: {rest:?}");
}
