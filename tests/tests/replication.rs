//! A replica holds the same registry as its master: after a full sync, while
//! following the replication stream, and after a lease expiry on the master.

use broker_tests::*;

fn master() -> RedisServer {
    RedisServer::builder()
        .module_args(HISTORY_ARGS)
        // Full syncs start at once instead of waiting for more replicas.
        .server_args(["--repl-diskless-sync-delay", "0"])
        .start()
}

fn replica(master: &RedisServer) -> RedisServer {
    let replica = RedisServer::builder()
        .module_args(HISTORY_ARGS)
        .replica_of(master)
        .start();
    wait_for_sync(&replica);
    replica
}

/// Polls until the replica's view equals the master's, lease deadlines
/// included: the master replicates absolute deadlines.
fn assert_same(master: &RedisServer, replica: &RedisServer, what: &str) -> serde_json::Value {
    assert_same_but(master, replica, what, true)
}

/// [`assert_same`], with or without lease deadlines (a full sync is a load,
/// and a load extends every lease from the load time).
fn assert_same_but(
    master: &RedisServer,
    replica: &RedisServer,
    what: &str,
    deadlines: bool,
) -> serde_json::Value {
    let mut m = master.client();
    let mut r = replica.client();
    let want = snapshot(&mut m, deadlines);
    eventually(what, || {
        let got = snapshot(&mut r, deadlines);
        if got == want {
            Ok(())
        } else {
            Err(format!("replica differs:\nmaster  {want}\nreplica {got}"))
        }
    });
    want
}

#[test]
fn a_full_sync_carries_the_registry() {
    let master = master();
    populate(&mut master.client());
    let replica = replica(&master);
    assert_same_but(
        &master,
        &replica,
        "the replica loads the master's registry",
        false,
    );
    // From then on the stream carries the master's deadlines.
    let mut con = master.client();
    lease(&mut con, "n1", 700_000);
    lease(&mut con, "n2", 700_000);
    assert_same(&master, &replica, "renewed leases reach the replica");
}

#[test]
fn the_replica_follows_every_write() {
    let master = master();
    let replica = replica(&master);
    let mut con = master.client();
    populate(&mut con);
    assert_same(&master, &replica, "the replica applies populate's writes");

    // More of each write, with values the master chose (time, epoch, seq).
    publish_str(&mut con, "chat:a", "ev", "more");
    run(&mut con, Leave::new("chat:a", "bob", "c3"));
    run(&mut con, ConnClose::new("alice", "c2"));
    open(&mut con, "dave", "c5", "n2");
    run(
        &mut con,
        Join::new("chat:b", "dave", "c5", "n2").with_presence(),
    );
    run(&mut con, Throttle::new("rl:alice", 15, 1, 60).quantity(2));
    lease(&mut con, "n2", 900_000);
    let state = assert_same(&master, &replica, "the replica applies later writes");
    assert_eq!(state["room chat:a"]["seq"], 5, "{state}");
    assert_eq!(state["presence dave"]["status"], "online", "{state}");
}

#[test]
fn the_replica_follows_a_lease_expiry_on_the_master() {
    let master = master();
    let replica = replica(&master);
    let mut con = master.client();
    populate(&mut con);
    assert_same(&master, &replica, "in sync before the expiry");

    // n2 stops renewing: the master's timer drops it and its connections.
    lease(&mut con, "n2", 200);
    assert_eventually!(
        array(&run(&mut con, Nodes)).len() == 1,
        "n2's lease runs out on the master"
    );
    let state = assert_same(&master, &replica, "the replica drops n2 too");
    assert_eq!(state["presence alice"]["connections"], 1, "{state}");
    assert_eq!(state["nodes"].as_array().map(Vec::len), Some(1), "{state}");
}

#[test]
fn the_replica_delivers_nothing_and_refuses_writes() {
    let master = master();
    let replica = replica(&master);
    let mut con = master.client();
    populate(&mut con);
    let sub = Subscriber::nodes(&replica, &["n1", "n2"]);
    publish_str(&mut con, "chat:a", "ev", "1");
    publish_str(&mut con, "chat:a", "ev", "2");
    assert_same(&master, &replica, "the publishes reached the replica");

    let mut rcon = replica.client();
    assert_eq!(
        info_field(&mut rcon, "broker", "deliveries").as_deref(),
        Some("0"),
        "only the master publishes to nodes"
    );
    // Whatever reaches a replica's subscribers comes from the master's
    // stream, never twice.
    let seen = sub.fence(&mut rcon);
    assert!(
        seen.len() <= 2,
        "at most one copy per publish (one node): {seen:?}"
    );

    let e = run_err(&mut rcon, Publish::string("chat:a", "ev", "x"));
    assert!(e.starts_with("READONLY"), "{e}");
    let e = run_err(&mut rcon, NodeLease::new("n3", 1000));
    assert!(e.starts_with("READONLY"), "{e}");
    // Reads work.
    let online = map(&run(&mut rcon, Online));
    assert_eq!(int(&online["connections"]), 3);
}

#[test]
fn the_replica_does_not_expire_leases_itself() {
    let master = master();
    let replica = replica(&master);
    let mut con = master.client();
    lease(&mut con, "n1", 600_000);
    open(&mut con, "alice", "c1", "n1");
    assert_same(&master, &replica, "in sync");
    // Cut the link: the replica keeps what it has, and its own timer must
    // not drop nodes, even ones whose deadline passes.
    let mut rcon = replica.client();
    let short = (now_ms() + 300).unsigned_abs();
    run(&mut con, NodeLease::new("n2", 300).deadline(short));
    assert_eventually!(
        array(&run(&mut rcon, Nodes))
            .iter()
            .any(|n| text(&map(n)["node"]) == "n2"),
        "n2's lease reaches the replica"
    );
    ok(&mut rcon, &["REPLICAOF", "127.0.0.1", "1"]); // a port nothing listens on
    std::thread::sleep(std::time::Duration::from_millis(800)); // past n2's deadline, several sweeps
    let info = info_field(&mut rcon, "broker", "leases_expired");
    assert_eq!(info.as_deref(), Some("0"), "a replica never expires leases");
}

#[test]
fn rooms_the_master_drops_are_dropped_on_the_replica() {
    // `brief` rooms keep history for 1 s; a 20 ms sweep drops them soon after.
    let master = RedisServer::builder()
        .module_args(["HISTORY", "brief", "10", "1", "SWEEP_MS", "20"])
        .server_args(["--repl-diskless-sync-delay", "0"])
        .start();
    let replica = RedisServer::builder()
        .module_args(["HISTORY", "brief", "10", "1", "SWEEP_MS", "20"])
        .replica_of(&master)
        .start();
    wait_for_sync(&replica);
    let mut con = master.client();
    let mut rcon = replica.client();
    let history = |con: &mut redis::Connection| {
        let h = map(&run(con, History::new("brief:b")));
        (int(&h["seq"]), text(&h["epoch"]))
    };

    publish_str(&mut con, "brief:b", "ev", "x");
    let (seq, epoch) = history(&mut con);
    assert_eq!(seq, 1);
    assert_eventually!(
        history(&mut rcon) == (1, epoch.clone()),
        "the publish reaches the replica"
    );
    // Empty and its history expired: the master drops the room...
    assert_eventually!(
        history(&mut con) == (0, String::new()),
        "the master drops brief:b"
    );
    // ...and tells the replica.
    assert_eventually!(
        history(&mut rcon) == (0, String::new()),
        "the replica drops brief:b"
    );
    // The room's next incarnation has a new epoch, the same on both.
    publish_str(&mut con, "brief:b", "ev", "y");
    let (seq, new_epoch) = history(&mut con);
    assert_eq!(seq, 1);
    assert_ne!(new_epoch, epoch);
    assert_eventually!(
        history(&mut rcon) == (1, new_epoch.clone()),
        "the new incarnation reaches the replica"
    );
}

/// The master's replication offset: how many bytes it has propagated.
fn repl_offset(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(con)
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("master_repl_offset")
}

#[test]
fn a_join_that_changes_nothing_is_not_replicated() {
    let master = master();
    let replica = replica(&master);
    let mut con = master.client();
    lease(&mut con, "n1", 700_000);
    open(&mut con, "alice", "a1", "n1");
    run(&mut con, Join::new("chat:a", "alice", "a1", "n1"));
    assert_same(&master, &replica, "the first join reaches the replica");

    // Joined again: nothing changes, nothing is propagated (like an SADD of
    // a member), and the reply still says where the room stands.
    let before = repl_offset(&mut con);
    let again = map(&run(&mut con, Join::new("chat:a", "alice", "a1", "n1")));
    assert_eq!(int(&again["first"]), 0);
    assert!(!text(&again["epoch"]).is_empty());
    assert_eq!(
        repl_offset(&mut con),
        before,
        "a join of a member is not replicated"
    );

    // A join of a member that turns the room's presence events on changes
    // the room: it is replicated, and the replica follows.
    run(
        &mut con,
        Join::new("chat:a", "alice", "a1", "n1").with_presence(),
    );
    assert!(
        repl_offset(&mut con) > before,
        "turning presence on is replicated"
    );
    assert_same(&master, &replica, "the replica has the room's presence on");
}
