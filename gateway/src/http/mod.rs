//! The two HTTP listeners: accepting, serving HTTP/1.1 with a header
//! timeout, and the helpers both use to read requests and build replies.
//!
//! Public (`public.rs`): `GET /ws` (the WebSocket upgrade, with origin, token
//! and connection-limit checks answered as HTTP 403/401/429, and a node not
//! yet serving or at `limits.max_conns` as 503 with `Retry-After`, *before*
//! the upgrade), `/healthz`, `/readyz`, `/` (the demo page) and
//! `/dev/token` (only with `auth.dev_tokens`). Admin (`admin.rs`): `/metrics` and the
//! `/api/*` publish and presence endpoints, behind the bearer
//! `admin.api_key` when set.

mod admin;
pub(crate) mod public;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;

/// Response body type of both listeners.
pub type Body = Full<Bytes>;

/// Longest time a client may take to send its request headers (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which listener a connection arrived on.
#[derive(Clone, Copy)]
enum Listener {
    Public,
    Admin,
}

/// Accepts on the public listener until shutdown.
pub async fn serve_public(app: Arc<App>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    serve(app, listener, shutdown, Listener::Public).await;
}

/// Accepts on the admin listener until shutdown.
pub async fn serve_admin(app: Arc<App>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    serve(app, listener, shutdown, Listener::Admin).await;
}

async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    which: Listener,
) {
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                errors.succeeded();
                pair
            }
            Err(err) => {
                app.node.metrics.accept_errors.inc();
                let pause = errors.failed(&err, Instant::now());
                if let Some(suppressed) = pause.log {
                    tracing::warn!(
                        listener = which.name(),
                        error = %err,
                        suppressed,
                        backoff_ms = pause.wait.as_millis() as u64,
                        "accept failed"
                    );
                }
                if !pause.wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(pause.wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let service = service_fn(move |req| {
                let app = app.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(match which {
                        Listener::Public => public::route(app, req, peer).await,
                        Listener::Admin => admin::route(app, req).await,
                    })
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let _ = builder.serve_connection(io, service).with_upgrades().await;
        });
    }
}

impl Listener {
    /// The name in logs.
    fn name(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Admin => "admin",
        }
    }
}

/// First pause after an `accept` that failed for want of resources.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between `accept`s that keep failing.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one `accept failed` line per listener this often.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// What a listener does after failed `accept`s. Out of file descriptors
/// (`EMFILE`, `ENFILE`) or memory (`ENOBUFS`, `ENOMEM`), `accept` fails
/// again at once while the connection waits in the backlog: without a
/// pause the loop would spin on a core, and every descriptor freed would
/// go to the next client rather than to a Redis reconnect. So it pauses,
/// 10 ms doubling to 1 s, until an `accept` succeeds. A connection that
/// failed on its own (reset or aborted before it was accepted) costs no
/// pause. Logged at most every 5 s, with the failures not logged since.
#[derive(Debug, Default)]
struct AcceptErrors {
    backoff: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

/// What to do after one failed `accept`.
#[derive(Debug, PartialEq, Eq)]
struct AcceptPause {
    /// How long to wait before the next `accept`.
    wait: Duration,
    /// `Some(failures not logged since the last line)` when this one is to
    /// be logged.
    log: Option<u64>,
}

impl AcceptErrors {
    /// An `accept` succeeded: the next failure starts from the shortest
    /// pause.
    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }

    /// An `accept` failed with `err` at `now`.
    fn failed(&mut self, err: &std::io::Error, now: Instant) -> AcceptPause {
        let wait = if connection_error(err) {
            Duration::ZERO
        } else {
            self.backoff = (self.backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
            self.backoff
        };
        let due = self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_LOG_EVERY);
        let log = if due {
            self.last_log = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        };
        AcceptPause { wait, log }
    }
}

/// True when `err` is about the one connection being accepted (it was
/// reset or aborted in the backlog), not about the process.
fn connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
    )
}

/// A reply with `status`, a content type and a body.
pub(crate) fn reply(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON reply.
pub(crate) fn json_reply(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    reply(status, "application/json", value.to_string())
}

/// A query parameter, decoded.
pub(crate) fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| query_decode(v))
    })
}

/// A percent-decoded path segment (`+` stays a `+` in a path).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A percent-decoded query value, where `+` stands for a space.
fn query_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_accepts_back_off_and_log_rarely() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        let mut errors = AcceptErrors::default();
        let t0 = Instant::now();
        // Out of descriptors: 10 ms doubling to 1 s; the first is logged.
        let first = errors.failed(&emfile, t0);
        assert_eq!(first.wait, Duration::from_millis(10));
        assert_eq!(first.log, Some(0));
        let waits: Vec<Duration> = (1..10)
            .map(|i| errors.failed(&emfile, t0 + Duration::from_millis(i)).wait)
            .collect();
        assert_eq!(waits[0], Duration::from_millis(20));
        assert_eq!(waits[5], Duration::from_millis(640));
        assert_eq!(waits[6], ACCEPT_BACKOFF_MAX);
        assert_eq!(waits[8], ACCEPT_BACKOFF_MAX);
        // A connection's own failure costs no pause (nor a log line yet).
        let own = errors.failed(&reset, t0 + Duration::from_secs(1));
        assert_eq!(
            own,
            AcceptPause {
                wait: Duration::ZERO,
                log: None
            }
        );
        // 5 s after the last line: logged, with the 10 not logged since.
        let later = errors.failed(&emfile, t0 + ACCEPT_LOG_EVERY);
        assert_eq!(later.log, Some(10));
        assert_eq!(later.wait, ACCEPT_BACKOFF_MAX);
        // A success starts the backoff over.
        errors.succeeded();
        let again = errors.failed(&emfile, t0 + ACCEPT_LOG_EVERY);
        assert_eq!(again.wait, ACCEPT_BACKOFF_MIN);
        assert_eq!(again.log, None);
    }

    #[test]
    fn query_values_and_path_segments_decode_differently() {
        assert_eq!(query_decode("a+b%40c"), "a b@c");
        assert_eq!(percent_decode("a+b%3Ac"), "a+b:c");
    }
}
