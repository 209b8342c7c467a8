//! One connection's request side: sending frames and `err`s, counting bad
//! frames, waiting for the `auth` frame, and the request loop that reads a
//! message at a time and hands it to dispatch (`dispatch.rs`).

use std::sync::Arc;
use std::time::Duration;

use broker::names;
use broker::protocol::{self, ClientFrame, CloseCode, ErrorCode};
use bytes::Bytes;

use super::admission::{self, Admitted};
use super::dispatch::Joiner;
use super::errors::{self, ErrReply};
use super::request_limit::RequestLimit;
use crate::app::App;
use crate::auth::Claims;
use crate::node::ConnShared;
use broker::command::Refusal;

use crate::store::{Rejection, StoreError};
use crate::ws::message::{MessageReader, Read};
use crate::ws::Outlet;

/// How long a client has to send its `auth` frame.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bad frames in a row that close the connection with 4008.
const MAX_BAD_STREAK: u32 = 8;
/// Bad frames in total that close the connection with 4008.
const MAX_BAD_TOTAL: u32 = 64;
/// `refresh` frames with a rejected token (or another user's) that close
/// the connection with 4001: each one costs a signature check, and a
/// client that keeps failing has no token worth waiting for.
pub(super) const MAX_REFRESH_FAILURES: u32 = 5;

/// The request side of one connection.
pub(crate) struct Connection {
    pub(super) app: Arc<App>,
    pub(super) outlet: Outlet,
    pub(super) ip: String,
    bad_streak: u32,
    bad_total: u32,
    /// Rejected `refresh` tokens so far ([`MAX_REFRESH_FAILURES`]).
    pub(super) refresh_failures: u32,
    /// The id of an `auth` request to ack after `welcome`.
    auth_ack: Option<i64>,
    /// What is left of `limits.requests`.
    pub(super) requests: RequestLimit,
}

impl Connection {
    /// A connection from `ip` that sends through `outlet`.
    pub(crate) fn new(app: Arc<App>, outlet: Outlet, ip: String) -> Connection {
        Connection {
            app,
            outlet,
            ip,
            bad_streak: 0,
            bad_total: 0,
            refresh_failures: 0,
            auth_ack: None,
            requests: RequestLimit::default(),
        }
    }

    /// Queues a frame.
    pub(super) fn send(&self, frame: Vec<u8>) {
        self.outlet.send(Bytes::from(frame), &self.app.node.metrics);
    }

    /// Sends an `err` frame (and counts it by code).
    pub(super) fn send_err(
        &self,
        id: Option<i64>,
        code: ErrorCode,
        msg: &str,
        retry_ms: Option<u64>,
    ) {
        self.app
            .node
            .metrics
            .errors
            .with_label_values(&[code.as_str()])
            .inc();
        self.send(protocol::encode_err(id, code, msg, retry_ms));
    }

    fn send_reply(&self, id: Option<i64>, reply: &ErrReply) {
        self.send_err(id, reply.code, &reply.msg, reply.retry_ms);
    }

    /// Answers a failed module call with the matching `err`
    /// ([`errors::err_reply`]); counts rate limits, wakes the lease task
    /// on `NOLEASE`, logs what should not happen.
    pub(super) fn store_err(&self, id: i64, err: &StoreError) {
        match err {
            StoreError::Refused {
                rejection,
                code,
                detail,
            } => match rejection {
                Rejection::Refused(Refusal::RateLimited { .. }) => {
                    self.app.node.metrics.rate_limited.inc()
                }
                Rejection::Refused(Refusal::NoLease) => self.app.node.lease_now.notify_one(),
                Rejection::Refused(Refusal::Limit(_) | Refusal::Conflict) | Rejection::Other => {
                    tracing::warn!(code, detail, "module refused a request");
                }
                _ => {}
            },
            StoreError::Reply(msg) => tracing::warn!(error = %msg, "unexpected module reply"),
            StoreError::Unavailable(_) => {}
        }
        self.send_reply(Some(id), &errors::err_reply(err));
    }

    /// Notes a well-formed frame (it ends a streak of bad ones).
    pub(crate) fn good_frame(&mut self) {
        self.bad_streak = 0;
    }

    /// Counts a bad frame, answered `bad_frame`; true when the connection
    /// must close (4008).
    pub(crate) fn bad_frame(&mut self, id: Option<i64>, reason: &str) -> bool {
        self.bad_streak += 1;
        self.bad_total += 1;
        self.send_err(id, ErrorCode::BadFrame, reason, None);
        if self.bad_streak >= MAX_BAD_STREAK || self.bad_total >= MAX_BAD_TOTAL {
            self.outlet.close(CloseCode::Policy, "too many bad frames");
            return true;
        }
        false
    }

    /// Waits for the `auth` frame, then admits the connection
    /// ([`admission::admit`]).
    pub(super) async fn await_auth(&mut self, frames: &mut MessageReader) -> Option<Admitted> {
        let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
        loop {
            // A timeout here drops a read half-way, but the connection is
            // closed right after, so nothing is lost.
            let message = match tokio::time::timeout_at(deadline, frames.next()).await {
                Ok(Read::Message(m)) => m,
                Ok(Read::Text(_)) => {
                    if self.bad_frame(None, "text frames are not part of the protocol") {
                        return None;
                    }
                    continue;
                }
                Ok(Read::Closed) => return None,
                Ok(Read::Idle) => continue,
                Err(_) => {
                    self.app.node.metrics.auth_failures.inc();
                    self.outlet.close(CloseCode::Token, "no auth frame in time");
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
            return match admission::admit(&self.app, &token, &self.ip).await {
                Ok(admitted) => {
                    // Acked right after `welcome`, which stays the first
                    // frame of an authenticated connection.
                    self.auth_ack = Some(id);
                    Some(admitted)
                }
                Err(refused) => {
                    let (reply, close) = errors::auth_refusal(&refused);
                    if let Some(reply) = reply {
                        self.send_reply(Some(id), &reply);
                    }
                    self.outlet.close(close.code, &close.reason);
                    None
                }
            };
        }
    }

    /// The request loop of an authenticated connection.
    pub(super) async fn serve(
        &mut self,
        frames: &mut MessageReader,
        shared: &Arc<ConnShared>,
        mut claims: Box<Claims>,
    ) {
        let app = self.app.clone();
        let ping_ms = app.config.limits.ping_interval_s.saturating_mul(1000);
        self.send(protocol::encode_welcome(
            &shared.id,
            &shared.user,
            &app.node.id,
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
        Box::pin(self.join_room(shared, Joiner::Start, &personal, None)).await;

        // Pings, the idle timeout and the token's expiry are the node's
        // keep-alive task's (one timer for all connections, `keepalive.rs`).
        loop {
            if self.outlet.close_reason().is_some() {
                return;
            }
            // Idle: wait for bytes holding no buffer and no read state; the
            // frame read (boxed) exists only while bytes are coming in.
            let read = tokio::select! {
                () = frames.fill() => tokio::select! {
                    read = Box::pin(frames.next()) => Some(read),
                    _ = self.outlet.close_requested() => None,
                },
                _ = self.outlet.close_requested() => None,
                orders = shared.next_orders() => {
                    for order in orders {
                        Box::pin(self.carry_out(shared, order)).await;
                    }
                    continue;
                }
            };
            let Some(read) = read else {
                return;
            };
            match read {
                Read::Message(data) => {
                    self.app.node.metrics.frames_received.inc();
                    match protocol::decode_client_frame(&data) {
                        Ok(frame) => {
                            self.good_frame();
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
                Read::Text(_) => {
                    if self.bad_frame(None, "text frames are not part of the protocol") {
                        return;
                    }
                }
                Read::Closed => return,
                Read::Idle => {}
            }
        }
    }
}
