//! The admin listener's endpoints, one function each, behind the bearer
//! `admin.api_key` when it is set: `/metrics`, server publishes
//! (`/api/publish`, `/api/users/<user>/emit`, `/api/broadcast`), presence
//! (`/api/online`, `/api/users/<user>/presence`,
//! `/api/rooms/<room>/presence`), `/api/users/<user>/disconnect` and the
//! memberships the backend decides (`/api/users/<user>/join`, `/leave`). A
//! failed module call is answered by [`http_error`], the one mapping to
//! HTTP statuses.

use std::sync::Arc;

use broker::command::{validate_event, Broadcast, Kick, Publish, UserJoin, UserLeave};
use broker::names;
use broker::payload::Format;
use broker::registry::HistoryConfig;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{bearer, json_reply, percent_decode, reply, Body};
use crate::app::App;
use crate::session::dispatch::presence_page;
use crate::session::errors::http_error;
use crate::store::StoreError;

/// Largest admin request body.
const MAX_BODY: usize = 1 << 20;

/// Routes a request on the admin listener (after the API key check).
pub(super) async fn route(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
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
        (&Method::GET, ["metrics"]) => metrics(&app),
        (&Method::POST, ["api", "publish"]) => api_publish(&app, req).await,
        (&Method::POST, ["api", "users", user, "emit"]) => emit(&app, user, req).await,
        (&Method::POST, ["api", "broadcast"]) => broadcast(&app, req).await,
        (&Method::GET, ["api", "online"]) => online(&app).await,
        (&Method::POST, ["api", "users", user, "disconnect"]) => disconnect(&app, user).await,
        (&Method::POST, ["api", "users", user, "join"]) => membership(&app, user, true, req).await,
        (&Method::POST, ["api", "users", user, "leave"]) => {
            membership(&app, user, false, req).await
        }
        (&Method::GET, ["api", "users", user, "presence"]) => user_presence(&app, user).await,
        (&Method::GET, ["api", "rooms", room, "presence"]) => {
            room_presence(&app, room, super::query_param(&req, "after")).await
        }
        _ => json_reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

/// `GET /metrics`: the node's Prometheus metrics.
fn metrics(app: &App) -> Response<Body> {
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        app.node.metrics.render(),
    )
}

/// `POST /api/publish {room, ev, data, volatile?}`.
async fn api_publish(app: &App, req: Request<Incoming>) -> Response<Body> {
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
    let volatile = match &body["volatile"] {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        _ => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "volatile must be a boolean"}),
            )
        }
    };
    publish(app, room, ev, &body["data"], volatile).await
}

/// `POST /api/users/<user>/emit {ev, data}`: a publish to the user's
/// personal room.
async fn emit(app: &App, user: &str, req: Request<Incoming>) -> Response<Body> {
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
    publish(app, &names::personal_room(user), ev, &body["data"], false).await
}

/// `POST /api/broadcast {ev, data, ns?}`: to every connection (of a
/// namespace).
async fn broadcast(app: &App, req: Request<Incoming>) -> Response<Body> {
    let body = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(ev) = body["ev"].as_str() else {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "ev is required"}));
    };
    if let Err(reason) = validate_event(ev) {
        return json_reply(StatusCode::BAD_REQUEST, json!({ "error": reason }));
    }
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
    let broadcast = Broadcast {
        event: ev.to_string(),
        payload: body["data"].to_string().into_bytes(),
        format: Format::Json,
        namespace: ns.map(str::to_string),
    };
    match app.node.store.broadcast(&broadcast).await {
        Ok(nodes) => json_reply(StatusCode::OK, json!({"nodes": nodes})),
        Err(err) => store_error(&err),
    }
}

/// `GET /api/online`: users, connections and nodes.
async fn online(app: &App) -> Response<Body> {
    // Summed over every master on a cluster (BROKER.ONLINE and
    // BROKER.NODES answer for one shard).
    let online = app.node.store.online().await;
    let nodes = app.node.store.nodes().await;
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

/// `POST /api/users/<user>/disconnect`: closes the user's connections on
/// every node.
async fn disconnect(app: &App, user: &str) -> Response<Body> {
    if names::validate_user(user).is_err() {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid user"}));
    }
    let kick = Kick {
        user: user.to_string(),
        reason: Some("disconnected by the server".to_string()),
    };
    match app.node.store.kick(&kick).await {
        Ok(n) => json_reply(StatusCode::OK, json!({"connections": n})),
        Err(err) => store_error(&err),
    }
}

/// `POST /api/users/<user>/join` and `/leave` `{room}`: puts every live
/// connection of the user into the room, or takes them out
/// (`BROKER.USER.JOIN` / `USER.LEAVE`); `{connections}` told.
async fn membership(app: &App, user: &str, join: bool, req: Request<Incoming>) -> Response<Body> {
    if names::validate_user(user).is_err() {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid user"}));
    }
    let body = match read_json(req).await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let Some(room) = body.get("room").and_then(|r| r.as_str()) else {
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "room is required"}),
        );
    };
    if names::validate_room(room).is_err() || names::personal_room_owner(room).is_some() {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid room"}));
    }
    let told = if join {
        app.node.store.user_join(&UserJoin::new(user, room)).await
    } else {
        app.node.store.user_leave(&UserLeave::new(user, room)).await
    };
    match told {
        Ok(n) => json_reply(StatusCode::OK, json!({"connections": n})),
        Err(err) => store_error(&err),
    }
}

/// `GET /api/users/<user>/presence`.
async fn user_presence(app: &App, user: &str) -> Response<Body> {
    if names::validate_user(user).is_err() {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid user"}));
    }
    match app.node.store.presence_json(user).await {
        Ok(v) => json_reply(StatusCode::OK, v),
        Err(err) => store_error(&err),
    }
}

/// `GET /api/rooms/<room>/presence[?after=user]`: one page of the room's
/// users (`next` names the `after` of the next page when more follow).
async fn room_presence(app: &App, room: &str, after: Option<String>) -> Response<Body> {
    if names::validate_room(room).is_err() {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid room"}));
    }
    if after
        .as_deref()
        .is_some_and(|a| names::validate_user(a).is_err())
    {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid after"}));
    }
    match presence_page(&app.node.store, room, after).await {
        Ok((ack, _)) => match broker::msgpack::to_json(&ack) {
            Ok(body) => json_reply(StatusCode::OK, body),
            Err(err) => json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": err.to_string()}),
            ),
        },
        Err(err) => store_error(&err),
    }
}

/// A server publish of JSON `data` to `room`, with the namespace's history
/// (none when `volatile`: an ephemeral message, answered `{seq: 0}`).
async fn publish(
    app: &App,
    room: &str,
    ev: &str,
    data: &serde_json::Value,
    volatile: bool,
) -> Response<Body> {
    if let Err(reason) = validate_event(ev) {
        return json_reply(StatusCode::BAD_REQUEST, json!({ "error": reason }));
    }
    let Ok((ns_name, _)) = names::split_room(room) else {
        return json_reply(StatusCode::BAD_REQUEST, json!({"error": "invalid room"}));
    };
    let ns = app.config.namespace(ns_name);
    let request = Publish {
        format: Format::Json,
        volatile,
        history: (ns.history > 0 && !volatile).then_some(HistoryConfig {
            size: ns.history,
            ttl_ms: ns.history_ttl_s.saturating_mul(1000),
        }),
        ..Publish::new(room, ev, data.to_string().as_bytes())
    };
    match app.node.store.publish(&request).await {
        Ok(seq) => {
            app.node.metrics.messages_published.inc();
            json_reply(StatusCode::OK, json!({"seq": seq}))
        }
        Err(err) => store_error(&err),
    }
}

/// A failed module call as a JSON error reply ([`http_error`]).
fn store_error(err: &StoreError) -> Response<Body> {
    let (status, error) = http_error(err);
    json_reply(status, json!({ "error": error }))
}

/// The request body as JSON (at most [`MAX_BODY`] bytes).
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

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_whole_secrets() {
        assert!(constant_time_eq(b"key", b"key"));
        assert!(!constant_time_eq(b"key", b"kez"));
        assert!(!constant_time_eq(b"key", b"keys"));
    }
}
