//! The JWT verifier's tests: every algorithm, the classic attacks, claims,
//! dev tokens and refused set-ups.

use super::*;
use serde_json::json;
use std::path::PathBuf;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const RSA_PRIVATE: &[u8] = include_bytes!("../../../tests/keys/rsa_private.pem");
const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("../../../tests/keys/rsa_other_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../../tests/keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../../../tests/keys/ec_private.pem");

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs(algorithm: &str) -> AuthConfig {
    AuthConfig {
        algorithm: algorithm.into(),
        secret: Some(SECRET.into()),
        ..AuthConfig::default()
    }
}

fn rs256() -> AuthConfig {
    AuthConfig {
        algorithm: "RS256".into(),
        public_key_file: Some(key_file("rsa_public.pem")),
        ..AuthConfig::default()
    }
}

fn es256() -> AuthConfig {
    AuthConfig {
        algorithm: "ES256".into(),
        public_key_file: Some(key_file("ec_public.pem")),
        ..AuthConfig::default()
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn sign_hs(alg: Algorithm, claims: &serde_json::Value) -> String {
    sign(alg, &EncodingKey::from_secret(SECRET.as_bytes()), claims)
}

fn good_claims() -> serde_json::Value {
    // One expiry for the whole run: signing and `expected()` must not
    // straddle a second (RSA signing is slow enough to).
    static EXP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let exp = *EXP.get_or_init(|| now() + 600);
    json!({"sub": "alice", "exp": exp, "roles": ["admin"], "rooms": ["chat:*"]})
}

fn expected() -> Claims {
    Claims {
        sub: "alice".into(),
        exp: good_claims()["exp"].as_u64().unwrap(),
        roles: vec!["admin".into()],
        rooms: vec!["chat:*".into()],
    }
}

/// Unpadded base64url, for hand-made tokens.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn invalid(auth: &Authenticator, token: &str) -> String {
    match auth.verify(token) {
        Err(AuthError::Invalid(reason)) => {
            assert!(!reason.contains(token), "reason repeats the token");
            reason
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn accepts_valid_hmac_tokens() {
    for (name, alg) in [
        ("HS256", Algorithm::HS256),
        ("HS384", Algorithm::HS384),
        ("HS512", Algorithm::HS512),
    ] {
        let auth = Authenticator::new(&hs(name)).unwrap();
        let claims = auth.verify(&sign_hs(alg, &good_claims())).unwrap();
        assert_eq!(claims.sub, "alice", "{name}");
        assert_eq!(claims.roles, vec!["admin"]);
        assert_eq!(claims.rooms, vec!["chat:*"]);
    }
}

#[test]
fn accepts_valid_rs256_and_es256_tokens() {
    let rs = Authenticator::new(&rs256()).unwrap();
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let token = sign(Algorithm::RS256, &key, &good_claims());
    assert_eq!(rs.verify(&token).unwrap(), expected());

    let es = Authenticator::new(&es256()).unwrap();
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let token = sign(Algorithm::ES256, &key, &good_claims());
    assert_eq!(es.verify(&token).unwrap(), expected());
    // Each refuses the other's tokens.
    assert_eq!(invalid(&rs, &token), "algorithm not accepted");
}

#[test]
fn optional_claims_default_to_empty_and_extra_claims_are_ignored() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let exp = now() + 60;
    let token = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "bob@example.com", "exp": exp, "name": "Bob", "iat": now()}),
    );
    assert_eq!(
        auth.verify(&token).unwrap(),
        Claims {
            sub: "bob@example.com".into(),
            exp,
            roles: vec![],
            rooms: vec![],
        }
    );
}

#[test]
fn rejects_alg_none() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let claims = good_claims().to_string();
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let token = format!("{}.{}.", b64(header.as_bytes()), b64(claims.as_bytes()));
        invalid(&auth, &token);
        let with_sig = format!("{token}{}", b64(b"x"));
        invalid(&auth, &with_sig);
    }
}

#[test]
fn rejects_rsa_public_key_used_as_hmac_secret() {
    let auth = Authenticator::new(&rs256()).unwrap();
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC),
        &good_claims(),
    );
    assert_eq!(invalid(&auth, &forged), "algorithm not accepted");
    // Also with a trailing newline stripped, as some attack tools do.
    let trimmed = RSA_PUBLIC.strip_suffix(b"\n").unwrap_or(RSA_PUBLIC);
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(trimmed),
        &good_claims(),
    );
    assert_eq!(invalid(&auth, &forged), "algorithm not accepted");
}

#[test]
fn rejects_wrong_algorithm_of_the_same_family() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let token = sign_hs(Algorithm::HS512, &good_claims());
    assert_eq!(invalid(&auth, &token), "algorithm not accepted");
}

#[test]
fn rejects_wrong_signatures() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
        &good_claims(),
    );
    assert_eq!(invalid(&auth, &token), "bad signature");

    let rs = Authenticator::new(&rs256()).unwrap();
    let key = EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE).unwrap();
    let token = sign(Algorithm::RS256, &key, &good_claims());
    assert_eq!(invalid(&rs, &token), "bad signature");

    // A valid token with its payload swapped.
    let good = sign_hs(Algorithm::HS256, &good_claims());
    let parts: Vec<&str> = good.split('.').collect();
    let payload = b64(json!({"sub": "mallory", "exp": now() + 600})
        .to_string()
        .as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    assert_eq!(invalid(&auth, &tampered), "bad signature");
}

#[test]
fn rejects_expired_tokens_after_the_leeway() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let expired = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "alice", "exp": now() - 100}),
    );
    assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
    // Within the 30 s leeway: still accepted.
    let recent = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "alice", "exp": now() - 10}),
    );
    assert!(auth.verify(&recent).is_ok());
    // The library default would be 60 s; ours is configured.
    let strict = Authenticator::new(&AuthConfig {
        leeway_s: 0,
        ..hs("HS256")
    })
    .unwrap();
    assert_eq!(strict.verify(&recent), Err(AuthError::Expired));
    assert_eq!(strict.leeway_s(), 0);
}

#[test]
fn rejects_tokens_not_valid_yet() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let future = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}),
    );
    assert_eq!(invalid(&auth, &future), "not valid yet (nbf)");
    let soon = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 5}),
    );
    assert!(auth.verify(&soon).is_ok(), "within the leeway");
    let malformed = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "alice", "exp": now() + 600, "nbf": "soon"}),
    );
    assert_eq!(invalid(&auth, &malformed), "malformed claim nbf");
}

#[test]
fn issuer_and_audience() {
    let cfg = AuthConfig {
        issuer: Some("https://issuer.example".into()),
        audience: Some("broker".into()),
        ..hs("HS256")
    };
    let auth = Authenticator::new(&cfg).unwrap();
    let token = |iss: Option<&str>, aud: Option<serde_json::Value>| {
        let mut claims = json!({"sub": "alice", "exp": now() + 600});
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            claims["aud"] = aud;
        }
        sign_hs(Algorithm::HS256, &claims)
    };
    let iss = Some("https://issuer.example");
    assert!(auth.verify(&token(iss, Some(json!("broker")))).is_ok());
    assert!(auth
        .verify(&token(iss, Some(json!(["other", "broker"]))))
        .is_ok());
    assert_eq!(
        invalid(
            &auth,
            &token(Some("https://evil.example"), Some(json!("broker")))
        ),
        "issuer mismatch"
    );
    assert_eq!(
        invalid(&auth, &token(iss, Some(json!("other")))),
        "audience mismatch"
    );
    assert_eq!(
        invalid(&auth, &token(None, Some(json!("broker")))),
        "missing claim iss"
    );
    assert_eq!(invalid(&auth, &token(iss, None)), "missing claim aud");

    // Nothing configured: iss and aud in a token are not checked.
    let open = Authenticator::new(&hs("HS256")).unwrap();
    assert!(open
        .verify(&token(Some("anyone"), Some(json!("anything"))))
        .is_ok());
    assert!(open.verify(&token(None, Some(json!(["a", "b"])))).is_ok());
}

#[test]
fn rejects_malformed_claims() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let cases = [
        (json!({"sub": "alice", "exp": "9999999999"}), "exp"),
        (json!({"sub": "alice", "exp": null}), "exp"),
        (json!({"sub": "alice"}), "exp"),
        (json!({"exp": now() + 600}), "sub"),
        (
            json!({"sub": "alice", "exp": 1.5e10}),
            "malformed claim exp",
        ),
        (json!({"sub": "alice", "exp": -5}), "exp"),
        (json!({"sub": 42, "exp": now() + 600}), "claim sub"),
        (json!({"sub": null, "exp": now() + 600}), "sub"),
        (
            json!({"sub": "alice", "exp": now() + 600, "roles": "admin"}),
            "malformed claim roles",
        ),
        (
            json!({"sub": "alice", "exp": now() + 600, "roles": null}),
            "malformed claim roles",
        ),
        (
            json!({"sub": "alice", "exp": now() + 600, "rooms": [1, 2]}),
            "malformed claim rooms",
        ),
        (json!(["sub", "exp"]), ""),
        (json!("alice"), ""),
    ];
    for (claims, needle) in cases {
        let reason = invalid(&auth, &sign_hs(Algorithm::HS256, &claims));
        assert!(reason.contains(needle), "{claims}: {reason}");
        assert!(
            !reason.contains("9999999999") && !reason.contains("admin"),
            "{reason}"
        );
    }
    assert_eq!(
        invalid(&auth, &sign_hs(Algorithm::HS256, &json!({"sub": "alice"}))),
        "missing claim exp"
    );
    assert_eq!(
        invalid(
            &auth,
            &sign_hs(Algorithm::HS256, &json!({"exp": now() + 600}))
        ),
        "missing claim sub"
    );
}

#[test]
fn rejects_invalid_sub() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let long = "u".repeat(101);
    for sub in [
        "",
        "al ice",
        "alice:x",
        "chat*",
        "élodie",
        "a/b",
        "a\nb",
        long.as_str(),
    ] {
        let token = sign_hs(Algorithm::HS256, &json!({"sub": sub, "exp": now() + 600}));
        assert_eq!(
            invalid(&auth, &token),
            "sub is not a valid user id",
            "{sub:?}"
        );
    }
}

#[test]
fn rejects_garbage_without_panicking() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    assert_eq!(auth.verify(""), Err(AuthError::Missing));
    assert_eq!(auth.verify("   "), Err(AuthError::Missing));
    for token in [
        "x",
        "a.b",
        "a.b.c",
        "...",
        "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.%%%.abc",
        "\u{0}.\u{0}.\u{0}",
        "é.é.é",
    ] {
        invalid(&auth, token);
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(invalid(&auth, &huge), "token too long");
}

#[test]
fn errors_never_show_the_token() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let token = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "alice", "exp": now() - 1000}),
    );
    for err in [
        auth.verify(&token).unwrap_err(),
        auth.verify(&format!("{token}x")).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(!text.contains(&token[..20]), "{text}");
    }
    assert_eq!(AuthError::Missing.to_string(), "token missing");
    assert_eq!(AuthError::Expired.to_string(), "token expired");
}

#[test]
fn dev_tokens() {
    let cfg = AuthConfig {
        dev_tokens: true,
        issuer: Some("dev".into()),
        audience: Some("demo".into()),
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(&cfg).unwrap();
    assert!(auth.dev_tokens());
    let token = auth.mint_dev_token("alice", 3600).unwrap();
    let claims = auth.verify(&token).unwrap();
    assert_eq!(claims.sub, "alice");
    assert!(claims.exp >= now() + 3590 && claims.exp <= now() + 3600);
    assert!(claims.roles.is_empty() && claims.rooms.is_empty());
    assert_eq!(auth.mint_dev_token("not valid", 60), None);
    assert!(
        auth.mint_dev_token("bob", u64::MAX).is_some(),
        "no overflow"
    );

    // Another process (another random secret) does not accept it.
    let other = Authenticator::new(&cfg).unwrap();
    assert_eq!(invalid(&other, &token), "bad signature");

    // Without dev tokens nothing is minted.
    let prod = Authenticator::new(&hs("HS256")).unwrap();
    assert!(!prod.dev_tokens());
    assert_eq!(prod.mint_dev_token("alice", 60), None);
}

#[test]
fn refuses_bad_setups() {
    let cases = [
        (
            AuthConfig {
                dev_tokens: true,
                ..hs("HS256")
            },
            "dev_tokens is refused",
        ),
        (
            AuthConfig {
                dev_tokens: true,
                ..rs256()
            },
            "dev_tokens is refused",
        ),
        (
            AuthConfig {
                dev_tokens: true,
                algorithm: "HS384".into(),
                ..AuthConfig::default()
            },
            "HS256",
        ),
        (
            AuthConfig {
                algorithm: "none".into(),
                ..hs("HS256")
            },
            "not one of",
        ),
        (
            AuthConfig {
                algorithm: "PS256".into(),
                ..rs256()
            },
            "not one of",
        ),
        (AuthConfig::default(), "needs auth.secret"),
        (
            AuthConfig {
                secret: Some(String::new()),
                ..AuthConfig::default()
            },
            "must not be empty",
        ),
        (
            AuthConfig {
                public_key_file: None,
                ..rs256()
            },
            "needs auth.public_key_file",
        ),
        (
            AuthConfig {
                secret: Some("s".into()),
                ..rs256()
            },
            "auth.secret is set",
        ),
        (
            AuthConfig {
                public_key_file: Some(key_file("rsa_public.pem")),
                ..hs("HS256")
            },
            "auth.public_key_file is set",
        ),
        (
            AuthConfig {
                public_key_file: Some(key_file("missing.pem")),
                ..rs256()
            },
            "cannot read",
        ),
        (
            AuthConfig {
                public_key_file: Some(key_file("rsa_private.pem")),
                ..rs256()
            },
            "private key",
        ),
        (
            AuthConfig {
                public_key_file: Some(key_file("ec_public.pem")),
                ..rs256()
            },
            "not a PEM RS256 public key",
        ),
        (
            AuthConfig {
                public_key_file: Some(key_file("rsa_public.pem")),
                ..es256()
            },
            "not a PEM ES256 public key",
        ),
        (
            AuthConfig {
                public_key_file: Some(key_file("README.md")),
                ..rs256()
            },
            "not a PEM RS256 public key",
        ),
    ];
    for (cfg, needle) in cases {
        let err = Authenticator::new(&cfg).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains(needle), "{cfg:?}: {text}");
    }
}

#[test]
fn anonymous_only_setup_refuses_every_token() {
    let cfg = AuthConfig {
        allow_anonymous: true,
        ..AuthConfig::default()
    };
    let auth = Authenticator::new(&cfg).unwrap();
    assert!(auth.allow_anonymous());
    assert!(!auth.dev_tokens());
    let token = sign_hs(Algorithm::HS256, &good_claims());
    assert_eq!(invalid(&auth, &token), "no verification key is configured");
    assert_eq!(auth.verify(""), Err(AuthError::Missing));
}

#[test]
fn debug_hides_keys() {
    let auth = Authenticator::new(&hs("HS256")).unwrap();
    let text = format!("{auth:?}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("HS256"), "{text}");
}

mod jwks;
