//! `broker-gateway --config FILE`: one gateway node. Parses arguments, sets
//! up logging, binds the listeners and hands over to [`broker_gateway::run`].

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context as _;
use broker_gateway::config::Config;
use clap::Parser;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// jemalloc returns freed memory to the system and packs the many small
/// per-connection allocations tighter than glibc's malloc (measured: less
/// resident memory per idle connection, see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: pages freed by short-lived
/// buffers (every handshake's) go back to the system after 1 s instead of
/// 10 s, so they do not stay counted against the idle connections; and a
/// background thread does the purging, so an idle node also gives back
/// what a crowd that left had used (measured: 60 MiB stayed resident after
/// 10,000 connections closed without it, 15 MiB with it). The environment
/// variable `_RJEM_MALLOC_CONF` still overrides this.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Command-line arguments.
#[derive(Parser)]
#[command(version, about = "WebSocket gateway node of the broker")]
struct Args {
    /// TOML configuration file (every key has a default; `BROKER_*`
    /// environment variables override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    json_logs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.json_logs {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        // Colours only on a terminal: journald and log files get plain text.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stdout().is_terminal())
            .init();
    }
    let config = Config::load(args.config.as_deref()).context("configuration")?;
    raise_open_file_limit();
    let public = bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let admin =
        bind(config.admin_listen).with_context(|| format!("binding {}", config.admin_listen))?;
    broker_gateway::run(public, admin, config, shutdown_signal()).await
}

/// Raises the soft open-file limit to the hard one (what `ulimit -n`
/// and many service managers leave at 1024): each connection holds a
/// descriptor, and with `limits.max_conns = 0` the node's cap is taken from
/// this limit.
fn raise_open_file_limit() {
    match broker_gateway::fd_limit::raise_to_hard() {
        Ok((before, after)) if before != after => tracing::info!(
            from = before.soft,
            to = after.soft,
            "raised the open-file limit"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not raise the open-file limit"),
    }
}

/// Binds with a deep accept queue: `TcpListener::bind` uses a backlog of
/// 128, which a connection storm overflows (dropped SYNs cost clients a 1 s
/// retransmit).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
