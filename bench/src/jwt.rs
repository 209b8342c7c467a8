//! HS256 tokens for the simulated users.
//!
//! A benchmark mints thousands of tokens before it starts; an HS256 JWT is
//! two base64url JSON parts and an HMAC-SHA256, which is all this does.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Mints tokens signed with one shared secret.
#[derive(Clone)]
pub struct Minter {
    mac: Hmac<Sha256>,
    /// `exp` of every token, Unix seconds.
    exp: u64,
}

/// The encoded header `{"alg":"HS256","typ":"JWT"}`.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

impl Minter {
    /// Tokens valid for `ttl_s` seconds from now.
    pub fn new(secret: &str, ttl_s: u64) -> Minter {
        Minter {
            // HMAC takes a key of any length.
            mac: Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length"),
            exp: crate::now_ns() / 1_000_000_000 + ttl_s,
        }
    }

    /// A token for `user` (`sub`), with `exp` only.
    pub fn token(&self, user: &str) -> String {
        let claims = serde_json::json!({ "sub": user, "exp": self.exp });
        let mut out = String::with_capacity(160);
        out.push_str(HEADER);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut out);
        let mut mac = self.mac.clone();
        mac.update(out.as_bytes());
        let sig = mac.finalize().into_bytes();
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_hs256() {
        let header = URL_SAFE_NO_PAD.decode(HEADER).unwrap();
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
    }

    /// The signature of RFC 7515's shape, checked against an independent
    /// HMAC of the signing input.
    #[test]
    fn token_is_signed() {
        let minter = Minter::new("bench-secret", 60);
        let token = minter.token("u1");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "u1");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"bench-secret").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .unwrap();
    }
}
