//! Publish payloads: the `FORMAT` of `BROKER.PUBLISH` / `BROKER.BROADCAST`
//! and the conversion of a payload into the one MessagePack value that
//! becomes a `msg` frame's `data`.

use crate::msgpack::{self, WireError, Writer};

/// Payload formats of `BROKER.PUBLISH ... FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One MessagePack value, checked and copied (the default).
    #[default]
    Msgpack,
    /// JSON text, converted to MessagePack.
    Json,
    /// Bytes delivered as a MessagePack string; must be UTF-8.
    String,
}

impl Format {
    /// Parses a `FORMAT` argument, ignoring ASCII case: `msgpack`, `json` or
    /// `string`.
    pub fn parse(s: &str) -> Option<Format> {
        [Format::Msgpack, Format::Json, Format::String]
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
    }

    /// The lower-case name, as accepted by [`Format::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Msgpack => "msgpack",
            Format::Json => "json",
            Format::String => "string",
        }
    }
}

/// Turns a `BROKER.PUBLISH` payload into one MessagePack value, the frame's
/// `data`.
///
/// - [`Format::Msgpack`]: checked with [`msgpack::check`] and copied.
/// - [`Format::Json`]: parsed with serde_json and re-encoded, keeping the
///   order of object keys: objects → maps with `str` keys, arrays → arrays,
///   integers → the smallest MessagePack int (u64/i64 range), other numbers →
///   float 64, strings → `str`, booleans → bool, `null` → nil. Nesting is
///   limited to [`msgpack::MAX_DEPTH`] as for MessagePack payloads.
/// - [`Format::String`]: must be UTF-8; encoded as a MessagePack `str`.
///
/// # Errors
///
/// The errors of [`msgpack::check`]; [`WireError::InvalidJson`] or
/// [`WireError::TooDeep`] for JSON; [`WireError::NotUtf8`] for a string.
pub fn encode_payload(format: Format, payload: &[u8]) -> Result<Vec<u8>, WireError> {
    match format {
        Format::Msgpack => {
            msgpack::check(payload)?;
            Ok(payload.to_vec())
        }
        Format::Json => msgpack::from_json(payload),
        Format::String => {
            let text = std::str::from_utf8(payload).map_err(|_| WireError::NotUtf8)?;
            let mut out = Writer::with_capacity(text.len() + 5);
            out.str(text);
            Ok(out.into_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::msgpack::testing::{map_keys, mp};

    #[test]
    fn formats() {
        assert_eq!(Format::parse("msgpack"), Some(Format::Msgpack));
        assert_eq!(Format::parse("JSON"), Some(Format::Json));
        assert_eq!(Format::parse("String"), Some(Format::String));
        assert_eq!(Format::parse("text"), None);
        assert_eq!(Format::parse(""), None);
        assert_eq!(Format::default(), Format::Msgpack);
        for f in [Format::Msgpack, Format::Json, Format::String] {
            assert_eq!(Format::parse(f.as_str()), Some(f));
        }
    }

    #[test]
    fn payload_msgpack_is_checked_and_copied() {
        let value = mp(&json!({"text": "hi"}));
        assert_eq!(encode_payload(Format::Msgpack, &value), Ok(value.clone()));
        assert_eq!(
            encode_payload(Format::Msgpack, &value[..3]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            encode_payload(Format::Msgpack, b"{\"text\":\"hi\"}"),
            Err(WireError::TrailingBytes)
        );
    }

    #[test]
    fn payload_string() {
        assert_eq!(
            encode_payload(Format::String, b"hi"),
            Ok(vec![0xa2, b'h', b'i'])
        );
        assert_eq!(encode_payload(Format::String, b""), Ok(vec![0xa0]));
        let long = "x".repeat(300);
        let encoded = encode_payload(Format::String, long.as_bytes()).unwrap();
        assert_eq!(&encoded[..3], &[0xda, 0x01, 0x2c]);
        assert_eq!(msgpack::to_json(&encoded), Ok(json!(long)));
        assert_eq!(
            encode_payload(Format::String, &[0xff, 0xfe]),
            Err(WireError::NotUtf8)
        );
    }

    #[test]
    fn payload_json_converts_values() {
        let cases = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(127),
            json!(128),
            json!(-1),
            json!(-33),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-0.25),
            json!(1e300),
            json!("héllo \"quoted\" \n"),
            json!([]),
            json!({}),
            json!([1, "two", [3], {"four": 4}]),
            json!({"text": "hi", "n": 1, "nested": {"list": [null, true, 2.5]}}),
        ];
        for case in cases {
            let text = serde_json::to_vec(&case).unwrap();
            let encoded = encode_payload(Format::Json, &text).unwrap();
            assert_eq!(msgpack::check(&encoded), Ok(()), "{case}");
            assert_eq!(msgpack::to_json(&encoded), Ok(case.clone()), "{case}");
            let via_serde: Value = rmp_serde::from_slice(&encoded).unwrap();
            assert_eq!(via_serde, case);
        }
    }

    #[test]
    fn payload_json_picks_compact_encodings() {
        assert_eq!(encode_payload(Format::Json, b"1"), Ok(vec![0x01]));
        assert_eq!(encode_payload(Format::Json, b"-1"), Ok(vec![0xff]));
        assert_eq!(
            encode_payload(Format::Json, b"300"),
            Ok(vec![0xcd, 0x01, 0x2c])
        );
        assert_eq!(
            encode_payload(Format::Json, b"-200"),
            Ok(vec![0xd1, 0xff, 0x38])
        );
        assert_eq!(
            encode_payload(Format::Json, b"1.0"),
            Ok([vec![0xcb], 1.0f64.to_be_bytes().to_vec()].concat())
        );
        assert_eq!(encode_payload(Format::Json, b"null"), Ok(vec![0xc0]));
        assert_eq!(
            encode_payload(Format::Json, b" [true, \"a\"] \n"),
            Ok(vec![0x92, 0xc3, 0xa1, b'a'])
        );
        assert_eq!(
            encode_payload(Format::Json, br#"{"a":{}}"#),
            Ok(vec![0x81, 0xa1, b'a', 0x80])
        );
    }

    #[test]
    fn payload_json_keeps_key_order() {
        let encoded =
            encode_payload(Format::Json, br#"{"zeta":1,"alpha":2,"mid":{"b":1,"a":2}}"#).unwrap();
        assert_eq!(map_keys(&encoded), ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn payload_json_large_containers() {
        for n in [15usize, 16, 65535, 65536] {
            let list: Vec<u8> = vec![7; n];
            let text = serde_json::to_vec(&list).unwrap();
            let encoded = encode_payload(Format::Json, &text).unwrap();
            let expected_header: &[u8] = match n {
                15 => &[0x9f],
                16 => &[0xdc, 0, 16],
                65535 => &[0xdc, 0xff, 0xff],
                _ => &[0xdd, 0, 1, 0, 0],
            };
            assert!(encoded.starts_with(expected_header), "{n}");
            assert_eq!(encoded.len(), expected_header.len() + n);
            assert_eq!(msgpack::check(&encoded), Ok(()));

            let map: serde_json::Map<String, Value> =
                (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
            let text = serde_json::to_vec(&map).unwrap();
            let encoded = encode_payload(Format::Json, &text).unwrap();
            assert_eq!(msgpack::to_json(&encoded), Ok(Value::Object(map)), "{n}");
        }
        // Big containers nested inside others get their headers in place.
        let doc = json!({"a": vec![1; 20], "b": [vec![2; 70000], {"c": vec!["x"; 17]}]});
        let encoded = encode_payload(Format::Json, &serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(msgpack::to_json(&encoded), Ok(doc));
    }

    #[test]
    fn payload_json_limits_depth() {
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(encode_payload(Format::Json, ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            encode_payload(Format::Json, deep.as_bytes()),
            Err(WireError::TooDeep)
        );
        let deeper = format!("{}{}", "{\"k\":".repeat(200), "}".repeat(200));
        assert_eq!(
            encode_payload(Format::Json, deeper.as_bytes()),
            Err(WireError::TooDeep)
        );
    }

    #[test]
    fn payload_json_rejects_bad_text() {
        for text in [
            &b""[..],
            b"{",
            b"[1,]",
            b"{\"a\" 1}",
            b"1 2",
            b"{} x",
            b"'single'",
            b"\"\xff\"",
            b"NaN",
        ] {
            assert!(
                matches!(
                    encode_payload(Format::Json, text),
                    Err(WireError::InvalidJson(_))
                ),
                "{text:?}"
            );
        }
    }
}
