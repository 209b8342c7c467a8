//! Join ordering under a race: a member that joins a busy room gets, after
//! the join ack, exactly the messages newer than the ack's `seq`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker::protocol::ServerFrame;
use broker_tests::gateway::{leave, Gateway, Options};
use broker_tests::{Command, Publish, RedisServer};

/// Joins and leaves a busy room over and over; the first message after each
/// join ack must be the one after the ack's `seq`.
///
/// The race: the JOIN reply reaches the gateway on its command link before
/// the Pub/Sub copies of messages the reply's `seq` already counts (the
/// node's Pub/Sub link has a backlog). The room already has a member on the
/// node, so those copies are new to the room and go to its members — but
/// not to the joiner, whose ack covered them (protocol §3: every live `msg`
/// after the ack has a larger `seq`). Before the hub kept a per-member
/// floor, 54 to 277 of the 2,000 joins failed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_ack_is_not_followed_by_the_messages_it_covers() {
    const RACE: &str = "feed:race";
    const JOINS: usize = 2000;
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let stop = Arc::new(AtomicBool::new(false));

    // A member that stays, so the node holds the room and its position.
    let mut anchor = gw.connect("anchor").await;
    anchor.join(RACE).await;
    let anchor = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = anchor.recv_within(Duration::from_millis(100)).await;
            }
            anchor
        })
    };
    // Bursts of 20 publishes (one pipeline) every 2 ms, straight into
    // Redis: the node's Pub/Sub link then has a backlog that a JOIN reply,
    // on another link, can overtake.
    let publisher = {
        let stop = stop.clone();
        let mut con = redis.client();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut burst = broker_tests::redis::pipe();
                for _ in 0..20 {
                    burst
                        .add_command(Publish::string(RACE, "m", "x").to_cmd())
                        .ignore();
                }
                burst.query::<()>(&mut con).expect("a burst of publishes");
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // Two busy threads: the race needs the gateway's Pub/Sub task to fall
    // behind its command link, which a loaded machine (the soak) provides.
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    let mut joiner = gw.connect("joiner").await;
    let mut repeats = Vec::new();
    for _ in 0..JOINS {
        let ack = joiner.join(RACE).await;
        let at = ack["seq"].as_u64().expect("join ack seq");
        let first = joiner
            .recv_matching(
                Duration::from_secs(5),
                "a message",
                |f| matches!(f, ServerFrame::Msg { room, .. } if room == RACE),
            )
            .await;
        let ServerFrame::Msg { seq, .. } = first else {
            unreachable!()
        };
        if seq != at + 1 {
            repeats.push((at, seq));
        }
        joiner.ack(leave(RACE)).await;
        joiner.take_queued();
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().expect("the publisher");
    for h in hogs {
        h.join().expect("a busy thread");
    }
    anchor.await.expect("the anchor");
    println!(
        "{} of {JOINS} joins were followed by a message their ack covered (ack seq, first seq): {:?}",
        repeats.len(),
        &repeats[..repeats.len().min(10)]
    );
    assert!(
        repeats.is_empty(),
        "{} of {JOINS} join acks were followed by a message they covered: {repeats:?}",
        repeats.len()
    );
}
