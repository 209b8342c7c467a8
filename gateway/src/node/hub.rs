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
//! gap from the rooms' history (see `repair.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use broker::envelope::{self, Envelope};
use broker::protocol::CloseCode;
use bytes::Bytes;

use super::connection::ConnShared;
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::ws::close::SLOW_CONSUMER;

enum Member {
    /// Receiving live. `floor` is the `seq` its join reported: the join's
    /// ack (and replay) covered every message up to it, so a live copy of
    /// one of those — the node's Pub/Sub link can lag behind the command
    /// link that carried the join's reply — is not sent again. It holds for
    /// the room's epoch at the join; a new epoch clears it.
    Active { conn: Arc<ConnShared>, floor: u64 },
    /// Joining: live frames wait here as `(seq, frame)`; seq 0 for events.
    Pending(Arc<ConnShared>, Vec<(u64, Bytes)>),
}

/// A room with local members: who they are, and the newest message this
/// node delivered in it.
#[derive(Default)]
struct Room {
    members: HashMap<Arc<str>, Member>,
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

/// Local connections and room memberships of this node.
pub struct Hub {
    conns: RwLock<HashMap<Arc<str>, Arc<ConnShared>>>,
    rooms: RwLock<HashMap<String, Room>>,
    pending_limit: usize,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// An empty hub; `pending_limit` bounds what a joining member buffers.
    pub fn new(metrics: Arc<Metrics>, pending_limit: usize) -> Hub {
        Hub {
            conns: RwLock::new(HashMap::new()),
            rooms: RwLock::new(HashMap::new()),
            pending_limit,
            metrics,
        }
    }

    /// Adds a live connection.
    pub fn register(&self, conn: Arc<ConnShared>) {
        if let Ok(mut conns) = self.conns.write() {
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
        if members.contains_key(&conn.id) {
            return false;
        }
        members.insert(conn.id.clone(), Member::Pending(conn.clone(), Vec::new()));
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
                    for member in entry.members.values_mut() {
                        if let Member::Active { floor, .. } = member {
                            *floor = 0;
                        }
                    }
                }
            }
            for (id, member) in entry.members.iter_mut() {
                if except == Some(&**id) {
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
                    for member in entry.members.values() {
                        let conn = match member {
                            Member::Active { conn: c, .. } | Member::Pending(c, _) => c,
                        };
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
