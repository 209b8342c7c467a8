//! The registry survives `DEBUG RELOAD`, a restart with RDB, and a restart
//! with AOF (with and without a rewrite); `FLUSHALL` clears it.

use broker_tests::*;

/// A world for [`populate`] ([`HISTORY_ARGS`]), with `--appendonly yes`
/// when `aof`.
fn persistent_world(aof: bool) -> World {
    let builder = RedisServer::builder().module_args(HISTORY_ARGS);
    World::with(if aof { builder.appendonly() } else { builder })
}

/// After a load the room goes on where it was: next seq, same epoch, and a
/// client holding the last seq recovers.
fn assert_rooms_continue(con: &mut redis::Connection, before: &serde_json::Value) {
    let epoch = before["room chat:a"]["epoch"].as_str().unwrap().to_string();
    let seq = before["room chat:a"]["seq"].as_i64().unwrap();
    assert_eq!(publish_str(con, "chat:a", "ev", "after"), seq + 1);
    let j = map(&run(
        con,
        Join::new("chat:a", "bob", "c9", "n1").since(seq as u64, &epoch),
    ));
    assert_eq!(text(&j["epoch"]), epoch);
    assert_eq!(int(&j["recovered"]), 1);
    assert_eq!(array(&j["messages"]).len(), 1);
    // other:p remembers its own history settings (3 messages).
    publish_str(con, "other:p", "ev", "5");
    let h = map(&run(con, History::new("other:p")));
    assert_eq!(array(&h["messages"]).len(), 3);
}

#[test]
fn debug_reload_keeps_everything() {
    let mut w = persistent_world(false);
    populate(&mut w.con);
    // Without lease deadlines: a load extends them from the load time.
    let before = snapshot(&mut w.con, false);
    ok(&mut w.con, &["DEBUG", "RELOAD"]);
    assert_eq!(snapshot(&mut w.con, false), before);
    assert_rooms_continue(&mut w.con, &before);
}

#[test]
fn rdb_restart_keeps_everything() {
    let mut w = persistent_world(false);
    populate(&mut w.con);
    let before = snapshot(&mut w.con, false);
    ok(&mut w.con, &["SAVE"]);
    w.restart();
    assert_eq!(snapshot(&mut w.con, false), before);
    assert_rooms_continue(&mut w.con, &before);
}

#[test]
fn a_load_extends_node_leases_from_the_load_time() {
    let mut w = persistent_world(false);
    lease(&mut w.con, "n1", 3_000);
    w.open("alice", "c1", "n1");
    ok(&mut w.con, &["SAVE"]);
    let restart_at = now_ms();
    w.restart();
    let nodes = array(&w.ok(Nodes));
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let deadline = int(&map(&nodes[0])["lease_deadline_ms"]);
    assert!(
        deadline >= restart_at + 3_000,
        "deadline {deadline} should be at least one lease period after the load ({restart_at} + 3000)"
    );
    let p = w.presence("alice");
    assert_eq!(text(&p["status"]), "online");
}

#[test]
fn after_a_load_connections_not_registered_again_are_dropped() {
    // The file is older than the gateway's state: bob closed after the save.
    let mut w = persistent_world(false);
    w.nodes(&["n1", "n2"]);
    w.open("alice", "a1", "n1");
    w.open("bob", "b1", "n1");
    w.open("carol", "c1", "n2");
    for (user, conn, node) in [
        ("alice", "a1", "n1"),
        ("bob", "b1", "n1"),
        ("carol", "c1", "n2"),
    ] {
        w.join_presence(&Conn::new(user, conn, node), "chat:r");
    }
    ok(&mut w.con, &["SAVE"]);
    w.restart();
    let n2 = w.listen(&["n2"]);

    // n1's first heartbeat is answered "new": it registers what it still has.
    let (_, renewed) = lease_reply(&w.ok(NodeLease::new("n1", LEASE_MS)));
    assert!(!renewed, "a loaded lease asks the node to register again");
    let alice = w.open("alice", "a1", "n1");
    w.join_presence(&alice, "chat:r");
    assert!(w.fence(&n2).is_empty(), "re-registering changes nothing");

    // Its next heartbeat drops bob, who was not registered again.
    let (_, renewed) = lease_reply(&w.ok(NodeLease::new("n1", LEASE_MS)));
    assert!(renewed);
    let seen = w.fence(&n2);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let broker::envelope::Envelope::Presence { frame, .. } = seen[0].envelope() else {
        panic!("expected presence: {:?}", seen[0].envelope());
    };
    let frame = frame_json(frame);
    assert_eq!(
        (frame["user"].as_str(), frame["action"].as_str()),
        (Some("bob"), Some("leave"))
    );
    assert_eq!(w.status("bob"), "offline");
    let members = w.map(RoomMembers::new("chat:r"));
    assert_eq!(members.keys().collect::<Vec<_>>(), vec!["alice", "carol"]);
    let (_, renewed) = lease_reply(&w.ok(NodeLease::new("n1", LEASE_MS)));
    assert!(renewed, "reconciled once");
}

#[test]
fn a_lost_registry_makes_the_next_lease_new() {
    // No SAVE, no AOF: the restart loses everything, and the gateway learns
    // it from its next heartbeat (renewed 0) and registers again.
    let mut w = persistent_world(false);
    w.node("n1");
    w.open("alice", "c1", "n1");
    w.restart();
    let (_, renewed) = lease_reply(&w.ok(NodeLease::new("n1", LEASE_MS)));
    assert!(!renewed, "the lease was lost with the data");
    let p = w.presence("alice");
    assert_eq!(text(&p["status"]), "offline");
}

#[test]
fn aof_restart_keeps_everything() {
    let mut w = persistent_world(true);
    populate(&mut w.con);
    let before = snapshot(&mut w.con, false);
    w.restart();
    assert_eq!(snapshot(&mut w.con, false), before);
    assert_rooms_continue(&mut w.con, &before);
}

#[test]
fn aof_restart_after_a_rewrite_keeps_everything() {
    let mut w = persistent_world(true);
    populate(&mut w.con);
    ok(&mut w.con, &["BGREWRITEAOF"]);
    eventually("the AOF rewrite finishes", || {
        let info = text(&ok(&mut w.con, &["INFO", "persistence"]));
        let done =
            info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0");
        if done {
            Ok(())
        } else {
            Err("still rewriting".to_string())
        }
    });
    let info = text(&ok(&mut w.con, &["INFO", "persistence"]));
    assert!(info.contains("aof_last_bgrewrite_status:ok"), "{info}");
    // More writes after the rewrite land in the new incremental file.
    w.publish("chat:a", "after rewrite");
    w.ok(Leave::new("chat:a", "bob", "c3"));
    let dave = w.open("dave", "c5", "n2");
    w.join(&dave, "chat:b");
    let before = snapshot(&mut w.con, false);
    w.restart();
    assert_eq!(snapshot(&mut w.con, false), before);
    assert_rooms_continue(&mut w.con, &before);
}

#[test]
fn aof_replay_delivers_nothing() {
    let mut w = persistent_world(true);
    populate(&mut w.con);
    let deliveries_before: i64 = w.info("deliveries").unwrap().parse().unwrap();
    assert!(deliveries_before > 0, "populate's publishes were delivered");
    w.restart();
    // Counters restart at zero; loading the AOF must not publish again.
    assert_eq!(w.info("deliveries").as_deref(), Some("0"));
}

#[test]
fn flushall_drops_the_rooms_users_and_addresses_with_their_keys() {
    // Rooms, users and addresses are keys: FLUSHALL empties them like the
    // throttle key. The node leases are no keys and stay.
    let mut w = persistent_world(false);
    populate(&mut w.con);
    assert!(!broker_keys(&mut w.con).is_empty());
    ok(&mut w.con, &["FLUSHALL"]);
    assert_eq!(int(&ok(&mut w.con, &["DBSIZE"])), 0);
    let online = map(&run(&mut w.con, Online));
    assert_eq!((int(&online["users"]), int(&online["connections"])), (0, 0));
    assert_eq!(w.seq("chat:a"), 0);
    assert!(array(&run(&mut w.con, NodeConns::new("n1"))).is_empty());
    assert_eq!(array(&run(&mut w.con, Nodes)).len(), 2, "the leases stay");
}
