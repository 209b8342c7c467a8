//! Redis going away and coming back: clients stay connected, requests get
//! `err unavailable`, and the node recovers on its own. docs/PROTOCOL.md §5.

use std::time::{Duration, Instant};

use broker::protocol::ServerFrame;
use broker_tests::gateway::{eventually_async, http_get, presence, publish, Gateway, Options};
use broker_tests::RedisServer;
use serde_json::json;

#[tokio::test]
async fn redis_outage_is_unavailable_and_recovers() {
    let mut redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().lease_ms(1000)).await;
    let mut alice = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    alice.join("feed:o").await;
    bob.join("feed:o").await;
    assert_eq!(alice.publish("feed:o", "m", json!(1)).await, 1);

    redis.stop();
    let (code, _) = alice.err(publish("feed:o", "m", &json!(2))).await;
    assert_eq!(code, "unavailable", "a publish while Redis is down");
    // The WebSocket stays open and answers what needs no Redis.
    alice.ping().await;
    bob.ping().await;
    assert_eq!(
        http_get(gw.addr, "/healthz", None).await.status,
        200,
        "the process is alive"
    );
    eventually_async(
        Duration::from_secs(5),
        "/readyz reports not ready",
        || async {
            match http_get(gw.addr, "/readyz", None).await.status {
                503 => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;

    // Same port, empty data set: the node takes a new lease, registers its
    // connections and rooms again, and publishing works again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let seq = loop {
        match alice.request(publish("feed:o", "m", &json!(3))).await {
            ServerFrame::Ack { data, .. } => break data["seq"].as_u64().unwrap_or(0),
            other if Instant::now() > deadline => {
                panic!("publishing does not work again: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(seq >= 1, "seq after the restart: {seq}");
    // Bob is still a member and gets it.
    let frame = bob
        .recv_matching(
            Duration::from_secs(5),
            "the message after the restart",
            |f| matches!(f, ServerFrame::Msg { data, .. } if *data == json!(3)),
        )
        .await;
    assert!(matches!(frame, ServerFrame::Msg { .. }));
    // The module knows both connections again.
    assert_eq!(presence(&redis, "alice").len(), 1);
    assert_eq!(presence(&redis, "bob").len(), 1);
    eventually_async(Duration::from_secs(5), "/readyz is ready again", || async {
        match http_get(gw.addr, "/readyz", None).await.status {
            200 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;
}
