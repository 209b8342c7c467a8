//! Unit tests of the validator and the JSON conversions.

use serde_json::{json, Value};

use super::json::MAX_KEY_TEXT;
use super::testing::{mp, nested_arrays};
use super::*;

#[test]
fn check_accepts_every_kind_of_value() {
    let good: Vec<Vec<u8>> = vec![
        vec![0xc0],
        vec![0xc2],
        vec![0xc3],
        vec![0x00],
        vec![0x7f],
        vec![0xe0],
        vec![0xff],
        vec![0xcc, 1],
        vec![0xcd, 1, 2],
        vec![0xce, 1, 2, 3, 4],
        vec![0xcf, 1, 2, 3, 4, 5, 6, 7, 8],
        vec![0xd0, 0x80],
        vec![0xd1, 1, 2],
        vec![0xd2, 1, 2, 3, 4],
        vec![0xd3, 1, 2, 3, 4, 5, 6, 7, 8],
        vec![0xca, 0x3f, 0x80, 0, 0],
        vec![0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0],
        vec![0xa0],
        vec![0xa2, b'h', b'i'],
        vec![0xd9, 2, b'h', b'i'],
        vec![0xda, 0, 2, b'h', b'i'],
        vec![0xdb, 0, 0, 0, 2, b'h', b'i'],
        vec![0xc4, 0],
        vec![0xc4, 2, 0xff, 0x00],
        vec![0xc5, 0, 1, 0xc1],
        vec![0xc6, 0, 0, 0, 1, 0xff],
        vec![0xd4, 1, 0],
        vec![0xd5, 1, 0, 0],
        vec![0xd6, 0xff, 0, 0, 0, 0],
        vec![0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
        [vec![0xd8, 5], vec![0; 16]].concat(),
        vec![0xc7, 0, 3],
        vec![0xc7, 2, 3, 0xc1, 0xc1],
        vec![0xc8, 0, 1, 3, 0],
        vec![0xc9, 0, 0, 0, 1, 3, 0],
        vec![0x90],
        vec![0x80],
        vec![0xdc, 0, 0],
        vec![0xdd, 0, 0, 0, 0],
        vec![0xde, 0, 0],
        vec![0xdf, 0, 0, 0, 0],
        vec![0x92, 0x01, 0xa1, b'x'],
        vec![0xdc, 0, 2, 0xc0, 0xc0],
        vec![0xde, 0, 1, 0xa1, b'k', 0x90],
        // {"a": {"b": [1, {"c": nil}]}}
        vec![
            0x81, 0xa1, b'a', 0x81, 0xa1, b'b', 0x92, 0x01, 0x81, 0xa1, b'c', 0xc0,
        ],
        // A map with a non-string key.
        vec![0x81, 0x01, 0x02],
        mp(&json!({"text": "héllo", "n": [1, -2, 3.5, u64::MAX, i64::MIN], "ok": true})),
        mp(&vec![vec![1u8; 20]; 70000]),
    ];
    for bytes in &good {
        assert_eq!(check(bytes), Ok(()), "{bytes:02x?}");
    }
}

#[test]
fn check_rejects_truncated_input() {
    assert_eq!(check(&[]), Err(WireError::Truncated));
    let value = mp(&json!({"a": [1, 2, {"b": "text", "c": 1.5}], "d": u64::MAX}));
    for end in 0..value.len() {
        assert_eq!(
            check(&value[..end]),
            Err(WireError::Truncated),
            "prefix {end}"
        );
    }
    for bytes in [
        &[0xcd, 1][..],
        &[0xcb, 0, 0],
        &[0xa3, b'a'],
        &[0xd9],
        &[0xc4, 3, 1],
        &[0xd8, 1, 0],
        &[0xc7, 1],
        &[0x92, 0xc0],
    ] {
        assert_eq!(check(bytes), Err(WireError::Truncated), "{bytes:02x?}");
    }
}

#[test]
fn check_rejects_lengths_the_input_cannot_hold() {
    // Array32 announcing 2^32-1 elements followed by 3 bytes.
    let huge = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0, 0xc0];
    assert_eq!(check(&huge), Err(WireError::Truncated));
    let huge_map = [0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0];
    assert_eq!(check(&huge_map), Err(WireError::Truncated));
    // A map of 2 pairs needs at least 4 bytes.
    assert_eq!(check(&[0x82, 0xc0, 0xc0, 0xc0]), Err(WireError::Truncated));
    let huge_str = [0xdb, 0xff, 0xff, 0xff, 0xff, b'a'];
    assert_eq!(check(&huge_str), Err(WireError::Truncated));
    let huge_bin = [0xc6, 0xff, 0xff, 0xff, 0xff, 0];
    assert_eq!(check(&huge_bin), Err(WireError::Truncated));
    let huge_ext = [0xc9, 0xff, 0xff, 0xff, 0xff, 1, 0];
    assert_eq!(check(&huge_ext), Err(WireError::Truncated));
}

#[test]
fn check_rejects_trailing_bytes() {
    assert_eq!(check(&[0xc0, 0xc0]), Err(WireError::TrailingBytes));
    assert_eq!(check(&[0x91, 0x01, 0x02]), Err(WireError::TrailingBytes));
    let mut two = mp(&json!({"a": 1}));
    two.extend(mp(&json!({"a": 1})));
    assert_eq!(check(&two), Err(WireError::TrailingBytes));
}

#[test]
fn check_limits_depth() {
    assert_eq!(check(&nested_arrays(64, &[0xc0])), Ok(()));
    assert_eq!(check(&nested_arrays(63, &[0x90])), Ok(()));
    assert_eq!(check(&nested_arrays(65, &[0xc0])), Err(WireError::TooDeep));
    // An empty container is still a level.
    assert_eq!(check(&nested_arrays(64, &[0x90])), Err(WireError::TooDeep));
    // Maps count too: 64 levels of {"k": ...}.
    let mut maps = Vec::new();
    for _ in 0..64 {
        maps.extend([0x81, 0xa1, b'k']);
    }
    maps.push(0xc0);
    assert_eq!(check(&maps), Ok(()));
    let mut deeper = vec![0x81, 0xa1, b'k'];
    deeper.extend(&maps);
    assert_eq!(check(&deeper), Err(WireError::TooDeep));
    // Depth is nesting, not the number of containers in total.
    let mut wide = vec![0xdc, 0x01, 0x00];
    for _ in 0..256 {
        wide.extend(nested_arrays(63, &[0x01]));
    }
    assert_eq!(check(&wide), Ok(()));
}

#[test]
fn check_rejects_bad_utf8_and_reserved_marker() {
    assert_eq!(check(&[0xa2, 0xc3, 0x28]), Err(WireError::NotUtf8));
    assert_eq!(
        check(&[0x81, 0xa1, b'k', 0xd9, 1, 0xff]),
        Err(WireError::NotUtf8)
    );
    assert!(matches!(check(&[0xc1]), Err(WireError::InvalidPayload(_))));
    assert!(matches!(
        check(&[0x92, 0x01, 0xc1]),
        Err(WireError::InvalidPayload(_))
    ));
    // Inside bin and ext, any byte goes.
    assert_eq!(check(&[0xc4, 2, 0xc3, 0x28]), Ok(()));
}

#[test]
fn maps_as_keys_of_maps_stay_small_in_json() {
    // {{{... {"a": 1} ...: nil}: nil}: nil}, 60 levels: the key text of
    // each level escapes the one below, so uncapped it doubles each time.
    let mut bytes = vec![0x81u8; 60];
    bytes.extend_from_slice(&[0xa1, b'a', 0x01]);
    bytes.extend(std::iter::repeat_n(0xc0, 59));
    let v = to_json(&bytes).expect("valid MessagePack");
    assert!(
        v.to_string().len() < 4 * MAX_KEY_TEXT,
        "{}",
        v.to_string().len()
    );
}

#[test]
fn decode_value_json_mappings() {
    assert_eq!(to_json(&[0xc4, 2, 1, 2]), Ok(json!([1, 2])));
    assert_eq!(
        to_json(&[0xd4, 0xff, 9]),
        Ok(json!({"type": -1, "data": [9]}))
    );
    assert_eq!(to_json(&[0x81, 0x01, 0x02]), Ok(json!({"1": 2})));
    let nan = [vec![0xcb], f64::NAN.to_be_bytes().to_vec()].concat();
    assert_eq!(to_json(&nan), Ok(Value::Null));
    assert_eq!(to_json(&[0xca, 0x3f, 0xc0, 0, 0]), Ok(json!(1.5)));
    assert_eq!(to_json(&[0xd0, 0x80]), Ok(json!(-128)));
    assert_eq!(to_json(&[0xd1, 0x80, 0x00]), Ok(json!(-32768)));
    assert_eq!(to_json(&[0xd2, 0x80, 0, 0, 0]), Ok(json!(i32::MIN)));
    assert_eq!(
        to_json(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        Ok(json!(i64::MIN))
    );
    assert_eq!(to_json(&[0xe0]), Ok(json!(-32)));
    assert_eq!(to_json(&[0xc0, 0xc0]), Err(WireError::TrailingBytes));
}

#[test]
fn error_texts() {
    assert_eq!(
        WireError::Truncated.to_string(),
        "truncated MessagePack value"
    );
    assert_eq!(
        WireError::TooDeep.to_string(),
        "nested deeper than 64 levels"
    );
    assert_eq!(
        WireError::InvalidJson("x".into()).to_string(),
        "not valid JSON: x"
    );
}
