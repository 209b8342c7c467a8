//! The `X-Broker-Signature` header: `sha256=` and the lowercase hex
//! HMAC-SHA256 of the exact body bytes, keyed with `webhooks.secret`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the signature header.
pub const HEADER: &str = "x-broker-signature";

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length (a long one is hashed first).
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_and_body_both_count() {
        let a = signature(b"k1", b"{}");
        assert_ne!(a, signature(b"k2", b"{}"));
        assert_ne!(a, signature(b"k1", b"{ }"));
        assert_eq!(a, signature(b"k1", b"{}"));
    }
}
