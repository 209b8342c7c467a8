//! `chat`: R rooms of K members, every member talking.
//!
//! Member i of the R × K connections is in room `chat:room-<i / K>` and on
//! gateway `i mod U` (U URLs), so each room spans the nodes. Every member
//! publishes at `--rate` messages per second (starting at a random offset
//! so the rooms do not publish in lockstep) for `--duration` seconds and
//! receives its own messages too, so each acked publish is owed to every
//! member of its room.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng as _;
use serde_json::json;
use tokio::sync::Semaphore;

use super::{close_all, open_and_join, Ctx, GatewayCounters, OpenProgress, Output};
use crate::client::Conn;
use crate::stats::{phase_rows, Progress, Rate, Recorder, Report};
use crate::{frame, now_ns, Common};

/// Options of `chat`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    common: Common,
    /// Rooms (R).
    #[arg(short = 'r', long, default_value_t = 100)]
    rooms: usize,
    /// Members per room (K).
    #[arg(short = 'k', long, default_value_t = 10)]
    members: usize,
    /// Publishes per second of each member.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unanswered publishes per member, at most.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Room name prefix.
    #[arg(long, default_value = "chat:room-")]
    prefix: String,
    /// Seconds to wait for late deliveries.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
}

/// Runs the scenario.
///
/// # Errors
///
/// A bad URL.
pub async fn run(opts: Opts, out: &Output) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&opts.common, 0).await?);
    let counters = GatewayCounters::before(&ctx.admins).await;
    let k = opts.members.max(1);
    let n = opts.rooms * k;
    let room_of = |i: usize| format!("{}{}", opts.prefix, i / k);
    let rec = Recorder::new(1, (0..opts.rooms).map(|r| room_of(r * k)));

    let open = Arc::new(OpenProgress::default());
    let bar = Progress::start(out.quiet, {
        let open = open.clone();
        move || {
            format!(
                "chat: {}/{n} members open, {} failed",
                open.opened.load(Ordering::Relaxed),
                open.failed.load(Ordering::Relaxed)
            )
        }
    });
    let mut failures = Default::default();
    let members = open_and_join(
        &ctx,
        (0..n).collect(),
        |i| format!("c{i}"),
        |i| vec![room_of(i)],
        rec.clone(),
        &open,
        &mut failures,
    )
    .await;
    bar.stop();
    let mut joined: HashMap<String, u64> = HashMap::new();
    for (i, _) in &members {
        *joined.entry(room_of(*i)).or_default() += 1;
    }

    let bar = Progress::start(out.quiet, {
        let (rec, rate_p, rate_d) = (rec.clone(), Rate::default(), Rate::default());
        move || {
            let p = &rec.phases[0];
            let acked = p.acked.load(Ordering::Relaxed);
            format!(
                "chat: {acked} acked ({:.0}/s), {:.0} deliveries/s, {} dup, {} closes",
                rate_p.per_s(acked),
                rate_d.per_s(rec.delivered()),
                p.duplicates.load(Ordering::Relaxed),
                rec.closes.load(Ordering::Relaxed)
            )
        }
    });
    let phase = &rec.phases[0];
    phase.start();
    let until = Instant::now() + Duration::from_secs_f64(opts.duration);
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(1e-3));
    let size = u32::try_from(opts.inflight.clamp(1, 1 << 20)).unwrap_or(1);
    let mut tasks = Vec::new();
    for (i, conn) in &members {
        let (conn, rec) = (conn.clone(), rec.clone());
        let room: Arc<str> = Arc::from(room_of(*i));
        let window = Arc::new(Semaphore::new(size as usize));
        let offset = interval.mul_f64(rand::rng().random::<f64>());
        tasks.push(tokio::spawn(talk(
            conn, room, window, rec, until, interval, offset, size,
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
    phase.end();
    let expected = || -> u64 {
        rec.room_acked
            .iter()
            .map(|(room, acked)| {
                acked.load(Ordering::Relaxed) * joined.get(room).copied().unwrap_or(0)
            })
            .sum()
    };
    let drained = rec
        .drain(
            |_| expected(),
            Duration::from_secs(2),
            Duration::from_secs_f64(opts.drain.max(0.0)),
        )
        .await;
    bar.stop();

    let mut report = Report::new(
        "chat",
        json!({
            "urls": opts.common.urls, "rooms": opts.rooms, "members": k, "rate": opts.rate,
            "duration_s": opts.duration, "inflight": opts.inflight,
        }),
    );
    report
        .section(
            "chat",
            format!(
                "chat: {} rooms × {k} members on {} node(s), {} msg/s per member for {} s",
                opts.rooms,
                ctx.targets.len(),
                opts.rate,
                opts.duration
            ),
        )
        .int("members", "members joined", members.len() as u64)
        .events("setup_failures", "set-up failures", &failures);
    phase_rows(&mut report, phase, Some(expected()));
    report
        .num(
            "drain_s",
            "waited for late deliveries (s)",
            drained.as_secs_f64(),
            2,
        )
        .int(
            "closes",
            "connections ended by the server",
            rec.closes.load(Ordering::Relaxed),
        )
        .events("events", "events", &rec.events.lock().expect("events lock"));
    counters.report(&ctx.admins, &mut report).await;
    close_all(members.into_iter().map(|(_, c)| c).collect()).await;
    Ok(report)
}

/// One member's publishing: one message every `interval` from `offset` on,
/// until `until`, waiting for a window slot when too many are unanswered;
/// then waits for the `size` slots of its window to come back.
#[allow(clippy::too_many_arguments)]
async fn talk(
    conn: Arc<Conn>,
    room: Arc<str>,
    window: Arc<Semaphore>,
    rec: Arc<Recorder>,
    until: Instant,
    interval: Duration,
    offset: Duration,
    size: u32,
) {
    let mut next = Instant::now() + offset;
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        let slot = window.clone().acquire_owned().await.expect("never closed");
        let data = frame::payload(now_ns(), 0);
        if conn.publish(&room, data, false, Some(slot)).await.is_err() {
            return;
        }
        rec.phases[0].sent.fetch_add(1, Ordering::Relaxed);
        next += interval;
    }
    // Wait for this member's answers.
    let _ = tokio::time::timeout(Duration::from_secs(30), window.acquire_many(size)).await;
}
