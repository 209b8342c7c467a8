//! The module's argument parsing, fuzzed through a real Redis: thousands of
//! random argument vectors (valid and broken names, numbers at every edge,
//! option keywords in any order, NUL bytes, invalid UTF-8, broken
//! MessagePack, long strings) to every `BROKER.*` command, including the
//! replication-only ones a client could still call. Each gets a reply or an
//! error; the server never panics, answers `PING` throughout, and its state
//! still saves and loads (`DEBUG RELOAD`) at the end. Seeded, so a failure
//! replays.

use broker_tests::{call, ok, text, RedisServer};

const COMMANDS: [&str; 20] = [
    "BROKER.PUBLISH",
    "BROKER.BROADCAST",
    "BROKER.APPLY.PUBLISH",
    "BROKER.APPLY.DROP",
    "BROKER.APPLY.LEAVE",
    "BROKER.HISTORY",
    "BROKER.JOIN",
    "BROKER.LEAVE",
    "BROKER.ROOM.MEMBERS",
    "BROKER.ROOM.COUNT",
    "BROKER.CONN.OPEN",
    "BROKER.CONN.CLOSE",
    "BROKER.PRESENCE",
    "BROKER.USER.ROOMS",
    "BROKER.KICK",
    "BROKER.ONLINE",
    "BROKER.THROTTLE",
    "BROKER.NODE.LEASE",
    "BROKER.NODE.RELEASE",
    "BROKER.NODES",
];

/// xorshift64*: small, seeded, good enough to pick tokens.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One argument: mostly plausible values, often not.
fn token(rng: &mut Rng) -> Vec<u8> {
    const WORDS: [&str; 44] = [
        "chat:lobby",
        "chat:r1",
        "user:alice",
        "user:bob",
        "alice",
        "bob",
        "gw-1",
        "gw-2",
        "gw-1.1",
        "gw-1.2",
        "127.0.0.1",
        "message",
        "FORMAT",
        "json",
        "msgpack",
        "string",
        "EXCEPT",
        "FROM",
        "HISTORY",
        "RATE",
        "SINCE",
        "LIMIT",
        "PRESENCE",
        "MAXROOMS",
        "MAXUSER",
        "MAXIP",
        "AT",
        "DEADLINE",
        "CHANNEL",
        "GRACE",
        "UNTIL",
        "broker:node:n1:{7}",
        "NS",
        "chat",
        "0",
        "1",
        "-1",
        "5000",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "1e3",
        "",
    ];
    match rng.below(10) {
        0..=5 => WORDS[rng.below(WORDS.len())].as_bytes().to_vec(),
        6 => {
            // Random bytes: NUL, invalid UTF-8, MessagePack markers.
            let len = rng.below(24);
            (0..len).map(|_| rng.next() as u8).collect()
        }
        7 => {
            // MessagePack: valid, truncated, or lying about its length.
            let mut v = match rng.below(4) {
                0 => vec![0x81, 0xa1, b'a', 0x01],
                1 => vec![0xdd, 0xff, 0xff, 0xff, 0xff],
                2 => vec![0x91; 200],
                _ => vec![0xc1],
            };
            v.truncate(rng.below(v.len() + 1).max(1));
            v
        }
        8 => (rng.next() as i64).to_string().into_bytes(),
        _ => vec![b'x'; [100, 1000, 100_000][rng.below(3)]],
    }
}

#[test]
fn random_arguments_never_hurt_the_server() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    // Some state for the commands to act on.
    ok(&mut con, &["BROKER.NODE.LEASE", "gw-1", "60000"]);
    ok(
        &mut con,
        &["BROKER.CONN.OPEN", "alice", "gw-1.1", "gw-1", "127.0.0.1"],
    );
    ok(
        &mut con,
        &["BROKER.JOIN", "chat:lobby", "alice", "gw-1.1", "gw-1"],
    );

    // FUZZ_SEED=n runs another sequence (to search further by hand).
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed_b40c_e2f0_0d15);
    let mut rng = Rng(seed | 1);
    let (mut replies, mut errors) = (0u32, 0u32);
    for i in 0..4000 {
        let name = COMMANDS[rng.below(COMMANDS.len())];
        let mut cmd = redis::cmd(name);
        let args: Vec<Vec<u8>> = (0..rng.below(9)).map(|_| token(&mut rng)).collect();
        for a in &args {
            cmd.arg(a);
        }
        if std::env::var_os("FUZZ_TRACE").is_some() {
            let shown: Vec<String> = args
                .iter()
                .map(|a| format!("{:?}", String::from_utf8_lossy(&a[..a.len().min(40)])))
                .collect();
            eprintln!("{i}: {name} {}", shown.join(" "));
        }
        match cmd.query::<redis::Value>(&mut con) {
            Ok(_) => replies += 1,
            Err(e) if !e.is_io_error() && !e.is_connection_dropped() => errors += 1,
            Err(e) => panic!(
                "command {i} ({name}) broke the connection: {e}\n{}",
                redis.stderr()
            ),
        }
        if i % 250 == 0 || std::env::var_os("FUZZ_TRACE").is_some() {
            assert_eq!(text(&ok(&mut con, &["PING"])), "PONG", "after command {i}");
        }
    }
    assert!(
        errors > 1000 && replies > 100,
        "{replies} replies, {errors} errors"
    );
    assert_eq!(text(&ok(&mut con, &["PING"])), "PONG");
    call(&mut con, &["DEBUG", "RELOAD"]).expect("the state saves and loads");
    assert_eq!(text(&ok(&mut con, &["PING"])), "PONG");
    assert!(!redis.stderr().contains("panicked"), "{}", redis.stderr());
}
