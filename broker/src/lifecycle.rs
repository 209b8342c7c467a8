//! Lifecycle events: what the module appends to the lifecycle stream
//! (`broker:events`, contract section 7) in the same command that changes
//! the state — a connection opened or closed, a room joined or left, a user's
//! first connection in or last one out.
//!
//! The registry records them ([`crate::registry::Registry::take_lifecycle`])
//! while it changes its state, so every path that changes it (a client's
//! close, a kick, a node whose lease ran out, a restart under the same node
//! id, the after-load reconciliation) reports the same way; the module
//! writes them out with the time and the stream entry's fields
//! ([`Event::fields`]).

use std::fmt;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A connection was opened (`CONN.OPEN`).
    Connect,
    /// An opened connection ended; with `reason` and `duration_ms`.
    Disconnect,
    /// A connection joined a room (personal rooms `user:*` excluded).
    Join,
    /// A connection left a room; with `reason`.
    Leave,
    /// A user's first opened connection.
    Online,
    /// A user's last opened connection ended; with the `reason` of that
    /// connection's disconnect.
    Offline,
}

impl EventType {
    /// Every type, in the order the contract lists them.
    pub const ALL: [EventType; 6] = [
        EventType::Connect,
        EventType::Disconnect,
        EventType::Join,
        EventType::Leave,
        EventType::Online,
        EventType::Offline,
    ];

    /// The `type` field of the stream entry.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Connect => "connect",
            EventType::Disconnect => "disconnect",
            EventType::Join => "join",
            EventType::Leave => "leave",
            EventType::Online => "online",
            EventType::Offline => "offline",
        }
    }

    /// The type named `text`, if any.
    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection ended or left a room, as the `reason` field says it.
/// The gateway names the reason of a close it asks for (`CONN.CLOSE ...
/// REASON r`); the module names the ones it decides itself.
pub mod reason {
    /// The client closed, went away or was lost; or left a room by request.
    pub const CLIENT: &str = "client";
    /// `BROKER.KICK`.
    pub const KICKED: &str = "kicked";
    /// The node's lease ran out (the process died or lost Redis), or a new
    /// process took its node id, or it did not register the connection
    /// again after Redis restarted.
    pub const NODE_LOST: &str = "node_lost";
    /// No frame from the client within `limits.idle_timeout_s`.
    pub const IDLE: &str = "idle";
    /// The send queue passed its limit (close 4008).
    pub const SLOW_CONSUMER: &str = "slow_consumer";
    /// The token expired without a `refresh`.
    pub const TOKEN_EXPIRED: &str = "token_expired";
    /// The gateway shut down (close 1012).
    pub const SHUTDOWN: &str = "shutdown";
    /// Bad frames, a bad token on `refresh`, or another protocol breach.
    pub const POLICY: &str = "policy";
    /// The backend took the user out of the room (`BROKER.USER.LEAVE`).
    pub const SERVER: &str = "server";
}

/// Whether `text` can be a `reason`: `[a-z_]{1,32}`.
pub fn is_reason(text: &str) -> bool {
    (1..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// One lifecycle event, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The user.
    pub user: String,
    /// The connection.
    pub conn: String,
    /// The gateway node of the connection.
    pub node: String,
    /// The room (join and leave).
    pub room: Option<String>,
    /// Why (disconnect, leave and offline).
    pub reason: Option<String>,
    /// When the connection was opened (disconnect), for `duration_ms`.
    pub connected_at_ms: Option<u64>,
}

impl Event {
    /// The stream entry's fields, in order: `type`, `user`, `conn`, `node`,
    /// then `room`, `reason`, `duration_ms` where they apply, and `ts`
    /// (`now_ms`).
    pub fn fields(&self, now_ms: u64) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("type", self.kind.as_str().to_string()),
            ("user", self.user.clone()),
            ("conn", self.conn.clone()),
            ("node", self.node.clone()),
        ];
        if let Some(room) = &self.room {
            out.push(("room", room.clone()));
        }
        if let Some(reason) = &self.reason {
            out.push(("reason", reason.clone()));
        }
        if let Some(at) = self.connected_at_ms {
            out.push(("duration_ms", now_ms.saturating_sub(at).to_string()));
        }
        out.push(("ts", now_ms.to_string()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("Connect"), None);
    }

    #[test]
    fn reasons_are_short_lowercase_words() {
        for r in [reason::CLIENT, reason::NODE_LOST, reason::SLOW_CONSUMER] {
            assert!(is_reason(r));
        }
        for r in ["", "Kicked", "a b", "x".repeat(33).as_str(), "é"] {
            assert!(!is_reason(r), "{r:?}");
        }
    }

    #[test]
    fn a_disconnect_has_its_duration_and_a_join_its_room() {
        let ev = Event {
            kind: EventType::Disconnect,
            user: "u".into(),
            conn: "c".into(),
            node: "n".into(),
            room: None,
            reason: Some("client".into()),
            connected_at_ms: Some(1_000),
        };
        let f = ev.fields(4_500);
        assert_eq!(
            f,
            vec![
                ("type", "disconnect".to_string()),
                ("user", "u".into()),
                ("conn", "c".into()),
                ("node", "n".into()),
                ("reason", "client".into()),
                ("duration_ms", "3500".into()),
                ("ts", "4500".into()),
            ]
        );
        let join = Event {
            kind: EventType::Join,
            room: Some("chat:x".into()),
            reason: None,
            connected_at_ms: None,
            ..ev
        };
        assert_eq!(join.fields(9)[4], ("room", "chat:x".to_string()));
        assert_eq!(join.fields(9).len(), 6);
    }
}
