//! Publish and history: a room's sequence and epoch, the retained messages
//! with their size and age limits, history reads and recovery.

use serde::{Deserialize, Serialize};

use super::{Registry, Room};
use crate::command::{ApplyPublish, ParseError, Refusal};

/// History settings of a room: keep the last `size` messages for `ttl_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryConfig {
    /// Messages kept; 0 keeps none.
    pub size: u32,
    /// How long a message is kept, in milliseconds; 0 means no age limit.
    pub ttl_ms: u64,
}

/// One retained message: the exact frame clients received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Sequence number in the room.
    pub seq: u64,
    /// Publish time (ms since the Unix epoch).
    pub ts_ms: u64,
    /// The encoded `msg` frame.
    #[serde(with = "serde_bytes_compat")]
    pub frame: Vec<u8>,
}

/// Serde helper so frames are stored as MessagePack `bin`, not integer arrays.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Visitor)
    }
}

impl Room {
    /// Drops retained messages beyond the size limit or older than the TTL.
    pub(super) fn trim(&mut self, now_ms: u64) {
        let size = self.config.size as usize;
        while self.history.len() > size {
            self.history.pop_front();
        }
        if self.config.ttl_ms > 0 {
            while let Some(first) = self.history.front() {
                if first.ts_ms.saturating_add(self.config.ttl_ms) <= now_ms {
                    self.history.pop_front();
                } else {
                    break;
                }
            }
        }
    }

    pub(super) fn is_live(&self, stored: &Stored, now_ms: u64) -> bool {
        self.config.ttl_ms == 0 || stored.ts_ms.saturating_add(self.config.ttl_ms) > now_ms
    }
}

/// Messages a reconnecting client missed, from [`Registry::recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery<'a> {
    /// True when `frames` holds every message after the client's position.
    pub recovered: bool,
    /// The missed frames, oldest first.
    pub frames: Vec<&'a [u8]>,
}

/// A read of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRead<'a> {
    /// The room's current sequence (0 for a room that does not exist).
    pub seq: u64,
    /// The room's epoch (empty for a room that does not exist).
    pub epoch: &'a str,
    /// Retained frames after the requested position, oldest first.
    pub frames: Vec<&'a [u8]>,
    /// True when retained messages after the last frame were left out (by
    /// the count or byte limit): read on with `since` = its `seq`.
    pub more: bool,
}

/// What a publish needs to know before it builds the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishPlan {
    /// The sequence number this message gets.
    pub seq: u64,
    /// The room's epoch, or `None` when the publish creates the room.
    pub epoch: Option<String>,
    /// The history settings the message will be stored with.
    pub config: HistoryConfig,
    /// The sender's user id, when `from` was given.
    pub sender_user: Option<String>,
}

impl Registry {
    /// Checks a publish and tells its sequence number. `from` is the sending
    /// connection (must be a member); `config` the history settings the
    /// gateway passed, if any.
    ///
    /// # Errors
    /// [`Refusal::NotMember`].
    pub fn plan_publish(
        &self,
        room: &str,
        from: Option<&str>,
        config: Option<HistoryConfig>,
    ) -> Result<PublishPlan, Refusal> {
        let existing = self.rooms.get(room);
        let sender_user = match from {
            Some(conn) => {
                if !existing.is_some_and(|r| r.members.contains(conn)) {
                    return Err(Refusal::NotMember);
                }
                self.conns.get(conn).map(|c| c.user.to_string())
            }
            None => None,
        };
        let config = config
            .unwrap_or_else(|| existing.map_or_else(|| self.default_history(room), |r| r.config));
        Ok(PublishPlan {
            seq: existing.map_or(1, |r| r.seq.saturating_add(1)),
            epoch: existing.map(|r| r.epoch.clone()),
            config,
            sender_user,
        })
    }

    /// Checks a replicated publish (`BROKER.APPLY.PUBLISH`) before it is
    /// applied: its `seq` must be a real sequence number (1 to
    /// `u64::MAX - 1`, so the room's next publish still has one) and, in
    /// the room's current epoch, move the room forward. Replicas and AOF
    /// replays always pass; a caller that is not the master gets an error
    /// instead of freezing a room or rewinding it.
    ///
    /// # Errors
    /// [`ParseError::Invalid`] naming what is wrong.
    pub fn check_apply(&self, apply: &ApplyPublish) -> Result<(), ParseError> {
        if apply.seq == 0 || apply.seq == u64::MAX {
            return Err(ParseError::Invalid(format!(
                "seq {}: must be 1 to {}",
                apply.seq,
                u64::MAX - 1
            )));
        }
        if apply.epoch.is_empty() {
            return Err(ParseError::Invalid("epoch: must not be empty".into()));
        }
        match self.rooms.get(&apply.room) {
            Some(r) if r.epoch == apply.epoch && apply.seq <= r.seq => Err(ParseError::Invalid(
                format!("seq {}: the room is at {} in this epoch", apply.seq, r.seq),
            )),
            _ => Ok(()),
        }
    }

    /// Records a published message: sets the room's sequence and epoch
    /// (a different epoch resets the room's history), stores the frame when
    /// the room keeps history, and returns the nodes to deliver to. The same
    /// call replays the master's publish on a replica.
    pub fn apply_publish(&mut self, apply: &ApplyPublish) -> Vec<String> {
        let (room, seq, epoch, ts_ms) = (&*apply.room, apply.seq, &*apply.epoch, apply.ts_ms);
        let (config, frame) = (apply.history, &apply.frame);
        let touched = &mut self.touched;
        let r = self.rooms.entry(room.to_string()).or_insert_with(|| {
            touched.push(room.to_string());
            Room::new(epoch.to_string(), config)
        });
        if r.epoch != epoch {
            r.epoch = epoch.to_string();
            r.history.clear();
        }
        r.seq = seq;
        r.config = config;
        if config.size > 0 {
            r.history.push_back(Stored {
                seq,
                ts_ms,
                frame: frame.to_vec(),
            });
        }
        r.trim(ts_ms);
        let nodes = r.node_list();
        if r.members.is_empty() && r.history.is_empty() {
            self.forget_room(room);
        }
        nodes
    }

    /// Retained frames of `room` after `since`, at most `limit`, that are
    /// still within the TTL at `now_ms`.
    pub fn history(
        &self,
        room: &str,
        since: u64,
        limit: Option<usize>,
        now_ms: u64,
    ) -> HistoryRead<'_> {
        self.history_page(room, since, limit, None, now_ms)
    }

    /// [`Registry::history`], also stopped before the frames' total size
    /// would pass `max_bytes` (the first frame is always given, so a reader
    /// paging with `since` = the last `seq` it got always moves on).
    /// `more` tells whether retained messages were left out.
    pub fn history_page(
        &self,
        room: &str,
        since: u64,
        limit: Option<usize>,
        max_bytes: Option<usize>,
        now_ms: u64,
    ) -> HistoryRead<'_> {
        let Some(r) = self.rooms.get(room) else {
            return HistoryRead {
                seq: 0,
                epoch: "",
                frames: Vec::new(),
                more: false,
            };
        };
        let (limit, max_bytes) = (limit.unwrap_or(usize::MAX), max_bytes.unwrap_or(usize::MAX));
        let mut frames: Vec<&[u8]> = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        for stored in r
            .history
            .iter()
            .filter(|s| s.seq > since && r.is_live(s, now_ms))
        {
            bytes = bytes.saturating_add(stored.frame.len());
            if frames.len() == limit || (!frames.is_empty() && bytes > max_bytes) {
                more = true;
                break;
            }
            frames.push(stored.frame.as_slice());
        }
        HistoryRead {
            seq: r.seq,
            epoch: &r.epoch,
            frames,
            more,
        }
    }

    /// What a client at `{since, epoch}` missed in `room`. `recovered` is
    /// true only when the epoch matches and every message after `since` is
    /// still retained.
    pub fn recover(&self, room: &str, since: u64, epoch: &str, now_ms: u64) -> Recovery<'_> {
        let Some(r) = self.rooms.get(room) else {
            return Recovery {
                recovered: false,
                frames: Vec::new(),
            };
        };
        if r.epoch != epoch || since > r.seq {
            return Recovery {
                recovered: false,
                frames: Vec::new(),
            };
        }
        let frames: Vec<&[u8]> = r
            .history
            .iter()
            .filter(|s| s.seq > since && r.is_live(s, now_ms))
            .map(|s| s.frame.as_slice())
            .collect();
        let missed = r.seq - since;
        Recovery {
            recovered: frames.len() as u64 == missed,
            frames,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Join;
    use crate::registry::test_support::{applied, leased};

    #[test]
    fn publish_keeps_history_and_recovers() {
        let mut r = leased();
        r.join(&Join::new("chat:x", "u", "c", "n1"), "e1").unwrap();
        let cfg = HistoryConfig {
            size: 3,
            ttl_ms: 1000,
        };
        for i in 1..=5u64 {
            let plan = r.plan_publish("chat:x", Some("c"), Some(cfg)).unwrap();
            assert_eq!(plan.seq, i);
            assert_eq!(plan.sender_user.as_deref(), Some("u"));
            let nodes =
                r.apply_publish(&applied("chat:x", plan.seq, "e1", 100 * i, cfg, &[i as u8]));
            assert_eq!(nodes, vec!["n1"]);
        }
        let h = r.history("chat:x", 0, None, 500);
        assert_eq!((h.seq, h.epoch), (5, "e1"));
        assert_eq!(h.frames, vec![&[3u8][..], &[4], &[5]]);
        assert_eq!(
            r.history("chat:x", 3, Some(1), 500).frames,
            vec![&[4u8][..]]
        );
        // expired by TTL at read time
        assert_eq!(
            r.history("chat:x", 0, None, 1350).frames,
            vec![&[4u8][..], &[5]]
        );
        // Paged by bytes: the first frame always, then as many as fit.
        let page = r.history_page("chat:x", 0, None, Some(2), 500);
        assert_eq!(
            (page.frames.clone(), page.more),
            (vec![&[3u8][..], &[4]], true)
        );
        let page = r.history_page("chat:x", 0, None, Some(0), 500);
        assert_eq!((page.frames.clone(), page.more), (vec![&[3u8][..]], true));
        let last = r.history_page("chat:x", 4, None, Some(1), 500);
        assert_eq!((last.frames.clone(), last.more), (vec![&[5u8][..]], false));
        assert!(r.history_page("chat:x", 0, Some(2), None, 500).more);
        assert!(!r.history_page("chat:x", 0, Some(3), None, 500).more);
        // A replicated publish must move the room forward.
        let at = |seq: u64, epoch: &str| applied("chat:x", seq, epoch, 600, cfg, &[9]);
        assert!(r.check_apply(&at(6, "e1")).is_ok());
        assert!(
            r.check_apply(&at(1, "e2")).is_ok(),
            "a new epoch starts over"
        );
        for bad in [
            at(5, "e1"),
            at(2, "e1"),
            at(0, "e1"),
            at(u64::MAX, "e2"),
            at(7, ""),
        ] {
            assert!(r.check_apply(&bad).is_err(), "{bad:?}");
        }
        let ok = r.recover("chat:x", 3, "e1", 500);
        assert!(ok.recovered);
        assert_eq!(ok.frames.len(), 2);
        assert!(!r.recover("chat:x", 1, "e1", 500).recovered); // gap
        assert!(!r.recover("chat:x", 3, "other", 500).recovered); // epoch changed
        assert!(r.recover("chat:x", 5, "e1", 500).recovered); // nothing missed
        assert_eq!(
            r.plan_publish("chat:x", Some("nope"), None).unwrap_err(),
            Refusal::NotMember
        );
    }

    #[test]
    fn room_without_members_or_history_is_dropped_and_gets_a_new_epoch() {
        let mut r = leased();
        let plan = r.plan_publish("chat:y", None, None).unwrap();
        assert_eq!((plan.seq, plan.epoch.clone()), (1, None));
        r.apply_publish(&applied("chat:y", 1, "e1", 1, plan.config, b"x"));
        assert_eq!(r.rooms_held(), 0);
        assert_eq!(r.plan_publish("chat:y", None, None).unwrap().seq, 1);
    }

    #[test]
    fn namespace_default_history_applies() {
        let mut r = leased();
        r.set_namespace_history("news", HistoryConfig { size: 2, ttl_ms: 0 });
        let plan = r.plan_publish("news:a", None, None).unwrap();
        r.apply_publish(&applied("news:a", plan.seq, "e", 1, plan.config, b"m"));
        assert_eq!(r.history("news:a", 0, None, 10).frames.len(), 1);
    }
}
