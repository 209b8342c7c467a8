//! Reading client frames on `/ws` (RFC 6455 §5.2), with a read buffer of
//! [`READ_BUFFER`] bytes instead of fastwebsockets' 8 KiB — and only while
//! a frame is being read: it is allocated when bytes arrive and freed once
//! they are used up, so an idle connection holds none (wait with
//! [`FrameSource::fill`] first). A frame's payload is read into a
//! vector of exactly its size; large payloads bypass the buffer.
//!
//! What a server must refuse is refused here, before anything is allocated:
//! unmasked frames, reserved bits, unknown opcodes, fragmented or oversized
//! control frames (all 1002), and frames longer than the cap (1009).
//! Fragment reassembly is `fragment.rs`'s and the meaning of close payloads
//! `close.rs`'s; writing is `writer.rs`'s. `/echo` (the Autobahn target)
//! uses fastwebsockets for both directions.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::socket::ClientRead;

/// Bytes read from the socket at a time.
pub const READ_BUFFER: usize = 512;

/// Frame opcodes.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text message (or its first fragment).
    pub const TEXT: u8 = 0x1;
    /// Binary message (or its first fragment).
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// One WebSocket frame from the client, unmasked (a protocol message is
/// [`broker::protocol::ClientFrame`]; this is the RFC 6455 unit under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsFrame {
    /// Last frame of its message.
    pub fin: bool,
    /// One of [`opcode`].
    pub opcode: u8,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

/// Why no frame could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The socket ended or failed.
    Closed,
    /// The frame breaks the protocol (close with 1002).
    Protocol(&'static str),
    /// The frame is longer than the cap (close with 1009).
    TooLarge,
}

/// Reads client frames from `R`.
pub struct FrameSource<R> {
    io: R,
    /// Bytes read ahead; empty (no allocation) between frames.
    buf: Vec<u8>,
    /// How much of `buf` was used.
    pos: usize,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameSource<R> {
    /// Frames from `io`, each at most `max` payload bytes.
    pub fn new(io: R, max: usize) -> FrameSource<R> {
        FrameSource {
            io,
            buf: Vec::new(),
            pos: 0,
            max,
        }
    }

    /// The next frame. Not cancel-safe: a frame half read is lost when the
    /// future is dropped, so poll it to completion.
    pub async fn next(&mut self) -> Result<WsFrame, ReadError> {
        let mut head = [0u8; 2];
        self.read(&mut head).await?;
        let fin = head[0] & 0x80 != 0;
        if head[0] & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let op = head[0] & 0x0f;
        let control = op >= opcode::CLOSE;
        if !matches!(
            op,
            opcode::CONTINUATION
                | opcode::TEXT
                | opcode::BINARY
                | opcode::CLOSE
                | opcode::PING
                | opcode::PONG
        ) {
            return Err(ReadError::Protocol("unknown opcode"));
        }
        if head[1] & 0x80 == 0 {
            return Err(ReadError::Protocol("unmasked client frame"));
        }
        if control && !fin {
            return Err(ReadError::Protocol("fragmented control frame"));
        }
        let len = match head[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                self.read(&mut ext).await?;
                u64::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                self.read(&mut ext).await?;
                u64::from_be_bytes(ext)
            }
            n => u64::from(n),
        };
        if control && len > 125 {
            return Err(ReadError::Protocol("control frame over 125 bytes"));
        }
        if len > self.max as u64 {
            return Err(ReadError::TooLarge);
        }
        let mut mask = [0u8; 4];
        self.read(&mut mask).await?;
        let mut payload = vec![0u8; len as usize];
        self.read(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        if self.pos >= self.buf.len() {
            // Used up: free the buffer until the next frame.
            self.buf = Vec::new();
            self.pos = 0;
        }
        Ok(WsFrame {
            fin,
            opcode: op,
            payload,
        })
    }

    /// Whether bytes of a next frame were read ahead already.
    pub fn has_buffered(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Fills `out` from the buffer, then from the socket.
    async fn read(&mut self, out: &mut [u8]) -> Result<(), ReadError> {
        let mut filled = 0;
        while filled < out.len() {
            if self.pos < self.buf.len() {
                let n = (self.buf.len() - self.pos).min(out.len() - filled);
                out[filled..filled + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                filled += n;
                continue;
            }
            let rest = &mut out[filled..];
            if rest.len() >= READ_BUFFER {
                // Large: straight into place.
                let n = self.io.read(rest).await.map_err(|_| ReadError::Closed)?;
                if n == 0 {
                    return Err(ReadError::Closed);
                }
                filled += n;
                continue;
            }
            self.buf.resize(READ_BUFFER, 0);
            let n = match self.io.read(&mut self.buf).await {
                Ok(n) if n > 0 => n,
                _ => {
                    self.buf = Vec::new();
                    self.pos = 0;
                    return Err(ReadError::Closed);
                }
            };
            self.buf.truncate(n);
            self.pos = 0;
        }
        Ok(())
    }
}

impl FrameSource<ClientRead> {
    /// Waits until bytes of a next frame are buffered, the socket ended or
    /// failed (then [`FrameSource::next`] reports it). Holds no buffer and
    /// no read state while waiting: a chunk is read only once the socket is
    /// readable. Cancel-safe.
    pub async fn fill(&mut self) {
        while !self.has_buffered() {
            self.io.readable().await;
            let mut chunk = [0u8; READ_BUFFER];
            match self.io.try_read(&mut chunk) {
                Ok(n) if n > 0 => {
                    self.buf.clear();
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.pos = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The end or an error: the next read reports it.
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0xa1u8, 0xb2, 0xc3, 0xd4];
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<WsFrame, ReadError>> {
        let mut source = FrameSource::new(&bytes[..], max);
        let mut out = Vec::new();
        loop {
            let next = source.next().await;
            let end = next.is_err();
            out.push(next);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn reads_frames_of_every_length_form_back_to_back() {
        let mut bytes = Vec::new();
        let sizes = [0usize, 1, 125, 126, 1000, 65535, 65536, 70_000];
        for (i, n) in sizes.iter().enumerate() {
            bytes.extend(frame(0x82, &vec![i as u8; *n]));
        }
        bytes.extend(frame(0x89, b"ping"));
        bytes.extend(frame(0x02, b"part"));
        bytes.extend(frame(0x80, b"end"));
        let got = read_all(bytes, 100_000).await;
        for (i, n) in sizes.iter().enumerate() {
            let f = got[i].as_ref().expect("a frame");
            assert_eq!(
                (f.fin, f.opcode, f.payload.len()),
                (true, opcode::BINARY, *n)
            );
            assert!(f.payload.iter().all(|b| *b == i as u8));
        }
        let rest: Vec<_> = got[sizes.len()..].to_vec();
        assert_eq!(
            rest,
            vec![
                Ok(WsFrame {
                    fin: true,
                    opcode: opcode::PING,
                    payload: b"ping".to_vec()
                }),
                Ok(WsFrame {
                    fin: false,
                    opcode: opcode::BINARY,
                    payload: b"part".to_vec()
                }),
                Ok(WsFrame {
                    fin: true,
                    opcode: opcode::CONTINUATION,
                    payload: b"end".to_vec()
                }),
                Err(ReadError::Closed),
            ]
        );
    }

    #[tokio::test]
    async fn refuses_what_a_server_must_refuse() {
        let mut unmasked = frame(0x82, b"abc");
        unmasked[1] &= 0x7f;
        let cases: Vec<(&str, Vec<u8>, ReadError)> = vec![
            (
                "unmasked",
                unmasked,
                ReadError::Protocol("unmasked client frame"),
            ),
            (
                "rsv1",
                frame(0xc2, b""),
                ReadError::Protocol("reserved bits set"),
            ),
            (
                "opcode 3",
                frame(0x83, b""),
                ReadError::Protocol("unknown opcode"),
            ),
            (
                "fragmented ping",
                frame(0x09, b""),
                ReadError::Protocol("fragmented control frame"),
            ),
            (
                "long ping",
                frame(0x89, &[0; 126]),
                ReadError::Protocol("control frame over 125 bytes"),
            ),
            ("over the cap", frame(0x82, &[0; 101]), ReadError::TooLarge),
            (
                "2^63 announced",
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                ReadError::TooLarge,
            ),
            (
                "cut short",
                frame(0x82, b"abcdef")[..8].to_vec(),
                ReadError::Closed,
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(read_all(bytes, 100).await.pop(), Some(Err(want)), "{what}");
        }
    }
}
