//! Namespace policy, decided without I/O: may this user join, read or
//! publish to this room, given the configuration and the token's claims
//! (`docs/PROTOCOL.md` §7). Each decision is an [`ErrorCode`] and the
//! message of the `err` frame that refuses it, or the room's namespace
//! policy when allowed.
//!
//! What depends on the connection's state (is it a member, how many rooms
//! is it in) is the session's; what the module decides (limits, rates) is
//! the module's.

use broker::names;
use broker::protocol::ErrorCode;

use crate::auth::Claims;
use crate::config::{Config, JoinPolicy, Namespace, PublishPolicy};

/// A refusal by the namespace policy: the `err` frame's code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    /// The error code.
    pub code: ErrorCode,
    /// The message.
    pub msg: &'static str,
}

impl Denied {
    const fn new(code: ErrorCode, msg: &'static str) -> Denied {
        Denied { code, msg }
    }
}

const INVALID_ROOM: Denied = Denied::new(ErrorCode::InvalidRoom, "invalid room name");

/// Whether `user` (holding `claims`) may join `room`: a valid room name; in
/// the personal namespace only the owner's own room; elsewhere the
/// namespace's join policy (anyone, holders of one of its roles, or rooms
/// the token's `rooms` claim lists).
pub fn may_join(
    config: &Config,
    user: &str,
    claims: &Claims,
    room: &str,
) -> Result<Namespace, Denied> {
    let (ns_name, _) = names::split_room(room).map_err(|_| INVALID_ROOM)?;
    if let Some(owner) = names::personal_room_owner(room) {
        if owner != user {
            return Err(Denied::new(
                ErrorCode::Forbidden,
                "another user's personal room",
            ));
        }
        return Ok(config.namespace(ns_name));
    }
    let ns = config.namespace(ns_name);
    let allowed = match ns.join {
        JoinPolicy::Public => true,
        JoinPolicy::Roles => claims.roles.iter().any(|r| ns.roles.contains(r)),
        JoinPolicy::Claim => claims
            .rooms
            .iter()
            .any(|p| names::room_matches_pattern(room, p)),
    };
    if !allowed {
        return Err(Denied::new(
            ErrorCode::Forbidden,
            "not allowed to join this room",
        ));
    }
    Ok(ns)
}

/// Whether `user` may read `room`'s history: those who may join it, and
/// a connection that is a `member` of it (the backend may have put it
/// there, `BROKER.USER.JOIN`, whatever the join policy says).
pub fn may_read_history(
    config: &Config,
    user: &str,
    claims: &Claims,
    room: &str,
    member: bool,
) -> Result<Namespace, Denied> {
    if member {
        let (ns_name, _) = names::split_room(room).map_err(|_| INVALID_ROOM)?;
        return Ok(config.namespace(ns_name));
    }
    may_join(config, user, claims, room)
}

/// Whether `user` may read `room`'s presence: those who may read its
/// history ([`may_read_history`]), when the namespace has presence on.
pub fn may_read_presence(
    config: &Config,
    user: &str,
    claims: &Claims,
    room: &str,
    member: bool,
) -> Result<Namespace, Denied> {
    let ns = may_read_history(config, user, claims, room, member)?;
    if !ns.presence {
        return Err(Denied::new(
            ErrorCode::Forbidden,
            "presence is off in this namespace",
        ));
    }
    Ok(ns)
}

/// Whether a connection may leave `room`: any room but its personal one.
pub fn may_leave(room: &str) -> Result<(), Denied> {
    if names::personal_room_owner(room).is_some() {
        return Err(Denied::new(
            ErrorCode::Forbidden,
            "the personal room cannot be left",
        ));
    }
    Ok(())
}

/// Whether a client holding `claims` may publish `payload_len` bytes to
/// `room`: a valid room outside the personal namespace, a namespace whose
/// publish policy lets clients (or their roles) publish, a payload within
/// its `max_payload`. Returns the namespace's name and policy.
pub fn may_publish<'r>(
    config: &Config,
    claims: &Claims,
    room: &'r str,
    payload_len: usize,
) -> Result<(&'r str, Namespace), Denied> {
    let (ns_name, _) = names::split_room(room).map_err(|_| INVALID_ROOM)?;
    if names::personal_room_owner(room).is_some() {
        return Err(Denied::new(
            ErrorCode::Forbidden,
            "clients may not publish to personal rooms",
        ));
    }
    let ns = config.namespace(ns_name);
    match ns.publish {
        PublishPolicy::Server => {
            return Err(Denied::new(
                ErrorCode::Forbidden,
                "only the server publishes here",
            ));
        }
        PublishPolicy::Roles if !claims.roles.iter().any(|r| ns.roles.contains(r)) => {
            return Err(Denied::new(
                ErrorCode::Forbidden,
                "your roles may not publish here",
            ));
        }
        _ => {}
    }
    if payload_len > ns.max_payload {
        return Err(Denied::new(ErrorCode::PayloadTooLarge, "payload too large"));
    }
    Ok((ns_name, ns))
}

/// Whether the members of `room` get `presence` join/leave events: when its
/// namespace has `join_leave` on, and never in a personal room (nobody else
/// is ever there).
pub fn presence_events(config: &Config, room: &str) -> bool {
    let (ns_name, _) = names::split_room(room).unwrap_or(("", ""));
    config.namespace(ns_name).join_leave && names::personal_room_owner(room).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(toml: &str) -> Config {
        Config::from_sources(Some(toml), &[]).expect("a valid configuration")
    }

    fn policies() -> Config {
        config(
            r#"
            [auth]
            secret = "s"
            [namespaces.staff]
            join = "roles"
            roles = ["admin"]
            [namespaces.game]
            join = "claim"
            presence = false
            [namespaces.news]
            publish = "server"
            join_leave = false
            [namespaces.ops]
            publish = "roles"
            roles = ["ops"]
            max_payload = 10
            "#,
        )
    }

    fn claims(roles: &[&str], rooms: &[&str]) -> Claims {
        Claims {
            sub: "alice".into(),
            exp: 0,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn denied(result: Result<impl std::fmt::Debug, Denied>) -> (ErrorCode, &'static str) {
        let err = result.expect_err("denied");
        (err.code, err.msg)
    }

    #[test]
    fn join_follows_the_namespace_policy() {
        let c = policies();
        let nobody = claims(&[], &[]);
        assert!(
            may_join(&c, "alice", &nobody, "chat:lobby").is_ok(),
            "public by default"
        );
        assert_eq!(
            denied(may_join(&c, "alice", &nobody, "staff:room")),
            (ErrorCode::Forbidden, "not allowed to join this room")
        );
        assert!(may_join(&c, "alice", &claims(&["admin"], &[]), "staff:room").is_ok());
        assert!(may_join(&c, "alice", &claims(&["ops"], &[]), "staff:room").is_err());
        let game = claims(&[], &["game:table-*", "game:lobby"]);
        assert!(may_join(&c, "alice", &game, "game:table-7").is_ok());
        assert!(may_join(&c, "alice", &game, "game:lobby").is_ok());
        assert!(may_join(&c, "alice", &game, "game:lobby2").is_err());
    }

    #[test]
    fn invalid_rooms_and_personal_rooms() {
        let c = policies();
        let nobody = claims(&[], &[]);
        assert_eq!(
            denied(may_join(&c, "alice", &nobody, "no-namespace")),
            (ErrorCode::InvalidRoom, "invalid room name")
        );
        assert!(may_join(&c, "alice", &nobody, "user:alice").is_ok());
        assert_eq!(
            denied(may_join(&c, "alice", &nobody, "user:bob")),
            (ErrorCode::Forbidden, "another user's personal room")
        );
        assert_eq!(
            denied(may_leave("user:alice")),
            (ErrorCode::Forbidden, "the personal room cannot be left")
        );
        assert!(may_leave("chat:lobby").is_ok());
    }

    #[test]
    fn reading_needs_joining_and_presence_on() {
        let c = policies();
        let nobody = claims(&[], &[]);
        assert!(may_read_history(&c, "alice", &nobody, "chat:lobby", false).is_ok());
        assert!(may_read_history(&c, "alice", &nobody, "staff:room", false).is_err());
        assert!(
            may_read_history(&c, "alice", &nobody, "staff:room", true).is_ok(),
            "a member the backend put in the room reads it"
        );
        assert!(may_read_presence(&c, "alice", &nobody, "chat:lobby", false).is_ok());
        let game = claims(&[], &["game:*"]);
        assert_eq!(
            denied(may_read_presence(&c, "alice", &game, "game:x", false)),
            (ErrorCode::Forbidden, "presence is off in this namespace")
        );
        assert_eq!(
            denied(may_read_presence(&c, "alice", &nobody, "game:x", false)),
            (ErrorCode::Forbidden, "not allowed to join this room"),
            "joining is checked first"
        );
    }

    #[test]
    fn publish_follows_the_namespace_policy() {
        let c = policies();
        let nobody = claims(&[], &[]);
        let (ns, policy) = may_publish(&c, &nobody, "chat:lobby", 100).expect("members publish");
        assert_eq!(ns, "chat");
        assert_eq!(policy.max_payload, 65_536);
        assert_eq!(
            denied(may_publish(&c, &nobody, "lobby", 1)),
            (ErrorCode::InvalidRoom, "invalid room name")
        );
        assert_eq!(
            denied(may_publish(&c, &nobody, "user:alice", 1)),
            (
                ErrorCode::Forbidden,
                "clients may not publish to personal rooms"
            )
        );
        assert_eq!(
            denied(may_publish(&c, &claims(&["admin"], &[]), "news:today", 1)),
            (ErrorCode::Forbidden, "only the server publishes here")
        );
        assert_eq!(
            denied(may_publish(&c, &nobody, "ops:alerts", 1)),
            (ErrorCode::Forbidden, "your roles may not publish here")
        );
        assert!(may_publish(&c, &claims(&["ops"], &[]), "ops:alerts", 10).is_ok());
        assert_eq!(
            denied(may_publish(&c, &claims(&["ops"], &[]), "ops:alerts", 11)),
            (ErrorCode::PayloadTooLarge, "payload too large")
        );
    }

    #[test]
    fn presence_events_are_off_in_personal_rooms_and_where_configured() {
        let c = policies();
        assert!(presence_events(&c, "chat:lobby"));
        assert!(!presence_events(&c, "news:today"));
        assert!(!presence_events(&c, "user:alice"));
    }
}
