//! Ephemeral messages (`pub` with `volatile: true`, `BROKER.PUBLISH ...
//! VOLATILE`), end to end: the room's members get `seq: 0` and
//! `volatile: true`, history and the room's sequence do not move, a
//! recovery does not replay them, membership and the rate limit apply, and
//! a member whose send queue is over half full skips them.

use std::time::Duration;

use broker::protocol::{self, ClientFrame, ServerFrame};
use broker_tests::gateway::{
    history, join, join_since, msg_fields, msgpack, publish_others, token, Client, Gateway, Options,
};
use broker_tests::raw::RawWs;
use broker_tests::{call, int, RedisServer};
use serde_json::json;

/// `pub {room, ev, data, volatile: true}` (with `others` when asked).
fn volatile(room: &str, ev: &str, data: &serde_json::Value, others: bool) -> ClientFrame {
    ClientFrame::Pub {
        id: 0,
        room: room.to_string(),
        ev: ev.to_string(),
        data: msgpack(data),
        others,
        volatile: true,
    }
}

/// The `seq` of a `pub` ack.
async fn pub_seq(c: &mut Client, frame: ClientFrame) -> u64 {
    c.ack(frame).await["seq"]
        .as_u64()
        .expect("a pub ack has seq")
}

#[tokio::test]
async fn members_get_it_with_seq_0_and_nothing_is_kept() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let room = "feed:v";
    let mut alice = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    let mut outsider = gw.connect("carol").await;
    alice.join(room).await;
    bob.join(room).await;

    assert_eq!(alice.publish(room, "m", json!(1)).await, 1);
    assert_eq!(
        pub_seq(&mut alice, volatile(room, "typing", &json!(true), false)).await,
        0
    );
    assert_eq!(
        alice.publish(room, "m", json!(2)).await,
        2,
        "the room's seq did not move"
    );
    for c in [&mut alice, &mut bob] {
        let first = c.recv_msg().await;
        assert_eq!(msg_fields(&first).3, 1);
        let typing = c.recv_msg().await;
        let (r, ev, data, seq, _, from) = msg_fields(&typing);
        assert_eq!((r, ev, data, seq), (room, "typing", &json!(true), 0));
        assert_eq!(from.map(|f| f.0.as_str()), Some("alice"));
        assert!(matches!(typing, ServerFrame::Msg { volatile: true, .. }));
        let second = c.recv_msg().await;
        assert_eq!(msg_fields(&second).3, 2);
        assert!(matches!(
            second,
            ServerFrame::Msg {
                volatile: false,
                ..
            }
        ));
    }
    // History holds the two regular messages only.
    let h = alice.ack(history(room, None, None)).await;
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(h["seq"], 2);
    // A recovery from seq 1 replays seq 2 only.
    let epoch = h["epoch"].as_str().unwrap().to_string();
    let mut dave = gw.connect("dave").await;
    let ack = dave.ack(join_since(room, 1, &epoch)).await;
    assert_eq!(ack["recovered"], true);
    let replayed = dave.drain(Duration::from_millis(200)).await;
    let replayed: Vec<u64> = replayed
        .iter()
        .filter(|f| matches!(f, ServerFrame::Msg { .. }))
        .map(|f| msg_fields(f).3)
        .collect();
    assert_eq!(replayed, [2]);
    // Not a member: not_member, as for any publish.
    let (code, _) = outsider
        .err(volatile(room, "typing", &json!(1), false))
        .await;
    assert_eq!(code, "not_member");
    // With `others` the publisher does not get it; the admin API too.
    assert_eq!(
        pub_seq(&mut bob, volatile(room, "cursor", &json!([1, 2]), true)).await,
        0
    );
    let resp = gw
        .admin_post(
            "/api/publish",
            &json!({"room": room, "ev": "srv", "data": 7, "volatile": true}),
        )
        .await;
    assert_eq!((resp.status, resp.json()), (200, json!({"seq": 0})));
    let got = alice.recv_msg().await;
    assert_eq!(msg_fields(&got).1, "cursor");
    let got = alice.recv_msg().await;
    assert_eq!((msg_fields(&got).1, msg_fields(&got).3), ("srv", 0));
    assert!(matches!(
        got,
        ServerFrame::Msg {
            volatile: true,
            from: None,
            ..
        }
    ));
    let got = bob.recv_msg().await;
    assert_eq!(msg_fields(&got).1, "srv", "bob skipped his own cursor");
}

#[tokio::test]
async fn the_rate_limit_applies() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice = gw.connect("alice").await;
    alice.join("chat:r").await;
    // `chat`: 3 back to back.
    for _ in 0..3 {
        assert_eq!(
            pub_seq(&mut alice, volatile("chat:r", "t", &json!(1), true)).await,
            0
        );
    }
    let (code, retry_ms) = alice.err(volatile("chat:r", "t", &json!(1), true)).await;
    assert_eq!(code, "rate_limited");
    assert!(retry_ms.is_some());
}

#[tokio::test]
async fn broker_publish_volatile_from_redis_cli() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice = gw.connect("alice").await;
    alice.join("feed:cli").await;
    let mut con = redis.client();
    let reply = call(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "feed:cli",
            "tick",
            "hello",
            "FORMAT",
            "string",
            "VOLATILE",
        ],
    )
    .unwrap();
    assert_eq!(int(&reply), 0);
    let got = alice.recv_msg().await;
    assert_eq!(
        (msg_fields(&got).1, msg_fields(&got).2, msg_fields(&got).3),
        ("tick", &json!("hello"), 0)
    );
    assert!(matches!(
        got,
        ServerFrame::Msg {
            volatile: true,
            from: None,
            ..
        }
    ));
    let h = call(&mut con, &["BROKER.HISTORY", "feed:cli"]).unwrap();
    let h = broker_tests::map(&h);
    assert_eq!(int(&h["seq"]), 0);
    assert!(broker_tests::array(&h["messages"]).is_empty());
    // A regular publish still gets seq 1.
    let reply = call(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "feed:cli",
            "tick",
            "x",
            "FORMAT",
            "string",
        ],
    )
    .unwrap();
    assert_eq!(int(&reply), 1);
}

#[tokio::test]
async fn a_member_with_a_queue_over_half_full_skips_volatile_messages() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().send_queue(16)).await;
    let room = "feed:slow";
    // A member with a 4 KiB receive window that stops reading.
    let mut slow =
        RawWs::connect_with_window(gw.addr, &token("slow", 3600, &[], &[]), Some(4096)).await;
    slow.binary(&protocol::encode_client_frame(&join(room)))
        .await;
    let mut publisher = gw.connect("pub").await;
    publisher.join(room).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pad = "x".repeat(16 * 1024);
    let rounds = 300u64;
    for i in 0..rounds {
        let ack = publisher
            .ack(publish_others(room, "m", &json!({"i": i, "pad": pad})))
            .await;
        assert!(ack["seq"].as_u64().is_some());
        pub_seq(&mut publisher, volatile(room, "v", &json!({"i": i}), true)).await;
    }
    let skipped = gw.metric("broker_volatile_skipped_total").await;
    assert!(skipped > 0.0, "no volatile message was skipped");

    let (frames, ending) = slow.until_close(Duration::from_secs(3)).await;
    let mut regular = Vec::new();
    let mut volatiles = 0u64;
    for bytes in &frames {
        if let Ok(frame @ ServerFrame::Msg { .. }) = protocol::decode_server_frame(bytes) {
            match msg_fields(&frame).3 {
                0 => volatiles += 1,
                seq => regular.push(seq),
            }
        }
    }
    // Regular messages are a gapless prefix (a full queue closes 4008, as
    // before); volatile ones were skipped, never queued past half.
    let expected: Vec<u64> = (1..=regular.len() as u64).collect();
    assert_eq!(
        regular, expected,
        "regular messages in order, no gap ({ending:?})"
    );
    assert!(
        volatiles < rounds,
        "{volatiles} of {rounds} volatile messages arrived"
    );
    assert!(
        volatiles + skipped as u64 <= rounds,
        "{volatiles} delivered + {skipped} skipped"
    );
}
