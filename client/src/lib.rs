//! An async Rust client for the broker gateway's WebSocket protocol v1
//! (`docs/PROTOCOL.md`), in the spirit of socket.io-client:
//!
//! ```no_run
//! # async fn demo() -> Result<(), broker_client::Error> {
//! use broker_client::{Client, Options, RoomEvent};
//!
//! let client = Client::connect("ws://127.0.0.1:8080/ws", Options::token("eyJ...")).await?;
//! let mut room = client.join("chat:lobby").await?;
//! client.publish("chat:lobby", "message", &serde_json::json!({"text": "hi"})).await?;
//! while let Some(event) = room.next().await {
//!     if let RoomEvent::Msg(msg) = event {
//!         println!("{} #{}: {}", msg.room, msg.seq, msg.data);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! One background task owns the socket. It matches answers to requests by
//! `id`, routes `msg` and `presence` frames to the [`Subscription`] of their
//! room, reconnects with jittered exponential backoff ([`Backoff`]) when the
//! connection drops, and then joins every subscribed room again with
//! `since` = the last `{seq, epoch}` it delivered, so that messages published
//! in between are replayed; when the server cannot replay them all, the
//! subscription gets [`RoomEvent::RecoveryFailed`]; a `missed` frame (the
//! gateway's own Redis link dropped and history no longer held some
//! messages) becomes [`RoomEvent::Missed`] and moves the room's position
//! past them. A message whose `seq` is
//! not above the last one delivered is dropped, so a replay never delivers
//! twice. With [`Options::token_provider`] the token is refreshed when the
//! server says `expiring` and after a 4001 close.

mod backoff;
mod driver;
mod types;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use broker::protocol::ClientFrame;
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use backoff::Backoff;
pub use broker::protocol::{ErrorCode, Since};
pub use types::{Error, Event, History, JoinAck, Message, Presence, RoomEvent, Session};

use driver::{Command, Driver, RoomLink};

/// A future resolving to a fresh token, from a [`TokenProvider`].
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Gets a fresh JWT: called at each (re)connect when the last token was
/// refused or is about to expire, and when the server sends `expiring`.
pub type TokenProvider = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// How the client authenticates and behaves. `Options::token(t)` or
/// `Options::token_provider(f)` for the usual cases; every field has a
/// default.
#[derive(Clone)]
pub struct Options {
    /// A fixed token (sent as `Authorization: Bearer`), unless a provider is
    /// set.
    pub token: Option<String>,
    /// Where fresh tokens come from; takes precedence over `token`.
    pub token_provider: Option<TokenProvider>,
    /// Extra HTTP headers of the upgrade request (e.g. `Origin`).
    pub headers: Vec<(String, String)>,
    /// How long a request waits for its `ack` or `err`, including time spent
    /// waiting for a reconnect. Default 10 s.
    pub request_timeout: Duration,
    /// How long the WebSocket handshake and the `welcome` may take. Default 10 s.
    pub connect_timeout: Duration,
    /// Reconnect when the connection drops. Default true.
    pub reconnect: bool,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// Events a [`Subscription`] buffers before it drops new ones (counted in
    /// [`Subscription::dropped`]). Default 4096.
    pub subscription_buffer: usize,
    /// Events an [`Client::events`] receiver buffers before it lags. Default 256.
    pub event_buffer: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            token: None,
            token_provider: None,
            headers: Vec::new(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reconnect: true,
            backoff: Backoff::default(),
            subscription_buffer: 4096,
            event_buffer: 256,
        }
    }
}

impl Options {
    /// Authenticate with this token on every connection.
    pub fn token(token: impl Into<String>) -> Options {
        Options {
            token: Some(token.into()),
            ..Options::default()
        }
    }

    /// Authenticate with tokens from `provider` (an async closure), which is
    /// called again to refresh them.
    pub fn token_provider<F, Fut>(provider: F) -> Options
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        Options {
            token_provider: Some(Arc::new(move || Box::pin(provider()) as TokenFuture)),
            ..Options::default()
        }
    }

    /// Adds an HTTP header to the upgrade request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Options {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A connection to a gateway that survives reconnects. Cheap to clone; the
/// connection closes when the last clone and the last [`Subscription`] are
/// dropped, or on [`Client::close`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    session: watch::Receiver<Option<Session>>,
    request_timeout: Duration,
    subscription_buffer: usize,
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws`) and waits for the `welcome`.
    /// The first connection's failure is returned; later ones are retried in
    /// the background.
    pub async fn connect(url: &str, options: Options) -> Result<Client, Error> {
        let (events, _) = broadcast::channel(options.event_buffer.max(1));
        let (commands, commands_rx) = mpsc::channel(1024);
        let (session_tx, session) = watch::channel(None);
        let shared = Arc::new(Shared {
            commands,
            events: events.clone(),
            session,
            request_timeout: options.request_timeout,
            subscription_buffer: options.subscription_buffer.max(1),
        });
        let mut driver = Driver::new(url.to_owned(), options, commands_rx, events, session_tx);
        let ws = driver.open().await?;
        tokio::spawn(driver.run(ws));
        Ok(Client { shared })
    }

    /// The current connection's `welcome`, or `None` while disconnected.
    pub fn session(&self) -> Option<Session> {
        self.shared.session.borrow().clone()
    }

    /// Waits until connected (at most `timeout`) and returns the session.
    pub async fn connected(&self, timeout: Duration) -> Result<Session, Error> {
        let mut session = self.shared.session.clone();
        let wait = async move {
            let current = session.wait_for(|s| s.is_some()).await;
            current.map(|s| s.clone()).ok().flatten()
        };
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(found) => found.ok_or(Error::Closed),
        }
    }

    /// Connection events ([`Event`]), and messages that belong to no
    /// subscription: the personal room `user:<sub>` and broadcasts.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Joins `room`; its messages and presence events arrive on the returned
    /// [`Subscription`].
    pub async fn join(&self, room: &str) -> Result<Subscription, Error> {
        self.join_from(room, None).await
    }

    /// Joins `room` resuming after `since` (e.g. a position kept from an
    /// earlier session, [`Subscription::position`]): missed messages come
    /// first. Whether all could be replayed is in [`Subscription::join_ack`].
    pub async fn join_from(&self, room: &str, since: Option<Since>) -> Result<Subscription, Error> {
        let (sink, rx) = mpsc::channel(self.shared.subscription_buffer);
        let link = RoomLink {
            sink,
            dropped: Arc::new(AtomicU64::new(0)),
            position: Arc::new(Mutex::new(since)),
            held: None,
        };
        let (dropped, position) = (link.dropped.clone(), link.position.clone());
        let (reply, answer) = oneshot::channel();
        self.command(Command::Join {
            room: room.to_owned(),
            link,
            reply,
        })
        .await?;
        let ack = self.answer(answer).await?;
        Ok(Subscription {
            room: room.to_owned(),
            rx,
            client: self.clone(),
            dropped,
            position,
            ack,
            left: false,
        })
    }

    /// Publishes `data` (any serde value, sent as MessagePack) to `room` as
    /// event `ev`; resolves to the message's sequence number.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        room: &str,
        ev: &str,
        data: &T,
    ) -> Result<u64, Error> {
        self.publish_raw(room, ev, encode(data)?, false).await
    }

    /// Like [`Client::publish`], but this connection does not get the message.
    pub async fn publish_others<T: Serialize + ?Sized>(
        &self,
        room: &str,
        ev: &str,
        data: &T,
    ) -> Result<u64, Error> {
        self.publish_raw(room, ev, encode(data)?, true).await
    }

    /// Publishes `data`, which must be one MessagePack value already encoded.
    pub async fn publish_raw(
        &self,
        room: &str,
        ev: &str,
        data: Vec<u8>,
        others: bool,
    ) -> Result<u64, Error> {
        let ack = self
            .request(ClientFrame::Pub {
                id: 0,
                room: room.to_owned(),
                ev: ev.to_owned(),
                data,
                others,
                volatile: false,
            })
            .await?;
        types::field_u64(&ack, "seq")
    }

    /// Publishes an ephemeral message (`volatile`: typing indicators,
    /// cursors): only the room's current members get it, with `seq` 0; it
    /// is not kept in history, and members that lag behind skip it.
    pub async fn publish_volatile<T: Serialize + ?Sized>(
        &self,
        room: &str,
        ev: &str,
        data: &T,
    ) -> Result<(), Error> {
        self.request(ClientFrame::Pub {
            id: 0,
            room: room.to_owned(),
            ev: ev.to_owned(),
            data: encode(data)?,
            others: false,
            volatile: true,
        })
        .await?;
        Ok(())
    }

    /// Asks the backends (`rpc`): `method` with `data` (any serde value,
    /// sent as MessagePack); resolves to the backend's answer. A backend's
    /// error is [`Error::Rpc`]; no answer within the gateway's
    /// `rpc.timeout_ms` is [`Error::Server`] with code `timeout`.
    pub async fn rpc<T: Serialize + ?Sized>(
        &self,
        method: &str,
        data: &T,
    ) -> Result<serde_json::Value, Error> {
        let ack = self
            .request(ClientFrame::Rpc {
                id: 0,
                method: method.to_owned(),
                data: encode(data)?,
            })
            .await?;
        ack.get("data")
            .cloned()
            .ok_or_else(|| Error::Protocol(format!("rpc ack without data: {ack}")))
    }

    /// Who is in `room` (when its namespace allows presence requests):
    /// every user, read page by page when the room is big.
    pub async fn presence(&self, room: &str) -> Result<Presence, Error> {
        let mut all = self.presence_page(room, None).await?;
        while let Some(after) = all.next.take() {
            let mut page = self.presence_page(room, Some(after)).await?;
            all.users.append(&mut page.users);
            all.next = page.next;
        }
        Ok(all)
    }

    /// One page of `room`'s users: the first, or those after `after` (the
    /// `next` of the page before).
    pub async fn presence_page(
        &self,
        room: &str,
        after: Option<String>,
    ) -> Result<Presence, Error> {
        let ack = self
            .request(ClientFrame::Presence {
                id: 0,
                room: room.to_owned(),
                after,
            })
            .await?;
        Presence::from_ack(&ack)
    }

    /// The retained messages of `room` after `since`, at most `limit`.
    pub async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: Option<u32>,
    ) -> Result<History, Error> {
        let ack = self
            .request(ClientFrame::History {
                id: 0,
                room: room.to_owned(),
                since,
                limit,
            })
            .await?;
        History::from_ack(&ack)
    }

    /// An application-level round trip; resolves to how long it took.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        self.request(ClientFrame::Ping { id: 0 }).await?;
        Ok(started.elapsed())
    }

    /// Closes the connection (1000) and stops reconnecting. Requests in
    /// flight fail with [`Error::Closed`].
    pub async fn close(&self) {
        let _ = self.shared.commands.send(Command::Close).await;
        let mut session = self.shared.session.clone();
        // The driver drops its end of the session channel when it is done.
        let _ = tokio::time::timeout(Duration::from_secs(5), session.wait_for(|_| false)).await;
    }

    /// Sends a request frame (its `id` is set by the driver) and waits for
    /// the `ack`'s data.
    async fn request(&self, frame: ClientFrame) -> Result<serde_json::Value, Error> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::Request { frame, reply }).await?;
        self.answer(answer).await
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        self.shared
            .commands
            .send(command)
            .await
            .map_err(|_| Error::Closed)
    }

    async fn answer<T>(&self, answer: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        let timeout = self.shared.request_timeout;
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(result)) => result,
        }
    }
}

/// A joined room: a stream of its [`RoomEvent`]s. It stays joined across
/// reconnects; [`Subscription::leave`] (or dropping it) leaves the room.
pub struct Subscription {
    room: String,
    rx: mpsc::Receiver<RoomEvent>,
    client: Client,
    dropped: Arc<AtomicU64>,
    position: Arc<Mutex<Option<Since>>>,
    ack: JoinAck,
    left: bool,
}

impl Subscription {
    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The answer to the first join: the room's `seq` and `epoch` then, and
    /// whether a `since` given to [`Client::join_from`] was fully recovered.
    pub fn join_ack(&self) -> &JoinAck {
        &self.ack
    }

    /// The next event, or `None` once the client gave up or was closed.
    pub async fn next(&mut self) -> Option<RoomEvent> {
        self.rx.recv().await
    }

    /// The next message, skipping presence and recovery events.
    pub async fn next_msg(&mut self) -> Option<Message> {
        loop {
            if let RoomEvent::Msg(msg) = self.rx.recv().await? {
                return Some(msg);
            }
        }
    }

    /// The next event if one is already waiting.
    pub fn try_next(&mut self) -> Option<RoomEvent> {
        self.rx.try_recv().ok()
    }

    /// The last `{seq, epoch}` delivered (or acked at join): where a later
    /// [`Client::join_from`] can resume.
    pub fn position(&self) -> Option<Since> {
        self.position.lock().map(|p| p.clone()).unwrap_or(None)
    }

    /// Events dropped because this subscription's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Leaves the room and waits for the server's `ack`.
    pub async fn leave(mut self) -> Result<(), Error> {
        self.left = true;
        let (reply, answer) = oneshot::channel();
        self.client
            .command(Command::Leave {
                room: self.room.clone(),
                reply: Some(reply),
            })
            .await?;
        self.client.answer(answer).await
    }
}

impl Stream for Subscription {
    type Item = RoomEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RoomEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    /// Leaves the room without waiting (best effort: skipped when the
    /// client's command queue is full).
    fn drop(&mut self) {
        if !self.left {
            let _ = self.client.shared.commands.try_send(Command::Leave {
                room: std::mem::take(&mut self.room),
                reply: None,
            });
        }
    }
}

fn encode<T: Serialize + ?Sized>(data: &T) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec_named(data).map_err(|e| Error::Encode(e.to_string()))
}
