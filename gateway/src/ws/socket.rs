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

impl ClientRead {
    /// Waits until bytes (or the socket's end) are there. Cancel-safe; an
    /// error counts as readable (the read reports it).
    ///
    /// It peeks rather than using `readable()`: a peek leaves this task's
    /// waker in the socket's read slot, where hyper's connection task left
    /// its own — and a waker there keeps that finished task's memory
    /// (about 1 KiB) alive as long as the connection lasts.
    pub async fn readable(&mut self) {
        if self.at < self.prefix.len() {
            return;
        }
        std::future::poll_fn(|cx| {
            let mut byte = [0u8; 1];
            let mut peek = ReadBuf::new(&mut byte);
            self.inner.poll_peek(cx, &mut peek).map(|_| ())
        })
        .await;
    }

    /// Reads what is there without waiting (`WouldBlock` when nothing is:
    /// the readiness was stale, wait again).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.prefix[self.at..self.at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Ok(n);
        }
        self.inner.try_read(buf)
    }
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
