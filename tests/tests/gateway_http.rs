//! The HTTP side of a gateway: the admin API (publish, emit, broadcast,
//! disconnect, presence), its API key, `/metrics`, and the health
//! endpoints. docs/HTTP.md.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::protocol::ServerFrame;
use broker_tests::gateway::{
    eventually_async, http_get, http_post, msg_fields, presence, token_with, Client, Gateway,
    Options,
};
use broker_tests::RedisServer;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The `(room, ev, data)` of the next `msg`.
async fn next_msg(c: &mut Client) -> (String, String, serde_json::Value) {
    let frame = c.recv_msg().await;
    let (room, ev, data, _, _, _) = msg_fields(&frame);
    (room.to_string(), ev.to_string(), data.clone())
}

/// Asserts that no `msg` is queued or arrives after a ping round trip.
async fn assert_no_msg(c: &mut Client, what: &str) {
    c.ping().await;
    let got: Vec<_> = c
        .drain(Duration::from_millis(200))
        .await
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Msg { .. }))
        .collect();
    assert!(got.is_empty(), "{what}: {} got {got:?}", c.user);
}

#[tokio::test]
async fn admin_api_publishes_emits_broadcasts_and_disconnects() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice1 = gw.connect("alice").await;
    let mut alice2 = gw.connect("alice").await;
    let mut bob = gw.connect("bob").await;
    alice1.join("chat:h").await;
    bob.join("chat:h").await;

    // POST /api/publish → {seq}; members get it, without `from`.
    let resp = gw
        .admin_post(
            "/api/publish",
            &json!({"room": "chat:h", "ev": "news", "data": {"a": [1, "x"]}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({"seq": 1}));
    for c in [&mut alice1, &mut bob] {
        let frame = c.recv_msg().await;
        let (room, ev, data, seq, _, from) = msg_fields(&frame);
        assert_eq!(
            (room, ev, data, seq, from),
            ("chat:h", "news", &json!({"a": [1, "x"]}), 1, None)
        );
    }
    assert_no_msg(&mut alice2, "alice2 is not in chat:h").await;

    // POST /api/users/alice/emit → every connection of alice, nobody else.
    let resp = gw
        .admin_post("/api/users/alice/emit", &json!({"ev": "dm", "data": "hi"}))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    for c in [&mut alice1, &mut alice2] {
        assert_eq!(
            next_msg(c).await,
            ("user:alice".into(), "dm".into(), json!("hi"))
        );
    }
    assert_no_msg(&mut bob, "an emit to alice").await;

    // POST /api/broadcast → everyone; with ns, those in rooms of it.
    let resp = gw
        .admin_post("/api/broadcast", &json!({"ev": "all", "data": {"v": 1}}))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    for c in [&mut alice1, &mut alice2, &mut bob] {
        let (_, ev, data) = next_msg(c).await;
        assert_eq!(
            (ev.as_str(), data),
            ("all", json!({"v": 1})),
            "{} gets the broadcast",
            c.user
        );
    }
    let resp = gw
        .admin_post(
            "/api/broadcast",
            &json!({"ev": "chatters", "data": 2, "ns": "chat"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    for c in [&mut alice1, &mut bob] {
        let (_, ev, _) = next_msg(c).await;
        assert_eq!(ev, "chatters", "{} is in a chat room", c.user);
    }
    assert_no_msg(&mut alice2, "a broadcast to ns chat").await;

    // GET /api/rooms/{room}/presence and /api/users/{user}/presence.
    let resp = gw.admin_get("/api/rooms/chat:h/presence").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let body = resp.json();
    let users: BTreeMap<String, u64> = body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("users list: {body}"))
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap_or_default().to_string(),
                u["conns"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        users,
        BTreeMap::from([("alice".into(), 1), ("bob".into(), 1)]),
        "{body}"
    );
    assert_eq!(body["count"], 2, "{body}");
    let resp = gw.admin_get("/api/users/alice/presence").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let body = resp.json();
    assert_eq!(body["status"], "online", "user presence: {body}");
    assert_eq!(body["connections"], 2, "user presence: {body}");
    let conns: BTreeSet<&str> = body["conns"]
        .as_array()
        .unwrap_or_else(|| panic!("conns list: {body}"))
        .iter()
        .filter_map(|c| c["conn"].as_str())
        .collect();
    assert_eq!(
        conns,
        BTreeSet::from([alice1.conn.as_str(), alice2.conn.as_str()])
    );
    let body = gw.admin_get("/api/users/nobody/presence").await.json();
    assert_eq!(body["status"], "offline", "{body}");
    // Path segments are percent-decoded, users as rooms.
    let body = gw.admin_get("/api/users/%61lice/presence").await.json();
    assert_eq!(body["connections"], 2, "{body}");
    let body = gw.admin_get("/api/rooms/chat%3Ah/presence").await.json();
    assert_eq!(body["count"], 2, "{body}");
    // A namespace that is not a string is refused, not ignored.
    let resp = gw
        .admin_post("/api/broadcast", &json!({"ev": "all", "data": 1, "ns": 5}))
        .await;
    assert_eq!(resp.status, 400, "{resp:?}");

    // POST /api/users/bob/disconnect closes bob's connection.
    let resp = gw.admin_post("/api/users/bob/disconnect", &json!({})).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let code = bob.expect_close().await;
    assert!(
        (4000..5000).contains(&code) || code == 1000,
        "bob closed with {code}"
    );
    eventually_async(Duration::from_secs(5), "bob is offline", || async {
        if presence(&redis, "bob").is_empty() {
            Ok(())
        } else {
            Err("still online".to_string())
        }
    })
    .await;
    alice1.ping().await;

    // Bad requests.
    let resp = gw
        .admin_post(
            "/api/publish",
            &json!({"room": "no colon", "ev": "x", "data": 1}),
        )
        .await;
    assert_eq!(resp.status, 400, "invalid room: {resp:?}");
    let resp = gw
        .admin_post("/api/publish", &json!({"room": "chat:h", "data": 1}))
        .await;
    assert_eq!(resp.status, 400, "missing ev: {resp:?}");
    let resp = gw.admin_get("/api/nothing-here").await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn admin_api_key_is_required_when_set() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().api_key("s3cret-key")).await;
    let body = json!({"room": "chat:k", "ev": "x", "data": 1});
    for (bearer, want) in [(None, 401), (Some("wrong"), 401), (Some("s3cret-key"), 200)] {
        assert_eq!(
            http_get(gw.admin, "/metrics", bearer).await.status,
            want,
            "/metrics with {bearer:?}"
        );
        assert_eq!(
            http_post(gw.admin, "/api/publish", &body, bearer)
                .await
                .status,
            want,
            "/api/publish with {bearer:?}"
        );
        assert_eq!(
            http_get(gw.admin, "/api/users/alice/presence", bearer)
                .await
                .status,
            want,
            "presence with {bearer:?}"
        );
    }
    // The key guards the admin listener only.
    assert_eq!(http_get(gw.addr, "/healthz", None).await.status, 200);
}

#[tokio::test]
async fn health_endpoints() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    assert_eq!(http_get(gw.addr, "/healthz", None).await.status, 200);
    let ready = http_get(gw.addr, "/readyz", None).await;
    assert_eq!(ready.status, 200, "{ready:?}");
    // Load balancers may probe with HEAD.
    for path in ["/healthz", "/readyz"] {
        let head = broker_tests::gateway::try_http(gw.addr, "HEAD", path, None, None)
            .await
            .expect("HEAD answered");
        assert_eq!(head.status, 200, "HEAD {path}: {head:?}");
    }
    // The module answers INFO broker with an api this gateway accepts.
    let body = ready.json();
    assert_eq!(body["redis"], "ok", "{body}");
    assert_eq!(
        (&body["lease"], &body["subscribed"]),
        (&json!(true), &json!(true))
    );
    let page = http_get(gw.addr, "/", None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{page:?}"
    );
    // /ws without an upgrade is a client error, not a crash.
    assert_eq!(http_get(gw.addr, "/ws", None).await.status, 400);
    // The admin API is not on the public listener.
    assert_eq!(http_get(gw.addr, "/metrics", None).await.status, 404);
}

// ---------------------------------------------------------------------------
// Metrics

/// Parses the Prometheus text format (0.0.4) strictly enough to catch
/// malformed output: `# HELP`/`# TYPE` lines, one `TYPE` per family before
/// its samples, valid names and label sets, and float values. Returns the
/// samples by `name{labels}` as written, and the families' types.
fn parse_metrics(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if matches!(
                    types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                ) {
                    return base;
                }
            }
        }
        name
    }
    let mut samples = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_samples: BTreeSet<String> = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .unwrap_or_else(|| panic!("{at}: TYPE without a name"));
                    let kind = parts
                        .next()
                        .unwrap_or_else(|| panic!("{at}: TYPE without a type"));
                    assert!(valid_name(name), "{at}: metric name");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{at}: type"
                    );
                    assert!(
                        !seen_samples.contains(name),
                        "{at}: TYPE after samples of {name}"
                    );
                    assert!(
                        types.insert(name.to_string(), kind.to_string()).is_none(),
                        "{at}: second TYPE"
                    );
                }
                Some("HELP") => {
                    let name = parts
                        .next()
                        .unwrap_or_else(|| panic!("{at}: HELP without a name"));
                    assert!(valid_name(name), "{at}: metric name");
                }
                _ => {}
            }
            continue;
        }
        // name[{labels}] value [timestamp]
        let (series, rest) = match line.find('{') {
            Some(open) => {
                let close = line
                    .rfind('}')
                    .unwrap_or_else(|| panic!("{at}: unclosed labels"));
                let labels = &line[open + 1..close];
                check_labels(labels, &at);
                (&line[..close + 1], line[close + 1..].trim())
            }
            None => {
                let (name, value) = line
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{at}: no value"));
                (name, value.trim())
            }
        };
        let name = series.split('{').next().unwrap_or_default();
        assert!(valid_name(name), "{at}: metric name");
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("{at}: no value"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("{at}: value {v:?}")),
        };
        if let Some(ts) = rest.split_whitespace().nth(1) {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("{at}: timestamp"));
        }
        seen_samples.insert(family_of(name, &types).to_string());
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{at}: duplicate series"
        );
    }
    (samples, types)
}

/// `a="x",b="y\"z"`: names valid, values quoted with only `\\`, `\"`, `\n`
/// escapes.
fn check_labels(labels: &str, at: &str) {
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("{at}: label without ="));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{at}: label name {name:?}"
        );
        let mut chars = after.char_indices();
        assert_eq!(
            chars.next().map(|(_, c)| c),
            Some('"'),
            "{at}: label value not quoted"
        );
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    let (_, e) = chars
                        .next()
                        .unwrap_or_else(|| panic!("{at}: dangling escape"));
                    assert!(matches!(e, '\\' | '"' | 'n'), "{at}: escape \\{e}");
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.unwrap_or_else(|| panic!("{at}: unterminated label value"));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The sum of every series of `name` (all label sets).
fn total(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(gw: &Gateway) -> (String, BTreeMap<String, f64>, BTreeMap<String, String>) {
    let resp = gw.admin_get("/metrics").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "content type: {resp:?}"
    );
    let (samples, types) = parse_metrics(&resp.body);
    (resp.body, samples, types)
}

#[tokio::test]
async fn metrics_are_valid_and_move() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut alice = gw.connect("alice").await;
    let bob = gw.connect("bob").await;
    let (_, before, _) = scrape(&gw).await;
    assert_eq!(
        before.get("broker_connections"),
        Some(&2.0),
        "two live connections"
    );
    let published = total(&before, "broker_messages_published_total");
    let delivered = total(&before, "broker_messages_delivered_total");

    alice.join("chat:m").await;
    alice.publish("chat:m", "m", json!(1)).await;
    alice.recv_msg().await;
    // Some failures for the labelled counters.
    alice.send_message(Message::binary(vec![0xc1u8])).await;
    assert_eq!(alice.recv_err().await.1, "bad_frame");
    let forged = token_with(&json!({"sub": "x", "exp": 4_000_000_000u64}), "wrong");
    assert_eq!(Client::refused(&gw.ws_url(Some(&forged)), &[]).await, 401);

    let (text, after, types) = scrape(&gw).await;
    assert_eq!(
        total(&after, "broker_messages_published_total"),
        published + 1.0,
        "one publish counted"
    );
    assert!(
        total(&after, "broker_messages_delivered_total") >= delivered + 1.0,
        "delivery counted"
    );
    assert!(
        total(&after, "broker_auth_failures_total") >= 1.0,
        "auth failure counted"
    );
    assert!(
        after
            .get(r#"broker_errors_total{code="bad_frame"}"#)
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "bad_frame counted under its code:\n{text}"
    );
    let required = [
        ("broker_connections", "gauge"),
        ("broker_messages_delivered_total", "counter"),
        ("broker_messages_published_total", "counter"),
        ("broker_publish_latency_seconds", "histogram"),
        ("broker_redis_command_duration_seconds", "histogram"),
        ("broker_errors_total", "counter"),
        ("broker_auth_failures_total", "counter"),
        ("broker_rate_limited_total", "counter"),
        ("broker_slow_consumer_disconnects_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ];
    for (name, kind) in required {
        // The prometheus crate names counter families with their `_total`.
        let found = types
            .get(name)
            .or_else(|| types.get(name.trim_end_matches("_total")));
        assert_eq!(
            found.map(String::as_str),
            Some(kind),
            "metric {name} ({kind}) is exported:\n{text}"
        );
    }
    assert!(
        after.keys().any(
            |k| k.starts_with("broker_redis_command_duration_seconds_bucket{")
                && k.contains("command=")
        ),
        "redis command histogram labelled by command:\n{text}"
    );
    assert!(
        after
            .get("process_resident_memory_bytes")
            .copied()
            .unwrap_or(0.0)
            > 0.0
    );

    // promtool, when installed, agrees that the exposition is valid.
    if let Some(out) = promtool_check(&text) {
        assert!(out.0, "promtool check metrics failed:\n{}\n{text}", out.1);
    } else {
        eprintln!("promtool not on PATH: checked the format with the built-in parser only");
    }

    // The gauge follows connections.
    bob.close().await;
    eventually_async(
        Duration::from_secs(5),
        "broker_connections is 1",
        || async {
            let (_, s, _) = scrape(&gw).await;
            match s.get("broker_connections") {
                Some(v) if *v == 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// Runs `promtool check metrics` on `text`: `(passed, output)`, or `None`
/// when promtool is not installed.
fn promtool_check(text: &str) -> Option<(bool, String)> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), report))
}
