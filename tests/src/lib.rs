//! End-to-end test fixture: a real `redis-server` with the broker module
//! loaded, one per test, on a free port and in its own temporary directory.
//!
//! - [`RedisServer`] spawns the server ([`RedisServer::builder`] adds module
//!   and server arguments), waits until it answers `PING`, restarts it on the
//!   same port and directory (RDB/AOF tests) and kills it on `Drop`.
//! - [`Subscriber`] collects the Pub/Sub messages a gateway node would get on
//!   its `broker:node:<node>` channel.
//! - [`eventually`] and [`assert_eventually!`] poll instead of sleeping.
//! - [`map`], [`int`], [`text`], [`err_line`], [`canon`], [`envelope`] read
//!   replies and envelopes.
//!
//! - [`World`] (in [`world`]) is the builder most module tests start from:
//!   one server, a connection, nodes, connections and rooms in one line each.
//! - [`commands`] builds every `BROKER.*` command the tests send, in one
//!   place; the helpers below and the world run those.
//!
//! - [`gateway`] runs `broker-gateway` processes in front of a server and
//!   drives them with WebSocket clients (the `gateway_*` tests).
//!
//! The module is found at `target/release/libbroker_module.so` under the
//! workspace root (build it with `make build` or `cargo build --release -p
//! broker-module`), or wherever `BROKER_MODULE` points. `REDIS_SERVER` names
//! another `redis-server` binary.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod commands;
pub mod gateway;
pub mod proxy;
pub mod raw;
pub mod world;

pub use commands::*;
pub use world::{Conn, World, LEASE_MS, LOCALHOST};

pub use redis;
use redis::{Connection, RedisError, Value};

/// How long a server may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time limit of [`eventually`] and [`assert_eventually!`].
pub const EVENTUALLY: Duration = Duration::from_secs(10);
/// Read timeout of every client, so a hung command fails the test instead of
/// hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the module under test. Panics with what to do when it is missing.
pub fn module_path() -> PathBuf {
    let path = match std::env::var_os("BROKER_MODULE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/libbroker_module.so"),
    };
    assert!(
        path.is_file(),
        "the broker module is not at {}: build it first with `make build` or \
         `cargo build --release -p broker-module` (or point BROKER_MODULE at it)",
        path.display()
    );
    path.canonicalize().unwrap_or(path)
}

/// A port nothing listens on right now (another process may still take it
/// before redis-server binds it; [`Builder::start`] retries then).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Arguments of a server to start; see [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    module_args: Vec<String>,
    server_args: Vec<String>,
}

impl Builder {
    /// Adds arguments after the module path (e.g. `HISTORY chat 10 60`).
    pub fn module_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.module_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds `redis-server` options (e.g. `--appendonly yes`); they come after
    /// the fixture's defaults, so they override them.
    pub fn server_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.server_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--appendonly yes`.
    pub fn appendonly(self) -> Self {
        self.server_args(["--appendonly", "yes"])
    }

    /// `--replicaof 127.0.0.1 <master's port>`.
    pub fn replica_of(self, master: &RedisServer) -> Self {
        let port = master.port().to_string();
        self.server_args(["--replicaof", "127.0.0.1", port.as_str()])
    }

    /// Spawns the server and waits until it answers `PING`.
    ///
    /// # Panics
    /// When it does not start within 10 s; the message holds its log.
    pub fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("broker-test-")
            .tempdir()
            .expect("create a temporary directory");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            builder: self,
            module: module_path(),
        };
        server.spawn_anywhere();
        server
    }
}

/// A `redis-server` with the module, killed on `Drop`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    builder: Builder,
    module: PathBuf,
}

impl RedisServer {
    /// A server with the default arguments.
    pub fn start() -> RedisServer {
        Builder::default().start()
    }

    /// A builder for a server with extra module or server arguments.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (RDB and AOF files, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A new RESP2 connection.
    pub fn client(&self) -> Connection {
        connect(&self.url())
    }

    /// A new RESP3 connection (maps arrive as maps).
    pub fn client_resp3(&self) -> Connection {
        connect(&format!("{}?protocol=resp3", self.url()))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the server (`SHUTDOWN NOSAVE`: only an explicit `SAVE` writes an
    /// RDB; the AOF is still flushed) and starts it again on the same port
    /// and directory, so it loads its RDB or AOF. Waits until it answers
    /// `PING`, which it does only once loading is done.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped or killed server again on its port and directory
    /// (it loads its RDB, AOF or cluster `nodes.conf`), and waits until it
    /// answers `PING`. Does nothing while it runs.
    pub fn start_again(&mut self) {
        if self.child.is_some() {
            return;
        }
        let port = self.port;
        // The port was just released; another process taking it meanwhile is
        // unlikely, but then move elsewhere rather than fail.
        for _ in 0..5 {
            match self.spawn(port) {
                Ok(()) => return,
                Err(Spawn::PortTaken) => thread::sleep(Duration::from_millis(200)),
                Err(Spawn::Failed(msg)) => panic!("{msg}"),
            }
        }
        self.spawn_anywhere();
    }

    /// Kills the server outright (SIGKILL: no save, no goodbye to clients or
    /// the cluster) and reaps it. [`RedisServer::start_again`] brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server process is running (not stopped or killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process exited by itself (a crash) since it was started;
    /// it is then reaped, and [`RedisServer::start_again`] brings it back.
    pub fn exited(&mut self) -> bool {
        let gone = matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))));
        if gone {
            self.child = None;
        }
        gone
    }

    /// Stops the server and waits for its process to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(mut con) = try_connect(&self.url(), Duration::from_secs(1)) {
            // The server closes the connection instead of answering.
            let _ = redis::cmd("SHUTDOWN")
                .arg("NOSAVE")
                .query::<Value>(&mut con);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// What the server wrote to stderr (a module's panic messages land
    /// there, not in the log).
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.stderr")).unwrap_or_default()
    }

    fn stderr_file(&self) -> Stdio {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.stderr"))
            .map_or_else(|_| Stdio::null(), Stdio::from)
    }

    /// Starts on a fresh free port, retrying when the port is taken.
    fn spawn_anywhere(&mut self) {
        let mut last = String::new();
        for _ in 0..5 {
            match self.spawn(free_port()) {
                Ok(()) => return,
                Err(Spawn::PortTaken) => last = "the port was taken".into(),
                Err(Spawn::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("redis-server did not start after 5 attempts: {last}");
    }

    fn spawn(&mut self, port: u16) -> Result<(), Spawn> {
        let server = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let dir = self
            .dir
            .path()
            .to_str()
            .expect("UTF-8 temp dir")
            .to_string();
        let log = self.log_path();
        let mut cmd = std::process::Command::new(&server);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &dir])
            .args(["--logfile", log.to_str().expect("UTF-8 log path")])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "yes"])
            .args(&self.builder.server_args)
            .arg("--loadmodule")
            .arg(&self.module)
            .args(&self.builder.module_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.stderr_file());
        let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {server} (install redis-server: `make deps`): {e}")
        });
        self.port = port;
        let url = self.url();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let new_log = self.log_since(log_start);
                if new_log.contains("Address already in use") {
                    return Err(Spawn::PortTaken);
                }
                let stderr = self.stderr();
                return Err(Spawn::Failed(format!(
                    "redis-server exited with {status} at start\n--- stderr ---\n{stderr}\n--- {} ---\n{new_log}",
                    log.display()
                )));
            }
            if let Ok(mut con) = try_connect(&url, Duration::from_millis(200)) {
                if let Ok(pong) = redis::cmd("PING").query::<String>(&mut con) {
                    if pong == "PONG" {
                        self.child = Some(child);
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Spawn::Failed(format!(
                    "redis-server did not answer PING on port {port} within {START_TIMEOUT:?}\n--- {} ---\n{}",
                    log.display(),
                    self.log_since(log_start)
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let log = self.log();
        log.get(usize::try_from(offset).unwrap_or(0)..)
            .unwrap_or(&log)
            .to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A failing test shows what the server said.
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "--- last lines of redis-server log (port {}) ---",
                self.port
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            let stderr = self.stderr();
            if !stderr.is_empty() {
                eprintln!("--- redis-server stderr ---\n{stderr}");
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

enum Spawn {
    PortTaken,
    Failed(String),
}

pub(crate) fn try_connect(url: &str, timeout: Duration) -> redis::RedisResult<Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    con.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(con)
}

fn connect(url: &str) -> Connection {
    try_connect(url, Duration::from_secs(5)).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

// ---------------------------------------------------------------------------
// Commands and replies

/// Runs `args` as one command and returns the reply (errors as `Err`).
pub fn call(con: &mut Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con)
}

/// Runs `BROKER.PUBLISH room ev payload` with no option at all, not even
/// `FORMAT` (which [`Publish`] always writes): what a publish gets by default.
pub fn publish_without_options(
    con: &mut Connection,
    room: &str,
    ev: &str,
    payload: &[u8],
) -> redis::RedisResult<Value> {
    redis::cmd("BROKER.PUBLISH")
        .arg(room)
        .arg(ev)
        .arg(payload)
        .query(con)
}

/// Runs a typed [`Command`] and panics on an error reply.
pub fn run(con: &mut Connection, command: impl Command) -> Value {
    send(con, &command)
        .unwrap_or_else(|e| panic!("{} failed: {}", command.describe(), err_line(&e)))
}

/// Runs a typed [`Command`], expects an error reply and returns its full
/// line (see [`err`]).
pub fn run_err(con: &mut Connection, command: impl Command) -> String {
    match send(con, &command) {
        Ok(v) => panic!("{} should fail but replied {v:?}", command.describe()),
        Err(e) => err_line(&e),
    }
}

/// Keys in the database other than the lifecycle stream `broker:events`
/// (which the module writes as connections come and go) and the broker's
/// state keys (type `broker-rg`: a room, a user, an address): for tests
/// that check a command wrote no key of its own.
pub fn keys_but_events(con: &mut Connection) -> i64 {
    let all = int(&ok(con, &["DBSIZE"]));
    let events = int(&ok(con, &["EXISTS", broker::names::EVENTS_STREAM]));
    all - events - broker_keys(con).len() as i64
}

/// The broker's state keys (`SCAN ... TYPE broker-rg`), sorted.
pub fn broker_keys(con: &mut Connection) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let reply = array(&ok(
            con,
            &["SCAN", &cursor, "COUNT", "1000", "TYPE", "broker-rg"],
        ));
        cursor = text(&reply[0]);
        keys.extend(array(&reply[1]).iter().map(text));
        if cursor == "0" {
            break;
        }
    }
    keys.sort();
    keys
}

/// Runs `args` and panics on an error reply.
pub fn ok(con: &mut Connection, args: &[&str]) -> Value {
    call(con, args).unwrap_or_else(|e| panic!("{args:?} failed: {}", err_line(&e)))
}

/// Runs `args`, expects an error reply and returns its full line
/// (`"LIMIT user"`, `"ERR syntax error: ..."`).
pub fn err(con: &mut Connection, args: &[&str]) -> String {
    match call(con, args) {
        Ok(v) => panic!("{args:?} should fail but replied {v:?}"),
        Err(e) => err_line(&e),
    }
}

/// The full text of an error reply: its code and detail, as the server sent
/// them (`"RATELIMITED 1234"`).
pub fn err_line(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) if !detail.is_empty() => format!("{code} {detail}"),
        (Some(code), _) => code.to_string(),
        _ => e.to_string(),
    }
}

/// A map reply as field → value: a RESP3 map or a RESP2 flat `field value`
/// array. Panics on anything else.
pub fn map(v: &Value) -> BTreeMap<String, Value> {
    match v {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|kv| (text(&kv[0]), kv[1].clone()))
            .collect(),
        other => panic!("expected a map reply, got {other:?}"),
    }
}

/// One field of a map reply; panics when missing.
pub fn field(v: &Value, name: &str) -> Value {
    map(v)
        .remove(name)
        .unwrap_or_else(|| panic!("field `{name}` missing in {v:?}"))
}

/// An integer reply (or a string holding one).
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("expected an integer, got {v:?}")),
        Value::SimpleString(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("expected an integer, got {v:?}")),
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// A string reply.
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Okay => "OK".into(),
        Value::Int(n) => n.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// The bytes of a bulk string reply.
pub fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

/// The items of an array reply.
pub fn array(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items.clone(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A reply as JSON, for comparing two servers' answers or printing: maps
/// become objects (sorted keys), byte strings that are not UTF-8 become
/// arrays of numbers, and MessagePack frames inside stay byte strings.
pub fn canon(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Int(n) => J::from(*n),
        Value::Okay => J::from("OK"),
        Value::SimpleString(s) => J::from(s.as_str()),
        Value::BulkString(b) => match std::str::from_utf8(b) {
            Ok(s) => J::from(s),
            Err(_) => J::Array(b.iter().map(|&x| J::from(x)).collect()),
        },
        Value::Array(items) | Value::Set(items) => J::Array(items.iter().map(canon).collect()),
        Value::Map(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| (text(k), canon(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
        Value::Double(d) => J::from(*d),
        Value::Boolean(b) => J::from(*b),
        Value::VerbatimString { text, .. } => J::from(text.as_str()),
        other => J::from(format!("{other:?}")),
    }
}

/// A MessagePack frame (a `msg` or `presence` frame) as JSON, decoded with
/// [`broker::msgpack::to_json`] (which first checks that the frame is one
/// well-formed value with nothing after it).
pub fn frame_json(frame: &[u8]) -> serde_json::Value {
    broker::msgpack::to_json(frame)
        .unwrap_or_else(|e| panic!("frame is not one MessagePack value ({e}): {frame:?}"))
}

/// One INFO field of `section`, e.g. `info_field(con, "broker", "rooms")`.
/// Redis prefixes a module's fields with the module name, so `rooms` also
/// matches `broker_rooms`.
pub fn info_field(con: &mut Connection, section: &str, name: &str) -> Option<String> {
    let info = text(&ok(con, &["INFO", section]));
    let prefixed = format!("broker_{name}");
    info.lines().find_map(|line| {
        let (k, v) = line.trim_end().split_once(':')?;
        (k == name || k == prefixed).then(|| v.to_string())
    })
}

// ---------------------------------------------------------------------------
// Node channels

/// One Pub/Sub message.
#[derive(Debug, Clone)]
pub struct Message {
    /// The channel, e.g. `broker:node:n1`.
    pub channel: String,
    /// The raw payload (an envelope on node channels).
    pub payload: Vec<u8>,
}

impl Message {
    /// The node of a `broker:node:<node>` channel.
    pub fn node(&self) -> &str {
        self.channel
            .strip_prefix("broker:node:")
            .unwrap_or(&self.channel)
    }

    /// The payload decoded as an envelope (with `broker::envelope`).
    pub fn envelope(&self) -> broker::envelope::Envelope<'_> {
        envelope(&self.payload)
    }
}

/// Decodes a node channel envelope; panics when it is not one.
pub fn envelope(payload: &[u8]) -> broker::envelope::Envelope<'_> {
    broker::envelope::decode_envelope(payload)
        .unwrap_or_else(|e| panic!("not an envelope ({e}): {payload:?}"))
}

static FENCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Listens on Pub/Sub channels from a thread of its own and hands the
/// messages over; subscribed when [`Subscriber::nodes`] returns.
pub struct Subscriber {
    channels: Vec<String>,
    rx: Receiver<Message>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes to `broker:node:<node>` for each node, as those gateway
    /// nodes would.
    pub fn nodes(server: &RedisServer, nodes: &[&str]) -> Subscriber {
        let channels: Vec<String> = nodes.iter().map(|n| format!("broker:node:{n}")).collect();
        Subscriber::channels(server, &channels)
    }

    /// Subscribes to the given channels.
    pub fn channels(server: &RedisServer, channels: &[String]) -> Subscriber {
        let mut con = server.client();
        con.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set read timeout");
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let subscribed_to = channels.to_vec();
        let channels = channels.to_vec();
        let thread = thread::spawn(move || {
            let mut pubsub = con.as_pubsub();
            // `subscribe` returns once the server confirmed the subscription.
            let subscribed = pubsub.subscribe(&channels);
            let _ = ready_tx.send(subscribed.map_err(|e| e.to_string()));
            while !stopping.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(msg) => {
                        let message = Message {
                            channel: msg.get_channel_name().to_string(),
                            payload: msg.get_payload_bytes().to_vec(),
                        };
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(_) => return,
                }
            }
        });
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("SUBSCRIBE failed: {e}"),
            Err(_) => panic!("SUBSCRIBE got no answer"),
        }
        Subscriber {
            channels: subscribed_to,
            rx,
            stop,
            thread: Some(thread),
        }
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Message> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next message; panics when none comes within 10 s.
    pub fn expect(&self, what: &str) -> Message {
        self.recv(EVENTUALLY)
            .unwrap_or_else(|| panic!("no Pub/Sub message within {EVENTUALLY:?}: expected {what}"))
    }

    /// Every message received so far and up to a fence: a plain `PUBLISH`
    /// of a marker on each subscribed channel through `con`. Redis keeps the
    /// order of what it sends one subscriber, so once the markers are back,
    /// everything the module published before them has arrived too; no
    /// waiting for a quiet period.
    pub fn fence(&self, con: &mut Connection) -> Vec<Message> {
        let marker = format!("fence-{}", FENCES.fetch_add(1, Ordering::Relaxed));
        for ch in &self.channels {
            ok(con, &["PUBLISH", ch, &marker]);
        }
        let mut pending = self.channels.len();
        let mut out = Vec::new();
        while pending > 0 {
            let m = self.expect("the fence marker");
            if m.payload == marker.as_bytes() {
                pending -= 1;
            } else if !m.payload.starts_with(b"fence-") {
                out.push(m);
            }
        }
        out
    }

    /// Every message that arrives until none has come for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = self.recv(quiet) {
            out.push(m);
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Polling

/// Calls `probe` every 20 ms until it returns `Ok`, and returns that value.
/// Panics after `timeout` with `what` and the last `Err`.
pub fn eventually_within<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() > deadline {
                    panic!("not within {timeout:?}: {what}; last: {last}");
                }
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// [`eventually_within`] 10 s.
pub fn eventually<T>(what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    eventually_within(EVENTUALLY, what, probe)
}

/// Polls a condition every 20 ms until it holds; panics after 10 s.
///
/// `assert_eventually!(cond)` or `assert_eventually!(cond, "format {}", args)`.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr $(,)?) => {
        $crate::assert_eventually!($cond, "{}", stringify!($cond))
    };
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = ::std::time::Instant::now() + $crate::EVENTUALLY;
        while !$cond {
            if ::std::time::Instant::now() > deadline {
                panic!("not within {:?}: {}", $crate::EVENTUALLY, format!($($msg)+));
            }
            ::std::thread::sleep(::std::time::Duration::from_millis(20));
        }
    }};
}

/// Asserts that the server still answers `PING` (after bad input).
pub fn assert_alive(server: &RedisServer) {
    let mut con = server.client();
    let pong: String = redis::cmd("PING")
        .query(&mut con)
        .unwrap_or_else(|e| panic!("server no longer answers PING: {e}\n{}", server.log()));
    assert_eq!(pong, "PONG");
}

// ---------------------------------------------------------------------------
// Setting up state

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `BROKER.NODE.LEASE node ttl_ms`; returns the deadline.
pub fn lease(con: &mut Connection, node: &str, ttl_ms: u64) -> i64 {
    lease_reply(&run(con, NodeLease::new(node, ttl_ms))).0
}

/// A `NODE.LEASE` reply `[deadline_ms, renewed]` as (deadline, renewed).
pub fn lease_reply(reply: &Value) -> (i64, bool) {
    let items = array(reply);
    assert_eq!(
        items.len(),
        2,
        "NODE.LEASE replies [deadline_ms, renewed]: {reply:?}"
    );
    let renewed = match int(&items[1]) {
        0 => false,
        1 => true,
        other => panic!("renewed is 0 or 1, got {other}"),
    };
    (int(&items[0]), renewed)
}

/// `BROKER.CONN.OPEN user conn node 127.0.0.1`, expecting `OK`.
pub fn open(con: &mut Connection, user: &str, conn: &str, node: &str) {
    let reply = run(con, ConnOpen::new(user, conn, node, LOCALHOST));
    assert_eq!(text(&reply), "OK", "CONN.OPEN {user} {conn} {node}");
}

/// `BROKER.PUBLISH room ev payload FORMAT string`; returns the sequence.
pub fn publish_str(con: &mut Connection, room: &str, ev: &str, payload: &str) -> i64 {
    int(&run(con, Publish::string(room, ev, payload)))
}

// ---------------------------------------------------------------------------
// A bit of everything, for persistence and replication tests

/// Module arguments that [`populate`] expects: `chat` rooms keep history.
pub const HISTORY_ARGS: [&str; 4] = ["HISTORY", "chat", "100", "300"];

/// Writes some of every kind of state: two node leases, connections with
/// rooms and presence, a closed connection, messages with history (one with
/// `FROM`, one room with its own `HISTORY` settings), and a throttle key.
/// Start the server with [`HISTORY_ARGS`].
pub fn populate(con: &mut Connection) {
    lease(con, "n1", 600_000);
    lease(con, "n2", 600_000);
    for (user, conn, node, ip) in [
        ("alice", "c1", "n1", "10.0.0.1"),
        ("alice", "c2", "n2", "10.0.0.2"),
        ("bob", "c3", "n1", "10.0.0.1"),
        ("carol", "c4", "n2", "10.0.0.3"),
    ] {
        run(
            con,
            ConnOpen::new(user, conn, node, ip).at(1_700_000_000_000),
        );
    }
    run(
        con,
        Join::new("chat:a", "alice", "c1", "n1").with_presence(),
    );
    run(con, Join::new("chat:a", "bob", "c3", "n1").with_presence());
    run(
        con,
        Join::new("chat:a", "carol", "c4", "n2").with_presence(),
    );
    run(con, Join::new("chat:b", "alice", "c2", "n2"));
    run(con, Join::new("user:alice", "alice", "c1", "n1"));
    run(con, ConnClose::new("carol", "c4"));
    for i in 1..=3 {
        run(
            con,
            Publish::json("chat:a", "ev", &format!(r#"{{"n":{i}}}"#)),
        );
    }
    run(
        con,
        Publish::string("chat:a", "ev", "from alice").from_conn("c1"),
    );
    for i in 1..=4 {
        run(
            con,
            Publish::string("other:p", "ev", &i.to_string()).history(3, 300),
        );
    }
    // 1 per minute: the key lives 3 minutes, longer than any test.
    run(con, Throttle::new("rl:alice", 15, 1, 60).quantity(3));
}

/// What the state looks like from outside, as JSON: presence of the users
/// [`populate`] uses (connections sorted by id, rooms sorted), members,
/// counts and history (exact frame bytes) of its rooms, `ONLINE`, `NODES`
/// (with lease deadlines when `deadlines`: a load extends them), the
/// throttle key, and the state fields of `INFO broker`.
pub fn snapshot(con: &mut Connection, deadlines: bool) -> serde_json::Value {
    use serde_json::{json, Value as J};
    let mut out = serde_json::Map::new();
    for user in ["alice", "bob", "carol", "dave"] {
        let p = map(&run(con, Presence::new(user)));
        let mut conns: Vec<J> = array(&p["conns"])
            .iter()
            .map(|c| {
                let c = map(c);
                let mut rooms: Vec<String> = array(&c["rooms"]).iter().map(text).collect();
                rooms.sort();
                json!({
                    "conn": text(&c["conn"]),
                    "node": text(&c["node"]),
                    "ip": text(&c["ip"]),
                    "connected_at": int(&c["connected_at"]),
                    "rooms": rooms,
                })
            })
            .collect();
        conns.sort_by_key(|c| c["conn"].as_str().unwrap_or_default().to_string());
        out.insert(
            format!("presence {user}"),
            json!({"status": text(&p["status"]), "connections": int(&p["connections"]), "conns": conns}),
        );
    }
    for room in ["chat:a", "chat:b", "other:p", "user:alice"] {
        let members: BTreeMap<String, i64> = map(&run(
            con,
            RoomMembers::new(room).limit(RoomMembers::MAX_LIMIT),
        ))
        .iter()
        .map(|(k, v)| (k.clone(), int(v)))
        .collect();
        let count = map(&run(con, RoomCount::new(room)));
        let h = map(&run(con, History::new(room)));
        let messages: Vec<J> = array(&h["messages"])
            .iter()
            .map(|m| canon(&Value::BulkString(bytes(m))))
            .collect();
        out.insert(
            format!("room {room}"),
            json!({
                "members": members,
                "users": int(&count["users"]),
                "connections": int(&count["connections"]),
                "seq": int(&h["seq"]),
                "epoch": text(&h["epoch"]),
                "messages": messages,
            }),
        );
    }
    let online = map(&run(con, Online));
    out.insert(
        "online".into(),
        json!([int(&online["users"]), int(&online["connections"])]),
    );
    let mut nodes: Vec<J> = array(&run(con, Nodes))
        .iter()
        .map(|n| {
            let n = map(n);
            let mut j = json!({"node": text(&n["node"]), "connections": int(&n["connections"])});
            if deadlines {
                j["lease_deadline_ms"] = J::from(int(&n["lease_deadline_ms"]));
            }
            j
        })
        .collect();
    nodes.sort_by_key(|n| n["node"].as_str().unwrap_or_default().to_string());
    out.insert("nodes".into(), J::Array(nodes));
    out.insert("throttle key".into(), canon(&ok(con, &["GET", "rl:alice"])));
    for name in ["nodes", "connections", "users", "rooms"] {
        out.insert(
            format!("info {name}"),
            J::from(
                info_field(con, "broker", name)
                    .unwrap_or_else(|| panic!("INFO broker has no `{name}`")),
            ),
        );
    }
    J::Object(out)
}

/// Waits until a replica reports `master_link_status:up` and gets the
/// master's writes.
pub fn wait_for_sync(replica: &RedisServer) {
    let mut con = replica.client();
    eventually("the replica is in sync with its master", || {
        let info = text(&ok(&mut con, &["INFO", "replication"]));
        if info
            .lines()
            .any(|l| l.trim_end() == "master_link_status:up")
        {
            Ok(())
        } else {
            Err(info)
        }
    });
    // `up` comes before the master streams to the replica: after a
    // diskless sync it waits for the replica's first `REPLCONF ACK`, sent
    // once a second. A write seen on the replica means the stream flows.
    let port = text(&ok(&mut con, &["INFO", "replication"]))
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("master_port:").map(str::to_owned))
        .expect("INFO replication has master_port");
    let mut master = connect(&format!("redis://127.0.0.1:{port}"));
    let probe = format!("broker-test:sync:{}", std::process::id());
    ok(&mut master, &["SET", &probe, "1"]);
    eventually("the replica gets the master's writes", || {
        match ok(&mut con, &["EXISTS", &probe]) {
            Value::Int(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    ok(&mut master, &["DEL", &probe]);
    eventually("the replica gets the master's delete", || {
        match ok(&mut con, &["EXISTS", &probe]) {
            Value::Int(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}
