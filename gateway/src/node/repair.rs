//! Gap repair: after the node's channel came back, each local room's
//! history after the last sequence number this node delivered is fetched
//! and delivered, in order, before live messages are read again; the hub
//! drops the duplicates that then also arrive live. What history no longer
//! holds (too short, expired, none kept, or the room's epoch changed) is
//! told to the room's members with one `missed` frame each, after the
//! repaired messages and before live ones.

use std::time::{Duration, Instant};

use broker::command::History;
use broker::protocol::{self, ServerFrame};
use bytes::Bytes;
use futures_util::StreamExt;

use super::hub::{Gap, Position};
use super::Node;
use crate::store::StoreResult;

/// History requests in flight during a gap repair.
const REPAIR_CONCURRENCY: usize = 32;
/// Rounds of a gap repair, 200 ms apart, before a room's gap is given up.
const REPAIR_ATTEMPTS: u32 = 10;

/// Delivers what every local room missed while the channel was down: its
/// history after the last sequence number this node delivered.
pub(crate) async fn repair(node: &Node) {
    let started = Instant::now();
    let mut todo = node.hub.positions();
    let rooms = todo.len();
    let (mut repaired, mut unrepaired, mut told) = (0u64, 0u64, 0u64);
    // The command connection may still be reconnecting: retry the rooms
    // whose history failed, for a bounded time (the channel waits).
    for attempt in 1..=REPAIR_ATTEMPTS {
        let results: Vec<(Position, _)> = futures_util::stream::iter(std::mem::take(&mut todo))
            .map(|p| async move {
                let missed = fetch_missed(node, &p).await;
                (p, missed)
            })
            .buffer_unordered(REPAIR_CONCURRENCY)
            .collect()
            .await;
        for (p, missed) in results {
            match missed {
                Ok(m) => {
                    let fetched = m.messages.len() as u64;
                    let held: Vec<u64> = m.messages.iter().map(|(seq, _)| *seq).collect();
                    repaired += node.hub.repair(&p.room, &m.epoch, m.messages);
                    let lost = m.count.saturating_sub(fetched);
                    unrepaired += lost;
                    if lost > 0 || m.reset {
                        let gap = Gap {
                            epoch: &m.epoch,
                            seq: m.seq,
                            after: m.after,
                            held: &held,
                            reset: m.reset,
                        };
                        told += node.hub.missed(&p.room, &gap);
                    }
                }
                Err(err) => {
                    if attempt == REPAIR_ATTEMPTS {
                        tracing::warn!(room = %p.room, error = %err, "gap repair: history failed");
                    }
                    todo.push(p);
                }
            }
        }
        if todo.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed = todo.len();
    node.metrics.gap_repaired.inc_by(repaired);
    node.metrics.gap_unrepaired.inc_by(unrepaired);
    tracing::info!(
        node = %node.id,
        rooms,
        repaired,
        unrepaired,
        told,
        failed,
        ms = started.elapsed().as_millis() as u64,
        "gap repair after the node channel came back"
    );
}

/// What a room missed after a [`Position`]: how many messages, and those
/// its history still holds, oldest first.
struct Missed {
    /// The room's epoch now.
    epoch: String,
    /// The room's sequence number now.
    seq: u64,
    /// The gap is the messages of `epoch` after this one, up to `seq`.
    after: u64,
    /// True when the epoch changed since the [`Position`]: the old epoch's
    /// messages after it are gone, how many is not known.
    reset: bool,
    /// How many messages of `epoch` are in the gap.
    count: u64,
    messages: Vec<(u64, Bytes)>,
}

/// The history of `p.room` after `p.seq`; when the room was reset since (a
/// new epoch: Redis lost its data, or the room emptied and began again),
/// everything of the new epoch.
async fn fetch_missed(node: &Node, p: &Position) -> StoreResult<Missed> {
    let since = |since| History {
        room: p.room.clone(),
        since,
        limit: None,
        max_bytes: None,
    };
    let mut history = node.store.history(&since(Some(p.seq))).await?;
    let mut after = p.seq;
    let reset = !p.epoch.is_empty() && p.epoch != history.epoch;
    if reset {
        history = node.store.history(&since(None)).await?;
        after = 0;
    }
    let messages = history
        .messages
        .into_iter()
        .filter_map(|frame| match protocol::decode_server_frame(&frame) {
            Ok(ServerFrame::Msg { seq, .. }) => Some((seq, Bytes::from(frame))),
            _ => None,
        })
        .collect();
    Ok(Missed {
        epoch: history.epoch,
        seq: history.seq,
        after,
        reset,
        count: history.seq.saturating_sub(after),
        messages,
    })
}
