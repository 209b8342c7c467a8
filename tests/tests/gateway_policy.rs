//! Namespace policy and abuse handling: join and publish rules, the rate
//! limit, payload and frame sizes, and malformed frames. docs/PROTOCOL.md §7, §10.

use broker::protocol::{CloseCode, ServerFrame};
use broker_tests::gateway::{join, msgpack, publish, raw_close, token, Gateway, Options};
use broker_tests::RedisServer;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::{coding::Control, coding::OpCode, Frame};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn publishing_faster_than_the_burst_is_rate_limited() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice = gw.connect("alice").await;
    alice.join("chat:r").await;
    // chat: rate {count 5, period_s 10, burst 3}.
    for i in 1..=3 {
        let seq = alice.publish("chat:r", "m", json!(i)).await;
        assert_eq!(seq, i, "publish {i} within the burst");
    }
    for i in 4..=5 {
        let (code, retry_ms) = alice.err(publish("chat:r", "m", &json!(i))).await;
        assert_eq!(code, "rate_limited", "publish {i} exceeds the burst of 3");
        let retry_ms = retry_ms.expect("rate_limited carries retry_ms");
        assert!(
            retry_ms > 0 && retry_ms <= 2_000,
            "retry_ms is about one emission interval (2 s): {retry_ms}"
        );
    }
    // The limit is per user: bob still has his burst; and per namespace:
    // alice may still publish in a namespace without a limit.
    let mut bob = gw.connect("bob").await;
    bob.join("chat:r").await;
    assert_eq!(bob.publish("chat:r", "m", json!("bob")).await, 4);
    alice.join("feed:r").await;
    assert_eq!(alice.publish("feed:r", "m", json!(1)).await, 1);
    // The connection stays usable.
    alice.ping().await;
}

#[tokio::test]
async fn join_and_publish_rules_of_namespaces() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut plain = gw.connect("alice").await;
    let mut vip = gw.connect_token(&token("bob", 600, &["vip"], &[])).await;
    let mut buyer = gw
        .connect_token(&token("carol", 600, &[], &["orders:1", "orders:acme-*"]))
        .await;

    // vip: join = roles ["vip"].
    assert_eq!(
        plain.err(join("vip:x")).await.0,
        "forbidden",
        "vip:x without the role"
    );
    assert_eq!(vip.join("vip:x").await["room"], "vip:x");
    // A role that is not listed does not help.
    let mut other_role = gw.connect_token(&token("dave", 600, &["admin"], &[])).await;
    assert_eq!(other_role.err(join("vip:x")).await.0, "forbidden");

    // orders: join = claim, publish = server.
    assert_eq!(
        buyer.join("orders:1").await["room"],
        "orders:1",
        "exact claim"
    );
    assert_eq!(
        buyer.join("orders:acme-7").await["room"],
        "orders:acme-7",
        "prefix* claim"
    );
    assert_eq!(
        buyer.err(join("orders:2")).await.0,
        "forbidden",
        "room outside the claim"
    );
    assert_eq!(
        plain.err(join("orders:1")).await.0,
        "forbidden",
        "no rooms claim"
    );
    assert_eq!(
        buyer.err(publish("orders:1", "m", &json!(1))).await.0,
        "forbidden",
        "clients may not publish where only the server does"
    );
    // ... but the server may, and members get it.
    let seq = gw.publish("orders:1", "shipped", json!({"id": 1})).await;
    let frame = buyer.recv_msg().await;
    let ServerFrame::Msg {
        room,
        seq: got,
        from,
        ..
    } = &frame
    else {
        unreachable!()
    };
    assert_eq!((room.as_str(), *got, from), ("orders:1", seq, &None));

    // Personal rooms: no one else joins, no client publishes.
    assert_eq!(
        plain.err(join("user:bob")).await.0,
        "forbidden",
        "another user's personal room"
    );
    assert_eq!(
        plain.err(publish("user:alice", "m", &json!(1))).await.0,
        "forbidden",
        "publishing to one's own personal room"
    );
    assert_eq!(
        plain.err(publish("user:bob", "m", &json!(1))).await.0,
        "forbidden",
        "publishing to another's personal room"
    );

    // Room names.
    let long = format!("chat:{}", "a".repeat(101));
    for bad in [
        "nocolon",
        "chat:",
        ":x",
        "chat:has space",
        "chat:semi;colon",
        long.as_str(),
    ] {
        assert_eq!(plain.err(join(bad)).await.0, "invalid_room", "join {bad:?}");
        assert_eq!(
            plain.err(publish(bad, "m", &json!(1))).await.0,
            "invalid_room",
            "pub {bad:?}"
        );
    }
    let ok100 = format!("chat:{}", "a".repeat(100));
    assert_eq!(
        plain.join(&ok100).await["room"],
        ok100.as_str(),
        "100 characters is fine"
    );
    assert_eq!(plain.join("chat:A-z_0.9@x").await["room"], "chat:A-z_0.9@x");

    // Publishing without joining.
    assert_eq!(
        plain.err(publish("chat:elsewhere", "m", &json!(1))).await.0,
        "not_member"
    );
    plain.ping().await;
}

#[tokio::test]
async fn payload_above_max_payload_is_refused() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice = gw.connect("alice").await;
    alice.join("chat:big").await;
    // chat: max_payload 1024 bytes of MessagePack data.
    let big = json!("x".repeat(2000));
    assert_eq!(
        alice.err(publish("chat:big", "m", &big)).await.0,
        "payload_too_large"
    );
    let fits = json!("x".repeat(1000));
    assert!(msgpack(&fits).len() <= 1024);
    assert_eq!(alice.publish("chat:big", "m", fits).await, 1);
    let frame = alice.recv_msg().await;
    let ServerFrame::Msg { data, .. } = &frame else {
        unreachable!()
    };
    assert_eq!(data.as_str().map(str::len), Some(1000));
}

#[tokio::test]
async fn message_above_max_frame_bytes_closes_with_1009() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().max_frame_bytes(4096)).await;
    let mut alice = gw.connect("alice").await;
    alice.ping().await;
    alice
        .send_message(Message::binary(vec![0x80u8; 5000]))
        .await;
    assert_eq!(alice.expect_close().await, CloseCode::TooLarge.code());

    // Fragments count together: 3 continuation frames of 2000 bytes.
    let mut bob = gw.connect("bob").await;
    bob.ping().await;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Data;
    let chunk = vec![0x80u8; 2000];
    bob.send_message(Message::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(Data::Binary),
        false,
    )))
    .await;
    bob.send_message(Message::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .await;
    bob.send_message(Message::Frame(Frame::message(
        chunk,
        OpCode::Data(Data::Continue),
        true,
    )))
    .await;
    assert_eq!(
        bob.expect_close().await,
        CloseCode::TooLarge.code(),
        "a fragmented message over the limit"
    );

    // Just under the limit is an ordinary (bad) frame, not a close.
    let mut carol = gw.connect("carol").await;
    carol
        .send_message(Message::binary(vec![0xc1u8; 4000]))
        .await;
    assert_eq!(carol.recv_err().await, (None, "bad_frame".to_string()));
    carol.ping().await;
}

#[tokio::test]
async fn garbage_frames_get_bad_frame_until_they_keep_coming() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice = gw.connect("alice").await;

    // (what, message, the id the err echoes)
    let garbage: Vec<(&str, Message, Option<i64>)> = vec![
        (
            "a text message",
            Message::text(r#"{"t":"ping","id":1}"#),
            None,
        ),
        (
            "not MessagePack",
            Message::binary(vec![0xc1u8, 0xff, 0x00]),
            None,
        ),
        (
            "not a map",
            Message::binary(msgpack(&json!([1, 2, 3]))),
            None,
        ),
        (
            "unknown t",
            Message::binary(msgpack(&json!({"t": "dance", "id": 7}))),
            Some(7),
        ),
        ("no t", Message::binary(msgpack(&json!({"id": 8}))), Some(8)),
        (
            "join without room",
            Message::binary(msgpack(&json!({"t": "join", "id": 9}))),
            Some(9),
        ),
        ("empty message", Message::binary(Vec::new()), None),
    ];
    for (what, message, id) in garbage {
        alice.send_message(message).await;
        assert_eq!(
            alice.recv_err().await,
            (id, "bad_frame".to_string()),
            "{what}"
        );
        // The connection stays open and works.
        alice.ping().await;
    }

    // Eight bad frames in a row close it with 4008.
    for _ in 0..8 {
        alice.send_message(Message::binary(vec![0xc1u8])).await;
    }
    assert_eq!(alice.expect_close().await, CloseCode::Policy.code());
    for frame in alice.take_queued() {
        assert!(
            matches!(&frame, ServerFrame::Err { code, .. } if code == "bad_frame")
                || matches!(&frame, ServerFrame::Presence { room, .. } if room == "user:alice"),
            "only bad_frame errs before the close: {frame:?}"
        );
    }
}

/// The closing handshake on `/ws` (RFC 6455 §5.5, §7.4; Autobahn cases
/// 7.3, 7.5, 7.7, 7.9, which `make autobahn` runs against `/echo` only):
/// a valid close code is echoed; a reserved or out-of-range code, a 1-byte
/// close payload, one over 125 bytes or a reason that is not UTF-8 is a
/// protocol error (1002; 1007 for the UTF-8 case). Read over a bare socket,
/// since client libraries rewrite invalid codes they receive.
#[tokio::test]
async fn client_close_frames_are_validated() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let with_code = |code: u16, reason: &[u8]| {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    };
    let mut cases: Vec<(String, Vec<u8>, Vec<u16>)> = vec![
        ("no payload".into(), Vec::new(), vec![1000, 1005]),
        ("1000".into(), with_code(1000, b""), vec![1000]),
        (
            "1001 with a reason".into(),
            with_code(1001, b"bye"),
            vec![1001],
        ),
        ("1012".into(), with_code(1012, b""), vec![1012]),
        ("3000".into(), with_code(3000, b""), vec![3000]),
        ("4999".into(), with_code(4999, b""), vec![4999]),
        ("1-byte payload".into(), vec![0x03], vec![1002]),
        (
            "125-byte payload".into(),
            with_code(1000, &[b'a'; 123]),
            vec![1000],
        ),
        (
            "reason not UTF-8".into(),
            with_code(1000, &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xff]),
            vec![1002, 1007],
        ),
    ];
    for c in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        cases.push((format!("code {c}"), with_code(c, b""), vec![1002]));
    }
    let t = token("alice", 600, &[], &[]);
    let mut wrong = Vec::new();
    for (what, payload, expected) in &cases {
        let got = raw_close(gw.addr, &t, payload).await;
        if !expected.contains(&got) {
            wrong.push(format!("{what}: got {got}, expected one of {expected:?}"));
        }
    }
    // Over 125 bytes (a control frame's limit), with the client library.
    let mut c = gw.connect("alice").await;
    c.send_message(Message::Frame(Frame::message(
        with_code(1000, &[b'a'; 124]),
        OpCode::Control(Control::Close),
        true,
    )))
    .await;
    let got = c.expect_close().await;
    if got != 1002 {
        wrong.push(format!("126-byte payload: got {got}, expected 1002"));
    }
    assert!(
        wrong.is_empty(),
        "close handshakes on /ws:\n{}",
        wrong.join("\n")
    );
}
