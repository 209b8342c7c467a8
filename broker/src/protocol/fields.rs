//! Reading one frame map: the values of the keys a frame type knows, as raw
//! MessagePack, each checked once by [`Reader::value`]; unknown keys are
//! skipped, so later protocol versions can add fields.

use thiserror::Error;

use crate::msgpack::{self, as_str, as_uint, Item, Reader};

/// Why a frame was refused. `id` is the request id when it could be read, so
/// the `err` `bad_frame` can echo it; `reason` is a short English text for the
/// `err`'s `msg`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct FrameError {
    /// The frame's `id`, when it was an integer.
    pub id: Option<i64>,
    /// What was wrong.
    pub reason: String,
}

/// At most this many characters of client text are quoted back in errors.
const QUOTE_CHARS: usize = 32;

/// `s` in quotes, cut to [`QUOTE_CHARS`] characters.
pub(super) fn quote(s: &str) -> String {
    let mut cut: String = s.chars().take(QUOTE_CHARS).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// The values of the known keys of one frame map, as raw MessagePack.
pub(super) struct Fields<'a, const N: usize> {
    keys: &'static [&'static str; N],
    values: [Option<&'a [u8]>; N],
}

impl<'a, const N: usize> Fields<'a, N> {
    /// The raw value of `key`, if the map had it.
    pub(super) fn raw(&self, key: &str) -> Option<&'a [u8]> {
        let index = self.keys.iter().position(|k| *k == key)?;
        self.values.get(index).copied().flatten()
    }

    /// A required field, read with `parse`; `what` names the expected type
    /// in the error.
    pub(super) fn required<T>(
        &self,
        key: &str,
        what: &str,
        parse: impl FnOnce(&'a [u8]) -> Option<T>,
    ) -> Result<T, String> {
        let raw = self
            .raw(key)
            .ok_or_else(|| format!("missing field `{key}`"))?;
        parse(raw).ok_or_else(|| format!("field `{key}` must be {what}"))
    }

    /// An optional field: absent and `nil` are both `None`.
    pub(super) fn optional<T>(
        &self,
        key: &str,
        what: &str,
        parse: impl FnOnce(&'a [u8]) -> Option<T>,
    ) -> Result<Option<T>, String> {
        match self.raw(key) {
            None | Some([0xc0]) => Ok(None),
            Some(raw) => parse(raw)
                .map(Some)
                .ok_or_else(|| format!("field `{key}` must be {what}")),
        }
    }

    pub(super) fn str(&self, key: &str) -> Result<&'a str, String> {
        self.required(key, "a string", as_str)
    }

    pub(super) fn string(&self, key: &str) -> Result<String, String> {
        self.str(key).map(str::to_owned)
    }

    pub(super) fn uint(&self, key: &str) -> Result<u64, String> {
        self.required(key, "a non-negative integer", as_uint)
    }

    /// The `data` field decoded to JSON.
    pub(super) fn json(&self, key: &str) -> Result<serde_json::Value, String> {
        let raw = self
            .raw(key)
            .ok_or_else(|| format!("missing field `{key}`"))?;
        msgpack::to_json(raw).map_err(|e| format!("field `{key}`: {e}"))
    }
}

/// Reads one frame map, keeping the raw values of `keys`. Returns what was
/// read even on error, so the caller can still find the request id.
pub(super) fn scan<'a, const N: usize>(
    bytes: &'a [u8],
    keys: &'static [&'static str; N],
) -> (Fields<'a, N>, Result<(), String>) {
    let mut fields = Fields {
        keys,
        values: [None; N],
    };
    let result = scan_into(bytes, &mut fields);
    (fields, result)
}

fn scan_into<'a, const N: usize>(
    bytes: &'a [u8],
    fields: &mut Fields<'a, N>,
) -> Result<(), String> {
    let mut r = Reader::new(bytes);
    let entries = match r.item() {
        Ok(Item::Map(n)) => n,
        Ok(_) => return Err("frame is not a MessagePack map".to_owned()),
        Err(e) => return Err(e.to_string()),
    };
    // `item` checked that the input holds 2 × `entries` values' worth of
    // bytes, so this loop is bounded by the input length.
    let mut first_error = None;
    for _ in 0..entries {
        let key_raw = r.value().map_err(|e| e.to_string())?;
        let key = as_str(key_raw);
        let slot = key.and_then(|k| fields.keys.iter().position(|known| *known == k));
        let value = r.value().map_err(|e| match (key, slot) {
            (Some(k), Some(_)) => format!("field `{k}`: {e}"),
            _ => e.to_string(),
        })?;
        match (key, slot.and_then(|i| fields.values.get_mut(i))) {
            (None, _) => {
                first_error.get_or_insert_with(|| "map keys must be strings".to_owned());
            }
            (Some(k), Some(stored)) => {
                if stored.is_some() {
                    first_error.get_or_insert_with(|| format!("duplicate field `{k}`"));
                } else {
                    *stored = Some(value);
                }
            }
            // Unknown keys are ignored.
            (Some(_), None) => {}
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    if r.at_end() {
        Ok(())
    } else {
        Err("trailing bytes after the frame".to_owned())
    }
}
