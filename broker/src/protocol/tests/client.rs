//! The client frame codec: round trips, field order, and every refusal.

use serde_json::{json, Value};

use super::{all_frames, err_of, raw_map, s};
use crate::msgpack::testing::{hex, map_keys, mp};
use crate::msgpack::{self, Writer};
use crate::protocol::*;

#[test]
fn client_frames_round_trip() {
    for frame in all_frames() {
        let bytes = encode_client_frame(&frame);
        assert_eq!(msgpack::check(&bytes), Ok(()), "{frame:?}");
        assert_eq!(decode_client_frame(&bytes), Ok(frame.clone()));
        let keys = map_keys(&bytes);
        assert_eq!(&keys[..2], ["t", "id"], "{frame:?}");
        let v = msgpack::to_json(&bytes).unwrap();
        assert_eq!(v["t"], json!(frame.kind()));
        assert_eq!(v["id"], json!(frame.id()));
    }
}

#[test]
fn client_frame_field_order() {
    let frames = all_frames();
    let expected: [&[&str]; 16] = [
        &["t", "id", "token"],
        &["t", "id", "room"],
        &["t", "id", "room", "since"],
        &["t", "id", "room", "since"],
        &["t", "id", "room"],
        &["t", "id", "room", "ev", "data"],
        &["t", "id", "room", "ev", "data", "others"],
        &["t", "id", "room"],
        &["t", "id", "room"],
        &["t", "id", "room", "since", "limit"],
        &["t", "id", "room", "since"],
        &["t", "id", "room", "limit"],
        &["t", "id", "token"],
        &["t", "id"],
        &["t", "id", "room", "ev", "data", "others", "volatile"],
        &["t", "id", "method", "data"],
    ];
    for (frame, keys) in frames.iter().zip(expected) {
        assert_eq!(map_keys(&encode_client_frame(frame)), keys, "{frame:?}");
    }
    let join = encode_client_frame(&frames[2]);
    assert_eq!(
        msgpack::to_json(&join).unwrap()["since"],
        json!({"seq": 17, "epoch": "5f0c3a9e12d47b86"})
    );
}

#[test]
fn id_and_kind() {
    let kinds: Vec<(&str, i64)> = all_frames().iter().map(|f| (f.kind(), f.id())).collect();
    assert_eq!(
        kinds,
        [
            ("auth", 1),
            ("join", 2),
            ("join", -3),
            ("join", 4),
            ("leave", i64::MAX),
            ("pub", i64::MIN),
            ("pub", 0),
            ("presence", 300),
            ("history", 70_000),
            ("history", -70_000),
            ("history", 5),
            ("history", 6),
            ("refresh", 7),
            ("ping", -1),
            ("pub", 8),
            ("rpc", 9)
        ]
    );
    for kind in client::CLIENT_KINDS {
        assert!(all_frames().iter().any(|f| f.kind() == kind), "{kind}");
    }
}

#[test]
fn rpc_method_is_checked() {
    let frame = |method: &str| {
        let mut w = Writer::with_capacity(64);
        w.map(4)
            .str("t")
            .str("rpc")
            .str("id")
            .int(3)
            .str("method")
            .str(method)
            .str("data")
            .nil();
        decode_client_frame(&w.into_vec())
    };
    assert!(frame("a").is_ok());
    assert!(frame(&"m".repeat(MAX_METHOD_LEN)).is_ok());
    for bad in [
        "",
        "has space",
        "tab\t",
        "é",
        &"m".repeat(MAX_METHOD_LEN + 1),
    ] {
        let err = frame(bad).unwrap_err();
        assert_eq!(err.id, Some(3), "{bad:?}");
    }
    // `data` is required (nil is a value).
    let mut w = Writer::with_capacity(64);
    w.map(3)
        .str("t")
        .str("rpc")
        .str("id")
        .int(4)
        .str("method")
        .str("m");
    let err = decode_client_frame(&w.into_vec()).unwrap_err();
    assert_eq!(err.reason, "missing field `data`");
}

#[test]
fn pub_data_is_spliced_verbatim() {
    let deep64 = [vec![0x91; 64], vec![0xc0]].concat();
    let cases: Vec<Vec<u8>> = vec![
        vec![0x01],
        vec![0xc0],
        vec![0x80],
        vec![0x90],
        mp(&json!({"a": {"b": {"c": [1, 2, {"d": null}]}}, "e": "f"})),
        // bin 8 and bin 16
        vec![0xc4, 3, 0, 0xff, 0xc1],
        [vec![0xc5, 0x01, 0x00], vec![0xab; 256]].concat(),
        // fixext 1, fixext 16, ext 8 with type -1
        vec![0xd4, 0x05, 0x42],
        [vec![0xd8, 0x01], vec![0x11; 16]].concat(),
        vec![0xc7, 2, 0xff, 0xaa, 0xbb],
        // map with a non-string key and a float inside an array
        vec![
            0x81, 0x01, 0x92, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xca, 0, 0, 0, 0,
        ],
        // a non-compact encoding stays non-compact
        vec![0xcf, 0, 0, 0, 0, 0, 0, 0, 5],
        vec![0xd9, 1, b'x'],
        deep64,
    ];
    for data in cases {
        for others in [false, true] {
            let frame = ClientFrame::Pub {
                volatile: false,
                id: 9,
                room: "chat:lobby".into(),
                ev: "m".into(),
                data: data.clone(),
                others,
            };
            let bytes = encode_client_frame(&frame);
            assert!(bytes.windows(data.len()).any(|w| w == data));
            let decoded = decode_client_frame(&bytes).unwrap();
            let ClientFrame::Pub { data: got, .. } = &decoded else {
                panic!("{decoded:?}")
            };
            assert_eq!(got, &data, "{}", hex(&data));
            assert_eq!(decoded, frame);
        }
    }
    // `data` placed first and last among the keys.
    let data = mp(&json!([{"x": [1, 2]}, "y"]));
    let first = raw_map(&[
        (&s("data"), &data),
        (&s("t"), &s("pub")),
        (&s("room"), &s("a:b")),
        (&s("ev"), &s("e")),
        (&s("id"), &[0x05]),
    ]);
    let ClientFrame::Pub { data: got, .. } = decode_client_frame(&first).unwrap() else {
        panic!()
    };
    assert_eq!(got, data);
}

#[test]
fn empty_data_is_sent_as_nil() {
    let frame = ClientFrame::Pub {
        volatile: false,
        id: 1,
        room: "a:b".into(),
        ev: "e".into(),
        data: vec![],
        others: false,
    };
    let decoded = decode_client_frame(&encode_client_frame(&frame)).unwrap();
    let ClientFrame::Pub { data, .. } = decoded else {
        panic!()
    };
    assert_eq!(data, [0xc0]);
}

#[test]
fn decoder_is_lenient_where_it_may_be() {
    // Any key order, unknown keys (of any shape) ignored, nil optionals.
    let bytes = mp(&json!({
        "room": "chat:lobby", "x-trace": {"deep": [1, 2, {"k": "v"}]},
        "since": null, "id": 12, "t": "join", "v": 1
    }));
    assert_eq!(
        decode_client_frame(&bytes),
        Ok(ClientFrame::Join {
            id: 12,
            room: "chat:lobby".into(),
            since: None
        })
    );
    let bytes = mp(&json!({"t": "history", "id": 1, "room": "a:b", "since": null, "limit": null}));
    assert_eq!(
        decode_client_frame(&bytes),
        Ok(ClientFrame::History {
            id: 1,
            room: "a:b".into(),
            since: None,
            limit: None
        })
    );
    let bytes =
        mp(&json!({"t": "pub", "id": 1, "room": "a:b", "ev": "e", "data": 1, "others": null}));
    assert!(matches!(
        decode_client_frame(&bytes),
        Ok(ClientFrame::Pub { others: false, .. })
    ));
    // Extra keys inside `since` are ignored too.
    let bytes = mp(&json!({"t": "join", "id": 1, "room": "a:b",
        "since": {"epoch": "e", "seq": 3, "extra": true}}));
    assert_eq!(
        decode_client_frame(&bytes),
        Ok(ClientFrame::Join {
            id: 1,
            room: "a:b".into(),
            since: Some(Since {
                seq: 3,
                epoch: "e".into()
            })
        })
    );
    // Integers in any width and signedness, when the value fits.
    let t = s("t");
    let ping = s("ping");
    let id = s("id");
    for (raw, want) in [
        (&[0xd0, 0x05][..], 5i64),
        (&[0xd0, 0xfb][..], -5),
        (&[0xcc, 0xff][..], 255),
        (&[0xcd, 0x01, 0x00][..], 256),
        (&[0xce, 0xff, 0xff, 0xff, 0xff][..], 4_294_967_295),
        (
            &[0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            i64::MAX,
        ),
        (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0][..], i64::MIN),
        (&[0xd1, 0xff, 0xff][..], -1),
        (&[0xd2, 0, 0, 0, 7][..], 7),
        (&[0xe0][..], -32),
    ] {
        let bytes = raw_map(&[(&t, &ping), (&id, raw)]);
        assert_eq!(
            decode_client_frame(&bytes),
            Ok(ClientFrame::Ping { id: want }),
            "{raw:02x?}"
        );
    }
    // Non-compact string and map headers.
    let bytes = [
        &[0xde, 0x00, 0x02][..],
        &[0xd9, 1, b't'],
        &[0xda, 0, 4],
        b"ping",
        &[0xdb, 0, 0, 0, 2],
        b"id",
        &[0x01],
    ]
    .concat();
    assert_eq!(decode_client_frame(&bytes), Ok(ClientFrame::Ping { id: 1 }));
    // Positive values written as signed ints are accepted as uints.
    let bytes = raw_map(&[
        (&t, &s("history")),
        (&id, &[0x01]),
        (&s("room"), &s("a:b")),
        (&s("since"), &[0xd3, 0, 0, 0, 0, 0, 0, 0, 9]),
        (&s("limit"), &[0xd0, 10]),
    ]);
    assert_eq!(
        decode_client_frame(&bytes),
        Ok(ClientFrame::History {
            id: 1,
            room: "a:b".into(),
            since: Some(9),
            limit: Some(10)
        })
    );
}

#[test]
fn refuses_what_is_not_a_map() {
    let cases: [&[u8]; 10] = [
        br#"{"t":"join","id":1,"room":"chat:lobby"}"#,
        b"hello",
        b"\x00\x01\x02",
        &[0x92, 0x01, 0x02],
        &[0xa4, b'j', b'o', b'i', b'n'],
        &[0xc0],
        &[0xc3],
        &[0xcb, 0, 0, 0, 0, 0, 0, 0, 0],
        &[0xc4, 1, 0x80],
        &[0xd4, 1, 0x80],
    ];
    for bytes in cases {
        let e = err_of(bytes);
        assert_eq!(e.id, None);
        assert!(e.reason.contains("not a MessagePack map"), "{e:?}");
    }
    assert_eq!(
        err_of(b""),
        FrameError {
            id: None,
            reason: "truncated MessagePack value".into()
        }
    );
    assert!(err_of(&[0xc1]).reason.contains("0xc1"));
}

// One case per line: rustfmt would spread each over five.
#[rustfmt::skip]
#[test]
fn refuses_bad_fields_with_the_id() {
    let cases: Vec<(Value, Option<i64>, &str)> = vec![
        (json!({"id": 1, "room": "a:b"}), Some(1), "missing field `t`"),
        (json!({"t": 5, "id": 1}), Some(1), "field `t` must be a string"),
        (json!({"t": "nope", "id": 7}), Some(7), "unknown frame type \"nope\""),
        (json!({"t": "PING", "id": 7}), Some(7), "unknown frame type"),
        (json!({"t": "ping"}), None, "missing field `id`"),
        (json!({"t": "ping", "id": "1"}), None, "field `id` must be an integer"),
        (json!({"t": "ping", "id": 1.0}), None, "field `id` must be an integer"),
        (json!({"t": "ping", "id": null}), None, "field `id` must be an integer"),
        (json!({"t": "ping", "id": [1]}), None, "field `id` must be an integer"),
        (json!({"t": "ping", "id": u64::MAX}), None, "field `id` must be an integer"),
        (json!({"t": "join", "id": 2}), Some(2), "missing field `room`"),
        (json!({"t": "join", "id": 2, "room": 5}), Some(2), "field `room` must be a string"),
        (json!({"t": "join", "id": 2, "room": null}), Some(2), "field `room` must be a string"),
        (json!({"t": "join", "id": 2, "room": ["a:b"]}), Some(2), "field `room` must be a string"),
        (json!({"t": "join", "id": 3, "room": "a:b", "since": 5}), Some(3), "field `since` must be a map"),
        (json!({"t": "join", "id": 3, "room": "a:b", "since": [1, "e"]}), Some(3), "field `since` must be a map"),
        (json!({"t": "join", "id": 3, "room": "a:b", "since": {"seq": 1}}), Some(3), "field `since` must be a map"),
        (json!({"t": "join", "id": 3, "room": "a:b", "since": {"epoch": "e"}}), Some(3), "field `since` must be a map"),
        (json!({"t": "join", "id": 3, "room": "a:b", "since": {"seq": "1", "epoch": "e"}}), Some(3), "field `since` must be a map"),
        (json!({"t": "join", "id": 3, "room": "a:b", "since": {"seq": -1, "epoch": "e"}}), Some(3), "field `since` must be a map"),
        (json!({"t": "join", "id": 3, "room": "a:b", "since": {"seq": 1, "epoch": 2}}), Some(3), "field `since` must be a map"),
        (json!({"t": "history", "id": 4, "room": "a:b", "since": {"seq": 1, "epoch": "e"}}), Some(4), "field `since` must be a non-negative integer"),
        (json!({"t": "history", "id": 4, "room": "a:b", "since": -1}), Some(4), "field `since` must be a non-negative integer"),
        (json!({"t": "history", "id": 4, "room": "a:b", "limit": -1}), Some(4), "field `limit` must be an integer from 0"),
        (json!({"t": "history", "id": 4, "room": "a:b", "limit": 4_294_967_296u64}), Some(4), "field `limit` must be an integer from 0"),
        (json!({"t": "history", "id": 4, "room": "a:b", "limit": "10"}), Some(4), "field `limit`"),
        (json!({"t": "pub", "id": 5, "room": "a:b", "ev": "e"}), Some(5), "missing field `data`"),
        (json!({"t": "pub", "id": 5, "room": "a:b", "data": 1}), Some(5), "missing field `ev`"),
        (json!({"t": "pub", "id": 5, "room": "a:b", "ev": 1, "data": 1}), Some(5), "field `ev` must be a string"),
        (json!({"t": "pub", "id": 5, "room": "a:b", "ev": "e", "data": 1, "others": 1}), Some(5), "field `others` must be a boolean"),
        (json!({"t": "pub", "id": 5, "room": "a:b", "ev": "e", "data": 1, "others": "true"}), Some(5), "field `others` must be a boolean"),
        (json!({"t": "auth", "id": 6}), Some(6), "missing field `token`"),
        (json!({"t": "auth", "id": 6, "token": 1}), Some(6), "field `token` must be a string"),
        (json!({"t": "refresh", "id": 6, "token": {}}), Some(6), "field `token` must be a string"),
        (json!({"t": "leave", "id": 8}), Some(8), "missing field `room`"),
        (json!({"t": "presence", "id": 8, "room": true}), Some(8), "field `room` must be a string"),
        (json!({}), None, "missing field `t`"),
    ];
    for (value, id, reason) in cases {
        let e = err_of(&mp(&value));
        assert_eq!(e.id, id, "{value}");
        assert!(e.reason.contains(reason), "{value}: {e:?}");
    }
}

#[test]
fn unknown_type_is_quoted_and_cut() {
    let long = "x".repeat(1000);
    let e = err_of(&mp(&json!({"t": long, "id": 1})));
    assert_eq!(
        e.reason,
        format!("unknown frame type \"{}…\"", "x".repeat(32))
    );
    let e = err_of(&mp(&json!({"t": "a\"b\n", "id": 1})));
    assert_eq!(e.reason, r#"unknown frame type "a\"b\n""#);
}

#[test]
fn refuses_bad_keys() {
    let t = s("t");
    let ping = s("ping");
    let id = s("id");
    // A non-string key, before and after the id.
    for bytes in [
        raw_map(&[(&[0x01], &[0x02]), (&t, &ping), (&id, &[0x03])]),
        raw_map(&[(&t, &ping), (&id, &[0x03]), (&[0x92, 0x01, 0x02], &[0x02])]),
        raw_map(&[(&t, &ping), (&id, &[0x03]), (&[0xc0], &[0x02])]),
    ] {
        assert_eq!(
            err_of(&bytes),
            FrameError {
                id: Some(3),
                reason: "map keys must be strings".into()
            }
        );
    }
    // Duplicate known keys; the first id is echoed.
    let bytes = raw_map(&[(&t, &ping), (&id, &[0x01]), (&id, &[0x02])]);
    assert_eq!(
        err_of(&bytes),
        FrameError {
            id: Some(1),
            reason: "duplicate field `id`".into()
        }
    );
    let bytes = raw_map(&[(&t, &ping), (&t, &s("join")), (&id, &[0x01])]);
    assert_eq!(err_of(&bytes).reason, "duplicate field `t`");
    // Duplicate unknown keys are as ignorable as any unknown key.
    let x = s("x");
    let bytes = raw_map(&[(&t, &ping), (&x, &[1]), (&x, &[2]), (&id, &[0x01])]);
    assert_eq!(decode_client_frame(&bytes), Ok(ClientFrame::Ping { id: 1 }));
}

#[test]
fn refuses_invalid_utf8() {
    let t = s("t");
    let id = s("id");
    let room = s("room");
    let bad = [0xa2, 0xc3, 0x28];
    let in_room = raw_map(&[(&t, &s("join")), (&id, &[0x04]), (&room, &bad)]);
    assert_eq!(
        err_of(&in_room),
        FrameError {
            id: Some(4),
            reason: "field `room`: string is not valid UTF-8".into()
        }
    );
    let in_key = raw_map(&[(&t, &s("ping")), (&id, &[0x04]), (&bad, &[0x01])]);
    assert_eq!(
        err_of(&in_key),
        FrameError {
            id: Some(4),
            reason: "string is not valid UTF-8".into()
        }
    );
    let data = [0x91, 0xa1, 0xff];
    let in_data = raw_map(&[
        (&t, &s("pub")),
        (&id, &[0x04]),
        (&room, &s("a:b")),
        (&s("ev"), &s("e")),
        (&s("data"), &data),
    ]);
    assert_eq!(
        err_of(&in_data),
        FrameError {
            id: Some(4),
            reason: "field `data`: string is not valid UTF-8".into()
        }
    );
    let in_t = raw_map(&[(&id, &[0x04]), (&t, &[0xa1, 0x80])]);
    assert_eq!(err_of(&in_t).id, Some(4));
}

#[test]
fn refuses_truncated_and_trailing() {
    for frame in all_frames() {
        let bytes = encode_client_frame(&frame);
        for end in 0..bytes.len() {
            let e = err_of(&bytes[..end]);
            // The id is echoed once it was read whole.
            if let Some(id) = e.id {
                assert_eq!(id, frame.id());
            }
            assert!(
                e.reason.contains("truncated") || e.reason.contains("missing field"),
                "{frame:?} cut at {end}: {e:?}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0x00);
        assert_eq!(
            err_of(&trailing),
            FrameError {
                id: Some(frame.id()),
                reason: "trailing bytes after the frame".into()
            }
        );
        let twice = [bytes.clone(), bytes].concat();
        assert_eq!(err_of(&twice).reason, "trailing bytes after the frame");
    }
    // A cut inside `data`, after the id was read.
    let frame = ClientFrame::Pub {
        volatile: false,
        id: 42,
        room: "a:b".into(),
        ev: "e".into(),
        data: mp(&json!({"k": [1, 2, 3]})),
        others: false,
    };
    let bytes = encode_client_frame(&frame);
    let e = err_of(&bytes[..bytes.len() - 1]);
    assert_eq!(
        e,
        FrameError {
            id: Some(42),
            reason: "field `data`: truncated MessagePack value".into()
        }
    );
}

fn pub_with_data(data: &[u8]) -> Vec<u8> {
    raw_map(&[
        (&s("t"), &s("pub")),
        (&s("id"), &[0x0b]),
        (&s("room"), &s("a:b")),
        (&s("ev"), &s("e")),
        (&s("data"), data),
    ])
}

#[test]
fn refuses_deep_nesting() {
    let ok = [vec![0x91; 64], vec![0x01]].concat();
    assert!(decode_client_frame(&pub_with_data(&ok)).is_ok());
    for deep in [
        [vec![0x91; 65], vec![0x01]].concat(),
        [[0x81, 0xa1, b'k'].repeat(65), vec![0x01]].concat(),
        [vec![0x91; 100_000], vec![0x01]].concat(),
    ] {
        assert_eq!(
            err_of(&pub_with_data(&deep)),
            FrameError {
                id: Some(11),
                reason: "field `data`: nested deeper than 64 levels".into()
            }
        );
    }
    // Under an unknown key as well.
    let deep = [vec![0x91; 65], vec![0x01]].concat();
    let bytes = raw_map(&[(&s("t"), &s("ping")), (&s("id"), &[0x01]), (&s("x"), &deep)]);
    assert_eq!(
        err_of(&bytes),
        FrameError {
            id: Some(1),
            reason: "nested deeper than 64 levels".into()
        }
    );
    // And unterminated deep nesting is simply truncated.
    let open = vec![0x91; 100_000];
    assert_eq!(
        err_of(&pub_with_data(&open)).reason,
        "field `data`: truncated MessagePack value"
    );
}

#[test]
fn refuses_lying_lengths() {
    let lies: [&[u8]; 9] = [
        &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
        &[0xdc, 0xff, 0xff, 0x01],
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01],
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
        &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00],
        &[0x9f, 0x01],
        // Each array is small, but together they owe more than is left.
        &[0x93, 0x93, 0x93, 0x01, 0x01],
        &[0xd8, 0x01, 0x00],
    ];
    for lie in lies {
        assert_eq!(
            err_of(&pub_with_data(lie)),
            FrameError {
                id: Some(11),
                reason: "field `data`: truncated MessagePack value".into()
            },
            "{lie:02x?}"
        );
    }
    // The frame map itself announcing four billion entries.
    let top = [
        0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b't', 0xa4, b'p', b'i', b'n', b'g',
    ];
    assert_eq!(err_of(&top).reason, "truncated MessagePack value");
    // A long frame made of many small unknown keys is fine (linear).
    let mut big = Writer::with_capacity(1 << 20);
    big.map(2 + 20_000).str("t").str("ping").str("id").int(1);
    for i in 0..20_000u64 {
        big.str("k").uint(i);
    }
    assert_eq!(
        decode_client_frame(&big.into_vec()),
        Ok(ClientFrame::Ping { id: 1 })
    );
}

/// Random bytes and mutations of valid frames never panic, and whatever
/// decodes re-encodes to a frame that decodes the same.
#[test]
fn random_input_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: Vec<Vec<u8>> = all_frames().iter().map(encode_client_frame).collect();
    let mut decoded = 0;
    for round in 0..30_000usize {
        let bytes: Vec<u8> = if round % 3 == 0 {
            let len = (next() % 40) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut b = seeds[round % seeds.len()].clone();
            for _ in 0..=(next() % 2) {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            if next() % 4 == 0 {
                b.truncate((next() as usize) % (b.len() + 1));
            }
            b
        };
        match decode_client_frame(&bytes) {
            Ok(frame) => {
                decoded += 1;
                let again = encode_client_frame(&frame);
                assert_eq!(decode_client_frame(&again), Ok(frame), "{bytes:02x?}");
            }
            Err(e) => assert!(!e.reason.is_empty()),
        }
        let _ = decode_server_frame(&bytes);
    }
    assert!(decoded > 100, "{decoded}");
}

#[test]
fn presence_after_round_trips() {
    let frame = ClientFrame::Presence {
        id: 301,
        room: "chat:lobby".into(),
        after: Some("bob".into()),
    };
    let bytes = encode_client_frame(&frame);
    assert_eq!(map_keys(&bytes), ["t", "id", "room", "after"]);
    assert_eq!(decode_client_frame(&bytes).unwrap(), frame);
}
