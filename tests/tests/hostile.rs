//! Hostile input over real sockets. Every case gets the contract's error or
//! close code, and afterwards the gateway and Redis are up and a bystander
//! in a busy room has lost nothing.

use std::time::{Duration, Instant};

use broker::protocol::{CloseCode, ServerFrame};
use broker_tests::gateway::{token, Bystander, Client, ConnectError, Gateway, Options};
use broker_tests::raw::{header, op, Ending, RawWs};
use broker_tests::{run, Command, Presence, Publish, RedisServer};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(5);

/// A member of `feed:calm` that checks, after each attack, that it still
/// `{"t": "pub", "id": 1, "room": "feed:x", "ev": "e", "data": <raw>}`.
fn pub_with_data(raw_data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x85];
    for (k, v) in [("t", "pub"), ("room", "feed:x"), ("ev", "e")] {
        out.push(0xa0 | k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.push(0xa0 | v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(&[0xa2, b'i', b'd', 0x01]);
    out.extend_from_slice(&[0xa4, b'd', b'a', b't', b'a']);
    out.extend_from_slice(raw_data);
    out
}

/// The `err` frames among `frames`, as (id, code).
fn errs(frames: &[Vec<u8>]) -> Vec<(Option<i64>, String)> {
    frames
        .iter()
        .filter_map(|f| match broker::protocol::decode_server_frame(f) {
            Ok(ServerFrame::Err { id, code, .. }) => Some((id, code)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn websocket_framing_abuse_closes_only_the_offender() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().max_frame_bytes(8192)).await;
    let mut bystander = Bystander::join(&gw).await;
    let t = token("mallory", 3600, &[], &[]);

    // (what, bytes to send after the upgrade, the close code expected)
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "an unmasked client frame",
            {
                let mut f = header(true, op::BINARY, false, 3);
                f.extend_from_slice(&[0x80, 0x80, 0x80]);
                f
            },
            1002,
        ),
        (
            "a fragmented control frame",
            {
                let mut f = header(false, op::PING, true, 0);
                f.extend_from_slice(&[1, 2, 3, 4]);
                f
            },
            1002,
        ),
        (
            "a continuation with nothing to continue",
            {
                let mut f = header(true, op::CONT, true, 0);
                f.extend_from_slice(&[1, 2, 3, 4]);
                f
            },
            1002,
        ),
        (
            "a header announcing 2^63 bytes",
            {
                let mut f = header(true, op::BINARY, true, 1 << 63);
                f.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
                f
            },
            CloseCode::TooLarge.code(),
        ),
        (
            "reserved bits set",
            {
                let mut f = header(true, op::BINARY, true, 0);
                f[0] |= 0x40;
                f.extend_from_slice(&[1, 2, 3, 4]);
                f
            },
            1002,
        ),
        (
            "an unknown opcode",
            {
                let mut f = header(true, 0x3, true, 0);
                f.extend_from_slice(&[1, 2, 3, 4]);
                f
            },
            1002,
        ),
        (
            "a ping over 125 bytes",
            {
                let mut f = vec![0x89, 0x80 | 126, 0, 200];
                f.extend_from_slice(&[0; 204]);
                f
            },
            1002,
        ),
    ];
    for (what, bytes, want) in cases {
        let mut raw = RawWs::connect(gw.addr, &t).await;
        raw.bytes(&bytes).await;
        let (_, ending) = raw.until_close(WAIT).await;
        assert_eq!(ending, Ending::Close(want), "{what}");
        bystander.still_fine(&gw, &redis, what).await;
    }

    // Fragments that add up past limits.max_frame_bytes (8 KiB here):
    // 1009 at the fragment that crosses it, whatever the total announced.
    let mut raw = RawWs::connect(gw.addr, &t).await;
    raw.frame(false, op::BINARY, true, &[0x90; 4000]).await;
    for _ in 0..10 {
        raw.frame(false, op::CONT, true, &[0; 4000]).await;
    }
    let (_, ending) = raw.until_close(WAIT).await;
    assert_eq!(
        ending,
        Ending::Close(CloseCode::TooLarge.code()),
        "fragments past the cap"
    );
    bystander
        .still_fine(&gw, &redis, "fragments past the cap")
        .await;

    // Half a frame, then silence: the connection is not served meanwhile
    // but nothing else waits on it; the idle timeout (60 s) would end it.
    let mut raw = RawWs::connect(gw.addr, &t).await;
    raw.bytes(&[0x82, 0x80 | 100, 1, 2, 3, 4, 5]).await;
    bystander.still_fine(&gw, &redis, "a half-sent frame").await;
    drop(raw);
}

#[tokio::test]
async fn malformed_messagepack_gets_bad_frame_and_the_connection_lives() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut bystander = Bystander::join(&gw).await;
    let t = token("mallory", 3600, &[], &[]);
    let mut raw = RawWs::connect(gw.addr, &t).await;

    let deep: Vec<u8> = std::iter::repeat_n(0x91u8, 10_000).chain([0xc0]).collect();
    let cases: Vec<(&str, Vec<u8>, Option<i64>)> = vec![
        (
            "a map announcing 3 entries with 1",
            vec![0x83, 0xa1, b't', 0xa4, b'p', b'i', b'n', b'g'],
            None,
        ),
        (
            "a string cut short",
            vec![0x81, 0xa1, b't', 0xa9, b'p', b'i'],
            None,
        ),
        (
            "10,000 nested arrays in data",
            pub_with_data(&deep),
            Some(1),
        ),
        (
            "an array announcing 2^32-1 items in 3 bytes",
            pub_with_data(&[0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
            Some(1),
        ),
        (
            "a map announcing 2^32-1 entries",
            vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b't'],
            None,
        ),
        (
            "a bin announcing 4 GiB",
            pub_with_data(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0]),
            Some(1),
        ),
        (
            "trailing bytes after the map",
            {
                let mut f =
                    rmp_serde::to_vec_named(&json!({"t": "ping", "id": 2})).unwrap_or_default();
                f.push(0xc0);
                f
            },
            Some(2),
        ),
        (
            "invalid UTF-8 in the room",
            {
                let mut f = vec![
                    0x83, 0xa1, b't', 0xa4, b'j', b'o', b'i', b'n', 0xa2, b'i', b'd', 0x03,
                ];
                f.extend_from_slice(&[0xa4, b'r', b'o', b'o', b'm', 0xa3, 0xff, 0xfe, 0xfd]);
                f
            },
            Some(3),
        ),
        (
            "invalid UTF-8 in a key",
            vec![0x81, 0xa2, 0xc3, 0x28, 0x01],
            None,
        ),
        ("a reserved byte 0xc1", vec![0xc1], None),
        (
            "an ext type as t",
            vec![0x81, 0xa1, b't', 0xd4, 0x01, 0x00],
            None,
        ),
    ];
    for (what, bytes, id) in cases {
        raw.binary(&bytes).await;
        raw.binary(&rmp_serde::to_vec_named(&json!({"t": "ping", "id": 99})).unwrap_or_default())
            .await;
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        // Read until the ping's ack: the answer to the bad frame comes first.
        loop {
            let (frames, ending) = raw.until_close(Duration::from_millis(300)).await;
            got.extend(frames);
            assert_eq!(ending, Ending::Open, "{what}: the connection stays open");
            let acked = got.iter().any(|f| {
                matches!(
                    broker::protocol::decode_server_frame(f),
                    Ok(ServerFrame::Ack { id: 99, .. })
                )
            });
            if acked || Instant::now() > deadline {
                break;
            }
        }
        let e = errs(&got);
        assert_eq!(e.len(), 1, "{what}: one err, then the ping's ack: {e:?}");
        assert_eq!(e[0].1, "bad_frame", "{what}");
        assert_eq!(e[0].0, id, "{what}: the id is echoed when it could be read");
        bystander.still_fine(&gw, &redis, what).await;
    }
}

#[tokio::test]
async fn wrong_types_in_every_field_are_bad_frames() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut c = gw.connect("mallory").await;
    c.join("feed:x").await;
    let frames = [
        json!({"t": "join", "id": 10, "room": 5}),
        json!({"t": "join", "id": 11, "room": "feed:x", "since": "yesterday"}),
        json!({"t": "join", "id": 12, "room": "feed:x", "since": {"seq": "1", "epoch": "e"}}),
        json!({"t": "join", "id": 13, "room": "feed:x", "since": {"seq": -1, "epoch": "e"}}),
        json!({"t": "join", "id": 14, "room": "feed:x", "since": {"seq": 1, "epoch": 7}}),
        json!({"t": "leave", "id": 15, "room": ["feed:x"]}),
        json!({"t": "pub", "id": 16, "room": "feed:x", "ev": 1, "data": 1}),
        json!({"t": "pub", "id": 17, "room": "feed:x", "ev": "e", "data": 1, "others": "yes"}),
        json!({"t": "pub", "id": 18, "room": {"r": 1}, "ev": "e", "data": 1}),
        json!({"t": "presence", "id": 19, "room": null}),
        json!({"t": "history", "id": 20, "room": "feed:x", "since": "0"}),
        json!({"t": "history", "id": 21, "room": "feed:x", "limit": -5}),
        json!({"t": "refresh", "id": 22, "token": 12345}),
        json!({"t": "auth", "id": 23, "token": ["a"]}),
        json!({"t": 7, "id": 24}),
        json!({"t": "ping", "id": "25"}),
        json!({"t": "ping", "id": 1.5}),
    ];
    for frame in frames {
        let bytes = rmp_serde::to_vec_named(&frame).unwrap_or_default();
        c.send_message(tokio_tungstenite::tungstenite::Message::binary(bytes))
            .await;
        let (id, code) = c.recv_err().await;
        let want = frame["id"].as_i64();
        assert_eq!(code, "bad_frame", "{frame}");
        assert_eq!(id, want, "{frame}: the id is echoed when it is an integer");
        c.ping().await;
    }
}

#[tokio::test]
async fn an_event_name_the_module_would_refuse_is_the_clients_bad_frame() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut c = gw.connect("mallory").await;
    c.join("feed:x").await;
    for ev in ["", &"e".repeat(257)] {
        let (code, _) = c
            .err(broker_tests::gateway::publish("feed:x", ev, &json!(1)))
            .await;
        assert_eq!(code, "bad_frame", "ev of {} bytes", ev.len());
    }
    // 256 bytes is still an event name.
    c.publish("feed:x", &"e".repeat(256), json!(1)).await;
    for path in ["/api/publish", "/api/broadcast"] {
        let body = json!({"room": "feed:x", "ev": "e".repeat(257), "data": 1});
        let resp = gw.admin_post(path, &body).await;
        assert_eq!(resp.status, 400, "{path}: {resp:?}");
    }
    // Not the server's fault: no `internal` error was counted.
    assert_eq!(
        gw.metric("broker_errors_total{code=\"internal\"}").await,
        0.0
    );
    assert_eq!(
        gw.metric("broker_errors_total{code=\"bad_frame\"}").await,
        2.0
    );
}

#[tokio::test]
async fn requests_past_the_connections_budget_are_rate_limited() {
    let redis = RedisServer::start();
    // The shipped budget (the fixture's default is far above it).
    let gw = Gateway::start(&redis, Options::default().requests(200, 10, 50)).await;
    let mut bystander = Bystander::join(&gw).await;
    let mut c = gw.connect("mallory").await;
    c.join("feed:x").await;
    // Join/leave cycling, back to back: the default budget (burst 50, 200
    // per 10 s) holds the join above and 49 more requests.
    let mut limited = None;
    for i in 0..40 {
        let room = "feed:cycle";
        for frame in [
            broker_tests::gateway::join(room),
            broker_tests::gateway::leave(room),
        ] {
            match c.request(frame).await {
                ServerFrame::Ack { .. } => {}
                ServerFrame::Err { code, retry_ms, .. } => {
                    assert_eq!(code, "rate_limited");
                    limited.get_or_insert((i, retry_ms));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let (at, retry_ms) = limited.expect("the cycling was limited");
    assert!((24..=25).contains(&at), "limited at cycle {at}");
    let retry_ms = retry_ms.expect("retry_ms comes with rate_limited");
    assert!((1..=50).contains(&retry_ms), "retry_ms {retry_ms}");
    // Every other request kind takes from the same budget...
    let (code, _) = c.err(broker_tests::gateway::presence_req("feed:x")).await;
    assert_eq!(code, "rate_limited");
    // ...but `pub` has its own (the namespace's rate), and the budget
    // comes back at its rate.
    c.publish("feed:x", "m", json!(1)).await;
    tokio::time::sleep(Duration::from_millis(retry_ms.max(50) + 60)).await;
    c.ack(broker_tests::gateway::presence_req("feed:x")).await;
    // Nobody else was limited.
    let mut other = gw.connect("other").await;
    other.join("feed:cycle").await;
    bystander.still_fine(&gw, &redis, "request flood").await;
}

#[tokio::test]
async fn slowloris_and_connection_floods_do_not_starve_others() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut bystander = Bystander::join(&gw).await;

    // 50 connections that send half a request line and stop.
    let mut lorises = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        s.write_all(b"GET /ws?token=").await.expect("write");
        lorises.push(s);
    }
    bystander
        .still_fine(&gw, &redis, "50 slowloris connections")
        .await;
    // The header timeout (5 s) ends them.
    let started = Instant::now();
    for mut s in lorises {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        .expect("the server ends a slowloris connection");
        let _ = n;
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    // One IP opening connections as fast as it can: limits.max_conns_per_ip
    // (20) are admitted — the bystander is one of them — the rest get 429.
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..40 {
        let url = gw.ws_url(Some(&token(&format!("flood{i}"), 3600, &[], &[])));
        match Client::try_connect(&url, &[]).await {
            Ok(c) => held.push(c),
            Err(broker_tests::gateway::ConnectError::Status(429)) => refused += 1,
            Err(e) => panic!("connection {i}: {e:?}"),
        }
    }
    assert_eq!(held.len(), 19, "20 per IP, the bystander included");
    assert_eq!(refused, 21);
    bystander
        .still_fine(&gw, &redis, "a connection flood")
        .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_its_socket_released() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().send_queue(64)).await;
    let mut bystander = Bystander::join(&gw).await;
    let before = gw.open_fds();
    let mut stuck = RawWs::connect(gw.addr, &token("stuck", 3600, &[], &[])).await;
    stuck
        .binary(&broker::protocol::encode_client_frame(
            &broker_tests::gateway::join("feed:busy"),
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.open_fds(), before + 1);

    // 32 MiB into the room while the client reads nothing: more than the
    // kernel buffers and the 64-frame queue hold.
    let payload = "x".repeat(8192);
    let mut pipe = redis::pipe();
    for _ in 0..4096 {
        pipe.add_command(Publish::string("feed:busy", "m", &payload).to_cmd())
            .ignore();
    }
    pipe.query::<()>(&mut redis.client())
        .expect("publish the flood");

    // The gateway closes it as a slow consumer and lets go of the socket
    // although the client still reads nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.open_fds() > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gw.open_fds(), before, "the stuck client's socket is closed");
    let slow = gw.metric("broker_slow_consumer_disconnects_total").await;
    assert_eq!(slow, 1.0);
    bystander
        .still_fine(&gw, &redis, "a client that stopped reading")
        .await;
    drop(stuck);
}

#[tokio::test]
async fn the_node_pings_and_closes_a_client_that_never_answers() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().keepalive(1, 3)).await;
    // This one answers pings (the client library does, whenever it reads).
    let mut alive = gw.connect("alive").await;
    let mut silent = RawWs::connect(gw.addr, &token("silent", 3600, &[], &[])).await;
    let started = Instant::now();
    let silent_ends = async {
        let (_, ending) = silent.until_close(Duration::from_secs(10)).await;
        (ending, started.elapsed())
    };
    let keep_reading = async {
        // Reading is what makes the client library answer the pings.
        while started.elapsed() < Duration::from_secs(5) {
            let _ = alive.recv_within(Duration::from_millis(200)).await;
        }
    };
    let ((ending, after), ()) = tokio::join!(silent_ends, keep_reading);
    assert_eq!(
        ending,
        Ending::Close(CloseCode::Policy.code()),
        "idle timeout"
    );
    assert!(
        after >= Duration::from_secs(3) && after < Duration::from_secs(6),
        "closed after {after:?}"
    );
    assert!(silent.pings >= 2, "pinged every second: {}", silent.pings);
    // The answering client is still there.
    assert!(alive.drain(Duration::from_millis(100)).await.is_empty());
    alive.ping().await;
}

/// Behind a trusted proxy the client is the rightmost `X-Forwarded-For`
/// hop the gateway does not trust: the per-IP limit counts the clients, not
/// the proxy, and a client cannot dodge it by prepending addresses. Without
/// `trusted_proxies` the header means nothing.
#[tokio::test]
async fn behind_a_trusted_proxy_the_per_ip_limit_counts_clients() {
    let redis = RedisServer::start();
    let gw = Gateway::start(
        &redis,
        Options::default()
            .max_conns_per_ip(2)
            .trusted_proxies(&["127.0.0.0/8"]),
    )
    .await;
    let connect = |user: String, forwarded: &'static str| {
        let url = gw.ws_url(Some(&token(&user, 3600, &[], &[])));
        async move { Client::try_connect(&url, &[("x-forwarded-for", forwarded)]).await }
    };
    // Three clients behind the proxy (127.0.0.1): three addresses.
    let mut held = Vec::new();
    for (i, client) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .into_iter()
        .enumerate()
    {
        let c = connect(format!("behind{i}"), client).await;
        held.push(c.unwrap_or_else(|e| panic!("{client}: {e:?}")));
    }
    // The first one again, made up hops in front: its third is refused.
    held.push(
        connect("again1".into(), "198.51.100.1")
            .await
            .expect("second"),
    );
    let third = connect("again2".into(), "10.9.9.9, 198.51.100.1").await;
    assert!(
        matches!(third, Err(ConnectError::Status(429))),
        "the third connection of 198.51.100.1: {:?}",
        third.err()
    );
    // The module saw the client's address.
    let p = broker_tests::map(&run(&mut redis.client(), Presence::new("behind1")));
    let conn = broker_tests::map(&broker_tests::array(&p["conns"])[0]);
    assert_eq!(broker_tests::text(&conn["ip"]), "198.51.100.2");

    // A gateway that trusts no proxy counts the peer, whatever the header.
    let plain = Gateway::start(&redis, Options::default().max_conns_per_ip(2)).await;
    let mut outcomes = Vec::new();
    for (i, client) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .into_iter()
        .enumerate()
    {
        let url = plain.ws_url(Some(&token(&format!("plain{i}"), 3600, &[], &[])));
        outcomes.push(Client::try_connect(&url, &[("x-forwarded-for", client)]).await);
    }
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok());
    assert!(
        matches!(outcomes[2], Err(ConnectError::Status(429))),
        "the peer's third connection"
    );
    drop(held);
}

#[tokio::test]
async fn refreshing_with_bad_tokens_closes_the_connection() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut bystander = Bystander::join(&gw).await;
    let mut c = gw.connect("mallory").await;
    let forged = broker_tests::gateway::token_with(
        &json!({"sub": "mallory", "exp": broker_tests::gateway::now_s() + 3600}),
        "wrong-secret",
    );
    // Four rejected refreshes are answered and the connection lives on...
    for _ in 0..4 {
        let (code, _) = c.err(broker_tests::gateway::refresh(&forged)).await;
        assert_eq!(code, "unauthorized");
    }
    c.ping().await;
    // ...the fifth is answered, then the connection is closed with 4001.
    let (code, _) = c.err(broker_tests::gateway::refresh(&forged)).await;
    assert_eq!(code, "unauthorized");
    assert_eq!(c.expect_close().await, 4001);
    assert!(gw.metric("broker_auth_failures_total").await >= 5.0);
    bystander.still_fine(&gw, &redis, "bad refreshes").await;
}
