//! Growing a Redis Cluster online: a master and its replica join a running
//! 3+3 cluster, and `redis-cli --cluster reshard` moves half of another
//! master's slots to it while clients publish, join, leave, connect and
//! disconnect in rooms and as users on those slots. The broker's state is
//! keys, so it moves with the slots (`docs/COMMANDS.md`, "Keys").

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::protocol::ServerFrame;
use broker_tests::cluster::{redis_cli, RedisCluster};
use broker_tests::gateway::{
    join, join_since, leave, msg_fields, publish, Client, Gateway, Options,
};
use broker_tests::{array, int, map, ok, text, History, Presence, RoomCount};
use serde_json::json;

/// Rooms (and listening users) on the source master's slots.
const ROOMS: usize = 8;
/// Publishes per room: history keeps 100 in `feed`, so all stay readable.
const PER_ROOM: u64 = 90;

async fn gateway(cluster: &RedisCluster) -> Gateway {
    Gateway::start(
        &cluster.servers[0],
        Options::default()
            .lease_ms(5000)
            .redis_cluster(&cluster.urls()),
    )
    .await
}

/// What the publisher saw: per room, the sequence numbers acked, and how
/// many publishes were refused.
struct Published {
    acked: Vec<Vec<u64>>,
    errors: u64,
}

/// Publishes to every room, round-robin, paced, until `stop` or
/// `PER_ROOM` each; a refused publish is counted and tried again.
async fn publish_all(
    mut client: Client,
    rooms: Vec<String>,
    pace: Duration,
    stop: Arc<AtomicBool>,
) -> (Client, Published) {
    let mut out = Published {
        acked: vec![Vec::new(); rooms.len()],
        errors: 0,
    };
    while !stop.load(Ordering::Relaxed) && out.acked.iter().any(|a| (a.len() as u64) < PER_ROOM) {
        for (i, room) in rooms.iter().enumerate() {
            if out.acked[i].len() as u64 >= PER_ROOM {
                continue;
            }
            let n = out.acked[i].len();
            match client.request(publish(room, "m", &json!(n))).await {
                ServerFrame::Ack { data, .. } => out.acked[i].push(data["seq"].as_u64().unwrap()),
                _ => out.errors += 1,
            }
            tokio::time::sleep(pace).await;
        }
    }
    (client, out)
}

/// Connects, joins two rooms, leaves one and disconnects, again and again
/// until `stop`; returns the number of refused requests and of cycles.
async fn churn(
    gw: &Gateway,
    users: Vec<String>,
    rooms: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let (mut errors, mut cycles) = (0, 0);
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let user = &users[k % users.len()];
        let mut c = gw.connect(user).await;
        for room in [&rooms[k % rooms.len()], &rooms[(k + 1) % rooms.len()]] {
            let reply = c.request(join(room)).await;
            if !matches!(reply, ServerFrame::Ack { .. }) {
                eprintln!("refused: join {room}: {reply:?}");
                errors += 1;
            }
        }
        let reply = c.request(leave(&rooms[k % rooms.len()])).await;
        if !matches!(reply, ServerFrame::Ack { .. }) {
            eprintln!("refused: leave: {reply:?}");
            errors += 1;
        }
        c.close().await;
        k += 1;
        cycles += 1;
    }
    (errors, cycles)
}

/// How long a listener may wait, after the last publish, for what it has
/// not received yet: the gateways see a new master at their slot-map check
/// (every 5 s) and then repair from history.
const REPAIR_WAIT: Duration = Duration::from_secs(20);

/// Receives `msg` frames until it has `expected` of them (set once the
/// publishing ended) or `REPAIR_WAIT` passed after that, then half a quiet
/// second more (a duplicate would show); returns the sequence numbers in
/// arrival order.
async fn listen(mut c: Client, expected: Arc<AtomicU64>) -> (Client, Vec<u64>) {
    let mut seqs = Vec::new();
    let mut ended: Option<Instant> = None;
    loop {
        let want = expected.load(Ordering::Relaxed);
        if want != u64::MAX {
            let since = *ended.get_or_insert_with(Instant::now);
            if seqs.len() as u64 >= want || since.elapsed() > REPAIR_WAIT {
                break;
            }
        }
        if let Some(f @ ServerFrame::Msg { .. }) = c.recv_within(Duration::from_millis(200)).await {
            seqs.push(msg_fields(&f).3);
        }
    }
    while let Some(f) = c.recv_within(Duration::from_millis(500)).await {
        if matches!(f, ServerFrame::Msg { .. }) {
            seqs.push(msg_fields(&f).3);
        }
    }
    (c, seqs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_keeps_presence_counts_sequences_and_history() {
    let mut cluster = RedisCluster::start(3);
    let target = cluster.add_master();
    cluster.wait_ok();
    let source = cluster.master_index("feed:m0");
    let rooms = cluster.names_on(source, "feed:m", ROOMS);
    let listeners = cluster.names_on(source, "u", ROOMS);
    let churners = cluster.names_on(source, "c", 6);
    let gw1 = gateway(&cluster).await;
    let gw2 = gateway(&cluster).await;

    let mut epochs = Vec::new();
    let mut clients = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        let mut c = gw.connect(&listeners[i]).await;
        epochs.push(c.join(room).await["epoch"].as_str().unwrap().to_string());
        clients.push(c);
    }
    let mut publisher = gw1.connect("publisher").await;
    for room in &rooms {
        publisher.join(room).await;
    }
    let memory_before: i64 = rooms
        .iter()
        .map(|r| int(&cluster.on(r, &["MEMORY", "USAGE", r])))
        .sum();

    // The load: listeners, a paced publisher, connections churning.
    let expected: Vec<Arc<AtomicU64>> = (0..ROOMS)
        .map(|_| Arc::new(AtomicU64::new(u64::MAX)))
        .collect();
    let listening: Vec<_> = clients
        .into_iter()
        .zip(&expected)
        .map(|(c, n)| tokio::spawn(listen(c, n.clone())))
        .collect();
    let load_stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_all(
        publisher,
        rooms.clone(),
        Duration::from_millis(15),
        load_stop.clone(),
    ));
    let churning = churn(&gw2, churners.clone(), rooms.clone(), load_stop.clone());

    // Half of the source's slots go to the new master, under that load.
    let half = cluster.slot_count(source) / 2;
    let args = cluster.reshard_args(source, target, half);
    let started = Instant::now();
    let resharded = Arc::new(AtomicU64::new(0));
    let reshard = {
        let (done, load_stop) = (resharded.clone(), load_stop.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = redis_cli(&args);
            done.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            load_stop.store(true, Ordering::Relaxed);
            out
        })
    };
    let (output, churned) = tokio::join!(reshard, churning);
    let output = output.unwrap();
    let reshard_ms = resharded.load(Ordering::Relaxed);
    let (publisher, published) = publishing.await.unwrap();
    // The gateways learn the new slot map within `CHECK_EVERY` (5 s), lease
    // and subscribe on the new master, and repair from history what its
    // rooms published meanwhile: the listeners get it live.
    for (n, acked) in expected.iter().zip(&published.acked) {
        n.store(acked.len() as u64, Ordering::Relaxed);
    }
    cluster.wait_ok();
    assert_eq!(cluster.slot_count(target), half, "{output}");
    let moved: Vec<&String> = rooms
        .iter()
        .filter(|r| cluster.master_index(r) == target)
        .collect();
    let users_moved = listeners
        .iter()
        .filter(|u| cluster.master_index(u) == target)
        .count();
    eprintln!(
        "reshard of {half} slots: {reshard_ms} ms; published {:?}; {} of {ROOMS} rooms and {users_moved} of {ROOMS} users moved; \
         publishes refused {}; churn cycles {} (refused {})",
        published.acked.iter().map(Vec::len).collect::<Vec<_>>(),
        moved.len(),
        published.errors,
        churned.1,
        churned.0
    );
    assert!(
        !moved.is_empty() && moved.len() < ROOMS,
        "some rooms move, some stay: {moved:?}"
    );
    assert!(users_moved > 0, "some users move");
    assert_eq!(
        published.errors, 0,
        "every publish is acked (ASK and TRYAGAIN followed)"
    );
    if churned.0 > 0 {
        for line in gw2
            .log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("lease"))
        {
            eprintln!("gw2: {line}");
        }
    }
    assert_eq!(churned.0, 0, "every join and leave is acked");

    // Sequences: each room's publishes were acked 1..=PER_ROOM, in order,
    // across the move; the epoch did not change; history holds them all.
    let mut total = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let n = published.acked[i].len() as u64;
        total.push(n);
        let expected: Vec<u64> = (1..=n).collect();
        assert_eq!(published.acked[i], expected, "{room}");
        let h = map(&cluster.run(History::new(room)));
        assert_eq!(int(&h["seq"]) as u64, n, "{room}");
        assert_eq!(text(&h["epoch"]), epochs[i], "{room} keeps its epoch");
        assert_eq!(
            array(&h["messages"]).len() as u64,
            n,
            "{room}'s history moved with it"
        );
        // The listener and the publisher are its members, on the right shard.
        let count = map(&cluster.run(RoomCount::new(room)));
        assert_eq!(
            (int(&count["users"]), int(&count["connections"])),
            (2, 2),
            "{room}"
        );
    }
    // Presence: every listener online with one connection; every churned
    // user offline; ONLINE summed over the masters counts each user once.
    for user in &listeners {
        let p = map(&cluster.run(Presence::new(user)));
        assert_eq!(
            (text(&p["status"]), int(&p["connections"])),
            ("online".into(), 1),
            "{user}"
        );
    }
    for user in &churners {
        let p = map(&cluster.run(Presence::new(user)));
        assert_eq!(text(&p["status"]), "offline", "{user}");
    }
    let online = gw1.admin_get("/api/online").await.json();
    assert_eq!(online["users"].as_u64(), Some(ROOMS as u64 + 1), "{online}");
    assert_eq!(
        online["connections"].as_u64(),
        Some(ROOMS as u64 + 1),
        "{online}"
    );

    // No message twice; what a listener missed live, recovery gives back.
    let mut missed_live = 0;
    for (i, task) in listening.into_iter().enumerate() {
        let (client, seqs) = task.await.unwrap();
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seqs.len(),
            "{}: a message came twice: {seqs:?}",
            rooms[i]
        );
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{}: in order",
            rooms[i]
        );
        let n = total[i];
        let first_gap = (1..=n).find(|s| !unique.contains(s));
        if let Some(gap) = first_gap {
            missed_live += n as usize - unique.len();
            let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
            let mut again = gw.connect(&listeners[i]).await;
            let id = again
                .send_request(join_since(&rooms[i], gap - 1, &epochs[i]))
                .await;
            let mut all = unique.clone();
            loop {
                match again.recv().await {
                    ServerFrame::Ack { id: got, data } if got == id => {
                        assert_eq!(data["recovered"], true, "{data}");
                        break;
                    }
                    f @ ServerFrame::Msg { .. } => {
                        all.insert(msg_fields(&f).3);
                    }
                    _ => {}
                }
            }
            assert_eq!(
                all,
                (1..=n).collect(),
                "{}: recovery fills the gap",
                rooms[i]
            );
            again.close().await;
        }
        client.close().await;
    }
    eprintln!("messages missed live and recovered with `since`: {missed_live}");
    assert_eq!(
        missed_live, 0,
        "the gateways repaired what moved rooms published"
    );
    publisher.close().await;

    // MEMORY USAGE grew with the history; every replica's keyspace digest
    // equals its master's.
    let memory_after: i64 = rooms
        .iter()
        .map(|r| int(&cluster.on(r, &["MEMORY", "USAGE", r])))
        .sum();
    assert!(
        memory_after > memory_before,
        "{memory_before} -> {memory_after}"
    );
    assert_replicas_match(&cluster);
    for index in [source, target] {
        let digest = text(&ok(
            &mut cluster.servers[index].client(),
            &["DEBUG", "DIGEST"],
        ));
        assert_ne!(digest, "0".repeat(40), "server {index} holds keys");
    }
}

/// Every replica's `DEBUG DIGEST` equals its master's once it has caught up.
fn assert_replicas_match(cluster: &RedisCluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for server in &cluster.servers {
        let mut con = server.client();
        let info = text(&ok(&mut con, &["INFO", "replication"]));
        if !info.contains("role:slave") {
            continue;
        }
        let master_port: u16 = info
            .lines()
            .find_map(|l| l.strip_prefix("master_port:"))
            .and_then(|p| p.trim().parse().ok())
            .expect("master_port");
        let master = cluster
            .servers
            .iter()
            .find(|s| s.port() == master_port)
            .expect("the master is one of ours");
        let mut master_con = master.client();
        loop {
            let _ = ok(&mut master_con, &["WAIT", "1", "1000"]);
            let want = text(&ok(&mut master_con, &["DEBUG", "DIGEST"]));
            let got = text(&ok(&mut con, &["DEBUG", "DIGEST"]));
            if want == got {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} digest {got} != master {master_port} {want}",
                server.port()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
