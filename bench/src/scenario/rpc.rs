//! `rpc`: client `rpc` requests answered by a backend, round trip and
//! achieved rate at a fixed offered load.
//!
//! N connections each send `rpc` frames (`--method`, `data` a small
//! MessagePack array `[k]`) at `--rate / N` per second, without waiting for
//! the answers, for `--warmup` seconds (not counted) and then `--duration`
//! seconds. A request's time is from writing its frame to reading its
//! `ack` (the backend's `BROKER.RPC.REPLY`, through `broker:rpc`, the
//! backend, the module and the gateway). A connection keeps at most
//! `--max-waiting` requests unanswered (the gateway refuses a 101st with
//! `rate_limited`); when that many wait, its sender waits too, so the
//! offered rate is then not met — the report shows the rate achieved.
//!
//! The backend is not part of the tool: run one that answers `--method`
//! (e.g. `scripts/bench-rpc-backend.mjs`, an echo on the Node library).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::msgpack::Writer;
use broker::protocol::ClientFrame;
use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;

use super::{close_all, open_and_join, paced, Ctx, GatewayCounters, OpenProgress, Output};
use crate::client::{Conn, Reply};
use crate::stats::{Hist, Progress, Rate, Recorder, Report};
use crate::Common;

/// Options of `rpc`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    common: Common,
    /// Connections sending requests (N).
    #[arg(short = 'n', long, default_value_t = 100)]
    clients: usize,
    /// Requests per second offered, over all connections.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds at the same rate before, not counted (the backend's JIT,
    /// connection pools).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The method the backend answers.
    #[arg(long, default_value = "bench:echo")]
    method: String,
    /// Requests one connection keeps unanswered at most (the gateway's
    /// limit is 100).
    #[arg(long, default_value_t = 100)]
    max_waiting: usize,
}

/// The figures of the measured phase.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    acked: AtomicU64,
    /// `rpc` written to its `ack`, µs.
    latency: Hist,
    /// Answers other than `ack`, by code (`timeout`, `rpc_error`, ...).
    errors: Mutex<BTreeMap<String, u64>>,
    /// Sends that waited for a free slot (`--max-waiting` reached).
    throttled: AtomicU64,
}

impl Tally {
    fn error(&self, what: String) {
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(what)
            .or_default() += 1;
    }
}

/// Runs the scenario.
///
/// # Errors
///
/// A bad URL.
pub async fn run(opts: Opts, out: &Output) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(&opts.common, 0).await?);
    let n = opts.clients.max(1);
    let rec = Recorder::new(1, Vec::new());
    let open = Arc::new(OpenProgress::default());
    let mut failures = BTreeMap::new();
    let conns = open_and_join(
        &ctx,
        (0..n).collect(),
        |i| format!("r{i}"),
        |_| Vec::new(),
        rec.clone(),
        &open,
        &mut failures,
    )
    .await;
    let conns: Vec<Arc<Conn>> = conns.into_iter().map(|(_, c)| c).collect();
    if conns.is_empty() {
        anyhow::bail!("no connection opened: {failures:?}");
    }
    let counters = GatewayCounters::before(&ctx.admins).await;
    let per_conn = opts.rate / conns.len() as f64;

    let warm = Arc::new(Tally::default());
    if opts.warmup > 0.0 {
        let bar = Progress::start(out.quiet, progress_line("rpc warm-up", warm.clone()));
        drive(&conns, &opts, per_conn, opts.warmup, &warm).await;
        bar.stop();
    }
    let tally = Arc::new(Tally::default());
    let bar = Progress::start(out.quiet, progress_line("rpc", tally.clone()));
    let started = Instant::now();
    let waited = drive(&conns, &opts, per_conn, opts.duration, &tally).await;
    bar.stop();
    let window = opts.duration.max(1e-9);

    let mut report = Report::new(
        "rpc",
        json!({
            "urls": opts.common.urls, "clients": conns.len(), "rate": opts.rate,
            "duration_s": opts.duration, "warmup_s": opts.warmup, "method": opts.method,
            "max_waiting": opts.max_waiting,
        }),
    );
    let (sent, acked) = (
        tally.sent.load(Ordering::Relaxed),
        tally.acked.load(Ordering::Relaxed),
    );
    let errors = tally.errors.lock().expect("errors lock").clone();
    report
        .section(
            "rpc",
            format!(
                "rpc: {} connections, {} rpc/s offered for {} s (after {} s warm-up)",
                conns.len(),
                opts.rate,
                opts.duration,
                opts.warmup
            ),
        )
        .events("setup_failures", "set-up failures", &failures)
        .int("sent", "requests sent", sent)
        .num("sent_per_s", "requests sent / s", sent as f64 / window, 0)
        .int("acked", "answered (ack)", acked)
        .num(
            "acked_per_s",
            "answered / s (achieved)",
            acked as f64 / window,
            0,
        )
        .latency(
            "latency",
            "rpc → ack p50 / p99 / p99.9 / max",
            &tally.latency.merged(),
        )
        .int(
            "errors",
            "errors and timeouts",
            errors.values().copied().sum::<u64>(),
        )
        .events("errors_by_code", "errors by code", &errors)
        .int(
            "throttled",
            "sends that waited for a free slot (max waiting reached)",
            tally.throttled.load(Ordering::Relaxed),
        )
        .num(
            "drain_s",
            "after the last send, answers all in within (s)",
            (started.elapsed().as_secs_f64() - opts.duration).max(0.0),
            2,
        )
        .int(
            "closes",
            "connections ended by the server",
            rec.closes.load(Ordering::Relaxed),
        )
        .events("events", "events", &rec.events.lock().expect("events lock"));
    if !waited {
        report.text("note", "note", "some answers still missing after 30 s");
    }
    counters.report(&ctx.admins, &mut report).await;
    close_all(conns).await;
    Ok(report)
}

fn progress_line(name: &'static str, t: Arc<Tally>) -> impl Fn() -> String + Send + 'static {
    let (rs, ra) = (Rate::default(), Rate::default());
    move || {
        let (s, a) = (
            t.sent.load(Ordering::Relaxed),
            t.acked.load(Ordering::Relaxed),
        );
        format!(
            "{name}: {:.0} sent/s, {:.0} acked/s, {} errors",
            rs.per_s(s),
            ra.per_s(a),
            t.errors.lock().expect("errors lock").values().sum::<u64>()
        )
    }
}

/// Every connection sends at `per_conn`/s for `secs` seconds into `tally`;
/// returns once every request is answered (false: some were not within
/// 30 s after the end).
async fn drive(
    conns: &[Arc<Conn>],
    opts: &Opts,
    per_conn: f64,
    secs: f64,
    tally: &Arc<Tally>,
) -> bool {
    let until = Instant::now() + Duration::from_secs_f64(secs.max(0.0));
    let window = opts.max_waiting.max(1) as u32;
    let mut senders = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        let (conn, tally, method) = (conn.clone(), tally.clone(), opts.method.clone());
        // Connection i starts i/N of an interval late, so the connections'
        // sends are spread evenly instead of all at the same instants.
        let offset = Duration::from_secs_f64(i as f64 / conns.len() as f64 / per_conn.max(1e-3));
        senders.push(tokio::spawn(async move {
            tokio::time::sleep(offset.min(until.saturating_duration_since(Instant::now()))).await;
            let slots = Arc::new(Semaphore::new(window as usize));
            let mut k = 0u64;
            paced(per_conn, until, || {
                k += 1;
                let (conn, tally, slots, method) =
                    (conn.clone(), tally.clone(), slots.clone(), method.clone());
                async move {
                    let slot = match slots.clone().try_acquire_owned() {
                        Ok(slot) => slot,
                        Err(_) => {
                            tally.throttled.fetch_add(1, Ordering::Relaxed);
                            slots.acquire_owned().await.expect("never closed")
                        }
                    };
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    let mut data = Writer::with_capacity(10);
                    data.array(1).uint(k);
                    let data = data.into_vec();
                    tokio::spawn(async move {
                        let began = Instant::now();
                        let reply = conn
                            .request(|id| ClientFrame::Rpc { id, method, data })
                            .await;
                        match reply {
                            Reply::Ack => {
                                tally.acked.fetch_add(1, Ordering::Relaxed);
                                tally.latency.record(began.elapsed().as_micros() as u64);
                            }
                            Reply::Err(code) => tally.error(code),
                            Reply::Closed => tally.error("connection closed".to_owned()),
                        }
                        drop(slot);
                    });
                    true
                }
            })
            .await;
            // Every slot back: every request answered.
            let all_back =
                tokio::time::timeout(Duration::from_secs(30), slots.acquire_many(window))
                    .await
                    .is_ok();
            all_back
        }));
    }
    let mut all = true;
    for sender in senders {
        all &= sender.await.unwrap_or(false);
    }
    all
}
