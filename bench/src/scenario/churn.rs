//! `churn`: connections joining and leaving rooms while others publish,
//! then a check of the module's room counts.
//!
//! C churners (users `k<i / conns-per-user>`, so users hold several
//! connections) each loop for `--duration` seconds: pick a room at random,
//! leave it when in it, join it otherwise, wait for the answer, repeat.
//! P publishers are in every room and publish round-robin over them at
//! `--rate` each. The tool keeps what it believes every room holds (from
//! the acks); at the end, with everyone still connected and quiet, it asks
//! Redis `BROKER.ROOM.COUNT` for every room and compares users and
//! connections exactly; then it closes everything and waits for every room
//! count to reach 0.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use rand::Rng as _;
use serde_json::json;
use tokio::sync::Semaphore;

use super::{close_all, open_and_join, paced, Ctx, GatewayCounters, OpenProgress, Output};
use crate::client::{Conn, Reply};
use crate::stats::{phase_rows, Hist, Progress, Rate, Recorder, Report};
use crate::{frame, now_ns, Common};

/// Options of `churn`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    common: Common,
    /// Churning connections (C).
    #[arg(short = 'c', long, default_value_t = 200)]
    conns: usize,
    /// Connections per churning user.
    #[arg(long, default_value_t = 2)]
    conns_per_user: usize,
    /// Rooms to churn over.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Room name prefix.
    #[arg(long, default_value = "chat:churn-")]
    prefix: String,
    /// Rooms one churner is in at most (keep it under the gateway's
    /// `limits.max_rooms_per_conn`).
    #[arg(long, default_value_t = 10)]
    max_rooms: usize,
    /// Publishers (in every room).
    #[arg(short = 'p', long, default_value_t = 2)]
    publishers: usize,
    /// Publishes per second of each publisher, round-robin over the rooms.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Redis (with the module) the gateways use, for BROKER.ROOM.COUNT.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

/// What one churner did.
struct Churned {
    index: usize,
    rooms: BTreeSet<usize>,
    /// The server ended the connection: it is in no room any more.
    gone: bool,
}

#[derive(Default)]
struct Ops {
    joins: AtomicU64,
    leaves: AtomicU64,
    join_latency: Hist,
    leave_latency: Hist,
}

/// Runs the scenario.
///
/// # Errors
///
/// A bad URL; Redis unreachable.
pub async fn run(opts: Opts, out: &Output) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&opts.common, 0).await?);
    let counters = GatewayCounters::before(&ctx.admins).await;
    let redis = redis::Client::open(opts.redis.as_str()).context("--redis")?;
    let rooms: Vec<String> = (0..opts.rooms.max(1))
        .map(|r| format!("{}{r}", opts.prefix))
        .collect();
    let rec = Recorder::new(1, rooms.clone());
    let per_user = opts.conns_per_user.max(1);
    let c = opts.conns;
    let user = move |i: usize| {
        if i < c {
            format!("k{}", i / per_user)
        } else {
            format!("p{}", i - c)
        }
    };

    let open = Arc::new(OpenProgress::default());
    let bar = Progress::start(out.quiet, {
        let open = open.clone();
        move || {
            format!(
                "churn: {} open, {} failed",
                open.opened.load(Ordering::Relaxed),
                open.failed.load(Ordering::Relaxed)
            )
        }
    });
    let mut failures = Default::default();
    let publishers = open_and_join(
        &ctx,
        (c..c + opts.publishers).collect(),
        user,
        |_| rooms.clone(),
        rec.clone(),
        &open,
        &mut failures,
    )
    .await;
    let churners = open_and_join(
        &ctx,
        (0..c).collect(),
        user,
        |_| Vec::new(),
        rec.clone(),
        &open,
        &mut failures,
    )
    .await;
    bar.stop();

    let ops = Arc::new(Ops::default());
    let bar = Progress::start(out.quiet, {
        let (ops, rec, rate_j, rate_l) =
            (ops.clone(), rec.clone(), Rate::default(), Rate::default());
        move || {
            let (j, l) = (
                ops.joins.load(Ordering::Relaxed),
                ops.leaves.load(Ordering::Relaxed),
            );
            format!(
                "churn: {:.0} joins/s, {:.0} leaves/s, {} msgs delivered, {} closes",
                rate_j.per_s(j),
                rate_l.per_s(l),
                rec.delivered(),
                rec.closes.load(Ordering::Relaxed)
            )
        }
    });
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(opts.duration.max(0.0));
    rec.phases[0].start();
    let window_size = 64u32;
    let mut pub_tasks = Vec::new();
    for (_, conn) in &publishers {
        let (conn, rec) = (conn.clone(), rec.clone());
        let rooms: Vec<Arc<str>> = rooms.iter().map(|r| Arc::from(r.as_str())).collect();
        let rate = opts.rate;
        pub_tasks.push(tokio::spawn(async move {
            let window = Arc::new(Semaphore::new(window_size as usize));
            let mut k = 0usize;
            paced(rate, until, || {
                k += 1;
                let (conn, rec, window) = (conn.clone(), rec.clone(), window.clone());
                let room = rooms[k % rooms.len()].clone();
                async move {
                    let slot = window.acquire_owned().await.expect("never closed");
                    let sent = conn
                        .publish(&room, frame::payload(now_ns(), 0), false, Some(slot))
                        .await
                        .is_ok();
                    if sent {
                        rec.phases[0].sent.fetch_add(1, Ordering::Relaxed);
                    }
                    sent
                }
            })
            .await;
            let _ = tokio::time::timeout(Duration::from_secs(30), window.acquire_many(window_size))
                .await;
        }));
    }
    let mut churn_tasks = Vec::new();
    for (i, conn) in &churners {
        let (conn, ops, rec, rooms) = (conn.clone(), ops.clone(), rec.clone(), rooms.clone());
        let (index, max_rooms) = (*i, opts.max_rooms.max(1));
        churn_tasks.push(tokio::spawn(async move {
            churn(index, &conn, &rooms, max_rooms, until, &ops, &rec).await
        }));
    }
    let mut churned = Vec::new();
    for task in churn_tasks {
        if let Ok(done) = task.await {
            churned.push(done);
        }
    }
    let churn_secs = started.elapsed().as_secs_f64();
    for task in pub_tasks {
        let _ = task.await;
    }
    rec.phases[0].end();
    // Let the last deliveries arrive (nothing is owed exactly here).
    rec.drain(
        |_| u64::MAX,
        Duration::from_millis(500),
        Duration::from_secs(5),
    )
    .await;
    bar.stop();

    // What the tool believes each room holds: churners by their acks,
    // publishers in every room, minus connections the server ended.
    let mut belief: BTreeMap<String, (BTreeSet<String>, u64)> = rooms
        .iter()
        .map(|r| (r.clone(), Default::default()))
        .collect();
    for done in churned.iter().filter(|d| !d.gone) {
        for &r in &done.rooms {
            let entry = belief.get_mut(&rooms[r]).expect("known room");
            entry.0.insert(user(done.index));
            entry.1 += 1;
        }
    }
    let publishers_gone =
        rec.closes.load(Ordering::Relaxed) > churned.iter().filter(|d| d.gone).count() as u64;
    for (i, _) in &publishers {
        for room in &rooms {
            let entry = belief.get_mut(room).expect("known room");
            entry.0.insert(user(*i));
            entry.1 += 1;
        }
    }
    let counts = room_counts(&redis, &rooms).await?;
    let mut mismatches = Vec::new();
    for (room, (users, conns)) in &belief {
        let got = counts.get(room).copied().unwrap_or((-1, -1));
        let want = (users.len() as i64, *conns as i64);
        if got != want {
            mismatches.push(format!(
                "{room}: Redis {} users / {} conns, tool {} / {}",
                got.0, got.1, want.0, want.1
            ));
        }
    }

    let mut report = Report::new(
        "churn",
        json!({
            "urls": opts.common.urls, "conns": c, "conns_per_user": per_user, "rooms": rooms.len(),
            "max_rooms": opts.max_rooms, "publishers": opts.publishers, "rate": opts.rate,
            "duration_s": opts.duration,
        }),
    );
    let (joins, leaves) = (
        ops.joins.load(Ordering::Relaxed),
        ops.leaves.load(Ordering::Relaxed),
    );
    report
        .section(
            "churn",
            format!(
                "churn: {c} connections over {} rooms, {} publishers × {} msg/s, {} s",
                rooms.len(),
                publishers.len(),
                opts.rate,
                opts.duration
            ),
        )
        .int("churners", "churning connections", churners.len() as u64)
        .events("setup_failures", "set-up failures", &failures)
        .int("joins", "joins acked", joins)
        .int("leaves", "leaves acked", leaves)
        .num(
            "ops_per_s",
            "join + leave / s",
            (joins + leaves) as f64 / churn_secs,
            0,
        )
        .latency(
            "join_latency",
            "join → ack p50 / p99 / p99.9 / max",
            &ops.join_latency.merged(),
        )
        .latency(
            "leave_latency",
            "leave → ack p50 / p99 / p99.9 / max",
            &ops.leave_latency.merged(),
        )
        .int(
            "members_at_end",
            "room memberships at the end (tool)",
            belief.values().map(|(_, n)| *n).sum(),
        )
        .text(
            "room_count_exact",
            "BROKER.ROOM.COUNT exact (users and conns, every room)",
            if mismatches.is_empty() {
                format!("yes ({} rooms)", rooms.len())
            } else {
                format!("NO: {}", mismatches.join("; "))
            },
        );
    if publishers_gone {
        report.text(
            "note",
            "note",
            "a publisher was closed by the server: counts may differ",
        );
    }
    report.section("messages", "churn: messages published meanwhile");
    phase_rows(&mut report, &rec.phases[0], None);
    report
        .int(
            "closes",
            "connections ended by the server",
            rec.closes.load(Ordering::Relaxed),
        )
        .events("events", "events", &rec.events.lock().expect("events lock"));
    counters.report(&ctx.admins, &mut report).await;

    // Close everything; every room must empty.
    let closing = Instant::now();
    let mut all: Vec<Arc<Conn>> = churners.into_iter().map(|(_, c)| c).collect();
    all.extend(publishers.into_iter().map(|(_, c)| c));
    close_all(all).await;
    let mut emptied = None;
    let mut left = Vec::new();
    while closing.elapsed() < Duration::from_secs(10) {
        let counts = room_counts(&redis, &rooms).await?;
        left = counts
            .iter()
            .filter(|(_, c)| **c != (0, 0))
            .map(|(room, (u, n))| format!("{room}: {u} users / {n} conns"))
            .collect();
        if left.is_empty() {
            emptied = Some(closing.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.text(
        "rooms_empty_after_close",
        "every room count 0 after closing all",
        match emptied {
            Some(t) => format!("yes, after {:.2} s", t.as_secs_f64()),
            None => format!("NO after 10 s: {}", left.join("; ")),
        },
    );
    Ok(report)
}

/// One churner's loop; returns the rooms it is in at the end.
async fn churn(
    index: usize,
    conn: &Conn,
    rooms: &[String],
    max_rooms: usize,
    until: Instant,
    ops: &Ops,
    rec: &Recorder,
) -> Churned {
    let mut mine = BTreeSet::new();
    let mut gone = false;
    while Instant::now() < until {
        let (r, join) = {
            let mut rng = rand::rng();
            let r = rng.random_range(0..rooms.len());
            if mine.contains(&r) {
                (r, false)
            } else if mine.len() < max_rooms {
                (r, true)
            } else {
                let pick = rng.random_range(0..mine.len());
                (*mine.iter().nth(pick).expect("in range"), false)
            }
        };
        let began = Instant::now();
        let reply = if join {
            conn.join(&rooms[r]).await
        } else {
            conn.leave(&rooms[r]).await
        };
        let us = began.elapsed().as_micros() as u64;
        match reply {
            Reply::Ack if join => {
                mine.insert(r);
                ops.joins.fetch_add(1, Ordering::Relaxed);
                ops.join_latency.record(us);
            }
            Reply::Ack => {
                mine.remove(&r);
                ops.leaves.fetch_add(1, Ordering::Relaxed);
                ops.leave_latency.record(us);
            }
            Reply::Err(code) => {
                rec.event(format!(
                    "{} refused: {code}",
                    if join { "join" } else { "leave" }
                ));
            }
            Reply::Closed => {
                gone = true;
                break;
            }
        }
    }
    Churned {
        index,
        rooms: mine,
        gone,
    }
}

/// `BROKER.ROOM.COUNT` of every room: `(users, connections)`.
async fn room_counts(
    redis: &redis::Client,
    rooms: &[String],
) -> anyhow::Result<BTreeMap<String, (i64, i64)>> {
    let (redis, rooms) = (redis.clone(), rooms.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut con = redis.get_connection().context("connecting to Redis")?;
        let mut counts = BTreeMap::new();
        for room in rooms {
            let reply: std::collections::HashMap<String, i64> = redis::cmd("BROKER.ROOM.COUNT")
                .arg(&room)
                .query(&mut con)
                .with_context(|| format!("BROKER.ROOM.COUNT {room}"))?;
            let get = |k: &str| reply.get(k).copied().unwrap_or(-1);
            counts.insert(room, (get("users"), get("connections")));
        }
        Ok(counts)
    })
    .await?
}
