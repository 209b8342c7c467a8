//! What Redis itself tells about the module: `INFO broker`, `COMMAND INFO`
//! flags, and key positions (`COMMAND GETKEYS`) for cluster routing.

use broker_tests::*;
use redis::Value;

/// Every command of docs/COMMANDS.md and whether it writes.
const COMMANDS: [(&str, bool); 20] = [
    ("broker.publish", true),
    ("broker.presence", false),
    ("broker.user.rooms", false),
    ("broker.room.members", false),
    ("broker.room.count", false),
    ("broker.online", false),
    ("broker.history", false),
    ("broker.throttle", true),
    ("broker.nodes", false),
    ("broker.kick", false),
    ("broker.node.lease", true),
    ("broker.node.release", true),
    ("broker.conn.open", true),
    ("broker.conn.close", true),
    ("broker.join", true),
    ("broker.leave", true),
    ("broker.apply.publish", true),
    ("broker.apply.drop", true),
    ("broker.apply.leave", true),
    ("broker.broadcast", false),
];

fn flags(con: &mut redis::Connection, command: &str) -> Vec<String> {
    let info = array(&ok(con, &["COMMAND", "INFO", command]));
    assert_eq!(info.len(), 1);
    let entry = match &info[0] {
        Value::Nil => panic!("{command} is not registered"),
        v => array(v),
    };
    assert_eq!(text(&entry[0]).to_lowercase(), command);
    array(&entry[2]).iter().map(text).collect()
}

/// `COMMAND GETKEYS args...`; keys joined by spaces, or the error line.
fn getkeys(con: &mut redis::Connection, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["COMMAND", "GETKEYS"];
    argv.extend_from_slice(args);
    call(con, &argv)
        .map(|v| array(&v).iter().map(text).collect::<Vec<_>>().join(" "))
        .map_err(|e| err_line(&e))
}

#[test]
fn info_broker_has_every_field() {
    let mut w = World::start();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.open("alice", "c2", "n1");
    w.join(&alice, "chat:a");
    w.publish("chat:a", "x");
    let info = text(&ok(&mut w.con, &["INFO", "broker"]));
    assert!(
        info.contains("# broker") || info.contains("# Broker"),
        "{info}"
    );
    let api = broker::MODULE_API.to_string();
    let expect = [
        ("nodes", "1"),
        ("connections", "2"),
        ("users", "1"),
        ("rooms", "1"),
        ("publishes", "1"),
        ("deliveries", "1"),
        ("throttled", "0"),
        ("leases_expired", "0"),
        ("api", &api),
        ("version", env!("CARGO_PKG_VERSION")),
    ];
    for (name, value) in expect {
        assert_eq!(
            w.info(name).as_deref(),
            Some(value),
            "INFO broker `{name}` in {info}"
        );
    }
    // Also part of INFO everything.
    let all = text(&ok(&mut w.con, &["INFO", "everything"]));
    assert!(
        all.contains("publishes:1"),
        "INFO everything lacks the broker section"
    );
}

#[test]
fn every_command_is_registered_with_its_flags() {
    let mut w = World::start();
    for (command, writes) in COMMANDS {
        let flags = flags(&mut w.con, command);
        if writes {
            assert!(
                flags.iter().any(|f| f == "write"),
                "{command} should be write: {flags:?}"
            );
        } else {
            assert!(
                !flags.iter().any(|f| f == "write"),
                "{command} should not be write: {flags:?}"
            );
        }
    }
    for command in [
        "broker.online",
        "broker.presence",
        "broker.user.rooms",
        "broker.room.members",
        "broker.room.count",
        "broker.history",
        "broker.nodes",
    ] {
        let flags = flags(&mut w.con, command);
        assert!(
            flags.iter().any(|f| f == "readonly"),
            "{command}: {flags:?}"
        );
    }
    for command in ["broker.publish", "broker.join", "broker.conn.open"] {
        let flags = flags(&mut w.con, command);
        assert!(
            flags.iter().any(|f| f == "denyoom"),
            "{command} grows memory: {flags:?}"
        );
    }
}

#[test]
fn key_positions_route_by_room_user_or_key() {
    let mut w = World::start();
    let cases: [(&[&str], &str); 11] = [
        (&["BROKER.PUBLISH", "chat:x", "ev", "p"], "chat:x"),
        (
            &[
                "BROKER.PUBLISH",
                "chat:x",
                "ev",
                "p",
                "FORMAT",
                "string",
                "EXCEPT",
                "c1",
            ],
            "chat:x",
        ),
        (&["BROKER.HISTORY", "chat:x", "SINCE", "1"], "chat:x"),
        (&["BROKER.ROOM.MEMBERS", "chat:x"], "chat:x"),
        (&["BROKER.ROOM.COUNT", "chat:x"], "chat:x"),
        (
            &["BROKER.JOIN", "chat:x", "alice", "c1", "n1", "PRESENCE"],
            "chat:x",
        ),
        (&["BROKER.LEAVE", "chat:x", "alice", "c1"], "chat:x"),
        (
            &["BROKER.THROTTLE", "rl:alice", "15", "30", "60"],
            "rl:alice",
        ),
        // User commands route by the user argument (one slot per user).
        (&["BROKER.PRESENCE", "alice"], "alice"),
        (&["BROKER.KICK", "alice", "bye"], "alice"),
        (
            &["BROKER.CONN.OPEN", "alice", "c1", "n1", "1.2.3.4"],
            "alice",
        ),
    ];
    for (args, keys) in cases {
        assert_eq!(getkeys(&mut w.con, args), Ok(keys.to_string()), "{args:?}");
    }
    assert_eq!(
        getkeys(&mut w.con, &["BROKER.CONN.CLOSE", "alice", "c1"]),
        Ok("alice".to_string())
    );
    // The RATE key is a real key the command writes: it is declared too.
    let keys = getkeys(
        &mut w.con,
        &[
            "BROKER.PUBLISH",
            "chat:x",
            "ev",
            "p",
            "RATE",
            "broker:rate:{chat:x}:alice",
            "2",
            "1",
            "60",
        ],
    );
    assert_eq!(keys, Ok("chat:x broker:rate:{chat:x}:alice".to_string()));
    // Per-shard commands have no keys.
    for args in [
        &["BROKER.ONLINE"][..],
        &["BROKER.NODES"],
        &["BROKER.NODE.LEASE", "n1", "1000"],
        &["BROKER.NODE.RELEASE", "n1"],
        &["BROKER.BROADCAST", "ev", "p"],
        &["BROKER.USER.ROOMS", "alice"],
    ] {
        assert!(getkeys(&mut w.con, args).is_err(), "{args:?} has no keys");
    }
}
