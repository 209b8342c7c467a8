//! Memberships decided by the backend: `BROKER.USER.JOIN` and
//! `BROKER.USER.LEAVE` (contract section 7). Routed by the user, whose
//! shard knows every live connection of the user; the module tells each of
//! their nodes, and each node joins or leaves its connections as if they
//! had asked (on the room's own shard), then tells the client (`joined` /
//! `left`).

use super::args::{text, Arg, Args, ParseError};
use super::{Command, Keys};
use crate::names;

/// The arguments both commands take: `user room`. A user's own personal
/// room is refused (every connection is in it from the start and stays);
/// so is another user's.
fn user_and_room<A: AsRef<[u8]>>(args: &[A]) -> Result<(String, String), ParseError> {
    let mut args = Args::new(args);
    let user = args.name("user", names::validate_user)?;
    let room = args.name("room", names::validate_room)?;
    args.done()?;
    if names::personal_room_owner(&room).is_some() {
        return Err(ParseError::Invalid(
            "room: personal rooms are not joined or left".into(),
        ));
    }
    Ok((user, room))
}

/// `BROKER.USER.JOIN user room`: puts every live connection of `user`
/// into `room`; reply: the number of connections told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserJoin {
    /// The user (the routing key).
    pub user: String,
    /// The room.
    pub room: String,
}

impl UserJoin {
    /// Joins `user`'s connections to `room`.
    pub fn new(user: &str, room: &str) -> UserJoin {
        UserJoin {
            user: user.to_string(),
            room: room.to_string(),
        }
    }
}

impl Command for UserJoin {
    const NAME: &'static str = "BROKER.USER.JOIN";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<UserJoin, ParseError> {
        let (user, room) = user_and_room(args)?;
        Ok(UserJoin { user, room })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.user), text(&self.room)]
    }
}

/// `BROKER.USER.LEAVE user room`: takes every live connection of `user`
/// out of `room` (lifecycle `reason` `server`); reply: the number of
/// connections told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLeave {
    /// The user (the routing key).
    pub user: String,
    /// The room.
    pub room: String,
}

impl UserLeave {
    /// Takes `user`'s connections out of `room`.
    pub fn new(user: &str, room: &str) -> UserLeave {
        UserLeave {
            user: user.to_string(),
            room: room.to_string(),
        }
    }
}

impl Command for UserLeave {
    const NAME: &'static str = "BROKER.USER.LEAVE";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<UserLeave, ParseError> {
        let (user, room) = user_and_room(args)?;
        Ok(UserLeave { user, room })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.user), text(&self.room)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::round_trip;
    use super::*;

    #[test]
    fn user_join_and_leave_round_trip_and_refuse_personal_rooms() {
        round_trip(&UserJoin::new("alice", "support:t-1"));
        round_trip(&UserLeave::new("alice", "support:t-1"));
        assert_eq!(
            UserJoin::parse(&["alice", "user:alice"])
                .unwrap_err()
                .to_string(),
            "ERR invalid room: personal rooms are not joined or left"
        );
        assert!(UserLeave::parse(&["alice", "nocolon"]).is_err());
        assert!(UserJoin::parse(&["alice"]).is_err());
        assert!(UserJoin::parse(&["alice", "chat:x", "extra"]).is_err());
    }
}
