//! `attack`: well-behaved chat clients while abusive clients attack the
//! gateways, one kind of attack at a time.
//!
//! R × K well-behaved clients (default 100 rooms × 10 members, spread over
//! every `--url`) each publish `--rate` messages per second to their room
//! and read everything, for the whole run. Their publish → receive p99 is
//! measured in a quiet window, then during each attack in turn (each
//! `--seconds` long, with `--settle` seconds between windows for the
//! previous attackers' connections to go). Every message carries the window
//! it was sent in, so a message delivered after its window still counts
//! for it.
//!
//! The attacks (counts multiplied by `--scale`):
//!
//! - `preauth` — sockets that upgrade without a token and never send
//!   `auth`, from `--sources` loopback addresses; each socket that is
//!   refused (HTTP 429, `limits.max_preauth_per_ip`) or closed (4001 after
//!   5 s) opens again after `--retry` seconds;
//! - `history` — clients with a 4 KiB receive buffer that never read and
//!   keep asking for a room holding large retained messages (each ack up to
//!   256 KiB): `limits.send_queue_bytes` closes them (4008); they read what
//!   came only afterwards, to learn how it ended, and reconnect;
//! - `joinleave` — join, leave, join... at `--attack-rate` per connection
//!   (`limits.requests` answers `rate_limited`);
//! - `presence` — `presence` pages (random `after`) of a room of 10,000
//!   members registered directly in Redis on a fake node;
//! - `refresh` — `refresh` with a token signed by another secret (4001
//!   after the fifth), then a new connection;
//! - `garbage` — binary messages that are not MessagePack (`bad_frame`,
//!   then 4008), then a new connection.
//!
//! Authenticated attackers are users of their own, on loopback addresses of
//! their own (16 connections per address at most, under the default
//! `limits.max_conns_per_ip` of 20), and so are the well-behaved clients, so
//! the attack runs against the default limits.
//!
//! Per window the report gives the gateways' RSS growth (peak during the
//! window minus before, `process_resident_memory_bytes` of each `--admin`),
//! the CPU Redis used (`INFO cpu`, `used_cpu_sys` + `used_cpu_user`, per
//! second), the well-behaved p99 and its ratio to the quiet one, the
//! well-behaved connections the server ended, and how the attackers were
//! answered. Goals: p99 during an attack under `--max-ratio` × max(quiet
//! p99, `--floor-ms`), and no well-behaved connection ended; a missed goal
//! makes the tool exit 1.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use broker::command::{ConnOpen, Join, NodeLease, NodeRelease};
use broker::protocol::{encode_client_frame, ClientFrame};
use clap::{Args, ValueEnum};
use fastwebsockets::{Frame, OpCode, Payload};
use rand::Rng as _;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::{close_all, open_and_join, Ctx, OpenProgress, Output};
use crate::client::{self, close_code, Conn, Reply, Sink, Sources};
use crate::frame::{self, Incoming};
use crate::jwt::Minter;
use crate::metrics::Scrape;
use crate::stats::{group, ms, Progress, Recorder, Report};
use crate::{now_ns, Common};

/// The kinds of attack, in the order they run by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Attack {
    /// Upgrades without a token, never `auth`.
    Preauth,
    /// Non-reading clients asking for big `history` pages.
    History,
    /// `join` / `leave` cycling.
    Joinleave,
    /// `presence` polling of a big room.
    Presence,
    /// `refresh` with bad tokens.
    Refresh,
    /// Frames that are not MessagePack.
    Garbage,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Preauth => "preauth",
            Attack::History => "history",
            Attack::Joinleave => "joinleave",
            Attack::Presence => "presence",
            Attack::Refresh => "refresh",
            Attack::Garbage => "garbage",
        }
    }
}

/// Options of `attack`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    common: Common,
    /// Redis with the module, as the gateways use it: `INFO cpu` around
    /// each window; the `presence` attack's big room is registered there.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Seconds of each window: the quiet one and every attack.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Multiplies every count: well-behaved rooms, attackers, the big
    /// room's members.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Attacks to run, in order (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "preauth,history,joinleave,presence,refresh,garbage"
    )]
    attacks: Vec<Attack>,
    /// Rooms of well-behaved clients (before `--scale`).
    #[arg(short = 'r', long, default_value_t = 100)]
    rooms: usize,
    /// Well-behaved members per room.
    #[arg(short = 'k', long, default_value_t = 10)]
    members: usize,
    /// Messages per second of each well-behaved client.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Goal: the p99 during an attack stays under this many times the
    /// quiet p99 (or `--floor-ms`, when that is larger).
    #[arg(long, default_value_t = 2.0)]
    max_ratio: f64,
    /// Floor of the quiet p99 in the goal, ms: on a small shared machine a
    /// sub-millisecond p99 doubles with scheduling jitter alone.
    #[arg(long, default_value_t = 1.0)]
    floor_ms: f64,
    /// Seconds between windows.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Requests (or frames) per second of each attacking connection.
    #[arg(long, default_value_t = 50.0)]
    attack_rate: f64,
    /// Seconds an attacker waits before a new connection, after a refusal
    /// or a close.
    #[arg(long, default_value_t = 1.0)]
    retry: f64,
    /// Sockets of the `preauth` attack.
    #[arg(long, default_value_t = 5000)]
    preauth_sockets: usize,
    /// Clients of the `history` attack.
    #[arg(long, default_value_t = 500)]
    history_clients: usize,
    /// Messages retained in the `history` attack's room.
    #[arg(long, default_value_t = 100)]
    history_messages: usize,
    /// Bytes of each of them.
    #[arg(long, default_value_t = 60_000)]
    history_bytes: usize,
    /// Connections of the `joinleave` attack.
    #[arg(long, default_value_t = 200)]
    joinleave_clients: usize,
    /// Connections of the `presence` attack.
    #[arg(long, default_value_t = 100)]
    presence_clients: usize,
    /// Members of the `presence` attack's room.
    #[arg(long, default_value_t = 10_000)]
    presence_members: usize,
    /// Connections of the `refresh` attack.
    #[arg(long, default_value_t = 200)]
    refresh_clients: usize,
    /// Connections of the `garbage` attack.
    #[arg(long, default_value_t = 200)]
    garbage_clients: usize,
}

/// Connections per loopback address for authenticated clients, under the
/// default `limits.max_conns_per_ip` (20) with room for closes that have
/// not reached Redis yet.
const PER_ADDRESS: usize = 16;
/// Room of the well-behaved clients: `chat:w-<n>`.
const CHAT_PREFIX: &str = "chat:w-";
/// The `history` attack's room.
const HISTORY_ROOM: &str = "big:history";
/// The `presence` attack's room.
const PRESENCE_ROOM: &str = "crowd:big";
/// The fake node that holds the big room's members.
const BULK_NODE: &str = "attack-bulk";

/// Counted outcomes of one attack, by description.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, what: impl Into<String>, n: u64) {
        *self
            .0
            .lock()
            .expect("tally lock")
            .entry(what.into())
            .or_default() += n;
    }

    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().expect("tally lock"))
    }
}

/// The attackers' [`Sink`]: closes and stray `err` frames, by kind.
struct AttackSink(Arc<Tally>);

impl Sink for AttackSink {
    fn msg(&self, _room: &str, _data: &[u8], _dup: bool) {}
    fn published(&self, _room: &str, _sent: Instant, _result: Result<(), &str>) {}
    fn closed(&self, why: String) {
        self.0.add(ended(&why), 1);
    }
    fn stray(&self, what: String) {
        // "err bad_frame: detail" → "err bad_frame".
        let kind = what.split(':').next().unwrap_or(&what).to_owned();
        self.0.add(kind, 1);
    }
}

/// "4008 slow consumer" → "close 4008"; anything else → "ended: ...".
fn ended(why: &str) -> String {
    match why.split_whitespace().next() {
        Some(code) if code.chars().all(|c| c.is_ascii_digit()) => format!("close {code}"),
        _ => format!("ended: {why}"),
    }
}

/// Figures taken at the edges of a window.
struct Snapshot {
    rss: Vec<Option<f64>>,
    redis_cpu: Option<f64>,
    closes: u64,
    scrapes: Vec<Option<Scrape>>,
    at: Instant,
}

/// What one window gave.
struct Window {
    name: String,
    attackers: String,
    rss_growth: Vec<Option<f64>>,
    redis_cpu_per_s: Option<f64>,
    p99_ms: Option<f64>,
    count: u64,
    closed: u64,
    answered: BTreeMap<String, u64>,
    gateway: BTreeMap<String, u64>,
}

/// Runs the scenario.
///
/// # Errors
///
/// A bad URL, Redis unreachable, too few open files for the sockets, or a
/// set-up step that failed.
pub async fn run(opts: Opts, out: &Output) -> anyhow::Result<Report> {
    let scaled = |n: usize| ((n as f64 * opts.scale).round() as usize).max(1);
    let base = Ctx::new(&opts.common, 0).await?;
    let targets = base.targets.clone();
    // Authenticated clients: their own addresses, PER_ADDRESS each.
    let ctx_at = |offset: usize, conns: usize| {
        Arc::new(Ctx {
            targets: targets.clone(),
            sources: Sources::new(&targets, conns.div_ceil(PER_ADDRESS).max(1), offset),
            minter: Minter::new(&opts.common.secret, 3600),
            timeout: base.timeout,
            concurrency: base.concurrency,
            admins: base.admins.clone(),
        })
    };
    let redis = redis::Client::open(opts.redis.as_str()).context("--redis")?;

    let k = opts.members.max(1);
    let rooms = scaled(opts.rooms);
    let n = rooms * k;
    let counts = Counts {
        preauth: scaled(opts.preauth_sockets),
        history: scaled(opts.history_clients),
        joinleave: scaled(opts.joinleave_clients),
        presence: scaled(opts.presence_clients),
        refresh: scaled(opts.refresh_clients),
        garbage: scaled(opts.garbage_clients),
    };
    let largest = opts
        .attacks
        .iter()
        .map(|a| counts.of(*a))
        .max()
        .unwrap_or(0);
    // The open-file limit: every socket of this process is a descriptor.
    let needed = (n + largest + 200) as u64;
    if out.nofile.0 > 0 && needed > out.nofile.0 {
        bail!(
            "{n} well-behaved clients and {largest} attackers need about {needed} open files; \
             the limit is {}: lower --scale",
            out.nofile.0
        );
    }
    // Checks every window and the budget of the addresses.
    for &attack in &opts.attacks {
        let conns = counts.of(attack);
        if attack != Attack::Preauth && conns.div_ceil(PER_ADDRESS) > 250 {
            bail!(
                "{conns} {} attackers need more than 250 addresses",
                attack.name()
            );
        }
    }
    if n.div_ceil(PER_ADDRESS) > 250 {
        bail!("{n} well-behaved clients need more than 250 addresses");
    }

    // Set-up, before any window: the big rooms, then the well-behaved
    // clients.
    let windows = 1 + opts.attacks.len();
    if opts.attacks.contains(&Attack::History) {
        fill_history(&ctx_at(7 * 256, 1), &opts).await?;
    }
    if opts.attacks.contains(&Attack::Presence) {
        let lease_ms = ((windows as f64 * (opts.seconds + opts.settle) + 300.0) * 1000.0) as u64;
        crowd(&redis, scaled(opts.presence_members), lease_ms).await?;
    }
    let between = windows; // the phase of messages sent between windows
    let room_of = |i: usize| format!("{CHAT_PREFIX}{}", i / k);
    let rec = Recorder::new(windows + 1, (0..rooms).map(|r| room_of(r * k)));
    rec.current.store(between, Ordering::Relaxed);
    let wb_ctx = ctx_at(256, n);
    let open = Arc::new(OpenProgress::default());
    let bar = Progress::start(out.quiet, {
        let open = open.clone();
        move || {
            format!(
                "attack: {}/{n} well-behaved clients open, {} failed",
                open.opened.load(Ordering::Relaxed),
                open.failed.load(Ordering::Relaxed)
            )
        }
    });
    let mut failures = BTreeMap::new();
    let members = open_and_join(
        &wb_ctx,
        (0..n).collect(),
        |i| format!("w{i}"),
        |i| vec![room_of(i)],
        rec.clone(),
        &open,
        &mut failures,
    )
    .await;
    bar.stop();

    // The well-behaved clients talk until `stop`.
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(1e-3));
    let mut talkers = Vec::new();
    for (i, conn) in &members {
        let offset = interval.mul_f64(rand::rng().random::<f64>());
        talkers.push(tokio::spawn(talk(
            conn.clone(),
            Arc::from(room_of(*i)),
            rec.clone(),
            stop.clone(),
            interval,
            offset,
        )));
    }
    let window_name = Arc::new(Mutex::new(String::from("warm-up")));
    let bar = Progress::start(out.quiet, {
        let (rec, window_name) = (rec.clone(), window_name.clone());
        move || {
            format!(
                "attack: {}, {} deliveries, {} well-behaved closes",
                window_name.lock().expect("name lock"),
                rec.delivered(),
                rec.closes.load(Ordering::Relaxed)
            )
        }
    });
    let settle = Duration::from_secs_f64(opts.settle.max(0.0));
    let length = Duration::from_secs_f64(opts.seconds.max(0.1));
    tokio::time::sleep(settle).await;

    let mut results = Vec::new();
    let mut plan: Vec<Option<(Attack, usize)>> = vec![None];
    plan.extend(offsets(&opts.attacks).into_iter().map(Some));
    for (w, step) in plan.into_iter().enumerate() {
        let name = step.map_or("quiet", |(a, _)| a.name());
        *window_name.lock().expect("name lock") = name.to_owned();
        let before = snapshot(&base.admins, &redis, &rec).await;
        let until = Instant::now() + length;
        rec.current.store(w, Ordering::Relaxed);
        let tally = Arc::new(Tally::default());
        let attack = step.map(|(attack, offset)| {
            let conns = counts.of(attack);
            let ctx = if attack == Attack::Preauth {
                Arc::new(Ctx {
                    targets: targets.clone(),
                    sources: Sources::new(&targets, opts.common.sources, 0),
                    minter: Minter::new(&opts.common.secret, 3600),
                    timeout: base.timeout,
                    concurrency: base.concurrency,
                    admins: base.admins.clone(),
                })
            } else {
                ctx_at(offset, conns)
            };
            let crowd_size = scaled(opts.presence_members);
            tokio::spawn(launch(
                attack,
                conns,
                ctx,
                tally.clone(),
                until,
                Tuning {
                    rate: opts.attack_rate,
                    retry: Duration::from_secs_f64(opts.retry.max(0.0)),
                    crowd: crowd_size,
                },
            ))
        });
        let peak = sample_rss(&base.admins, until).await;
        rec.current.store(between, Ordering::Relaxed);
        let after = snapshot(&base.admins, &redis, &rec).await;
        if let Some(task) = attack {
            let _ = task.await;
        }
        *window_name.lock().expect("name lock") = format!("after {name}");
        tokio::time::sleep(settle).await;
        let settled = snapshot(&base.admins, &redis, &rec).await;
        let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let rss_growth = before
            .rss
            .iter()
            .zip(&peak)
            .map(|(b, p)| Some(p.as_ref()? - b.as_ref()?))
            .collect();
        let redis_cpu_per_s = match (before.redis_cpu, after.redis_cpu) {
            (Some(b), Some(a)) => Some((a - b) / secs),
            _ => None,
        };
        results.push(Window {
            name: name.to_owned(),
            attackers: step.map_or("none".to_owned(), |(a, _)| {
                describe(a, counts.of(a), &opts, opts.common.sources)
            }),
            rss_growth,
            redis_cpu_per_s,
            p99_ms: None,
            count: 0,
            closed: settled.closes - before.closes,
            answered: tally.take(),
            gateway: gateway_deltas(&before.scrapes, &settled.scrapes),
        });
    }

    // Stop talking, wait for late deliveries, then read the histograms.
    stop.store(true, Ordering::Relaxed);
    for task in talkers {
        let _ = task.await;
    }
    // Until deliveries stop for 2 s (10 s at most): late messages still
    // count for the window they were sent in.
    rec.drain(
        |_| u64::MAX,
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
    bar.stop();
    for (w, window) in results.iter_mut().enumerate() {
        let hist = rec.phases[w].latency.merged();
        window.count = hist.len();
        if !hist.is_empty() {
            window.p99_ms = Some(hist.value_at_quantile(0.99) as f64 / 1000.0);
        }
    }
    if opts.attacks.contains(&Attack::Presence) {
        release_crowd(&redis).await;
    }

    let mut report = Report::new(
        "attack",
        json!({
            "urls": opts.common.urls, "seconds": opts.seconds, "scale": opts.scale,
            "rooms": rooms, "members": k, "rate": opts.rate,
            "attacks": opts.attacks.iter().map(|a| a.name()).collect::<Vec<_>>(),
            "max_ratio": opts.max_ratio, "floor_ms": opts.floor_ms,
            "attack_rate": opts.attack_rate, "retry_s": opts.retry,
        }),
    );
    report
        .section(
            "setup",
            format!(
                "attack: {rooms} rooms × {k} well-behaved members on {} node(s), {} msg/s each; \
                 windows of {} s",
                targets.len(),
                opts.rate,
                opts.seconds
            ),
        )
        .int(
            "members",
            "well-behaved clients joined",
            members.len() as u64,
        )
        .events("setup_failures", "set-up failures", &failures)
        .int("nofile", "open-file limit of this process", out.nofile.0)
        .int(
            "sockets",
            "sockets of this process at most (well-behaved + largest attack)",
            (n + largest) as u64,
        );
    if members.len() < n {
        report.fail(format!(
            "only {} of {n} well-behaved clients joined",
            members.len()
        ));
    }
    goals(&mut report, &results, &opts);
    close_all(members.into_iter().map(|(_, c)| c).collect()).await;
    Ok(report)
}

/// Attackers per attack, after `--scale`.
struct Counts {
    preauth: usize,
    history: usize,
    joinleave: usize,
    presence: usize,
    refresh: usize,
    garbage: usize,
}

impl Counts {
    fn of(&self, attack: Attack) -> usize {
        match attack {
            Attack::Preauth => self.preauth,
            Attack::History => self.history,
            Attack::Joinleave => self.joinleave,
            Attack::Presence => self.presence,
            Attack::Refresh => self.refresh,
            Attack::Garbage => self.garbage,
        }
    }
}

/// Each attack with the source-address offset of its clients: a block of
/// 256 addresses each, from 127.0.2.x on (127.0.0.x is the `preauth`
/// attack's, 127.0.1.x the well-behaved clients').
fn offsets(attacks: &[Attack]) -> Vec<(Attack, usize)> {
    attacks
        .iter()
        .map(|a| {
            let block = match a {
                Attack::Preauth => 0,
                Attack::History => 2,
                Attack::Joinleave => 3,
                Attack::Presence => 4,
                Attack::Refresh => 5,
                Attack::Garbage => 6,
            };
            (*a, block * 256)
        })
        .collect()
}

/// The attackers of a row, in words.
fn describe(attack: Attack, conns: usize, opts: &Opts, sources: usize) -> String {
    let rate = opts.attack_rate;
    let conns = group(conns as u64);
    match attack {
        Attack::Preauth => {
            format!("{conns} sockets without a token from {sources} addresses, never `auth`")
        }
        Attack::History => format!(
            "{conns} clients never reading, `history` of a {} × {} B room at {rate}/s",
            opts.history_messages, opts.history_bytes
        ),
        Attack::Joinleave => format!("{conns} connections, `join`/`leave` at {rate}/s each"),
        Attack::Presence => format!(
            "{conns} connections, `presence` of a {}-member room at {rate}/s each",
            group(((opts.presence_members as f64 * opts.scale).round() as u64).max(1))
        ),
        Attack::Refresh => format!("{conns} connections, bad `refresh` at {rate}/s each"),
        Attack::Garbage => format!("{conns} connections, non-MessagePack frames at {rate}/s each"),
    }
}

/// The results table and the goals.
fn goals(report: &mut Report, results: &[Window], opts: &Opts) {
    let quiet = results.first().and_then(|w| w.p99_ms);
    let base = quiet.map(|q| q.max(opts.floor_ms));
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let mut missed = Vec::new();
    for (i, w) in results.iter().enumerate() {
        let ratio = match (w.p99_ms, quiet) {
            (Some(p), Some(q)) if i > 0 => Some(p / q.max(1e-3)),
            _ => None,
        };
        let mut why = Vec::new();
        if w.closed > 0 {
            why.push(format!("{} well-behaved closed", w.closed));
        }
        match (w.p99_ms, base) {
            (Some(p), Some(b)) if i > 0 && p >= opts.max_ratio * b => why.push(format!(
                "p99 {} ms ≥ {} × {} ms",
                ms(p),
                opts.max_ratio,
                ms(b)
            )),
            (None, _) => why.push("no well-behaved deliveries".to_owned()),
            _ => {}
        }
        let goal = if why.is_empty() {
            "met".to_owned()
        } else {
            format!("**missed**: {}", why.join(", "))
        };
        if !why.is_empty() {
            missed.push(format!("{}: {}", w.name, why.join(", ")));
        }
        let rss = w
            .rss_growth
            .iter()
            .map(|g| g.map_or("-".to_owned(), |b| format!("{:+.1}", b / 1_048_576.0)))
            .collect::<Vec<_>>()
            .join(" / ");
        let mut answered = events(&w.answered);
        if !w.gateway.is_empty() {
            answered.push_str(&format!(" (gateways: {})", events(&w.gateway)));
        }
        rows.push(vec![
            w.name.clone(),
            w.attackers.clone(),
            rss,
            w.redis_cpu_per_s
                .map_or("-".to_owned(), |c| format!("{:.0}%", c * 100.0)),
            w.p99_ms.map_or("-".to_owned(), ms),
            ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
            w.closed.to_string(),
            answered,
            goal,
        ]);
        json_rows.push(json!({
            "window": w.name, "attackers": w.attackers,
            "rss_growth_bytes": w.rss_growth, "redis_cpu_per_s": w.redis_cpu_per_s,
            "p99_ms": w.p99_ms, "deliveries": w.count, "ratio": ratio,
            "well_behaved_closed": w.closed, "answered": w.answered, "gateway": w.gateway,
            "met": why.is_empty(),
        }));
    }
    report.grid(
        "windows",
        format!(
            "Goals: p99 during an attack < {} × max(quiet p99, {} ms); no well-behaved client closed",
            opts.max_ratio,
            opts.floor_ms
        ),
        &[
            "window",
            "attackers",
            "gateway RSS growth, node 1 / node 2 (MiB)",
            "Redis CPU",
            "well-behaved p99 (ms)",
            "p99 / quiet",
            "well-behaved closed",
            "attackers were answered",
            "goal",
        ],
        rows,
        Value::Array(json_rows),
    );
    for why in missed {
        report.fail(why);
    }
}

fn events(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    let mut items: Vec<_> = map.iter().collect();
    items.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    items
        .into_iter()
        .map(|(k, n)| format!("{} × {k}", group(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// RSS of every node, Redis CPU seconds, well-behaved closes, the
/// gateways' metrics.
async fn snapshot(admins: &[String], redis: &redis::Client, rec: &Recorder) -> Snapshot {
    let mut scrapes = Vec::new();
    for admin in admins {
        scrapes.push(Scrape::get(admin).await.ok());
    }
    let rss = scrapes
        .iter()
        .map(|s| s.as_ref()?.sum("process_resident_memory_bytes"))
        .collect();
    Snapshot {
        rss,
        redis_cpu: redis_cpu(redis).await,
        closes: rec.closes.load(Ordering::Relaxed),
        scrapes,
        at: Instant::now(),
    }
}

/// The highest RSS of each node, sampled every 500 ms until `until`.
async fn sample_rss(admins: &[String], until: Instant) -> Vec<Option<f64>> {
    let mut peak: Vec<Option<f64>> = vec![None; admins.len()];
    loop {
        for (admin, slot) in admins.iter().zip(peak.iter_mut()) {
            if let Ok(scrape) = Scrape::get(admin).await {
                if let Some(rss) = scrape.sum("process_resident_memory_bytes") {
                    *slot = Some(slot.map_or(rss, |p: f64| p.max(rss)));
                }
            }
        }
        if Instant::now() >= until {
            return peak;
        }
        let next = (Instant::now() + Duration::from_millis(500)).min(until);
        tokio::time::sleep_until(next.into()).await;
    }
}

/// `used_cpu_sys + used_cpu_user` from `INFO cpu`, seconds.
async fn redis_cpu(redis: &redis::Client) -> Option<f64> {
    let redis = redis.clone();
    tokio::task::spawn_blocking(move || {
        let mut con = redis.get_connection().ok()?;
        let info: String = redis::cmd("INFO").arg("cpu").query(&mut con).ok()?;
        let field = |name: &str| -> Option<f64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
                .trim()
                .parse()
                .ok()
        };
        Some(field("used_cpu_sys")? + field("used_cpu_user")?)
    })
    .await
    .ok()
    .flatten()
}

/// Increases of the gateways' refusal, error and slow-consumer counters.
fn gateway_deltas(before: &[Option<Scrape>], after: &[Option<Scrape>]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (b, a) in before.iter().zip(after) {
        let Some(a) = a else { continue };
        let prior = |name: &str, labels: &str| -> f64 {
            b.as_ref()
                .and_then(|b| {
                    b.nonzero(name)
                        .into_iter()
                        .find(|(l, _)| l == labels)
                        .map(|(_, v)| v)
                })
                .unwrap_or(0.0)
        };
        for (name, short) in [
            ("broker_connections_refused_total", "refused"),
            ("broker_errors_total", "err"),
            (
                "broker_slow_consumer_disconnects_total",
                "slow-consumer closes",
            ),
            ("broker_auth_failures_total", "auth failures"),
        ] {
            for (labels, x) in a.nonzero(name) {
                let d = x - prior(name, &labels);
                if d >= 1.0 {
                    // `{reason="preauth_per_ip"}` → `refused preauth_per_ip`.
                    let label = labels
                        .split('"')
                        .nth(1)
                        .map_or(short.to_owned(), |v| format!("{short} {v}"));
                    *out.entry(label).or_default() += d as u64;
                }
            }
        }
    }
    out
}

/// One well-behaved client: a message every `interval` from `offset` on,
/// tagged with the window it is sent in, until `stop`; one unanswered at
/// most (a client that falls behind sends late rather than piling up).
async fn talk(
    conn: Arc<Conn>,
    room: Arc<str>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    interval: Duration,
    offset: Duration,
) {
    let window = Arc::new(Semaphore::new(4));
    let mut next = Instant::now() + offset;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.into()).await;
        let slot = window.clone().acquire_owned().await.expect("never closed");
        let phase = rec.current.load(Ordering::Relaxed) as u8;
        let data = frame::payload(now_ns(), phase);
        if conn.publish(&room, data, false, Some(slot)).await.is_err() {
            return;
        }
        rec.phases[usize::from(phase)]
            .sent
            .fetch_add(1, Ordering::Relaxed);
        next += interval;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), window.acquire_many(4)).await;
}

/// Attack knobs.
#[derive(Clone, Copy)]
struct Tuning {
    /// Requests per second per connection.
    rate: f64,
    /// Wait before a new connection.
    retry: Duration,
    /// Members of the presence room.
    crowd: usize,
}

/// Runs `conns` attackers of `attack` until `until`, then drops their
/// connections.
async fn launch(
    attack: Attack,
    conns: usize,
    ctx: Arc<Ctx>,
    tally: Arc<Tally>,
    until: Instant,
    tuning: Tuning,
) {
    let gate = Arc::new(Semaphore::new(ctx.concurrency));
    let mut tasks = Vec::with_capacity(conns);
    for i in 0..conns {
        let one = Attacker {
            i,
            ctx: ctx.clone(),
            gate: gate.clone(),
            tally: tally.clone(),
            tuning,
        };
        let body = async move {
            match attack {
                Attack::Preauth => one.preauth().await,
                Attack::History => one.history().await,
                Attack::Joinleave | Attack::Presence | Attack::Refresh | Attack::Garbage => {
                    one.requests(attack).await
                }
            }
        };
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout_at(until.into(), body).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// One attacking client.
struct Attacker {
    i: usize,
    ctx: Arc<Ctx>,
    gate: Arc<Semaphore>,
    tally: Arc<Tally>,
    tuning: Tuning,
}

/// Aborts a connection's reader when the attacker's future is dropped, so
/// its socket closes.
struct Aborting(Arc<Conn>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Attacker {
    fn user(&self, kind: &str) -> String {
        format!("atk-{kind}-{}", self.i)
    }

    fn source(&self) -> Option<std::net::Ipv4Addr> {
        self.ctx.sources.pick(self.i / self.ctx.targets.len())
    }

    /// Upgrades without a token and holds the socket until the server
    /// ends it; again after `retry`.
    async fn preauth(self) {
        loop {
            let permit = self.gate.acquire().await.expect("never closed");
            let result = client::upgrade(
                self.ctx.target(self.i),
                self.source(),
                None,
                self.ctx.timeout,
            )
            .await;
            drop(permit);
            match result {
                Err(kind) => self.tally.add(kind, 1),
                Ok(mut ws) => {
                    self.tally.add("upgraded", 1);
                    let end = loop {
                        match ws.read_frame().await {
                            Ok(f) if f.opcode == OpCode::Close => {
                                break ended(&close_code(&f.payload))
                            }
                            Ok(_) => {}
                            Err(e) => break format!("ended: {e}"),
                        }
                    };
                    self.tally.add(end, 1);
                }
            }
            tokio::time::sleep(self.tuning.retry).await;
        }
    }

    /// Asks for `history` pages without reading, then reads what came to
    /// learn how the connection ended; again after `retry`.
    async fn history(self) {
        let token = self.ctx.minter.token(&self.user("h"));
        let interval = Duration::from_secs_f64(1.0 / self.tuning.rate.max(0.1));
        loop {
            let permit = self.gate.acquire().await.expect("never closed");
            let result = client::open_with(
                self.ctx.target(self.i),
                self.source(),
                &token,
                Some(4096),
                self.ctx.timeout,
            )
            .await;
            drop(permit);
            let mut ws = match result {
                Ok(ws) => ws,
                Err(kind) => {
                    self.tally.add(kind, 1);
                    tokio::time::sleep(self.tuning.retry).await;
                    continue;
                }
            };
            // The request limit's burst: more would only be refused.
            let mut sent = 0u64;
            for id in 1..=50 {
                let bytes = encode_client_frame(&ClientFrame::History {
                    id,
                    room: HISTORY_ROOM.to_owned(),
                    since: None,
                    limit: None,
                });
                let write = ws.write_frame(Frame::binary(Payload::Owned(bytes)));
                match tokio::time::timeout(Duration::from_secs(2), write).await {
                    Ok(Ok(())) => sent += 1,
                    _ => break,
                }
                tokio::time::sleep(interval).await;
            }
            self.tally.add("history requests written", sent);
            // Now read, to see how it ended.
            let end = loop {
                match tokio::time::timeout(Duration::from_secs(3), ws.read_frame()).await {
                    Err(_) => break "still open after its requests".to_owned(),
                    Ok(Err(e)) => break format!("ended: {e}"),
                    Ok(Ok(f)) => match f.opcode {
                        OpCode::Close => break ended(&close_code(&f.payload)),
                        OpCode::Binary => match frame::parse(&f.payload) {
                            Incoming::Ack { .. } => self.tally.add("ack (read afterwards)", 1),
                            Incoming::Err { code, .. } => self.tally.add(format!("err {code}"), 1),
                            _ => {}
                        },
                        _ => {}
                    },
                }
            };
            self.tally.add(end, 1);
            drop(ws);
            tokio::time::sleep(self.tuning.retry).await;
        }
    }

    /// The request attacks: one connection sending at `rate`, counting
    /// the answers, and a new connection after `retry` when it is closed.
    async fn requests(self, attack: Attack) {
        let kind = match attack {
            Attack::Joinleave => "j",
            Attack::Presence => "p",
            Attack::Refresh => "r",
            _ => "g",
        };
        let user = self.user(kind);
        let token = self.ctx.minter.token(&user);
        let bad = Minter::new("not-the-secret", 3600).token(&user);
        let interval = Duration::from_secs_f64(1.0 / self.tuning.rate.max(0.1));
        let sink: Arc<dyn Sink> = Arc::new(AttackSink(self.tally.clone()));
        loop {
            let permit = self.gate.acquire().await.expect("never closed");
            let result = client::open(
                self.ctx.target(self.i),
                self.source(),
                &token,
                self.ctx.timeout,
            )
            .await;
            drop(permit);
            let conn = match result {
                Ok(ws) => Aborting(Arc::new(Conn::start(ws, sink.clone()))),
                Err(kind) => {
                    self.tally.add(kind, 1);
                    tokio::time::sleep(self.tuning.retry).await;
                    continue;
                }
            };
            let conn = &conn.0;
            let room = format!("atk:jl-{}", self.i % 20);
            let mut next = Instant::now();
            let mut n = 0u64;
            while !conn.ended() {
                let reply = match attack {
                    Attack::Joinleave if n % 2 == 0 => Some(conn.join(&room).await),
                    Attack::Joinleave => Some(conn.leave(&room).await),
                    Attack::Presence => {
                        let after = {
                            let mut rng = rand::rng();
                            rng.random_bool(0.9).then(|| {
                                format!("u{:05}", rng.random_range(0..self.tuning.crowd.max(1)))
                            })
                        };
                        Some(
                            conn.request(|id| ClientFrame::Presence {
                                id,
                                room: PRESENCE_ROOM.to_owned(),
                                after,
                            })
                            .await,
                        )
                    }
                    Attack::Refresh => Some(
                        conn.request(|id| ClientFrame::Refresh {
                            id,
                            token: bad.clone(),
                        })
                        .await,
                    ),
                    _ => {
                        let mut junk = vec![0xc1u8; 1 + (n % 32) as usize];
                        rand::rng().fill(&mut junk[1..]);
                        if conn.send_raw(junk).await.is_err() {
                            break;
                        }
                        self.tally.add("garbage frames written", 1);
                        None
                    }
                };
                match reply {
                    Some(Reply::Ack) => self.tally.add("ack", 1),
                    Some(Reply::Err(code)) => self.tally.add(format!("err {code}"), 1),
                    Some(Reply::Closed) => break,
                    None => {}
                }
                n += 1;
                next = (next + interval).max(Instant::now());
                tokio::time::sleep_until(next.into()).await;
            }
            // Let the reader count the close.
            tokio::time::sleep(Duration::from_millis(50)).await;
            tokio::time::sleep(self.tuning.retry).await;
        }
    }
}

/// Fills the `history` attack's room: one connection publishes
/// `--history-messages` messages of `--history-bytes` each.
async fn fill_history(ctx: &Arc<Ctx>, opts: &Opts) -> anyhow::Result<()> {
    let token = ctx.minter.token("atk-feeder");
    let ws = client::open(ctx.target(0), ctx.sources.pick(0), &token, ctx.timeout)
        .await
        .map_err(|e| anyhow::anyhow!("history feeder: {e}"))?;
    let conn = Conn::start(ws, Arc::new(AttackSink(Arc::default())));
    match conn.join(HISTORY_ROOM).await {
        Reply::Ack => {}
        other => bail!("history feeder: join {HISTORY_ROOM}: {other:?}"),
    }
    // A MessagePack bin of the wanted size.
    let size = opts.history_bytes.min(60_000);
    let mut data = Vec::with_capacity(size + 5);
    data.push(0xc6);
    data.extend_from_slice(&(size as u32).to_be_bytes());
    data.resize(size + 5, b'x');
    for _ in 0..opts.history_messages {
        let reply = conn
            .request(|id| ClientFrame::Pub {
                volatile: false,
                id,
                room: HISTORY_ROOM.to_owned(),
                ev: "big".to_owned(),
                data: data.clone(),
                others: true,
            })
            .await;
        if reply != Reply::Ack {
            bail!("history feeder: pub: {reply:?}");
        }
    }
    conn.close().await;
    Ok(())
}

/// Registers `members` users (`u00000`...) with one connection each in the
/// `presence` room, on a fake node leased for `lease_ms`, pipelined.
async fn crowd(redis: &redis::Client, members: usize, lease_ms: u64) -> anyhow::Result<()> {
    let redis = redis.clone();
    tokio::task::spawn_blocking(move || {
        let mut con = redis.get_connection().context("connecting to Redis")?;
        for chunk in (0..members).collect::<Vec<_>>().chunks(2000) {
            let mut pipe = redis::pipe();
            pipe.add_command(to_cmd(&NodeLease::new(BULK_NODE, lease_ms)))
                .ignore();
            for i in chunk {
                let (user, conn) = (format!("u{i:05}"), format!("{BULK_NODE}.c{i}"));
                pipe.add_command(to_cmd(&ConnOpen::new(&user, &conn, BULK_NODE, "10.0.0.1")))
                    .ignore();
                pipe.add_command(to_cmd(&Join::new(PRESENCE_ROOM, &user, &conn, BULK_NODE)))
                    .ignore();
            }
            let () = pipe
                .query(&mut con)
                .context("registering the presence room's members")?;
        }
        Ok(())
    })
    .await?
}

/// Releases the fake node: its members leave the room.
async fn release_crowd(redis: &redis::Client) {
    let redis = redis.clone();
    let _ = tokio::task::spawn_blocking(move || -> redis::RedisResult<()> {
        let mut con = redis.get_connection()?;
        to_cmd(&NodeRelease::new(BULK_NODE)).query::<redis::Value>(&mut con)?;
        Ok(())
    })
    .await;
}

/// A module command as a `redis::Cmd`.
fn to_cmd<C: broker::command::Command>(command: &C) -> redis::Cmd {
    let mut cmd = redis::cmd(C::NAME);
    for arg in command.to_args() {
        cmd.arg(&*arg);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_close_codes_and_errors() {
        assert_eq!(ended("4008 slow consumer"), "close 4008");
        assert_eq!(
            ended("error: connection reset"),
            "ended: error: connection reset"
        );
        let tally = Arc::new(Tally::default());
        let sink = AttackSink(tally.clone());
        sink.stray("err bad_frame: not a map".into());
        sink.closed("4001 token".into());
        let counted = tally.take();
        assert_eq!(counted["err bad_frame"], 1);
        assert_eq!(counted["close 4001"], 1);
    }

    #[test]
    fn events_sorted_by_count() {
        let map = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 1500)]);
        assert_eq!(events(&map), "1,500 × b, 1 × a");
    }
}
