//! The last line of defence against a panic inside Redis.
//!
//! Command bodies return errors for every bad input; this wrapper exists so
//! that a bug that still panics becomes an error reply to one client instead
//! of an abort of the whole server.

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{Context, RedisResult, RedisString};

use crate::error::Error;

/// Runs a command body, turning its error or a panic into an error reply.
pub fn run(
    ctx: &Context,
    args: Vec<RedisString>,
    body: fn(&Context, &[RedisString]) -> crate::error::Result<redis_module::RedisValue>,
) -> RedisResult {
    match catch_unwind(AssertUnwindSafe(|| body(ctx, &args))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.into_redis()),
        Err(_) => Err(
            Error::Internal("command failed unexpectedly; see the server log".into()).into_redis(),
        ),
    }
}
