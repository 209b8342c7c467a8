//! Webhooks (contract §7, docs/BACKENDS.md "Webhooks"): gateway nodes read
//! the lifecycle stream in one consumer group and POST signed batches to a
//! real HTTP receiver in this test, which checks every signature itself.
//! The entries are written with `XADD` as the module writes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{Gateway, Options};
use broker_tests::{array, int, ok, text, RedisServer};
use hmac::{Hmac, Mac};
use serde_json::Value as J;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOOK_SECRET: &str = "hook-secret";
const GROUP: &str = "broker-webhooks";
const STREAM: &str = "broker:events";

/// What the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// 200.
    Ok,
    /// 500.
    Fail,
}

/// One POST as received.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    /// What the receiver answered.
    status: u16,
}

impl Post {
    fn json(&self) -> J {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn events(&self) -> Vec<J> {
        self.json()["events"]
            .as_array()
            .expect("events is an array")
            .clone()
    }
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// Requests still to answer 500 before `mode` applies.
    fail_first: usize,
    posts: Vec<Post>,
}

/// An HTTP/1.1 receiver on a free loopback port (keep-alive, one request
/// at a time per connection, `Content-Length` bodies).
#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    async fn start(mode: Mode, fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/in", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            mode,
            fail_first,
            posts: Vec::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Receiver { url, state }
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn posts(&self) -> Vec<Post> {
        self.state.lock().unwrap().posts.clone()
    }

    /// `<stream>/<id>` of the events of the POSTs answered 200, with how
    /// often each came.
    fn accepted_ids(&self) -> BTreeMap<String, usize> {
        let mut ids = BTreeMap::new();
        for post in self.posts().iter().filter(|p| p.status == 200) {
            for event in post.events() {
                *ids.entry(key(&event)).or_insert(0) += 1;
            }
        }
        ids
    }

    /// Waits until every id of `want` was accepted.
    async fn wait_for(&self, want: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.accepted_ids();
            let missing: Vec<&String> = want.iter().filter(|id| !got.contains_key(*id)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not delivered within {within:?}: {missing:?}; posts: {:?}",
                self.posts().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Headers.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut headers = BTreeMap::new();
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let status = {
            let mut s = state.lock().unwrap();
            let status = if s.fail_first > 0 {
                s.fail_first -= 1;
                500
            } else if s.mode == Mode::Fail {
                500
            } else {
                200
            };
            let mut parts = request_line.split(' ');
            assert_eq!(parts.next(), Some("POST"), "{request_line}");
            s.posts.push(Post {
                path: parts.next().unwrap_or_default().to_owned(),
                headers,
                body,
                status,
            });
            status
        };
        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// An event's name across streams: `<stream>/<id>` (each stream numbers
/// its ids alone).
fn key(event: &J) -> String {
    format!(
        "{}/{}",
        event["stream"].as_str().expect("stream"),
        event["id"].as_str().expect("id")
    )
}

/// The receiver's own check of `X-Broker-Signature`: `sha256=` and the hex
/// HMAC-SHA256 of the body with `secret`, compared in constant time.
fn verify(secret: &str, post: &Post) -> bool {
    let Some(header) = post.headers.get("x-broker-signature") else {
        return false;
    };
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&post.body);
    mac.verify_slice(&sig).is_ok()
}

/// `[webhooks]` for `receiver`.
fn hooks(receiver: &Receiver, extra: &str) -> String {
    format!(
        "[webhooks]\nurl = {:?}\nsecret = {HOOK_SECRET:?}\n{extra}\n",
        receiver.url
    )
}

fn opts(node: &str, receiver: &Receiver, extra: &str) -> Options {
    Options {
        extra_toml: hooks(receiver, extra),
        ..Options::default().node(node)
    }
}

/// `XADD stream * type <kind> user <user> conn <user>.c node n1 ts <now>`,
/// the fields of the module's entries; returns `<stream>/<id>`.
fn xadd(con: &mut redis::Connection, stream: &str, kind: &str, user: &str) -> String {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let conn = format!("{user}.c");
    let mut args = vec!["XADD", stream, "*", "type", kind, "user", user];
    args.extend(["conn", &conn, "node", "n1"]);
    match kind {
        "join" | "leave" => args.extend(["room", "chat:lobby"]),
        _ => {}
    }
    if kind == "disconnect" {
        args.extend(["reason", "client", "duration_ms", "1500"]);
    }
    args.extend(["ts", &ts]);
    format!("{stream}/{}", text(&ok(con, &args)))
}

/// Entries pending in the group (`XPENDING` summary count).
fn pending(con: &mut redis::Connection, stream: &str) -> i64 {
    int(&array(&ok(con, &["XPENDING", stream, GROUP]))[0])
}

async fn wait_no_pending(con: &mut redis::Connection, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending(con, stream) != 0 {
        assert!(Instant::now() < deadline, "{stream}: entries still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric_at_least(gw: &Gateway, series: &str, min: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = gw.metric(series).await;
        if v >= min {
            return v;
        }
        assert!(Instant::now() < deadline, "{series} = {v}, want >= {min}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn batches_are_signed_and_every_entry_is_delivered_and_acknowledged() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let receiver = Receiver::start(Mode::Ok, 0).await;
    // Entries written before any node made the group are delivered too
    // (the group starts at 0).
    let mut ids: Vec<String> = (0..4)
        .map(|i| xadd(&mut con, STREAM, "connect", &format!("early{i}")))
        .collect();
    let gw = Gateway::start(&redis, opts("hook-a", &receiver, "batch_max = 5")).await;
    ids.extend((0..8).map(|i| xadd(&mut con, STREAM, "disconnect", &format!("u{i}"))));
    receiver.wait_for(&ids, Duration::from_secs(10)).await;
    wait_no_pending(&mut con, STREAM).await;

    let posts = receiver.posts();
    assert!(posts.len() >= 3, "12 entries in batches of at most 5");
    let mut order = Vec::new();
    for post in &posts {
        assert_eq!(post.path, "/hooks/in");
        assert_eq!(post.headers["content-type"], "application/json");
        assert!(verify(HOOK_SECRET, post), "signature of {post:?}");
        assert!(
            !verify("wrong-secret", post),
            "another secret must not verify"
        );
        let mut tampered = post.clone();
        tampered.body.push(b' ');
        assert!(
            !verify(HOOK_SECRET, &tampered),
            "a changed body must not verify"
        );
        let events = post.events();
        assert!(!events.is_empty() && events.len() <= 5, "{events:?}");
        order.extend(events.iter().map(key));
    }
    assert_eq!(order, ids, "each entry once, in stream order");
    let last = posts.last().unwrap().events().pop().unwrap();
    assert_eq!(last["stream"], STREAM);
    assert_eq!(last["type"], "disconnect");
    assert_eq!(last["user"], "u7");
    assert_eq!(last["conn"], "u7.c");
    assert_eq!(last["node"], "n1");
    assert_eq!(last["reason"], "client");
    assert_eq!(last["duration_ms"], 1500, "duration_ms is a number");
    assert!(last["ts"].is_u64(), "ts is a number: {last}");

    let delivered = r#"broker_webhook_events_total{result="delivered"}"#;
    assert_eq!(metric_at_least(&gw, delivered, 12.0).await, 12.0);
    let ok_attempts = r#"broker_webhook_attempts_total{result="ok"}"#;
    assert_eq!(gw.metric(ok_attempts).await, posts.len() as f64);
    let errors = r#"broker_webhook_attempts_total{result="error"}"#;
    assert_eq!(gw.metric(errors).await, 0.0);
    assert_eq!(gw.metric("broker_webhook_lag_seconds").await, 0.0);
}

#[tokio::test]
async fn failed_posts_are_retried_until_every_entry_is_delivered() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let receiver = Receiver::start(Mode::Ok, 3).await;
    let gw = Gateway::start(&redis, opts("hook-retry", &receiver, "batch_max = 4")).await;
    let ids: Vec<String> = (0..10)
        .map(|i| xadd(&mut con, STREAM, "join", &format!("u{i}")))
        .collect();
    // Backoff 0.25-0.5 s, 0.5-1 s, 1-2 s for the three failures.
    receiver.wait_for(&ids, Duration::from_secs(15)).await;
    wait_no_pending(&mut con, STREAM).await;
    let accepted = receiver.accepted_ids();
    let want: BTreeSet<&String> = ids.iter().collect();
    let got: BTreeSet<&String> = accepted.keys().collect();
    assert_eq!(got, want, "exactly the written entries, every one");
    let posts = receiver.posts();
    let failed: Vec<&Post> = posts.iter().filter(|p| p.status == 500).collect();
    assert_eq!(failed.len(), 3);
    // A retry sends the same batch again, byte for byte.
    assert_eq!(failed[0].body, failed[1].body);
    assert_eq!(failed[0].body, posts[3].body);
    assert!(posts.iter().all(|p| verify(HOOK_SECRET, p)));
    let errors = r#"broker_webhook_attempts_total{result="error"}"#;
    assert_eq!(gw.metric(errors).await, 3.0);
    let delivered = r#"broker_webhook_events_total{result="delivered"}"#;
    assert_eq!(metric_at_least(&gw, delivered, 10.0).await, 10.0);
}

#[tokio::test]
async fn types_outside_events_are_acknowledged_without_a_post() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let receiver = Receiver::start(Mode::Ok, 0).await;
    let gw = Gateway::start(
        &redis,
        opts("hook-filter", &receiver, "events = [\"join\", \"leave\"]"),
    )
    .await;
    let mut wanted = Vec::new();
    for (kind, user) in [
        ("connect", "a"),
        ("online", "a"),
        ("join", "a"),
        ("leave", "a"),
        ("disconnect", "a"),
        ("offline", "a"),
    ] {
        let id = xadd(&mut con, STREAM, kind, user);
        if kind == "join" || kind == "leave" {
            wanted.push(id);
        }
    }
    receiver.wait_for(&wanted, Duration::from_secs(10)).await;
    wait_no_pending(&mut con, STREAM).await;
    let kinds: Vec<String> = receiver
        .posts()
        .iter()
        .flat_map(Post::events)
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["join", "leave"]);
    assert_eq!(
        metric_at_least(
            &gw,
            r#"broker_webhook_events_total{result="filtered"}"#,
            4.0
        )
        .await,
        4.0
    );
}

#[tokio::test]
async fn two_nodes_in_the_group_deliver_every_entry() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let receiver = Receiver::start(Mode::Ok, 0).await;
    let a = Gateway::start(&redis, opts("hook-n1", &receiver, "batch_max = 10")).await;
    let b = Gateway::start(&redis, opts("hook-n2", &receiver, "batch_max = 10")).await;
    let mut ids = Vec::new();
    for round in 0..20 {
        for i in 0..10 {
            ids.push(xadd(&mut con, STREAM, "connect", &format!("u{round}-{i}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.wait_for(&ids, Duration::from_secs(15)).await;
    wait_no_pending(&mut con, STREAM).await;
    let accepted = receiver.accepted_ids();
    assert_eq!(accepted.len(), ids.len(), "no other entries");
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "no failure, no claim: each once: {twice:?}"
    );
    let delivered = r#"broker_webhook_events_total{result="delivered"}"#;
    let total = a.metric(delivered).await + b.metric(delivered).await;
    assert_eq!(total, ids.len() as f64);
    // Both consumers are in the one group.
    let consumers = array(&ok(&mut con, &["XINFO", "CONSUMERS", STREAM, GROUP]));
    assert_eq!(consumers.len(), 2);
}

#[tokio::test]
async fn a_killed_nodes_pending_batch_is_claimed_by_another_node() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let receiver = Receiver::start(Mode::Fail, 0).await;
    // Written before A starts, so that A takes them in one batch.
    let ids: Vec<String> = (0..5)
        .map(|i| xadd(&mut con, STREAM, "online", &format!("u{i}")))
        .collect();
    let mut a = Gateway::start(&redis, opts("hook-dead", &receiver, "batch_max = 50")).await;
    // A took the batch and is retrying it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.posts().is_empty() {
        assert!(Instant::now() < deadline, "node A never POSTed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    assert_eq!(pending(&mut con, STREAM), 5, "A's batch stays pending");
    receiver.set_mode(Mode::Ok);
    let b = Gateway::start(
        &redis,
        Options {
            webhook_claim_idle_ms: Some(1500),
            ..opts("hook-heir", &receiver, "batch_max = 50")
        },
    )
    .await;
    receiver.wait_for(&ids, Duration::from_secs(15)).await;
    wait_no_pending(&mut con, STREAM).await;
    assert_eq!(
        metric_at_least(&b, "broker_webhook_claimed_total", 5.0).await,
        5.0
    );
    let delivered = r#"broker_webhook_events_total{result="delivered"}"#;
    assert_eq!(metric_at_least(&b, delivered, 5.0).await, 5.0);
}

#[tokio::test]
async fn a_node_restarted_under_its_id_delivers_its_own_pending_entries_first() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let receiver = Receiver::start(Mode::Fail, 0).await;
    // The default claim time (66 s) is far beyond this test: only the
    // node's read of its own pending list can deliver.
    let mut a = Gateway::start(&redis, opts("hook-again", &receiver, "")).await;
    let ids: Vec<String> = (0..3)
        .map(|i| xadd(&mut con, STREAM, "offline", &format!("u{i}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.posts().is_empty() {
        assert!(Instant::now() < deadline, "node never POSTed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    receiver.set_mode(Mode::Ok);
    a.respawn();
    receiver.wait_for(&ids, Duration::from_secs(15)).await;
    wait_no_pending(&mut con, STREAM).await;
}

#[tokio::test]
async fn sigterm_stops_a_node_that_is_retrying_and_leaves_the_batch_pending() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    let receiver = Receiver::start(Mode::Fail, 0).await;
    let mut gw = Gateway::start(&redis, opts("hook-stop", &receiver, "timeout_ms = 1000")).await;
    xadd(&mut con, STREAM, "connect", "u1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.posts().is_empty() {
        assert!(Instant::now() < deadline, "node never POSTed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metric_at_least(&gw, "broker_webhook_lag_seconds", 0.001).await > 0.0,
        "the held entry's age"
    );
    let started = Instant::now();
    let status = gw.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        started.elapsed()
    );
    assert_eq!(
        pending(&mut con, STREAM),
        1,
        "not acknowledged: still pending"
    );
}

#[tokio::test]
async fn on_a_cluster_every_masters_stream_is_delivered() {
    let cluster = RedisCluster::start(3);
    let receiver = Receiver::start(Mode::Ok, 0).await;
    let gw = Gateway::start(
        &cluster.servers[0],
        opts("hook-cluster", &receiver, "batch_max = 10").redis_cluster(&cluster.urls()),
    )
    .await;
    // Each master's stream, named as the module names it: the smallest
    // numeric tag whose slot the master serves.
    let mut con = cluster.servers[0].client();
    let ranges: Vec<(i64, i64, u16)> = array(&ok(&mut con, &["CLUSTER", "SLOTS"]))
        .iter()
        .map(|r| {
            let r = array(r);
            (int(&r[0]), int(&r[1]), int(&array(&r[2])[1]) as u16)
        })
        .collect();
    let ports: BTreeSet<u16> = ranges.iter().map(|r| r.2).collect();
    assert_eq!(ports.len(), 3);
    let mut ids = Vec::new();
    let mut streams = Vec::new();
    for port in ports {
        let stream = broker::names::events_stream_in(|slot| {
            ranges
                .iter()
                .any(|&(lo, hi, p)| p == port && lo <= i64::from(slot) && i64::from(slot) <= hi)
        })
        .unwrap();
        let server = cluster.master_of(&stream);
        assert_eq!(server.port(), port, "{stream} lives on its master");
        let mut master = server.client();
        for i in 0..5 {
            ids.push(xadd(
                &mut master,
                &stream,
                "connect",
                &format!("u{port}-{i}"),
            ));
        }
        streams.push(stream);
    }
    receiver.wait_for(&ids, Duration::from_secs(20)).await;
    for stream in &streams {
        wait_no_pending(&mut cluster.master_of(stream).client(), stream).await;
    }
    assert_eq!(receiver.accepted_ids().len(), 15);
    let delivered = r#"broker_webhook_events_total{result="delivered"}"#;
    assert_eq!(metric_at_least(&gw, delivered, 15.0).await, 15.0);
}

#[tokio::test]
async fn what_the_module_writes_reaches_a_failing_receiver_after_retries() {
    // The whole path: real clients come and go through a gateway, the
    // module writes their lifecycle entries, a receiver that fails first
    // gets every one of them, signed.
    let redis = RedisServer::start();
    let receiver = Receiver::start(Mode::Ok, 2).await;
    let gw = Gateway::start(&redis, opts("hook-live", &receiver, "batch_max = 10")).await;
    let mut alice = gw.connect("alice").await;
    alice.join("chat:lobby").await;
    let conn = alice.conn.clone();
    alice.close().await;
    let mut con = redis.client();
    let written: Vec<String> = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let entries = array(&ok(&mut con, &["XRANGE", STREAM, "-", "+"]));
            let ids: Vec<String> = entries
                .iter()
                .map(|e| format!("{STREAM}/{}", text(&array(e)[0])))
                .collect();
            if ids.len() >= 6 {
                break ids;
            }
            assert!(Instant::now() < deadline, "module entries: {ids:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    receiver.wait_for(&written, Duration::from_secs(15)).await;
    let posts = receiver.posts();
    assert_eq!(posts.iter().filter(|p| p.status == 500).count(), 2);
    assert!(posts.iter().all(|p| verify(HOOK_SECRET, p)));
    let story: Vec<String> = posts
        .iter()
        .filter(|p| p.status == 200)
        .flat_map(|p| p.events())
        .filter(|e| e["conn"] == conn.as_str())
        .map(|e| {
            let mut w = e["type"].as_str().unwrap().to_string();
            if let Some(r) = e["reason"].as_str() {
                w = format!("{w}/{r}");
            }
            w
        })
        .collect();
    assert_eq!(
        story,
        [
            "connect",
            "online",
            "join",
            "leave/client",
            "disconnect/client",
            "offline/client"
        ]
    );
    wait_no_pending(&mut con, STREAM).await;
}
