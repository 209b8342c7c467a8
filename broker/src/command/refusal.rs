//! [`Refusal`]: every refusal code the module replies with (limits, lease,
//! membership, rate), as one enum. Its text is the module's exact error
//! reply, and [`Refusal::parse`] reads that reply back, so the module and
//! the gateway agree on codes as values, not strings.

use std::fmt;

/// Which connection limit a `CONN.OPEN` hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The user already has the maximum number of connections (`MAXUSER`).
    User,
    /// The client address already has the maximum number of connections (`MAXIP`).
    Ip,
}

impl LimitKind {
    /// The word after `LIMIT` in the reply: `user` or `ip`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::User => "user",
            LimitKind::Ip => "ip",
        }
    }
}

/// Why the module refused a well-formed command. Each is one error code of
/// `docs/COMMANDS.md`; the `Display` text is the whole error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `NOLEASE`: the node has no live lease; it must re-lease and re-register.
    NoLease,
    /// `LIMIT user` / `LIMIT ip`: a connection limit.
    Limit(LimitKind),
    /// `CONFLICT`: the connection id is registered for another user or node.
    Conflict,
    /// `TOOMANYROOMS`: the connection is already in the maximum number of rooms.
    TooManyRooms,
    /// `FORBIDDEN`: another user's personal room.
    Forbidden,
    /// `NOTMEMBER`: a publish `FROM` a connection that is not in the room.
    NotMember,
    /// `RATELIMITED retry_ms`: a publish over its rate limit.
    RateLimited {
        /// Milliseconds until a publish would be allowed (at least 1).
        retry_ms: u64,
    },
}

impl Refusal {
    /// The error code, the reply's first word, e.g. `"NOLEASE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoLease => "NOLEASE",
            Refusal::Limit(_) => "LIMIT",
            Refusal::Conflict => "CONFLICT",
            Refusal::TooManyRooms => "TOOMANYROOMS",
            Refusal::Forbidden => "FORBIDDEN",
            Refusal::NotMember => "NOTMEMBER",
            Refusal::RateLimited { .. } => "RATELIMITED",
        }
    }

    /// Reads a whole error reply as the gateway receives it (e.g.
    /// `"RATELIMITED 250"`, `"LIMIT user"`, `"NOLEASE node has no live
    /// lease"`): the refusal it names, or `None` for any other error. Only
    /// the code and, for `LIMIT` and `RATELIMITED`, the word after it count.
    pub fn parse(reply: &str) -> Option<Refusal> {
        let mut words = reply.split_whitespace();
        let refusal = match words.next()? {
            "NOLEASE" => Refusal::NoLease,
            "LIMIT" => match words.next()? {
                "user" => Refusal::Limit(LimitKind::User),
                "ip" => Refusal::Limit(LimitKind::Ip),
                _ => return None,
            },
            "CONFLICT" => Refusal::Conflict,
            "TOOMANYROOMS" => Refusal::TooManyRooms,
            "FORBIDDEN" => Refusal::Forbidden,
            "NOTMEMBER" => Refusal::NotMember,
            "RATELIMITED" => Refusal::RateLimited {
                retry_ms: words.next()?.parse().ok()?,
            },
            _ => return None,
        };
        Some(refusal)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoLease => f.write_str("NOLEASE node has no live lease"),
            Refusal::Limit(kind) => write!(f, "LIMIT {}", kind.as_str()),
            Refusal::Conflict => {
                f.write_str("CONFLICT connection id belongs to another user or node")
            }
            Refusal::TooManyRooms => f.write_str("TOOMANYROOMS connection is in too many rooms"),
            Refusal::Forbidden => f.write_str("FORBIDDEN personal room of another user"),
            Refusal::NotMember => f.write_str("NOTMEMBER connection is not a member of the room"),
            Refusal::RateLimited { retry_ms } => write!(f, "RATELIMITED {retry_ms}"),
        }
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every variant; the match makes a new variant fail to compile
    /// until it is listed here.
    fn every() -> Vec<Refusal> {
        let all = vec![
            Refusal::NoLease,
            Refusal::Limit(LimitKind::User),
            Refusal::Limit(LimitKind::Ip),
            Refusal::Conflict,
            Refusal::TooManyRooms,
            Refusal::Forbidden,
            Refusal::NotMember,
            Refusal::RateLimited { retry_ms: 250 },
        ];
        for r in &all {
            match r {
                Refusal::NoLease
                | Refusal::Limit(LimitKind::User | LimitKind::Ip)
                | Refusal::Conflict
                | Refusal::TooManyRooms
                | Refusal::Forbidden
                | Refusal::NotMember
                | Refusal::RateLimited { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_refusal_reads_back_from_its_reply() {
        for r in every() {
            let text = r.to_string();
            assert_eq!(Refusal::parse(&text), Some(r), "{text}");
            assert!(text.starts_with(r.as_str()), "{text}");
        }
    }

    #[test]
    fn replies_are_exactly_what_the_module_sent_before() {
        let texts: Vec<String> = every().iter().map(Refusal::to_string).collect();
        assert_eq!(
            texts,
            [
                "NOLEASE node has no live lease",
                "LIMIT user",
                "LIMIT ip",
                "CONFLICT connection id belongs to another user or node",
                "TOOMANYROOMS connection is in too many rooms",
                "FORBIDDEN personal room of another user",
                "NOTMEMBER connection is not a member of the room",
                "RATELIMITED 250",
            ]
        );
    }

    #[test]
    fn other_errors_are_not_refusals() {
        for text in [
            "",
            "ERR invalid room name",
            "LIMIT",
            "LIMIT nobody",
            "RATELIMITED",
            "RATELIMITED soon",
            "WRONGTYPE rate-limit key does not hold an integer arrival time",
            "noLease",
        ] {
            assert_eq!(Refusal::parse(text), None, "{text}");
        }
        assert_eq!(Refusal::parse("NOLEASE"), Some(Refusal::NoLease));
    }
}
