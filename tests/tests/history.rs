//! `BROKER.HISTORY`, history settings (module `HISTORY` argument and
//! `PUBLISH ... HISTORY`), and recovery with `JOIN ... SINCE`.

use std::time::Duration;

use broker::envelope::Envelope;
use broker_tests::*;

/// A world whose module keeps history for three namespaces: chat: 100
/// messages for 5 min; tiny: 3 messages; brief: 1 second.
fn history_world() -> World {
    World::with_module_args([
        "HISTORY", "chat", "100", "300", "HISTORY", "tiny", "3", "300", "HISTORY", "brief", "10",
        "1",
    ])
}

/// (seq, epoch, [seq of each message], [data of each message]).
fn history(w: &mut World, query: History) -> (i64, String, Vec<i64>, Vec<serde_json::Value>) {
    let room = query.room.clone();
    history_reply(&w.map(query), &room)
}

/// [`history`] of a reply map.
fn history_reply(
    h: &std::collections::BTreeMap<String, redis::Value>,
    room: &str,
) -> (i64, String, Vec<i64>, Vec<serde_json::Value>) {
    let frames: Vec<serde_json::Value> = array(&h["messages"])
        .iter()
        .map(|f| frame_json(&bytes(f)))
        .collect();
    for f in &frames {
        assert_eq!(f["t"], "msg", "{f}");
        assert_eq!(f["room"], room, "{f}");
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
    let mut w = history_world();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    let epoch = text(&w.join(&alice, "chat:h")["epoch"]);
    for i in 1..=5 {
        w.publish("chat:h", &format!("m{i}"));
    }
    let (seq, e, seqs, data) = history(&mut w, History::new("chat:h"));
    assert_eq!((seq, e.as_str()), (5, epoch.as_str()));
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(data, ["m1", "m2", "m3", "m4", "m5"]);

    assert_eq!(
        history(&mut w, History::new("chat:h").since(2)).2,
        [3, 4, 5]
    );
    assert_eq!(
        history(&mut w, History::new("chat:h").since(2).limit(2)).2,
        [3, 4]
    );
    assert_eq!(history(&mut w, History::new("chat:h").limit(1)).2, [1]);
    assert_eq!(
        history(&mut w, History::new("chat:h").limit(0)).2,
        Vec::<i64>::new()
    );
    assert_eq!(
        history(&mut w, History::new("chat:h").since(5)).2,
        Vec::<i64>::new()
    );
    assert_eq!(
        history(&mut w, History::new("chat:h").since(99)).2,
        Vec::<i64>::new()
    );
    // Raw: the keyword's spelling is the point.
    let lower = map(&ok(&mut w.con, &["BROKER.HISTORY", "chat:h", "since", "4"]));
    assert_eq!(
        history_reply(&lower, "chat:h").2,
        [5],
        "keywords are case-insensitive"
    );
}

#[test]
fn history_frames_are_the_delivered_bytes() {
    let mut w = history_world();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "chat:h");
    let sub = w.listen(&["n1"]);
    w.ok(Publish::json("chat:h", "message", r#"{"text":"hi"}"#).from_conn("c1"));
    let seen = w.fence(&sub);
    let Envelope::Msg { frame, .. } = seen[0].envelope() else {
        panic!("{:?}", seen[0].envelope());
    };
    let h = w.history("chat:h");
    assert_eq!(bytes(&array(&h["messages"])[0]), frame);
}

#[test]
fn history_keeps_the_last_size_messages() {
    let mut w = history_world();
    for i in 1..=5 {
        w.publish("tiny:t", &i.to_string());
    }
    let (seq, _, seqs, _) = history(&mut w, History::new("tiny:t"));
    assert_eq!(seq, 5);
    assert_eq!(seqs, [3, 4, 5]);
}

#[test]
fn rooms_without_history_count_but_keep_nothing() {
    let mut w = history_world();
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "other:x");
    w.publish("other:x", "1");
    w.publish("other:x", "2");
    let (seq, epoch, seqs, _) = history(&mut w, History::new("other:x"));
    assert_eq!(seq, 2);
    assert!(!epoch.is_empty());
    assert!(seqs.is_empty());
}

#[test]
fn unknown_room_has_seq_zero_and_no_epoch() {
    let mut w = history_world();
    let (seq, epoch, seqs, _) = history(&mut w, History::new("chat:never"));
    assert_eq!((seq, epoch.as_str(), seqs.len()), (0, "", 0));
}

#[test]
fn publish_history_option_sets_the_rooms_settings() {
    let mut w = history_world();
    // `other` keeps nothing by default; the publisher says keep 2.
    for i in 1..=4 {
        w.ok(Publish::string("other:p", "ev", &i.to_string()).history(2, 60));
    }
    assert_eq!(history(&mut w, History::new("other:p")).2, [3, 4]);
    // The room remembers them.
    w.publish("other:p", "5");
    assert_eq!(history(&mut w, History::new("other:p")).2, [4, 5]);
    // And `HISTORY 0 0` turns it off for this room even in a namespace that keeps history.
    w.ok(Publish::string("chat:off", "ev", "1").history(0, 0));
    assert!(history(&mut w, History::new("chat:off")).2.is_empty());
}

#[test]
fn messages_older_than_the_ttl_are_not_returned() {
    let mut w = history_world();
    // A member keeps the room (and its seq) alive once the history is gone.
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    w.join(&alice, "brief:b");
    w.publish("brief:b", "old");
    assert_eq!(history(&mut w, History::new("brief:b")).2, [1]);
    eventually("the message's 1 s history TTL passes", || {
        let (seq, _, seqs, _) = history(&mut w, History::new("brief:b"));
        if seq == 1 && seqs.is_empty() {
            Ok(())
        } else {
            Err(format!("seq {seq}, messages {seqs:?}"))
        }
    });
}

/// The seqs of the messages a JOIN reply replays.
fn replayed(j: &std::collections::BTreeMap<String, redis::Value>) -> Vec<i64> {
    array(&j["messages"])
        .iter()
        .map(|f| frame_json(&bytes(f))["seq"].as_i64().unwrap())
        .collect()
}

#[test]
fn join_since_recovers_missed_messages() {
    let mut w = history_world();
    w.node("n1");
    let c1 = w.open("alice", "c1", "n1");
    let c2 = w.open("alice", "c2", "n1");
    let epoch = text(&w.join(&c1, "chat:rec")["epoch"]);
    for i in 1..=3 {
        w.publish("chat:rec", &format!("m{i}"));
    }

    // Missed 2 and 3, same epoch: recovered.
    let j = w.map(c2.join("chat:rec").since(1, &epoch));
    assert_eq!(int(&j["recovered"]), 1);
    assert_eq!(replayed(&j), [2, 3]);
    assert_eq!(int(&j["seq"]), 3);
    w.leave(&c2, "chat:rec");

    // Nothing missed: recovered, nothing to replay.
    let j = w.map(c2.join("chat:rec").since(3, &epoch));
    assert_eq!(int(&j["recovered"]), 1);
    assert!(replayed(&j).is_empty());
    w.leave(&c2, "chat:rec");

    // Another epoch: the client cannot know what happened.
    let j = w.map(c2.join("chat:rec").since(1, "0123456789abcdef"));
    assert_eq!(int(&j["recovered"]), 0);
    assert_eq!(text(&j["epoch"]), epoch);
}

#[test]
fn join_since_with_a_gap_is_not_recovered() {
    let mut w = history_world();
    w.node("n1");
    let c1 = w.open("alice", "c1", "n1");
    let c2 = w.open("alice", "c2", "n1");
    let epoch = text(&w.join(&c1, "tiny:gap")["epoch"]);
    for i in 1..=6 {
        w.publish("tiny:gap", &i.to_string());
    }
    // History holds 4..6; a client at 1 missed 2 and 3 for good.
    let j = w.map(c2.join("tiny:gap").since(1, &epoch));
    assert_eq!(int(&j["recovered"]), 0);
    w.leave(&c2, "tiny:gap");
    // A client at 3 missed only what is kept.
    let j = w.map(c2.join("tiny:gap").since(3, &epoch));
    assert_eq!(int(&j["recovered"]), 1);
    assert_eq!(array(&j["messages"]).len(), 3);
}

#[test]
fn a_dropped_room_gets_a_new_epoch() {
    // A fast sweep so the idle room goes quickly.
    let mut w = World::with_module_args(["SWEEP_MS", "20"]);
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    let old = text(&w.join(&alice, "other:e")["epoch"]);
    w.publish("other:e", "1");
    w.leave(&alice, "other:e");
    // Empty, nothing retained: the room is dropped.
    eventually("the empty room without history is dropped", || {
        let (seq, epoch, _, _) = history(&mut w, History::new("other:e"));
        if seq == 0 && epoch.is_empty() {
            Ok(())
        } else {
            Err(format!("seq {seq}, epoch {epoch:?}"))
        }
    });
    let j = w.map(alice.join("other:e").since(1, &old));
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
    let mut w = World::with_module_args(["SWEEP_MS", "20", "HISTORY", "chat", "10", "300"]);
    w.node("n1");
    let alice = w.open("alice", "c1", "n1");
    let epoch = text(&w.join(&alice, "chat:keep")["epoch"]);
    w.publish("chat:keep", "1");
    w.leave(&alice, "chat:keep");
    // Absence of a change has no event to wait for: give the 20 ms sweep
    // many rounds.
    std::thread::sleep(Duration::from_millis(400));
    let (seq, e, seqs, _) = history(&mut w, History::new("chat:keep"));
    assert_eq!((seq, e.as_str(), seqs), (1, epoch.as_str(), vec![1]));
    let j = w.map(alice.join("chat:keep").since(0, &epoch));
    assert_eq!(int(&j["recovered"]), 1);
    assert_eq!(text(&j["epoch"]), epoch);
}
