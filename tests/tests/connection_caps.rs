//! The node's connection caps over real sockets: `limits.max_preauth_per_ip`
//! (sockets of one address still waiting for their `auth` frame, HTTP
//! 429), `limits.max_conns` (every WebSocket connection of the node, HTTP
//! 503 with `Retry-After`), the cap taken from the open-file limit, and
//! the admin listener that will not start off loopback without a key.
//! Each refusal is counted in `broker_connections_refused_total{reason}`,
//! and a bystander connected throughout loses nothing.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broker_tests::gateway::{
    auth, gateway_path, msg_fields, token, Bystander, Client, ConnectError, Gateway, Options,
    SECRET,
};
use broker_tests::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

/// A member of `feed:calm`, connected with a token before the caps are
/// `broker_connections_refused_total{reason="<reason>"}`.
async fn refused(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "broker_connections_refused_total{{reason=\"{reason}\"}}"
    ))
    .await
}

/// The upgrade of `/ws` with `token` (none: an `auth` frame must follow).
async fn try_ws(gw: &Gateway, token: Option<&str>) -> Result<Client, ConnectError> {
    Client::try_connect(&gw.ws_url(token), &[]).await
}

/// The status of a refused upgrade, panicking when it was not refused.
async fn refused_with(gw: &Gateway, token: Option<&str>) -> u16 {
    match try_ws(gw, token).await {
        Err(ConnectError::Status(code)) => code,
        Err(ConnectError::Other(e)) => panic!("upgrade failed without a status: {e}"),
        Ok(_) => panic!("the upgrade should have been refused"),
    }
}

/// Retries the upgrade for up to 5 s while it is refused with `status`
/// (a place is freed when the server has seen the socket go, a moment
/// after the client let go of it); returns the refusals on the way.
async fn admitted_after(gw: &Gateway, token: Option<&str>, status: u16) -> (Client, u32) {
    let deadline = Instant::now() + WAIT;
    let mut refusals = 0;
    loop {
        match try_ws(gw, token).await {
            Ok(c) => return (c, refusals),
            Err(ConnectError::Status(code)) if code == status && Instant::now() < deadline => {
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("upgrade refused for good: {e:?}"),
        }
    }
}

/// A bare WebSocket upgrade request on a fresh socket: the response's
/// status and head (status line and headers, lowercased).
async fn raw_upgrade(addr: SocketAddr) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before a response");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head)
}

#[tokio::test]
async fn sockets_waiting_for_auth_are_capped_per_address() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().max_preauth_per_ip(3)).await;
    let mut bystander = Bystander::join(&gw).await;

    // Three sockets from 127.0.0.1 upgrade without a token: the cap.
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(
            try_ws(&gw, None)
                .await
                .unwrap_or_else(|e| panic!("unauthenticated socket {i}: {e:?}")),
        );
    }
    // The fourth: 429 before the upgrade, counted.
    assert_eq!(refused_with(&gw, None).await, 429);
    assert_eq!(refused(&gw, "preauth_per_ip").await, 1.0);
    assert_eq!(refused(&gw, "max_conns").await, 0.0);

    // A client with a token from the same address is not concerned.
    let mut good = gw.connect("good").await;
    good.ping().await;

    // One of the three authenticates: its place is free again.
    let mut first = waiting.remove(0);
    let ack = first.ack(auth(&token("late", 600, &[], &[]))).await;
    assert_eq!(ack["user"], "late", "{ack}");
    let (fourth, refusals) = admitted_after(&gw, None, 429).await;
    waiting.push(fourth);
    // ...and it is a normal connection.
    first.ping().await;

    // Full again; one closes, and a new one gets in.
    assert_eq!(refused_with(&gw, None).await, 429);
    waiting.remove(0).close().await;
    let (fifth, more) = admitted_after(&gw, None, 429).await;
    waiting.push(fifth);
    // Every 429 was counted, and nothing else.
    assert_eq!(
        refused(&gw, "preauth_per_ip").await,
        f64::from(2 + refusals + more)
    );
    assert_eq!(refused(&gw, "conn_limit").await, 0.0);

    // The well-behaved ones were not disturbed.
    good.ping().await;
    bystander
        .still_fine(&gw, &redis, "sockets waiting for auth at their cap")
        .await;
}

#[tokio::test]
async fn the_node_cap_answers_503_until_a_socket_is_gone() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().max_conns(5)).await;
    assert_eq!(gw.metric("broker_connections_max").await, 5.0);
    let mut bystander = Bystander::join(&gw).await;

    // The bystander and four more: five places.
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(gw.connect(&format!("user{i}")).await);
    }
    // The sixth is refused before the upgrade, with or without a token.
    assert_eq!(
        refused_with(&gw, Some(&token("sixth", 600, &[], &[]))).await,
        503
    );
    assert_eq!(refused_with(&gw, None).await, 503);
    let (status, head) = raw_upgrade(gw.addr).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 5"), "{head}");
    assert_eq!(refused(&gw, "max_conns").await, 3.0);
    // Plain HTTP is not capped: the node stays ready, its admin API works.
    assert!(gw.is_ready().await, "/readyz while full");
    bystander
        .still_fine(&gw, &redis, "the node at its cap")
        .await;

    // One closes: its place goes to a socket still waiting for `auth`
    // (unauthenticated connections hold places too)...
    held.remove(0).close().await;
    let (mut waiting, r1) = admitted_after(&gw, None, 503).await;
    assert_eq!(
        refused_with(&gw, Some(&token("seventh", 600, &[], &[]))).await,
        503
    );
    let ack = waiting.ack(auth(&token("waited", 600, &[], &[]))).await;
    assert_eq!(ack["user"], "waited", "{ack}");
    // ...and one that drops its socket without a close frees its place too.
    drop(held.remove(0));
    let (mut again, r2) = admitted_after(&gw, Some(&token("again", 600, &[], &[])), 503).await;
    again.welcome().await;
    again.ping().await;
    assert_eq!(refused(&gw, "max_conns").await, f64::from(4 + r1 + r2));

    // Everyone admitted is served.
    for c in &mut held {
        c.ping().await;
    }
    waiting.ping().await;
    bystander
        .still_fine(&gw, &redis, "places freed and taken")
        .await;
}

/// `limits.max_conns = 0`: the binary raises its soft open-file limit to
/// the hard one, and takes the cap from it minus the reserve (64 + 1/20).
#[tokio::test]
async fn without_max_conns_the_cap_comes_from_the_open_file_limit() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let pid = gw.pid().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let values: Vec<&str> = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .collect();
    let (soft, hard) = (values[0], values[1]);
    assert_eq!(
        soft, hard,
        "the soft limit is raised to the hard one: {line}"
    );
    let max = gw.metric("broker_connections_max").await;
    match soft.parse::<u64>() {
        Ok(limit) => {
            let expected = (limit.saturating_sub(64 + limit / 20))
                .max(limit / 2)
                .max(1);
            assert_eq!(max, expected.min(1 << 20) as f64, "{line}");
        }
        // "unlimited"
        Err(_) => assert_eq!(max, f64::from(1u32 << 20), "{line}"),
    }
    gw.connect("someone").await.ping().await;
}

/// Like Redis' protected mode: an admin listener on a non-loopback
/// address without `admin.api_key` stops the process at start-up with
/// a message that says what to do.
#[tokio::test]
async fn the_admin_listener_will_not_start_off_loopback_without_a_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("gateway.toml");
    let port = broker_tests::free_port();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nadmin_listen = \"0.0.0.0:{port}\"\n\
             [redis]\nurl = \"redis://127.0.0.1:1\"\n[auth]\nsecret = \"{SECRET}\"\n",
            broker_tests::free_port()
        ),
    )
    .expect("write the config");
    let mut cmd = Command::new(gateway_path());
    cmd.arg("--config").arg(&config);
    for (key, _) in std::env::vars_os() {
        if key
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("BROKER_")
        {
            cmd.env_remove(&key);
        }
    }
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn broker-gateway");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker-gateway started with a public admin listener and no key");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "exit status {:?}: {text}",
        out.status
    );
    assert!(
        text.contains(&format!(
            "admin_listen 0.0.0.0:{port} is not a loopback address: set admin.api_key"
        )),
        "{text}"
    );
}

/// CPU time (user + system) the process `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces), from state on.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Sets the soft open-file limit of `pid` (the hard one stays).
fn set_soft_nofile(pid: u32, soft: usize) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit --nofile={soft}:");
}

/// Out of descriptors (the limit lowered under a running node, so below
/// its cap), `accept` fails: the listener pauses instead of spinning,
/// logs rarely, counts the failures, and serves again once descriptors
/// are free; connections already open are served throughout.
#[tokio::test]
async fn out_of_descriptors_the_listener_backs_off_and_recovers() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut bystander = Bystander::join(&gw).await;
    let pid = gw.pid().expect("running");
    let log_before = gw.log().matches("accept failed").count();
    set_soft_nofile(pid, gw.open_fds() + 5);

    // Many more TCP connections than descriptors left: they wait in the
    // backlog while `accept` fails.
    let mut flood = Vec::new();
    for _ in 0..50 {
        flood.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ticks = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - ticks;
    // A spinning accept loop burns a whole core: ~200 ticks in 2 s.
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );

    // The open connection still gets what is published (through the
    // node's existing Redis connections).
    broker_tests::run(
        &mut redis.client(),
        broker_tests::Publish::string("feed:calm", "m", "while out of descriptors"),
    );
    let frame = bystander.client.recv_msg().await;
    assert_eq!(msg_fields(&frame).0, "feed:calm");
    bystander.next += 1;

    // Descriptors back: the node accepts again, and counted the failures.
    drop(flood);
    set_soft_nofile(pid, 20_000.min(hard_nofile(pid)));
    eventually_ready(&gw).await;
    assert!(gw.metric("broker_accept_errors_total").await >= 1.0);
    let lines = gw.log().matches("accept failed").count() - log_before;
    assert!(
        (1..=3).contains(&lines),
        "{lines} `accept failed` lines in ~3 s (at most one per 5 s per listener)"
    );
    gw.connect("after").await.ping().await;
    bystander
        .still_fine(&gw, &redis, "running out of descriptors")
        .await;
}

/// The hard open-file limit of `pid`.
fn hard_nofile(pid: u32) -> usize {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Waits up to 5 s for `/readyz` to answer 200.
async fn eventually_ready(gw: &Gateway) {
    let deadline = Instant::now() + WAIT;
    while !gw.is_ready().await {
        assert!(Instant::now() < deadline, "not ready again within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
