//! Who gets in: tokens over the upgrade and in `auth` frames, origins, the
//! per-user connection limit, token expiry and refresh. docs/PROTOCOL.md §2, §9; docs/CONFIG.md.

use std::time::{Duration, Instant};

use broker::protocol::{CloseCode, ServerFrame};
use broker_tests::gateway::{
    auth, now_s, refresh, token, token_with, unsigned_token, Client, Gateway, Options,
};
use broker_tests::RedisServer;
use serde_json::json;

#[tokio::test]
async fn auth_frame_after_an_upgrade_without_token() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut c = Client::connect(&gw.ws_url(None)).await;
    let t = token("alice", 600, &[], &[]);
    let ack = c.ack(auth(&t)).await;
    assert_eq!(ack["user"], "alice", "auth ack: {ack}");
    let exp = ack["exp"].as_i64().expect("auth ack has exp");
    assert!(
        (exp - (now_s() + 600)).abs() <= 2,
        "auth ack exp is the token's: {exp}"
    );
    // The connection is now alice's: `welcome` (sent after the ack) and
    // requests work.
    if c.conn.is_empty() {
        c.welcome().await;
    }
    assert_eq!(c.user, "alice");
    c.ping().await;
    c.join("chat:a").await;
}

#[tokio::test]
async fn no_auth_frame_within_5_s_closes_with_4001() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut c = Client::connect(&gw.ws_url(None)).await;
    let started = Instant::now();
    let code = c.expect_close_within(Duration::from_secs(8)).await;
    assert_eq!(code, CloseCode::Token.code());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500),
        "closed after {waited:?}, before the 5 s allowed"
    );
}

#[tokio::test]
async fn bad_auth_frame_gets_unauthorized_and_4001() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut c = Client::connect(&gw.ws_url(None)).await;
    let forged = token_with(
        &json!({"sub": "alice", "exp": now_s() + 600}),
        "wrong-secret",
    );
    c.send(&auth(&forged)).await;
    assert_eq!(c.expect_close().await, CloseCode::Token.code());
    // The gateway queues `err unauthorized` before the close, but its
    // writer drops queued frames on any close but 1012, so the err may
    // never arrive. When it does, it must be this one.
    for frame in c.take_queued() {
        match frame {
            ServerFrame::Err { code, .. } => assert_eq!(code, "unauthorized"),
            other => panic!("unexpected frame before the close: {other:?}"),
        }
    }
}

#[tokio::test]
async fn rejected_tokens_are_http_401_before_the_upgrade() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let exp = now_s() + 600;
    let cases = [
        (
            "bad signature",
            token_with(&json!({"sub": "alice", "exp": exp}), "wrong-secret"),
        ),
        // Well past the 30 s leeway.
        ("expired", token("alice", -120, &[], &[])),
        (
            "alg none",
            unsigned_token(&json!({"sub": "alice", "exp": exp})),
        ),
        ("no sub", token_with(&json!({"exp": exp}), "test-secret")),
        (
            "no exp",
            token_with(&json!({"sub": "alice"}), "test-secret"),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, t) in &cases {
        let status = Client::refused(&gw.ws_url(Some(t)), &[]).await;
        assert_eq!(status, 401, "{what} token in the query");
        let bearer = format!("Bearer {t}");
        let status = Client::refused(&gw.ws_url(None), &[("Authorization", &bearer)]).await;
        assert_eq!(status, 401, "{what} token in the header");
    }
    // Nothing was registered for those attempts.
    assert!(broker_tests::gateway::presence(&redis, "alice").is_empty());
}

#[tokio::test]
async fn token_in_header_or_query_is_accepted() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let t = token("alice", 600, &[], &[]);

    let bearer = format!("Bearer {t}");
    let mut by_header =
        Client::connect_with_header(&gw.ws_url(None), "Authorization", &bearer).await;
    by_header.welcome().await;
    assert_eq!(by_header.user, "alice");
    assert_eq!(by_header.node, gw.node);
    assert!(!by_header.conn.is_empty());
    by_header.ping().await;

    let mut by_query = Client::connect(&gw.ws_url(Some(&t))).await;
    by_query.welcome().await;
    assert_eq!(by_query.user, "alice");
    assert_ne!(
        by_query.conn, by_header.conn,
        "each connection has its own id"
    );
    assert_eq!(
        by_query.exp as i64,
        now_s() + 600,
        "welcome exp is the token's"
    );
    by_query.ping().await;
}

#[tokio::test]
async fn origins_outside_the_list_are_http_403() {
    let redis = RedisServer::start();
    let gw = Gateway::start(
        &redis,
        Options::default().origins(&["https://good.example"]),
    )
    .await;
    let url = gw.ws_url(Some(&token("alice", 600, &[], &[])));
    let status = Client::refused(&url, &[("Origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    let mut good = Client::connect_with_header(&url, "Origin", "https://good.example").await;
    good.welcome().await;
    good.ping().await;
    // The gateway's own origin is always allowed (the demo page).
    let own = format!("http://{}", gw.addr);
    let mut own = Client::connect_with_header(&url, "Origin", &own).await;
    own.welcome().await;
    // A rejected origin is rejected before the token is even looked at.
    let status = Client::refused(
        &gw.ws_url(Some("garbage")),
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn sixth_connection_of_a_user_is_http_429() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        conns.push(gw.connect("alice").await);
    }
    let url = gw.ws_url(Some(&token("alice", 600, &[], &[])));
    assert_eq!(
        Client::refused(&url, &[]).await,
        429,
        "the 6th connection of alice"
    );
    // Over an `auth` frame the same limit closes with 4029 after the upgrade.
    let mut late = Client::connect(&gw.ws_url(None)).await;
    late.send_request(auth(&token("alice", 600, &[], &[])))
        .await;
    assert_eq!(late.expect_close().await, CloseCode::ConnLimit.code());
    // Other users are not affected.
    gw.connect("bob").await.ping().await;
    // Once one of alice's connections is gone, she may connect again.
    conns.pop().expect("a connection").close().await;
    broker_tests::gateway::eventually_async(
        Duration::from_secs(10),
        "alice may connect again",
        || async {
            match Client::try_connect(&url, &[]).await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{e:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn expiring_refresh_and_expiry() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().leeway_s(1)).await;

    // `expiring` comes 30 s ahead of `exp`: about 2 s after connecting.
    let mut c = gw.connect_token(&token("alice", 32, &[], &[])).await;
    let started = Instant::now();
    let frame = c
        .recv_matching(Duration::from_secs(6), "expiring", |f| {
            matches!(f, ServerFrame::Expiring { .. })
        })
        .await;
    let ServerFrame::Expiring { in_ms } = frame else {
        unreachable!()
    };
    assert!(
        (25_000..=30_500).contains(&in_ms),
        "expiring in_ms is the time left, about 30 s: {in_ms} (after {:?})",
        started.elapsed()
    );
    let fresh = token("alice", 3600, &[], &[]);
    let ack = c.ack(refresh(&fresh)).await;
    assert_eq!(
        ack["exp"].as_i64(),
        Some(now_s() + 3600),
        "refresh ack: {ack}"
    );
    // A refresh must be for the same user, and valid.
    let (code, _) = c.err(refresh(&token("mallory", 3600, &[], &[]))).await;
    assert_eq!(code, "forbidden");
    let (code, _) = c.err(refresh(&token("alice", -60, &[], &[]))).await;
    assert_eq!(code, "unauthorized");
    let forged = token_with(
        &json!({"sub": "alice", "exp": now_s() + 3600}),
        "wrong-secret",
    );
    let (code, _) = c.err(refresh(&forged)).await;
    assert_eq!(code, "unauthorized");
    // Past the old token's exp + leeway the refreshed connection lives on.
    c.ping().await;

    // A token that runs out (exp in 2 s, leeway 1 s) closes with 4001.
    let mut short = gw.connect_token(&token("bob", 2, &[], &[])).await;
    let started = Instant::now();
    let code = short.expect_close_within(Duration::from_secs(6)).await;
    assert_eq!(
        code,
        CloseCode::Token.code(),
        "an expired token closes the connection"
    );
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
}
