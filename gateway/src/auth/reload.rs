//! SIGHUP: re-read `auth.jwks_file` while the node runs.
//!
//! No connection is dropped: [`Authenticator::reload`] swaps the key set
//! whole, connections already admitted keep running, and new connections,
//! `auth` and `refresh` frames use the new keys. A file that fails to load
//! is logged as an error and counted
//! (`broker_jwks_reloads_total{result="error"}`); the keys in use stay.
//!
//! The handler is installed whether or not a JWKS is configured, so SIGHUP
//! never stops the gateway (its default action would): without
//! `auth.jwks_file` it only logs that there is nothing to reload.

use std::sync::Arc;

use super::Authenticator;
use crate::metrics::Metrics;

/// Re-reads the JWKS on every SIGHUP, forever (abort the task to stop it).
/// Sets `broker_auth_keys` at once and after each reload.
pub async fn on_sighup(auth: Authenticator, metrics: Arc<Metrics>) {
    metrics.auth_keys.set(gauge(auth.key_count()));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP: auth.jwks_file will not be re-read");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            reload(&auth, &metrics);
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// One reload, logged and counted; the keys in use stay when it fails.
pub fn reload(auth: &Authenticator, metrics: &Metrics) {
    if auth.jwks_file().is_none() {
        tracing::info!("SIGHUP: nothing to reload (auth.jwks_file is not set)");
        return;
    }
    // The file is small and read once per signal: reading it on the
    // runtime's thread is fine.
    match auth.reload() {
        Ok(keys) => {
            metrics.jwks_reloads.with_label_values(&["ok"]).inc();
            metrics.auth_keys.set(gauge(keys));
        }
        Err(err) => {
            metrics.jwks_reloads.with_label_values(&["error"]).inc();
            tracing::error!(
                error = format!("{err:#}"),
                keys = auth.key_count(),
                "SIGHUP: auth.jwks_file refused; the keys in use stay"
            );
        }
    }
}

/// A key count as a gauge value.
fn gauge(keys: usize) -> i64 {
    i64::try_from(keys).unwrap_or(i64::MAX)
}
