//! `broker-bench`: load for the gateway, speaking WebSocket protocol v1
//! as real clients do.
//!
//! Scenarios (one subcommand each, `scenario/`):
//!
//! - `connect` — a connection storm, then the gateway's memory per idle
//!   connection (from its admin `/metrics`);
//! - `fanout` — one room, many subscribers over several nodes, one
//!   publisher at a fixed rate, then as fast as its acks come back;
//! - `chat` — many small rooms where every member talks;
//! - `churn` — connections joining and leaving rooms while others publish,
//!   then a check of `BROKER.ROOM.COUNT` in Redis against what the tool
//!   knows;
//! - `attack` — well-behaved chat clients while abusive ones attack in turn
//!   (unauthenticated sockets, non-reading `history` readers, join/leave
//!   cycling, `presence` polling, bad `refresh` tokens, garbage frames);
//!   checks that the well-behaved clients' p99 and connections hold, and
//!   exits 1 when they do not;
//! - `rpc` — client `rpc` requests at a fixed rate answered by a backend
//!   (run separately): round trip and achieved rate;
//! - `webhooks` — the tool as the gateways' webhook receiver while
//!   connections churn: delivery lag (now − the event's `ts`) and whether
//!   every event the module wrote arrived.
//!
//! Map: [`client`] opens connections and runs their readers; [`frame`]
//! scans the server frames on the hot path; [`stats`] counts, keeps the
//! latency histograms, draws the progress line and the report; [`metrics`]
//! scrapes the admin endpoint; [`jwt`] mints the users' tokens.
//!
//! A live progress line goes to stderr; the final figures go to stdout as
//! Markdown tables, or as one JSON object with `--json`.

mod client;
mod frame;
mod jwt;
mod metrics;
mod scenario;
mod stats;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

/// Command-line arguments.
#[derive(Parser)]
#[command(
    version,
    about = "Load tool for broker-gateway (WebSocket + MessagePack protocol v1)"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Print the results as one JSON object instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long, global = true)]
    quiet: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true, value_name = "FILE")]
    save: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N connections as fast as they are accepted; memory per idle
    /// connection.
    Connect(scenario::connect::Opts),
    /// One room, M subscribers, one publisher: fixed rate, then max rate.
    Fanout(scenario::fanout::Opts),
    /// R rooms of K members, every member publishing.
    Chat(scenario::chat::Opts),
    /// Connections joining and leaving rooms while others publish; checks
    /// BROKER.ROOM.COUNT.
    Churn(scenario::churn::Opts),
    /// Well-behaved chat clients while six kinds of attackers take turns;
    /// exits 1 when a goal is missed.
    Attack(scenario::attack::Opts),
    /// Client `rpc` requests at a fixed rate, answered by a backend: round
    /// trip and achieved rate.
    Rpc(scenario::rpc::Opts),
    /// The receiver of the gateways' webhooks while connections churn:
    /// delivery lag and completeness.
    Webhooks(scenario::webhooks::Opts),
}

/// Options every scenario takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Gateway WebSocket URL; repeat it to spread connections round-robin
    /// over several nodes.
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080/ws")]
    pub urls: Vec<String>,
    /// HS256 secret the gateways verify tokens with (`auth.secret`).
    #[arg(long, env = "BROKER_AUTH__SECRET", hide_env_values = true)]
    pub secret: String,
    /// Gateway admin address (host:port) for /metrics; repeatable, one per
    /// node.
    #[arg(long = "admin")]
    pub admins: Vec<String>,
    /// Handshakes in flight at once. Above the gateway's listen backlog
    /// (128 with tokio's default) SYNs get dropped and retried after 1 s.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Loopback source addresses to spread connections over (127.0.0.2,
    /// 127.0.0.3, ...); each gives about 28,000 ports. 0: the kernel's
    /// choice. Only used when every URL is on loopback.
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// Seconds one connection attempt may take (TCP, upgrade, welcome).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
}

/// Now, in nanoseconds since the Unix epoch: the clock of the payloads.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Raises the open-file soft limit to the hard limit; returns both.
///
/// Each connection is a file descriptor. The hard limit cannot be raised
/// without privileges (20,000 on the machines this was written on), so
/// more connections than that take several processes (`connect --shard`).
fn raise_nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass,
    // which lives for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    // rlim_t is u64 on Linux, not on every Unix.
    #[allow(clippy::unnecessary_cast)]
    (lim.rlim_cur as u64, lim.rlim_max as u64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nofile = raise_nofile_limit();
    let out = scenario::Output {
        quiet: cli.quiet,
        nofile,
    };
    let report = match cli.scenario {
        Scenario::Connect(opts) => scenario::connect::run(opts, &out).await?,
        Scenario::Fanout(opts) => scenario::fanout::run(opts, &out).await?,
        Scenario::Chat(opts) => scenario::chat::run(opts, &out).await?,
        Scenario::Churn(opts) => scenario::churn::run(opts, &out).await?,
        Scenario::Attack(opts) => scenario::attack::run(opts, &out).await?,
        Scenario::Rpc(opts) => scenario::rpc::run(opts, &out).await?,
        Scenario::Webhooks(opts) => scenario::webhooks::run(opts, &out).await?,
    };
    if let Some(path) = &cli.save {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.table());
    }
    if !report.failures().is_empty() {
        for why in report.failures() {
            eprintln!("goal missed: {why}");
        }
        std::process::exit(1);
    }
    Ok(())
}
