//! The last line of defence against a panic inside Redis.
//!
//! Command bodies return errors for every bad input; these wrappers exist so
//! that a bug that still panics becomes an error reply to one client (or a
//! log line, in a timer or callback) instead of an abort of the whole
//! server.

use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw as rm, Context, RedisResult, RedisString};

use crate::error::Error;
use crate::ffi;
use crate::reply::RawReply;

/// Runs a command body, then [`after_changes`], turning its error or a
/// panic into an error reply.
pub fn run(
    ctx: &Context,
    args: Vec<RedisString>,
    body: fn(&Context, &[RedisString]) -> crate::error::Result<redis_module::RedisValue>,
) -> RedisResult {
    let run = || {
        let out = body(ctx, &args);
        after_changes(ctx);
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

/// The arguments of a command registered with a plain command function
/// ([`raw`]): its words read in place (the command name first) and Redis's
/// own strings, for the key API.
pub struct Argv<'a> {
    /// Every argument's bytes, the command name first.
    pub words: &'a [&'a [u8]],
    argv: *mut *mut rm::RedisModuleString,
    argc: c_int,
}

impl Argv<'_> {
    /// Redis's string of argument `pos` (the command name is 0).
    pub fn string(&self, pos: usize) -> Option<ffi::HeldString<'_>> {
        // SAFETY: `argv`/`argc` are what Redis passed to the running
        // command function ([`raw`] builds an `Argv` from nothing else), and
        // an `Argv` does not outlive that call.
        unsafe { ffi::arg_string(self.argv, self.argc, pos) }
    }
}

/// What follows every change to the registry, in the same command or timer
/// run: the lifecycle events it recorded are appended
/// ([`crate::events::flush`]), and the keys of the names whose state began
/// or ended are made or deleted ([`crate::keys::sync`]).
pub fn after_changes(ctx: &Context) {
    crate::events::flush(ctx);
    crate::keys::sync(ctx);
}

/// [`run`] for a command registered with a plain `extern "C"` function
/// ([`ffi::create_command`]): the arguments are read in place, without the
/// crate's `Vec<RedisString>`, and the reply is written directly
/// ([`RawReply`]). Same guarantees: errors and panics become error replies
/// (the same bytes as [`run`]'s), and [`after_changes`] runs.
///
/// # Safety
/// `ctx`, `argv` and `argc` must be what Redis passed to the running
/// command function.
pub unsafe fn raw<R: RawReply>(
    ctx: *mut rm::RedisModuleCtx,
    argv: *mut *mut rm::RedisModuleString,
    argc: c_int,
    body: fn(&Context, &Argv<'_>) -> crate::error::Result<R>,
) -> c_int {
    let context = Context::new(ctx);
    // SAFETY: the caller's contract.
    let out = unsafe {
        ffi::with_args(argv, argc, |words| {
            let args = Argv { words, argv, argc };
            catch_unwind(AssertUnwindSafe(|| {
                let out = body(&context, &args);
                after_changes(&context);
                out
            }))
        })
    };
    let err = match out {
        Ok(Ok(reply)) => {
            // Sending cannot fail; caught all the same, as nothing may
            // unwind into Redis.
            let _ = catch_unwind(AssertUnwindSafe(|| reply.send(ctx)));
            return rm::Status::Ok as c_int;
        }
        Ok(Err(err)) => err,
        Err(_) => Error::Internal("command failed unexpectedly; see the server log".into()),
    };
    context.reply(Err(err.into_redis())) as c_int
}

/// Defines `pub unsafe extern "C" fn $name`, the plain command function
/// that runs `$body` through [`raw`]; register it with
/// [`crate::ffi::create_command`].
#[macro_export]
macro_rules! raw_command {
    ($(#[$doc:meta])* $name:ident => $body:path) => {
        $(#[$doc])*
        ///
        /// A plain command function ([`crate::guard::raw`]).
        ///
        /// # Safety
        /// Called by Redis only, with the command's arguments.
        pub unsafe extern "C" fn $name(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::os::raw::c_int,
        ) -> std::os::raw::c_int {
            // SAFETY: Redis's own arguments.
            unsafe { $crate::guard::raw(ctx, argv, argc, $body) }
        }
    };
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
