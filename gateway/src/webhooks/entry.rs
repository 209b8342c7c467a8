//! Lifecycle stream entries as Redis returns them (`XREADGROUP`,
//! `XAUTOCLAIM`), and the JSON body of one POST.
//!
//! The body is `{"events": [...]}`, one object per entry in stream order:
//! `id` (the stream id, a string), `stream` (the stream's key: on a
//! cluster each master's stream numbers its ids alone, so only the pair
//! names an entry) and every field of the entry as a string, except `ts`
//! and `duration_ms`, which are JSON numbers when they are decimal
//! integers (as the module writes them). Fields named `id` or `stream`
//! are left out (ours take their place). Keys are in alphabetical order.

use redis::{RedisResult, Value};
use serde_json::{Map, Value as J};

/// Fields sent as JSON numbers when they hold a decimal integer.
const NUMERIC_FIELDS: [&str; 2] = ["ts", "duration_ms"];

/// One stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream id, `<ms>-<seq>`.
    pub id: String,
    /// Its fields in stream order; `None` when the entry was deleted from
    /// the stream (trimmed) while it was pending.
    pub fields: Option<Vec<(String, String)>>,
}

impl Entry {
    /// The `type` field.
    pub fn kind(&self) -> Option<&str> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.as_str())
    }

    /// When it was added: the milliseconds part of its id.
    pub fn ms(&self) -> Option<u64> {
        id_ms(&self.id)
    }
}

/// The milliseconds part of a stream id.
pub fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// A reply that is not what the command returns.
fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected stream reply",
        what.to_owned(),
    ))
}

/// A string, from a bulk or simple string (lossy UTF-8).
fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Entries from an array of `[id, [field, value, ...] | nil]`.
pub fn entries(v: Value) -> RedisResult<Vec<Entry>> {
    let items = match v {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        _ => return Err(unexpected("entries are not an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            return Err(unexpected("an entry is not an array"));
        };
        let mut parts = parts.into_iter();
        let id = parts
            .next()
            .as_ref()
            .and_then(string)
            .ok_or_else(|| unexpected("an entry has no id"))?;
        let fields = match parts.next() {
            None | Some(Value::Nil) => None,
            Some(Value::Array(flat)) => Some(
                flat.chunks(2)
                    .filter_map(|kv| Some((string(kv.first()?)?, string(kv.get(1)?)?)))
                    .collect(),
            ),
            Some(Value::Map(pairs)) => Some(
                pairs
                    .iter()
                    .filter_map(|(k, v)| Some((string(k)?, string(v)?)))
                    .collect(),
            ),
            Some(_) => return Err(unexpected("entry fields are not an array")),
        };
        out.push(Entry { id, fields });
    }
    Ok(out)
}

/// The entries of an `XREADGROUP` reply on one stream: nil (nothing new),
/// `[[stream, entries]]` (RESP2) or `{stream: entries}` (RESP3).
pub fn read_reply(v: Value) -> RedisResult<Vec<Entry>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => entries(pair.into_iter().nth(1).unwrap_or(Value::Nil)),
            Some(_) => Err(unexpected("XREADGROUP stream is not a pair")),
        },
        Value::Map(pairs) => match pairs.into_iter().next() {
            None => Ok(Vec::new()),
            Some((_, list)) => entries(list),
        },
        _ => Err(unexpected("XREADGROUP reply")),
    }
}

/// What `XAUTOCLAIM` answered: the cursor to go on from (`0-0` when the
/// scan is complete), the entries now ours, and the ids it dropped from
/// the pending list because they were deleted from the stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Where the next call starts.
    pub cursor: String,
    /// The claimed entries.
    pub entries: Vec<Entry>,
    /// Pending ids whose entries no longer exist.
    pub deleted: Vec<String>,
}

/// Reads an `XAUTOCLAIM` reply (Redis 7: three elements; 6.2: two).
pub fn autoclaim_reply(v: Value) -> RedisResult<Claimed> {
    let Value::Array(parts) = v else {
        return Err(unexpected("XAUTOCLAIM reply is not an array"));
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .as_ref()
        .and_then(string)
        .ok_or_else(|| unexpected("XAUTOCLAIM has no cursor"))?;
    let claimed = entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.iter().filter_map(string).collect(),
        _ => Vec::new(),
    };
    // Redis 6.2 returns deleted entries as nil elements instead.
    let (entries, gone): (Vec<Entry>, Vec<Entry>) =
        claimed.into_iter().partition(|e| e.fields.is_some());
    let mut deleted = deleted;
    deleted.extend(gone.into_iter().map(|e| e.id));
    Ok(Claimed {
        cursor,
        entries,
        deleted,
    })
}

/// The POST body for `entries` of `stream` (see the module
/// documentation).
pub fn body<'a>(stream: &str, entries: impl IntoIterator<Item = &'a Entry>) -> Vec<u8> {
    let events: Vec<J> = entries
        .into_iter()
        .map(|entry| {
            let mut object = Map::new();
            for (key, value) in entry.fields.iter().flatten() {
                if key == "id" || key == "stream" {
                    continue;
                }
                let json = match value.parse::<u64>() {
                    Ok(n) if NUMERIC_FIELDS.contains(&key.as_str()) => J::from(n),
                    _ => J::from(value.as_str()),
                };
                object.insert(key.clone(), json);
            }
            object.insert("id".to_owned(), J::from(entry.id.as_str()));
            object.insert("stream".to_owned(), J::from(stream));
            J::Object(object)
        })
        .collect();
    let mut root = Map::new();
    root.insert("events".to_owned(), J::Array(events));
    serde_json::to_vec(&J::Object(root)).expect("JSON of strings and numbers serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn raw(id: &str, fields: &[(&str, &str)]) -> Value {
        let flat = fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(flat)])
    }

    #[test]
    fn xreadgroup_replies() {
        assert_eq!(read_reply(Value::Nil).unwrap(), vec![]);
        let list = Value::Array(vec![
            raw("1-0", &[("type", "connect"), ("user", "u1")]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("broker:events"),
            list.clone(),
        ])]);
        let got = read_reply(resp2).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "1-0");
        assert_eq!(got[0].kind(), Some("connect"));
        assert_eq!(got[0].ms(), Some(1));
        assert_eq!(got[1].fields, None, "a deleted entry has no fields");
        let resp3 = Value::Map(vec![(bulk("broker:events"), list)]);
        assert_eq!(read_reply(resp3).unwrap(), got);
        assert!(read_reply(Value::Int(3)).is_err());
    }

    #[test]
    fn xautoclaim_replies() {
        let v = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![raw("3-0", &[("type", "join")])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let c = autoclaim_reply(v).unwrap();
        assert_eq!(c.cursor, "5-0");
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.deleted, vec!["4-0".to_owned()]);
        // Redis 6.2: two elements, deleted entries as nil fields.
        let v = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![bulk("6-0"), Value::Nil])]),
        ]);
        let c = autoclaim_reply(v).unwrap();
        assert_eq!(c.cursor, "0-0");
        assert!(c.entries.is_empty());
        assert_eq!(c.deleted, vec!["6-0".to_owned()]);
    }

    #[test]
    fn body_is_strings_but_ts_and_duration() {
        let e = Entry {
            id: "1700000000000-0".into(),
            fields: Some(vec![
                ("type".into(), "disconnect".into()),
                ("user".into(), "u1".into()),
                ("conn".into(), "n1.x.1".into()),
                ("node".into(), "n1".into()),
                ("reason".into(), "client".into()),
                ("duration_ms".into(), "1500".into()),
                ("ts".into(), "1700000000000".into()),
                ("id".into(), "spoofed".into()),
            ]),
        };
        let odd = Entry {
            id: "2-0".into(),
            fields: Some(vec![
                ("type".into(), "join".into()),
                ("ts".into(), "soon".into()),
            ]),
        };
        let got: J = serde_json::from_slice(&body("broker:events", [&e, &odd])).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"events": [
                {"id": "1700000000000-0", "type": "disconnect", "user": "u1", "conn": "n1.x.1",
                 "node": "n1", "reason": "client", "duration_ms": 1500, "ts": 1_700_000_000_000u64,
                 "stream": "broker:events"},
                {"id": "2-0", "type": "join", "ts": "soon", "stream": "broker:events"},
            ]})
        );
        assert_eq!(body("s", std::iter::empty()), br#"{"events":[]}"#);
    }
}
