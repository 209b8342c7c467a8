//! The sending side of one WebSocket, as everyone but its writer task sees
//! it: queue a frame (a full queue closes the connection as a slow
//! consumer), request a close, a ping or a pong, note that the client was
//! heard from. It is a handle on the connection's [`Outbox`], which the
//! writer task drains.

use std::sync::Arc;

use broker::protocol::CloseCode;
use bytes::Bytes;

use super::close::SLOW_CONSUMER;
use super::outbox::{CloseReason, Outbox, PushError, QueueLimits};
use crate::metrics::Metrics;

/// The sending side of one WebSocket: its bounded frame queue and its close
/// request. The writer task drains the same [`Outbox`].
#[derive(Debug, Clone)]
pub struct Outlet {
    queue: Arc<Outbox>,
}

impl Outlet {
    /// An outlet with a queue bounded by `limits`; returns the queue, which
    /// the writer task drains.
    pub fn new(limits: QueueLimits) -> (Outlet, Arc<Outbox>) {
        let queue = Arc::new(Outbox::new(limits));
        (
            Outlet {
                queue: queue.clone(),
            },
            queue,
        )
    }

    /// Queues a frame. A full queue (frames or bytes) closes the connection as a slow consumer
    /// (and returns false).
    pub fn send(&self, frame: Bytes, metrics: &Metrics) -> bool {
        match self.queue.push(frame) {
            Ok(()) => true,
            Err(PushError::Full) => {
                if self.close(CloseCode::Policy, SLOW_CONSUMER) {
                    metrics.slow_consumer_disconnects.inc();
                }
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    /// Queues an ephemeral frame unless the queue is over half full
    /// ([`Outbox::push_if_half_free`]); false when it was skipped (or the
    /// connection is closing). Never closes the connection.
    pub fn send_volatile(&self, frame: Bytes) -> bool {
        matches!(self.queue.push_if_half_free(frame), Ok(true))
    }

    /// Asks the connection's tasks to close with `code`. Returns true for
    /// the first request (later ones keep the first reason).
    pub fn close(&self, code: CloseCode, reason: &str) -> bool {
        self.queue.request_close(CloseReason {
            code,
            reason: reason.to_string(),
        })
    }

    /// Waits until a close is requested. Cancel-safe.
    pub async fn close_requested(&self) {
        self.queue.close_requested().await;
    }

    /// The close request, if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.queue.close_reason()
    }

    /// Ends the queue from the producers' side: no more frames, and the
    /// writer stops once it wrote what a close request left (with no close
    /// request, it stops without a close frame: the socket is gone).
    pub fn finish(&self) {
        self.queue.close();
    }

    /// Asks the writer for a ping.
    pub fn ping(&self) {
        self.queue.request_ping();
    }

    /// Notes that the client sent something now.
    pub fn touch(&self) {
        self.queue.touch();
    }

    /// When the client last sent anything ([`crate::clock::mono_ms`]).
    pub fn last_seen_ms(&self) -> u64 {
        self.queue.last_seen_ms()
    }

    /// Owes the client a pong with `payload` (the writer sends it).
    pub fn pong(&self, payload: Vec<u8>) {
        self.queue.set_pong(payload);
    }
}
