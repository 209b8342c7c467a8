//! Helpers shared by the unit tests of the MessagePack users in this crate.

use super::{as_str, Item, Reader};

/// `v` encoded with rmp-serde (structs as maps).
pub fn mp<T: serde::Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap()
}

/// `bytes` as space-separated hex pairs.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `levels` nested one-element arrays around `inner`.
pub fn nested_arrays(levels: usize, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x91; levels];
    v.extend_from_slice(inner);
    v
}

/// The keys of a top-level map, in order.
pub fn map_keys(bytes: &[u8]) -> Vec<String> {
    let mut r = Reader::new(bytes);
    let Item::Map(n) = r.item().unwrap() else {
        panic!("not a map")
    };
    let mut keys = Vec::new();
    for _ in 0..n {
        keys.push(as_str(r.value().unwrap()).unwrap().to_owned());
        r.value().unwrap();
    }
    assert!(r.at_end());
    keys
}
