//! Answers that could be huge come in pages: `BROKER.ROOM.MEMBERS` on a big
//! room (`AFTER`/`LIMIT`), `presence` acks (`next`/`after`) and `history`
//! acks bounded in bytes (`more`, then `since`).

use broker::protocol::ClientFrame;
use broker_tests::commands::{Command, ConnOpen, Join, NodeLease, RoomMembers};
use broker_tests::gateway::{Gateway, Options};
use broker_tests::world::World;
use broker_tests::RedisServer;
use serde_json::{json, Value as J};

/// Registers `n` users (`u00000`..) with one connection each in `room` on
/// a node `bulk` leased for a minute, pipelined.
fn crowd(con: &mut redis::Connection, room: &str, n: usize) {
    let mut pipe = redis::pipe();
    pipe.add_command(NodeLease::new("bulk", 60_000).to_cmd())
        .ignore();
    for i in 0..n {
        let (user, conn) = (format!("u{i:05}"), format!("bulk.c{i}"));
        pipe.add_command(ConnOpen::new(&user, &conn, "bulk", "10.0.0.1").to_cmd())
            .ignore();
        pipe.add_command(Join::new(room, &user, &conn, "bulk").to_cmd())
            .ignore();
    }
    let () = pipe.query(con).expect("register the crowd");
}

fn names(reply: &redis::Value) -> Vec<String> {
    let redis::Value::Array(items) = reply else {
        panic!("ROOM.MEMBERS: {reply:?}");
    };
    items
        .chunks(2)
        .map(|pair| broker_tests::text(&pair[0]))
        .collect()
}

#[test]
fn room_members_of_a_big_room_come_in_bounded_pages() {
    let mut w = World::start();
    crowd(&mut w.con, "chat:big", 2_500);
    // Without LIMIT: the first 1000 users, in name order.
    let first = names(&w.ok(RoomMembers::new("chat:big")));
    assert_eq!(first.len(), 1000);
    assert_eq!(first[0], "u00000");
    assert_eq!(first[999], "u00999");
    // AFTER goes on from there; the last page is short.
    let mut all = first;
    loop {
        let last = all.last().cloned().expect("a user");
        let page = names(&w.ok(RoomMembers::new("chat:big").after(&last).limit(700)));
        assert!(page.len() <= 700);
        let done = page.len() < 700;
        all.extend(page);
        if done {
            break;
        }
    }
    let expected: Vec<String> = (0..2_500).map(|i| format!("u{i:05}")).collect();
    assert_eq!(all, expected);
    assert!(w
        .err(RoomMembers::new("chat:big").limit(10_001))
        .contains("LIMIT"));
}

#[tokio::test]
async fn presence_acks_page_a_big_room() {
    let redis = RedisServer::start();
    crowd(&mut redis.client(), "chat:big", 2_300);
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut c = gw.connect("zed").await;
    c.join("chat:big").await;
    let mut users: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let ack = c
            .ack(ClientFrame::Presence {
                id: 0,
                room: "chat:big".into(),
                after: after.clone(),
            })
            .await;
        pages += 1;
        assert_eq!(ack["count"], json!(2_301), "count is the room's total");
        let page = ack["users"].as_array().expect("users");
        assert!(page.len() <= 1000, "a page holds at most 1000 users");
        users.extend(page.iter().map(|u| u["user"].as_str().unwrap().to_string()));
        match ack.get("next").and_then(J::as_str) {
            Some(next) => {
                assert_eq!(Some(next), users.last().map(String::as_str));
                after = Some(next.to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = (0..2_300).map(|i| format!("u{i:05}")).collect();
    expected.push("zed".into());
    assert_eq!(users, expected);
    // The admin API pages the same way.
    let resp = gw
        .admin_get("/api/rooms/chat:big/presence?after=u02000")
        .await;
    assert_eq!(resp.status, 200);
    let body: J = serde_json::from_str(&resp.body).expect("json");
    assert_eq!(body["users"].as_array().map(Vec::len), Some(300));
    assert_eq!(body["count"], json!(2_301));
    assert!(body.get("next").is_none());
    // A small room: one page, no `next`.
    let ack = c.ack(broker_tests::gateway::presence_req("user:zed")).await;
    assert!(ack.get("next").is_none(), "{ack}");
}

#[tokio::test]
async fn history_acks_are_bounded_in_bytes_and_page_with_since() {
    let redis = RedisServer::start();
    let gw = Gateway::start(&redis, Options::default()).await;
    let mut c = gw.connect("reader").await;
    c.join("feed:big").await;
    // 40 messages of ~30 KB: 1.2 MB retained, more than one ack may hold
    // (256 KiB, a quarter of `send_queue_bytes`).
    let blob = "x".repeat(30_000);
    for i in 0..40 {
        gw.publish("feed:big", "m", json!({"i": i, "blob": blob}))
            .await;
    }
    let _ = c.take_queued();
    let mut seqs: Vec<u64> = Vec::new();
    let mut since = None;
    let mut pages = 0;
    loop {
        let ack = c
            .ack(broker_tests::gateway::history("feed:big", since, None))
            .await;
        pages += 1;
        let messages = ack["messages"].as_array().expect("messages");
        assert!(!messages.is_empty());
        let bytes: usize = messages.iter().map(|m| m.to_string().len()).sum();
        assert!(bytes <= 300 * 1024, "an ack of {bytes} bytes");
        seqs.extend(messages.iter().map(|m| m["seq"].as_u64().expect("seq")));
        assert_eq!(ack["seq"], json!(40));
        if ack.get("more") != Some(&json!(true)) {
            break;
        }
        since = seqs.last().copied();
    }
    assert!(pages >= 4, "{pages} pages");
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<u64>>(),
        "every message once, in order"
    );
}

#[tokio::test]
async fn a_full_presence_page_costs_more_of_the_request_budget() {
    let redis = RedisServer::start();
    crowd(&mut redis.client(), "chat:big", 1_500);
    // The shipped budget: 200 per 10 s, 50 back to back.
    let gw = Gateway::start(&redis, Options::default().requests(200, 10, 50)).await;
    let mut c = gw.connect("zed").await;
    // A full page costs 11: four of them and the fifth still fit in the
    // burst of 50, the sixth does not.
    let mut limited_at = None;
    for i in 0..8 {
        match c
            .request(broker_tests::gateway::presence_req("chat:big"))
            .await
        {
            broker::protocol::ServerFrame::Ack { .. } => {}
            broker::protocol::ServerFrame::Err { code, retry_ms, .. } => {
                assert_eq!(code, "rate_limited");
                assert!(retry_ms.is_some_and(|ms| ms > 0));
                limited_at = Some(i);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        limited_at,
        Some(5),
        "a page of 1000 users costs 11 requests"
    );
}
