//! Unit tests of the protocol: the codes here, the client codec in
//! `client.rs`, the server frames and the worked example of
//! `docs/PROTOCOL.md` in `server.rs`; the helpers they share.

use serde_json::json;

use super::*;
use crate::msgpack::testing::mp;
use crate::msgpack::Writer;

/// A map written by hand: `entries` are (raw key, raw value) pairs.
pub(super) fn raw_map(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Writer::with_capacity(64);
    out.map(entries.len());
    for (k, v) in entries {
        out.raw(k).raw(v);
    }
    out.into_vec()
}

pub(super) fn s(text: &str) -> Vec<u8> {
    let mut out = Writer::with_capacity(8);
    out.str(text);
    out.into_vec()
}

pub(super) fn err_of(bytes: &[u8]) -> FrameError {
    match decode_client_frame(bytes) {
        Err(e) => e,
        Ok(f) => panic!("accepted {f:?} from {bytes:02x?}"),
    }
}

pub(super) fn all_frames() -> Vec<ClientFrame> {
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
            volatile: false,
            id: i64::MIN,
            room: "chat:lobby".into(),
            ev: "message".into(),
            data: mp(&json!({"text": "héllo"})),
            others: false,
        },
        ClientFrame::Pub {
            volatile: false,
            id: 0,
            room: "chat:lobby".into(),
            ev: "".into(),
            data: vec![0xc0],
            others: true,
        },
        ClientFrame::Presence {
            id: 300,
            room: "chat:lobby".into(),
            after: None,
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
        ClientFrame::Pub {
            id: 8,
            room: "chat:lobby".into(),
            ev: "typing".into(),
            data: vec![0xc3],
            others: true,
            volatile: true,
        },
        ClientFrame::Rpc {
            id: 9,
            method: "orders.get".into(),
            data: mp(&json!({"order": 12})),
        },
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
            "internal",
            "timeout",
            "rpc_error"
        ]
    );
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
    }
    assert_eq!(ErrorCode::parse("BAD_FRAME"), None);
    assert_eq!(ErrorCode::parse(""), None);
}

mod client;
mod server;
