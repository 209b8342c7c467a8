//! The Socket.IO endpoint at the wire level, case by case as the official
//! protocol suites check a server (`engine.io-protocol` and
//! `socket.io-protocol` test-suites, WebSocket transport, plus the polling
//! handshake and the upgrade): a raw Engine.IO client over tungstenite and
//! raw HTTP, against a real gateway and Redis. The real `socket.io-client`
//! runs in `tests/socketio/` (scripts/socketio-test.sh). docs/SOCKETIO.md.

use std::time::Duration;

use broker_tests::gateway::{http_text, token, Gateway, HttpResponse, Options};
use broker_tests::RedisServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as J};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const PATH: &str = "/socket.io/";
const WAIT: Duration = Duration::from_secs(5);

/// A raw Engine.IO client on WebSocket.
struct Eio {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `open` packet's JSON.
    open: J,
}

/// What came next on a socket.
#[derive(Debug, PartialEq)]
enum Next {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame, or the connection's end.
    Closed,
}

impl Eio {
    /// Opens `?EIO=4&transport=websocket` plus `query`, reads `open`.
    async fn connect(gw: &Gateway, query: &str) -> Eio {
        let mut ws = Self::raw(gw, query, None).await;
        let Next::Text(open) = next(&mut ws).await else {
            panic!("no open packet")
        };
        let open = serde_json::from_str(open.strip_prefix('0').expect("an open packet"))
            .expect("open JSON");
        Eio { ws, open }
    }

    /// Opens a WebSocket without reading anything.
    async fn raw(
        gw: &Gateway,
        query: &str,
        origin: Option<&str>,
    ) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        let url = format!("ws://{}{PATH}?EIO=4&transport=websocket{query}", gw.addr);
        let mut request = url.into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket")
            .0
    }

    /// Opens and connects to `/` with a token for `user`; returns the
    /// CONNECT answer's `sid`.
    async fn connected(gw: &Gateway, user: &str) -> (Eio, String) {
        let mut c = Eio::connect(gw, "").await;
        c.send(&format!(
            "40{}",
            json!({"token": token(user, 3600, &[], &[])})
        ))
        .await;
        let answer = c.text().await;
        let body: J =
            serde_json::from_str(answer.strip_prefix("40").expect("CONNECT answer")).unwrap();
        (c, body["sid"].as_str().unwrap().to_owned())
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.unwrap();
    }

    /// The next text packet that is not a ping (answered), a presence
    /// event or an offset event.
    async fn text(&mut self) -> String {
        loop {
            match next(&mut self.ws).await {
                Next::Text(t) if t == "2" => self.send("3").await,
                Next::Text(t) if t.starts_with(r#"42["broker:presence-event""#) => {}
                Next::Text(t) if t.starts_with(r#"42["broker:offset""#) => {}
                Next::Text(t) => return t,
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    async fn next(&mut self) -> Next {
        next(&mut self.ws).await
    }

    /// Waits for the server to close (pings answered or not, as told).
    async fn closed(&mut self, answer_pings: bool) {
        loop {
            match next(&mut self.ws).await {
                Next::Closed => return,
                Next::Text(t) if t == "2" && answer_pings => self.send("3").await,
                _ => {}
            }
        }
    }
}

/// The next data frame or the close, within [`WAIT`] (a panic otherwise).
async fn next(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> Next {
    loop {
        let item = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("nothing from the server in time");
        match item {
            Some(Ok(Message::Text(t))) => return Next::Text(t.to_string()),
            Some(Ok(Message::Binary(b))) => return Next::Binary(b.to_vec()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Next::Closed,
            Some(Ok(_)) => {}
        }
    }
}

async fn get(gw: &Gateway, query: &str) -> HttpResponse {
    http_text(
        gw.addr,
        "GET",
        &format!("{PATH}?{query}"),
        "text/plain",
        "",
        None,
    )
    .await
}

async fn post(gw: &Gateway, query: &str, body: &str) -> HttpResponse {
    let path = format!("{PATH}?{query}");
    http_text(
        gw.addr,
        "POST",
        &path,
        "text/plain;charset=UTF-8",
        body,
        None,
    )
    .await
}

async fn start() -> (RedisServer, Gateway) {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().keepalive(1, 3)).await;
    (redis, gw)
}

#[tokio::test]
async fn engine_handshake_and_its_refusals() {
    let (_redis, gw) = start().await;
    // WebSocket: open with no upgrades and the keep-alive as configured.
    let c = Eio::connect(&gw, "").await;
    assert!(c.open["sid"].as_str().is_some_and(|s| s.len() >= 20));
    assert_eq!(c.open["upgrades"], json!([]));
    assert_eq!(c.open["pingInterval"], 1000);
    assert_eq!(c.open["pingTimeout"], 2000);
    assert_eq!(c.open["maxPayload"], 65536);
    // Polling: the GET is answered with the open packet.
    let open = get(&gw, "EIO=4&transport=polling").await;
    assert_eq!(open.status, 200, "{open:?}");
    let body: J = serde_json::from_str(open.body.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(body["upgrades"], json!(["websocket"]));
    // The reference server's refusals.
    for (query, code) in [
        ("transport=polling", 5),
        ("EIO=3&transport=polling", 5),
        ("EIO=abc&transport=polling", 5),
        ("EIO=4&transport=carrier-pigeon", 0),
        ("EIO=4", 0),
        ("EIO=4&transport=polling&sid=nope", 1),
        ("EIO=4&transport=websocket", 3),
    ] {
        let r = get(&gw, query).await;
        assert_eq!(r.status, 400, "{query}: {r:?}");
        assert_eq!(r.json()["code"], code, "{query}: {r:?}");
    }
    let r = post(&gw, "EIO=4&transport=polling", "40").await;
    assert_eq!((r.status, r.json()["code"].clone()), (400, json!(2)));
}

#[tokio::test]
async fn heartbeat_pings_and_a_silent_client_is_closed() {
    let (_redis, gw) = start().await;
    let (mut c, _) = Eio::connected(&gw, "alice").await;
    // Pings every second, answered: the connection stays past the idle
    // timeout (3 s).
    for _ in 0..4 {
        loop {
            if let Next::Text(t) = c.next().await {
                if t == "2" {
                    c.send("3").await;
                    break;
                }
            }
        }
    }
    c.send(&format!(
        "421{}",
        json!(["broker:presence", {"room": "user:alice"}])
    ))
    .await;
    assert!(c.text().await.starts_with("431"), "still served");
    // Unanswered: closed once the idle timeout passes.
    let (mut silent, _) = Eio::connected(&gw, "bob").await;
    let t = std::time::Instant::now();
    silent.closed(false).await;
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn client_close_and_disconnect_end_the_connection() {
    let (redis, gw) = start().await;
    let (mut c, sid) = Eio::connected(&gw, "alice").await;
    c.send("1").await;
    c.closed(true).await;
    let (mut d, sid2) = Eio::connected(&gw, "alice").await;
    assert_ne!(sid, sid2);
    d.send("41").await;
    d.closed(true).await;
    // Both are gone from the module.
    let mut con = redis.client();
    broker_tests::eventually("alice's connections closed in the module", || {
        let presence: std::collections::HashMap<String, redis::Value> =
            redis::cmd("BROKER.PRESENCE")
                .arg("alice")
                .query(&mut con)
                .map_err(|e| e.to_string())?;
        match presence.get("connections") {
            Some(redis::Value::Int(0)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[tokio::test]
async fn connect_to_main_custom_and_invalid_namespaces() {
    let (_redis, gw) = start().await;
    let mut c = Eio::connect(&gw, "").await;
    // A custom namespace is refused; the connection stays usable.
    c.send("40/custom,").await;
    let refusal = c.text().await;
    assert_eq!(refusal, r#"44/custom,{"message":"Invalid namespace"}"#);
    c.send(&format!(
        "40{}",
        json!({"token": token("alice", 3600, &[], &[])})
    ))
    .await;
    let answer = c.text().await;
    let body: J = serde_json::from_str(answer.strip_prefix("40").unwrap()).unwrap();
    assert!(body["sid"]
        .as_str()
        .is_some_and(|s| s.starts_with(&gw.node)));
    assert!(body["pid"].is_string());
    // No token: CONNECT_ERROR unauthorized, then the transport closes.
    let mut c = Eio::connect(&gw, "").await;
    c.send("40").await;
    let refusal = c.text().await;
    let body: J = serde_json::from_str(refusal.strip_prefix("44").unwrap()).unwrap();
    assert_eq!(body["data"]["code"], "unauthorized", "{refusal}");
    // No close of ours in between: the client closes, as socket.io-client
    // does on a refusal.
    c.send("1").await;
    assert_eq!(c.next().await, Next::Closed);
    // A bad token in the query, no auth object: the same.
    let mut c = Eio::connect(&gw, "&token=nope").await;
    c.send("40").await;
    assert!(c.text().await.starts_with("44{"));
}

#[tokio::test]
async fn invalid_handshakes_and_no_connect_in_time_close() {
    let (_redis, gw) = start().await;
    for first in ["4abc", "42[\"x\"]", "garbage", "0{}"] {
        let mut c = Eio::connect(&gw, "").await;
        c.send(first).await;
        c.closed(true).await;
    }
    // Binary that is not a msgpack map.
    let mut c = Eio::connect(&gw, "").await;
    c.send_binary(vec![1, 2, 3]).await;
    c.closed(true).await;
    // Nothing within 5 s.
    let mut c = Eio::connect(&gw, "").await;
    let t = std::time::Instant::now();
    while let Ok(Some(Ok(Message::Text(_)))) =
        tokio::time::timeout(Duration::from_secs(8), c.ws.next()).await
    {}
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
}

#[tokio::test]
async fn plain_binary_and_acknowledged_events() {
    let (_redis, gw) = start().await;
    let (mut a, _) = Eio::connected(&gw, "alice").await;
    let (mut b, _) = Eio::connected(&gw, "bob").await;
    for c in [&mut a, &mut b] {
        c.send(&format!("42{}", json!(["broker:join", {"room": "chat:x"}])))
            .await;
        c.send(&format!(
            "427{}",
            json!(["broker:join", {"room": "chat:x"}])
        ))
        .await;
        let ack = c.text().await;
        let body: J = serde_json::from_str(ack.strip_prefix("437").unwrap()).unwrap();
        assert_eq!(body[0]["room"], "chat:x", "{ack}");
        assert_eq!(body[0]["recovered"], false);
    }
    // A binary event: header, then its attachment.
    let header = json!(["broker:publish", {"room": "chat:x", "ev": "file",
        "data": {"name": "a", "bytes": {"_placeholder": true, "num": 0}}}]);
    a.send(&format!("451-3{header}")).await;
    a.send_binary(vec![0, 1, 2, 255]).await;
    // The ack, and the publisher's own copy (no `others`), in either order.
    let (mut ack, mut copy) = (None, false);
    while ack.is_none() || !copy {
        let text = a.text().await;
        if text.starts_with("451-[\"file\"") {
            assert!(matches!(a.next().await, Next::Binary(_)));
            copy = true;
        } else {
            ack = Some(text);
        }
    }
    assert_eq!(ack.unwrap(), r#"433[{"seq":1}]"#);
    // b gets it as a binary event: data, meta, offset; then the buffer.
    let event = b.text().await;
    let rest = event.strip_prefix("451-").expect("a binary event");
    let args: J = serde_json::from_str(rest).unwrap();
    assert_eq!(args[0], "file");
    assert_eq!(args[1]["bytes"], json!({"_placeholder": true, "num": 0}));
    assert_eq!(args[2]["seq"], 1);
    assert_eq!(args[2]["from"]["user"], "alice");
    assert!(args[3].as_str().unwrap().contains("chat:x"));
    assert_eq!(b.next().await, Next::Binary(vec![0, 1, 2, 255]));
    // A refusal acks {error}; without an ack id it is a broker:error event.
    a.send(&format!(
        "429{}",
        json!(["broker:publish", {"room": "chat:nope", "ev": "e"}])
    ))
    .await;
    let refused: J = serde_json::from_str(a.text().await.strip_prefix("439").unwrap()).unwrap();
    assert_eq!(refused[0]["error"]["code"], "not_member");
    a.send(&format!(
        "42{}",
        json!(["broker:leave", {"room": "chat:nope"}])
    ))
    .await;
    let event: J = serde_json::from_str(a.text().await.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(event[0], "broker:error");
    assert_eq!(event[1]["code"], "not_member");
    // A reserved name we do not have, and bad arguments: bad_frame.
    a.send(&format!("4211{}", json!(["broker:nope", {}]))).await;
    let refused: J = serde_json::from_str(a.text().await.strip_prefix("4311").unwrap()).unwrap();
    assert_eq!(refused[0]["error"]["code"], "bad_frame");
}

#[tokio::test]
async fn bad_packets_close_the_connection() {
    let (_redis, gw) = start().await;
    for bad in [
        "48[\"x\"]",                     // unknown packet type
        "42{\"not\":\"an array\"}",      // invalid payload
        "42abc[\"x\"]",                  // invalid ack id
        "4299999999999999999999[\"x\"]", // ack id overflow
        "42[\"connect\"]",               // a reserved Socket.IO name
        "43[]",                          // ACK without an id
        "9",                             // unknown Engine.IO type
    ] {
        let (mut c, _) = Eio::connected(&gw, "alice").await;
        c.send(bad).await;
        c.closed(true).await;
    }
    // A buffer nobody waits for.
    let (mut c, _) = Eio::connected(&gw, "alice").await;
    c.send_binary(vec![1]).await;
    c.closed(true).await;
}

#[tokio::test]
async fn polling_then_upgrade_to_websocket() {
    let (_redis, gw) = start().await;
    let open = get(&gw, "EIO=4&transport=polling").await;
    let sid = serde_json::from_str::<J>(&open.body[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let connect = format!("40{}", json!({"token": token("alice", 3600, &[], &[])}));
    assert_eq!(post(&gw, &q, &connect).await.body, "ok");
    // The personal room's `broker:offset`, then the CONNECT answer (in
    // one GET or two, as they are queued).
    let mut answers = get(&gw, &q).await.body;
    while !answers.split('\u{1e}').any(|p| p.starts_with("40{\"sid\"")) {
        answers.push('\u{1e}');
        answers.push_str(&get(&gw, &q).await.body);
    }
    let before: Vec<&str> = answers
        .split('\u{1e}')
        .take_while(|p| !p.starts_with("40{\"sid\""))
        .filter(|p| *p != "2" && *p != "6")
        .collect();
    assert!(
        before.len() == 1 && before[0].starts_with("42[\"broker:offset\""),
        "{answers:?}"
    );
    // Two packets in one POST; their acks in one GET.
    let body = format!(
        "421{}\u{1e}422{}",
        json!(["broker:join", {"room": "chat:p"}]),
        json!(["broker:presence", {"room": "chat:p"}])
    );
    assert_eq!(post(&gw, &q, &body).await.body, "ok");
    // Packets of the answers so far, whole (an epoch may hold "432").
    let mut acks = String::new();
    while !acks.split('\u{1e}').any(|p| p.starts_with("432[")) {
        acks.push_str(&get(&gw, &q).await.body);
        acks.push('\u{1e}');
    }
    assert!(acks.contains("431[{\"room\":\"chat:p\""), "{acks}");
    // A GET waits; the probe releases it with noop, then `5` switches.
    let gw_addr = gw.addr;
    let q2 = q.clone();
    let waiting = tokio::spawn(async move {
        http_text(
            gw_addr,
            "GET",
            &format!("{PATH}?{q2}"),
            "text/plain",
            "",
            None,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ws = Eio::raw(&gw, &format!("&sid={sid}"), None).await;
    ws.send(Message::text("2probe")).await.unwrap();
    let probe = next(&mut ws).await;
    assert_eq!(probe, Next::Text("3probe".into()));
    let released = waiting.await.unwrap();
    assert!(
        released.body == "6" || released.body.starts_with('2'),
        "{released:?}"
    );
    ws.send(Message::text("5")).await.unwrap();
    ws.send(Message::text(format!(
        "423{}",
        json!(["broker:presence", {"room": "chat:p"}])
    )))
    .await
    .unwrap();
    loop {
        match next(&mut ws).await {
            Next::Text(t) if t == "2" => ws.send(Message::text("3")).await.unwrap(),
            Next::Text(t) => {
                assert!(t.starts_with("433[{\"users\""), "{t}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // Polling is over for this session.
    assert_eq!(get(&gw, &q).await.status, 400);
}

#[tokio::test]
async fn msgpack_parser_connects_and_exchanges_events() {
    use broker::socketio::{msgpack_parser, Body, Packet, SioValue};
    let (_redis, gw) = start().await;
    let mut c = Eio::connect(&gw, "").await;
    let auth = vec![(
        "token".to_owned(),
        SioValue::str(&token("alice", 3600, &[], &[])),
    )];
    c.send_binary(msgpack_parser::encode(&Packet::main(Body::Connect(Some(
        auth,
    )))))
    .await;
    // The personal room's `broker:offset` may come first (the client
    // buffers events until its CONNECT is answered).
    loop {
        let Next::Binary(packet) = c.next().await else {
            panic!("binary packets")
        };
        let packet = msgpack_parser::decode(&packet).unwrap();
        match packet.body {
            Body::Connect(Some(_)) => break,
            Body::Event { name, .. } if name == "broker:offset" => {}
            other => panic!("{other:?}"),
        }
    }
    let join = Packet::main(Body::Event {
        id: Some(5),
        name: "broker:join".into(),
        args: vec![SioValue::Object(vec![(
            "room".into(),
            SioValue::str("chat:m"),
        )])],
    });
    c.send_binary(msgpack_parser::encode(&join)).await;
    let ack = loop {
        let Next::Binary(packet) = c.next().await else {
            panic!("binary ack")
        };
        let packet = msgpack_parser::decode(&packet).unwrap();
        if matches!(packet.body, Body::Ack { .. }) {
            break packet;
        }
    };
    let Body::Ack { id: 5, args } = ack.body else {
        panic!("{ack:?}")
    };
    assert_eq!(args[0].get("room"), Some(&SioValue::str("chat:m")));
    // Text from a msgpack client is a bad packet.
    c.send("42[\"x\"]").await;
    c.closed(true).await;
}

#[tokio::test]
async fn origin_is_checked_and_drain_closes_the_transport() {
    let redis = RedisServer::start();
    let mut gw = Gateway::start(&redis, Options::default().origins(&["https://app.example"])).await;
    let url = format!("ws://{}{PATH}?EIO=4&transport=websocket", gw.addr);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    let polled = http_text(
        gw.addr,
        "GET",
        &format!("{PATH}?EIO=4&transport=polling"),
        "text/plain",
        "",
        Some("Origin: https://app.example\r\n"),
    )
    .await;
    assert_eq!(polled.status, 200);
    assert_eq!(
        polled.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let mut c = Eio::raw(&gw, "", Some("https://app.example")).await;
    let _open = next(&mut c).await;
    c.send(Message::text(format!(
        "40{}",
        json!({"token": token("alice", 3600, &[], &[])})
    )))
    .await
    .unwrap();
    loop {
        match next(&mut c).await {
            Next::Text(t) if t.starts_with("40") => break,
            Next::Text(t) if t.starts_with(r#"42["broker:offset""#) => {}
            other => panic!("{other:?}"),
        }
    }
    let metric = gw
        .metric("broker_socketio_connections{transport=\"websocket\"}")
        .await;
    assert!(metric >= 1.0, "{metric}");
    // SIGTERM: the transport closes (1012), no DISCONNECT: the client
    // reconnects elsewhere.
    let terminated = tokio::spawn(async move {
        gw.terminate().await;
    });
    loop {
        match next(&mut c).await {
            Next::Closed => break,
            Next::Text(t) => assert!(!t.starts_with("41"), "no DISCONNECT on a drain: {t}"),
            Next::Binary(_) => {}
        }
    }
    terminated.await.unwrap();
}
