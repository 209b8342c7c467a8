//! Small builders for replies that read well in RESP2 and RESP3.

use std::collections::BTreeMap;

use redis_module::redisvalue::RedisValueKey;
use redis_module::RedisValue;

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
