//! The per-IP connection limit (`limits.max_conns_per_ip`) as
//! docs/PROTOCOL.md §10 states it: across every gateway node and, on a
//! Redis Cluster, across every shard (the address is counted in its own
//! hash slot: `BROKER.IP.OPEN`); and IPv6 clients counted by their network
//! (`limits.ipv6_prefix_len`, default /64). Real Redis, real gateways,
//! clients behind a trusted proxy (`X-Forwarded-For`).

use std::time::Duration;

use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{eventually_async, token, Client, ConnectError, Gateway, Options};
use broker_tests::{array, map, text, IpClose, IpOpen, Presence, RedisServer};

const WAIT: Duration = Duration::from_secs(30);

/// Connects `user` to `gw` as the client `forwarded` behind the proxy.
async fn connect(gw: &Gateway, user: &str, forwarded: &str) -> Result<Client, ConnectError> {
    let url = gw.ws_url(Some(&token(user, 3600, &[], &[])));
    Client::try_connect(&url, &[("x-forwarded-for", forwarded)]).await
}

/// Connects, expecting success.
async fn admitted(gw: &Gateway, user: &str, forwarded: &str) -> Client {
    connect(gw, user, forwarded)
        .await
        .unwrap_or_else(|e| panic!("{user} from {forwarded} on {}: {e:?}", gw.node))
}

/// Connects, expecting the per-IP refusal (HTTP 429).
async fn refused(gw: &Gateway, user: &str, forwarded: &str) {
    let outcome = connect(gw, user, forwarded).await;
    assert!(
        matches!(outcome, Err(ConnectError::Status(429))),
        "{user} from {forwarded} on {}: expected 429, got {:?}",
        gw.node,
        outcome.map(|c| c.conn.clone())
    );
}

/// Retries until `user` from `forwarded` is admitted (a place is given
/// back asynchronously).
async fn admitted_eventually(gw: &Gateway, user: &str, forwarded: &str, what: &str) -> Client {
    eventually_async(WAIT, what, || async {
        connect(gw, user, forwarded)
            .await
            .map_err(|e| format!("{e:?}"))
    })
    .await
}

#[tokio::test]
async fn ipv6_clients_of_one_64_share_the_limit() {
    let redis = RedisServer::start();
    let gw = Gateway::start(
        &redis,
        Options::default()
            .max_conns_per_ip(2)
            .trusted_proxies(&["127.0.0.0/8"]),
    )
    .await;
    // Two addresses of one /64 fill it.
    let first = admitted(&gw, "v6a", "2001:db8:1:2::1").await;
    let _second = admitted(&gw, "v6b", "2001:db8:1:2:aaaa:bbbb:cccc:dddd").await;
    refused(&gw, "v6c", "2001:db8:1:2::ffff").await;
    // The module counts the network, and shows it as the connection's ip.
    let p = map(&broker_tests::run(
        &mut redis.client(),
        Presence::new("v6a"),
    ));
    let conn = map(&array(&p["conns"])[0]);
    assert_eq!(text(&conn["ip"]), "2001:db8:1:2::/64");
    // The next /64 is another client; IPv4 (also mapped) counts alone.
    let _other = admitted(&gw, "v6d", "2001:db8:1:3::1").await;
    let _v4 = admitted(&gw, "v4a", "198.51.100.1").await;
    let _v4b = admitted(&gw, "v4b", "::ffff:198.51.100.1").await;
    refused(&gw, "v4c", "198.51.100.1").await;
    let _v4d = admitted(&gw, "v4d", "198.51.100.2").await;
    // A closed connection gives its place back.
    first.close().await;
    let _again = admitted_eventually(&gw, "v6e", "2001:db8:1:2::77", "a place of the /64").await;
    refused(&gw, "v6f", "2001:db8:1:2::78").await;
}

#[tokio::test]
async fn one_address_is_limited_across_shards_and_nodes_of_a_cluster() {
    const IP: &str = "198.51.100.7";
    let cluster = RedisCluster::start(3);
    let options = || {
        Options::default()
            .lease_ms(1000)
            .max_conns_per_ip(3)
            .trusted_proxies(&["127.0.0.0/8"])
            .redis_cluster(&cluster.urls())
    };
    let mut a = Gateway::start(&cluster.servers[0], options().node("ip-a")).await;
    let b = Gateway::start(&cluster.servers[0], options().node("ip-b")).await;

    // Users whose slots are on each master (two on each), so that
    // `CONN.OPEN` alone would count this address on three shards.
    let ip_master = cluster.master_index(IP);
    let mut by_master: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    for n in 0..200 {
        let user = format!("u{n}");
        let list = by_master.entry(cluster.master_index(&user)).or_default();
        if list.len() < 3 {
            list.push(user);
        }
        if by_master.len() == 3 && by_master.values().all(|l| l.len() == 3) {
            break;
        }
    }
    assert_eq!(by_master.len(), 3, "users on every master: {by_master:?}");
    let other: Vec<usize> = by_master
        .keys()
        .copied()
        .filter(|&m| m != ip_master)
        .collect();
    let user = |master: usize, i: usize| by_master[&master][i].clone();

    // Three connections of one address, from users on two masters that do
    // not hold the address's slot and on the one that does, over both
    // nodes: the address is full everywhere.
    let c1 = admitted(&a, &user(other[0], 0), IP).await;
    let _c2 = admitted(&b, &user(other[1], 0), IP).await;
    let _c3 = admitted(&a, &user(ip_master, 0), IP).await;
    for master in [other[0], other[1], ip_master] {
        refused(&a, &user(master, 1), IP).await;
        refused(&b, &user(master, 1), IP).await;
    }
    // Other addresses are not affected.
    let _elsewhere = admitted(&b, &user(other[0], 1), "198.51.100.8").await;
    // The address's shard holds a place for each of the three (their
    // users' slots are not the address's; the one opened on this shard
    // too counts once).
    let listed = |node: &str| {
        let reply = cluster.on(IP, &["BROKER.NODE.CONNS", node]);
        array(&reply)
            .iter()
            .map(|c| {
                let c = map(c);
                (text(&c["conn"]), text(&c["ip_hold"]))
            })
            .filter(|(_, ip)| ip == IP)
            .map(|(conn, _)| conn)
            .collect::<Vec<String>>()
    };
    assert_eq!(listed("ip-a").len() + listed("ip-b").len(), 3);

    // A close gives the place back.
    let closed = c1.conn.clone();
    c1.close().await;
    let c4 = admitted_eventually(
        &b,
        &user(other[0], 2),
        IP,
        "the place of a closed connection",
    )
    .await;
    assert!(!listed("ip-a").contains(&closed));
    refused(&b, &user(other[1], 2), IP).await;

    // A node killed with SIGKILL: once its lease ran out, every shard
    // drops what it held, places included.
    a.kill();
    let _c5 = admitted_eventually(&b, &user(ip_master, 2), IP, "the killed node's place").await;
    assert!(listed("ip-a").is_empty(), "the dead node holds no place");
    refused(&b, &user(other[1], 2), IP).await;

    // A stray place of node B (one it does not serve) is given back by
    // its reconciliation.
    let stray = IpOpen::new(IP, "ghost", "ghost-1", &b.node);
    cluster.run(stray);
    assert!(listed("ip-b").contains(&"ghost-1".to_string()));
    eventually_async(
        WAIT,
        "the reconciliation gives back a stray place",
        || async {
            if listed("ip-b").contains(&"ghost-1".to_string()) {
                Err("still held".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    drop(c4);
}

/// The places `BROKER.IP.OPEN` holds on one server, with `MAXIP 2`.
fn place(conn: &str) -> IpOpen {
    IpOpen::new("203.0.113.5", "someone", conn, "n1").max_ip(2)
}

/// `NODE.CONNS n1` as `(conn, ip_hold)` pairs.
fn places(con: &mut broker_tests::redis::Connection) -> Vec<(String, String)> {
    array(&broker_tests::ok(con, &["BROKER.NODE.CONNS", "n1"]))
        .iter()
        .map(|c| {
            let c = map(c);
            (text(&c["conn"]), text(&c["ip_hold"]))
        })
        .collect()
}

#[test]
fn places_survive_an_aof_restart_and_a_debug_reload_and_reach_a_replica() {
    let master = RedisServer::builder()
        .server_args(["--repl-diskless-sync-delay", "0"])
        .appendonly()
        .start();
    let mut con = master.client();
    broker_tests::lease(&mut con, "n1", 60_000);
    broker_tests::run(&mut con, place("p1"));
    broker_tests::run(&mut con, place("p2"));
    assert_eq!(
        broker_tests::run_err(&mut con, place("p3")),
        "LIMIT ip",
        "two places fill MAXIP 2"
    );
    let held = vec![
        ("p1".to_string(), "203.0.113.5".to_string()),
        ("p2".to_string(), "203.0.113.5".to_string()),
    ];
    assert_eq!(places(&mut con), held);

    // A replica: full sync, then the stream (a place given back).
    let replica = RedisServer::builder().replica_of(&master).start();
    broker_tests::wait_for_sync(&replica);
    let mut rcon = replica.client();
    assert_eq!(places(&mut rcon), held, "the full sync carries the places");
    assert_eq!(
        broker_tests::run(&mut con, IpClose::new("203.0.113.5", "p2")),
        broker_tests::redis::Value::Int(1)
    );
    broker_tests::eventually("the replica gives the place back too", || {
        let got = places(&mut rcon);
        if got == held[..1] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    broker_tests::run(&mut con, place("p2"));

    // The AOF (the replicated commands) and the RDB (DEBUG RELOAD) keep them.
    drop(rcon);
    drop(replica);
    let mut master = master;
    master.restart();
    let mut con = master.client();
    assert_eq!(places(&mut con), held, "after an AOF restart");
    assert_eq!(broker_tests::run_err(&mut con, place("p3")), "LIMIT ip");
    broker_tests::ok(&mut con, &["DEBUG", "RELOAD"]);
    assert_eq!(places(&mut con), held, "after DEBUG RELOAD");
    assert_eq!(broker_tests::run_err(&mut con, place("p3")), "LIMIT ip");
    // The node's release gives every place back.
    broker_tests::ok(&mut con, &["BROKER.NODE.RELEASE", "n1"]);
    broker_tests::lease(&mut con, "n1", 60_000);
    broker_tests::run(&mut con, place("p3"));
}
