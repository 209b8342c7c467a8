//! The broker's state as keys: every room, user and client address with
//! state on this server is a key of that name, of the module's type
//! `broker-rg`, so that `MIGRATE` (and with it `redis-cli --cluster
//! reshard`), `DUMP`/`RESTORE`, `DEL`, `MEMORY USAGE`, `TYPE`, `SCAN TYPE`
//! and `DEBUG DIGEST` see it as they see any key.
//!
//! The state itself stays in the registry ([`broker::registry`], whose
//! `keys.rs` says what each key holds), where the commands read and change
//! it in one hash lookup. A key's value is a [`KeyValue`]: the name it is
//! attached under, or state that is not attached (yet).
//!
//! - After every command and timer run, [`sync`] creates the keys of names
//!   whose state began and deletes those whose state ended. These key
//!   writes are not replicated: replicas run the same commands and make the
//!   same keys.
//! - Saving a key (`rdb_save`, `DUMP`, the source side of `MIGRATE`, an
//!   `aof_rewrite`) writes its state from the registry
//!   (`Registry::save_key`).
//! - Loading one (`rdb_load`: a restart, a replica's full sync, `RESTORE`,
//!   the target of `MIGRATE`) keeps the state in the value, not attached;
//!   the keyspace event that follows (`loaded` or `restore`) attaches it
//!   ([`on_key_event`]: `Registry::merge`). Not earlier: `RESTORE ... REPLACE`
//!   loads the new value before it unlinks the old one.
//! - Unlinking one (`DEL`, `UNLINK`, an expiry, an overwrite, the source of
//!   `MIGRATE`, `RENAME`'s old name) removes its state ([`unlinked`]:
//!   `Registry::remove_key`); the value is left with nothing attached.
//! - `FLUSHALL`/`FLUSHDB` free values without unlinking them, so after one
//!   the registry drops the state of every name whose key is gone
//!   ([`after_flush`]).

use std::sync::atomic::{AtomicU64, Ordering};

use broker::registry::{Registry, Snapshot};
use redis_module::{Context, NotifyEvent};

use crate::ffi::REGISTRY_TYPE;
use crate::{guard, state};

/// Encoding version of a key's saved state: 2, the first version with keys
/// (version 1 kept the whole registry in the aux data).
pub const KEY_ENCODING_VERSION: i32 = 2;

/// A key's value: either attached (its state is the registry's state of
/// `name`) or holding state that is not in the registry.
#[derive(Debug, Default)]
pub struct KeyValue {
    /// The key's name, once attached.
    name: Box<str>,
    /// State loaded but not attached (a load before its keyspace event; a
    /// value restored under another name than it was saved with), or
    /// `None` when attached. Boxed: an attached value is 24 bytes.
    detached: Option<Box<Snapshot>>,
}

impl KeyValue {
    /// A value attached to the registry's state of `name`.
    pub fn attached(name: &str) -> KeyValue {
        KeyValue {
            name: name.into(),
            detached: None,
        }
    }

    /// A value holding loaded state, to attach at its keyspace event.
    pub fn loaded(snapshot: Snapshot) -> KeyValue {
        KeyValue {
            name: "".into(),
            detached: Some(Box::new(snapshot)),
        }
    }

    /// The state as saved: the registry's for an attached value.
    pub fn saved(&self) -> Snapshot {
        match &self.detached {
            Some(snapshot) => Snapshot::clone(snapshot),
            None => state::with(|s| s.registry.save_key(&self.name)),
        }
    }

    /// About how many bytes the value stands for.
    pub fn mem_usage(&self) -> usize {
        match &self.detached {
            Some(snapshot) => snapshot.to_bytes().map_or(0, |b| b.len()),
            None => state::with(|s| s.registry.key_mem_usage(&self.name)),
        }
    }
}

/// Keys found holding another type under a name that has broker state
/// (logged sparingly).
static FOREIGN_KEYS: AtomicU64 = AtomicU64::new(0);

/// Creates the keys of names whose state began and deletes those whose
/// state ended since the last call (after every command, timer run and
/// load). Never while the state is locked: deleting a key calls
/// [`unlinked`].
pub fn sync(ctx: &Context) {
    let touched = state::with(|s| s.registry.take_touched());
    for name in touched {
        set_key(ctx, &name);
    }
}

/// Makes key `name` exist exactly when the registry has state for it.
fn set_key(ctx: &Context, name: &str) {
    let exists = state::with(|s| s.registry.key_exists(name));
    let key = ctx.open_key_writable(&ctx.create_string(name));
    match key.get_value::<KeyValue>(&REGISTRY_TYPE) {
        Ok(Some(_)) if !exists => {
            let _ = key.delete();
        }
        Ok(None) if exists => {
            let _ = key.set_value(&REGISTRY_TYPE, KeyValue::attached(name));
        }
        // A value of ours holding nothing attached (left by `RENAME` or
        // `MOVE`, or restored under another name) under a name whose state
        // just began: it stands for that state from now on.
        Ok(Some(value)) if exists && value.detached.is_some() => {
            *value = KeyValue::attached(name);
        }
        Ok(_) => {}
        Err(_) => {
            let seen = FOREIGN_KEYS.fetch_add(1, Ordering::Relaxed);
            if seen.is_power_of_two() || seen == 0 {
                ctx.log_warning(&format!(
                    "broker: key '{name}' holds another type; its broker state is not in the keyspace (a reshard would not move it)"
                ));
            }
        }
    }
}

/// Creates a key for every name with state and none (after loading a file
/// saved before keys: the whole registry came in its aux data).
pub fn create_missing(ctx: &Context) {
    let names = state::with(|s| s.registry.key_names());
    for name in names {
        set_key(ctx, &name);
    }
}

/// A key of the module's type left the keyspace: its state goes with it.
pub fn unlinked(value: &mut KeyValue) {
    if value.detached.is_none() {
        let name = std::mem::take(&mut value.name);
        state::with(|s| s.registry.remove_key(&name));
    }
    value.detached = Some(Box::default());
}

/// Attaches a loaded key's state (its `loaded` or `restore` keyspace
/// event): the registry takes it in. State saved under another name stays
/// detached, and nothing of it is used.
fn attach(ctx: &Context, key: &[u8]) {
    let Ok(name) = std::str::from_utf8(key) else {
        return;
    };
    let handle = ctx.open_key_writable(&ctx.create_string(name));
    let Ok(Some(value)) = handle.get_value::<KeyValue>(&REGISTRY_TYPE) else {
        return;
    };
    let Some(snapshot) = value.detached.take().map(|s| *s) else {
        return;
    };
    if snapshot.is_empty() || !Registry::named_by(&snapshot, name) {
        if !snapshot.is_empty() {
            ctx.log_warning(&format!(
                "broker: key '{name}' holds the state of another name; it is kept but not used"
            ));
        }
        value.detached = Some(Box::new(snapshot));
        return;
    }
    state::with(|s| s.registry.merge(snapshot));
    value.name = name.into();
}

/// The module's keyspace events handler: attaches loaded and restored keys.
pub fn on_key_event(ctx: &Context, _kind: NotifyEvent, event: &str, key: &[u8]) {
    if event == "loaded" || event == "restore" {
        guard::callback(ctx, "attaching a key", || attach(ctx, key));
    }
}

/// After `FLUSHALL`/`FLUSHDB`: the state of every name whose key is gone
/// goes too (a flush frees values without unlinking them).
pub fn after_flush(ctx: &Context) {
    let names = state::with(|s| s.registry.key_names());
    for name in names {
        let key = ctx.open_key(&ctx.create_string(name.as_str()));
        if !matches!(key.get_value::<KeyValue>(&REGISTRY_TYPE), Ok(Some(_))) {
            state::with(|s| s.registry.remove_key(&name));
        }
    }
    state::with(|s| s.registry.take_touched());
}
