//! The registry survives `DEBUG RELOAD`, a restart with RDB, and a restart
//! with AOF (with and without a rewrite); `FLUSHALL` clears it.

use broker_tests::*;

fn server(aof: bool) -> RedisServer {
    let builder = RedisServer::builder().module_args(HISTORY_ARGS);
    if aof {
        builder.appendonly().start()
    } else {
        builder.start()
    }
}

/// After a load the room goes on where it was: next seq, same epoch, and a
/// client holding the last seq recovers.
fn assert_rooms_continue(con: &mut redis::Connection, before: &serde_json::Value) {
    let epoch = before["room chat:a"]["epoch"].as_str().unwrap().to_string();
    let seq = before["room chat:a"]["seq"].as_i64().unwrap();
    assert_eq!(publish_str(con, "chat:a", "ev", "after"), seq + 1);
    let j = join(
        con,
        "chat:a",
        "bob",
        "c9",
        "n1",
        &["SINCE", &seq.to_string(), &epoch],
    );
    assert_eq!(text(&j["epoch"]), epoch);
    assert_eq!(int(&j["recovered"]), 1);
    assert_eq!(array(&j["messages"]).len(), 1);
    // other:p remembers its own history settings (3 messages).
    publish_str(con, "other:p", "ev", "5");
    let h = map(&ok(con, &["BROKER.HISTORY", "other:p"]));
    assert_eq!(array(&h["messages"]).len(), 3);
}

#[test]
fn debug_reload_keeps_everything() {
    let server = server(false);
    let mut con = server.client();
    populate(&mut con);
    // Without lease deadlines: a load extends them from the load time.
    let before = snapshot(&mut con, false);
    ok(&mut con, &["DEBUG", "RELOAD"]);
    assert_eq!(snapshot(&mut con, false), before);
    assert_rooms_continue(&mut con, &before);
}

#[test]
fn rdb_restart_keeps_everything() {
    let mut server = server(false);
    let mut con = server.client();
    populate(&mut con);
    let before = snapshot(&mut con, false);
    ok(&mut con, &["SAVE"]);
    server.restart();
    let mut con = server.client();
    assert_eq!(snapshot(&mut con, false), before);
    assert_rooms_continue(&mut con, &before);
}

#[test]
fn a_load_extends_node_leases_from_the_load_time() {
    let mut server = server(false);
    let mut con = server.client();
    lease(&mut con, "n1", 3_000);
    open(&mut con, "alice", "c1", "n1");
    ok(&mut con, &["SAVE"]);
    let restart_at = now_ms();
    server.restart();
    let mut con = server.client();
    let nodes = array(&ok(&mut con, &["BROKER.NODES"]));
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let deadline = int(&map(&nodes[0])["lease_deadline_ms"]);
    assert!(
        deadline >= restart_at + 3_000,
        "deadline {deadline} should be at least one lease period after the load ({restart_at} + 3000)"
    );
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    assert_eq!(text(&p["status"]), "online");
}

#[test]
fn after_a_load_connections_not_registered_again_are_dropped() {
    // The file is older than the gateway's state: bob closed after the save.
    let mut server = server(false);
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    lease(&mut con, "n2", 60_000);
    open(&mut con, "alice", "a1", "n1");
    open(&mut con, "bob", "b1", "n1");
    open(&mut con, "carol", "c1", "n2");
    for (user, conn, node) in [
        ("alice", "a1", "n1"),
        ("bob", "b1", "n1"),
        ("carol", "c1", "n2"),
    ] {
        join(&mut con, "chat:r", user, conn, node, &["PRESENCE"]);
    }
    ok(&mut con, &["SAVE"]);
    server.restart();
    let mut con = server.client();
    let n2 = Subscriber::nodes(&server, &["n2"]);

    // n1's first heartbeat is answered "new": it registers what it still has.
    let (_, renewed) = lease_reply(&ok(&mut con, &["BROKER.NODE.LEASE", "n1", "60000"]));
    assert!(!renewed, "a loaded lease asks the node to register again");
    open(&mut con, "alice", "a1", "n1");
    join(&mut con, "chat:r", "alice", "a1", "n1", &["PRESENCE"]);
    assert!(
        n2.fence(&mut con).is_empty(),
        "re-registering changes nothing"
    );

    // Its next heartbeat drops bob, who was not registered again.
    let (_, renewed) = lease_reply(&ok(&mut con, &["BROKER.NODE.LEASE", "n1", "60000"]));
    assert!(renewed);
    let seen = n2.fence(&mut con);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let broker::wire::Envelope::Presence { frame, .. } = seen[0].envelope() else {
        panic!("expected presence: {:?}", seen[0].envelope());
    };
    let frame = frame_json(frame);
    assert_eq!(
        (frame["user"].as_str(), frame["action"].as_str()),
        (Some("bob"), Some("leave"))
    );
    assert_eq!(
        text(&map(&ok(&mut con, &["BROKER.PRESENCE", "bob"]))["status"]),
        "offline"
    );
    let members = map(&ok(&mut con, &["BROKER.ROOM.MEMBERS", "chat:r"]));
    assert_eq!(members.keys().collect::<Vec<_>>(), vec!["alice", "carol"]);
    let (_, renewed) = lease_reply(&ok(&mut con, &["BROKER.NODE.LEASE", "n1", "60000"]));
    assert!(renewed, "reconciled once");
}

#[test]
fn a_lost_registry_makes_the_next_lease_new() {
    // No SAVE, no AOF: the restart loses everything, and the gateway learns
    // it from its next heartbeat (renewed 0) and registers again.
    let mut server = server(false);
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    server.restart();
    let mut con = server.client();
    let (_, renewed) = lease_reply(&ok(&mut con, &["BROKER.NODE.LEASE", "n1", "60000"]));
    assert!(!renewed, "the lease was lost with the data");
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    assert_eq!(text(&p["status"]), "offline");
}

#[test]
fn aof_restart_keeps_everything() {
    let mut server = server(true);
    let mut con = server.client();
    populate(&mut con);
    let before = snapshot(&mut con, false);
    server.restart();
    let mut con = server.client();
    assert_eq!(snapshot(&mut con, false), before);
    assert_rooms_continue(&mut con, &before);
}

#[test]
fn aof_restart_after_a_rewrite_keeps_everything() {
    let mut server = server(true);
    let mut con = server.client();
    populate(&mut con);
    ok(&mut con, &["BGREWRITEAOF"]);
    eventually("the AOF rewrite finishes", || {
        let info = text(&ok(&mut con, &["INFO", "persistence"]));
        let done =
            info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0");
        if done {
            Ok(())
        } else {
            Err("still rewriting".to_string())
        }
    });
    let info = text(&ok(&mut con, &["INFO", "persistence"]));
    assert!(info.contains("aof_last_bgrewrite_status:ok"), "{info}");
    // More writes after the rewrite land in the new incremental file.
    publish_str(&mut con, "chat:a", "ev", "after rewrite");
    ok(&mut con, &["BROKER.LEAVE", "chat:a", "bob", "c3"]);
    open(&mut con, "dave", "c5", "n2");
    join(&mut con, "chat:b", "dave", "c5", "n2", &[]);
    let before = snapshot(&mut con, false);
    server.restart();
    let mut con = server.client();
    assert_eq!(snapshot(&mut con, false), before);
    assert_rooms_continue(&mut con, &before);
}

#[test]
fn aof_replay_delivers_nothing() {
    let mut server = server(true);
    let mut con = server.client();
    populate(&mut con);
    let deliveries_before: i64 = info_field(&mut con, "broker", "deliveries")
        .unwrap()
        .parse()
        .unwrap();
    assert!(deliveries_before > 0, "populate's publishes were delivered");
    server.restart();
    let mut con = server.client();
    // Counters restart at zero; loading the AOF must not publish again.
    assert_eq!(
        info_field(&mut con, "broker", "deliveries").as_deref(),
        Some("0")
    );
}

#[test]
fn flushall_leaves_the_registry_alone() {
    // The registry is in no database: FLUSHALL empties the keyspace (the
    // throttle key) and nothing else.
    let server = server(false);
    let mut con = server.client();
    populate(&mut con);
    let mut before = snapshot(&mut con, true);
    ok(&mut con, &["FLUSHALL"]);
    assert_eq!(int(&ok(&mut con, &["DBSIZE"])), 0);
    before["throttle key"] = serde_json::Value::Null;
    assert_eq!(snapshot(&mut con, true), before);
}
