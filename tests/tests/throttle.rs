//! `BROKER.THROTTLE`, checked against redis-cell's `CL.THROTTLE` README.

use broker_tests::*;

/// The five integers of a `THROTTLE` reply: limited, limit, remaining,
/// retry after (s), reset after (s).
fn throttle(w: &mut World, call: Throttle) -> [i64; 5] {
    let reply = array(&w.ok(call));
    assert_eq!(reply.len(), 5, "{reply:?}");
    [0, 1, 2, 3, 4].map(|i| int(&reply[i]))
}

/// redis-cell's README: `CL.THROTTLE user123 15 30 60 1` →
/// `0 16 15 -1 2`: allowed, limit 16, 15 left, no retry, full again in 2 s.
#[test]
fn readme_example() {
    let mut w = World::start();
    assert_eq!(
        throttle(&mut w, Throttle::new("user123", 15, 30, 60).quantity(1)),
        [0, 16, 15, -1, 2]
    );
    // quantity defaults to 1 (raw: the typed command always sends one).
    let reply = array(&ok(
        &mut w.con,
        &["BROKER.THROTTLE", "user123", "15", "30", "60"],
    ));
    let second: Vec<i64> = reply.iter().map(int).collect();
    assert_eq!(second.len(), 5, "{second:?}");
    assert_eq!(second[..4], [0, 16, 14, -1]);
    assert!((3..=4).contains(&second[4]), "reset after {second:?}");
}

/// 30 per minute is one every 2 s; the 16 of the burst go back to back, the
/// 17th has to wait about one emission interval.
#[test]
fn burst_then_limited() {
    let mut w = World::start();
    for i in 1..=16i64 {
        let r = throttle(&mut w, Throttle::new("user123", 15, 30, 60).quantity(1));
        assert_eq!(r[..4], [0, 16, 16 - i, -1], "call {i}: {r:?}");
        assert!((2 * i - 1..=2 * i).contains(&r[4]), "call {i}: reset {r:?}");
    }
    let r = throttle(&mut w, Throttle::new("user123", 15, 30, 60).quantity(1));
    assert_eq!(r[..3], [1, 16, 0], "{r:?}");
    assert!((1..=2).contains(&r[3]), "retry after about 2 s: {r:?}");
    assert!((31..=32).contains(&r[4]), "reset after about 32 s: {r:?}");
    // A limited call does not move the arrival time.
    let again = throttle(&mut w, Throttle::new("user123", 15, 30, 60).quantity(1));
    assert_eq!(again[0], 1);
    assert!(again[4] <= r[4], "{r:?} then {again:?}");
    let throttled = w.info("throttled").expect("throttled");
    assert_eq!(throttled, "2");
}

#[test]
fn quantity_takes_several_units() {
    let mut w = World::start();
    // The whole burst at once.
    let r = throttle(&mut w, Throttle::new("k1", 15, 30, 60).quantity(16));
    assert_eq!(r[..4], [0, 16, 0, -1], "{r:?}");
    let r = throttle(&mut w, Throttle::new("k1", 15, 30, 60).quantity(1));
    assert_eq!(r[0], 1, "{r:?}");
    // More than the burst is never allowed.
    let r = throttle(&mut w, Throttle::new("k2", 15, 30, 60).quantity(17));
    assert_eq!(r[..3], [1, 16, 16], "{r:?}");
    // Zero units only looks.
    throttle(&mut w, Throttle::new("k3", 15, 30, 60).quantity(5));
    let peek = throttle(&mut w, Throttle::new("k3", 15, 30, 60).quantity(0));
    assert_eq!(peek[..4], [0, 16, 11, -1], "{peek:?}");
    let next = throttle(&mut w, Throttle::new("k3", 15, 30, 60).quantity(1));
    assert_eq!(next[2], 10, "the peek took nothing: {next:?}");
}

#[test]
fn keys_are_independent_and_recover_over_time() {
    let mut w = World::start();
    // 1 per second, burst 1.
    assert_eq!(throttle(&mut w, Throttle::new("a", 0, 1, 1))[0], 0);
    assert_eq!(throttle(&mut w, Throttle::new("a", 0, 1, 1))[0], 1);
    assert_eq!(throttle(&mut w, Throttle::new("b", 0, 1, 1))[0], 0);
    eventually("key a allows again after about a second", || {
        let r = throttle(&mut w, Throttle::new("a", 0, 1, 1));
        if r[0] == 0 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
}

#[test]
fn the_arrival_time_is_a_native_key_with_an_expiry() {
    let mut w = World::start();
    let start_ns = now_ms() * 1_000_000;
    let r = throttle(&mut w, Throttle::new("user123", 15, 30, 60).quantity(3));
    assert_eq!(r[4], 6);
    let tat: i64 = text(&ok(&mut w.con, &["GET", "user123"]))
        .parse()
        .expect("integer TAT");
    // Three emission intervals (6 s) after now, in nanoseconds.
    let ahead = tat - start_ns;
    assert!(
        (5_000_000_000..=7_000_000_000).contains(&ahead),
        "TAT {tat} is {ahead} ns ahead"
    );
    let pttl = int(&ok(&mut w.con, &["PTTL", "user123"]));
    assert!(
        (4_000..=6_000).contains(&pttl),
        "expires when the bucket is full again: {pttl}"
    );
    assert_eq!(text(&ok(&mut w.con, &["TYPE", "user123"])), "string");
}

#[test]
fn bad_rates_and_wrong_types_are_errors() {
    let mut w = World::start();
    for args in [
        ["k", "15", "0", "60", "1"],
        ["k", "15", "30", "0", "1"],
        ["k", "-1", "30", "60", "1"],
        ["k", "15", "-30", "60", "1"],
        ["k", "15", "30", "60", "-1"],
        ["k", "x", "30", "60", "1"],
        ["k", "15", "3.5", "60", "1"],
        ["k", "15", "30", "60", "99999999999999999999"],
    ] {
        let mut argv = vec!["BROKER.THROTTLE"];
        argv.extend_from_slice(&args);
        let e = err(&mut w.con, &argv);
        assert!(e.starts_with("ERR invalid"), "{args:?}: {e}");
    }
    assert_eq!(
        int(&ok(&mut w.con, &["EXISTS", "k"])),
        0,
        "refused calls store nothing"
    );

    ok(&mut w.con, &["LPUSH", "list", "x"]);
    let e = err(&mut w.con, &["BROKER.THROTTLE", "list", "15", "30", "60"]);
    assert!(e.starts_with("WRONGTYPE"), "{e}");
    ok(&mut w.con, &["SET", "text", "not a time"]);
    let e = err(&mut w.con, &["BROKER.THROTTLE", "text", "15", "30", "60"]);
    assert!(e.starts_with("WRONGTYPE") || e.starts_with("ERR"), "{e}");
    assert_eq!(
        text(&ok(&mut w.con, &["GET", "text"])),
        "not a time",
        "left alone"
    );
    assert_alive(&w.server);
}
