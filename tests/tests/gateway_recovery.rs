//! Recovery after a reconnect: `join` with `since {seq, epoch}` replays what
//! was missed before its ack; `history` returns what a room keeps.
//! docs/PROTOCOL.md §7, §8.

use std::time::Duration;

use broker::protocol::ServerFrame;
use broker_tests::gateway::{history, join_since, msg_fields, Gateway, Options};
use broker_tests::RedisServer;
use serde_json::json;

#[tokio::test]
async fn rejoin_with_since_replays_missed_messages_once_before_the_ack() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let room = "chat:r";

    let mut first = gw.connect("alice").await;
    first.join(room).await;
    for n in 1..=3 {
        assert_eq!(gw.publish(room, "m", json!({"n": n})).await, n);
    }
    let mut epoch = String::new();
    for n in 1..=3 {
        let frame = first.recv_msg().await;
        let (_, _, data, seq, e, from) = msg_fields(&frame);
        assert_eq!((seq, data), (n, &json!({"n": n})));
        assert_eq!(from, None, "server-published messages have no from");
        epoch = e.to_string();
    }
    assert!(!epoch.is_empty());
    first.close().await;

    for n in 4..=8 {
        assert_eq!(gw.publish(room, "m", json!({"n": n})).await, n);
    }

    let mut again = gw.connect("alice").await;
    let id = again.send_request(join_since(room, 3, &epoch)).await;
    // Everything up to the ack, in order.
    let mut replayed = Vec::new();
    let ack = loop {
        match again.recv().await {
            ServerFrame::Ack { id: got, data } if got == id => break data,
            frame @ ServerFrame::Msg { .. } => replayed.push(frame),
            ServerFrame::Presence { .. } => {}
            other => panic!("unexpected frame during the join: {other:?}"),
        }
    };
    let seqs: Vec<u64> = replayed.iter().map(|f| msg_fields(f).3).collect();
    assert_eq!(
        seqs,
        vec![4, 5, 6, 7, 8],
        "missed messages are replayed before the ack, once, in order"
    );
    for f in &replayed {
        let (r, ev, data, seq, e, _) = msg_fields(f);
        assert_eq!((r, ev, e), (room, "m", epoch.as_str()));
        assert_eq!(data, &json!({"n": seq}));
    }
    assert_eq!(ack["room"], room);
    assert_eq!(ack["seq"], 8);
    assert_eq!(ack["epoch"], epoch.as_str());
    assert_eq!(ack["recovered"], true, "join ack: {ack}");

    // Live delivery continues after the replay without duplicates.
    assert_eq!(gw.publish(room, "m", json!({"n": 9})).await, 9);
    let frame = again.recv_msg().await;
    assert_eq!(msg_fields(&frame).3, 9);
    again.ping().await;
    let dupes: Vec<_> = again
        .drain(Duration::from_millis(200))
        .await
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Msg { .. }))
        .collect();
    assert!(dupes.is_empty(), "nothing delivered twice: {dupes:?}");

    // `history` returns what the room keeps.
    let h = again.ack(history(room, Some(6), None)).await;
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .expect("history messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("message seq"))
        .collect();
    assert_eq!(seqs, vec![7, 8, 9], "history since 6: {h}");
    assert_eq!(h["seq"], 9);
    assert_eq!(h["epoch"], epoch.as_str());
    let h = again.ack(history(room, None, Some(2))).await;
    assert_eq!(
        h["messages"].as_array().map(Vec::len),
        Some(2),
        "history limit 2: {h}"
    );
}

#[tokio::test]
async fn rejoin_with_a_wrong_epoch_is_not_recovered() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let room = "chat:w";
    for n in 1..=4 {
        gw.publish(room, "m", json!(n)).await;
    }
    let mut c = gw.connect("alice").await;
    let ack = c.ack(join_since(room, 2, "not-the-epoch")).await;
    assert_eq!(ack["recovered"], false, "join ack: {ack}");
    assert_eq!(ack["seq"], 4);
    let stale: Vec<_> = c
        .drain(Duration::from_millis(200))
        .await
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Msg { .. }))
        .collect();
    assert!(
        stale.iter().all(|f| msg_fields(f).4 != "not-the-epoch"),
        "nothing from the claimed epoch: {stale:?}"
    );
    // A plain join is not "recovered" either.
    let mut d = gw.connect("bob").await;
    assert_eq!(d.join(room).await["recovered"], false);
}
