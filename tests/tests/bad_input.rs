//! Bad input gets an error reply with the documented code, changes nothing,
//! and never takes Redis down.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_tests::*;

/// A world with node n1 leased (10 min), alice's connection c1 on it, in
/// chat:a. The bad input itself is sent raw: its parsing is the point.
fn alice_in_chat_a() -> World {
    let mut w = World::start();
    lease(&mut w.con, "n1", 600_000);
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:a");
    w
}

/// The state [`alice_in_chat_a`] made, unchanged.
fn assert_untouched(server: &RedisServer, con: &mut redis::Connection) {
    assert_alive(server);
    let online = map(&run(con, Online));
    assert_eq!((int(&online["users"]), int(&online["connections"])), (1, 1));
    assert_eq!(array(&run(con, Nodes)).len(), 1);
    let count = map(&run(con, RoomCount::new("chat:a")));
    assert_eq!((int(&count["users"]), int(&count["connections"])), (1, 1));
    let h = map(&run(con, History::new("chat:a")));
    assert_eq!(int(&h["seq"]), 0, "nothing was published");
    assert_eq!(keys_but_events(con), 0, "no key was written");
}

/// Runs each command and checks its error starts with one of `prefixes`.
/// Every mismatch is listed before the test fails.
fn expect_errors(con: &mut redis::Connection, prefixes: &[&str], cases: &[&[&str]]) {
    let mut wrong = Vec::new();
    for args in cases {
        let line = match call(con, args) {
            Ok(v) => format!("no error, replied {v:?}"),
            Err(e) => err_line(&e),
        };
        if !prefixes.iter().any(|p| line.starts_with(p)) {
            wrong.push(format!("{args:?} -> {line:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected errors starting with {prefixes:?}; {} of {} differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn wrong_number_of_arguments() {
    let World { server, mut con } = alice_in_chat_a();
    expect_errors(
        &mut con,
        &["ERR wrong number of arguments"],
        &[
            &["BROKER.PUBLISH"],
            &["BROKER.PUBLISH", "chat:a"],
            &["BROKER.PUBLISH", "chat:a", "ev"],
            &["BROKER.PRESENCE"],
            &["BROKER.PRESENCE", "alice", "bob"],
            &["BROKER.USER.ROOMS"],
            &["BROKER.USER.ROOMS", "alice", "bob"],
            &["BROKER.ROOM.MEMBERS"],
            &["BROKER.ROOM.COUNT"],
            &["BROKER.ROOM.COUNT", "chat:a", "chat:b"],
            &["BROKER.ONLINE", "x"],
            &["BROKER.HISTORY"],
            &["BROKER.THROTTLE", "k", "15", "30"],
            &["BROKER.NODES", "x"],
            &["BROKER.KICK"],
            &["BROKER.NODE.LEASE", "n1"],
            &["BROKER.NODE.RELEASE"],
            &["BROKER.CONN.OPEN", "alice", "c2", "n1"],
            &["BROKER.CONN.CLOSE", "alice"],
            &["BROKER.JOIN", "chat:a", "alice", "c1"],
            &["BROKER.LEAVE", "chat:a", "alice"],
        ],
    );
    // Extra words after a complete command: arity or syntax, both errors.
    expect_errors(
        &mut con,
        &["ERR wrong number of arguments", "ERR syntax"],
        &[
            &["BROKER.THROTTLE", "k", "15", "30", "60", "1", "2"],
            &["BROKER.KICK", "alice", "reason", "extra"],
        ],
    );
    assert_untouched(&server, &mut con);
}

#[test]
fn unknown_options_and_missing_option_values() {
    let World { server, mut con } = alice_in_chat_a();
    expect_errors(
        &mut con,
        &["ERR syntax"],
        &[
            &["BROKER.NODE.RELEASE", "n1", "n2"],
            &["BROKER.CONN.CLOSE", "alice", "c1", "x"],
            &["BROKER.LEAVE", "chat:a", "alice", "c1", "x"],
            &["BROKER.CONN.CLOSE", "alice", "c1", "GRACE"],
            &["BROKER.PUBLISH", "chat:a", "ev", "hi", "BOGUS"],
            &["BROKER.PUBLISH", "chat:a", "ev", "hi", "FORMAT"],
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "EXCEPT",
            ],
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "FROM",
            ],
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "HISTORY",
                "5",
            ],
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "RATE",
                "k",
                "2",
                "1",
            ],
            &["BROKER.HISTORY", "chat:a", "SINCE"],
            &["BROKER.HISTORY", "chat:a", "LIMIT"],
            &["BROKER.HISTORY", "chat:a", "BOGUS", "1"],
            &["BROKER.JOIN", "chat:a", "alice", "c1", "n1", "BOGUS"],
            &["BROKER.JOIN", "chat:a", "alice", "c1", "n1", "MAXROOMS"],
            &["BROKER.JOIN", "chat:a", "alice", "c1", "n1", "SINCE", "1"],
            &["BROKER.CONN.OPEN", "alice", "c2", "n1", "1.2.3.4", "BOGUS"],
            &[
                "BROKER.CONN.OPEN",
                "alice",
                "c2",
                "n1",
                "1.2.3.4",
                "MAXUSER",
            ],
            &["BROKER.CONN.OPEN", "alice", "c2", "n1", "1.2.3.4", "MAXIP"],
            &["BROKER.CONN.OPEN", "alice", "c2", "n1", "1.2.3.4", "AT"],
            &["BROKER.NODE.LEASE", "n1", "1000", "DEADLINE"],
            &["BROKER.NODE.LEASE", "n1", "1000", "BOGUS", "1"],
        ],
    );
    // An unknown format is an unknown option value: syntax or invalid.
    expect_errors(
        &mut con,
        &["ERR syntax", "ERR invalid"],
        &[&["BROKER.PUBLISH", "chat:a", "ev", "hi", "FORMAT", "xml"]],
    );
    assert_untouched(&server, &mut con);
}

#[test]
fn invalid_integers() {
    let World { server, mut con } = alice_in_chat_a();
    let huge = "99999999999999999999";
    expect_errors(
        &mut con,
        &["ERR invalid"],
        &[
            &["BROKER.HISTORY", "chat:a", "SINCE", "x"],
            &["BROKER.HISTORY", "chat:a", "SINCE", "-1"],
            &["BROKER.HISTORY", "chat:a", "LIMIT", "-1"],
            &["BROKER.HISTORY", "chat:a", "LIMIT", huge],
            &[
                "BROKER.JOIN",
                "chat:a",
                "alice",
                "c1",
                "n1",
                "MAXROOMS",
                "x",
            ],
            &[
                "BROKER.JOIN",
                "chat:a",
                "alice",
                "c1",
                "n1",
                "SINCE",
                "x",
                "e",
            ],
            &[
                "BROKER.CONN.OPEN",
                "alice",
                "c2",
                "n1",
                "1.2.3.4",
                "MAXUSER",
                "x",
            ],
            &[
                "BROKER.CONN.OPEN",
                "alice",
                "c2",
                "n1",
                "1.2.3.4",
                "MAXIP",
                "-1",
            ],
            &[
                "BROKER.CONN.OPEN",
                "alice",
                "c2",
                "n1",
                "1.2.3.4",
                "AT",
                "soon",
            ],
            &["BROKER.NODE.LEASE", "n1", "x"],
            &["BROKER.NODE.LEASE", "n1", "-5"],
            &["BROKER.NODE.LEASE", "n1", huge],
            &["BROKER.NODE.LEASE", "n1", "1.5"],
            &["BROKER.NODE.LEASE", "n1", "1000", "DEADLINE", "x"],
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "HISTORY",
                "x",
                "60",
            ],
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "HISTORY",
                "5",
                "-1",
            ],
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "RATE",
                "k",
                "x",
                "1",
                "60",
            ],
            &[
                "BROKER.PUBLISH",
                "chat:a",
                "ev",
                "hi",
                "FORMAT",
                "string",
                "RATE",
                "k",
                "2",
                "0",
                "60",
            ],
        ],
    );
    assert_untouched(&server, &mut con);
}

#[test]
fn invalid_names() {
    let World { server, mut con } = alice_in_chat_a();
    let long_name = format!("chat:{}", "a".repeat(101));
    let long_ns = format!("{}:a", "n".repeat(65));
    let long_user = "u".repeat(101);
    let long_id = "c".repeat(65);
    let long_ip = "1".repeat(65);
    let bad_rooms: Vec<&str> = vec![
        "", "nocolon", ":x", "chat:", "chat:a b", "ch at:x", "chat:a:b", "chat:é", &long_name,
        &long_ns,
    ];
    let bad_users: Vec<&str> = vec!["", "a b", "a:b", "ü", &long_user];
    let bad_ids: Vec<&str> = vec!["", "c 1", "c@1", "c:1", "c/1", &long_id];
    let bad_ips: Vec<&str> = vec!["", "1.2.3.4 x", "\u{1}", &long_ip];

    let mut cases: Vec<Vec<&str>> = Vec::new();
    for room in &bad_rooms {
        cases.push(vec!["BROKER.PUBLISH", room, "ev", "hi", "FORMAT", "string"]);
        cases.push(vec!["BROKER.HISTORY", room]);
        cases.push(vec!["BROKER.ROOM.MEMBERS", room]);
        cases.push(vec!["BROKER.ROOM.COUNT", room]);
        cases.push(vec!["BROKER.JOIN", room, "alice", "c1", "n1"]);
        cases.push(vec!["BROKER.LEAVE", room, "alice", "c1"]);
    }
    for user in &bad_users {
        cases.push(vec!["BROKER.PRESENCE", user]);
        cases.push(vec!["BROKER.USER.ROOMS", user]);
        cases.push(vec!["BROKER.KICK", user]);
        cases.push(vec!["BROKER.CONN.OPEN", user, "c2", "n1", "1.2.3.4"]);
        cases.push(vec!["BROKER.CONN.CLOSE", user, "c1"]);
        cases.push(vec!["BROKER.JOIN", "chat:a", user, "c1", "n1"]);
        cases.push(vec!["BROKER.LEAVE", "chat:a", user, "c1"]);
    }
    for id in &bad_ids {
        // As a connection id.
        cases.push(vec!["BROKER.CONN.OPEN", "alice", id, "n1", "1.2.3.4"]);
        cases.push(vec!["BROKER.CONN.CLOSE", "alice", id]);
        cases.push(vec!["BROKER.JOIN", "chat:a", "alice", id, "n1"]);
        cases.push(vec!["BROKER.LEAVE", "chat:a", "alice", id]);
        cases.push(vec![
            "BROKER.PUBLISH",
            "chat:a",
            "ev",
            "hi",
            "FORMAT",
            "string",
            "EXCEPT",
            id,
        ]);
        cases.push(vec![
            "BROKER.PUBLISH",
            "chat:a",
            "ev",
            "hi",
            "FORMAT",
            "string",
            "FROM",
            id,
        ]);
        // As a node id.
        cases.push(vec!["BROKER.NODE.LEASE", id, "1000"]);
        cases.push(vec!["BROKER.NODE.RELEASE", id]);
        cases.push(vec!["BROKER.CONN.OPEN", "alice", "c2", id, "1.2.3.4"]);
        cases.push(vec!["BROKER.JOIN", "chat:a", "alice", "c1", id]);
    }
    for ip in &bad_ips {
        cases.push(vec!["BROKER.CONN.OPEN", "alice", "c2", "n1", ip]);
    }
    let cases: Vec<&[&str]> = cases.iter().map(Vec::as_slice).collect();
    expect_errors(&mut con, &["ERR invalid"], &cases);

    // Bytes that are not UTF-8, where names go.
    let mut wrong = Vec::new();
    for cmd in [
        "BROKER.PRESENCE",
        "BROKER.USER.ROOMS",
        "BROKER.ROOM.COUNT",
        "BROKER.HISTORY",
        "BROKER.KICK",
    ] {
        let result: redis::RedisResult<redis::Value> =
            redis::cmd(cmd).arg(&b"chat:\xff\xfe"[..]).query(&mut con);
        let line = match result {
            Ok(v) => format!("no error, replied {v:?}"),
            Err(e) => err_line(&e),
        };
        if !line.starts_with("ERR invalid") {
            wrong.push(format!("{cmd} <non-UTF-8> -> {line:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "expected `ERR invalid`:\n{}",
        wrong.join("\n")
    );
    assert_untouched(&server, &mut con);
}

#[test]
fn longest_valid_names_are_accepted() {
    let World { server, mut con } = alice_in_chat_a();
    let room = format!("{}:{}", "n".repeat(64), "r".repeat(100));
    let user = "u".repeat(100);
    let conn = "c".repeat(64);
    let node = "n".repeat(64);
    let ip = "i".repeat(64);
    lease(&mut con, &node, 60_000);
    run(&mut con, ConnOpen::new(&user, &conn, &node, &ip));
    map(&run(&mut con, Join::new(&room, &user, &conn, &node)));
    assert_eq!(publish_str(&mut con, &room, "ev", "x"), 1);
    let odd = Conn::new("u.s-e_r@x", "c.1_2-3", &node);
    run(&mut con, odd.open_from("[::1]:443"));
    map(&run(&mut con, odd.join("chat:A.b_c-d@e")));
    map(&run(&mut con, odd.join("user:u.s-e_r@x")));
    assert_alive(&server);
}

#[test]
fn many_bad_commands_in_a_pipeline_leave_the_server_up() {
    let World { server, mut con } = alice_in_chat_a();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        match i % 5 {
            0 => pipe
                .cmd("BROKER.PUBLISH")
                .arg("chat:a")
                .arg("ev")
                .arg(&[0xc1u8][..]),
            1 => pipe
                .cmd("BROKER.JOIN")
                .arg("bad room")
                .arg("alice")
                .arg("c1")
                .arg("n1"),
            2 => pipe
                .cmd("BROKER.THROTTLE")
                .arg("k")
                .arg("1")
                .arg("0")
                .arg("1"),
            3 => pipe.cmd("BROKER.HISTORY").arg("chat:a").arg("LIMIT"),
            _ => pipe
                .cmd("BROKER.CONN.OPEN")
                .arg("alice")
                .arg("c1")
                .arg("n9")
                .arg("ip"),
        };
    }
    // The pipeline fails on the first error; the point is that every reply
    // came back and the server still answers.
    let result: redis::RedisResult<Vec<redis::Value>> = pipe.query(&mut con);
    assert!(result.is_err());
    assert_untouched(&server, &mut server.client());
}

#[test]
fn bad_module_arguments_stop_the_server_from_starting() {
    for args in [
        &["BOGUS"][..],
        &["HISTORY", "chat", "x", "60"],
        &["HISTORY", "chat", "10"],
        &["HISTORY", "bad ns", "10", "60"],
        &["SWEEP_MS", "0"],
        &["SWEEP_MS"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().to_string();
        let mut child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(dir.path())
            .arg("--loadmodule")
            .arg(module_path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server started with module arguments {args:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "{args:?}: {status}");
    }
}

#[test]
fn apply_publish_cannot_freeze_or_rewind_a_room() {
    let mut w = world::World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "feed:x");
    w.publish("feed:x", "1");
    w.publish("feed:x", "2");
    let epoch = text(&w.history("feed:x")["epoch"]);
    assert!(!epoch.is_empty());
    let frame: &[u8] = b"\x81\xa1t\xa3msg"; // {"t": "msg"}
    let apply = |con: &mut redis::Connection, seq: u64, epoch: &str| {
        redis::cmd("BROKER.APPLY.PUBLISH")
            .arg("feed:x")
            .arg(seq)
            .arg(epoch)
            .arg(1)
            .arg(10)
            .arg(0)
            .arg(frame)
            .query::<redis::Value>(con)
    };
    for (seq, ep, says) in [
        (u64::MAX, epoch.as_str(), "seq"),
        (0, epoch.as_str(), "seq"),
        (2, epoch.as_str(), "the room is at 2"),
        (1, epoch.as_str(), "the room is at 2"),
        (3, "", "epoch"),
    ] {
        let line = err_line(&apply(&mut w.con, seq, ep).expect_err("refused"));
        assert!(
            line.starts_with("ERR invalid") && line.contains(says),
            "{seq} {ep:?}: {line}"
        );
    }
    // Nothing moved: the room is still at 2 and publishes go on.
    assert_eq!(w.seq("feed:x"), 2);
    assert_eq!(w.publish("feed:x", "3"), 3);
    // What a master really sends still applies.
    assert_eq!(int(&apply(&mut w.con, 4, &epoch).expect("applied")), 4);
    assert_eq!(w.seq("feed:x"), 4);
}
