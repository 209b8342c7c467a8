//! JWT verification of clients, and dev tokens for the demo page.
//!
//! The keys and their `Validation`s are built once from the configuration
//! (and again on each [`Authenticator::reload`] of `auth.jwks_file`), never
//! per token. A key's accepted algorithm list holds exactly its own
//! algorithm — the configured `auth.algorithm` for the single key of
//! `auth.secret` / `auth.public_key_file`, the key's own for a JWKS key —
//! never one read from the token: that (and keys typed by family) is what
//! stops the classic confusion attacks (`alg: none`, an RS256 public key
//! used as an HS256 secret).
//!
//! With `auth.jwks_file` the token header's `kid` chooses the key
//! (`jwks.rs`); a token without `kid`, or with a `kid` the set does not
//! hold, is refused — also when the set holds a single key, so that adding
//! a second key during a rotation never starts refusing tokens that were
//! accepted before. The set sits behind an [`ArcSwap`]: a reload swaps it
//! whole, verifications in flight finish with the set they started with,
//! and a file that fails to load leaves the current set in place.
//!
//! jsonwebtoken 10.4 notes: releases before 10.3 treated a
//! malformed `exp`/`nbf` as absent (CVE-2026-25537); the crypto backend
//! (`rust_crypto`) is enabled in Cargo.toml, without which decoding panics;
//! the library's defaults are changed here on purpose: leeway from config
//! (default 60 s there), `nbf` checked (off there), `aud` only checked when
//! an audience is configured (a token's `aud` fails there otherwise), and
//! `iss`/`aud` *required* when configured (there they are only compared when
//! present).

mod jwks;
pub mod reload;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::AuthConfig;

pub use jwks::SUPPORTED_ALGORITHMS as JWKS_ALGORITHMS;
use jwks::{Jwks, Verifier};

/// Longest token accepted, in bytes; longer ones are refused before any
/// decoding work (a client could otherwise make us base64-decode and parse
/// megabytes per attempt).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Claims the gateway uses. `sub` required, `exp` required; `roles`, `rooms`
/// optional lists (default empty). Other claims in a token are ignored.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Claims {
    /// User id; must pass `broker::names::validate_user`.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Roles for namespaces with `join`/`publish = "roles"`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Rooms (or `prefix*` patterns) for namespaces with `join = "claim"`.
    #[serde(default)]
    pub rooms: Vec<String>,
}

/// Why a token was refused. The text never includes the token (it is a
/// credential, and it ends up in logs and `err` frames).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No token was given.
    #[error("token missing")]
    Missing,
    /// The token's `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// Anything else: bad signature, wrong algorithm, malformed token or
    /// claims, `nbf` in the future, `iss`/`aud` mismatch, invalid `sub`.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies client tokens; built once at start-up and shared (it is `Send +
/// Sync` and cheap to clone: clones share one key set, so a
/// [`reload`](Authenticator::reload) through any clone is seen by all).
#[derive(Clone)]
pub struct Authenticator {
    /// The verification keys, swapped whole by a reload.
    keys: Arc<ArcSwap<KeySet>>,
    /// `auth.jwks_file`, re-read by [`Authenticator::reload`].
    jwks_file: Option<PathBuf>,
    /// Leeway and claim checks every key's `Validation` starts from.
    base: Validation,
    /// The signing key of dev tokens (the same random secret as the key).
    dev_key: Option<EncodingKey>,
    /// Configured `iss`, put into dev tokens so they verify.
    issuer: Option<String>,
    /// Configured `aud`, put into dev tokens so they verify.
    audience: Option<String>,
    /// Connections without a token are accepted.
    allow_anonymous: bool,
    /// Clock skew tolerated on `exp`/`nbf`.
    leeway_s: u64,
}

/// The keys a token may be verified with.
enum KeySet {
    /// None: only with `allow_anonymous` and no key configured; every
    /// presented token is refused.
    Empty,
    /// One key (`auth.secret`, `auth.public_key_file` or dev tokens); a
    /// token's `kid` is not looked at.
    Single(Box<Verifier>),
    /// `auth.jwks_file`: the token's `kid` chooses.
    Jwks(Jwks),
}

impl fmt::Debug for Authenticator {
    /// Shows the set-up, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &**self.keys.load() {
            KeySet::Empty => Vec::new(),
            KeySet::Single(v) => vec![format!("{:?}", v.algorithm)],
            KeySet::Jwks(set) => set.describe(),
        };
        f.debug_struct("Authenticator")
            .field("keys", &keys)
            .field("jwks_file", &self.jwks_file)
            .field("dev_tokens", &self.dev_key.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

/// What a dev token carries: [`Claims`] plus `iat` and the configured
/// `iss`/`aud`.
#[derive(Serialize)]
struct DevClaims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    roles: [&'a str; 0],
    rooms: [&'a str; 0],
}

impl Authenticator {
    /// From config: HS256/384/512 use `secret` bytes; RS256 / ES256 read PEM
    /// from `public_key_file`; `jwks_file` reads a JWK Set whose keys are
    /// chosen by the token's `kid` (each with its own algorithm). When
    /// `dev_tokens` is on (and no key configured), a random 32-byte HS256
    /// secret is generated for this process so the demo page can mint
    /// tokens.
    ///
    /// # Errors
    ///
    /// An unknown algorithm, a missing secret or key file, a key file that
    /// cannot be read or is not a public key of the algorithm's family, a
    /// JWKS file that cannot be read or is refused (the message names the
    /// file and the key), `jwks_file` combined with `secret` /
    /// `public_key_file` or with an `algorithm` other than the default, or
    /// `dev_tokens` combined with a real secret or key (the same checks as
    /// `Config::validate`, so a hand-built `AuthConfig` is safe too).
    pub fn new(cfg: &AuthConfig) -> anyhow::Result<Authenticator> {
        let algorithm = parse_algorithm(&cfg.algorithm)?;
        let base = base_validation(cfg);
        let mut dev_key = None;
        let keys = if cfg.dev_tokens {
            if cfg.secret.is_some() || cfg.public_key_file.is_some() || cfg.jwks_file.is_some() {
                bail!("auth.dev_tokens is refused when a real secret is configured");
            }
            if algorithm != Algorithm::HS256 {
                bail!("auth.dev_tokens needs auth.algorithm = \"HS256\"");
            }
            let secret: [u8; 32] = rand::random();
            dev_key = Some(EncodingKey::from_secret(&secret));
            tracing::warn!("auth.dev_tokens is on: anyone can mint tokens from the demo page");
            KeySet::Single(Box::new(Verifier::new(
                DecodingKey::from_secret(&secret),
                Algorithm::HS256,
                &base,
            )))
        } else if let Some(path) = cfg.jwks_file.as_deref() {
            if cfg.secret.is_some() || cfg.public_key_file.is_some() {
                bail!("{JWKS_EXCLUSIVE}");
            }
            if algorithm != Algorithm::HS256 {
                bail!("{JWKS_ALGORITHM}");
            }
            let set = jwks::load(path, &base)?;
            tracing::info!(
                file = %path.display(),
                keys = ?set.describe(),
                "auth.jwks_file loaded"
            );
            KeySet::Jwks(set)
        } else {
            match single_key(cfg, algorithm)? {
                Some(key) => KeySet::Single(Box::new(Verifier::new(key, algorithm, &base))),
                None => KeySet::Empty,
            }
        };

        Ok(Authenticator {
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            jwks_file: cfg.jwks_file.clone(),
            base,
            dev_key,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            allow_anonymous: cfg.allow_anonymous,
            leeway_s: cfg.leeway_s,
        })
    }

    /// Re-reads `auth.jwks_file` and, when it loads, swaps the new key set
    /// in for every clone of this authenticator; returns its number of
    /// keys. Tokens verified from then on (new connections, `auth` and
    /// `refresh` frames) use the new set; connections admitted earlier are
    /// not touched (their token was checked when they came).
    ///
    /// # Errors
    ///
    /// No `auth.jwks_file` is configured, or the file cannot be read or is
    /// refused: then the current keys stay in use.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let Some(path) = self.jwks_file.as_deref() else {
            bail!("auth.jwks_file is not configured: there is nothing to reload");
        };
        let set = jwks::load(path, &self.base)?;
        let len = set.len();
        tracing::info!(
            file = %path.display(),
            keys = ?set.describe(),
            "auth.jwks_file reloaded"
        );
        self.keys.store(Arc::new(KeySet::Jwks(set)));
        Ok(len)
    }

    /// `auth.jwks_file`, when configured.
    pub fn jwks_file(&self) -> Option<&Path> {
        self.jwks_file.as_deref()
    }

    /// Keys in use now: the JWKS's keys, 1 for `auth.secret` /
    /// `auth.public_key_file` / dev tokens, 0 without any key.
    pub fn key_count(&self) -> usize {
        match &**self.keys.load() {
            KeySet::Empty => 0,
            KeySet::Single(_) => 1,
            KeySet::Jwks(set) => set.len(),
        }
    }

    /// Verifies signature, `exp`, `nbf`, `iss`/`aud` when configured, with
    /// `leeway_s`, with the key chosen as the [module](self) describes; a
    /// key's algorithm list holds only its own algorithm (never from the
    /// token). Also rejects a `sub` that fails
    /// `broker::names::validate_user`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Missing`] for an empty token, [`AuthError::Expired`],
    /// or [`AuthError::Invalid`] with a short reason.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token too long".into()));
        }
        // The set of this moment, kept for the whole check even if a
        // reload swaps another one in meanwhile.
        let keys = self.keys.load();
        let verifier = match &**keys {
            KeySet::Empty => {
                return Err(AuthError::Invalid(
                    "no verification key is configured".into(),
                ))
            }
            KeySet::Single(verifier) => verifier,
            KeySet::Jwks(set) => select(set, token)?,
        };
        // Decoded as JSON first so that the library's claim checks run (and
        // name the claim) before our types are applied.
        let value =
            jsonwebtoken::decode::<serde_json::Value>(token, &verifier.key, &verifier.validation)
                .map_err(|err| map_jwt_error(&err))?
                .claims;
        let claims = claims_from_value(value)?;
        if broker::names::validate_user(&claims.sub).is_err() {
            return Err(AuthError::Invalid("sub is not a valid user id".into()));
        }
        Ok(claims)
    }

    /// Mints an HS256 dev token for `user` valid `ttl_s` (only when dev
    /// tokens are on; `None` otherwise, or when `user` is not a valid user
    /// id). It carries the configured `iss`/`aud` so it verifies here.
    pub fn mint_dev_token(&self, user: &str, ttl_s: u64) -> Option<String> {
        let key = self.dev_key.as_ref()?;
        broker::names::validate_user(user).ok()?;
        let now = jsonwebtoken::get_current_timestamp();
        let claims = DevClaims {
            sub: user,
            exp: now.saturating_add(ttl_s),
            iat: now,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            roles: [],
            rooms: [],
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
    }

    /// Whether dev tokens are on (the demo page may mint tokens).
    pub fn dev_tokens(&self) -> bool {
        self.dev_key.is_some()
    }

    /// Whether connections without a token are accepted.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous
    }

    /// Clock skew tolerated on `exp`/`nbf`, in seconds; the connection
    /// handler uses it too when it schedules the `expiring` notice.
    pub fn leeway_s(&self) -> u64 {
        self.leeway_s
    }
}

/// Why `auth.jwks_file` was refused together with a single key.
const JWKS_EXCLUSIVE: &str =
    "auth.jwks_file cannot be combined with auth.secret or auth.public_key_file: put every key in the JWKS";

/// Why `auth.jwks_file` was refused together with an `auth.algorithm`.
const JWKS_ALGORITHM: &str = "auth.algorithm is not used with auth.jwks_file (each key's algorithm comes from its alg, or its kty/crv): remove it";

/// The claim checks every key's `Validation` starts from: leeway from
/// config, `exp` and `nbf` checked, `iss`/`aud` required and compared when
/// configured (the algorithm list is set per key).
fn base_validation(cfg: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = cfg.leeway_s;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &cfg.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &cfg.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            required.push("aud");
        }
        // Without a configured audience a token's `aud` is none of our
        // business (jsonwebtoken would refuse any token carrying one).
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The one key of `auth.secret` (HS*) or `auth.public_key_file` (RS256,
/// ES256); `None` with neither and `allow_anonymous`.
fn single_key(cfg: &AuthConfig, algorithm: Algorithm) -> anyhow::Result<Option<DecodingKey>> {
    match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            if cfg.public_key_file.is_some() {
                bail!(
                    "auth.public_key_file is set but auth.algorithm {} uses auth.secret",
                    cfg.algorithm
                );
            }
            match cfg.secret.as_deref() {
                Some("") => bail!("auth.secret must not be empty"),
                Some(secret) => {
                    if secret.len() < 32 {
                        tracing::warn!("auth.secret is shorter than 32 bytes: easy to brute-force");
                    }
                    Ok(Some(DecodingKey::from_secret(secret.as_bytes())))
                }
                None if cfg.allow_anonymous => Ok(None),
                None => bail!("auth.algorithm {} needs auth.secret", cfg.algorithm),
            }
        }
        _ => {
            if cfg.secret.is_some() {
                bail!(
                    "auth.secret is set but auth.algorithm {} uses auth.public_key_file",
                    cfg.algorithm
                );
            }
            let Some(path) = cfg.public_key_file.as_deref() else {
                bail!(
                    "auth.algorithm {} needs auth.public_key_file",
                    cfg.algorithm
                );
            };
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read auth.public_key_file {}", path.display()))?;
            if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
                bail!(
                    "auth.public_key_file {} holds a private key; give the public key",
                    path.display()
                );
            }
            let key = if algorithm == Algorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            let key = key.map_err(|err| {
                anyhow::anyhow!(
                    "auth.public_key_file {} is not a PEM {} public key: {err}",
                    path.display(),
                    cfg.algorithm
                )
            })?;
            Ok(Some(key))
        }
    }
}

/// The verifier of a JWKS for `token`: the key its header's `kid` names,
/// if the header's `alg` is that key's algorithm. Only `kid` and `alg` of
/// the header are read (never `jwk`, `jku` or `x5u`).
fn select<'a>(set: &'a Jwks, token: &str) -> Result<&'a Verifier, AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|err| map_jwt_error(&err))?;
    let Some(kid) = header.kid.as_deref() else {
        return Err(AuthError::Invalid("token has no kid".into()));
    };
    // The kid is the client's text: it is not repeated in the reason.
    let verifier = set
        .get(kid)
        .ok_or_else(|| AuthError::Invalid("unknown kid".into()))?;
    if header.alg != verifier.algorithm {
        return Err(AuthError::Invalid("algorithm not accepted".into()));
    }
    Ok(verifier)
}

/// The configured algorithm name as jsonwebtoken's enum.
fn parse_algorithm(name: &str) -> anyhow::Result<Algorithm> {
    Ok(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        other => bail!(
            "auth.algorithm {other:?} is not one of {}",
            crate::config::ALGORITHMS.join(", ")
        ),
    })
}

/// The verified claims as [`Claims`]; a claim of the wrong type is named in
/// the error (its value is not).
fn claims_from_value(value: serde_json::Value) -> Result<Claims, AuthError> {
    use serde_json::Value;
    let Some(object) = value.as_object() else {
        return Err(AuthError::Invalid("claims are not a JSON object".into()));
    };
    let list_ok = |claim: &str| match object.get(claim) {
        None => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_string),
        Some(_) => false,
    };
    let bad = if !object.get("sub").is_some_and(Value::is_string) {
        "sub"
    } else if !object.get("exp").is_some_and(Value::is_u64) {
        "exp"
    } else if !list_ok("roles") {
        "roles"
    } else if !list_ok("rooms") {
        "rooms"
    } else {
        return serde_json::from_value(value)
            .map_err(|_| AuthError::Invalid("malformed claims".into()));
    };
    Err(AuthError::Invalid(format!("malformed claim {bad}")))
}

/// A jsonwebtoken error as an [`AuthError`] with a short reason that holds
/// no part of the token (claim *names* only, never values).
fn map_jwt_error(err: &jsonwebtoken::errors::Error) -> AuthError {
    let reason: String = match err.kind() {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "algorithm not accepted".into()
        }
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "issuer mismatch".into(),
        ErrorKind::InvalidAudience => "audience mismatch".into(),
        ErrorKind::InvalidSubject => "subject mismatch".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim {claim}"),
        ErrorKind::Json(json) => {
            // serde's "missing field `sub`" names a field of `Claims`; other
            // messages may quote claim values, so they are not repeated.
            let text = json.to_string();
            match text
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
            {
                Some((field, _)) => format!("missing claim {field}"),
                None => "malformed header or claims".into(),
            }
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "malformed token".into()
        }
        _ => "rejected".into(),
    };
    AuthError::Invalid(reason)
}

#[cfg(test)]
mod tests;
