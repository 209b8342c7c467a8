//! Admission of a connection, written once for both ways a token comes:
//! with the upgrade request (`Authorization: Bearer` or `?token=`, answered
//! with an HTTP status before the upgrade) or in the first `auth` frame.
//!
//! The sequence: verify the token → take a connection id → register it in
//! the module (`BROKER.CONN.OPEN` within the per-user and per-IP limits; on
//! a cluster, `BROKER.IP.OPEN` first where the address's slot is not the
//! user's: `Store::open`) →
//! a `LIMIT` refusal is the client's, anything else (Redis down, a
//! `NOLEASE` that also wakes the lease task) is the server's.

use std::sync::Arc;

use crate::app::App;
use crate::auth::{AuthError, Claims};
use crate::clock::now_ms;
use broker::command::{ConnClose, ConnOpen, Refusal};

use super::preauth::PreauthSlot;
use crate::node::BusyGuard;
use crate::store::StoreError;

/// How long an anonymous user's claims last, in seconds.
const ANONYMOUS_TTL_S: u64 = 86_400;

/// A connection the module registered.
pub struct Admitted {
    /// Its id.
    pub conn: Arc<str>,
    /// Verified claims (boxed: the connection's future carries a pointer,
    /// not the claims, in each of its states).
    pub claims: Box<Claims>,
    /// Keeps the reconciliation off the connection until it is in the hub
    /// (drop it after [`crate::node::Hub::register`]).
    pub busy: BusyGuard,
}

/// How the connection was admitted before the upgrade.
pub enum Admission {
    /// The token was verified and the module registered the connection.
    Authed(Admitted),
    /// No token yet: an `auth` frame must come within 5 s; meanwhile the
    /// connection holds a place of its address's `max_preauth_per_ip`.
    AwaitAuth(PreauthSlot),
}

/// Why a connection was not admitted.
#[derive(Debug)]
pub enum Refused {
    /// The token is invalid or expired.
    Token(AuthError),
    /// The user or the client address holds its maximum of connections.
    Limit,
    /// The module could not register it now (Redis unreachable, the node
    /// re-registering).
    Unavailable(StoreError),
}

/// Verifies `token`; a refusal counts as an authentication failure (also
/// used by `refresh`).
pub fn verify(app: &App, token: &str) -> Result<Claims, AuthError> {
    app.auth.verify(token).inspect_err(|_| {
        app.node.metrics.auth_failures.inc();
    })
}

/// Verifies `token` and registers the connection from `ip`.
pub async fn admit(app: &App, token: &str, ip: &str) -> Result<Admitted, Refused> {
    let claims = verify(app, token).map_err(Refused::Token)?;
    register(app, claims, ip).await
}

/// Registers a connection of `claims`' user from `ip` under a new id,
/// within the configured limits.
pub async fn register(app: &App, claims: Claims, ip: &str) -> Result<Admitted, Refused> {
    let conn = app.next_conn_id();
    let busy = app.node.busy.hold(&conn);
    let limits = &app.config.limits;
    let open = ConnOpen {
        max_user: Some(limits.max_conns_per_user),
        max_ip: Some(limits.max_conns_per_ip),
        ..ConnOpen::new(&claims.sub, &conn, &app.node.id, ip)
    };
    let opened = app.node.on_new_masters(|| app.node.store.open(&open)).await;
    match opened {
        Ok(()) => Ok(Admitted {
            conn,
            claims: Box::new(claims),
            busy,
        }),
        Err(err) => match err.refusal() {
            Some(Refusal::Limit(_)) => Err(Refused::Limit),
            refusal => {
                if refusal == Some(Refusal::NoLease) {
                    app.node.lease_now.notify_one();
                }
                Err(Refused::Unavailable(err))
            }
        },
    }
}

/// The claims of an anonymous user (`auth.allow_anonymous`, no token): a
/// user id of its own, valid for a day.
pub fn anonymous(app: &App) -> Claims {
    let id = app.next_conn_id();
    Claims {
        sub: format!("anon-{}", id.replace('.', "-")),
        exp: now_ms() / 1000 + ANONYMOUS_TTL_S,
        roles: Vec::new(),
        rooms: Vec::new(),
    }
}

/// Unregisters a connection from `ip` admitted before an upgrade that did
/// not complete (with the place of its address, where that is counted
/// apart).
pub fn release(app: &Arc<App>, admission: &Admission, ip: &str) {
    if let Admission::Authed(Admitted { conn, claims, .. }) = admission {
        let (app, conn, user) = (app.clone(), conn.clone(), claims.sub.clone());
        let ip = ip.to_string();
        let busy = app.node.busy.hold(&conn);
        tokio::spawn(async move {
            let _ = app
                .node
                .store
                .close_from(&ConnClose::new(&user, &conn), &ip)
                .await;
            drop(busy);
        });
    }
}
