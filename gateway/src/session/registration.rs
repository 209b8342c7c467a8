//! A connection's registration: in the hub while it lives, and in the
//! module until it is unregistered — on a normal close, an error, or a
//! panic of the connection task — with the presence grace when the
//! connection was lost rather than closed on purpose.

use std::sync::Arc;

use broker::command::{ConnClose, Leave, Linger};
use broker::lifecycle;
use broker::protocol::CloseCode;

use crate::app::App;
use crate::node::ConnShared;
use crate::ws::close::{IDLE_TIMEOUT, SLOW_CONSUMER, TOKEN_EXPIRED};
use crate::ws::CloseReason;

/// Unregisters a connection from the hub and the module when dropped — on a
/// normal close, an error, or a panic of the connection task.
pub(crate) struct Registration {
    app: Arc<App>,
    shared: Arc<ConnShared>,
}

impl Registration {
    pub(crate) fn new(app: Arc<App>, shared: Arc<ConnShared>) -> Registration {
        app.node.hub.register(shared.clone());
        Registration { app, shared }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // On a cluster the rooms live on other shards than the user: each
        // membership is left on its own shard (`CONN.CLOSE` clears only the
        // user's shard).
        let rooms: Vec<String> = if self.app.node.store.is_cluster() {
            self.shared
                .rooms_snapshot()
                .into_iter()
                .map(|(r, _)| r)
                .collect()
        } else {
            Vec::new()
        };
        // Held before the hub forgets the connection, until the module did:
        // the reconciliation must not race the cleanup.
        let busy = self.app.node.busy.hold(&self.shared.id);
        self.app.node.hub.unregister(&self.shared);
        let app = self.app.clone();
        let shared = self.shared.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _busy = busy;
                let linger = if lingers(shared.outlet.close_reason().as_ref()) {
                    Linger::grace(app.config.node.presence_grace_ms)
                } else {
                    None
                };
                let reason = departure_reason(shared.outlet.close_reason().as_ref());
                for room in rooms {
                    let leave = Leave {
                        linger,
                        ..Leave::new(&room, &shared.user, &shared.id).reason(reason)
                    };
                    if let Err(err) = app.node.store.leave(&leave).await {
                        tracing::warn!(conn = %shared.id, room, error = %err, "could not leave; the reconciliation will clean it up");
                    }
                }
                let close = ConnClose {
                    linger,
                    ..ConnClose::new(&shared.user, &shared.id).reason(reason)
                };
                // With the place of its address, where that is counted apart.
                if let Err(err) = app.node.store.close_from(&close, &shared.ip).await {
                    tracing::warn!(conn = %shared.id, error = %err, "could not unregister the connection; the reconciliation will clean it up");
                }
            });
        }
    }
}

/// Whether a connection that ended for `reason` gets the presence grace:
/// one that was lost (1006, or ended without a close), moved by a restart
/// (1012) or left with the client's "going away" (1001, a page reload) —
/// not a deliberate close (1000) or one the server decided (kick, policy,
/// expired token, slow consumer).
fn lingers(reason: Option<&CloseReason>) -> bool {
    reason.is_none_or(|r| {
        matches!(
            r.code,
            CloseCode::GoingAway | CloseCode::Abnormal | CloseCode::Restart
        )
    })
}

/// The `reason` of the lifecycle events of a connection that ended for
/// `close` (contract section 7): what the close code and reason say.
fn departure_reason(close: Option<&CloseReason>) -> &'static str {
    let Some(close) = close else {
        return lifecycle::reason::CLIENT;
    };
    match close.code {
        CloseCode::Forbidden => lifecycle::reason::KICKED,
        CloseCode::Restart => lifecycle::reason::SHUTDOWN,
        CloseCode::Token if close.reason == TOKEN_EXPIRED => lifecycle::reason::TOKEN_EXPIRED,
        CloseCode::Policy if close.reason == IDLE_TIMEOUT => lifecycle::reason::IDLE,
        CloseCode::Policy if close.reason == SLOW_CONSUMER => lifecycle::reason::SLOW_CONSUMER,
        CloseCode::Normal | CloseCode::GoingAway | CloseCode::Abnormal => lifecycle::reason::CLIENT,
        _ => lifecycle::reason::POLICY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_names_its_lifecycle_reason() {
        let close = |code: u16, reason: &str| CloseReason {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let cases = [
            (close(1000, ""), "client"),
            (close(1001, ""), "client"),
            (close(1006, "connection lost"), "client"),
            (close(4003, "kicked"), "kicked"),
            (close(1012, "server restarting"), "shutdown"),
            (close(4001, TOKEN_EXPIRED), "token_expired"),
            (close(4001, "too many rejected refresh tokens"), "policy"),
            (close(4008, IDLE_TIMEOUT), "idle"),
            (close(4008, SLOW_CONSUMER), "slow_consumer"),
            (close(4008, "too many bad frames"), "policy"),
            (close(1009, "message too large"), "policy"),
        ];
        for (c, want) in cases {
            assert_eq!(departure_reason(Some(&c)), want, "{c:?}");
        }
        assert_eq!(departure_reason(None), "client");
    }

    fn reason(code: u16) -> CloseReason {
        CloseReason {
            code: CloseCode::from(code),
            reason: String::new(),
        }
    }

    #[test]
    fn lost_moved_and_departing_connections_linger() {
        assert!(lingers(None), "ended without a close");
        for code in [1001, 1006, 1012] {
            assert!(lingers(Some(&reason(code))), "{code}");
        }
        for code in [1000, 1002, 4001, 4003, 4008, 4029] {
            assert!(!lingers(Some(&reason(code))), "{code}");
        }
    }
}
