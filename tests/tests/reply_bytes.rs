//! The replies of `BROKER.THROTTLE`, `JOIN`, `LEAVE` and `PUBLISH` byte for
//! byte, in RESP2 and RESP3: these commands write their replies directly
//! (`module/src/guard.rs`, `raw`), so the bytes — a map's key order and
//! value types included — are pinned here, not only their decoded values.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use broker_tests::*;

/// A connection that sends commands and reads each reply as raw bytes.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(server: &RedisServer, resp3: bool) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        if resp3 {
            raw.send(&["HELLO", "3"]);
        }
        raw
    }

    /// Sends `words` and returns the reply's bytes.
    fn send(&mut self, words: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", words.len()).into_bytes();
        for w in words {
            out.extend(format!("${}\r\n{w}\r\n", w.len()).bytes());
        }
        self.stream.write_all(&out).expect("write");
        let end = self.reply_end(0);
        self.buf.drain(..end).collect()
    }

    /// The end of the reply starting at `at`, reading more as needed.
    fn reply_end(&mut self, at: usize) -> usize {
        let line_end = loop {
            if let Some(i) = self.buf[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i + 2;
            }
            self.fill();
        };
        let kind = self.buf[at];
        let n: i64 = std::str::from_utf8(&self.buf[at + 1..line_end - 2])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match kind {
            b'$' | b'=' | b'!' if n >= 0 => {
                let end = line_end + n as usize + 2;
                while self.buf.len() < end {
                    self.fill();
                }
                end
            }
            b'*' | b'~' | b'>' | b'%' if n > 0 => {
                let items = if kind == b'%' { 2 * n } else { n };
                (0..items).fold(line_end, |pos, _| self.reply_end(pos))
            }
            _ => line_end,
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// `JOIN`'s map in RESP2 (`*10`) or RESP3 (`%5`), keys in name order.
fn join_reply(resp3: bool, first: u8, seq: u64, epoch: &str, messages: &str) -> String {
    let head = if resp3 { "%5" } else { "*10" };
    format!(
        "{head}\r\n$5\r\nepoch\r\n${}\r\n{epoch}\r\n$5\r\nfirst\r\n:{first}\r\n\
         $8\r\nmessages\r\n{messages}$9\r\nrecovered\r\n:{}\r\n$3\r\nseq\r\n:{seq}\r\n",
        epoch.len(),
        u8::from(messages != "*0\r\n"),
    )
}

fn check(resp3: bool) {
    let w = World::with_module_args(["HISTORY", "chat", "10", "60"]);
    let mut raw = Raw::connect(&w.server, resp3);
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    raw.send(&["BROKER.NODE.LEASE", "n1", "60000"]);
    assert_eq!(
        text(raw.send(&["BROKER.CONN.OPEN", "alice", "c1", "n1", "127.0.0.1"])),
        "+OK\r\n"
    );

    let join = ["BROKER.JOIN", "chat:a", "alice", "c1", "n1", "EPOCH", "e1"];
    assert_eq!(
        text(raw.send(&join)),
        join_reply(resp3, 1, 0, "e1", "*0\r\n")
    );
    assert_eq!(
        text(raw.send(&join)),
        join_reply(resp3, 0, 0, "e1", "*0\r\n")
    );
    let publish = ["BROKER.PUBLISH", "chat:a", "ev", "hi", "FORMAT", "string"];
    assert_eq!(text(raw.send(&publish)), ":1\r\n");
    let volatile = [&publish[..], &["VOLATILE"]].concat();
    assert_eq!(text(raw.send(&volatile)), ":0\r\n");
    // A recovery: one message, as a bulk string in an array.
    let since = [&join[..5], &["SINCE", "0", "e1"]].concat();
    let reply = text(raw.send(&since));
    let from = reply.find("$8\r\nmessages\r\n").map_or(0, |i| i + 14);
    let to = reply.find("$9\r\nrecovered").unwrap_or(from);
    let messages = &reply[from..to];
    assert!(messages.starts_with("*1\r\n$"), "{reply:?}");
    assert_eq!(reply, join_reply(resp3, 0, 1, "e1", messages));

    let leave = ["BROKER.LEAVE", "chat:a", "alice", "c1"];
    assert_eq!(text(raw.send(&leave)), ":1\r\n");
    assert_eq!(text(raw.send(&leave)), ":0\r\n");

    // One unit of 1 per 1,000,000 s with a bucket of 3: the figures do not
    // move within the test.
    let throttle = ["BROKER.THROTTLE", "tk", "2", "1", "1000000"];
    assert_eq!(
        text(raw.send(&throttle)),
        "*5\r\n:0\r\n:3\r\n:2\r\n:-1\r\n:1000000\r\n"
    );
    assert_eq!(
        text(raw.send(&[&throttle[..], &["2"]].concat())),
        "*5\r\n:0\r\n:3\r\n:0\r\n:-1\r\n:3000000\r\n"
    );
    let limited = text(raw.send(&throttle));
    assert!(
        limited.starts_with("*5\r\n:1\r\n:3\r\n:0\r\n:"),
        "{limited:?}"
    );

    // Errors are error replies, the same in both protocols.
    assert_eq!(
        text(raw.send(&["BROKER.JOIN", "chat:a", "alice"])),
        "-ERR wrong number of arguments: missing conn\r\n"
    );
    assert_eq!(
        text(raw.send(&["BROKER.THROTTLE", "tk", "2", "1"])),
        "-ERR wrong number of arguments: missing period\r\n"
    );
    raw.send(&["SET", "str", "x"]);
    assert_eq!(
        text(raw.send(&["BROKER.THROTTLE", "str", "2", "1", "10"])),
        "-WRONGTYPE rate-limit key does not hold an integer arrival time\r\n"
    );
    assert_eq!(
        text(raw.send(&["BROKER.PUBLISH", "chat:a", "ev", "\u{c1}"])),
        "-ERR invalid payload: trailing bytes after the MessagePack value\r\n"
    );
}

#[test]
fn hot_command_replies_in_resp2() {
    check(false);
}

#[test]
fn hot_command_replies_in_resp3() {
    check(true);
}
