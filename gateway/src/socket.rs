//! The client's TCP stream after the upgrade, without hyper around it.
//!
//! hyper hands an upgraded connection over as `Upgraded`, which keeps the
//! connection's leftover read buffer (a slice of an 8 KiB allocation) for
//! the life of the WebSocket — memory every idle connection pays. Here the
//! `TcpStream` is taken out of it; the few bytes a client may have sent
//! right behind its request are copied into a small prefix that is read
//! first, and hyper's buffer is freed. The stream is then split into owned
//! halves (no lock shared between the reader and the writer).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// An upgraded client connection: the bare socket and what hyper had read
/// past the request.
pub struct ClientSocket {
    tcp: TcpStream,
    prefix: Vec<u8>,
}

impl ClientSocket {
    /// Takes the `TcpStream` out of hyper's upgrade (always a `TcpStream`
    /// here: the public listener serves plain TCP).
    ///
    /// # Errors
    /// When the upgraded connection is of another type.
    pub fn from_upgraded(upgraded: Upgraded) -> io::Result<ClientSocket> {
        let parts = upgraded
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| io::Error::other("the upgraded connection is not a TcpStream"))?;
        Ok(ClientSocket {
            tcp: parts.io.into_inner(),
            prefix: parts.read_buf.to_vec(),
        })
    }

    /// Owned read and write halves.
    pub fn into_split(self) -> (ClientRead, OwnedWriteHalf) {
        let (read, write) = self.tcp.into_split();
        (
            ClientRead {
                prefix: self.prefix,
                at: 0,
                inner: read,
            },
            write,
        )
    }
}

/// The reading half: the prefix first, then the socket.
pub struct ClientRead {
    prefix: Vec<u8>,
    at: usize,
    inner: OwnedReadHalf,
}

impl AsyncRead for ClientRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}
