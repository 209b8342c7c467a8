//! The node's inbound Pub/Sub queue: what the Redis client has read off the
//! node's subscription connection(s) and the hub has not dispatched yet.
//!
//! The Redis client hands over each push without waiting, so the queue
//! itself must be bounded: by bytes, [`BUDGET_BYTES`]. When the hub falls so
//! far behind that the budget is spent, the inbox drops that message and
//! every later one, and the link reports itself lost. The node then
//! subscribes again and repairs the gap from history before it reads live
//! messages (`repair.rs`) — the path a dropped connection takes, so an
//! overflow loses only what history no longer keeps, and is counted.
//!
//! Messages are only dropped after the first one that did not fit, so
//! everything the hub was given precedes the gap, and the repair (which
//! starts at the newest message the hub delivered) covers all of it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use redis::aio::{AsyncPushSender, SendError};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

/// Bytes of messages the inbox holds at most. At the gateway's dispatch
/// rate (over a million deliveries a second) the hub drains it in
/// milliseconds; only a node that cannot keep up at all reaches it.
pub const BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// What a push costs besides its payloads (the `PushInfo`, its vector and
/// the channel's slot), roughly.
const OVERHEAD_BYTES: usize = 96;

/// A new inbox holding at most `budget` bytes: the sender goes to the Redis
/// client, the receiver to the node's link.
pub fn inbox(budget: usize) -> (InboxSender, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(State {
        bytes: AtomicUsize::new(0),
        overflowed: AtomicBool::new(false),
        budget,
    });
    (
        InboxSender {
            tx,
            state: state.clone(),
        },
        Inbox { rx, state },
    )
}

/// Shared by both ends.
#[derive(Debug)]
struct State {
    /// Bytes queued now.
    bytes: AtomicUsize,
    /// Set once a message did not fit; every later one is dropped.
    overflowed: AtomicBool,
    budget: usize,
}

/// The Redis client's end: queues pushes within the budget.
#[derive(Debug)]
pub struct InboxSender {
    tx: mpsc::UnboundedSender<PushInfo>,
    state: Arc<State>,
}

impl AsyncPushSender for InboxSender {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        if self.state.overflowed.load(Ordering::Acquire) {
            return Ok(());
        }
        let size = cost(&info);
        let queued = self.state.bytes.fetch_add(size, Ordering::AcqRel) + size;
        if queued > self.state.budget && info.kind != PushKind::Disconnection {
            self.state.bytes.fetch_sub(size, Ordering::AcqRel);
            self.state.overflowed.store(true, Ordering::Release);
            // Wakes a receiver that waits on an empty queue (a budget
            // smaller than one message); the flag tells it why.
            let wake = PushInfo {
                kind: PushKind::Disconnection,
                data: Vec::new(),
            };
            return self.tx.send(wake).map_err(|_| SendError);
        }
        self.tx.send(info).map_err(|_| SendError)
    }
}

/// The link's end.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<PushInfo>,
    state: Arc<State>,
}

impl Inbox {
    /// The next push; `None` once the inbox overflowed or the client is
    /// gone. (A dropped connection arrives as a `Disconnection` push.)
    pub async fn recv(&mut self) -> Option<PushInfo> {
        if self.overflowed() {
            return None;
        }
        let info = self.rx.recv().await?;
        self.state.bytes.fetch_sub(cost(&info), Ordering::AcqRel);
        if self.overflowed() {
            return None;
        }
        Some(info)
    }

    /// The payload of the next message (classic or sharded); `None` when
    /// the link ended: it dropped, the inbox overflowed, or a sharded
    /// channel was unsubscribed (its slot moved: resharding or failover).
    pub async fn next_message(&mut self) -> Option<Bytes> {
        loop {
            let PushInfo { kind, data } = self.recv().await?;
            match kind {
                PushKind::Message | PushKind::SMessage => {
                    if let Some(Value::BulkString(payload)) = data.into_iter().nth(1) {
                        return Some(Bytes::from(payload));
                    }
                }
                PushKind::Disconnection => {
                    if !self.overflowed() {
                        tracing::warn!("the node channel's link dropped");
                    }
                    return None;
                }
                PushKind::SUnsubscribe => {
                    tracing::warn!("a sharded node channel was unsubscribed");
                    return None;
                }
                _ => {}
            }
        }
    }

    /// True once a message did not fit.
    pub fn overflowed(&self) -> bool {
        self.state.overflowed.load(Ordering::Acquire)
    }
}

/// What a push counts against the budget.
fn cost(info: &PushInfo) -> usize {
    if info.kind == PushKind::Disconnection {
        return 0;
    }
    OVERHEAD_BYTES
        + info
            .data
            .iter()
            .map(|v| match v {
                Value::BulkString(b) => b.len(),
                _ => 16,
            })
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: usize) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"broker:node:n".to_vec()),
                Value::BulkString(vec![7; payload]),
            ],
        }
    }

    fn payload_len(info: &PushInfo) -> usize {
        match &info.data[1] {
            Value::BulkString(b) => b.len(),
            _ => 0,
        }
    }

    #[tokio::test]
    async fn within_the_budget_everything_arrives_in_order() {
        let (tx, mut rx) = inbox(10_000);
        for n in 1..=5 {
            tx.send(message(n * 100)).expect("queued");
        }
        for n in 1..=5 {
            let got = rx.recv().await.expect("a message");
            assert_eq!(payload_len(&got), n * 100);
        }
        // Drained: the budget is whole again.
        for _ in 0..5 {
            tx.send(message(1_500)).expect("queued");
        }
        for _ in 0..5 {
            assert!(rx.recv().await.is_some());
        }
        assert!(!rx.overflowed());
    }

    #[tokio::test]
    async fn an_overflow_ends_the_link_and_drops_what_came_later() {
        let (tx, mut rx) = inbox(1_000);
        tx.send(message(400)).expect("queued");
        tx.send(message(400)).expect("queued");
        // 3 × (400 + overhead) does not fit: dropped, and so is the rest
        // even once there is room.
        tx.send(message(400)).expect("dropped quietly");
        assert!(rx.overflowed());
        tx.send(message(1)).expect("dropped quietly");
        assert!(rx.recv().await.is_none(), "the link reports itself lost");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_message_larger_than_the_budget_wakes_a_waiting_receiver() {
        let (tx, mut rx) = inbox(100);
        let waiting = tokio::spawn(async move { rx.recv().await.is_none() });
        tokio::task::yield_now().await;
        tx.send(message(500)).expect("dropped quietly");
        assert!(waiting.await.expect("the receiver"), "woken with None");
    }

    #[tokio::test]
    async fn a_disconnection_always_gets_through() {
        let (tx, mut rx) = inbox(200);
        tx.send(message(50)).expect("queued");
        tx.send(PushInfo {
            kind: PushKind::Disconnection,
            data: Vec::new(),
        })
        .expect("queued");
        assert!(rx.recv().await.is_some());
        let last = rx.recv().await.expect("the disconnection");
        assert_eq!(last.kind, PushKind::Disconnection);
    }
}
