//! `BROKER.PUBLISH`: sequence numbers, fan-out to the nodes with members,
//! the frame, `FORMAT`, `EXCEPT`, `FROM`, `RATE`.

use broker::wire::Envelope;
use broker_tests::*;
use redis::Value;
use serde_json::json;

/// Publishes raw bytes as the payload (default format: MessagePack).
fn publish_bytes(
    con: &mut redis::Connection,
    room: &str,
    payload: &[u8],
    extra: &[&str],
) -> redis::RedisResult<Value> {
    redis::cmd("BROKER.PUBLISH")
        .arg(room)
        .arg("ev")
        .arg(payload)
        .arg(extra)
        .query(con)
}

fn room_seq(con: &mut redis::Connection, room: &str) -> i64 {
    int(&field(&ok(con, &["BROKER.HISTORY", room]), "seq"))
}

/// The msg envelope of `m`: (room, seq, epoch, except, frame as JSON).
/// The envelope's `ts` is the frame's.
fn msg_of(m: &Message) -> (String, u64, String, Option<String>, serde_json::Value) {
    match m.envelope() {
        Envelope::Msg {
            room,
            seq,
            epoch,
            except,
            frame,
            ts,
        } => {
            let frame = frame_json(frame);
            assert_eq!(
                frame["ts"].as_u64(),
                Some(ts),
                "envelope ts {ts}, frame {frame}"
            );
            (
                room.to_string(),
                seq,
                epoch.to_string(),
                except.map(str::to_string),
                frame,
            )
        }
        other => panic!("expected a msg envelope, got {other:?}"),
    }
}

#[test]
fn sequence_numbers_count_up_per_room() {
    let server = RedisServer::start();
    let mut con = server.client();
    // Rooms with a member (an empty room without history may be dropped,
    // and start again at 1 with a new epoch).
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:a", "alice", "c1", "n1", &[]);
    join(&mut con, "chat:b", "alice", "c1", "n1", &[]);
    assert_eq!(publish_str(&mut con, "chat:a", "ev", "1"), 1);
    assert_eq!(publish_str(&mut con, "chat:a", "ev", "2"), 2);
    assert_eq!(publish_str(&mut con, "chat:b", "ev", "1"), 1);
    assert_eq!(publish_str(&mut con, "chat:a", "ev", "3"), 3);
}

#[test]
fn fan_out_reaches_only_nodes_with_members_once_each() {
    let server = RedisServer::start();
    let mut con = server.client();
    for n in ["n1", "n2", "n3"] {
        lease(&mut con, n, 60_000);
    }
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "bob", "c2", "n2");
    open(&mut con, "carol", "c3", "n2");
    open(&mut con, "dave", "c4", "n3");
    let j = join(&mut con, "chat:fan", "alice", "c1", "n1", &[]);
    let epoch = text(&j["epoch"]);
    join(&mut con, "chat:fan", "bob", "c2", "n2", &[]);
    join(&mut con, "chat:fan", "carol", "c3", "n2", &[]);
    join(&mut con, "chat:other", "dave", "c4", "n3", &[]);
    let sub = Subscriber::nodes(&server, &["n1", "n2", "n3"]);

    let before = now_ms();
    let seq = int(&ok(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "chat:fan",
            "message",
            r#"{"text":"hi"}"#,
            "FORMAT",
            "json",
        ],
    ));
    let after = now_ms();
    assert_eq!(seq, 1);

    let seen = sub.fence(&mut con);
    let mut nodes: Vec<&str> = seen.iter().map(Message::node).collect();
    nodes.sort_unstable();
    assert_eq!(
        nodes,
        ["n1", "n2"],
        "one envelope per node with members, none for n3"
    );
    for m in &seen {
        let (room, s, e, except, frame) = msg_of(m);
        assert_eq!(room, "chat:fan");
        assert_eq!(s, 1);
        assert_eq!(e, epoch);
        assert_eq!(except, None);
        assert_eq!(frame["t"], "msg", "{frame}");
        assert_eq!(frame["room"], "chat:fan", "{frame}");
        assert_eq!(frame["ev"], "message", "{frame}");
        assert_eq!(frame["data"], json!({"text": "hi"}), "{frame}");
        assert_eq!(frame["seq"], 1, "{frame}");
        assert_eq!(frame["epoch"], epoch.as_str(), "{frame}");
        let ts = frame["ts"].as_i64().expect("ts is an integer");
        assert!(
            (before..=after).contains(&ts),
            "ts {ts} not in {before}..{after}"
        );
        assert!(frame.get("from").is_none(), "no FROM, no from: {frame}");
    }
    // Both nodes got the very same frame.
    assert_eq!(
        match seen[0].envelope() {
            Envelope::Msg { frame, .. } => frame.to_vec(),
            _ => unreachable!(),
        },
        match seen[1].envelope() {
            Envelope::Msg { frame, .. } => frame.to_vec(),
            _ => unreachable!(),
        }
    );
    let deliveries: i64 = info_field(&mut con, "broker", "deliveries")
        .expect("deliveries")
        .parse()
        .unwrap();
    assert_eq!(deliveries, 2);
    let publishes = info_field(&mut con, "broker", "publishes").expect("publishes");
    assert_eq!(publishes, "1");
}

#[test]
fn a_room_without_members_is_published_to_nobody() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    let sub = Subscriber::nodes(&server, &["n1"]);
    assert_eq!(publish_str(&mut con, "chat:empty", "ev", "x"), 1);
    assert!(sub.fence(&mut con).is_empty());
}

#[test]
fn except_and_from_are_carried() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "bob", "c2", "n1");
    join(&mut con, "chat:a", "alice", "c1", "n1", &[]);
    join(&mut con, "chat:a", "bob", "c2", "n1", &[]);
    let sub = Subscriber::nodes(&server, &["n1"]);

    ok(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "chat:a",
            "ev",
            "hi",
            "FORMAT",
            "string",
            "EXCEPT",
            "c1",
            "FROM",
            "c1",
        ],
    );
    let seen = sub.fence(&mut con);
    assert_eq!(seen.len(), 1);
    let (_, _, _, except, frame) = msg_of(&seen[0]);
    assert_eq!(except.as_deref(), Some("c1"));
    assert_eq!(
        frame["from"],
        json!({"user": "alice", "conn": "c1"}),
        "{frame}"
    );
    assert_eq!(frame["data"], "hi");

    // EXCEPT alone: no `from`.
    ok(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "chat:a",
            "ev",
            "hi",
            "FORMAT",
            "string",
            "EXCEPT",
            "c2",
        ],
    );
    let seen = sub.fence(&mut con);
    let (_, seq, _, except, frame) = msg_of(&seen[0]);
    assert_eq!((seq, except.as_deref()), (2, Some("c2")));
    assert!(frame.get("from").is_none(), "{frame}");
}

#[test]
fn from_a_non_member_is_refused() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "bob", "c2", "n1");
    join(&mut con, "chat:a", "alice", "c1", "n1", &[]);
    let sub = Subscriber::nodes(&server, &["n1"]);
    for from in ["c2", "nosuch"] {
        let e = err(
            &mut con,
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "FROM",
                from,
            ],
        );
        assert!(e.starts_with("NOTMEMBER"), "{e}");
    }
    assert_eq!(room_seq(&mut con, "chat:a"), 0, "nothing published");
    assert!(sub.fence(&mut con).is_empty());
}

#[test]
fn payload_formats() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:f", "alice", "c1", "n1", &[]);
    let sub = Subscriber::nodes(&server, &["n1"]);
    let data = |sub: &Subscriber, con: &mut redis::Connection| {
        let seen = sub.fence(con);
        assert_eq!(seen.len(), 1, "{seen:?}");
        msg_of(&seen[0]).4["data"].clone()
    };

    // MessagePack by default.
    let value = json!({"text": "hi", "n": [1, 2, 3], "ok": true, "none": null});
    let packed = rmp_serde::to_vec_named(&value).unwrap();
    publish_bytes(&mut con, "chat:f", &packed, &[]).unwrap();
    assert_eq!(data(&sub, &mut con), value);
    publish_bytes(&mut con, "chat:f", &packed, &["FORMAT", "msgpack"]).unwrap();
    assert_eq!(data(&sub, &mut con), value);
    // A lone nil is one value too.
    publish_bytes(&mut con, "chat:f", &[0xc0], &[]).unwrap();
    assert_eq!(data(&sub, &mut con), serde_json::Value::Null);

    // JSON, converted.
    ok(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "chat:f",
            "ev",
            r#"[1, "two", {"three": 3.5}]"#,
            "FORMAT",
            "json",
        ],
    );
    assert_eq!(data(&sub, &mut con), json!([1, "two", {"three": 3.5}]));

    // A string, as is.
    ok(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "chat:f",
            "ev",
            r#"{"not": "parsed"}"#,
            "FORMAT",
            "string",
        ],
    );
    assert_eq!(data(&sub, &mut con), json!(r#"{"not": "parsed"}"#));
    // Lower-case format names are accepted like any Redis keyword.
    ok(
        &mut con,
        &["BROKER.PUBLISH", "chat:f", "ev", "x", "format", "string"],
    );
    assert_eq!(data(&sub, &mut con), json!("x"));
    assert_eq!(room_seq(&mut con, "chat:f"), 6);
}

#[test]
fn invalid_payloads_are_refused_and_publish_nothing() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:f", "alice", "c1", "n1", &[]);
    let sub = Subscriber::nodes(&server, &["n1"]);

    let mut deep = vec![0x91u8; 65]; // 65 nested one-element arrays
    deep.push(0x01);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("reserved byte 0xc1", vec![0xc1], vec![]),
        ("truncated array", vec![0x92, 0x01], vec![]),
        ("truncated string", vec![0xa5, b'h', b'i'], vec![]),
        ("two values", vec![0x01, 0x02], vec![]),
        ("empty", vec![], vec![]),
        (
            "plain text as msgpack",
            b"hello".to_vec(),
            vec!["FORMAT", "msgpack"],
        ),
        ("nested 65 deep", deep, vec![]),
        ("invalid JSON", b"{\"a\":".to_vec(), vec!["FORMAT", "json"]),
        (
            "JSON with trailing text",
            b"[1] x".to_vec(),
            vec!["FORMAT", "json"],
        ),
        (
            "non-UTF-8 string",
            vec![0xff, 0xfe],
            vec!["FORMAT", "string"],
        ),
        ("msgpack string not UTF-8", vec![0xa2, 0xff, 0xfe], vec![]),
    ];
    for (what, payload, extra) in &cases {
        match publish_bytes(&mut con, "chat:f", payload, extra) {
            Ok(v) => panic!("{what}: accepted, replied {v:?}"),
            Err(e) => {
                let line = err_line(&e);
                assert!(line.starts_with("ERR invalid"), "{what}: {line}");
            }
        }
    }
    // 64 deep is fine.
    let mut deep64 = vec![0x91u8; 63];
    deep64.push(0x01);
    publish_bytes(&mut con, "chat:f", &deep64, &[]).expect("63 arrays around an int");
    let seen = sub.fence(&mut con);
    assert_eq!(seen.len(), 1, "only the valid one was delivered");
    assert_eq!(room_seq(&mut con, "chat:f"), 1);
    assert_alive(&server);
}

#[test]
fn rate_limited_publish_is_refused_with_retry_ms() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:r", "alice", "c1", "n1", &[]);
    let sub = Subscriber::nodes(&server, &["n1"]);
    let key = "broker:rate:{chat:r}:alice";
    // burst 2, 1 per 60 s: two back to back, then a minute's wait.
    let publish = |con: &mut redis::Connection| {
        call(
            con,
            &[
                "BROKER.PUBLISH",
                "chat:r",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "RATE",
                key,
                "2",
                "1",
                "60",
            ],
        )
    };
    assert_eq!(int(&publish(&mut con).unwrap()), 1);
    assert_eq!(int(&publish(&mut con).unwrap()), 2);
    let e = err_line(&publish(&mut con).unwrap_err());
    let (code, ms) = e.split_once(' ').unwrap_or((&e, ""));
    assert_eq!(code, "RATELIMITED", "{e}");
    let ms: i64 = ms.parse().unwrap_or_else(|_| panic!("retry ms in {e:?}"));
    assert!((1..=60_000).contains(&ms), "retry after {ms} ms");

    assert_eq!(
        room_seq(&mut con, "chat:r"),
        2,
        "the limited publish took no seq"
    );
    assert_eq!(sub.fence(&mut con).len(), 2, "and was not delivered");
    // The arrival time is a native key with an expiry.
    let tat: i64 = text(&ok(&mut con, &["GET", key]))
        .parse()
        .expect("integer TAT");
    assert!(
        tat > now_ms() * 1_000_000,
        "TAT in ns, in the future: {tat}"
    );
    let pttl = int(&ok(&mut con, &["PTTL", key]));
    assert!((1..=120_000).contains(&pttl), "pttl {pttl}");
    let throttled = info_field(&mut con, "broker", "throttled").expect("throttled");
    assert_eq!(throttled, "1");
    // Another user's key is independent.
    ok(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "chat:r",
            "ev",
            "hi",
            "FORMAT",
            "string",
            "RATE",
            "broker:rate:{chat:r}:bob",
            "2",
            "1",
            "60",
        ],
    );
}

#[test]
fn broadcast_reaches_every_live_node() {
    let server = RedisServer::start();
    let mut con = server.client();
    assert_eq!(
        int(&ok(
            &mut con,
            &["BROKER.BROADCAST", "ev", "x", "FORMAT", "string"]
        )),
        0,
        "no nodes, nobody told"
    );
    for n in ["n1", "n2", "n3"] {
        lease(&mut con, n, 60_000);
    }
    // n3 has no connections: a broadcast goes to it all the same.
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "bob", "c2", "n2");
    let sub = Subscriber::nodes(&server, &["n1", "n2", "n3"]);

    let before = now_ms();
    let told = int(&ok(
        &mut con,
        &[
            "BROKER.BROADCAST",
            "notice",
            r#"{"text":"maintenance"}"#,
            "FORMAT",
            "json",
        ],
    ));
    let after = now_ms();
    assert_eq!(told, 3);
    let seen = sub.fence(&mut con);
    let mut nodes: Vec<&str> = seen.iter().map(Message::node).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    for m in &seen {
        let Envelope::Broadcast {
            namespace,
            frame,
            ts,
        } = m.envelope()
        else {
            panic!("expected a broadcast envelope, got {:?}", m.envelope());
        };
        assert_eq!(namespace, None);
        assert!((before..=after).contains(&(ts as i64)), "ts {ts}");
        let f = frame_json(frame);
        assert_eq!(f["t"], "msg", "{f}");
        assert_eq!(f["room"], "*", "{f}");
        assert_eq!(f["ev"], "notice", "{f}");
        assert_eq!(f["data"], json!({"text": "maintenance"}), "{f}");
        assert_eq!(f["seq"], 0, "{f}");
        assert_eq!(f["epoch"], "", "{f}");
        assert_eq!(f["ts"].as_u64(), Some(ts), "{f}");
    }

    // With NS: the namespace rides along, the frame's room is `ns:*`.
    let told = int(&ok(
        &mut con,
        &[
            "BROKER.BROADCAST",
            "notice",
            "hi",
            "FORMAT",
            "string",
            "NS",
            "chat",
        ],
    ));
    assert_eq!(told, 3);
    let seen = sub.fence(&mut con);
    assert_eq!(seen.len(), 3);
    for m in &seen {
        let Envelope::Broadcast {
            namespace, frame, ..
        } = m.envelope()
        else {
            panic!("expected a broadcast envelope, got {:?}", m.envelope());
        };
        assert_eq!(namespace, Some("chat"));
        let f = frame_json(frame);
        assert_eq!(
            (f["room"].as_str(), f["data"].as_str()),
            (Some("chat:*"), Some("hi"))
        );
    }
    // Nothing is stored and no room counts.
    assert_eq!(int(&ok(&mut con, &["DBSIZE"])), 0);
    assert_eq!(room_seq(&mut con, "chat:x"), 0);
}

#[test]
fn broadcast_refuses_bad_input() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    let sub = Subscriber::nodes(&server, &["n1"]);
    for (args, prefix) in [
        (
            &["BROKER.BROADCAST", "ev"][..],
            "ERR wrong number of arguments",
        ),
        (&["BROKER.BROADCAST", "ev", "x", "BOGUS"], "ERR syntax"),
        (
            &[
                "BROKER.BROADCAST",
                "ev",
                "x",
                "FORMAT",
                "string",
                "NS",
                "bad ns",
            ],
            "ERR invalid",
        ),
        (
            &["BROKER.BROADCAST", "ev", "{", "FORMAT", "json"],
            "ERR invalid",
        ),
    ] {
        let e = err(&mut con, args);
        assert!(e.starts_with(prefix), "{args:?}: {e}");
    }
    let bad_msgpack: redis::RedisResult<Value> = redis::cmd("BROKER.BROADCAST")
        .arg("ev")
        .arg(&[0xc1u8][..])
        .query(&mut con);
    let e = err_line(&bad_msgpack.unwrap_err());
    assert!(e.starts_with("ERR invalid"), "{e}");
    assert!(sub.fence(&mut con).is_empty(), "nothing was sent");
    assert_alive(&server);
    // Last: a missing option value is a syntax error (docs/COMMANDS.md).
    let e = err(&mut con, &["BROKER.BROADCAST", "ev", "x", "NS"]);
    assert!(e.starts_with("ERR syntax"), "{e}");
}
