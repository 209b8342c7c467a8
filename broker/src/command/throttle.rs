//! `THROTTLE`: GCRA rate limiting with redis-cell's reply, and the `SET`
//! it replicates as (the result of the time-dependent decision, so a
//! replica stores what the master stored instead of deciding again).

use super::args::{number, text, Arg, Args, ParseError};
use super::{Command, Keys};
use crate::gcra::Rate;

/// `BROKER.THROTTLE key max_burst count period [quantity]`: one GCRA
/// decision on `key`, redis-cell's `CL.THROTTLE` figure for figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// The key holding the arrival time (any bytes).
    pub key: Vec<u8>,
    /// The limit (`max_burst` as redis-cell counts it).
    pub rate: Rate,
    /// Units this call takes (1 without it).
    pub quantity: i64,
}

impl Throttle {
    /// What replicas receive when the decision stored `tat_ns` until
    /// `expire_at_ms`.
    pub fn replicated(&self, tat_ns: i64, expire_at_ms: u64) -> SetArrival {
        SetArrival {
            key: self.key.clone(),
            tat_ns,
            expire_at_ms,
        }
    }
}

impl Throttle {
    /// One unit on `key` of a limit of `count` per `period_s` with
    /// `max_burst` (redis-cell's figures).
    pub fn new(key: impl AsRef<[u8]>, max_burst: i64, count: i64, period_s: i64) -> Throttle {
        Throttle {
            key: key.as_ref().to_vec(),
            rate: Rate {
                max_burst,
                count,
                period_s,
            },
            quantity: 1,
        }
    }

    /// The same decision taking `quantity` units.
    pub fn quantity(self, quantity: i64) -> Throttle {
        Throttle { quantity, ..self }
    }
}

impl Command for Throttle {
    const NAME: &'static str = "BROKER.THROTTLE";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Throttle, ParseError> {
        let mut args = Args::new(args);
        let key = args.bytes("key")?.to_vec();
        let rate = Rate {
            max_burst: args.i64("max_burst")?,
            count: args.i64("count")?,
            period_s: args.i64("period")?,
        };
        let quantity = if args.is_empty() {
            1
        } else {
            args.i64("quantity")?
        };
        args.done()?;
        Ok(Throttle {
            key,
            rate,
            quantity,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![
            Arg::Borrowed(&self.key),
            number(self.rate.max_burst),
            number(self.rate.count),
            number(self.rate.period_s),
            number(self.quantity),
        ]
    }
}

/// `SET key tat PXAT ms`: the arrival time a throttle decision stored, as
/// replicas and the AOF receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetArrival {
    /// The rate-limit key.
    pub key: Vec<u8>,
    /// The theoretical arrival time, ns since the Unix epoch.
    pub tat_ns: i64,
    /// When the key expires, ms since the Unix epoch.
    pub expire_at_ms: u64,
}

impl Command for SetArrival {
    const NAME: &'static str = "SET";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<SetArrival, ParseError> {
        let mut args = Args::new(args);
        let key = args.bytes("key")?.to_vec();
        let tat_ns = args.i64("tat")?;
        if args.keyword()? != "PXAT" {
            return Err(ParseError::Syntax("expected PXAT".into()));
        }
        let expire_at_ms = args.u64("PXAT")?;
        args.done()?;
        Ok(SetArrival {
            key,
            tat_ns,
            expire_at_ms,
        })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![
            Arg::Borrowed(&self.key),
            number(self.tat_ns),
            text("PXAT"),
            number(self.expire_at_ms),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::round_trip;
    use super::*;

    #[test]
    fn throttle_and_its_set_round_trip() {
        let throttle = Throttle::parse(&["rl:k", "4", "10", "60"]).unwrap();
        assert_eq!(throttle.quantity, 1);
        assert_eq!(
            throttle.rate,
            Rate {
                max_burst: 4,
                count: 10,
                period_s: 60
            }
        );
        round_trip(&throttle);
        let set = throttle.replicated(123_456, 789);
        let words: Vec<&[u8]> = vec![b"rl:k", b"123456", b"PXAT", b"789"];
        assert_eq!(set.to_args(), words);
        round_trip(&set);
        assert_eq!(
            Throttle::parse(&["k", "1", "1"]).unwrap_err().to_string(),
            "ERR wrong number of arguments: missing period"
        );
        assert_eq!(
            Throttle::parse(&["k", "1", "1", "1", "2", "3"])
                .unwrap_err()
                .to_string(),
            "ERR wrong number of arguments: unexpected argument '3'"
        );
    }

    #[test]
    fn builders_write_what_parse_reads() {
        let words: Vec<&[u8]> = vec![b"k", b"15", b"30", b"60", b"1"];
        let throttle = Throttle::new("k", 15, 30, 60);
        assert_eq!(throttle.to_args(), words);
        assert_eq!(Throttle::parse(&words[..4]).unwrap(), throttle);
        round_trip(&throttle.quantity(3));
    }
}
