//! The local members of one room, as the hub keeps them: a vector that the
//! fan-out walks, plus an index by connection id once the room is big.
//!
//! Most rooms have one local member (every connection's personal room) or
//! a few; a hash map costs those about 200 bytes each, this vector one
//! small allocation of exactly the members it holds. Walking a vector is
//! also what a delivery to every member does fastest.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::connection::ConnShared;

/// Members from which on lookups go through an index instead of a scan.
const INDEXED: usize = 16;

/// One local member of a room.
pub(super) enum Member {
    /// Receiving live. `floor` is the `seq` its join reported: the join's
    /// ack (and replay) covered every message up to it, so a live copy of
    /// one of those — the node's Pub/Sub link can lag behind the command
    /// link that carried the join's reply — is not sent again. It holds for
    /// the room's epoch at the join; a new epoch clears it.
    Active { conn: Arc<ConnShared>, floor: u64 },
    /// Joining: live frames wait here as `(seq, frame)`; seq 0 for events.
    Pending(Arc<ConnShared>, Vec<(u64, Bytes)>),
}

impl Member {
    /// The member's connection.
    pub(super) fn conn(&self) -> &Arc<ConnShared> {
        match self {
            Member::Active { conn, .. } | Member::Pending(conn, _) => conn,
        }
    }
}

/// The local members of a room, at most one per connection id.
#[derive(Default)]
pub(super) struct Members {
    list: Vec<Member>,
    /// Position in `list` by connection id, while the room has more than
    /// [`INDEXED`] / 2 members (built at [`INDEXED`]). Boxed: a room
    /// without an index then pays 8 bytes for it, not a map's 48.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Arc<str>, usize>>>,
}

impl Members {
    fn position(&self, id: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(id).copied(),
            None => self.list.iter().position(|m| &*m.conn().id == id),
        }
    }

    /// Whether the connection `id` is a member.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    /// The member with connection `id`.
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Member> {
        let i = self.position(id)?;
        self.list.get_mut(i)
    }

    /// Adds `member`, or replaces the one with the same connection.
    pub(super) fn insert(&mut self, member: Member) {
        if let Some(i) = self.position(&member.conn().id) {
            self.list[i] = member;
            return;
        }
        if self.list.len() < INDEXED {
            // Small rooms hold exactly their members.
            self.list.reserve_exact(1);
        }
        let id = member.conn().id.clone();
        self.list.push(member);
        match &mut self.index {
            Some(index) => {
                index.insert(id, self.list.len() - 1);
            }
            None if self.list.len() >= INDEXED => {
                let index = self
                    .list
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.conn().id.clone(), i))
                    .collect();
                self.index = Some(Box::new(index));
            }
            None => {}
        }
    }

    /// Removes the member with connection `id`.
    pub(super) fn remove(&mut self, id: &str) -> Option<Member> {
        let i = self.position(id)?;
        let member = self.list.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(id);
            if let Some(moved) = self.list.get(i) {
                index.insert(moved.conn().id.clone(), i);
            }
            if self.list.len() <= INDEXED / 2 {
                self.index = None;
            }
        }
        if self.list.len() <= INDEXED / 2 {
            self.list.shrink_to_fit();
        }
        Some(member)
    }

    /// True when no one is left.
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every member.
    pub(super) fn iter(&self) -> std::slice::Iter<'_, Member> {
        self.list.iter()
    }

    /// Every member, to change.
    pub(super) fn iter_mut(&mut self) -> std::slice::IterMut<'_, Member> {
        self.list.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::outbox::QueueLimits;
    use crate::ws::Outlet;

    fn conn(id: &str) -> Arc<ConnShared> {
        let (outlet, _queue) = Outlet::new(QueueLimits {
            frames: 4,
            bytes: 1024,
        });
        ConnShared::new(Arc::from(id), Arc::from("u"), "127.0.0.1".into(), outlet, 0)
    }

    fn ids(members: &Members) -> Vec<String> {
        let mut ids: Vec<String> = members.iter().map(|m| m.conn().id.to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn members_are_found_and_removed_below_and_above_the_index_size() {
        for n in [1, 3, INDEXED - 1, INDEXED, 3 * INDEXED] {
            let mut members = Members::default();
            let conns: Vec<_> = (0..n).map(|i| conn(&format!("c{i:03}"))).collect();
            for c in &conns {
                members.insert(Member::Pending(c.clone(), Vec::new()));
            }
            // A second insert replaces, never duplicates.
            members.insert(Member::Active {
                conn: conns[0].clone(),
                floor: 7,
            });
            assert_eq!(members.iter().count(), n, "{n}");
            assert!(matches!(
                members.get_mut("c000"),
                Some(Member::Active { floor: 7, .. })
            ));
            assert!(!members.contains("nope"));
            // Remove every other one, then check what is left is findable.
            for c in conns.iter().step_by(2) {
                assert!(members.remove(&c.id).is_some(), "{n} {}", c.id);
                assert!(members.remove(&c.id).is_none());
            }
            let left: Vec<String> = conns
                .iter()
                .skip(1)
                .step_by(2)
                .map(|c| c.id.to_string())
                .collect();
            assert_eq!(ids(&members), left, "{n}");
            for id in &left {
                assert!(members.contains(id), "{n} {id}");
                assert!(members.get_mut(id).is_some());
            }
            for id in &left {
                members.remove(id);
            }
            assert!(members.is_empty());
            assert!(members.index.is_none());
        }
    }

    #[test]
    fn a_room_of_one_holds_exactly_one_slot() {
        let mut members = Members::default();
        members.insert(Member::Pending(conn("c1"), Vec::new()));
        assert_eq!(members.list.capacity(), 1);
        assert!(members.index.is_none());
    }
}
