//! Gateway configuration: defaults ← TOML file ← `BROKER_*` environment.
//!
//! Every key has the default of `docs/CONFIG.md`, so the gateway
//! starts with no file at all. A TOML file (`--config FILE`) overrides the
//! defaults, and environment variables override the file:
//! `BROKER_<KEY>` with `__` for each dot, e.g. `BROKER_REDIS__URL`,
//! `BROKER_LIMITS__SEND_QUEUE`, `BROKER_AUTH__SECRET`. Environment values are
//! strings; numbers and booleans are parsed from them (`true`/`false`,
//! `yes`/`no`, `on`/`off`, `1`/`0`), and list keys (`redis.url`, `origins`,
//! `roles`) also accept one comma-separated string.
//!
//! Unknown keys in the file, and unknown keys *inside* a known section in the
//! environment (`BROKER_LIMITS__SEND_QUEU`), are errors, so typos do not pass
//! silently. Environment variables whose first part names no section at all
//! (`BROKER_MODULE`, `BROKER_MODULE_ARGS`, used by the scripts and tests for
//! other things) are ignored.
//!
//! After loading, [`Config::validate`] checks the values together (the auth
//! set-up, limits, namespace names and policies) so that a bad configuration
//! stops the gateway at start-up with every problem listed, rather than
//! failing later on a client's request.
//!
//! Here: the error type and the map. The types and their defaults are
//! `types.rs`, reading them `load.rs`, checking them together
//! `validate.rs`.

mod load;
mod types;
mod validate;

use thiserror::Error;

pub use load::ENV_PREFIX;
pub use types::*;
pub use validate::{
    ALGORITHMS, MAX_LEEWAY_S, MAX_PRESENCE_GRACE_MS, MAX_RPC_TIMEOUT_MS, MAX_WEBHOOK_BATCH,
    MAX_WEBHOOK_TIMEOUT_MS, MIN_LEASE_MS,
};

/// Why the configuration could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type
    /// (figment's message, naming the key and its source).
    #[error("cannot load configuration: {0}")]
    Load(String),
    /// The values were read but do not make sense together; lists every
    /// problem found, separated by `; `.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests;
