//! One client connection: authentication, the request loop, token refresh,
//! and the cleanup that always reaches the module (pings, the idle timeout
//! and the token's expiry are the node's: `keepalive.rs`).
//!
//! Each connection has two tasks. The *reader* (the future [`start`]
//! returns) reads frames and answers requests one at a time (each is one
//! module call). The *writer* ([`writer`]) drains the connection's bounded
//! queue into the socket, batching whatever is queued into one flush, sends
//! the pings and pongs, and writes the
//! close frame when a close is requested — even when the queue is full.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::names;
use broker::protocol::{self, close, ClientFrame, ErrorCode};
use bytes::Bytes;
use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use crate::app::App;
use crate::auth::Claims;
use crate::config::{JoinPolicy, Namespace, PublishPolicy};
use crate::hub::{now_ms, CloseReason, ConnShared, Outlet};
use crate::outbox::Outbox;
use crate::socket::{ClientRead, ClientSocket};
use crate::store::{PublishRequest, StoreError};
use crate::wsread::{self, opcode, FrameSource, ReadError};
use crate::wswrite;

/// How long a client has to send its `auth` frame.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bad frames in a row that close the connection with 4008.
const MAX_BAD_STREAK: u32 = 8;
/// Bad frames in total that close the connection with 4008.
const MAX_BAD_TOTAL: u32 = 64;
/// Close reason of a connection whose send queue overflowed.
pub const SLOW_CONSUMER: &str = "slow consumer";
/// Most retained messages one `history` request returns.
const MAX_HISTORY: u32 = 1000;

/// How the connection was admitted before the upgrade.
pub enum Admission {
    /// The token was verified and the module registered the connection.
    Authed {
        /// Its id.
        conn: Arc<str>,
        /// Verified claims (boxed: the connection's future carries a
        /// pointer, not the claims, in each of its states).
        claims: Box<Claims>,
    },
    /// No token yet: an `auth` frame must come within 5 s.
    AwaitAuth,
}

/// What a connection keeps for its whole life, in one allocation: the
/// task that serves it then holds a pointer, not the state of every step.
struct Session {
    frames: FrameReader,
    conn: Connection,
    outlet: Outlet,
    writer_task: tokio::task::JoinHandle<()>,
}

/// Takes over one upgraded WebSocket: sets the connection up (its writer
/// task included) and returns the future that serves it until it closes
/// (spawn it as the connection's task). `None` when the socket could not
/// be taken over.
pub fn start(
    app: Arc<App>,
    ws: WebSocket<TokioIo<Upgraded>>,
    ip: String,
    admission: Admission,
) -> Option<impl std::future::Future<Output = ()> + Send> {
    // The bare socket, split into owned halves; hyper's buffers are freed.
    let socket = match ClientSocket::from_upgraded(ws.into_inner().into_inner()) {
        Ok(socket) => socket,
        Err(err) => {
            tracing::warn!(error = %err, "cannot take over the upgraded connection");
            crate::http::release(&app, &admission);
            return None;
        }
    };
    let (read, write) = socket.into_split();
    // Frames are read by `wsread` (small buffer, strict checks) and written
    // by `wswrite` (one buffer per batch, none while idle).
    let reader = FrameSource::new(read, app.config.limits.max_frame_bytes);
    let (outlet, queue) = Outlet::new(app.config.limits.send_queue);
    let writer_task = tokio::spawn(writer(write, queue));
    let session = Box::new(Session {
        frames: FrameReader {
            reader,
            assembler: Assembler::default(),
            outlet: outlet.clone(),
            max: app.config.limits.max_frame_bytes,
        },
        conn: Connection {
            app,
            outlet: outlet.clone(),
            ip,
            bad_streak: 0,
            bad_total: 0,
            auth_ack: None,
        },
        outlet,
        writer_task,
    });
    Some(live(session, admission))
}

/// Authenticates (when the token did not come with the upgrade), serves
/// the connection, and unregisters it.
async fn live(mut session: Box<Session>, admission: Admission) {
    let Session {
        frames,
        conn,
        outlet,
        ..
    } = &mut *session;
    let app = conn.app.clone();
    let admitted = match admission {
        Admission::Authed { conn: id, claims } => Some((id, claims)),
        // Boxed: the connection's future then keeps only what is live
        // across the request loop, not the state of the authentication.
        Admission::AwaitAuth => Box::pin(conn.await_auth(frames)).await,
    };
    if let Some((id, claims)) = admitted {
        let shared = ConnShared::new(
            id,
            Arc::from(claims.sub.as_str()),
            conn.ip.clone(),
            outlet.clone(),
            claims.exp,
        );
        let registration = Registration::new(app.clone(), shared.clone());
        let started = Instant::now();
        tracing::info!(conn = %shared.id, user = %shared.user, node = %app.node, ip = %shared.ip, "connection open");
        conn.serve(frames, &shared, claims).await;
        let reason = outlet.close_reason().unwrap_or(CloseReason {
            code: 1006,
            reason: "gone".into(),
        });
        tracing::info!(
            conn = %shared.id,
            user = %shared.user,
            node = %app.node,
            ip = %shared.ip,
            duration_ms = started.elapsed().as_millis() as u64,
            code = reason.code,
            reason = %reason.reason,
            "connection closed"
        );
        drop(registration);
    }
    // The reader's ends go first (as the writer may be waiting for them).
    let Session {
        frames,
        conn,
        outlet,
        writer_task,
    } = *session;
    outlet.finish();
    drop((frames, conn, outlet));
    let _ = writer_task.await;
}

/// Unregisters a connection from the hub and the module when dropped — on a
/// normal close, an error, or a panic of the connection task.
struct Registration {
    app: Arc<App>,
    shared: Arc<ConnShared>,
}

impl Registration {
    fn new(app: Arc<App>, shared: Arc<ConnShared>) -> Registration {
        app.hub.register(shared.clone());
        Registration { app, shared }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // On a cluster the rooms live on other shards than the user: each
        // membership is left on its own shard (`CONN.CLOSE` clears only the
        // user's shard).
        let rooms: Vec<String> = if self.app.store.is_cluster() {
            self.shared
                .rooms_snapshot()
                .into_iter()
                .map(|(r, _)| r)
                .collect()
        } else {
            Vec::new()
        };
        self.app.hub.unregister(&self.shared);
        let app = self.app.clone();
        let shared = self.shared.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let grace = if lingers(shared.outlet.close_reason().as_ref()) {
                    app.config.node.presence_grace_ms
                } else {
                    0
                };
                for room in rooms {
                    if let Err(err) = app.store.leave(&room, &shared.user, &shared.id, grace).await {
                        tracing::warn!(conn = %shared.id, room, error = %err, "could not leave; the node lease will clean it up");
                    }
                }
                if let Err(err) = app.store.close(&shared.user, &shared.id, grace).await {
                    tracing::warn!(conn = %shared.id, error = %err, "could not unregister the connection; the node lease will clean it up");
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
    reason.is_none_or(|r| matches!(r.code, 1001 | 1006 | close::RESTART))
}

/// The code to answer a client's close frame with (RFC 6455 §5.5.1, §7.4):
/// its own code when that is one a peer may send, 1000 for an empty close,
/// 1002 for a malformed payload or a reserved code, 1007 for a reason that
/// is not UTF-8.
pub fn close_reply_code(payload: &[u8]) -> u16 {
    match payload {
        [] => 1000,
        [_] => 1002,
        _ if payload.len() > 125 => 1002,
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                1002
            } else if std::str::from_utf8(reason).is_err() {
                1007
            } else {
                code
            }
        }
    }
}

/// Reassembles fragmented messages with our own cap: the library limits
/// single frames only.
#[derive(Default)]
struct Assembler {
    /// The opcode of the message being reassembled.
    opcode: Option<u8>,
    buf: Vec<u8>,
}

enum Incoming {
    Binary(Vec<u8>),
    Text,
    Close(u16),
    Nothing,
    TooLarge,
    Invalid,
}

impl Assembler {
    /// No fragmented message is being reassembled.
    fn is_idle(&self) -> bool {
        self.opcode.is_none()
    }

    fn push(&mut self, frame: wsread::ClientFrame, max: usize) -> Incoming {
        let data = frame.opcode == opcode::BINARY || frame.opcode == opcode::TEXT;
        match frame.opcode {
            _ if data && self.opcode.is_some() => Incoming::Invalid,
            opcode::TEXT if frame.fin => Incoming::Text,
            opcode::BINARY if frame.fin => Incoming::Binary(frame.payload),
            _ if data => {
                self.opcode = Some(frame.opcode);
                self.buf = frame.payload;
                Incoming::Nothing
            }
            opcode::CONTINUATION => {
                let Some(first) = self.opcode else {
                    return Incoming::Invalid;
                };
                if self.buf.len() + frame.payload.len() > max {
                    return Incoming::TooLarge;
                }
                self.buf.extend_from_slice(&frame.payload);
                if !frame.fin {
                    return Incoming::Nothing;
                }
                self.opcode = None;
                let data = std::mem::take(&mut self.buf);
                if first == opcode::TEXT {
                    Incoming::Text
                } else {
                    Incoming::Binary(data)
                }
            }
            opcode::CLOSE => Incoming::Close(close_reply_code(&frame.payload)),
            _ => Incoming::Nothing,
        }
    }
}

/// The reading side. Its `next` future must never be dropped half-way
/// through a frame (the header bytes are consumed before the whole frame
/// is there), so the request loop polls one `next` to completion while it
/// serves timers alongside it.
struct FrameReader {
    reader: FrameSource<ClientRead>,
    assembler: Assembler,
    outlet: Outlet,
    max: usize,
}

struct Connection {
    app: Arc<App>,
    outlet: Outlet,
    ip: String,
    bad_streak: u32,
    bad_total: u32,
    /// The id of an `auth` request to ack after `welcome`.
    auth_ack: Option<i64>,
}

enum Read {
    Message(Vec<u8>),
    Text,
    Closed,
    /// A control frame was handled and nothing more is buffered: go back
    /// to waiting (without a read in flight).
    Idle,
}

impl FrameReader {
    /// Reads the next complete message. Closes (and returns `Closed`) on a
    /// protocol error, an oversize message or the client's close.
    async fn next(&mut self) -> Read {
        let max = self.max;
        loop {
            let frame = match self.reader.next().await {
                Ok(frame) => frame,
                Err(ReadError::TooLarge) => {
                    self.outlet.close(close::TOO_LARGE, "frame too large");
                    return Read::Closed;
                }
                Err(ReadError::Protocol(why)) => {
                    self.outlet.close(1002, why);
                    return Read::Closed;
                }
                Err(ReadError::Closed) => {
                    self.outlet.close(1006, "connection lost");
                    return Read::Closed;
                }
            };
            if frame.opcode == opcode::PING {
                self.outlet.pong(frame.payload.clone());
            }
            self.outlet.touch();
            match self.assembler.push(frame, max) {
                Incoming::Binary(data) => return Read::Message(data),
                Incoming::Text => return Read::Text,
                Incoming::Nothing if self.assembler.is_idle() && !self.reader.has_buffered() => {
                    return Read::Idle;
                }
                Incoming::Nothing => continue,
                Incoming::Close(code) => {
                    self.outlet.close(code, "closed by client");
                    return Read::Closed;
                }
                Incoming::TooLarge => {
                    self.outlet.close(close::TOO_LARGE, "message too large");
                    return Read::Closed;
                }
                Incoming::Invalid => {
                    self.outlet.close(1002, "invalid fragmentation");
                    return Read::Closed;
                }
            }
        }
    }
}

impl Connection {
    fn send(&self, frame: Vec<u8>) {
        self.outlet.send(Bytes::from(frame), &self.app.metrics);
    }

    fn send_err(&self, id: Option<i64>, code: ErrorCode, msg: &str, retry_ms: Option<u64>) {
        self.app
            .metrics
            .errors
            .with_label_values(&[code.as_str()])
            .inc();
        self.send(protocol::encode_err(id, code, msg, retry_ms));
    }

    /// Counts a bad frame; true when the connection must close (4008).
    fn bad_frame(&mut self, id: Option<i64>, reason: &str) -> bool {
        self.bad_streak += 1;
        self.bad_total += 1;
        self.send_err(id, ErrorCode::BadFrame, reason, None);
        if self.bad_streak >= MAX_BAD_STREAK || self.bad_total >= MAX_BAD_TOTAL {
            self.outlet.close(close::POLICY, "too many bad frames");
            return true;
        }
        false
    }

    /// Waits for the `auth` frame, verifies it and registers the connection.
    async fn await_auth(&mut self, frames: &mut FrameReader) -> Option<(Arc<str>, Box<Claims>)> {
        let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
        loop {
            // A timeout here drops a read half-way, but the connection is
            // closed right after, so nothing is lost.
            let message = match tokio::time::timeout_at(deadline, frames.next()).await {
                Ok(Read::Message(m)) => m,
                Ok(Read::Text) => {
                    if self.bad_frame(None, "text frames are not part of the protocol") {
                        return None;
                    }
                    continue;
                }
                Ok(Read::Closed) => return None,
                Ok(Read::Idle) => continue,
                Err(_) => {
                    self.app.metrics.auth_failures.inc();
                    self.outlet.close(close::TOKEN, "no auth frame in time");
                    return None;
                }
            };
            let frame = match protocol::decode_client_frame(&message) {
                Ok(f) => f,
                Err(err) => {
                    if self.bad_frame(err.id, &err.reason) {
                        return None;
                    }
                    continue;
                }
            };
            let ClientFrame::Auth { id, token } = frame else {
                self.send_err(
                    Some(frame.id()),
                    ErrorCode::Unauthorized,
                    "send auth first",
                    None,
                );
                continue;
            };
            let claims = match self.app.auth.verify(&token) {
                Ok(c) => c,
                Err(err) => {
                    self.app.metrics.auth_failures.inc();
                    self.send_err(Some(id), ErrorCode::Unauthorized, &err.to_string(), None);
                    self.outlet.close(close::TOKEN, "invalid token");
                    return None;
                }
            };
            let conn = self.app.next_conn_id();
            let limits = &self.app.config.limits;
            match self
                .app
                .store
                .open(
                    &claims.sub,
                    &conn,
                    &self.app.node,
                    &self.ip,
                    Some((limits.max_conns_per_user, limits.max_conns_per_ip)),
                )
                .await
            {
                Ok(()) => {
                    // Acked right after `welcome`, which stays the first
                    // frame of an authenticated connection.
                    self.auth_ack = Some(id);
                    return Some((conn, Box::new(claims)));
                }
                Err(err) if err.is("LIMIT") => {
                    self.outlet.close(close::CONN_LIMIT, "connection limit");
                    return None;
                }
                Err(err) => {
                    if err.is("NOLEASE") {
                        self.app.lease_now.notify_one();
                    }
                    self.send_err(Some(id), ErrorCode::Unavailable, "try again", None);
                    self.outlet.close(1013, "unavailable");
                    return None;
                }
            }
        }
    }

    /// The request loop of an authenticated connection.
    async fn serve(
        &mut self,
        frames: &mut FrameReader,
        shared: &Arc<ConnShared>,
        mut claims: Box<Claims>,
    ) {
        let app = self.app.clone();
        let ping_ms = app.config.limits.ping_interval_s.saturating_mul(1000);
        self.send(protocol::encode_welcome(
            &shared.id,
            &shared.user,
            &app.node,
            ping_ms,
            claims.exp,
        ));
        if let Some(id) = self.auth_ack.take() {
            self.send(protocol::encode_ack_raw(
                id,
                &protocol::ack_auth(&claims.sub, claims.exp),
            ));
        }
        let personal = names::personal_room(&shared.user);
        Box::pin(self.join_room(shared, None, &personal, None)).await;

        // Pings, the idle timeout and the token's expiry are the node's
        // keep-alive task's (one timer for all connections, `keepalive.rs`).
        loop {
            if self.outlet.close_reason().is_some() {
                return;
            }
            // Idle: wait for bytes holding no buffer and no read state; the
            // frame read (boxed) exists only while bytes are coming in.
            let read = tokio::select! {
                () = frames.reader.fill() => tokio::select! {
                    read = Box::pin(frames.next()) => Some(read),
                    _ = self.outlet.close_requested() => None,
                },
                _ = self.outlet.close_requested() => None,
            };
            let Some(read) = read else {
                return;
            };
            match read {
                Read::Message(data) => {
                    self.app.metrics.frames_received.inc();
                    match protocol::decode_client_frame(&data) {
                        Ok(frame) => {
                            self.bad_streak = 0;
                            // Boxed: an idle connection's state must not
                            // reserve room for the largest request's.
                            Box::pin(self.handle(shared, &mut claims, frame)).await;
                        }
                        Err(err) => {
                            if self.bad_frame(err.id, &err.reason) {
                                return;
                            }
                        }
                    }
                }
                Read::Text => {
                    if self.bad_frame(None, "text frames are not part of the protocol") {
                        return;
                    }
                }
                Read::Closed => return,
                Read::Idle => {}
            }
        }
    }

    async fn handle(&mut self, shared: &Arc<ConnShared>, claims: &mut Claims, frame: ClientFrame) {
        match frame {
            ClientFrame::Auth { id, .. } => {
                self.send_err(Some(id), ErrorCode::BadFrame, "already authenticated", None);
            }
            ClientFrame::Ping { id } => {
                self.send(protocol::encode_ack_raw(id, &protocol::ack_ping(now_ms())));
            }
            ClientFrame::Refresh { id, token } => match self.app.auth.verify(&token) {
                Ok(fresh) if fresh.sub == claims.sub => {
                    *claims = fresh;
                    shared
                        .exp_ms
                        .store(claims.exp.saturating_mul(1000), Ordering::Relaxed);
                    shared.expiring_sent.store(false, Ordering::Relaxed);
                    self.send(protocol::encode_ack_raw(
                        id,
                        &protocol::ack_refresh(claims.exp),
                    ));
                }
                Ok(_) => self.send_err(
                    Some(id),
                    ErrorCode::Forbidden,
                    "token is for another user",
                    None,
                ),
                Err(err) => {
                    self.app.metrics.auth_failures.inc();
                    self.send_err(Some(id), ErrorCode::Unauthorized, &err.to_string(), None);
                }
            },
            ClientFrame::Join { id, room, since } => {
                if let Err((code, msg)) = self.may_join(shared, claims, &room) {
                    self.send_err(Some(id), code, &msg, None);
                    return;
                }
                let since = since.map(|s| (s.seq, s.epoch));
                self.join_room(shared, Some(id), &room, since).await;
            }
            ClientFrame::Leave { id, room } => {
                if names::personal_room_owner(&room).is_some() {
                    self.send_err(
                        Some(id),
                        ErrorCode::Forbidden,
                        "the personal room cannot be left",
                        None,
                    );
                    return;
                }
                let member = shared
                    .rooms
                    .lock()
                    .map(|r| r.contains_key(&room))
                    .unwrap_or(false);
                if !member {
                    self.send_err(Some(id), ErrorCode::NotMember, "not in this room", None);
                    return;
                }
                match self
                    .app
                    .store
                    .leave(&room, &shared.user, &shared.id, 0)
                    .await
                {
                    Ok(()) => {
                        self.app.hub.leave(&room, shared);
                        if let Ok(mut rooms) = shared.rooms.lock() {
                            rooms.remove(&room);
                        }
                        self.send(protocol::encode_ack_raw(id, &protocol::ack_empty()));
                    }
                    Err(err) => self.store_err(id, &err),
                }
            }
            ClientFrame::Pub {
                id,
                room,
                ev,
                data,
                others,
            } => {
                self.publish(shared, claims, id, room, ev, data, others)
                    .await
            }
            ClientFrame::Presence { id, room } => {
                let ns = match self.policy_for_read(shared, claims, &room) {
                    Ok(ns) => ns,
                    Err((code, msg)) => return self.send_err(Some(id), code, &msg, None),
                };
                if !ns.presence {
                    return self.send_err(
                        Some(id),
                        ErrorCode::Forbidden,
                        "presence is off in this namespace",
                        None,
                    );
                }
                match self.app.store.members(&room).await {
                    Ok(users) => {
                        let count = users.len() as u64;
                        self.send(protocol::encode_ack_raw(
                            id,
                            &protocol::ack_presence(&users, count),
                        ));
                    }
                    Err(err) => self.store_err(id, &err),
                }
            }
            ClientFrame::History {
                id,
                room,
                since,
                limit,
            } => {
                if let Err((code, msg)) = self.policy_for_read(shared, claims, &room) {
                    return self.send_err(Some(id), code, &msg, None);
                }
                let limit = Some(limit.unwrap_or(MAX_HISTORY).min(MAX_HISTORY));
                match self.app.store.history(&room, since, limit).await {
                    Ok(h) => {
                        let frames: Vec<&[u8]> = h.messages.iter().map(Vec::as_slice).collect();
                        self.send(protocol::encode_ack_raw(
                            id,
                            &protocol::ack_history(&frames, h.seq, &h.epoch),
                        ));
                    }
                    Err(err) => self.store_err(id, &err),
                }
            }
        }
    }

    /// Checks a room name and the namespace's join policy for this user.
    fn may_join(
        &self,
        shared: &ConnShared,
        claims: &Claims,
        room: &str,
    ) -> Result<Namespace, (ErrorCode, String)> {
        let (ns_name, _) = names::split_room(room)
            .map_err(|_| (ErrorCode::InvalidRoom, "invalid room name".to_string()))?;
        if let Some(owner) = names::personal_room_owner(room) {
            if owner != &*shared.user {
                return Err((ErrorCode::Forbidden, "another user's personal room".into()));
            }
            return Ok(self.app.config.namespace(ns_name));
        }
        let ns = self.app.config.namespace(ns_name);
        let allowed = match ns.join {
            JoinPolicy::Public => true,
            JoinPolicy::Roles => claims.roles.iter().any(|r| ns.roles.contains(r)),
            JoinPolicy::Claim => claims
                .rooms
                .iter()
                .any(|p| names::room_matches_pattern(room, p)),
        };
        if !allowed {
            return Err((ErrorCode::Forbidden, "not allowed to join this room".into()));
        }
        Ok(ns)
    }

    /// Presence and history are open to those who may join the room.
    fn policy_for_read(
        &self,
        shared: &ConnShared,
        claims: &Claims,
        room: &str,
    ) -> Result<Namespace, (ErrorCode, String)> {
        self.may_join(shared, claims, room)
    }

    /// Joins `room` in the module and the hub; replays missed messages (when
    /// `since` is given) before the ack, then releases live messages.
    async fn join_room(
        &mut self,
        shared: &Arc<ConnShared>,
        id: Option<i64>,
        room: &str,
        since: Option<(u64, String)>,
    ) {
        let app = self.app.clone();
        let (ns_name, _) = names::split_room(room).unwrap_or(("", ""));
        let ns = app.config.namespace(ns_name);
        // Nobody else is ever in a personal room: no presence events there.
        let presence_events = ns.join_leave && names::personal_room_owner(room).is_none();
        let (already, count) = shared
            .rooms
            .lock()
            .map(|r| (r.contains_key(room), r.len()))
            .unwrap_or((false, 0));
        let max_rooms = app.config.limits.max_rooms_per_conn.saturating_add(1);
        if !already && count as u32 >= max_rooms {
            if let Some(id) = id {
                self.send_err(Some(id), ErrorCode::TooManyRooms, "too many rooms", None);
            }
            return;
        }
        let began = app.hub.begin_join(room, shared);
        let since_ref = since.as_ref().map(|(seq, epoch)| (*seq, epoch.as_str()));
        let result = app
            .store
            .join(
                room,
                &shared.user,
                &shared.id,
                &app.node,
                presence_events,
                Some(max_rooms),
                since_ref,
            )
            .await;
        match result {
            Ok(joined) => {
                if let Ok(mut rooms) = shared.rooms.lock() {
                    rooms.insert(room.to_string(), presence_events);
                }
                for message in joined.messages {
                    self.send(message);
                }
                if let Some(id) = id {
                    let recovered = since.is_some() && joined.recovered;
                    self.send(protocol::encode_ack_raw(
                        id,
                        &protocol::ack_join(room, joined.seq, &joined.epoch, recovered),
                    ));
                }
                app.hub.finish_join(room, shared, joined.seq, &joined.epoch);
            }
            Err(err) => {
                if began {
                    app.hub.leave(room, shared);
                }
                match id {
                    Some(id) => self.store_err(id, &err),
                    None => {
                        tracing::warn!(conn = %shared.id, room, error = %err, "could not join the personal room")
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &mut self,
        shared: &Arc<ConnShared>,
        claims: &Claims,
        id: i64,
        room: String,
        ev: String,
        data: Vec<u8>,
        others: bool,
    ) {
        let Ok((ns_name, _)) = names::split_room(&room) else {
            return self.send_err(Some(id), ErrorCode::InvalidRoom, "invalid room name", None);
        };
        if names::personal_room_owner(&room).is_some() {
            return self.send_err(
                Some(id),
                ErrorCode::Forbidden,
                "clients may not publish to personal rooms",
                None,
            );
        }
        let ns = self.app.config.namespace(ns_name);
        match ns.publish {
            PublishPolicy::Server => {
                return self.send_err(
                    Some(id),
                    ErrorCode::Forbidden,
                    "only the server publishes here",
                    None,
                );
            }
            PublishPolicy::Roles if !claims.roles.iter().any(|r| ns.roles.contains(r)) => {
                return self.send_err(
                    Some(id),
                    ErrorCode::Forbidden,
                    "your roles may not publish here",
                    None,
                );
            }
            _ => {}
        }
        if data.len() > ns.max_payload {
            return self.send_err(
                Some(id),
                ErrorCode::PayloadTooLarge,
                "payload too large",
                None,
            );
        }
        let member = shared
            .rooms
            .lock()
            .map(|r| r.contains_key(&room))
            .unwrap_or(false);
        if !member {
            return self.send_err(Some(id), ErrorCode::NotMember, "join the room first", None);
        }
        let rate = ns.rate.as_ref().map(|r| {
            (
                self.app.store.rate_key(ns_name, &shared.user, &room),
                r.burst,
                r.count,
                r.period_s,
            )
        });
        let request = PublishRequest {
            room: &room,
            ev: &ev,
            payload: &data,
            format: "msgpack",
            from: Some(&shared.id),
            except: others.then_some(&*shared.id),
            history: (ns.history > 0).then_some((ns.history, ns.history_ttl_s)),
            rate,
        };
        match self.app.store.publish(&request).await {
            Ok(seq) => {
                self.app.metrics.messages_published.inc();
                self.send(protocol::encode_ack_raw(id, &protocol::ack_pub(seq)));
            }
            Err(err) => self.store_err(id, &err),
        }
    }

    /// Answers a failed module call with the matching `err`.
    fn store_err(&self, id: i64, err: &StoreError) {
        match err {
            StoreError::Unavailable(_) => self.send_err(
                Some(id),
                ErrorCode::Unavailable,
                "service unavailable, retry",
                None,
            ),
            StoreError::Refused { code, detail } => match code.as_str() {
                "NOTMEMBER" => self.send_err(
                    Some(id),
                    ErrorCode::NotMember,
                    "not a member of the room",
                    None,
                ),
                "RATELIMITED" => {
                    self.app.metrics.rate_limited.inc();
                    let retry = detail
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1000);
                    self.send_err(Some(id), ErrorCode::RateLimited, "slow down", Some(retry));
                }
                "TOOMANYROOMS" => {
                    self.send_err(Some(id), ErrorCode::TooManyRooms, "too many rooms", None)
                }
                "FORBIDDEN" => self.send_err(Some(id), ErrorCode::Forbidden, "forbidden", None),
                "NOLEASE" => {
                    self.app.lease_now.notify_one();
                    self.send_err(
                        Some(id),
                        ErrorCode::Unavailable,
                        "node re-registering, retry",
                        None,
                    );
                }
                "ERR" if detail.starts_with("invalid payload") => {
                    self.send_err(Some(id), ErrorCode::BadFrame, detail, None)
                }
                "ERR" if detail.contains("room") => {
                    self.send_err(Some(id), ErrorCode::InvalidRoom, detail, None)
                }
                _ => {
                    tracing::warn!(code, detail, "module refused a request");
                    self.send_err(Some(id), ErrorCode::Internal, "internal error", None);
                }
            },
            StoreError::Reply(msg) => {
                tracing::warn!(error = %msg, "unexpected module reply");
                self.send_err(Some(id), ErrorCode::Internal, "internal error", None);
            }
        }
    }
}

/// Most queued frames written in one batch (one buffer, one write).
const MAX_BATCH: usize = 64;
/// How long a last write may wait for a client that stopped reading once
/// the connection is being closed.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The writer task: queue → socket in batches, pings, pongs, and the close
/// frame when a close is requested — even when the queue is full.
async fn writer(mut out: OwnedWriteHalf, queue: Arc<Outbox>) {
    let mut batch = Vec::new();
    loop {
        let mut buf = Vec::new();
        tokio::select! {
            biased;
            _ = queue.close_requested() => {
                if let Some(reason) = queue.close_reason() {
                    // What is already queued goes out first (an `err` that
                    // explains the close, the last messages before a
                    // restart) — except for a slow consumer, whose queue is
                    // the problem.
                    if reason.reason != SLOW_CONSUMER {
                        queue.drain_into(&mut batch, usize::MAX);
                        put_frames(&mut buf, &mut batch);
                    }
                    wswrite::put_close(&mut buf, reason.code, &reason.reason);
                    // A client that stopped reading gets no more time than
                    // this. Boxed, like the timeout below: rare, and a
                    // timer inline would enlarge every idle writer.
                    let last = Box::pin(tokio::time::timeout(CLOSE_WRITE_TIMEOUT, out.write_all(&buf)));
                    let _ = last.await;
                }
                queue.close();
                return;
            }
            _ = queue.ready() => {
                if queue.take_ping() {
                    wswrite::put_frame(&mut buf, wswrite::PING, &[]);
                }
                if let Some(payload) = queue.take_pong() {
                    wswrite::put_frame(&mut buf, wswrite::PONG, &payload);
                }
                queue.drain_into(&mut batch, MAX_BATCH);
                put_frames(&mut buf, &mut batch);
            }
        }
        if buf.is_empty() {
            continue;
        }
        let write = out.write_all(&buf);
        tokio::pin!(write);
        let written = tokio::select! {
            biased;
            done = &mut write => done.is_ok(),
            // A close request while the socket takes nothing more (a client
            // that stopped reading, a slow consumer): the write gets a last
            // chance, then the socket is given up — no close frame can
            // follow a half-written one.
            _ = queue.close_requested() => {
                let grace = Box::pin(tokio::time::timeout(CLOSE_WRITE_TIMEOUT, &mut write));
                matches!(grace.await, Ok(Ok(())))
            }
        };
        if !written {
            // The socket is gone or stuck: the reader stops too (it waits
            // for the queue's close as well).
            queue.close();
            return;
        }
    }
}

/// Encodes the frames of `batch` (emptied) into `buf`, sized once.
fn put_frames(buf: &mut Vec<u8>, batch: &mut Vec<Bytes>) {
    buf.reserve(batch.iter().map(|f| wswrite::frame_len(f.len())).sum());
    for frame in batch.drain(..) {
        wswrite::put_frame(buf, wswrite::BINARY, &frame);
    }
}
