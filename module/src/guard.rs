//! The last line of defence against a panic inside Redis.
//!
//! Command bodies return errors for every bad input; these wrappers exist so
//! that a bug that still panics becomes an error reply to one client (or a
//! log line, in a timer or callback) instead of an abort of the whole
//! server.

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{Context, RedisResult, RedisString};

use crate::error::Error;

/// Runs a command body, then appends the lifecycle events it caused
/// ([`crate::events::flush`]), turning its error or a panic into an error
/// reply.
pub fn run(
    ctx: &Context,
    args: Vec<RedisString>,
    body: fn(&Context, &[RedisString]) -> crate::error::Result<redis_module::RedisValue>,
) -> RedisResult {
    let run = || {
        let out = body(ctx, &args);
        // The lifecycle events of what the command changed, in the same command.
        crate::events::flush(ctx);
        out
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.into_redis()),
        Err(_) => Err(
            Error::Internal("command failed unexpectedly; see the server log".into()).into_redis(),
        ),
    }
}

/// Runs the body of a callback Redis makes outside a command (the timer, a
/// server event, a persistence callback) and catches a panic, which would
/// otherwise unwind into Redis and abort it: the panic is logged, and
/// `None` returned.
pub fn callback<R>(ctx: &Context, what: &str, body: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => Some(value),
        Err(_) => {
            ctx.log_warning(&format!("broker: {what} failed unexpectedly"));
            None
        }
    }
}

/// [`callback`] for the places that have no [`Context`] (the aux data
/// callbacks): a panic becomes `None`, and the caller reports a failure.
pub fn quietly<R>(body: impl FnOnce() -> R) -> Option<R> {
    catch_unwind(AssertUnwindSafe(body)).ok()
}
