//! Saving the registry into an RDB and loading it back.
//!
//! The registry is written as one MessagePack blob (a `broker::registry::Snapshot`)
//! in the aux data of the `broker-rg` module type, before the keyspace.
//! `ENCODING_VERSION` names that format: a future format gets a new number
//! and `load` keeps reading the old ones.

use broker::registry::Snapshot;

use crate::state;

/// Encoding version of the aux data.
pub const ENCODING_VERSION: i32 = 1;

/// Why loading failed (the RDB load then fails, as Redis expects).
#[derive(Debug)]
pub enum LoadError {
    /// A version this build does not know (written by a newer module).
    UnknownVersion(i32),
    /// The blob is not a snapshot.
    Corrupt,
}

/// The registry as bytes.
pub fn save() -> Vec<u8> {
    state::with(|s| s.registry.snapshot().to_bytes().unwrap_or_default())
}

/// Replaces the registry with a saved one. The leases are extended and the
/// reconciliation begins when loading has ended ([`crate::loading`]), after
/// an AOF's tail was replayed too.
pub fn load(encver: i32, bytes: &[u8]) -> Result<(), LoadError> {
    if encver != ENCODING_VERSION {
        return Err(LoadError::UnknownVersion(encver));
    }
    // An empty blob is an empty registry (what `save` writes if encoding
    // ever failed).
    let snapshot = if bytes.is_empty() {
        Snapshot::default()
    } else {
        Snapshot::from_bytes(bytes).map_err(|_| LoadError::Corrupt)?
    };
    state::with(|s| s.registry.restore(snapshot));
    Ok(())
}
