//! A soak: about 2,000 WebSocket connections on two gateway nodes (one
//! Redis) churn for `SOAK_SECONDS` — connections open and close (cleanly or
//! by dropping the socket), join and leave rooms and publish — while two
//! observers, members of every room for the whole run, publish at a steady
//! rate. Every connection checks, for as long as it is in a room, that it
//! gets every message of the room in order.
//!
//! At the end the module's counts (`BROKER.ONLINE`, `INFO broker`,
//! `BROKER.NODES`, `BROKER.PRESENCE`, `BROKER.ROOM.COUNT`/`MEMBERS`, the
//! gateway's `presence` request) match exactly the connections the test
//! holds; once the crowd is gone, Redis's `used_memory` and the gateways'
//! RSS are back near their level before it came; once the observers are
//! gone too, the module holds nothing.
//!
//! `SOAK_SECONDS` is the length of the churn (default 30, so CI stays
//! short). The long run:
//! `SOAK_SECONDS=300 cargo test --release -p broker-tests --test soak -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::protocol::ServerFrame;
use broker_tests::gateway::{
    eventually_async, join, leave, presence, presence_req, publish, rss_kib, Client, Gateway,
    Options,
};
use broker_tests::{
    array, info_field, int, map, run, text, History, Nodes, Online, RedisServer, RoomCount,
    RoomMembers,
};
use serde_json::json;

/// Rooms `soak:r0` .. `soak:r39`.
const ROOMS: usize = 40;
/// Connections the churn keeps open (one per slot task).
const SLOTS: usize = 2000;
/// Users the slots pick from: most users hold one or two connections.
const USERS: usize = 1200;
/// Rooms one churning connection is in at most.
const MAX_ROOMS: usize = 4;
/// Publishes per second by the two observers together.
const PUBLISH_RATE: u64 = 60;
/// How long the first connections take to come up (a ramp, not a storm).
const RAMP: Duration = Duration::from_secs(5);
/// Namespace of the soak's rooms: the defaults (public, no history) without
/// join/leave events, which would multiply the traffic by the room size.
const NAMESPACE: &str = "\n[namespaces.soak]\njoin_leave = false\n";
/// How long freed memory is given to go back before it is measured.
const SETTLE: Duration = Duration::from_secs(3);
/// Redis `used_memory` once the crowd is gone may exceed its level before
/// the crowd by this much. Measured: +0.5 MB after 15 s of churn, +0.8 MB
/// after 60 s, +1.0 MB after 150 s (the crowd itself takes 3.6 MB): the
/// observers' 40 rooms keep some capacity from their busiest moment.
const REDIS_MARGIN: i64 = 3 * 512 * 1024;
/// Redis `used_memory` with no one connected may exceed its level before
/// anyone connected by this much (measured: +0.5 MB whatever the length).
const EMPTY_REDIS_MARGIN: i64 = 1024 * 1024;
/// Redis `used_memory` at the end of the churn may exceed its level when the
/// crowd first came up (as many connections) by this much (measured +0.5
/// MB after 60 and 150 s).
const CHURN_REDIS_MARGIN: i64 = 3 * 512 * 1024;
/// A gateway's RSS once the crowd is gone may exceed its level before the
/// crowd by this much (measured +2.5 to +2.8 MiB; the crowd itself takes
/// +3.3 MiB per node, and must give some of it back).
const RSS_MARGIN_KIB: u64 = 4 * 1024;
/// A gateway's RSS at the end of the churn may exceed its level when the
/// crowd first came up by this much (measured +0.2 to +0.6 MiB). A leak of
/// 1 KiB per connection would add 4 MiB in the default run.
const CHURN_RSS_MARGIN_KIB: u64 = 2 * 1024;

/// The name of room `i`.
fn room(i: usize) -> String {
    format!("soak:r{i}")
}

/// xorshift64*: a small deterministic generator, one per task.
struct Rng(u64);

impl Rng {
    /// A generator for stream `n`.
    fn new(n: u64) -> Rng {
        Rng((0x9E37_79B9_7F4A_7C15 ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03)) | 1)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }

    /// A duration in `lo..hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below((hi - lo) as usize) as u64)
    }
}

/// Counters of the whole run, shared by every task.
#[derive(Default)]
struct Stats {
    opened: AtomicU64,
    closed_clean: AtomicU64,
    dropped: AtomicU64,
    joins: AtomicU64,
    leaves: AtomicU64,
    client_pubs: AtomicU64,
    observer_pubs: AtomicU64,
    delivered: AtomicU64,
    /// Messages of a room that arrived before its join ack with a `seq` the
    /// ack already covers (printed; not counted as deliveries; 0 so far).
    early: AtomicU64,
    /// Messages of a room the connection was not in.
    stray: AtomicU64,
    /// Messages a `missed` frame reported as not deliverable (the node's
    /// link to Redis was lost and the namespace keeps no history to
    /// repair from: seen when the machine is starved of CPU).
    reported_missed: AtomicU64,
    /// Slots whose first connection is up.
    ready: AtomicU64,
    /// Gaps, repeats, reorderings, epoch changes, missing messages.
    violations: Mutex<Vec<String>>,
}

impl Stats {
    /// Records a violation (the first 50 are kept).
    fn violation(&self, what: String) {
        let mut v = self.violations.lock().expect("violations");
        if v.len() < 50 {
            v.push(what);
        }
    }
}

/// What a connection knows of a room it is in.
struct Track {
    /// Last sequence number received (or the join ack's).
    last: u64,
    epoch: String,
    /// The join ack's `seq`, and the messages received since.
    joined_at: u64,
    since_join: u64,
}

/// A connection the test holds: the client and the rooms it is in.
struct Conn {
    client: Client,
    rooms: BTreeMap<String, Track>,
}

impl Conn {
    /// Connects `user` to `gw`.
    async fn open(gw: &Gateway, user: &str, stats: &Stats) -> Conn {
        let client = gw.connect(user).await;
        stats.opened.fetch_add(1, Ordering::Relaxed);
        Conn {
            client,
            rooms: BTreeMap::new(),
        }
    }

    /// Checks one frame: a message of a room must follow the last one seen.
    fn on_frame(&mut self, frame: ServerFrame, stats: &Stats) {
        if let ServerFrame::Missed {
            room, seq, epoch, ..
        } = &frame
        {
            // A gap the server reported (docs/PROTOCOL.md, `missed`): live
            // messages go on after `seq`; a gap nobody reported stays a
            // violation below.
            if let Some(track) = self.rooms.get_mut(room) {
                if *epoch == track.epoch && *seq > track.last {
                    stats
                        .reported_missed
                        .fetch_add(seq - track.last, Ordering::Relaxed);
                    track.last = *seq;
                }
            }
            return;
        }
        let ServerFrame::Msg {
            room, seq, epoch, ..
        } = frame
        else {
            return;
        };
        let Some(track) = self.rooms.get_mut(&room) else {
            stats.stray.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if epoch != track.epoch {
            stats.violation(format!(
                "{} ({}): {room} epoch {} -> {epoch}",
                self.client.conn, self.client.user, track.epoch
            ));
        } else if seq != track.last + 1 {
            stats.violation(format!(
                "{} ({}): {room} seq {} after {} (joined at seq {}, {} messages since)",
                self.client.conn,
                self.client.user,
                seq,
                track.last,
                track.joined_at,
                track.since_join
            ));
        }
        track.last = seq;
        track.since_join += 1;
        stats.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Handles the frames that arrived while a request was answered.
    fn on_queued(&mut self, stats: &Stats) {
        for frame in self.client.take_queued() {
            self.on_frame(frame, stats);
        }
    }

    /// Reads and checks frames until `deadline`.
    async fn read_until(&mut self, deadline: Instant, stats: &Stats) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.client.recv_within(left).await {
                Some(frame) => self.on_frame(frame, stats),
                None => return,
            }
        }
    }

    /// Joins `room` and starts tracking it from the ack's `seq`.
    async fn join(&mut self, room: &str, stats: &Stats) {
        let ack = self.client.ack(join(room)).await;
        stats.joins.fetch_add(1, Ordering::Relaxed);
        let last = ack["seq"].as_u64().expect("join ack seq");
        let epoch = ack["epoch"].as_str().expect("join ack epoch").to_string();
        // Frames that came before the ack: this room's messages up to the
        // ack's seq were published before the join took effect.
        let queued = self.client.take_queued();
        self.rooms.insert(
            room.to_string(),
            Track {
                last,
                epoch,
                joined_at: last,
                since_join: 0,
            },
        );
        for frame in queued {
            match &frame {
                ServerFrame::Msg { room: r, seq, .. } if r == room && *seq <= last => {
                    stats.early.fetch_add(1, Ordering::Relaxed);
                }
                _ => self.on_frame(frame, stats),
            }
        }
    }

    /// Joins `room` unless the connection is in it already (a second join
    /// is allowed, but its ack says nothing about the stream in flight).
    async fn join_new(&mut self, room: &str, stats: &Stats) {
        if !self.rooms.contains_key(room) {
            self.join(room, stats).await;
        }
    }

    /// Leaves `room` (what arrived before the ack still counts).
    async fn leave(&mut self, room: &str, stats: &Stats) {
        self.client.ack(leave(room)).await;
        stats.leaves.fetch_add(1, Ordering::Relaxed);
        self.on_queued(stats);
        self.rooms.remove(room);
    }

    /// Publishes into `room` (the connection gets its own message too).
    async fn publish(&mut self, room: &str, n: u64) {
        self.client
            .ack(publish(room, "m", &json!({"n": n, "by": self.client.conn})))
            .await;
    }

    /// Reads until every tracked room is at `finals`; records what is
    /// missing after `limit`.
    async fn catch_up(&mut self, finals: &BTreeMap<String, u64>, limit: Duration, stats: &Stats) {
        let deadline = Instant::now() + limit;
        let behind = |c: &Conn| c.rooms.iter().any(|(r, t)| t.last < finals[r]);
        while behind(self) && Instant::now() < deadline {
            self.read_until(
                (Instant::now() + Duration::from_millis(100)).min(deadline),
                stats,
            )
            .await;
        }
        for (r, t) in &self.rooms {
            if t.last != finals[r] {
                stats.violation(format!(
                    "{} ({}): {r} ends at {} of {}",
                    self.client.conn, self.client.user, t.last, finals[r]
                ));
            }
        }
    }
}

/// One slot: a connection at a time, living for a random number of actions
/// (join, leave, publish, or just reading), then closed cleanly or dropped
/// and replaced by another one, until `until`. Returns the connection it
/// holds then, if any.
async fn slot(
    gws: Arc<Vec<Gateway>>,
    stats: Arc<Stats>,
    index: usize,
    until: Instant,
) -> Option<Conn> {
    let mut rng = Rng::new(index as u64 + 1);
    tokio::time::sleep(RAMP * index as u32 / SLOTS as u32).await;
    let mut first = true;
    loop {
        let user = format!("u{}", rng.below(USERS));
        let mut conn = Conn::open(&gws[rng.below(gws.len())], &user, &stats).await;
        for _ in 0..=rng.below(2) {
            conn.join_new(&room(rng.below(ROOMS)), &stats).await;
        }
        if first {
            stats.ready.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        for _ in 0..=rng.below(20) {
            let due = Instant::now() + rng.ms(1000, 6000);
            if due >= until {
                conn.read_until(until, &stats).await;
                return Some(conn);
            }
            conn.read_until(due, &stats).await;
            match rng.below(10) {
                0..=2 if conn.rooms.len() < MAX_ROOMS => {
                    conn.join_new(&room(rng.below(ROOMS)), &stats).await;
                }
                3..=5 if !conn.rooms.is_empty() => {
                    let pick = rng.below(conn.rooms.len());
                    let r = conn.rooms.keys().nth(pick).cloned().expect("a room");
                    conn.leave(&r, &stats).await;
                }
                6 if !conn.rooms.is_empty() => {
                    let pick = rng.below(conn.rooms.len());
                    let r = conn.rooms.keys().nth(pick).cloned().expect("a room");
                    let n = stats.client_pubs.fetch_add(1, Ordering::Relaxed);
                    conn.publish(&r, n).await;
                    conn.on_queued(&stats);
                }
                _ => {}
            }
        }
        if rng.below(2) == 0 {
            conn.client.close().await;
            stats.closed_clean.fetch_add(1, Ordering::Relaxed);
        } else {
            drop(conn); // no close frame: the socket just goes away
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(rng.ms(0, 500)).await;
        if Instant::now() >= until {
            return None;
        }
    }
}

/// An observer: a member of every room on gateway `k` that publishes
/// `PUBLISH_RATE / 2` messages a second round the rooms until `until`.
async fn observer(mut conn: Conn, k: usize, stats: Arc<Stats>, until: Instant) -> Conn {
    let rate = PUBLISH_RATE / 2;
    let started = Instant::now();
    let mut n = 0u64;
    loop {
        let due = started + Duration::from_micros(n * 1_000_000 / rate);
        if due >= until {
            conn.read_until(until, &stats).await;
            return conn;
        }
        conn.read_until(due, &stats).await;
        conn.publish(&room((n as usize * 2 + k) % ROOMS), n).await;
        conn.on_queued(&stats);
        stats.observer_pubs.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
}

/// Redis `INFO memory` `used_memory`, in bytes.
fn used_memory(redis: &RedisServer) -> i64 {
    info_field(&mut redis.client(), "memory", "used_memory")
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

/// Memory of the gateways (RSS, KiB) and Redis (`used_memory`, bytes).
#[derive(Debug, Clone)]
struct Memory {
    rss_kib: Vec<u64>,
    redis: i64,
}

/// Measures [`Memory`] now.
fn memory(gws: &[Gateway], redis: &RedisServer) -> Memory {
    Memory {
        rss_kib: gws.iter().map(Gateway::rss_kib).collect(),
        redis: used_memory(redis),
    }
}

/// The rooms of the module's view of `user`, per connection id, with the
/// node, from `BROKER.PRESENCE`.
type UserView = BTreeMap<String, (String, BTreeSet<String>)>;

/// Compares the module's and the gateway's counts with the connections
/// held (`held`); `Err` describes the first difference.
async fn check_counts(
    redis: &RedisServer,
    gws: &[Gateway],
    held: &mut [Conn],
) -> Result<String, String> {
    // The model.
    let mut per_user: BTreeMap<String, UserView> = BTreeMap::new();
    let mut per_node: BTreeMap<String, i64> = gws.iter().map(|g| (g.node.clone(), 0)).collect();
    let mut per_room: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for c in held.iter() {
        let mut rooms: BTreeSet<String> = c.rooms.keys().cloned().collect();
        rooms.insert(format!("user:{}", c.client.user));
        for r in &rooms {
            *per_room
                .entry(r.clone())
                .or_default()
                .entry(c.client.user.clone())
                .or_default() += 1;
        }
        per_user
            .entry(c.client.user.clone())
            .or_default()
            .insert(c.client.conn.clone(), (c.client.node.clone(), rooms));
        *per_node.entry(c.client.node.clone()).or_default() += 1;
    }
    let (users, conns) = (per_user.len() as i64, held.len() as i64);

    let mut con = redis.client();
    let online = map(&run(&mut con, Online));
    let got = (int(&online["users"]), int(&online["connections"]));
    if got != (users, conns) {
        return Err(format!(
            "BROKER.ONLINE {got:?}, holding {:?}",
            (users, conns)
        ));
    }
    for (field, want) in [
        ("connections", conns),
        ("users", users),
        ("nodes", gws.len() as i64),
        ("rooms", per_room.len() as i64),
    ] {
        let got = info_field(&mut con, "broker", field).unwrap_or_default();
        if got.trim() != want.to_string() {
            return Err(format!("INFO broker {field}: {got}, expected {want}"));
        }
    }
    let nodes: BTreeMap<String, i64> = array(&run(&mut con, Nodes))
        .iter()
        .map(|n| {
            let n = map(n);
            (text(&n["node"]), int(&n["connections"]))
        })
        .collect();
    if nodes != per_node {
        return Err(format!("BROKER.NODES {nodes:?}, holding {per_node:?}"));
    }
    for r in (0..ROOMS).map(room) {
        let want = per_room.get(&r).cloned().unwrap_or_default();
        let want_conns: i64 = want.values().sum();
        let count = map(&run(&mut con, RoomCount::new(&r)));
        let got = (int(&count["users"]), int(&count["connections"]));
        if got != (want.len() as i64, want_conns) {
            return Err(format!(
                "{r}: BROKER.ROOM.COUNT {got:?}, holding {:?}",
                (want.len(), want_conns)
            ));
        }
        let members: BTreeMap<String, i64> = map(&run(
            &mut con,
            RoomMembers::new(&r).limit(RoomMembers::MAX_LIMIT),
        ))
        .iter()
        .map(|(u, n)| (u.clone(), int(n)))
        .collect();
        if members != want {
            return Err(format!(
                "{r}: BROKER.ROOM.MEMBERS differs from what the test holds"
            ));
        }
    }
    // The gateway's view, through a `presence` request of an observer
    // (the first two held connections), one room per node in turn.
    for (i, r) in (0..ROOMS).map(room).enumerate() {
        let want = per_room.get(&r).cloned().unwrap_or_default();
        let asker = &mut held[i % 2];
        let ack = asker.client.ack(presence_req(&r)).await;
        let got: BTreeMap<String, i64> = ack["users"]
            .as_array()
            .expect("presence ack users")
            .iter()
            .map(|u| {
                (
                    u["user"].as_str().expect("user").to_string(),
                    u["conns"].as_i64().expect("conns"),
                )
            })
            .collect();
        if got != want || ack["count"].as_u64() != Some(want.len() as u64) {
            return Err(format!(
                "{r}: the gateway's presence differs from what the test holds"
            ));
        }
    }
    // Every 10th user the test holds, and a few it does not.
    let mut sampled = 0;
    for (user, want) in per_user.iter().step_by(10) {
        let got: UserView = presence(redis, user)
            .into_iter()
            .map(|c| (c.conn, (c.node, c.rooms.into_iter().collect())))
            .collect();
        if got != *want {
            return Err(format!("BROKER.PRESENCE {user}: {got:?}, holding {want:?}"));
        }
        sampled += 1;
    }
    for u in (0..USERS).step_by(97) {
        let user = format!("u{u}");
        if !per_user.contains_key(&user) && !presence(redis, &user).is_empty() {
            return Err(format!(
                "BROKER.PRESENCE {user}: online, the test holds none"
            ));
        }
    }
    Ok(format!(
        "{users} users, {conns} connections ({per_node:?}), {} rooms, {sampled} users' presence compared",
        per_room.len()
    ))
}

/// [`check_counts`] until it passes; panics with the last difference after
/// 15 s (connections dropped just before the end may still be closing).
async fn counts_eventually(
    redis: &RedisServer,
    gws: &[Gateway],
    held: &mut [Conn],
    what: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match check_counts(redis, gws, held).await {
            Ok(summary) => return summary,
            Err(last) if Instant::now() > deadline => panic!("{what}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_churn_and_the_counts_stay_exact() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // The registry's memory is what this measures: the lifecycle stream
    // (capped by `EVENTS`, its own test in lifecycle.rs) is off.
    let redis = RedisServer::builder().module_args(["EVENTS", "0"]).start();
    let redis_empty = used_memory(&redis);
    let opts = Options {
        max_conns_per_ip: 100_000,
        max_conns_per_user: 64,
        extra_toml: NAMESPACE.to_string(),
        ..Options::default()
    };
    let gws = Arc::new(vec![
        Gateway::start(&redis, opts.clone()).await,
        Gateway::start(&redis, opts).await,
    ]);
    let stats = Arc::new(Stats::default());

    // The known set: two observers, members of every room.
    let mut observers = Vec::new();
    for (k, gw) in gws.iter().enumerate() {
        let mut conn = Conn::open(gw, &format!("observer{k}"), &stats).await;
        for r in (0..ROOMS).map(room) {
            conn.join(&r, &stats).await;
        }
        observers.push(conn);
    }
    let churn_start = Instant::now() + RAMP + Duration::from_secs(2);
    let until = churn_start + Duration::from_secs(seconds);
    let observer_tasks: Vec<_> = observers
        .into_iter()
        .enumerate()
        .map(|(k, conn)| tokio::spawn(observer(conn, k, stats.clone(), until)))
        .collect();
    // Warm-up point: the known set, publishing for a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = memory(&gws, &redis);

    // Peaks, sampled every 250 ms from a thread of its own.
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let pids: Vec<u32> = gws.iter().map(|g| g.pid().expect("running")).collect();
        let mut con = redis.client();
        let stop = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = (vec![0u64; pids.len()], 0i64);
            while !stop.load(Ordering::Relaxed) {
                for (p, pid) in peak.0.iter_mut().zip(&pids) {
                    *p = (*p).max(rss_kib(*pid));
                }
                let used = info_field(&mut con, "memory", "used_memory")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                peak.1 = peak.1.max(used);
                std::thread::sleep(Duration::from_millis(250));
            }
            peak
        })
    };

    // The crowd.
    let slots: Vec<_> = (0..SLOTS)
        .map(|i| tokio::spawn(slot(gws.clone(), stats.clone(), i, until)))
        .collect();
    eventually_async(RAMP * 4, "every slot connected once", || async {
        let ready = stats.ready.load(Ordering::Relaxed);
        if ready as usize == SLOTS {
            Ok(())
        } else {
            Err(format!("{ready} of {SLOTS}"))
        }
    })
    .await;
    let crowd = memory(&gws, &redis);
    let crowd_online = broker_tests::gateway::online(&redis);

    // The churn runs until `until`; then every task hands back what it holds.
    let mut held = Vec::new();
    for t in observer_tasks {
        held.push(t.await.expect("an observer"));
    }
    for t in slots {
        held.extend(t.await.expect("a slot"));
    }
    sampling.store(true, Ordering::Relaxed);
    let (peak_rss, peak_redis) = sampler.join().expect("the sampler");

    // Nothing lost: every held connection reaches each of its rooms' last
    // message (the observers all of them), having seen every one since it
    // joined.
    let mut con = redis.client();
    let finals: BTreeMap<String, u64> = (0..ROOMS)
        .map(room)
        .map(|r| {
            let h = map(&run(&mut con, History::new(&r)));
            (r, int(&h["seq"]) as u64)
        })
        .collect();
    let catch_up = held
        .iter_mut()
        .map(|c| c.catch_up(&finals, Duration::from_secs(20), &stats));
    futures_util::future::join_all(catch_up).await;

    let counts = counts_eventually(&redis, &gws, &mut held, "exact counts").await;
    let with_held = memory(&gws, &redis);
    let mut delivered_metric = 0.0;
    for gw in gws.iter() {
        delivered_metric += gw.metric("broker_messages_delivered_total").await;
        assert_eq!(
            gw.metric("broker_slow_consumer_disconnects_total").await,
            0.0,
            "nobody was too slow"
        );
    }

    // The crowd leaves (half cleanly, half by dropping the socket); the
    // known set, the observers, stays.
    let crowd_left = held.split_off(2);
    for (i, c) in crowd_left.into_iter().enumerate() {
        if i % 2 == 0 {
            c.client.close().await;
        } else {
            drop(c);
        }
    }
    counts_eventually(&redis, &gws, &mut held, "only the observers left").await;
    // Freed memory goes back to the system within seconds: give it
    // `SETTLE`, then wait (bounded) for the bounds in case a loaded machine
    // is slower.
    tokio::time::sleep(SETTLE).await;
    let back = |m: &Memory| {
        m.redis <= before.redis + REDIS_MARGIN
            && (0..m.rss_kib.len()).all(|k| {
                m.rss_kib[k] <= before.rss_kib[k] + RSS_MARGIN_KIB
                    && m.rss_kib[k] < with_held.rss_kib[k]
            })
    };
    let settle = Instant::now();
    let mut after = memory(&gws, &redis);
    while !back(&after) && settle.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = memory(&gws, &redis);
    }
    let settled_in = SETTLE + settle.elapsed();

    // Everyone leaves: the module holds nothing.
    for c in held.drain(..) {
        c.client.close().await;
    }
    eventually_async(Duration::from_secs(15), "the module empty", || async {
        let mut con = redis.client();
        let got: Vec<String> = ["connections", "users", "rooms"]
            .iter()
            .map(|f| info_field(&mut con, "broker", f).unwrap_or_default())
            .collect();
        let online = broker_tests::gateway::online(&redis);
        if got.iter().all(|v| v.trim() == "0") && online == (0, 0) {
            Ok(())
        } else {
            Err(format!(
                "INFO broker connections/users/rooms {got:?}, ONLINE {online:?}"
            ))
        }
    })
    .await;
    let empty = memory(&gws, &redis);

    let violations = stats.violations.lock().expect("violations").clone();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak {seconds} s on 2 nodes: {} connections opened, {} closed cleanly, {} dropped; \
         {} joins, {} leaves; {} observer publishes ({PUBLISH_RATE}/s) and {} client publishes; \
         {} deliveries checked in order ({} early, {} stray, {} reported missed), gateways \
         delivered {delivered_metric}",
        load(&stats.opened),
        load(&stats.closed_clean),
        load(&stats.dropped),
        load(&stats.joins),
        load(&stats.leaves),
        load(&stats.observer_pubs),
        load(&stats.client_pubs),
        load(&stats.delivered),
        load(&stats.early),
        load(&stats.stray),
        load(&stats.reported_missed),
    );
    println!(
        "  with the crowd up: ONLINE {crowd_online:?}; at the end: {counts}; last seqs {:?}",
        finals.values().collect::<Vec<_>>()
    );
    println!(
        "  gateway RSS KiB: {:?} before the crowd, {:?} with it, {peak_rss:?} peak, {:?} at the \
         end of the churn, {:?} after it left ({settled_in:?} to settle), {:?} with no one",
        before.rss_kib, crowd.rss_kib, with_held.rss_kib, after.rss_kib, empty.rss_kib
    );
    println!(
        "  Redis used_memory bytes: {redis_empty} empty, {} before the crowd, {} with it, \
         {peak_redis} peak, {} at the end of the churn, {} after it left, {} with no one",
        before.redis, crowd.redis, with_held.redis, after.redis, empty.redis
    );

    assert!(
        violations.is_empty(),
        "messages lost, repeated or out of order: {violations:#?}"
    );
    assert_eq!(
        load(&stats.stray),
        0,
        "messages of rooms a connection was not in"
    );
    assert!(
        load(&stats.opened) as usize > SLOTS + 2,
        "the connections churned"
    );
    // Memory: the churn itself leaves nothing behind (the same number of
    // connections before and after it), and the crowd gives back what it
    // took when it leaves.
    assert!(
        with_held.redis <= crowd.redis + CHURN_REDIS_MARGIN,
        "Redis used_memory grew over the churn: {} with the crowd, {} at the end of the churn",
        crowd.redis,
        with_held.redis
    );
    assert!(
        after.redis <= before.redis + REDIS_MARGIN,
        "Redis used_memory back near its level before the crowd: {} -> {} bytes",
        before.redis,
        after.redis
    );
    assert!(
        empty.redis <= redis_empty + EMPTY_REDIS_MARGIN,
        "Redis used_memory with no one: {redis_empty} at start, {} at the end",
        empty.redis
    );
    for k in 0..gws.len() {
        let (then, crowd, held, now) = (
            before.rss_kib[k],
            crowd.rss_kib[k],
            with_held.rss_kib[k],
            after.rss_kib[k],
        );
        assert!(
            held <= crowd + CHURN_RSS_MARGIN_KIB,
            "gateway {k} RSS grew over the churn: {crowd} KiB with the crowd, {held} at its end"
        );
        assert!(
            now <= then + RSS_MARGIN_KIB && now < held,
            "gateway {k} RSS back near its level before the crowd: {then} KiB before, {held} \
             with it, {now} after it left"
        );
    }
}
