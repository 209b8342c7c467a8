//! What the sessions and the HTTP listeners share: configuration, the JWT
//! verifier, the trusted proxies, the node, the node's connection cap and
//! per-address count of unauthenticated connections, and the counter of
//! connection ids. (The node's own tasks get only the [`Node`].)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use broker::names;

use crate::auth::Authenticator;
use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::node::Node;
use crate::session::capacity::Capacity;
use crate::session::preauth::Preauth;

/// The state of one gateway process above the node.
pub struct App {
    /// Configuration (immutable after start).
    pub config: Config,
    /// JWT verification.
    pub auth: Authenticator,
    /// Whose `X-Forwarded-For` names the client (`trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// The node: its id, the module, the hub, metrics and lease state.
    pub node: Arc<Node>,
    /// Connections waiting for their `auth` frame, per client address.
    pub preauth: Arc<Preauth>,
    /// Places of this node's WebSocket connections (`limits.max_conns`).
    pub capacity: Arc<Capacity>,
    /// The Socket.IO endpoint's polling sessions.
    pub socketio: crate::socketio::Sessions,
    conn_counter: AtomicU64,
}

impl App {
    /// Builds the shared state. The connection cap is `limits.max_conns`,
    /// or with 0 what the open-file limit allows now
    /// ([`crate::fd_limit::max_conns`]).
    pub fn new(config: Config, auth: Authenticator, node: Arc<Node>) -> App {
        // Checked by `Config::validate` already.
        let trusted_proxies = TrustedProxies::parse(&config.trusted_proxies).unwrap_or_default();
        let capacity = Arc::new(Capacity::new(crate::fd_limit::max_conns(
            config.limits.max_conns,
        )));
        node.metrics.connections_max.set(i64::from(capacity.max()));
        App {
            capacity,
            trusted_proxies,
            config,
            auth,
            node,
            preauth: Arc::default(),
            socketio: crate::socketio::Sessions::default(),
            conn_counter: AtomicU64::new(0),
        }
    }

    /// A connection id unique across nodes and across the processes that
    /// held one node id: `<node>.<4 characters of the incarnation>.<counter
    /// in base 36>`.
    pub fn next_conn_id(&self) -> Arc<str> {
        let n = self.conn_counter.fetch_add(1, Ordering::Relaxed) + 1;
        let incarnation = self.node.incarnation.get(..4).unwrap_or_default();
        Arc::from(names::conn_id(&self.node.id, incarnation, &base36(n)))
    }

    /// True once shutdown began.
    pub fn shutting_down(&self) -> bool {
        self.node.shutting_down()
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::base36;

    #[test]
    fn base36_counts() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
