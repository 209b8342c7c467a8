//! The background task that owns the WebSocket: sends requests with fresh
//! ids and matches their answers, routes room events to subscriptions with
//! deduplication by `seq`, reconnects with backoff and rejoins every room
//! with `since`, and refreshes the token.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::protocol::{self, ClientFrame, CloseCode, ErrorCode, ServerFrame, Since};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::types::{Error, Event, JoinAck, Message, RoomEvent, Session};
use crate::Options;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What the [`crate::Client`] handles ask of the driver.
pub(crate) enum Command {
    /// Send `frame` (its id is replaced) and answer with the `ack`'s data.
    Request {
        frame: ClientFrame,
        reply: Reply<Value>,
    },
    /// Subscribe: route the room's events to `link`, then join.
    Join {
        room: String,
        link: RoomLink,
        reply: Reply<JoinAck>,
    },
    /// Unsubscribe and leave (reply `None`: nobody waits).
    Leave {
        room: String,
        reply: Option<Reply<()>>,
    },
    /// Close with 1000 and stop.
    Close,
}

/// The driver's end of a [`crate::Subscription`].
pub(crate) struct RoomLink {
    pub sink: mpsc::Sender<RoomEvent>,
    pub dropped: Arc<AtomicU64>,
    /// Last `{seq, epoch}` delivered: the `since` of the next join.
    pub position: Arc<Mutex<Option<Since>>>,
    /// Replayed messages (and `missed` events) held back while a join with
    /// `since` waits for its ack, so that a recovery failure is told before
    /// them.
    pub held: Option<Vec<RoomEvent>>,
}

impl RoomLink {
    fn position(&self) -> Option<Since> {
        self.position.lock().map(|p| p.clone()).unwrap_or(None)
    }

    /// Moves the position to `{seq, epoch}` unless it is there or past it
    /// already (same epoch, higher seq).
    fn advance_position(&self, seq: u64, epoch: &str) {
        let behind = match self.position() {
            None => true,
            Some(p) => p.epoch != epoch || p.seq < seq,
        };
        if behind {
            self.set_position(seq, epoch);
        }
    }

    fn set_position(&self, seq: u64, epoch: &str) {
        if let Ok(mut p) = self.position.lock() {
            *p = Some(Since {
                seq,
                epoch: epoch.to_owned(),
            });
        }
    }

    /// Hands an event to the subscription without ever blocking the driver.
    fn deliver(&self, event: RoomEvent) {
        if self.sink.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A request in flight, by id.
enum Pending {
    Request(Reply<Value>),
    /// A join asked for by the user (`reply`) or made again after a
    /// reconnect (`None`); `resumed` when it carried a `since`.
    Join {
        room: String,
        reply: Option<Reply<JoinAck>>,
        resumed: bool,
    },
    Leave(Option<Reply<()>>),
    Refresh,
}

impl Pending {
    /// Whether whoever waited for it is gone (timed out, dropped).
    fn abandoned(&self) -> bool {
        match self {
            Pending::Request(r) => r.is_closed(),
            Pending::Join { reply: Some(r), .. } => r.is_closed(),
            Pending::Leave(Some(r)) => r.is_closed(),
            _ => false,
        }
    }

    fn fail(self, error: Error) {
        match self {
            Pending::Request(r) => drop(r.send(Err(error))),
            Pending::Join { reply: Some(r), .. } => drop(r.send(Err(error))),
            Pending::Leave(Some(r)) => drop(r.send(Err(error))),
            _ => {}
        }
    }
}

/// How a connection ended.
enum Ended {
    /// The server or the network closed it.
    Dropped { code: u16, reason: String },
    /// The user closed the client, or every handle is gone.
    ByUser,
}

pub(crate) struct Driver {
    url: String,
    options: Options,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    session: watch::Sender<Option<Session>>,
    /// Fresh tokens from provider calls running beside the loop.
    tokens_tx: mpsc::Sender<Result<String, String>>,
    tokens_rx: mpsc::Receiver<Result<String, String>>,
    token: Option<String>,
    /// The token was refused (4001) or expires soon: get a new one first.
    token_stale: bool,
    rooms: HashMap<String, RoomLink>,
    pending: HashMap<i64, Pending>,
    /// Commands that came while disconnected, sent after the next welcome.
    queued: VecDeque<Command>,
    next_id: i64,
    ping_ms: u64,
}

impl Driver {
    pub(crate) fn new(
        url: String,
        options: Options,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<Event>,
        session: watch::Sender<Option<Session>>,
    ) -> Driver {
        let (tokens_tx, tokens_rx) = mpsc::channel(4);
        let token = options.token.clone();
        Driver {
            url,
            token_stale: options.token_provider.is_some(),
            options,
            commands,
            events,
            session,
            tokens_tx,
            tokens_rx,
            token,
            rooms: HashMap::new(),
            pending: HashMap::new(),
            queued: VecDeque::new(),
            next_id: 0,
            ping_ms: 25_000,
        }
    }

    /// Opens a connection and reads its `welcome`.
    pub(crate) async fn open(&mut self) -> Result<Ws, Error> {
        if self.token_stale {
            if let Some(provider) = &self.options.token_provider {
                self.token = Some(provider().await.map_err(Error::Token)?);
                self.token_stale = false;
            }
        }
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Connect(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in &self.options.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::Connect(format!("header {name}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| Error::Connect(format!("header value: {e}")))?;
            headers.insert(name, value);
        }
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Token("the token is not a valid header value".into()))?;
            headers.insert("authorization", value);
        }
        let timeout = self.options.connect_timeout;
        let opened = tokio::time::timeout(timeout, async {
            let (mut ws, _) =
                tokio_tungstenite::connect_async(request)
                    .await
                    .map_err(|e| match e {
                        tungstenite::Error::Http(resp) => Error::Refused(resp.status().as_u16()),
                        e => Error::Connect(e.to_string()),
                    })?;
            loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Binary(bytes))) => {
                        match protocol::decode_server_frame(&bytes) {
                            Ok(ServerFrame::Welcome {
                                conn,
                                user,
                                node,
                                ping_ms,
                                exp,
                            }) => {
                                let session = Session {
                                    conn,
                                    user,
                                    node,
                                    exp,
                                };
                                return Ok((ws, session, ping_ms));
                            }
                            Ok(other) => {
                                return Err(Error::Protocol(format!(
                                    "expected welcome, got {other:?}"
                                )))
                            }
                            Err(e) => return Err(Error::Protocol(e.to_string())),
                        }
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        let (code, reason) = close_parts(frame);
                        return Err(Error::CloseCode { code, reason });
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(Error::Connect(e.to_string())),
                    None => return Err(Error::Connect("closed before the welcome".into())),
                }
            }
        })
        .await;
        let (ws, session, ping_ms) = match opened {
            Err(_) => return Err(Error::Connect(format!("no welcome within {timeout:?}"))),
            Ok(result) => result?,
        };
        self.ping_ms = ping_ms.max(1000);
        let _ = self.events.send(Event::Connected(session.clone()));
        self.session.send_replace(Some(session));
        Ok(ws)
    }

    /// Serves connections until the client is closed or gives up.
    pub(crate) async fn run(mut self, mut ws: Ws) {
        let reason = loop {
            let ended = self.serve(&mut ws).await;
            self.session.send_replace(None);
            for (_, pending) in self.pending.drain() {
                pending.fail(Error::Disconnected);
            }
            let (code, reason) = match ended {
                Ended::ByUser => {
                    let _ = ws.close(None).await;
                    break "closed by the client".to_owned();
                }
                Ended::Dropped { code, reason } => (code, reason),
            };
            let _ = self.events.send(Event::Disconnected {
                code,
                reason: reason.clone(),
            });
            if let Some(why) = self.gives_up(code) {
                break why;
            }
            match self.reconnect(code).await {
                Ok(next) => ws = next,
                Err(why) => break why,
            }
        };
        for (_, pending) in self.pending.drain() {
            pending.fail(Error::Closed);
        }
        for command in self.queued.drain(..) {
            fail_command(command, Error::Closed);
        }
        let _ = self.events.send(Event::Closed { reason });
        // Dropping `self` closes the subscriptions' channels and the session.
    }

    /// Why not to reconnect after close `code`, if so.
    fn gives_up(&mut self, code: u16) -> Option<String> {
        if code == CloseCode::Forbidden.code() {
            return Some("forbidden (4003)".into());
        }
        if code == CloseCode::Token.code() {
            if self.options.token_provider.is_none() {
                return Some("token refused or expired (4001)".into());
            }
            self.token_stale = true;
        }
        if !self.options.reconnect {
            return Some(format!("disconnected ({code}) and reconnect is off"));
        }
        None
    }

    /// Tries again until connected, or until closed by the user or refused
    /// for good (`Err(why)`), queueing the commands that come meanwhile.
    async fn reconnect(&mut self, last_code: u16) -> Result<Ws, String> {
        let mut attempt = 0u32;
        // A restarting node (1012) or a first refused token: come back soon.
        let mut fast =
            last_code == CloseCode::Restart.code() || last_code == CloseCode::Token.code();
        loop {
            attempt += 1;
            let delay = self.options.backoff.delay(if fast { 1 } else { attempt });
            fast = false;
            let _ = self.events.send(Event::Reconnecting { attempt, delay });
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    command = self.commands.recv() => match command {
                        None | Some(Command::Close) => return Err("closed by the client".into()),
                        Some(command) => self.queue_while_down(command),
                    },
                }
            }
            match self.open().await {
                Ok(mut ws) => {
                    if self.resume(&mut ws).await.is_ok() {
                        return Ok(ws);
                    }
                }
                Err(Error::CloseCode { code, .. }) if code == CloseCode::Forbidden.code() => {
                    return Err("forbidden (4003)".into())
                }
                Err(Error::CloseCode { code, .. }) | Err(Error::Refused(code))
                    if code == CloseCode::Token.code() || code == 401 =>
                {
                    if self.options.token_provider.is_none() {
                        return Err(format!("token refused ({code})"));
                    }
                    self.token_stale = true;
                }
                Err(e) => tracing::debug!(error = %e, attempt, "reconnect failed"),
            }
        }
    }

    /// While disconnected: a leave takes effect at once (the server forgot
    /// the room with the connection); everything else waits.
    fn queue_while_down(&mut self, command: Command) {
        match command {
            Command::Leave { room, reply } => {
                self.rooms.remove(&room);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            command => self.queued.push_back(command),
        }
    }

    /// After a reconnect: join every room again from its position, then send
    /// what was queued.
    async fn resume(&mut self, ws: &mut Ws) -> Result<(), tungstenite::Error> {
        let rooms: Vec<(String, Option<Since>)> = self
            .rooms
            .iter()
            .map(|(room, link)| (room.clone(), link.position()))
            .collect();
        let sent = self.resend(ws, rooms).await;
        if sent.is_err() {
            for (_, pending) in self.pending.drain() {
                pending.fail(Error::Disconnected);
            }
        }
        sent
    }

    async fn resend(
        &mut self,
        ws: &mut Ws,
        rooms: Vec<(String, Option<Since>)>,
    ) -> Result<(), tungstenite::Error> {
        for (room, since) in rooms {
            let id = self.id();
            let resumed = since.is_some();
            if let (true, Some(link)) = (resumed, self.rooms.get_mut(&room)) {
                link.held = Some(Vec::new());
            }
            let frame = ClientFrame::Join {
                id,
                room: room.clone(),
                since,
            };
            self.pending.insert(
                id,
                Pending::Join {
                    room,
                    reply: None,
                    resumed,
                },
            );
            send_frame(ws, &frame).await?;
        }
        while let Some(command) = self.queued.pop_front() {
            if self.handle(ws, command).await? {
                break;
            }
        }
        Ok(())
    }

    /// One connection's life.
    async fn serve(&mut self, ws: &mut Ws) -> Ended {
        let mut prune = tokio::time::interval(Duration::from_secs(1));
        // The server pings every `ping_ms`; silence for two of those (and
        // some slack) means the connection is dead without a FIN.
        let silence = Duration::from_millis(self.ping_ms * 2) + Duration::from_secs(5);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                incoming = ws.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        Some(Ok(WsMessage::Binary(bytes))) => {
                            self.on_frame(&bytes);
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            let (code, reason) = close_parts(frame);
                            return dropped(code, reason);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return dropped(1006, e.to_string()),
                        None => return dropped(1006, "connection lost".into()),
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ended::ByUser };
                    match self.handle(ws, command).await {
                        Ok(true) => return Ended::ByUser,
                        Ok(false) => {}
                        Err(e) => return dropped(1006, e.to_string()),
                    }
                }
                Some(token) = self.tokens_rx.recv() => match token {
                    Ok(token) => {
                        self.token = Some(token.clone());
                        let id = self.id();
                        self.pending.insert(id, Pending::Refresh);
                        if let Err(e) = send_frame(ws, &ClientFrame::Refresh { id, token }).await {
                            return dropped(1006, e.to_string());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "token refresh failed"),
                },
                _ = prune.tick() => {
                    if last_heard.elapsed() > silence {
                        return dropped(1006, format!("nothing heard for {silence:?}"));
                    }
                    self.pending.retain(|_, p| !p.abandoned());
                }
            }
        }
    }

    /// Carries out a command on a live connection; `Ok(true)` to close.
    async fn handle(&mut self, ws: &mut Ws, command: Command) -> Result<bool, tungstenite::Error> {
        match command {
            Command::Close => {
                ws.send(WsMessage::Close(Some(CloseFrame {
                    code: WsCloseCode::Normal,
                    reason: "".into(),
                })))
                .await?;
                Ok(true)
            }
            Command::Request { mut frame, reply } => {
                if reply.is_closed() {
                    return Ok(false);
                }
                let id = self.id();
                self.pending.insert(id, Pending::Request(reply));
                frame.set_id(id);
                send_frame(ws, &frame).await?;
                Ok(false)
            }
            Command::Join { room, link, reply } => {
                if self.rooms.contains_key(&room) {
                    let _ = reply.send(Err(Error::AlreadyJoined(room)));
                    return Ok(false);
                }
                let since = link.position();
                let mut link = link;
                if since.is_some() {
                    link.held = Some(Vec::new());
                }
                self.rooms.insert(room.clone(), link);
                let id = self.id();
                let frame = ClientFrame::Join {
                    id,
                    room: room.clone(),
                    since: since.clone(),
                };
                self.pending.insert(
                    id,
                    Pending::Join {
                        room,
                        reply: Some(reply),
                        resumed: since.is_some(),
                    },
                );
                send_frame(ws, &frame).await?;
                Ok(false)
            }
            Command::Leave { room, reply } => {
                if self.rooms.remove(&room).is_none() {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                    return Ok(false);
                }
                let id = self.id();
                self.pending.insert(id, Pending::Leave(reply));
                send_frame(ws, &ClientFrame::Leave { id, room }).await?;
                Ok(false)
            }
        }
    }

    /// One binary message from the server.
    fn on_frame(&mut self, bytes: &[u8]) {
        let frame = match protocol::decode_server_frame(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable frame from the server");
                return;
            }
        };
        match frame {
            ServerFrame::Msg { .. } => {
                if let Some(msg) = Message::from_frame(frame) {
                    self.on_msg(msg);
                }
            }
            ServerFrame::Presence { room, user, action } => {
                if let Some(link) = self.rooms.get(&room) {
                    link.deliver(RoomEvent::Presence { user, action });
                }
            }
            ServerFrame::Ack { id, data } => self.on_answer(id, Ok(data)),
            ServerFrame::Err {
                id: Some(id),
                code,
                msg,
                retry_ms,
                rpc_code,
            } => {
                let err = match rpc_code {
                    Some(rpc_code) if code == ErrorCode::RpcError.as_str() => Error::Rpc {
                        code: rpc_code,
                        msg,
                    },
                    _ => Error::Server {
                        code,
                        msg,
                        retry_ms,
                    },
                };
                self.on_answer(id, Err(err))
            }
            ServerFrame::Err {
                id: None,
                code,
                msg,
                ..
            } => {
                let _ = self.events.send(Event::Error { code, msg });
            }
            ServerFrame::Expiring { .. } => self.refresh_token(),
            ServerFrame::Missed {
                room,
                epoch,
                seq,
                count,
            } => self.on_missed(room, epoch, seq, count),
            ServerFrame::Joined { room, seq, epoch } => {
                let _ = self.events.send(Event::Joined { room, seq, epoch });
            }
            ServerFrame::Left { room } => {
                let _ = self.events.send(Event::Left { room });
            }
            ServerFrame::Welcome { .. } => {
                tracing::warn!("a second welcome on one connection");
            }
        }
    }

    /// Routes a `msg` to its subscription, dropping what was delivered before.
    fn on_msg(&mut self, msg: Message) {
        let Some(link) = self.rooms.get_mut(&msg.room) else {
            let _ = self.events.send(Event::Message(msg));
            return;
        };
        if msg.seq > 0 {
            if let Some(seen) = link.position() {
                if seen.epoch == msg.epoch && msg.seq <= seen.seq {
                    return;
                }
            }
            link.set_position(msg.seq, &msg.epoch);
        }
        match &mut link.held {
            Some(held) => held.push(RoomEvent::Msg(msg)),
            None => link.deliver(RoomEvent::Msg(msg)),
        }
    }

    /// A `missed` frame: messages of the room up to `seq` were lost for this
    /// connection. The position moves past them (a rejoin with `since`
    /// would not bring them back); the subscription and the events say so.
    fn on_missed(&mut self, room: String, epoch: String, seq: u64, count: Option<u64>) {
        if let Some(link) = self.rooms.get_mut(&room) {
            link.advance_position(seq, &epoch);
            let event = RoomEvent::Missed {
                epoch: epoch.clone(),
                seq,
                count,
            };
            match &mut link.held {
                Some(held) => held.push(event),
                None => link.deliver(event),
            }
        }
        let _ = self.events.send(Event::Missed {
            room,
            epoch,
            seq,
            count,
        });
    }

    fn on_answer(&mut self, id: i64, result: Result<Value, Error>) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending {
            Pending::Request(reply) => drop(reply.send(result)),
            Pending::Join {
                room,
                reply,
                resumed,
            } => {
                let ack = result.and_then(|data| JoinAck::from_ack(&data));
                match &ack {
                    Ok(ack) => {
                        if let Some(link) = self.rooms.get_mut(&room) {
                            link.advance_position(ack.seq, &ack.epoch);
                            if resumed && !ack.recovered {
                                link.deliver(RoomEvent::RecoveryFailed);
                                let _ = self
                                    .events
                                    .send(Event::RecoveryFailed { room: room.clone() });
                            }
                            for event in link.held.take().unwrap_or_default() {
                                link.deliver(event);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(room, error = %e, "join refused");
                        self.rooms.remove(&room);
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(ack);
                }
            }
            Pending::Leave(reply) => {
                if let Some(reply) = reply {
                    let _ = reply.send(result.map(drop));
                }
            }
            Pending::Refresh => match result {
                Ok(data) => {
                    let exp = data.get("exp").and_then(Value::as_u64).unwrap_or(0);
                    let _ = self.events.send(Event::Refreshed { exp });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refresh refused");
                    if let Error::Server { code, msg, .. } = e {
                        let _ = self.events.send(Event::Error { code, msg });
                    }
                }
            },
        }
    }

    /// Asks the provider for a new token beside the loop; it comes back on
    /// `tokens_rx` and goes out as a `refresh`.
    fn refresh_token(&mut self) {
        let Some(provider) = self.options.token_provider.clone() else {
            return;
        };
        let tokens = self.tokens_tx.clone();
        tokio::spawn(async move {
            let _ = tokens.send(provider().await).await;
        });
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

fn dropped(code: u16, reason: String) -> Ended {
    Ended::Dropped { code, reason }
}

fn close_parts(frame: Option<CloseFrame>) -> (u16, String) {
    frame.map_or((1005, String::new()), |f| {
        (u16::from(f.code), f.reason.to_string())
    })
}

async fn send_frame(ws: &mut Ws, frame: &ClientFrame) -> Result<(), tungstenite::Error> {
    ws.send(WsMessage::binary(protocol::encode_client_frame(frame)))
        .await
}

fn fail_command(command: Command, error: Error) {
    match command {
        Command::Request { reply, .. } => drop(reply.send(Err(error))),
        Command::Join { reply, .. } => drop(reply.send(Err(error))),
        Command::Leave {
            reply: Some(reply), ..
        } => drop(reply.send(Err(error))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver, its subscription's events, its client events and the
    /// subscription's position.
    type Harness = (
        Driver,
        mpsc::Receiver<RoomEvent>,
        broadcast::Receiver<Event>,
        Arc<Mutex<Option<Since>>>,
    );

    /// A driver with no socket and one subscription to `room` at
    /// `position`; the frames it is handed are what the server sent.
    fn driver_with(room: &str, position: Option<Since>) -> Harness {
        let (_commands_tx, commands) = mpsc::channel(1);
        let (events, events_rx) = broadcast::channel(16);
        let (session, _) = watch::channel(None);
        let mut driver = Driver::new(
            "ws://127.0.0.1:1/ws".into(),
            Options::token("t"),
            commands,
            events,
            session,
        );
        let (sink, rx) = mpsc::channel(16);
        let position = Arc::new(Mutex::new(position));
        driver.rooms.insert(
            room.to_owned(),
            RoomLink {
                sink,
                dropped: Arc::new(AtomicU64::new(0)),
                position: position.clone(),
                held: None,
            },
        );
        (driver, rx, events_rx, position)
    }

    fn msg(room: &str, seq: u64, epoch: &str) -> Vec<u8> {
        protocol::encode_msg_frame(room, "m", &[0xc0], seq, epoch, 1, None)
    }

    #[test]
    fn missed_is_told_in_order_and_moves_the_position() {
        let since = Since {
            seq: 3,
            epoch: "e1".into(),
        };
        let (mut driver, mut rx, mut events, position) = driver_with("feed:a", Some(since));
        driver.on_frame(&msg("feed:a", 9, "e1"));
        driver.on_frame(&protocol::encode_missed("feed:a", "e1", 9, Some(5)));
        driver.on_frame(&msg("feed:a", 10, "e1"));
        let seqs: Vec<RoomEvent> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(seqs.len(), 3, "{seqs:?}");
        assert!(matches!(&seqs[0], RoomEvent::Msg(m) if m.seq == 9));
        assert_eq!(
            seqs[1],
            RoomEvent::Missed {
                epoch: "e1".into(),
                seq: 9,
                count: Some(5)
            }
        );
        assert!(matches!(&seqs[2], RoomEvent::Msg(m) if m.seq == 10));
        assert_eq!(
            events.try_recv().ok(),
            Some(Event::Missed {
                room: "feed:a".into(),
                epoch: "e1".into(),
                seq: 9,
                count: Some(5)
            })
        );
        assert_eq!(
            position.lock().unwrap().clone(),
            Some(Since {
                seq: 10,
                epoch: "e1".into()
            })
        );
    }

    #[test]
    fn missed_of_a_new_epoch_moves_the_position_there() {
        let since = Since {
            seq: 40,
            epoch: "old".into(),
        };
        let (mut driver, mut rx, _events, position) = driver_with("feed:a", Some(since));
        driver.on_frame(&protocol::encode_missed("feed:a", "new", 2, None));
        assert_eq!(
            rx.try_recv().ok(),
            Some(RoomEvent::Missed {
                epoch: "new".into(),
                seq: 2,
                count: None
            })
        );
        assert_eq!(
            position.lock().unwrap().clone(),
            Some(Since {
                seq: 2,
                epoch: "new".into()
            })
        );
        // Messages of the new epoch after it are delivered, older ones not.
        driver.on_frame(&msg("feed:a", 2, "new"));
        driver.on_frame(&msg("feed:a", 3, "new"));
        assert!(matches!(rx.try_recv(), Ok(RoomEvent::Msg(m)) if m.seq == 3));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn missed_waits_behind_a_resuming_join_like_its_replay() {
        let since = Since {
            seq: 1,
            epoch: "e".into(),
        };
        let (mut driver, mut rx, _events, _) = driver_with("feed:a", Some(since));
        if let Some(link) = driver.rooms.get_mut("feed:a") {
            link.held = Some(Vec::new());
        }
        driver.pending.insert(
            7,
            Pending::Join {
                room: "feed:a".into(),
                reply: None,
                resumed: true,
            },
        );
        driver.on_frame(&protocol::encode_missed("feed:a", "e", 5, Some(4)));
        assert!(rx.try_recv().is_err(), "held until the ack");
        let ack = protocol::ack_join("feed:a", 5, "e", false);
        driver.on_frame(&protocol::encode_ack_raw(7, &ack));
        assert_eq!(rx.try_recv().ok(), Some(RoomEvent::RecoveryFailed));
        assert!(matches!(
            rx.try_recv(),
            Ok(RoomEvent::Missed { seq: 5, .. })
        ));
    }
}
