//! Connections: `CONN.OPEN`, `CONN.CLOSE`, `PRESENCE`, `ONLINE`, and the
//! per-user and per-IP limits under concurrency.

use std::sync::{Arc, Barrier};
use std::thread;

use broker_tests::*;
use redis::Value;

fn online(con: &mut redis::Connection) -> (i64, i64) {
    let m = map(&ok(con, &["BROKER.ONLINE"]));
    (int(&m["users"]), int(&m["connections"]))
}

#[test]
fn open_shows_in_presence_and_online() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    assert_eq!(online(&mut con), (0, 0));

    let before = now_ms();
    let reply = ok(
        &mut con,
        &["BROKER.CONN.OPEN", "alice", "c1", "n1", "1.2.3.4"],
    );
    let after = now_ms();
    assert_eq!(reply, Value::Okay);

    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
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

    open(&mut con, "alice", "c2", "n1");
    open(&mut con, "bob", "c3", "n1");
    assert_eq!(online(&mut con), (2, 3));
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    assert_eq!(int(&p["connections"]), 2);
}

#[test]
fn presence_is_a_map_in_resp3() {
    let server = RedisServer::start();
    let mut con = server.client_resp3();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:a", "alice", "c1", "n1", &[]);
    join(&mut con, "chat:b", "alice", "c1", "n1", &[]);
    let reply = ok(&mut con, &["BROKER.PRESENCE", "alice"]);
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
    assert!(matches!(ok(&mut con, &["BROKER.ONLINE"]), Value::Map(_)));
}

#[test]
fn open_at_sets_connected_at() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    ok(
        &mut con,
        &[
            "BROKER.CONN.OPEN",
            "alice",
            "c1",
            "n1",
            "::1",
            "AT",
            "1700000000000",
        ],
    );
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    let c = map(&array(&p["conns"])[0]);
    assert_eq!(int(&c["connected_at"]), 1_700_000_000_000);
    assert_eq!(text(&c["ip"]), "::1");
}

#[test]
fn unknown_user_is_offline() {
    let server = RedisServer::start();
    let mut con = server.client();
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "nobody"]));
    assert_eq!(text(&p["status"]), "offline");
    assert_eq!(int(&p["connections"]), 0);
    assert!(array(&p["conns"]).is_empty());
}

#[test]
fn close_removes_the_connection_and_its_rooms() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    join(&mut con, "chat:a", "alice", "c1", "n1", &[]);
    join(&mut con, "chat:b", "alice", "c1", "n1", &[]);
    join(&mut con, "chat:b", "alice", "c2", "n1", &[]);

    assert_eq!(int(&ok(&mut con, &["BROKER.CONN.CLOSE", "alice", "c1"])), 2);
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    assert_eq!(text(&p["status"]), "online");
    assert_eq!(int(&p["connections"]), 1);
    let a = map(&ok(&mut con, &["BROKER.ROOM.COUNT", "chat:a"]));
    assert_eq!((int(&a["users"]), int(&a["connections"])), (0, 0));
    let b = map(&ok(&mut con, &["BROKER.ROOM.COUNT", "chat:b"]));
    assert_eq!((int(&b["users"]), int(&b["connections"])), (1, 1));

    // Closing again, or an unknown connection, leaves nothing.
    assert_eq!(int(&ok(&mut con, &["BROKER.CONN.CLOSE", "alice", "c1"])), 0);
    assert_eq!(int(&ok(&mut con, &["BROKER.CONN.CLOSE", "alice", "zz"])), 0);

    assert_eq!(int(&ok(&mut con, &["BROKER.CONN.CLOSE", "alice", "c2"])), 1);
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    assert_eq!(text(&p["status"]), "offline");
    assert_eq!(online(&mut con), (0, 0));
}

#[test]
fn close_announces_leave_for_the_last_connection_only() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    lease(&mut con, "n2", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    join(&mut con, "chat:a", "alice", "c1", "n1", &["PRESENCE"]);
    join(&mut con, "chat:a", "alice", "c2", "n1", &["PRESENCE"]);
    open(&mut con, "bob", "c3", "n2");
    join(&mut con, "chat:a", "bob", "c3", "n2", &["PRESENCE"]);
    let n2 = Subscriber::nodes(&server, &["n2"]);

    ok(&mut con, &["BROKER.CONN.CLOSE", "alice", "c1"]);
    assert!(
        n2.fence(&mut con).is_empty(),
        "alice still has c2 in the room"
    );
    ok(&mut con, &["BROKER.CONN.CLOSE", "alice", "c2"]);
    let seen = n2.fence(&mut con);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let broker::wire::Envelope::Presence { frame, .. } = seen[0].envelope() else {
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
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    lease(&mut con, "n2", 60_000);
    open(&mut con, "alice", "c1", "n1");
    let e = err(
        &mut con,
        &["BROKER.CONN.OPEN", "bob", "c1", "n1", "1.2.3.4"],
    );
    assert!(e.starts_with("CONFLICT"), "{e}");
    let e = err(
        &mut con,
        &["BROKER.CONN.OPEN", "alice", "c1", "n2", "1.2.3.4"],
    );
    assert!(e.starts_with("CONFLICT"), "{e}");
    let e = err(&mut con, &["BROKER.JOIN", "chat:a", "bob", "c1", "n1"]);
    assert!(e.starts_with("CONFLICT"), "{e}");
    assert_eq!(online(&mut con), (1, 1));
}

#[test]
fn user_limit_counts_existing_connections() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    for i in 0..2 {
        let c = format!("c{i}");
        ok(
            &mut con,
            &[
                "BROKER.CONN.OPEN",
                "alice",
                &c,
                "n1",
                "1.1.1.1",
                "MAXUSER",
                "2",
            ],
        );
    }
    let e = err(
        &mut con,
        &[
            "BROKER.CONN.OPEN",
            "alice",
            "c9",
            "n1",
            "1.1.1.1",
            "MAXUSER",
            "2",
        ],
    );
    assert_eq!(e, "LIMIT user");
    // A close frees a slot.
    ok(&mut con, &["BROKER.CONN.CLOSE", "alice", "c0"]);
    ok(
        &mut con,
        &[
            "BROKER.CONN.OPEN",
            "alice",
            "c9",
            "n1",
            "1.1.1.1",
            "MAXUSER",
            "2",
        ],
    );
    // The limit is per call: without MAXUSER there is none.
    ok(
        &mut con,
        &["BROKER.CONN.OPEN", "alice", "c10", "n1", "1.1.1.1"],
    );
}

#[test]
fn ip_limit_counts_connections_of_every_user() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    for (user, c) in [("a", "c1"), ("b", "c2")] {
        ok(
            &mut con,
            &["BROKER.CONN.OPEN", user, c, "n1", "10.0.0.1", "MAXIP", "2"],
        );
    }
    let e = err(
        &mut con,
        &[
            "BROKER.CONN.OPEN",
            "c",
            "c3",
            "n1",
            "10.0.0.1",
            "MAXIP",
            "2",
        ],
    );
    assert_eq!(e, "LIMIT ip");
    // Another address is not affected.
    ok(
        &mut con,
        &[
            "BROKER.CONN.OPEN",
            "c",
            "c3",
            "n1",
            "10.0.0.2",
            "MAXIP",
            "2",
        ],
    );
    ok(&mut con, &["BROKER.CONN.CLOSE", "a", "c1"]);
    ok(
        &mut con,
        &[
            "BROKER.CONN.OPEN",
            "d",
            "c4",
            "n1",
            "10.0.0.1",
            "MAXIP",
            "2",
        ],
    );
}

/// 50 clients race to open connections; the check and the insert are one
/// atomic step, so exactly `limit` of them win.
fn race(
    server: &RedisServer,
    limit: usize,
    args: impl Fn(usize) -> Vec<String> + Sync,
) -> Vec<String> {
    const RACERS: usize = 50;
    let barrier = Arc::new(Barrier::new(RACERS));
    let args = &args;
    let outcomes: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let barrier = barrier.clone();
                let mut con = server.client();
                s.spawn(move || {
                    let argv = args(i);
                    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                    barrier.wait();
                    match call(&mut con, &argv) {
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
    let server = RedisServer::start();
    lease(&mut server.client(), "n1", 60_000);
    let outcomes = race(&server, 5, |i| {
        let (c, ip) = (format!("c{i}"), format!("10.0.0.{i}"));
        ["BROKER.CONN.OPEN", "alice", &c, "n1", &ip, "MAXUSER", "5"]
            .map(String::from)
            .to_vec()
    });
    assert!(
        outcomes.iter().all(|o| o == "OK" || o == "LIMIT user"),
        "{outcomes:?}"
    );
    let mut con = server.client();
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    assert_eq!(int(&p["connections"]), 5);
    assert_eq!(online(&mut con), (1, 5));
}

#[test]
fn ip_limit_holds_under_concurrency() {
    let server = RedisServer::start();
    lease(&mut server.client(), "n1", 60_000);
    let outcomes = race(&server, 5, |i| {
        let (u, c) = (format!("u{i}"), format!("c{i}"));
        ["BROKER.CONN.OPEN", &u, &c, "n1", "192.0.2.1", "MAXIP", "5"]
            .map(String::from)
            .to_vec()
    });
    assert!(
        outcomes.iter().all(|o| o == "OK" || o == "LIMIT ip"),
        "{outcomes:?}"
    );
    assert_eq!(online(&mut server.client()), (5, 5));
}
