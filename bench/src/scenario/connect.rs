//! `connect`: a connection storm, then memory per idle connection.
//!
//! Opens N connections with `--concurrency` handshakes in flight, as fast
//! as the gateway accepts them (a connection counts once its `welcome`
//! arrived: the module registered it). Then, with every connection idle for
//! `--idle` seconds, reads `process_resident_memory_bytes` from the admin
//! `/metrics` again: (after − before) / N is the gateway's resident memory
//! per idle connection. Finally closes them all and waits until the
//! gateway's `broker_connections` is back where it was.
//!
//! One process holds at most its open-file limit of connections (20,000
//! here, hard). For more, run several processes with `--shard i/n` (each
//! opens every n-th connection, from its own source addresses) and
//! `--hold`, and read the memory yourself once all are connected.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::{grouped, open_many, Ctx, GatewayCounters, OpenProgress, Output};
use crate::client::{self, Ws};
use crate::metrics::Scrape;
use crate::stats::{Progress, Rate, Report};
use crate::Common;

/// Options of `connect`.
#[derive(Args, Debug)]
pub struct Opts {
    #[command(flatten)]
    common: Common,
    /// Connections to open (in all shards together).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    conns: usize,
    /// Distinct users: connection i is user u<i % users>. 0: one user per
    /// connection (u<i>).
    #[arg(long, default_value_t = 0)]
    users: usize,
    /// Seconds every connection stays idle before memory is read.
    #[arg(long, default_value_t = 5.0)]
    idle: f64,
    /// This process's part, i/n: it opens connections i, i+n, i+2n, ...
    #[arg(long, value_parser = client::parse_shard, default_value = "0/1")]
    shard: (usize, usize),
    /// Seconds to keep the connections open after measuring (to overlap
    /// with other shards).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
}

/// Runs the scenario.
///
/// # Errors
///
/// A bad URL.
pub async fn run(opts: Opts, out: &Output) -> anyhow::Result<Report> {
    let (shard, shards) = opts.shard;
    let ctx = Arc::new(Ctx::new(&opts.common, shard * opts.common.sources).await?);
    let indices: Vec<usize> = (shard..opts.conns).step_by(shards).collect();
    let n = indices.len();
    if n as u64 + 64 > out.nofile.0 {
        eprintln!(
            "warning: {n} connections need about {} open files; the limit is {} (hard {}): use --shard with several processes",
            n + 64,
            out.nofile.0,
            out.nofile.1
        );
    }
    let admin = ctx.admins.first().cloned();
    let before = match &admin {
        Some(a) => Some(Scrape::get(a).await?),
        None => None,
    };
    let counters = GatewayCounters::before(&ctx.admins).await;

    let progress = Arc::new(OpenProgress::default());
    let line = {
        let (p, rate) = (progress.clone(), Rate::default());
        move || {
            let opened = p.opened.load(Ordering::Relaxed);
            format!(
                "connect: {opened}/{n} open, {} failed, {:.0} conn/s",
                p.failed.load(Ordering::Relaxed),
                rate.per_s(opened)
            )
        }
    };
    let bar = Progress::start(out.quiet, line);
    let opened = open_many(&ctx, indices, grouped("u", opts.users), &progress).await;
    bar.stop();
    let count = opened.conns.len();
    let rate = count as f64 / opened.elapsed.as_secs_f64().max(1e-9);

    let mut report = Report::new(
        "connect",
        json!({
            "urls": opts.common.urls, "conns": opts.conns, "shard": format!("{shard}/{shards}"),
            "concurrency": ctx.concurrency, "users": opts.users, "idle_s": opts.idle,
            "source_addrs": ctx.sources.len(), "nofile": [out.nofile.0, out.nofile.1],
        }),
    );
    report.section(
        "connect",
        format!("connect: {n} connections, {} in flight", ctx.concurrency),
    );
    report
        .int("attempted", "connections attempted", n as u64)
        .int(
            "opened",
            "connections open (welcome received)",
            count as u64,
        )
        .int("failed", "failures", (n - count) as u64)
        .events("failures", "failures by kind", &opened.failures)
        .num(
            "elapsed_s",
            "time to open all (s)",
            opened.elapsed.as_secs_f64(),
            2,
        )
        .num("conns_per_s", "connections / s", rate, 0)
        .latency(
            "handshake",
            "connect + upgrade + welcome p50 / p99 / p99.9 / max",
            &opened.handshake,
        );

    // Idle: nothing is read or written; the gateway's pings come every
    // 25 s by default, later than this.
    tokio::time::sleep(Duration::from_secs_f64(opts.idle.max(0.0))).await;
    let conns: Vec<Ws> = opened.conns.into_iter().map(|(_, ws)| ws).collect();
    if let (Some(admin), Some(before)) = (&admin, &before) {
        let after = Scrape::get(admin).await?;
        let rss = |s: &Scrape| s.sum("process_resident_memory_bytes").unwrap_or(0.0);
        let gauge = |s: &Scrape| s.sum("broker_connections").unwrap_or(0.0);
        let delta = rss(&after) - rss(before);
        report
            .num(
                "rss_before_mib",
                "gateway RSS before (MiB)",
                rss(before) / 1_048_576.0,
                1,
            )
            .num(
                "rss_after_mib",
                "gateway RSS with all idle (MiB)",
                rss(&after) / 1_048_576.0,
                1,
            )
            .num(
                "gateway_connections",
                "gateway broker_connections (this node)",
                gauge(&after) - gauge(before),
                0,
            );
        if count > 0 {
            report.num(
                "rss_per_conn_kib",
                "gateway RSS per idle connection (KiB)",
                delta / count as f64 / 1024.0,
                2,
            );
        }
    }
    if opts.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(opts.hold)).await;
    }

    // Close all (dropping the sockets: the gateway sees EOF) and wait for
    // its gauge to come back.
    let closing = Instant::now();
    drop(conns);
    if let (Some(admin), Some(before)) = (&admin, &before) {
        let target = before.sum("broker_connections").unwrap_or(0.0);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut back = None;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(s) = Scrape::get(admin).await {
                let gauge = s.sum("broker_connections").unwrap_or(f64::MAX);
                if gauge <= target {
                    back = Some(closing.elapsed());
                    last = Some(s);
                    break;
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match back {
            Some(t) => report.num(
                "close_drain_s",
                "after closing all: broker_connections back in (s)",
                t.as_secs_f64(),
                2,
            ),
            None => report.text(
                "close_drain_s",
                "after closing all: broker_connections back in (s)",
                "not within 15 s",
            ),
        };
        if let Some(s) = last {
            report.num(
                "rss_closed_mib",
                "gateway RSS after closing all (MiB)",
                s.sum("process_resident_memory_bytes").unwrap_or(0.0) / 1_048_576.0,
                1,
            );
        }
    }
    counters.report(&ctx.admins, &mut report).await;
    Ok(report)
}
