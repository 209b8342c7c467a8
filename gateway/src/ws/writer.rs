//! The writing side of one WebSocket: encoding server → client frames
//! (RFC 6455 §5.2: unmasked, unfragmented) and the connection's writer
//! task, which drains its [`Outbox`] into the socket. A batch of queued
//! messages becomes one buffer and one write; nothing is kept between
//! batches, so an idle connection holds no write buffer. The writer sends
//! the pings and pongs, and the close frame when a close is requested —
//! even when the queue is full.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::close::SLOW_CONSUMER;
use super::outbox::{CloseReason, Outbox};

/// Text message.
pub const TEXT: u8 = 0x1;
/// Binary message.
pub const BINARY: u8 = 0x2;
/// Close.
pub const CLOSE: u8 = 0x8;
/// Ping.
pub const PING: u8 = 0x9;
/// Pong.
pub const PONG: u8 = 0xA;

/// Bytes a frame of `len` payload bytes takes.
pub fn frame_len(len: usize) -> usize {
    len + match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends one final frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=65535 => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and up to 123 bytes of `reason` (cut
/// at a character boundary).
pub fn put_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    put_frame(out, CLOSE, &payload);
}

/// Most queued frames written in one batch (one buffer, one write).
pub const MAX_BATCH: usize = 64;
/// How long a last write may wait for a client that stopped reading once
/// the connection is being closed.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a connection's queued messages and keep-alive pings become
/// WebSocket frames: protocol v1 sends each queued frame as one binary
/// message ([`Binary`]); Socket.IO transcodes them (`crate::socketio`).
pub trait Encode: Send {
    /// Appends the frames of `batch` (emptied) to `buf`.
    fn messages(&mut self, buf: &mut Vec<u8>, batch: &mut Vec<Bytes>);
    /// Appends the keep-alive ping the node's keep-alive asked for.
    fn ping(&mut self, buf: &mut Vec<u8>);
    /// Appends what goes just before the close frame.
    fn before_close(&mut self, _buf: &mut Vec<u8>, _reason: &CloseReason) {}
}

/// Protocol v1: each queued frame is one binary message; pings are
/// WebSocket pings.
pub struct Binary;

impl Encode for Binary {
    fn messages(&mut self, buf: &mut Vec<u8>, batch: &mut Vec<Bytes>) {
        put_frames(buf, batch);
    }

    fn ping(&mut self, buf: &mut Vec<u8>) {
        put_frame(buf, PING, &[]);
    }
}

/// The writer task of a protocol v1 connection ([`run_with`] [`Binary`]).
pub async fn run(out: OwnedWriteHalf, queue: Arc<Outbox>) {
    run_with(out, queue, Binary).await
}

/// The writer task: queue → socket in batches, pings, pongs, and the close
/// frame when a close is requested — even when the queue is full.
pub async fn run_with<E: Encode>(mut out: OwnedWriteHalf, queue: Arc<Outbox>, mut encode: E) {
    loop {
        // Both buffers live for one batch: an idle connection holds none.
        let mut batch = Vec::new();
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
                        encode.messages(&mut buf, &mut batch);
                    }
                    encode.before_close(&mut buf, &reason);
                    put_close(&mut buf, reason.code.code(), &reason.reason);
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
                // One turn for the other tasks first: under load the hub
                // queues the next messages meanwhile, and this write takes
                // them too (fewer, fuller writes); idle, it costs a yield.
                if queue.len() < MAX_BATCH {
                    tokio::task::yield_now().await;
                }
                if queue.take_ping() {
                    encode.ping(&mut buf);
                }
                if let Some(payload) = queue.take_pong() {
                    put_frame(&mut buf, PONG, &payload);
                }
                queue.drain_into(&mut batch, MAX_BATCH);
                encode.messages(&mut buf, &mut batch);
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
    buf.reserve(batch.iter().map(|f| frame_len(f.len())).sum());
    for frame in batch.drain(..) {
        put_frame(buf, BINARY, &frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_for_every_length_form() {
        for (len, head) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xff, 0xff]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            put_frame(&mut out, BINARY, &vec![7; len]);
            assert_eq!(out[..head.len()], head[..], "{len}");
            assert_eq!(out.len(), frame_len(len), "{len}");
        }
    }

    #[test]
    fn close_reason_is_cut_to_fit_a_control_frame() {
        let mut out = Vec::new();
        put_close(&mut out, 4008, &"é".repeat(100));
        assert_eq!(out[0], 0x88);
        assert!(out[1] as usize <= 125);
        assert_eq!(&out[2..4], &4008u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
