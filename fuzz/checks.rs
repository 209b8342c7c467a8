//! What each fuzz target checks, shared by the fuzz targets (`cargo fuzz`,
//! nightly) and by `tests/tests/fuzz_corpus.rs`, which replays the committed
//! corpus on stable in every `make test`. Each check must hold for any
//! input: no panic, and the stated property.

use std::sync::OnceLock;

use broker::{envelope, msgpack, protocol};
use broker_gateway::auth::Authenticator;
use broker_gateway::config::AuthConfig;

/// A client frame that decodes re-encodes to a frame that decodes to the
/// same thing.
pub fn client_frame(data: &[u8]) {
    if let Ok(frame) = protocol::decode_client_frame(data) {
        let again = protocol::encode_client_frame(&frame);
        let back = protocol::decode_client_frame(&again);
        assert_eq!(back.as_ref(), Ok(&frame), "round trip of {frame:?}");
    }
}

/// Server frames (what clients decode) never panic.
pub fn server_frame(data: &[u8]) {
    let _ = protocol::decode_server_frame(data);
}

/// Node-channel envelopes never panic; a payload that passes the
/// MessagePack check also converts to JSON.
pub fn envelope(data: &[u8]) {
    let _ = envelope::decode_envelope(data);
    if msgpack::check(data).is_ok() {
        assert!(
            msgpack::to_json(data).is_ok(),
            "checked MessagePack must convert: {data:02x?}"
        );
    }
}

/// The JWT path (upgrade, `auth`, `refresh`) never panics and never accepts
/// a token not signed with the secret.
pub fn jwt(data: &[u8]) {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        let cfg = AuthConfig {
            secret: Some("fuzz-secret-fuzz-secret-fuzz-secret!".to_owned()),
            ..AuthConfig::default()
        };
        Authenticator::new(&cfg).expect("a valid auth config")
    });
    let token = String::from_utf8_lossy(data);
    assert!(
        auth.verify(&token).is_err(),
        "an unsigned token was accepted: {token}"
    );
}

/// The Socket.IO decoders and the protocol v1 bridge never panic: the
/// input as an Engine.IO text packet, a long-polling payload, a default
/// parser packet, a msgpack parser packet, and as a protocol v1 server
/// frame transcoded for both parsers. Every decoded EVENT becomes a
/// request or a refusal.
pub fn socketio(data: &[u8]) {
    use broker::socketio::bridge::{self, Outgoing, Positions};
    use broker::socketio::{encode_ws, engine, Body, Data, Decoder, Limits, Packet, ParserKind};
    let to_request = |packet: Packet| {
        if let Body::Event { name, args, .. } = packet.body {
            let _ = bridge::request(1, &name, args);
        }
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = engine::decode_text(text, 1 << 20);
        let mut decoder = Decoder::new(ParserKind::Default, Limits::default());
        if let Ok(Some(packet)) = decoder.feed(Data::Text(text)) {
            to_request(packet);
        }
        let _ = bridge::parse_offset(text);
    }
    let _ = engine::decode_payload(data, 1 << 20, 256);
    let mut decoder = Decoder::new(ParserKind::Msgpack, Limits::default());
    if let Ok(Some(packet)) = decoder.feed(Data::Binary(data.into())) {
        to_request(packet);
    }
    let mut positions = Positions::default();
    let mut packets = Vec::new();
    Outgoing::packets(data, &mut positions, |_| true, &mut packets);
    for packet in &packets {
        let _ = encode_ws(ParserKind::Default, packet);
        let _ = encode_ws(ParserKind::Msgpack, packet);
    }
}
