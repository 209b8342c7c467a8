//! Small builders for replies that read well in RESP2 and RESP3.

use std::collections::BTreeMap;
use std::os::raw::{c_char, c_long};

use redis_module::redisvalue::RedisValueKey;
use redis_module::{raw, RedisValue};

/// A map reply (a flat `field value` array in RESP2).
pub fn map<const N: usize>(fields: [(&str, RedisValue); N]) -> RedisValue {
    let map: BTreeMap<RedisValueKey, RedisValue> = fields
        .into_iter()
        .map(|(k, v)| (RedisValueKey::String(k.to_string()), v))
        .collect();
    RedisValue::OrderedMap(map)
}

/// An integer reply from an unsigned count.
pub fn int(n: u64) -> RedisValue {
    RedisValue::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A bulk string reply.
pub fn text(s: &str) -> RedisValue {
    RedisValue::BulkString(s.to_string())
}

/// An array of bulk strings (room names, say).
pub fn texts<'a>(items: impl IntoIterator<Item = &'a String>) -> RedisValue {
    RedisValue::Array(items.into_iter().map(|s| text(s)).collect())
}

/// An array of binary frames.
pub fn frames(frames: &[&[u8]]) -> RedisValue {
    RedisValue::Array(
        frames
            .iter()
            .map(|f| RedisValue::StringBuffer(f.to_vec()))
            .collect(),
    )
}

/// A reply written straight to the client with `RedisModule_ReplyWith*`
/// (no [`RedisValue`] tree in between): the hot commands' replies, sent by
/// [`crate::guard::raw`]. Each writes the bytes its [`RedisValue`] form
/// would.
pub trait RawReply {
    /// Writes the reply of the running command.
    fn send(&self, ctx: *mut raw::RedisModuleCtx);
}

/// An integer, as [`int`] makes it.
impl RawReply for u64 {
    fn send(&self, ctx: *mut raw::RedisModuleCtx) {
        raw::reply_with_long_long(ctx, i64::try_from(*self).unwrap_or(i64::MAX));
    }
}

/// An array of integers.
impl<const N: usize> RawReply for [i64; N] {
    fn send(&self, ctx: *mut raw::RedisModuleCtx) {
        raw::reply_with_array(ctx, N as c_long);
        for n in self {
            raw::reply_with_long_long(ctx, *n);
        }
    }
}

/// One value of a map sent by [`send_map`].
pub enum Field<'a> {
    /// An integer ([`int`]).
    Int(u64),
    /// A bulk string ([`text`]).
    Text(&'a str),
    /// An array of binary frames ([`frames`]).
    Frames(&'a [Vec<u8>]),
}

impl RawReply for Field<'_> {
    fn send(&self, ctx: *mut raw::RedisModuleCtx) {
        match self {
            Field::Int(n) => n.send(ctx),
            Field::Text(s) => bulk(ctx, s.as_bytes()),
            Field::Frames(frames) => {
                raw::reply_with_array(ctx, frames.len() as c_long);
                for frame in *frames {
                    bulk(ctx, frame);
                }
            }
        }
    }
}

fn bulk(ctx: *mut raw::RedisModuleCtx, bytes: &[u8]) {
    raw::reply_with_string_buffer(ctx, bytes.as_ptr().cast::<c_char>(), bytes.len());
}

/// A map reply (a flat `field value` array in RESP2) with its fields in
/// key order, as [`map`] sends them (its `BTreeMap` sorts them).
pub fn send_map<const N: usize>(ctx: *mut raw::RedisModuleCtx, mut fields: [(&str, Field<'_>); N]) {
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    raw::reply_with_map(ctx, N as c_long);
    for (key, value) in &fields {
        bulk(ctx, key.as_bytes());
        value.send(ctx);
    }
}
