//! RFC 6455 §5.1: a server must close the connection when a client frame
//! is not masked. fastwebsockets 0.10 accepts unmasked frames (its `Frame`
//! keeps the mask private, so its reader cannot be asked), so this wrapper
//! follows the frame boundaries in the bytes read from the socket and fails
//! the read at the first unmasked frame header: the connection then closes
//! with 1002.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Where the byte stream is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Reading a header: `have` of `need` bytes (`need` is 2 until the
    /// second byte tells the rest).
    Header { have: usize, need: usize },
    /// Skipping `left` payload bytes.
    Payload { left: u64 },
}

/// Follows frame boundaries in a client byte stream.
#[derive(Debug, Clone)]
pub struct Framing {
    position: Position,
    header: [u8; 14],
}

impl Default for Framing {
    fn default() -> Framing {
        Framing {
            position: Position::Header { have: 0, need: 2 },
            header: [0; 14],
        }
    }
}

impl Framing {
    /// Consumes `bytes`; `false` at the first frame header without the mask
    /// bit.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while let Some((&byte, rest)) = bytes.split_first() {
            match self.position {
                Position::Payload { left } => {
                    let take = (left.min(bytes.len() as u64)) as usize;
                    bytes = &bytes[take..];
                    self.position = match left - take as u64 {
                        0 => Position::Header { have: 0, need: 2 },
                        left => Position::Payload { left },
                    };
                }
                Position::Header { have, mut need } => {
                    bytes = rest;
                    self.header[have] = byte;
                    let have = have + 1;
                    if have == 2 {
                        if self.header[1] & 0x80 == 0 {
                            return false;
                        }
                        let extended = match self.header[1] & 0x7f {
                            126 => 2,
                            127 => 8,
                            _ => 0,
                        };
                        need = 2 + extended + 4;
                    }
                    self.position = if have < need {
                        Position::Header { have, need }
                    } else {
                        match self.payload_len() {
                            0 => Position::Header { have: 0, need: 2 },
                            left => Position::Payload { left },
                        }
                    };
                }
            }
        }
        true
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        }
    }
}

/// A reader that fails with [`io::ErrorKind::InvalidData`] ("unmasked
/// client frame") at the first unmasked frame.
pub struct MaskCheck<R> {
    inner: R,
    framing: Framing,
}

impl<R> MaskCheck<R> {
    /// Wraps the client side of a freshly upgraded connection.
    pub fn new(inner: R) -> MaskCheck<R> {
        MaskCheck {
            inner,
            framing: Framing::default(),
        }
    }
}

/// The error message of an unmasked frame.
pub const UNMASKED: &str = "unmasked client frame";

impl<R: AsyncRead + Unpin> AsyncRead for MaskCheck<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.framing.feed(&buf.filled()[before..]) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, UNMASKED)))
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(len: usize) -> Vec<u8> {
        let mut f = match len {
            0..=125 => vec![0x82, 0x80 | len as u8],
            126..=65535 => {
                let mut v = vec![0x82, 0x80 | 126];
                v.extend_from_slice(&(len as u16).to_be_bytes());
                v
            }
            _ => {
                let mut v = vec![0x82, 0x80 | 127];
                v.extend_from_slice(&(len as u64).to_be_bytes());
                v
            }
        };
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0x55, len));
        f
    }

    #[test]
    fn follows_frames_of_every_length_form_in_any_chunking() {
        let mut stream = Vec::new();
        for len in [0, 1, 125, 126, 300, 65535, 65536, 70000] {
            stream.extend(masked(len));
        }
        for chunk in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut f = Framing::default();
            assert!(stream.chunks(chunk).all(|c| f.feed(c)), "chunk {chunk}");
            assert_eq!(f.position, Position::Header { have: 0, need: 2 });
        }
    }

    #[test]
    fn an_unmasked_frame_is_caught_wherever_it_starts() {
        let mut stream = masked(300);
        stream.extend_from_slice(&[0x82, 0x03, 9, 9, 9]);
        for chunk in [1, 5, stream.len()] {
            let mut f = Framing::default();
            assert!(!stream.chunks(chunk).all(|c| f.feed(c)), "chunk {chunk}");
        }
        // Unmasked bytes inside a payload are just payload.
        let mut f = Framing::default();
        assert!(f.feed(&masked(4)[..8]));
        assert!(f.feed(&[0x82, 0x03]));
    }
}
