//! Connections and presence: `CONN.OPEN`, `CONN.CLOSE`, `IP.OPEN`,
//! `IP.CLOSE`, `PRESENCE`, `USER.ROOMS`, `KICK`, `ONLINE`.

use super::args::{number, text, unknown, Arg, Args, ParseError};
use super::{no_args, Command, Departure, Keys, Linger};
use crate::names;

/// `BROKER.CONN.OPEN user conn node ip [MAXUSER n] [MAXIP n] [AT ms]`:
/// registers a connection within the limits. Replicated with its connect
/// time `AT` ([`ConnOpen::replicated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnOpen {
    /// The connection's user.
    pub user: String,
    /// The connection.
    pub conn: String,
    /// The gateway node holding it.
    pub node: String,
    /// The client address.
    pub ip: String,
    /// Refuse when the user has this many connections (`MAXUSER`).
    pub max_user: Option<u32>,
    /// Refuse when the address has this many connections (`MAXIP`).
    pub max_ip: Option<u32>,
    /// Connect time, ms since the Unix epoch (`AT`; "now" without it).
    pub at: Option<u64>,
}

impl ConnOpen {
    /// An open of `conn` with no limit.
    pub fn new(user: &str, conn: &str, node: &str, ip: &str) -> ConnOpen {
        ConnOpen {
            user: user.to_string(),
            conn: conn.to_string(),
            node: node.to_string(),
            ip: ip.to_string(),
            max_user: None,
            max_ip: None,
            at: None,
        }
    }

    /// The connect time when the command runs at `now_ms`.
    pub fn at_or(&self, now_ms: u64) -> u64 {
        self.at.unwrap_or(now_ms)
    }

    /// What replicas receive when it ran at `now_ms`: the connect time,
    /// without the limits (the master checked them).
    pub fn replicated(&self, now_ms: u64) -> ConnOpen {
        ConnOpen {
            max_user: None,
            max_ip: None,
            at: Some(self.at_or(now_ms)),
            ..self.clone()
        }
    }
}

impl ConnOpen {
    /// The same open with connect time `ms`, ms since the Unix epoch (`AT ms`).
    pub fn at(self, ms: u64) -> ConnOpen {
        ConnOpen {
            at: Some(ms),
            ..self
        }
    }

    /// The same open refused when the user has `n` connections (`MAXUSER n`).
    pub fn max_user(self, n: u32) -> ConnOpen {
        ConnOpen {
            max_user: Some(n),
            ..self
        }
    }

    /// The same open refused when the address has `n` connections (`MAXIP n`).
    pub fn max_ip(self, n: u32) -> ConnOpen {
        ConnOpen {
            max_ip: Some(n),
            ..self
        }
    }
}

impl Command for ConnOpen {
    const NAME: &'static str = "BROKER.CONN.OPEN";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<ConnOpen, ParseError> {
        let mut args = Args::new(args);
        let user = args.name("user", names::validate_user)?;
        let conn = args.name("conn", names::validate_conn)?;
        let node = args.name("node", names::validate_node)?;
        let ip = args.name("ip", names::validate_ip)?;
        let mut open = ConnOpen::new(&user, &conn, &node, &ip);
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "MAXUSER" => open.max_user = Some(args.u32("MAXUSER")?),
                "MAXIP" => open.max_ip = Some(args.u32("MAXIP")?),
                "AT" => open.at = Some(args.u64("AT")?),
                other => return Err(unknown(other)),
            }
        }
        Ok(open)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![
            text(&self.user),
            text(&self.conn),
            text(&self.node),
            text(&self.ip),
        ];
        if let Some(max) = self.max_user {
            out.extend([text("MAXUSER"), number(max)]);
        }
        if let Some(max) = self.max_ip {
            out.extend([text("MAXIP"), number(max)]);
        }
        if let Some(at) = self.at {
            out.extend([text("AT"), number(at)]);
        }
        out
    }
}

/// `BROKER.CONN.CLOSE user conn [GRACE ms]`: removes a connection and its
/// memberships; with `GRACE`, a user whose last connection it was lingers in
/// its rooms for `ms` before the leave events go out. Replicated with
/// `UNTIL` ([`ConnClose::replicated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnClose {
    /// The connection's user.
    pub user: String,
    /// The connection.
    pub conn: String,
    /// How long the user lingers, if it does.
    pub linger: Option<Linger>,
    /// The reason of the lifecycle events it causes (`REASON r`); the
    /// module's default when `None`.
    pub reason: Option<String>,
}

impl ConnClose {
    /// A close with no grace.
    pub fn new(user: &str, conn: &str) -> ConnClose {
        ConnClose {
            user: user.to_string(),
            conn: conn.to_string(),
            linger: None,
            reason: None,
        }
    }

    /// What replicas receive when it ran at `now_ms`: `GRACE` as `UNTIL`.
    pub fn replicated(&self, now_ms: u64) -> ConnClose {
        ConnClose {
            linger: self.linger.map(|l| l.at(now_ms)),
            ..self.clone()
        }
    }
}

impl ConnClose {
    /// The same close with the user lingering in its rooms for `ms` if this
    /// was its last connection (`GRACE ms`).
    pub fn grace(self, ms: u64) -> ConnClose {
        ConnClose {
            linger: Some(Linger::Grace(ms)),
            ..self
        }
    }

    /// The same command with `reason` for the lifecycle events it causes
    /// (`REASON r`, `[a-z_]{1,32}`).
    pub fn reason(self, reason: &str) -> ConnClose {
        ConnClose {
            reason: Some(reason.to_string()),
            ..self
        }
    }
}

impl Command for ConnClose {
    const NAME: &'static str = "BROKER.CONN.CLOSE";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<ConnClose, ParseError> {
        let mut args = Args::new(args);
        let user = args.name("user", names::validate_user)?;
        let conn = args.name("conn", names::validate_conn)?;
        let Departure { linger, reason } = Departure::parse(&mut args)?;
        Ok(ConnClose {
            user,
            conn,
            linger,
            reason,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![text(&self.user), text(&self.conn)];
        Departure::write(self.linger, self.reason.as_deref(), &mut out);
        out
    }
}

/// `BROKER.IP.OPEN ip user conn node [MAXIP n]`: takes a place of the
/// client address `ip` for a connection opened on another shard of a
/// cluster (where `CONN.OPEN` routes by the user, not by the address).
/// Routed by `ip`, so every connection of one address is counted on one
/// shard: the place counts like a connection opened here with that
/// address, and `MAXIP n` refuses (`LIMIT ip`) when the address already
/// has `n`. The place belongs to the connection's node: it goes with the
/// node's lease, `IP.CLOSE` or `CONN.CLOSE` of the connection here.
/// Replicated without the limit ([`IpOpen::replicated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpOpen {
    /// The client address (the routing key).
    pub ip: String,
    /// The connection's user.
    pub user: String,
    /// The connection.
    pub conn: String,
    /// The gateway node holding it.
    pub node: String,
    /// Refuse when the address has this many connections (`MAXIP`).
    pub max_ip: Option<u32>,
}

impl IpOpen {
    /// A place of `ip` for `conn`, with no limit.
    pub fn new(ip: &str, user: &str, conn: &str, node: &str) -> IpOpen {
        IpOpen {
            ip: ip.to_string(),
            user: user.to_string(),
            conn: conn.to_string(),
            node: node.to_string(),
            max_ip: None,
        }
    }

    /// The same place refused when the address has `n` connections (`MAXIP n`).
    pub fn max_ip(self, n: u32) -> IpOpen {
        IpOpen {
            max_ip: Some(n),
            ..self
        }
    }

    /// What replicas receive: the same place without the limit (the master
    /// checked it).
    pub fn replicated(&self) -> IpOpen {
        IpOpen {
            max_ip: None,
            ..self.clone()
        }
    }
}

impl Command for IpOpen {
    const NAME: &'static str = "BROKER.IP.OPEN";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<IpOpen, ParseError> {
        let mut args = Args::new(args);
        let ip = args.name("ip", names::validate_ip)?;
        let user = args.name("user", names::validate_user)?;
        let conn = args.name("conn", names::validate_conn)?;
        let node = args.name("node", names::validate_node)?;
        let mut open = IpOpen::new(&ip, &user, &conn, &node);
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "MAXIP" => open.max_ip = Some(args.u32("MAXIP")?),
                other => return Err(unknown(other)),
            }
        }
        Ok(open)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![
            text(&self.ip),
            text(&self.user),
            text(&self.conn),
            text(&self.node),
        ];
        if let Some(max) = self.max_ip {
            out.extend([text("MAXIP"), number(max)]);
        }
        out
    }
}

/// `BROKER.IP.CLOSE ip conn`: gives back the place `IP.OPEN` took for
/// `conn`. Routed by `ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpClose {
    /// The client address (the routing key).
    pub ip: String,
    /// The connection.
    pub conn: String,
}

impl IpClose {
    /// Gives back `conn`'s place of `ip`.
    pub fn new(ip: &str, conn: &str) -> IpClose {
        IpClose {
            ip: ip.to_string(),
            conn: conn.to_string(),
        }
    }
}

impl Command for IpClose {
    const NAME: &'static str = "BROKER.IP.CLOSE";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<IpClose, ParseError> {
        let mut args = Args::new(args);
        let ip = args.name("ip", names::validate_ip)?;
        let conn = args.name("conn", names::validate_conn)?;
        args.done()?;
        Ok(IpClose { ip, conn })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.ip), text(&self.conn)]
    }
}

/// Reads the single `user` argument of a read command.
fn user_only<A: AsRef<[u8]>>(args: &[A]) -> Result<String, ParseError> {
    let mut args = Args::new(args);
    let user = args.name("user", names::validate_user)?;
    args.done()?;
    Ok(user)
}

/// `BROKER.PRESENCE user`: the user's opened connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The user.
    pub user: String,
}

impl Presence {
    /// The presence of `user`.
    pub fn new(user: &str) -> Presence {
        Presence {
            user: user.to_string(),
        }
    }
}

impl Command for Presence {
    const NAME: &'static str = "BROKER.PRESENCE";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Presence, ParseError> {
        Ok(Presence {
            user: user_only(args)?,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.user)]
    }
}

/// `BROKER.USER.ROOMS user`: the rooms on this shard of each of the user's
/// connections, including connections opened on another shard. Keyless, so
/// that it can be sent to every master of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRooms {
    /// The user.
    pub user: String,
}

impl Command for UserRooms {
    const NAME: &'static str = "BROKER.USER.ROOMS";
    const KEYS: Keys = Keys::NONE;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<UserRooms, ParseError> {
        Ok(UserRooms {
            user: user_only(args)?,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.user)]
    }
}

/// `BROKER.KICK user [reason]`: tells the nodes holding the user's
/// connections to close them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    /// The user.
    pub user: String,
    /// The close reason the clients see ([`Kick::reason`] without one).
    pub reason: Option<String>,
}

impl Kick {
    /// Kicks `user` with the default reason.
    pub fn new(user: &str) -> Kick {
        Kick {
            user: user.to_string(),
            reason: None,
        }
    }

    /// The same kick with the close reason `reason`.
    pub fn with_reason(self, reason: &str) -> Kick {
        Kick {
            reason: Some(reason.to_string()),
            ..self
        }
    }
}

impl Kick {
    /// The close reason: the one given, or `kicked`.
    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or("kicked")
    }
}

impl Command for Kick {
    const NAME: &'static str = "BROKER.KICK";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Kick, ParseError> {
        let mut args = Args::new(args);
        let user = args.name("user", names::validate_user)?;
        let reason = if args.is_empty() {
            None
        } else {
            Some(args.string("reason")?)
        };
        args.done()?;
        Ok(Kick { user, reason })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![text(&self.user)];
        if let Some(reason) = &self.reason {
            out.push(text(reason));
        }
        out
    }
}

/// `BROKER.ONLINE`: users and connections, O(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Online;

impl Command for Online {
    const NAME: &'static str = "BROKER.ONLINE";
    const KEYS: Keys = Keys::NONE;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Online, ParseError> {
        no_args(args).map(|()| Online)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::round_trip;
    use super::*;

    #[test]
    fn conn_open_replicates_its_time_and_not_its_limits() {
        let open = ConnOpen::parse(&["alice", "c1", "n1", "1.2.3.4", "maxuser", "5", "MAXIP", "9"])
            .unwrap();
        assert_eq!(
            (open.max_user, open.max_ip, open.at),
            (Some(5), Some(9), None)
        );
        round_trip(&open);
        let replicated = open.replicated(77);
        assert_eq!(
            replicated,
            ConnOpen {
                at: Some(77),
                ..ConnOpen::new("alice", "c1", "n1", "1.2.3.4")
            }
        );
        assert_eq!(replicated.replicated(88), replicated);
        round_trip(&replicated);
        assert_eq!(
            ConnOpen::parse(&["alice", "c1", "n1", "bad ip"])
                .unwrap_err()
                .to_string(),
            "ERR invalid ip"
        );
        assert_eq!(
            ConnOpen::parse(&["alice", "c1", "n1", "ip", "MAXUSER", "4294967296"])
                .unwrap_err()
                .to_string(),
            "ERR invalid MAXUSER: expected an integer in range"
        );
    }

    #[test]
    fn conn_close_and_reads_round_trip() {
        let close = ConnClose::parse(&["alice", "c1", "GRACE", "10"]).unwrap();
        round_trip(&close);
        assert_eq!(close.replicated(5).linger, Some(Linger::Until(15)));
        round_trip(&ConnClose::new("alice", "c1"));
        round_trip(&Presence {
            user: "alice".into(),
        });
        round_trip(&UserRooms {
            user: "alice".into(),
        });
        let kick = Kick::parse(&["alice"]).unwrap();
        assert_eq!(kick.reason(), "kicked");
        round_trip(&kick);
        round_trip(&Kick {
            user: "alice".into(),
            reason: Some("bye now".into()),
        });
        assert_eq!(
            Kick::parse(&["alice", "a", "b"]).unwrap_err().to_string(),
            "ERR wrong number of arguments: unexpected argument 'b'"
        );
        round_trip(&Online);
        assert_eq!(
            Online::parse(&["x"]).unwrap_err().to_string(),
            "ERR wrong number of arguments: unexpected argument 'x'"
        );
        assert_eq!(
            Presence::parse(&[b"\xff".as_slice()])
                .unwrap_err()
                .to_string(),
            "ERR invalid user: not UTF-8"
        );
    }

    #[test]
    fn ip_open_and_close_round_trip_and_replicate_without_the_limit() {
        let open = IpOpen::parse(&["2001:db8::/64", "alice", "c1", "n1", "maxip", "3"]).unwrap();
        assert_eq!(
            open,
            IpOpen::new("2001:db8::/64", "alice", "c1", "n1").max_ip(3)
        );
        round_trip(&open);
        assert_eq!(
            open.replicated(),
            IpOpen::new("2001:db8::/64", "alice", "c1", "n1")
        );
        round_trip(&open.replicated());
        assert_eq!(
            IpOpen::parse(&["1.2.3.4", "alice", "c1"])
                .unwrap_err()
                .to_string(),
            "ERR wrong number of arguments: missing node"
        );
        assert_eq!(
            IpOpen::parse(&["1.2.3.4", "alice", "c1", "n1", "MAX", "3"])
                .unwrap_err()
                .to_string(),
            "ERR syntax error: unknown option 'MAX'"
        );
        let close = IpClose::parse(&["1.2.3.4", "c1"]).unwrap();
        assert_eq!(close, IpClose::new("1.2.3.4", "c1"));
        round_trip(&close);
        assert!(IpClose::parse(&["1.2.3.4", "c1", "x"]).is_err());
        assert_eq!(
            IpClose::parse(&["bad ip", "c1"]).unwrap_err().to_string(),
            "ERR invalid ip"
        );
    }

    #[test]
    fn builders_write_what_parse_reads() {
        let open = ConnOpen::new("a", "c1", "n1", "::1")
            .at(5)
            .max_user(2)
            .max_ip(3);
        let words: Vec<&[u8]> = vec![
            b"a", b"c1", b"n1", b"::1", b"MAXUSER", b"2", b"MAXIP", b"3", b"AT", b"5",
        ];
        assert_eq!(open.to_args(), words);
        round_trip(&open);
        let close = ConnClose::new("a", "c1").grace(10);
        assert_eq!(close.linger, Some(Linger::Grace(10)));
        round_trip(&close);
        round_trip(&Presence::new("a"));
        let words: Vec<&[u8]> = vec![b"bob"];
        assert_eq!(Kick::new("bob").to_args(), words);
        let kick = Kick::new("bob").with_reason("banned");
        assert_eq!(kick.reason(), "banned");
        round_trip(&kick);
    }
}
