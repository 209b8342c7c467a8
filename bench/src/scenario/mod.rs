//! The scenarios, and what they share: opening many connections with a
//! bounded number of handshakes in flight, joining rooms, pacing
//! publishes, and the gateways' own counters around a run.

pub mod attack;
pub mod chat;
pub mod churn;
pub mod connect;
pub mod fanout;
pub mod rpc;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::client::{self, Conn, Reply, Sink, Sources, Target, Ws};
use crate::jwt::Minter;
use crate::metrics::Scrape;
use crate::stats::{Hist, Report};
use crate::Common;

/// How the results are shown, and facts about the process.
pub struct Output {
    /// No progress line.
    pub quiet: bool,
    /// Open-file limit (soft, hard) after raising the soft one.
    pub nofile: (u64, u64),
}

/// Everything needed to open connections.
pub struct Ctx {
    /// The gateways, in `--url` order.
    pub targets: Vec<Target>,
    /// Loopback source addresses.
    pub sources: Sources,
    /// Token minting.
    pub minter: Minter,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Handshakes in flight.
    pub concurrency: usize,
    /// Admin addresses.
    pub admins: Vec<String>,
}

impl Ctx {
    /// Resolves the URLs; `source_offset` shifts the loopback addresses.
    ///
    /// # Errors
    ///
    /// No URL, or one that does not resolve.
    pub async fn new(common: &Common, source_offset: usize) -> anyhow::Result<Ctx> {
        if common.urls.is_empty() {
            bail!("give at least one --url");
        }
        let mut targets = Vec::new();
        for url in &common.urls {
            targets.push(Target::resolve(url).await?);
        }
        let sources = Sources::new(&targets, common.sources, source_offset);
        Ok(Ctx {
            targets,
            sources,
            minter: Minter::new(&common.secret, 3600),
            timeout: Duration::from_secs_f64(common.connect_timeout.max(0.1)),
            concurrency: common.concurrency.max(1),
            admins: common.admins.clone(),
        })
    }

    /// The gateway of connection `i` (round-robin).
    pub fn target(&self, i: usize) -> &Target {
        &self.targets[i % self.targets.len()]
    }
}

/// The outcome of [`open_many`].
pub struct Opened {
    /// `(index, connection)` of every success, in completion order.
    pub conns: Vec<(usize, Ws)>,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// From the first attempt to the last answer.
    pub elapsed: Duration,
    /// Time of each successful attempt (TCP, upgrade, welcome), µs.
    pub handshake: Histogram<u64>,
}

/// Counters [`open_many`] updates as it goes, for progress lines.
#[derive(Default)]
pub struct OpenProgress {
    /// Connections open.
    pub opened: AtomicU64,
    /// Attempts failed.
    pub failed: AtomicU64,
}

/// Opens connection `i` for every `i` in `indices` as user `user(i)`, at
/// most `ctx.concurrency` at once, spread over the gateways and source
/// addresses by `i`.
pub async fn open_many(
    ctx: &Arc<Ctx>,
    indices: Vec<usize>,
    user: impl Fn(usize) -> String,
    progress: &Arc<OpenProgress>,
) -> Opened {
    let gate = Arc::new(Semaphore::new(ctx.concurrency));
    let hist = Arc::new(Hist::default());
    let failures: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(indices.len());
    for i in indices {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let token = ctx.minter.token(&user(i));
        let (ctx, hist, failures, progress) = (
            ctx.clone(),
            hist.clone(),
            failures.clone(),
            progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let source = ctx.sources.pick(i / ctx.targets.len());
            let result = client::open(ctx.target(i), source, &token, ctx.timeout).await;
            drop(permit);
            match result {
                Ok(ws) => {
                    hist.record(began.elapsed().as_micros() as u64);
                    progress.opened.fetch_add(1, Ordering::Relaxed);
                    Some((i, ws))
                }
                Err(kind) => {
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    *failures
                        .lock()
                        .expect("failures lock")
                        .entry(kind)
                        .or_default() += 1;
                    None
                }
            }
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(Some(pair)) = task.await {
            conns.push(pair);
        }
    }
    let failures = std::mem::take(&mut *failures.lock().expect("failures lock"));
    Opened {
        conns,
        failures,
        elapsed: start.elapsed(),
        handshake: hist.merged(),
    }
}

/// Opens and starts connections, then joins each to `rooms(i)`. Returns
/// the connections that are in all their rooms, by index, and counts
/// failures (opening or joining) in `failures`.
pub async fn open_and_join(
    ctx: &Arc<Ctx>,
    indices: Vec<usize>,
    user: impl Fn(usize) -> String,
    rooms: impl Fn(usize) -> Vec<String>,
    sink: Arc<dyn Sink>,
    progress: &Arc<OpenProgress>,
    failures: &mut BTreeMap<String, u64>,
) -> Vec<(usize, Arc<Conn>)> {
    let opened = open_many(ctx, indices, user, progress).await;
    for (kind, n) in opened.failures {
        *failures.entry(format!("connect: {kind}")).or_default() += n;
    }
    let gate = Arc::new(Semaphore::new(ctx.concurrency));
    let mut tasks = Vec::new();
    for (i, ws) in opened.conns {
        let conn = Arc::new(Conn::start(ws, sink.clone()));
        let my_rooms = rooms(i);
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        tasks.push(tokio::spawn(async move {
            let mut failed = None;
            for room in &my_rooms {
                match conn.join(room).await {
                    Reply::Ack => {}
                    other => {
                        failed = Some(format!("join: {other:?}"));
                        break;
                    }
                }
            }
            drop(permit);
            (i, conn, failed)
        }));
    }
    let mut joined = Vec::new();
    for task in tasks {
        if let Ok((i, conn, failed)) = task.await {
            match failed {
                None => joined.push((i, conn)),
                Some(kind) => *failures.entry(kind).or_default() += 1,
            }
        }
    }
    joined.sort_by_key(|(i, _)| *i);
    joined
}

/// Calls `send` so that it has run `rate × elapsed` times, until `until`.
/// Rates above the timer's resolution (1 ms) are met by sending the owed
/// count at each tick. Returns how many times it ran.
pub async fn paced<F, Fut>(rate: f64, until: Instant, mut send: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let mut sent = 0u64;
    while Instant::now() < until {
        let owed = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < owed {
            if !send().await {
                return sent;
            }
            sent += 1;
        }
        let next = start + Duration::from_secs_f64((sent + 1) as f64 / rate);
        tokio::time::sleep_until(next.min(until).into()).await;
    }
    sent
}

/// The gateways' counters that tell about trouble, scraped before and
/// after a run so the report shows what the run caused.
pub struct GatewayCounters {
    before: Vec<Option<Scrape>>,
}

/// Counters whose increase the report shows.
const TROUBLE: [(&str, &str); 4] = [
    (
        "broker_slow_consumer_disconnects_total",
        "gateway: slow-consumer closes",
    ),
    ("broker_errors_total", "gateway: err frames sent"),
    ("broker_auth_failures_total", "gateway: auth failures"),
    (
        "broker_rate_limited_total",
        "gateway: rate-limited publishes",
    ),
];

impl GatewayCounters {
    /// Scrapes every admin address (missing ones are skipped).
    pub async fn before(admins: &[String]) -> GatewayCounters {
        let mut before = Vec::new();
        for admin in admins {
            before.push(Scrape::get(admin).await.ok());
        }
        GatewayCounters { before }
    }

    /// Adds the increases since [`GatewayCounters::before`] to `report`,
    /// and the error series by code.
    pub async fn report(&self, admins: &[String], report: &mut Report) {
        if admins.is_empty() {
            return;
        }
        let mut after = Vec::new();
        for admin in admins {
            after.push(Scrape::get(admin).await.ok());
        }
        if after.iter().all(Option::is_none) {
            report.text("gateway_metrics", "gateway metrics", "unreachable");
            return;
        }
        for (name, label) in TROUBLE {
            let delta: f64 = after
                .iter()
                .zip(&self.before)
                .map(|(a, b)| {
                    let a = a.as_ref().and_then(|s| s.sum(name)).unwrap_or(0.0);
                    let b = b.as_ref().and_then(|s| s.sum(name)).unwrap_or(0.0);
                    a - b
                })
                .sum();
            report.int(name, label, delta.max(0.0) as u64);
        }
        let mut codes: BTreeMap<String, u64> = BTreeMap::new();
        for (a, b) in after.iter().zip(&self.before) {
            let Some(a) = a else { continue };
            for (labels, x) in a.nonzero("broker_errors_total") {
                let prior = b
                    .as_ref()
                    .map(|b| {
                        b.nonzero("broker_errors_total")
                            .into_iter()
                            .find(|(l, _)| *l == labels)
                            .map_or(0.0, |(_, v)| v)
                    })
                    .unwrap_or(0.0);
                if x > prior {
                    *codes.entry(labels).or_default() += (x - prior) as u64;
                }
            }
        }
        report.events(
            "gateway_errors_by_code",
            "gateway: err frames by code",
            &codes,
        );
    }
}

/// `--users` grouping: connection `i` is user `prefix{i % users}`, or
/// `prefix{i}` when `users` is 0.
pub fn grouped(prefix: &str, users: usize) -> impl Fn(usize) -> String + Clone + '_ {
    move |i| {
        if users == 0 {
            format!("{prefix}{i}")
        } else {
            format!("{prefix}{}", i % users)
        }
    }
}

/// Closes every connection (1000, "bye"), all at once.
pub async fn close_all(conns: Vec<Arc<Conn>>) {
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(async move { conn.close().await }))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}
