//! Server frames: the gateway's encoders, the module's `msg` and
//! `presence` frames, the decoder for clients, and the worked example of
//! `docs/PROTOCOL.md` byte for byte.

use serde_json::{json, Value};

use super::err_of;
use crate::msgpack;
use crate::msgpack::testing::{hex, map_keys, mp};
use crate::payload::{encode_payload, Format};
use crate::protocol::*;

#[test]
fn welcome_err_expiring_round_trip() {
    let welcome = encode_welcome("c-1", "alice", "node-a", 25_000, 1_700_000_000);
    assert_eq!(
        map_keys(&welcome),
        ["t", "conn", "user", "node", "ping_ms", "exp"]
    );
    assert_eq!(
        decode_server_frame(&welcome),
        Ok(ServerFrame::Welcome {
            conn: "c-1".into(),
            user: "alice".into(),
            node: "node-a".into(),
            ping_ms: 25_000,
            exp: 1_700_000_000
        })
    );

    for (id, retry_ms, keys) in [
        (None, None, &["t", "code", "msg"][..]),
        (Some(-4), None, &["t", "id", "code", "msg"][..]),
        (None, Some(1500), &["t", "code", "msg", "retry_ms"][..]),
        (
            Some(i64::MAX),
            Some(0),
            &["t", "id", "code", "msg", "retry_ms"][..],
        ),
    ] {
        for code in ErrorCode::ALL {
            let bytes = encode_err(id, code, "slow down", retry_ms);
            assert_eq!(map_keys(&bytes), keys);
            assert_eq!(
                decode_server_frame(&bytes),
                Ok(ServerFrame::Err {
                    rpc_code: None,
                    id,
                    code: code.as_str().into(),
                    msg: "slow down".into(),
                    retry_ms
                })
            );
        }
    }
    assert_eq!(
        msgpack::to_json(&encode_err(Some(3), ErrorCode::RateLimited, "m", Some(250))),
        Ok(json!({"t": "err", "id": 3, "code": "rate_limited", "msg": "m", "retry_ms": 250}))
    );

    let expiring = encode_expiring(30_000);
    assert_eq!(map_keys(&expiring), ["t", "in_ms"]);
    assert_eq!(
        decode_server_frame(&expiring),
        Ok(ServerFrame::Expiring { in_ms: 30_000 })
    );
}

#[test]
fn acks_round_trip() {
    let users = vec![("alice".to_string(), 2u64), ("bob".to_string(), 1)];
    let cases: Vec<(Vec<u8>, Value, &[&str])> = vec![
        (
            ack_auth("alice", 1_700_000_000),
            json!({"user": "alice", "exp": 1_700_000_000u64}),
            &["user", "exp"][..],
        ),
        (
            ack_join("chat:lobby", 42, "ep", true),
            json!({"room": "chat:lobby", "seq": 42, "epoch": "ep", "recovered": true}),
            &["room", "seq", "epoch", "recovered"][..],
        ),
        (ack_empty(), json!({}), &[][..]),
        (ack_pub(u64::MAX), json!({"seq": u64::MAX}), &["seq"][..]),
        (
            ack_presence(&users, 2),
            json!({"users": [{"user": "alice", "conns": 2}, {"user": "bob", "conns": 1}], "count": 2}),
            &["users", "count"][..],
        ),
        (
            ack_presence(&[], 0),
            json!({"users": [], "count": 0}),
            &["users", "count"][..],
        ),
        (
            ack_history(&[], 0, ""),
            json!({"messages": [], "seq": 0, "epoch": ""}),
            &["messages", "seq", "epoch"][..],
        ),
        (ack_refresh(9), json!({"exp": 9}), &["exp"][..]),
        (
            ack_ping(1_700_000_000_123),
            json!({"ts": 1_700_000_000_123u64}),
            &["ts"][..],
        ),
    ];
    for (data, want, keys) in cases {
        assert_eq!(map_keys(&data), keys);
        let bytes = encode_ack_raw(7, &data);
        assert_eq!(map_keys(&bytes), ["t", "id", "data"]);
        assert!(bytes.ends_with(&data));
        assert_eq!(msgpack::check(&bytes), Ok(()));
        assert_eq!(
            decode_server_frame(&bytes),
            Ok(ServerFrame::Ack { id: 7, data: want })
        );
    }
    let negative = encode_ack_raw(-9, &ack_empty());
    assert_eq!(
        decode_server_frame(&negative),
        Ok(ServerFrame::Ack {
            id: -9,
            data: json!({})
        })
    );
}

#[test]
fn history_ack_carries_msg_frames_as_maps() {
    let alice = Sender {
        user: "alice",
        conn: "c-1",
    };
    let first = encode_msg_frame(
        "chat:lobby",
        "message",
        &mp(&json!({"text": "hi"})),
        1,
        "ep",
        10,
        Some(alice),
    );
    let second = encode_msg_frame("chat:lobby", "note", &[0xc4, 2, 1, 2], 2, "ep", 11, None);
    let data = ack_history(&[&first, &second], 2, "ep");
    let bytes = encode_ack_raw(5, &data);
    // The stored frames are in the ack byte for byte.
    assert!(bytes.windows(first.len()).any(|w| w == first));
    assert!(bytes.windows(second.len()).any(|w| w == second));
    let ServerFrame::Ack { id, data } = decode_server_frame(&bytes).unwrap() else {
        panic!("not an ack")
    };
    assert_eq!(id, 5);
    assert_eq!(
        data,
        json!({
            "messages": [
                {"t": "msg", "room": "chat:lobby", "ev": "message", "data": {"text": "hi"},
                 "seq": 1, "epoch": "ep", "ts": 10, "from": {"user": "alice", "conn": "c-1"}},
                {"t": "msg", "room": "chat:lobby", "ev": "note", "data": [1, 2],
                 "seq": 2, "epoch": "ep", "ts": 11}
            ],
            "seq": 2,
            "epoch": "ep"
        })
    );
    assert!(data["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(Value::is_object));
}

#[test]
fn module_frames_decode() {
    let data = mp(&json!({"text": "hi", "n": [1, 2.5, null]}));
    let sender = Sender {
        user: "alice",
        conn: "c-1",
    };
    for from in [None, Some(sender)] {
        let frame = encode_msg_frame(
            "chat:lobby",
            "message",
            &data,
            42,
            "ep",
            1_700_000_000_000,
            from,
        );
        assert_eq!(
            decode_server_frame(&frame),
            Ok(ServerFrame::Msg {
                volatile: false,
                room: "chat:lobby".into(),
                ev: "message".into(),
                data: json!({"text": "hi", "n": [1, 2.5, null]}),
                seq: 42,
                epoch: "ep".into(),
                ts: 1_700_000_000_000,
                from: from.map(|s| (s.user.to_owned(), s.conn.to_owned())),
            })
        );
    }
    // A broadcast: room `*`, seq 0, empty epoch.
    let frame = encode_msg_frame("*", "notice", &[0xa1, b'x'], 0, "", 5, None);
    assert!(matches!(
        decode_server_frame(&frame),
        Ok(ServerFrame::Msg { seq: 0, ref room, .. }) if room == "*"
    ));
    for action in [PresenceAction::Join, PresenceAction::Leave] {
        let frame = encode_presence_frame("chat:lobby", "bob", action);
        assert_eq!(
            decode_server_frame(&frame),
            Ok(ServerFrame::Presence {
                room: "chat:lobby".into(),
                user: "bob".into(),
                action: action.as_str().into()
            })
        );
    }
}

#[test]
fn server_decoder_refuses_bad_frames() {
    let cases: Vec<(Value, Option<i64>, &str)> = vec![
        (json!({"t": "hello"}), None, "unknown frame type"),
        (json!({"t": "ack", "data": {}}), None, "missing field `id`"),
        (
            json!({"t": "ack", "id": 3}),
            Some(3),
            "missing field `data`",
        ),
        (
            json!({"t": "err", "id": 3, "code": "internal"}),
            Some(3),
            "missing field `msg`",
        ),
        (
            json!({"t": "err", "id": "x", "code": "internal", "msg": ""}),
            None,
            "field `id` must be an integer",
        ),
        (
            json!({"t": "welcome", "conn": "c", "user": "u", "node": "n", "ping_ms": -1, "exp": 1}),
            None,
            "field `ping_ms`",
        ),
        (
            json!({"t": "msg", "room": "a:b", "ev": "e", "data": 1, "seq": 1, "epoch": "e", "ts": 1, "from": "alice"}),
            None,
            "field `from` must be a map",
        ),
        (
            json!({"t": "msg", "room": "a:b", "ev": "e", "seq": 1, "epoch": "e", "ts": 1}),
            None,
            "missing field `data`",
        ),
        (json!({"t": "expiring"}), None, "missing field `in_ms`"),
        (
            json!({"t": "missed", "room": "a:b", "epoch": "e"}),
            None,
            "missing field `seq`",
        ),
        (
            json!({"t": "missed", "room": "a:b", "seq": 3, "count": 1}),
            None,
            "missing field `epoch`",
        ),
        (
            json!({"t": "missed", "room": "a:b", "epoch": "e", "seq": 3, "count": -1}),
            None,
            "field `count` must be a non-negative integer",
        ),
        (json!([1]), None, "not a MessagePack map"),
    ];
    for (value, id, reason) in cases {
        let e = decode_server_frame(&mp(&value)).unwrap_err();
        assert_eq!(e.id, id, "{value}");
        assert!(e.reason.contains(reason), "{value}: {e:?}");
    }
    // Unknown keys are ignored, nil optionals are absent.
    let bytes = mp(
        &json!({"t": "err", "code": "internal", "msg": "m", "id": null, "retry_ms": null, "x": 1}),
    );
    assert_eq!(
        decode_server_frame(&bytes),
        Ok(ServerFrame::Err {
            rpc_code: None,
            id: None,
            code: "internal".into(),
            msg: "m".into(),
            retry_ms: None
        })
    );
}

#[test]
fn missed_round_trips_with_and_without_count() {
    let bytes = encode_missed("feed:a", "5f0c3a9e12d47b86", 130, Some(30));
    assert_eq!(map_keys(&bytes), ["t", "room", "epoch", "seq", "count"]);
    assert_eq!(
        msgpack::to_json(&bytes),
        Ok(
            json!({"t": "missed", "room": "feed:a", "epoch": "5f0c3a9e12d47b86", "seq": 130, "count": 30})
        )
    );
    assert_eq!(
        decode_server_frame(&bytes),
        Ok(ServerFrame::Missed {
            room: "feed:a".into(),
            epoch: "5f0c3a9e12d47b86".into(),
            seq: 130,
            count: Some(30),
        })
    );
    let bytes = encode_missed("feed:a", "e", u64::MAX, None);
    assert_eq!(map_keys(&bytes), ["t", "room", "epoch", "seq"]);
    assert_eq!(
        decode_server_frame(&bytes),
        Ok(ServerFrame::Missed {
            room: "feed:a".into(),
            epoch: "e".into(),
            seq: u64::MAX,
            count: None,
        })
    );
    // A nil count is an absent one.
    let bytes = mp(&json!({"t": "missed", "room": "r:x", "epoch": "", "seq": 0, "count": null}));
    assert_eq!(
        decode_server_frame(&bytes),
        Ok(ServerFrame::Missed {
            room: "r:x".into(),
            epoch: String::new(),
            seq: 0,
            count: None,
        })
    );
}

#[test]
fn frame_error_displays_its_reason() {
    let e = err_of(&[0x01]);
    assert_eq!(e.to_string(), "frame is not a MessagePack map");
}

/// The worked example of docs/PROTOCOL.md, byte for byte.
#[test]
fn protocol_doc_example() {
    let join = encode_client_frame(&ClientFrame::Join {
        id: 1,
        room: "chat:lobby".into(),
        since: None,
    });
    assert_eq!(
        hex(&join),
        "83 a1 74 a4 6a 6f 69 6e a2 69 64 01 a4 72 6f 6f 6d \
         aa 63 68 61 74 3a 6c 6f 62 62 79"
    );
    assert_eq!(join.len(), 28);
    let ack = encode_ack_raw(1, &ack_join("chat:lobby", 42, "5f0c3a9e12d47b86", false));
    assert_eq!(
        hex(&ack),
        "83 a1 74 a3 61 63 6b a2 69 64 01 a4 64 61 74 61 \
         84 a4 72 6f 6f 6d aa 63 68 61 74 3a 6c 6f 62 62 79 \
         a3 73 65 71 2a \
         a5 65 70 6f 63 68 b0 35 66 30 63 33 61 39 65 31 32 64 34 37 62 38 36 \
         a9 72 65 63 6f 76 65 72 65 64 c2"
    );
    assert_eq!(ack.len(), 72);
    let since = encode_client_frame(&ClientFrame::Join {
        id: 2,
        room: "chat:lobby".into(),
        since: Some(Since {
            seq: 42,
            epoch: "5f0c3a9e12d47b86".into(),
        }),
    });
    assert_eq!(
        hex(&since),
        "84 a1 74 a4 6a 6f 69 6e a2 69 64 02 a4 72 6f 6f 6d \
         aa 63 68 61 74 3a 6c 6f 62 62 79 \
         a5 73 69 6e 63 65 82 a3 73 65 71 2a \
         a5 65 70 6f 63 68 b0 35 66 30 63 33 61 39 65 31 32 64 34 37 62 38 36"
    );
    let pubf = encode_client_frame(&ClientFrame::Pub {
        volatile: false,
        id: 3,
        room: "chat:lobby".into(),
        ev: "message".into(),
        data: mp(&json!({"text": "hi"})),
        others: false,
    });
    assert_eq!(
        hex(&pubf),
        "85 a1 74 a3 70 75 62 a2 69 64 03 a4 72 6f 6f 6d \
         aa 63 68 61 74 3a 6c 6f 62 62 79 a2 65 76 a7 6d 65 73 73 61 67 65 \
         a4 64 61 74 61 81 a4 74 65 78 74 a2 68 69"
    );
}

#[test]
fn msg_frame_fields_and_order() {
    let data = encode_payload(Format::Json, br#"{"text":"hi"}"#).unwrap();
    let frame = encode_msg_frame(
        "chat:lobby",
        "message",
        &data,
        42,
        "e1",
        1_700_000_000_000,
        None,
    );
    assert_eq!(
        map_keys(&frame),
        ["t", "room", "ev", "data", "seq", "epoch", "ts"]
    );
    let value: Value = rmp_serde::from_slice(&frame).unwrap();
    assert_eq!(
        value,
        json!({
            "t": "msg", "room": "chat:lobby", "ev": "message", "data": {"text": "hi"},
            "seq": 42, "epoch": "e1", "ts": 1_700_000_000_000u64
        })
    );
    assert_eq!(msgpack::check(&frame), Ok(()));

    let sender = Sender {
        user: "alice",
        conn: "c1",
    };
    let frame = encode_msg_frame(
        "chat:lobby",
        "message",
        &[0xc0],
        u64::MAX,
        "e1",
        0,
        Some(sender),
    );
    assert_eq!(
        map_keys(&frame),
        ["t", "room", "ev", "data", "seq", "epoch", "ts", "from"]
    );
    assert_eq!(
        msgpack::to_json(&frame),
        Ok(json!({
            "t": "msg", "room": "chat:lobby", "ev": "message", "data": null,
            "seq": u64::MAX, "epoch": "e1", "ts": 0,
            "from": {"user": "alice", "conn": "c1"}
        }))
    );
}

#[test]
fn msg_frame_splices_data_verbatim() {
    // A binary payload with an ext inside survives untouched.
    let data = [0x92, 0xc4, 2, 0xde, 0xad, 0xd4, 7, 1];
    let frame = encode_msg_frame("r:x", "e", &data, 1, "ep", 5, None);
    assert!(frame.windows(data.len()).any(|w| w == data));
    assert_eq!(msgpack::check(&frame), Ok(()));
    assert_eq!(
        msgpack::to_json(&frame).unwrap()["data"],
        json!([[0xde, 0xad], {"type": 7, "data": [1]}])
    );
}

#[test]
fn presence_frame() {
    for (action, text) in [
        (PresenceAction::Join, "join"),
        (PresenceAction::Leave, "leave"),
    ] {
        assert_eq!(action.as_str(), text);
        let frame = encode_presence_frame("chat:lobby", "bob", action);
        assert_eq!(map_keys(&frame), ["t", "room", "user", "action"]);
        assert_eq!(
            msgpack::to_json(&frame),
            Ok(json!({"t": "presence", "room": "chat:lobby", "user": "bob", "action": text}))
        );
    }
}

#[test]
fn rpc_answers_and_volatile_msg() {
    let ack = encode_ack_raw(5, &ack_rpc(&mp(&json!({"ok": [1, 2]}))));
    assert_eq!(
        decode_server_frame(&ack),
        Ok(ServerFrame::Ack {
            id: 5,
            data: json!({"data": {"ok": [1, 2]}})
        })
    );
    assert_eq!(frame_type(&ack), Some("ack"));
    assert_eq!(frame_type(&[0x81, 0xa1, b'x', 0xa1, b'y']), None);
    assert_eq!(frame_type(&[]), None);
    let err = encode_rpc_err(-2, "not_found", "no such order");
    assert_eq!(frame_type(&err), Some("err"));
    assert_eq!(map_keys(&err), ["t", "id", "code", "msg", "rpc_code"]);
    assert_eq!(
        decode_server_frame(&err),
        Ok(ServerFrame::Err {
            id: Some(-2),
            code: "rpc_error".into(),
            msg: "no such order".into(),
            retry_ms: None,
            rpc_code: Some("not_found".into()),
        })
    );
    let sender = Sender {
        user: "ann",
        conn: "n.i.1",
    };
    let frame = encode_volatile_msg_frame("chat:a", "typing", &[0xc3], "ep", 9, Some(sender));
    assert_eq!(
        map_keys(&frame),
        ["t", "room", "ev", "data", "seq", "epoch", "ts", "from", "volatile"]
    );
    assert_eq!(
        decode_server_frame(&frame),
        Ok(ServerFrame::Msg {
            room: "chat:a".into(),
            ev: "typing".into(),
            data: json!(true),
            seq: 0,
            epoch: "ep".into(),
            ts: 9,
            from: Some(("ann".into(), "n.i.1".into())),
            volatile: true,
        })
    );
}
