//! `BROKER.APPLY.KEY`: a key of the broker's state rebuilt from its saved
//! bytes (what an AOF rewritten without an RDB preamble holds; see
//! [`crate::keys`]).

use broker::command::{ApplyKey, ParseError};
use broker::registry::{Registry, Snapshot};
use redis_module::{Context, RedisResult, RedisString, RedisValue};

use super::{parse, replicate};
use crate::ffi::REGISTRY_TYPE;
use crate::keys::KeyValue;
use crate::{error, guard, reply, state};

/// `BROKER.APPLY.KEY key state`.
pub fn apply_key(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guard::run(ctx, args, run_apply_key)
}

/// Adds the state and makes its key; 0 when the key exists already (it
/// is left as it is).
fn run_apply_key(ctx: &Context, argv: &[RedisString]) -> error::Result<RedisValue> {
    let cmd: ApplyKey = parse(argv)?;
    let invalid = || ParseError::Invalid("state".into());
    let snapshot = Snapshot::from_bytes(&cmd.state).map_err(|_| invalid())?;
    if !Registry::named_by(&snapshot, &cmd.key) {
        return Err(invalid().into());
    }
    let key = ctx.open_key_writable(&ctx.create_string(cmd.key.as_str()));
    if !key.is_empty() {
        return Ok(reply::int(0));
    }
    state::with(|s| s.registry.merge(snapshot));
    if state::with(|s| s.registry.key_exists(&cmd.key)) {
        key.set_value(&REGISTRY_TYPE, KeyValue::attached(&cmd.key))
            .map_err(|e| error::Error::Internal(e.to_string()))?;
    }
    replicate(ctx, &cmd);
    Ok(reply::int(1))
}
