//! The command that rebuilds a key of the broker's state from its saved
//! bytes, for an AOF rewritten without an RDB preamble.

use std::borrow::Cow;

use super::args::{text, Args};
use super::{Arg, Command, Keys, ParseError};

/// `BROKER.APPLY.KEY key state`: adds the saved state of one key (a room,
/// a user, an address: `registry::Registry::save_key`) and creates the key.
/// Only an AOF rewrite writes it (the key type's `aof_rewrite`); a key that
/// exists already is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyKey {
    /// The key's name.
    pub key: String,
    /// Its state, as `Snapshot::to_bytes` wrote it.
    pub state: Vec<u8>,
}

impl Command for ApplyKey {
    const NAME: &'static str = "BROKER.APPLY.KEY";
    const KEYS: Keys = Keys::FIRST;

    fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<ApplyKey, ParseError> {
        let mut args = Args::new(args);
        let key = args.string("key")?;
        let state = args.bytes("state")?.to_vec();
        args.done()?;
        Ok(ApplyKey { key, state })
    }

    fn to_args(&self) -> Vec<Arg<'_>> {
        vec![text(&self.key), Cow::Borrowed(&self.state)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::round_trip;
    use super::*;

    #[test]
    fn apply_key_round_trips() {
        round_trip(&ApplyKey {
            key: "chat:x".into(),
            state: vec![0x93, 0x90, 0x90, 0x90],
        });
        assert!(ApplyKey::parse(&[b"k"]).is_err());
    }
}
