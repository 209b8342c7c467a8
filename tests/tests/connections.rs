//! Connections: `CONN.OPEN`, `CONN.CLOSE`, `PRESENCE`, `ONLINE`, and the
//! per-user and per-IP limits under concurrency.

use std::sync::{Arc, Barrier};
use std::thread;

use broker_tests::*;
use redis::Value;

#[test]
fn open_shows_in_presence_and_online() {
    let mut w = World::start();
    w.node("n1");
    assert_eq!(w.online(), (0, 0));

    let before = now_ms();
    let reply = w.ok(ConnOpen::new("alice", "c1", "n1", "1.2.3.4"));
    let after = now_ms();
    assert_eq!(reply, Value::Okay);

    let p = w.presence("alice");
    assert_eq!(text(&p["status"]), "online");
    assert_eq!(int(&p["connections"]), 1);
    let conns = array(&p["conns"]);
    assert_eq!(conns.len(), 1);
    let c = map(&conns[0]);
    assert_eq!(text(&c["conn"]), "c1");
    assert_eq!(text(&c["node"]), "n1");
    assert_eq!(text(&c["ip"]), "1.2.3.4");
    let at = int(&c["connected_at"]);
    assert!(
        (before..=after).contains(&at),
        "connected_at {at} not in {before}..{after}"
    );
    assert!(array(&c["rooms"]).is_empty());

    w.open("alice", "c2", "n1");
    w.open("bob", "c3", "n1");
    assert_eq!(w.online(), (2, 3));
    assert_eq!(int(&w.presence("alice")["connections"]), 2);
}

#[test]
fn presence_is_a_map_in_resp3() {
    let mut w = World::start().resp3();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:a");
    w.join(&alice, "chat:b");
    let reply = w.ok(Presence::new("alice"));
    let json = canon(&reply);
    assert!(matches!(reply, Value::Map(_)), "{reply:?}");
    assert_eq!(json["status"], "online", "{json}");
    assert_eq!(json["connections"], 1, "{json}");
    let conn = &json["conns"][0];
    assert_eq!(conn["conn"], "c1", "{json}");
    let mut rooms: Vec<&str> = conn["rooms"]
        .as_array()
        .expect("rooms array")
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    rooms.sort_unstable();
    assert_eq!(rooms, ["chat:a", "chat:b"]);
    // Also a map for ONLINE.
    assert!(matches!(w.ok(Online), Value::Map(_)));
}

#[test]
fn open_at_sets_connected_at() {
    let mut w = World::start();
    w.node("n1");
    w.ok(ConnOpen::new("alice", "c1", "n1", "::1").at(1_700_000_000_000));
    let p = w.presence("alice");
    let c = map(&array(&p["conns"])[0]);
    assert_eq!(int(&c["connected_at"]), 1_700_000_000_000);
    assert_eq!(text(&c["ip"]), "::1");
}

#[test]
fn unknown_user_is_offline() {
    let mut w = World::start();
    let p = w.presence("nobody");
    assert_eq!(text(&p["status"]), "offline");
    assert_eq!(int(&p["connections"]), 0);
    assert!(array(&p["conns"]).is_empty());
}

#[test]
fn close_removes_the_connection_and_its_rooms() {
    let mut w = World::start();
    w.node("n1");
    let c1 = w.open("alice", "c1", "n1");
    let c2 = w.open("alice", "c2", "n1");
    w.join(&c1, "chat:a");
    w.join(&c1, "chat:b");
    w.join(&c2, "chat:b");

    assert_eq!(w.close(&c1), 2);
    let p = w.presence("alice");
    assert_eq!(text(&p["status"]), "online");
    assert_eq!(int(&p["connections"]), 1);
    assert_eq!(w.count("chat:a"), (0, 0));
    assert_eq!(w.count("chat:b"), (1, 1));

    // Closing again, or an unknown connection, leaves nothing.
    assert_eq!(w.close(&c1), 0);
    assert_eq!(w.int(ConnClose::new("alice", "zz")), 0);

    assert_eq!(w.close(&c2), 1);
    assert_eq!(w.status("alice"), "offline");
    assert_eq!(w.online(), (0, 0));
}

#[test]
fn close_announces_leave_for_the_last_connection_only() {
    let mut w = World::start();
    w.nodes(&["n1", "n2"]);
    let c1 = w.open("alice", "c1", "n1");
    let c2 = w.open("alice", "c2", "n1");
    w.join_presence(&c1, "chat:a");
    w.join_presence(&c2, "chat:a");
    let bob = w.open("bob", "c3", "n2");
    w.join_presence(&bob, "chat:a");
    let n2 = w.listen(&["n2"]);

    w.close(&c1);
    assert!(w.fence(&n2).is_empty(), "alice still has c2 in the room");
    w.close(&c2);
    let seen = w.fence(&n2);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let broker::envelope::Envelope::Presence { frame, .. } = seen[0].envelope() else {
        panic!("{:?}", seen[0].envelope());
    };
    let f = frame_json(frame);
    assert_eq!(
        (f["user"].as_str(), f["action"].as_str()),
        (Some("alice"), Some("leave"))
    );
}

#[test]
fn a_connection_id_belongs_to_one_user_and_node() {
    let mut w = World::start();
    w.nodes(&["n1", "n2"]);
    w.open("alice", "c1", "n1");
    let e = w.err(ConnOpen::new("bob", "c1", "n1", "1.2.3.4"));
    assert!(e.starts_with("CONFLICT"), "{e}");
    let e = w.err(ConnOpen::new("alice", "c1", "n2", "1.2.3.4"));
    assert!(e.starts_with("CONFLICT"), "{e}");
    let e = w.err(Join::new("chat:a", "bob", "c1", "n1"));
    assert!(e.starts_with("CONFLICT"), "{e}");
    assert_eq!(w.online(), (1, 1));
}

#[test]
fn user_limit_counts_existing_connections() {
    let mut w = World::start();
    w.node("n1");
    let open = |c: &str| ConnOpen::new("alice", c, "n1", "1.1.1.1").max_user(2);
    for i in 0..2 {
        w.ok(open(&format!("c{i}")));
    }
    assert_eq!(w.err(open("c9")), "LIMIT user");
    // A close frees a slot.
    w.ok(ConnClose::new("alice", "c0"));
    w.ok(open("c9"));
    // The limit is per call: without MAXUSER there is none.
    w.ok(ConnOpen::new("alice", "c10", "n1", "1.1.1.1"));
}

#[test]
fn ip_limit_counts_connections_of_every_user() {
    let mut w = World::start();
    w.node("n1");
    let open = |user: &str, c: &str, ip: &str| ConnOpen::new(user, c, "n1", ip).max_ip(2);
    for (user, c) in [("a", "c1"), ("b", "c2")] {
        w.ok(open(user, c, "10.0.0.1"));
    }
    assert_eq!(w.err(open("c", "c3", "10.0.0.1")), "LIMIT ip");
    // Another address is not affected.
    w.ok(open("c", "c3", "10.0.0.2"));
    w.ok(ConnClose::new("a", "c1"));
    w.ok(open("d", "c4", "10.0.0.1"));
}

/// 50 clients race to open connections; the check and the insert are one
/// atomic step, so exactly `limit` of them win.
fn race(
    server: &RedisServer,
    limit: usize,
    command: impl Fn(usize) -> ConnOpen + Sync,
) -> Vec<String> {
    const RACERS: usize = 50;
    let barrier = Arc::new(Barrier::new(RACERS));
    let command = &command;
    let outcomes: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let barrier = barrier.clone();
                let mut con = server.client();
                s.spawn(move || {
                    let open = command(i);
                    barrier.wait();
                    match send(&mut con, &open) {
                        Ok(v) => text(&v),
                        Err(e) => err_line(&e),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let oks = outcomes.iter().filter(|o| *o == "OK").count();
    assert_eq!(oks, limit, "{outcomes:?}");
    outcomes
}

#[test]
fn user_limit_holds_under_concurrency() {
    let mut w = World::start();
    w.node("n1");
    let outcomes = race(&w.server, 5, |i| {
        ConnOpen::new("alice", &format!("c{i}"), "n1", &format!("10.0.0.{i}")).max_user(5)
    });
    assert!(
        outcomes.iter().all(|o| o == "OK" || o == "LIMIT user"),
        "{outcomes:?}"
    );
    assert_eq!(int(&w.presence("alice")["connections"]), 5);
    assert_eq!(w.online(), (1, 5));
}

#[test]
fn ip_limit_holds_under_concurrency() {
    let mut w = World::start();
    w.node("n1");
    let outcomes = race(&w.server, 5, |i| {
        ConnOpen::new(&format!("u{i}"), &format!("c{i}"), "n1", "192.0.2.1").max_ip(5)
    });
    assert!(
        outcomes.iter().all(|o| o == "OK" || o == "LIMIT ip"),
        "{outcomes:?}"
    );
    assert_eq!(w.online(), (5, 5));
}
