//! Gateway fixture: `broker-gateway` processes in front of a [`RedisServer`],
//! and clients that speak protocol v1 to them.
//!
//! - [`Gateway`] writes a TOML config from [`Options`] into its own temporary
//!   directory, spawns `target/release/broker-gateway --config ...` on free
//!   loopback ports, waits until `GET /readyz` answers 200, and kills it
//!   (SIGKILL) on `Drop`; [`Gateway::terminate`] is the graceful SIGTERM stop.
//!   Its stdout and stderr go to `gateway.log` in that directory, printed
//!   when a test fails.
//! - [`Client`] is a WebSocket client built on tokio-tungstenite (not the
//!   library the gateway uses, so the two check each other): it sends
//!   [`ClientFrame`]s and reads [`ServerFrame`]s with a timeout;
//!   [`Client::request`] waits for the answer to one request and keeps
//!   whatever else arrived meanwhile (messages, presence events) queued for
//!   the next [`Client::recv`].
//! - [`join`], [`publish`], [`ping`] and friends build requests; the client
//!   gives each its id.
//! - [`token`] and [`token_with`] mint HS256 tokens with the fixture's
//!   secret, [`unsigned_token`] an `alg: none` one; [`token_kid`] one that
//!   names its key, for a gateway started with [`Options::jwks_file`] on a
//!   set written by [`jwks`] ([`Gateway::sighup`] makes it re-read it).
//! - [`http_get`] and [`http_post`] are a tiny HTTP/1.1 client for the
//!   admin API and the health endpoints.
//! - [`presence`] and [`online`] read `BROKER.PRESENCE` and `BROKER.ONLINE`.
//!
//! The gateway binary is found at `target/release/broker-gateway` under the
//! workspace root (`cargo build --release -p broker-gateway`), or wherever
//! `BROKER_GATEWAY` points.

use std::collections::VecDeque;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use broker::protocol::{self, ClientFrame, CloseCode, ServerFrame, Since};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as J};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::commands::{Nodes, Online, Presence};
use crate::{array, int, map, run, text, RedisServer};

/// The HS256 secret every fixture gateway verifies tokens with.
pub const SECRET: &str = "test-secret";
/// How long a gateway may take to answer `GET /readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Client::recv`] and [`Client::request`] wait for a frame.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Gateway::terminate`] waits for the process to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Path of the gateway under test. Panics with what to do when it is missing.
pub fn gateway_path() -> PathBuf {
    let path = match std::env::var_os("BROKER_GATEWAY") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/broker-gateway"),
    };
    assert!(
        path.is_file(),
        "the gateway is not at {}: build it first with `make build` or \
         `cargo build --release -p broker-gateway` (or point BROKER_GATEWAY at it)",
        path.display()
    );
    path
}

/// Seconds since the Unix epoch.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------
// Gateway processes

static NODES: AtomicU64 = AtomicU64::new(0);

/// What a fixture gateway's config differs in. Every gateway gets the same
/// namespaces (see [`NAMESPACES`]) and `auth.secret = "test-secret"`.
#[derive(Debug, Clone)]
pub struct Options {
    /// `node_id`; default a fresh `gw-<n>`.
    pub node_id: Option<String>,
    /// `node.lease_ms` (default: 5000).
    pub lease_ms: u64,
    /// `node.presence_grace_ms` (default: 0).
    pub presence_grace_ms: u64,
    /// `limits.send_queue` (default: 1024).
    pub send_queue: usize,
    /// `limits.ping_interval_s` (default: 25).
    pub ping_interval_s: u64,
    /// `limits.idle_timeout_s` (default: 60).
    pub idle_timeout_s: u64,
    /// `origins` (default: empty: any).
    pub origins: Vec<String>,
    /// `trusted_proxies` (default: empty).
    pub trusted_proxies: Vec<String>,
    /// `limits.max_frame_bytes` (default: 65536).
    pub max_frame_bytes: usize,
    /// `limits.max_conns_per_user` (default: 5).
    pub max_conns_per_user: u32,
    /// `limits.max_conns_per_ip` (default: 20).
    pub max_conns_per_ip: u32,
    /// `limits.max_preauth_per_ip` (default: 20).
    pub max_preauth_per_ip: u32,
    /// `limits.max_conns` (default: 0, from the open-file limit).
    pub max_conns: u32,
    /// `limits.requests` as `(count, period_s, burst)`. The fixture's
    /// default is far above what any test sends (1,000,000 per second),
    /// so only the tests of the budget meet it; [`Options::requests`]
    /// sets the shipped one back.
    pub requests: (u32, u64, u32),
    /// `auth.leeway_s` (default: 30).
    pub leeway_s: u64,
    /// `admin.api_key` (default: unset).
    pub api_key: Option<String>,
    /// `testing.echo` (default: false).
    pub echo: bool,
    /// TOML appended at the end of the file (whole tables only).
    pub extra_toml: String,
    /// `redis.url` as TOML [the server's own]: e.g. a
    /// [`crate::proxy::Proxy`] in front of it, or a cluster's seeds.
    pub redis_url: Option<String>,
    /// `auth.jwks_file`, written in place of `auth.secret` (default:
    /// unset: the gateway verifies with [`SECRET`]). See [`jwks`] and
    /// [`token_kid`].
    pub jwks_file: Option<PathBuf>,
    /// `testing.webhook_claim_idle_ms` (default: unset, the gateway's
    /// rule). Give `[webhooks]` itself through [`Options::extra_toml`].
    pub webhook_claim_idle_ms: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node_id: None,
            lease_ms: 5000,
            presence_grace_ms: 0,
            send_queue: 1024,
            ping_interval_s: 25,
            idle_timeout_s: 60,
            origins: Vec::new(),
            trusted_proxies: Vec::new(),
            max_frame_bytes: 65_536,
            max_conns_per_user: 5,
            max_conns_per_ip: 20,
            max_preauth_per_ip: 20,
            max_conns: 0,
            requests: (1_000_000, 1, 1_000_000),
            leeway_s: 30,
            api_key: None,
            echo: false,
            extra_toml: String::new(),
            redis_url: None,
            jwks_file: None,
            webhook_claim_idle_ms: None,
        }
    }
}

impl Options {
    /// Sets `node_id`.
    pub fn node(mut self, id: &str) -> Self {
        self.node_id = Some(id.to_string());
        self
    }

    /// Sets `node.presence_grace_ms`.
    pub fn presence_grace_ms(mut self, ms: u64) -> Self {
        self.presence_grace_ms = ms;
        self
    }

    /// Sets `limits.ping_interval_s` and `limits.idle_timeout_s`.
    pub fn keepalive(mut self, ping_interval_s: u64, idle_timeout_s: u64) -> Self {
        self.ping_interval_s = ping_interval_s;
        self.idle_timeout_s = idle_timeout_s;
        self
    }

    /// Sets `limits.max_conns_per_ip`.
    pub fn max_conns_per_ip(mut self, n: u32) -> Self {
        self.max_conns_per_ip = n;
        self
    }

    /// Sets `limits.max_preauth_per_ip`.
    pub fn max_preauth_per_ip(mut self, n: u32) -> Self {
        self.max_preauth_per_ip = n;
        self
    }

    /// Sets `limits.max_conns`.
    pub fn max_conns(mut self, n: u32) -> Self {
        self.max_conns = n;
        self
    }

    /// Sets `limits.requests` (`count` per `period_s`, `burst` back to back).
    pub fn requests(mut self, count: u32, period_s: u64, burst: u32) -> Self {
        self.requests = (count, period_s, burst);
        self
    }

    /// Sets `trusted_proxies`.
    pub fn trusted_proxies(mut self, proxies: &[&str]) -> Self {
        self.trusted_proxies = proxies.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Sets `limits.send_queue`.
    pub fn send_queue(mut self, frames: usize) -> Self {
        self.send_queue = frames;
        self
    }

    /// Sets `node.lease_ms`.
    pub fn lease_ms(mut self, ms: u64) -> Self {
        self.lease_ms = ms;
        self
    }

    /// Sets `origins`.
    pub fn origins(mut self, origins: &[&str]) -> Self {
        self.origins = origins.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets `limits.max_frame_bytes`.
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = n;
        self
    }

    /// Sets `auth.leeway_s`.
    pub fn leeway_s(mut self, s: u64) -> Self {
        self.leeway_s = s;
        self
    }

    /// Sets `admin.api_key`.
    pub fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_string());
        self
    }

    /// Reaches Redis at `url` instead of the server's own address.
    pub fn redis_url(mut self, url: &str) -> Self {
        self.redis_url = Some(format!("{url:?}"));
        self
    }

    /// Reaches a Redis Cluster through these seed URLs.
    pub fn redis_cluster(mut self, urls: &[String]) -> Self {
        let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
        self.redis_url = Some(format!("[{}]", list.join(", ")));
        self
    }

    /// Turns on `testing.echo` (`GET /echo`).
    pub fn echo(mut self) -> Self {
        self.echo = true;
        self
    }

    /// Sets `auth.jwks_file` (in place of `auth.secret`).
    pub fn jwks_file(mut self, path: &Path) -> Self {
        self.jwks_file = Some(path.to_path_buf());
        self
    }
}

/// The namespaces of every fixture gateway:
///
/// - `chat`: public, members publish, presence and join/leave events,
///   history 100 for 300 s, at most 3 publishes back to back (5 per 10 s),
///   payloads up to 1024 bytes;
/// - `feed`: like `chat` without a rate limit (for bulk publishing);
/// - `vip`: only role `vip` joins;
/// - `orders`: rooms from the token's `rooms` claim; only the server
///   publishes.
pub const NAMESPACES: &str = r#"
[namespaces.chat]
join = "public"
publish = "members"
presence = true
join_leave = true
history = 100
history_ttl_s = 300
rate = { count = 5, period_s = 10, burst = 3 }
max_payload = 1024

[namespaces.feed]
history = 100
history_ttl_s = 300

[namespaces.vip]
join = "roles"
roles = ["vip"]

[namespaces.orders]
join = "claim"
publish = "server"
history = 10
"#;

/// A `broker-gateway` process, killed (SIGKILL) on `Drop`.
#[derive(Debug)]
pub struct Gateway {
    child: Option<Child>,
    /// Public listener (`/ws`, `/readyz`, ...).
    pub addr: SocketAddr,
    /// Admin listener (`/metrics`, `/api/...`).
    pub admin: SocketAddr,
    /// The node id.
    pub node: String,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway on `redis` and waits until it is ready.
    ///
    /// # Panics
    /// When it is not ready within 15 s; the message holds its log.
    pub async fn start(redis: &RedisServer, opts: Options) -> Gateway {
        let node = opts
            .node_id
            .clone()
            .unwrap_or_else(|| format!("gw-{}", NODES.fetch_add(1, Ordering::Relaxed) + 1));
        let mut dir = tempfile::Builder::new()
            .prefix("broker-gw-test-")
            .tempdir()
            .expect("create a temporary directory");
        let mut last = String::new();
        for _ in 0..5 {
            let addr: SocketAddr = ([127, 0, 0, 1], crate::free_port()).into();
            let admin: SocketAddr = ([127, 0, 0, 1], crate::free_port()).into();
            if addr == admin {
                continue;
            }
            let config = dir.path().join("gateway.toml");
            fs::write(
                &config,
                config_toml(
                    &opts,
                    &node,
                    &opts
                        .redis_url
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", redis.url())),
                    addr,
                    admin,
                ),
            )
            .expect("write gateway.toml");
            let log_path = dir.path().join("gateway.log");
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open gateway.log");
            let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
            let child = spawn_gateway(&config, log);
            let mut gw = Gateway {
                child: Some(child),
                addr,
                admin,
                node: node.clone(),
                dir,
            };
            match gw.wait_ready().await {
                Ok(()) => return gw,
                Err(exited) => {
                    let new_log = gw.log_since(log_start);
                    if exited && new_log.contains("Address already in use") {
                        last = new_log;
                        dir = gw.take_dir();
                        continue;
                    }
                    panic!(
                        "broker-gateway {node} did not become ready within {READY_TIMEOUT:?}\n--- {} ---\n{new_log}",
                        gw.log_path().display()
                    );
                }
            }
        }
        panic!("broker-gateway {node} could not bind free ports after 5 attempts:\n{last}");
    }

    /// Polls `/readyz`; `Err(true)` when the process exited, `Err(false)` on
    /// timeout.
    async fn wait_ready(&mut self) -> Result<(), bool> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return Err(true);
                }
            }
            if let Ok(resp) = try_http(self.addr, "GET", "/readyz", None, None).await {
                if resp.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(false);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Swaps the temp dir out of a gateway that failed to start so the next
    /// attempt reuses it (the failed one's `Drop` then has nothing to kill).
    fn take_dir(&mut self) -> tempfile::TempDir {
        let fresh = tempfile::Builder::new()
            .prefix("broker-gw-dead-")
            .tempdir()
            .expect("create a temporary directory");
        std::mem::replace(&mut self.dir, fresh)
    }

    /// `ws://<public>/ws`, with `?token=...` when given.
    pub fn ws_url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("ws://{}/ws?token={t}", self.addr),
            None => format!("ws://{}/ws", self.addr),
        }
    }

    /// Connects as `user` (a token valid for an hour, no roles or rooms)
    /// and reads the `welcome`.
    pub async fn connect(&self, user: &str) -> Client {
        self.connect_token(&token(user, 3600, &[], &[])).await
    }

    /// Connects with `token` in the query and reads the `welcome`.
    pub async fn connect_token(&self, token: &str) -> Client {
        let mut c = Client::connect(&self.ws_url(Some(token))).await;
        c.welcome().await;
        c
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's resident memory in KiB (`VmRSS`), 0 when unknown.
    pub fn rss_kib(&self) -> u64 {
        self.pid().map_or(0, rss_kib)
    }

    /// Open file descriptors of the process.
    pub fn open_fds(&self) -> usize {
        self.pid()
            .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok())
            .map_or(0, |d| d.count())
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status.
    ///
    /// # Panics
    /// When it does not exit within 15 s.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the gateway is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker-gateway {} did not exit within {EXIT_TIMEOUT:?} of SIGTERM\n{}",
                    self.node,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGHUP (the gateway re-reads `auth.jwks_file`); does not wait
    /// for the reload (poll `broker_jwks_reloads_total` for that).
    ///
    /// # Panics
    /// When the process is not running or `kill` fails.
    pub fn sighup(&self) {
        let pid = self.pid().expect("the gateway is running");
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {pid} failed");
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The gateway's temporary directory (config and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_since(&self, offset: u64) -> String {
        let log = self.log();
        log.get(usize::try_from(offset).unwrap_or(0)..)
            .unwrap_or(&log)
            .to_string()
    }

    /// `GET` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> HttpResponse {
        http_get(self.admin, path, None).await
    }

    /// `POST` JSON on the admin listener.
    pub async fn admin_post(&self, path: &str, body: &J) -> HttpResponse {
        http_post(self.admin, path, body, None).await
    }

    /// The value of an unlabelled metric (`name value` line of `/metrics`).
    ///
    /// # Panics
    /// When `/metrics` does not answer or has no such line.
    pub async fn metric(&self, name: &str) -> f64 {
        let resp = self.admin_get("/metrics").await;
        assert_eq!(resp.status, 200, "GET /metrics: {resp:?}");
        let text = &resp.body;
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no metric {name} in /metrics:\n{text}"))
    }

    /// `POST /api/publish {room, ev, data}`; returns the sequence number.
    pub async fn publish(&self, room: &str, ev: &str, data: J) -> u64 {
        let resp = self
            .admin_post(
                "/api/publish",
                &json!({"room": room, "ev": ev, "data": data}),
            )
            .await;
        assert_eq!(resp.status, 200, "POST /api/publish: {resp:?}");
        resp.json()["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("POST /api/publish answers {{seq}}: {resp:?}"))
    }
}

/// Spawns `broker-gateway --config <config>` with its output appended to
/// `log` and none of the caller's `BROKER_*` variables.
fn spawn_gateway(config: &Path, log: fs::File) -> Child {
    let mut cmd = Command::new(gateway_path());
    cmd.arg("--config").arg(config);
    // The test's environment must not change the gateway's config.
    for (key, _) in std::env::vars_os() {
        if key
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("BROKER_")
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("clone log file")))
        .stderr(Stdio::from(log));
    cmd.spawn().expect("spawn broker-gateway")
}

impl Gateway {
    /// Starts the process again with the same config (node id, ports,
    /// Redis URL), as a service manager restarts a unit, without waiting
    /// for it to be ready ([`Gateway::is_ready`] tells). A running process
    /// is killed (SIGKILL) first.
    pub fn respawn(&mut self) {
        self.kill();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open gateway.log");
        self.child = Some(spawn_gateway(&self.dir.path().join("gateway.toml"), log));
    }

    /// Whether the process runs (it was not killed, and has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// Whether `GET /readyz` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        matches!(
            try_http(self.addr, "GET", "/readyz", None, None).await,
            Ok(resp) if resp.status == 200
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of broker-gateway {} log ---", self.node);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        self.kill();
    }
}

fn config_toml(
    opts: &Options,
    node: &str,
    redis_url: &str,
    addr: SocketAddr,
    admin: SocketAddr,
) -> String {
    let origins: Vec<String> = opts.origins.iter().map(|o| format!("{o:?}")).collect();
    let proxies: Vec<String> = opts
        .trusted_proxies
        .iter()
        .map(|p| format!("{p:?}"))
        .collect();
    let key = match &opts.jwks_file {
        Some(path) => format!("jwks_file = {:?}", path.display().to_string()),
        None => format!("secret = {SECRET:?}"),
    };
    let api_key = opts
        .api_key
        .as_ref()
        .map(|k| format!("[admin]\napi_key = {k:?}\n"))
        .unwrap_or_default();
    format!(
        r#"listen = "{addr}"
admin_listen = "{admin}"
node_id = "{node}"
origins = [{origins}]
trusted_proxies = [{proxies}]

[redis]
url = {redis_url}

[auth]
{key}
leeway_s = {leeway}

{api_key}
[limits]
max_frame_bytes = {max_frame}
max_conns_per_user = {max_user}
max_conns_per_ip = {max_ip}
max_preauth_per_ip = {max_preauth}
max_conns = {max_conns}
send_queue = {send_queue}
ping_interval_s = {ping}
idle_timeout_s = {idle}
requests = {{ count = {req_count}, period_s = {req_period}, burst = {req_burst} }}

[node]
lease_ms = {lease}
presence_grace_ms = {grace}

[testing]
echo = {echo}
{claim_idle}
{NAMESPACES}
{extra}
"#,
        origins = origins.join(", "),
        proxies = proxies.join(", "),
        leeway = opts.leeway_s,
        max_frame = opts.max_frame_bytes,
        max_user = opts.max_conns_per_user,
        max_ip = opts.max_conns_per_ip,
        max_preauth = opts.max_preauth_per_ip,
        max_conns = opts.max_conns,
        lease = opts.lease_ms,
        grace = opts.presence_grace_ms,
        send_queue = opts.send_queue,
        ping = opts.ping_interval_s,
        idle = opts.idle_timeout_s,
        req_count = opts.requests.0,
        req_period = opts.requests.1,
        req_burst = opts.requests.2,
        echo = opts.echo,
        claim_idle = opts
            .webhook_claim_idle_ms
            .map(|ms| format!("webhook_claim_idle_ms = {ms}"))
            .unwrap_or_default(),
        extra = opts.extra_toml,
    )
}

// ---------------------------------------------------------------------------
// Tokens

/// An HS256 token signed with [`SECRET`] for `sub`, expiring `exp_in_s`
/// seconds from now (negative: already expired), with `roles` and `rooms`
/// claims when not empty.
pub fn token(sub: &str, exp_in_s: i64, roles: &[&str], rooms: &[&str]) -> String {
    let mut claims = json!({"sub": sub, "exp": now_s() + exp_in_s});
    if !roles.is_empty() {
        claims["roles"] = json!(roles);
    }
    if !rooms.is_empty() {
        claims["rooms"] = json!(rooms);
    }
    token_with(&claims, SECRET)
}

/// An HS256 token with exactly these claims, signed with `secret`.
pub fn token_with(claims: &J, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}

/// An HS256 token with exactly these claims, signed with `secret`, whose
/// header names key `kid` (for gateways with `auth.jwks_file`).
pub fn token_kid(claims: &J, kid: &str, secret: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token")
}

/// A JWK Set (RFC 7517) of HS256 `oct` keys, `(kid, secret)` each, as
/// JSON text for `auth.jwks_file`.
pub fn jwks(keys: &[(&str, &str)]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let keys: Vec<J> = keys
        .iter()
        .map(|(kid, secret)| {
            json!({"kty": "oct", "kid": kid, "alg": "HS256", "use": "sig", "k": b64.encode(secret)})
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// A token with header `{"alg": "none"}` and an empty signature.
pub fn unsigned_token(claims: &J) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(claims.to_string())
    )
}

// ---------------------------------------------------------------------------
// Requests

/// `auth {token}`.
pub fn auth(token: &str) -> ClientFrame {
    ClientFrame::Auth {
        id: 0,
        token: token.to_string(),
    }
}

/// `join {room}`.
pub fn join(room: &str) -> ClientFrame {
    ClientFrame::Join {
        id: 0,
        room: room.to_string(),
        since: None,
    }
}

/// `join {room, since: {seq, epoch}}`.
pub fn join_since(room: &str, seq: u64, epoch: &str) -> ClientFrame {
    ClientFrame::Join {
        id: 0,
        room: room.to_string(),
        since: Some(Since {
            seq,
            epoch: epoch.to_string(),
        }),
    }
}

/// `leave {room}`.
pub fn leave(room: &str) -> ClientFrame {
    ClientFrame::Leave {
        id: 0,
        room: room.to_string(),
    }
}

/// `pub {room, ev, data}` with `data` sent as MessagePack.
pub fn publish(room: &str, ev: &str, data: &J) -> ClientFrame {
    ClientFrame::Pub {
        volatile: false,
        id: 0,
        room: room.to_string(),
        ev: ev.to_string(),
        data: msgpack(data),
        others: false,
    }
}

/// `pub {room, ev, data, others: true}`.
pub fn publish_others(room: &str, ev: &str, data: &J) -> ClientFrame {
    ClientFrame::Pub {
        volatile: false,
        id: 0,
        room: room.to_string(),
        ev: ev.to_string(),
        data: msgpack(data),
        others: true,
    }
}

/// `presence {room}`.
pub fn presence_req(room: &str) -> ClientFrame {
    ClientFrame::Presence {
        id: 0,
        room: room.to_string(),
        after: None,
    }
}

/// `history {room, since?, limit?}`.
pub fn history(room: &str, since: Option<u64>, limit: Option<u32>) -> ClientFrame {
    ClientFrame::History {
        id: 0,
        room: room.to_string(),
        since,
        limit,
    }
}

/// `refresh {token}`.
pub fn refresh(token: &str) -> ClientFrame {
    ClientFrame::Refresh {
        id: 0,
        token: token.to_string(),
    }
}

/// `ping`.
pub fn ping() -> ClientFrame {
    ClientFrame::Ping { id: 0 }
}

/// A JSON value as MessagePack bytes.
pub fn msgpack(value: &J) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("encode MessagePack")
}

fn with_id(mut frame: ClientFrame, new: i64) -> ClientFrame {
    frame.set_id(new);
    frame
}

// ---------------------------------------------------------------------------
// WebSocket client

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a WebSocket connection was not made.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade with this HTTP status.
    Status(u16),
    /// Anything else (I/O, handshake).
    Other(String),
}

/// A protocol v1 client.
pub struct Client {
    ws: Ws,
    next_id: i64,
    queue: VecDeque<ServerFrame>,
    /// The close code once the server closed (1005: no code, 1006: dropped).
    pub closed: Option<u16>,
    /// `conn` of the `welcome` (empty before it).
    pub conn: String,
    /// `user` of the `welcome`.
    pub user: String,
    /// `node` of the `welcome`.
    pub node: String,
    /// `exp` of the `welcome`.
    pub exp: u64,
}

impl Client {
    /// Connects to `url` (no frame read yet).
    ///
    /// # Panics
    /// When the upgrade fails.
    pub async fn connect(url: &str) -> Client {
        Client::try_connect(url, &[])
            .await
            .unwrap_or_else(|e| panic!("WebSocket upgrade of {url} failed: {e:?}"))
    }

    /// Connects with one extra request header.
    pub async fn connect_with_header(url: &str, name: &str, value: &str) -> Client {
        Client::try_connect(url, &[(name, value)])
            .await
            .unwrap_or_else(|e| panic!("WebSocket upgrade of {url} with {name} failed: {e:?}"))
    }

    /// Connects with extra request headers; a refused upgrade is
    /// `Err(Status(code))`.
    pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, ConnectError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let connecting = tokio_tungstenite::connect_async(request);
        let (ws, _response) = match tokio::time::timeout(RECV_TIMEOUT, connecting).await {
            Err(_) => return Err(ConnectError::Other("upgrade timed out".into())),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                return Err(ConnectError::Status(resp.status().as_u16()))
            }
            Ok(Err(e)) => return Err(ConnectError::Other(e.to_string())),
            Ok(Ok(pair)) => pair,
        };
        Ok(Client {
            ws,
            next_id: 0,
            queue: VecDeque::new(),
            closed: None,
            conn: String::new(),
            user: String::new(),
            node: String::new(),
            exp: 0,
        })
    }

    /// The HTTP status a refused upgrade got.
    ///
    /// # Panics
    /// When the upgrade succeeds or fails otherwise.
    pub async fn refused(url: &str, headers: &[(&str, &str)]) -> u16 {
        match Client::try_connect(url, headers).await {
            Err(ConnectError::Status(code)) => code,
            Err(ConnectError::Other(e)) => {
                panic!("upgrade of {url} failed without an HTTP status: {e}")
            }
            Ok(_) => panic!("upgrade of {url} with {headers:?} should be refused but succeeded"),
        }
    }

    /// Reads the `welcome` and keeps its fields.
    ///
    /// # Panics
    /// When the next frame is not a `welcome`.
    pub async fn welcome(&mut self) {
        match self.recv().await {
            ServerFrame::Welcome {
                conn,
                user,
                node,
                exp,
                ..
            } => self.take_welcome(conn, user, node, exp),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    fn take_welcome(&mut self, conn: String, user: String, node: String, exp: u64) {
        self.conn = conn;
        self.user = user;
        self.node = node;
        self.exp = exp;
    }

    /// A fresh request id.
    pub fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a frame as is (with the id it carries).
    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_message(Message::binary(protocol::encode_client_frame(frame)))
            .await;
    }

    /// Sends `frame` with a fresh id and returns the id, without waiting
    /// (to read what comes before the answer by hand).
    pub async fn send_request(&mut self, frame: ClientFrame) -> i64 {
        let id = self.id();
        self.send(&with_id(frame, id)).await;
        id
    }

    /// Sends any WebSocket message.
    pub async fn send_message(&mut self, message: Message) {
        self.ws
            .send(message)
            .await
            .unwrap_or_else(|e| panic!("send failed (closed: {:?}): {e}", self.closed));
    }

    /// Reads the socket once: `Ok(frame)`, or `Err(code)` when it closed.
    async fn read(&mut self, timeout: Duration) -> Option<Result<ServerFrame, u16>> {
        if let Some(code) = self.closed {
            return Some(Err(code));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(next) => next,
            };
            let code = match next {
                Some(Ok(Message::Binary(bytes))) => {
                    let frame = protocol::decode_server_frame(&bytes)
                        .unwrap_or_else(|e| panic!("undecodable server frame ({e}): {bytes:?}"));
                    return Some(Ok(frame));
                }
                Some(Ok(Message::Text(t))) => panic!("the server sent a text message: {t}"),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => frame.map_or(1005, |f| u16::from(f.code)),
                Some(Err(_)) | None => 1006,
            };
            self.closed = Some(code);
            return Some(Err(code));
        }
    }

    /// The next frame (queued ones first) within `timeout`, or `None`.
    ///
    /// # Panics
    /// When the connection closed.
    pub async fn recv_within(&mut self, timeout: Duration) -> Option<ServerFrame> {
        if let Some(frame) = self.queue.pop_front() {
            return Some(frame);
        }
        match self.read(timeout).await {
            None => None,
            Some(Ok(frame)) => Some(frame),
            Some(Err(code)) => {
                panic!("the connection closed with {code} while a frame was awaited")
            }
        }
    }

    /// The next frame, within 5 s.
    pub async fn recv(&mut self) -> ServerFrame {
        self.recv_within(RECV_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no frame within {RECV_TIMEOUT:?} (user {})", self.user))
    }

    /// The next frame that `pick` accepts, within `timeout`; frames it skips
    /// stay queued in order.
    pub async fn recv_matching(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pick: impl FnMut(&ServerFrame) -> bool,
    ) -> ServerFrame {
        if let Some(pos) = self.queue.iter().position(&mut pick) {
            return self.queue.remove(pos).expect("queued frame");
        }
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await {
                None => break None,
                Some(Ok(frame)) if pick(&frame) => break Some(frame),
                Some(Ok(frame)) => skipped.push(frame),
                Some(Err(code)) => panic!(
                    "closed with {code} while waiting for {what}; got meanwhile: {skipped:?}"
                ),
            }
        };
        self.queue.extend(skipped.iter().cloned());
        found.unwrap_or_else(|| {
            panic!(
                "no {what} within {timeout:?} (user {}); got meanwhile: {skipped:?}",
                self.user
            )
        })
    }

    /// The next `msg` frame (other frames stay queued).
    pub async fn recv_msg(&mut self) -> ServerFrame {
        self.recv_matching(RECV_TIMEOUT, "msg", |f| {
            matches!(f, ServerFrame::Msg { .. })
        })
        .await
    }

    /// The next `err` frame as `(id, code)` (other frames stay queued).
    pub async fn recv_err(&mut self) -> (Option<i64>, String) {
        match self
            .recv_matching(RECV_TIMEOUT, "err", |f| {
                matches!(f, ServerFrame::Err { .. })
            })
            .await
        {
            ServerFrame::Err { id, code, .. } => (id, code),
            _ => unreachable!(),
        }
    }

    /// The next `presence` event of `room` about another user, as `(user,
    /// action)`; other frames, and events about this client's own user
    /// (the gateway sends a joiner its own `join`), stay queued.
    pub async fn recv_presence(&mut self, room: &str) -> (String, String) {
        let what = format!("presence event in {room}");
        let me = self.user.clone();
        match self
            .recv_matching(RECV_TIMEOUT, &what, |f| {
                matches!(f, ServerFrame::Presence { room: r, user, .. } if r == room && *user != me)
            })
            .await
        {
            ServerFrame::Presence { user, action, .. } => (user, action),
            _ => unreachable!(),
        }
    }

    /// Sends `frame` with a fresh id and returns its `ack` or `err`; other
    /// frames that arrive meanwhile are queued for [`Client::recv`].
    pub async fn request(&mut self, frame: ClientFrame) -> ServerFrame {
        let id = self.id();
        let frame = with_id(frame, id);
        let kind = frame.kind();
        self.send(&frame).await;
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await {
                None => panic!("no answer to {kind} (id {id}) within {RECV_TIMEOUT:?}"),
                Some(Err(code)) => {
                    panic!("closed with {code} while waiting for the answer to {kind} (id {id})")
                }
                Some(Ok(reply @ ServerFrame::Ack { id: got, .. })) if got == id => return reply,
                Some(Ok(reply @ ServerFrame::Err { id: Some(got), .. })) if got == id => {
                    return reply
                }
                Some(Ok(ServerFrame::Welcome {
                    conn,
                    user,
                    node,
                    exp,
                    ..
                })) => self.take_welcome(conn, user, node, exp),
                Some(Ok(other)) => self.queue.push_back(other),
            }
        }
    }

    /// [`Client::request`] expecting an `ack`; returns its `data`.
    pub async fn ack(&mut self, frame: ClientFrame) -> J {
        let kind = frame.kind();
        match self.request(frame).await {
            ServerFrame::Ack { data, .. } => data,
            other => panic!("{kind} should be acked, got {other:?}"),
        }
    }

    /// [`Client::request`] expecting an `err`; returns its `code` and
    /// `retry_ms`.
    pub async fn err(&mut self, frame: ClientFrame) -> (String, Option<u64>) {
        let kind = frame.kind();
        match self.request(frame).await {
            ServerFrame::Err { code, retry_ms, .. } => (code, retry_ms),
            other => panic!("{kind} should fail, got {other:?}"),
        }
    }

    /// Joins `room`; returns the ack's data.
    pub async fn join(&mut self, room: &str) -> J {
        self.ack(join(room)).await
    }

    /// Publishes `data`; returns the ack's `seq`.
    pub async fn publish(&mut self, room: &str, ev: &str, data: J) -> u64 {
        let ack = self.ack(publish(room, ev, &data)).await;
        ack["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("pub ack has a seq: {ack}"))
    }

    /// A `ping` round trip (panics unless acked).
    pub async fn ping(&mut self) {
        let data = self.ack(ping()).await;
        assert!(data["ts"].as_u64().is_some(), "ping ack has ts: {data}");
    }

    /// Takes every frame queued so far.
    pub fn take_queued(&mut self) -> Vec<ServerFrame> {
        self.queue.drain(..).collect()
    }

    /// Every frame that arrives until none has come for `quiet` (queued
    /// ones first); stops at a close.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<ServerFrame> {
        let mut out = self.take_queued();
        while let Some(Ok(frame)) = self.read(quiet).await {
            out.push(frame);
        }
        out
    }

    /// Waits up to 10 s for the server to close; returns the close code
    /// (1005 without one, 1006 when the connection dropped without a close
    /// frame). Frames before the close are queued.
    pub async fn expect_close(&mut self) -> u16 {
        self.expect_close_within(Duration::from_secs(10)).await
    }

    /// [`Client::expect_close`] with another time limit.
    pub async fn expect_close_within(&mut self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await {
                None => panic!(
                    "the server did not close within {timeout:?} (user {}); frames: {:?}",
                    self.user, self.queue
                ),
                Some(Ok(frame)) => self.queue.push_back(frame),
                Some(Err(code)) => return code,
            }
        }
    }

    /// Closes the connection from this side (1000) and waits briefly for
    /// the server's answer.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// Connects to `/ws` with `token` over a bare TCP socket, sends one masked
/// close frame with `payload`, and returns the code of the server's close
/// frame exactly as sent (1005 for an empty one, 1006 when none came within
/// 5 s). For checking the closing handshake without a client library that
/// validates or rewrites what it receives.
pub async fn raw_close(addr: SocketAddr, token: &str, payload: &[u8]) -> u16 {
    assert!(payload.len() < 126, "raw_close sends short frames only");
    let mut ws = crate::raw::RawWs::connect(addr, token).await;
    ws.frame(true, crate::raw::op::CLOSE, true, payload).await;
    // Server frames before the close are skipped; no close frame (the
    // socket dropped, or nothing in time) is 1006.
    match ws.until_close(RECV_TIMEOUT).await.1 {
        crate::raw::Ending::Close(code) => code,
        crate::raw::Ending::Dropped | crate::raw::Ending::Open => CloseCode::Abnormal.code(),
    }
}

/// The `msg` fields as `(room, ev, data, seq, epoch, from)`.
pub fn msg_fields(frame: &ServerFrame) -> (&str, &str, &J, u64, &str, Option<&(String, String)>) {
    match frame {
        ServerFrame::Msg {
            room,
            ev,
            data,
            seq,
            epoch,
            from,
            ..
        } => (
            room.as_str(),
            ev.as_str(),
            data,
            *seq,
            epoch.as_str(),
            from.as_ref(),
        ),
        other => panic!("expected msg, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// HTTP

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> J {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path`, with `Authorization: Bearer <bearer>` when given.
pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> HttpResponse {
    try_http(addr, "GET", path, None, bearer)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// `POST path` with a JSON body.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    body: &J,
    bearer: Option<&str>,
) -> HttpResponse {
    try_http(addr, "POST", path, Some(body), bearer)
        .await
        .unwrap_or_else(|e| panic!("POST http://{addr}{path}: {e}"))
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&J>,
    bearer: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let body = body.map(J::to_string).unwrap_or_default();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n"));
    try_http_raw(
        addr,
        method,
        path,
        "application/json",
        &body,
        auth.as_deref(),
    )
    .await
}

/// `method path` with a text body of `content_type` (sent for any method
/// but GET); `extra` holds whole header lines (each ending in CRLF).
pub async fn http_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
    extra: Option<&str>,
) -> HttpResponse {
    try_http_raw(addr, method, path, content_type, body, extra)
        .await
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

async fn try_http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
    extra: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(extra) = extra {
            head.push_str(extra);
        }
        if method != "GET" {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |what: &str| {
        std::io::Error::other(format!(
            "bad HTTP response ({what}): {}",
            String::from_utf8_lossy(raw)
        ))
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------
// The module's view

/// One connection in a `BROKER.PRESENCE` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceConn {
    /// Connection id.
    pub conn: String,
    /// Gateway node.
    pub node: String,
    /// Rooms, sorted.
    pub rooms: Vec<String>,
}

/// `BROKER.PRESENCE user`: its connections, sorted by id (empty when
/// offline; the status is checked against the count).
pub fn presence(redis: &RedisServer, user: &str) -> Vec<PresenceConn> {
    let mut con = redis.client();
    let reply = map(&run(&mut con, Presence::new(user)));
    let mut conns: Vec<PresenceConn> = array(&reply["conns"])
        .iter()
        .map(|c| {
            let c = map(c);
            let mut rooms: Vec<String> = array(&c["rooms"]).iter().map(text).collect();
            rooms.sort();
            PresenceConn {
                conn: text(&c["conn"]),
                node: text(&c["node"]),
                rooms,
            }
        })
        .collect();
    conns.sort_by(|a, b| a.conn.cmp(&b.conn));
    let status = text(&reply["status"]);
    let expected = if conns.is_empty() {
        "offline"
    } else {
        "online"
    };
    assert_eq!(
        status,
        expected,
        "BROKER.PRESENCE {user} status with {} connections",
        conns.len()
    );
    assert_eq!(
        int(&reply["connections"]),
        conns.len() as i64,
        "BROKER.PRESENCE {user} connections"
    );
    conns
}

/// `BROKER.ONLINE` as `(users, connections)`.
pub fn online(redis: &RedisServer) -> (i64, i64) {
    let mut con = redis.client();
    let reply = map(&run(&mut con, Online));
    (int(&reply["users"]), int(&reply["connections"]))
}

/// Node ids in `BROKER.NODES`, sorted.
pub fn nodes(redis: &RedisServer) -> Vec<String> {
    let mut con = redis.client();
    let mut ids: Vec<String> = array(&run(&mut con, Nodes))
        .iter()
        .map(|n| text(&map(n)["node"]))
        .collect();
    ids.sort();
    ids
}

/// Resident memory of process `pid` in KiB (`VmRSS`), 0 when unknown.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Polls an async probe every 20 ms until it returns `Ok`; panics after
/// `timeout` with `what` and the last `Err`.
pub async fn eventually_async<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() > deadline {
                    panic!("not within {timeout:?}: {what}; last: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A member of `feed:calm`, connected before an attack or a cap is
/// reached, that checks afterwards that it still gets every message in
/// order, still answers, and that Redis is still up.
pub struct Bystander {
    /// Its connection, for a test that reads it directly.
    pub client: Client,
    /// The `feed:calm` message it expects next (a test that publishes
    /// there itself moves it on).
    pub next: u64,
}

impl Bystander {
    /// Connects user `bystander` to `gw` and joins `feed:calm`.
    pub async fn join(gw: &Gateway) -> Bystander {
        let mut client = gw.connect("bystander").await;
        client.join("feed:calm").await;
        Bystander { client, next: 1 }
    }

    /// Publishes the next message and checks it arrives in order, that a
    /// `ping` is answered and Redis answers `PING`; `after` names what
    /// happened, for the failure message.
    pub async fn still_fine(&mut self, gw: &Gateway, redis: &RedisServer, after: &str) {
        let seq = gw.publish("feed:calm", "m", json!(self.next)).await;
        assert_eq!(seq, self.next, "after {after}");
        let frame = self.client.recv_msg().await;
        assert_eq!(
            msg_fields(&frame).3,
            self.next,
            "after {after}: the bystander's stream"
        );
        self.next += 1;
        self.client.ping().await;
        assert_eq!(
            crate::text(&crate::ok(&mut redis.client(), &["PING"])),
            "PONG",
            "Redis is up after {after}"
        );
    }
}
