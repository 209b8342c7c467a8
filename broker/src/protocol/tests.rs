//! Unit tests of the protocol: both codecs, the codes, and the bytes of the
//! worked example in `docs/PROTOCOL.md`.

use serde_json::{json, Value};

use super::*;
use crate::msgpack::testing::{hex, map_keys, mp};
use crate::msgpack::{self, Writer};
use crate::payload::{encode_payload, Format};

/// A map written by hand: `entries` are (raw key, raw value) pairs.
fn raw_map(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Writer::with_capacity(64);
    out.map(entries.len());
    for (k, v) in entries {
        out.raw(k).raw(v);
    }
    out.into_vec()
}

fn s(text: &str) -> Vec<u8> {
    let mut out = Writer::with_capacity(8);
    out.str(text);
    out.into_vec()
}

fn err_of(bytes: &[u8]) -> FrameError {
    match decode_client_frame(bytes) {
        Err(e) => e,
        Ok(f) => panic!("accepted {f:?} from {bytes:02x?}"),
    }
}

fn all_frames() -> Vec<ClientFrame> {
    let since = Since {
        seq: 17,
        epoch: "5f0c3a9e12d47b86".into(),
    };
    vec![
        ClientFrame::Auth {
            id: 1,
            token: "eyJhbGciOi.x.y".into(),
        },
        ClientFrame::Join {
            id: 2,
            room: "chat:lobby".into(),
            since: None,
        },
        ClientFrame::Join {
            id: -3,
            room: "chat:lobby".into(),
            since: Some(since.clone()),
        },
        ClientFrame::Join {
            id: 4,
            room: "chat:x".into(),
            since: Some(Since {
                seq: u64::MAX,
                epoch: String::new(),
            }),
        },
        ClientFrame::Leave {
            id: i64::MAX,
            room: "chat:lobby".into(),
        },
        ClientFrame::Pub {
            id: i64::MIN,
            room: "chat:lobby".into(),
            ev: "message".into(),
            data: mp(&json!({"text": "héllo"})),
            others: false,
        },
        ClientFrame::Pub {
            id: 0,
            room: "chat:lobby".into(),
            ev: "".into(),
            data: vec![0xc0],
            others: true,
        },
        ClientFrame::Presence {
            id: 300,
            room: "chat:lobby".into(),
        },
        ClientFrame::History {
            id: 70_000,
            room: "chat:lobby".into(),
            since: None,
            limit: None,
        },
        ClientFrame::History {
            id: -70_000,
            room: "chat:lobby".into(),
            since: Some(0),
            limit: Some(u32::MAX),
        },
        ClientFrame::History {
            id: 5,
            room: "chat:lobby".into(),
            since: Some(1 << 40),
            limit: None,
        },
        ClientFrame::History {
            id: 6,
            room: "chat:lobby".into(),
            since: None,
            limit: Some(0),
        },
        ClientFrame::Refresh {
            id: 7,
            token: "t2".into(),
        },
        ClientFrame::Ping { id: -1 },
    ]
}

#[test]
fn close_codes() {
    assert_eq!(
        [
            CloseCode::Token,
            CloseCode::Forbidden,
            CloseCode::Policy,
            CloseCode::ConnLimit,
            CloseCode::TooLarge,
            CloseCode::Restart,
            CloseCode::Internal
        ]
        .map(u16::from),
        [4001, 4003, 4008, 4029, 1009, 1012, 1011]
    );
    // Every named code survives the trip through its number; others are kept.
    for code in CloseCode::NAMED {
        assert_eq!(CloseCode::from(code.code()), code);
    }
    assert_eq!(CloseCode::from(4321), CloseCode::Other(4321));
    assert_eq!(CloseCode::Other(4321).code(), 4321);
}

#[test]
fn close_codes_allowed_on_the_wire() {
    for code in [
        1000, 1001, 1002, 1003, 1007, 1011, 1012, 1014, 3000, 4001, 4999,
    ] {
        assert!(CloseCode::from(code).allowed_on_wire(), "{code}");
    }
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
        assert!(!CloseCode::from(code).allowed_on_wire(), "{code}");
    }
}

#[test]
fn error_codes() {
    let names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "bad_frame",
            "unauthorized",
            "forbidden",
            "invalid_room",
            "not_member",
            "rate_limited",
            "too_many_rooms",
            "payload_too_large",
            "unavailable",
            "internal"
        ]
    );
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
    }
    assert_eq!(ErrorCode::parse("BAD_FRAME"), None);
    assert_eq!(ErrorCode::parse(""), None);
}

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
    let expected: [&[&str]; 14] = [
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
            ("ping", -1)
        ]
    );
    for kind in client::CLIENT_KINDS {
        assert!(all_frames().iter().any(|f| f.kind() == kind), "{kind}");
    }
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
            id: None,
            code: "internal".into(),
            msg: "m".into(),
            retry_ms: None
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
