//! A connection's bounded send queue. Unlike a tokio mpsc channel, which
//! allocates its first block of slots when it is created, this queue holds
//! no memory while it is empty: idle connections are the many, and each
//! pays for what it holds. Producers (the hub's fan-out, the request loop)
//! push without waiting; a full queue is the caller's signal of a slow
//! consumer. The connection's writer task is the one consumer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// Capacity kept after a drain; a larger buffer (left by a burst) is freed.
const KEEP: usize = 16;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity already.
    Full,
    /// The consumer is gone.
    Closed,
}

/// A bounded multi-producer, single-consumer queue of frames.
#[derive(Debug)]
pub struct Outbox {
    frames: Mutex<VecDeque<Bytes>>,
    ready: Notify,
    capacity: usize,
    closed: AtomicBool,
}

impl Outbox {
    /// An empty queue of at most `capacity` frames.
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            frames: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues `frame` without waiting.
    ///
    /// # Errors
    /// [`PushError::Full`] at capacity, [`PushError::Closed`] after
    /// [`Outbox::close`].
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PushError::Closed);
        }
        {
            let Ok(mut frames) = self.frames.lock() else {
                return Err(PushError::Closed);
            };
            if frames.len() >= self.capacity {
                return Err(PushError::Full);
            }
            frames.push_back(frame);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Moves up to `max` queued frames into `into`, oldest first.
    pub fn drain_into(&self, into: &mut Vec<Bytes>, max: usize) {
        let Ok(mut frames) = self.frames.lock() else {
            return;
        };
        let n = frames.len().min(max);
        into.extend(frames.drain(..n));
        if frames.is_empty() && frames.capacity() > KEEP {
            *frames = VecDeque::new();
        }
    }

    /// Waits until at least one frame is queued. Cancel-safe.
    pub async fn ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.frames.lock().map(|f| !f.is_empty()).unwrap_or(false) {
                return;
            }
            notified.await;
        }
    }

    /// Refuses further frames (the consumer is gone).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.frames.lock().map(|f| f.len()).unwrap_or(0)
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

    #[test]
    fn bounded_ordered_and_frees_after_a_burst() {
        let q = Outbox::new(100);
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
        assert_eq!(q.frames.lock().unwrap().capacity(), 0, "burst memory freed");
        q.close();
        assert_eq!(q.push(Bytes::new()), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn ready_wakes_on_a_push_from_another_task() {
        let q = Arc::new(Outbox::new(4));
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
