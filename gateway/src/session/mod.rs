//! One client connection, from the upgrade to the cleanup that always
//! reaches the module: admission ([`admission`], shared with the upgrade
//! path), the request loop (`connection.rs`), what each frame does
//! (`dispatch.rs`) under the namespace [`policy`], how failures are
//! answered ([`errors`]), and the registration in the hub and the module
//! (`registration.rs`). Pings, the idle timeout and the token's expiry are
//! the node's (`node/keepalive.rs`).
//!
//! Each connection has two tasks. The *reader* (the future [`start`]
//! returns) reads messages and answers requests one at a time (each is one
//! module call). The *writer* ([`crate::ws::writer`]) drains the
//! connection's bounded queue into the socket.

pub mod admission;
pub mod capacity;
mod connection;
pub mod dispatch;
pub mod errors;
pub mod policy;
pub mod preauth;
mod registration;
mod request_limit;

use std::sync::Arc;
use std::time::Instant;

use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use crate::app::App;
use crate::node::ConnShared;
use crate::ws::message::MessageReader;
use crate::ws::outbox::QueueLimits;
use crate::ws::socket::ClientSocket;
use crate::ws::{writer, CloseReason, Outlet};
pub use admission::{Admission, Admitted};
use broker::protocol::CloseCode;
use capacity::ConnPlace;
pub(crate) use connection::Connection;
pub(crate) use dispatch::Joiner;
pub(crate) use registration::Registration;

/// What a connection keeps for its whole life, in one allocation: the
/// task that serves it then holds a pointer, not the state of every step.
struct Session {
    frames: MessageReader,
    conn: Connection,
    outlet: Outlet,
    writer_task: tokio::task::JoinHandle<()>,
    /// Held until the socket is closed (both halves dropped).
    place: ConnPlace,
}

/// Takes over one upgraded WebSocket: sets the connection up (its writer
/// task included) and returns the future that serves it until it closes
/// (spawn it as the connection's task); `place`, its place in the node's
/// connection cap, is freed once the socket is closed. `None` when the
/// socket could not be taken over.
pub fn start(
    app: Arc<App>,
    ws: WebSocket<TokioIo<Upgraded>>,
    ip: String,
    admission: Admission,
    place: ConnPlace,
) -> Option<impl std::future::Future<Output = ()> + Send> {
    // The bare socket, split into owned halves; hyper's buffers are freed.
    let socket = match ClientSocket::from_upgraded(ws.into_inner().into_inner()) {
        Ok(socket) => socket,
        Err(err) => {
            tracing::warn!(error = %err, "cannot take over the upgraded connection");
            admission::release(&app, &admission, &ip);
            return None;
        }
    };
    let (read, write) = socket.into_split();
    // Frames are read by `ws::reader` (small buffer, strict checks) and
    // written by `ws::writer` (one buffer per batch, none while idle).
    let (outlet, queue) = Outlet::new(QueueLimits {
        frames: app.config.limits.send_queue,
        bytes: app.config.limits.send_queue_bytes,
    });
    let frames = MessageReader::new(read, outlet.clone(), app.config.limits.max_frame_bytes);
    let writer_task = tokio::spawn(writer::run(write, queue));
    let session = Box::new(Session {
        frames,
        conn: Connection::new(app, outlet.clone(), ip),
        outlet,
        writer_task,
        place,
    });
    Some(live(session, admission))
}

/// Logs the end of a connection opened at `started`: how long it lived and
/// why it closed (`Abnormal` / "gone" when no close was requested).
pub(crate) fn log_closed(app: &App, shared: &ConnShared, started: Instant, what: &str) {
    let reason = shared.outlet.close_reason().unwrap_or(CloseReason {
        code: CloseCode::Abnormal,
        reason: "gone".into(),
    });
    tracing::info!(
        conn = %shared.id,
        user = %shared.user,
        node = %app.node.id,
        ip = %shared.ip,
        duration_ms = started.elapsed().as_millis() as u64,
        code = reason.code.code(),
        reason = %reason.reason,
        "{what}"
    );
}

/// Authenticates (when the token did not come with the upgrade), serves
/// the connection, and unregisters it.
async fn live(mut session: Box<Session>, admission: Admission) {
    let Session {
        frames,
        conn,
        outlet,
        ..
    } = &mut *session;
    let app = conn.app.clone();
    let admitted = match admission {
        Admission::Authed(admitted) => Some(admitted),
        // Boxed: the connection's future then keeps only what is live
        // across the request loop, not the state of the authentication.
        Admission::AwaitAuth(slot) => {
            let admitted = Box::pin(conn.await_auth(frames)).await;
            drop(slot);
            admitted
        }
    };
    if let Some(Admitted {
        conn: id,
        claims,
        busy,
    }) = admitted
    {
        let shared = ConnShared::new(
            id,
            Arc::from(claims.sub.as_str()),
            conn.ip.clone(),
            outlet.clone(),
            claims.exp,
        );
        let registration = Registration::new(app.clone(), shared.clone());
        drop(busy);
        if app.shutting_down() {
            // Admitted while the node drained: the 1012 sweep may have run
            // before this connection was in the hub.
            shared.close(CloseCode::Restart, "server restarting");
        }
        let started = Instant::now();
        tracing::info!(conn = %shared.id, user = %shared.user, node = %app.node.id, ip = %shared.ip, "connection open");
        conn.serve(frames, &shared, claims).await;
        log_closed(&app, &shared, started, "connection closed");
        drop(registration);
    }
    // The reader's ends go first (as the writer may be waiting for them).
    let Session {
        frames,
        conn,
        outlet,
        writer_task,
        place,
    } = *session;
    outlet.finish();
    drop((frames, conn, outlet));
    let _ = writer_task.await;
    // Both halves of the socket are gone: the descriptor is closed.
    drop(place);
}
