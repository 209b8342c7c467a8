//! The public listener's endpoints, one function each: the WebSocket
//! upgrade `/ws` (checks answered as HTTP statuses before the upgrade, then
//! the connection handed to its session), `/healthz`, `/readyz`, the demo
//! page and its files, `/dev/token` and the test-only `/echo`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use broker::names;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{bearer, json_reply, query_param, reply, Body};
use crate::app::App;
use crate::client_ip;
use crate::session;
use crate::session::admission::{self, Admission};
use crate::session::errors::upgrade_refusal;
use crate::store::{Readiness, StoreError};
use crate::ws::close::close_reply_code;

/// The demo chat page and the JavaScript client, built into the binary so a
/// node serves them with no files next to it.
const DEMO_HTML: &str = include_str!("../../static/index.html");
const DEMO_JS: &str = include_str!("../../static/app.js");
const DEMO_CSS: &str = include_str!("../../static/style.css");
const CLIENT_JS: &str = include_str!("../../../clients/js/dist/broker-client.js");
/// socket.io-client's browser bundle, for the page's Socket.IO mode
/// (`static/vendor/README.md` says which version and how to update it).
const SOCKETIO_JS: &str = include_str!("../../static/vendor/socket.io.min.js");

/// Routes a request on the public listener.
pub(super) async fn route(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ws") => upgrade(app, req, peer).await,
        (_, path) if app.config.socketio.enabled && crate::socketio::serves(&app, path) => {
            crate::socketio::route(app, req, peer).await
        }
        // HEAD too, for load balancers that probe with it (hyper sends
        // no body then).
        (&Method::GET | &Method::HEAD, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => ready(&app).await,
        (&Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", DEMO_HTML),
        (&Method::GET, "/app.js") => {
            reply(StatusCode::OK, "text/javascript; charset=utf-8", DEMO_JS)
        }
        (&Method::GET, "/style.css") => reply(StatusCode::OK, "text/css; charset=utf-8", DEMO_CSS),
        (&Method::GET, "/broker-client.js") => {
            reply(StatusCode::OK, "text/javascript; charset=utf-8", CLIENT_JS)
        }
        (&Method::GET, "/vendor/socket.io.min.js") => reply(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            SOCKETIO_JS,
        ),
        (&Method::GET, "/dev/token") => dev_token(&app, &req),
        (&Method::GET, "/echo") if app.config.testing.echo => echo(req),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `GET /readyz`: Redis with the module, the lease and the channel, and
/// not shutting down.
async fn ready(app: &App) -> Response<Body> {
    let redis = match app.node.store.ready().await {
        Ok(Readiness::Ready) => Ok(()),
        Ok(Readiness::NoModule) => Err("module missing".to_string()),
        Ok(Readiness::OldModule(api)) => Err(format!(
            "module too old (api {api}, this gateway needs {})",
            broker::MODULE_API
        )),
        Err(StoreError::Unavailable(_)) => Err("unreachable".to_string()),
        Err(err) => Err(format!("error: {err}")),
    };
    let lease = app.node.lease_held.load(Ordering::Relaxed);
    let subscribed = app.node.subscribed.load(Ordering::Relaxed);
    let body = json!({
        "redis": redis.as_ref().map_or_else(|e| e.as_str(), |_| "ok"),
        "lease": lease,
        "subscribed": subscribed,
        "shutting_down": app.shutting_down(),
    });
    let ok = redis.is_ok() && lease && subscribed && !app.shutting_down();
    json_reply(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

/// `GET /dev/token?user=...`: a token for the demo page (only with
/// `auth.dev_tokens`).
fn dev_token(app: &App, req: &Request<Incoming>) -> Response<Body> {
    if !app.auth.dev_tokens() {
        return reply(StatusCode::NOT_FOUND, "text/plain", "dev tokens are off\n");
    }
    let user = query_param(req, "user").unwrap_or_default();
    if names::validate_user(&user).is_err() {
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid user name"}),
        );
    }
    match app.auth.mint_dev_token(&user, 3600) {
        Some(token) => json_reply(StatusCode::OK, json!({"token": token})),
        None => reply(StatusCode::NOT_FOUND, "text/plain", "dev tokens are off\n"),
    }
}

/// True when the request's `Origin` is allowed: any when `origins` is empty,
/// no header (not a browser), the gateway's own origin, or a listed one.
pub(crate) fn origin_allowed(app: &App, req: &Request<Incoming>) -> bool {
    let origins = &app.config.origins;
    if origins.is_empty() {
        return true;
    }
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    if let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    {
        if origin == format!("http://{host}") || origin == format!("https://{host}") {
            return true;
        }
    }
    origins.iter().any(|o| o == origin || o == "*")
}

/// The name the client's address counts under in the limits (through
/// trusted proxies; an IPv6 client by its network).
pub(crate) fn limit_ip(app: &App, req: &Request<Incoming>, peer: SocketAddr) -> String {
    let forwarded = req.headers().get_all("x-forwarded-for");
    let forwarded = forwarded.iter().filter_map(|v| v.to_str().ok());
    client_ip::limit_key(
        app.trusted_proxies.client_ip(peer.ip(), forwarded),
        app.config.limits.ipv6_prefix_len,
    )
}

/// Seconds a client refused by [`not_serving`] is told to wait.
const NOT_SERVING_RETRY_S: &str = "1";

/// The 503 (with `Retry-After`) that answers an upgrade while the node
/// cannot deliver to a new connection: its lease is not held or its Pub/Sub
/// subscription is not live (what `/readyz` also checks). A connection
/// admitted then would miss messages that nothing repairs.
pub(crate) fn not_serving(app: &App) -> Option<Response<Body>> {
    let lease = app.node.lease_held.load(Ordering::Relaxed);
    let subscribed = app.node.subscribed.load(Ordering::Relaxed);
    if lease && subscribed {
        return None;
    }
    let why = if lease {
        "not subscribed to its channel yet"
    } else {
        "no lease"
    };
    let mut resp = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        format!("node not ready ({why}), retry\n"),
    );
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from_static(NOT_SERVING_RETRY_S),
    );
    Some(resp)
}

/// Seconds a client refused by [`node_full`] is told to wait.
const NODE_FULL_RETRY_S: &str = "5";

/// The 503 (with `Retry-After`) that answers an upgrade while the node
/// holds `limits.max_conns` WebSocket connections.
pub(crate) fn node_full() -> Response<Body> {
    let mut resp = reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "node at its connection limit, retry (another node)\n",
    );
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from_static(NODE_FULL_RETRY_S),
    );
    resp
}

/// `GET /ws`: the WebSocket upgrade. A node that is not serving (no lease,
/// or its subscription not live) answers 503 with `Retry-After`, and so
/// does a node holding `limits.max_conns` connections. Admission
/// happens here when the request carries a token (or anonymous users are
/// allowed), so refusals are HTTP statuses; otherwise the `auth` frame must
/// follow.
async fn upgrade(app: Arc<App>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected a WebSocket upgrade\n",
        );
    }
    let refused = |reason: &str| {
        app.node
            .metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
    };
    if app.shutting_down() {
        refused("shutting_down");
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        );
    }
    if let Some(refusal) = not_serving(&app) {
        refused("unavailable");
        return refusal;
    }
    if !origin_allowed(&app, &req) {
        refused("origin");
        return reply(StatusCode::FORBIDDEN, "text/plain", "origin not allowed\n");
    }
    // The node's place for this connection, before anything costs a Redis
    // call; held until its socket is closed.
    let Some(place) = app.capacity.try_acquire() else {
        refused("max_conns");
        return node_full();
    };
    let ip = limit_ip(&app, &req, peer);
    let token = bearer(&req).or_else(|| query_param(&req, "token"));
    let admitted = match token {
        Some(token) => Some(admission::admit(&app, &token, &ip).await),
        None if app.auth.allow_anonymous() => {
            let claims = admission::anonymous(&app);
            Some(admission::register(&app, claims, &ip).await)
        }
        None => None,
    };
    let admission = match admitted {
        Some(Ok(admitted)) => Admission::Authed(admitted),
        Some(Err(refusal)) => {
            refused(match &refusal {
                admission::Refused::Token(_) => "token",
                admission::Refused::Limit => "conn_limit",
                admission::Refused::Unavailable(err) => {
                    tracing::warn!(error = %err, "could not register a connection");
                    "unavailable"
                }
            });
            let (status, body) = upgrade_refusal(&refusal);
            return reply(status, "text/plain", body);
        }
        None => match app
            .preauth
            .try_acquire(&ip, app.config.limits.max_preauth_per_ip)
        {
            Some(slot) => Admission::AwaitAuth(slot),
            None => {
                refused("preauth_per_ip");
                return reply(
                    StatusCode::TOO_MANY_REQUESTS,
                    "text/plain",
                    "too many connections waiting to authenticate from this address\n",
                );
            }
        },
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(err) => {
            admission::release(&app, &admission, &ip);
            return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{err}\n"));
        }
    };
    // The request (and hyper's buffers it holds) is not needed past here.
    drop(req);
    tokio::spawn(async move {
        match fut.await {
            // The connection gets a task of its own, sized for what it keeps
            // (this one, with the upgrade's state, ends here).
            Ok(ws) => {
                if let Some(serve) = session::start(app, ws, ip, admission, place) {
                    tokio::spawn(serve);
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                admission::release(&app, &admission, &ip);
                drop(place);
            }
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// `GET /echo` (only with `testing.echo`): a plain WebSocket echo for
/// conformance suites; it exercises the same WebSocket layer as `/ws`.
fn echo(mut req: Request<Incoming>) -> Response<Body> {
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(err) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{err}\n")),
    };
    tokio::spawn(async move {
        let Ok(mut ws) = fut.await else {
            return;
        };
        ws.set_max_message_size(64 << 20);
        ws.set_auto_pong(true);
        // Closes are answered here, with the same validation as `/ws`
        // (fastwebsockets does not check a close payload's length or code).
        ws.set_auto_close(false);
        let mut ws = fastwebsockets::FragmentCollector::new(ws);
        while let Ok(frame) = ws.read_frame().await {
            let done = match frame.opcode {
                fastwebsockets::OpCode::Text | fastwebsockets::OpCode::Binary => {
                    ws.write_frame(frame).await.is_err()
                }
                fastwebsockets::OpCode::Close => {
                    let code = close_reply_code(&frame.payload);
                    let _ = ws
                        .write_frame(fastwebsockets::Frame::close(code.code(), b""))
                        .await;
                    true
                }
                _ => false,
            };
            if done {
                break;
            }
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}
