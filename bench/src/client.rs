//! Protocol v1 client connections, as many as the scenarios need.
//!
//! [`open`] makes one authenticated connection: TCP from a chosen loopback
//! source address, the WebSocket upgrade with the token in the `token` query
//! parameter (fastwebsockets' client handshake over hyper), then the
//! `welcome` frame, which says the gateway registered the connection.
//!
//! [`Conn::start`] splits an open connection into a reader task and a
//! shared writer. The reader answers pings, matches `ack`/`err` to their
//! requests by `id`, detects duplicate deliveries per room (`seq` not above
//! the last one seen in the same `epoch`) and hands every `msg` to a
//! [`Sink`], the scenario's accounting.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use broker::protocol::{encode_client_frame, ClientFrame};
use bytes::Bytes;
use fastwebsockets::{
    handshake, Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

use crate::frame::{self, Incoming};

/// An upgraded client WebSocket.
pub type Ws = WebSocket<TokioIo<Upgraded>>;
type ReadHalf = WebSocketRead<tokio::io::ReadHalf<TokioIo<Upgraded>>>;
type WriteHalf = WebSocketWrite<tokio::io::WriteHalf<TokioIo<Upgraded>>>;

/// A gateway's WebSocket endpoint, resolved once.
#[derive(Clone, Debug)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `host:port` for the `Host` header.
    pub authority: String,
    /// Path of the endpoint, e.g. `/ws`.
    pub path: String,
}

impl Target {
    /// Parses and resolves `ws://host:port/path`.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/ws"),
        };
        let addr = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("resolving {authority}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| anyhow!("{authority}: no IPv4 address"))?;
        Ok(Target {
            addr,
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Loopback source addresses to spread connections over: one address has
/// about 28,000 ephemeral ports (`ip_local_port_range`), so N connections
/// to one gateway need N / 28,000 addresses or more. 127.0.0.0/8 is all
/// loopback on Linux, no set-up needed.
#[derive(Clone, Debug)]
pub struct Sources(Vec<Ipv4Addr>);

impl Sources {
    /// `count` addresses from 127.0.0.2 on when every target is on
    /// loopback, none (the kernel's choice) otherwise or when `count` is 0.
    /// `offset` shifts the range, so parallel processes (`--shard`) use
    /// different addresses.
    pub fn new(targets: &[Target], count: usize, offset: usize) -> Sources {
        if count == 0 || !targets.iter().all(|t| t.addr.ip().is_loopback()) {
            return Sources(Vec::new());
        }
        Sources(
            (0..count)
                .map(|i| {
                    let n = (2 + offset + i) as u32;
                    Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff))
                })
                .collect(),
        )
    }

    /// The source address of connection `i`.
    pub fn pick(&self, i: usize) -> Option<Ipv4Addr> {
        (!self.0.is_empty()).then(|| self.0[i % self.0.len()])
    }

    /// How many addresses are in use (0: the kernel's choice).
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Drives hyper's client connection tasks on tokio.
struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// Opens one authenticated connection and waits for its `welcome`.
///
/// # Errors
///
/// A short, stable description of what failed (`"HTTP 429"`,
/// `"connect: Connection refused (os error 111)"`, `"timeout"`...), so
/// failures can be counted by kind.
pub async fn open(
    target: &Target,
    source: Option<Ipv4Addr>,
    token: &str,
    timeout: Duration,
) -> Result<Ws, String> {
    open_with(target, source, token, None, timeout).await
}

/// [`open`] with the socket's receive buffer set to `recv_buffer` bytes
/// (`SO_RCVBUF`, before connecting), for clients that mean to fall behind
/// quickly.
///
/// # Errors
///
/// As [`open`].
pub async fn open_with(
    target: &Target,
    source: Option<Ipv4Addr>,
    token: &str,
    recv_buffer: Option<u32>,
    timeout: Duration,
) -> Result<Ws, String> {
    let attempt = async {
        let mut ws = upgrade_inner(target, source, Some(token), recv_buffer).await?;
        wait_welcome(&mut ws).await?;
        Ok(ws)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_owned()),
    }
}

/// The WebSocket upgrade alone, with the token in the query when there is
/// one, without waiting for any frame: a connection without a token is
/// left waiting for its `auth` frame (PROTOCOL.md §2).
///
/// # Errors
///
/// As [`open`].
pub async fn upgrade(
    target: &Target,
    source: Option<Ipv4Addr>,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Ws, String> {
    match tokio::time::timeout(timeout, upgrade_inner(target, source, token, None)).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_owned()),
    }
}

async fn upgrade_inner(
    target: &Target,
    source: Option<Ipv4Addr>,
    token: Option<&str>,
    recv_buffer: Option<u32>,
) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(size) = recv_buffer {
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(IpAddr::V4(ip), 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let uri = match token {
        Some(token) => {
            let sep = if target.path.contains('?') { '&' } else { '?' };
            format!("{}{sep}token={token}", target.path)
        }
        None => target.path.clone(),
    };
    let request = Request::builder()
        .method("GET")
        .uri(uri)
        .header(HOST, &target.authority)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", handshake::generate_key())
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let (ws, _) = handshake::client(&SpawnExecutor, request, stream)
        .await
        .map_err(|e| match e {
            WebSocketError::InvalidStatusCode(code) => format!("HTTP {code}"),
            other => format!("handshake: {other}"),
        })?;
    Ok(ws)
}

/// Reads frames until the `welcome`.
async fn wait_welcome(ws: &mut Ws) -> Result<(), String> {
    loop {
        let frame = ws
            .read_frame()
            .await
            .map_err(|e| format!("before welcome: {e}"))?;
        match frame.opcode {
            OpCode::Binary => {
                return match frame::parse(&frame.payload) {
                    Incoming::Welcome => Ok(()),
                    other => Err(format!("expected welcome, got {other:?}")),
                };
            }
            OpCode::Close => {
                return Err(format!(
                    "closed before welcome: {}",
                    close_code(&frame.payload)
                ))
            }
            _ => {}
        }
    }
}

/// `"4008 slow consumer"` from a close frame's payload.
pub fn close_code(payload: &[u8]) -> String {
    match payload {
        [a, b, reason @ ..] => format!(
            "{} {}",
            u16::from_be_bytes([*a, *b]),
            String::from_utf8_lossy(reason)
        )
        .trim_end()
        .to_owned(),
        _ => "no code".to_owned(),
    }
}

/// The scenario's accounting, called from every connection's reader task.
pub trait Sink: Send + Sync + 'static {
    /// A `msg` arrived; `dup` when its `seq` was not above the last one
    /// this connection saw in the room (same epoch).
    fn msg(&self, room: &str, data: &[u8], dup: bool);
    /// A publish was answered (`Ok`) or refused (`Err(code)`), `sent` is
    /// when it was written.
    fn published(&self, room: &str, sent: Instant, result: Result<(), &str>);
    /// The connection ended without our asking: the server's close code and
    /// reason, or the error.
    fn closed(&self, why: String);
    /// An `err` without a request, or a frame the tool cannot read.
    fn stray(&self, what: String);
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `ack`.
    Ack,
    /// `err` with this code.
    Err(String),
    /// The connection ended first.
    Closed,
}

enum Waiter {
    Request(oneshot::Sender<Reply>),
    Pub {
        room: Arc<str>,
        sent: Instant,
        /// A slot of the publisher's window, freed with the answer.
        _slot: Option<OwnedSemaphorePermit>,
    },
}

type Pending = Mutex<HashMap<i64, Waiter>>;

/// An open connection: a reader task and a writer shared by the tasks that
/// send requests.
pub struct Conn {
    writer: Arc<tokio::sync::Mutex<WriteHalf>>,
    pending: Arc<Pending>,
    next_id: AtomicI64,
    closing: Arc<AtomicBool>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Conn {
    /// Splits `ws` and starts its reader.
    pub fn start(ws: Ws, sink: Arc<dyn Sink>) -> Conn {
        let (reader, writer) = ws.split(tokio::io::split);
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let pending: Arc<Pending> = Arc::default();
        let closing = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(read_loop(
            reader,
            writer.clone(),
            pending.clone(),
            closing.clone(),
            sink,
        ));
        Conn {
            writer,
            pending,
            next_id: AtomicI64::new(1),
            closing,
            reader: Mutex::new(Some(task)),
        }
    }

    fn id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn send(&self, bytes: Vec<u8>) -> Result<(), WebSocketError> {
        let mut writer = self.writer.lock().await;
        writer
            .write_frame(Frame::binary(Payload::Owned(bytes)))
            .await
    }

    /// Sends a request built from its id and waits for the answer.
    pub async fn request(&self, build: impl FnOnce(i64) -> ClientFrame) -> Reply {
        let id = self.id();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(id, Waiter::Request(tx));
        if self.send(encode_client_frame(&build(id))).await.is_err() {
            self.pending.lock().expect("pending lock").remove(&id);
            return Reply::Closed;
        }
        rx.await.unwrap_or(Reply::Closed)
    }

    /// `join room`.
    pub async fn join(&self, room: &str) -> Reply {
        self.request(|id| ClientFrame::Join {
            id,
            room: room.to_owned(),
            since: None,
        })
        .await
    }

    /// `leave room`.
    pub async fn leave(&self, room: &str) -> Reply {
        self.request(|id| ClientFrame::Leave {
            id,
            room: room.to_owned(),
        })
        .await
    }

    /// Sends a `pub` without waiting: the answer goes to the sink's
    /// [`Sink::published`] and frees `slot`.
    ///
    /// # Errors
    ///
    /// The connection is closed.
    pub async fn publish(
        &self,
        room: &Arc<str>,
        data: Vec<u8>,
        others: bool,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), WebSocketError> {
        let id = self.id();
        let frame = encode_client_frame(&ClientFrame::Pub {
            volatile: false,
            id,
            room: room.to_string(),
            ev: "b".to_owned(),
            data,
            others,
        });
        self.pending.lock().expect("pending lock").insert(
            id,
            Waiter::Pub {
                room: room.clone(),
                sent: Instant::now(),
                _slot: slot,
            },
        );
        let result = self.send(frame).await;
        if result.is_err() {
            self.pending.lock().expect("pending lock").remove(&id);
        }
        result
    }

    /// Sends `bytes` as one binary message, whatever they hold (garbage
    /// included); any answer goes to the sink as a stray frame.
    ///
    /// # Errors
    ///
    /// The connection is closed.
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), WebSocketError> {
        self.send(bytes).await
    }

    /// True once the reader has stopped: the server closed the connection,
    /// it failed, or [`Conn::abort`] ran.
    pub fn ended(&self) -> bool {
        match self.reader.lock().expect("reader lock").as_ref() {
            Some(task) => task.is_finished(),
            None => true,
        }
    }

    /// Drops the connection without a close frame: stops the reader, so the
    /// socket closes when the last handle to the `Conn` goes.
    pub fn abort(&self) {
        self.closing.store(true, Ordering::Relaxed);
        if let Some(task) = self.reader.lock().expect("reader lock").take() {
            task.abort();
        }
    }

    /// Closes with 1000 and waits (briefly) for the server's close.
    pub async fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        {
            let mut writer = self.writer.lock().await;
            let _ = writer.write_frame(Frame::close(1000, b"bye")).await;
        }
        let task = self.reader.lock().expect("reader lock").take();
        if let Some(task) = task {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                // The reader is left to end with the process.
            }
        }
    }
}

async fn read_loop(
    mut reader: ReadHalf,
    writer: Arc<tokio::sync::Mutex<WriteHalf>>,
    pending: Arc<Pending>,
    closing: Arc<AtomicBool>,
    sink: Arc<dyn Sink>,
) {
    // Last (epoch, seq) seen per room: a room that empties starts again at
    // seq 1 with a new epoch.
    let mut seen: HashMap<Box<str>, (Box<str>, u64)> = HashMap::new();
    let why = loop {
        // Pongs (and the close reply) the reader owes go through the writer.
        let w = writer.clone();
        let mut send_fn = move |frame: Frame<'_>| {
            let w = w.clone();
            let (opcode, payload) = (frame.opcode, frame.payload.to_vec());
            async move {
                w.lock()
                    .await
                    .write_frame(Frame::new(true, opcode, None, Payload::Owned(payload)))
                    .await
            }
        };
        let frame = match reader.read_frame(&mut send_fn).await {
            Ok(frame) => frame,
            Err(err) => break format!("error: {err}"),
        };
        match frame.opcode {
            OpCode::Binary => match frame::parse(&frame.payload) {
                Incoming::Msg {
                    room,
                    epoch,
                    seq,
                    data,
                } => {
                    let dup = match seen.get_mut(room) {
                        Some((e, last)) if **e == *epoch => {
                            let dup = seq <= *last;
                            *last = (*last).max(seq);
                            dup
                        }
                        Some(slot) => {
                            *slot = (epoch.into(), seq);
                            false
                        }
                        None => {
                            seen.insert(room.into(), (epoch.into(), seq));
                            false
                        }
                    };
                    sink.msg(room, data, dup);
                }
                Incoming::Ack { id } => answer(&pending, &*sink, id, Ok(())),
                Incoming::Err {
                    id: Some(id), code, ..
                } => answer(&pending, &*sink, id, Err(&code)),
                Incoming::Err {
                    id: None,
                    code,
                    msg,
                } => sink.stray(format!("err {code}: {msg}")),
                Incoming::Welcome | Incoming::Other => {}
                Incoming::Invalid(reason) => sink.stray(format!("unreadable frame: {reason}")),
            },
            OpCode::Close => break close_code(&frame.payload),
            _ => {}
        }
    };
    let waiters: Vec<Waiter> = pending
        .lock()
        .expect("pending lock")
        .drain()
        .map(|(_, w)| w)
        .collect();
    for waiter in waiters {
        match waiter {
            Waiter::Request(tx) => {
                let _ = tx.send(Reply::Closed);
            }
            Waiter::Pub { room, sent, .. } => sink.published(&room, sent, Err("closed")),
        }
    }
    if !closing.load(Ordering::Relaxed) {
        sink.closed(why);
    }
}

fn answer(pending: &Pending, sink: &dyn Sink, id: i64, result: Result<(), &str>) {
    let waiter = pending.lock().expect("pending lock").remove(&id);
    match waiter {
        Some(Waiter::Request(tx)) => {
            let _ = tx.send(match result {
                Ok(()) => Reply::Ack,
                Err(code) => Reply::Err(code.to_owned()),
            });
        }
        Some(Waiter::Pub { room, sent, .. }) => sink.published(&room, sent, result),
        None => sink.stray(format!("answer to unknown request {id}")),
    }
}

/// Checks a `--shard i/n` value.
///
/// # Errors
///
/// Not two integers with `i < n`.
pub fn parse_shard(s: &str) -> anyhow::Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("--shard wants i/n, e.g. 0/2"))?;
    let (i, n): (usize, usize) = (i.trim().parse()?, n.trim().parse()?);
    if n == 0 || i >= n {
        bail!("--shard {s}: need 0 <= i < n");
    }
    Ok((i, n))
}
