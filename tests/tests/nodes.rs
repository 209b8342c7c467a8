//! Gateway nodes: `NODE.LEASE`, `NODE.RELEASE`, `NODES`, lease expiry by the
//! module's timer, and `KICK`.

use broker::wire::Envelope;
use broker_tests::*;

#[test]
fn lease_returns_its_deadline_and_nodes_lists_it() {
    let server = RedisServer::start();
    let mut con = server.client();
    let before = now_ms();
    let (deadline, renewed) = lease_reply(&ok(&mut con, &["BROKER.NODE.LEASE", "n1", "5000"]));
    let after = now_ms();
    assert!(!renewed, "a first lease is new");
    assert!(
        (before + 5000..=after + 5000).contains(&deadline),
        "deadline {deadline} not now + 5000 ({before}..{after})"
    );

    let nodes = array(&ok(&mut con, &["BROKER.NODES"]));
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let n = map(&nodes[0]);
    assert_eq!(text(&n["node"]), "n1");
    assert_eq!(int(&n["connections"]), 0);
    assert_eq!(int(&n["lease_deadline_ms"]), deadline);
}

#[test]
fn renewing_a_lease_moves_the_deadline() {
    let server = RedisServer::start();
    let mut con = server.client();
    let first = lease(&mut con, "n1", 10_000);
    let (longer, renewed) = lease_reply(&ok(&mut con, &["BROKER.NODE.LEASE", "n1", "60000"]));
    assert!(renewed, "a live lease is renewed");
    assert!(longer >= first + 50_000, "{first} then {longer}");
    let shorter = lease(&mut con, "n1", 20_000);
    assert!(
        shorter < longer,
        "a renewal sets now + ttl: {longer} then {shorter}"
    );
    let nodes = array(&ok(&mut con, &["BROKER.NODES"]));
    assert_eq!(nodes.len(), 1, "one node, renewed: {nodes:?}");
}

#[test]
fn lease_with_an_explicit_deadline() {
    let server = RedisServer::start();
    let mut con = server.client();
    let at = now_ms() + 120_000;
    let (deadline, renewed) = lease_reply(&ok(
        &mut con,
        &[
            "BROKER.NODE.LEASE",
            "n1",
            "5000",
            "DEADLINE",
            &at.to_string(),
        ],
    ));
    assert_eq!((deadline, renewed), (at, false));
    let n = map(&array(&ok(&mut con, &["BROKER.NODES"]))[0]);
    assert_eq!(int(&n["lease_deadline_ms"]), at);
}

#[test]
fn nodes_counts_connections_per_node() {
    let server = RedisServer::start();
    let mut con = server.client_resp3();
    lease(&mut con, "n1", 60_000);
    lease(&mut con, "n2", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    open(&mut con, "bob", "c3", "n2");
    let reply = ok(&mut con, &["BROKER.NODES"]);
    let mut nodes: Vec<(String, i64)> = array(&reply)
        .iter()
        .map(|n| {
            assert!(matches!(n, redis::Value::Map(_)), "RESP3 map: {n:?}");
            let n = map(n);
            (text(&n["node"]), int(&n["connections"]))
        })
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec![("n1".into(), 2), ("n2".into(), 1)]);
}

#[test]
fn conn_open_and_join_need_a_lease() {
    let server = RedisServer::start();
    let mut con = server.client();
    let e = err(
        &mut con,
        &["BROKER.CONN.OPEN", "alice", "c1", "n9", "1.2.3.4"],
    );
    assert!(e.starts_with("NOLEASE"), "{e}");
    let e = err(&mut con, &["BROKER.JOIN", "chat:a", "alice", "c1", "n9"]);
    assert!(e.starts_with("NOLEASE"), "{e}");
    let online = map(&ok(&mut con, &["BROKER.ONLINE"]));
    assert_eq!(int(&online["connections"]), 0);
}

/// The scenario of a gateway that dies: its lease runs out, the module's
/// timer drops its connections, and members elsewhere hear the leaves.
#[test]
fn lease_expiry_drops_the_node_and_announces_leaves() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    lease(&mut con, "n2", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:room", "alice", "c1", "n1", &["PRESENCE"]);
    open(&mut con, "bob", "c2", "n2");
    join(&mut con, "chat:room", "bob", "c2", "n2", &["PRESENCE"]);

    let n2 = Subscriber::nodes(&server, &["n2"]);
    // n1 stops heartbeating: its last renewal runs out in 300 ms.
    lease(&mut con, "n1", 300);

    let m = n2.expect("a presence leave for alice");
    assert_eq!(m.channel, "broker:node:n2");
    let Envelope::Presence { room, frame, .. } = m.envelope() else {
        panic!("expected a presence envelope, got {:?}", m.envelope());
    };
    assert_eq!(room, "chat:room");
    let frame = frame_json(frame);
    assert_eq!(frame["t"], "presence", "{frame}");
    assert_eq!(frame["room"], "chat:room", "{frame}");
    assert_eq!(frame["user"], "alice", "{frame}");
    assert_eq!(frame["action"], "leave", "{frame}");

    let presence = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    assert_eq!(text(&presence["status"]), "offline");
    assert_eq!(int(&presence["connections"]), 0);
    assert!(array(&presence["conns"]).is_empty());

    let nodes: Vec<String> = array(&ok(&mut con, &["BROKER.NODES"]))
        .iter()
        .map(|n| text(&map(n)["node"]))
        .collect();
    assert_eq!(nodes, vec!["n2".to_string()]);

    let count = map(&ok(&mut con, &["BROKER.ROOM.COUNT", "chat:room"]));
    assert_eq!((int(&count["users"]), int(&count["connections"])), (1, 1));
    let online = map(&ok(&mut con, &["BROKER.ONLINE"]));
    assert_eq!((int(&online["users"]), int(&online["connections"])), (1, 1));
    let expired = info_field(&mut con, "broker", "leases_expired").expect("leases_expired");
    assert_eq!(expired, "1");

    // The dead node must lease again before it registers anything, and its
    // new lease says so (renewed 0), so it re-registers its connections.
    let e = err(
        &mut con,
        &["BROKER.CONN.OPEN", "alice", "c1", "n1", "1.2.3.4"],
    );
    assert!(e.starts_with("NOLEASE"), "{e}");
    let (_, renewed) = lease_reply(&ok(&mut con, &["BROKER.NODE.LEASE", "n1", "60000"]));
    assert!(!renewed, "the old lease ran out: this one is new");
    // Nothing more for n2: the one leave was all.
    assert!(n2.fence(&mut con).is_empty());
}

#[test]
fn node_release_drops_its_connections_and_announces_leaves() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    lease(&mut con, "n2", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    open(&mut con, "carol", "c4", "n1");
    join(&mut con, "chat:room", "alice", "c1", "n1", &["PRESENCE"]);
    join(&mut con, "chat:room", "alice", "c2", "n1", &["PRESENCE"]);
    open(&mut con, "bob", "c3", "n2");
    join(&mut con, "chat:room", "bob", "c3", "n2", &["PRESENCE"]);
    let n2 = Subscriber::nodes(&server, &["n2"]);

    let dropped = int(&ok(&mut con, &["BROKER.NODE.RELEASE", "n1"]));
    assert_eq!(dropped, 3);

    let seen = n2.fence(&mut con);
    assert_eq!(
        seen.len(),
        1,
        "one leave for alice (two conns), none for carol: {seen:?}"
    );
    let Envelope::Presence { frame, .. } = seen[0].envelope() else {
        panic!("expected presence: {:?}", seen[0].envelope());
    };
    let frame = frame_json(frame);
    assert_eq!(
        (frame["user"].as_str(), frame["action"].as_str()),
        (Some("alice"), Some("leave"))
    );

    for user in ["alice", "carol"] {
        let p = map(&ok(&mut con, &["BROKER.PRESENCE", user]));
        assert_eq!(text(&p["status"]), "offline", "{user}");
    }
    let members = map(&ok(&mut con, &["BROKER.ROOM.MEMBERS", "chat:room"]));
    assert_eq!(members.keys().collect::<Vec<_>>(), vec!["bob"]);
    assert_eq!(array(&ok(&mut con, &["BROKER.NODES"])).len(), 1);
    // Releasing an unknown node drops nothing.
    assert_eq!(int(&ok(&mut con, &["BROKER.NODE.RELEASE", "n7"])), 0);
}

#[test]
fn kick_tells_each_node_which_connections_to_close() {
    let server = RedisServer::start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    lease(&mut con, "n2", 60_000);
    lease(&mut con, "n3", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    open(&mut con, "alice", "c3", "n2");
    open(&mut con, "bob", "c4", "n3");
    let sub = Subscriber::nodes(&server, &["n1", "n2", "n3"]);

    let told = int(&ok(&mut con, &["BROKER.KICK", "alice", "banned"]));
    assert_eq!(told, 3);
    let seen = sub.fence(&mut con);
    assert_eq!(seen.len(), 2, "one kick per node holding alice: {seen:?}");
    let mut by_node: Vec<(String, Vec<String>)> = seen
        .iter()
        .map(|m| match m.envelope() {
            Envelope::Kick {
                user,
                conns,
                reason,
            } => {
                assert_eq!(user, "alice");
                assert_eq!(reason, "banned");
                let mut conns: Vec<String> = conns.iter().map(|c| c.to_string()).collect();
                conns.sort();
                (m.node().to_string(), conns)
            }
            other => panic!("expected kick, got {other:?}"),
        })
        .collect();
    by_node.sort();
    assert_eq!(
        by_node,
        vec![
            ("n1".to_string(), vec!["c1".to_string(), "c2".to_string()]),
            ("n2".to_string(), vec!["c3".to_string()]),
        ]
    );

    // The registry is unchanged until the gateways report the closes.
    let p = map(&ok(&mut con, &["BROKER.PRESENCE", "alice"]));
    assert_eq!(int(&p["connections"]), 3);

    // Without a reason, and for a user with no connections.
    assert_eq!(int(&ok(&mut con, &["BROKER.KICK", "bob"])), 1);
    let seen = sub.fence(&mut con);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].node(), "n3");
    assert!(matches!(
        seen[0].envelope(),
        Envelope::Kick { user: "bob", .. }
    ));
    assert_eq!(int(&ok(&mut con, &["BROKER.KICK", "nobody"])), 0);
    assert!(sub.fence(&mut con).is_empty());
}

/// Reads the next sharded message from a connection that ran `SSUBSCRIBE`.
fn next_smessage(con: &mut redis::Connection) -> Option<(String, Vec<u8>)> {
    let reply = con.recv_response().ok()?;
    let parts = array(&reply);
    (text(&parts[0]) == "smessage").then(|| (text(&parts[1]), bytes(&parts[2])))
}

#[test]
fn a_lease_with_a_channel_sends_the_node_sharded_messages() {
    let server = RedisServer::start();
    let mut con = server.client();
    let channel = "broker:node:n1:{7}";
    ok(
        &mut con,
        &["BROKER.NODE.LEASE", "n1", "60000", "CHANNEL", channel],
    );
    for bad in ["broker:node:n2:{7}", "broker:node:n1:{x}", "other"] {
        let e = err(
            &mut con,
            &["BROKER.NODE.LEASE", "n1", "60000", "CHANNEL", bad],
        );
        assert!(e.starts_with("ERR invalid channel"), "{bad}: {e}");
    }
    // A renewal without CHANNEL keeps it, and so does a save and load.
    lease(&mut con, "n1", 60_000);
    ok(&mut con, &["DEBUG", "RELOAD"]);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:room", "alice", "c1", "n1", &[]);

    let mut sharded = server.client();
    sharded
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let confirm = array(&ok(&mut sharded, &["SSUBSCRIBE", channel]));
    assert_eq!(text(&confirm[0]), "ssubscribe");
    let classic = Subscriber::nodes(&server, &["n1"]);

    let seq = publish_str(&mut con, "chat:room", "m", "hello");
    let (on, payload) = next_smessage(&mut sharded).expect("a sharded message");
    assert_eq!(on, channel);
    let Envelope::Msg { seq: got, .. } = envelope(&payload) else {
        panic!("expected a message envelope: {:?}", envelope(&payload));
    };
    assert_eq!(got, seq as u64);
    assert!(
        classic.fence(&mut con).is_empty(),
        "nothing on the classic channel"
    );
}
