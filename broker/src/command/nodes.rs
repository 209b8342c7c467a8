//! Gateway node leases: `NODE.LEASE`, `NODE.RELEASE`, `NODES`, and what a
//! node reads back to reconcile: `NODE.CONNS`.

use super::args::{number, text, unknown, Arg, Args, ParseError};
use super::{no_args, Command, Departure, Keys, Linger};
use crate::names;

/// Longest lease a node may ask for (one day): a typo must not keep a dead
/// node's connections in presence for years.
pub const MAX_LEASE_MS: u64 = 86_400_000;

/// `BROKER.NODE.LEASE node ttl_ms [DEADLINE ms] [CHANNEL channel]
/// [INCARNATION id] [REGISTERING]`: takes or renews a node lease. `CHANNEL`
/// names the sharded Pub/Sub channel the node reads on this shard of a
/// cluster; a lease without it keeps the channel named before.
/// `INCARNATION` names the gateway process holding the node id: a lease
/// with another incarnation than the one on record ends the old one's
/// connections first (a restart under the same node id). `REGISTERING`
/// says the node is still registering its connections again, so the
/// after-load reconciliation waits for a lease without it. Replicated with
/// its `DEADLINE` ([`NodeLease::replicated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease {
    /// The node.
    pub node: String,
    /// Lease length, 1 ms to [`MAX_LEASE_MS`].
    pub lease_ms: u64,
    /// When the lease runs out, ms since the Unix epoch (`DEADLINE`; one
    /// lease from "now" without it).
    pub deadline: Option<u64>,
    /// The node's sharded channel on this shard (`CHANNEL`).
    pub channel: Option<String>,
    /// The gateway process holding the node id (`INCARNATION`).
    pub incarnation: Option<String>,
    /// The node is registering its connections again (`REGISTERING`).
    pub registering: bool,
}

impl NodeLease {
    /// A lease of `node` for `lease_ms`.
    pub fn new(node: &str, lease_ms: u64) -> NodeLease {
        NodeLease {
            node: node.to_string(),
            lease_ms,
            deadline: None,
            channel: None,
            incarnation: None,
            registering: false,
        }
    }

    /// The deadline when the command runs at `now_ms`.
    pub fn deadline_or(&self, now_ms: u64) -> u64 {
        self.deadline
            .unwrap_or_else(|| now_ms.saturating_add(self.lease_ms))
    }

    /// What replicas receive when it ran at `now_ms`: the deadline.
    pub fn replicated(&self, now_ms: u64) -> NodeLease {
        NodeLease {
            deadline: Some(self.deadline_or(now_ms)),
            ..self.clone()
        }
    }
}

impl NodeLease {
    /// The same lease naming the node's sharded channel on this shard
    /// (`CHANNEL channel`).
    pub fn channel(self, channel: &str) -> NodeLease {
        NodeLease {
            channel: Some(channel.to_string()),
            ..self
        }
    }

    /// The same lease from the gateway process `id` (`INCARNATION id`).
    pub fn incarnation(self, id: &str) -> NodeLease {
        NodeLease {
            incarnation: Some(id.to_string()),
            ..self
        }
    }

    /// The same lease marked as sent while the node registers its
    /// connections again (`REGISTERING`).
    pub fn registering(self, registering: bool) -> NodeLease {
        NodeLease {
            registering,
            ..self
        }
    }

    /// The same lease running out at `ms`, ms since the Unix epoch
    /// (`DEADLINE ms`).
    pub fn deadline(self, ms: u64) -> NodeLease {
        NodeLease {
            deadline: Some(ms),
            ..self
        }
    }
}

impl Command for NodeLease {
    const NAME: &'static str = "BROKER.NODE.LEASE";
    const KEYS: Keys = Keys::NONE;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<NodeLease, ParseError> {
        let mut args = Args::new(args);
        let node = args.name("node", names::validate_node)?;
        let lease_ms = args.u64("lease ttl_ms")?;
        if lease_ms == 0 || lease_ms > MAX_LEASE_MS {
            return Err(ParseError::Integer("lease ttl_ms"));
        }
        let mut lease = NodeLease::new(&node, lease_ms);
        while !args.is_empty() {
            match args.keyword()?.as_str() {
                "DEADLINE" => lease.deadline = Some(args.u64("deadline")?),
                "CHANNEL" => {
                    let name = args.str("channel")?;
                    if !names::is_node_channel(&node, name) {
                        return Err(ParseError::Invalid(format!(
                            "channel: expected {}:{{<digits>}}",
                            names::node_channel(&node)
                        )));
                    }
                    lease.channel = Some(name.to_string());
                }
                "INCARNATION" => {
                    lease.incarnation = Some(args.name("incarnation", names::validate_node)?);
                }
                "REGISTERING" => lease.registering = true,
                other => return Err(unknown(other)),
            }
        }
        Ok(lease)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![text(&self.node), number(self.lease_ms)];
        if let Some(deadline) = self.deadline {
            out.extend([text("DEADLINE"), number(deadline)]);
        }
        if let Some(channel) = &self.channel {
            out.extend([text("CHANNEL"), text(channel)]);
        }
        if let Some(incarnation) = &self.incarnation {
            out.extend([text("INCARNATION"), text(incarnation)]);
        }
        if self.registering {
            out.push(text("REGISTERING"));
        }
        out
    }
}

/// `BROKER.NODE.RELEASE node [GRACE ms]`: drops a node and everything it
/// holds; with `GRACE`, its users linger in their rooms for `ms` (a restart
/// whose clients come back in time makes no leave/join pair). Replicated
/// with `UNTIL` ([`NodeRelease::replicated`]); the module's timer
/// replicates an expired lease as a plain release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRelease {
    /// The node.
    pub node: String,
    /// How long its users linger, if they do.
    pub linger: Option<Linger>,
    /// The reason of the lifecycle events it causes (`REASON r`); the
    /// module's default when `None`.
    pub reason: Option<String>,
}

impl NodeRelease {
    /// A release with no grace.
    pub fn new(node: &str) -> NodeRelease {
        NodeRelease {
            node: node.to_string(),
            linger: None,
            reason: None,
        }
    }

    /// What replicas receive when it ran at `now_ms`: `GRACE` as `UNTIL`.
    pub fn replicated(&self, now_ms: u64) -> NodeRelease {
        NodeRelease {
            linger: self.linger.map(|l| l.at(now_ms)),
            ..self.clone()
        }
    }
}

impl NodeRelease {
    /// The same release with the node's users lingering in their rooms for
    /// `ms` (`GRACE ms`).
    pub fn grace(self, ms: u64) -> NodeRelease {
        NodeRelease {
            linger: Some(Linger::Grace(ms)),
            ..self
        }
    }

    /// The same command with `reason` for the lifecycle events it causes
    /// (`REASON r`, `[a-z_]{1,32}`).
    pub fn reason(self, reason: &str) -> NodeRelease {
        NodeRelease {
            reason: Some(reason.to_string()),
            ..self
        }
    }
}

impl Command for NodeRelease {
    const NAME: &'static str = "BROKER.NODE.RELEASE";
    const KEYS: Keys = Keys::NONE;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<NodeRelease, ParseError> {
        let mut args = Args::new(args);
        let node = args.name("node", names::validate_node)?;
        let Departure { linger, reason } = Departure::parse(&mut args)?;
        Ok(NodeRelease {
            node,
            linger,
            reason,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        let mut out = vec![text(&self.node)];
        Departure::write(self.linger, self.reason.as_deref(), &mut out);
        out
    }
}

/// `BROKER.NODE.CONNS node`: every connection this Redis (this shard of a
/// cluster) holds for `node`, with its user, whether it was opened here and
/// its rooms here — what the node compares with what it really serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConns {
    /// The node.
    pub node: String,
}

impl NodeConns {
    /// The listing of `node`.
    pub fn new(node: &str) -> NodeConns {
        NodeConns {
            node: node.to_string(),
        }
    }
}

impl Command for NodeConns {
    const NAME: &'static str = "BROKER.NODE.CONNS";
    const KEYS: Keys = Keys::NONE;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<NodeConns, ParseError> {
        let mut args = Args::new(args);
        let node = args.name("node", names::validate_node)?;
        args.done()?;
        Ok(NodeConns { node })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.node)]
    }
}

/// `BROKER.NODES`: live nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nodes;

impl Command for Nodes {
    const NAME: &'static str = "BROKER.NODES";
    const KEYS: Keys = Keys::NONE;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Nodes, ParseError> {
        no_args(args).map(|()| Nodes)
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        Vec::new()
    }
}

/// `BROKER.EVENTS.STREAM`: the name of the lifecycle stream this server
/// writes (`broker:events`, or on a cluster this master's
/// `broker:events:{<tag>}`); nil while it writes none. Keyless: send it to
/// each master to find every stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsStream;

impl Command for EventsStream {
    const NAME: &'static str = "BROKER.EVENTS.STREAM";
    const KEYS: Keys = Keys::NONE;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<EventsStream, ParseError> {
        no_args(args).map(|()| EventsStream)
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
    fn lease_replicates_its_deadline() {
        let lease = NodeLease::parse(&["n1", "5000", "CHANNEL", "broker:node:n1:{12}"]).unwrap();
        assert_eq!(lease.channel.as_deref(), Some("broker:node:n1:{12}"));
        round_trip(&lease);
        let replicated = lease.replicated(1_000);
        assert_eq!(replicated.deadline, Some(6_000));
        assert_eq!(replicated.replicated(2_000), replicated);
        round_trip(&replicated);
        for (args, reply) in [
            (
                &["n1", "0"][..],
                "ERR invalid lease ttl_ms: expected an integer in range",
            ),
            (
                &["n1", "86400001"][..],
                "ERR invalid lease ttl_ms: expected an integer in range",
            ),
            (
                &["n1", "5000", "CHANNEL", "other"][..],
                "ERR invalid channel: expected broker:node:n1:{<digits>}",
            ),
            (&["n 1", "5000"][..], "ERR invalid node id"),
        ] {
            assert_eq!(NodeLease::parse(args).unwrap_err().to_string(), reply);
        }
    }

    #[test]
    fn release_and_nodes_round_trip() {
        let release = NodeRelease::parse(&["n1", "GRACE", "100"]).unwrap();
        round_trip(&release);
        assert_eq!(release.replicated(1).linger, Some(Linger::Until(101)));
        round_trip(&NodeRelease::new("n1"));
        round_trip(&Nodes);
        assert_eq!(
            NodeRelease::parse(&["n1", "SOON"]).unwrap_err().to_string(),
            "ERR syntax error: unknown option 'SOON'"
        );
    }

    #[test]
    fn builders_write_what_parse_reads() {
        let lease = NodeLease::new("n1", 60_000)
            .channel("broker:node:n1:{7}")
            .deadline(9);
        let words: Vec<&[u8]> = vec![
            b"n1",
            b"60000",
            b"DEADLINE",
            b"9",
            b"CHANNEL",
            b"broker:node:n1:{7}",
        ];
        assert_eq!(lease.to_args(), words);
        round_trip(&lease);
        let release = NodeRelease::new("n1").grace(100);
        assert_eq!(release.linger, Some(Linger::Grace(100)));
        round_trip(&release);
    }

    #[test]
    fn incarnation_and_registering_round_trip() {
        let lease = NodeLease::new("n1", 5000)
            .incarnation("p-7f3a")
            .registering(true);
        let words: Vec<&[u8]> = vec![b"n1", b"5000", b"INCARNATION", b"p-7f3a", b"REGISTERING"];
        assert_eq!(lease.to_args(), words);
        round_trip(&lease);
        assert_eq!(lease.replicated(1).incarnation.as_deref(), Some("p-7f3a"));
        assert_eq!(
            NodeLease::parse(&["n1", "5000", "INCARNATION", "a b"])
                .unwrap_err()
                .to_string(),
            "ERR invalid node id"
        );
        round_trip(&NodeConns::new("n1"));
        assert!(NodeConns::parse(&["n1", "x"]).is_err());
    }
}
