//! The node's one timer for all its connections: pings, the idle timeout and
//! the token's expiry (and giving back the hub's memory after a crowd left).
//!
//! Twice a second this task looks at every registered connection: one that
//! sent nothing for `limits.idle_timeout_s` is closed with 4008, one whose
//! token expired (beyond `auth.leeway_s`) with 4001, and 30 s before the
//! expiry it is sent `expiring`; every `limits.ping_interval_s` each is
//! asked for a ping. A timer per connection would cost each idle
//! connection its timer's memory and two wake-ups a second; this costs the
//! node one loop over its connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use broker::protocol::{self, CloseCode};

use super::connection::ConnShared;
use super::Node;
use crate::clock::{mono_ms, now_ms};
use crate::ws::close::{IDLE_TIMEOUT, TOKEN_EXPIRED};

/// How often the connections are looked at.
const TICK: Duration = Duration::from_millis(500);
/// `expiring` is sent this long before the token's `exp`.
pub const EXPIRING_AHEAD_MS: u64 = 30_000;

/// What the keep-alive checks against (from `limits.*` and `auth.leeway_s`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Silence after which a connection is closed, in ms.
    pub idle_ms: u64,
    /// How long past its token's expiry a connection may stay, in ms.
    pub leeway_ms: u64,
    /// How often each connection is pinged, in ms.
    pub ping_every_ms: u64,
}

/// Runs until shutdown.
pub async fn run(node: Arc<Node>, limits: Limits) {
    let mut last_ping = mono_ms();
    let mut tick = tokio::time::interval(TICK);
    let mut shutdown = node.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (now, mono) = (now_ms(), mono_ms());
        // Within half a tick of the interval: pings come every
        // `ping_every_ms` ± 250 ms, not up to a tick late (Socket.IO
        // clients count on `pingInterval`).
        let half_tick = TICK.as_millis() as u64 / 2;
        let ping = mono.saturating_sub(last_ping) + half_tick >= limits.ping_every_ms;
        if ping {
            last_ping = mono;
        }
        for conn in node.hub.connections() {
            check(&node, &conn, limits, now, mono, ping);
        }
        node.hub.compact();
    }
}

/// One connection's turn.
fn check(node: &Node, conn: &ConnShared, limits: Limits, now: u64, mono: u64, ping: bool) {
    if mono.saturating_sub(conn.outlet.last_seen_ms()) > limits.idle_ms {
        conn.close(CloseCode::Policy, IDLE_TIMEOUT);
        return;
    }
    let exp_ms = conn.exp_ms.load(Ordering::Relaxed);
    if now >= exp_ms.saturating_add(limits.leeway_ms) {
        conn.close(CloseCode::Token, TOKEN_EXPIRED);
        return;
    }
    if now.saturating_add(EXPIRING_AHEAD_MS) >= exp_ms
        && !conn.expiring_sent.swap(true, Ordering::Relaxed)
    {
        let frame = protocol::encode_expiring(exp_ms.saturating_sub(now));
        conn.send(frame.into(), &node.metrics);
    }
    if ping {
        conn.outlet.ping();
    }
}
