//! Presence grace (`node.presence_grace_ms`, `GRACE ms` on the module's
//! closing commands): a user whose connection went away lingers in its rooms
//! for the grace; coming back within it makes no leave/join pair, staying
//! away sends the leave when it runs out.

use std::time::{Duration, Instant};

use broker::envelope::Envelope;
use broker::protocol::ServerFrame;
use broker_tests::gateway::{Gateway, Options};
use broker_tests::*;

/// The `(user, action)` of a presence envelope.
fn presence_of(message: &Message) -> (String, String) {
    let Envelope::Presence { frame, .. } = message.envelope() else {
        panic!("expected presence: {:?}", message.envelope());
    };
    let frame = frame_json(frame);
    (
        frame["user"].as_str().unwrap_or_default().to_string(),
        frame["action"].as_str().unwrap_or_default().to_string(),
    )
}

fn members(con: &mut redis::Connection, room: &str) -> Vec<(String, i64)> {
    map(&run(con, RoomMembers::new(room)))
        .into_iter()
        .map(|(user, conns)| (user, int(&conns)))
        .collect()
}

#[test]
fn a_grace_defers_the_leave_and_a_return_cancels_it() {
    let master = RedisServer::start();
    let replica = RedisServer::builder().replica_of(&master).start();
    wait_for_sync(&replica);
    let mut con = master.client();
    lease(&mut con, "n1", LEASE_MS);
    lease(&mut con, "n2", LEASE_MS);
    open(&mut con, "alice", "a1", "n1");
    run(
        &mut con,
        Join::new("chat:r", "alice", "a1", "n1").with_presence(),
    );
    open(&mut con, "bob", "b1", "n2");
    run(
        &mut con,
        Join::new("chat:r", "bob", "b1", "n2").with_presence(),
    );
    let n2 = Subscriber::nodes(&master, &["n2"]);

    // n1 stops with a grace: alice lingers, nobody hears of it.
    assert_eq!(int(&run(&mut con, NodeRelease::new("n1").grace(60_000))), 1);
    let seen = n2.fence(&mut con);
    assert!(seen.is_empty(), "no leave within the grace: {seen:?}");
    assert_eq!(
        members(&mut con, "chat:r"),
        vec![("alice".into(), 0), ("bob".into(), 1)]
    );
    assert_eq!(
        text(&map(&run(&mut con, Presence::new("alice")))["status"]),
        "offline",
        "lingering is room presence only"
    );

    // She comes back on n2 within the grace: no join either.
    open(&mut con, "alice", "a2", "n2");
    run(
        &mut con,
        Join::new("chat:r", "alice", "a2", "n2").with_presence(),
    );
    let seen = n2.fence(&mut con);
    assert!(seen.is_empty(), "no join after a return: {seen:?}");
    assert_eq!(
        members(&mut con, "chat:r"),
        vec![("alice".into(), 1), ("bob".into(), 1)]
    );

    // She goes away again with a short grace and stays away: the leave goes
    // out when the grace runs out (the sweep runs every 250 ms).
    let closed = Instant::now();
    assert_eq!(
        int(&run(&mut con, ConnClose::new("alice", "a2").grace(400))),
        1
    );
    let leave = n2.expect("a leave after the grace");
    let waited = closed.elapsed();
    assert_eq!(presence_of(&leave), ("alice".into(), "leave".into()));
    assert!(
        waited >= Duration::from_millis(400),
        "the leave came after {waited:?}"
    );
    assert_eq!(members(&mut con, "chat:r"), vec![("bob".into(), 1)]);

    // The replica followed every step, the timer's leave included.
    let mut rcon = replica.client();
    eventually("the replica drops the lingering user", || {
        let m = members(&mut rcon, "chat:r");
        (m == vec![("bob".to_string(), 1)])
            .then_some(())
            .ok_or(format!("{m:?}"))
    });

    // A leave request is never deferred; bad graces are refused.
    open(&mut con, "carol", "c1", "n2");
    run(
        &mut con,
        Join::new("chat:r", "carol", "c1", "n2").with_presence(),
    );
    assert_eq!(presence_of(&n2.expect("carol joins")).1, "join");
    run(&mut con, Leave::new("chat:r", "carol", "c1"));
    assert_eq!(presence_of(&n2.expect("carol leaves")).1, "leave");
    let e = run_err(&mut con, ConnClose::new("bob", "b1").grace(99_999_999));
    assert!(e.starts_with("ERR invalid GRACE ms"), "{e}");
    // Raw: an unknown option is the point.
    let e = err(&mut con, &["BROKER.CONN.CLOSE", "bob", "b1", "LATER"]);
    assert!(e.starts_with("ERR syntax error"), "{e}");
}

#[test]
fn lingering_survives_a_reload_and_can_be_ended_by_hand() {
    let mut w = World::start();
    w.nodes(&["n1", "n2"]);
    let alice = Conn::new("alice", "a1", "n1");
    w.join_presence(&alice, "chat:r");
    w.join_presence(&Conn::new("bob", "b1", "n2"), "chat:r");
    w.ok(alice.leave("chat:r").grace(60_000));
    ok(&mut w.con, &["DEBUG", "RELOAD"]);
    assert_eq!(
        members(&mut w.con, "chat:r"),
        vec![("alice".into(), 0), ("bob".into(), 1)]
    );
    let n2 = w.listen(&["n2"]);
    assert_eq!(w.int(ApplyLeave::new("chat:r", "alice")), 1);
    assert_eq!(
        presence_of(&n2.expect("the leave")),
        ("alice".into(), "leave".into())
    );
    assert_eq!(
        w.int(ApplyLeave::new("chat:r", "alice")),
        0,
        "nothing left to end"
    );
}

/// Presence frames about `user` that `client` receives within `within`.
async fn presence_about(
    client: &mut broker_tests::gateway::Client,
    user: &str,
    within: Duration,
) -> Vec<String> {
    client
        .drain(within)
        .await
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Presence {
                user: u, action, ..
            } if u == user => Some(action),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_gateway_restart_within_the_grace_makes_no_leave_join_pair() {
    let redis = RedisServer::start();
    let opts = Options::default().presence_grace_ms(3000);
    let mut gw1 = Gateway::start(&redis, opts.clone()).await;
    let gw2 = Gateway::start(&redis, opts).await;
    let mut bob = gw2.connect("bob").await;
    bob.join("chat:deploy").await;
    let mut alice = gw1.connect("alice").await;
    alice.join("chat:deploy").await;
    assert_eq!(
        bob.recv_presence("chat:deploy").await,
        ("alice".into(), "join".into())
    );

    // A deploy: gw1 stops (1012 to its clients), alice reconnects to gw2.
    gw1.terminate().await;
    assert_eq!(alice.expect_close().await, 1012);
    let mut alice = gw2.connect("alice").await;
    alice.join("chat:deploy").await;
    assert_eq!(
        presence_about(&mut bob, "alice", Duration::from_millis(3500)).await,
        Vec::<String>::new(),
        "bob sees neither leave nor join"
    );

    // A client that closes on purpose (1000) leaves at once.
    let mut carol = gw2.connect("carol").await;
    carol.join("chat:deploy").await;
    assert_eq!(
        bob.recv_presence("chat:deploy").await,
        ("carol".into(), "join".into())
    );
    carol.close().await;
    let (who, action) = bob.recv_presence("chat:deploy").await;
    assert_eq!((who.as_str(), action.as_str()), ("carol", "leave"));

    // Alice's link drops and she stays away: the leave comes once the
    // grace ran out.
    let gone = Instant::now();
    drop(alice);
    let frame = bob
        .recv_matching(
            Duration::from_secs(8),
            "alice's leave",
            |f| matches!(f, ServerFrame::Presence { user, .. } if user == "alice"),
        )
        .await;
    let ServerFrame::Presence { action, .. } = frame else {
        unreachable!()
    };
    assert_eq!(action, "leave");
    assert!(
        gone.elapsed() >= Duration::from_millis(2500),
        "leave after {:?}, before the grace",
        gone.elapsed()
    );
}
