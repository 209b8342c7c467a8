//! `BROKER.HISTORY`, history settings (module `HISTORY` argument and
//! `PUBLISH ... HISTORY`), and recovery with `JOIN ... SINCE`.

use std::time::Duration;

use broker::wire::Envelope;
use broker_tests::*;

/// chat: 100 messages for 5 min; tiny: 3 messages; brief: 1 second.
fn server() -> RedisServer {
    RedisServer::builder()
        .module_args([
            "HISTORY", "chat", "100", "300", "HISTORY", "tiny", "3", "300", "HISTORY", "brief",
            "10", "1",
        ])
        .start()
}

/// (seq, epoch, [seq of each message], [data of each message]).
fn history(
    con: &mut redis::Connection,
    args: &[&str],
) -> (i64, String, Vec<i64>, Vec<serde_json::Value>) {
    let mut argv = vec!["BROKER.HISTORY"];
    argv.extend_from_slice(args);
    let h = map(&ok(con, &argv));
    let frames: Vec<serde_json::Value> = array(&h["messages"])
        .iter()
        .map(|f| frame_json(&bytes(f)))
        .collect();
    for f in &frames {
        assert_eq!(f["t"], "msg", "{f}");
        assert_eq!(f["room"], argv[1], "{f}");
    }
    (
        int(&h["seq"]),
        text(&h["epoch"]),
        frames.iter().map(|f| f["seq"].as_i64().unwrap()).collect(),
        frames.iter().map(|f| f["data"].clone()).collect(),
    )
}

#[test]
fn history_since_and_limit() {
    let server = server();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    let epoch = text(&join(&mut con, "chat:h", "alice", "c1", "n1", &[])["epoch"]);
    for i in 1..=5 {
        publish_str(&mut con, "chat:h", "ev", &format!("m{i}"));
    }
    let (seq, e, seqs, data) = history(&mut con, &["chat:h"]);
    assert_eq!((seq, e.as_str()), (5, epoch.as_str()));
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(data, ["m1", "m2", "m3", "m4", "m5"]);

    assert_eq!(history(&mut con, &["chat:h", "SINCE", "2"]).2, [3, 4, 5]);
    assert_eq!(
        history(&mut con, &["chat:h", "SINCE", "2", "LIMIT", "2"]).2,
        [3, 4]
    );
    assert_eq!(history(&mut con, &["chat:h", "LIMIT", "1"]).2, [1]);
    assert_eq!(
        history(&mut con, &["chat:h", "LIMIT", "0"]).2,
        Vec::<i64>::new()
    );
    assert_eq!(
        history(&mut con, &["chat:h", "SINCE", "5"]).2,
        Vec::<i64>::new()
    );
    assert_eq!(
        history(&mut con, &["chat:h", "SINCE", "99"]).2,
        Vec::<i64>::new()
    );
    assert_eq!(
        history(&mut con, &["chat:h", "since", "4"]).2,
        [5],
        "keywords are case-insensitive"
    );
}

#[test]
fn history_frames_are_the_delivered_bytes() {
    let server = server();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "chat:h", "alice", "c1", "n1", &[]);
    let sub = Subscriber::nodes(&server, &["n1"]);
    ok(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "chat:h",
            "message",
            r#"{"text":"hi"}"#,
            "FORMAT",
            "json",
            "FROM",
            "c1",
        ],
    );
    let seen = sub.fence(&mut con);
    let Envelope::Msg { frame, .. } = seen[0].envelope() else {
        panic!("{:?}", seen[0].envelope());
    };
    let h = map(&ok(&mut con, &["BROKER.HISTORY", "chat:h"]));
    assert_eq!(bytes(&array(&h["messages"])[0]), frame);
}

#[test]
fn history_keeps_the_last_size_messages() {
    let server = server();
    let mut con = server.client();
    for i in 1..=5 {
        publish_str(&mut con, "tiny:t", "ev", &i.to_string());
    }
    let (seq, _, seqs, _) = history(&mut con, &["tiny:t"]);
    assert_eq!(seq, 5);
    assert_eq!(seqs, [3, 4, 5]);
}

#[test]
fn rooms_without_history_count_but_keep_nothing() {
    let server = server();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "other:x", "alice", "c1", "n1", &[]);
    publish_str(&mut con, "other:x", "ev", "1");
    publish_str(&mut con, "other:x", "ev", "2");
    let (seq, epoch, seqs, _) = history(&mut con, &["other:x"]);
    assert_eq!(seq, 2);
    assert!(!epoch.is_empty());
    assert!(seqs.is_empty());
}

#[test]
fn unknown_room_has_seq_zero_and_no_epoch() {
    let server = server();
    let mut con = server.client();
    let (seq, epoch, seqs, _) = history(&mut con, &["chat:never"]);
    assert_eq!((seq, epoch.as_str(), seqs.len()), (0, "", 0));
}

#[test]
fn publish_history_option_sets_the_rooms_settings() {
    let server = server();
    let mut con = server.client();
    // `other` keeps nothing by default; the publisher says keep 2.
    for i in 1..=4 {
        ok(
            &mut con,
            &[
                "BROKER.PUBLISH",
                "other:p",
                "ev",
                &i.to_string(),
                "FORMAT",
                "string",
                "HISTORY",
                "2",
                "60",
            ],
        );
    }
    assert_eq!(history(&mut con, &["other:p"]).2, [3, 4]);
    // The room remembers them.
    publish_str(&mut con, "other:p", "ev", "5");
    assert_eq!(history(&mut con, &["other:p"]).2, [4, 5]);
    // And `HISTORY 0 0` turns it off for this room even in a namespace that keeps history.
    ok(
        &mut con,
        &[
            "BROKER.PUBLISH",
            "chat:off",
            "ev",
            "1",
            "FORMAT",
            "string",
            "HISTORY",
            "0",
            "0",
        ],
    );
    assert!(history(&mut con, &["chat:off"]).2.is_empty());
}

#[test]
fn messages_older_than_the_ttl_are_not_returned() {
    let server = server();
    let mut con = server.client();
    // A member keeps the room (and its seq) alive once the history is gone.
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    join(&mut con, "brief:b", "alice", "c1", "n1", &[]);
    publish_str(&mut con, "brief:b", "ev", "old");
    assert_eq!(history(&mut con, &["brief:b"]).2, [1]);
    eventually("the message's 1 s history TTL passes", || {
        let (seq, _, seqs, _) = history(&mut con, &["brief:b"]);
        if seq == 1 && seqs.is_empty() {
            Ok(())
        } else {
            Err(format!("seq {seq}, messages {seqs:?}"))
        }
    });
}

#[test]
fn join_since_recovers_missed_messages() {
    let server = server();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    let epoch = text(&join(&mut con, "chat:rec", "alice", "c1", "n1", &[])["epoch"]);
    for i in 1..=3 {
        publish_str(&mut con, "chat:rec", "ev", &format!("m{i}"));
    }
    let frames = |j: &std::collections::BTreeMap<String, redis::Value>| -> Vec<i64> {
        array(&j["messages"])
            .iter()
            .map(|f| frame_json(&bytes(f))["seq"].as_i64().unwrap())
            .collect()
    };

    // Missed 2 and 3, same epoch: recovered.
    let j = join(
        &mut con,
        "chat:rec",
        "alice",
        "c2",
        "n1",
        &["SINCE", "1", &epoch],
    );
    assert_eq!(int(&j["recovered"]), 1);
    assert_eq!(frames(&j), [2, 3]);
    assert_eq!(int(&j["seq"]), 3);
    ok(&mut con, &["BROKER.LEAVE", "chat:rec", "alice", "c2"]);

    // Nothing missed: recovered, nothing to replay.
    let j = join(
        &mut con,
        "chat:rec",
        "alice",
        "c2",
        "n1",
        &["SINCE", "3", &epoch],
    );
    assert_eq!(int(&j["recovered"]), 1);
    assert!(frames(&j).is_empty());
    ok(&mut con, &["BROKER.LEAVE", "chat:rec", "alice", "c2"]);

    // Another epoch: the client cannot know what happened.
    let j = join(
        &mut con,
        "chat:rec",
        "alice",
        "c2",
        "n1",
        &["SINCE", "1", "0123456789abcdef"],
    );
    assert_eq!(int(&j["recovered"]), 0);
    assert_eq!(text(&j["epoch"]), epoch);
}

#[test]
fn join_since_with_a_gap_is_not_recovered() {
    let server = server();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    open(&mut con, "alice", "c2", "n1");
    let epoch = text(&join(&mut con, "tiny:gap", "alice", "c1", "n1", &[])["epoch"]);
    for i in 1..=6 {
        publish_str(&mut con, "tiny:gap", "ev", &i.to_string());
    }
    // History holds 4..6; a client at 1 missed 2 and 3 for good.
    let j = join(
        &mut con,
        "tiny:gap",
        "alice",
        "c2",
        "n1",
        &["SINCE", "1", &epoch],
    );
    assert_eq!(int(&j["recovered"]), 0);
    ok(&mut con, &["BROKER.LEAVE", "tiny:gap", "alice", "c2"]);
    // A client at 3 missed only what is kept.
    let j = join(
        &mut con,
        "tiny:gap",
        "alice",
        "c2",
        "n1",
        &["SINCE", "3", &epoch],
    );
    assert_eq!(int(&j["recovered"]), 1);
    assert_eq!(array(&j["messages"]).len(), 3);
}

#[test]
fn a_dropped_room_gets_a_new_epoch() {
    // A fast sweep so the idle room goes quickly.
    let server = RedisServer::builder()
        .module_args(["SWEEP_MS", "20"])
        .start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    let old = text(&join(&mut con, "other:e", "alice", "c1", "n1", &[])["epoch"]);
    publish_str(&mut con, "other:e", "ev", "1");
    ok(&mut con, &["BROKER.LEAVE", "other:e", "alice", "c1"]);
    // Empty, nothing retained: the room is dropped.
    eventually("the empty room without history is dropped", || {
        let (seq, epoch, _, _) = history(&mut con, &["other:e"]);
        if seq == 0 && epoch.is_empty() {
            Ok(())
        } else {
            Err(format!("seq {seq}, epoch {epoch:?}"))
        }
    });
    let j = join(
        &mut con,
        "other:e",
        "alice",
        "c1",
        "n1",
        &["SINCE", "1", &old],
    );
    let new = text(&j["epoch"]);
    assert_ne!(new, old);
    assert_eq!(int(&j["seq"]), 0);
    assert_eq!(
        int(&j["recovered"]),
        0,
        "seq 1 of the old epoch cannot be recovered"
    );
}

#[test]
fn a_room_with_retained_history_keeps_its_epoch_when_empty() {
    let server = RedisServer::builder()
        .module_args(["SWEEP_MS", "20", "HISTORY", "chat", "10", "300"])
        .start();
    let mut con = server.client();
    lease(&mut con, "n1", 60_000);
    open(&mut con, "alice", "c1", "n1");
    let epoch = text(&join(&mut con, "chat:keep", "alice", "c1", "n1", &[])["epoch"]);
    publish_str(&mut con, "chat:keep", "ev", "1");
    ok(&mut con, &["BROKER.LEAVE", "chat:keep", "alice", "c1"]);
    // Absence of a change has no event to wait for: give the 20 ms sweep
    // many rounds.
    std::thread::sleep(Duration::from_millis(400));
    let (seq, e, seqs, _) = history(&mut con, &["chat:keep"]);
    assert_eq!((seq, e.as_str(), seqs), (1, epoch.as_str(), vec![1]));
    let j = join(
        &mut con,
        "chat:keep",
        "alice",
        "c1",
        "n1",
        &["SINCE", "0", &epoch],
    );
    assert_eq!(int(&j["recovered"]), 1);
    assert_eq!(text(&j["epoch"]), epoch);
}
