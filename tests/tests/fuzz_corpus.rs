//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the
//! fuzz targets' checks on stable, in every `make test`: inputs the fuzzer
//! once found interesting stay fixed. `make fuzz` runs the fuzzers
//! themselves (nightly, cargo-fuzz).
//!
//! `cargo test -p broker-tests --test fuzz_corpus -- --ignored` writes the
//! seed inputs (valid frames and envelopes, tokens) into the corpus again.

use std::fs;
use std::path::PathBuf;

use broker::envelope;
use broker::protocol::{self, ClientFrame, ErrorCode, PresenceAction, Since};

#[path = "../../fuzz/checks.rs"]
mod checks;

/// A fuzz target's check.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("client_frame", checks::client_frame),
    ("server_frame", checks::server_frame),
    ("envelope", checks::envelope),
    ("jwt", checks::jwt),
    ("socketio", checks::socketio),
];

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_input_passes_its_check() {
    for (target, check) in TARGETS {
        let dir = corpus(target);
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let data = fs::read(&path).expect("read a corpus file");
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(
                result.is_ok(),
                "{target}: {} fails its check",
                path.display()
            );
            count += 1;
        }
        assert!(count >= 4, "{target}: only {count} corpus inputs");
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let since = Some(Since {
        seq: 41,
        epoch: "5f0c3a9e12d47b86".into(),
    });
    let data =
        rmp_serde::to_vec(&serde_json::json!({"text": "hi", "n": [1, 2.5, null]})).expect("encode");
    let client = [
        ClientFrame::Auth {
            id: 1,
            token: "a.b.c".into(),
        },
        ClientFrame::Join {
            id: 2,
            room: "chat:lobby".into(),
            since: None,
        },
        ClientFrame::Join {
            id: 3,
            room: "chat:lobby".into(),
            since: since.clone(),
        },
        ClientFrame::Leave {
            id: 4,
            room: "chat:lobby".into(),
        },
        ClientFrame::Pub {
            volatile: false,
            id: 5,
            room: "chat:lobby".into(),
            ev: "message".into(),
            data: data.clone(),
            others: true,
        },
        ClientFrame::Presence {
            id: 6,
            room: "chat:lobby".into(),
            after: None,
        },
        ClientFrame::History {
            id: 7,
            room: "chat:lobby".into(),
            since: Some(3),
            limit: Some(10),
        },
        ClientFrame::Refresh {
            id: 8,
            token: "x.y.z".into(),
        },
        ClientFrame::Ping { id: 9 },
    ];
    let client: Vec<Vec<u8>> = client.iter().map(protocol::encode_client_frame).collect();
    let msg = protocol::encode_msg_frame(
        "chat:lobby",
        "message",
        &data,
        42,
        "5f0c3a9e12d47b86",
        1_700_000_000_000,
        None,
    );
    let presence = protocol::encode_presence_frame("chat:lobby", "alice", PresenceAction::Join);
    let server = vec![
        protocol::encode_welcome("gw-1.1", "alice", "gw-1", 25_000, 1_700_000_000),
        protocol::encode_err(Some(5), ErrorCode::RateLimited, "slow down", Some(1500)),
        protocol::encode_expiring(30_000),
        protocol::encode_ack_raw(
            2,
            &protocol::ack_join("chat:lobby", 42, "5f0c3a9e12d47b86", true),
        ),
        protocol::encode_ack_raw(6, &protocol::ack_presence(&[("alice".into(), 2)], 1)),
        protocol::encode_ack_raw(7, &protocol::ack_history(&[&msg], 42, "5f0c3a9e12d47b86")),
        msg.clone(),
        presence.clone(),
    ];
    let envelopes = vec![
        envelope::encode_msg_envelope(
            "chat:lobby",
            42,
            "5f0c3a9e12d47b86",
            Some("gw-1.1"),
            &msg,
            1,
        ),
        envelope::encode_msg_envelope("chat:lobby", 43, "5f0c3a9e12d47b86", None, &msg, 2),
        envelope::encode_broadcast_envelope(Some("chat"), &msg, 3),
        envelope::encode_presence_envelope("chat:lobby", "5f0c3a9e12d47b86", &presence),
        envelope::encode_kick_envelope("alice", &["gw-1.1", "gw-2.7"], "bye"),
        data.clone(),
    ];
    let jwt = [
        // HS256, signed with another secret.
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.c2lnbmF0dXJlLW5vdC12YWxpZA",
        // alg none.
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.",
        // RS256 header against an HS256 key.
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.AAAA",
        "not-a-token",
        "a.b",
        "..",
    ]
    .map(|t| t.as_bytes().to_vec());
    for (target, inputs) in [
        ("client_frame", client),
        ("server_frame", server),
        ("envelope", envelopes),
        ("jwt", jwt.to_vec()),
    ] {
        let dir = corpus(target);
        fs::create_dir_all(&dir).expect("create the corpus directory");
        for (i, input) in inputs.iter().enumerate() {
            fs::write(dir.join(format!("seed-{i:02}")), input).expect("write a seed");
        }
    }
}
