//! `fanout`: one room, M subscribers, one publisher.
//!
//! The subscribers are spread round-robin over the `--url`s (several
//! gateway nodes) and join the room. The publisher (on the first URL)
//! joins too and publishes with `others: true`, so every message is owed
//! to exactly the M subscribers. Phase 1 publishes at `--rate` for
//! `--duration` seconds; phase 2 as fast as acks come back, with at most
//! `--inflight` publishes unanswered, for `--max-duration` seconds. Each
//! payload carries its send time and phase; the report gives, per phase,
//! deliveries per second, publish → receive latency, losses (expected:
//! acked publishes × subscribers) and duplicates.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;

use super::{close_all, open_and_join, paced, Ctx, GatewayCounters, OpenProgress, Output};
use crate::client::Conn;
use crate::stats::{phase_rows, Progress, Rate, Recorder, Report};
use crate::{frame, now_ns, Common};

/// Options of `fanout`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    common: Common,
    /// Subscribers (M).
    #[arg(short = 'm', long, default_value_t = 1000)]
    subscribers: usize,
    /// The room.
    #[arg(long, default_value = "chat:bench")]
    room: String,
    /// Phase 1: publishes per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Phase 1: seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Phase 2 (max rate): seconds; 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    max_duration: f64,
    /// Publishes sent and not yet answered, at most.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Seconds to wait for late deliveries after each phase.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
}

/// Runs the scenario.
///
/// # Errors
///
/// A bad URL, or the publisher cannot connect or join.
pub async fn run(opts: Opts, out: &Output) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&opts.common, 0).await?);
    let counters = GatewayCounters::before(&ctx.admins).await;
    let phases = if opts.max_duration > 0.0 { 2 } else { 1 };
    let rec = Recorder::new(phases, [opts.room.clone()]);
    let room: Arc<str> = Arc::from(opts.room.as_str());
    let m = opts.subscribers;

    // Subscribers, then the publisher (index m: the next URL in turn is not
    // wanted, so it is opened on its own below).
    let open = Arc::new(OpenProgress::default());
    let bar = Progress::start(out.quiet, {
        let open = open.clone();
        move || {
            format!(
                "fanout: {} subscribers open, {} failed",
                open.opened.load(Ordering::Relaxed),
                open.failed.load(Ordering::Relaxed)
            )
        }
    });
    let mut failures = Default::default();
    let subs = open_and_join(
        &ctx,
        (0..m).collect(),
        |i| format!("s{i}"),
        |_| vec![opts.room.clone()],
        rec.clone(),
        &open,
        &mut failures,
    )
    .await;
    bar.stop();
    let subscribed = subs.len() as u64;
    let publisher = {
        let pub_ctx = Arc::new(Ctx {
            targets: vec![ctx.targets[0].clone()],
            sources: ctx.sources.clone(),
            minter: ctx.minter.clone(),
            timeout: ctx.timeout,
            concurrency: 1,
            admins: Vec::new(),
        });
        let mut pub_failures = Default::default();
        let mut opened = open_and_join(
            &pub_ctx,
            vec![m],
            |_| "bench-pub".to_owned(),
            |_| vec![opts.room.clone()],
            rec.clone(),
            &Arc::default(),
            &mut pub_failures,
        )
        .await;
        match opened.pop() {
            Some((_, conn)) => conn,
            None => anyhow::bail!("the publisher could not connect or join: {pub_failures:?}"),
        }
    };

    let window = Arc::new(Semaphore::new(opts.inflight.max(1)));
    let bar = Progress::start(out.quiet, {
        let (rec, rate_p, rate_d) = (rec.clone(), Rate::default(), Rate::default());
        move || {
            let phase = rec.current.load(Ordering::Relaxed);
            let p = &rec.phases[phase];
            let acked = p.acked.load(Ordering::Relaxed);
            format!(
                "fanout phase {}: {acked} acked ({:.0}/s), {:.0} deliveries/s, {} dup, {} closes",
                phase + 1,
                rate_p.per_s(acked),
                rate_d.per_s(rec.delivered()),
                p.duplicates.load(Ordering::Relaxed),
                rec.closes.load(Ordering::Relaxed)
            )
        }
    });

    // Phase 1: fixed rate.
    let mut drained = Vec::new();
    {
        let p = &rec.phases[0];
        p.start();
        let until = Instant::now() + Duration::from_secs_f64(opts.duration);
        paced(opts.rate, until, || {
            send(&publisher, &room, &window, &rec, 0)
        })
        .await;
        p.end();
        settle(&window, opts.inflight).await;
        let owed = |i: usize| rec.phases[i].acked.load(Ordering::Relaxed) * subscribed;
        drained.push(
            rec.drain(owed, Duration::from_secs(2), secs(opts.drain))
                .await,
        );
    }
    // Phase 2: as fast as the window allows.
    if phases == 2 {
        rec.current.store(1, Ordering::Relaxed);
        let p = &rec.phases[1];
        p.start();
        let until = Instant::now() + Duration::from_secs_f64(opts.max_duration);
        while Instant::now() < until {
            if !send(&publisher, &room, &window, &rec, 1).await {
                break;
            }
        }
        p.end();
        settle(&window, opts.inflight).await;
        let owed = |i: usize| rec.phases[i].acked.load(Ordering::Relaxed) * subscribed;
        drained.push(
            rec.drain(owed, Duration::from_secs(2), secs(opts.drain))
                .await,
        );
    }
    bar.stop();

    let mut report = Report::new(
        "fanout",
        json!({
            "urls": opts.common.urls, "subscribers": m, "room": opts.room, "rate": opts.rate,
            "duration_s": opts.duration, "max_duration_s": opts.max_duration,
            "inflight": opts.inflight,
        }),
    );
    report
        .section(
            "setup",
            format!(
                "fanout: {m} subscribers on {} node(s), room {}",
                ctx.targets.len(),
                opts.room
            ),
        )
        .int("subscribed", "subscribers joined", subscribed)
        .events("setup_failures", "set-up failures", &failures);
    let titles = [
        format!("phase 1: {} msg/s for {} s", opts.rate, opts.duration),
        format!(
            "phase 2: max rate ({} in flight) for {} s",
            opts.inflight, opts.max_duration
        ),
    ];
    for (i, p) in rec.phases.iter().enumerate() {
        report.section(["phase1", "phase2"][i], titles[i].clone());
        phase_rows(
            &mut report,
            p,
            Some(p.acked.load(Ordering::Relaxed) * subscribed),
        );
        report.num(
            "drain_s",
            "waited for late deliveries (s)",
            drained[i].as_secs_f64(),
            2,
        );
    }
    report.section("gateways", "fanout: connections and gateways");
    report
        .int(
            "closes",
            "connections ended by the server",
            rec.closes.load(Ordering::Relaxed),
        )
        .events("events", "events", &rec.events.lock().expect("events lock"));
    counters.report(&ctx.admins, &mut report).await;

    let mut all: Vec<Arc<Conn>> = subs.into_iter().map(|(_, c)| c).collect();
    all.push(publisher);
    close_all(all).await;
    Ok(report)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Takes a window slot and publishes one message of `phase`. `false` when
/// the publisher's connection is gone.
async fn send(
    conn: &Conn,
    room: &Arc<str>,
    window: &Arc<Semaphore>,
    rec: &Recorder,
    phase: u8,
) -> bool {
    let slot = window.clone().acquire_owned().await.expect("never closed");
    let data = frame::payload(now_ns(), phase);
    let ok = conn.publish(room, data, true, Some(slot)).await.is_ok();
    if ok {
        rec.phases[usize::from(phase)]
            .sent
            .fetch_add(1, Ordering::Relaxed);
    }
    ok
}

/// Waits until every publish in the window is answered (at most 30 s).
pub async fn settle(window: &Arc<Semaphore>, size: usize) {
    let all = u32::try_from(size.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(30), window.acquire_many(all)).await;
}
