//! [`Name`]: a connection, user, node or room name as the registry keeps
//! it where lookups are hot (the connection table and each connection's
//! rooms). Names of up to 22 bytes — every connection id a gateway makes,
//! and most user, node and room names — are stored inline, so comparing or
//! hashing one reads no memory beyond the table slot that holds it: a
//! re-join of a connection among 100,000 follows no pointer to its id, its
//! user, its node or its room names. Longer names are boxed.
//!
//! A `Name` hashes, compares and orders exactly as its `str` does
//! (`Borrow<str>`), so maps keyed by it are looked up with a `&str`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Longest name kept inline.
const INLINE: usize = 22;

/// A name, inline when short (see the module docs).
#[derive(Clone)]
pub(crate) enum Name {
    /// Length and bytes (valid UTF-8: copied from a `str`).
    Inline(u8, [u8; INLINE]),
    /// A longer name.
    Boxed(Box<str>),
}

impl Name {
    /// The name as text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Name::Inline(len, bytes) => {
                // Always valid: the bytes were a whole `str`. The fallback
                // is never taken.
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Name::Boxed(s) => s,
        }
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= INLINE => {
                let mut bytes = [0u8; INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Name::Inline(len, bytes)
            }
            _ => Name::Boxed(s.into()),
        }
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        if s.len() <= INLINE {
            Name::from(s.as_str())
        } else {
            Name::Boxed(s.into_boxed_str())
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    fn hash_of<T: Hash + ?Sized>(t: &T) -> u64 {
        let mut h = DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn a_name_is_its_text_inline_or_boxed() {
        for text in [
            "",
            "c1",
            "c000000012345",
            &"x".repeat(22),
            &"é".repeat(11),
            &"y".repeat(23),
            &"z".repeat(300),
        ] {
            let name = Name::from(text);
            assert_eq!(name.as_str(), text);
            assert_eq!(Name::from(text.to_string()), name);
            assert_eq!(hash_of(&name), hash_of(text), "{text}");
            assert_eq!(matches!(name, Name::Inline(..)), text.len() <= INLINE);
            assert_eq!(format!("{name}"), text);
        }
        let mut map = HashMap::new();
        map.insert(Name::from("conn-1"), 1);
        map.insert(Name::from("a-connection-id-longer-than-inline"), 2);
        assert_eq!(map.get("conn-1"), Some(&1));
        assert_eq!(map.get("a-connection-id-longer-than-inline"), Some(&2));
        let set: BTreeSet<Name> = ["b", "a", "chat:a-room-with-a-long-name", "c"]
            .into_iter()
            .map(Name::from)
            .collect();
        let order: Vec<&str> = set.iter().map(|n| n.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "chat:a-room-with-a-long-name"]);
        assert!(set.contains("chat:a-room-with-a-long-name") && !set.contains("d"));
    }
}
