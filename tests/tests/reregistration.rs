//! A big node that lost its lease registers everything again without
//! losing the lease a second time: the registrations go out pipelined in
//! the background while the lease keeps being renewed.
//!
//! The size is `REREG_CONNS` connections (default 19,000: this machine
//! allows 20,000 descriptors per process, and the gateway needs a few more
//! than its clients) × 5 rooms each, in its own test binary so no other
//! test shares the descriptors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::command::NodeRelease;
use broker_tests::gateway::{eventually_async, online, Client, Gateway, Options};
use broker_tests::{array, info_field, int, map, run, text, Nodes, RedisServer};
use futures_util::{stream, StreamExt};

const ROOMS_PER_CONN: usize = 5;

fn conns() -> usize {
    std::env::var("REREG_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(19_000)
}

/// Rooms the module holds (`INFO broker`): each connection's rooms are its
/// own here, so this moves with the memberships.
fn rooms(redis: &RedisServer) -> i64 {
    info_field(&mut redis.client(), "broker", "rooms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_node_registers_again_without_losing_its_lease() {
    let n = conns();
    let redis = RedisServer::start();
    let lease_ms = 2000;
    // `limits.max_conns` from the open-file limit (20,000 here) keeps a
    // reserve of 1,064 descriptors: name the cap, just above the test's
    // connections (the process still has room for them and Redis).
    let options = Options {
        max_conns: n as u32 + 300,
        ..Options::default()
            .lease_ms(lease_ms)
            .max_conns_per_ip(u32::MAX / 2)
    };
    let gw = Gateway::start(&redis, options).await;
    let node = gw.node.clone();

    let started = Instant::now();
    let gw_ref = &gw;
    let clients: Vec<Client> = stream::iter(0..n)
        .map(|i| async move {
            let mut c = gw_ref.connect(&format!("u{i}")).await;
            for k in 0..ROOMS_PER_CONN {
                c.join(&format!("chat:r{i}-{k}")).await;
            }
            c
        })
        .buffer_unordered(256)
        .collect()
        .await;
    println!(
        "{n} connections × {ROOMS_PER_CONN} rooms set up in {:?}",
        started.elapsed()
    );
    assert_eq!(online(&redis).1, n as i64);
    let total = rooms(&redis);
    assert!(total >= (n * ROOMS_PER_CONN) as i64, "{total} rooms");

    // The module ends the node's lease (as when it ran out in an outage).
    let released = Instant::now();
    let dropped = int(&run(&mut redis.client(), NodeRelease::new(&node)));
    assert_eq!(dropped, n as i64);

    // Watch the node's lease from the outside while it registers again:
    // once it is back, it must never be gone again.
    let back = Arc::new(AtomicBool::new(false));
    let lost_again = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (back, lost_again, watching) = (back.clone(), lost_again.clone(), watching.clone());
        let mut con = redis.client();
        let node = node.clone();
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let listed = array(&run(&mut con, Nodes))
                    .iter()
                    .any(|n| text(&map(n)["node"]) == node);
                if listed {
                    back.store(true, Ordering::Relaxed);
                } else if back.load(Ordering::Relaxed) {
                    lost_again.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let took = eventually_async(Duration::from_secs(120), "registered again", || async {
        let (_, conns) = online(&redis);
        let members = rooms(&redis);
        if conns == n as i64 && members == total && gw.is_ready().await {
            Ok(released.elapsed())
        } else {
            Err(format!("{conns} connections, {members} rooms"))
        }
    })
    .await;
    // Two more lease periods: still held, nothing dropped.
    tokio::time::sleep(Duration::from_millis(2 * lease_ms)).await;
    watching.store(false, Ordering::Relaxed);
    watcher.join().expect("watcher");
    assert!(
        back.load(Ordering::Relaxed),
        "the node took its lease again"
    );
    assert!(
        !lost_again.load(Ordering::Relaxed),
        "the lease was lost again during the re-registration"
    );
    assert_eq!(online(&redis).1, n as i64);
    assert_eq!(rooms(&redis), total);
    let log = gw.log();
    assert_eq!(
        log.matches("lease was new").count(),
        1,
        "one re-registration, not a cycle"
    );
    assert_eq!(gw.metric("broker_reregistration_seconds_count").await, 1.0);
    let seconds = gw.metric("broker_reregistration_seconds_sum").await;
    println!(
        "re-registration of {n} × {ROOMS_PER_CONN}: {seconds:.2} s in the gateway, \
         exact in Redis after {took:?} (lease {lease_ms} ms)"
    );
    drop(clients);
}
