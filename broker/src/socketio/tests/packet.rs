//! The default parser: the official test suite's packets, the examples of
//! the protocol README, every refusal, binary reassembly.

use super::Lcg;
use crate::socketio::packet::{decode_text, encode, RESERVED_EVENTS};
use crate::socketio::*;

fn s(x: &str) -> SioValue {
    SioValue::str(x)
}

fn n(x: u64) -> SioValue {
    SioValue::Number(x.into())
}

fn obj(pairs: &[(&str, SioValue)]) -> Object {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn decode(text: &str) -> Result<Packet, PacketError> {
    match decode_text(text, &Limits::default())? {
        Decoded::Packet(p) => Ok(p),
        Decoded::Pending(_) => panic!("{text}: waits for attachments"),
    }
}

fn event(nsp: &str, id: Option<u64>, name: &str, args: Vec<SioValue>) -> Packet {
    Packet {
        nsp: nsp.to_owned(),
        body: Body::Event {
            id,
            name: name.to_owned(),
            args,
        },
    }
}

/// Decodes `text`, checks it is `packet`, and that `packet` encodes back to
/// `text`.
fn both_ways(text: &str, packet: Packet) {
    assert_eq!(decode(text), Ok(packet.clone()), "{text}");
    assert_eq!(encode(&packet).text, text);
    assert!(encode(&packet).attachments.is_empty());
}

#[test]
fn readme_examples() {
    both_ways("0", Packet::main(Body::Connect(None)));
    both_ways(
        r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
        Packet {
            nsp: "/admin".to_owned(),
            body: Body::Connect(Some(obj(&[("sid", s("oSO0OpakMV_3jnilAAAA"))]))),
        },
    );
    both_ways(
        r#"4{"message":"Not authorized"}"#,
        Packet::main(Body::ConnectError(SioValue::Object(obj(&[(
            "message",
            s("Not authorized"),
        )])))),
    );
    both_ways(r#"2["foo"]"#, event("/", None, "foo", vec![]));
    both_ways(r#"2/admin,["bar"]"#, event("/admin", None, "bar", vec![]));
    both_ways(r#"212["foo"]"#, event("/", Some(12), "foo", vec![]));
    both_ways(
        r#"3/admin,13["bar"]"#,
        Packet {
            nsp: "/admin".to_owned(),
            body: Body::Ack {
                id: 13,
                args: vec![s("bar")],
            },
        },
    );
    both_ways(
        "1/admin,",
        Packet {
            nsp: "/admin".to_owned(),
            body: Body::Disconnect,
        },
    );
    both_ways(
        r#"4"refused""#,
        Packet::main(Body::ConnectError(s("refused"))),
    );
}

#[test]
fn suite_connect_packets() {
    assert_eq!(
        decode("40"[1..].as_ref()),
        Ok(Packet::main(Body::Connect(None)))
    );
    assert_eq!(
        decode(r#"0{"token":"123"}"#),
        Ok(Packet::main(Body::Connect(Some(obj(&[(
            "token",
            s("123")
        )])))))
    );
    let custom = Packet {
        nsp: "/custom".to_owned(),
        body: Body::Connect(None),
    };
    assert_eq!(decode("0/custom,"), Ok(custom.clone()));
    // The namespace may end the packet without its comma.
    assert_eq!(decode("0/custom"), Ok(custom));
    assert_eq!(
        decode(r#"0/custom,{"token":"abc"}"#).unwrap().body,
        Body::Connect(Some(obj(&[("token", s("abc"))])))
    );
    assert_eq!(decode("0/random").unwrap().nsp, "/random");
    // The server's refusal of an unknown namespace.
    let refusal = Packet {
        nsp: "/random".to_owned(),
        body: Body::ConnectError(SioValue::Object(obj(&[(
            "message",
            s("Invalid namespace"),
        )]))),
    };
    assert_eq!(
        encode(&refusal).text,
        r#"4/random,{"message":"Invalid namespace"}"#
    );
    // The server's acceptance and the suite's `auth` echo.
    let ok = Packet::main(Body::Connect(Some(obj(&[("sid", s("abc"))]))));
    assert_eq!(encode(&ok).text, r#"0{"sid":"abc"}"#);
    let auth = event(
        "/custom",
        None,
        "auth",
        vec![SioValue::Object(obj(&[("token", s("abc"))]))],
    );
    assert_eq!(encode(&auth).text, r#"2/custom,["auth",{"token":"abc"}]"#);
}

#[test]
fn suite_disconnect_packets() {
    assert_eq!(decode("1"), Ok(Packet::main(Body::Disconnect)));
    assert_eq!(decode("1/custom").unwrap().nsp, "/custom");
    assert_eq!(encode(&Packet::main(Body::Disconnect)).text, "1");
}

#[test]
fn suite_plain_text_event_and_ack() {
    let args = vec![
        n(1),
        s("2"),
        SioValue::Object(obj(&[("3", SioValue::Array(vec![SioValue::Bool(true)]))])),
    ];
    both_ways(
        r#"2["message",1,"2",{"3":[true]}]"#,
        event("/", None, "message", args.clone()),
    );
    both_ways(
        r#"2["message-back",1,"2",{"3":[true]}]"#,
        event("/", None, "message-back", args),
    );
    let args = vec![
        n(1),
        s("2"),
        SioValue::Object(obj(&[("3", SioValue::Array(vec![SioValue::Bool(false)]))])),
    ];
    both_ways(
        r#"2456["message-with-ack",1,"2",{"3":[false]}]"#,
        event("/", Some(456), "message-with-ack", args.clone()),
    );
    both_ways(
        r#"3456[1,"2",{"3":[false]}]"#,
        Packet::main(Body::Ack { id: 456, args }),
    );
    both_ways(
        "31[]",
        Packet::main(Body::Ack {
            id: 1,
            args: vec![],
        }),
    );
}

#[test]
fn suite_binary_attachments() {
    let limits = Limits::default();
    let header = r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    let Ok(Decoded::Pending(mut r)) = decode_text(header, &limits) else {
        panic!("not pending")
    };
    assert_eq!(r.remaining(), 2);
    assert_eq!(r.push(vec![1, 2, 3]), Ok(None));
    assert_eq!(r.remaining(), 1);
    let packet = r.push(vec![4, 5, 6]).unwrap().unwrap();
    let expected = event(
        "/",
        None,
        "message",
        vec![
            SioValue::Binary(vec![1, 2, 3]),
            SioValue::Binary(vec![4, 5, 6]),
        ],
    );
    assert_eq!(packet, expected);
    assert_eq!(r.push(vec![7]), Err(PacketError::UnexpectedBinary));

    // The echo the suite expects back: same shape, buffers in order.
    let back = event(
        "/",
        None,
        "message-back",
        match expected.body {
            Body::Event { args, .. } => args,
            _ => unreachable!(),
        },
    );
    let encoded = encode(&back);
    assert_eq!(
        encoded.text,
        r#"52-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(encoded.attachments, [&[1u8, 2, 3][..], &[4, 5, 6][..]]);
}

#[test]
fn suite_binary_attachments_with_ack() {
    let header =
        r#"52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    let Ok(Decoded::Pending(mut r)) = decode_text(header, &Limits::default()) else {
        panic!("not pending")
    };
    r.push(vec![1, 2, 3]).unwrap();
    let packet = r.push(vec![4, 5, 6]).unwrap().unwrap();
    assert_eq!(
        packet.body,
        Body::Event {
            id: Some(789),
            name: "message-with-ack".to_owned(),
            args: vec![
                SioValue::Binary(vec![1, 2, 3]),
                SioValue::Binary(vec![4, 5, 6])
            ],
        }
    );
    let ack = Packet::main(Body::Ack {
        id: 789,
        args: vec![
            SioValue::Binary(vec![1, 2, 3]),
            SioValue::Binary(vec![4, 5, 6]),
        ],
    });
    let encoded = encode(&ack);
    assert_eq!(
        encoded.text,
        r#"62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(encoded.attachments.len(), 2);
}

#[test]
fn readme_binary_examples() {
    let one = event("/", None, "baz", vec![SioValue::Binary(vec![1, 2, 3, 4])]);
    let e = encode(&one);
    assert_eq!(e.text, r#"51-["baz",{"_placeholder":true,"num":0}]"#);
    assert_eq!(e.attachments, [&[1u8, 2, 3, 4][..]]);
    // Nested buffers are numbered depth-first, in order; namespace and id
    // come after the count.
    let nested = Packet {
        nsp: "/admin".to_owned(),
        body: Body::Event {
            id: Some(456),
            name: "baz".to_owned(),
            args: vec![SioValue::Object(obj(&[
                ("a", SioValue::Binary(vec![1])),
                ("b", SioValue::Array(vec![n(7), SioValue::Binary(vec![2])])),
            ]))],
        },
    };
    let e = encode(&nested);
    assert_eq!(
        e.text,
        r#"51-/admin,456["baz",{"a":{"_placeholder":true,"num":0},"b":[7,{"_placeholder":true,"num":1}]}]"#
            .replace("51-", "52-")
    );
    let Ok(Decoded::Pending(mut r)) = decode_text(&e.text, &Limits::default()) else {
        panic!("not pending")
    };
    r.push(vec![1]).unwrap();
    assert_eq!(r.push(vec![2]), Ok(Some(nested)));
}

#[test]
fn binary_packet_with_no_attachments_is_whole() {
    assert_eq!(
        decode_text(r#"50-["x",1]"#, &Limits::default()),
        Ok(Decoded::Packet(event("/", None, "x", vec![n(1)])))
    );
}

#[test]
fn placeholder_in_a_plain_event_stays_an_object() {
    let packet = decode(r#"2["x",{"_placeholder":true,"num":0}]"#).unwrap();
    let Body::Event { args, .. } = &packet.body else {
        panic!()
    };
    assert!(matches!(args[0], SioValue::Object(_)));
}

#[test]
fn invalid_format_unknown_packet_type() {
    // The suite sends `4abc` as an Engine.IO message: Socket.IO sees `abc`.
    assert_eq!(decode("abc"), Err(PacketError::UnknownType));
    assert_eq!(decode("7"), Err(PacketError::UnknownType));
    assert_eq!(decode("9[]"), Err(PacketError::UnknownType));
    assert_eq!(decode(""), Err(PacketError::Empty));
}

#[test]
fn invalid_format_invalid_payload() {
    assert!(matches!(decode("2{}"), Err(PacketError::InvalidPayload(_))));
    for bad in [
        "2",
        "2[]",
        "2[1]",
        "2[null]",
        r#"2"x""#,
        "2[\"x\"",
        "2[\"x\"]]",
        "3",
        "31",
        "31{}",
        "0[]",
        r#"0"x""#,
        "0null",
        "1{}",
        "1[]",
        "4",
        "4[]",
        "44",
        "2[\"x\",NaN]",
    ] {
        assert!(
            matches!(
                decode(bad),
                Err(PacketError::InvalidPayload(_) | PacketError::InvalidAckId)
            ),
            "{bad}: {:?}",
            decode(bad)
        );
    }
}

#[test]
fn reserved_event_names() {
    for name in RESERVED_EVENTS {
        assert_eq!(
            decode(&format!(r#"2["{name}"]"#)),
            Err(PacketError::InvalidPayload("reserved event name")),
            "{name}"
        );
    }
    assert!(decode(r#"2["Connect"]"#).is_ok());
    // JSON.parse allows whitespace around the value; so does the decoder.
    assert!(decode("2 [\"x\"] ").is_ok());
}

#[test]
fn invalid_format_invalid_ack_id() {
    // The suite's case: not digits, so not an id, and not JSON either.
    assert!(matches!(
        decode(r#"2abc["message-with-ack",1,"2",{"3":[false]}]"#),
        Err(PacketError::InvalidPayload(_))
    ));
    assert_eq!(
        decode(r#"299999999999999999999["x"]"#),
        Err(PacketError::InvalidAckId)
    );
    assert_eq!(decode("3[]"), Err(PacketError::InvalidAckId));
    assert_eq!(decode("01"), Err(PacketError::InvalidAckId));
    assert_eq!(decode("11"), Err(PacketError::InvalidAckId));
    assert_eq!(decode(r#"47"x""#), Err(PacketError::InvalidAckId));
    assert_eq!(
        decode(r#"218446744073709551615["x"]"#).unwrap().body,
        Body::Event {
            id: Some(u64::MAX),
            name: "x".to_owned(),
            args: vec![]
        }
    );
}

#[test]
fn invalid_namespace() {
    let long = format!("0/{}", "a".repeat(packet::MAX_NAMESPACE_LEN));
    assert_eq!(decode(&long), Err(PacketError::InvalidNamespace));
    assert_eq!(decode("0/a\u{1e},"), Err(PacketError::InvalidNamespace));
    assert_eq!(decode("0/a\n"), Err(PacketError::InvalidNamespace));
    assert!(decode(&long[..long.len() - 1]).is_ok());
    assert_eq!(
        packet::check_namespace("admin"),
        Err(PacketError::InvalidNamespace)
    );
    assert_eq!(
        packet::check_namespace(""),
        Err(PacketError::InvalidNamespace)
    );
    assert_eq!(
        packet::check_namespace("/a,b"),
        Err(PacketError::InvalidNamespace)
    );
    assert_eq!(packet::check_namespace("/é-1"), Ok(()));
    // A namespace not starting with `/` is not read as one: `admin,` is
    // then neither an id nor JSON.
    assert!(decode(r#"2admin,["x"]"#).is_err());
}

#[test]
fn illegal_attachments() {
    let l = Limits::default();
    for bad in [
        r#"5-["x"]"#,
        r#"5["x"]"#,
        r#"5a-["x"]"#,
        "51",
        r#"51["x"]"#,
        // num out of range, used twice, unused buffer, bad placeholder shape
        r#"51-["x",{"_placeholder":true,"num":1}]"#,
        r#"52-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]"#,
        r#"52-["x",{"_placeholder":true,"num":0}]"#,
        r#"51-["x",{"_placeholder":true,"num":-1}]"#,
        r#"51-["x",{"_placeholder":true,"num":"0"}]"#,
        r#"51-["x",{"_placeholder":true}]"#,
        r#"51-["x",{"_placeholder":true,"num":0,"y":1}]"#,
        r#"51-["x",{"_placeholder":true,"num":0.5}]"#,
        r#"51-["x"]"#,
    ] {
        assert_eq!(
            decode_text(bad, &l),
            Err(PacketError::IllegalAttachments),
            "{bad}"
        );
    }
    // ACK needs its id and an EVENT its name even when binary.
    assert_eq!(
        decode_text(r#"61-[{"_placeholder":true,"num":0}]"#, &l),
        Err(PacketError::InvalidAckId)
    );
    assert!(matches!(
        decode_text(r#"51-[{"_placeholder":true,"num":0}]"#, &l),
        Err(PacketError::InvalidPayload(_))
    ));
}

#[test]
fn too_many_attachments() {
    let l = Limits {
        max_attachments: 3,
        max_attachment_bytes: 100,
    };
    let header = |k: usize| {
        let ph: Vec<String> = (0..k)
            .map(|i| format!(r#"{{"_placeholder":true,"num":{i}}}"#))
            .collect();
        format!(r#"5{k}-["x",{}]"#, ph.join(","))
    };
    assert!(matches!(
        decode_text(&header(3), &l),
        Ok(Decoded::Pending(_))
    ));
    assert_eq!(
        decode_text(&header(4), &l),
        Err(PacketError::TooManyAttachments(3))
    );
    assert_eq!(
        decode_text(r#"599999999999999999999999-["x"]"#, &l),
        Err(PacketError::TooManyAttachments(3))
    );
    // The reference's default is 10.
    assert_eq!(Limits::default().max_attachments, 10);
}

#[test]
fn attachment_bytes_are_bounded() {
    let l = Limits {
        max_attachments: 3,
        max_attachment_bytes: 10,
    };
    let Ok(Decoded::Pending(mut r)) = decode_text(
        r#"52-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        &l,
    ) else {
        panic!()
    };
    assert_eq!(r.push(vec![0; 6]), Ok(None));
    assert_eq!(
        r.push(vec![0; 5]),
        Err(PacketError::AttachmentsTooLarge(10))
    );
}

#[test]
fn decoder_state_machine() {
    let mut d = Decoder::new(ParserKind::Default, Limits::default());
    assert_eq!(
        d.feed(Data::Binary(vec![1].into())),
        Err(PacketError::UnexpectedBinary)
    );
    assert_eq!(
        d.feed(Data::Text(r#"51-["x",{"_placeholder":true,"num":0}]"#)),
        Ok(None)
    );
    assert!(d.is_reassembling());
    assert_eq!(
        d.feed(Data::Text(r#"2["y"]"#)),
        Err(PacketError::UnexpectedText)
    );
    assert_eq!(
        d.feed(Data::Binary(vec![9].into())),
        Ok(Some(event("/", None, "x", vec![SioValue::Binary(vec![9])])))
    );
    assert!(!d.is_reassembling());
    assert_eq!(
        d.feed(Data::Text(r#"2["y"]"#)),
        Ok(Some(event("/", None, "y", vec![])))
    );
}

#[test]
fn encode_ws_frames() {
    let p = event("/", Some(1), "x", vec![SioValue::Binary(vec![1, 2])]);
    assert_eq!(
        encode_ws(ParserKind::Default, &p),
        [
            WsFrame::Text(r#"451-1["x",{"_placeholder":true,"num":0}]"#.to_owned()),
            WsFrame::Binary(vec![1, 2]),
        ]
    );
    let frames = encode_ws(ParserKind::Msgpack, &p);
    assert!(matches!(frames.as_slice(), [WsFrame::Binary(_)]));
}

#[test]
fn buffers_outside_events_are_byte_arrays() {
    let p = Packet::main(Body::ConnectError(SioValue::Object(obj(&[(
        "data",
        SioValue::Binary(vec![1, 2]),
    )]))));
    let e = encode(&p);
    assert_eq!(e.text, r#"4{"data":[1,2]}"#);
    assert!(e.attachments.is_empty());
}

#[test]
fn json_depth_is_bounded() {
    let deep = |levels: usize| format!(r#"2["x",{}{}]"#, "[".repeat(levels), "]".repeat(levels));
    // The payload array is one level, the event's argument the rest.
    assert!(decode(&deep(crate::msgpack::MAX_DEPTH - 1)).is_ok());
    assert_eq!(
        decode(&deep(crate::msgpack::MAX_DEPTH)),
        Err(PacketError::TooDeep)
    );
    assert_eq!(decode(&deep(100_000)), Err(PacketError::TooDeep));
}

#[test]
fn repeated_json_keys_are_refused() {
    assert!(matches!(
        decode(r#"0{"token":"a","token":"b"}"#),
        Err(PacketError::InvalidPayload(_))
    ));
}

#[test]
fn object_key_order_is_kept() {
    both_ways(
        r#"2["x",{"z":1,"a":2,"m":{"b":null,"a":1.5}}]"#,
        event(
            "/",
            None,
            "x",
            vec![SioValue::Object(obj(&[
                ("z", n(1)),
                ("a", n(2)),
                (
                    "m",
                    SioValue::Object(obj(&[
                        ("b", SioValue::Null),
                        (
                            "a",
                            SioValue::Number(serde_json::Number::from_f64(1.5).unwrap()),
                        ),
                    ])),
                ),
            ]))],
        ),
    );
}

#[test]
fn unicode_and_escapes_round_trip() {
    let p = event("/ñ", None, "é✓", vec![s("a\u{1e}\"\\\n😀")]);
    let e = encode(&p);
    // JSON escapes the record separator, so the text is safe in a payload.
    assert!(!e.text.contains('\u{1e}'));
    assert_eq!(decode(&e.text), Ok(p));
}

#[test]
fn random_text_never_panics() {
    let mut rng = Lcg::new(42);
    let alphabet = br#"0123456-/,[]{}"_placeholder:truenum x"#;
    let limits = Limits::default();
    let mut decoded = 0;
    for _ in 0..50_000 {
        let bytes = rng.bytes(48, alphabet);
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        if let Ok(Decoded::Packet(p)) = decode_text(text, &limits) {
            decoded += 1;
            let e = encode(&p);
            assert_eq!(
                decode_text(&e.text, &limits),
                Ok(Decoded::Packet(p)),
                "{text}"
            );
        }
    }
    assert!(decoded > 0);
}

#[test]
fn random_mutations_of_valid_packets_never_panic() {
    let seeds = [
        r#"52-/admin,789["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        r#"2456["message-with-ack",1,"2",{"3":[false]}]"#,
        r#"0/custom,{"token":"abc"}"#,
        r#"4{"message":"Not authorized"}"#,
    ];
    let mut rng = Lcg::new(1);
    for _ in 0..20_000 {
        let mut bytes = seeds[rng.next() as usize % seeds.len()].as_bytes().to_vec();
        for _ in 0..1 + rng.next() % 3 {
            let at = rng.next() as usize % bytes.len();
            match rng.next() % 3 {
                0 => bytes[at] = rng.byte(b"0123456-,/[]{}\""),
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, rng.byte(b"0123456-,/[]{}\"")),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let mut d = Decoder::new(ParserKind::Default, Limits::default());
        if d.feed(Data::Text(text)).is_ok() {
            for _ in 0..3 {
                let _ = d.feed(Data::Binary(vec![rng.next() as u8].into()));
            }
        }
    }
}
