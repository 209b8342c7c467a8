//! Gap repair: after the node's channel came back, each local room's
//! history after the last sequence number this node delivered is fetched
//! and delivered, in order, before live messages are read again; the hub
//! drops the duplicates that then also arrive live.

use std::time::{Duration, Instant};

use broker::command::History;
use broker::protocol::{self, ServerFrame};
use bytes::Bytes;
use futures_util::StreamExt;

use super::hub::Position;
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
    let (mut repaired, mut unrepaired) = (0u64, 0u64);
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
                    repaired += node.hub.repair(&p.room, &m.epoch, m.messages);
                    unrepaired += m.count.saturating_sub(fetched);
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
        failed,
        ms = started.elapsed().as_millis() as u64,
        "gap repair after the node channel came back"
    );
}

/// What a room missed after a [`Position`]: how many messages, and those
/// its history still holds, oldest first.
struct Missed {
    epoch: String,
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
    };
    let mut history = node.store.history(&since(Some(p.seq))).await?;
    let mut after = p.seq;
    if !p.epoch.is_empty() && p.epoch != history.epoch {
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
        count: history.seq.saturating_sub(after),
        messages,
    })
}
