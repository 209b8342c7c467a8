//! The HTTP long-polling transport of an Engine.IO session: a GET waits for
//! what the connection is sent (or the next ping) and takes it as one
//! payload; a POST carries the client's packets. One GET at a time; a GET
//! in flight when a WebSocket probe succeeds is answered `noop`.

use std::sync::Arc;
use std::time::Duration;

use broker::protocol::CloseCode;
use broker::socketio::engine::{self as eio, EnginePacket};
use broker::socketio::{Data, WsFrame};

use super::engine::{EngineConn, Inbound, Transport};
use crate::ws::writer::MAX_BATCH;

/// Most packets one POST body may hold.
const MAX_PACKETS: usize = 256;
/// A GET with nothing to take is answered `noop` after this long past the
/// ping interval (a ping normally comes first).
const POLL_SLACK: Duration = Duration::from_secs(5);

/// What a poll answered.
pub enum Polled {
    /// The payload to send.
    Payload(String),
    /// The payload, after which the session is closed (the client was
    /// sent its close packet).
    Closed(String),
    /// Another GET was in flight, or the session is not polling.
    Refused,
}

/// Serves one GET: waits until something is queued, a ping is due, the
/// connection closes, or the transport changes; then takes it.
pub async fn get(engine: &Arc<EngineConn>, ping_every: Duration) -> Polled {
    if !engine.begin_poll() {
        engine
            .outlet
            .close(CloseCode::ProtocolError, "overlapping polls");
        return Polled::Refused;
    }
    let polled = poll(engine, ping_every).await;
    engine.end_poll();
    polled
}

async fn poll(engine: &Arc<EngineConn>, ping_every: Duration) -> Polled {
    let queue = &engine.queue;
    let changed = engine.changed.notified();
    tokio::pin!(changed);
    changed.as_mut().enable();
    match engine.transport() {
        Transport::Polling => {}
        Transport::Upgrading => return Polled::Payload("6".to_owned()),
        Transport::WebSocket => return Polled::Refused,
    }
    tokio::select! {
        () = queue.ready() => {}
        () = queue.close_requested() => {}
        () = &mut changed => {}
        () = tokio::time::sleep(ping_every + POLL_SLACK) => {}
    }
    if engine.transport() != Transport::Polling {
        return Polled::Payload("6".to_owned());
    }
    let mut frames = Vec::new();
    if queue.take_ping() {
        frames.push(WsFrame::Text("2".to_owned()));
    }
    // WebSocket pongs do not exist here.
    let _ = queue.take_pong();
    let mut batch = Vec::new();
    queue.drain_into(&mut batch, MAX_BATCH);
    let closing = queue.close_reason().filter(|_| queue.is_empty());
    let mut last = Vec::new();
    engine.encode(&batch, &mut frames);
    if let (Some(reason), Ok(encoder)) = (&closing, engine.encoder.lock()) {
        encoder.closing(reason, &mut last);
    }
    if closing.is_some() {
        // A DISCONNECT goes alone: a close packet in the same payload would
        // reach the app first, as a `disconnect` "transport close". The
        // close follows in the next GET (the client closes first, as a
        // rule).
        if !last.is_empty() && engine.disconnect_once() {
            frames.extend(last);
            return Polled::Payload(eio::frames_payload(&frames));
        }
        frames.push(WsFrame::Text("1".to_owned()));
        return Polled::Closed(eio::frames_payload(&frames));
    }
    if frames.is_empty() {
        frames.push(WsFrame::Text("6".to_owned()));
    }
    Polled::Payload(eio::frames_payload(&frames))
}

/// Takes one POST body: its packets, in order, to the session task.
///
/// # Errors
///
/// A malformed body (the session is then closed), or a session that is
/// gone.
pub async fn post(engine: &EngineConn, body: &[u8]) -> Result<(), &'static str> {
    let packets = match eio::decode_payload(body, engine.max_payload, MAX_PACKETS) {
        Ok(packets) => packets,
        Err(_) => {
            engine.outlet.close(CloseCode::ProtocolError, "bad packet");
            return Err("bad payload");
        }
    };
    engine.outlet.touch();
    for packet in packets {
        let message = match packet {
            EnginePacket::Message(Data::Text(text)) => Inbound::Text(text.to_owned()),
            EnginePacket::Message(Data::Binary(bytes)) => Inbound::Binary(bytes.into_owned()),
            EnginePacket::Pong { probe: false } | EnginePacket::Noop => continue,
            EnginePacket::Close => {
                engine.outlet.close(CloseCode::Normal, "closed by client");
                return Ok(());
            }
            _ => {
                engine.outlet.close(CloseCode::ProtocolError, "bad packet");
                return Err("bad packet");
            }
        };
        if engine.inbound.send(message).await.is_err() {
            return Err("session closed");
        }
    }
    Ok(())
}
