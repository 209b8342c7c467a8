//! `BROKER.PUBLISH`: sequence numbers, fan-out to the nodes with members,
//! the frame, `FORMAT`, `EXCEPT`, `FROM`, `RATE`.

use broker::envelope::Envelope;
use broker_tests::*;
use serde_json::json;

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
    let mut w = World::start();
    // Rooms with a member (an empty room without history may be dropped,
    // and start again at 1 with a new epoch).
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:a");
    w.join(&alice, "chat:b");
    assert_eq!(w.publish("chat:a", "1"), 1);
    assert_eq!(w.publish("chat:a", "2"), 2);
    assert_eq!(w.publish("chat:b", "1"), 1);
    assert_eq!(w.publish("chat:a", "3"), 3);
}

#[test]
fn fan_out_reaches_only_nodes_with_members_once_each() {
    let mut w = World::start();
    w.nodes(&["n1", "n2", "n3"]);
    let alice = w.open("alice", "c1", "n1");
    let bob = w.open("bob", "c2", "n2");
    let carol = w.open("carol", "c3", "n2");
    let dave = w.open("dave", "c4", "n3");
    let j = w.join(&alice, "chat:fan");
    let epoch = text(&j["epoch"]);
    w.join(&bob, "chat:fan");
    w.join(&carol, "chat:fan");
    w.join(&dave, "chat:other");
    let sub = w.listen(&["n1", "n2", "n3"]);

    let before = now_ms();
    let seq = w.int(Publish::json("chat:fan", "message", r#"{"text":"hi"}"#));
    let after = now_ms();
    assert_eq!(seq, 1);

    let seen = w.fence(&sub);
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
    let deliveries: i64 = w.info("deliveries").expect("deliveries").parse().unwrap();
    assert_eq!(deliveries, 2);
    let publishes = w.info("publishes").expect("publishes");
    assert_eq!(publishes, "1");
}

#[test]
fn a_room_without_members_is_published_to_nobody() {
    let mut w = World::start();
    w.node("n1");
    let sub = w.listen(&["n1"]);
    assert_eq!(w.publish("chat:empty", "x"), 1);
    assert!(w.fence(&sub).is_empty());
}

#[test]
fn except_and_from_are_carried() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    let bob = w.open("bob", "c2", "n1");
    w.join(&alice, "chat:a");
    w.join(&bob, "chat:a");
    let sub = w.listen(&["n1"]);

    w.ok(alice.publish("chat:a", "hi").except("c1"));
    let seen = w.fence(&sub);
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
    w.ok(Publish::string("chat:a", "ev", "hi").except("c2"));
    let seen = w.fence(&sub);
    let (_, seq, _, except, frame) = msg_of(&seen[0]);
    assert_eq!((seq, except.as_deref()), (2, Some("c2")));
    assert!(frame.get("from").is_none(), "{frame}");
}

#[test]
fn from_a_non_member_is_refused() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.open("bob", "c2", "n1");
    w.join(&alice, "chat:a");
    let sub = w.listen(&["n1"]);
    for from in ["c2", "nosuch"] {
        let e = w.err(Publish::string("chat:a", "ev", "hi").from_conn(from));
        assert!(e.starts_with("NOTMEMBER"), "{e}");
    }
    assert_eq!(w.seq("chat:a"), 0, "nothing published");
    assert!(w.fence(&sub).is_empty());
}

#[test]
fn payload_formats() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:f");
    let sub = w.listen(&["n1"]);
    let data = |w: &mut World| {
        let seen = w.fence(&sub);
        assert_eq!(seen.len(), 1, "{seen:?}");
        msg_of(&seen[0]).4["data"].clone()
    };

    // MessagePack by default.
    let value = json!({"text": "hi", "n": [1, 2, 3], "ok": true, "none": null});
    let packed = rmp_serde::to_vec_named(&value).unwrap();
    publish_without_options(&mut w.con, "chat:f", "ev", &packed).expect("a default publish");
    assert_eq!(data(&mut w), value);
    w.ok(Publish::new("chat:f", "ev", &packed).format(Format::Msgpack));
    assert_eq!(data(&mut w), value);
    // A lone nil is one value too.
    w.ok(Publish::new("chat:f", "ev", &[0xc0]));
    assert_eq!(data(&mut w), serde_json::Value::Null);

    // JSON, converted.
    w.ok(Publish::json(
        "chat:f",
        "ev",
        r#"[1, "two", {"three": 3.5}]"#,
    ));
    assert_eq!(data(&mut w), json!([1, "two", {"three": 3.5}]));

    // A string, as is.
    w.ok(Publish::string("chat:f", "ev", r#"{"not": "parsed"}"#));
    assert_eq!(data(&mut w), json!(r#"{"not": "parsed"}"#));
    // Lower-case format names are accepted like any Redis keyword (raw: the
    // keyword's spelling is the point).
    ok(
        &mut w.con,
        &["BROKER.PUBLISH", "chat:f", "ev", "x", "format", "string"],
    );
    assert_eq!(data(&mut w), json!("x"));
    assert_eq!(w.seq("chat:f"), 6);
}

#[test]
fn invalid_payloads_are_refused_and_publish_nothing() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:f");
    let sub = w.listen(&["n1"]);

    let mut deep = vec![0x91u8; 65]; // 65 nested one-element arrays
    deep.push(0x01);
    // (what, payload, FORMAT; None for the default, MessagePack)
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("reserved byte 0xc1", vec![0xc1], None),
        ("truncated array", vec![0x92, 0x01], None),
        ("truncated string", vec![0xa5, b'h', b'i'], None),
        ("two values", vec![0x01, 0x02], None),
        ("empty", vec![], None),
        ("plain text as msgpack", b"hello".to_vec(), Some("msgpack")),
        ("nested 65 deep", deep, None),
        ("invalid JSON", b"{\"a\":".to_vec(), Some("json")),
        ("JSON with trailing text", b"[1] x".to_vec(), Some("json")),
        ("non-UTF-8 string", vec![0xff, 0xfe], Some("string")),
        ("msgpack string not UTF-8", vec![0xa2, 0xff, 0xfe], None),
    ];
    for (what, payload, format) in &cases {
        let reply = match format {
            // Raw: no FORMAT at all (the typed command always writes one).
            None => publish_without_options(&mut w.con, "chat:f", "ev", payload),
            Some(name) => {
                let format = Format::parse(name).expect("a format name");
                w.call(Publish::new("chat:f", "ev", payload).format(format))
            }
        };
        match reply {
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
    w.call(Publish::new("chat:f", "ev", &deep64))
        .expect("63 arrays around an int");
    let seen = w.fence(&sub);
    assert_eq!(seen.len(), 1, "only the valid one was delivered");
    assert_eq!(w.seq("chat:f"), 1);
    assert_alive(&w.server);
}

#[test]
fn rate_limited_publish_is_refused_with_retry_ms() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:r");
    let sub = w.listen(&["n1"]);
    let key = "broker:rate:{chat:r}:alice";
    // burst 2, 1 per 60 s: two back to back, then a minute's wait.
    let publish = || Publish::string("chat:r", "ev", "hi").rate(key, 2, 1, 60);
    assert_eq!(int(&w.call(publish()).unwrap()), 1);
    assert_eq!(int(&w.call(publish()).unwrap()), 2);
    let e = err_line(&w.call(publish()).unwrap_err());
    let (code, ms) = e.split_once(' ').unwrap_or((&e, ""));
    assert_eq!(code, "RATELIMITED", "{e}");
    let ms: i64 = ms.parse().unwrap_or_else(|_| panic!("retry ms in {e:?}"));
    assert!((1..=60_000).contains(&ms), "retry after {ms} ms");

    assert_eq!(w.seq("chat:r"), 2, "the limited publish took no seq");
    assert_eq!(w.fence(&sub).len(), 2, "and was not delivered");
    // The arrival time is a native key with an expiry.
    let tat: i64 = text(&ok(&mut w.con, &["GET", key]))
        .parse()
        .expect("integer TAT");
    assert!(
        tat > now_ms() * 1_000_000,
        "TAT in ns, in the future: {tat}"
    );
    let pttl = int(&ok(&mut w.con, &["PTTL", key]));
    assert!((1..=120_000).contains(&pttl), "pttl {pttl}");
    let throttled = w.info("throttled").expect("throttled");
    assert_eq!(throttled, "1");
    // Another user's key is independent.
    w.ok(Publish::string("chat:r", "ev", "hi").rate("broker:rate:{chat:r}:bob", 2, 1, 60));
}

#[test]
fn broadcast_reaches_every_live_node() {
    let mut w = World::start();
    assert_eq!(
        w.int(Broadcast::new("ev", b"x").format(Format::String)),
        0,
        "no nodes, nobody told"
    );
    w.nodes(&["n1", "n2", "n3"]);
    // n3 has no connections: a broadcast goes to it all the same.
    w.open("alice", "c1", "n1");
    w.open("bob", "c2", "n2");
    let sub = w.listen(&["n1", "n2", "n3"]);

    let before = now_ms();
    let told = w.int(Broadcast::new("notice", br#"{"text":"maintenance"}"#).format(Format::Json));
    let after = now_ms();
    assert_eq!(told, 3);
    let seen = w.fence(&sub);
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
    let told = w.int(
        Broadcast::new("notice", b"hi")
            .format(Format::String)
            .namespace("chat"),
    );
    assert_eq!(told, 3);
    let seen = w.fence(&sub);
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
    assert_eq!(keys_but_events(&mut w.con), 0);
    assert_eq!(w.seq("chat:x"), 0);
}

#[test]
fn broadcast_refuses_bad_input() {
    // Raw arguments: their parsing is the point.
    let mut w = World::start();
    w.node("n1");
    let sub = w.listen(&["n1"]);
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
        let e = err(&mut w.con, args);
        assert!(e.starts_with(prefix), "{args:?}: {e}");
    }
    let e = w.err(Broadcast::new("ev", &[0xc1]));
    assert!(e.starts_with("ERR invalid"), "{e}");
    assert!(w.fence(&sub).is_empty(), "nothing was sent");
    assert_alive(&w.server);
    // Last: a missing option value is a syntax error (docs/COMMANDS.md).
    let e = err(&mut w.con, &["BROKER.BROADCAST", "ev", "x", "NS"]);
    assert!(e.starts_with("ERR syntax"), "{e}");
}
