//! The POST of one batch: HTTP/1.1 over plain TCP (`http://` only; TLS is
//! not built in), one connection kept open between batches while the
//! receiver keeps it, the whole attempt (connect, send, status, body)
//! bounded by `webhooks.timeout_ms`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::sign;

/// Most bytes of a response body read (and thrown away) so that the
/// connection can be used again; a longer body closes it.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where batches go, parsed once.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to (port 80 when the URL names none).
    authority: String,
    /// The `Host` header: the URL's host, with its port when it names one.
    host: String,
    /// Path and query (`/` when the URL has no path).
    path: String,
}

impl Target {
    /// Reads an `http://host[:port][/path][?query]` URL.
    ///
    /// # Errors
    /// When it is not such a URL (the configuration check refuses it first).
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|err| format!("{err}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// URLs are supported".to_owned());
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| "the URL names no host".to_owned())?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .to_owned();
        Ok(Target {
            authority: format!("{host}:{port}"),
            host: match uri.port_u16() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            },
            path,
        })
    }
}

/// Sends batches to one [`Target`], one at a time.
pub struct Poster {
    target: Target,
    timeout: Duration,
    /// The kept connection, when the last answer left it usable.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Poster {
    /// A poster with no connection yet.
    pub fn new(target: Target, timeout: Duration) -> Poster {
        Poster {
            target,
            timeout,
            sender: None,
        }
    }

    /// POSTs `body` with its signature; the answer's status, or why there
    /// was none (timeout, connection refused or lost, bad response).
    pub async fn post(&mut self, body: Bytes, signature: &str) -> Result<StatusCode, String> {
        match tokio::time::timeout(self.timeout, self.attempt(body, signature)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may be mid-request: never reuse it.
                self.sender = None;
                Err(format!("no answer within {:?}", self.timeout))
            }
        }
    }

    async fn attempt(&mut self, body: Bytes, signature: &str) -> Result<StatusCode, String> {
        let mut sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        if sender.ready().await.is_err() {
            sender = self.connect().await?;
            sender.ready().await.map_err(|err| err.to_string())?;
        }
        let request = Request::post(&self.target.path)
            .header(HOST, &self.target.host)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("broker-gateway/", env!("CARGO_PKG_VERSION")),
            )
            .header(sign::HEADER, signature)
            .body(Full::new(body))
            .map_err(|err| err.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        let status = response.status();
        // Read the answer's body so that the connection can carry the
        // next batch; a long or broken one closes it instead.
        if Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .is_ok()
        {
            self.sender = Some(sender);
        }
        Ok(status)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&self.target.authority)
            .await
            .map_err(|err| format!("connect {}: {err}", self.target.authority))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| err.to_string())?;
        // Ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://hooks.local:8000/in?x=1").unwrap();
        assert_eq!(t.authority, "hooks.local:8000");
        assert_eq!(t.host, "hooks.local:8000");
        assert_eq!(t.path, "/in?x=1");
        let t = Target::parse("http://127.0.0.1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:80");
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.path, "/");
        assert!(Target::parse("https://h/x").is_err());
        assert!(Target::parse("nonsense").is_err());
    }
}
