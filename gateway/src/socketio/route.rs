//! The HTTP side of `socketio.path`: which request is which (`EIO`,
//! `transport`, `sid`), the checks a new session passes (as an upgrade of
//! `/ws` does: draining, not serving, Origin, the node's cap, connections
//! per address waiting to authenticate), and the reference server's error
//! answers (`{"code", "message"}`, status 400 or 403).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::socketio::engine::{self as eio, Handshake};
use broker::socketio::Transport as Requested;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::engine::{EngineConn, Transport};
use super::polling::{self, Polled};
use super::{session, websocket};
use crate::app::App;
use crate::http::public::{limit_ip, node_full, not_serving, origin_allowed};
use crate::http::{bearer, json_reply, query_param, reply, Body};
use crate::session::capacity::ConnPlace;
use crate::session::preauth::PreauthSlot;

/// The reference server's handshake errors.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    TransportUnknown = 0,
    SessionUnknown = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::TransportUnknown => "Transport unknown",
            Refusal::SessionUnknown => "Session ID unknown",
            Refusal::BadHandshakeMethod => "Bad handshake method",
            Refusal::BadRequest => "Bad request",
            Refusal::Forbidden => "Forbidden",
            Refusal::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    fn reply(self) -> Response<Body> {
        let status = match self {
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        json_reply(
            status,
            json!({"code": self as u8, "message": self.message()}),
        )
    }
}

/// Serves one request of the endpoint.
pub async fn route(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut resp = if req.method() == Method::OPTIONS {
        preflight(&req)
    } else if !origin_allowed(&app, &req) {
        refused(&app, "origin");
        Refusal::Forbidden.reply()
    } else {
        endpoint(app.clone(), req, peer).await
    };
    // Cross-origin polling from a browser: the origin passed the check.
    if let Some(origin) = origin {
        let headers = resp.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// A CORS preflight (a client with `extraHeaders`).
fn preflight(req: &Request<Incoming>) -> Response<Body> {
    let mut resp = reply(StatusCode::NO_CONTENT, "text/plain", "");
    let headers = resp.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    resp
}

async fn endpoint(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if eio::check_version(query_param(&req, "EIO").as_deref()).is_err() {
        return Refusal::UnsupportedProtocolVersion.reply();
    }
    let Ok(transport) = Requested::parse(query_param(&req, "transport").as_deref()) else {
        return Refusal::TransportUnknown.reply();
    };
    let upgrade = fastwebsockets::upgrade::is_upgrade_request(&req);
    match (query_param(&req, "sid"), transport) {
        (None, Requested::Polling) if req.method() == Method::GET => {
            handshake(app, req, peer, Transport::Polling).await
        }
        (None, Requested::Polling) => Refusal::BadHandshakeMethod.reply(),
        (None, Requested::WebSocket) if upgrade => {
            handshake(app, req, peer, Transport::WebSocket).await
        }
        (None, Requested::WebSocket) => Refusal::BadRequest.reply(),
        (Some(sid), transport) => {
            let Some(engine) = app.socketio.get(&sid) else {
                return Refusal::SessionUnknown.reply();
            };
            match (transport, req.method()) {
                (Requested::Polling, &Method::GET) => poll(&app, &engine).await,
                (Requested::Polling, &Method::POST) => post(&engine, req).await,
                (Requested::WebSocket, &Method::GET) if upgrade => upgrade_to_ws(engine, req),
                _ => Refusal::BadRequest.reply(),
            }
        }
    }
}

/// Counts a refused session by reason.
fn refused(app: &App, reason: &str) {
    app.node
        .metrics
        .connections_refused
        .with_label_values(&[reason])
        .inc();
}

/// A new session on `transport`: the node's checks, then the `open`
/// packet (the GET's answer on polling, the first frame on WebSocket) and
/// the session task.
async fn handshake(
    app: Arc<App>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    transport: Transport,
) -> Response<Body> {
    if app.shutting_down() {
        refused(&app, "shutting_down");
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        );
    }
    if let Some(refusal) = not_serving(&app) {
        refused(&app, "unavailable");
        return refusal;
    }
    let Some(place) = app.capacity.try_acquire() else {
        refused(&app, "max_conns");
        return node_full();
    };
    let ip = limit_ip(&app, &req, peer);
    let Some(slot) = app
        .preauth
        .try_acquire(&ip, app.config.limits.max_preauth_per_ip)
    else {
        refused(&app, "preauth_per_ip");
        return reply(
            StatusCode::TOO_MANY_REQUESTS,
            "text/plain",
            "too many connections waiting to authenticate from this address\n",
        );
    };
    let token = bearer(&req).or_else(|| query_param(&req, "token"));
    let (engine, inbound) = EngineConn::new(app.clone(), ip, transport);
    let open = open_packet(&app, &engine, transport);
    let start = |engine: Arc<EngineConn>, slot: PreauthSlot, place: ConnPlace| {
        tokio::spawn(session::run(
            app.clone(),
            engine,
            inbound,
            token,
            slot,
            place,
        ));
    };
    match transport {
        Transport::Polling | Transport::Upgrading => {
            app.socketio.insert(engine.clone());
            start(engine, slot, place);
            reply(StatusCode::OK, "text/plain; charset=UTF-8", open)
        }
        Transport::WebSocket => {
            let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
                Ok(pair) => pair,
                Err(err) => {
                    return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{err}\n"))
                }
            };
            drop(req);
            start(engine.clone(), slot, place);
            tokio::spawn(async move {
                match fut.await {
                    Ok(ws) => websocket::serve(engine, ws, false, open).await,
                    Err(err) => {
                        tracing::debug!(error = %err, "upgrade failed");
                        engine
                            .outlet
                            .close(broker::protocol::CloseCode::Abnormal, "upgrade failed");
                    }
                }
            });
            let (parts, _) = response.into_parts();
            Response::from_parts(parts, Full::new(Bytes::new()))
        }
    }
}

/// The `open` packet: `0{"sid", "upgrades", "pingInterval", "pingTimeout",
/// "maxPayload"}`.
fn open_packet(app: &App, engine: &EngineConn, transport: Transport) -> String {
    let limits = &app.config.limits;
    let ping_ms = limits.ping_interval_s.saturating_mul(1000);
    let idle_ms = limits.idle_timeout_s.saturating_mul(1000);
    let upgrades = match transport {
        Transport::WebSocket => Vec::new(),
        _ => vec!["websocket".to_owned()],
    };
    eio::encode_text(&eio::EnginePacket::Open(Handshake {
        sid: engine.sid.clone(),
        upgrades,
        ping_interval: ping_ms,
        ping_timeout: idle_ms.saturating_sub(ping_ms).max(1000),
        max_payload: engine.max_payload as u64,
    }))
}

/// A polling GET.
async fn poll(app: &App, engine: &Arc<EngineConn>) -> Response<Body> {
    let ping_every = Duration::from_secs(app.config.limits.ping_interval_s);
    match polling::get(engine, ping_every).await {
        Polled::Payload(payload) => reply(StatusCode::OK, "text/plain; charset=UTF-8", payload),
        Polled::Closed(payload) => {
            app.socketio.remove(&engine.sid);
            reply(StatusCode::OK, "text/plain; charset=UTF-8", payload)
        }
        Polled::Refused => Refusal::BadRequest.reply(),
    }
}

/// A polling POST: at most `maxPayload` bytes.
async fn post(engine: &EngineConn, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), engine.max_payload)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            engine
                .outlet
                .close(broker::protocol::CloseCode::TooLarge, "payload too large");
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "payload too large\n",
            );
        }
    };
    match polling::post(engine, &body).await {
        Ok(()) => reply(StatusCode::OK, "text/html", "ok"),
        Err(_) => Refusal::BadRequest.reply(),
    }
}

/// The WebSocket that upgrades a polling session.
fn upgrade_to_ws(engine: Arc<EngineConn>, mut req: Request<Incoming>) -> Response<Body> {
    if engine.transport() != Transport::Polling {
        return Refusal::BadRequest.reply();
    }
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(err) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{err}\n")),
    };
    drop(req);
    tokio::spawn(async move {
        if let Ok(ws) = fut.await {
            websocket::serve(engine, ws, true, String::new()).await;
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}
