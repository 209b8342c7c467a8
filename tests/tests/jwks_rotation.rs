//! Key rotation with `auth.jwks_file`: keys chosen by the token's `kid`,
//! the file re-read on SIGHUP without dropping a connection, a bad file
//! keeping the keys in use, and a bad file at start-up stopping the
//! gateway. docs/CONFIG.md (`auth.jwks_file`), docs/OPERATIONS.md
//! ("Rotating the JWT signing key").

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_tests::gateway::{
    auth, gateway_path, jwks, now_s, refresh, token, token_kid, Client, Gateway, Options,
};
use broker_tests::RedisServer;
use serde_json::json;

const SECRET_A: &str = "key-A-0123456789abcdef0123456789abcdef";
const SECRET_B: &str = "key-B-0123456789abcdef0123456789abcdef";

/// A token of `sub` valid for an hour, signed with key `kid`.
fn kid_token(sub: &str, kid: &str) -> String {
    let secret = if kid == "a" { SECRET_A } else { SECRET_B };
    token_kid(&json!({"sub": sub, "exp": now_s() + 3600}), kid, secret)
}

/// Waits until `broker_jwks_reloads_total{result}` reaches `n`.
async fn await_reloads(gw: &Gateway, result: &str, n: f64) {
    let series = format!("broker_jwks_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = gw.metric(&series).await;
        if value >= n {
            assert_eq!(value, n, "{series}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {value}, not {n}, 5 s after SIGHUP\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write(path: &Path, text: &str) {
    // Written aside and renamed, as an operator's tooling should: a reload
    // never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn rotation_by_sighup_keeps_connections_and_switches_keys() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    write(&file, &jwks(&[("a", SECRET_A)]));
    let gw = Gateway::start(&redis, Options::default().jwks_file(&file)).await;
    assert_eq!(gw.metric("broker_auth_keys").await, 1.0);

    // Start: {A}. The fixture's secret, and a token without kid, are refused.
    let mut alice = gw.connect_token(&kid_token("alice", "a")).await;
    alice.join("chat:rotation").await;
    assert_eq!(
        Client::refused(&gw.ws_url(Some(&kid_token("bob", "b"))), &[]).await,
        401,
        "kid b is not in the set yet"
    );
    assert_eq!(
        Client::refused(&gw.ws_url(Some(&token("bob", 3600, &[], &[]))), &[]).await,
        401,
        "a token without kid"
    );

    // {A, B} + SIGHUP: B works, the kid-A connection lives on.
    write(&file, &jwks(&[("a", SECRET_A), ("b", SECRET_B)]));
    gw.sighup();
    await_reloads(&gw, "ok", 1.0).await;
    assert_eq!(gw.metric("broker_auth_keys").await, 2.0);
    let mut bob = gw.connect_token(&kid_token("bob", "b")).await;
    bob.ping().await;
    let mut carol = gw.connect_token(&kid_token("carol", "a")).await;
    carol.ping().await;
    alice.ping().await;

    // {B} + SIGHUP: A is refused for new connections and refreshes; the
    // connections admitted with A keep running.
    write(&file, &jwks(&[("b", SECRET_B)]));
    gw.sighup();
    await_reloads(&gw, "ok", 2.0).await;
    assert_eq!(gw.metric("broker_auth_keys").await, 1.0);
    assert_eq!(
        Client::refused(&gw.ws_url(Some(&kid_token("dave", "a"))), &[]).await,
        401,
        "kid a after its removal"
    );
    // Also in an `auth` frame.
    let mut late = Client::connect(&gw.ws_url(None)).await;
    late.send(&auth(&kid_token("dave", "a"))).await;
    assert_eq!(
        late.expect_close().await,
        broker::protocol::CloseCode::Token.code()
    );
    alice.ping().await;
    carol.ping().await;
    let (code, _) = alice.err(refresh(&kid_token("alice", "a"))).await;
    assert_eq!(code, "unauthorized", "refresh with the removed key");
    let ack = alice.ack(refresh(&kid_token("alice", "b"))).await;
    assert!(ack["exp"].as_i64().is_some(), "refresh ack: {ack}");
    // The connection still delivers.
    gw.publish("chat:rotation", "after", json!(1)).await;
    match alice.recv_msg().await {
        broker::protocol::ServerFrame::Msg { room, ev, .. } => {
            assert_eq!((room.as_str(), ev.as_str()), ("chat:rotation", "after"));
        }
        other => panic!("expected msg, got {other:?}"),
    }
    bob.ping().await;

    // A broken file + SIGHUP: counted, logged, the keys in use stay.
    write(&file, "{\"keys\": [");
    gw.sighup();
    await_reloads(&gw, "error", 1.0).await;
    assert_eq!(gw.metric("broker_auth_keys").await, 1.0);
    assert!(
        gw.log().contains("auth.jwks_file refused"),
        "the error is logged:\n{}",
        gw.log()
    );
    let mut erin = gw.connect_token(&kid_token("erin", "b")).await;
    erin.ping().await;
    assert_eq!(
        Client::refused(&gw.ws_url(Some(&kid_token("erin", "a"))), &[]).await,
        401
    );
    // And the file gone.
    std::fs::remove_file(&file).unwrap();
    gw.sighup();
    await_reloads(&gw, "error", 2.0).await;
    gw.connect_token(&kid_token("frank", "b"))
        .await
        .ping()
        .await;
    alice.ping().await;
}

#[tokio::test]
async fn sighup_without_a_jwks_file_does_not_stop_the_gateway() {
    let redis = RedisServer::start();
    let mut gw = Gateway::start(&redis, Options::default()).await;
    let mut c = gw.connect("alice").await;
    gw.sighup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gw.is_running(), "SIGHUP stopped the gateway:\n{}", gw.log());
    c.ping().await;
    assert!(gw.log().contains("nothing to reload"), "{}", gw.log());
    assert_eq!(
        gw.metric("broker_jwks_reloads_total{result=\"ok\"}").await,
        0.0
    );
}

#[tokio::test]
async fn a_bad_jwks_file_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let cases = [
        (None, "cannot read"),
        (Some("{\"keys\": []}"), "holds no keys"),
        (
            Some(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#),
            "has no kid",
        ),
    ];
    for (text, needle) in cases {
        match text {
            Some(text) => write(&file, text),
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[auth]\njwks_file = {:?}\n",
                file.display().to_string()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(gateway_path());
        cmd.arg("--config").arg(&config);
        for (key, _) in std::env::vars_os() {
            if key
                .to_string_lossy()
                .to_ascii_uppercase()
                .starts_with("BROKER_")
            {
                cmd.env_remove(&key);
            }
        }
        let out = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run broker-gateway");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "started with a bad file: {text}");
        assert!(
            text.contains("auth.jwks_file") && text.contains(needle),
            "{needle}: {text}"
        );
    }
}
