//! Rooms: `JOIN`, `LEAVE`, `ROOM.MEMBERS`, `ROOM.COUNT`, presence events,
//! `MAXROOMS` and personal rooms.

use broker::wire::Envelope;
use broker_tests::*;
use redis::Value;

fn count(con: &mut redis::Connection, room: &str) -> (i64, i64) {
    let m = map(&ok(con, &["BROKER.ROOM.COUNT", room]));
    (int(&m["users"]), int(&m["connections"]))
}

fn members(con: &mut redis::Connection, room: &str) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = map(&ok(con, &["BROKER.ROOM.MEMBERS", room]))
        .iter()
        .map(|(k, v)| (k.clone(), int(v)))
        .collect();
    v.sort();
    v
}

/// (user, action) of a presence envelope.
fn presence_of(m: &Message) -> (String, String, String) {
    let Envelope::Presence { room, frame, .. } = m.envelope() else {
        panic!("expected a presence envelope, got {:?}", m.envelope());
    };
    let f = frame_json(frame);
    assert_eq!(f["t"], "presence", "{f}");
    assert_eq!(f["room"], room, "{f}");
    (
        room.to_string(),
        f["user"].as_str().unwrap_or_default().to_string(),
        f["action"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn join_reply_and_counts() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    open(&mut con, "bob", "c3", "n1");

    let j = join(&mut con, "chat:a", "alice", "c1", "n1", &[]);
    assert_eq!(int(&j["first"]), 1);
    assert_eq!(int(&j["seq"]), 0);
    let epoch = text(&j["epoch"]);
    assert!(!epoch.is_empty(), "a new room gets an epoch");
    assert_eq!(int(&j["recovered"]), 0);
    assert!(array(&j["messages"]).is_empty());

    let j = join(&mut con, "chat:a", "alice", "c2", "n1", &[]);
    assert_eq!(int(&j["first"]), 0, "alice's second connection");
    assert_eq!(text(&j["epoch"]), epoch, "same room, same epoch");
    let j = join(&mut con, "chat:a", "bob", "c3", "n1", &[]);
    assert_eq!(int(&j["first"]), 1);

    assert_eq!(count(&mut con, "chat:a"), (2, 3));
    assert_eq!(
        members(&mut con, "chat:a"),
        vec![("alice".into(), 2), ("bob".into(), 1)]
    );

    // Joining twice changes nothing.
    join(&mut con, "chat:a", "bob", "c3", "n1", &[]);
    assert_eq!(count(&mut con, "chat:a"), (2, 3));

    // The seq in the reply follows publishes.
    publish_str(&mut con, "chat:a", "ev", "x");
    publish_str(&mut con, "chat:a", "ev", "y");
    open(&mut con, "carol", "c4", "n1");
    let j = join(&mut con, "chat:a", "carol", "c4", "n1", &[]);
    assert_eq!(int(&j["seq"]), 2);
}

#[test]
fn room_replies_are_maps_in_resp3() {
    let server = RedisServer::start();
    let mut con = server.client_resp3();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    let reply = ok(&mut con, &["BROKER.JOIN", "chat:a", "alice", "c1", "n1"]);
    assert!(matches!(reply, Value::Map(_)), "{reply:?}");
    let reply = ok(&mut con, &["BROKER.ROOM.MEMBERS", "chat:a"]);
    assert!(matches!(reply, Value::Map(_)), "{reply:?}");
    assert_eq!(canon(&reply), serde_json::json!({"alice": 1}));
    let reply = ok(&mut con, &["BROKER.ROOM.COUNT", "chat:a"]);
    assert_eq!(
        canon(&reply),
        serde_json::json!({"users": 1, "connections": 1})
    );
}

#[test]
fn unknown_room_is_empty() {
    let server = RedisServer::start();
    let mut con = server.client();
    assert_eq!(count(&mut con, "chat:nothing"), (0, 0));
    assert!(members(&mut con, "chat:nothing").is_empty());
}

#[test]
fn leave_reports_membership() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:a", "alice", "c1", "n1", &[]);
    assert_eq!(
        int(&ok(&mut con, &["BROKER.LEAVE", "chat:a", "alice", "c1"])),
        1
    );
    assert_eq!(
        int(&ok(&mut con, &["BROKER.LEAVE", "chat:a", "alice", "c1"])),
        0
    );
    assert_eq!(
        int(&ok(&mut con, &["BROKER.LEAVE", "chat:zz", "alice", "c1"])),
        0
    );
    // Another user's connection id is not a member for this user.
    join(&mut con, "chat:a", "alice", "c1", "n1", &[]);
    assert_eq!(
        int(&ok(&mut con, &["BROKER.LEAVE", "chat:a", "bob", "c1"])),
        0
    );
    assert_eq!(count(&mut con, "chat:a"), (1, 1));
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    let rooms: Vec<String> = array(&map(&array(&p["conns"])[0])["rooms"])
        .iter()
        .map(text)
        .collect();
    assert_eq!(rooms, vec!["chat:a".to_string()]);
}

#[test]
fn presence_events_for_first_join_and_last_leave_only() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    lease(&mut con, "n2", 60_000);
    open(&mut con, "bob", "b1", "n2");
    join(&mut con, "chat:p", "bob", "b1", "n2", &["PRESENCE"]);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    let sub = Subscriber::nodes(&server, &["n1", "n2"]);

    // alice's first connection: a join, on every node with members (n1 now
    // included, so alice's own connection hears it too).
    join(&mut con, "chat:p", "alice", "c1", "n1", &["PRESENCE"]);
    let seen = sub.fence(&mut con);
    let mut got: Vec<(String, (String, String, String))> = seen
        .iter()
        .map(|m| (m.node().to_string(), presence_of(m)))
        .collect();
    got.sort();
    let ev = (
        "chat:p".to_string(),
        "alice".to_string(),
        "join".to_string(),
    );
    assert_eq!(got, vec![("n1".into(), ev.clone()), ("n2".into(), ev)]);

    // Her second connection: no event.
    join(&mut con, "chat:p", "alice", "c2", "n1", &["PRESENCE"]);
    assert!(
        sub.fence(&mut con).is_empty(),
        "second connection joined silently"
    );
    // One of two leaves: no event.
    ok(&mut con, &["BROKER.LEAVE", "chat:p", "alice", "c1"]);
    assert!(
        sub.fence(&mut con).is_empty(),
        "alice still has c2 in the room"
    );
    // The last one: a leave, to the nodes still holding members.
    ok(&mut con, &["BROKER.LEAVE", "chat:p", "alice", "c2"]);
    let seen = sub.fence(&mut con);
    let got: Vec<(String, (String, String, String))> = seen
        .iter()
        .map(|m| (m.node().to_string(), presence_of(m)))
        .collect();
    assert_eq!(
        got,
        vec![(
            "n2".into(),
            ("chat:p".into(), "alice".into(), "leave".into())
        )]
    );
}

#[test]
fn no_presence_events_without_presence() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "bob", "b1", "n1");
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:quiet", "bob", "b1", "n1", &[]);
    let sub = Subscriber::nodes(&server, &["n1"]);
    join(&mut con, "chat:quiet", "alice", "c1", "n1", &[]);
    ok(&mut con, &["BROKER.LEAVE", "chat:quiet", "alice", "c1"]);
    assert!(sub.fence(&mut con).is_empty());
}

#[test]
fn maxrooms_limits_rooms_per_connection() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:a", "alice", "c1", "n1", &["MAXROOMS", "2"]);
    join(&mut con, "chat:b", "alice", "c1", "n1", &["MAXROOMS", "2"]);
    let e = err(
        &mut con,
        &[
            "BROKER.JOIN",
            "chat:c",
            "alice",
            "c1",
            "n1",
            "MAXROOMS",
            "2",
        ],
    );
    assert!(e.starts_with("TOOMANYROOMS"), "{e}");
    assert_eq!(count(&mut con, "chat:c"), (0, 0));
    // Re-joining a room it is already in is not a new room.
    join(&mut con, "chat:a", "alice", "c1", "n1", &["MAXROOMS", "2"]);
    ok(&mut con, &["BROKER.LEAVE", "chat:a", "alice", "c1"]);
    join(&mut con, "chat:c", "alice", "c1", "n1", &["MAXROOMS", "2"]);
}

#[test]
fn personal_rooms_belong_to_their_user() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "bob", "c2", "n1");
    join(&mut con, "user:alice", "alice", "c1", "n1", &[]);
    let e = err(&mut con, &["BROKER.JOIN", "user:alice", "bob", "c2", "n1"]);
    assert!(e.starts_with("FORBIDDEN"), "{e}");
    assert_eq!(members(&mut con, "user:alice"), vec![("alice".into(), 1)]);
}
