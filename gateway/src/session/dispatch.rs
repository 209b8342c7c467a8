//! What each client frame of an authenticated connection does: the policy
//! check ([`super::policy`]), the connection's own state (membership, room
//! count), one module call, and the ack or `err` it is answered with.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use broker::command::{self, RateLimit};
use broker::gcra::Rate;
use broker::lifecycle;
use broker::protocol::{self, ClientFrame, CloseCode, ErrorCode, Since};
use broker::registry::HistoryConfig;
use bytes::Bytes;

use super::admission;
use super::connection::{Connection, MAX_REFRESH_FAILURES};
use super::policy::{self, Denied};
use crate::auth::Claims;
use crate::clock::{mono_ms, now_ms};
use crate::node::connection::{Order, PendingRpc, RpcRefused};
use crate::node::ConnShared;
use crate::store::RpcRequest;

/// Most retained messages one `history` request returns.
const MAX_HISTORY: u32 = 1000;

/// Who asked for a join, and so who hears how it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joiner {
    /// The client's `join` request with this id: `ack` or `err`.
    Client(i64),
    /// The backend (`BROKER.USER.JOIN`): a `joined` frame, or a log line.
    Backend,
    /// The gateway itself, for the personal room at the start: silent.
    Start,
    /// The gateway, joining a Socket.IO session's rooms at its start
    /// (recovered or not): answered with an `ack` of id -1, which the
    /// Socket.IO bridge does not pass on but notes in the recovery offset.
    Recover,
}

/// Most bytes of messages one `history` ack holds (further capped to a
/// quarter of `limits.send_queue_bytes`): a bigger read is answered in
/// pages (`more: true`), so a client that asks and never reads cannot make
/// the node hold 1000 × `max_payload` per request.
const MAX_HISTORY_BYTES: usize = 256 * 1024;

/// Most users one `presence` ack lists; a bigger room is read in pages
/// (`next`, then `after`).
pub const PRESENCE_PAGE: u64 = 1000;

/// Users of a `presence` answer that cost one more request of
/// `limits.requests`: a full page of 1000 costs 11, so polling a big room
/// is not 10× cheaper than it is for Redis.
const PRESENCE_USERS_PER_REQUEST: u64 = 100;

/// Bytes of a `history` answer that cost one more request of
/// `limits.requests`: a full 256 KiB page costs 17.
const HISTORY_BYTES_PER_REQUEST: u64 = 16 * 1024;

/// A client `pub`, as dispatch hands it on.
struct Publish {
    id: i64,
    room: String,
    ev: String,
    data: Vec<u8>,
    others: bool,
    volatile: bool,
}

impl Connection {
    /// Answers a request the namespace policy refused.
    fn deny(&self, id: i64, denied: Denied) {
        self.send_err(Some(id), denied.code, denied.msg, None);
    }

    /// Handles one decoded client frame.
    pub(crate) async fn handle(
        &mut self,
        shared: &Arc<ConnShared>,
        claims: &mut Claims,
        frame: ClientFrame,
    ) {
        if !matches!(frame, ClientFrame::Pub { .. }) {
            if let Err(retry_ms) = self.requests.take(&self.app.config.limits.requests) {
                let msg = "too many requests";
                return self.send_err(
                    Some(frame.id()),
                    ErrorCode::RateLimited,
                    msg,
                    Some(retry_ms),
                );
            }
        }
        match frame {
            ClientFrame::Auth { id, .. } => {
                self.send_err(Some(id), ErrorCode::BadFrame, "already authenticated", None);
            }
            ClientFrame::Ping { id } => {
                self.send(protocol::encode_ack_raw(id, &protocol::ack_ping(now_ms())));
            }
            ClientFrame::Refresh { id, token } => self.refresh(shared, claims, id, &token),
            ClientFrame::Join { id, room, since } => {
                let allowed = policy::may_join(&self.app.config, &shared.user, claims, &room);
                if let Err(denied) = allowed {
                    return self.deny(id, denied);
                }
                self.join_room(shared, Joiner::Client(id), &room, since)
                    .await;
            }
            ClientFrame::Leave { id, room } => self.leave(shared, id, &room).await,
            ClientFrame::Pub {
                id,
                room,
                ev,
                data,
                others,
                volatile,
            } => {
                let publish = Publish {
                    id,
                    room,
                    ev,
                    data,
                    others,
                    volatile,
                };
                self.publish(shared, claims, publish).await
            }
            ClientFrame::Rpc { id, method, data } => self.rpc(shared, id, &method, &data).await,
            ClientFrame::Presence { id, room, after } => {
                self.presence(shared, claims, id, &room, after).await
            }
            ClientFrame::History {
                id,
                room,
                since,
                limit,
            } => self.history(shared, claims, id, &room, since, limit).await,
        }
    }

    /// `refresh`: a new token for the same user moves the expiry. The
    /// [`MAX_REFRESH_FAILURES`]th rejected token closes the connection
    /// with 4001.
    fn refresh(&mut self, shared: &ConnShared, claims: &mut Claims, id: i64, token: &str) {
        let (code, msg) = match admission::verify(&self.app, token) {
            Ok(fresh) if fresh.sub == claims.sub => {
                *claims = fresh;
                shared
                    .exp_ms
                    .store(claims.exp.saturating_mul(1000), Ordering::Relaxed);
                shared.expiring_sent.store(false, Ordering::Relaxed);
                return self.send(protocol::encode_ack_raw(
                    id,
                    &protocol::ack_refresh(claims.exp),
                ));
            }
            Ok(_) => (
                ErrorCode::Forbidden,
                "token is for another user".to_string(),
            ),
            Err(err) => (ErrorCode::Unauthorized, err.to_string()),
        };
        self.send_err(Some(id), code, &msg, None);
        self.refresh_failures += 1;
        if self.refresh_failures >= MAX_REFRESH_FAILURES {
            self.outlet
                .close(CloseCode::Token, "too many rejected refresh tokens");
        }
    }

    /// `leave`: any room the connection is in but its personal one.
    async fn leave(&self, shared: &Arc<ConnShared>, id: i64, room: &str) {
        if let Err(denied) = policy::may_leave(room) {
            return self.deny(id, denied);
        }
        if !shared.is_member(room) {
            self.send_err(Some(id), ErrorCode::NotMember, "not in this room", None);
            return;
        }
        let node = &self.app.node;
        let _busy = node.busy.hold(&shared.id);
        match node
            .store
            .leave(&command::Leave::new(room, &shared.user, &shared.id))
            .await
        {
            Ok(()) => {
                node.hub.leave(room, shared);
                if let Ok(mut rooms) = shared.rooms.lock() {
                    rooms.remove(room);
                }
                self.send(protocol::encode_ack_raw(id, &protocol::ack_empty()));
            }
            Err(err) => self.store_err(id, &err),
        }
    }

    /// Carries out a membership the backend decided: joins with a `joined`
    /// frame, leaves with a `left` frame (lifecycle reason `server`). Not
    /// subject to the namespace's join policy: the backend decides.
    pub(crate) async fn carry_out(&mut self, shared: &Arc<ConnShared>, order: Order) {
        match order {
            Order::Join(room) => {
                Box::pin(self.join_room(shared, Joiner::Backend, &room, None)).await;
            }
            Order::Leave(room) => {
                if !shared.is_member(&room) {
                    return;
                }
                let node = &self.app.node;
                let _busy = node.busy.hold(&shared.id);
                let leave = command::Leave::new(&room, &shared.user, &shared.id)
                    .reason(lifecycle::reason::SERVER);
                match node.store.leave(&leave).await {
                    Ok(()) => {
                        node.hub.leave(&room, shared);
                        if let Ok(mut rooms) = shared.rooms.lock() {
                            rooms.remove(&room);
                        }
                        self.send(protocol::encode_left(&room));
                    }
                    Err(err) => {
                        tracing::warn!(conn = %shared.id, room, error = %err, "could not carry out USER.LEAVE")
                    }
                }
            }
        }
    }

    /// `presence`: the room's users and their connection counts, at most
    /// [`PRESENCE_PAGE`] of them after `after`.
    async fn presence(
        &mut self,
        shared: &ConnShared,
        claims: &Claims,
        id: i64,
        room: &str,
        after: Option<String>,
    ) {
        let allowed = policy::may_read_presence(
            &self.app.config,
            &shared.user,
            claims,
            room,
            shared.is_member(room),
        );
        if let Err(denied) = allowed {
            return self.deny(id, denied);
        }
        if after
            .as_deref()
            .is_some_and(|a| broker::names::validate_user(a).is_err())
        {
            return self.send_err(Some(id), ErrorCode::BadFrame, "after: not a user id", None);
        }
        match presence_page(&self.app.node.store, room, after).await {
            Ok((page, users)) => {
                let units = users as u64 / PRESENCE_USERS_PER_REQUEST;
                self.requests
                    .charge(&self.app.config.limits.requests, units);
                self.send(protocol::encode_ack_raw(id, &page));
            }
            Err(err) => self.store_err(id, &err),
        }
    }

    /// `history`: retained messages, at most [`MAX_HISTORY`].
    async fn history(
        &mut self,
        shared: &ConnShared,
        claims: &Claims,
        id: i64,
        room: &str,
        since: Option<u64>,
        limit: Option<u32>,
    ) {
        let allowed = policy::may_read_history(
            &self.app.config,
            &shared.user,
            claims,
            room,
            shared.is_member(room),
        );
        if let Err(denied) = allowed {
            return self.deny(id, denied);
        }
        let max_bytes = MAX_HISTORY_BYTES.min(self.app.config.limits.send_queue_bytes / 4);
        let history = command::History {
            room: room.to_string(),
            since,
            limit: Some(u64::from(limit.unwrap_or(MAX_HISTORY).min(MAX_HISTORY))),
            max_bytes: Some(max_bytes as u64),
        };
        match self.app.node.store.history(&history).await {
            Ok(h) => {
                let frames: Vec<&[u8]> = h.messages.iter().map(Vec::as_slice).collect();
                let bytes: usize = frames.iter().map(|f| f.len()).sum();
                let units = bytes as u64 / HISTORY_BYTES_PER_REQUEST;
                self.requests
                    .charge(&self.app.config.limits.requests, units);
                self.send(protocol::encode_ack_raw(
                    id,
                    &protocol::ack_history_page(&frames, h.seq, &h.epoch, h.more),
                ));
            }
            Err(err) => self.store_err(id, &err),
        }
    }

    /// Joins `room` in the module and the hub; replays missed messages (when
    /// `since` is given) before the answer, then releases live messages.
    /// `by` says who asked, and so who hears how it went. True when the
    /// connection is in the room and, with `since`, every missed message
    /// was replayed.
    pub(crate) async fn join_room(
        &mut self,
        shared: &Arc<ConnShared>,
        by: Joiner,
        room: &str,
        since: Option<Since>,
    ) -> bool {
        let app = self.app.clone();
        let node = &app.node;
        let presence_events = policy::presence_events(&app.config, room);
        let (already, count) = shared
            .rooms
            .lock()
            .map(|r| (r.contains_key(room), r.len()))
            .unwrap_or((false, 0));
        let max_rooms = app.config.limits.max_rooms_per_conn.saturating_add(1);
        if !already && count as u32 >= max_rooms {
            match by {
                Joiner::Client(id) => {
                    self.send_err(Some(id), ErrorCode::TooManyRooms, "too many rooms", None)
                }
                Joiner::Backend => {
                    tracing::warn!(conn = %shared.id, room, "USER.JOIN refused: too many rooms")
                }
                Joiner::Start | Joiner::Recover => {}
            }
            return false;
        }
        let _busy = node.busy.hold(&shared.id);
        let began = node.hub.begin_join(room, shared);
        let recovering = since.is_some();
        // A position before any message: whatever became of the room since,
        // a room still without messages was missed nothing from.
        let from_nothing = since.as_ref().is_some_and(|s| s.seq == 0);
        let join = command::Join {
            presence: presence_events,
            max_rooms: Some(max_rooms),
            since,
            ..command::Join::new(room, &shared.user, &shared.id, &node.id)
        };
        let result = node.on_new_masters(|| node.store.join(&join)).await;
        match result {
            Ok(joined) => {
                if let Ok(mut rooms) = shared.rooms.lock() {
                    rooms.insert(room.to_string(), presence_events);
                }
                // A recovery bigger than half the send queue would close
                // the connection 4008 before the client could read it, and
                // the client would reconnect to try the same again: it is
                // answered `recovered: false` instead, and the client pages
                // `history` for what it missed.
                let replay: usize = joined.messages.iter().map(Vec::len).sum();
                let fits = replay <= app.config.limits.send_queue_bytes / 2;
                if fits {
                    for message in joined.messages {
                        self.send(message);
                    }
                }
                let recovered = joined.recovered && fits;
                match by {
                    Joiner::Client(id) => {
                        self.send(protocol::encode_ack_raw(
                            id,
                            &protocol::ack_join(
                                room,
                                joined.seq,
                                &joined.epoch,
                                recovering && recovered,
                            ),
                        ));
                    }
                    Joiner::Backend if !already => {
                        self.send(protocol::encode_joined(room, joined.seq, &joined.epoch));
                    }
                    Joiner::Recover => {
                        self.send(protocol::encode_ack_raw(
                            -1,
                            &protocol::ack_join(room, joined.seq, &joined.epoch, recovered),
                        ));
                    }
                    Joiner::Backend | Joiner::Start => {}
                }
                node.hub
                    .finish_join(room, shared, joined.seq, &joined.epoch);
                !recovering || recovered || (from_nothing && joined.seq == 0)
            }
            Err(err) => {
                if began {
                    node.hub.leave(room, shared);
                }
                match by {
                    Joiner::Client(id) => self.store_err(id, &err),
                    Joiner::Backend => {
                        tracing::warn!(conn = %shared.id, room, error = %err, "could not carry out USER.JOIN")
                    }
                    Joiner::Start => {
                        tracing::warn!(conn = %shared.id, room, error = %err, "could not join the personal room")
                    }
                    Joiner::Recover => {
                        tracing::info!(conn = %shared.id, room, error = %err, "could not join a room to recover")
                    }
                }
                false
            }
        }
    }

    /// `pub`: the namespace policy, membership, then `BROKER.PUBLISH` with
    /// the namespace's history and rate limit.
    async fn publish(&mut self, shared: &Arc<ConnShared>, claims: &Claims, publish: Publish) {
        let Publish {
            id,
            room,
            ev,
            data,
            others,
            volatile,
        } = publish;
        if let Err(reason) = command::validate_event(&ev) {
            return self.send_err(Some(id), ErrorCode::BadFrame, &reason, None);
        }
        let (ns_name, ns) = match policy::may_publish(&self.app.config, claims, &room, data.len()) {
            Ok(allowed) => allowed,
            Err(denied) => return self.deny(id, denied),
        };
        if !shared.is_member(&room) {
            return self.send_err(Some(id), ErrorCode::NotMember, "join the room first", None);
        }
        let node = &self.app.node;
        let rate = ns.rate.as_ref().map(|r| RateLimit {
            key: node
                .store
                .rate_key(ns_name, &shared.user, &room)
                .into_bytes(),
            rate: Rate {
                max_burst: i64::from(r.burst).saturating_sub(1),
                count: i64::from(r.count),
                period_s: i64::try_from(r.period_s).unwrap_or(i64::MAX),
            },
        });
        let request = command::Publish {
            from: Some(shared.id.to_string()),
            except: others.then(|| shared.id.to_string()),
            volatile,
            history: (ns.history > 0 && !volatile).then_some(HistoryConfig {
                size: ns.history,
                ttl_ms: ns.history_ttl_s.saturating_mul(1000),
            }),
            rate,
            room,
            event: ev,
            payload: data,
            ..command::Publish::new("", "", &[])
        };
        match node.store.publish(&request).await {
            Ok(seq) => {
                node.metrics.messages_published.inc();
                self.send(protocol::encode_ack_raw(id, &protocol::ack_pub(seq)));
            }
            Err(err) => self.store_err(id, &err),
        }
    }
}

impl Connection {
    /// `rpc`: checked and made pending on the connection, then appended to
    /// the RPC stream (the one Redis call). The answer comes later through
    /// the node's channel (`Hub`); a timer answers `timeout` at the
    /// deadline if nothing came.
    async fn rpc(&self, shared: &Arc<ConnShared>, id: i64, method: &str, data: &[u8]) {
        let app = &self.app;
        if !app.config.rpc.enabled {
            return self.send_err(Some(id), ErrorCode::Forbidden, "rpc is disabled", None);
        }
        let json = match broker::msgpack::to_json(data) {
            Ok(value) => value.to_string(),
            Err(err) => {
                let msg = format!("data: {err}");
                return self.send_err(Some(id), ErrorCode::BadFrame, &msg, None);
            }
        };
        let timeout_ms = app.config.rpc.timeout_ms;
        let started = mono_ms();
        let pending = PendingRpc {
            id,
            started_ms: started,
            deadline_ms: started.saturating_add(timeout_ms),
        };
        match shared.begin_rpc(pending, started) {
            Ok(()) => {}
            Err(RpcRefused::Full { retry_ms }) => {
                let msg = "too many rpcs waiting for an answer";
                return self.send_err(Some(id), ErrorCode::RateLimited, msg, Some(retry_ms));
            }
            Err(RpcRefused::Duplicate) => {
                let msg = "an rpc with this id is waiting for its answer";
                return self.send_err(Some(id), ErrorCode::BadFrame, msg, None);
            }
        }
        // Pending before the append: a backend may answer before XADD's
        // own reply is read.
        let node = &app.node;
        let request = RpcRequest {
            method,
            data,
            json: &json,
            user: &shared.user,
            conn: &shared.id,
            node: &node.id,
            id,
            deadline_ms: now_ms().saturating_add(timeout_ms),
            maxlen: app.config.rpc.stream_maxlen,
        };
        if let Err(err) = node.store.append_rpc(&request).await {
            shared.end_rpc(id);
            return self.store_err(id, &err);
        }
        let conn = shared.clone();
        let metrics = node.metrics.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
            // A connection that closed meanwhile is no timeout to count.
            if conn.end_rpc(id).is_some() && conn.outlet.close_reason().is_none() {
                metrics.rpc_requests.with_label_values(&["timeout"]).inc();
                metrics
                    .errors
                    .with_label_values(&[ErrorCode::Timeout.as_str()])
                    .inc();
                let frame =
                    protocol::encode_err(Some(id), ErrorCode::Timeout, "no answer in time", None);
                conn.send(Bytes::from(frame), &metrics);
            }
        });
    }
}

/// One page of `room`'s users as `presence` ack data, and how many users
/// it lists: at most [`PRESENCE_PAGE`] after `after`, `count` the room's
/// total, `next` set when more follow. One module call; a second
/// (`ROOM.COUNT`, O(1)) only when the page is full, for the total.
pub async fn presence_page(
    store: &crate::store::Store,
    room: &str,
    after: Option<String>,
) -> crate::store::StoreResult<(Vec<u8>, usize)> {
    let mut read = command::RoomMembers::new(room).limit(PRESENCE_PAGE + 1);
    read.after = after.clone();
    let mut users = store.members(&read).await?;
    let more = users.len() as u64 > PRESENCE_PAGE;
    users.truncate(PRESENCE_PAGE as usize);
    let count = if more || after.is_some() {
        store.room_count(&command::RoomCount::new(room)).await?.0
    } else {
        users.len() as u64
    };
    let next = more
        .then(|| users.last().map(|(u, _)| u.as_str()))
        .flatten();
    Ok((
        protocol::ack_presence_page(&users, count, next),
        users.len(),
    ))
}
