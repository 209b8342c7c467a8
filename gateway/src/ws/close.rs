//! The RFC 6455 rules about close codes (§5.5.1, §7.4) that the gateway's
//! WebSocket layer applies: what a client's close frame is answered with.
//! Every code itself, the protocol's and the RFC's, is a
//! [`CloseCode`] of the broker crate, which also says which codes may be
//! sent on the wire.

use broker::protocol::CloseCode;

/// Close reason of a connection whose send queue overflowed. The writer
/// drops what is queued for it (the queue is the problem) instead of
/// flushing it before the close frame.
pub const SLOW_CONSUMER: &str = "slow consumer";

/// Close reason (4008) of a connection that sent nothing within
/// `limits.idle_timeout_s`.
pub const IDLE_TIMEOUT: &str = "idle timeout";

/// Close reason (4001) of a connection whose token expired unrefreshed.
pub const TOKEN_EXPIRED: &str = "token expired";

/// The code to answer a client's close frame with (RFC 6455 §5.5.1, §7.4):
/// its own code when that is one a peer may send, 1000 for an empty close,
/// 1002 for a malformed payload or a reserved code, 1007 for a reason that
/// is not UTF-8.
pub fn close_reply_code(payload: &[u8]) -> CloseCode {
    match payload {
        [] => CloseCode::Normal,
        [_] => CloseCode::ProtocolError,
        _ if payload.len() > 125 => CloseCode::ProtocolError,
        [hi, lo, reason @ ..] => {
            let code = CloseCode::from(u16::from_be_bytes([*hi, *lo]));
            if !code.allowed_on_wire() {
                CloseCode::ProtocolError
            } else if std::str::from_utf8(reason).is_err() {
                CloseCode::InvalidData
            } else {
                code
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        payload
    }

    #[test]
    fn a_valid_close_is_echoed() {
        for code in [1000, 1001, 1003, 1007, 1014, 3000, 4000, 4999] {
            assert_eq!(
                close_reply_code(&close(code, b"bye")).code(),
                code,
                "{code}"
            );
        }
    }

    #[test]
    fn empty_and_malformed_payloads() {
        assert_eq!(close_reply_code(&[]).code(), 1000);
        assert_eq!(close_reply_code(&[3]).code(), 1002, "one byte is no code");
        assert_eq!(
            close_reply_code(&close(1000, &[b'x'; 124])).code(),
            1002,
            "over 125 bytes"
        );
        assert_eq!(close_reply_code(&close(1000, &[b'x'; 123])).code(), 1000);
    }

    #[test]
    fn reserved_codes_are_a_protocol_error() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!CloseCode::from(code).allowed_on_wire(), "{code}");
            assert_eq!(close_reply_code(&close(code, b"")).code(), 1002, "{code}");
        }
    }

    #[test]
    fn a_reason_that_is_not_utf8_is_invalid_data() {
        assert_eq!(close_reply_code(&close(1000, &[0xff, 0xfe])).code(), 1007);
        assert_eq!(
            close_reply_code(&close(1004, &[0xff])).code(),
            1002,
            "the code is checked first"
        );
    }
}
