//! `auth.jwks_file`: keys chosen by `kid`, their algorithms, reloads and
//! the file's rules.

use super::*;

const EC384_PRIVATE: &[u8] = include_bytes!("../../../tests/keys/ec384_private.pem");
const SECRET_A: &[u8] = b"secret-A-0123456789abcdef0123456789";
const SECRET_B: &[u8] = b"secret-B-0123456789abcdef0123456789";

/// An `oct` JWK of `secret`, with `alg` when given.
fn oct(kid: &str, alg: Option<&str>, secret: &[u8]) -> serde_json::Value {
    let mut key = json!({"kty": "oct", "kid": kid, "k": b64(secret), "use": "sig"});
    if let Some(alg) = alg {
        key["alg"] = json!(alg);
    }
    key
}

/// The public JWK of a private key (with its `alg`).
fn public_jwk(kid: &str, key: &EncodingKey, alg: Algorithm) -> serde_json::Value {
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(key, alg).unwrap();
    let mut value = serde_json::to_value(jwk).unwrap();
    value["kid"] = json!(kid);
    value
}

fn without_alg(mut key: serde_json::Value) -> serde_json::Value {
    key.as_object_mut().unwrap().remove("alg");
    key
}

/// A JWKS file holding `keys`, in its own temporary directory.
struct JwksFile {
    dir: tempfile::TempDir,
}

impl JwksFile {
    fn new(keys: &[serde_json::Value]) -> JwksFile {
        let file = JwksFile {
            dir: tempfile::tempdir().unwrap(),
        };
        file.write(keys);
        file
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    fn write(&self, keys: &[serde_json::Value]) {
        self.write_raw(&json!({ "keys": keys }).to_string());
    }

    fn write_raw(&self, text: &str) {
        std::fs::write(self.path(), text).unwrap();
    }

    fn config(&self) -> AuthConfig {
        AuthConfig {
            jwks_file: Some(self.path()),
            ..AuthConfig::default()
        }
    }
}

fn sign_kid(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &serde_json::Value,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE).unwrap()
}

fn ec384_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC384_PRIVATE).unwrap()
}

/// HS256, HS512, RS256, ES256 and ES384 keys in one set.
fn mixed_set() -> Vec<serde_json::Value> {
    vec![
        oct("hs-a", Some("HS256"), SECRET_A),
        oct("hs-b", Some("HS512"), SECRET_B),
        public_jwk("rsa", &rsa_key(), Algorithm::RS256),
        public_jwk("ec", &ec_key(), Algorithm::ES256),
        public_jwk("ec384", &ec384_key(), Algorithm::ES384),
    ]
}

#[test]
fn jwks_mixed_hs_and_rs_set_selects_the_key_by_kid() {
    let file = JwksFile::new(&mixed_set());
    let auth = Authenticator::new(&file.config()).unwrap();
    assert_eq!(auth.key_count(), 5);
    let a = EncodingKey::from_secret(SECRET_A);
    let b = EncodingKey::from_secret(SECRET_B);
    let cases = [
        (Algorithm::HS256, "hs-a", &a),
        (Algorithm::HS512, "hs-b", &b),
        (Algorithm::RS256, "rsa", &rsa_key()),
        (Algorithm::ES256, "ec", &ec_key()),
        (Algorithm::ES384, "ec384", &ec384_key()),
    ];
    for (alg, kid, key) in cases {
        let token = sign_kid(alg, Some(kid), key, &good_claims());
        assert_eq!(auth.verify(&token), Ok(expected()), "{kid}");
    }
    // Signed with one key but naming another: that other key checks it.
    let token = sign_kid(Algorithm::HS256, Some("hs-a"), &b, &good_claims());
    assert_eq!(invalid(&auth, &token), "bad signature");
    let other_rsa = EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE).unwrap();
    let token = sign_kid(Algorithm::RS256, Some("rsa"), &other_rsa, &good_claims());
    assert_eq!(invalid(&auth, &token), "bad signature");
}

#[test]
fn jwks_refuses_unknown_and_missing_kid() {
    let file = JwksFile::new(&mixed_set());
    let auth = Authenticator::new(&file.config()).unwrap();
    let a = EncodingKey::from_secret(SECRET_A);
    let token = sign_kid(Algorithm::HS256, Some("hs-c"), &a, &good_claims());
    assert_eq!(invalid(&auth, &token), "unknown kid");
    let token = sign_kid(Algorithm::HS256, Some(""), &a, &good_claims());
    assert_eq!(invalid(&auth, &token), "unknown kid");
    let token = sign_kid(Algorithm::HS256, None, &a, &good_claims());
    assert_eq!(invalid(&auth, &token), "token has no kid");

    // Also when the set holds one key: adding a second one during a
    // rotation must not start refusing tokens accepted before.
    let single = JwksFile::new(&[oct("hs-a", None, SECRET_A)]);
    let auth = Authenticator::new(&single.config()).unwrap();
    assert_eq!(invalid(&auth, &token), "token has no kid");
    let token = sign_kid(Algorithm::HS256, Some("hs-a"), &a, &good_claims());
    assert!(auth.verify(&token).is_ok());
}

#[test]
fn jwks_refuses_a_token_alg_that_is_not_its_keys() {
    let file = JwksFile::new(&mixed_set());
    let auth = Authenticator::new(&file.config()).unwrap();
    let a = EncodingKey::from_secret(SECRET_A);
    // Same family, other algorithm than the key's.
    let token = sign_kid(Algorithm::HS384, Some("hs-a"), &a, &good_claims());
    assert_eq!(invalid(&auth, &token), "algorithm not accepted");
    let token = sign_kid(Algorithm::RS512, Some("rsa"), &rsa_key(), &good_claims());
    assert_eq!(invalid(&auth, &token), "algorithm not accepted");
    // Another family: an RSA token naming the HMAC key.
    let token = sign_kid(Algorithm::RS256, Some("hs-a"), &rsa_key(), &good_claims());
    assert_eq!(invalid(&auth, &token), "algorithm not accepted");
    // The classic confusion: the RSA public key used as an HMAC secret.
    let forged = EncodingKey::from_secret(RSA_PUBLIC);
    let token = sign_kid(Algorithm::HS256, Some("rsa"), &forged, &good_claims());
    assert_eq!(invalid(&auth, &token), "algorithm not accepted");
    // An ES384 token naming the ES256 key.
    let token = sign_kid(Algorithm::ES384, Some("ec"), &ec384_key(), &good_claims());
    assert_eq!(invalid(&auth, &token), "algorithm not accepted");
    // alg none, with a kid.
    let claims = good_claims().to_string();
    let header = r#"{"alg":"none","kid":"hs-a"}"#;
    let token = format!("{}.{}.", b64(header.as_bytes()), b64(claims.as_bytes()));
    invalid(&auth, &token);
    // A key embedded in the header is not used.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs-c".into());
    header.jwk = Some(serde_json::from_value(oct("hs-c", Some("HS256"), b"attacker")).unwrap());
    let token = jsonwebtoken::encode(
        &header,
        &good_claims(),
        &EncodingKey::from_secret(b"attacker"),
    )
    .unwrap();
    assert_eq!(invalid(&auth, &token), "unknown kid");
}

#[test]
fn jwks_infers_the_algorithm_from_the_key_type() {
    let file = JwksFile::new(&[
        oct("hs", None, SECRET_A),
        without_alg(public_jwk("rsa", &rsa_key(), Algorithm::RS256)),
        without_alg(public_jwk("ec", &ec_key(), Algorithm::ES256)),
        without_alg(public_jwk("ec384", &ec384_key(), Algorithm::ES384)),
    ]);
    let auth = Authenticator::new(&file.config()).unwrap();
    let a = EncodingKey::from_secret(SECRET_A);
    let ok = [
        (Algorithm::HS256, "hs", &a),
        (Algorithm::RS256, "rsa", &rsa_key()),
        (Algorithm::ES256, "ec", &ec_key()),
        (Algorithm::ES384, "ec384", &ec384_key()),
    ];
    for (alg, kid, key) in ok {
        let token = sign_kid(alg, Some(kid), key, &good_claims());
        assert!(auth.verify(&token).is_ok(), "{kid}");
    }
    for (alg, kid, key) in [
        (Algorithm::HS512, "hs", &a),
        (Algorithm::RS384, "rsa", &rsa_key()),
    ] {
        let token = sign_kid(alg, Some(kid), key, &good_claims());
        assert_eq!(invalid(&auth, &token), "algorithm not accepted", "{kid}");
    }
}

#[test]
fn jwks_keeps_the_claim_checks() {
    let file = JwksFile::new(&[oct("a", None, SECRET_A)]);
    let cfg = AuthConfig {
        issuer: Some("https://issuer.example".into()),
        audience: Some("broker".into()),
        leeway_s: 5,
        ..file.config()
    };
    let auth = Authenticator::new(&cfg).unwrap();
    let a = EncodingKey::from_secret(SECRET_A);
    let token = |claims: serde_json::Value| sign_kid(Algorithm::HS256, Some("a"), &a, &claims);
    let iss = "https://issuer.example";
    assert!(auth
        .verify(&token(
            json!({"sub": "alice", "exp": now() + 60, "iss": iss, "aud": "broker"})
        ))
        .is_ok());
    assert_eq!(
        auth.verify(&token(
            json!({"sub": "alice", "exp": now() - 10, "iss": iss, "aud": "broker"})
        )),
        Err(AuthError::Expired)
    );
    assert_eq!(
        invalid(
            &auth,
            &token(
                json!({"sub": "alice", "exp": now() + 60, "nbf": now() + 60, "iss": iss, "aud": "broker"})
            )
        ),
        "not valid yet (nbf)"
    );
    assert_eq!(
        invalid(
            &auth,
            &token(json!({"sub": "alice", "exp": now() + 60, "iss": "other", "aud": "broker"}))
        ),
        "issuer mismatch"
    );
    assert_eq!(
        invalid(
            &auth,
            &token(json!({"sub": "alice", "exp": now() + 60, "iss": iss}))
        ),
        "missing claim aud"
    );
    assert_eq!(
        invalid(
            &auth,
            &token(json!({"sub": "a b", "exp": now() + 60, "iss": iss, "aud": "broker"}))
        ),
        "sub is not a valid user id"
    );
}

#[test]
fn jwks_reload_swaps_the_keys_and_keeps_them_on_a_bad_file() {
    let file = JwksFile::new(&[oct("a", None, SECRET_A)]);
    let auth = Authenticator::new(&file.config()).unwrap();
    let shared = auth.clone();
    let a = EncodingKey::from_secret(SECRET_A);
    let b = EncodingKey::from_secret(SECRET_B);
    let token_a = sign_kid(Algorithm::HS256, Some("a"), &a, &good_claims());
    let token_b = sign_kid(Algorithm::HS256, Some("b"), &b, &good_claims());
    assert!(auth.verify(&token_a).is_ok());
    assert_eq!(invalid(&auth, &token_b), "unknown kid");

    // Add B: both work, through every clone.
    file.write(&[oct("a", None, SECRET_A), oct("b", None, SECRET_B)]);
    assert_eq!(auth.reload().unwrap(), 2);
    assert!(shared.verify(&token_a).is_ok());
    assert!(shared.verify(&token_b).is_ok());

    // Remove A.
    file.write(&[oct("b", None, SECRET_B)]);
    assert_eq!(shared.reload().unwrap(), 1);
    assert_eq!(invalid(&auth, &token_a), "unknown kid");
    assert!(auth.verify(&token_b).is_ok());
    assert_eq!(auth.key_count(), 1);

    // A bad file, or no file: B stays.
    file.write_raw("{\"keys\": [");
    let err = format!("{:#}", auth.reload().unwrap_err());
    assert!(err.contains("not JSON"), "{err}");
    file.write(&[oct("a", None, SECRET_A), oct("a", None, SECRET_B)]);
    let err = format!("{:#}", auth.reload().unwrap_err());
    assert!(err.contains("more than one key"), "{err}");
    std::fs::remove_file(file.path()).unwrap();
    let err = format!("{:#}", auth.reload().unwrap_err());
    assert!(err.contains("cannot read"), "{err}");
    assert!(auth.verify(&token_b).is_ok());
    assert_eq!(invalid(&auth, &token_a), "unknown kid");
    assert_eq!(auth.key_count(), 1);
}

#[test]
fn reload_without_a_jwks_file_changes_nothing() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let err = auth.reload().unwrap_err().to_string();
    assert!(err.contains("not configured"), "{err}");
    assert!(auth
        .verify(&sign_hs(Algorithm::HS256, &good_claims()))
        .is_ok());
    assert_eq!(auth.key_count(), 1);
    assert_eq!(auth.jwks_file(), None);
}

#[test]
fn jwks_refuses_bad_files_with_a_clear_message() {
    let rsa = public_jwk("rsa", &rsa_key(), Algorithm::RS256);
    let ec = public_jwk("ec", &ec_key(), Algorithm::ES256);
    let with = |mut key: serde_json::Value, member: &str, value: serde_json::Value| {
        key[member] = value;
        key
    };
    let raw_cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not JSON"),
        ("[]".into(), "expected {\"keys\""),
        ("{\"keys\": {}}".into(), "expected {\"keys\""),
        ("{\"keys\": []}".into(), "holds no keys"),
        ("{\"keys\": [5]}".into(), "keys[0]: not a JSON object"),
    ];
    let key_cases: Vec<(Vec<serde_json::Value>, &str)> = vec![
        (
            vec![
                oct("a", None, SECRET_A),
                json!({"kty": "oct", "k": b64(SECRET_B)}),
            ],
            "keys[1]: has no kid",
        ),
        (vec![oct("", None, SECRET_A)], "empty kid"),
        (
            vec![oct("a", None, SECRET_A), oct("a", None, SECRET_B)],
            "kid \"a\" is used by more than one key",
        ),
        (
            vec![with(rsa.clone(), "d", json!("AQAB"))],
            "private key material",
        ),
        (
            vec![with(ec.clone(), "d", json!("AQAB"))],
            "private key material",
        ),
        (
            vec![with(rsa.clone(), "use", json!("enc"))],
            "use must be \"sig\"",
        ),
        (
            vec![oct("a", Some("RS256"), SECRET_A)],
            "does not fit an oct key",
        ),
        (
            vec![with(rsa.clone(), "alg", json!("HS256"))],
            "does not fit an RSA key",
        ),
        (
            vec![with(rsa.clone(), "alg", json!("PS256"))],
            "alg \"PS256\" is not supported",
        ),
        (
            vec![with(rsa.clone(), "alg", json!("none"))],
            "alg \"none\" is not supported",
        ),
        (
            vec![with(ec.clone(), "alg", json!("ES384"))],
            "does not fit curve",
        ),
        (
            vec![with(ec.clone(), "crv", json!("P-384"))],
            "does not fit curve",
        ),
        (vec![with(ec.clone(), "x", json!("AQAB"))], "coordinates"),
        (
            vec![json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AQAB"})],
            "kty \"OKP\" is not supported",
        ),
        (vec![json!({"kid": "x", "k": "AQAB"})], "has no kty"),
        (
            vec![json!({"kty": "RSA", "kid": "r", "n": "AQAB"})],
            "not a valid RSA JWK",
        ),
        (vec![oct("a", None, b"")], "must not be empty"),
        (
            vec![with(oct("a", None, SECRET_A), "k", json!("!!!"))],
            "not base64url",
        ),
    ];
    let mut cases = raw_cases;
    for (keys, needle) in key_cases {
        cases.push((json!({ "keys": keys }).to_string(), needle));
    }
    let secret_a = b64(SECRET_A);
    for (text, needle) in cases {
        let file = JwksFile::new(&[]);
        file.write_raw(&text);
        let err = Authenticator::new(&file.config()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(needle), "{text}: {msg}");
        assert!(msg.contains("auth.jwks_file"), "names the key: {msg}");
        assert!(!msg.contains(&secret_a), "shows a secret: {msg}");
    }

    let missing = AuthConfig {
        jwks_file: Some(key_file("missing.json")),
        ..AuthConfig::default()
    };
    let msg = format!("{:#}", Authenticator::new(&missing).unwrap_err());
    assert!(msg.contains("cannot read"), "{msg}");
    assert!(msg.contains("missing.json"), "{msg}");
}

#[test]
fn jwks_is_refused_with_another_key_setting() {
    let file = JwksFile::new(&[oct("a", None, SECRET_A)]);
    let cases = [
        (
            AuthConfig {
                secret: Some(SECRET.into()),
                ..file.config()
            },
            "cannot be combined",
        ),
        (
            AuthConfig {
                public_key_file: Some(key_file("rsa_public.pem")),
                ..file.config()
            },
            "cannot be combined",
        ),
        (
            AuthConfig {
                algorithm: "RS256".into(),
                ..file.config()
            },
            "auth.algorithm is not used with auth.jwks_file",
        ),
        (
            AuthConfig {
                dev_tokens: true,
                ..file.config()
            },
            "dev_tokens is refused",
        ),
    ];
    for (cfg, needle) in cases {
        let msg = format!("{:#}", Authenticator::new(&cfg).unwrap_err());
        assert!(msg.contains(needle), "{cfg:?}: {msg}");
    }
}

#[test]
fn debug_of_a_jwks_shows_kids_not_keys() {
    let file = JwksFile::new(&mixed_set());
    let auth = Authenticator::new(&file.config()).unwrap();
    let text = format!("{auth:?}");
    assert!(
        text.contains("hs-a:HS256") && text.contains("ec384:ES384"),
        "{text}"
    );
    assert!(!text.contains(&b64(SECRET_A)), "{text}");
}
