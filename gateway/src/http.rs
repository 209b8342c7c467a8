//! The two HTTP listeners.
//!
//! Public: `GET /ws` (the WebSocket upgrade, with origin, token and
//! connection-limit checks answered as HTTP 403/401/429 *before* the
//! upgrade), `/healthz`, `/readyz`, `/` (the demo page) and `/dev/token`
//! (only with `auth.dev_tokens`). Admin: `/metrics` and the `/api/*` publish
//! and presence endpoints, behind the bearer `admin.api_key` when set.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use broker::names;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::auth::Claims;
use crate::conn::{self, Admission};
use crate::store::{PublishRequest, Readiness, StoreError};

/// Response body type of both listeners.
pub type Body = Full<Bytes>;

/// Longest time a client may take to send its request headers (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest admin request body.
const MAX_BODY: usize = 1 << 20;

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
                        Listener::Public => public(app, req, peer).await,
                        Listener::Admin => admin(app, req).await,
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

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn json_reply(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    reply(status, "application/json", value.to_string())
}

async fn public(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ws") => upgrade(app, req, peer).await,
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
        (&Method::GET, "/dev/token") => dev_token(&app, &req),
        (&Method::GET, "/echo") if app.config.testing.echo => echo(req),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The demo chat page and the JavaScript client, built into the binary so a
/// node serves them with no files next to it.
const DEMO_HTML: &str = include_str!("../static/index.html");
const DEMO_JS: &str = include_str!("../static/app.js");
const DEMO_CSS: &str = include_str!("../static/style.css");
const CLIENT_JS: &str = include_str!("../../clients/js/dist/broker-client.js");

async fn ready(app: &App) -> Response<Body> {
    let redis = match app.store.ready().await {
        Ok(Readiness::Ready) => Ok(()),
        Ok(Readiness::NoModule) => Err("module missing".to_string()),
        Ok(Readiness::OldModule(api)) => Err(format!(
            "module too old (api {api}, this gateway needs {})",
            broker::MODULE_API
        )),
        Err(StoreError::Unavailable(_)) => Err("unreachable".to_string()),
        Err(err) => Err(format!("error: {err}")),
    };
    let lease = app.lease_held.load(Ordering::Relaxed);
    let subscribed = app.subscribed.load(Ordering::Relaxed);
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
fn origin_allowed(app: &App, req: &Request<Incoming>) -> bool {
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

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

async fn upgrade(app: Arc<App>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected a WebSocket upgrade\n",
        );
    }
    if app.shutting_down() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        );
    }
    if !origin_allowed(&app, &req) {
        return reply(StatusCode::FORBIDDEN, "text/plain", "origin not allowed\n");
    }
    let forwarded = req.headers().get_all("x-forwarded-for");
    let forwarded = forwarded.iter().filter_map(|v| v.to_str().ok());
    let ip = app
        .trusted_proxies
        .client_ip(peer.ip(), forwarded)
        .to_string();
    let token = bearer(&req).or_else(|| query_param(&req, "token"));
    let claims = match token {
        Some(token) => match app.auth.verify(&token) {
            Ok(claims) => Some(claims),
            Err(err) => {
                app.metrics.auth_failures.inc();
                return reply(StatusCode::UNAUTHORIZED, "text/plain", format!("{err}\n"));
            }
        },
        None if app.auth.allow_anonymous() => {
            let id = app.next_conn_id();
            Some(Claims {
                sub: format!("anon-{}", id.replace('.', "-")),
                exp: crate::hub::now_ms() / 1000 + 86_400,
                roles: Vec::new(),
                rooms: Vec::new(),
            })
        }
        None => None,
    };
    let admission = match claims {
        Some(claims) => {
            let conn = app.next_conn_id();
            let limits = &app.config.limits;
            match app
                .store
                .open(
                    &claims.sub,
                    &conn,
                    &app.node,
                    &ip,
                    Some((limits.max_conns_per_user, limits.max_conns_per_ip)),
                )
                .await
            {
                Ok(()) => Admission::Authed {
                    conn,
                    claims: Box::new(claims),
                },
                Err(err) if err.is("LIMIT") => {
                    return reply(
                        StatusCode::TOO_MANY_REQUESTS,
                        "text/plain",
                        "connection limit reached\n",
                    );
                }
                Err(err) => {
                    if err.is("NOLEASE") {
                        app.lease_now.notify_one();
                    }
                    tracing::warn!(error = %err, "could not register a connection");
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "unavailable, retry\n",
                    );
                }
            }
        }
        None => Admission::AwaitAuth,
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(err) => {
            release(&app, &admission);
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
                if let Some(serve) = conn::start(app, ws, ip, admission) {
                    tokio::spawn(serve);
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                release(&app, &admission);
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
                    let code = conn::close_reply_code(&frame.payload);
                    let _ = ws
                        .write_frame(fastwebsockets::Frame::close(code, b""))
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

/// Unregisters a connection admitted before an upgrade that did not
/// complete.
pub(crate) fn release(app: &Arc<App>, admission: &Admission) {
    if let Admission::Authed { conn, claims } = admission {
        let (app, conn, user) = (app.clone(), conn.clone(), claims.sub.clone());
        tokio::spawn(async move {
            let _ = app.store.close(&user, &conn, 0).await;
        });
    }
}

async fn admin(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if let Some(key) = &app.config.admin.api_key {
        let ok =
            bearer(&req).is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()));
        if !ok {
            return json_reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "missing or wrong API key"}),
            );
        }
    }
    // Each path segment percent-decoded (`alice%40example.com`,
    // `chat%3Alobby`).
    let decoded: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            app.metrics.render(),
        ),
        (&Method::POST, ["api", "publish"]) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let (Some(room), Some(ev)) = (body["room"].as_str(), body["ev"].as_str()) else {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "room and ev are required"}),
                );
            };
            publish(&app, room, ev, &body["data"]).await
        }
        (&Method::POST, ["api", "users", user, "emit"]) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let Some(ev) = body["ev"].as_str() else {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "ev is required"}));
            };
            if names::validate_user(user).is_err() {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid user"}));
            }
            publish(&app, &names::personal_room(user), ev, &body["data"]).await
        }
        (&Method::POST, ["api", "broadcast"]) => {
            let body = match read_json(req).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let Some(ev) = body["ev"].as_str() else {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "ev is required"}));
            };
            let ns = match &body["ns"] {
                serde_json::Value::Null => None,
                serde_json::Value::String(ns) => Some(ns.as_str()),
                _ => {
                    return json_reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "ns must be a string"}),
                    )
                }
            };
            let data = body["data"].to_string();
            match app.store.broadcast(ev, data.as_bytes(), ns).await {
                Ok(nodes) => json_reply(StatusCode::OK, json!({"nodes": nodes})),
                Err(err) => store_error(&err),
            }
        }
        (&Method::GET, ["api", "online"]) => {
            // Summed over every master on a cluster (BROKER.ONLINE and
            // BROKER.NODES answer for one shard).
            let online = app.store.online().await;
            let nodes = app.store.nodes().await;
            match (online, nodes) {
                (Ok((users, connections)), Ok(nodes)) => {
                    let nodes: Vec<serde_json::Value> = nodes
                        .into_iter()
                        .map(|(node, conns, deadline)| {
                            json!({"node": node, "connections": conns, "lease_deadline_ms": deadline})
                        })
                        .collect();
                    json_reply(
                        StatusCode::OK,
                        json!({"users": users, "connections": connections, "nodes": nodes}),
                    )
                }
                (Err(err), _) | (_, Err(err)) => store_error(&err),
            }
        }
        (&Method::POST, ["api", "users", user, "disconnect"]) => {
            if names::validate_user(user).is_err() {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid user"}));
            }
            match app.store.kick(user, "disconnected by the server").await {
                Ok(n) => json_reply(StatusCode::OK, json!({"connections": n})),
                Err(err) => store_error(&err),
            }
        }
        (&Method::GET, ["api", "users", user, "presence"]) => {
            if names::validate_user(user).is_err() {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid user"}));
            }
            match app.store.presence_json(user).await {
                Ok(v) => json_reply(StatusCode::OK, v),
                Err(err) => store_error(&err),
            }
        }
        (&Method::GET, ["api", "rooms", room, "presence"]) => {
            if names::validate_room(room).is_err() {
                return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid room"}));
            }
            match app.store.members(room).await {
                Ok(users) => {
                    let count = users.len();
                    let users: Vec<_> = users
                        .into_iter()
                        .map(|(user, conns)| json!({"user": user, "conns": conns}))
                        .collect();
                    json_reply(StatusCode::OK, json!({"users": users, "count": count}))
                }
                Err(err) => store_error(&err),
            }
        }
        _ => json_reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

async fn publish(app: &App, room: &str, ev: &str, data: &serde_json::Value) -> Response<Body> {
    let Ok((ns_name, _)) = names::split_room(room) else {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid room"}));
    };
    let ns = app.config.namespace(ns_name);
    let payload = data.to_string();
    let request = PublishRequest {
        room,
        ev,
        payload: payload.as_bytes(),
        format: "json",
        from: None,
        except: None,
        history: (ns.history > 0).then_some((ns.history, ns.history_ttl_s)),
        rate: None,
    };
    match app.store.publish(&request).await {
        Ok(seq) => {
            app.metrics.messages_published.inc();
            json_reply(StatusCode::OK, json!({"seq": seq}))
        }
        Err(err) => store_error(&err),
    }
}

fn store_error(err: &StoreError) -> Response<Body> {
    match err {
        StoreError::Unavailable(_) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "unavailable"}),
        ),
        StoreError::Refused { code, detail } => json_reply(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("{code} {detail}")}),
        ),
        StoreError::Reply(msg) => {
            json_reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": msg}))
        }
    }
}

async fn read_json(req: Request<Incoming>) -> Result<serde_json::Value, Response<Body>> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            json_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "body too large or unreadable"}),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        json_reply(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("invalid JSON: {e}")}),
        )
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
