//! Gateway nodes: `NODE.LEASE`, `NODE.RELEASE`, `NODES`, lease expiry by the
//! module's timer, and `KICK`.

use broker::envelope::Envelope;
use broker_tests::*;

#[test]
fn lease_returns_its_deadline_and_nodes_lists_it() {
    let mut w = World::start();
    let before = now_ms();
    let (deadline, renewed) = lease_reply(&w.ok(NodeLease::new("n1", 5000)));
    let after = now_ms();
    assert!(!renewed, "a first lease is new");
    assert!(
        (before + 5000..=after + 5000).contains(&deadline),
        "deadline {deadline} not now + 5000 ({before}..{after})"
    );

    let nodes = array(&w.ok(Nodes));
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let n = map(&nodes[0]);
    assert_eq!(text(&n["node"]), "n1");
    assert_eq!(int(&n["connections"]), 0);
    assert_eq!(int(&n["lease_deadline_ms"]), deadline);
}

#[test]
fn renewing_a_lease_moves_the_deadline() {
    let mut w = World::start();
    let first = lease(&mut w.con, "n1", 10_000);
    let (longer, renewed) = lease_reply(&w.ok(NodeLease::new("n1", 60_000)));
    assert!(renewed, "a live lease is renewed");
    assert!(longer >= first + 50_000, "{first} then {longer}");
    let shorter = lease(&mut w.con, "n1", 20_000);
    assert!(
        shorter < longer,
        "a renewal sets now + ttl: {longer} then {shorter}"
    );
    let nodes = array(&w.ok(Nodes));
    assert_eq!(nodes.len(), 1, "one node, renewed: {nodes:?}");
}

#[test]
fn lease_with_an_explicit_deadline() {
    let mut w = World::start();
    let at = now_ms() + 120_000;
    let (deadline, renewed) =
        lease_reply(&w.ok(NodeLease::new("n1", 5000).deadline(at.unsigned_abs())));
    assert_eq!((deadline, renewed), (at, false));
    let n = map(&array(&w.ok(Nodes))[0]);
    assert_eq!(int(&n["lease_deadline_ms"]), at);
}

#[test]
fn nodes_counts_connections_per_node() {
    let mut w = World::start().resp3();
    w.nodes(&["n1", "n2"]);
    w.open("alice", "c1", "n1");
    w.open("alice", "c2", "n1");
    w.open("bob", "c3", "n2");
    let reply = w.ok(Nodes);
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
    let mut w = World::start();
    let alice = Conn::new("alice", "c1", "n9");
    let e = w.err(alice.open_from("1.2.3.4"));
    assert!(e.starts_with("NOLEASE"), "{e}");
    let e = w.err(alice.join("chat:a"));
    assert!(e.starts_with("NOLEASE"), "{e}");
    assert_eq!(w.online().1, 0);
}

/// The scenario of a gateway that dies: its lease runs out, the module's
/// timer drops its connections, and members elsewhere hear the leaves.
#[test]
fn lease_expiry_drops_the_node_and_announces_leaves() {
    let mut w = World::start();
    w.nodes(&["n1", "n2"]);
    let alice = w.open("alice", "c1", "n1");
    w.join_presence(&alice, "chat:room");
    let bob = w.open("bob", "c2", "n2");
    w.join_presence(&bob, "chat:room");

    let n2 = w.listen(&["n2"]);
    // n1 stops heartbeating: its last renewal runs out in 300 ms.
    lease(&mut w.con, "n1", 300);

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

    let presence = w.presence("alice");
    assert_eq!(text(&presence["status"]), "offline");
    assert_eq!(int(&presence["connections"]), 0);
    assert!(array(&presence["conns"]).is_empty());

    let nodes: Vec<String> = array(&w.ok(Nodes))
        .iter()
        .map(|n| text(&map(n)["node"]))
        .collect();
    assert_eq!(nodes, vec!["n2".to_string()]);

    assert_eq!(w.count("chat:room"), (1, 1));
    assert_eq!(w.online(), (1, 1));
    let expired = w.info("leases_expired").expect("leases_expired");
    assert_eq!(expired, "1");

    // The dead node must lease again before it registers anything, and its
    // new lease says so (renewed 0), so it re-registers its connections.
    let e = w.err(alice.open_from("1.2.3.4"));
    assert!(e.starts_with("NOLEASE"), "{e}");
    let (_, renewed) = lease_reply(&w.ok(NodeLease::new("n1", 60_000)));
    assert!(!renewed, "the old lease ran out: this one is new");
    // Nothing more for n2: the one leave was all.
    assert!(w.fence(&n2).is_empty());
}

#[test]
fn node_release_drops_its_connections_and_announces_leaves() {
    let mut w = World::start();
    w.nodes(&["n1", "n2"]);
    let alice1 = w.open("alice", "c1", "n1");
    let alice2 = w.open("alice", "c2", "n1");
    w.open("carol", "c4", "n1");
    w.join_presence(&alice1, "chat:room");
    w.join_presence(&alice2, "chat:room");
    let bob = w.open("bob", "c3", "n2");
    w.join_presence(&bob, "chat:room");
    let n2 = w.listen(&["n2"]);

    let dropped = w.int(NodeRelease::new("n1"));
    assert_eq!(dropped, 3);

    let seen = w.fence(&n2);
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
        assert_eq!(w.status(user), "offline", "{user}");
    }
    let members = w.map(RoomMembers::new("chat:room"));
    assert_eq!(members.keys().collect::<Vec<_>>(), vec!["bob"]);
    assert_eq!(array(&w.ok(Nodes)).len(), 1);
    // Releasing an unknown node drops nothing.
    assert_eq!(w.int(NodeRelease::new("n7")), 0);
}

#[test]
fn kick_tells_each_node_which_connections_to_close() {
    let mut w = World::start();
    w.nodes(&["n1", "n2", "n3"]);
    w.open("alice", "c1", "n1");
    w.open("alice", "c2", "n1");
    w.open("alice", "c3", "n2");
    w.open("bob", "c4", "n3");
    let sub = w.listen(&["n1", "n2", "n3"]);

    let told = w.int(Kick::new("alice").with_reason("banned"));
    assert_eq!(told, 3);
    let seen = w.fence(&sub);
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
    assert_eq!(int(&w.presence("alice")["connections"]), 3);

    // Without a reason, and for a user with no connections.
    assert_eq!(w.int(Kick::new("bob")), 1);
    let seen = w.fence(&sub);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].node(), "n3");
    assert!(matches!(
        seen[0].envelope(),
        Envelope::Kick { user: "bob", .. }
    ));
    assert_eq!(w.int(Kick::new("nobody")), 0);
    assert!(w.fence(&sub).is_empty());
}

/// Reads the next sharded message from a connection that ran `SSUBSCRIBE`.
fn next_smessage(con: &mut redis::Connection) -> Option<(String, Vec<u8>)> {
    let reply = con.recv_response().ok()?;
    let parts = array(&reply);
    (text(&parts[0]) == "smessage").then(|| (text(&parts[1]), bytes(&parts[2])))
}

#[test]
fn a_lease_with_a_channel_sends_the_node_sharded_messages() {
    let mut w = World::start();
    let channel = "broker:node:n1:{7}";
    w.ok(NodeLease::new("n1", 60_000).channel(channel));
    for bad in ["broker:node:n2:{7}", "broker:node:n1:{x}", "other"] {
        let e = w.err(NodeLease::new("n1", 60_000).channel(bad));
        assert!(e.starts_with("ERR invalid channel"), "{bad}: {e}");
    }
    // A renewal without CHANNEL keeps it, and so does a save and load.
    w.node("n1");
    ok(&mut w.con, &["DEBUG", "RELOAD"]);
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:room");

    let mut sharded = w.client();
    sharded
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let confirm = array(&ok(&mut sharded, &["SSUBSCRIBE", channel]));
    assert_eq!(text(&confirm[0]), "ssubscribe");
    let classic = w.listen(&["n1"]);

    let seq = w.int(Publish::string("chat:room", "m", "hello"));
    let (on, payload) = next_smessage(&mut sharded).expect("a sharded message");
    assert_eq!(on, channel);
    let Envelope::Msg { seq: got, .. } = envelope(&payload) else {
        panic!("expected a message envelope: {:?}", envelope(&payload));
    };
    assert_eq!(got, seq as u64);
    assert!(
        w.fence(&classic).is_empty(),
        "nothing on the classic channel"
    );
}
