//! A WebSocket client with no rules: it writes frames byte by byte as told
//! (unmasked, fragmented control frames, lying lengths), for the hostile
//! input tests. It reads server frames (unmasked) until the close.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// WebSocket opcodes.
pub mod op {
    /// Continuation frame.
    pub const CONT: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
}

/// An upgraded connection driven by hand.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Pings received so far (never answered: this client sends no pongs
    /// unless told to).
    pub pings: usize,
}

/// What the server did in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code (1005: none).
    Close(u16),
    /// The socket closed without a close frame.
    Dropped,
    /// Nothing within the time limit; the connection is still open.
    Open,
}

impl RawWs {
    /// Upgrades `GET /ws?token=...` on `addr`.
    ///
    /// # Panics
    /// When the upgrade is refused.
    pub async fn connect(addr: SocketAddr, token: &str) -> RawWs {
        RawWs::connect_with_window(addr, token, None).await
    }

    /// [`RawWs::connect`] with a receive buffer of `rcvbuf` bytes (a small
    /// one makes a client that stops reading fill the server's side fast).
    ///
    /// # Panics
    /// When the upgrade is refused.
    pub async fn connect_with_window(addr: SocketAddr, token: &str, rcvbuf: Option<u32>) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the upgrade");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut chunk).await.expect("read the upgrade");
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        assert!(
            buf.starts_with(b"HTTP/1.1 101"),
            "upgrade refused: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.drain(..head_end);
        RawWs {
            stream,
            buf,
            pings: 0,
        }
    }

    /// Writes one frame: `fin`, `opcode`, masked or not, with `payload`.
    pub async fn frame(&mut self, fin: bool, opcode: u8, masked: bool, payload: &[u8]) {
        let mut out = header(fin, opcode, masked, payload.len() as u64);
        if masked {
            let mask = [0x37u8, 0xfa, 0x21, 0x3d];
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        let _ = self.stream.write_all(&out).await;
    }

    /// A masked binary message in one frame.
    pub async fn binary(&mut self, payload: &[u8]) {
        self.frame(true, op::BINARY, true, payload).await;
    }

    /// Writes raw bytes (a header that lies, half a frame, ...).
    pub async fn bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads server frames until a close frame, the socket's end, or
    /// `timeout`; returns the data frames' payloads and how it ended.
    pub async fn until_close(&mut self, timeout: Duration) -> (Vec<Vec<u8>>, Ending) {
        let mut frames = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some((opcode, payload, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                match opcode {
                    op::CLOSE => {
                        let code = if payload.len() >= 2 {
                            u16::from_be_bytes([payload[0], payload[1]])
                        } else {
                            1005
                        };
                        return (frames, Ending::Close(code));
                    }
                    op::BINARY | op::TEXT => frames.push(payload),
                    op::PING => self.pings += 1,
                    _ => {}
                }
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            match read {
                Err(_) => return (frames, Ending::Open),
                Ok(Ok(0)) | Ok(Err(_)) => return (frames, Ending::Dropped),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A frame header for a payload of `len` bytes (the mask key not included).
pub fn header(fin: bool, opcode: u8, masked: bool, len: u64) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out
}

/// One complete server frame at the start of `buf`: opcode, payload, bytes
/// used.
fn parse(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((buf[0] & 0x0f, payload, at + len))
}
