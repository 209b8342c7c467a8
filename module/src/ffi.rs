//! Every call into Redis's C API that the crate does not wrap, in one
//! place (the plain command functions, `guard::raw`, hand it the pointers
//! Redis gave them).
//!
//! Two things have no safe wrapper in `redis-module` 2.0.8: publishing to a
//! Pub/Sub channel from a module (`RedisModule_PublishMessage` and, for
//! sharded channels, `RedisModule_PublishMessageShard`) and the callbacks
//! of a module type: its keys' ([`crate::keys`]) and its aux data's, which
//! carries the nodes' leases (see `persist`).
//!
//! Three more are here for speed (`docs/BENCHMARKS.md`, "Module commands
//! against native ones"): commands registered with a plain `extern "C"`
//! function ([`create_command`]) that read their arguments in place
//! ([`with_args`]) instead of the crate's `Vec<RedisString>` (a retain and
//! a free per argument), and replication with `RedisModule_Replicate`'s
//! binary-safe `b` arguments ([`replicate`]) instead of the crate's
//! `replicate`, which builds a C string and a Redis string per argument.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};

use redis_module::native_types::RedisType;
use redis_module::{raw, Context, RedisString};

use broker::registry::Snapshot;

use crate::keys::{self, KeyValue};
use crate::{guard, persist};

/// The shape of `RedisModule_PublishMessage` and `..._PublishMessageShard`.
type PublishApi = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    *mut raw::RedisModuleString,
    *mut raw::RedisModuleString,
) -> c_int;

/// Publishes `message` on `channel`, exactly like `PUBLISH`. Returns false
/// when the server does not offer the API (it does from Redis 6.0 on).
pub fn publish(ctx: &Context, channel: &RedisString, message: &RedisString) -> bool {
    // SAFETY: reading a function pointer that `RedisModule_Init` filled in
    // before any command could run; it is never written afterwards.
    publish_with(
        unsafe { raw::RedisModule_PublishMessage },
        ctx,
        channel,
        message,
    )
}

/// Publishes `message` on the sharded channel `channel`, exactly like
/// `SPUBLISH`: subscribers of this shard receive it, and the cluster bus
/// carries it only to this shard's replicas. Returns false when the server
/// does not offer the API (Redis 7.0 does).
pub fn publish_shard(ctx: &Context, channel: &RedisString, message: &RedisString) -> bool {
    // SAFETY: as in `publish` (left `None` on servers without the API).
    publish_with(
        unsafe { raw::RedisModule_PublishMessageShard },
        ctx,
        channel,
        message,
    )
}

fn publish_with(
    api: Option<PublishApi>,
    ctx: &Context,
    channel: &RedisString,
    message: &RedisString,
) -> bool {
    let Some(publish_message) = api else {
        return false;
    };
    // SAFETY: `ctx` is the live context of the running command or timer;
    // both strings are valid `RedisModuleString`s owned by `RedisString`s
    // that outlive the call, and Redis only reads them.
    unsafe { publish_message(ctx.get_raw(), channel.inner, message.inner) };
    true
}

/// The signature of a command function as Redis calls it.
pub type CommandFn = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    *mut *mut raw::RedisModuleString,
    c_int,
) -> c_int;

/// Registers `name` with the plain command function `handler`, exactly as
/// the `redis_module!` macro does for the commands it lists (flags, key
/// positions; no ACL categories). False when Redis refused it.
pub fn create_command(
    ctx: &Context,
    name: &CStr,
    handler: CommandFn,
    flags: &CStr,
    keys: broker::command::Keys,
) -> bool {
    // SAFETY: reading a function pointer filled in by `RedisModule_Init`.
    let Some(create) = (unsafe { raw::RedisModule_CreateCommand }) else {
        return false;
    };
    // SAFETY: `ctx` is the module's load context; the name and flags are
    // NUL-terminated and Redis copies them; `handler` is a plain function
    // that lives as long as the module.
    let status = unsafe {
        create(
            ctx.get_raw(),
            name.as_ptr(),
            Some(handler),
            flags.as_ptr(),
            keys.first,
            keys.last,
            keys.step,
        )
    };
    status == raw::Status::Ok as c_int
}

/// How many arguments [`with_args`] reads onto the stack; longer commands
/// take one allocation.
const STACK_ARGS: usize = 16;

/// Runs `f` with the command's arguments (its name first) as byte slices
/// read in place from Redis's strings: no copy, no retain, no free.
///
/// # Safety
/// `argv` and `argc` must be what Redis passed to the running command
/// function (or `argv` null): `argc` valid string pointers that stay alive
/// and unchanged while `f` runs.
pub unsafe fn with_args<R>(
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    f: impl FnOnce(&[&[u8]]) -> R,
) -> R {
    let count = if argv.is_null() {
        0
    } else {
        usize::try_from(argc).unwrap_or(0)
    };
    let read = |i: usize| -> &[u8] {
        let mut len = 0usize;
        // SAFETY: `i < argc`, so `argv.add(i)` points into Redis's array of
        // valid strings (the caller's contract); `StringPtrLen` returns
        // their bytes, which live as long as the command runs.
        unsafe {
            let s = *argv.add(i);
            let ptr = raw::string_ptr_len(s, &mut len);
            if ptr.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(ptr.cast::<u8>(), len)
            }
        }
    };
    if count <= STACK_ARGS {
        let mut stack: [&[u8]; STACK_ARGS] = [&[]; STACK_ARGS];
        for (i, slot) in stack.iter_mut().enumerate().take(count) {
            *slot = read(i);
        }
        f(&stack[..count])
    } else {
        let heap: Vec<&[u8]> = (0..count).map(read).collect();
        f(&heap)
    }
}

/// A Redis string that stays alive while the borrow `'a` lasts: an
/// argument of the running command ([`crate::guard::Argv::string`]) or a
/// [`RedisString`] of the module's own.
#[derive(Debug, Clone, Copy)]
pub struct HeldString<'a> {
    ptr: *mut raw::RedisModuleString,
    _held: PhantomData<&'a RedisString>,
}

impl<'a> From<&'a RedisString> for HeldString<'a> {
    fn from(s: &'a RedisString) -> HeldString<'a> {
        HeldString {
            ptr: s.inner,
            _held: PhantomData,
        }
    }
}

impl HeldString<'_> {
    /// Redis's string, for the key API.
    pub fn as_ptr(&self) -> *mut raw::RedisModuleString {
        self.ptr
    }
}

/// The string argument `pos` of the running command. `None` past the end.
///
/// # Safety
/// As for [`with_args`]; the result must not outlive the command.
pub unsafe fn arg_string<'a>(
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    pos: usize,
) -> Option<HeldString<'a>> {
    if argv.is_null() || pos >= usize::try_from(argc).unwrap_or(0) {
        return None;
    }
    // SAFETY: `pos < argc` (the caller's contract covers the array).
    let ptr = unsafe { *argv.add(pos) };
    Some(HeldString {
        ptr,
        _held: PhantomData,
    })
}

/// Most `b` arguments [`replicate`] and [`call_replicated`] pass (they
/// are variadic C functions: one call per count).
const MAX_B_ARGS: usize = 24;

/// Calls the variadic C function `$f` with the leading arguments, then a
/// pointer (`$a(i)`) and a length (`$l(i)`) for each of `$len` arguments
/// (at most [`MAX_B_ARGS`]; the caller checks).
macro_rules! call_with_b_args {
    ($f:ident($($lead:expr),*), $len:expr, $a:ident, $l:ident) => {
        match $len {
            0 => $f($($lead),*),
            1 => $f($($lead),*, $a(0), $l(0)),
            2 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1)),
            3 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2)),
            4 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3)),
            5 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4)),
            6 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5)),
            7 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6)),
            8 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7)),
            9 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8)),
            10 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9)),
            11 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10)),
            12 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11)),
            13 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12)),
            14 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13)),
            15 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14)),
            16 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15)),
            17 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15), $a(16), $l(16)),
            18 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15), $a(16), $l(16), $a(17), $l(17)),
            19 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15), $a(16), $l(16), $a(17), $l(17), $a(18), $l(18)),
            20 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15), $a(16), $l(16), $a(17), $l(17), $a(18), $l(18), $a(19), $l(19)),
            21 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15), $a(16), $l(16), $a(17), $l(17), $a(18), $l(18), $a(19), $l(19), $a(20), $l(20)),
            22 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15), $a(16), $l(16), $a(17), $l(17), $a(18), $l(18), $a(19), $l(19), $a(20), $l(20), $a(21), $l(21)),
            23 => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15), $a(16), $l(16), $a(17), $l(17), $a(18), $l(18), $a(19), $l(19), $a(20), $l(20), $a(21), $l(21), $a(22), $l(22)),
            _ => $f($($lead),*, $a(0), $l(0), $a(1), $l(1), $a(2), $l(2), $a(3), $l(3), $a(4), $l(4), $a(5), $l(5), $a(6), $l(6), $a(7), $l(7), $a(8), $l(8), $a(9), $l(9), $a(10), $l(10), $a(11), $l(11), $a(12), $l(12), $a(13), $l(13), $a(14), $l(14), $a(15), $l(15), $a(16), $l(16), $a(17), $l(17), $a(18), $l(18), $a(19), $l(19), $a(20), $l(20), $a(21), $l(21), $a(22), $l(22), $a(23), $l(23)),
        }
    };
}

/// A NUL-terminated format of `flags` then one `b` per argument.
fn b_format<'a>(buf: &'a mut [u8; 32], flags: &[u8], args: usize) -> Option<&'a CStr> {
    let len = flags.len() + args;
    if args > MAX_B_ARGS || len >= buf.len() {
        return None;
    }
    buf[..flags.len()].copy_from_slice(flags);
    buf[flags.len()..len].fill(b'b');
    buf[len] = 0;
    CStr::from_bytes_until_nul(&buf[..=len]).ok()
}

/// `name` NUL-terminated in `buf` (`None` when too long or holding a NUL).
fn c_name<'a>(buf: &'a mut [u8; 64], name: &str) -> Option<&'a CStr> {
    if name.len() >= buf.len() || name.as_bytes().contains(&0) {
        return None;
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    buf[name.len()] = 0;
    CStr::from_bytes_until_nul(&buf[..=name.len()]).ok()
}

/// Sends `name args...` to replicas and the AOF with
/// `RedisModule_Replicate`'s binary-safe `b` arguments, which Redis copies:
/// no string objects of our own. Returns false for a name longer than 63
/// bytes or more than 24 arguments (the caller then uses the
/// crate's `replicate`).
pub fn replicate(ctx: &Context, name: &str, args: &[&[u8]]) -> bool {
    let (mut name_buf, mut format_buf) = ([0u8; 64], [0u8; 32]);
    let (Some(name), Some(format)) = (
        c_name(&mut name_buf, name),
        b_format(&mut format_buf, b"", args.len()),
    ) else {
        return false;
    };
    // SAFETY: reading a function pointer filled in by `RedisModule_Init`.
    let Some(rep) = (unsafe { raw::RedisModule_Replicate }) else {
        return false;
    };
    let (ctx, name, format) = (ctx.get_raw(), name.as_ptr(), format.as_ptr());
    let a = |i: usize| args[i].as_ptr().cast::<c_char>();
    let l = |i: usize| args[i].len();
    // SAFETY: `ctx` is the live context of the running command or timer;
    // the name and the format are NUL-terminated; the format has one `b`
    // per argument, each given as a pointer and a length valid for the
    // call; Redis copies them.
    unsafe { call_with_b_args!(rep(ctx, name, format), args.len(), a, l) };
    true
}

/// Runs `name args...` with `RedisModule_Call`, replicated as Redis
/// propagates it (`!`) and with errors as replies (`E`), the arguments
/// given as binary-safe `b` (Redis copies them): what the crate's
/// `call_ext` with `replicate()` and `errors_as_replies()` does, without a
/// Redis string of our own per argument. `Ok` unless the reply is an error
/// (its text) or there is none; `None` for a name longer than 63 bytes or
/// more than 24 arguments (the caller then uses `call_ext`).
pub fn call_replicated(ctx: &Context, name: &str, args: &[&[u8]]) -> Option<Result<(), String>> {
    let (mut name_buf, mut format_buf) = ([0u8; 64], [0u8; 32]);
    let name = c_name(&mut name_buf, name)?;
    let format = b_format(&mut format_buf, b"!E", args.len())?;
    // SAFETY: reading function pointers filled in by `RedisModule_Init`.
    let (call, reply_type, reply_text, free_reply) = unsafe {
        (
            raw::RedisModule_Call?,
            raw::RedisModule_CallReplyType?,
            raw::RedisModule_CallReplyStringPtr?,
            raw::RedisModule_FreeCallReply?,
        )
    };
    let (ctx, name, format) = (ctx.get_raw(), name.as_ptr(), format.as_ptr());
    let a = |i: usize| args[i].as_ptr().cast::<c_char>();
    let l = |i: usize| args[i].len();
    // SAFETY: as in `replicate`; the format's flags come first.
    let reply = unsafe { call_with_b_args!(call(ctx, name, format), args.len(), a, l) };
    if reply.is_null() {
        return Some(Err("no reply".into()));
    }
    // SAFETY: `reply` is the live reply Redis just returned; its text is
    // read before the reply is freed, once, here.
    let out = unsafe {
        if reply_type(reply) == raw::REDISMODULE_REPLY_ERROR as c_int {
            let mut len = 0usize;
            let ptr = reply_text(reply, &mut len);
            let text = if ptr.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec()
            };
            Err(String::from_utf8_lossy(&text).into_owned())
        } else {
            Ok(())
        }
    };
    // SAFETY: freed once; not used afterwards.
    unsafe { free_reply(reply) };
    Some(out)
}

/// Replicates `SET key tat PXAT ms` with Redis's own string of the key
/// (`s`: Redis takes a reference, no copy) and binary-safe `b` arguments.
pub fn replicate_set_pxat(ctx: &Context, key: HeldString<'_>, tat: &[u8], expire_at_ms: &[u8]) {
    // SAFETY: reading a function pointer filled in by `RedisModule_Init`.
    let Some(rep) = (unsafe { raw::RedisModule_Replicate }) else {
        return;
    };
    // SAFETY: `ctx` is the live context of the running command; `key` is a
    // live Redis string (`HeldString`) of which Redis only takes a
    // reference; each `b` is a pointer and a length valid for the call,
    // which Redis copies; the strings are NUL-terminated.
    unsafe {
        rep(
            ctx.get_raw(),
            c"SET".as_ptr(),
            c"sbcb".as_ptr(),
            key.ptr,
            tat.as_ptr().cast::<c_char>(),
            tat.len(),
            c"PXAT".as_ptr(),
            expire_at_ms.as_ptr().cast::<c_char>(),
            expire_at_ms.len(),
        );
    }
}

/// The module type of the broker's keys (a room, a user, an address:
/// [`crate::keys`]), whose aux data also carries the nodes' leases.
pub static REGISTRY_TYPE: RedisType = RedisType::new(
    "broker-rg",
    keys::KEY_ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(key_load),
        rdb_save: Some(key_save),
        aof_rewrite: Some(key_rewrite),
        free: Some(key_free),
        mem_usage: Some(key_mem_usage),
        digest: Some(key_digest),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save2: None,
        aux_save_triggers: raw::Aux::Before as i32,
        free_effort: None,
        unlink: Some(key_unlink),
        copy: None,
        defrag: None,
        copy2: None,
        free_effort2: None,
        mem_usage2: None,
        unlink2: None,
    },
);

/// The key's value behind a pointer Redis holds for the module type.
///
/// # Safety
/// `value` must be a pointer this module's type gave Redis (a
/// `Box<KeyValue>` made by `set_value` or [`key_load`]), not yet freed.
unsafe fn key_value<'a>(value: *mut c_void) -> Option<&'a mut KeyValue> {
    // SAFETY: the caller's contract; null is refused.
    unsafe { value.cast::<KeyValue>().as_mut() }
}

/// The saved state of a key's value as bytes (empty on a failure, which
/// loads as nothing).
fn key_bytes(value: &KeyValue) -> Vec<u8> {
    guard::quietly(|| value.saved().to_bytes().unwrap_or_default()).unwrap_or_default()
}

unsafe extern "C" fn key_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if encver != keys::KEY_ENCODING_VERSION {
        return std::ptr::null_mut();
    }
    // SAFETY: `rdb` is the I/O handle Redis passes for this callback.
    let Ok(buffer) = raw::load_string_buffer(rdb) else {
        return std::ptr::null_mut();
    };
    let bytes = buffer.as_ref();
    let loaded = guard::quietly(|| {
        if bytes.is_empty() {
            Some(Snapshot::default())
        } else {
            Snapshot::from_bytes(bytes).ok()
        }
    });
    match loaded.flatten() {
        Some(snapshot) => Box::into_raw(Box::new(KeyValue::loaded(snapshot))).cast::<c_void>(),
        None => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn key_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    // SAFETY: Redis passes a value of this type.
    let bytes = unsafe { key_value(value) }
        .map(|v| key_bytes(v))
        .unwrap_or_default();
    raw::save_slice(rdb, &bytes);
}

unsafe extern "C" fn key_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    // SAFETY: Redis passes a value of this type.
    let bytes = unsafe { key_value(value) }
        .map(|v| key_bytes(v))
        .unwrap_or_default();
    // SAFETY: reading a function pointer filled in by `RedisModule_Init`.
    let Some(emit) = (unsafe { raw::RedisModule_EmitAOF }) else {
        return;
    };
    // SAFETY: `aof` and `key` are what Redis passed to this callback; the
    // `b` argument is a pointer and a length valid for the call; the
    // format and command name are NUL-terminated.
    unsafe {
        emit(
            aof,
            c"BROKER.APPLY.KEY".as_ptr(),
            c"sb".as_ptr(),
            key,
            bytes.as_ptr().cast::<c_char>(),
            bytes.len(),
        );
    }
}

unsafe extern "C" fn key_free(value: *mut c_void) {
    if !value.is_null() {
        // SAFETY: a `Box<KeyValue>` given to Redis, freed once (this is
        // Redis's one call to free it). It touches no shared state, as a
        // lazy free may run on another thread.
        drop(unsafe { Box::from_raw(value.cast::<KeyValue>()) });
    }
}

unsafe extern "C" fn key_mem_usage(value: *const c_void) -> usize {
    // SAFETY: Redis passes a value of this type.
    let Some(v) = (unsafe { key_value(value.cast_mut()) }) else {
        return 0;
    };
    guard::quietly(|| v.mem_usage()).unwrap_or(0)
}

unsafe extern "C" fn key_digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    // SAFETY: Redis passes a value of this type.
    let Some(v) = (unsafe { key_value(value) }) else {
        return;
    };
    let bytes = guard::quietly(|| v.saved().without_leases().to_bytes().unwrap_or_default())
        .unwrap_or_default();
    // SAFETY: reading function pointers filled in by `RedisModule_Init`;
    // `md` is the digest Redis passed; the buffer is valid for the call.
    unsafe {
        if let (Some(add), Some(end)) = (
            raw::RedisModule_DigestAddStringBuffer,
            raw::RedisModule_DigestEndSequence,
        ) {
            add(md, bytes.as_ptr().cast::<c_char>(), bytes.len());
            end(md);
        }
    }
}

unsafe extern "C" fn key_unlink(_key: *mut raw::RedisModuleString, value: *const c_void) {
    // SAFETY: Redis passes a value of this type; it is not freed before
    // this callback returns.
    if let Some(v) = unsafe { key_value(value.cast_mut()) } {
        guard::quietly(|| keys::unlinked(v));
    }
}

/// Selects database `db` for the rest of the callback that owns `ctx`.
pub fn select_db(ctx: &Context, db: c_int) {
    // SAFETY: reading a function pointer filled in by `RedisModule_Init`;
    // `ctx` is the live context of the running callback.
    unsafe {
        if let Some(select) = raw::RedisModule_SelectDb {
            select(ctx.get_raw(), db);
        }
    }
}

unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::Aux::Before as c_int {
        return;
    }
    // A panic must not unwind into Redis; an empty blob loads as an empty
    // registry.
    let bytes = guard::quietly(persist::save).unwrap_or_default();
    // SAFETY: `rdb` is the I/O handle Redis passes for this callback.
    raw::save_slice(rdb, &bytes);
}

unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, when: c_int) -> c_int {
    if when != raw::Aux::Before as c_int {
        return raw::Status::Ok as c_int;
    }
    // SAFETY: `rdb` is the I/O handle Redis passes for this callback.
    let Ok(buffer) = raw::load_string_buffer(rdb) else {
        return raw::Status::Err as c_int;
    };
    match guard::quietly(|| persist::load(encver, buffer.as_ref())) {
        Some(Ok(())) => raw::Status::Ok as c_int,
        Some(Err(_)) | None => raw::Status::Err as c_int,
    }
}

/// Watches client commands for `CLIENT PAUSE` / `CLIENT UNPAUSE` /
/// `FAILOVER` (a command filter, the one way a module sees them): Redis 7.0
/// aborts when a timer propagates writes while clients are paused, so the
/// sweep must know ([`crate::sweep::note_command`]). Returns false when the
/// server offers no command filters.
pub fn watch_client_pause(ctx: &Context) -> bool {
    // SAFETY: reading a function pointer filled in by `RedisModule_Init`.
    let Some(register) = (unsafe { raw::RedisModule_RegisterCommandFilter }) else {
        return false;
    };
    // SAFETY: `ctx` is the module's load context; the callback is a plain
    // `extern "C"` function that lives as long as the module.
    let filter = unsafe {
        register(
            ctx.get_raw(),
            Some(pause_filter),
            raw::REDISMODULE_CMDFILTER_NOSELF as c_int,
        )
    };
    !filter.is_null()
}

/// Argument `pos` of the filtered command, lower-cased (`None` past the end).
unsafe fn filter_arg(fctx: *mut raw::RedisModuleCommandFilterCtx, pos: c_int) -> Option<String> {
    let get = raw::RedisModule_CommandFilterArgGet?;
    let ptr_len = raw::RedisModule_StringPtrLen?;
    // SAFETY: `fctx` is the filter context Redis passed; the string it
    // returns stays valid during the callback, and is only read here.
    let arg = get(fctx, pos);
    if arg.is_null() {
        return None;
    }
    let mut len = 0usize;
    let ptr = ptr_len(arg, &mut len);
    if ptr.is_null() {
        return None;
    }
    let bytes = std::slice::from_raw_parts(ptr.cast::<u8>(), len);
    Some(String::from_utf8_lossy(bytes).to_ascii_lowercase())
}

/// True when argument `pos` of the filtered command is `word` (ASCII,
/// any case), read in place: the filter runs for every command the server
/// serves, so the common answer (no) must cost no allocation.
unsafe fn filter_arg_is(
    fctx: *mut raw::RedisModuleCommandFilterCtx,
    pos: c_int,
    word: &str,
) -> bool {
    let (Some(get), Some(ptr_len)) = (
        raw::RedisModule_CommandFilterArgGet,
        raw::RedisModule_StringPtrLen,
    ) else {
        return false;
    };
    // SAFETY: as in `filter_arg`.
    let arg = get(fctx, pos);
    if arg.is_null() {
        return false;
    }
    let mut len = 0usize;
    let ptr = ptr_len(arg, &mut len);
    if ptr.is_null() || len != word.len() {
        return false;
    }
    std::slice::from_raw_parts(ptr.cast::<u8>(), len).eq_ignore_ascii_case(word.as_bytes())
}

unsafe extern "C" fn pause_filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    // SAFETY: `fctx` is valid for this callback; the reads only read.
    if !filter_arg_is(fctx, 0, "client") && !filter_arg_is(fctx, 0, "failover") {
        return;
    }
    let count = match raw::RedisModule_CommandFilterArgsCount {
        Some(args_count) => args_count(fctx),
        None => return,
    };
    let args: Vec<String> = (0..count.min(8))
        .filter_map(|i| filter_arg(fctx, i))
        .collect();
    let _ = guard::quietly(|| crate::sweep::note_command(&args));
}
