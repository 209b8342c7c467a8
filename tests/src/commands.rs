//! The `BROKER.*` commands the tests send: the broker's own command types
//! ([`broker::command`], the ones the module parses and the gateway sends),
//! re-exported, and [`Command`], a thin adapter that turns any of them into
//! a `redis::Cmd` and a line of text for failure messages.
//!
//! [`crate::World`] and the fixture helpers ([`crate::lease`],
//! [`crate::open`], [`crate::publish_str`], [`crate::populate`], ...) run these, so
//! test bodies say `Join::new(room, user, conn, node).with_presence()`
//! instead of a positional array. Options go out in the order
//! [`broker::command::Command::to_args`] writes them, the gateway's order.
//!
//! Tests about argument parsing and error texts (`bad_input.rs`,
//! `module_fuzz.rs`), and the few that send a command without an option the
//! types always write (a publish without `FORMAT`), keep sending raw
//! arrays with [`crate::call`]: the raw arguments are what they test.

use redis::{Connection, RedisResult, Value};

pub use broker::command::{
    ApplyLeave, Broadcast, ConnClose, ConnOpen, History, IpClose, IpOpen, Join, Kick, Leave,
    NodeConns, NodeLease, NodeRelease, Nodes, Online, Presence, Publish, RoomCount, RoomMembers,
    Throttle, UserRooms,
};
pub use broker::payload::Format;

/// A command the module answers, as the tests run it: every
/// [`broker::command::Command`] is one.
pub trait Command {
    /// The command name, e.g. `BROKER.JOIN`.
    fn name(&self) -> &'static str;

    /// The arguments after the name, as owned bytes.
    fn args(&self) -> Vec<Vec<u8>>;

    /// The command as a `redis::Cmd`, e.g. for a pipeline
    /// (`pipe.add_command(publish.to_cmd())`).
    fn to_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd(self.name());
        for a in self.args() {
            cmd.arg(a);
        }
        cmd
    }

    /// Name and arguments as text, for failure messages.
    fn describe(&self) -> String {
        let mut out = self.name().to_string();
        for a in self.args() {
            out.push(' ');
            out.push_str(&String::from_utf8_lossy(&a));
        }
        out
    }
}

impl<C: broker::command::Command> Command for C {
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn args(&self) -> Vec<Vec<u8>> {
        broker::command::Command::to_args(self)
            .into_iter()
            .map(|arg| arg.into_owned())
            .collect()
    }
}

/// Runs `command` on `con` and returns the reply (errors as `Err`).
pub fn send(con: &mut Connection, command: &impl Command) -> RedisResult<Value> {
    command.to_cmd().query(con)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_its_name_and_the_broker_types_arguments() {
        let join = Join::new("chat:a", "alice", "c1", "n1")
            .with_presence()
            .max_rooms(2);
        assert_eq!(
            join.describe(),
            "BROKER.JOIN chat:a alice c1 n1 PRESENCE MAXROOMS 2"
        );
        assert_eq!(
            Publish::string("chat:a", "ev", "hi")
                .from_conn("c1")
                .describe(),
            "BROKER.PUBLISH chat:a ev hi FORMAT string FROM c1"
        );
        assert_eq!(Kick::new("bob").describe(), "BROKER.KICK bob");
        assert_eq!(Online.describe(), "BROKER.ONLINE");
        let packed = Publish::new("chat:a", "ev", b"\x92\x01\x02")
            .to_cmd()
            .get_packed_command();
        assert!(
            packed.windows(3).any(|w| w == b"\x92\x01\x02"),
            "payload bytes go out as they are"
        );
    }
}
