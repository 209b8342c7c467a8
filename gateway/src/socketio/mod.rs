//! The Socket.IO endpoint (`socketio.path`, `docs/SOCKETIO.md`):
//! unmodified `socket.io-client` 4.x apps on the same sessions, hub, module
//! calls and limits as `/ws`.
//!
//! - [`route`]: the HTTP requests of the path: handshakes, polling GETs and
//!   POSTs, WebSocket upgrades, answered with the reference server's
//!   errors.
//! - [`engine`]: one Engine.IO session and the [`engine::Encoder`] that
//!   transcodes its queued protocol v1 frames.
//! - [`websocket`] and [`polling`]: the two transports.
//! - [`session`]: the Socket.IO session task: CONNECT, admission, recovery,
//!   EVENTs to dispatch.
//!
//! The pure part (packets, parsers, the v1 bridge) is `broker::socketio`.

pub mod engine;
pub mod polling;
mod route;
pub mod session;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use route::route;

use crate::app::App;
use engine::{EngineConn, Transport};

/// How long a closed polling session stays findable, so that its client's
/// next GET still gets the close (and a kick's DISCONNECT).
const CLOSED_POLLING_KEPT: Duration = Duration::from_secs(10);

/// The node's polling sessions by id (the ones a later request must find:
/// GETs, POSTs, the upgrade). Sessions that start on WebSocket are not here.
#[derive(Default)]
pub struct Sessions {
    by_sid: Mutex<HashMap<String, Arc<EngineConn>>>,
    /// Room messages transcoded once for all the node's Socket.IO
    /// connections.
    pub messages: engine::SharedMessages,
}

impl Sessions {
    /// The session `sid`, if it is polling here.
    pub fn get(&self, sid: &str) -> Option<Arc<EngineConn>> {
        self.by_sid.lock().ok()?.get(sid).cloned()
    }

    fn insert(&self, engine: Arc<EngineConn>) {
        if let Ok(mut map) = self.by_sid.lock() {
            map.insert(engine.sid.clone(), engine);
        }
    }

    fn remove(&self, sid: &str) {
        if let Ok(mut map) = self.by_sid.lock() {
            map.remove(sid);
        }
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.by_sid.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `path` is the endpoint's (`socketio.path`, with or without its
/// trailing slash).
pub fn serves(app: &App, path: &str) -> bool {
    let mine = &app.config.socketio.path;
    path == mine || Some(path) == mine.strip_suffix('/')
}

/// Forgets a session whose task ended: at once on WebSocket; a polling one
/// after [`CLOSED_POLLING_KEPT`], so its client's next GET is answered
/// with the close rather than an unknown session.
pub(crate) fn forget(app: &Arc<App>, engine: &Arc<EngineConn>) {
    if engine.transport() == Transport::WebSocket {
        app.socketio.remove(&engine.sid);
        return;
    }
    let app = app.clone();
    let sid = engine.sid.clone();
    tokio::spawn(async move {
        tokio::time::sleep(CLOSED_POLLING_KEPT).await;
        app.socketio.remove(&sid);
    });
}
