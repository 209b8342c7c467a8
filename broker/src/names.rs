//! Names of rooms, users, connections, nodes and IPs: validation and the
//! names derived from them.
//!
//! Every name that reaches the registry comes from a client (a JWT `sub`, a
//! `join` frame) or from a hand-typed `redis-cli` command, so it is checked
//! here once, byte by byte, before it becomes part of a key, a Pub/Sub channel
//! or a frame. The allowed alphabets are small and ASCII-only on purpose:
//! names appear in Redis keys, in log lines and in URLs, and must never need
//! escaping there.
//!
//! | name | alphabet | length |
//! |---|---|---|
//! | room | `namespace:name` | see below |
//! | namespace | `[A-Za-z0-9_-]` | 1..=[`MAX_ID_LEN`] |
//! | room `name` part, user id | `[A-Za-z0-9._@-]` | 1..=[`MAX_NAME_LEN`] |
//! | connection and node ids | `[A-Za-z0-9._-]` | 1..=[`MAX_ID_LEN`] |
//! | ip | printable ASCII without space | 1..=[`MAX_ID_LEN`] |
//!
//! A user id uses the same alphabet as a room's `name` part, so a user's
//! personal room `user:<id>` is always a valid room.

use thiserror::Error;

/// Why a name was refused; the `Display` text is what a Redis error reply
/// shows after `ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NameError {
    /// Not `namespace:name` with both parts valid.
    #[error("invalid room name")]
    Room,
    /// A namespace outside `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid namespace")]
    Namespace,
    /// A user id outside `[A-Za-z0-9._@-]{1,100}`.
    #[error("invalid user id")]
    User,
    /// A connection id outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid connection id")]
    Conn,
    /// A node id outside `[A-Za-z0-9._-]{1,64}`.
    #[error("invalid node id")]
    Node,
    /// An IP that is empty, too long, or has spaces or non-printable bytes.
    #[error("invalid ip")]
    Ip,
}

/// Longest room `name` part and user id, in bytes.
pub const MAX_NAME_LEN: usize = 100;

/// Longest connection id, node id, namespace and IP, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Namespace of the personal rooms: every connection of user `alice` is in
/// `user:alice` from the start, so a server can reach a user by name.
pub const PERSONAL_NAMESPACE: &str = "user";

/// Prefix of the per-node Pub/Sub channels (see [`node_channel`]).
const NODE_CHANNEL_PREFIX: &str = "broker:node:";

/// Bytes of a namespace: `[A-Za-z0-9_-]`.
fn is_namespace_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Bytes of a room `name` part and of a user id: `[A-Za-z0-9._@-]`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-')
}

/// Bytes of connection and node ids: `[A-Za-z0-9._-]`.
fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Bytes of an IP (or any peer address text): printable ASCII, no space.
fn is_ip_byte(b: u8) -> bool {
    b.is_ascii_graphic()
}

/// True when `s` has 1..=`max` bytes and every byte passes `ok`.
fn fits(s: &str, max: usize, ok: fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(ok)
}

/// Splits a room name into `(namespace, name)` after checking both parts.
///
/// The namespace selects the room's policy (join rule, history, rate limit),
/// so the split happens at the first `:`; the `name` part cannot contain a
/// `:` itself.
///
/// # Errors
///
/// [`NameError::Room`] for anything that is not `namespace:name` with a valid
/// namespace and a valid name (one error, because a client only needs to know
/// that the room name as a whole is wrong).
pub fn split_room(room: &str) -> Result<(&str, &str), NameError> {
    let (namespace, name) = room.split_once(':').ok_or(NameError::Room)?;
    if fits(namespace, MAX_ID_LEN, is_namespace_byte) && fits(name, MAX_NAME_LEN, is_name_byte) {
        Ok((namespace, name))
    } else {
        Err(NameError::Room)
    }
}

/// Checks a room name (`namespace:name`).
///
/// # Errors
///
/// [`NameError::Room`] as in [`split_room`].
pub fn validate_room(room: &str) -> Result<(), NameError> {
    split_room(room).map(|_| ())
}

/// Checks a namespace on its own (`[A-Za-z0-9_-]{1,64}`), e.g. a namespace
/// named in configuration or in a module argument.
///
/// # Errors
///
/// [`NameError::Namespace`] when it does not match.
pub fn validate_namespace(namespace: &str) -> Result<(), NameError> {
    if fits(namespace, MAX_ID_LEN, is_namespace_byte) {
        Ok(())
    } else {
        Err(NameError::Namespace)
    }
}

/// Checks a user id (`[A-Za-z0-9._@-]{1,100}`), typically a JWT `sub`, so
/// that e-mail-like ids such as `alice@example.com` are accepted.
///
/// # Errors
///
/// [`NameError::User`] when it does not match.
pub fn validate_user(user: &str) -> Result<(), NameError> {
    if fits(user, MAX_NAME_LEN, is_name_byte) {
        Ok(())
    } else {
        Err(NameError::User)
    }
}

/// Checks a connection id (`[A-Za-z0-9._-]{1,64}`), chosen by a gateway.
///
/// # Errors
///
/// [`NameError::Conn`] when it does not match.
pub fn validate_conn(conn: &str) -> Result<(), NameError> {
    if fits(conn, MAX_ID_LEN, is_id_byte) {
        Ok(())
    } else {
        Err(NameError::Conn)
    }
}

/// Checks a gateway node id (`[A-Za-z0-9._-]{1,64}`); it becomes part of the
/// node's Pub/Sub channel name.
///
/// # Errors
///
/// [`NameError::Node`] when it does not match.
pub fn validate_node(node: &str) -> Result<(), NameError> {
    if fits(node, MAX_ID_LEN, is_id_byte) {
        Ok(())
    } else {
        Err(NameError::Node)
    }
}

/// Checks a client IP as the gateway reports it: 1–64 printable ASCII
/// characters without spaces. IPv4, IPv6 (with or without brackets, zone or
/// port) all pass; the registry only counts connections per distinct text.
///
/// # Errors
///
/// [`NameError::Ip`] when it does not match.
pub fn validate_ip(ip: &str) -> Result<(), NameError> {
    if fits(ip, MAX_ID_LEN, is_ip_byte) {
        Ok(())
    } else {
        Err(NameError::Ip)
    }
}

/// The personal room of `user`: `user:<id>`.
pub fn personal_room(user: &str) -> String {
    let mut room = String::with_capacity(PERSONAL_NAMESPACE.len() + 1 + user.len());
    room.push_str(PERSONAL_NAMESPACE);
    room.push(':');
    room.push_str(user);
    room
}

/// The owner of a personal room: `Some("alice")` for `user:alice`, `None` for
/// a room of any other namespace.
///
/// The rest after `user:` is returned unchecked (even when empty), so that a
/// "someone else's personal room?" guard errs on the side of refusing for
/// names that were not validated first.
pub fn personal_room_owner(room: &str) -> Option<&str> {
    room.strip_prefix(PERSONAL_NAMESPACE)?.strip_prefix(':')
}

/// The Pub/Sub channel a gateway node subscribes to: `broker:node:<node>`.
/// The module publishes each room message once per node with members there.
pub fn node_channel(node: &str) -> String {
    let mut channel = String::with_capacity(NODE_CHANNEL_PREFIX.len() + node.len());
    channel.push_str(NODE_CHANNEL_PREFIX);
    channel.push_str(node);
    channel
}

/// Number of hash slots in a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag
/// (the text between the first `{` and the next `}`, when not empty) or of
/// the whole key, modulo 16384 — as `CLUSTER KEYSLOT` computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % CLUSTER_SLOTS
}

/// The sharded Pub/Sub channel of a gateway node on one shard of a
/// cluster: `broker:node:<node>:{<tag>}`, where `tag` is the smallest
/// number whose slot `owns` accepts (a slot of that shard). The node
/// subscribes to it with `SSUBSCRIBE` on the shard and names it in its
/// lease there, so the shard's messages stay on the shard.
pub fn shard_channel(node: &str, owns: impl Fn(u16) -> bool) -> Option<String> {
    (0..u32::from(CLUSTER_SLOTS) * 64)
        .map(|n| n.to_string())
        .find(|tag| owns(key_slot(tag.as_bytes())))
        .map(|tag| format!("{NODE_CHANNEL_PREFIX}{node}:{{{tag}}}"))
}

/// The lifecycle stream the module writes on a single Redis (contract
/// section 7): one entry per connect, disconnect, join, leave, online and
/// offline.
pub const EVENTS_STREAM: &str = "broker:events";

/// The stream clients' `rpc` requests are appended to, for backends to read
/// in a consumer group. One key on a cluster too (docs/BACKENDS.md says why).
pub const RPC_STREAM: &str = "broker:rpc";

/// The lifecycle stream of one master of a cluster:
/// `broker:events:{<tag>}`, where `tag` is the smallest number whose slot
/// `owns` accepts — the same rule as [`shard_channel`], so the module (from
/// the slots it serves) and a gateway or backend (from the slot map) name
/// the same key, and the key lives on the master that writes it.
pub fn events_stream_in(owns: impl Fn(u16) -> bool) -> Option<String> {
    (0..u32::from(CLUSTER_SLOTS) * 64)
        .map(|n| n.to_string())
        .find(|tag| owns(key_slot(tag.as_bytes())))
        .map(|tag| format!("{EVENTS_STREAM}:{{{tag}}}"))
}

/// A connection id as gateways make them: `<node>.<incarnation>.<counter>`
/// (the last two parts without dots). Unique across nodes and across the
/// processes that held one node id, and it names its node, so a reply for
/// a connection (`BROKER.RPC.REPLY`) can be routed without a lookup.
pub fn conn_id(node: &str, incarnation: &str, counter: &str) -> String {
    format!("{node}.{incarnation}.{counter}")
}

/// The node of a connection id made by [`conn_id`]: everything before its
/// last two dot-separated parts. `None` when the id has fewer parts.
pub fn conn_node(conn: &str) -> Option<&str> {
    let (rest, _counter) = conn.rsplit_once('.')?;
    let (node, _incarnation) = rest.rsplit_once('.')?;
    (!node.is_empty()).then_some(node)
}

/// Whether `channel` may carry `node`'s messages: its own channel, or one of
/// its sharded channels ([`shard_channel`]), at most 200 bytes.
pub fn is_node_channel(node: &str, channel: &str) -> bool {
    let own = node_channel(node);
    channel.len() <= 200
        && channel.starts_with(&own)
        && (channel.len() == own.len()
            || channel[own.len()..]
                .strip_prefix(":{")
                .and_then(|rest| rest.strip_suffix('}'))
                .is_some_and(|tag| !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit())))
}

/// Whether `room` is granted by one entry of a token's `rooms` claim.
///
/// An entry is either an exact room name, or a prefix followed by one final
/// `*` (`chat:team-*` grants `chat:team-a` and `chat:team-b`; a lone `*`
/// grants every room). A `*` anywhere else is an ordinary character, and
/// since no valid room contains `*`, such an entry grants nothing.
pub fn room_matches_pattern(room: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => room == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_valid_rooms() {
        assert_eq!(split_room("chat:lobby"), Ok(("chat", "lobby")));
        assert_eq!(
            split_room("user:alice@example.com"),
            Ok(("user", "alice@example.com"))
        );
        assert_eq!(split_room("a_b-C9:x.y_z@w-1"), Ok(("a_b-C9", "x.y_z@w-1")));
        assert_eq!(split_room("n:1"), Ok(("n", "1")));
    }

    #[test]
    fn rejects_malformed_rooms() {
        for room in [
            "",
            "lobby",
            ":lobby",
            "chat:",
            ":",
            "chat:lob:by",
            "chat:lob by",
            "chat:lobby*",
            "chat:lobby/x",
            "ch.at:lobby",
            "ch@t:lobby",
            "chat:lobbé",
            "chat:\u{0}",
            "chat :lobby",
        ] {
            assert_eq!(split_room(room), Err(NameError::Room), "{room:?}");
            assert_eq!(validate_room(room), Err(NameError::Room), "{room:?}");
        }
    }

    #[test]
    fn room_length_limits() {
        let ns64 = "n".repeat(MAX_ID_LEN);
        let ns65 = "n".repeat(MAX_ID_LEN + 1);
        let name100 = "x".repeat(MAX_NAME_LEN);
        let name101 = "x".repeat(MAX_NAME_LEN + 1);
        assert!(validate_room(&format!("{ns64}:{name100}")).is_ok());
        assert_eq!(validate_room(&format!("{ns65}:x")), Err(NameError::Room));
        assert_eq!(validate_room(&format!("n:{name101}")), Err(NameError::Room));
    }

    #[test]
    fn namespaces() {
        assert!(validate_namespace("chat").is_ok());
        assert!(validate_namespace("a-b_c9").is_ok());
        assert!(validate_namespace(&"n".repeat(MAX_ID_LEN)).is_ok());
        for ns in ["", "a.b", "a:b", "a@b", "a b"] {
            assert_eq!(validate_namespace(ns), Err(NameError::Namespace), "{ns:?}");
        }
        assert_eq!(
            validate_namespace(&"n".repeat(MAX_ID_LEN + 1)),
            Err(NameError::Namespace)
        );
    }

    #[test]
    fn users() {
        for user in ["alice", "alice@example.com", "A.b_c-9", "1"] {
            assert!(validate_user(user).is_ok(), "{user:?}");
        }
        assert!(validate_user(&"u".repeat(MAX_NAME_LEN)).is_ok());
        for user in ["", "al ice", "alice:x", "alice*", "élodie", "a\nb", "a/b"] {
            assert_eq!(validate_user(user), Err(NameError::User), "{user:?}");
        }
        assert_eq!(
            validate_user(&"u".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::User)
        );
    }

    #[test]
    fn a_conn_id_names_its_node() {
        let id = conn_id("gw.east-1", "a1b2", "z9");
        assert_eq!(id, "gw.east-1.a1b2.z9");
        assert_eq!(conn_node(&id), Some("gw.east-1"));
        assert_eq!(conn_node("n1.abcd.1"), Some("n1"));
        assert_eq!(conn_node("abcd.1"), None);
        assert_eq!(conn_node(".abcd.1"), None);
        assert_eq!(conn_node("plain"), None);
    }

    #[test]
    fn an_events_stream_lives_in_a_slot_of_its_master() {
        let single = events_stream_in(|_| true).unwrap();
        assert_eq!(single, "broker:events:{0}");
        let high = events_stream_in(|slot| slot >= 10_923).unwrap();
        assert!(key_slot(high.as_bytes()) >= 10_923, "{high}");
        assert!(high.starts_with("broker:events:{"));
        assert_eq!(events_stream_in(|_| false), None);
    }

    #[test]
    fn conns_and_nodes() {
        for id in ["c1", "node-a.eu_1", "0123456789"] {
            assert!(validate_conn(id).is_ok(), "{id:?}");
            assert!(validate_node(id).is_ok(), "{id:?}");
        }
        let long = "c".repeat(MAX_ID_LEN);
        assert!(validate_conn(&long).is_ok());
        assert!(validate_node(&long).is_ok());
        let too_long = "c".repeat(MAX_ID_LEN + 1);
        for id in ["", "a@b", "a:b", "a b", "a*", too_long.as_str()] {
            assert_eq!(validate_conn(id), Err(NameError::Conn), "{id:?}");
            assert_eq!(validate_node(id), Err(NameError::Node), "{id:?}");
        }
    }

    #[test]
    fn ips() {
        for ip in ["127.0.0.1", "::1", "[2001:db8::1]:443", "fe80::1%eth0"] {
            assert!(validate_ip(ip).is_ok(), "{ip:?}");
        }
        assert!(validate_ip(&"1".repeat(MAX_ID_LEN)).is_ok());
        for ip in ["", "1.2.3.4 ", "a\tb", "a\u{7f}", "é", "\r"] {
            assert_eq!(validate_ip(ip), Err(NameError::Ip), "{ip:?}");
        }
        assert_eq!(validate_ip(&"1".repeat(MAX_ID_LEN + 1)), Err(NameError::Ip));
    }

    #[test]
    fn personal_rooms() {
        assert_eq!(personal_room("alice"), "user:alice");
        assert!(validate_room(&personal_room("alice@example.com")).is_ok());
        let longest = "u".repeat(MAX_NAME_LEN);
        assert!(validate_room(&personal_room(&longest)).is_ok());
        assert_eq!(personal_room_owner("user:alice"), Some("alice"));
        assert_eq!(personal_room_owner(&personal_room("bob")), Some("bob"));
        assert_eq!(personal_room_owner("user:"), Some(""));
        assert_eq!(personal_room_owner("users:alice"), None);
        assert_eq!(personal_room_owner("chat:user"), None);
        assert_eq!(personal_room_owner("user"), None);
        assert_eq!(personal_room_owner("xuser:alice"), None);
    }

    #[test]
    fn node_channels() {
        assert_eq!(node_channel("gw-1"), "broker:node:gw-1");
        assert!(is_node_channel("gw-1", "broker:node:gw-1"));
        assert!(is_node_channel("gw-1", "broker:node:gw-1:{42}"));
        assert!(!is_node_channel("gw-1", "broker:node:gw-2:{42}"));
        assert!(!is_node_channel("gw-1", "broker:node:gw-1:{}"));
        assert!(!is_node_channel("gw-1", "broker:node:gw-1:{4x}"));
        assert!(!is_node_channel("gw-1", "broker:node:gw-1x"));
    }

    #[test]
    fn key_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"123456789"), 0x31C3 % CLUSTER_SLOTS);
    }

    #[test]
    fn shard_channels_hash_into_the_shard() {
        let channel = shard_channel("gw-1", |slot| (5461..=10922).contains(&slot)).unwrap();
        assert!(is_node_channel("gw-1", &channel));
        assert!((5461..=10922).contains(&key_slot(channel.as_bytes())));
        assert_eq!(shard_channel("gw-1", |_| false), None);
    }

    #[test]
    fn patterns() {
        assert!(room_matches_pattern("chat:lobby", "chat:lobby"));
        assert!(!room_matches_pattern("chat:lobby2", "chat:lobby"));
        assert!(!room_matches_pattern("chat:lobb", "chat:lobby"));
        assert!(room_matches_pattern("chat:team-a", "chat:team-*"));
        assert!(room_matches_pattern("chat:team-", "chat:team-*"));
        assert!(!room_matches_pattern("chat:tea", "chat:team-*"));
        assert!(room_matches_pattern("chat:anything", "chat:*"));
        assert!(!room_matches_pattern("orders:1", "chat:*"));
        assert!(room_matches_pattern("orders:1", "*"));
        assert!(!room_matches_pattern("chat:a", "chat*:a"));
        assert!(!room_matches_pattern("chat:a", ""));
    }

    #[test]
    fn error_texts() {
        assert_eq!(NameError::Room.to_string(), "invalid room name");
        assert_eq!(NameError::User.to_string(), "invalid user id");
        assert_eq!(NameError::Conn.to_string(), "invalid connection id");
        assert_eq!(NameError::Node.to_string(), "invalid node id");
        assert_eq!(NameError::Namespace.to_string(), "invalid namespace");
        assert_eq!(NameError::Ip.to_string(), "invalid ip");
    }
}
