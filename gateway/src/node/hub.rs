//! The node's local fan-out: which local connections are in which room, and
//! delivery of what arrives on the node's Pub/Sub channel.
//!
//! A message reaches this node once (the module publishes one envelope per
//! interested node); the hub slices the frame out of the received buffer
//! once and hands the same `Bytes` to every local member's bounded queue —
//! no per-recipient encoding or copy. A member whose queue is full is a slow
//! consumer: it is closed with 4008 instead of growing memory or slowing
//! the others.
//!
//! Joining is two-phase so that per-room order holds: while the module's
//! `JOIN` is in flight the membership is *pending* and live messages are
//! buffered; when the join (and any replay of missed messages) is done, the
//! buffered messages newer than the join's sequence are released in order,
//! and copies of older ones that arrive later are dropped for that member.
//!
//! Each room also keeps the newest `(epoch, seq)` this node delivered. A
//! message at or below it is a duplicate and is dropped; after the node's
//! Pub/Sub link comes back, [`Hub::positions`] and [`Hub::repair`] fill the
//! gap from the rooms' history (see `repair.rs`), and [`Hub::missed`] tells
//! the members what history no longer held (a `missed` frame).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use broker::envelope::{self, Envelope};
use broker::protocol::{self, CloseCode};
use bytes::Bytes;

use super::connection::{ConnShared, Order};
use super::members::{Member, Members};
use crate::clock::{mono_ms, now_ms};
use crate::metrics::Metrics;
use crate::ws::close::SLOW_CONSUMER;

/// A room with local members: who they are, and the newest message this
/// node delivered in it.
#[derive(Default)]
struct Room {
    members: Members,
    /// Sequence number of the newest message delivered (0: none yet).
    seq: u64,
    /// The room's epoch at that message.
    epoch: String,
}

impl Room {
    /// Records `(seq, epoch)` as delivered; false when it was delivered
    /// already (a duplicate from a repair racing the live channel).
    fn advance(&mut self, seq: u64, epoch: &str) -> bool {
        if self.epoch == epoch {
            if seq <= self.seq {
                return false;
            }
        } else {
            self.epoch = epoch.to_owned();
        }
        self.seq = seq;
        true
    }
}

/// Where a room stands on this node: the `since` of a gap repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The room.
    pub room: String,
    /// Newest sequence number delivered.
    pub seq: u64,
    /// The room's epoch then.
    pub epoch: String,
}

/// What a gap repair could not fill in one room, for [`Hub::missed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap<'a> {
    /// The room's epoch now.
    pub epoch: &'a str,
    /// The room's sequence number now: the gap ends here.
    pub seq: u64,
    /// The gap begins after this sequence number (of `epoch`).
    pub after: u64,
    /// Sequence numbers in the gap that history still held (and the
    /// repair delivered), ascending.
    pub held: &'a [u64],
    /// True when the room's epoch changed since this node's last message:
    /// how many of the old epoch's messages were lost is not known.
    pub reset: bool,
}

impl Gap<'_> {
    /// How many messages after `from` (up to `seq`) a member did not get;
    /// `None` when not known.
    fn lost_after(&self, from: u64) -> Option<u64> {
        if self.reset {
            return None;
        }
        let from = from.max(self.after);
        let held = self.held.len() - self.held.partition_point(|&s| s <= from);
        Some(self.seq.saturating_sub(from).saturating_sub(held as u64))
    }
}

/// Local connections and room memberships of this node.
pub struct Hub {
    conns: RwLock<HashMap<Arc<str>, Arc<ConnShared>>>,
    /// Backend-decided memberships for connections the module has opened
    /// but this node has not registered yet (a backend reacting to the
    /// `connect` event can be that quick): handed over at registration.
    early: Mutex<VecDeque<EarlyOrder>>,
    rooms: RwLock<HashMap<String, Room>>,
    pending_limit: usize,
    metrics: Arc<Metrics>,
}

/// How long a membership waits for its connection to register: longer
/// than an admission takes, shorter than anything a client would notice as
/// a stale join of a connection long gone.
const EARLY_ORDER_MS: u64 = 10_000;

/// Memberships waiting for unregistered connections, at most, per node.
const MAX_EARLY_ORDERS: usize = 4096;

/// A membership that arrived before its connection registered.
#[derive(Debug)]
struct EarlyOrder {
    conn: Box<str>,
    order: Order,
    at_ms: u64,
}

impl Hub {
    /// An empty hub; `pending_limit` bounds what a joining member buffers.
    pub fn new(metrics: Arc<Metrics>, pending_limit: usize) -> Hub {
        Hub {
            conns: RwLock::new(HashMap::new()),
            early: Mutex::new(VecDeque::new()),
            rooms: RwLock::new(HashMap::new()),
            pending_limit,
            metrics,
        }
    }

    /// Adds a live connection, with the memberships decided for it before.
    pub fn register(&self, conn: Arc<ConnShared>) {
        if let Ok(mut conns) = self.conns.write() {
            // Under the write lock: a membership for it is either early
            // already or finds it registered.
            if let Ok(mut early) = self.early.lock() {
                early.retain(|e| {
                    let mine = *e.conn == *conn.id;
                    if mine {
                        conn.order(e.order.clone());
                    }
                    !mine
                });
            }
            conns.insert(conn.id.clone(), conn);
        }
        self.metrics.connections.inc();
        self.metrics.connections_opened.inc();
    }

    /// Removes a connection and all its memberships.
    pub fn unregister(&self, conn: &ConnShared) {
        let removed = self
            .conns
            .write()
            .map(|mut c| c.remove(&conn.id).is_some())
            .unwrap_or(false);
        if removed {
            self.metrics.connections.dec();
        }
        let rooms: Vec<String> = conn.rooms_snapshot().into_iter().map(|(r, _)| r).collect();
        if let Ok(mut all) = self.rooms.write() {
            for room in rooms {
                remove_member(&mut all, &room, &conn.id);
            }
        }
    }

    /// Every live connection (shutdown, re-registration).
    pub fn connections(&self) -> Vec<Arc<ConnShared>> {
        self.conns
            .read()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Gives back the memory of maps that a crowd left (a hash map keeps
    /// its capacity otherwise): each one under a quarter full shrinks.
    /// Called by the keep-alive task.
    pub fn compact(&self) {
        fn shrink<K: Eq + std::hash::Hash, V>(map: &RwLock<HashMap<K, V>>) {
            let oversized = map
                .read()
                .map(|m| m.capacity() > 64 && m.len() * 4 < m.capacity())
                .unwrap_or(false);
            if oversized {
                if let Ok(mut m) = map.write() {
                    m.shrink_to_fit();
                }
            }
        }
        shrink(&self.conns);
        shrink(&self.rooms);
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.conns.read().map(|c| c.len()).unwrap_or(0)
    }

    /// True when no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a join: live frames for `room` are buffered for `conn` until
    /// [`Hub::finish_join`]. Returns false when it is already a member.
    pub fn begin_join(&self, room: &str, conn: &Arc<ConnShared>) -> bool {
        let Ok(mut all) = self.rooms.write() else {
            return false;
        };
        let members = &mut all.entry(room.to_string()).or_default().members;
        if members.contains(&conn.id) {
            return false;
        }
        members.insert(Member::Pending(conn.clone(), Vec::new()));
        true
    }

    /// Ends a join at the room's `seq` and `epoch`: releases buffered frames
    /// newer than `seq` (and every presence event), then delivers live
    /// whatever is newer than `seq`.
    pub fn finish_join(&self, room: &str, conn: &Arc<ConnShared>, seq: u64, epoch: &str) {
        let Ok(mut all) = self.rooms.write() else {
            return;
        };
        let Some(entry) = all.get_mut(room) else {
            return;
        };
        // The first member's join tells where the room stands.
        if entry.seq == 0 || entry.epoch != epoch {
            entry.advance(seq, epoch);
        }
        if let Some(member) = entry.members.get_mut(&conn.id) {
            // A repeated join of an active member changes nothing: what it
            // has not received yet is still on its way.
            if let Member::Pending(_, buffer) = member {
                for (frame_seq, frame) in std::mem::take(buffer) {
                    if frame_seq == 0 || frame_seq > seq {
                        conn.send(frame, &self.metrics);
                    }
                }
                *member = Member::Active {
                    conn: conn.clone(),
                    floor: seq,
                };
            }
        }
    }

    /// Removes `conn` from `room` (a failed join or a leave).
    pub fn leave(&self, room: &str, conn: &ConnShared) {
        if let Ok(mut all) = self.rooms.write() {
            remove_member(&mut all, room, &conn.id);
        }
    }

    /// Delivers one Pub/Sub message from the node's channel.
    pub fn dispatch(&self, payload: Bytes) {
        let envelope = match envelope::decode_envelope(&payload) {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(error = %err, "undecodable envelope on the node channel");
                return;
            }
        };
        match envelope {
            Envelope::Msg {
                room,
                seq,
                epoch,
                except,
                frame,
                ts,
            } => {
                let frame = payload.slice_ref(frame);
                let delivered = self.to_room(room, Some((seq, epoch)), except, &frame);
                self.metrics.messages_delivered.inc_by(delivered);
                let now = now_ms();
                self.metrics
                    .publish_latency
                    .observe(now.saturating_sub(ts) as f64 / 1000.0);
            }
            Envelope::Presence { room, frame, .. } => {
                let frame = payload.slice_ref(frame);
                self.to_room(room, None, None, &frame);
            }
            Envelope::Broadcast {
                namespace, frame, ..
            } => {
                let frame = payload.slice_ref(frame);
                let delivered = self.broadcast(namespace, &frame);
                self.metrics.messages_delivered.inc_by(delivered);
            }
            Envelope::Membership {
                conns, room, join, ..
            } => {
                let Ok(all) = self.conns.read() else {
                    return;
                };
                for id in conns {
                    let order = if join {
                        Order::Join(room.to_string())
                    } else {
                        Order::Leave(room.to_string())
                    };
                    let Some(conn) = all.get(id) else {
                        // Opened in Redis, not registered here yet (or
                        // gone: then it expires unused).
                        self.keep_early(id, order);
                        continue;
                    };
                    if !conn.order(order) {
                        tracing::warn!(conn = id, room, "too many memberships queued; one dropped");
                    }
                }
            }
            Envelope::Volatile {
                room,
                except,
                frame,
                ..
            } => {
                let frame = payload.slice_ref(frame);
                let delivered = self.volatile_to_room(room, except, &frame);
                self.metrics.messages_delivered.inc_by(delivered);
            }
            Envelope::RpcReply { conn, id, frame } => {
                let frame = payload.slice_ref(frame);
                self.rpc_reply(conn, id, frame);
            }
            Envelope::Kick { conns, reason, .. } => {
                let Ok(all) = self.conns.read() else {
                    return;
                };
                for id in conns {
                    if let Some(conn) = all.get(id) {
                        conn.close(CloseCode::Forbidden, reason);
                    }
                }
            }
        }
    }

    /// Hands a backend's answer to `conn`'s `rpc` `id` to the connection,
    /// when it is still here and the `rpc` still pending (which this ends);
    /// otherwise drops and counts it (`gone`, `late`).
    fn rpc_reply(&self, conn: &str, id: i64, frame: Bytes) {
        let target = self.conns.read().ok().and_then(|c| c.get(conn).cloned());
        let Some(target) = target else {
            self.metrics
                .rpc_replies_dropped
                .with_label_values(&["gone"])
                .inc();
            return;
        };
        let Some(rpc) = target.end_rpc(id) else {
            self.metrics
                .rpc_replies_dropped
                .with_label_values(&["late"])
                .inc();
            return;
        };
        let result = match protocol::frame_type(&frame) {
            Some("err") => "error",
            _ => "replied",
        };
        self.metrics.rpc_requests.with_label_values(&[result]).inc();
        self.metrics
            .rpc_duration
            .observe(mono_ms().saturating_sub(rpc.started_ms) as f64 / 1000.0);
        target.send(frame, &self.metrics);
    }

    /// Sends an ephemeral `frame` to the active members of `room` but
    /// `except`, skipping those whose send queue is over half full (and
    /// those still joining); returns how many got it. It has no sequence
    /// number, so it moves no room position and no member's floor.
    fn volatile_to_room(&self, room: &str, except: Option<&str>, frame: &Bytes) -> u64 {
        let mut delivered = 0;
        let mut skipped = 0;
        let Ok(all) = self.rooms.read() else {
            return 0;
        };
        let Some(entry) = all.get(room) else {
            return 0;
        };
        for member in entry.members.iter() {
            if except == Some(&*member.conn().id) {
                continue;
            }
            match member {
                Member::Active { conn, .. } => {
                    if conn.outlet.send_volatile(frame.clone()) {
                        delivered += 1;
                    } else if conn.outlet.close_reason().is_none() {
                        skipped += 1;
                    }
                }
                Member::Pending(..) => skipped += 1,
            }
        }
        self.metrics.volatile_skipped.inc_by(skipped);
        delivered
    }

    /// Keeps `order` for `conn` until it registers, for at most
    /// [`EARLY_ORDER_MS`]; at most [`MAX_EARLY_ORDERS`] for the node.
    fn keep_early(&self, conn: &str, order: Order) {
        let Ok(mut early) = self.early.lock() else {
            return;
        };
        let now = mono_ms();
        while early
            .front()
            .is_some_and(|e| now.saturating_sub(e.at_ms) > EARLY_ORDER_MS)
        {
            early.pop_front();
        }
        if early.len() >= MAX_EARLY_ORDERS {
            tracing::warn!(
                conn,
                "too many memberships for unregistered connections; one dropped"
            );
            return;
        }
        early.push_back(EarlyOrder {
            conn: conn.into(),
            order,
            at_ms: now,
        });
    }

    /// Every room's position, for a gap repair.
    pub fn positions(&self) -> Vec<Position> {
        let Ok(all) = self.rooms.read() else {
            return Vec::new();
        };
        all.iter()
            .map(|(room, r)| Position {
                room: room.clone(),
                seq: r.seq,
                epoch: r.epoch.clone(),
            })
            .collect()
    }

    /// Delivers `(seq, frame)` messages of `room` fetched from its history
    /// at `epoch`, oldest first, skipping those delivered already. Returns
    /// how many were delivered to at least one member.
    pub fn repair(&self, room: &str, epoch: &str, messages: Vec<(u64, Bytes)>) -> u64 {
        let mut repaired = 0;
        for (seq, frame) in messages {
            let delivered = self.to_room(room, Some((seq, epoch)), None, &frame);
            if delivered > 0 {
                repaired += 1;
                self.metrics.messages_delivered.inc_by(delivered);
            }
        }
        repaired
    }

    /// Tells the members of `room` about a [`Gap`] that history could not
    /// fill: each one that missed messages in it gets one `missed` frame
    /// `{room, epoch, seq, count?}`, after the repaired messages (call it
    /// after [`Hub::repair`]) and before anything live. The room's position
    /// moves to the gap's end, so later copies of the lost messages are
    /// dropped. A joining member gets the frame after its join unless the
    /// join's `seq` is past the gap. Returns how many members were told.
    pub fn missed(&self, room: &str, gap: &Gap<'_>) -> u64 {
        let mut told = 0;
        let mut overflow = Vec::new();
        {
            let Ok(mut all) = self.rooms.write() else {
                return 0;
            };
            let Some(entry) = all.get_mut(room) else {
                return 0;
            };
            if entry.epoch != gap.epoch {
                for member in entry.members.iter_mut() {
                    if let Member::Active { floor, .. } = member {
                        *floor = 0;
                    }
                }
            }
            entry.advance(gap.seq, gap.epoch);
            // One encoding per distinct count (usually one for the room).
            let mut frames: Vec<(Option<u64>, Bytes)> = Vec::new();
            let mut frame_for = |count: Option<u64>| -> Bytes {
                if let Some((_, frame)) = frames.iter().find(|(c, _)| *c == count) {
                    return frame.clone();
                }
                let frame = Bytes::from(protocol::encode_missed(room, gap.epoch, gap.seq, count));
                frames.push((count, frame.clone()));
                frame
            };
            for member in entry.members.iter_mut() {
                match member {
                    Member::Active { conn, floor } => {
                        // A member whose join came after part of the gap
                        // missed only what followed its join.
                        let count = gap.lost_after(*floor);
                        if count == Some(0) {
                            continue;
                        }
                        if conn.send(frame_for(count), &self.metrics) {
                            told += 1;
                        }
                    }
                    Member::Pending(conn, buffer) => {
                        if buffer.len() >= self.pending_limit {
                            overflow.push(conn.clone());
                        } else {
                            buffer.push((gap.seq, frame_for(gap.lost_after(0))));
                            told += 1;
                        }
                    }
                }
            }
        }
        for conn in overflow {
            if conn.close(CloseCode::Policy, SLOW_CONSUMER) {
                self.metrics.slow_consumer_disconnects.inc();
            }
        }
        told
    }

    /// Sends `frame` to the members of `room`; `position` is a message's
    /// `(seq, epoch)`, which is delivered only when newer than the room's.
    fn to_room(
        &self,
        room: &str,
        position: Option<(u64, &str)>,
        except: Option<&str>,
        frame: &Bytes,
    ) -> u64 {
        let mut delivered = 0;
        let mut overflow = Vec::new();
        let seq = position.map_or(0, |(seq, _)| seq);
        {
            let Ok(mut all) = self.rooms.write() else {
                return 0;
            };
            let Some(entry) = all.get_mut(room) else {
                return 0;
            };
            if let Some((seq, epoch)) = position {
                let new_epoch = entry.epoch != epoch;
                if !entry.advance(seq, epoch) {
                    return 0;
                }
                if new_epoch {
                    for member in entry.members.iter_mut() {
                        if let Member::Active { floor, .. } = member {
                            *floor = 0;
                        }
                    }
                }
            }
            for member in entry.members.iter_mut() {
                if except == Some(&*member.conn().id) {
                    continue;
                }
                match member {
                    Member::Active { conn, floor } => {
                        if seq != 0 && seq <= *floor {
                            continue;
                        }
                        if conn.send(frame.clone(), &self.metrics) {
                            delivered += 1;
                        }
                    }
                    Member::Pending(conn, buffer) => {
                        if buffer.len() >= self.pending_limit {
                            overflow.push(conn.clone());
                        } else {
                            buffer.push((seq, frame.clone()));
                        }
                    }
                }
            }
        }
        for conn in overflow {
            if conn.close(CloseCode::Policy, SLOW_CONSUMER) {
                self.metrics.slow_consumer_disconnects.inc();
            }
        }
        delivered
    }

    fn broadcast(&self, namespace: Option<&str>, frame: &Bytes) -> u64 {
        let targets: Vec<Arc<ConnShared>> = match namespace {
            None => self.connections(),
            Some(ns) => {
                let prefix = format!("{ns}:");
                let Ok(all) = self.rooms.read() else {
                    return 0;
                };
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for (room, entry) in all.iter() {
                    if !room.starts_with(&prefix) {
                        continue;
                    }
                    for member in entry.members.iter() {
                        let conn = member.conn();
                        if seen.insert(conn.id.clone()) {
                            out.push(conn.clone());
                        }
                    }
                }
                out
            }
        };
        targets
            .iter()
            .filter(|c| c.send(frame.clone(), &self.metrics))
            .count() as u64
    }
}

fn remove_member(all: &mut HashMap<String, Room>, room: &str, id: &Arc<str>) {
    if let Some(entry) = all.get_mut(room) {
        entry.members.remove(id);
        if entry.members.is_empty() {
            all.remove(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::outbox::{Outbox, QueueLimits};
    use crate::ws::Outlet;
    use broker::protocol::ServerFrame;

    fn member(hub: &Hub, id: &str) -> (Arc<ConnShared>, Arc<Outbox>) {
        let (outlet, queue) = Outlet::new(QueueLimits {
            frames: 64,
            bytes: usize::MAX,
        });
        let conn = ConnShared::new(id.into(), "u".into(), "127.0.0.1".into(), outlet, u64::MAX);
        hub.register(conn.clone());
        (conn, queue)
    }

    #[tokio::test]
    async fn a_membership_for_a_connection_not_registered_yet_waits_for_it() {
        let hub = Hub::new(Arc::new(Metrics::new()), 64);
        let envelope =
            envelope::encode_membership_envelope("u", &["n1.abcd.1"], "support:t1", true);
        hub.dispatch(Bytes::from(envelope));
        let leave = envelope::encode_membership_envelope("u", &["n1.abcd.1"], "support:t0", false);
        hub.dispatch(Bytes::from(leave));
        let (conn, _queue) = member(&hub, "n1.abcd.1");
        let orders = tokio::time::timeout(std::time::Duration::from_secs(1), conn.next_orders())
            .await
            .expect("the early orders are handed over at registration");
        assert_eq!(
            orders,
            [
                Order::Join("support:t1".into()),
                Order::Leave("support:t0".into())
            ]
        );
        let (other, _q) = member(&hub, "n1.abcd.2");
        let none =
            tokio::time::timeout(std::time::Duration::from_millis(50), other.next_orders()).await;
        assert!(none.is_err(), "another connection gets none of them");
    }

    /// What `queue` holds, decoded: `msg` as its seq, `missed` whole.
    fn received(queue: &Outbox) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        queue.drain_into(&mut frames, 1000);
        frames
            .iter()
            .map(|f| match protocol::decode_server_frame(f) {
                Ok(frame) => frame,
                Err(e) => panic!("undecodable frame: {e}"),
            })
            .collect()
    }

    fn msg(seq: u64, epoch: &str) -> (u64, Bytes) {
        let frame = protocol::encode_msg_frame("feed:a", "m", &[0xc0], seq, epoch, 1, None);
        (seq, Bytes::from(frame))
    }

    fn missed(epoch: &str, seq: u64, count: Option<u64>) -> ServerFrame {
        ServerFrame::Missed {
            room: "feed:a".into(),
            epoch: epoch.into(),
            seq,
            count,
        }
    }

    fn seqs(frames: &[ServerFrame]) -> Vec<Option<u64>> {
        frames
            .iter()
            .map(|f| match f {
                ServerFrame::Msg { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn volatile_moves_no_position_and_skips_full_queues() {
        let hub = Hub::new(Arc::new(Metrics::new()), 16);
        let (conn, queue) = member(&hub, "c1");
        hub.begin_join("feed:a", &conn);
        hub.finish_join("feed:a", &conn, 3, "e");
        let (joining, joining_q) = member(&hub, "c2");
        hub.begin_join("feed:a", &joining);
        let frame = protocol::encode_volatile_msg_frame("feed:a", "t", &[0xc3], "e", 1, None);
        let envelope = envelope::encode_volatile_envelope("feed:a", None, &frame, 1);
        hub.dispatch(Bytes::from(envelope));
        assert_eq!(hub.positions()[0].seq, 3);
        // The next regular message (seq 4) is not taken for a duplicate.
        hub.to_room("feed:a", Some((4, "e")), None, &msg(4, "e").1);
        let got = received(&queue);
        assert_eq!(seqs(&got), [Some(0), Some(4)]);
        assert!(matches!(got[0], ServerFrame::Msg { volatile: true, .. }));
        // The joining member skipped it; its buffer holds only seq 4.
        hub.finish_join("feed:a", &joining, 3, "e");
        assert_eq!(seqs(&received(&joining_q)), [Some(4)]);
        // A queue over half full (33 of 64 frames) skips it.
        for _ in 0..33 {
            conn.send(Bytes::from_static(b"x"), &hub.metrics);
        }
        let envelope = envelope::encode_volatile_envelope("feed:a", None, &frame, 1);
        hub.dispatch(Bytes::from(envelope));
        let mut left = Vec::new();
        queue.drain_into(&mut left, 1000);
        assert_eq!(left.len(), 33);
        assert_eq!(hub.metrics.volatile_skipped.get(), 2);
    }

    #[test]
    fn rpc_replies_reach_pending_rpcs_only() {
        use crate::node::connection::PendingRpc;
        let hub = Hub::new(Arc::new(Metrics::new()), 16);
        let (conn, queue) = member(&hub, "n.i.1");
        let pending = PendingRpc {
            id: 5,
            started_ms: mono_ms(),
            deadline_ms: u64::MAX,
        };
        conn.begin_rpc(pending, mono_ms()).unwrap();
        let frame = protocol::encode_ack_raw(5, &protocol::ack_rpc(&[0x01]));
        let reply = || Bytes::from(envelope::encode_rpc_reply_envelope("n.i.1", 5, &frame));
        hub.dispatch(reply());
        hub.dispatch(reply());
        hub.dispatch(Bytes::from(envelope::encode_rpc_reply_envelope(
            "n.i.2", 5, &frame,
        )));
        let got = received(&queue);
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], ServerFrame::Ack { id: 5, .. }));
        let dropped = |reason: &str| {
            hub.metrics
                .rpc_replies_dropped
                .with_label_values(&[reason])
                .get()
        };
        assert_eq!((dropped("late"), dropped("gone")), (1, 1));
        assert_eq!(
            hub.metrics
                .rpc_requests
                .with_label_values(&["replied"])
                .get(),
            1
        );
    }

    #[test]
    fn lost_after_counts_what_history_did_not_hold() {
        let held = [8, 9, 10];
        let gap = Gap {
            epoch: "e",
            seq: 10,
            after: 2,
            held: &held,
            reset: false,
        };
        assert_eq!(gap.lost_after(0), Some(5));
        assert_eq!(gap.lost_after(2), Some(5));
        assert_eq!(gap.lost_after(5), Some(2));
        assert_eq!(gap.lost_after(8), Some(0));
        assert_eq!(gap.lost_after(12), Some(0));
        let reset = Gap { reset: true, ..gap };
        assert_eq!(reset.lost_after(0), None);
    }

    #[test]
    fn missed_follows_the_repair_and_counts_from_each_members_join() {
        let hub = Hub::new(Arc::new(Metrics::new()), 16);
        let (early, early_q) = member(&hub, "c1");
        hub.begin_join("feed:a", &early);
        hub.finish_join("feed:a", &early, 2, "e");
        // Joined during the gap, at seq 5: only 6 and 7 are lost for it.
        let (late, late_q) = member(&hub, "c2");
        hub.begin_join("feed:a", &late);
        hub.finish_join("feed:a", &late, 5, "e");
        // Joined after the gap: nothing lost.
        let (last, last_q) = member(&hub, "c3");
        hub.begin_join("feed:a", &last);
        hub.finish_join("feed:a", &last, 10, "e");
        // Still joining: told once its join is done, unless past the gap.
        let (joining, joining_q) = member(&hub, "c4");
        hub.begin_join("feed:a", &joining);

        let position = hub.positions();
        assert_eq!(position[0].seq, 2);
        let messages = vec![msg(8, "e"), msg(9, "e"), msg(10, "e")];
        let held: Vec<u64> = messages.iter().map(|(s, _)| *s).collect();
        hub.repair("feed:a", "e", messages);
        let gap = Gap {
            epoch: "e",
            seq: 10,
            after: 2,
            held: &held,
            reset: false,
        };
        assert_eq!(hub.missed("feed:a", &gap), 3);
        // Live after the gap; a late copy of a lost one is dropped.
        hub.to_room("feed:a", Some((7, "e")), None, &msg(7, "e").1);
        hub.to_room("feed:a", Some((11, "e")), None, &msg(11, "e").1);
        hub.finish_join("feed:a", &joining, 9, "e");

        let early_got = received(&early_q);
        assert_eq!(
            seqs(&early_got),
            [Some(8), Some(9), Some(10), None, Some(11)]
        );
        assert_eq!(early_got[3], missed("e", 10, Some(5)));
        let late_got = received(&late_q);
        assert_eq!(
            seqs(&late_got),
            [Some(8), Some(9), Some(10), None, Some(11)]
        );
        assert_eq!(late_got[3], missed("e", 10, Some(2)));
        assert_eq!(seqs(&received(&last_q)), [Some(11)]);
        let joining_got = received(&joining_q);
        assert_eq!(seqs(&joining_got), [Some(10), None, Some(11)]);
        assert_eq!(joining_got[1], missed("e", 10, Some(5)));
        assert_eq!(hub.positions()[0].seq, 11);
    }

    #[test]
    fn missed_of_a_new_epoch_has_no_count_and_moves_the_room_there() {
        let hub = Hub::new(Arc::new(Metrics::new()), 16);
        let (conn, queue) = member(&hub, "c1");
        hub.begin_join("feed:a", &conn);
        hub.finish_join("feed:a", &conn, 40, "old");
        let gap = Gap {
            epoch: "new",
            seq: 3,
            after: 0,
            held: &[],
            reset: true,
        };
        assert_eq!(hub.missed("feed:a", &gap), 1);
        let position = &hub.positions()[0];
        assert_eq!((position.seq, position.epoch.as_str()), (3, "new"));
        hub.to_room("feed:a", Some((4, "new")), None, &msg(4, "new").1);
        let got = received(&queue);
        assert_eq!(got[0], missed("new", 3, None));
        assert_eq!(seqs(&got), [None, Some(4)]);
        // A room with no local members tells no one.
        assert_eq!(hub.missed("feed:none", &gap), 0);
    }
}
