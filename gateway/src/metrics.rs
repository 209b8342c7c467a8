//! Prometheus metrics of one gateway node, served on the admin listener's
//! `GET /metrics`.
//!
//! The registry is owned here rather than prometheus' global default one, so
//! several gateways in one test process do not share (or double-register)
//! counters. Labels are bounded sets only (`command`: the store's command
//! names; `code`: the protocol's error codes), never room or user names, so
//! the number of series stays fixed.

use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Error codes of the WebSocket protocol (`docs/PROTOCOL.md` §5); their
/// `broker_errors_total` series exist from the start at 0.
pub const ERROR_CODES: [&str; 12] = [
    "bad_frame",
    "unauthorized",
    "forbidden",
    "invalid_room",
    "not_member",
    "rate_limited",
    "too_many_rooms",
    "payload_too_large",
    "unavailable",
    "internal",
    "timeout",
    "rpc_error",
];

/// Redis command labels whose `broker_redis_command_duration_seconds`
/// series exist from the start (the names `store/` reports); others appear
/// on first use.
pub const REDIS_COMMANDS: [&str; 4] = ["online", "node.lease", "join", "publish"];

/// Buckets of `broker_publish_latency_seconds`: 0.5 ms to 5 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets of `broker_redis_command_duration_seconds`: 0.1 ms to 2.5 s
/// (a command on a healthy Redis takes well under a millisecond).
const REDIS_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Prometheus metrics of one gateway node (registry owned here, not the
/// global default registry).
#[derive(Clone)]
pub struct Metrics {
    /// The registry `render` gathers from; register extra collectors here.
    pub registry: Registry,
    /// `broker_connections`: open WebSocket connections on this node.
    pub connections: IntGauge,
    /// `broker_messages_delivered_total`: frames handed to client queues.
    pub messages_delivered: IntCounter,
    /// `broker_messages_published_total`: messages published through this
    /// node (client `pub` and admin API).
    pub messages_published: IntCounter,
    /// `broker_publish_latency_seconds`: publish timestamp in the frame →
    /// delivery on this node; buckets from 0.5 ms to 5 s.
    pub publish_latency: Histogram,
    /// `broker_redis_command_duration_seconds{command}`: round trip of each
    /// Redis command.
    pub redis_command_duration: HistogramVec,
    /// `broker_errors_total{code}`: `err` frames sent, by protocol code.
    pub errors: IntCounterVec,
    /// `broker_auth_failures_total`: tokens refused (upgrade, `auth`,
    /// `refresh`).
    pub auth_failures: IntCounter,
    /// `broker_rate_limited_total`: publishes refused by a namespace rate.
    pub rate_limited: IntCounter,
    /// `broker_slow_consumer_disconnects_total`: connections closed because
    /// their send queue was full.
    pub slow_consumer_disconnects: IntCounter,
    /// `broker_connections_opened_total`: connections accepted since start.
    pub connections_opened: IntCounter,
    /// `broker_frames_received_total`: client frames read.
    pub frames_received: IntCounter,
    /// `broker_redis_up`: 1 when the last Redis command succeeded, else 0.
    pub redis_up: IntGauge,
    /// `broker_node_lease_held`: 1 while this node's lease is held, else 0.
    pub node_lease_held: IntGauge,
    /// `broker_gap_repaired_total`: messages missed while the node channel
    /// was down and delivered afterwards from the rooms' history.
    pub gap_repaired: IntCounter,
    /// `broker_gap_unrepaired_total`: messages missed while the node channel
    /// was down that history no longer held (or the room was reset).
    pub gap_unrepaired: IntCounter,
    /// `broker_node_inbox_overflows_total`: times the hub fell so far behind
    /// the node channel that its inbox overflowed (the node then subscribed
    /// again and repaired from history).
    pub inbox_overflows: IntCounter,
    /// `broker_reconcile_fixes_total`: differences between what Redis held
    /// for this node and what it served, fixed, by `kind` (`open`, `join`,
    /// `leave`, `close`).
    pub reconcile_fixes: IntCounterVec,
    /// `broker_reregistration_seconds`: how long registering every live
    /// connection again took, after the module answered a lease as new.
    pub reregistration_seconds: Histogram,
    /// `broker_connections_refused_total{reason}`: WebSocket upgrades
    /// refused, by [`REFUSAL_REASONS`].
    pub connections_refused: IntCounterVec,
    /// `broker_jwks_reloads_total{result}`: re-reads of `auth.jwks_file`
    /// (on SIGHUP), by [`JWKS_RELOAD_RESULTS`]; on `error` the keys in use
    /// stayed.
    pub jwks_reloads: IntCounterVec,
    /// `broker_auth_keys`: keys in use (the JWKS's, 1 for `auth.secret` /
    /// `auth.public_key_file`, 0 without any key).
    pub auth_keys: IntGauge,
    /// `broker_connections_max`: the node's cap on WebSocket connections
    /// (`limits.max_conns`, or what the open-file limit allows).
    pub connections_max: IntGauge,
    /// `broker_accept_errors_total`: `accept` calls on a listener that
    /// failed, e.g. out of file descriptors (the listener then backs off).
    pub accept_errors: IntCounter,
    /// `broker_rpc_requests_total{result}`: client `rpc` requests that
    /// ended, by [`RPC_RESULTS`].
    pub rpc_requests: IntCounterVec,
    /// `broker_rpc_duration_seconds`: `rpc` sent → answer (reply or error)
    /// handed to the client.
    pub rpc_duration: Histogram,
    /// `broker_rpc_replies_dropped_total{reason}`: backend answers not
    /// delivered, by [`RPC_DROP_REASONS`].
    pub rpc_replies_dropped: IntCounterVec,
    /// `broker_socketio_connections{transport}`: Engine.IO sessions of the
    /// Socket.IO endpoint open now, by their transport (`polling`,
    /// `websocket`); the authenticated ones count in `broker_connections`
    /// too.
    pub socketio_connections: IntGaugeVec,
    /// `broker_socketio_handshakes_total{transport}`: Engine.IO sessions
    /// opened, by the transport they started on.
    pub socketio_handshakes: IntCounterVec,
    /// `broker_volatile_skipped_total`: ephemeral messages not queued for
    /// a member whose send queue was over half full.
    pub volatile_skipped: IntCounter,
    /// `broker_webhook_events_total{result}`: lifecycle entries this node
    /// acknowledged, by [`WEBHOOK_EVENT_RESULTS`].
    pub webhook_events: IntCounterVec,
    /// `broker_webhook_attempts_total{result}`: POSTs to `webhooks.url`, by
    /// [`WEBHOOK_ATTEMPT_RESULTS`].
    pub webhook_attempts: IntCounterVec,
    /// `broker_webhook_lag_seconds`: age (from its stream id) of the oldest
    /// entry this node holds undelivered; 0 when it holds none.
    pub webhook_lag: Gauge,
    /// `broker_webhook_claimed_total`: entries this node took over from
    /// another consumer's pending list (`XAUTOCLAIM`).
    pub webhook_claimed: IntCounter,
}

/// How a client `rpc` ended (the `result` label): `replied`
/// (`BROKER.RPC.REPLY`), `error` (`BROKER.RPC.ERROR`), `timeout`.
pub const RPC_RESULTS: [&str; 3] = ["replied", "error", "timeout"];

/// Why a backend's answer was dropped (the `reason` label): `gone` (the
/// connection is not on this node any more), `late` (its `rpc` is not
/// pending: timed out, answered already, or an unknown id).
pub const RPC_DROP_REASONS: [&str; 2] = ["gone", "late"];

/// What became of a lifecycle entry this node acknowledged (the `result`
/// label of `broker_webhook_events_total`): `delivered` (in a POST answered
/// 2xx), `filtered` (its type is not in `webhooks.events`), `trimmed` (gone
/// from the stream, cut by its `MAXLEN`, before it was delivered).
pub const WEBHOOK_EVENT_RESULTS: [&str; 3] = ["delivered", "filtered", "trimmed"];

/// How a POST to `webhooks.url` ended (the `result` label of
/// `broker_webhook_attempts_total`): `ok` (2xx) or `error` (another status,
/// a timeout, a connection error; the batch is sent again).
pub const WEBHOOK_ATTEMPT_RESULTS: [&str; 2] = ["ok", "error"];

/// How a re-read of `auth.jwks_file` ended (the `result` label): `ok` (the
/// new keys are in use) or `error` (the file was refused, the old keys
/// stay).
pub const JWKS_RELOAD_RESULTS: [&str; 2] = ["ok", "error"];

/// Why an upgrade of `/ws` was refused (the `reason` label).
pub const REFUSAL_REASONS: [&str; 7] = [
    // `limits.max_conns`: the node holds as many WebSocket connections as
    // it may (HTTP 503).
    "max_conns",
    // `limits.max_preauth_per_ip`: too many sockets of the address are
    // waiting for their `auth` frame.
    "preauth_per_ip",
    // `limits.max_conns_per_user` / `max_conns_per_ip` (the module's LIMIT).
    "conn_limit",
    // The token was refused.
    "token",
    // The node is not serving (no lease, not subscribed) or Redis failed.
    "unavailable",
    // The node is shutting down.
    "shutting_down",
    // The `Origin` is not allowed.
    "origin",
];

impl Metrics {
    /// Creates every metric, registers it (plus the process collector, which
    /// gives `process_resident_memory_bytes` and friends on Linux) in a new
    /// registry, and creates the fixed label series at 0.
    pub fn new() -> Metrics {
        // Names, help texts and buckets are constants checked by the tests:
        // a failure here is a programming error, not a run-time condition.
        Self::try_new().expect("metric definitions are valid and unique")
    }

    /// Prometheus text exposition (includes `process_resident_memory_bytes`
    /// via `ProcessCollector` registered in this registry).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(%err, "cannot encode metrics");
        }
        String::from_utf8(buf)
            .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
    }

    /// The fallible part of [`Metrics::new`].
    fn try_new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let int_gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };

        let connections = int_gauge(
            "broker_connections",
            "Open WebSocket connections on this node.",
        )?;
        let messages_delivered = counter(
            "broker_messages_delivered_total",
            "Messages handed to client send queues on this node.",
        )?;
        let messages_published = counter(
            "broker_messages_published_total",
            "Messages published through this node (client pub and admin API).",
        )?;
        let publish_latency = Histogram::with_opts(
            HistogramOpts::new(
                "broker_publish_latency_seconds",
                "Time from a message's publish timestamp to its delivery on this node.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(publish_latency.clone()))?;
        let redis_command_duration = HistogramVec::new(
            HistogramOpts::new(
                "broker_redis_command_duration_seconds",
                "Round trip of Redis commands sent by this node.",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
            &["command"],
        )?;
        registry.register(Box::new(redis_command_duration.clone()))?;
        let errors = IntCounterVec::new(
            Opts::new(
                "broker_errors_total",
                "Error frames sent to clients, by code.",
            ),
            &["code"],
        )?;
        registry.register(Box::new(errors.clone()))?;
        let auth_failures = counter("broker_auth_failures_total", "Tokens refused.")?;
        let rate_limited = counter(
            "broker_rate_limited_total",
            "Publishes refused by a namespace rate limit.",
        )?;
        let slow_consumer_disconnects = counter(
            "broker_slow_consumer_disconnects_total",
            "Connections closed because their send queue was full.",
        )?;
        let connections_opened = counter(
            "broker_connections_opened_total",
            "WebSocket connections accepted since start.",
        )?;
        let frames_received = counter("broker_frames_received_total", "Client frames read.")?;
        let redis_up = int_gauge(
            "broker_redis_up",
            "1 when the last Redis command succeeded, else 0.",
        )?;
        let node_lease_held = int_gauge(
            "broker_node_lease_held",
            "1 while this node's lease is held, else 0.",
        )?;
        let gap_repaired = counter(
            "broker_gap_repaired_total",
            "Messages missed while the node channel was down, delivered afterwards from history.",
        )?;
        let gap_unrepaired = counter(
            "broker_gap_unrepaired_total",
            "Messages missed while the node channel was down that history no longer held.",
        )?;
        let inbox_overflows = counter(
            "broker_node_inbox_overflows_total",
            "Times the node's inbox of received messages overflowed (followed by a gap repair).",
        )?;

        let reconcile_fixes = IntCounterVec::new(
            Opts::new(
                "broker_reconcile_fixes_total",
                "Differences between what Redis held for this node and what it served, fixed, by kind.",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(reconcile_fixes.clone()))?;
        let reregistration_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "broker_reregistration_seconds",
                "Time to register every live connection again after a lease was answered as new.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
        )?;
        registry.register(Box::new(reregistration_seconds.clone()))?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "broker_connections_refused_total",
                "WebSocket upgrades refused, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(connections_refused.clone()))?;
        for reason in REFUSAL_REASONS {
            connections_refused.with_label_values(&[reason]);
        }
        let socketio_connections = IntGaugeVec::new(
            Opts::new(
                "broker_socketio_connections",
                "Engine.IO sessions of the Socket.IO endpoint open now, by transport.",
            ),
            &["transport"],
        )?;
        registry.register(Box::new(socketio_connections.clone()))?;
        let socketio_handshakes = IntCounterVec::new(
            Opts::new(
                "broker_socketio_handshakes_total",
                "Engine.IO sessions opened, by the transport they started on.",
            ),
            &["transport"],
        )?;
        registry.register(Box::new(socketio_handshakes.clone()))?;
        for transport in ["polling", "websocket"] {
            socketio_connections.with_label_values(&[transport]);
            socketio_handshakes.with_label_values(&[transport]);
        }
        let jwks_reloads = IntCounterVec::new(
            Opts::new(
                "broker_jwks_reloads_total",
                "Re-reads of auth.jwks_file (SIGHUP), by result; on error the old keys stay.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(jwks_reloads.clone()))?;
        for result in JWKS_RELOAD_RESULTS {
            jwks_reloads.with_label_values(&[result]);
        }
        let auth_keys = int_gauge(
            "broker_auth_keys",
            "JWT verification keys in use (the JWKS's, 1 for auth.secret or auth.public_key_file).",
        )?;
        let connections_max = int_gauge(
            "broker_connections_max",
            "Most WebSocket connections this node accepts (limits.max_conns, or from the open-file limit).",
        )?;
        let accept_errors = counter(
            "broker_accept_errors_total",
            "Failed accepts on the listeners (e.g. out of file descriptors).",
        )?;

        let rpc_requests = IntCounterVec::new(
            Opts::new(
                "broker_rpc_requests_total",
                "Client rpc requests that ended, by result (replied, error, timeout).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(rpc_requests.clone()))?;
        for result in RPC_RESULTS {
            rpc_requests.with_label_values(&[result]);
        }
        let rpc_duration = Histogram::with_opts(
            HistogramOpts::new(
                "broker_rpc_duration_seconds",
                "Time from a client's rpc to the backend's answer handed to the client.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(rpc_duration.clone()))?;
        let rpc_replies_dropped = IntCounterVec::new(
            Opts::new(
                "broker_rpc_replies_dropped_total",
                "Backend rpc answers not delivered, by reason (gone, late).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(rpc_replies_dropped.clone()))?;
        for reason in RPC_DROP_REASONS {
            rpc_replies_dropped.with_label_values(&[reason]);
        }
        let volatile_skipped = counter(
            "broker_volatile_skipped_total",
            "Ephemeral messages skipped for members whose send queue was over half full.",
        )?;
        let webhook_events = IntCounterVec::new(
            Opts::new(
                "broker_webhook_events_total",
                "Lifecycle entries acknowledged by this node's webhook loop, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(webhook_events.clone()))?;
        for result in WEBHOOK_EVENT_RESULTS {
            webhook_events.with_label_values(&[result]);
        }
        let webhook_attempts = IntCounterVec::new(
            Opts::new(
                "broker_webhook_attempts_total",
                "POSTs to webhooks.url, by result (ok: 2xx; error: anything else, retried).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(webhook_attempts.clone()))?;
        for result in WEBHOOK_ATTEMPT_RESULTS {
            webhook_attempts.with_label_values(&[result]);
        }
        let webhook_lag = Gauge::new(
            "broker_webhook_lag_seconds",
            "Age of the oldest lifecycle entry this node holds undelivered (0: none).",
        )?;
        registry.register(Box::new(webhook_lag.clone()))?;
        let webhook_claimed = counter(
            "broker_webhook_claimed_total",
            "Lifecycle entries this node claimed from another consumer's pending list.",
        )?;

        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        // Fixed series at 0, so dashboards and alerts see them before the
        // first event.
        for code in ERROR_CODES {
            errors.with_label_values(&[code]);
        }
        for command in REDIS_COMMANDS {
            redis_command_duration.with_label_values(&[command]);
        }
        for kind in ["open", "join", "leave", "close"] {
            reconcile_fixes.with_label_values(&[kind]);
        }

        Ok(Metrics {
            registry,
            connections,
            messages_delivered,
            messages_published,
            publish_latency,
            redis_command_duration,
            errors,
            auth_failures,
            rate_limited,
            slow_consumer_disconnects,
            connections_opened,
            frames_received,
            redis_up,
            node_lease_held,
            gap_repaired,
            gap_unrepaired,
            inbox_overflows,
            reconcile_fixes,
            reregistration_seconds,
            connections_refused,
            socketio_connections,
            socketio_handshakes,
            jwks_reloads,
            auth_keys,
            connections_max,
            accept_errors,
            rpc_requests,
            rpc_duration,
            rpc_replies_dropped,
            volatile_skipped,
            webhook_events,
            webhook_attempts,
            webhook_lag,
            webhook_claimed,
        })
    }
}

impl Default for Metrics {
    /// Same as [`Metrics::new`].
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    /// A summary; the full state is `render()`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("connections", &self.connections.get())
            .field("redis_up", &self.redis_up.get())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 29] = [
        "broker_rpc_requests_total",
        "broker_rpc_duration_seconds",
        "broker_rpc_replies_dropped_total",
        "broker_volatile_skipped_total",
        "broker_jwks_reloads_total",
        "broker_auth_keys",
        "broker_connections",
        "broker_messages_delivered_total",
        "broker_messages_published_total",
        "broker_publish_latency_seconds",
        "broker_redis_command_duration_seconds",
        "broker_errors_total",
        "broker_auth_failures_total",
        "broker_rate_limited_total",
        "broker_slow_consumer_disconnects_total",
        "broker_connections_opened_total",
        "broker_frames_received_total",
        "broker_redis_up",
        "broker_node_lease_held",
        "broker_connections_refused_total",
        "broker_socketio_connections",
        "broker_socketio_handshakes_total",
        "broker_connections_max",
        "broker_accept_errors_total",
        "broker_webhook_events_total",
        "broker_webhook_attempts_total",
        "broker_webhook_lag_seconds",
        "broker_webhook_claimed_total",
        "process_resident_memory_bytes",
    ];

    /// The value of the sample line starting with `series ` (exact series).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn render_contains_every_metric() {
        let m = Metrics::new();
        let text = m.render();
        for name in NAMES {
            if name.starts_with("process_") && !cfg!(target_os = "linux") {
                continue;
            }
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("# TYPE broker_connections gauge"));
        assert!(text.contains("# TYPE broker_publish_latency_seconds histogram"));
        assert!(text.contains("# TYPE broker_redis_command_duration_seconds histogram"));
        assert!(text.contains("# TYPE broker_errors_total counter"));
        if cfg!(target_os = "linux") {
            assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
        }
    }

    #[test]
    fn fixed_series_exist_at_zero() {
        let text = Metrics::new().render();
        for code in ERROR_CODES {
            let series = format!("broker_errors_total{{code=\"{code}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for result in JWKS_RELOAD_RESULTS {
            let series = format!("broker_jwks_reloads_total{{result=\"{result}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        assert_eq!(
            sample(
                &text,
                "broker_redis_command_duration_seconds_count{command=\"publish\"}"
            ),
            Some(0.0)
        );
        for reason in REFUSAL_REASONS {
            let series = format!("broker_connections_refused_total{{reason=\"{reason}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for result in WEBHOOK_EVENT_RESULTS {
            let series = format!("broker_webhook_events_total{{result=\"{result}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for result in WEBHOOK_ATTEMPT_RESULTS {
            let series = format!("broker_webhook_attempts_total{{result=\"{result}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }

    #[test]
    fn values_show_up() {
        let m = Metrics::new();
        m.connections.set(3);
        m.messages_delivered.inc_by(5);
        m.messages_published.inc();
        m.publish_latency.observe(0.002);
        m.publish_latency.observe(7.0);
        m.redis_command_duration
            .with_label_values(&["history"])
            .observe(0.0003);
        m.errors.with_label_values(&["rate_limited"]).inc();
        m.auth_failures.inc();
        m.rate_limited.inc();
        m.slow_consumer_disconnects.inc();
        m.connections_opened.inc_by(4);
        m.frames_received.inc_by(9);
        m.redis_up.set(1);
        m.node_lease_held.set(1);
        let text = m.render();
        assert_eq!(sample(&text, "broker_connections"), Some(3.0));
        assert_eq!(sample(&text, "broker_messages_delivered_total"), Some(5.0));
        assert_eq!(sample(&text, "broker_messages_published_total"), Some(1.0));
        assert_eq!(
            sample(&text, "broker_publish_latency_seconds_count"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "broker_publish_latency_seconds_bucket{le=\"0.0005\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "broker_publish_latency_seconds_bucket{le=\"0.0025\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "broker_publish_latency_seconds_bucket{le=\"5\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "broker_publish_latency_seconds_bucket{le=\"+Inf\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "broker_redis_command_duration_seconds_count{command=\"history\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "broker_errors_total{code=\"rate_limited\"}"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "broker_auth_failures_total"), Some(1.0));
        assert_eq!(sample(&text, "broker_rate_limited_total"), Some(1.0));
        assert_eq!(
            sample(&text, "broker_slow_consumer_disconnects_total"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "broker_connections_opened_total"), Some(4.0));
        assert_eq!(sample(&text, "broker_frames_received_total"), Some(9.0));
        assert_eq!(sample(&text, "broker_redis_up"), Some(1.0));
        assert_eq!(sample(&text, "broker_node_lease_held"), Some(1.0));
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::default();
        a.auth_failures.inc();
        assert_eq!(sample(&b.render(), "broker_auth_failures_total"), Some(0.0));
        assert_eq!(sample(&a.render(), "broker_auth_failures_total"), Some(1.0));
        // Clones share the same metrics (one node, many tasks).
        let c = a.clone();
        c.auth_failures.inc();
        assert_eq!(a.auth_failures.get(), 2);
    }
}
