//! A soak: about 2,000 connections on two gateway nodes churning — closing
//! cleanly or abruptly, reconnecting, joining and leaving rooms — while a
//! publisher keeps 20 rooms busy. At the end the module's counts match the
//! live connections exactly, members who stayed saw every message in order,
//! and once everything is closed Redis and the gateways are back near their
//! starting memory.
//!
//! `SOAK_SECONDS` sets the churn's length (default 30, so CI stays short):
//! `SOAK_SECONDS=300 cargo test --release -p broker-tests --test churn_soak -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::protocol::ServerFrame;
use broker_tests::gateway::{eventually_async, leave, msg_fields, Client, Gateway, Options};
use broker_tests::{info_field, int, map, ok, RedisServer};
use serde_json::json;

const ROOMS: usize = 20;
const WORKERS: usize = 8;
const SLOTS_PER_WORKER: usize = 250;
/// Publishes per second over all rooms.
const PUBLISH_RATE: u64 = 50;

fn room(i: usize) -> String {
    format!("soak:r{i}")
}

/// A tiny deterministic generator (xorshift), one per worker.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One connection the test holds, and the rooms it is in.
struct Slot {
    client: Client,
    user: String,
    rooms: BTreeSet<String>,
}

/// Opens `user` on one of the gateways and joins one or two rooms.
async fn open(gws: &[Gateway], rng: &mut Rng, user: &str) -> Slot {
    let mut client = gws[rng.below(gws.len())].connect(user).await;
    let mut rooms = BTreeSet::new();
    for _ in 0..=rng.below(2) {
        let r = room(rng.below(ROOMS));
        client.join(&r).await;
        rooms.insert(r);
    }
    Slot {
        client,
        user: user.to_string(),
        rooms,
    }
}

fn used_memory(redis: &RedisServer) -> i64 {
    let mut con = redis.client();
    let info = broker_tests::text(&ok(&mut con, &["INFO", "memory"]));
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_churn_and_the_counts_stay_exact() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let redis = RedisServer::start();
    let redis_start = used_memory(&redis);
    let opts = Options::default().max_conns_per_ip(100_000);
    let gws = Arc::new(vec![
        Gateway::start(&redis, opts.clone()).await,
        Gateway::start(&redis, opts).await,
    ]);
    let start_rss: Vec<u64> = gws.iter().map(Gateway::rss_kib).collect();

    // Observers: one member per room that stays for the whole run and
    // checks that it sees every message, in order.
    let stop = Arc::new(AtomicBool::new(false));
    let mut observers = Vec::new();
    for i in 0..ROOMS {
        let mut c = gws[i % 2].connect(&format!("observer{i}")).await;
        c.join(&room(i)).await;
        let stop = stop.clone();
        observers.push(tokio::spawn(async move {
            let mut last: Option<u64> = None;
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(frame) = c.recv_within(Duration::from_millis(100)).await {
                    if let ServerFrame::Msg { .. } = frame {
                        let seq = msg_fields(&frame).3;
                        if let Some(prev) = last {
                            assert_eq!(seq, prev + 1, "observer {i}: a gap or a repeat");
                        }
                        last = Some(seq);
                        seen += 1;
                    }
                }
            }
            (c, last, seen)
        }));
    }

    // The publisher: PUBLISH_RATE messages a second, round robin.
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, published) = (stop.clone(), published.clone());
        let mut con = redis.client();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = started + Duration::from_millis(n * 1000 / PUBLISH_RATE);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let r = room(n as usize % ROOMS);
                ok(
                    &mut con,
                    &[
                        "BROKER.PUBLISH",
                        &r,
                        "m",
                        &json!({"n": n}).to_string(),
                        "FORMAT",
                        "json",
                    ],
                );
                n += 1;
                published.store(n, Ordering::Relaxed);
            }
        })
    };

    // Warm-up: every slot connected.
    let mut workers = Vec::new();
    let warm = Arc::new(tokio::sync::Barrier::new(WORKERS + 1));
    let churn_until = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let ops = Arc::new(AtomicU64::new(0));
    for w in 0..WORKERS {
        let (gws, warm, churn_until, ops) =
            (gws.clone(), warm.clone(), churn_until.clone(), ops.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1));
            let mut slots = Vec::new();
            for s in 0..SLOTS_PER_WORKER {
                slots.push(Some(open(&gws, &mut rng, &format!("u{w}-{s}")).await));
            }
            warm.wait().await;
            warm.wait().await; // the main task took its measurements
            let until = churn_until.lock().unwrap().expect("set");
            while Instant::now() < until {
                let i = rng.below(SLOTS_PER_WORKER);
                let user = format!("u{w}-{i}");
                match (slots[i].take(), rng.below(6)) {
                    (None, _) => slots[i] = Some(open(&gws, &mut rng, &user).await),
                    (Some(slot), 0) => slot.client.close().await,
                    (Some(slot), 1) => drop(slot), // abrupt: no close frame
                    (Some(mut slot), 2 | 3) => {
                        let r = room(rng.below(ROOMS));
                        if slot.rooms.insert(r.clone()) {
                            slot.client.join(&r).await;
                        }
                        slots[i] = Some(slot);
                    }
                    (Some(mut slot), _) => {
                        if let Some(r) = slot.rooms.iter().next().cloned() {
                            slot.client.ack(leave(&r)).await;
                            slot.rooms.remove(&r);
                        }
                        // Read what queued up meanwhile.
                        let _ = slot.client.take_queued();
                        let _ = slot.client.recv_within(Duration::from_millis(1)).await;
                        slots[i] = Some(slot);
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            slots.into_iter().flatten().collect::<Vec<Slot>>()
        }));
    }
    warm.wait().await;
    let warm_rss: Vec<u64> = gws.iter().map(Gateway::rss_kib).collect();
    let warm_redis = used_memory(&redis);
    *churn_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(seconds));
    warm.wait().await;

    let mut live: Vec<Slot> = Vec::new();
    for w in workers {
        live.extend(w.await.expect("a worker"));
    }
    let churn_ops = ops.load(Ordering::Relaxed);

    // Counts: the module against what the test holds (+ the observers).
    let (users, conns) = (live.len() + ROOMS, live.len() + ROOMS);
    let settled = eventually_async(Duration::from_secs(15), "exact counts", || async {
        let mut con = redis.client();
        let online = map(&ok(&mut con, &["BROKER.ONLINE"]));
        let got = (
            int(&online["users"]) as usize,
            int(&online["connections"]) as usize,
        );
        if got != (users, conns) {
            return Err(format!("ONLINE {got:?}, holding {:?}", (users, conns)));
        }
        let mut expected: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for i in 0..ROOMS {
            expected.insert(room(i), (1, 1)); // the observer
        }
        for slot in &live {
            for r in &slot.rooms {
                let e = expected.entry(r.clone()).or_default();
                *e = (e.0 + 1, e.1 + 1);
            }
        }
        for (r, want) in &expected {
            let count = map(&ok(&mut con, &["BROKER.ROOM.COUNT", r]));
            let got = (
                int(&count["users"]) as usize,
                int(&count["connections"]) as usize,
            );
            if got != *want {
                return Err(format!("{r}: ROOM.COUNT {got:?}, expected {want:?}"));
            }
        }
        for slot in live.iter().step_by(97) {
            let p = map(&ok(&mut con, &["BROKER.PRESENCE", &slot.user]));
            if int(&p["connections"]) != 1 {
                return Err(format!("{}: {p:?}", slot.user));
            }
        }
        Ok(got)
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("the publisher");
    let total = published.load(Ordering::Relaxed);
    let mut seen_total = 0;
    for o in observers {
        let (c, _, seen) = o.await.expect("an observer");
        seen_total += seen;
        drop(c);
    }
    for gw in gws.iter() {
        assert_eq!(
            gw.metric("broker_slow_consumer_disconnects_total").await,
            0.0,
            "nobody was closed as a slow consumer"
        );
    }

    // Close everything: half cleanly, half abruptly.
    let held = live.len();
    for (i, slot) in live.into_iter().enumerate() {
        if i % 2 == 0 {
            slot.client.close().await;
        }
    }
    eventually_async(Duration::from_secs(15), "everything closed", || async {
        let mut con = redis.client();
        let online = map(&ok(&mut con, &["BROKER.ONLINE"]));
        let rooms = info_field(&mut con, "broker", "rooms").unwrap_or_default();
        match (int(&online["connections"]), rooms.trim()) {
            (0, "0") => Ok(()),
            other => Err(format!("connections and rooms left: {other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // freed pages go back
    let end_rss: Vec<u64> = gws.iter().map(Gateway::rss_kib).collect();
    let end_redis = used_memory(&redis);
    if std::env::var_os("SOAK_STATS").is_some() {
        println!(
            "{:?}",
            broker_tests::canon(&ok(&mut redis.client(), &["MEMORY", "STATS"]))
        );
    }
    println!(
        "soak {seconds} s: {churn_ops} churn operations, {held} connections held at the end \
         (+{ROOMS} observers), ONLINE {settled:?}; {total} publishes, {seen_total} seen by the \
         observers; gateway RSS at start {start_rss:?} KiB, after warm-up {warm_rss:?}, after \
         closing all {end_rss:?}; Redis used_memory {redis_start} at start, {warm_redis} after warm-up, {end_redis} \
         after closing all"
    );
    assert!(
        seen_total + ROOMS as u64 >= total,
        "observers saw every message"
    );
    assert!(
        end_redis < redis_start + 1024 * 1024,
        "Redis memory back near its start: {redis_start} -> {end_redis}"
    );
    for ((start, warm), end) in start_rss.iter().zip(&warm_rss).zip(&end_rss) {
        // Back below the crowd's level and near the start (what stays is
        // the runtime's and the Redis client's buffers, a few MiB at most).
        assert!(
            end < warm && *end <= start + 4096,
            "gateway RSS: {start} KiB at start, {warm} with the crowd, {end} after it left"
        );
    }
}
