//! Engine.IO v4 packets, payloads and the handshake.

use std::borrow::Cow;

use super::Lcg;
use crate::socketio::engine::*;

const MAX: usize = 1_000_000;

fn text(s: &str) -> EnginePacket<'_> {
    EnginePacket::Message(Data::Text(s))
}

fn bin(b: &[u8]) -> EnginePacket<'static> {
    EnginePacket::Message(Data::Binary(Cow::Owned(b.to_vec())))
}

fn handshake() -> Handshake {
    Handshake {
        sid: "lv_VI97HAXpY6yYWAAAC".to_owned(),
        upgrades: vec!["websocket".to_owned()],
        ping_interval: 25000,
        ping_timeout: 20000,
        max_payload: 1_000_000,
    }
}

#[test]
fn text_packets_decode() {
    assert_eq!(decode_text("4hello", MAX), Ok(text("hello")));
    assert_eq!(decode_text("4", MAX), Ok(text("")));
    assert_eq!(decode_text("1", MAX), Ok(EnginePacket::Close));
    assert_eq!(
        decode_text("2", MAX),
        Ok(EnginePacket::Ping { probe: false })
    );
    assert_eq!(
        decode_text("2probe", MAX),
        Ok(EnginePacket::Ping { probe: true })
    );
    assert_eq!(
        decode_text("3", MAX),
        Ok(EnginePacket::Pong { probe: false })
    );
    assert_eq!(
        decode_text("3probe", MAX),
        Ok(EnginePacket::Pong { probe: true })
    );
    assert_eq!(decode_text("5", MAX), Ok(EnginePacket::Upgrade));
    assert_eq!(decode_text("6", MAX), Ok(EnginePacket::Noop));
    assert_eq!(decode_text("4é✓", MAX), Ok(text("é✓")));
}

#[test]
fn text_packets_encode() {
    assert_eq!(encode_text(&text("hello")), "4hello");
    assert_eq!(encode_text(&EnginePacket::Close), "1");
    assert_eq!(encode_text(&EnginePacket::Ping { probe: false }), "2");
    assert_eq!(encode_text(&EnginePacket::Pong { probe: true }), "3probe");
    assert_eq!(encode_text(&EnginePacket::Upgrade), "5");
    assert_eq!(encode_text(&EnginePacket::Noop), "6");
    assert_eq!(encode_text(&bin(&[1, 2, 3, 4])), "bAQIDBA==");
}

#[test]
fn open_packet_is_the_handshake_json() {
    let open = EnginePacket::Open(handshake());
    let encoded = encode_text(&open);
    assert_eq!(
        encoded,
        r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
    );
    assert_eq!(decode_text(&encoded, MAX), Ok(open));
    let keys: Vec<String> = match serde_json::from_str(&encoded[1..]).unwrap() {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        _ => unreachable!(),
    };
    assert_eq!(keys.len(), 5);
    assert!(matches!(
        decode_text("0{}", MAX),
        Err(EngineError::BadHandshake(_))
    ));
    assert!(matches!(
        decode_text("0not json", MAX),
        Err(EngineError::BadHandshake(_))
    ));
}

#[test]
fn websocket_binary_frames_are_raw_messages() {
    let frame = [0u8, 0xff, b'4', 0x1e];
    assert_eq!(decode_binary(&frame, MAX), Ok(bin(&frame)));
    assert_eq!(decode_binary(&[], MAX), Ok(bin(&[])));
    assert_eq!(encode_ws(&bin(&frame)), WsFrame::Binary(frame.to_vec()));
    assert_eq!(encode_ws(&text("x")), WsFrame::Text("4x".to_owned()));
    assert_eq!(decode_binary(&[0; 11], 10), Err(EngineError::TooLarge(10)));
}

#[test]
fn polling_payload_of_the_spec() {
    let packets = decode_payload(b"4hello\x1e2\x1e4world", MAX, 16).unwrap();
    assert_eq!(
        packets,
        [
            text("hello"),
            EnginePacket::Ping { probe: false },
            text("world")
        ]
    );
    let packets = decode_payload(b"4hello\x1ebAQIDBA==", MAX, 16).unwrap();
    assert_eq!(packets, [text("hello"), bin(&[1, 2, 3, 4])]);
    assert_eq!(
        encode_payload(&[text("hello"), bin(&[1, 2, 3, 4])]).unwrap(),
        "4hello\x1ebAQIDBA=="
    );
    assert_eq!(
        encode_payload(&[
            text("hello"),
            EnginePacket::Ping { probe: false },
            text("world")
        ])
        .unwrap(),
        "4hello\x1e2\x1e4world"
    );
    assert_eq!(encode_payload(&[EnginePacket::Noop]).unwrap(), "6");
}

#[test]
fn polling_payload_refusals() {
    assert_eq!(decode_payload(b"", MAX, 16), Err(EngineError::Empty));
    assert_eq!(decode_payload(b"4a\x1e", MAX, 16), Err(EngineError::Empty));
    assert_eq!(
        decode_payload(b"4a\x1e\x1e4b", MAX, 16),
        Err(EngineError::Empty)
    );
    assert_eq!(decode_payload(b"4\xff", MAX, 16), Err(EngineError::NotUtf8));
    assert_eq!(
        decode_payload(b"4abc", 3, 16),
        Err(EngineError::TooLarge(3))
    );
    assert_eq!(
        decode_payload(b"2\x1e2\x1e2", MAX, 2),
        Err(EngineError::TooManyPackets(2))
    );
    assert_eq!(decode_payload(b"2\x1e2", MAX, 2).map(|p| p.len()), Ok(2));
    assert_eq!(
        decode_payload(b"4ok\x1e9", MAX, 16),
        Err(EngineError::UnknownType('9'))
    );
    assert_eq!(
        encode_payload(&[text("a\x1eb")]),
        Err(EngineError::SeparatorInText)
    );
}

#[test]
fn unknown_packet_type() {
    for bad in ["7", "9x", "x", "-1", " 4", "é"] {
        let first = bad.chars().next().unwrap();
        assert_eq!(
            decode_text(bad, MAX),
            Err(EngineError::UnknownType(first)),
            "{bad}"
        );
    }
    assert_eq!(decode_text("", MAX), Err(EngineError::Empty));
}

#[test]
fn data_on_types_that_carry_none() {
    assert_eq!(decode_text("1x", MAX), Err(EngineError::UnexpectedData(1)));
    assert_eq!(
        decode_text("5probe", MAX),
        Err(EngineError::UnexpectedData(5))
    );
    assert_eq!(decode_text("6 ", MAX), Err(EngineError::UnexpectedData(6)));
    assert_eq!(
        decode_text("2prob", MAX),
        Err(EngineError::UnexpectedData(2))
    );
    assert_eq!(
        decode_text("3probes", MAX),
        Err(EngineError::UnexpectedData(3))
    );
}

#[test]
fn packet_size_limit() {
    assert_eq!(decode_text("4abc", 4), Ok(text("abc")));
    assert_eq!(decode_text("4abcd", 4), Err(EngineError::TooLarge(4)));
}

#[test]
fn invalid_eio_query_parameter() {
    assert_eq!(check_version(Some("4")), Ok(()));
    for bad in [
        None,
        Some("abc"),
        Some("3"),
        Some(""),
        Some("4 "),
        Some("04"),
    ] {
        assert_eq!(
            check_version(bad),
            Err(EngineError::UnsupportedVersion),
            "{bad:?}"
        );
    }
}

#[test]
fn invalid_transport_query_parameter() {
    assert_eq!(Transport::parse(Some("polling")), Ok(Transport::Polling));
    assert_eq!(
        Transport::parse(Some("websocket")),
        Ok(Transport::WebSocket)
    );
    for bad in [None, Some("abc"), Some("WebSocket"), Some("")] {
        assert_eq!(
            Transport::parse(bad),
            Err(EngineError::UnknownTransport),
            "{bad:?}"
        );
    }
}

#[test]
fn base64_round_trips_every_length() {
    let mut rng = Lcg::new(7);
    for len in 0..64usize {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let encoded = encode_text(&bin(&bytes));
        assert_eq!(encoded.len(), 1 + len.div_ceil(3) * 4);
        assert_eq!(decode_text(&encoded, MAX), Ok(bin(&bytes)), "{encoded}");
        // Unpadded input is accepted too.
        let unpadded = encoded.trim_end_matches('=');
        assert_eq!(decode_text(unpadded, MAX), Ok(bin(&bytes)), "{unpadded}");
    }
}

#[test]
fn bad_base64() {
    for bad in [
        "bA",
        "b====",
        "bAQID=A==",
        "bAQ-D",
        "bAQIDB",
        "bAQ==\x1e",
        "b A==",
        "bAQ=",
        "b=AQI",
    ] {
        assert_eq!(
            decode_text(bad, MAX),
            Err(EngineError::BadBase64),
            "{bad:?}"
        );
    }
    assert_eq!(decode_text("b", MAX), Ok(bin(&[])));
}

#[test]
fn random_text_never_panics() {
    let mut rng = Lcg::new(0x5eed);
    let alphabet = b"0123456bprobe=+/\x1eAQID{}\":,";
    for _ in 0..20_000 {
        let bytes = rng.bytes(40, alphabet);
        let Ok(s) = std::str::from_utf8(&bytes) else {
            assert!(decode_payload(&bytes, MAX, 8).is_err());
            continue;
        };
        if let Ok(packet) = decode_text(s, MAX) {
            // What decodes, re-encodes to something that decodes the same.
            let again = encode_text(&packet);
            assert_eq!(decode_text(&again, MAX).as_ref(), Ok(&packet), "{s:?}");
        }
        let _ = decode_payload(&bytes, MAX, 8);
    }
}
