//! The broker's state as keys (`docs/COMMANDS.md`, "Keys"): every room,
//! user and address with state is a key of type `broker-rg` that `TYPE`,
//! `SCAN`, `MEMORY USAGE`, `DEBUG DIGEST-VALUE`, `DUMP`/`RESTORE`,
//! `MIGRATE`, `DEL` and an AOF rewrite see like any other key.

use broker_tests::*;

fn server() -> RedisServer {
    RedisServer::builder().module_args(HISTORY_ARGS).start()
}

#[test]
fn every_name_with_state_is_a_key_while_it_has_state() {
    let server = server();
    let mut con = server.client();
    populate(&mut con);
    let keys = broker_keys(&mut con);
    for name in ["alice", "bob", "chat:a", "chat:b", "user:alice"] {
        assert!(keys.contains(&name.to_string()), "{name} in {keys:?}");
    }
    assert_eq!(text(&ok(&mut con, &["TYPE", "chat:a"])), "broker-rg");
    assert_eq!(
        keys_but_events(&mut con),
        1,
        "and the throttle key: {keys:?}"
    );
    // carol closes her one connection: her key goes, her rooms' stay.
    run(&mut con, ConnClose::new("carol", "c4"));
    assert_eq!(int(&ok(&mut con, &["EXISTS", "carol"])), 0);
    assert_eq!(int(&ok(&mut con, &["EXISTS", "chat:a"])), 1);
    // A room without members or history goes with its last member.
    run(&mut con, Join::new("chat:gone", "bob", "c3", "n1"));
    assert_eq!(int(&ok(&mut con, &["EXISTS", "chat:gone"])), 1);
    run(&mut con, Leave::new("chat:gone", "bob", "c3"));
    assert_eq!(int(&ok(&mut con, &["EXISTS", "chat:gone"])), 0);
    // The keys survive a reload, and so does the digest.
    let digest = text(&ok(&mut con, &["DEBUG", "DIGEST"]));
    ok(&mut con, &["DEBUG", "RELOAD"]);
    assert_eq!(text(&ok(&mut con, &["DEBUG", "DIGEST"])), digest);
    assert_eq!(broker_keys(&mut con), {
        let mut k = keys.clone();
        k.retain(|k| k != "carol");
        k
    });
}

#[test]
fn memory_usage_grows_with_members_and_history() {
    let server = server();
    let mut con = server.client();
    lease(&mut con, "n1", 600_000);
    run(&mut con, Join::new("chat:m", "u0", "c0", "n1"));
    let usage = |con: &mut redis::Connection| int(&ok(con, &["MEMORY", "USAGE", "chat:m"]));
    let one = usage(&mut con);
    for i in 1..100 {
        run(
            &mut con,
            Join::new("chat:m", &format!("u{i}"), &format!("c{i}"), "n1"),
        );
    }
    let hundred = usage(&mut con);
    assert!(hundred > one + 99 * 40, "{one} -> {hundred}");
    for _ in 0..50 {
        publish_str(&mut con, "chat:m", "ev", &"x".repeat(1000));
    }
    let with_history = usage(&mut con);
    assert!(
        with_history > hundred + 50 * 1000,
        "{hundred} -> {with_history}"
    );
}

#[test]
fn migrate_moves_a_room_and_a_user_with_their_state() {
    let a = server();
    let b = server();
    let (mut ca, mut cb) = (a.client(), b.client());
    populate(&mut ca);
    let room_digest = ok(&mut ca, &["DEBUG", "DIGEST-VALUE", "chat:a"]);
    let count = map(&run(&mut ca, RoomCount::new("chat:a")));
    let history = map(&run(&mut ca, History::new("chat:a")));
    let port = b.port().to_string();
    ok(
        &mut ca,
        &[
            "MIGRATE",
            "127.0.0.1",
            &port,
            "",
            "0",
            "5000",
            "KEYS",
            "chat:a",
            "alice",
        ],
    );
    // Gone from the source, with no event and nothing left behind.
    assert_eq!(
        int(&map(&run(&mut ca, RoomCount::new("chat:a")))["users"]),
        0
    );
    assert_eq!(
        text(&map(&run(&mut ca, Presence::new("alice")))["status"]),
        "offline"
    );
    // On the target: the same room (members, seq, epoch, history) and user,
    // and the leases of the nodes they name.
    assert_eq!(
        ok(&mut cb, &["DEBUG", "DIGEST-VALUE", "chat:a"]),
        room_digest
    );
    assert_eq!(map(&run(&mut cb, RoomCount::new("chat:a"))), count);
    assert_eq!(map(&run(&mut cb, History::new("chat:a"))), history);
    let p = map(&run(&mut cb, Presence::new("alice")));
    assert_eq!(
        (text(&p["status"]), int(&p["connections"])),
        ("online".into(), 2)
    );
    assert_eq!(array(&run(&mut cb, Nodes)).len(), 2);
    let seq = int(&history["seq"]);
    assert_eq!(publish_str(&mut cb, "chat:a", "ev", "next"), seq + 1);
}

#[test]
fn deleting_a_key_drops_its_state_and_copy_is_refused() {
    let server = server();
    let mut con = server.client();
    populate(&mut con);
    let epoch = text(&map(&run(&mut con, History::new("chat:a")))["epoch"]);
    assert!(err(&mut con, &["COPY", "chat:a", "chat:copy"]).contains("not supported"));
    ok(&mut con, &["DEL", "chat:a", "alice"]);
    assert_eq!(
        int(&map(&run(&mut con, RoomCount::new("chat:a")))["users"]),
        0
    );
    assert_eq!(int(&map(&run(&mut con, History::new("chat:a")))["seq"]), 0);
    assert_eq!(
        text(&map(&run(&mut con, Presence::new("alice")))["status"]),
        "offline"
    );
    // alice's connections stay members of their other rooms here.
    assert_eq!(
        int(&map(&run(&mut con, RoomCount::new("chat:b")))["users"]),
        1
    );
    // The next join makes the room again, under a new epoch.
    let j = map(&run(&mut con, Join::new("chat:a", "bob", "c3", "n1")));
    assert_ne!(text(&j["epoch"]), epoch);
}

#[test]
fn a_renamed_key_drops_its_state_and_a_later_room_of_that_name_is_saved() {
    let server = server();
    let mut con = server.client();
    populate(&mut con);
    ok(&mut con, &["RENAME", "chat:b", "chat:renamed"]);
    assert_eq!(
        int(&map(&run(&mut con, RoomCount::new("chat:b")))["users"]),
        0
    );
    assert_eq!(
        int(&map(&run(&mut con, RoomCount::new("chat:renamed")))["users"]),
        0
    );
    // The renamed value holds nothing; a room of that name made later is
    // what the key stands for, and what a reload brings back.
    run(&mut con, Join::new("chat:renamed", "bob", "c3", "n1"));
    ok(&mut con, &["DEBUG", "RELOAD"]);
    assert_eq!(
        int(&map(&run(&mut con, RoomCount::new("chat:renamed")))["users"]),
        1
    );
}

#[test]
fn a_dump_restored_under_another_name_is_not_used() {
    let server = server();
    let mut con = server.client();
    populate(&mut con);
    let dump = bytes(&ok(&mut con, &["DUMP", "chat:a"]));
    let restored: redis::Value = redis::cmd("RESTORE")
        .arg("chat:elsewhere")
        .arg(0)
        .arg(dump.as_slice())
        .query(&mut con)
        .expect("RESTORE");
    assert_eq!(restored, redis::Value::Okay);
    assert_eq!(
        int(&map(&run(&mut con, RoomCount::new("chat:elsewhere")))["users"]),
        0
    );
    assert!(server.log().contains("holds the state of another name"));
    // RESTORE ... REPLACE of the room's own dump keeps it whole.
    let before = snapshot(&mut con, true);
    let replaced: redis::Value = redis::cmd("RESTORE")
        .arg("chat:a")
        .arg(0)
        .arg(dump.as_slice())
        .arg("REPLACE")
        .query(&mut con)
        .expect("RESTORE REPLACE");
    assert_eq!(replaced, redis::Value::Okay);
    assert_eq!(snapshot(&mut con, true), before);
}

#[test]
fn an_aof_rewritten_without_rdb_preamble_rebuilds_every_key() {
    let mut w = World::with(
        RedisServer::builder()
            .module_args(HISTORY_ARGS)
            .appendonly()
            .server_args(["--aof-use-rdb-preamble", "no"]),
    );
    populate(&mut w.con);
    ok(&mut w.con, &["BGREWRITEAOF"]);
    eventually("the rewrite ends", || {
        match info_field(&mut w.con, "persistence", "aof_rewrite_in_progress").as_deref() {
            Some("0") => Ok(()),
            other => Err(format!("aof_rewrite_in_progress {other:?}")),
        }
    });
    // A load extends the leases: compared without their deadlines.
    let before = snapshot(&mut w.con, false);
    let keys = broker_keys(&mut w.con);
    w.restart();
    assert_eq!(broker_keys(&mut w.con), keys);
    assert_eq!(snapshot(&mut w.con, false), before);
}
