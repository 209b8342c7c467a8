//! The gateway node: WebSocket + MessagePack clients in front of the broker
//! module.
//!
//! Map of the crate, in layers (each imports only the ones below it):
//!
//! - [`http`]: the public and admin listeners, one function per endpoint.
//! - [`socketio`]: the Socket.IO endpoint (Engine.IO sessions over
//!   WebSocket and long-polling) in front of the same sessions.
//! - [`session`]: one client connection: admission, the request loop,
//!   dispatch, namespace policy, and how failures reach the client.
//! - [`app`]: what the sessions and the listeners share (config, auth, node).
//! - [`node`]: the node lease, its Pub/Sub channel, the local hub and the
//!   keep-alive: what the process holds for all its connections.
//! - [`store`]: typed calls to the module, and its refusals as enum values.
//! - [`ws`]: the WebSocket layer (RFC 6455): frames, reassembly, close
//!   codes, the send queue and the writer task.
//!
//! Shared by all of them:
//!
//! - [`config`]: TOML + `BROKER_*` environment configuration.
//! - [`auth`]: JWT verification (keys and validation built once per load;
//!   `auth.jwks_file` re-read on SIGHUP).
//! - [`client_ip`]: the client's address behind trusted proxies.
//! - [`metrics`]: the node's Prometheus metrics.
//! - [`clock`]: wall-clock and monotonic milliseconds.
//! - [`fd_limit`]: the open-file limit and the connection cap it allows.
//! - [`webhooks`]: the lifecycle stream POSTed to `webhooks.url`.
//!
//! [`run`] starts a node on already-bound listeners, so tests start nodes
//! in-process on port 0 and `main.rs` stays a few lines.

pub mod app;
pub mod auth;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod fd_limit;
pub mod http;
pub mod metrics;
pub mod node;
pub mod session;
pub mod socketio;
pub mod store;
pub mod webhooks;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use broker::command::{Linger, NodeRelease};
use broker::protocol::CloseCode;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::node::{keepalive, lease, Node};
use crate::store::Store;

/// How long a graceful shutdown waits for connections to drain.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Runs a gateway node until `shutdown` resolves, then shuts down gracefully:
/// stops accepting, closes clients with 1012 after flushing what is queued,
/// releases the node's connections and lease in the module.
///
/// # Errors
/// Invalid configuration (keys, Redis URL).
pub async fn run(
    public: TcpListener,
    admin: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let auth = Authenticator::new(&config.auth).context("auth configuration")?;
    let urls = config.redis.url.clone();
    anyhow::ensure!(!urls.is_empty(), "redis.url is empty");
    let store = Store::connect(&urls, metrics.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let node = Arc::new(Node::new(
        config.node_id(),
        config.node.lease_ms,
        store,
        metrics,
        config.limits.send_queue,
        stop_rx.clone(),
    ));
    let limits = keepalive::Limits {
        idle_ms: config.limits.idle_timeout_s.max(1).saturating_mul(1000),
        leeway_ms: auth.leeway_s().saturating_mul(1000),
        ping_every_ms: config.limits.ping_interval_s.max(1).saturating_mul(1000),
    };
    let app = Arc::new(App::new(config, auth, node.clone()));
    let jwks_reload = tokio::spawn(auth::reload::on_sighup(
        app.auth.clone(),
        node.metrics.clone(),
    ));
    let nofile = fd_limit::nofile().ok().and_then(|limit| limit.soft);
    tracing::info!(
        node = %node.id,
        public = %public.local_addr()?,
        admin = %admin.local_addr()?,
        max_conns = app.capacity.max(),
        open_file_limit = nofile,
        "gateway starting"
    );
    if let Some(limit) = nofile {
        let allowed = fd_limit::cap_for(Some(limit));
        if app.capacity.max() > allowed {
            tracing::warn!(
                max_conns = app.capacity.max(),
                open_file_limit = limit,
                allowed,
                "limits.max_conns is above what the open-file limit allows: descriptors may run \
                 out first (accept and Redis reconnects then fail); raise LimitNOFILE or lower it"
            );
        }
    }

    let lease = tokio::spawn(lease::hold_lease(node.clone()));
    let webhook_loop = webhooks::start(&app.config, node.clone(), urls.clone());
    let receiver = tokio::spawn(node::channel::receive(node.clone(), urls));
    let keepalive = tokio::spawn(keepalive::run(node.clone(), limits));
    let reconcile = tokio::spawn(node::reconcile::run(node.clone()));
    let public_task = tokio::spawn(http::serve_public(app.clone(), public, stop_rx.clone()));
    let admin_task = tokio::spawn(http::serve_admin(app.clone(), admin, stop_rx.clone()));

    shutdown.await;
    tracing::info!(node = %node.id, connections = node.hub.len(), "shutting down");
    let _ = stop_tx.send(true);
    let _ = public_task.await;
    for conn in node.hub.connections() {
        conn.close(CloseCode::Restart, "server restarting");
    }
    let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
    while !node.hub.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the per-connection CONN.CLOSE calls go out, then drop what is left.
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Err(err) = node
        .store
        .release(&NodeRelease {
            linger: Linger::grace(app.config.node.presence_grace_ms),
            ..NodeRelease::new(&node.id)
        })
        .await
    {
        tracing::warn!(error = %err, "could not release the node lease");
    }
    let _ = lease.await;
    let _ = receiver.await;
    if let Some(webhook_loop) = webhook_loop {
        // Stops at once, or after the POST in flight (webhooks.timeout_ms).
        let _ = webhook_loop.await;
    }
    admin_task.abort();
    keepalive.abort();
    reconcile.abort();
    jwks_reload.abort();
    tracing::info!(node = %node.id, "stopped");
    Ok(())
}
