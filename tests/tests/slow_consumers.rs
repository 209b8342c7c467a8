//! Slow consumers: a member that stops reading while its room is busy is
//! closed with 4008 and its socket released; the node's memory stays
//! bounded; the other members lose nothing and their latency does not move.

use std::time::{Duration, Instant};

use broker::protocol::{self, ServerFrame};
use broker_tests::gateway::{join, msg_fields, rss_kib, token, Client, Gateway, Options};
use broker_tests::now_ms;
use broker_tests::raw::RawWs;
use broker_tests::RedisServer;

/// Members that keep reading.
const MEMBERS: usize = 10;
/// Messages per phase, one every 5 ms (200 msg/s), 16 KiB each.
const PER_PHASE: u64 = 400;
const ROOM: &str = "feed:busy";

/// The 99th percentile of `samples` (ms).
fn p99(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// Publishes `PER_PHASE` messages at 200/s from a thread of its own; each
/// carries its publish time. Returns the highest gateway RSS seen meanwhile.
fn publish_phase(redis: &RedisServer, gw_pid: u32) -> std::thread::JoinHandle<u64> {
    let mut con = redis.client();
    std::thread::spawn(move || {
        let pad = "x".repeat(16 * 1024);
        let started = Instant::now();
        let mut peak = 0;
        for i in 0..PER_PHASE {
            let due = started + Duration::from_millis(5 * i);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let body = format!(r#"{{"t":{},"pad":"{pad}"}}"#, now_ms());
            broker_tests::ok(
                &mut con,
                &["BROKER.PUBLISH", ROOM, "m", &body, "FORMAT", "json"],
            );
            if i % 50 == 0 {
                peak = peak.max(rss_kib(gw_pid));
            }
        }
        peak
    })
}

/// Reads `n` messages on each member; returns every delivery's latency
/// (ms) and checks that each member got consecutive sequence numbers.
async fn read_phase(members: &mut [Client], n: u64) -> Vec<u64> {
    let reads = members.iter_mut().map(|m| async move {
        let mut latencies = Vec::new();
        let mut last = None;
        for _ in 0..n {
            let frame = m
                .recv_matching(Duration::from_secs(20), "a message", |f| {
                    matches!(f, ServerFrame::Msg { .. })
                })
                .await;
            let (_, _, data, seq, _, _) = msg_fields(&frame);
            let sent = data["t"].as_u64().expect("the publish time");
            latencies.push((now_ms() as u64).saturating_sub(sent));
            if let Some(prev) = last {
                assert_eq!(seq, prev + 1, "no gap, no reordering");
            }
            last = Some(seq);
        }
        latencies
    });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test]
async fn a_member_that_stops_reading_costs_the_others_nothing() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default().send_queue(64)).await;
    let pid = gw.pid().expect("the gateway runs");
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut m = gw.connect(&format!("member{i}")).await;
        m.join(ROOM).await;
        members.push(m);
    }

    // Baseline: everyone reads.
    let rss_before = gw.rss_kib();
    let publisher = publish_phase(&redis, pid);
    let mut baseline = read_phase(&mut members, PER_PHASE).await;
    publisher.join().expect("the publisher");
    let base_p99 = p99(&mut baseline);

    // The same load with a member that reads nothing at all.
    let mut stuck =
        RawWs::connect_with_window(gw.addr, &token("stuck", 3600, &[], &[]), Some(4096)).await;
    stuck
        .binary(&protocol::encode_client_frame(&join(ROOM)))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = publish_phase(&redis, pid);
    let mut stalled = read_phase(&mut members, PER_PHASE).await;
    let peak_kib = publisher.join().expect("the publisher");
    let stall_p99 = p99(&mut stalled);

    println!(
        "others' latency p99: {base_p99} ms without, {stall_p99} ms with a stuck member \
         ({} deliveries each); gateway RSS {rss_before} KiB before, peak {peak_kib} KiB",
        baseline.len()
    );
    assert_eq!(
        gw.metric("broker_slow_consumer_disconnects_total").await,
        1.0,
        "the stuck member was closed as a slow consumer"
    );
    assert!(
        stall_p99 <= (3 * base_p99).max(base_p99 + 20),
        "p99 moved: {base_p99} ms -> {stall_p99} ms"
    );
    // Bounded: its queue (64 frames of ~4 KiB) and the kernel's buffers,
    // not the 1.6 MiB published while it was stuck.
    assert!(
        peak_kib < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {peak_kib} KiB"
    );
    for m in &mut members {
        m.ping().await;
    }
    drop(stuck);
}
