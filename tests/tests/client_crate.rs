//! The Rust client crate (`broker-client`) against real gateways: requests
//! and answers, room streams, reconnect with recovery through a proxy that
//! cuts or moves the connection, token refresh and giving up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker_client::{Client, Error, ErrorCode, Event, Message, Options, RoomEvent, Subscription};
use broker_tests::gateway::{eventually_async, token, Gateway, Options as GwOptions};
use broker_tests::proxy::Proxy;
use broker_tests::{int, map, run, RedisServer, RoomCount};
use serde_json::json;
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(10);

fn url(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

async fn connect(gw_addr: std::net::SocketAddr, user: &str) -> Client {
    Client::connect(&url(gw_addr), Options::token(token(user, 3600, &[], &[])))
        .await
        .unwrap_or_else(|e| panic!("{user} could not connect: {e}"))
}

/// The next message of `sub`, within [`WAIT`].
async fn next_msg(sub: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, sub.next_msg())
        .await
        .unwrap_or_else(|_| panic!("no message in {} within {WAIT:?}", sub.room()))
        .unwrap_or_else(|| panic!("the subscription to {} ended", sub.room()))
}

/// The next event `pick` accepts, within [`WAIT`].
async fn next_event(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    pick: impl Fn(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if pick(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events ended before {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} event within {WAIT:?}"))
}

/// Waits for the next `Disconnected` event and returns its close code.
async fn disconnected(events: &mut broadcast::Receiver<Event>) -> u16 {
    match next_event(events, "disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    {
        Event::Disconnected { code, .. } => code,
        _ => unreachable!(),
    }
}

fn room_users(redis: &RedisServer, room: &str) -> i64 {
    int(&map(&run(&mut redis.client(), RoomCount::new(room)))["users"])
}

/// Waits until `BROKER.ROOM.COUNT room` has `users` users.
async fn wait_room_users(redis: &RedisServer, room: &str, users: i64, what: &str) {
    eventually_async(WAIT, what, || async {
        match room_users(redis, room) {
            n if n == users => Ok(()),
            n => Err(format!("{n} users")),
        }
    })
    .await;
}

#[tokio::test]
async fn requests_streams_and_errors() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, GwOptions::default()).await;
    let alice = connect(gw.addr, "alice").await;
    let bob = connect(gw.addr, "bob").await;
    let session = alice.session().expect("connected");
    assert_eq!(
        (session.user.as_str(), session.node.as_str()),
        ("alice", gw.node.as_str())
    );

    let room = "chat:crate";
    let mut a = alice.join(room).await.expect("alice joins");
    let mut b = bob.join(room).await.expect("bob joins");
    assert_eq!(a.join_ack().seq, 0);
    assert_eq!(
        alice.join(room).await.err(),
        Some(Error::AlreadyJoined(room.into())),
        "one subscription per room"
    );

    let seq = alice
        .publish(room, "say", &json!({"text": "hi"}))
        .await
        .expect("publish");
    assert_eq!(seq, 1);
    for sub in [&mut a, &mut b] {
        let m = next_msg(sub).await;
        assert_eq!((m.room.as_str(), m.ev.as_str(), m.seq), (room, "say", 1));
        assert_eq!(m.data, json!({"text": "hi"}));
        assert_eq!(m.from, Some(("alice".into(), session.conn.clone())));
    }
    // Bob's join reached alice as a presence event before the message.
    let presence: Vec<RoomEvent> = std::iter::from_fn(|| a.try_next()).collect();
    assert!(
        presence.is_empty(),
        "the stream was drained by next_msg: {presence:?}"
    );

    let seq = alice
        .publish_others(room, "say", &json!(2))
        .await
        .expect("publish others");
    assert_eq!(next_msg(&mut b).await.seq, seq);
    let p = alice.presence(room).await.expect("presence");
    assert_eq!(p.count, 2);
    let mut users: Vec<String> = p.users.iter().map(|(u, _)| u.clone()).collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    let h = bob.history(room, Some(0), None).await.expect("history");
    assert_eq!(h.seq, 2);
    assert_eq!(h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(h.epoch, a.join_ack().epoch);
    assert!(alice.ping().await.expect("ping") < WAIT);
    // Alice skipped her own `others` message: the next one she sees is 3.
    let seq = gw.publish(room, "server", json!(3)).await;
    assert_eq!(next_msg(&mut a).await.seq, seq);

    // Server errors carry the contract's codes.
    let e = alice.publish("chat:elsewhere", "x", &1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotMember), "{e}");
    let e = alice
        .join("vip:lounge")
        .await
        .err()
        .expect("vip is for role vip");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    let e = alice.join("bad room").await.err().expect("invalid name");
    assert_eq!(e.code(), Some(ErrorCode::InvalidRoom), "{e}");

    // Messages to the personal room come as events.
    let mut events = alice.events();
    let resp = gw
        .admin_post(
            "/api/users/alice/emit",
            &json!({"ev": "notice", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let Event::Message(m) = next_event(&mut events, "personal message", |e| {
        matches!(e, Event::Message(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        (m.room.as_str(), m.ev.as_str(), &m.data),
        ("user:alice", "notice", &json!({"n": 1}))
    );

    // Leaving, and dropping a subscription, leave the room.
    b.leave().await.expect("leave");
    assert_eq!(room_users(&redis, room), 1);
    drop(a);
    wait_room_users(&redis, room, 0, "the dropped subscription left the room").await;
}

#[tokio::test]
async fn reconnects_to_another_node_and_recovers_what_it_missed() {
    let redis = RedisServer::start();
    let gw1 = Gateway::start(&redis, GwOptions::default()).await;
    let gw2 = Gateway::start(&redis, GwOptions::default()).await;
    let proxy = Proxy::start(gw1.addr).await;
    let client = connect(proxy.addr, "carol").await;
    let mut events = client.events();
    let room = "feed:orders";
    let mut sub = client.join(room).await.expect("join");
    for n in 1..=3 {
        gw1.publish(room, "m", json!(n)).await;
        assert_eq!(next_msg(&mut sub).await.seq, n);
    }

    // The link drops and stays down while 4..=6 are published.
    proxy.refuse(true);
    proxy.cut();
    disconnected(&mut events).await;
    assert!(client.session().is_none());
    for n in 4..=6 {
        gw2.publish(room, "m", json!(n)).await;
    }
    next_event(&mut events, "a failed reconnect attempt", |e| {
        matches!(e, Event::Reconnecting { attempt: 2.., .. })
    })
    .await;
    // The balancer now sends it to the other node.
    proxy.retarget(gw2.addr);
    proxy.refuse(false);
    let Event::Connected(session) = next_event(&mut events, "reconnect", |e| {
        matches!(e, Event::Connected(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        session.node, gw2.node,
        "reconnected through the proxy to node 2"
    );
    let seq = gw1.publish(room, "m", json!(7)).await;
    assert_eq!(seq, 7);
    let mut got = Vec::new();
    for _ in 4..=7 {
        let m = next_msg(&mut sub).await;
        assert_eq!(m.data, json!(m.seq));
        got.push(m.seq);
    }
    assert_eq!(
        got,
        [4, 5, 6, 7],
        "missed messages replayed once, in order, then live ones"
    );
    assert_eq!(sub.position().map(|p| p.seq), Some(7));
    let rest: Vec<RoomEvent> = std::iter::from_fn(|| sub.try_next())
        .filter(|e| !matches!(e, RoomEvent::Presence { .. }))
        .collect();
    assert_eq!(rest, [], "nothing twice, no recovery failure");
    assert_eq!(sub.dropped(), 0);

    // A graceful restart (1012) of node 2: back to node 1 at once.
    proxy.retarget(gw1.addr);
    let mut gw2 = gw2;
    gw2.terminate().await;
    let code = disconnected(&mut events).await;
    assert_eq!(code, 1012);
    next_event(&mut events, "reconnect", |e| {
        matches!(e, Event::Connected(_))
    })
    .await;
    gw1.publish(room, "m", json!(8)).await;
    assert_eq!(next_msg(&mut sub).await.seq, 8);
}

#[tokio::test]
async fn reports_when_history_cannot_cover_the_gap() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, GwOptions::default()).await;
    let proxy = Proxy::start(gw.addr).await;
    let client = connect(proxy.addr, "dave").await;
    let mut events = client.events();
    let room = "feed:busy";
    let mut sub = client.join(room).await.expect("join");
    proxy.refuse(true);
    proxy.cut();
    disconnected(&mut events).await;
    // The feed namespace keeps 100 messages: 150 cannot all come back.
    for n in 1..=150 {
        gw.publish(room, "m", json!(n)).await;
    }
    proxy.refuse(false);
    next_event(
        &mut events,
        "recovery failure",
        |e| matches!(e, Event::RecoveryFailed { room: r } if r == room),
    )
    .await;
    let first = tokio::time::timeout(WAIT, async {
        loop {
            match sub.next().await {
                Some(RoomEvent::Presence { .. }) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("an event");
    assert_eq!(
        first,
        Some(RoomEvent::RecoveryFailed),
        "the failure is told before what could be replayed"
    );
    // Then what history still had (the newest 100 at most), in order, and
    // live messages after it.
    let seq = gw.publish(room, "m", json!(151)).await;
    let mut got = Vec::new();
    while got.last() != Some(&seq) {
        got.push(next_msg(&mut sub).await.seq);
    }
    let from = got[0];
    assert!(from > 50, "history keeps 100: replay starts at {from}");
    assert_eq!(got, (from..=151).collect::<Vec<_>>());
    assert_eq!(sub.position().map(|p| p.seq), Some(151));
}

#[tokio::test]
async fn token_provider_refreshes_and_static_tokens_give_up() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, GwOptions::default().leeway_s(1)).await;

    // `expiring` comes 30 s before exp: the provider is asked again.
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let options = Options::token_provider(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok(token("erin", if n == 0 { 32 } else { 3600 }, &[], &[])) }
    });
    let client = Client::connect(&url(gw.addr), options)
        .await
        .expect("connect");
    let mut events = client.events();
    let Event::Refreshed { exp } = next_event(&mut events, "refreshed", |e| {
        matches!(e, Event::Refreshed { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!(
        exp > client.session().expect("connected").exp + 3000,
        "exp {exp}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A fixed token that runs out: 4001, and the client stops.
    let frank = Client::connect(&url(gw.addr), Options::token(token("frank", 2, &[], &[])))
        .await
        .expect("connect");
    let mut events = frank.events();
    let code = disconnected(&mut events).await;
    assert_eq!(code, 4001);
    next_event(&mut events, "closed", |e| matches!(e, Event::Closed { .. })).await;
    assert_eq!(frank.ping().await.err(), Some(Error::Closed));

    // A provider that fails when `expiring` asks it: the token runs out,
    // 4001, a new token at the reconnect, the room joined again.
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let options = Options::token_provider(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => Ok(token("grace", 2, &[], &[])),
                1 => Err("the token service is down".to_owned()),
                _ => Ok(token("grace", 3600, &[], &[])),
            }
        }
    });
    let grace = Client::connect(&url(gw.addr), options)
        .await
        .expect("connect");
    let mut events = grace.events();
    let mut sub = grace.join("feed:g").await.expect("join");
    let code = disconnected(&mut events).await;
    assert_eq!(code, 4001);
    next_event(&mut events, "reconnect", |e| {
        matches!(e, Event::Connected(_))
    })
    .await;
    // The rejoin may still be in flight.
    wait_room_users(&redis, "feed:g", 1, "grace is a member again").await;
    let seq = gw.publish("feed:g", "m", json!(1)).await;
    assert_eq!(next_msg(&mut sub).await.seq, seq);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn refused_upgrades_and_close() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, GwOptions::default()).await;
    let e = Client::connect(&url(gw.addr), Options::token("not-a-jwt"))
        .await
        .err();
    assert_eq!(e, Some(Error::Refused(401)));
    let client = connect(gw.addr, "heidi").await;
    let _sub = client.join("feed:h").await.expect("join");
    assert_eq!(room_users(&redis, "feed:h"), 1);
    client.close().await;
    assert!(client.session().is_none());
    assert_eq!(client.ping().await.err(), Some(Error::Closed));
    wait_room_users(&redis, "feed:h", 0, "the closed connection left the room").await;
}
