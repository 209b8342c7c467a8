//! The two HTTP listeners: accepting, serving HTTP/1.1 with a header
//! timeout, and the helpers both use to read requests and build replies.
//!
//! Public (`public.rs`): `GET /ws` (the WebSocket upgrade, with origin, token
//! and connection-limit checks answered as HTTP 403/401/429, and a node not
//! yet serving as 503 with `Retry-After`, *before* the upgrade), `/healthz`, `/readyz`, `/` (the demo page) and `/dev/token`
//! (only with `auth.dev_tokens`). Admin (`admin.rs`): `/metrics` and the
//! `/api/*` publish and presence endpoints, behind the bearer
//! `admin.api_key` when set.

mod admin;
mod public;

use std::sync::Arc;
use std::time::Duration;

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
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
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

/// A reply with `status`, a content type and a body.
fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON reply.
fn json_reply(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    reply(status, "application/json", value.to_string())
}

/// A query parameter, decoded.
fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
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
fn bearer(req: &Request<Incoming>) -> Option<String> {
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
    fn query_values_and_path_segments_decode_differently() {
        assert_eq!(query_decode("a+b%40c"), "a b@c");
        assert_eq!(percent_decode("a+b%3Ac"), "a+b:c");
    }
}
