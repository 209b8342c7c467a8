//! The configuration's types, one per section, each with the default of
//! `docs/CONFIG.md` (so an empty file works), and the lookups the rest of
//! the gateway makes on them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

/// Full gateway configuration; every field has the contract default
/// (`docs/CONFIG.md`) so an empty file works.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listener (`/ws`, `/healthz`, `/readyz`, demo page).
    pub listen: SocketAddr,
    /// Admin listener (`/metrics`, `/api/...`); loopback by default so the
    /// admin API is not exposed by accident.
    pub admin_listen: SocketAddr,
    /// This node's id; `None` means "generate one" with [`Config::node_id`].
    pub node_id: Option<String>,
    /// Where Redis (with the module) is.
    pub redis: RedisConfig,
    /// How clients authenticate.
    pub auth: AuthConfig,
    /// Admin API protection.
    pub admin: AdminConfig,
    /// Allowed `Origin` header values for `/ws`; empty means any. The
    /// gateway's own origin is always allowed (the demo page).
    #[serde(deserialize_with = "string_or_list")]
    pub origins: Vec<String>,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` names the
    /// client; empty: the TCP peer is the client ([`crate::client_ip`]).
    #[serde(deserialize_with = "string_or_list")]
    pub trusted_proxies: Vec<String>,
    /// Per-connection and per-user limits.
    pub limits: Limits,
    /// Node lease settings.
    pub node: NodeConfig,
    /// Policy per namespace (the part of a room name before `:`).
    pub namespaces: BTreeMap<String, Namespace>,
    /// Lifecycle events POSTed to a backend (off while `url` is unset).
    pub webhooks: WebhooksConfig,
    /// Test-only switches (off by default).
    pub testing: Testing,
    /// Client `rpc` requests to the backends.
    pub rpc: RpcConfig,
    /// The Socket.IO endpoint for `socket.io-client` apps.
    pub socketio: SocketIoConfig,
}

/// Client `rpc` requests (`docs/BACKENDS.md`): appended to the stream
/// `broker:rpc`, answered by a backend with `BROKER.RPC.REPLY`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Whether clients may send `rpc` (refused `forbidden` when false).
    pub enabled: bool,
    /// How long a client waits for the answer before `err` `timeout`, ms
    /// (1 to [`super::MAX_RPC_TIMEOUT_MS`]).
    pub timeout_ms: u64,
    /// The stream's approximate cap (`XADD ... MAXLEN ~`), at least 1.
    pub stream_maxlen: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            enabled: true,
            timeout_ms: 5000,
            stream_maxlen: 100_000,
        }
    }
}

/// The Socket.IO endpoint (`docs/SOCKETIO.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Whether the public listener serves it.
    pub enabled: bool,
    /// Its path (the client's `path` option), starting and ending with `/`.
    pub path: String,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            enabled: true,
            path: "/socket.io/".to_owned(),
        }
    }
}

/// Test-only switches: never turn these on in production.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Testing {
    /// Serves `GET /echo`: a plain WebSocket echo (no auth, no protocol)
    /// for protocol conformance suites such as Autobahn.
    pub echo: bool,
    /// Overrides how long a webhook entry stays pending before another
    /// node claims it (`crate::webhooks`); `None`: the rule of
    /// `docs/CONFIG.md`. For the tests' dead-node case.
    pub webhook_claim_idle_ms: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            admin_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9091),
            node_id: None,
            redis: RedisConfig::default(),
            auth: AuthConfig::default(),
            admin: AdminConfig::default(),
            origins: Vec::new(),
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            node: NodeConfig::default(),
            namespaces: BTreeMap::new(),
            webhooks: WebhooksConfig::default(),
            testing: Testing::default(),
            rpc: RpcConfig::default(),
            socketio: SocketIoConfig::default(),
        }
    }
}

/// Redis connection: one URL for a single server, several for Redis Cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `unix://` URLs. Written as one string, a
    /// comma-separated string or a list; more than one URL means Cluster.
    #[serde(deserialize_with = "string_or_list")]
    pub url: Vec<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: vec!["redis://127.0.0.1:6379".to_owned()],
        }
    }
}

/// JWT verification settings (see `auth.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// One of [`super::ALGORITHMS`]; the only algorithm accepted (never taken from
    /// the token, which is what prevents algorithm-confusion attacks). Not
    /// used with `jwks_file` (left at its default there).
    pub algorithm: String,
    /// Shared secret for HS256/HS384/HS512.
    pub secret: Option<String>,
    /// PEM public key for RS256/ES256 (relative paths are relative to the
    /// working directory).
    pub public_key_file: Option<PathBuf>,
    /// A JWK Set (RFC 7517 JSON, `{"keys": [...]}`) instead of `secret` /
    /// `public_key_file`: each token's `kid` chooses its key, each key has
    /// its own algorithm; re-read on SIGHUP (see `crate::auth`).
    pub jwks_file: Option<PathBuf>,
    /// Expected `iss`; when set, tokens must carry it.
    pub issuer: Option<String>,
    /// Expected `aud`; when set, tokens must carry it.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Connections without a token are accepted (as anonymous users).
    pub allow_anonymous: bool,
    /// The demo page may mint tokens with a per-process random secret; only
    /// for development, refused when a real secret or key is configured.
    pub dev_tokens: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithm: "HS256".to_owned(),
            secret: None,
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_s: 30,
            allow_anonymous: false,
            dev_tokens: false,
        }
    }
}

/// Admin listener protection.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// When set, admin requests need `Authorization: Bearer <api_key>`.
    /// Required when `admin_listen` is not a loopback address.
    pub api_key: Option<String>,
}

/// Limits that protect the gateway from one client or one user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message accepted, in bytes (after reassembly of
    /// fragments); larger closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Rooms one connection may be in (besides its personal room).
    pub max_rooms_per_conn: u32,
    /// Frames queued for one connection before it counts as a slow consumer
    /// and is closed with 4008.
    pub send_queue: usize,
    /// Bytes queued for one connection before it counts as a slow consumer
    /// and is closed with 4008, whatever the frame count.
    pub send_queue_bytes: usize,
    /// Seconds between server pings.
    pub ping_interval_s: u64,
    /// Seconds without any frame from the client before it is closed.
    pub idle_timeout_s: u64,
    /// Connections one user may hold at once (all nodes).
    pub max_conns_per_user: u32,
    /// Connections one IP may hold at once (all nodes).
    pub max_conns_per_ip: u32,
    /// Connections one client address may hold on this node while they
    /// have not sent their `auth` frame yet.
    pub max_preauth_per_ip: u32,
    /// WebSocket connections this node holds at once, authenticated or
    /// not (from before the upgrade until the socket is closed); over it
    /// an upgrade is answered HTTP 503. 0: as many as the open-file limit
    /// allows, minus a reserve for Redis, the admin listener and files
    /// ([`crate::fd_limit`]).
    pub max_conns: u32,
    /// IPv6 clients count by network, not by address, for the per-IP
    /// limits: the first this many bits of the address (0..=128; 128 counts
    /// each address alone). IPv4 counts per address.
    pub ipv6_prefix_len: u8,
    /// Every request of a connection but `pub` (which its namespace's
    /// `rate` limits): `count` per `period_s`, `burst` back to back; over
    /// it `err` `rate_limited` with `retry_ms`.
    pub requests: RateConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 65_536,
            max_rooms_per_conn: 100,
            send_queue: 1024,
            send_queue_bytes: 1_048_576,
            ping_interval_s: 25,
            idle_timeout_s: 60,
            max_conns_per_user: 5,
            max_conns_per_ip: 20,
            max_preauth_per_ip: 20,
            max_conns: 0,
            ipv6_prefix_len: 64,
            requests: RateConfig {
                count: 200,
                period_s: 10,
                burst: 50,
            },
        }
    }
}

/// Node lease: how long the module keeps this node's connections alive
/// without a heartbeat; and the presence grace of its departing users.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Lease period in milliseconds (at least [`super::MIN_LEASE_MS`]).
    pub lease_ms: u64,
    /// When a connection of this node ends (or the node stops), how long
    /// its user stays present in its rooms before the `leave` event goes
    /// out; a reconnect within it makes no leave/join pair. 0 (the
    /// default) sends `leave` at once. At most
    /// [`super::MAX_PRESENCE_GRACE_MS`].
    pub presence_grace_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            lease_ms: 5000,
            presence_grace_ms: 0,
        }
    }
}

/// The lifecycle event types of the module's stream, in the contract's
/// order: what `webhooks.events` may name, and its default.
pub const EVENT_TYPES: [&str; 6] = [
    "connect",
    "disconnect",
    "join",
    "leave",
    "online",
    "offline",
];

/// `[webhooks]`: the lifecycle stream POSTed to one URL (`crate::webhooks`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where batches are POSTed (`http://` only); unset: webhooks are off.
    pub url: Option<String>,
    /// Key of the `X-Broker-Signature` HMAC-SHA256; required with `url`.
    pub secret: Option<String>,
    /// Event types POSTed; entries of other types are acknowledged
    /// without a POST.
    #[serde(deserialize_with = "string_or_list")]
    pub events: Vec<String>,
    /// Most entries in one POST (1..=[`super::MAX_WEBHOOK_BATCH`]).
    pub batch_max: usize,
    /// How long one POST may take, connecting and reading the answer
    /// included, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            url: None,
            secret: None,
            events: EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            batch_max: 100,
            timeout_ms: 3000,
        }
    }
}

/// Who may join rooms of a namespace (`docs/PROTOCOL.md` §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinPolicy {
    /// Anyone authenticated.
    Public,
    /// Holders of one of the namespace's `roles`.
    Roles,
    /// Rooms listed in the token's `rooms` claim (exact or `prefix*`).
    Claim,
}

/// Who may `pub` from a client into rooms of a namespace (server-side
/// publishing is always allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishPolicy {
    /// Members of the room.
    Members,
    /// Members holding one of the namespace's `roles`.
    Roles,
    /// No client; only the admin API and `BROKER.PUBLISH`.
    Server,
}

/// Per-user publish rate in a namespace: `count` per `period_s` on average,
/// at most `burst` back to back (GCRA bucket size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Messages per period.
    pub count: u32,
    /// Period in seconds.
    pub period_s: u64,
    /// Bucket size: messages allowed back to back.
    pub burst: u32,
}

/// Policy of one namespace (`docs/PROTOCOL.md` §7). Defaults for a namespace that has
/// a table but omits keys, and for namespaces without a table: join=public,
/// roles=[], publish=members, presence=true, join_leave=true, history=0,
/// history_ttl_s=300, rate=None, max_payload=65536.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Namespace {
    /// Who may join.
    pub join: JoinPolicy,
    /// Roles for `join = "roles"` and `publish = "roles"`.
    #[serde(deserialize_with = "string_or_list")]
    pub roles: Vec<String>,
    /// Who may publish from a client.
    pub publish: PublishPolicy,
    /// Whether `presence` requests are allowed.
    pub presence: bool,
    /// Whether members get `presence` join/leave events.
    pub join_leave: bool,
    /// Messages kept per room for `history` and recovery (0 = none).
    pub history: u32,
    /// How long kept messages live, in seconds.
    pub history_ttl_s: u64,
    /// Per-user publish limit; `None` = unlimited.
    pub rate: Option<RateConfig>,
    /// Largest `data` of a client `pub`, in bytes.
    pub max_payload: usize,
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace {
            join: JoinPolicy::Public,
            roles: Vec::new(),
            publish: PublishPolicy::Members,
            presence: true,
            join_leave: true,
            history: 0,
            history_ttl_s: 300,
            rate: None,
            max_payload: 65_536,
        }
    }
}

impl Config {
    /// The policy for `namespace` (its table, or the default policy). The
    /// personal namespace `user` gets owner-only handling elsewhere; here it
    /// is treated like any other.
    pub fn namespace(&self, namespace: &str) -> Namespace {
        self.namespaces.get(namespace).cloned().unwrap_or_default()
    }

    /// `node_id`, or a generated one: `gw-` + 8 random lowercase hex chars.
    /// A generated id differs on every call, so call this once at start-up
    /// and keep the result.
    pub fn node_id(&self) -> String {
        match &self.node_id {
            Some(id) => id.clone(),
            None => format!("gw-{:08x}", rand::random::<u32>()),
        }
    }
}

/// Deserializes a list of strings written either as a list or as one string;
/// a string is split on commas (so `BROKER_REDIS__URL=redis://a:1,redis://b:2`
/// works), blanks around entries are trimmed, empty entries dropped.
fn string_or_list<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(list) => list,
    })
}
