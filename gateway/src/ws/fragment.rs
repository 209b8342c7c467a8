//! Reassembly of fragmented messages (RFC 6455 §5.4), with the gateway's own
//! cap on the whole message: the frame reader limits single frames only.
//! Control frames may come between fragments; a data frame that starts a
//! new message while one is being reassembled, or a continuation with no
//! message to continue, is a protocol error.

use broker::protocol::CloseCode;

use super::close::close_reply_code;
use super::reader::{opcode, WsFrame};

/// The message being reassembled, if any.
#[derive(Default)]
pub struct Assembler {
    /// The opcode of the message being reassembled.
    opcode: Option<u8>,
    buf: Vec<u8>,
}

/// What one frame completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembled {
    /// A whole binary message.
    Binary(Vec<u8>),
    /// A whole text message, its bytes (UTF-8 is the reader's to check).
    Text(Vec<u8>),
    /// A close frame; the code to answer it with.
    Close(CloseCode),
    /// Nothing complete yet (a fragment, a ping or a pong).
    Nothing,
    /// The message grew past the cap (close with 1009).
    TooLarge,
    /// Fragmentation out of order (close with 1002).
    Invalid,
}

impl Assembler {
    /// No fragmented message is being reassembled.
    pub fn is_idle(&self) -> bool {
        self.opcode.is_none()
    }

    /// Takes one frame; a message may be at most `max` bytes.
    pub fn push(&mut self, frame: WsFrame, max: usize) -> Reassembled {
        let data = frame.opcode == opcode::BINARY || frame.opcode == opcode::TEXT;
        match frame.opcode {
            _ if data && self.opcode.is_some() => Reassembled::Invalid,
            opcode::TEXT if frame.fin => Reassembled::Text(frame.payload),
            opcode::BINARY if frame.fin => Reassembled::Binary(frame.payload),
            _ if data => {
                self.opcode = Some(frame.opcode);
                self.buf = frame.payload;
                Reassembled::Nothing
            }
            opcode::CONTINUATION => {
                let Some(first) = self.opcode else {
                    return Reassembled::Invalid;
                };
                if self.buf.len() + frame.payload.len() > max {
                    return Reassembled::TooLarge;
                }
                self.buf.extend_from_slice(&frame.payload);
                if !frame.fin {
                    return Reassembled::Nothing;
                }
                self.opcode = None;
                let data = std::mem::take(&mut self.buf);
                if first == opcode::TEXT {
                    Reassembled::Text(data)
                } else {
                    Reassembled::Binary(data)
                }
            }
            opcode::CLOSE => Reassembled::Close(close_reply_code(&frame.payload)),
            _ => Reassembled::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> WsFrame {
        WsFrame {
            fin,
            opcode,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn fragments_become_one_message_with_control_frames_between() {
        let mut a = Assembler::default();
        assert_eq!(
            a.push(frame(false, opcode::BINARY, b"ab"), 10),
            Reassembled::Nothing
        );
        assert!(!a.is_idle());
        assert_eq!(
            a.push(frame(true, opcode::PING, b""), 10),
            Reassembled::Nothing
        );
        assert_eq!(
            a.push(frame(false, opcode::CONTINUATION, b"cd"), 10),
            Reassembled::Nothing
        );
        assert_eq!(
            a.push(frame(true, opcode::CONTINUATION, b"e"), 10),
            Reassembled::Binary(b"abcde".to_vec())
        );
        assert!(a.is_idle());
        assert_eq!(
            a.push(frame(true, opcode::BINARY, b"x"), 10),
            Reassembled::Binary(b"x".to_vec())
        );
    }

    #[test]
    fn text_is_recognised_whole_or_fragmented() {
        let mut a = Assembler::default();
        assert_eq!(
            a.push(frame(true, opcode::TEXT, b"hi"), 10),
            Reassembled::Text(b"hi".to_vec())
        );
        assert_eq!(
            a.push(frame(false, opcode::TEXT, b"h"), 10),
            Reassembled::Nothing
        );
        assert_eq!(
            a.push(frame(true, opcode::CONTINUATION, b"i"), 10),
            Reassembled::Text(b"hi".to_vec())
        );
    }

    #[test]
    fn out_of_order_fragments_and_oversize_messages() {
        let mut a = Assembler::default();
        assert_eq!(
            a.push(frame(true, opcode::CONTINUATION, b"x"), 10),
            Reassembled::Invalid
        );
        assert_eq!(
            a.push(frame(false, opcode::BINARY, b"x"), 10),
            Reassembled::Nothing
        );
        assert_eq!(
            a.push(frame(true, opcode::BINARY, b"y"), 10),
            Reassembled::Invalid
        );
        let mut a = Assembler::default();
        assert_eq!(
            a.push(frame(false, opcode::BINARY, &[0; 6]), 10),
            Reassembled::Nothing
        );
        assert_eq!(
            a.push(frame(true, opcode::CONTINUATION, &[0; 5]), 10),
            Reassembled::TooLarge
        );
    }

    #[test]
    fn a_close_frame_gets_its_reply_code() {
        let mut a = Assembler::default();
        assert_eq!(
            a.push(frame(true, opcode::CLOSE, b""), 10),
            Reassembled::Close(CloseCode::Normal)
        );
        assert_eq!(
            a.push(frame(true, opcode::CLOSE, &1006u16.to_be_bytes()), 10),
            Reassembled::Close(CloseCode::ProtocolError)
        );
    }
}
