//! Saving the nodes' leases into an RDB and loading them back.
//!
//! The rooms, users and addresses are keys ([`crate::keys`]) and are saved
//! with the keyspace. The leases are per server, not per slot, so they are
//! written as one MessagePack blob (a `broker::registry::Snapshot` holding
//! nodes only) in the aux data of the `broker-rg` module type, before the
//! keyspace, so the keys that name the nodes find them when they load.
//! Encoding version 1 (before keys) held the whole registry there; it still
//! loads, and the keys are made when loading ends.

use broker::registry::Snapshot;

use crate::state;

/// Encoding version of the aux data before keys: the whole registry.
pub const WHOLE_REGISTRY_VERSION: i32 = 1;

/// Why loading failed (the RDB load then fails, as Redis expects).
#[derive(Debug)]
pub enum LoadError {
    /// A version this build does not know (written by a newer module).
    UnknownVersion(i32),
    /// The blob is not a snapshot.
    Corrupt,
}

/// The nodes' leases as bytes.
pub fn save() -> Vec<u8> {
    state::with(|s| s.registry.leases_snapshot().to_bytes().unwrap_or_default())
}

/// Replaces the registry with the saved leases (the keys that follow
/// bring the rest), or with a whole saved registry (version 1). The leases
/// are extended and the reconciliation begins when loading has ended
/// ([`crate::loading`]), after an AOF's tail was replayed too.
pub fn load(encver: i32, bytes: &[u8]) -> Result<(), LoadError> {
    if encver != WHOLE_REGISTRY_VERSION && encver != crate::keys::KEY_ENCODING_VERSION {
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
