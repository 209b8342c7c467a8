//! Recovery after a reconnect: `join` with `since {seq, epoch}` replays what
//! was missed before its ack; `history` returns what a room keeps. When the
//! gateway's own Redis link drops, what history no longer holds is told with
//! one `missed` frame; `/ws` refuses clients while the node's subscription
//! is not live. docs/PROTOCOL.md §1, §4, §7, §8.

use std::net::SocketAddr;
use std::time::Duration;

use broker::protocol::ServerFrame;
use broker_tests::gateway::{
    eventually_async, history, http_get, join_since, msg_fields, token, Client as WsClient,
    ConnectError, Gateway, Options,
};
use broker_tests::proxy::Proxy;
use broker_tests::{ok, run, Publish, RedisServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(15);

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

#[tokio::test]
async fn a_recovery_too_big_for_the_send_queue_is_not_replayed_but_paged() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let room = "feed:big";
    // bob stays in the room, so it keeps its epoch while alice is away.
    let mut bob = gw.connect("bob").await;
    bob.join(room).await;
    let mut c = gw.connect("alice").await;
    let ack = c.join(room).await;
    let epoch = ack["epoch"].as_str().expect("epoch").to_string();
    // 40 messages of 30 KB while alice is away: 1.2 MB, more than half of
    // `send_queue_bytes` (1 MiB). Replayed at once they would close her
    // 4008, and her reconnect would try the same again.
    drop(c);
    let blob = "x".repeat(30_000);
    for i in 0..40 {
        gw.publish(room, "m", json!({"i": i, "blob": blob})).await;
    }
    let mut again = gw.connect("alice").await;
    let ack = again.ack(join_since(room, 0, &epoch)).await;
    assert_eq!(ack["recovered"], false, "join ack: {ack}");
    assert_eq!(
        (&ack["seq"], &ack["epoch"]),
        (&json!(40), &json!(epoch)),
        "same epoch"
    );
    assert!(
        again
            .take_queued()
            .iter()
            .all(|f| !matches!(f, ServerFrame::Msg { .. })),
        "nothing replayed before the ack"
    );
    // The connection is fine, and `history` gives everything in pages.
    again.ping().await;
    let mut seqs = Vec::new();
    let mut since = None;
    loop {
        let page = again.ack(history(room, since, None)).await;
        let messages = page["messages"].as_array().expect("messages");
        seqs.extend(messages.iter().map(|m| m["seq"].as_u64().expect("seq")));
        since = seqs.last().copied();
        if page.get("more") != Some(&json!(true)) {
            break;
        }
    }
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    // A small recovery is still replayed.
    gw.publish(room, "m", json!("small")).await;
    let mut third = gw.connect("alice").await;
    let ack = third.ack(join_since(room, 40, &epoch)).await;
    assert_eq!(ack["recovered"], true, "join ack: {ack}");
    assert_eq!(ack["epoch"], json!(epoch));
    drop(bob);
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

/// Publishes `n` (as JSON) straight into the module, the room keeping the
/// last `keep` messages (none when `keep` is 0). Returns the seq.
fn module_publish(redis: &RedisServer, room: &str, n: u64, keep: u32) -> u64 {
    let data = json!(n).to_string();
    let publish = Publish::json(room, "m", &data);
    let publish = if keep > 0 {
        publish.history(keep, 300)
    } else {
        publish
    };
    broker_tests::int(&run(&mut redis.client(), publish)) as u64
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

/// Waits until the gateway noticed its node channel stopped answering (and
/// so counts as not subscribed).
async fn channel_lost(gw: &Gateway) {
    eventually_async(WAIT, "the node channel is noticed dead", || async {
        match gw.log().contains("node channel did not answer PING") {
            true => Ok(()),
            false => Err("not yet".to_owned()),
        }
    })
    .await;
}

/// Stalls the node's link until the gateway notices, runs `meanwhile`,
/// then lets the link come back and waits until the node is ready again.
async fn gap(proxy: &Proxy, gw: &Gateway, meanwhile: impl FnOnce()) {
    proxy.stall(true);
    channel_lost(gw).await;
    meanwhile();
    proxy.cut();
    proxy.stall(false);
    wait_status(gw, "/readyz", 200).await;
}

/// The next room frames (`msg` as `(seq, data)`, `missed` whole) until
/// `count` were read; presence events are skipped.
async fn room_frames(client: &mut WsClient, count: usize) -> Vec<ServerFrame> {
    let mut out = Vec::new();
    while out.len() < count {
        let frame = client
            .recv_matching(WAIT, "a msg or missed frame", |f| {
                matches!(f, ServerFrame::Msg { .. } | ServerFrame::Missed { .. })
            })
            .await;
        out.push(frame);
    }
    out
}

fn seq_of(frame: &ServerFrame) -> Option<u64> {
    match frame {
        ServerFrame::Msg { seq, data, .. } => {
            assert_eq!(data, &json!(seq), "payload and seq agree");
            Some(*seq)
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_gap_longer_than_history_is_told_with_one_missed_frame_after_the_held_messages() {
    let redis = RedisServer::start();
    let (proxy, gw) = behind_proxy(&redis).await;
    let room = "feed:short";
    let mut alice = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    alice.join(room).await;
    bob.join(room).await;
    for n in 1..=2 {
        module_publish(&redis, room, n, 3);
    }
    for client in [&mut alice, &mut bob] {
        let got: Vec<_> = room_frames(client, 2).await.iter().map(seq_of).collect();
        assert_eq!(got, [Some(1), Some(2)]);
    }
    // 3..=10 while the node's link is down: the room keeps only 8, 9, 10.
    gap(&proxy, &gw, || {
        for n in 3..=10 {
            assert_eq!(module_publish(&redis, room, n, 3), n);
        }
    })
    .await;
    module_publish(&redis, room, 11, 3);
    for client in [&mut alice, &mut bob] {
        let frames = room_frames(client, 5).await;
        let seqs: Vec<_> = frames.iter().map(seq_of).collect();
        assert_eq!(
            seqs,
            [Some(8), Some(9), Some(10), None, Some(11)],
            "{frames:?}"
        );
        let epoch = msg_fields(&frames[0]).4.to_string();
        assert_eq!(
            frames[3],
            ServerFrame::Missed {
                room: room.into(),
                epoch,
                seq: 10,
                count: Some(5),
            }
        );
        let rest = client.drain(Duration::from_millis(300)).await;
        assert!(
            rest.iter()
                .all(|f| !matches!(f, ServerFrame::Msg { .. } | ServerFrame::Missed { .. })),
            "once, nothing twice: {rest:?}"
        );
    }
    assert_eq!(gw.metric("broker_gap_repaired_total").await, 3.0);
    assert_eq!(gw.metric("broker_gap_unrepaired_total").await, 5.0);
}

#[tokio::test]
async fn a_gap_in_a_room_without_history_is_told_with_one_missed_frame() {
    let redis = RedisServer::start();
    let (proxy, gw) = behind_proxy(&redis).await;
    let room = "feed:bare";
    let mut alice = gw.connect("alice").await;
    alice.join(room).await;
    module_publish(&redis, room, 1, 0);
    let frames = room_frames(&mut alice, 1).await;
    assert_eq!(seq_of(&frames[0]), Some(1));
    let epoch = msg_fields(&frames[0]).4.to_string();
    gap(&proxy, &gw, || {
        for n in 2..=4 {
            assert_eq!(module_publish(&redis, room, n, 0), n);
        }
    })
    .await;
    module_publish(&redis, room, 5, 0);
    let frames = room_frames(&mut alice, 2).await;
    assert_eq!(
        frames[0],
        ServerFrame::Missed {
            room: room.into(),
            epoch,
            seq: 4,
            count: Some(3),
        }
    );
    assert_eq!(seq_of(&frames[1]), Some(5));
    // A gap that lost nothing tells nothing.
    gap(&proxy, &gw, || {}).await;
    module_publish(&redis, room, 6, 0);
    let frames = room_frames(&mut alice, 1).await;
    assert_eq!(seq_of(&frames[0]), Some(6), "{frames:?}");
}

/// The status line and the `Retry-After` header of a `/ws` upgrade
/// request (with a valid token in the query), read without upgrading.
async fn upgrade_answer(addr: SocketAddr, with_token: bool) -> (u16, Option<String>) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let query = if with_token {
            format!("?token={}", token("alice", 3600, &[], &[]))
        } else {
            String::new()
        };
        let request = format!(
            "GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.expect("read") == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let retry = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().to_string())
        });
        (status, retry)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an answer")
}

#[tokio::test]
async fn ws_refuses_with_503_while_the_node_is_not_subscribed() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    assert_eq!(upgrade_answer(gw.addr, true).await, (101, None));
    // The node's commands still work, but it cannot subscribe: its channel
    // is dropped and SUBSCRIBE is refused.
    let mut con = redis.client();
    ok(&mut con, &["ACL", "SETUSER", "default", "-subscribe"]);
    ok(&mut con, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    wait_status(&gw, "/readyz", 503).await;
    let ready = http_get(gw.addr, "/readyz", None).await.json();
    assert_eq!(
        (ready["lease"].as_bool(), ready["subscribed"].as_bool()),
        (Some(true), Some(false)),
        "{ready}"
    );
    for with_token in [true, false] {
        assert_eq!(
            upgrade_answer(gw.addr, with_token).await,
            (503, Some("1".to_string())),
            "token in the upgrade: {with_token}"
        );
    }
    match WsClient::try_connect(&gw.ws_url(Some(&token("bob", 3600, &[], &[]))), &[]).await {
        Err(ConnectError::Status(503)) => {}
        Err(other) => panic!("expected 503, got {other:?}"),
        Ok(_) => panic!("expected 503, the upgrade succeeded"),
    }
    // Subscribed again: upgrades go through.
    ok(&mut con, &["ACL", "SETUSER", "default", "+subscribe"]);
    wait_status(&gw, "/readyz", 200).await;
    let mut alice = gw.connect("alice").await;
    alice.ping().await;
}

#[tokio::test]
async fn ws_refuses_with_503_while_the_nodes_redis_link_is_stalled() {
    let redis = RedisServer::start();
    let (proxy, gw) = behind_proxy(&redis).await;
    proxy.stall(true);
    channel_lost(&gw).await;
    // Also a client that would authenticate with an `auth` frame later.
    assert_eq!(
        upgrade_answer(gw.addr, false).await,
        (503, Some("1".to_string()))
    );
    proxy.cut();
    proxy.stall(false);
    wait_status(&gw, "/readyz", 200).await;
    assert_eq!(upgrade_answer(gw.addr, false).await.0, 101);
    let mut alice = gw.connect("alice").await;
    alice.ping().await;
}
