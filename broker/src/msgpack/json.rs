//! MessagePack <-> JSON: for the admin API, logs and tests ([`to_json`]),
//! and for `BROKER.PUBLISH ... FORMAT json` ([`from_json`]).

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{check, Item, Reader, WireError, Writer, MAX_DEPTH};

/// Decodes one MessagePack value into a `serde_json::Value`, for tests, logs
/// and the gateway's JSON admin API.
///
/// The value is first checked as by [`check`]. Mappings that JSON
/// lacks: `bin` → array of byte numbers; ext → `{"type": t, "data": [bytes]}`;
/// a non-string map key → its JSON text (`1` → `"1"`); NaN and infinite
/// floats → `null`.
///
/// # Errors
///
/// The errors of [`check`].
pub fn to_json(bytes: &[u8]) -> Result<serde_json::Value, WireError> {
    check(bytes)?;
    let mut reader = Reader::new(bytes);
    // Recursion is bounded by MAX_DEPTH, which `check` enforced.
    value_to_json(&mut reader)
}

/// Longest JSON text of a non-string map key in [`to_json`].
pub(super) const MAX_KEY_TEXT: usize = 256;

fn value_to_json(r: &mut Reader<'_>) -> Result<serde_json::Value, WireError> {
    use serde_json::Value;
    let bytes_json = |b: &[u8]| Value::Array(b.iter().map(|&x| Value::from(x)).collect());
    Ok(match r.item()? {
        Item::Nil => Value::Null,
        Item::Bool(b) => Value::Bool(b),
        Item::Uint(n) => Value::from(n),
        Item::Int(n) => Value::from(n),
        Item::F32(f) => {
            serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        }
        Item::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Item::Str(s) => Value::String(s.to_owned()),
        Item::Bin(b) => bytes_json(b),
        Item::Ext(ty, data) => {
            let mut map = serde_json::Map::new();
            map.insert("type".to_owned(), Value::from(ty));
            map.insert("data".to_owned(), bytes_json(data));
            Value::Object(map)
        }
        Item::Array(n) => {
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value_to_json(r)?);
            }
            Value::Array(items)
        }
        Item::Map(n) => {
            let mut map = serde_json::Map::new();
            for _ in 0..n {
                // JSON keys are strings: another key is written as its
                // JSON text, cut to MAX_KEY_TEXT bytes. Without the cut,
                // maps used as keys of maps used as keys ... grow
                // exponentially with the depth (each level escapes the
                // quotes of the one below): found by the fuzzer.
                let key = match value_to_json(r)? {
                    Value::String(s) => s,
                    other => {
                        let mut text = other.to_string();
                        if text.len() > MAX_KEY_TEXT {
                            let mut end = MAX_KEY_TEXT;
                            while !text.is_char_boundary(end) {
                                end -= 1;
                            }
                            text.truncate(end);
                        }
                        text
                    }
                };
                map.insert(key, value_to_json(r)?);
            }
            Value::Object(map)
        }
    })
}

// ---------------------------------------------------------------------------
// JSON → MessagePack, streamed straight from serde_json's parser into the
// output (no intermediate `serde_json::Value`), which keeps object key order
// and costs one pass.

/// Converts JSON text to one MessagePack value, keeping the order of object
/// keys: objects -> maps with `str` keys, arrays -> arrays, integers -> the
/// smallest MessagePack int (u64/i64 range), other numbers -> float 64,
/// strings -> `str`, booleans -> bool, `null` -> nil. Nesting is limited to
/// [`MAX_DEPTH`] as for MessagePack values.
///
/// # Errors
///
/// [`WireError::InvalidJson`] for text serde_json refuses,
/// [`WireError::TooDeep`] past the depth limit.
pub fn from_json(text: &[u8]) -> Result<Vec<u8>, WireError> {
    let too_deep = Cell::new(false);
    let mut buf = Writer::with_capacity(text.len() + 8);
    let mut de = serde_json::Deserializer::from_slice(text);
    let seed = JsonToMsgpack {
        buf: &mut buf,
        depth: 0,
        too_deep: &too_deep,
    };
    let result = seed.deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(buf.into_vec()),
        Err(_) if too_deep.get() => Err(WireError::TooDeep),
        Err(e) => Err(WireError::InvalidJson(e.to_string())),
    }
}

/// A serde seed/visitor that writes each JSON value it is handed as
/// MessagePack into `buf`.
struct JsonToMsgpack<'o> {
    buf: &'o mut Writer,
    /// Containers enclosing the value about to be read.
    depth: usize,
    /// Set when the error being returned is the depth limit, so the caller
    /// can report [`WireError::TooDeep`] rather than a JSON syntax error.
    too_deep: &'o Cell<bool>,
}

impl JsonToMsgpack<'_> {
    /// A seed for a child value of the current container.
    fn child(&mut self) -> JsonToMsgpack<'_> {
        JsonToMsgpack {
            buf: &mut *self.buf,
            depth: self.depth + 1,
            too_deep: self.too_deep,
        }
    }

    /// Starts a container: checks the depth, reserves one byte for its
    /// header and returns the header's position.
    fn open<E: serde::de::Error>(&mut self) -> Result<usize, E> {
        if self.depth >= MAX_DEPTH {
            self.too_deep.set(true);
            return Err(E::custom("nested too deep"));
        }
        let vec = self.buf.as_mut_vec();
        let start = vec.len();
        vec.push(0);
        Ok(start)
    }

    /// Writes the header of a finished container of `n` elements at `start`:
    /// the one reserved byte for up to 15 elements (the common case, no
    /// copy), else a 3- or 5-byte header spliced in.
    fn close<E: serde::de::Error>(
        &mut self,
        start: usize,
        n: usize,
        [fix, m16, m32]: [u8; 3],
    ) -> Result<(), E> {
        let (header, header_len): ([u8; 5], usize) = if n <= 15 {
            ([fix | n as u8, 0, 0, 0, 0], 1)
        } else if let Ok(n) = u16::try_from(n) {
            let [a, b] = n.to_be_bytes();
            ([m16, a, b, 0, 0], 3)
        } else if let Ok(n) = u32::try_from(n) {
            let [a, b, c, d] = n.to_be_bytes();
            ([m32, a, b, c, d], 5)
        } else {
            return Err(E::custom("too many elements"));
        };
        let header = header.get(..header_len).unwrap_or(&[]);
        let vec = self.buf.as_mut_vec();
        if start >= vec.len() {
            return Err(E::custom("internal error: lost container header"));
        }
        vec.splice(start..=start, header.iter().copied());
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for JsonToMsgpack<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonToMsgpack<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.buf.bool(v);
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.buf.int(v);
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.buf.uint(v);
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.buf.f64(v);
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.buf.str(v);
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.buf.nil();
        Ok(())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.buf.nil();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let start = self.open::<A::Error>()?;
        let mut n = 0usize;
        while seq.next_element_seed(self.child())?.is_some() {
            n += 1;
        }
        self.close(start, n, [0x90, 0xdc, 0xdd])
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let start = self.open::<A::Error>()?;
        let mut n = 0usize;
        // JSON keys are strings; serde_json hands them to `visit_str`.
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
            n += 1;
        }
        self.close(start, n, [0x80, 0xde, 0xdf])
    }
}
