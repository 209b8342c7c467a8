//! A connection's bounded send queue, with its two other signals to the
//! writer: the pong owed to the latest ping, and the close request.
//!
//! Unlike a tokio mpsc channel, which allocates its first block of slots
//! when it is created, this queue holds no memory while it is empty; and
//! unlike two `watch` channels (about 350 bytes each) the pong and the close
//! request live here, in the one allocation every connection has anyway:
//! idle connections are the many, and each pays for what it holds.
//! Producers (the hub's fan-out, the request loop) push without waiting; a
//! full queue is the caller's signal of a slow consumer. The connection's
//! writer task is the one consumer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use broker::protocol::CloseCode;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::clock::mono_ms;

/// Why and how a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code.
    pub code: CloseCode,
    /// Short reason, also logged.
    pub reason: String,
}

/// How much one connection's queue may hold: frames and bytes, whichever
/// is reached first (`limits.send_queue`, `limits.send_queue_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Frames queued at most.
    pub frames: usize,
    /// Bytes queued at most. A frame larger than this still goes into an
    /// empty queue (it was allowed to be built; the writer takes it next),
    /// never behind another one.
    pub bytes: usize,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its frame or byte capacity already.
    Full,
    /// The consumer is gone.
    Closed,
}

/// The queued frames and their total size.
#[derive(Debug, Default)]
struct Queued {
    frames: VecDeque<Bytes>,
    bytes: usize,
}

/// A bounded multi-producer, single-consumer queue of frames.
#[derive(Debug)]
pub struct Outbox {
    frames: Mutex<Queued>,
    /// The payload of the latest ping, until its pong is written.
    pong: Mutex<Option<Vec<u8>>>,
    /// Wakes the writer: a frame or a pong is waiting.
    ready: Notify,
    limits: QueueLimits,
    closed: AtomicBool,
    /// The first close request.
    closing: Mutex<Option<CloseReason>>,
    /// Wakes everyone waiting in [`Outbox::close_requested`].
    close_notify: Notify,
    /// A ping is due (the node's keep-alive asked for one).
    ping_due: AtomicBool,
    /// When the client last sent anything, in [`mono_ms`].
    last_seen_ms: AtomicU64,
}

impl Outbox {
    /// An empty queue that holds at most `limits`.
    pub fn new(limits: QueueLimits) -> Outbox {
        Outbox {
            frames: Mutex::new(Queued::default()),
            pong: Mutex::new(None),
            ready: Notify::new(),
            limits: QueueLimits {
                frames: limits.frames.max(1),
                bytes: limits.bytes.max(1),
            },
            closed: AtomicBool::new(false),
            closing: Mutex::new(None),
            close_notify: Notify::new(),
            ping_due: AtomicBool::new(false),
            last_seen_ms: AtomicU64::new(mono_ms()),
        }
    }

    /// Queues `frame` without waiting.
    ///
    /// # Errors
    /// [`PushError::Full`] when `frame` would pass the frame or byte
    /// capacity, [`PushError::Closed`] after [`Outbox::close`].
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        {
            let Ok(mut queued) = self.frames.lock() else {
                return Err(PushError::Closed);
            };
            let too_many = queued.frames.len() >= self.limits.frames;
            let too_big = !queued.frames.is_empty()
                && queued.bytes.saturating_add(frame.len()) > self.limits.bytes;
            if too_many || too_big {
                return Err(PushError::Full);
            }
            queued.bytes += frame.len();
            queued.frames.push_back(frame);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Queues `frame` only while the queue is at most half full (frames and
    /// bytes, the frame included): `Ok(false)` when it was skipped. For
    /// ephemeral messages, which a lagging client can do without.
    ///
    /// # Errors
    /// [`PushError::Closed`] after [`Outbox::close`].
    pub fn push_if_half_free(&self, frame: Bytes) -> Result<bool, PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        {
            let Ok(mut queued) = self.frames.lock() else {
                return Err(PushError::Closed);
            };
            let frames_over = (queued.frames.len() + 1) * 2 > self.limits.frames;
            let bytes_over = !queued.frames.is_empty()
                && queued.bytes.saturating_add(frame.len()).saturating_mul(2) > self.limits.bytes;
            if frames_over || bytes_over {
                return Ok(false);
            }
            queued.bytes += frame.len();
            queued.frames.push_back(frame);
        }
        self.ready.notify_one();
        Ok(true)
    }

    /// Moves up to `max` queued frames into `into`, oldest first. A queue
    /// drained empty keeps no buffer: when all of it goes into an empty
    /// `into`, its buffer goes along (no copy), and the caller frees it.
    pub fn drain_into(&self, into: &mut Vec<Bytes>, max: usize) {
        let Ok(mut queued) = self.frames.lock() else {
            return;
        };
        let n = queued.frames.len().min(max);
        if n == queued.frames.len() && into.is_empty() {
            *into = Vec::from(std::mem::take(&mut queued.frames));
            queued.bytes = 0;
            return;
        }
        let start = into.len();
        into.extend(queued.frames.drain(..n));
        let drained: usize = into[start..].iter().map(Bytes::len).sum();
        queued.bytes = queued.bytes.saturating_sub(drained);
        if queued.frames.is_empty() {
            queued.frames = VecDeque::new();
        }
    }

    /// Waits until a frame is queued, or a pong or a ping is due.
    /// Cancel-safe.
    pub async fn ready(&self) {
        loop {
            let notified = self.ready.notified();
            let frames = self
                .frames
                .lock()
                .map(|q| !q.frames.is_empty())
                .unwrap_or(false);
            if frames
                || self.ping_due.load(Ordering::Acquire)
                || self.pong.lock().map(|p| p.is_some()).unwrap_or(false)
            {
                return;
            }
            notified.await;
        }
    }

    /// Asks the writer for a ping.
    pub fn request_ping(&self) {
        self.ping_due.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Whether a ping is due (and clears it).
    pub fn take_ping(&self) -> bool {
        self.ping_due.swap(false, Ordering::AcqRel)
    }

    /// Notes that the client sent something now.
    pub fn touch(&self) {
        self.last_seen_ms.store(mono_ms(), Ordering::Relaxed);
    }

    /// When the client last sent anything, in [`mono_ms`].
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// Owes a pong with `payload` (replacing an older one: only the latest
    /// ping needs its pong, RFC 6455 §5.5.3).
    pub fn set_pong(&self, payload: Vec<u8>) {
        if let Ok(mut pong) = self.pong.lock() {
            *pong = Some(payload);
        }
        self.ready.notify_one();
    }

    /// The pong owed, if any.
    pub fn take_pong(&self) -> Option<Vec<u8>> {
        self.pong.lock().ok().and_then(|mut p| p.take())
    }

    /// Asks for the connection to be closed with `reason`. Returns true for
    /// the first request (later ones keep the first reason).
    pub fn request_close(&self, reason: CloseReason) -> bool {
        let first = match self.closing.lock() {
            Ok(mut closing) if closing.is_none() => {
                *closing = Some(reason);
                true
            }
            _ => false,
        };
        if first {
            self.close_notify.notify_waiters();
        }
        first
    }

    /// The close request, if any.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closing.lock().ok().and_then(|c| c.clone())
    }

    /// Waits until a close is requested or the queue is closed. Cancel-safe.
    pub async fn close_requested(&self) {
        loop {
            let notified = self.close_notify.notified();
            let requested = self.closing.lock().map(|c| c.is_some()).unwrap_or(true);
            if requested || self.closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Refuses further frames (the consumer is gone, or the producers are),
    /// and wakes whoever waits in [`Outbox::close_requested`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.close_notify.notify_waiters();
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.frames.lock().map(|q| q.frames.len()).unwrap_or(0)
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.frames.lock().map(|q| q.bytes).unwrap_or(0)
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn frames(n: usize) -> QueueLimits {
        QueueLimits {
            frames: n,
            bytes: usize::MAX,
        }
    }

    #[test]
    fn volatile_frames_only_into_a_queue_at_most_half_full() {
        let q = Outbox::new(frames(4));
        assert_eq!(q.push_if_half_free(Bytes::from_static(b"a")), Ok(true));
        assert_eq!(q.push_if_half_free(Bytes::from_static(b"b")), Ok(true));
        // A third frame would make it 3 of 4: skipped, nothing queued.
        assert_eq!(q.push_if_half_free(Bytes::from_static(b"c")), Ok(false));
        assert_eq!(q.len(), 2);
        q.push(Bytes::from_static(b"d")).unwrap();
        q.push(Bytes::from_static(b"e")).unwrap();
        assert_eq!(q.push_if_half_free(Bytes::from_static(b"f")), Ok(false));
        let by_bytes = Outbox::new(QueueLimits {
            frames: 1000,
            bytes: 10,
        });
        by_bytes.push(Bytes::from_static(b"1234")).unwrap();
        assert_eq!(
            by_bytes.push_if_half_free(Bytes::from_static(b"5")),
            Ok(true)
        );
        assert_eq!(
            by_bytes.push_if_half_free(Bytes::from_static(b"6")),
            Ok(false)
        );
        by_bytes.close();
        assert_eq!(
            by_bytes.push_if_half_free(Bytes::from_static(b"7")),
            Err(PushError::Closed)
        );
    }

    #[test]
    fn bounded_by_bytes_whatever_the_frame_count() {
        let q = Outbox::new(QueueLimits {
            frames: 1000,
            bytes: 10,
        });
        q.push(Bytes::from_static(b"123456")).unwrap();
        q.push(Bytes::from_static(b"7890")).unwrap();
        assert_eq!(q.queued_bytes(), 10);
        assert_eq!(q.push(Bytes::from_static(b"x")), Err(PushError::Full));
        let mut out = Vec::new();
        q.drain_into(&mut out, 1);
        assert_eq!(q.queued_bytes(), 4);
        q.drain_into(&mut out, 1);
        // An empty queue takes one frame larger than the bound, alone.
        q.push(Bytes::from(vec![0; 64])).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"x")), Err(PushError::Full));
    }

    #[test]
    fn bounded_ordered_and_frees_after_a_burst() {
        let q = Outbox::new(frames(100));
        for i in 0..100u8 {
            q.push(Bytes::from(vec![i])).unwrap();
        }
        assert_eq!(q.push(Bytes::new()), Err(PushError::Full));
        let mut out = Vec::new();
        q.drain_into(&mut out, 64);
        assert_eq!(out.len(), 64);
        assert_eq!(out[0][0], 0);
        q.drain_into(&mut out, 64);
        assert_eq!(out.len(), 100);
        assert_eq!(out[99][0], 99);
        assert_eq!(
            q.frames.lock().unwrap().frames.capacity(),
            0,
            "burst memory freed"
        );
        assert_eq!(q.queued_bytes(), 0);
        q.close();
        assert_eq!(q.push(Bytes::new()), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn pongs_and_close_requests_wake_their_waiters() {
        let q = Arc::new(Outbox::new(frames(4)));
        let (a, b) = (q.clone(), q.clone());
        let waiters = [
            tokio::spawn(async move { a.close_requested().await }),
            tokio::spawn(async move { b.close_requested().await }),
        ];
        q.set_pong(b"p1".to_vec());
        q.set_pong(b"p2".to_vec());
        tokio::time::timeout(Duration::from_secs(2), q.ready())
            .await
            .expect("a pong wakes the writer");
        assert_eq!(q.take_pong().as_deref(), Some(&b"p2"[..]), "the latest");
        assert_eq!(q.take_pong(), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reason = |code| CloseReason {
            code: CloseCode::from(code),
            reason: "r".into(),
        };
        assert!(q.request_close(reason(4008)));
        assert!(!q.request_close(reason(1000)), "the first request wins");
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(2), w)
                .await
                .expect("both waiters woken")
                .unwrap();
        }
        assert_eq!(q.close_reason().map(|r| r.code), Some(CloseCode::Policy));
        q.close_requested().await; // returns at once after the request
    }

    #[tokio::test]
    async fn ready_wakes_on_a_push_from_another_task() {
        let q = Arc::new(Outbox::new(frames(4)));
        let producer = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            producer.push(Bytes::from_static(b"x")).unwrap();
        });
        tokio::time::timeout(Duration::from_secs(2), q.ready())
            .await
            .expect("woken");
        assert_eq!(q.len(), 1);
    }
}
