//! Gateway configuration: defaults ← TOML file ← `BROKER_*` environment.
//!
//! Every key has the default of `docs/CONFIG.md`, so the gateway
//! starts with no file at all. A TOML file (`--config FILE`) overrides the
//! defaults, and environment variables override the file:
//! `BROKER_<KEY>` with `__` for each dot, e.g. `BROKER_REDIS__URL`,
//! `BROKER_LIMITS__SEND_QUEUE`, `BROKER_AUTH__SECRET`. Environment values are
//! strings; numbers and booleans are parsed from them (`true`/`false`,
//! `yes`/`no`, `on`/`off`, `1`/`0`), and list keys (`redis.url`, `origins`,
//! `roles`) also accept one comma-separated string.
//!
//! Unknown keys in the file, and unknown keys *inside* a known section in the
//! environment (`BROKER_LIMITS__SEND_QUEU`), are errors, so typos do not pass
//! silently. Environment variables whose first part names no section at all
//! (`BROKER_MODULE`, `BROKER_MODULE_ARGS`, used by the scripts and tests for
//! other things) are ignored.
//!
//! After loading, [`Config::validate`] checks the values together (the auth
//! set-up, limits, namespace names and policies) so that a bad configuration
//! stops the gateway at start-up with every problem listed, rather than
//! failing later on a client's request.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;
use thiserror::Error;

use crate::client_ip::TrustedProxies;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "BROKER_";

/// Largest accepted `auth.leeway_s`: a day. More would make `exp` almost
/// meaningless (and large values overflow the JWT library's time checks).
pub const MAX_LEEWAY_S: u64 = 86_400;

/// Smallest accepted `node.lease_ms`: the gateway renews its lease several
/// times per period, which needs some room.
pub const MIN_LEASE_MS: u64 = 300;

/// JWT algorithms the gateway accepts in `auth.algorithm`.
pub const ALGORITHMS: [&str; 5] = ["HS256", "HS384", "HS512", "RS256", "ES256"];

/// Top-level keys, i.e. the sections an environment variable may address.
const TOP_LEVEL_KEYS: [&str; 12] = [
    "listen",
    "admin_listen",
    "node_id",
    "redis",
    "auth",
    "admin",
    "origins",
    "trusted_proxies",
    "limits",
    "testing",
    "node",
    "namespaces",
];

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
    /// Test-only switches (off by default).
    pub testing: Testing,
}

/// Test-only switches: never turn these on in production.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Testing {
    /// Serves `GET /echo`: a plain WebSocket echo (no auth, no protocol)
    /// for protocol conformance suites such as Autobahn.
    pub echo: bool,
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
            testing: Testing::default(),
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
    /// One of [`ALGORITHMS`]; the only algorithm accepted (never taken from
    /// the token, which is what prevents algorithm-confusion attacks).
    pub algorithm: String,
    /// Shared secret for HS256/HS384/HS512.
    pub secret: Option<String>,
    /// PEM public key for RS256/ES256 (relative paths are relative to the
    /// working directory).
    pub public_key_file: Option<PathBuf>,
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
    /// Seconds between server pings.
    pub ping_interval_s: u64,
    /// Seconds without any frame from the client before it is closed.
    pub idle_timeout_s: u64,
    /// Connections one user may hold at once (all nodes).
    pub max_conns_per_user: u32,
    /// Connections one IP may hold at once (all nodes).
    pub max_conns_per_ip: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 65_536,
            max_rooms_per_conn: 100,
            send_queue: 1024,
            ping_interval_s: 25,
            idle_timeout_s: 60,
            max_conns_per_user: 5,
            max_conns_per_ip: 20,
        }
    }
}

/// Node lease: how long the module keeps this node's connections alive
/// without a heartbeat; and the presence grace of its departing users.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Lease period in milliseconds (at least [`MIN_LEASE_MS`]).
    pub lease_ms: u64,
    /// When a connection of this node ends (or the node stops), how long
    /// its user stays present in its rooms before the `leave` event goes
    /// out; a reconnect within it makes no leave/join pair. 0 (the
    /// default) sends `leave` at once. At most [`MAX_PRESENCE_GRACE_MS`].
    pub presence_grace_ms: u64,
}

/// Largest accepted `node.presence_grace_ms` (the module's own limit).
pub const MAX_PRESENCE_GRACE_MS: u64 = 3_600_000;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            lease_ms: 5000,
            presence_grace_ms: 0,
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

/// Why the configuration could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type
    /// (figment's message, naming the key and its source).
    #[error("cannot load configuration: {0}")]
    Load(String),
    /// The values were read but do not make sense together; lists every
    /// problem found, separated by `; `.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults ← TOML file (if given) ← env vars `BROKER_<KEY>` with
    /// `__` for dots (e.g. `BROKER_REDIS__URL`, `BROKER_LIMITS__SEND_QUEUE`,
    /// `BROKER_AUTH__SECRET`). Then [`Config::validate`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::Load`] when the file cannot be read or parsed or a
    /// value has the wrong type; [`ConfigError::Invalid`] from `validate`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| has_env_prefix(k))
            .collect();
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    ConfigError::Load(format!("cannot read {}: {err}", path.display()))
                })?;
                let name = format!("TOML file {}", path.display());
                build(
                    Some((&text, name, figment::Source::File(path.to_owned()))),
                    &env,
                )
            }
            None => build(None, &env),
        }
    }

    /// Same as [`Config::load`] from a TOML string and an explicit env map
    /// (for tests: they must not change the process environment). Only the
    /// pairs whose name starts with `BROKER_` are used.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn from_sources(
        toml: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let source = toml.map(|text| {
            (
                text,
                "TOML source string".to_owned(),
                figment::Source::Custom("string".to_owned()),
            )
        });
        build(source, env)
    }

    /// Checks the values together: the JWT algorithm and its key (HS* need
    /// `secret` unless `dev_tokens` or `allow_anonymous`; RS256/ES256 need
    /// `public_key_file`; `dev_tokens` is refused with a real secret or key),
    /// positive limits, valid namespace names and policies, positive rate
    /// parameters, `lease_ms >= 300`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] listing every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.check_listeners(&mut problems);
        self.check_auth(&mut problems);
        self.check_limits(&mut problems);
        if let Err(problem) = TrustedProxies::parse(&self.trusted_proxies) {
            problems.push(format!("trusted_proxies: {problem}"));
        }
        for (name, ns) in &self.namespaces {
            check_namespace(name, ns, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

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

    /// Listener addresses, node id and Redis URLs.
    fn check_listeners(&self, problems: &mut Vec<String>) {
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            problems.push("listen and admin_listen must differ".to_owned());
        }
        if let Some(id) = &self.node_id {
            if broker::names::validate_node(id).is_err() {
                problems.push(format!(
                    "node_id {id:?} must be 1-64 characters of [A-Za-z0-9._-]"
                ));
            }
        }
        if self.redis.url.is_empty() {
            problems.push("redis.url must name at least one URL".to_owned());
        }
        for url in &self.redis.url {
            let known = ["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme));
            if !known {
                // The URL may hold a password: name only its position.
                problems.push(
                    "redis.url entries must start with redis://, rediss:// or unix://".to_owned(),
                );
                break;
            }
        }
        for origin in &self.origins {
            if origin.is_empty() || origin.ends_with('/') || origin.contains(char::is_whitespace) {
                problems.push(format!(
                    "origins entry {origin:?} must look like https://host[:port] (no path, no trailing slash)"
                ));
            }
        }
        if self.admin.api_key.as_deref() == Some("") {
            problems.push("admin.api_key must not be empty (omit it to disable)".to_owned());
        }
    }

    /// The JWT set-up: algorithm, key material, dev tokens, leeway.
    fn check_auth(&self, problems: &mut Vec<String>) {
        let auth = &self.auth;
        if !ALGORITHMS.contains(&auth.algorithm.as_str()) {
            problems.push(format!(
                "auth.algorithm {:?} is not one of {}",
                auth.algorithm,
                ALGORITHMS.join(", ")
            ));
        }
        let hmac = auth.algorithm.starts_with("HS");
        let secret = auth.secret.is_some();
        let key = auth.public_key_file.is_some();
        if auth.secret.as_deref() == Some("") {
            problems.push("auth.secret must not be empty".to_owned());
        }
        if hmac {
            if !secret && !auth.dev_tokens && !auth.allow_anonymous {
                problems.push(format!(
                    "auth.algorithm {} needs auth.secret (or auth.dev_tokens / auth.allow_anonymous)",
                    auth.algorithm
                ));
            }
            if key {
                problems.push(format!(
                    "auth.public_key_file is set but auth.algorithm {} uses auth.secret",
                    auth.algorithm
                ));
            }
        } else if ALGORITHMS.contains(&auth.algorithm.as_str()) {
            if !key {
                problems.push(format!(
                    "auth.algorithm {} needs auth.public_key_file",
                    auth.algorithm
                ));
            }
            if secret {
                problems.push(format!(
                    "auth.secret is set but auth.algorithm {} uses auth.public_key_file",
                    auth.algorithm
                ));
            }
        }
        if auth.dev_tokens {
            if secret || key {
                problems
                    .push("auth.dev_tokens is refused when a real secret is configured".to_owned());
            } else if auth.algorithm != "HS256" {
                problems.push("auth.dev_tokens needs auth.algorithm = \"HS256\"".to_owned());
            }
        }
        if auth.issuer.as_deref() == Some("") {
            problems.push("auth.issuer must not be empty (omit it to disable)".to_owned());
        }
        if auth.audience.as_deref() == Some("") {
            problems.push("auth.audience must not be empty (omit it to disable)".to_owned());
        }
        if auth.leeway_s > MAX_LEEWAY_S {
            problems.push(format!("auth.leeway_s must be at most {MAX_LEEWAY_S}"));
        }
    }

    /// Limits and the node lease.
    fn check_limits(&self, problems: &mut Vec<String>) {
        let l = &self.limits;
        let positive: [(&str, u64); 7] = [
            ("max_frame_bytes", l.max_frame_bytes as u64),
            ("max_rooms_per_conn", u64::from(l.max_rooms_per_conn)),
            ("send_queue", l.send_queue as u64),
            ("ping_interval_s", l.ping_interval_s),
            ("idle_timeout_s", l.idle_timeout_s),
            ("max_conns_per_user", u64::from(l.max_conns_per_user)),
            ("max_conns_per_ip", u64::from(l.max_conns_per_ip)),
        ];
        for (key, value) in positive {
            if value == 0 {
                problems.push(format!("limits.{key} must be greater than 0"));
            }
        }
        if l.ping_interval_s > 0 && l.idle_timeout_s > 0 && l.idle_timeout_s <= l.ping_interval_s {
            problems.push(
                "limits.idle_timeout_s must be greater than limits.ping_interval_s".to_owned(),
            );
        }
        if self.node.lease_ms < MIN_LEASE_MS {
            problems.push(format!("node.lease_ms must be at least {MIN_LEASE_MS}"));
        }
        if self.node.presence_grace_ms > MAX_PRESENCE_GRACE_MS {
            problems.push(format!(
                "node.presence_grace_ms must be at most {MAX_PRESENCE_GRACE_MS}"
            ));
        }
    }
}

/// One `[namespaces.<name>]` table.
fn check_namespace(name: &str, ns: &Namespace, problems: &mut Vec<String>) {
    if broker::names::validate_namespace(name).is_err() {
        problems.push(format!(
            "namespace {name:?} must be 1-64 characters of [A-Za-z0-9_-]"
        ));
    }
    let uses_roles = ns.join == JoinPolicy::Roles || ns.publish == PublishPolicy::Roles;
    if uses_roles && ns.roles.is_empty() {
        problems.push(format!(
            "namespaces.{name}: join or publish = \"roles\" needs a non-empty roles list"
        ));
    }
    if ns.roles.iter().any(String::is_empty) {
        problems.push(format!("namespaces.{name}.roles must not hold empty names"));
    }
    if ns.history > 0 && ns.history_ttl_s == 0 {
        problems.push(format!(
            "namespaces.{name}.history_ttl_s must be greater than 0 when history is kept"
        ));
    }
    if ns.max_payload == 0 {
        problems.push(format!(
            "namespaces.{name}.max_payload must be greater than 0"
        ));
    }
    if let Some(rate) = &ns.rate {
        if rate.count == 0 || rate.period_s == 0 || rate.burst == 0 {
            problems.push(format!(
                "namespaces.{name}.rate: count, period_s and burst must be greater than 0"
            ));
        }
    }
}

/// The shared loading path of [`Config::load`] and [`Config::from_sources`]:
/// defaults, then the TOML text (with a name for error messages), then the
/// environment, then `validate`.
fn build(
    toml: Option<(&str, String, figment::Source)>,
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    if let Some((text, name, source)) = toml {
        figment = figment.merge(Named {
            inner: Toml::string(text),
            metadata: Metadata::from(name, source),
        });
    }
    figment = figment.merge(EnvMap::new(env));
    // Lossy: the environment only has strings, so "8" must become 8 and
    // "true" must become true where the field wants a number or a bool.
    let config: Config = figment.extract_lossy().map_err(|err| {
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        ConfigError::Load(messages.join("; "))
    })?;
    config.validate()?;
    Ok(config)
}

/// True when `name` starts with [`ENV_PREFIX`], ignoring ASCII case.
fn has_env_prefix(name: &str) -> bool {
    name.len() >= ENV_PREFIX.len()
        && name.as_bytes()[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX.as_bytes())
}

/// A provider with a chosen name in error messages (e.g. the file's path).
struct Named<P> {
    inner: P,
    metadata: Metadata,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

/// The `BROKER_*` variables as a figment provider.
///
/// figment's own `Env` reads only the process environment; this one takes an
/// explicit list so tests can pass their own. Keys follow `Env::prefixed(..)
/// .split("__")`: prefix removed, lowercased, `__` becomes a dot. Values stay
/// strings (read with `extract_lossy`), so a secret such as `123456` stays a
/// string.
struct EnvMap {
    /// `(dotted.key, value)` pairs, sorted by key for a deterministic merge.
    pairs: Vec<(String, String)>,
}

impl EnvMap {
    /// Keeps the variables with the prefix whose first key names a section.
    fn new(env: &[(String, String)]) -> EnvMap {
        let mut pairs: Vec<(String, String)> = env
            .iter()
            .filter(|(name, _)| has_env_prefix(name))
            .filter_map(|(name, value)| {
                let key = name[ENV_PREFIX.len()..]
                    .trim()
                    .to_ascii_lowercase()
                    .replace("__", ".");
                if key.split('.').any(str::is_empty) {
                    return None;
                }
                let section = key.split('.').next().unwrap_or_default();
                TOP_LEVEL_KEYS
                    .contains(&section)
                    .then(|| (key, value.clone()))
            })
            .collect();
        pairs.sort();
        EnvMap { pairs }
    }
}

impl Provider for EnvMap {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)").interpolater(|_: &Profile, keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("{ENV_PREFIX}{}", keys.join("__"))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in &self.pairs {
            insert_path(&mut dict, key, Value::from(value.clone()));
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Sets `dict[a][b][c] = value` for `path` `a.b.c`, creating (or replacing
/// non-table values with) tables on the way.
fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The smallest valid auth set-up, so tests can focus on other keys.
    const SECRET: &str = "auth.secret = \"0123456789abcdef0123456789abcdef\"\n";

    fn load(toml: &str) -> Result<Config, ConfigError> {
        Config::from_sources(Some(toml), &[])
    }

    fn invalid(toml: &str) -> String {
        match load(toml) {
            Err(ConfigError::Invalid(msg)) => msg,
            other => panic!("expected Invalid for {toml:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:9091".parse().unwrap());
        assert_eq!(c.node_id, None);
        assert_eq!(c.redis.url, vec!["redis://127.0.0.1:6379"]);
        assert_eq!(c.auth.algorithm, "HS256");
        assert_eq!(c.auth.secret, None);
        assert_eq!(c.auth.public_key_file, None);
        assert_eq!(c.auth.issuer, None);
        assert_eq!(c.auth.audience, None);
        assert_eq!(c.auth.leeway_s, 30);
        assert!(!c.auth.allow_anonymous);
        assert!(!c.auth.dev_tokens);
        assert_eq!(c.admin.api_key, None);
        assert!(c.origins.is_empty());
        assert_eq!(c.limits.max_frame_bytes, 65536);
        assert_eq!(c.limits.max_rooms_per_conn, 100);
        assert_eq!(c.limits.send_queue, 1024);
        assert_eq!(c.limits.ping_interval_s, 25);
        assert_eq!(c.limits.idle_timeout_s, 60);
        assert_eq!(c.limits.max_conns_per_user, 5);
        assert_eq!(c.limits.max_conns_per_ip, 20);
        assert_eq!(c.node.lease_ms, 5000);
        assert!(c.namespaces.is_empty());
    }

    #[test]
    fn empty_file_gives_defaults_except_that_hs256_needs_a_secret() {
        // Defaults alone have no secret: refused, with a helpful message.
        let msg = match Config::from_sources(None, &[]) {
            Err(ConfigError::Invalid(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert!(msg.contains("needs auth.secret"), "{msg}");
        // An empty file plus a secret from the environment is the default.
        let c = Config::from_sources(Some(""), &env(&[("BROKER_AUTH__SECRET", "s3cret")])).unwrap();
        let expected = Config {
            auth: AuthConfig {
                secret: Some("s3cret".into()),
                ..AuthConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(c, expected);
        // Dev mode needs nothing else.
        let c = Config::from_sources(None, &env(&[("BROKER_AUTH__DEV_TOKENS", "true")])).unwrap();
        assert!(c.auth.dev_tokens);
    }

    #[test]
    fn full_file_is_read() {
        let c = load(
            r#"
            listen = "0.0.0.0:80"
            admin_listen = "127.0.0.1:9000"
            node_id = "gw-east-1"
            origins = ["https://example.com", "http://localhost:3000"]
            [redis]
            url = ["redis://a:7000", "redis://b:7001"]
            [auth]
            algorithm = "HS512"
            secret = "k"
            issuer = "me"
            audience = "you"
            leeway_s = 5
            allow_anonymous = true
            [admin]
            api_key = "adm"
            [limits]
            max_frame_bytes = 1000
            max_rooms_per_conn = 3
            send_queue = 16
            ping_interval_s = 10
            idle_timeout_s = 30
            max_conns_per_user = 2
            max_conns_per_ip = 4
            [node]
            lease_ms = 300
            presence_grace_ms = 15000
            [namespaces.chat]
            history = 100
            rate = { count = 20, period_s = 10, burst = 5 }
            max_payload = 16384
            [namespaces.orders]
            join = "claim"
            publish = "server"
            history = 50
            [namespaces.admin]
            join = "roles"
            roles = ["admin"]
            publish = "roles"
            presence = false
            join_leave = false
            "#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(c.admin_listen.port(), 9000);
        assert_eq!(c.node_id(), "gw-east-1");
        assert_eq!(c.origins.len(), 2);
        assert_eq!(c.redis.url, vec!["redis://a:7000", "redis://b:7001"]);
        assert_eq!(c.auth.algorithm, "HS512");
        assert_eq!(c.auth.issuer.as_deref(), Some("me"));
        assert_eq!(c.auth.audience.as_deref(), Some("you"));
        assert_eq!(c.auth.leeway_s, 5);
        assert!(c.auth.allow_anonymous);
        assert_eq!(c.admin.api_key.as_deref(), Some("adm"));
        assert_eq!(
            c.limits,
            Limits {
                max_frame_bytes: 1000,
                max_rooms_per_conn: 3,
                send_queue: 16,
                ping_interval_s: 10,
                idle_timeout_s: 30,
                max_conns_per_user: 2,
                max_conns_per_ip: 4,
            }
        );
        assert_eq!(c.node.lease_ms, 300);
        assert_eq!(c.node.presence_grace_ms, 15000);

        let chat = c.namespace("chat");
        assert_eq!(chat.join, JoinPolicy::Public);
        assert_eq!(chat.publish, PublishPolicy::Members);
        assert!(chat.presence && chat.join_leave);
        assert_eq!((chat.history, chat.history_ttl_s), (100, 300));
        assert_eq!(
            chat.rate,
            Some(RateConfig {
                count: 20,
                period_s: 10,
                burst: 5
            })
        );
        assert_eq!(chat.max_payload, 16384);

        let orders = c.namespace("orders");
        assert_eq!(orders.join, JoinPolicy::Claim);
        assert_eq!(orders.publish, PublishPolicy::Server);
        assert_eq!(orders.history, 50);

        let admin = c.namespace("admin");
        assert_eq!(admin.join, JoinPolicy::Roles);
        assert_eq!(admin.roles, vec!["admin"]);
        assert_eq!(admin.publish, PublishPolicy::Roles);
        assert!(!admin.presence && !admin.join_leave);
    }

    #[test]
    fn namespaces_without_table_get_the_default_policy() {
        let c = load(SECRET).unwrap();
        assert_eq!(c.namespace("anything"), Namespace::default());
        assert_eq!(c.namespace("user"), Namespace::default());
        let d = Namespace::default();
        assert_eq!(d.join, JoinPolicy::Public);
        assert!(d.roles.is_empty());
        assert_eq!(d.publish, PublishPolicy::Members);
        assert!(d.presence && d.join_leave);
        assert_eq!((d.history, d.history_ttl_s), (0, 300));
        assert_eq!(d.rate, None);
        assert_eq!(d.max_payload, 65536);
        // A table that omits keys gets the same defaults for them.
        let c = load(&format!("{SECRET}[namespaces.x]\nhistory = 3\n")).unwrap();
        assert_eq!(
            c.namespace("x"),
            Namespace {
                history: 3,
                ..Namespace::default()
            }
        );
    }

    #[test]
    fn env_overrides_file() {
        let toml = format!("{SECRET}[limits]\nsend_queue = 10\n[namespaces.chat]\nhistory = 5\n");
        let c = Config::from_sources(
            Some(&toml),
            &env(&[
                ("BROKER_LIMITS__SEND_QUEUE", "77"),
                ("BROKER_LISTEN", "0.0.0.0:1234"),
                ("BROKER_ADMIN_LISTEN", "127.0.0.1:4321"),
                ("BROKER_NODE_ID", "gw-x"),
                ("BROKER_NODE__LEASE_MS", "900"),
                ("BROKER_AUTH__ALLOW_ANONYMOUS", "yes"),
                ("BROKER_AUTH__SECRET", "123456"),
                ("BROKER_NAMESPACES__CHAT__RATE__COUNT", "4"),
                ("BROKER_NAMESPACES__CHAT__RATE__PERIOD_S", "1"),
                ("BROKER_NAMESPACES__CHAT__RATE__BURST", "2"),
                ("BROKER_NAMESPACES__CHAT__JOIN", "claim"),
                ("BROKER_ORIGINS", "https://a.example, https://b.example"),
                ("BROKER_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.send_queue, 77);
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.admin_listen.port(), 4321);
        assert_eq!(c.node_id.as_deref(), Some("gw-x"));
        assert_eq!(c.node.lease_ms, 900);
        assert!(c.auth.allow_anonymous);
        // A numeric-looking secret stays a string.
        assert_eq!(c.auth.secret.as_deref(), Some("123456"));
        let chat = c.namespace("chat");
        assert_eq!(chat.history, 5, "file value kept beside env values");
        assert_eq!(chat.join, JoinPolicy::Claim);
        assert_eq!(
            chat.rate,
            Some(RateConfig {
                count: 4,
                period_s: 1,
                burst: 2
            })
        );
        assert_eq!(c.origins, vec!["https://a.example", "https://b.example"]);
        assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8", "127.0.0.1"]);
    }

    #[test]
    fn redis_url_forms() {
        let one = Config::from_sources(
            Some(&format!("{SECRET}[redis]\nurl = \"redis://h:1\"\n")),
            &[],
        )
        .unwrap();
        assert_eq!(one.redis.url, vec!["redis://h:1"]);
        let list = Config::from_sources(
            Some(&format!(
                "{SECRET}[redis]\nurl = [\"redis://a:1\", \"redis://b:2\"]\n"
            )),
            &[],
        )
        .unwrap();
        assert_eq!(list.redis.url, vec!["redis://a:1", "redis://b:2"]);
        let from_env = Config::from_sources(
            Some(SECRET),
            &env(&[("BROKER_REDIS__URL", "redis://a:1,redis://b:2,redis://c:3")]),
        )
        .unwrap();
        assert_eq!(
            from_env.redis.url,
            vec!["redis://a:1", "redis://b:2", "redis://c:3"]
        );
        let single_env = Config::from_sources(
            Some(SECRET),
            &env(&[("broker_redis__url", "unix:///tmp/r.sock")]),
        )
        .unwrap();
        assert_eq!(single_env.redis.url, vec!["unix:///tmp/r.sock"]);
        let msg = invalid(&format!("{SECRET}[redis]\nurl = []\n"));
        assert!(msg.contains("at least one URL"), "{msg}");
        let msg = invalid(&format!("{SECRET}[redis]\nurl = \"http://user:pw@h\"\n"));
        assert!(msg.contains("redis.url"), "{msg}");
        assert!(!msg.contains("pw"), "password must not be echoed: {msg}");
    }

    #[test]
    fn unrelated_broker_env_vars_are_ignored_but_typos_in_sections_are_not() {
        let c = Config::from_sources(
            Some(SECRET),
            &env(&[
                ("BROKER_MODULE", "/x/libbroker_module.so"),
                ("BROKER_MODULE_ARGS", "HISTORY chat 100 300"),
                ("BROKER_", "x"),
                ("BROKER_LIMITS____X", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits, Limits::default());
        match Config::from_sources(Some(SECRET), &env(&[("BROKER_LIMITS__SEND_QUEU", "1")])) {
            Err(ConfigError::Load(msg)) => assert!(msg.contains("send_queu"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_types_and_unknown_keys_are_load_errors() {
        for (toml, env_pairs, needle) in [
            ("bogus = 1\n", vec![], "bogus"),
            ("[limits]\nsend_queue = \"many\"\n", vec![], "send_queue"),
            ("[limits]\nnope = 1\n", vec![], "nope"),
            (
                "[namespaces.chat]\njoin = \"everyone\"\n",
                vec![],
                "everyone",
            ),
            (
                "[namespaces.chat]\nrate = { count = 1 }\n",
                vec![],
                "period_s",
            ),
            ("listen = \"not an address\"\n", vec![], "listen"),
            ("this is not toml", vec![], "TOML"),
            (
                "",
                vec![("BROKER_LIMITS__SEND_QUEUE", "-1")],
                "BROKER_LIMITS__SEND_QUEUE",
            ),
            (
                "",
                vec![("BROKER_AUTH__DEV_TOKENS", "maybe")],
                "BROKER_AUTH__DEV_TOKENS",
            ),
        ] {
            let text = format!("{SECRET}{toml}");
            match Config::from_sources(Some(&text), &env(&env_pairs)) {
                Err(ConfigError::Load(msg)) => {
                    assert!(msg.contains(needle), "{toml:?}: {msg}")
                }
                other => panic!("{toml:?}: expected Load error, got {other:?}"),
            }
        }
    }

    #[test]
    fn load_reads_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, format!("{SECRET}[limits]\nsend_queue = 9\n")).unwrap();
        // The process environment may hold BROKER_* variables of the test
        // runner; only assert on a key that none of them plausibly sets.
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(
            c.auth.secret.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        let missing = dir.path().join("missing.toml");
        match Config::load(Some(&missing)) {
            Err(ConfigError::Load(msg)) => assert!(msg.contains("missing.toml"), "{msg}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "[limits]\nsend_queue = \"x\"\n").unwrap();
        match Config::load(Some(&path)) {
            Err(ConfigError::Load(msg)) => assert!(msg.contains("gateway.toml"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auth_validation() {
        let ok = [
            "[auth]\nsecret = \"s\"\n",
            "[auth]\nalgorithm = \"HS384\"\nsecret = \"s\"\n",
            "[auth]\nalgorithm = \"HS512\"\nallow_anonymous = true\n",
            "[auth]\ndev_tokens = true\n",
            "[auth]\nalgorithm = \"RS256\"\npublic_key_file = \"k.pem\"\n",
            "[auth]\nalgorithm = \"ES256\"\npublic_key_file = \"k.pem\"\n",
        ];
        for toml in ok {
            assert!(load(toml).is_ok(), "{toml:?}: {:?}", load(toml));
        }
        let bad = [
            (
                "[auth]\nalgorithm = \"none\"\nsecret = \"s\"\n",
                "auth.algorithm",
            ),
            ("[auth]\nalgorithm = \"PS256\"\n", "auth.algorithm"),
            ("[auth]\nalgorithm = \"HS256\"\n", "needs auth.secret"),
            (
                "[auth]\nalgorithm = \"RS256\"\n",
                "needs auth.public_key_file",
            ),
            (
                "[auth]\nalgorithm = \"ES256\"\nallow_anonymous = true\n",
                "needs auth.public_key_file",
            ),
            (
                "[auth]\nalgorithm = \"RS256\"\npublic_key_file = \"k\"\nsecret = \"s\"\n",
                "auth.secret is set",
            ),
            (
                "[auth]\nsecret = \"s\"\npublic_key_file = \"k\"\n",
                "auth.public_key_file is set",
            ),
            (
                "[auth]\nsecret = \"s\"\ndev_tokens = true\n",
                "auth.dev_tokens is refused when a real secret is configured",
            ),
            (
                "[auth]\nalgorithm = \"RS256\"\npublic_key_file = \"k\"\ndev_tokens = true\n",
                "auth.dev_tokens is refused when a real secret is configured",
            ),
            (
                "[auth]\nalgorithm = \"HS512\"\ndev_tokens = true\n",
                "HS256",
            ),
            ("[auth]\nsecret = \"\"\n", "auth.secret must not be empty"),
            ("[auth]\nsecret = \"s\"\nissuer = \"\"\n", "auth.issuer"),
            ("[auth]\nsecret = \"s\"\naudience = \"\"\n", "auth.audience"),
            (
                "[auth]\nsecret = \"s\"\nleeway_s = 100000\n",
                "auth.leeway_s",
            ),
        ];
        for (toml, needle) in bad {
            let msg = invalid(toml);
            assert!(msg.contains(needle), "{toml:?}: {msg}");
        }
    }

    #[test]
    fn limits_and_lease_validation() {
        for key in [
            "max_frame_bytes",
            "max_rooms_per_conn",
            "send_queue",
            "ping_interval_s",
            "idle_timeout_s",
            "max_conns_per_user",
            "max_conns_per_ip",
        ] {
            let msg = invalid(&format!("{SECRET}[limits]\n{key} = 0\n"));
            assert!(
                msg.contains(&format!("limits.{key} must be greater than 0")),
                "{msg}"
            );
        }
        let msg = invalid(&format!(
            "{SECRET}[limits]\nping_interval_s = 60\nidle_timeout_s = 60\n"
        ));
        assert!(msg.contains("idle_timeout_s must be greater"), "{msg}");
        let msg = invalid(&format!("{SECRET}[node]\nlease_ms = 299\n"));
        assert!(msg.contains("node.lease_ms must be at least 300"), "{msg}");
        let msg = invalid(&format!("{SECRET}[node]\npresence_grace_ms = 3600001\n"));
        assert!(
            msg.contains("node.presence_grace_ms must be at most 3600000"),
            "{msg}"
        );
        let msg = invalid(&format!(
            "{SECRET}listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7000\"\n"
        ));
        assert!(msg.contains("must differ"), "{msg}");
        // Port 0 twice is fine (tests bind ephemeral ports).
        assert!(load(&format!(
            "{SECRET}listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n"
        ))
        .is_ok());
    }

    #[test]
    fn namespace_validation() {
        for (toml, needle) in [
            ("[namespaces.\"bad.name\"]\n", "namespace \"bad.name\""),
            ("[namespaces.\"\"]\n", "namespace \"\""),
            ("[namespaces.a]\njoin = \"roles\"\n", "non-empty roles"),
            ("[namespaces.a]\npublish = \"roles\"\n", "non-empty roles"),
            (
                "[namespaces.a]\njoin = \"roles\"\nroles = [\"\"]\n",
                "empty names",
            ),
            (
                "[namespaces.a]\nhistory = 5\nhistory_ttl_s = 0\n",
                "history_ttl_s",
            ),
            ("[namespaces.a]\nmax_payload = 0\n", "max_payload"),
            (
                "[namespaces.a]\nrate = { count = 0, period_s = 1, burst = 1 }\n",
                "rate",
            ),
            (
                "[namespaces.a]\nrate = { count = 1, period_s = 0, burst = 1 }\n",
                "rate",
            ),
            (
                "[namespaces.a]\nrate = { count = 1, period_s = 1, burst = 0 }\n",
                "rate",
            ),
        ] {
            let msg = invalid(&format!("{SECRET}{toml}"));
            assert!(msg.contains(needle), "{toml:?}: {msg}");
        }
        // roles also accepts a comma-separated string.
        let c = load(&format!(
            "{SECRET}[namespaces.a]\njoin = \"roles\"\nroles = \"admin, ops\"\n"
        ))
        .unwrap();
        assert_eq!(c.namespace("a").roles, vec!["admin", "ops"]);
        // history_ttl_s = 0 is fine when nothing is kept.
        assert!(load(&format!("{SECRET}[namespaces.a]\nhistory_ttl_s = 0\n")).is_ok());
    }

    #[test]
    fn other_validation() {
        let msg = invalid(&format!("{SECRET}node_id = \"gw 1\"\n"));
        assert!(msg.contains("node_id"), "{msg}");
        let msg = invalid(&format!("{SECRET}origins = [\"https://a.example/\"]\n"));
        assert!(msg.contains("origins"), "{msg}");
        let msg = invalid(&format!("{SECRET}[admin]\napi_key = \"\"\n"));
        assert!(msg.contains("admin.api_key"), "{msg}");
        let msg = invalid(&format!("{SECRET}trusted_proxies = [\"lb.internal\"]\n"));
        assert!(msg.contains("trusted_proxies"), "{msg}");
    }

    #[test]
    fn every_problem_is_listed() {
        let msg = invalid("[limits]\nsend_queue = 0\n[node]\nlease_ms = 1\n");
        assert!(msg.contains("needs auth.secret"), "{msg}");
        assert!(msg.contains("limits.send_queue"), "{msg}");
        assert!(msg.contains("node.lease_ms"), "{msg}");
        assert_eq!(msg.matches("; ").count(), 2, "{msg}");
    }

    #[test]
    fn generated_node_ids_are_valid() {
        let c = Config::default();
        for _ in 0..100 {
            let id = c.node_id();
            assert_eq!(id.len(), 11, "{id}");
            assert!(id.starts_with("gw-"), "{id}");
            assert!(
                id[3..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
            assert!(broker::names::validate_node(&id).is_ok(), "{id}");
        }
        let named = Config {
            node_id: Some("gw-fixed".into()),
            ..Config::default()
        };
        assert_eq!(named.node_id(), "gw-fixed");
    }

    #[test]
    fn example_config_file_is_valid() {
        let text = include_str!("../../config/gateway.toml");
        let c = Config::from_sources(Some(text), &[])
            .unwrap_or_else(|e| panic!("config/gateway.toml: {e}"));
        let chat = c.namespace("chat");
        assert_eq!(
            (chat.history, chat.history_ttl_s, chat.max_payload),
            (100, 300, 16384)
        );
        assert_eq!(
            chat.rate,
            Some(RateConfig {
                count: 20,
                period_s: 10,
                burst: 5
            })
        );
        assert_eq!(c.namespace("orders").join, JoinPolicy::Claim);
        assert_eq!(c.namespace("orders").publish, PublishPolicy::Server);
        assert_eq!(c.namespace("orders").history, 50);
        assert_eq!(c.namespace("admin").join, JoinPolicy::Roles);
        assert_eq!(c.namespace("admin").roles, vec!["admin"]);
        assert_eq!(c.namespace("admin").publish, PublishPolicy::Roles);
        // Every other key of the example is the default, except dev tokens
        // (on, so that `make run` and the demo page work out of the box).
        let defaults = Config {
            auth: AuthConfig {
                dev_tokens: true,
                ..AuthConfig::default()
            },
            namespaces: c.namespaces.clone(),
            ..Config::default()
        };
        assert_eq!(c, defaults);
        // In production the secret comes from the environment and dev tokens
        // are switched off there too.
        let prod = Config::from_sources(
            Some(text),
            &env(&[
                ("BROKER_AUTH__SECRET", "0123456789abcdef0123456789abcdef"),
                ("BROKER_AUTH__DEV_TOKENS", "false"),
            ]),
        )
        .unwrap();
        assert!(!prod.auth.dev_tokens);
        match Config::from_sources(Some(text), &env(&[("BROKER_AUTH__SECRET", "x")])) {
            Err(ConfigError::Invalid(msg)) => {
                assert!(msg.contains("dev_tokens is refused"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }
}
