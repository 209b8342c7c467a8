//! The msgpack parser, parser detection, and random bytes.

use super::Lcg;
use crate::msgpack::{self, Writer};
use crate::socketio::msgpack_parser::{decode, encode};
use crate::socketio::*;

fn s(x: &str) -> SioValue {
    SioValue::str(x)
}

/// A packet map as notepack writes a client's packet: `type`, `data`,
/// `options`, `id`?, `nsp` (the key order of socket.io-client's `emit`).
fn client_event(name: &str, id: Option<u64>) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    w.map(4 + usize::from(id.is_some()));
    w.str("type").uint(2);
    w.str("data").array(3).str(name).uint(1);
    // An ArrayBuffer: ext 8 of type 0.
    w.raw(&[0xc7, 3, 0, 1, 2, 3]);
    w.str("options").map(1).str("compress").bool(true);
    if let Some(id) = id {
        w.str("id").uint(id);
    }
    w.str("nsp").str("/");
    w.into_vec()
}

#[test]
fn client_event_as_notepack_writes_it() {
    assert_eq!(
        decode(&client_event("message", Some(7))),
        Ok(Packet::main(Body::Event {
            id: Some(7),
            name: "message".to_owned(),
            args: vec![
                SioValue::Number(1u64.into()),
                SioValue::Binary(vec![1, 2, 3])
            ],
        }))
    );
    assert!(decode(&client_event("disconnect", None)).is_err());
}

#[test]
fn client_connect_with_undefined_data() {
    // `{type: 0, data: undefined, nsp: "/"}`: notepack's undefined is d4 00 00.
    let mut w = Writer::with_capacity(16);
    w.map(3)
        .str("type")
        .uint(0)
        .str("data")
        .raw(&[0xd4, 0, 0])
        .str("nsp")
        .str("/");
    assert_eq!(decode(&w.into_vec()), Ok(Packet::main(Body::Connect(None))));
    let mut w = Writer::with_capacity(16);
    w.map(3)
        .str("type")
        .uint(0)
        .str("nsp")
        .str("/admin")
        .str("data");
    w.map(1).str("token").str("abc");
    assert_eq!(
        decode(&w.into_vec()),
        Ok(Packet {
            nsp: "/admin".to_owned(),
            body: Body::Connect(Some(vec![("token".to_owned(), s("abc"))])),
        })
    );
}

#[test]
fn round_trips() {
    let packets = [
        Packet::main(Body::Connect(None)),
        Packet::main(Body::Connect(Some(vec![("sid".to_owned(), s("x"))]))),
        Packet::main(Body::Disconnect),
        Packet {
            nsp: "/a".to_owned(),
            body: Body::Event {
                id: None,
                name: "e".to_owned(),
                args: vec![
                    SioValue::Binary(vec![0, 255]),
                    SioValue::Null,
                    SioValue::Bool(true),
                ],
            },
        },
        Packet::main(Body::Ack {
            id: 3,
            args: vec![SioValue::Object(vec![(
                "k".to_owned(),
                SioValue::Number((-5i64).into()),
            )])],
        }),
        Packet::main(Body::ConnectError(s("no"))),
        Packet::main(Body::ConnectError(SioValue::Object(vec![(
            "message".to_owned(),
            s("Not authorized"),
        )]))),
    ];
    for p in packets {
        let bytes = encode(&p);
        assert_eq!(msgpack::check(&bytes), Ok(()));
        assert_eq!(decode(&bytes), Ok(p.clone()), "{p:?}");
    }
}

#[test]
fn encoded_map_shape() {
    let ack = Packet::main(Body::Ack {
        id: 3,
        args: vec![],
    });
    assert_eq!(
        msgpack::to_json(&encode(&ack)).unwrap(),
        serde_json::json!({"type": 3, "data": [], "nsp": "/", "id": 3})
    );
    // No `id` (the client refuses nil) and no `data` when there is none.
    let connect = Packet::main(Body::Connect(None));
    assert_eq!(
        msgpack::to_json(&encode(&connect)).unwrap(),
        serde_json::json!({"type": 0, "nsp": "/"})
    );
    let ev = Packet::main(Body::Event {
        id: None,
        name: "x".to_owned(),
        args: vec![SioValue::Binary(vec![7])],
    });
    // The buffer is a `bin` in place: c4 01 07.
    let bytes = encode(&ev);
    assert!(bytes.windows(3).any(|w| w == [0xc4, 1, 7]));
    assert_eq!(
        msgpack::to_json(&bytes).unwrap(),
        serde_json::json!({"type": 2, "data": ["x", [7]], "nsp": "/"})
    );
}

fn map(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = Writer::with_capacity(32);
    w.map(entries.len());
    for (k, v) in entries {
        w.str(k).raw(v);
    }
    w.into_vec()
}

const NSP: &[u8] = &[0xa1, b'/'];
const EVENT: &[u8] = &[0x91, 0xa1, b'x'];

#[test]
fn invalid_packet_type() {
    for ty in [
        &[5u8][..],
        &[6],
        &[7],
        &[0xff],
        &[0xa1, b'2'],
        &[0xc0],
        &[0xcb, 0x40, 0, 0, 0, 0, 0, 0, 0],
    ] {
        assert_eq!(
            decode(&map(&[("type", ty), ("data", EVENT), ("nsp", NSP)])),
            Err(PacketError::UnknownType),
            "{ty:?}"
        );
    }
    assert_eq!(
        decode(&map(&[("data", EVENT), ("nsp", NSP)])),
        Err(PacketError::UnknownType)
    );
}

#[test]
fn invalid_namespace() {
    for nsp in [
        &[0xc0u8][..],
        &[1],
        &[0xa1, b'x'],
        &[0xa3, b'/', b',', b'a'],
        &[0xa0],
    ] {
        assert_eq!(
            decode(&map(&[("type", &[2]), ("data", EVENT), ("nsp", nsp)])),
            Err(PacketError::InvalidNamespace)
        );
    }
    assert_eq!(
        decode(&map(&[("type", &[2]), ("data", EVENT)])),
        Err(PacketError::InvalidNamespace)
    );
}

#[test]
fn invalid_payload() {
    for (ty, data) in [
        (2u8, &[0x90u8][..]),
        (2, &[0x91, 0x01]),
        (2, &[0x80]),
        (2, &[0x91, 0xa7, b'c', b'o', b'n', b'n', b'e', b'c', b't']),
        (3, &[0x80]),
        (0, &[0x90]),
        (0, &[0xc0]),
        (1, &[0x80]),
        (4, &[0x01]),
        (4, &[0xc0]),
    ] {
        let bytes = map(&[("type", &[ty]), ("data", data), ("nsp", NSP), ("id", &[1])]);
        let bytes = if ty == 3 {
            bytes
        } else {
            map(&[("type", &[ty]), ("data", data), ("nsp", NSP)])
        };
        assert!(
            matches!(decode(&bytes), Err(PacketError::InvalidPayload(_))),
            "{ty} {data:?}"
        );
    }
    // EVENT and ACK need data; CONNECT_ERROR too.
    assert!(decode(&map(&[("type", &[2]), ("nsp", NSP)])).is_err());
    assert!(decode(&map(&[("type", &[4]), ("nsp", NSP)])).is_err());
}

#[test]
fn invalid_ack_id() {
    for id in [
        &[0xc0u8][..],
        &[0xff],
        &[0xa1, b'1'],
        &[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0],
    ] {
        assert_eq!(
            decode(&map(&[
                ("type", &[2]),
                ("data", EVENT),
                ("nsp", NSP),
                ("id", id)
            ])),
            Err(PacketError::InvalidAckId),
            "{id:?}"
        );
    }
    // ACK without an id; CONNECT with one.
    assert_eq!(
        decode(&map(&[("type", &[3]), ("data", &[0x90]), ("nsp", NSP)])),
        Err(PacketError::InvalidAckId)
    );
    assert_eq!(
        decode(&map(&[("type", &[0]), ("nsp", NSP), ("id", &[1])])),
        Err(PacketError::InvalidAckId)
    );
    // undefined is no id.
    assert!(decode(&map(&[
        ("type", &[2]),
        ("data", EVENT),
        ("nsp", NSP),
        ("id", &[0xd4, 0, 0])
    ]))
    .is_ok());
}

#[test]
fn malformed_msgpack() {
    let good = map(&[("type", &[2]), ("data", EVENT), ("nsp", NSP)]);
    assert!(decode(&good).is_ok());
    // Truncated anywhere, trailing bytes, not a map, repeated key,
    // non-string key, unsupported ext, too deep.
    for cut in 0..good.len() {
        assert!(decode(&good[..cut]).is_err(), "{cut}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(decode(&trailing), Err(PacketError::Msgpack(_))));
    assert!(matches!(decode(&[0x90]), Err(PacketError::Msgpack(_))));
    assert!(matches!(
        decode(&map(&[
            ("type", &[2]),
            ("type", &[2]),
            ("data", EVENT),
            ("nsp", NSP)
        ])),
        Err(PacketError::Msgpack(_))
    ));
    assert!(matches!(
        decode(&[0x81, 0x01, 0x02]),
        Err(PacketError::Msgpack(_))
    ));
    let ext = [0x92, 0xa1, b'x', 0xd5, 0x05, 0, 0];
    assert!(matches!(
        decode(&map(&[("type", &[2]), ("data", &ext), ("nsp", NSP)])),
        Err(PacketError::Msgpack(_))
    ));
    let mut deep = vec![0x92, 0xa1, b'x'];
    deep.extend(msgpack::testing::nested_arrays(msgpack::MAX_DEPTH, &[0xc0]));
    assert_eq!(
        decode(&map(&[("type", &[2]), ("data", &deep), ("nsp", NSP)])),
        Err(PacketError::TooDeep)
    );
    // A huge announced map is refused without allocating for it.
    assert!(decode(&[0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
}

#[test]
fn notepack_values() {
    let data = [
        0x95, 0xa1, b'x', 0xd4, 0x00, 0x00, // undefined
        0xd7, 0x00, 0, 0, 0, 0, 0, 0, 0x03, 0xe8, // Date(1000)
        0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, // NaN
        0xc4, 0x01, 0x09, // bin
    ];
    let p = decode(&map(&[("type", &[2]), ("data", &data), ("nsp", NSP)])).unwrap();
    assert_eq!(
        p.body,
        Body::Event {
            id: None,
            name: "x".to_owned(),
            args: vec![
                SioValue::Null,
                SioValue::Number(1000i64.into()),
                SioValue::Null,
                SioValue::Binary(vec![9]),
            ],
        }
    );
}

#[test]
fn msgpack_decoder_refuses_text() {
    let mut d = Decoder::new(ParserKind::Msgpack, Limits::default());
    assert_eq!(d.feed(Data::Text("0")), Err(PacketError::UnexpectedText));
    assert_eq!(
        d.feed(Data::Binary(client_event("m", None).into()))
            .map(|p| p.is_some()),
        Ok(true)
    );
}

#[test]
fn detect_parser() {
    assert_eq!(
        ParserKind::detect(&Data::Text("0")),
        Some(ParserKind::Default)
    );
    assert_eq!(
        ParserKind::detect(&Data::Text(r#"0/admin,{"token":"x"}"#)),
        Some(ParserKind::Default)
    );
    let connect = encode(&Packet::main(Body::Connect(None)));
    assert_eq!(
        ParserKind::detect(&Data::Binary(connect.into())),
        Some(ParserKind::Msgpack)
    );
    assert_eq!(
        ParserKind::detect(&Data::Binary(vec![0xde, 0, 1].into())),
        Some(ParserKind::Msgpack)
    );
    assert_eq!(ParserKind::detect(&Data::Text("2[\"x\"]")), None);
    assert_eq!(ParserKind::detect(&Data::Text("")), None);
    assert_eq!(ParserKind::detect(&Data::Binary(vec![].into())), None);
    assert_eq!(ParserKind::detect(&Data::Binary(vec![0x90].into())), None);
    assert_eq!(
        ParserKind::detect(&Data::Binary(b"0".to_vec().into())),
        None
    );
    // Over long-polling the msgpack CONNECT arrives as `b` + base64.
    let body = engine::encode_payload(&[EnginePacket::Message(Data::Binary(
        encode(&Packet::main(Body::Connect(None))).into(),
    ))])
    .unwrap();
    let packets = engine::decode_payload(body.as_bytes(), 1000, 4).unwrap();
    let EnginePacket::Message(first) = &packets[0] else {
        panic!()
    };
    assert_eq!(ParserKind::detect(first), Some(ParserKind::Msgpack));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Lcg::new(0xdead_beef);
    let alphabet = [
        0x80, 0x84, 0xa4, b't', b'y', b'p', b'e', 0xa3, b'n', b's', 0x91, 0xc4, 0xc7, 0xd4, 0xd7,
        0x00, 0x02, 0xde, 0xdf, 0xff,
    ];
    for _ in 0..50_000 {
        let bytes = rng.bytes(40, &alphabet);
        if let Ok(p) = decode(&bytes) {
            assert_eq!(decode(&encode(&p)), Ok(p));
        }
        let _ = ParserKind::detect(&Data::Binary(bytes.as_slice().into()));
    }
}

#[test]
fn random_mutations_never_panic() {
    let seeds = [
        client_event("message", Some(7)),
        encode(&Packet::main(Body::Connect(None))),
    ];
    let mut rng = Lcg::new(3);
    for _ in 0..20_000 {
        let mut bytes = seeds[rng.next() as usize % 2].clone();
        let at = rng.next() as usize % bytes.len();
        bytes[at] = rng.next() as u8;
        if let Ok(p) = decode(&bytes) {
            assert_eq!(decode(&encode(&p)), Ok(p));
        }
    }
}
