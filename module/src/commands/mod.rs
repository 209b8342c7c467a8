//! The `BROKER.*` commands, one file per family. Each handler parses its
//! arguments into the command's type ([`broker::command`]), calls the
//! registry, replicates the command's deterministic form ([`replicate`]),
//! delivers what it must, and replies.

pub mod connections;
pub mod keys;
pub mod nodes;
pub mod publish;
pub mod rooms;
pub mod rpc;
pub mod throttle;

use broker::command::Command;
use redis_module::{Context, RedisString};

use crate::{error, ffi};

/// Parses `argv` (the command name first) as the command `C`.
pub fn parse<C: Command>(argv: &[RedisString]) -> error::Result<C> {
    let args: Vec<&[u8]> = argv.iter().skip(1).map(|a| a.as_slice()).collect();
    Ok(C::parse(&args)?)
}

/// Parses `words` (the command name first, as [`crate::guard::raw`] gives
/// them) as the command `C`.
pub fn parse_words<C: Command>(words: &[&[u8]]) -> error::Result<C> {
    Ok(C::parse(words.get(1..).unwrap_or_default())?)
}

/// Sends `cmd` to replicas and the AOF: the one way the module replicates.
pub fn replicate<C: Command>(ctx: &Context, cmd: &C) {
    let args = cmd.to_args();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
    if !ffi::replicate(ctx, C::NAME, &args) {
        ctx.replicate(C::NAME, args.as_slice());
    }
}
