//! [`SioValue`]: a Socket.IO argument, JSON plus binary buffers.
//!
//! Why an enum of our own rather than `serde_json::Value` with a side table
//! of buffers: a buffer is a value in its own place (`["file", <bytes>]`),
//! for both parsers. With the default parser it travels as a placeholder
//! plus an attachment; with the msgpack parser as a `bin` in place. A side
//! table would make the msgpack form go through placeholders it never had,
//! and an object a client sent that merely looks like a placeholder
//! (`{"_placeholder":true,"num":0}` in a plain EVENT) could not be told from
//! a real one. With [`SioValue::Binary`] both encoders place the bytes
//! exactly where they are, and the conversion to the broker's MessagePack is
//! one-to-one (`bin`). Objects keep their key order (a `Vec` of pairs), as
//! JavaScript does, so what a client sent is forwarded in its order.
//!
//! Decoding (JSON text, MessagePack) checks the depth ([`MAX_DEPTH`]) while
//! parsing, before anything recurses on the value.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use crate::msgpack::{Item, Reader, WireError, Writer, MAX_DEPTH};

/// The pairs of an object, in their order; keys are unique.
pub type Object = Vec<(String, SioValue)>;

/// One Socket.IO value: JSON, or a binary buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum SioValue {
    /// `null` (also JavaScript `undefined` inside a msgpack value).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number (an integer in the u64/i64 range, or a finite float).
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// A binary buffer (`Buffer` / `ArrayBuffer` on the JavaScript side).
    Binary(Vec<u8>),
    /// An array.
    Array(Vec<SioValue>),
    /// An object, keys in their order.
    Object(Object),
}

impl SioValue {
    /// A string value.
    pub fn str(s: &str) -> SioValue {
        SioValue::String(s.to_owned())
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SioValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&SioValue> {
        match self {
            SioValue::Object(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// True when a [`SioValue::Binary`] is anywhere inside.
    pub fn has_binary(&self) -> bool {
        let mut stack = vec![self];
        while let Some(v) = stack.pop() {
            match v {
                SioValue::Binary(_) => return true,
                SioValue::Array(items) => stack.extend(items),
                SioValue::Object(pairs) => stack.extend(pairs.iter().map(|(_, v)| v)),
                _ => {}
            }
        }
        false
    }

    /// Converts from `serde_json::Value` (which has no binary).
    pub fn from_json(value: serde_json::Value) -> SioValue {
        use serde_json::Value;
        match value {
            Value::Null => SioValue::Null,
            Value::Bool(b) => SioValue::Bool(b),
            Value::Number(n) => SioValue::Number(n),
            Value::String(s) => SioValue::String(s),
            Value::Array(items) => {
                SioValue::Array(items.into_iter().map(SioValue::from_json).collect())
            }
            Value::Object(map) => SioValue::Object(
                map.into_iter()
                    .map(|(k, v)| (k, SioValue::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts to `serde_json::Value`, a buffer as the array of its byte
    /// numbers (as [`crate::msgpack::to_json`] shows `bin`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(Ser {
            value: self,
            buffers: None,
        })
        .unwrap_or(serde_json::Value::Null)
    }

    /// Writes the value as MessagePack (a buffer as `bin`, objects as maps
    /// with `str` keys).
    pub fn write_msgpack(&self, out: &mut Writer) {
        match self {
            SioValue::Null => {
                out.nil();
            }
            SioValue::Bool(b) => {
                out.bool(*b);
            }
            SioValue::Number(n) => {
                if let Some(u) = n.as_u64() {
                    out.uint(u);
                } else if let Some(i) = n.as_i64() {
                    out.int(i);
                } else {
                    out.f64(n.as_f64().unwrap_or(0.0));
                }
            }
            SioValue::String(s) => {
                out.str(s);
            }
            SioValue::Binary(b) => {
                out.bin(b);
            }
            SioValue::Array(items) => {
                out.array(items.len());
                for item in items {
                    item.write_msgpack(out);
                }
            }
            SioValue::Object(pairs) => {
                out.map(pairs.len());
                for (k, v) in pairs {
                    out.str(k);
                    v.write_msgpack(out);
                }
            }
        }
    }

    /// Reads one MessagePack value (as [`crate::msgpack::Reader::value`]
    /// checks it: depth, UTF-8, lengths). `bin` and the ext type 0 of
    /// notepack (`ArrayBuffer`) are buffers; notepack's `undefined` (fixext
    /// 1, type 0) is `null`; its `Date` (fixext 8, type 0) is the number of
    /// milliseconds; NaN and infinities are `null`.
    ///
    /// # Errors
    ///
    /// The reader's errors, and [`WireError::InvalidPayload`] for a map key
    /// that is not a string, a repeated key, or another ext type.
    pub fn from_msgpack(raw: &[u8]) -> Result<SioValue, WireError> {
        let mut reader = Reader::new(raw);
        reader.value()?;
        reader.finish()?;
        // Recursion is bounded by MAX_DEPTH, which `value` enforced.
        read_msgpack(&mut Reader::new(raw), raw)
    }
}

/// True for notepack's `undefined`: fixext 1 of type 0 (`d4 00 00`).
pub(crate) fn is_undefined(raw: &[u8]) -> bool {
    raw == [0xd4, 0x00, 0x00]
}

fn invalid(what: &str) -> WireError {
    WireError::InvalidPayload(what.to_owned())
}

/// `raw` is the whole input `r` reads, for the marker byte that tells
/// notepack's fixext forms from ext 8/16/32.
fn read_msgpack(r: &mut Reader<'_>, raw: &[u8]) -> Result<SioValue, WireError> {
    let marker = raw.get(r.position()).copied();
    let float = |f: f64| serde_json::Number::from_f64(f).map_or(SioValue::Null, SioValue::Number);
    Ok(match r.item()? {
        Item::Nil => SioValue::Null,
        Item::Bool(b) => SioValue::Bool(b),
        Item::Uint(n) => SioValue::Number(n.into()),
        Item::Int(n) => SioValue::Number(n.into()),
        Item::F32(f) => float(f64::from(f)),
        Item::F64(f) => float(f),
        Item::Str(s) => SioValue::String(s.to_owned()),
        Item::Bin(b) => SioValue::Binary(b.to_vec()),
        Item::Ext(0, data) => match (marker, <[u8; 8]>::try_from(data)) {
            // fixext 1: `undefined`.
            (Some(0xd4), _) => SioValue::Null,
            // fixext 8: a `Date`, milliseconds since the epoch.
            (Some(0xd7), Ok(ms)) => SioValue::Number(i64::from_be_bytes(ms).into()),
            // ext 8/16/32: an `ArrayBuffer`.
            (Some(0xc7..=0xc9), _) => SioValue::Binary(data.to_vec()),
            _ => return Err(invalid("unsupported MessagePack extension type")),
        },
        Item::Ext(..) => return Err(invalid("unsupported MessagePack extension type")),
        Item::Array(n) => {
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_msgpack(r, raw)?);
            }
            SioValue::Array(items)
        }
        Item::Map(n) => {
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let key = match r.item()? {
                    Item::Str(s) => s.to_owned(),
                    _ => return Err(invalid("map key is not a string")),
                };
                pairs.push((key, read_msgpack(r, raw)?));
            }
            check_unique(&pairs).map_err(|()| invalid("repeated map key"))?;
            SioValue::Object(pairs)
        }
    })
}

/// `Err` when two pairs share a key.
fn check_unique(pairs: &[(String, SioValue)]) -> Result<(), ()> {
    if pairs.len() < 2 {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(pairs.len());
    if pairs.iter().all(|(k, _)| seen.insert(k.as_str())) {
        Ok(())
    } else {
        Err(())
    }
}

// ---------------------------------------------------------------------------
// JSON text -> SioValue, depth-checked while parsing (serde_json's own limit
// of 128 stops its recursion; ours stops at MAX_DEPTH first). Repeated keys
// are refused: JSON.stringify never writes them.

/// Why JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not one JSON value (syntax, trailing text, repeated key).
    Invalid,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Parses one JSON value.
pub(crate) fn parse_json(text: &str) -> Result<SioValue, JsonError> {
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = JsonSeed {
        depth: 0,
        too_deep: &too_deep,
    };
    match seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        Ok(v) => Ok(v),
        Err(_) if too_deep.get() => Err(JsonError::TooDeep),
        Err(_) => Err(JsonError::Invalid),
    }
}

struct JsonSeed<'a> {
    /// Containers enclosing the value about to be read.
    depth: usize,
    too_deep: &'a Cell<bool>,
}

impl JsonSeed<'_> {
    fn child(&self) -> Result<JsonSeed<'_>, ()> {
        if self.depth >= MAX_DEPTH {
            self.too_deep.set(true);
            return Err(());
        }
        Ok(JsonSeed {
            depth: self.depth + 1,
            too_deep: self.too_deep,
        })
    }
}

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = SioValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SioValue, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = SioValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<SioValue, E> {
        Ok(SioValue::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SioValue, E> {
        Ok(SioValue::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SioValue, E> {
        Ok(SioValue::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<SioValue, E> {
        serde_json::Number::from_f64(v)
            .map(SioValue::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SioValue, E> {
        Ok(SioValue::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SioValue, E> {
        Ok(SioValue::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<SioValue, E> {
        Ok(SioValue::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SioValue, A::Error> {
        use serde::de::Error;
        let mut items = Vec::new();
        loop {
            let child = self.child().map_err(|()| A::Error::custom("too deep"))?;
            match seq.next_element_seed(child)? {
                Some(v) => items.push(v),
                None => break,
            }
        }
        Ok(SioValue::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SioValue, A::Error> {
        use serde::de::Error;
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = self.child().map_err(|()| A::Error::custom("too deep"))?;
            pairs.push((key, map.next_value_seed(child)?));
        }
        check_unique(&pairs).map_err(|()| A::Error::custom("repeated key"))?;
        Ok(SioValue::Object(pairs))
    }
}

// ---------------------------------------------------------------------------
// SioValue -> JSON text.

/// Serializes a value as JSON. Each buffer is, with `buffers`, replaced by
/// the placeholder `{"_placeholder":true,"num":n}` and collected (numbered
/// depth-first in order, as the reference deconstructs), or without, written
/// as the array of its byte numbers.
pub(crate) struct Ser<'a, 'b> {
    pub(crate) value: &'a SioValue,
    pub(crate) buffers: Option<&'b RefCell<Vec<&'a [u8]>>>,
}

impl Serialize for Ser<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let child = |value| Ser {
            value,
            buffers: self.buffers,
        };
        match self.value {
            SioValue::Null => s.serialize_unit(),
            SioValue::Bool(b) => s.serialize_bool(*b),
            SioValue::Number(n) => n.serialize(s),
            SioValue::String(text) => s.serialize_str(text),
            SioValue::Binary(bytes) => match self.buffers {
                Some(buffers) => {
                    let num = {
                        let mut buffers = buffers.borrow_mut();
                        buffers.push(bytes);
                        buffers.len() - 1
                    };
                    let mut map = s.serialize_map(Some(2))?;
                    map.serialize_entry("_placeholder", &true)?;
                    map.serialize_entry("num", &num)?;
                    map.end()
                }
                None => s.collect_seq(bytes.iter()),
            },
            SioValue::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&child(item))?;
                }
                seq.end()
            }
            SioValue::Object(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, &child(v))?;
                }
                map.end()
            }
        }
    }
}

/// JSON text of a value, buffers as byte-number arrays.
pub(crate) fn json_text(value: &SioValue) -> String {
    // Strings, finite numbers and containers always serialize.
    serde_json::to_string(&Ser {
        value,
        buffers: None,
    })
    .unwrap_or_default()
}
