//! Slow consumers, end to end: a member that stops reading while its room
//! is busy is closed with 4008 (`limits.send_queue` frames behind), the
//! gateway's memory stays bounded, the module forgets the connection, and
//! the members that keep reading lose nothing and keep their latency.
//!
//! One gateway, a room `feed:busy` with `MEMBERS` readers and a publisher
//! (a client of the same gateway) sending `RATE` messages of 16 KiB a
//! second, in three phases of `PHASE_MSGS` messages each:
//!
//! 1. baseline: everyone reads;
//! 2. a member with a 4 KiB receive window stops reading; once the gateway
//!    counts it as a slow consumer it reads again, and must find a gapless
//!    prefix of the stream followed by a close frame with 4008;
//! 3. a member (an ordinary WebSocket client with default buffers) stops
//!    reading for good; the gateway must let go of it without its help.
//!
//! The figures are printed (`--nocapture`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use broker::protocol::{self, CloseCode, ServerFrame};
use broker_tests::gateway::{
    join, msg_fields, presence, publish_others, rss_kib, token, Client, Gateway, Options,
};
use broker_tests::raw::{Ending, RawWs};
use broker_tests::{int, map, run, RedisServer, RoomCount};
use serde_json::json;

/// The busy room (`feed`: no rate limit).
const ROOM: &str = "feed:busy";
/// Members that keep reading.
const MEMBERS: usize = 8;
/// Messages a second.
const RATE: u64 = 250;
/// Messages per phase (3 s at `RATE`).
const PHASE_MSGS: u64 = 750;
/// Phases: baseline, paused reader, dead reader.
const PHASES: u64 = 3;
/// Size of the padding in each message.
const PAD: usize = 16 * 1024;
/// `limits.send_queue` of the gateway, in frames.
const SEND_QUEUE: usize = 64;
/// How far the gateway's RSS may rise above its level before the stalls.
/// Without a bound on the stalled members' queues, one phase alone would
/// pin `PHASE_MSGS` × 16 KiB = 12 MiB.
const RSS_HEADROOM_KIB: u64 = 6 * 1024;

/// Microseconds since the Unix epoch.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The `q`-quantile (0..=1) of `samples` (µs), sorted in place; 0 when empty.
fn quantile(samples: &mut [u64], q: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let at = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[at]
}

/// Microseconds as milliseconds, for printing.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One message a member received: its phase, its index in the phase, and
/// the time from the publisher's send to this member's read (µs).
#[derive(Debug, Clone, Copy)]
struct Delivery {
    phase: u64,
    index: u64,
    latency_us: u64,
}

/// Reads `total` messages of `ROOM` on `member`, checking that their
/// sequence numbers follow `first - 1` without a gap, repeat or reordering.
async fn read_all(mut member: Client, first: u64, total: u64) -> (Client, Vec<Delivery>) {
    let mut out = Vec::with_capacity(total as usize);
    for next in first..first + total {
        let frame = member
            .recv_matching(Duration::from_secs(20), "a message", |f| {
                matches!(f, ServerFrame::Msg { .. })
            })
            .await;
        let latency_us = now_us();
        let (room, _, data, seq, _, _) = msg_fields(&frame);
        assert_eq!(room, ROOM, "{}: a message of another room", member.user);
        assert_eq!(seq, next, "{}: a gap, repeat or reordering", member.user);
        let sent = data["t"].as_u64().expect("the publish time");
        out.push(Delivery {
            phase: data["phase"].as_u64().expect("the phase"),
            index: data["i"].as_u64().expect("the index"),
            latency_us: latency_us.saturating_sub(sent),
        });
    }
    member.take_queued();
    (member, out)
}

/// Publishes `PHASE_MSGS` messages at `RATE` per second (with `others`, so
/// the publisher gets none back); `progress` holds the index of the next
/// message. Returns the client and the last sequence number.
async fn publish_phase(
    mut publisher: Client,
    phase: u64,
    progress: Arc<AtomicU64>,
) -> (Client, u64) {
    let pad = "x".repeat(PAD);
    let started = tokio::time::Instant::now();
    let mut last = 0;
    for i in 0..PHASE_MSGS {
        tokio::time::sleep_until(started + Duration::from_micros(i * 1_000_000 / RATE)).await;
        let data = json!({"phase": phase, "i": i, "t": now_us(), "pad": pad});
        let ack = publisher.ack(publish_others(ROOM, "m", &data)).await;
        last = ack["seq"].as_u64().expect("pub ack has a seq");
        progress.store(i + 1, Ordering::Relaxed);
        // Presence events of the stalled members queue up here; drop them.
        publisher.take_queued();
    }
    (publisher, last)
}

/// Samples the RSS of `pid` every 10 ms until `stop`; returns the highest.
fn rss_sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

/// Polls `broker_slow_consumer_disconnects_total` until it reaches `n`;
/// returns how long that took. Panics after `limit`.
async fn wait_for_disconnects(gw: &Gateway, n: f64, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if gw.metric("broker_slow_consumer_disconnects_total").await >= n {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no slow-consumer disconnect number {n} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks that `frames` (as read by a member that stopped reading) are a
/// gapless, ordered prefix of the room's stream: the ack of its join
/// (request id 1) and then the messages after the ack's `seq`. Returns how
/// many messages it got.
fn check_prefix(who: &str, frames: &[ServerFrame]) -> u64 {
    let mut next = None;
    let mut got = 0;
    for frame in frames {
        match frame {
            ServerFrame::Ack { id: 1, data } => {
                next = Some(data["seq"].as_u64().expect("join ack seq") + 1);
            }
            ServerFrame::Msg { .. } => {
                let seq = msg_fields(frame).3;
                let want = next.unwrap_or_else(|| panic!("{who}: a message before the join ack"));
                assert_eq!(seq, want, "{who}: a gap, repeat or reordering");
                next = Some(seq + 1);
                got += 1;
            }
            _ => {}
        }
    }
    got
}

/// Latencies (µs) of the deliveries of `phase` whose index is below `until`.
fn latencies(all: &[Delivery], phase: u64, until: u64) -> Vec<u64> {
    all.iter()
        .filter(|d| d.phase == phase && d.index < until)
        .map(|d| d.latency_us)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_is_closed_and_costs_the_others_nothing() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().send_queue(SEND_QUEUE)).await;
    let pid = gw.pid().expect("the gateway runs");

    let mut publisher = gw.connect("publisher").await;
    publisher.join(ROOM).await;
    let mut readers = Vec::new();
    for i in 0..MEMBERS {
        let mut m = gw.connect(&format!("member{i}")).await;
        let ack = m.join(ROOM).await;
        let first = ack["seq"].as_u64().expect("join ack seq") + 1;
        readers.push(tokio::spawn(read_all(m, first, PHASES * PHASE_MSGS)));
    }
    let progress = Arc::new(AtomicU64::new(0));

    // 1. Baseline: everyone reads.
    let (p, _) = publish_phase(publisher, 1, progress.clone()).await;
    publisher = p;
    let rss_before = gw.rss_kib();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(pid, sampling.clone());

    // 2. A member with a 4 KiB receive window joins and reads nothing.
    let mut paused =
        RawWs::connect_with_window(gw.addr, &token("paused", 3600, &[], &[]), Some(4096)).await;
    let mut join_frame = join(ROOM);
    join_frame.set_id(1);
    paused
        .binary(&protocol::encode_client_frame(&join_frame))
        .await;
    broker_tests::gateway::eventually_async(Duration::from_secs(5), "paused joined", || async {
        match presence(&redis, "paused").as_slice() {
            [c] if c.rooms.iter().any(|r| r == ROOM) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    progress.store(0, Ordering::Relaxed);
    let phase2 = tokio::spawn(publish_phase(publisher, 2, progress.clone()));
    let paused_closed_after = wait_for_disconnects(&gw, 1.0, Duration::from_secs(10)).await;
    let paused_window = progress.load(Ordering::Relaxed);
    // It reads again, at once (within the gateway's last-write grace).
    let (raw_frames, ending) = paused.until_close(Duration::from_secs(10)).await;
    let paused_frames: Vec<ServerFrame> = raw_frames
        .iter()
        .map(|f| protocol::decode_server_frame(f).expect("a server frame"))
        .collect();
    assert_eq!(
        ending,
        Ending::Close(CloseCode::Policy.code()),
        "the paused member is closed with 4008"
    );
    let paused_got = check_prefix("paused", &paused_frames);
    let (p, _) = phase2.await.expect("phase 2 publisher");
    publisher = p;
    assert!(
        presence(&redis, "paused").is_empty(),
        "the module forgot the paused member"
    );

    // 3. An ordinary client (default socket buffers) joins and never reads
    // again: the gateway must let go of it on its own.
    let mut dead = gw.connect("dead").await;
    dead.join(ROOM).await;
    progress.store(0, Ordering::Relaxed);
    let phase3 = tokio::spawn(publish_phase(publisher, 3, progress.clone()));
    let dead_closed_after = wait_for_disconnects(&gw, 2.0, Duration::from_secs(10)).await;
    let dead_window = progress.load(Ordering::Relaxed);
    broker_tests::gateway::eventually_async(
        Duration::from_secs(10),
        "the module forgets the member that never reads",
        || async {
            let conns = presence(&redis, "dead");
            if conns.is_empty() {
                Ok(())
            } else {
                Err(format!("{conns:?}"))
            }
        },
    )
    .await;
    let (publisher, last_seq) = phase3.await.expect("phase 3 publisher");
    sampling.store(true, Ordering::Relaxed);
    let rss_peak = sampler.join().expect("the RSS sampler");

    // The member that never read finds a gapless prefix, then the end.
    let dead_code = dead.expect_close_within(Duration::from_secs(10)).await;
    let dead_frames = dead.take_queued();
    let dead_got = dead_frames
        .iter()
        .filter(|f| matches!(f, ServerFrame::Msg { .. }))
        .count();
    let mut next = None;
    for f in &dead_frames {
        if let ServerFrame::Msg { .. } = f {
            let seq = msg_fields(f).3;
            if let Some(want) = next {
                assert_eq!(seq, want, "dead: a gap, repeat or reordering");
            }
            next = Some(seq + 1);
        }
    }

    // Every reader got every message, in order (checked as they read).
    let mut all = Vec::new();
    let mut members = Vec::new();
    for r in readers {
        let (m, deliveries) = r.await.expect("a reader");
        assert_eq!(deliveries.len() as u64, PHASES * PHASE_MSGS);
        all.extend(deliveries);
        members.push(m);
    }
    let base_p99 = quantile(&mut latencies(&all, 1, PHASE_MSGS), 0.99);
    let base_p50 = quantile(&mut latencies(&all, 1, PHASE_MSGS), 0.50);
    let paused_p99 = quantile(&mut latencies(&all, 2, paused_window), 0.99);
    let phase2_p99 = quantile(&mut latencies(&all, 2, PHASE_MSGS), 0.99);
    let dead_p99 = quantile(&mut latencies(&all, 3, dead_window), 0.99);
    let phase3_p99 = quantile(&mut latencies(&all, 3, PHASE_MSGS), 0.99);
    let disconnects = gw.metric("broker_slow_consumer_disconnects_total").await;
    let mut con = redis.client();
    let count = map(&run(&mut con, RoomCount::new(ROOM)));

    println!(
        "slow consumer: {MEMBERS} members, {RATE} msg/s of {} KiB, {PHASE_MSGS} per phase, \
         send_queue {SEND_QUEUE}; last seq {last_seq}",
        PAD / 1024
    );
    println!(
        "  paused member (4 KiB window): closed after {paused_closed_after:?} \
         ({paused_window} messages published), got {paused_got} messages then close {ending:?}"
    );
    println!(
        "  dead member (default buffers): closed after {dead_closed_after:?} \
         ({dead_window} messages published), read {dead_got} messages afterwards, then close \
         code {dead_code}"
    );
    println!(
        "  others' latency: baseline p50 {:.2} ms p99 {:.2} ms; while paused stalled p99 {:.2} ms \
         (phase {:.2}); while dead stalled p99 {:.2} ms (phase {:.2})",
        ms(base_p50),
        ms(base_p99),
        ms(paused_p99),
        ms(phase2_p99),
        ms(dead_p99),
        ms(phase3_p99)
    );
    println!(
        "  gateway RSS: {rss_before} KiB before the stalls, peak {rss_peak} KiB during them, \
         {} KiB after; slow-consumer disconnects {disconnects}",
        gw.rss_kib()
    );

    assert_eq!(disconnects, 2.0, "both stalled members counted");
    assert!(
        paused_got < PHASE_MSGS,
        "the paused member was closed before the end of the stream"
    );
    assert!(
        dead_code == CloseCode::Policy.code() || dead_code == CloseCode::Abnormal.code(),
        "the member that never read is closed (4008) or dropped (1006), got {dead_code}"
    );
    let bound = |base: u64| (3 * base).max(base + 20_000);
    for (what, p99) in [
        ("while the paused member stalled", paused_p99),
        ("phase 2", phase2_p99),
        ("while the dead member stalled", dead_p99),
        ("phase 3", phase3_p99),
    ] {
        assert!(
            p99 <= bound(base_p99),
            "the others' p99 moved {what}: {:.2} ms -> {:.2} ms",
            ms(base_p99),
            ms(p99)
        );
    }
    assert!(
        rss_peak <= rss_before + RSS_HEADROOM_KIB,
        "gateway RSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
    assert_eq!(
        (int(&count["users"]), int(&count["connections"])),
        (MEMBERS as i64 + 1, MEMBERS as i64 + 1),
        "only the readers and the publisher are left in the room"
    );
    for m in &mut members {
        m.ping().await;
    }
    drop(publisher);
}

/// A client that stops reading but keeps asking for big answers (`history`
/// of large messages) is bounded by the bytes queued for it
/// (`limits.send_queue_bytes`, 1 MiB by default), not by the frame count:
/// 60 answers of ~320 KiB are far below 1024 frames.
#[tokio::test]
async fn a_client_asking_for_big_answers_without_reading_is_closed_by_bytes() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let room = "feed:big";
    let pad = "x".repeat(PAD);
    for i in 0..20 {
        gw.publish(room, "m", json!({ "i": i, "pad": pad })).await;
    }
    let mut hoarder =
        RawWs::connect_with_window(gw.addr, &token("hoarder", 3600, &[], &[]), Some(4096)).await;
    let mut join_frame = join(room);
    join_frame.set_id(1);
    hoarder
        .binary(&protocol::encode_client_frame(&join_frame))
        .await;
    for id in 2..62 {
        let mut frame = broker_tests::gateway::history(room, None, None);
        frame.set_id(id);
        hoarder.binary(&protocol::encode_client_frame(&frame)).await;
    }
    wait_for_disconnects(&gw, 1.0, Duration::from_secs(10)).await;
    // A close frame with 4008, or a reset: the requests still unread when
    // the gateway closed make the kernel answer with RST, which may discard
    // the close frame before it is read.
    let (_, ending) = hoarder.until_close(Duration::from_secs(10)).await;
    assert!(
        matches!(ending, Ending::Close(4008) | Ending::Dropped),
        "closed: {ending:?}"
    );
    assert_eq!(
        gw.metric("broker_slow_consumer_disconnects_total").await,
        1.0
    );
    broker_tests::gateway::eventually_async(
        Duration::from_secs(5),
        "hoarder unregistered",
        || async {
            presence(&redis, "hoarder")
                .is_empty()
                .then_some(())
                .ok_or_else(|| "still registered".to_string())
        },
    )
    .await;
    // Everyone else carries on.
    let mut other = gw.connect("other").await;
    other.join(room).await;
}
