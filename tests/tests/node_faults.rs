//! What Redis holds for a node stays exactly what the node serves through
//! the faults that break the bookkeeping: a gateway restarted under its
//! node id faster than its lease runs out, cleanup lost in a stalled link,
//! a `CONN.OPEN` that timed out on the gateway but ran in Redis after a
//! `CLIENT PAUSE`, and Redis killed and restarted from its AOF while
//! connections closed.

use std::time::{Duration, Instant};

use broker::protocol::ServerFrame;
use broker_tests::gateway::{
    auth, eventually_async, msg_fields, presence, token, Client as WsClient, Gateway, Options,
};
use broker_tests::proxy::Proxy;
use broker_tests::{map, ok, run, RedisServer, RoomMembers};
use serde_json::json;

/// The default `node.lease_ms`: the bounds below are in real lease periods.
const LEASE_MS: u64 = 5000;

/// The users in `room`, sorted.
fn members(redis: &RedisServer, room: &str) -> Vec<String> {
    map(&run(&mut redis.client(), RoomMembers::new(room)))
        .into_keys()
        .collect()
}

/// Waits up to `within` until `room` holds exactly `want` and each user in
/// `offline` has no connection; returns how long that took.
async fn exact_within(
    redis: &RedisServer,
    room: &str,
    want: &[&str],
    offline: &[&str],
    within: Duration,
) -> Duration {
    let started = Instant::now();
    eventually_async(within, "presence exact", || async {
        let users = members(redis, room);
        let ghosts: Vec<&str> = offline
            .iter()
            .copied()
            .filter(|u| !presence(redis, u).is_empty())
            .collect();
        if users == want && ghosts.is_empty() {
            Ok(())
        } else {
            Err(format!("members {users:?}, still online {ghosts:?}"))
        }
    })
    .await;
    started.elapsed()
}

/// Waits (up to one lease) until the reconciliation closed `ghost`, a
/// connection Redis held that `gw` no longer serves, while alice, who
/// stayed, is still `room`'s only member; returns how long it took.
async fn ghost_closed_within_a_lease(
    redis: &RedisServer,
    gw: &Gateway,
    room: &str,
    ghost: &str,
) -> Duration {
    let within = Duration::from_millis(LEASE_MS);
    let took = exact_within(redis, room, &["alice"], &[ghost], within).await;
    assert_eq!(presence(redis, "alice").len(), 1, "alice still counted");
    let closes = gw
        .metric("broker_reconcile_fixes_total{kind=\"close\"}")
        .await;
    assert!(closes >= 1.0, "the reconciliation closed {ghost}");
    took
}

#[tokio::test]
async fn a_gateway_restarted_under_its_node_id_ends_its_old_connections() {
    let redis = RedisServer::start();
    // A lease far longer than the restart: only the new incarnation, not
    // the lease running out, can end the old process's connections.
    let lease_ms = 20_000;
    let mut gw1 = Gateway::start(&redis, Options::default().lease_ms(lease_ms)).await;
    let gw2 = Gateway::start(&redis, Options::default().lease_ms(lease_ms)).await;
    let room = "chat:twin";
    let mut bob = gw2.connect("bob").await;
    bob.join(room).await;
    let mut alice = gw1.connect("alice").await;
    alice.join(room).await;
    assert_eq!(
        bob.recv_presence(room).await,
        ("alice".into(), "join".into())
    );
    let old_conn = presence(&redis, "alice")[0].conn.clone();

    // SIGKILL and start again at once, as `Restart=always` does.
    gw1.respawn();
    let restarted = Instant::now();
    let frame = bob
        .recv_matching(
            Duration::from_millis(3 * lease_ms),
            "alice's leave",
            |f| matches!(f, ServerFrame::Presence { user, .. } if user == "alice"),
        )
        .await;
    let ServerFrame::Presence { action, .. } = frame else {
        unreachable!()
    };
    assert_eq!(action, "leave");
    let announced = restarted.elapsed();
    assert!(
        announced < Duration::from_millis(lease_ms),
        "left after {announced:?}, not by the lease running out"
    );
    assert!(presence(&redis, "alice").is_empty(), "alice is offline");
    assert_eq!(members(&redis, room), ["bob"]);

    // The restarted process serves under the same node id, with new ids.
    eventually_async(
        Duration::from_secs(15),
        "the restarted gateway is ready",
        || async {
            gw1.is_ready()
                .await
                .then_some(())
                .ok_or("not ready".to_string())
        },
    )
    .await;
    let mut again = gw1.connect("alice").await;
    again.join(room).await;
    let now = presence(&redis, "alice");
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].node, gw1.node);
    assert_ne!(now[0].conn, old_conn, "a new incarnation, a new id");
    println!("restart under the same node id: leave announced after {announced:?}");
}

#[tokio::test]
async fn a_close_lost_in_a_stalled_link_leaves_no_ghost_after_one_lease() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into()).await;
    let url = format!("redis://{}", proxy.addr);
    let gw = Gateway::start(
        &redis,
        Options::default().lease_ms(LEASE_MS).redis_url(&url),
    )
    .await;
    let room = "chat:stall";
    let mut alice = gw.connect("alice").await;
    alice.join(room).await;
    let mut bob = gw.connect("bob").await;
    bob.join(room).await;

    // 3.5 s of silence, longer than the gateway's 2 s command timeout:
    // bob's CONN.CLOSE waits in the stalled link, times out, and the link
    // is then cut, so it never reaches Redis.
    proxy.stall(true);
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    proxy.cut();
    proxy.stall(false);
    let restored = Instant::now();
    assert_eq!(
        members(&redis, room),
        ["alice", "bob"],
        "bob's close was lost"
    );

    let took = ghost_closed_within_a_lease(&redis, &gw, room, "bob").await;
    // alice still gets the room's messages.
    let seq = gw.publish(room, "m", json!("after")).await;
    let frame = alice
        .recv_matching(Duration::from_secs(5), "the message", |f| {
            matches!(f, ServerFrame::Msg { .. })
        })
        .await;
    assert_eq!(msg_fields(&frame).3, seq);
    println!(
        "ghost after a stalled link: gone {took:?} after the link came back ({:?} after)",
        restored.elapsed()
    );
}

#[tokio::test]
async fn an_open_that_timed_out_but_ran_after_a_pause_leaves_no_ghost_after_one_lease() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().lease_ms(LEASE_MS)).await;
    let room = "chat:pause";
    let mut alice = gw.connect("alice").await;
    alice.join(room).await;
    // carol upgrades now and authenticates during the pause.
    let mut carol = WsClient::connect(&gw.ws_url(None)).await;

    ok(&mut redis.client(), &["CLIENT", "PAUSE", "3500", "ALL"]);
    let paused = Instant::now();
    carol.send(&auth(&token("carol", 3600, &[], &[]))).await;
    // Her CONN.OPEN waits in Redis and times out here: no welcome.
    let first = carol.recv_within(Duration::from_secs(3)).await;
    assert!(
        !matches!(first, Some(ServerFrame::Welcome { .. })),
        "no welcome while Redis is paused: {first:?}"
    );
    drop(carol);
    tokio::time::sleep(Duration::from_millis(3600).saturating_sub(paused.elapsed())).await;
    let unpaused = Instant::now();

    let took = ghost_closed_within_a_lease(&redis, &gw, room, "carol").await;
    println!(
        "ghost open after a pause: none {took:?} after the pause ({:?} after)",
        unpaused.elapsed()
    );
}

#[tokio::test]
async fn redis_restarted_from_its_aof_gets_exact_presence_and_keeps_it() {
    let mut redis = RedisServer::builder().appendonly().start();
    let lease_ms = 900;
    let gw = Gateway::start(&redis, Options::default().lease_ms(lease_ms)).await;
    let room = "chat:aof";
    let mut alice = gw.connect("alice").await;
    alice.join(room).await;
    let mut bob = gw.connect("bob").await;
    bob.join(room).await;
    let mut carol = gw.connect("carol").await;
    carol.join(room).await;
    // Leases renewed after the joins are in the AOF too.
    tokio::time::sleep(Duration::from_millis(2 * lease_ms)).await;

    // Redis dies; bob leaves while it is down (his close fails), and the
    // outage outlasts the leases the AOF holds.
    redis.kill();
    bob.close().await;
    tokio::time::sleep(Duration::from_millis(3 * lease_ms)).await;
    redis.start_again();

    // The AOF replays bob's open and the old lease deadlines; once loading
    // has ended the module reconciles, the node registers what it serves,
    // and bob is dropped.
    exact_within(
        &redis,
        room,
        &["alice", "carol"],
        &["bob"],
        Duration::from_secs(15),
    )
    .await;
    // And it stays exact: no replayed deadline drops the live node later.
    tokio::time::sleep(Duration::from_millis(4 * lease_ms)).await;
    assert_eq!(members(&redis, room), ["alice", "carol"]);
    assert_eq!(presence(&redis, "alice").len(), 1);
    assert_eq!(presence(&redis, "carol").len(), 1);
    assert!(presence(&redis, "bob").is_empty());
    let seq = gw.publish(room, "m", json!("after")).await;
    for client in [&mut alice, &mut carol] {
        let frame = client
            .recv_matching(
                Duration::from_secs(5),
                "the message after the restart",
                |f| matches!(f, ServerFrame::Msg { .. }),
            )
            .await;
        assert_eq!(msg_fields(&frame).3, seq);
    }
}
