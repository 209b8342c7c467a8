//! Reading the gateways' admin `/metrics` (Prometheus text format).
//!
//! One plain HTTP/1.1 GET with `Connection: close`; the figures the tool
//! needs are sums over a metric's series, so no parser beyond lines.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// One scrape of a node's `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Scrape(String);

impl Scrape {
    /// GETs `http://{admin}/metrics` (`admin` is `host:port`, with or
    /// without `http://`).
    ///
    /// # Errors
    ///
    /// The node does not answer 200 within 5 s.
    pub async fn get(admin: &str) -> anyhow::Result<Scrape> {
        let authority = admin
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .trim_end_matches("/metrics");
        let fetch = async {
            let mut stream = TcpStream::connect(authority)
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut body = Vec::new();
            stream.read_to_end(&mut body).await?;
            let text = String::from_utf8_lossy(&body).into_owned();
            let (head, rest) = text
                .split_once("\r\n\r\n")
                .ok_or_else(|| anyhow!("{authority}: not an HTTP response"))?;
            if !head.starts_with("HTTP/1.1 200") {
                bail!("{authority}/metrics: {}", head.lines().next().unwrap_or(""));
            }
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                return Ok(Scrape(dechunk(rest)));
            }
            Ok(Scrape(rest.to_owned()))
        };
        tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .map_err(|_| anyhow!("{authority}/metrics: timeout"))?
    }

    /// The sum of every series of `name` (any labels), `None` when absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for line in self.0.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let value = if rest.starts_with('{') {
                rest.rsplit_once('}').map(|(_, v)| v)
            } else if rest.starts_with(' ') {
                Some(rest)
            } else {
                None
            };
            if let Some(v) = value.and_then(|v| v.split_whitespace().next()) {
                if let Ok(x) = v.parse::<f64>() {
                    *found.get_or_insert(0.0) += x;
                }
            }
        }
        found
    }

    /// The series of `name` that have a nonzero value, as `labels value`.
    pub fn nonzero(&self, name: &str) -> Vec<(String, f64)> {
        self.0
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let (labels, value) = if rest.starts_with('{') {
                    let (l, v) = rest.rsplit_once('}')?;
                    (format!("{l}}}"), v)
                } else if rest.starts_with(' ') {
                    (String::new(), rest)
                } else {
                    return None;
                };
                let x: f64 = value.split_whitespace().next()?.parse().ok()?;
                (x != 0.0).then_some((labels, x))
            })
            .collect()
    }
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x\n# TYPE broker_errors_total counter\n\
        broker_errors_total{code=\"bad_frame\"} 2\nbroker_errors_total{code=\"internal\"} 0\n\
        broker_connections 10\nbroker_connections_opened_total 12\n\
        process_resident_memory_bytes 1.2e7\n";

    #[test]
    fn sums_series() {
        let s = Scrape(TEXT.to_owned());
        assert_eq!(s.sum("broker_errors_total"), Some(2.0));
        assert_eq!(s.sum("broker_connections"), Some(10.0));
        assert_eq!(s.sum("process_resident_memory_bytes"), Some(12_000_000.0));
        assert_eq!(s.sum("nope"), None);
        assert_eq!(
            s.nonzero("broker_errors_total"),
            vec![("{code=\"bad_frame\"}".to_owned(), 2.0)]
        );
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
