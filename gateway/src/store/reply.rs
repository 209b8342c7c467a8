//! Reading module replies: maps by field name (RESP2 flat arrays and RESP3
//! maps alike), integers, text, and JSON for the admin API.

use redis::Value;

use super::error::{StoreError, StoreResult};

/// A map reply (RESP2 flat array or RESP3 map) by field name.
pub(super) struct Fields(Vec<(String, Value)>);

impl Fields {
    pub(super) fn new(reply: Value) -> StoreResult<Fields> {
        let mut out = Vec::new();
        for (k, v) in pairs(reply)? {
            out.push((as_text(k)?, v));
        }
        Ok(Fields(out))
    }

    pub(super) fn get(&self, name: &str) -> StoreResult<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| StoreError::Reply(format!("missing field {name}")))
    }

    pub(super) fn int(&self, name: &str) -> StoreResult<u64> {
        as_int(self.get(name)?.clone())
    }

    pub(super) fn text(&self, name: &str) -> StoreResult<String> {
        as_text(self.get(name)?.clone())
    }

    /// An array of strings (room names).
    pub(super) fn texts(&self, name: &str) -> StoreResult<Vec<String>> {
        match self.get(name)? {
            Value::Array(items) => items.iter().map(|v| as_text(v.clone())).collect(),
            other => Err(StoreError::Reply(format!("{name}: {other:?}"))),
        }
    }

    pub(super) fn frames(&self, name: &str) -> StoreResult<Vec<Vec<u8>>> {
        match self.get(name)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::BulkString(b) => Ok(b.clone()),
                    _ => Err(StoreError::Reply(format!("{name}: not a bulk string"))),
                })
                .collect(),
            _ => Err(StoreError::Reply(format!("{name}: not an array"))),
        }
    }
}

/// The module's `broker_api` from an `INFO broker` text; `None` without
/// the module (an empty section). A module from before `broker_api` existed
/// counts as 1.
pub(super) fn module_api(info: &str) -> Option<u32> {
    if !info.lines().any(|line| line.starts_with("broker_")) {
        return None;
    }
    let api = info
        .lines()
        .find_map(|line| line.trim_end().strip_prefix("broker_api:"))
        .and_then(|v| v.parse::<u32>().ok());
    Some(api.unwrap_or(1))
}

pub(super) fn pairs(reply: Value) -> StoreResult<Vec<(Value, Value)>> {
    match reply {
        Value::Map(items) => Ok(items),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Ok(out)
        }
        other => Err(StoreError::Reply(format!("expected a map, got {other:?}"))),
    }
}

pub(super) fn as_int(v: Value) -> StoreResult<u64> {
    match v {
        Value::Int(n) => u64::try_from(n).map_err(|_| StoreError::Reply("negative integer".into())),
        other => Err(StoreError::Reply(format!(
            "expected an integer, got {other:?}"
        ))),
    }
}

pub(super) fn as_text(v: Value) -> StoreResult<String> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|_| StoreError::Reply("not UTF-8".into()))
        }
        Value::SimpleString(s) => Ok(s),
        other => Err(StoreError::Reply(format!("expected text, got {other:?}"))),
    }
}

/// A module reply as JSON, for the admin API (maps become objects when
/// their keys are text; RESP2 flat arrays stay arrays except where the
/// caller knows the shape).
pub(super) fn to_json(v: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Int(n) => J::from(n),
        Value::BulkString(b) => J::String(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) => J::String(s),
        Value::Okay => J::String("OK".into()),
        Value::Array(items) => {
            // A flat `field value` array whose fields are the known presence
            // fields reads better as an object.
            let is_map = items.len() % 2 == 0
                && !items.is_empty()
                && items.chunks(2).all(|kv| {
                    matches!(&kv[0], Value::BulkString(b) if matches!(b.as_slice(),
                        b"status" | b"connections" | b"conns" | b"conn" | b"node" | b"ip" | b"connected_at" | b"rooms"))
                });
            if is_map {
                let mut obj = serde_json::Map::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if let J::String(k) = to_json(k) {
                        obj.insert(k, to_json(v));
                    }
                }
                J::Object(obj)
            } else {
                J::Array(items.into_iter().map(to_json).collect())
            }
        }
        Value::Map(items) => {
            let mut obj = serde_json::Map::new();
            for (k, v) in items {
                if let J::String(k) = to_json(k) {
                    obj.insert(k, to_json(v));
                }
            }
            J::Object(obj)
        }
        other => J::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::module_api;

    #[test]
    fn module_api_reads_info_broker() {
        let now = "# broker\r\nbroker_version:0.1.0\r\nbroker_api:2\r\nbroker_nodes:1\r\n";
        assert_eq!(module_api(now), Some(2));
        let before_the_field = "# broker\r\nbroker_nodes:0\r\nbroker_connections:0\r\n";
        assert_eq!(module_api(before_the_field), Some(1));
        assert_eq!(module_api(""), None, "INFO broker without the module");
    }
}
