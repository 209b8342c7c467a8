//! Client `rpc` requests answered by a backend, end to end: the request
//! appended to `broker:rpc` with every field, `BROKER.RPC.REPLY` in each
//! format and `BROKER.RPC.ERROR` back to the client, the timeout, answers
//! dropped (connection gone, too late) and counted, the request budget, the
//! pending cap, `rpc.enabled = false`, and a 3-master cluster with two
//! gateways. The backend is the test itself: a plain Redis connection doing
//! `XGROUP CREATE` and `XREADGROUP` as `docs/BACKENDS.md` says.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use broker::protocol::{ClientFrame, ServerFrame};
use broker_tests::cluster::RedisCluster;
use broker_tests::gateway::{eventually_async, msgpack, now_s, ping, Client, Gateway, Options};
use broker_tests::{array, bytes, call, int, text, RedisServer};
use redis::{Connection, Value};
use serde_json::json;

const STREAM: &str = "broker:rpc";

/// One entry of the RPC stream, as a backend reads it.
#[derive(Debug)]
struct Entry {
    id: String,
    fields: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    fn text(&self, field: &str) -> String {
        let raw = self
            .fields
            .get(field)
            .unwrap_or_else(|| panic!("no field {field} in {self:?}"));
        String::from_utf8(raw.clone()).expect("a text field")
    }
}

/// Creates the backends' consumer group (from the end of the stream).
fn create_group(con: &mut Connection) {
    call(
        con,
        &["XGROUP", "CREATE", STREAM, "backends", "$", "MKSTREAM"],
    )
    .expect("XGROUP CREATE");
}

/// The next entry for consumer `b1` (waits up to 5 s), acknowledged.
fn next_rpc(con: &mut Connection) -> Entry {
    let reply = call(
        con,
        &[
            "XREADGROUP",
            "GROUP",
            "backends",
            "b1",
            "COUNT",
            "1",
            "BLOCK",
            "5000",
            "STREAMS",
            STREAM,
            ">",
        ],
    )
    .expect("XREADGROUP");
    assert!(!matches!(reply, Value::Nil), "no rpc within 5 s");
    let streams = array(&reply);
    let entries = array(&array(&streams[0])[1]);
    let entry = array(&entries[0]);
    let id = text(&entry[0]);
    let flat = array(&entry[1]);
    let fields = flat
        .chunks(2)
        .map(|kv| (text(&kv[0]), bytes(&kv[1])))
        .collect();
    call(con, &["XACK", STREAM, "backends", &id]).expect("XACK");
    Entry { id, fields }
}

/// `rpc {method, data}`.
fn rpc(method: &str, data: &serde_json::Value) -> ClientFrame {
    ClientFrame::Rpc {
        id: 0,
        method: method.to_string(),
        data: msgpack(data),
    }
}

/// Runs `BROKER.RPC.REPLY conn id payload [FORMAT f]`; its integer reply.
fn reply(con: &mut Connection, conn: &str, id: i64, payload: &[u8], format: Option<&str>) -> i64 {
    let mut cmd = redis::cmd("BROKER.RPC.REPLY");
    cmd.arg(conn).arg(id).arg(payload);
    if let Some(format) = format {
        cmd.arg("FORMAT").arg(format);
    }
    cmd.query(con).expect("BROKER.RPC.REPLY")
}

/// Runs `BROKER.RPC.ERROR conn id code message`; its integer reply.
fn reply_error(con: &mut Connection, conn: &str, id: i64, code: &str, message: &str) -> i64 {
    int(&call(
        con,
        &["BROKER.RPC.ERROR", conn, &id.to_string(), code, message],
    )
    .expect("RPC.ERROR"))
}

/// The answer (`ack` or `err`) to request `id`.
async fn answer(c: &mut Client, id: i64) -> ServerFrame {
    c.recv_matching(Duration::from_secs(5), "the rpc's answer", |f| {
        matches!(f, ServerFrame::Ack { id: got, .. } | ServerFrame::Err { id: Some(got), .. } if *got == id)
    })
    .await
}

/// Waits (up to 5 s) until the metric `series` of `gw` is `value`.
async fn wait_metric(gw: &Gateway, series: &str, value: f64, what: &str) {
    eventually_async(Duration::from_secs(5), what, || async {
        let got = gw.metric(series).await;
        if got == value {
            Ok(())
        } else {
            Err(format!("{series} = {got}"))
        }
    })
    .await;
}

/// Asserts that nothing but the answer to a ping arrives.
async fn assert_nothing_more(c: &mut Client) {
    c.ping().await;
    let extra = c.drain(Duration::from_millis(200)).await;
    assert!(extra.is_empty(), "unexpected frames: {extra:?}");
}

#[tokio::test]
async fn rpc_round_trip_in_every_format() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut backend = redis.client();
    create_group(&mut backend);
    let mut alice = gw.connect("alice").await;

    let data = json!({"order": 12, "items": ["a", 2.5, null]});
    let before_ms = now_s() as u64 * 1000;
    let id = alice.send_request(rpc("orders.get", &data)).await;
    let entry = next_rpc(&mut backend);
    assert_eq!(entry.text("method"), "orders.get");
    assert_eq!(
        entry.fields["data"],
        msgpack(&data),
        "data: the bytes as sent"
    );
    let as_json: serde_json::Value = serde_json::from_str(&entry.text("json")).unwrap();
    assert_eq!(as_json, data);
    assert_eq!(entry.text("user"), "alice");
    assert_eq!(entry.text("conn"), alice.conn);
    assert_eq!(entry.text("node"), gw.node);
    assert_eq!(entry.text("id"), id.to_string());
    let deadline: u64 = entry.text("deadline").parse().unwrap();
    assert!(
        (before_ms + 4000..before_ms + 7000).contains(&deadline),
        "deadline {deadline} is about 5 s after {before_ms}"
    );
    assert!(!entry.id.is_empty());

    // MessagePack (the default), JSON and string answers.
    let answer_msgpack = msgpack(&json!({"total": 3}));
    assert_eq!(
        reply(&mut backend, &alice.conn, id, &answer_msgpack, None),
        1
    );
    match answer(&mut alice, id).await {
        ServerFrame::Ack { data, .. } => assert_eq!(data, json!({"data": {"total": 3}})),
        other => panic!("an ack, got {other:?}"),
    }
    let id = alice.send_request(rpc("m", &json!(null))).await;
    let entry = next_rpc(&mut backend);
    assert_eq!(entry.fields["data"], vec![0xc0]);
    assert_eq!(entry.text("json"), "null");
    assert_eq!(
        reply(
            &mut backend,
            &alice.conn,
            id,
            br#"[1,{"a":"b"}]"#,
            Some("json")
        ),
        1
    );
    match answer(&mut alice, id).await {
        ServerFrame::Ack { data, .. } => assert_eq!(data, json!({"data": [1, {"a": "b"}]})),
        other => panic!("an ack, got {other:?}"),
    }
    let id = alice.send_request(rpc("m", &json!("x"))).await;
    next_rpc(&mut backend);
    assert_eq!(
        reply(&mut backend, &alice.conn, id, b"plain text", Some("string")),
        1
    );
    match answer(&mut alice, id).await {
        ServerFrame::Ack { data, .. } => assert_eq!(data, json!({"data": "plain text"})),
        other => panic!("an ack, got {other:?}"),
    }
    // A payload that is not what its FORMAT says is refused by the module
    // and nothing reaches the client.
    let id = alice.send_request(rpc("m", &json!(1))).await;
    next_rpc(&mut backend);
    let bad = redis::cmd("BROKER.RPC.REPLY")
        .arg(&alice.conn)
        .arg(id)
        .arg("{nope")
        .arg("FORMAT")
        .arg("json")
        .query::<i64>(&mut backend);
    assert!(bad.is_err(), "{bad:?}");
    assert_eq!(
        reply(&mut backend, &alice.conn, id, b"ok", Some("string")),
        1
    );
    assert!(matches!(
        answer(&mut alice, id).await,
        ServerFrame::Ack { .. }
    ));
    assert_nothing_more(&mut alice).await;
    assert_eq!(
        gw.metric("broker_rpc_requests_total{result=\"replied\"}")
            .await,
        4.0
    );
}

#[tokio::test]
async fn rpc_error_reaches_the_client_with_its_fields() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut backend = redis.client();
    create_group(&mut backend);
    let mut alice = gw.connect("alice").await;
    let id = alice
        .send_request(rpc("orders.get", &json!({"order": 404})))
        .await;
    next_rpc(&mut backend);
    assert_eq!(
        reply_error(&mut backend, &alice.conn, id, "not_found", "no such order"),
        1
    );
    match answer(&mut alice, id).await {
        ServerFrame::Err {
            code,
            msg,
            rpc_code,
            retry_ms,
            ..
        } => {
            assert_eq!(code, "rpc_error");
            assert_eq!(msg, "no such order");
            assert_eq!(rpc_code.as_deref(), Some("not_found"));
            assert_eq!(retry_ms, None);
        }
        other => panic!("an err, got {other:?}"),
    }
    assert_eq!(
        gw.metric("broker_rpc_requests_total{result=\"error\"}")
            .await,
        1.0
    );
    // Bad answers are error replies of the module, never a crash.
    let conn = alice.conn.clone();
    for args in [
        vec!["BROKER.RPC.ERROR", &conn, "1", "has space", "m"],
        vec!["BROKER.RPC.ERROR", &conn, "x", "c", "m"],
        vec!["BROKER.RPC.ERROR", &conn, "1", "c"],
        vec!["BROKER.RPC.REPLY", &conn, "1"],
        vec!["BROKER.RPC.REPLY", "bad conn", "1", "p"],
    ] {
        let got = call(&mut backend, &args);
        assert!(got.is_err(), "{args:?}: {got:?}");
    }
    // A connection id of a node without a lease here: answered 0.
    assert_eq!(reply(&mut backend, "nowhere.x.1", 1, b"p", None), 0);
    assert_eq!(reply(&mut backend, "nodots", 1, b"p", None), 0);
    assert_nothing_more(&mut alice).await;
}

#[tokio::test]
async fn no_answer_is_a_timeout_and_a_late_answer_is_dropped_and_counted() {
    let redis = RedisServer::start();
    let opts = Options {
        extra_toml: "[rpc]\ntimeout_ms = 300\n".into(),
        ..Options::default()
    };
    let gw = Gateway::start(&redis, opts).await;
    let mut backend = redis.client();
    create_group(&mut backend);
    let mut alice = gw.connect("alice").await;
    let started = Instant::now();
    let id = alice.send_request(rpc("slow", &json!({}))).await;
    let entry = next_rpc(&mut backend);
    match answer(&mut alice, id).await {
        ServerFrame::Err { code, .. } => assert_eq!(code, "timeout"),
        other => panic!("an err timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(3),
        "timed out after {waited:?}"
    );
    let deadline: u64 = entry.text("deadline").parse().unwrap();
    assert!(deadline <= now_s() as u64 * 1000 + 1000);
    // The backend answers anyway: the module sends it (1), the gateway
    // drops it as late.
    assert_eq!(
        reply(&mut backend, &alice.conn, id, b"too late", Some("string")),
        1
    );
    wait_metric(
        &gw,
        "broker_rpc_replies_dropped_total{reason=\"late\"}",
        1.0,
        "the late answer is counted",
    )
    .await;
    assert_nothing_more(&mut alice).await;
    assert_eq!(
        gw.metric("broker_rpc_requests_total{result=\"timeout\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("broker_errors_total{code=\"timeout\"}").await,
        1.0
    );
    // An answer to an id never asked is dropped the same way.
    assert_eq!(
        reply(&mut backend, &alice.conn, 999, b"x", Some("string")),
        1
    );
    wait_metric(
        &gw,
        "broker_rpc_replies_dropped_total{reason=\"late\"}",
        2.0,
        "the unknown id is counted",
    )
    .await;
}

#[tokio::test]
async fn an_answer_to_a_connection_that_has_gone_is_dropped_and_counted() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut backend = redis.client();
    create_group(&mut backend);
    let mut alice = gw.connect("alice").await;
    let id = alice.send_request(rpc("m", &json!(1))).await;
    let entry = next_rpc(&mut backend);
    let conn = entry.text("conn");
    drop(alice);
    wait_metric(&gw, "broker_connections", 0.0, "the connection is gone").await;
    // The node still holds its lease: the module sends the answer (1).
    assert_eq!(reply(&mut backend, &conn, id, b"x", Some("string")), 1);
    wait_metric(
        &gw,
        "broker_rpc_replies_dropped_total{reason=\"gone\"}",
        1.0,
        "the answer is dropped as gone",
    )
    .await;
}

#[tokio::test]
async fn rpc_counts_against_the_request_budget_and_pending_rpcs_are_capped() {
    let redis = RedisServer::start();
    // 2 back to back, then one a minute; no backend: each rpc times out.
    let opts = Options {
        extra_toml: "[rpc]\ntimeout_ms = 200\n".into(),
        ..Options::default().requests(1, 60, 2)
    };
    let gw = Gateway::start(&redis, opts).await;
    let mut alice = gw.connect("alice").await;
    let mut budget_hit = None;
    for i in 0..3 {
        match alice.request(rpc("m", &json!(i))).await {
            ServerFrame::Err { code, retry_ms, .. } if code == "rate_limited" => {
                budget_hit = Some((i, retry_ms));
                break;
            }
            ServerFrame::Err { code, .. } if code == "timeout" => {}
            other => panic!("rpc {i}: {other:?}"),
        }
    }
    let (at, retry_ms) = budget_hit.expect("the budget ran out");
    // The personal room's join is no request: the first two rpcs pass.
    assert_eq!(at, 2, "the third request is over the budget");
    assert!(retry_ms.is_some_and(|ms| ms > 0));

    // At most 100 rpcs wait for their answer; the 101st is refused.
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut bob = gw.connect("bob").await;
    let mut ids = Vec::new();
    for i in 0..101 {
        ids.push(bob.send_request(rpc("m", &json!(i))).await);
    }
    let last = *ids.last().unwrap();
    match answer(&mut bob, last).await {
        ServerFrame::Err { code, retry_ms, .. } => {
            assert_eq!(code, "rate_limited");
            assert!(retry_ms.is_some_and(|ms| ms <= 5000), "{retry_ms:?}");
        }
        other => panic!("the 101st rpc is refused, got {other:?}"),
    }
    // Reusing the id of a pending rpc is a bad frame.
    let dup = ClientFrame::Rpc {
        id: ids[0],
        method: "m".into(),
        data: vec![0xc0],
    };
    bob.send(&dup).await;
    let (id, code) = bob.recv_err().await;
    assert_eq!((id, code.as_str()), (Some(ids[0]), "bad_frame"));
    // A bad method is a bad frame too.
    let (code, _) = bob.err(rpc("has space", &json!(1))).await;
    assert_eq!(code, "bad_frame");
    let (code, _) = bob.err(rpc("", &json!(1))).await;
    assert_eq!(code, "bad_frame");
}

#[tokio::test]
async fn rpc_disabled_is_forbidden_and_appends_nothing() {
    let redis = RedisServer::start();
    let opts = Options {
        extra_toml: "[rpc]\nenabled = false\n".into(),
        ..Options::default()
    };
    let gw = Gateway::start(&redis, opts).await;
    let mut alice = gw.connect("alice").await;
    let (code, _) = alice.err(rpc("m", &json!(1))).await;
    assert_eq!(code, "forbidden");
    let mut con = redis.client();
    assert_eq!(int(&call(&mut con, &["XLEN", STREAM]).unwrap()), 0);
    alice.ack(ping()).await;
}

#[tokio::test]
async fn on_a_cluster_the_answer_reaches_the_right_node() {
    let cluster = RedisCluster::start(3);
    let start = |node: &str| {
        Gateway::start(
            &cluster.servers[0],
            Options::default().node(node).redis_cluster(&cluster.urls()),
        )
    };
    let a = start("node-a").await;
    let b = start("node-b").await;
    // One stream on one master: the backend reads it there.
    let mut backend = cluster.master_of(STREAM).client();
    create_group(&mut backend);
    let mut clients = Vec::new();
    for (gw, user) in [(&a, "alice"), (&b, "bob"), (&a, "carol"), (&b, "dave")] {
        clients.push(gw.connect(user).await);
    }
    for c in &mut clients {
        let id = c
            .send_request(rpc("whoami", &json!({"user": c.user})))
            .await;
        let entry = next_rpc(&mut backend);
        assert_eq!(entry.text("conn"), c.conn);
        assert_eq!(entry.text("node"), c.node);
        // RPC.REPLY routes by the connection id: any master.
        let conn = c.conn.clone();
        let answer_bytes = msgpack(&json!({"for": c.user}));
        let mut cmd = redis::cmd("BROKER.RPC.REPLY");
        cmd.arg(&conn).arg(id).arg(answer_bytes);
        let mut on_master = cluster.master_of(&conn).client();
        let sent: i64 = cmd
            .query(&mut on_master)
            .expect("RPC.REPLY on the conn's master");
        assert_eq!(sent, 1);
        match answer(c, id).await {
            ServerFrame::Ack { data, .. } => assert_eq!(data, json!({"data": {"for": c.user}})),
            other => panic!("{}: an ack, got {other:?}", c.user),
        }
    }
    for c in &mut clients {
        assert_nothing_more(c).await;
    }
    let replied = a
        .metric("broker_rpc_requests_total{result=\"replied\"}")
        .await
        + b.metric("broker_rpc_requests_total{result=\"replied\"}")
            .await;
    assert_eq!(replied, 4.0);
    let dropped = a
        .metric("broker_rpc_replies_dropped_total{reason=\"gone\"}")
        .await
        + b.metric("broker_rpc_replies_dropped_total{reason=\"gone\"}")
            .await;
    assert_eq!(dropped, 0.0);
}
