//! Every close code the gateway's WebSocket layer speaks, and the RFC 6455
//! rules about them (§5.5.1, §7.4): which codes a peer may send, and what
//! a client's close frame is answered with. The application codes of the
//! protocol (4001, 4003, 4008, 4029, 1009, 1011, 1012) are
//! [`broker::protocol::close`]'s; the RFC's own codes are named here.

/// A normal, deliberate close.
pub const NORMAL: u16 = 1000;
/// The peer is going away (a page reload, a browser tab closed).
pub const GOING_AWAY: u16 = 1001;
/// The peer broke the protocol (a malformed frame or close payload).
pub const PROTOCOL_ERROR: u16 = 1002;
/// The connection ended without a close frame (never sent on the wire:
/// what is recorded for a lost connection).
pub const ABNORMAL: u16 = 1006;
/// A message's data is not what its type says (a close reason that is
/// not UTF-8).
pub const INVALID_DATA: u16 = 1007;
/// The server cannot serve now: try again later.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// Close reason of a connection whose send queue overflowed. The writer
/// drops what is queued for it (the queue is the problem) instead of
/// flushing it before the close frame.
pub const SLOW_CONSUMER: &str = "slow consumer";

/// Whether a peer may send `code` in a close frame: the RFC's defined
/// codes that are not reserved for local use (1004, 1005, 1006, 1015),
/// and the registered (3000-3999) and private (4000-4999) ranges.
pub fn allowed_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The code to answer a client's close frame with (RFC 6455 §5.5.1, §7.4):
/// its own code when that is one a peer may send, 1000 for an empty close,
/// 1002 for a malformed payload or a reserved code, 1007 for a reason that
/// is not UTF-8.
pub fn close_reply_code(payload: &[u8]) -> u16 {
    match payload {
        [] => NORMAL,
        [_] => PROTOCOL_ERROR,
        _ if payload.len() > 125 => PROTOCOL_ERROR,
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !allowed_on_wire(code) {
                PROTOCOL_ERROR
            } else if std::str::from_utf8(reason).is_err() {
                INVALID_DATA
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
            assert_eq!(close_reply_code(&close(code, b"bye")), code, "{code}");
        }
    }

    #[test]
    fn empty_and_malformed_payloads() {
        assert_eq!(close_reply_code(&[]), 1000);
        assert_eq!(close_reply_code(&[3]), 1002, "one byte is no code");
        assert_eq!(
            close_reply_code(&close(1000, &[b'x'; 124])),
            1002,
            "over 125 bytes"
        );
        assert_eq!(close_reply_code(&close(1000, &[b'x'; 123])), 1000);
    }

    #[test]
    fn reserved_codes_are_a_protocol_error() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!allowed_on_wire(code), "{code}");
            assert_eq!(close_reply_code(&close(code, b"")), 1002, "{code}");
        }
    }

    #[test]
    fn a_reason_that_is_not_utf8_is_invalid_data() {
        assert_eq!(close_reply_code(&close(1000, &[0xff, 0xfe])), 1007);
        assert_eq!(
            close_reply_code(&close(1004, &[0xff])),
            1002,
            "the code is checked first"
        );
    }
}
