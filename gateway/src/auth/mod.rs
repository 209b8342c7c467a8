//! JWT verification of clients, and dev tokens for the demo page.
//!
//! The key and the `Validation` are built once from the configuration. The
//! accepted algorithm list holds exactly the configured algorithm, never one
//! read from the token: that (and keys typed by family) is what stops the
//! classic confusion attacks (`alg: none`, an RS256 public key used as an
//! HS256 secret).
//!
//! jsonwebtoken 10.4 notes: releases before 10.3 treated a
//! malformed `exp`/`nbf` as absent (CVE-2026-25537); the crypto backend
//! (`rust_crypto`) is enabled in Cargo.toml, without which decoding panics;
//! the library's defaults are changed here on purpose: leeway from config
//! (default 60 s there), `nbf` checked (off there), `aud` only checked when
//! an audience is configured (a token's `aud` fails there otherwise), and
//! `iss`/`aud` *required* when configured (there they are only compared when
//! present).

use std::fmt;

use anyhow::{bail, Context as _};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::AuthConfig;

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
/// Sync` and cheap to clone).
#[derive(Clone)]
pub struct Authenticator {
    /// The verification key; `None` only with `allow_anonymous` and no
    /// secret, in which case every presented token is refused.
    key: Option<DecodingKey>,
    /// Algorithm list, leeway and claim checks.
    validation: Validation,
    /// The signing key of dev tokens (the same random secret as `key`).
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

impl fmt::Debug for Authenticator {
    /// Shows the set-up, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .field("has_key", &self.key.is_some())
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
    /// from `public_key_file`. When `dev_tokens` is on (and no secret
    /// configured), a random 32-byte HS256 secret is generated for this
    /// process so the demo page can mint tokens.
    ///
    /// # Errors
    ///
    /// An unknown algorithm, a missing secret or key file, a key file that
    /// cannot be read or is not a public key of the algorithm's family, or
    /// `dev_tokens` combined with a real secret or key (the same checks as
    /// `Config::validate`, so a hand-built `AuthConfig` is safe too).
    pub fn new(cfg: &AuthConfig) -> anyhow::Result<Authenticator> {
        let algorithm = parse_algorithm(&cfg.algorithm)?;
        let mut dev_key = None;
        let key = if cfg.dev_tokens {
            if cfg.secret.is_some() || cfg.public_key_file.is_some() {
                bail!("auth.dev_tokens is refused when a real secret is configured");
            }
            if algorithm != Algorithm::HS256 {
                bail!("auth.dev_tokens needs auth.algorithm = \"HS256\"");
            }
            let secret: [u8; 32] = rand::random();
            dev_key = Some(EncodingKey::from_secret(&secret));
            tracing::warn!("auth.dev_tokens is on: anyone can mint tokens from the demo page");
            Some(DecodingKey::from_secret(&secret))
        } else {
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
                                tracing::warn!(
                                    "auth.secret is shorter than 32 bytes: easy to brute-force"
                                );
                            }
                            Some(DecodingKey::from_secret(secret.as_bytes()))
                        }
                        None if cfg.allow_anonymous => None,
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
                    let pem = std::fs::read(path).with_context(|| {
                        format!("cannot read auth.public_key_file {}", path.display())
                    })?;
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
                    Some(key)
                }
            }
        };

        let mut validation = Validation::new(algorithm);
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

        Ok(Authenticator {
            key,
            validation,
            dev_key,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            allow_anonymous: cfg.allow_anonymous,
            leeway_s: cfg.leeway_s,
        })
    }

    /// Verifies signature, `exp`, `nbf`, `iss`/`aud` when configured, with
    /// `leeway_s`; the algorithm list holds only the configured algorithm
    /// (never from the token). Also rejects a `sub` that fails
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
        let Some(key) = &self.key else {
            return Err(AuthError::Invalid(
                "no verification key is configured".into(),
            ));
        };
        // Decoded as JSON first so that the library's claim checks run (and
        // name the claim) before our types are applied.
        let value = jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation)
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
