//! The WebSocket transport of an Engine.IO session: a session that starts
//! on WebSocket, or the upgrade of a polling one (`2probe` → `3probe`, the
//! polling GET released with `noop`, then `5` hands the queue to the
//! WebSocket). Frames are read with the same strict reader as `/ws` and
//! written by the same writer task, with [`SioEncode`] for the framing.

use std::sync::Arc;

use broker::protocol::CloseCode;
use broker::socketio::engine::{self as eio, EnginePacket};
use broker::socketio::{Data, WsFrame};
use bytes::Bytes;
use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use super::engine::{EngineConn, Inbound, Transport};
use crate::ws::message::{MessageReader, Read};
use crate::ws::outbox::{CloseReason, QueueLimits};
use crate::ws::socket::ClientSocket;
use crate::ws::writer::{self, put_frame, Encode, BINARY, TEXT};
use crate::ws::Outlet;

/// Socket.IO framing for the writer task: each queued frame transcoded by
/// the session's [`super::engine::Encoder`], Engine.IO pings (`2`) as text
/// frames, and DISCONNECT before the close of a kick.
pub struct SioEncode {
    engine: Arc<EngineConn>,
    frames: Vec<WsFrame>,
}

impl SioEncode {
    fn put(&mut self, buf: &mut Vec<u8>) {
        for frame in self.frames.drain(..) {
            match frame {
                WsFrame::Text(text) => put_frame(buf, TEXT, text.as_bytes()),
                WsFrame::Binary(bytes) => put_frame(buf, BINARY, &bytes),
            }
        }
    }
}

impl Encode for SioEncode {
    fn messages(&mut self, buf: &mut Vec<u8>, batch: &mut Vec<Bytes>) {
        self.engine.encode(batch, &mut self.frames);
        batch.clear();
        self.put(buf);
    }

    fn ping(&mut self, buf: &mut Vec<u8>) {
        put_frame(buf, TEXT, b"2");
    }

    fn before_close(&mut self, buf: &mut Vec<u8>, reason: &CloseReason) {
        if let Ok(encoder) = self.engine.encoder.lock() {
            encoder.closing(reason, &mut self.frames);
        }
        self.put(buf);
    }
}

/// Takes over an upgraded WebSocket for `engine` and serves it until it
/// closes (spawn the future). `upgrade`: the session was polling and this
/// socket must probe first; otherwise it is the session's only transport
/// and its `open` packet is sent at once.
pub async fn serve(
    engine: Arc<EngineConn>,
    ws: WebSocket<TokioIo<Upgraded>>,
    upgrade: bool,
    open: String,
) {
    let socket = match ClientSocket::from_upgraded(ws.into_inner().into_inner()) {
        Ok(socket) => socket,
        Err(err) => {
            tracing::warn!(error = %err, "cannot take over the upgraded connection");
            if !upgrade {
                engine.outlet.close(CloseCode::Abnormal, "connection lost");
            }
            return;
        }
    };
    let (read, write) = socket.into_split();
    let max = engine.max_payload;
    let mut writer_task = None;
    let mut pending_write = None;
    let mut frames = if upgrade {
        // Until `5`, this socket is only a probe: its failures must not
        // close the session, which carries on polling.
        pending_write = Some(write);
        let (probe_outlet, _) = Outlet::new(QueueLimits {
            frames: 1,
            bytes: 1,
        });
        MessageReader::new(read, probe_outlet, max)
    } else {
        engine.send_raw(WsFrame::Text(open));
        writer_task = Some(start_writer(&engine, write));
        MessageReader::new(read, engine.outlet.clone(), max)
    };
    loop {
        let read = tokio::select! {
            read = frames.next() => read,
            _ = engine.outlet.close_requested() => break,
        };
        match read {
            Read::Message(bytes) => {
                if writer_task.is_none() {
                    break;
                }
                if engine.inbound.send(Inbound::Binary(bytes)).await.is_err() {
                    break;
                }
            }
            Read::Text(bytes) => {
                let Ok(text) = String::from_utf8(bytes) else {
                    close(
                        &engine,
                        writer_task.is_some(),
                        CloseCode::InvalidData,
                        "text is not UTF-8",
                    );
                    break;
                };
                let packet = match eio::decode_text(&text, max) {
                    Ok(packet) => packet,
                    Err(_) => {
                        close(
                            &engine,
                            writer_task.is_some(),
                            CloseCode::ProtocolError,
                            "bad packet",
                        );
                        break;
                    }
                };
                match (packet, pending_write.as_mut()) {
                    (EnginePacket::Message(Data::Text(data)), None) => {
                        let message = Inbound::Text(data.to_owned());
                        if engine.inbound.send(message).await.is_err() {
                            break;
                        }
                    }
                    (EnginePacket::Pong { probe: false }, None) | (EnginePacket::Noop, _) => {}
                    (EnginePacket::Ping { probe: true }, Some(write)) => {
                        let mut buf = Vec::new();
                        put_frame(&mut buf, TEXT, b"3probe");
                        if write.write_all(&buf).await.is_err() {
                            break;
                        }
                        engine.switch(Transport::Upgrading);
                    }
                    (EnginePacket::Upgrade, Some(_))
                        if engine.transport() == Transport::Upgrading =>
                    {
                        let Some(write) = pending_write.take() else {
                            break;
                        };
                        frames.set_outlet(engine.outlet.clone());
                        engine.switch(Transport::WebSocket);
                        writer_task = Some(start_writer(&engine, write));
                    }
                    (EnginePacket::Close, _) => {
                        close(
                            &engine,
                            writer_task.is_some(),
                            CloseCode::Normal,
                            "closed by client",
                        );
                        break;
                    }
                    _ => {
                        close(
                            &engine,
                            writer_task.is_some(),
                            CloseCode::ProtocolError,
                            "bad packet",
                        );
                        break;
                    }
                }
            }
            Read::Idle => {}
            Read::Closed => break,
        }
    }
    if let Some(task) = writer_task {
        let _ = task.await;
    } else if engine.transport() == Transport::Upgrading {
        // The probe went away before `5`: polling carries on.
        engine.switch(Transport::Polling);
    }
}

/// Closes the session, or only the probe before the upgrade completed.
fn close(engine: &EngineConn, upgraded: bool, code: CloseCode, reason: &str) {
    if upgraded {
        engine.outlet.close(code, reason);
    }
}

/// Starts the writer task that drains the session's queue into `write`.
fn start_writer(engine: &Arc<EngineConn>, write: OwnedWriteHalf) -> tokio::task::JoinHandle<()> {
    let encode = SioEncode {
        engine: engine.clone(),
        frames: Vec::new(),
    };
    tokio::spawn(writer::run_with(write, engine.queue.clone(), encode))
}
