//! Loading: defaults ← TOML file ← `BROKER_*` environment, through
//! figment, then [`Config::validate`]. The environment is read into a
//! provider of our own ([`EnvMap`]) so that tests can pass theirs.

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, ConfigError};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "BROKER_";

/// Top-level keys, i.e. the sections an environment variable may address.
const TOP_LEVEL_KEYS: [&str; 15] = [
    "listen",
    "admin_listen",
    "node_id",
    "redis",
    "auth",
    "admin",
    "origins",
    "trusted_proxies",
    "limits",
    "testing",
    "node",
    "namespaces",
    "rpc",
    "webhooks",
    "socketio",
];

impl Config {
    /// Loads defaults ← TOML file (if given) ← env vars `BROKER_<KEY>` with
    /// `__` for dots (e.g. `BROKER_REDIS__URL`, `BROKER_LIMITS__SEND_QUEUE`,
    /// `BROKER_AUTH__SECRET`). Then [`Config::validate`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::Load`] when the file cannot be read or parsed or a
    /// value has the wrong type; [`ConfigError::Invalid`] from `validate`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| has_env_prefix(k))
            .collect();
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    ConfigError::Load(format!("cannot read {}: {err}", path.display()))
                })?;
                let name = format!("TOML file {}", path.display());
                build(
                    Some((&text, name, figment::Source::File(path.to_owned()))),
                    &env,
                )
            }
            None => build(None, &env),
        }
    }

    /// Same as [`Config::load`] from a TOML string and an explicit env map
    /// (for tests: they must not change the process environment). Only the
    /// pairs whose name starts with `BROKER_` are used.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn from_sources(
        toml: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let source = toml.map(|text| {
            (
                text,
                "TOML source string".to_owned(),
                figment::Source::Custom("string".to_owned()),
            )
        });
        build(source, env)
    }
}

/// The shared loading path of [`Config::load`] and [`Config::from_sources`]:
/// defaults, then the TOML text (with a name for error messages), then the
/// environment, then `validate`.
fn build(
    toml: Option<(&str, String, figment::Source)>,
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    if let Some((text, name, source)) = toml {
        figment = figment.merge(Named {
            inner: Toml::string(text),
            metadata: Metadata::from(name, source),
        });
    }
    figment = figment.merge(EnvMap::new(env));
    // Lossy: the environment only has strings, so "8" must become 8 and
    // "true" must become true where the field wants a number or a bool.
    let config: Config = figment.extract_lossy().map_err(|err| {
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        ConfigError::Load(messages.join("; "))
    })?;
    config.validate()?;
    Ok(config)
}

/// True when `name` starts with [`ENV_PREFIX`], ignoring ASCII case.
fn has_env_prefix(name: &str) -> bool {
    name.len() >= ENV_PREFIX.len()
        && name.as_bytes()[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX.as_bytes())
}

/// A provider with a chosen name in error messages (e.g. the file's path).
struct Named<P> {
    inner: P,
    metadata: Metadata,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

/// The `BROKER_*` variables as a figment provider.
///
/// figment's own `Env` reads only the process environment; this one takes an
/// explicit list so tests can pass their own. Keys follow `Env::prefixed(..)
/// .split("__")`: prefix removed, lowercased, `__` becomes a dot. Values stay
/// strings (read with `extract_lossy`), so a secret such as `123456` stays a
/// string.
struct EnvMap {
    /// `(dotted.key, value)` pairs, sorted by key for a deterministic merge.
    pairs: Vec<(String, String)>,
}

impl EnvMap {
    /// Keeps the variables with the prefix whose first key names a section.
    fn new(env: &[(String, String)]) -> EnvMap {
        let mut pairs: Vec<(String, String)> = env
            .iter()
            .filter(|(name, _)| has_env_prefix(name))
            .filter_map(|(name, value)| {
                let key = name[ENV_PREFIX.len()..]
                    .trim()
                    .to_ascii_lowercase()
                    .replace("__", ".");
                if key.split('.').any(str::is_empty) {
                    return None;
                }
                let section = key.split('.').next().unwrap_or_default();
                TOP_LEVEL_KEYS
                    .contains(&section)
                    .then(|| (key, value.clone()))
            })
            .collect();
        pairs.sort();
        EnvMap { pairs }
    }
}

impl Provider for EnvMap {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s)").interpolater(|_: &Profile, keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("{ENV_PREFIX}{}", keys.join("__"))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, value) in &self.pairs {
            insert_path(&mut dict, key, Value::from(value.clone()));
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Sets `dict[a][b][c] = value` for `path` `a.b.c`, creating (or replacing
/// non-table values with) tables on the way.
fn insert_path(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = dict
                .entry(head.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}
