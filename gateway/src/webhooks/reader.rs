//! One events stream, read by this node in the webhook group: its own
//! pending entries first, then, in turn, entries idle in any consumer's
//! pending list (`XAUTOCLAIM`, when due) and new entries (`XREADGROUP >`
//! with `BLOCK`). Each batch is filtered, POSTed until a 2xx, then
//! acknowledged; only then is the next one read (one batch in flight).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{Cmd, RedisResult};
use tokio::sync::watch;

use super::entry::{self, Entry};
use super::link::Link;
use super::post::Poster;
use super::{backoff, pause, sign, Shared, BLOCK, GROUP};

/// Where the next batch comes from.
enum Source {
    /// This consumer's own pending entries after the given id.
    Own(String),
    /// Idle entries of any consumer, from the cursor.
    Claim,
    /// New entries.
    New,
}

/// The reader of one stream.
pub struct Reader {
    shared: Arc<Shared>,
    stream: String,
    link: Link,
    poster: Poster,
}

impl Reader {
    /// A reader of `stream` over `link`.
    pub fn new(shared: Arc<Shared>, stream: String, link: Link) -> Reader {
        let poster = Poster::new(shared.settings.target.clone(), shared.settings.timeout);
        Reader {
            shared,
            stream,
            link,
            poster,
        }
    }

    fn me(&self) -> &str {
        &self.shared.node.id
    }

    /// Reads and delivers until `stop` turns true. A batch being POSTed
    /// finishes its attempt (at most `webhooks.timeout_ms`); entries not
    /// acknowledged stay pending, for this node after a restart or for
    /// another node's claim.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let settings = &self.shared.settings;
        let claim_every =
            (settings.claim_idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        tracing::info!(stream = %self.stream, group = GROUP, consumer = %self.me(), "webhooks: reading");
        let mut group_ready = false;
        let mut source = Source::Own("0-0".to_owned());
        let mut next_claim = Instant::now();
        let mut cursor = "0-0".to_owned();
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                break;
            }
            let result = if group_ready {
                self.next_batch(
                    &mut source,
                    &mut next_claim,
                    &mut cursor,
                    claim_every,
                    &mut stop,
                )
                .await
            } else {
                self.create_group().await.map(|()| {
                    group_ready = true;
                    Some(Vec::new())
                })
            };
            match result {
                Ok(None) => break,
                Ok(Some(entries)) => {
                    failures = 0;
                    if !entries.is_empty() && !self.deliver(entries, &mut stop).await {
                        break;
                    }
                }
                Err(err) => {
                    if failures.is_multiple_of(10) {
                        tracing::warn!(stream = %self.stream, error = %err, "webhooks: Redis call failed; retrying");
                    }
                    if err.code() == Some("NOGROUP") {
                        group_ready = false;
                    }
                    // A lost reply may have left entries in this consumer's
                    // pending list: read it again.
                    source = Source::Own("0-0".to_owned());
                    self.shared.node.store.check_topology();
                    if !pause(&mut stop, backoff(failures)).await {
                        break;
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
        self.shared
            .lag
            .release(&self.stream, &self.shared.node.metrics);
        tracing::info!(stream = %self.stream, "webhooks: stopped reading");
    }

    /// The next batch (maybe empty), and where the one after comes from;
    /// `None` when `stop` turned true during a blocking read.
    async fn next_batch(
        &mut self,
        source: &mut Source,
        next_claim: &mut Instant,
        cursor: &mut String,
        claim_every: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> RedisResult<Option<Vec<Entry>>> {
        if let Source::Own(from) = source {
            let entries = entry::read_reply(self.link.query(self.read_cmd(from, None)).await?)?;
            *source = match entries.last() {
                Some(last) => Source::Own(last.id.clone()),
                None => Source::Claim,
            };
            return Ok(Some(entries));
        }
        if matches!(source, Source::Claim) || Instant::now() >= *next_claim {
            let claimed =
                entry::autoclaim_reply(self.link.query(self.autoclaim_cmd(cursor)).await?)?;
            let metrics = &self.shared.node.metrics;
            metrics.webhook_claimed.inc_by(claimed.entries.len() as u64);
            // XAUTOCLAIM already took these out of the pending list.
            metrics
                .webhook_events
                .with_label_values(&["trimmed"])
                .inc_by(claimed.deleted.len() as u64);
            if !claimed.entries.is_empty() {
                tracing::info!(stream = %self.stream, entries = claimed.entries.len(), "webhooks: claimed idle entries");
            }
            if claimed.cursor == "0-0" {
                *cursor = "0-0".to_owned();
                *next_claim = Instant::now() + claim_every;
                *source = Source::New;
            } else {
                *cursor = claimed.cursor;
                *source = Source::Claim;
            }
            return Ok(Some(claimed.entries));
        }
        let cmd = self.read_cmd(">", Some(BLOCK));
        tokio::select! {
            reply = self.link.query(cmd) => Ok(Some(entry::read_reply(reply?)?)),
            _ = stop.changed() => Ok(None),
        }
    }

    /// Filters, POSTs until a 2xx and acknowledges `entries`; false when
    /// `stop` turned true first (the entries stay pending).
    async fn deliver(&mut self, entries: Vec<Entry>, stop: &mut watch::Receiver<bool>) -> bool {
        let shared = self.shared.clone();
        let settings = &shared.settings;
        let metrics = &shared.node.metrics;
        let mut wanted: Vec<&Entry> = Vec::new();
        let (mut filtered, mut trimmed) = (0u64, 0u64);
        for e in &entries {
            match e.kind() {
                _ if e.fields.is_none() => trimmed += 1,
                Some(kind) if settings.events.iter().any(|t| t == kind) => wanted.push(e),
                _ => filtered += 1,
            }
        }
        if !wanted.is_empty() {
            if let Some(oldest) = wanted.iter().filter_map(|e| e.ms()).min() {
                shared.lag.hold(&self.stream, oldest, metrics);
            }
            let ids: Vec<&str> = wanted.iter().map(|e| e.id.as_str()).collect();
            let body = Bytes::from(entry::body(&self.stream, wanted.iter().copied()));
            let signature = sign::signature(&settings.secret, &body);
            let mut attempt: u32 = 0;
            loop {
                if attempt > 0 {
                    self.touch(&ids).await;
                }
                let why = match self.poster.post(body.clone(), &signature).await {
                    Ok(status) if status.is_success() => {
                        metrics.webhook_attempts.with_label_values(&["ok"]).inc();
                        if attempt > 0 {
                            tracing::info!(stream = %self.stream, events = ids.len(), attempts = attempt + 1, "webhooks: delivered after retries");
                        }
                        break;
                    }
                    Ok(status) => format!("HTTP {status}"),
                    Err(err) => err,
                };
                metrics.webhook_attempts.with_label_values(&["error"]).inc();
                if attempt.is_multiple_of(10) {
                    tracing::warn!(stream = %self.stream, events = ids.len(), attempt = attempt + 1, error = %why, "webhooks: POST failed; retrying");
                }
                if !pause(stop, backoff(attempt)).await {
                    return false;
                }
                attempt = attempt.saturating_add(1);
            }
        }
        let all: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let mut failures: u32 = 0;
        loop {
            match self.link.query(self.ack_cmd(&all)).await {
                Ok(_) => break,
                Err(err) => {
                    if failures.is_multiple_of(10) {
                        tracing::warn!(stream = %self.stream, error = %err, "webhooks: XACK failed; retrying");
                    }
                    if !pause(stop, backoff(failures)).await {
                        return false;
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
        let count = |result: &str, n: u64| {
            metrics
                .webhook_events
                .with_label_values(&[result])
                .inc_by(n)
        };
        count("delivered", wanted.len() as u64);
        count("filtered", filtered);
        count("trimmed", trimmed);
        shared.lag.release(&self.stream, metrics);
        true
    }

    /// Claims `ids` again for this consumer (`XCLAIM ... 0 ... JUSTID`),
    /// which resets their idle time: while a node retries a batch, other
    /// nodes do not take it over. A failure is only logged (the POST is
    /// retried anyway).
    async fn touch(&mut self, ids: &[&str]) {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.stream).arg(GROUP).arg(self.me()).arg(0);
        for id in ids {
            cmd.arg(*id);
        }
        cmd.arg("JUSTID");
        if let Err(err) = self.link.query(cmd).await {
            tracing::debug!(stream = %self.stream, error = %err, "webhooks: XCLAIM (keep) failed");
        }
    }

    /// `XGROUP CREATE <stream> broker-webhooks 0 MKSTREAM`; an existing
    /// group is fine.
    async fn create_group(&mut self) -> RedisResult<()> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.link.query(cmd).await {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn read_cmd(&self, from: &str, block: Option<Duration>) -> Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(self.me())
            .arg("COUNT")
            .arg(self.shared.settings.batch_max);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(from);
        cmd
    }

    fn autoclaim_cmd(&self, cursor: &str) -> Cmd {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.stream)
            .arg(GROUP)
            .arg(self.me())
            .arg(self.shared.settings.claim_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(self.shared.settings.batch_max);
        cmd
    }

    fn ack_cmd(&self, ids: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.stream).arg(GROUP);
        for id in ids {
            cmd.arg(*id);
        }
        cmd
    }
}
