//! `auth.jwks_file`: a JWK Set (RFC 7517) read into one verifier per key,
//! chosen by the token header's `kid`.
//!
//! Each key's algorithm comes from the key — its `alg` member, or else its
//! type (`oct` → HS256, `RSA` → RS256, `EC` on P-256 → ES256, on P-384 →
//! ES384) — never from the token: a token whose header `alg` is not its
//! key's algorithm is refused. The header's `jku`/`jwk`/`x5u` are never
//! followed (only keys of the file verify).
//!
//! The whole file is checked when it is read, and refused as a whole on the
//! first bad key, so that a half-applied set never serves: every key needs
//! a unique `kid`, `use` (when present) must be `sig`, private members
//! (`d`, `p`, `q`, ...) are refused, an `oct` key must not be empty, an EC
//! key's coordinates must fit its curve. `DecodingKey` and `Validation` are
//! built here, once per load.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Largest JWKS file read, in bytes (a set of a few dozen keys is a few
/// KiB; this only stops a wrong path, such as a log file, being slurped).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Members of a JWK that only a private key has (RFC 7518 §6.2.2, §6.3.2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// The `alg` values a key of the set may name.
pub const SUPPORTED_ALGORITHMS: [&str; 8] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
];

/// One key ready to verify: the key and a `Validation` whose algorithm list
/// holds only the key's own algorithm.
pub(super) struct Verifier {
    /// The key material.
    pub(super) key: DecodingKey,
    /// The configured claim checks, with `algorithms == [algorithm]`.
    pub(super) validation: Validation,
    /// The key's algorithm (from the key, never from a token).
    pub(super) algorithm: Algorithm,
}

impl Verifier {
    /// A verifier of `key` for `algorithm` with the claim checks of `base`.
    pub(super) fn new(key: DecodingKey, algorithm: Algorithm, base: &Validation) -> Verifier {
        let mut validation = base.clone();
        validation.algorithms = vec![algorithm];
        Verifier {
            key,
            validation,
            algorithm,
        }
    }
}

/// The keys of one JWKS file, by `kid`.
pub(super) struct Jwks {
    /// Verifier of each key id.
    by_kid: HashMap<String, Verifier>,
}

impl Jwks {
    /// The verifier of `kid`, if the set has that key.
    pub(super) fn get(&self, kid: &str) -> Option<&Verifier> {
        self.by_kid.get(kid)
    }

    /// The key ids with their algorithms, sorted (for logs: no key
    /// material).
    pub(super) fn describe(&self) -> Vec<String> {
        let mut kids: Vec<String> = self
            .by_kid
            .iter()
            .map(|(kid, v)| format!("{kid}:{:?}", v.algorithm))
            .collect();
        kids.sort();
        kids
    }

    /// Number of keys.
    pub(super) fn len(&self) -> usize {
        self.by_kid.len()
    }
}

/// Reads and checks the JWKS at `path`, building each key's verifier with
/// the claim checks of `base`.
///
/// # Errors
///
/// The file cannot be read or is too large, or [`parse`] refuses it; the
/// message names the file.
pub(super) fn load(path: &Path, base: &Validation) -> anyhow::Result<Jwks> {
    let context = || format!("auth.jwks_file {}", path.display());
    let len = std::fs::metadata(path)
        .map_err(|err| anyhow!("cannot read it: {err}"))
        .with_context(context)?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(anyhow!("it is {len} bytes, more than {MAX_FILE_BYTES}")).with_context(context);
    }
    let bytes = std::fs::read(path)
        .map_err(|err| anyhow!("cannot read it: {err}"))
        .with_context(context)?;
    parse(&bytes, base).with_context(context)
}

/// Checks a JWKS document and builds one verifier per key.
///
/// # Errors
///
/// Not a JSON object with a non-empty `keys` list, or any key refused
/// (the message names the key by its index and `kid`, never its material).
pub(super) fn parse(bytes: &[u8], base: &Validation) -> anyhow::Result<Jwks> {
    // Read as plain JSON first: to name a bad key by its index, and to see
    // private members, which `Jwk` would silently drop.
    let document: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|err| anyhow!("not JSON (line {}, column {})", err.line(), err.column()))?;
    let Some(raw_keys) = document.get("keys").and_then(serde_json::Value::as_array) else {
        bail!("not a JWK Set: expected {{\"keys\": [...]}}");
    };
    if raw_keys.is_empty() {
        bail!("holds no keys");
    }
    let mut set = JwkSet {
        keys: Vec::with_capacity(raw_keys.len()),
    };
    for (index, raw) in raw_keys.iter().enumerate() {
        let jwk = check_raw(raw).with_context(|| format!("keys[{index}]"))?;
        set.keys.push(jwk);
    }
    let mut by_kid = HashMap::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let verifier = build(jwk, base).with_context(|| format!("keys[{index}] (kid {kid:?})"))?;
        if by_kid.insert(kid.clone(), verifier).is_some() {
            bail!("keys[{index}]: kid {kid:?} is used by more than one key");
        }
    }
    Ok(Jwks { by_kid })
}

/// One key as JSON: an object without private members, readable as a
/// [`Jwk`], with a non-empty `kid`.
fn check_raw(raw: &serde_json::Value) -> anyhow::Result<Jwk> {
    let Some(object) = raw.as_object() else {
        bail!("not a JSON object");
    };
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| object.contains_key(**m)) {
        bail!("holds private key material ({member:?}); give the public key only");
    }
    let kty = object.get("kty").and_then(serde_json::Value::as_str);
    match kty {
        Some("oct" | "RSA" | "EC") => {}
        Some(other) => bail!("kty {other:?} is not supported (oct, RSA, EC)"),
        None => bail!("has no kty"),
    }
    match object.get("alg") {
        None => {}
        Some(serde_json::Value::String(alg)) if SUPPORTED_ALGORITHMS.contains(&alg.as_str()) => {}
        Some(serde_json::Value::String(alg)) => bail!(
            "alg {alg:?} is not supported ({})",
            SUPPORTED_ALGORITHMS.join(", ")
        ),
        Some(_) => bail!("alg must be a string"),
    }
    // serde's messages here name fields and types, not values (the key
    // members are strings, so a value is never quoted in an error).
    let jwk: Jwk = serde_json::from_value(raw.clone())
        .map_err(|err| anyhow!("not a valid {} JWK: {err}", kty.unwrap_or_default()))?;
    match jwk.common.key_id.as_deref() {
        None => bail!("has no kid (tokens choose their key by kid)"),
        Some("") => bail!("has an empty kid"),
        Some(_) => {}
    }
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => bail!("use must be \"sig\""),
    }
    Ok(jwk)
}

/// The key's algorithm and its verifier.
fn build(jwk: &Jwk, base: &Validation) -> anyhow::Result<Verifier> {
    let named = match &jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(
            alg.to_string()
                .parse::<Algorithm>()
                .map_err(|_| anyhow!("alg {alg} is not a signature algorithm"))?,
        ),
    };
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => {
            let alg = named.unwrap_or(Algorithm::HS256);
            if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                bail!("alg {alg:?} does not fit an oct key (HS256, HS384, HS512)");
            }
            alg
        }
        AlgorithmParameters::RSA(_) => {
            let alg = named.unwrap_or(Algorithm::RS256);
            if !matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512) {
                bail!("alg {alg:?} does not fit an RSA key (RS256, RS384, RS512)");
            }
            alg
        }
        AlgorithmParameters::EllipticCurve(params) => {
            let (by_curve, bytes) = match params.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => bail!(
                    "EC curve {:?} is not supported (P-256, P-384)",
                    params.curve
                ),
            };
            let alg = named.unwrap_or(by_curve);
            if alg != by_curve {
                bail!("alg {alg:?} does not fit curve {:?}", params.curve);
            }
            if b64_len(&params.x) != bytes || b64_len(&params.y) != bytes {
                bail!(
                    "x and y must be {bytes}-byte coordinates of {:?}",
                    params.curve
                );
            }
            alg
        }
        AlgorithmParameters::OctetKeyPair(_) => bail!("kty OKP is not supported"),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| anyhow!("key members are not base64url"))?;
    match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => {
            let secret = key.try_get_hmac_secret().unwrap_or_default();
            if secret.is_empty() {
                bail!("k (the secret) must not be empty");
            }
            if secret.len() < 32 {
                tracing::warn!(
                    kid = jwk.common.key_id.as_deref().unwrap_or_default(),
                    "an oct key of auth.jwks_file is shorter than 32 bytes: easy to brute-force"
                );
            }
        }
        AlgorithmParameters::RSA(params) if b64_len(&params.n) < 256 => {
            tracing::warn!(
                kid = jwk.common.key_id.as_deref().unwrap_or_default(),
                "an RSA key of auth.jwks_file is shorter than 2048 bits"
            );
        }
        _ => {}
    }
    Ok(Verifier::new(key, algorithm, base))
}

/// Bytes that unpadded (or padded) base64url text of this length decodes
/// to; leading zero bytes count, which is what the coordinate checks want.
fn b64_len(text: &str) -> usize {
    text.trim_end_matches('=').len() * 3 / 4
}
