//! `webhooks`: how late the gateway's webhook POSTs arrive, and whether
//! every lifecycle event does.
//!
//! The tool is the receiver: an HTTP/1.1 server on `--listen` (the
//! gateway's `webhooks.url` must point at it) that checks each POST's
//! `X-Broker-Signature` with `--hook-secret`, answers 200, and for every
//! event records now − `ts` (ms: `ts` is when the module wrote the entry),
//! keyed by `stream` + `id` to tell duplicates.
//!
//! Meanwhile it drives lifecycle churn at `--rate` cycles a second for
//! `--duration` seconds: each cycle opens a connection as a new user, joins
//! a room, leaves it and closes — six events (`connect`, `online`, `join`,
//! `leave`, `disconnect`, `offline`). Then it waits until the receiver has
//! as many distinct events as the module wrote (`INFO broker`
//! `events_written`, read from `--redis` before and after), or 30 s.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{paced, Ctx, GatewayCounters, Output};
use crate::client::{self, Conn, Reply};
use crate::metrics::Scrape;
use crate::stats::{Hist, Progress, Rate, Recorder, Report};
use crate::Common;

/// Options of `webhooks`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    common: Common,
    /// Where the receiver listens (the gateways' `webhooks.url` host:port).
    #[arg(long, default_value = "127.0.0.1:8099")]
    listen: String,
    /// `webhooks.secret`, to check the signatures.
    #[arg(long, env = "BROKER_WEBHOOKS__SECRET", hide_env_values = true)]
    hook_secret: String,
    /// Connect–join–leave–close cycles per second (6 events each).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Cycles in progress at most.
    #[arg(long, default_value_t = 200)]
    inflight: usize,
    /// Rooms to join, `chat:hook-0` ...
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Redis (with the module) for `INFO broker` and `XLEN broker:events`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
}

/// What the receiver saw.
struct Received {
    secret: Vec<u8>,
    posts: AtomicU64,
    bad_signature: AtomicU64,
    unreadable: AtomicU64,
    /// Events, duplicates included.
    events: AtomicU64,
    duplicates: AtomicU64,
    /// `stream` + `id` of every event.
    seen: Mutex<HashSet<String>>,
    by_type: Mutex<BTreeMap<String, u64>>,
    /// now − ts, µs (ts has ms resolution).
    lag: Hist,
    first_ms: AtomicU64,
    last_ms: AtomicU64,
}

impl Received {
    fn unique(&self) -> u64 {
        self.events.load(Ordering::Relaxed) - self.duplicates.load(Ordering::Relaxed)
    }

    fn post(&self, signature: Option<&str>, body: &[u8]) {
        let now_us = crate::now_ns() / 1000;
        let now = now_us / 1000;
        self.posts.fetch_add(1, Ordering::Relaxed);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if signature != Some(&format!("sha256={want}")) {
            self.bad_signature.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(events) = doc.get("events").and_then(Value::as_array) else {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.first_ms
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok();
        self.last_ms.fetch_max(now, Ordering::Relaxed);
        let mut seen = self.seen.lock().expect("seen lock");
        let mut by_type = self.by_type.lock().expect("type lock");
        for ev in events {
            self.events.fetch_add(1, Ordering::Relaxed);
            let key = format!(
                "{}/{}",
                ev.get("stream").and_then(Value::as_str).unwrap_or(""),
                ev.get("id").and_then(Value::as_str).unwrap_or("")
            );
            if !seen.insert(key) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let kind = ev.get("type").and_then(Value::as_str).unwrap_or("?");
            *by_type.entry(kind.to_owned()).or_default() += 1;
            match ev.get("ts").and_then(Value::as_u64) {
                // `ts` is the write time truncated to the ms: the lag is
                // measured up to 1 ms high, never low.
                Some(ts) => self.lag.record(now_us.saturating_sub(ts * 1000)),
                None => {
                    self.unreadable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Serves POSTs on `listener` into `rec`, until the task is aborted.
async fn serve(listener: TcpListener, rec: Arc<Received>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let rec = rec.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let rec = rec.clone();
                async move {
                    let signature = req
                        .headers()
                        .get("x-broker-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if let Ok(body) = req.into_body().collect().await {
                        rec.post(signature.as_deref(), &body.to_bytes());
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `events_written` of `INFO broker` and `XLEN broker:events`.
async fn module_counts(redis: &redis::Client) -> anyhow::Result<(u64, u64)> {
    let redis = redis.clone();
    tokio::task::spawn_blocking(move || {
        let mut con = redis.get_connection().context("connecting to Redis")?;
        let info: String = redis::cmd("INFO").arg("broker").query(&mut con)?;
        let written = info
            .lines()
            // Redis prefixes a module's fields with its name.
            .find_map(|l| {
                l.strip_prefix("broker_events_written:")
                    .or_else(|| l.strip_prefix("events_written:"))
            })
            .and_then(|v| v.trim().parse().ok())
            .context("INFO broker has no events_written")?;
        let len: u64 = redis::cmd("XLEN").arg("broker:events").query(&mut con)?;
        Ok((written, len))
    })
    .await?
}

/// Runs the scenario.
///
/// # Errors
///
/// A bad URL, the listen address taken, Redis unreachable.
pub async fn run(opts: Opts, out: &Output) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&opts.common, 0).await?);
    let redis = redis::Client::open(opts.redis.as_str()).context("--redis")?;
    let listener = TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let got = Arc::new(Received {
        secret: opts.hook_secret.clone().into_bytes(),
        posts: AtomicU64::new(0),
        bad_signature: AtomicU64::new(0),
        unreadable: AtomicU64::new(0),
        events: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        seen: Mutex::default(),
        by_type: Mutex::default(),
        lag: Hist::default(),
        first_ms: AtomicU64::new(0),
        last_ms: AtomicU64::new(0),
    });
    let server = tokio::spawn(serve(listener, got.clone()));
    // What the stream already holds is delivered too (the group starts at
    // 0): let it arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (written_before, _) = module_counts(&redis).await?;
    let received_before = got.unique();
    let counters = GatewayCounters::before(&ctx.admins).await;
    let hooks_before = scrape_hooks(&ctx.admins).await;

    let rec = Recorder::new(1, Vec::new());
    let cycles = Arc::new(AtomicU64::new(0));
    let failed: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let bar = Progress::start(out.quiet, {
        let (got, cycles, rc, re) = (
            got.clone(),
            cycles.clone(),
            Rate::default(),
            Rate::default(),
        );
        move || {
            format!(
                "webhooks: {:.0} cycles/s, {:.0} events received/s, {} received",
                rc.per_s(cycles.load(Ordering::Relaxed)),
                re.per_s(got.unique()),
                got.unique()
            )
        }
    });
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(opts.duration.max(0.0));
    let gate = Arc::new(Semaphore::new(opts.inflight.max(1)));
    let mut tasks = Vec::new();
    let mut i = 0usize;
    let rooms = opts.rooms.max(1);
    let attempted = paced(opts.rate, until, || {
        i += 1;
        let (ctx, gate, rec, cycles, failed) = (
            ctx.clone(),
            gate.clone(),
            rec.clone(),
            cycles.clone(),
            failed.clone(),
        );
        let index = i;
        let task = async move {
            let Ok(permit) = gate.try_acquire_owned() else {
                *failed
                    .lock()
                    .expect("failed lock")
                    .entry("skipped: too many cycles in progress".into())
                    .or_default() += 1;
                return;
            };
            let result = cycle(&ctx, index, rooms, rec).await;
            drop(permit);
            match result {
                Ok(()) => {
                    cycles.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => *failed.lock().expect("failed lock").entry(why).or_default() += 1,
            }
        };
        tasks.push(tokio::spawn(task));
        async { true }
    })
    .await;
    for task in tasks {
        let _ = task.await;
    }
    let churn_secs = started.elapsed().as_secs_f64();

    // Wait for the receiver to hold every event written meanwhile.
    let drain_started = Instant::now();
    while drain_started.elapsed() < Duration::from_secs(30) {
        let (written, _) = module_counts(&redis).await?;
        if got.unique() - received_before >= written - written_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = drain_started.elapsed();
    // A moment more for duplicates or strays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (written, xlen) = module_counts(&redis).await?;
    bar.stop();
    server.abort();

    let expected = written - written_before;
    let received = got.unique() - received_before;
    let span_s = (got
        .last_ms
        .load(Ordering::Relaxed)
        .saturating_sub(got.first_ms.load(Ordering::Relaxed))) as f64
        / 1000.0;
    let mut report = Report::new(
        "webhooks",
        json!({
            "urls": opts.common.urls, "listen": opts.listen, "rate": opts.rate,
            "duration_s": opts.duration, "inflight": opts.inflight, "rooms": rooms,
        }),
    );
    report
        .section(
            "webhooks",
            format!(
                "webhooks: {} connect–join–leave–close cycles/s for {} s",
                opts.rate, opts.duration
            ),
        )
        .int("cycles_started", "cycles started", attempted)
        .int("cycles", "cycles completed", cycles.load(Ordering::Relaxed))
        .num(
            "cycles_per_s",
            "cycles / s",
            cycles.load(Ordering::Relaxed) as f64 / churn_secs.max(1e-9),
            0,
        )
        .events(
            "cycle_failures",
            "cycle failures",
            &failed.lock().expect("failed lock"),
        )
        .int(
            "written",
            "events written (INFO broker events_written, delta)",
            expected,
        )
        .int(
            "xlen",
            "XLEN broker:events at the end (capped by EVENTS)",
            xlen,
        )
        .int(
            "received",
            "events received (distinct stream + id)",
            received,
        )
        .int("missing", "missing", expected.saturating_sub(received))
        .int(
            "duplicates",
            "duplicates received",
            got.duplicates.load(Ordering::Relaxed),
        )
        .events(
            "by_type",
            "received by type",
            &got.by_type.lock().expect("type lock"),
        )
        .int("posts", "POSTs", got.posts.load(Ordering::Relaxed))
        .num(
            "events_per_post",
            "events per POST (mean)",
            got.events.load(Ordering::Relaxed) as f64
                / got.posts.load(Ordering::Relaxed).max(1) as f64,
            1,
        )
        .int(
            "bad_signature",
            "bad signatures",
            got.bad_signature.load(Ordering::Relaxed),
        )
        .int(
            "unreadable",
            "unreadable bodies or events",
            got.unreadable.load(Ordering::Relaxed),
        )
        .num(
            "delivered_per_s",
            "events delivered / s (first to last POST)",
            received as f64 / span_s.max(1e-3),
            0,
        )
        .latency(
            "lag",
            "lag now − ts p50 / p99 / p99.9 / max (ts in ms: up to 1 ms high)",
            &got.lag.merged(),
        )
        .num(
            "drain_s",
            "after the churn, all events in within (s)",
            drained.as_secs_f64(),
            2,
        );
    let hooks_after = scrape_hooks(&ctx.admins).await;
    for (i, (key, label)) in HOOK_METRICS.iter().enumerate() {
        report.num(key, label, (hooks_after[i] - hooks_before[i]).max(0.0), 0);
    }
    report
        .int(
            "closes",
            "connections ended by the server",
            rec.closes.load(Ordering::Relaxed),
        )
        .events("events", "events", &rec.events.lock().expect("events lock"));
    counters.report(&ctx.admins, &mut report).await;
    if received < expected {
        report.fail(format!(
            "{} of {expected} events not received",
            expected - received
        ));
    }
    Ok(report)
}

/// The gateways' webhook counters: (JSON key, label); summed over every
/// series and node.
const HOOK_METRICS: [(&str, &str); 3] = [
    (
        "gw_delivered",
        "gateway: broker_webhook_events_total (all results)",
    ),
    (
        "gw_attempts",
        "gateway: broker_webhook_attempts_total (ok + error)",
    ),
    ("gw_claimed", "gateway: broker_webhook_claimed_total"),
];

async fn scrape_hooks(admins: &[String]) -> Vec<f64> {
    let mut sums = vec![0.0; HOOK_METRICS.len()];
    for admin in admins {
        if let Ok(s) = Scrape::get(admin).await {
            for (i, name) in [
                "broker_webhook_events_total",
                "broker_webhook_attempts_total",
                "broker_webhook_claimed_total",
            ]
            .iter()
            .enumerate()
            {
                sums[i] += s.sum(name).unwrap_or(0.0);
            }
        }
    }
    sums
}

/// One cycle: open as user `h<index>`, join a room, leave it, close.
async fn cycle(ctx: &Ctx, index: usize, rooms: usize, rec: Arc<Recorder>) -> Result<(), String> {
    let token = ctx.minter.token(&format!("h{index}"));
    let ws = client::open(
        ctx.target(index),
        ctx.sources.pick(index / ctx.targets.len()),
        &token,
        ctx.timeout,
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    let conn = Conn::start(ws, rec);
    let room = format!("chat:hook-{}", index % rooms);
    let result = match conn.join(&room).await {
        Reply::Ack => match conn.leave(&room).await {
            Reply::Ack => Ok(()),
            other => Err(format!("leave: {other:?}")),
        },
        other => Err(format!("join: {other:?}")),
    };
    conn.close().await;
    result
}
