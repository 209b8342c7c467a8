//! Validation: the values checked together after loading (the auth
//! set-up, limits, namespace names and policies), every problem listed at
//! once, so that a bad configuration stops the gateway at start-up rather
//! than failing later on a client's request.

use super::{Config, ConfigError, JoinPolicy, Namespace, PublishPolicy};
use crate::client_ip::TrustedProxies;

/// Largest accepted `auth.leeway_s`: a day. More would make `exp` almost
/// meaningless (and large values overflow the JWT library's time checks).
pub const MAX_LEEWAY_S: u64 = 86_400;

/// Smallest accepted `node.lease_ms`: the gateway renews its lease several
/// times per period, which needs some room.
pub const MIN_LEASE_MS: u64 = 300;

/// JWT algorithms the gateway accepts in `auth.algorithm`.
pub const ALGORITHMS: [&str; 5] = ["HS256", "HS384", "HS512", "RS256", "ES256"];

/// Largest accepted `node.presence_grace_ms` (the module's own limit).
pub const MAX_PRESENCE_GRACE_MS: u64 = 3_600_000;

/// Largest `rpc.timeout_ms` (5 minutes): a pending `rpc` holds a slot of
/// the connection's [`crate::node::connection::MAX_PENDING_RPCS`] until then.
pub const MAX_RPC_TIMEOUT_MS: u64 = 300_000;

/// Largest accepted `webhooks.batch_max`.
pub const MAX_WEBHOOK_BATCH: usize = 1000;

/// Largest accepted `webhooks.timeout_ms`: a minute.
pub const MAX_WEBHOOK_TIMEOUT_MS: u64 = 60_000;

impl Config {
    /// Checks the values together: the JWT algorithm and its key (HS* need
    /// `secret` unless `jwks_file`, `dev_tokens` or `allow_anonymous`;
    /// RS256/ES256 need `public_key_file` unless `jwks_file`; `jwks_file` is
    /// refused with `secret`, `public_key_file` or a non-default
    /// `algorithm`; `dev_tokens` is refused with a real secret or key; the
    /// JWKS file itself is read when the authenticator is built),
    /// positive limits, valid namespace names and policies, positive rate
    /// parameters, `lease_ms >= 300`, and an `admin.api_key` when
    /// `admin_listen` is not a loopback address.
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
        check_webhooks(self, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
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
        } else if self.admin.api_key.is_none() && !is_loopback(self.admin_listen.ip()) {
            // Like Redis' protected mode: the admin API publishes to any
            // room and disconnects any user.
            problems.push(format!(
                "admin_listen {} is not a loopback address: set admin.api_key (the admin API \
                 can publish to any room and disconnect any user), or listen on 127.0.0.1 / [::1]",
                self.admin_listen
            ));
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
        let jwks = auth.jwks_file.is_some();
        if auth.secret.as_deref() == Some("") {
            problems.push("auth.secret must not be empty".to_owned());
        }
        if jwks {
            if auth
                .jwks_file
                .as_deref()
                .is_some_and(|p| p.as_os_str().is_empty())
            {
                problems.push("auth.jwks_file must not be empty (omit it instead)".to_owned());
            }
            if secret || key {
                problems.push(
                    "auth.jwks_file cannot be combined with auth.secret or auth.public_key_file: put every key in the JWKS"
                        .to_owned(),
                );
            }
            if auth.algorithm != "HS256" {
                problems.push(
                    "auth.algorithm is not used with auth.jwks_file (each key's algorithm comes from its alg, or its kty/crv): remove it"
                        .to_owned(),
                );
            }
        } else if hmac {
            if !secret && !auth.dev_tokens && !auth.allow_anonymous {
                problems.push(format!(
                    "auth.algorithm {} needs auth.secret, or auth.jwks_file (or auth.dev_tokens / auth.allow_anonymous)",
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
                    "auth.algorithm {} needs auth.public_key_file, or auth.jwks_file",
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
            if secret || key || jwks {
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
        let positive: [(&str, u64); 9] = [
            ("max_frame_bytes", l.max_frame_bytes as u64),
            ("max_rooms_per_conn", u64::from(l.max_rooms_per_conn)),
            ("send_queue", l.send_queue as u64),
            ("send_queue_bytes", l.send_queue_bytes as u64),
            ("ping_interval_s", l.ping_interval_s),
            ("idle_timeout_s", l.idle_timeout_s),
            ("max_conns_per_user", u64::from(l.max_conns_per_user)),
            ("max_conns_per_ip", u64::from(l.max_conns_per_ip)),
            ("max_preauth_per_ip", u64::from(l.max_preauth_per_ip)),
        ];
        for (key, value) in positive {
            if value == 0 {
                problems.push(format!("limits.{key} must be greater than 0"));
            }
        }
        if l.ipv6_prefix_len > 128 {
            problems.push("limits.ipv6_prefix_len must be at most 128".to_owned());
        }
        let r = &l.requests;
        if r.count == 0 || r.period_s == 0 || r.burst == 0 {
            problems.push(
                "limits.requests: count, period_s and burst must be greater than 0".to_owned(),
            );
        }
        if l.ping_interval_s > 0 && l.idle_timeout_s > 0 && l.idle_timeout_s <= l.ping_interval_s {
            problems.push(
                "limits.idle_timeout_s must be greater than limits.ping_interval_s".to_owned(),
            );
        }
        if self.node.lease_ms < MIN_LEASE_MS {
            problems.push(format!("node.lease_ms must be at least {MIN_LEASE_MS}"));
        }
        if self.rpc.timeout_ms == 0 || self.rpc.timeout_ms > MAX_RPC_TIMEOUT_MS {
            problems.push(format!("rpc.timeout_ms must be 1 to {MAX_RPC_TIMEOUT_MS}"));
        }
        let path = &self.socketio.path;
        if !path.starts_with('/') || !path.ends_with('/') || path.len() < 3 || path == "/ws/" {
            problems.push(
                "socketio.path must start and end with / and name a path (not /ws/)".to_owned(),
            );
        }
        if self.rpc.stream_maxlen == 0 {
            problems.push("rpc.stream_maxlen must be greater than 0".to_owned());
        }
        if self.node.presence_grace_ms > MAX_PRESENCE_GRACE_MS {
            problems.push(format!(
                "node.presence_grace_ms must be at most {MAX_PRESENCE_GRACE_MS}"
            ));
        }
    }
}

/// True for 127.0.0.0/8 and `::1` (also IPv4-mapped, `::ffff:127.x.y.z`);
/// not for the wildcards `0.0.0.0` and `::`, which listen everywhere.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
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

/// `[webhooks]` (and its test knob): an `http://` URL with a host, a
/// secret with it, known event types, the batch and timeout ranges.
fn check_webhooks(config: &Config, problems: &mut Vec<String>) {
    let w = &config.webhooks;
    if let Some(url) = &w.url {
        if url.starts_with("https://") {
            problems.push(
                "webhooks.url: https:// is not supported; POST to http:// (e.g. a TLS proxy on the same host)"
                    .to_owned(),
            );
        } else {
            let host = url
                .parse::<hyper::Uri>()
                .ok()
                .filter(|uri| uri.scheme_str() == Some("http"))
                .and_then(|uri| uri.host().map(str::to_owned));
            if !matches!(host.as_deref(), Some(h) if !h.is_empty()) {
                problems.push(format!(
                    "webhooks.url {url:?} must look like http://host[:port][/path]"
                ));
            }
        }
        if !matches!(w.secret.as_deref(), Some(s) if !s.is_empty()) {
            problems.push("webhooks.secret is required with webhooks.url".to_owned());
        }
    }
    if w.events.is_empty() {
        problems.push(
            "webhooks.events must name at least one type (omit webhooks.url to turn webhooks off)"
                .to_owned(),
        );
    }
    for event in &w.events {
        if !super::EVENT_TYPES.contains(&event.as_str()) {
            problems.push(format!(
                "webhooks.events: {event:?} is not one of {}",
                super::EVENT_TYPES.join(", ")
            ));
        }
    }
    if !(1..=MAX_WEBHOOK_BATCH).contains(&w.batch_max) {
        problems.push(format!(
            "webhooks.batch_max must be 1 to {MAX_WEBHOOK_BATCH}"
        ));
    }
    if !(1..=MAX_WEBHOOK_TIMEOUT_MS).contains(&w.timeout_ms) {
        problems.push(format!(
            "webhooks.timeout_ms must be 1 to {MAX_WEBHOOK_TIMEOUT_MS}"
        ));
    }
    if config.testing.webhook_claim_idle_ms == Some(0) {
        problems.push("testing.webhook_claim_idle_ms must be greater than 0".to_owned());
    }
}
