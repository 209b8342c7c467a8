//! One Engine.IO session, whichever transport carries it: its id, the
//! channel of client messages to the session task, the connection's send
//! queue (protocol v1 frames, as every connection's), the transport it is
//! on, and the [`Encoder`] that turns queued frames into Engine.IO packets
//! for its client.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use broker::protocol;
use broker::protocol::CloseCode;
use broker::socketio::bridge::{Outgoing, Positions, SharedMessage};
use broker::socketio::{self, Body, Packet, ParserKind, WsFrame};
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::app::App;
use crate::node::ConnShared;
use crate::ws::outbox::{CloseReason, Outbox, QueueLimits};
use crate::ws::Outlet;

/// Client messages waiting for the session task (the transports wait when
/// it is full, and so does the client).
const INBOUND: usize = 16;

/// First byte of a queued frame that is already an Engine.IO text packet
/// (the session's own CONNECT answers and errors). Protocol v1 frames are
/// MessagePack maps and never start with it.
const RAW_TEXT: u8 = 0x00;
/// First byte of a queued frame that is already an Engine.IO binary
/// message.
const RAW_BINARY: u8 = 0x01;

/// A client's Engine.IO `message`, for the session task.
#[derive(Debug)]
pub enum Inbound {
    /// A text message (its data, after the `4`).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// Which transport a session is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// Polling, while a WebSocket probes for the upgrade (the GET in
    /// flight is answered `noop`, no further GET is served).
    Upgrading,
    /// WebSocket (from the start, or upgraded).
    WebSocket,
}

impl Transport {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Polling | Transport::Upgrading => "polling",
            Transport::WebSocket => "websocket",
        }
    }
}

/// What the transports share about their session.
#[derive(Debug)]
struct State {
    transport: Transport,
    /// A polling GET is being served.
    polling: bool,
    /// A polling GET carried the DISCONNECT of a kick; the close packet
    /// goes in the next one.
    disconnect_sent: bool,
}

/// One Engine.IO session.
pub struct EngineConn {
    /// The Engine.IO session id (random; it authorises polling requests
    /// and the upgrade).
    pub sid: String,
    /// The client's address, as limits count it.
    pub ip: String,
    /// The largest Engine.IO packet or polling body taken
    /// (`limits.max_frame_bytes`, the handshake's `maxPayload`).
    pub max_payload: usize,
    /// The connection's send side.
    pub outlet: Outlet,
    /// The same queue, for the transport that drains it.
    pub queue: Arc<Outbox>,
    /// Client messages to the session task.
    pub inbound: mpsc::Sender<Inbound>,
    state: Mutex<State>,
    /// Wakes a waiting polling GET when the transport changes.
    pub changed: Notify,
    /// Queued frames → Engine.IO packets (shared by both transports: the
    /// recovery positions outlive the upgrade).
    pub encoder: Mutex<Encoder>,
    app: Arc<App>,
}

impl EngineConn {
    /// A new session on `transport`; returns it with the receiving end of
    /// its messages, for the session task.
    pub fn new(
        app: Arc<App>,
        ip: String,
        transport: Transport,
    ) -> (Arc<EngineConn>, mpsc::Receiver<Inbound>) {
        let (outlet, queue) = Outlet::new(QueueLimits {
            frames: app.config.limits.send_queue,
            bytes: app.config.limits.send_queue_bytes,
        });
        let (inbound, receiver) = mpsc::channel(INBOUND);
        let mut sid = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut sid[..]);
        let metrics = &app.node.metrics;
        metrics
            .socketio_handshakes
            .with_label_values(&[transport.label()])
            .inc();
        metrics
            .socketio_connections
            .with_label_values(&[transport.label()])
            .inc();
        let conn = Arc::new(EngineConn {
            sid: hex::encode(sid),
            ip,
            max_payload: app.config.limits.max_frame_bytes,
            outlet,
            queue,
            inbound,
            state: Mutex::new(State {
                transport,
                polling: false,
                disconnect_sent: false,
            }),
            changed: Notify::new(),
            encoder: Mutex::new(Encoder::default()),
            app,
        });
        (conn, receiver)
    }

    /// The transport now.
    pub fn transport(&self) -> Transport {
        self.state
            .lock()
            .map(|s| s.transport)
            .unwrap_or(Transport::WebSocket)
    }

    /// Moves to `to` (the upgrade's steps); wakes a waiting GET.
    pub fn switch(&self, to: Transport) {
        if let Ok(mut state) = self.state.lock() {
            let from = state.transport;
            state.transport = to;
            if from.label() != to.label() {
                let gauge = &self.app.node.metrics.socketio_connections;
                gauge.with_label_values(&[from.label()]).dec();
                gauge.with_label_values(&[to.label()]).inc();
            }
        }
        self.changed.notify_waiters();
    }

    /// Marks a polling GET as being served; false when one already is (a
    /// protocol error: the session is closed).
    pub fn begin_poll(&self) -> bool {
        self.state
            .lock()
            .map(|mut s| !std::mem::replace(&mut s.polling, true))
            .unwrap_or(false)
    }

    /// Notes that a GET carries the DISCONNECT; false when one already did.
    pub fn disconnect_once(&self) -> bool {
        self.state
            .lock()
            .map(|mut s| !std::mem::replace(&mut s.disconnect_sent, true))
            .unwrap_or(false)
    }

    /// Ends the polling GET [`EngineConn::begin_poll`] began.
    pub fn end_poll(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.polling = false;
        }
    }

    /// The Engine.IO packets of queued `frames`, appended to `out`.
    pub fn encode(&self, frames: &[Bytes], out: &mut Vec<WsFrame>) {
        if let Ok(mut encoder) = self.encoder.lock() {
            for frame in frames {
                encoder.frames(frame, &self.app.socketio.messages, out);
            }
        }
    }

    /// Queues a packet the session wrote itself (a CONNECT answer or
    /// error), encoded for `kind`.
    pub fn send_packet(&self, kind: ParserKind, packet: &Packet) {
        for frame in socketio::encode_ws(kind, packet) {
            self.send_raw(frame);
        }
    }

    /// Queues one Engine.IO packet as it is.
    pub fn send_raw(&self, frame: WsFrame) {
        let (tag, bytes) = match frame {
            WsFrame::Text(text) => (RAW_TEXT, text.into_bytes()),
            WsFrame::Binary(bytes) => (RAW_BINARY, bytes),
        };
        let mut tagged = Vec::with_capacity(bytes.len() + 1);
        tagged.push(tag);
        tagged.extend_from_slice(&bytes);
        self.outlet
            .send(Bytes::from(tagged), &self.app.node.metrics);
    }
}

impl Drop for EngineConn {
    fn drop(&mut self) {
        let label = self.transport().label();
        self.app
            .node
            .metrics
            .socketio_connections
            .with_label_values(&[label])
            .dec();
    }
}

/// Room messages transcoded lately, shared by every Socket.IO connection
/// of the node: the hub hands one frame (one buffer) to all the members of
/// a room, so the first recipient of each parser transcodes it and the
/// others copy it with their own recovery offset.
#[derive(Default)]
pub struct SharedMessages {
    recent: Mutex<VecDeque<Recent>>,
}

/// A frame and what it became for one parser (`None`: not a message
/// Socket.IO clients get as such).
struct Recent {
    /// A clone of the frame: its buffer cannot be freed and reused while
    /// it is here, so the same address and length is the same frame.
    frame: Bytes,
    kind: ParserKind,
    message: Option<Arc<SharedMessage>>,
}

/// Frames remembered (a few messages in flight at once, per parser).
const RECENT: usize = 16;

impl SharedMessages {
    /// The shared transcoding of `frame` for `kind`, when it is a room
    /// message.
    pub fn get(&self, frame: &Bytes, kind: ParserKind) -> Option<Arc<SharedMessage>> {
        if protocol::frame_type(frame) != Some("msg") {
            return None;
        }
        let same = |r: &Recent| {
            r.kind == kind && r.frame.as_ptr() == frame.as_ptr() && r.frame.len() == frame.len()
        };
        if let Some(hit) = self.recent.lock().ok()?.iter().find(|r| same(r)) {
            return hit.message.clone();
        }
        let message = SharedMessage::new(frame, kind).map(Arc::new);
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(Recent {
                frame: frame.clone(),
                kind,
                message: message.clone(),
            });
        }
        message
    }
}

/// Turns a connection's queued frames into Engine.IO packets for its
/// client: protocol v1 frames through [`Outgoing::packets`] and the
/// connection's parser, the session's own packets as they are.
#[derive(Default)]
pub struct Encoder {
    /// The client's parser, known from its CONNECT.
    kind: Option<ParserKind>,
    /// The connection once admitted, for its rooms.
    conn: Option<Arc<ConnShared>>,
    positions: Positions,
}

impl Encoder {
    /// Sets the client's parser.
    pub fn set_kind(&mut self, kind: ParserKind) {
        self.kind = Some(kind);
    }

    /// The client's parser (the default parser until its CONNECT came).
    pub fn kind(&self) -> ParserKind {
        self.kind.unwrap_or(ParserKind::Default)
    }

    /// Sets the admitted connection (its rooms filter the recovery offset).
    pub fn set_conn(&mut self, conn: Arc<ConnShared>) {
        self.conn = Some(conn);
    }

    /// The Engine.IO packets of one queued frame (none for a frame the
    /// client gets nothing for), appended to `out`. A room message is
    /// transcoded once for the node's recipients of each parser
    /// ([`SharedMessages`]).
    pub fn frames(&mut self, frame: &Bytes, shared: &SharedMessages, out: &mut Vec<WsFrame>) {
        let kind = self.kind();
        let conn = self.conn.as_deref();
        let in_room = |room: &str| conn.is_some_and(|c| c.is_member(room));
        if let Some(message) = shared.get(frame, kind) {
            message.frames_for(&mut self.positions, in_room, out);
            return;
        }
        match frame.split_first() {
            Some((&RAW_TEXT, text)) => {
                out.push(WsFrame::Text(String::from_utf8_lossy(text).into_owned()));
            }
            Some((&RAW_BINARY, bytes)) => out.push(WsFrame::Binary(bytes.to_vec())),
            _ => {
                let mut packets = Vec::new();
                Outgoing::packets(frame, &mut self.positions, in_room, &mut packets);
                for packet in &packets {
                    out.extend(socketio::encode_ws(kind, packet));
                }
            }
        }
    }

    /// What the client is sent before its transport closes for `reason`:
    /// DISCONNECT for a kick (the client then does not reconnect), nothing
    /// otherwise (it reconnects).
    pub fn closing(&self, reason: &CloseReason, out: &mut Vec<WsFrame>) {
        if reason.code == CloseCode::Forbidden {
            out.extend(socketio::encode_ws(
                self.kind(),
                &Packet::main(Body::Disconnect),
            ));
        }
    }
}
