//! The Socket.IO session task of one Engine.IO session: the CONNECT (its
//! parser, namespace and token), admission as for `/ws`, recovery, then
//! every EVENT turned into the protocol v1 request it stands for and handed
//! to the same dispatch as `/ws` (`session::Connection`). What the
//! connection is sent goes through its queue as protocol v1 frames and is
//! transcoded by the transport ([`super::engine::Encoder`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::names;
use broker::protocol::CloseCode;
use broker::socketio::bridge::{self, connect_answer, connect_error};
use broker::socketio::packet::MAIN_NAMESPACE;
use broker::socketio::{Body, Data, Decoder, Limits, ParserKind};
use tokio::sync::mpsc;

use super::engine::{EngineConn, Inbound};
use crate::app::App;
use crate::node::ConnShared;
use crate::session::admission::{self, Admitted, Refused};
use crate::session::capacity::ConnPlace;
use crate::session::preauth::PreauthSlot;
use crate::session::{errors, policy, Connection, Joiner, Registration};

/// How long a client has to send its CONNECT after the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest ack id taken (JavaScript's safe integers); a larger one is a bad
/// packet.
const MAX_ACK_ID: u64 = (1 << 53) - 1;

/// What the client's CONNECT asked for.
struct ConnectRequest {
    token: Option<String>,
    /// `pid` and `offset` of a client that wants its session recovered.
    recover: Option<(String, String)>,
}

/// Serves one Engine.IO session until it closes: `query_token` is the
/// handshake's `token` parameter, `slot` its address's place among the
/// connections not yet authenticated, `place` its place in the node's cap.
pub async fn run(
    app: Arc<App>,
    engine: Arc<EngineConn>,
    mut inbound: mpsc::Receiver<Inbound>,
    query_token: Option<String>,
    slot: PreauthSlot,
    place: ConnPlace,
) {
    let limits = Limits {
        max_attachment_bytes: app.config.limits.max_frame_bytes,
        ..Limits::default()
    };
    if let Some((decoder, request)) = await_connect(&engine, &mut inbound, limits).await {
        let token = request.token.or(query_token);
        let admitted = match token {
            Some(token) => admission::admit(&app, &token, &engine.ip).await,
            None if app.auth.allow_anonymous() => {
                let claims = admission::anonymous(&app);
                admission::register(&app, claims, &engine.ip).await
            }
            None => Err(Refused::Token(crate::auth::AuthError::Missing)),
        };
        drop(slot);
        match admitted {
            Ok(admitted) => {
                serve(
                    &app,
                    &engine,
                    &mut inbound,
                    decoder,
                    admitted,
                    request.recover,
                )
                .await
            }
            Err(refused) => {
                let (reply, close) = errors::auth_refusal(&refused);
                // `conn_limit` is a close code of protocol v1, not an `err`.
                let (code, msg) = reply.map_or(("conn_limit", close.reason.clone()), |r| {
                    (r.code.as_str(), r.msg)
                });
                let packet = connect_error(MAIN_NAMESPACE, &msg, Some(code));
                engine.send_packet(decoder.kind(), &packet);
                // The client closes the transport itself on a refusal (as
                // with the reference server); a close of ours in the same
                // payload would reach its app first, as a `disconnect`.
                let closed = engine.outlet.close_requested();
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, closed).await;
                engine.outlet.close(close.code, &close.reason);
            }
        }
    } else {
        drop(slot);
    }
    engine.outlet.finish();
    super::forget(&app, &engine);
    drop(place);
}

/// Waits for the CONNECT to the main namespace (answering one to any other
/// namespace with `Invalid namespace`); `None` when the client sent
/// something else, nothing in time, or went away.
async fn await_connect(
    engine: &EngineConn,
    inbound: &mut mpsc::Receiver<Inbound>,
    limits: Limits,
) -> Option<(Decoder, ConnectRequest)> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut decoder: Option<Decoder> = None;
    loop {
        let message = tokio::select! {
            message = tokio::time::timeout_at(deadline, inbound.recv()) => message,
            _ = engine.outlet.close_requested() => return None,
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => return None,
            Err(_) => {
                engine.outlet.close(CloseCode::Token, "no CONNECT in time");
                return None;
            }
        };
        let data = data_of(&message);
        let decoder = match &mut decoder {
            Some(decoder) => decoder,
            None => {
                let Some(kind) = ParserKind::detect(&data) else {
                    engine.outlet.close(CloseCode::ProtocolError, "bad packet");
                    return None;
                };
                if let Ok(mut encoder) = engine.encoder.lock() {
                    encoder.set_kind(kind);
                }
                decoder.insert(Decoder::new(kind, limits))
            }
        };
        let packet = match decoder.feed(data) {
            Ok(Some(packet)) => packet,
            Ok(None) => continue,
            Err(_) => {
                engine.outlet.close(CloseCode::ProtocolError, "bad packet");
                return None;
            }
        };
        match packet.body {
            Body::Connect(auth) if packet.nsp == MAIN_NAMESPACE => {
                let auth = auth.unwrap_or_default();
                let field = |key: &str| {
                    auth.iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, v)| v.as_str())
                        .map(str::to_owned)
                };
                let recover = field("pid").zip(field("offset"));
                let request = ConnectRequest {
                    token: field("token"),
                    recover,
                };
                return Some((decoder.clone(), request));
            }
            Body::Connect(_) => {
                refuse_namespace(engine, decoder.kind(), &packet.nsp);
            }
            _ => {
                engine.outlet.close(CloseCode::ProtocolError, "bad packet");
                return None;
            }
        }
    }
}

/// Answers a CONNECT to `nsp` (any namespace but `/`) as the reference
/// server answers a namespace it does not have.
fn refuse_namespace(engine: &EngineConn, kind: ParserKind, nsp: &str) {
    engine.send_packet(kind, &connect_error(nsp, "Invalid namespace", None));
}

/// An inbound message as the decoder's input.
fn data_of(message: &Inbound) -> Data<'_> {
    match message {
        Inbound::Text(text) => Data::Text(text),
        Inbound::Binary(bytes) => Data::Binary(std::borrow::Cow::Borrowed(bytes)),
    }
}

/// An admitted connection: registration, recovery, the CONNECT answer,
/// then its packets until it closes.
async fn serve(
    app: &Arc<App>,
    engine: &Arc<EngineConn>,
    inbound: &mut mpsc::Receiver<Inbound>,
    mut decoder: Decoder,
    admitted: Admitted,
    recover: Option<(String, String)>,
) {
    let Admitted {
        conn: id,
        mut claims,
        busy,
    } = admitted;
    let outlet = &engine.outlet;
    let shared = ConnShared::new(
        id,
        Arc::from(claims.sub.as_str()),
        engine.ip.clone(),
        outlet.clone(),
        claims.exp,
    );
    if let Ok(mut encoder) = engine.encoder.lock() {
        encoder.set_conn(shared.clone());
    }
    let registration = Registration::new(app.clone(), shared.clone());
    drop(busy);
    if app.shutting_down() {
        shared.close(CloseCode::Restart, "server restarting");
    }
    let started = Instant::now();
    tracing::info!(conn = %shared.id, user = %shared.user, node = %app.node.id, ip = %shared.ip, transport = engine.transport().label(), "socket.io connection open");
    let mut conn = Connection::new(app.clone(), outlet.clone(), engine.ip.clone());

    // The personal room, then the rooms of a recovery, then the answer.
    let personal = names::personal_room(&shared.user);
    let rooms = recover
        .as_ref()
        .and_then(|(_, offset)| bridge::parse_offset(offset));
    let personal_since = rooms
        .iter()
        .flatten()
        .find(|(room, _)| *room == personal)
        .map(|(_, since)| since.clone());
    let mut recovered = rooms.is_some();
    let personal_ok =
        Box::pin(conn.join_room(&shared, Joiner::Recover, &personal, personal_since.clone())).await;
    recovered &= personal_since.is_none() || personal_ok;
    for (room, since) in rooms.into_iter().flatten() {
        if room == personal {
            continue;
        }
        let allowed = policy::may_join(&app.config, &shared.user, &claims, &room).is_ok();
        recovered &=
            allowed && Box::pin(conn.join_room(&shared, Joiner::Recover, &room, Some(since))).await;
    }
    let pid = match (&recover, recovered) {
        (Some((pid, _)), true) => pid.clone(),
        _ => shared.id.to_string(),
    };
    engine.send_packet(decoder.kind(), &connect_answer(&shared.id, &pid));

    let mut unacked: i64 = 0;
    loop {
        if outlet.close_reason().is_some() {
            break;
        }
        let message = tokio::select! {
            message = inbound.recv() => message,
            _ = outlet.close_requested() => break,
            orders = shared.next_orders() => {
                for order in orders {
                    Box::pin(conn.carry_out(&shared, order)).await;
                }
                continue;
            }
        };
        let Some(message) = message else { break };
        app.node.metrics.frames_received.inc();
        let packet = match decoder.feed(data_of(&message)) {
            Ok(Some(packet)) => packet,
            Ok(None) => continue,
            Err(_) => {
                outlet.close(CloseCode::ProtocolError, "bad packet");
                break;
            }
        };
        if packet.nsp != MAIN_NAMESPACE {
            if let Body::Connect(_) = packet.body {
                refuse_namespace(engine, decoder.kind(), &packet.nsp);
            }
            continue;
        }
        match packet.body {
            Body::Event { id, name, args } => {
                let id = match id {
                    Some(ack) if ack <= MAX_ACK_ID => ack as i64,
                    Some(_) => {
                        outlet.close(CloseCode::ProtocolError, "bad packet");
                        break;
                    }
                    None => {
                        unacked = unacked.wrapping_sub(1).min(-1);
                        unacked
                    }
                };
                match bridge::request(id, &name, args) {
                    Ok(frame) => {
                        conn.good_frame();
                        Box::pin(conn.handle(&shared, &mut claims, frame)).await;
                    }
                    Err(reason) => {
                        if conn.bad_frame(Some(id), &reason) {
                            break;
                        }
                    }
                }
            }
            Body::Disconnect => {
                outlet.close(CloseCode::Normal, "closed by client");
                break;
            }
            // A second CONNECT, or the client's ack of an emit: nothing asks
            // for either.
            Body::Connect(_) | Body::Ack { .. } => {}
            Body::ConnectError(_) => {
                outlet.close(CloseCode::ProtocolError, "bad packet");
                break;
            }
        }
    }
    crate::session::log_closed(app, &shared, started, "socket.io connection closed");
    drop(registration);
}
