//! Rooms: `JOIN`, `LEAVE`, `ROOM.MEMBERS`, `ROOM.COUNT`, presence events,
//! `MAXROOMS` and personal rooms.

use broker::envelope::Envelope;
use broker_tests::*;
use redis::Value;

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
    let mut w = World::start();
    w.node("n1");
    let alice1 = w.open("alice", "c1", "n1");
    let alice2 = w.open("alice", "c2", "n1");
    let bob = w.open("bob", "c3", "n1");

    let j = w.join(&alice1, "chat:a");
    assert_eq!(int(&j["first"]), 1);
    assert_eq!(int(&j["seq"]), 0);
    let epoch = text(&j["epoch"]);
    assert!(!epoch.is_empty(), "a new room gets an epoch");
    assert_eq!(int(&j["recovered"]), 0);
    assert!(array(&j["messages"]).is_empty());

    let j = w.join(&alice2, "chat:a");
    assert_eq!(int(&j["first"]), 0, "alice's second connection");
    assert_eq!(text(&j["epoch"]), epoch, "same room, same epoch");
    let j = w.join(&bob, "chat:a");
    assert_eq!(int(&j["first"]), 1);

    assert_eq!(w.count("chat:a"), (2, 3));
    assert_eq!(
        w.members("chat:a"),
        vec![("alice".into(), 2), ("bob".into(), 1)]
    );

    // Joining twice changes nothing.
    w.join(&bob, "chat:a");
    assert_eq!(w.count("chat:a"), (2, 3));

    // The seq in the reply follows publishes.
    w.publish("chat:a", "x");
    w.publish("chat:a", "y");
    let carol = w.open("carol", "c4", "n1");
    let j = w.join(&carol, "chat:a");
    assert_eq!(int(&j["seq"]), 2);
}

#[test]
fn room_replies_are_maps_in_resp3() {
    let mut w = World::start().resp3();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    let reply = w.ok(alice.join("chat:a"));
    assert!(matches!(reply, Value::Map(_)), "{reply:?}");
    let reply = w.ok(RoomMembers::new("chat:a"));
    assert!(matches!(reply, Value::Map(_)), "{reply:?}");
    assert_eq!(canon(&reply), serde_json::json!({"alice": 1}));
    let reply = w.ok(RoomCount::new("chat:a"));
    assert_eq!(
        canon(&reply),
        serde_json::json!({"users": 1, "connections": 1})
    );
}

#[test]
fn unknown_room_is_empty() {
    let mut w = World::start();
    assert_eq!(w.count("chat:nothing"), (0, 0));
    assert!(w.members("chat:nothing").is_empty());
}

#[test]
fn leave_reports_membership() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:a");
    assert_eq!(w.leave(&alice, "chat:a"), 1);
    assert_eq!(w.leave(&alice, "chat:a"), 0);
    assert_eq!(w.leave(&alice, "chat:zz"), 0);
    // Another user's connection id is not a member for this user.
    w.join(&alice, "chat:a");
    assert_eq!(w.int(Leave::new("chat:a", "bob", "c1")), 0);
    assert_eq!(w.count("chat:a"), (1, 1));
    let p = w.presence("alice");
    let rooms: Vec<String> = array(&map(&array(&p["conns"])[0])["rooms"])
        .iter()
        .map(text)
        .collect();
    assert_eq!(rooms, vec!["chat:a".to_string()]);
}

#[test]
fn presence_events_for_first_join_and_last_leave_only() {
    let mut w = World::start();
    w.nodes(&["n1", "n2"]);
    let bob = w.open("bob", "b1", "n2");
    w.join_presence(&bob, "chat:p");
    let alice1 = w.open("alice", "c1", "n1");
    let alice2 = w.open("alice", "c2", "n1");
    let sub = w.listen(&["n1", "n2"]);

    // alice's first connection: a join, on every node with members (n1 now
    // included, so alice's own connection hears it too).
    w.join_presence(&alice1, "chat:p");
    let seen = w.fence(&sub);
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
    w.join_presence(&alice2, "chat:p");
    assert!(
        w.fence(&sub).is_empty(),
        "second connection joined silently"
    );
    // One of two leaves: no event.
    w.leave(&alice1, "chat:p");
    assert!(w.fence(&sub).is_empty(), "alice still has c2 in the room");
    // The last one: a leave, to the nodes still holding members.
    w.leave(&alice2, "chat:p");
    let seen = w.fence(&sub);
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
    let mut w = World::start();
    w.node("n1");
    let bob = w.open("bob", "b1", "n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&bob, "chat:quiet");
    let sub = w.listen(&["n1"]);
    w.join(&alice, "chat:quiet");
    w.leave(&alice, "chat:quiet");
    assert!(w.fence(&sub).is_empty());
}

#[test]
fn maxrooms_limits_rooms_per_connection() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.map(alice.join("chat:a").max_rooms(2));
    w.map(alice.join("chat:b").max_rooms(2));
    let e = w.err(alice.join("chat:c").max_rooms(2));
    assert!(e.starts_with("TOOMANYROOMS"), "{e}");
    assert_eq!(w.count("chat:c"), (0, 0));
    // Re-joining a room it is already in is not a new room.
    w.map(alice.join("chat:a").max_rooms(2));
    w.leave(&alice, "chat:a");
    w.map(alice.join("chat:c").max_rooms(2));
}

#[test]
fn personal_rooms_belong_to_their_user() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    let bob = w.open("bob", "c2", "n1");
    w.join(&alice, "user:alice");
    let e = w.err(bob.join("user:alice"));
    assert!(e.starts_with("FORBIDDEN"), "{e}");
    assert_eq!(w.members("user:alice"), vec![("alice".into(), 1)]);
}
