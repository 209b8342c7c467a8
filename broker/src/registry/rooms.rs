//! Rooms and their members: joins and leaves with per-user and per-node
//! counts, presence events, lingering users, and dropping idle rooms.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;

use super::{HistoryConfig, Name, Registry, Stored};
use crate::command::{Join, Refusal};
use crate::lifecycle::EventType;
use crate::names;

/// Whether a presence event announces a join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's first connection entered the room.
    Join,
    /// The user's last connection left the room.
    Leave,
}

/// One page of a room's users, from [`Registry::room_members_page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersPage {
    /// Users and their connection counts (0: lingering), in name order.
    pub users: Vec<(String, u32)>,
    /// True when more users sort after the last one listed.
    pub more: bool,
}

/// A presence event to deliver to the room's members on `nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// Room whose presence changed.
    pub room: String,
    /// The user who joined or left.
    pub user: String,
    /// Join or leave.
    pub change: PresenceChange,
    /// The room's epoch, for the envelope.
    pub epoch: String,
    /// Nodes hosting members of the room after the change.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Room {
    pub(super) seq: u64,
    pub(super) epoch: String,
    pub(super) history: VecDeque<Stored>,
    pub(super) config: HistoryConfig,
    pub(super) presence_events: bool,
    pub(super) members: HashSet<String>,
    /// Users → their connections in the room; ordered, so a page of
    /// members after a given user is a range read, not a scan.
    pub(super) users: BTreeMap<String, u32>,
    pub(super) nodes: HashMap<String, u32>,
    /// Users whose last connection went away within a grace: user → until (ms).
    pub(super) lingering: BTreeMap<String, u64>,
}

impl Room {
    pub(super) fn new(epoch: String, config: HistoryConfig) -> Room {
        Room {
            seq: 0,
            epoch,
            history: VecDeque::new(),
            config,
            presence_events: false,
            members: HashSet::new(),
            users: BTreeMap::new(),
            nodes: HashMap::new(),
            lingering: BTreeMap::new(),
        }
    }

    /// Nothing left: no member, no lingering user, no retained message.
    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.lingering.is_empty() && self.history.is_empty()
    }

    pub(super) fn node_list(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.nodes.keys().cloned().collect();
        nodes.sort();
        nodes
    }
}

/// What [`Registry::join`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The user's first connection in the room.
    pub first: bool,
    /// The connection was already a member.
    pub already: bool,
    /// The join changed the registry. Only a join of a member can change
    /// nothing: then it neither confirmed the connection after a load nor
    /// turned on the room's presence events, and it need not be replicated
    /// (as Redis propagates no command that changed no data).
    pub changed: bool,
    /// The room's sequence now.
    pub seq: u64,
    /// The room's epoch.
    pub epoch: String,
    /// The epoch of a room this join created (for replication), if it did.
    pub created_epoch: Option<String>,
    /// The join event, when the room sends presence events.
    pub event: Option<PresenceEvent>,
}

impl Registry {
    /// Adds the join's connection to its room. `new_epoch` is the epoch to
    /// give the room if this join creates it (the caller makes it random on
    /// a master, and passes the master's on a replica). `PRESENCE` turns on
    /// join and leave events for the room.
    ///
    /// # Errors
    /// [`Refusal::NoLease`], [`Refusal::Forbidden`],
    /// [`Refusal::Conflict`], [`Refusal::TooManyRooms`].
    pub fn join(&mut self, join: &Join, new_epoch: &str) -> Result<JoinOutcome, Refusal> {
        let (room, user, conn, node) = (&*join.room, &*join.user, &*join.conn, &*join.node);
        let (presence_events, max_rooms) = (join.presence, join.max_rooms);
        if !self.nodes.contains_key(node) {
            return Err(Refusal::NoLease);
        }
        if names::personal_room_owner(room).is_some_and(|owner| owner != user) {
            return Err(Refusal::Forbidden);
        }
        if let Some(existing) = self.conns.get(conn) {
            if existing.user != user || existing.node != node {
                return Err(Refusal::Conflict);
            }
            if existing.rooms.contains(room) {
                let confirmed = self.confirm(node, conn);
                let r = self.rooms.get_mut(room);
                let (seq, epoch, presence_on) = match r {
                    Some(r) => {
                        let presence_on = presence_events && !r.presence_events;
                        r.presence_events |= presence_events;
                        (r.seq, r.epoch.clone(), presence_on)
                    }
                    None => (0, String::new(), false),
                };
                return Ok(JoinOutcome {
                    first: false,
                    already: true,
                    changed: confirmed || presence_on,
                    seq,
                    epoch,
                    created_epoch: None,
                    event: None,
                });
            }
            if max_rooms.is_some_and(|max| existing.rooms.len() as u32 >= max) {
                return Err(Refusal::TooManyRooms);
            }
        }
        let default_config = self.default_history(room);
        let mut created_epoch = None;
        let touched = &mut self.touched;
        let r = self.rooms.entry(room.to_string()).or_insert_with(|| {
            touched.push(room.to_string());
            created_epoch = Some(new_epoch.to_string());
            Room::new(new_epoch.to_string(), default_config)
        });
        r.presence_events |= presence_events;
        r.members.insert(conn.to_string());
        let user_conns = r.users.entry(user.to_string()).or_insert(0);
        *user_conns += 1;
        let first = *user_conns == 1;
        let resumed = first && r.lingering.remove(user).is_some();
        if resumed {
            self.lingering = self.lingering.saturating_sub(1);
        }
        *r.nodes.entry(node.to_string()).or_insert(0) += 1;
        let event = (first && !resumed && r.presence_events).then(|| PresenceEvent {
            room: room.to_string(),
            user: user.to_string(),
            change: PresenceChange::Join,
            epoch: r.epoch.clone(),
            nodes: r.node_list(),
        });
        let (seq, epoch) = (r.seq, r.epoch.clone());
        self.attach_conn(user, conn, node)
            .rooms
            .insert(Name::from(room));
        self.confirm(node, conn);
        if names::personal_room_owner(room).is_none() {
            self.note(EventType::Join, (user, conn, node), Some(room), None);
        }
        Ok(JoinOutcome {
            first,
            already: false,
            changed: true,
            seq,
            epoch,
            created_epoch,
            event,
        })
    }

    /// Removes `conn` (of `user`) from `room`. Returns whether it was a
    /// member and the leave event, if any. With `linger_until` (a
    /// connection going away, not a leave request) the user lingers instead
    /// of leaving when this was its last connection in the room.
    pub fn leave(
        &mut self,
        room: &str,
        user: &str,
        conn: &str,
        linger_until: Option<u64>,
    ) -> (bool, Option<PresenceEvent>) {
        let member = self
            .conns
            .get(conn)
            .is_some_and(|c| c.user == user && c.rooms.contains(room));
        if !member {
            return (false, None);
        }
        let event = self.remove_member(room, conn, linger_until);
        self.drop_if_unused(conn);
        (true, event)
    }

    /// Removes one membership, keeping counts, and drops the room when it is
    /// empty and retains nothing.
    pub(super) fn remove_member(
        &mut self,
        room: &str,
        conn: &str,
        linger_until: Option<u64>,
    ) -> Option<PresenceEvent> {
        let (user, node) = {
            let c = self.conns.get_mut(conn)?;
            c.rooms.remove(room);
            (c.user.to_string(), c.node.to_string())
        };
        let r = self.rooms.get_mut(room)?;
        if !r.members.remove(conn) {
            return None;
        }
        let last = match r.users.get_mut(&user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                r.users.remove(&user);
                true
            }
        };
        match r.nodes.get_mut(&node) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                r.nodes.remove(&node);
            }
        }
        let leaves = last && r.presence_events;
        let event = match linger_until {
            Some(until) if leaves => {
                if r.lingering.insert(user, until).is_none() {
                    self.lingering += 1;
                }
                None
            }
            _ => leaves.then(|| PresenceEvent {
                room: room.to_string(),
                user,
                change: PresenceChange::Leave,
                epoch: r.epoch.clone(),
                nodes: r.node_list(),
            }),
        };
        if r.is_empty() {
            self.forget_room(room);
        }
        if names::personal_room_owner(room).is_none() {
            let user = self
                .conns
                .get(conn)
                .map(|c| c.user.to_string())
                .unwrap_or_default();
            self.note(EventType::Leave, (&user, conn, &node), Some(room), None);
        }
        event
    }

    /// Lingering presences whose grace ended by `now_ms`, as `(room, user)`,
    /// at most `max`.
    pub fn expired_lingering(&self, now_ms: u64, max: usize) -> Vec<(String, String)> {
        if self.lingering == 0 {
            return Vec::new();
        }
        let mut out: Vec<(String, String)> = self
            .rooms
            .iter()
            .flat_map(|(name, r)| {
                r.lingering
                    .iter()
                    .filter(move |(_, until)| **until <= now_ms)
                    .map(move |(user, _)| (name.clone(), user.clone()))
            })
            .take(max)
            .collect();
        out.sort();
        out
    }

    /// Ends `user`'s lingering presence in `room`: the leave event, or
    /// `None` when the user was not lingering there (it came back).
    pub fn end_lingering(&mut self, room: &str, user: &str) -> Option<PresenceEvent> {
        let r = self.rooms.get_mut(room)?;
        r.lingering.remove(user)?;
        self.lingering = self.lingering.saturating_sub(1);
        let event = PresenceEvent {
            room: room.to_string(),
            user: user.to_string(),
            change: PresenceChange::Leave,
            epoch: r.epoch.clone(),
            nodes: r.node_list(),
        };
        if r.is_empty() {
            self.forget_room(room);
        }
        Some(event)
    }

    /// Distinct users in `room` with their connection counts, sorted; a
    /// lingering user is listed with 0 connections.
    pub fn room_members(&self, room: &str) -> Vec<(String, u32)> {
        self.room_members_page(room, None, usize::MAX).users
    }

    /// At most `limit` users of `room` whose names sort after `after`
    /// (from the first without it), with their connection counts, in name
    /// order; lingering users are listed with 0 connections. Costs
    /// O(log n + limit), whatever the room's size, so a huge room never
    /// holds Redis for long.
    pub fn room_members_page(&self, room: &str, after: Option<&str>, limit: usize) -> MembersPage {
        let Some(r) = self.rooms.get(room) else {
            return MembersPage::default();
        };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut live = r.users.range::<str, _>((from, Bound::Unbounded)).peekable();
        let mut gone = r
            .lingering
            .range::<str, _>((from, Bound::Unbounded))
            .peekable();
        let mut users = Vec::new();
        loop {
            // Merge the two ordered ranges (a user is never in both).
            let next = match (live.peek(), gone.peek()) {
                (Some((a, _)), Some((b, _))) if b < a => gone.next().map(|(u, _)| (u, 0)),
                (Some(_), _) => live.next().map(|(u, n)| (u, *n)),
                (None, Some(_)) => gone.next().map(|(u, _)| (u, 0)),
                (None, None) => None,
            };
            let Some((user, conns)) = next else {
                return MembersPage { users, more: false };
            };
            if users.len() == limit {
                return MembersPage { users, more: true };
            }
            users.push((user.clone(), conns));
        }
    }

    /// True when `room` exists (has members, lingering users or history).
    pub fn has_room(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Users and connections in `room`, O(1).
    pub fn room_count(&self, room: &str) -> (u64, u64) {
        self.rooms.get(room).map_or((0, 0), |r| {
            let users = r.users.len() + r.lingering.len();
            (users as u64, r.members.len() as u64)
        })
    }

    /// True when `conn` is a member of `room`.
    pub fn is_member(&self, room: &str, conn: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.contains(conn))
    }

    /// Nodes hosting members of `room`, sorted.
    pub fn room_nodes(&self, room: &str) -> Vec<String> {
        self.rooms
            .get(room)
            .map(Room::node_list)
            .unwrap_or_default()
    }

    /// Rooms with no members whose retained history has all expired at
    /// `now_ms`: the sweep drops them (and replicates the drop).
    pub fn idle_rooms(&self, now_ms: u64, max: usize) -> Vec<String> {
        self.rooms
            .iter()
            .filter(|(_, r)| {
                r.members.is_empty()
                    && r.lingering.is_empty()
                    && r.history.iter().all(|s| !r.is_live(s, now_ms))
            })
            .take(max)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Drops a room's entry, recording that its key must go too.
    pub(super) fn forget_room(&mut self, room: &str) {
        self.rooms.remove(room);
        self.touched.push(room.to_string());
    }

    /// Drops an empty room (no-op when it has members).
    pub fn drop_room(&mut self, room: &str) -> bool {
        if self
            .rooms
            .get(room)
            .is_some_and(|r| r.members.is_empty() && r.lingering.is_empty())
        {
            self.forget_room(room);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ConnOpen, Join};
    use crate::registry::test_support::{join_present, leased};
    use crate::registry::Snapshot;

    #[test]
    fn presence_events_fire_for_first_and_last_connection() {
        let mut r = leased();
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip"), 1)
            .unwrap();
        r.open(&ConnOpen::new("alice", "a2", "n2", "ip"), 2)
            .unwrap();
        let j1 = r
            .join(
                &Join::new("chat:x", "alice", "a1", "n1").with_presence(),
                "e1",
            )
            .unwrap();
        assert!(j1.first);
        assert_eq!(j1.created_epoch.as_deref(), Some("e1"));
        assert_eq!(j1.event.as_ref().unwrap().nodes, vec!["n1"]);
        let j2 = r
            .join(
                &Join::new("chat:x", "alice", "a2", "n2").with_presence(),
                "e2",
            )
            .unwrap();
        assert!(!j2.first && j2.event.is_none() && j2.created_epoch.is_none());
        assert_eq!(j2.epoch, "e1");
        assert_eq!(r.room_count("chat:x"), (1, 2));
        assert_eq!(r.room_nodes("chat:x"), vec!["n1", "n2"]);
        let (was, ev) = r.leave("chat:x", "alice", "a1", None);
        assert!(was && ev.is_none());
        let (rooms, events) = r.close("alice", "a2", None);
        assert_eq!(rooms, 1);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].change, PresenceChange::Leave);
        assert_eq!(r.room_count("chat:x"), (0, 0));
        assert_eq!(r.rooms_held(), 0);
    }

    #[test]
    fn personal_room_is_owner_only() {
        let mut r = leased();
        assert_eq!(
            r.join(&Join::new("user:bob", "alice", "a1", "n1"), "e")
                .unwrap_err(),
            Refusal::Forbidden
        );
        assert!(r
            .join(&Join::new("user:alice", "alice", "a1", "n1"), "e")
            .is_ok());
    }

    #[test]
    fn a_join_of_a_member_changes_nothing_unless_it_turns_presence_on() {
        let mut r = leased();
        let first = r.join(&Join::new("chat:a", "u", "c", "n1"), "e").unwrap();
        assert!(first.changed && !first.already);
        let again = r.join(&Join::new("chat:a", "u", "c", "n1"), "e").unwrap();
        assert!(again.already && !again.changed);
        let presence = r
            .join(&Join::new("chat:a", "u", "c", "n1").with_presence(), "e")
            .unwrap();
        assert!(presence.already && presence.changed, "presence turned on");
        let once_more = r
            .join(&Join::new("chat:a", "u", "c", "n1").with_presence(), "e")
            .unwrap();
        assert!(!once_more.changed);
    }

    #[test]
    fn max_rooms_is_enforced() {
        let mut r = leased();
        r.join(&Join::new("chat:a", "u", "c", "n1").max_rooms(2), "e")
            .unwrap();
        r.join(&Join::new("chat:b", "u", "c", "n1").max_rooms(2), "e")
            .unwrap();
        assert_eq!(
            r.join(&Join::new("chat:c", "u", "c", "n1").max_rooms(2), "e")
                .unwrap_err(),
            Refusal::TooManyRooms
        );
        // joining a room it is already in is fine
        assert!(
            r.join(&Join::new("chat:a", "u", "c", "n1").max_rooms(2), "e")
                .unwrap()
                .already
        );
    }

    #[test]
    fn a_user_lingers_within_the_grace_and_resumes_without_events() {
        let mut r = leased();
        r.open(&ConnOpen::new("alice", "a1", "n1", "ip1"), 1)
            .unwrap();
        join_present(&mut r, "chat:x", "alice", "a1", "n1", "e1");
        join_present(&mut r, "chat:x", "bob", "b1", "n2", "e1");
        // n1 goes away with a grace: no leave, alice still listed.
        let (dropped, events) = r.release_node("n1", Some(5_000));
        assert_eq!((dropped, events.len()), (1, 0));
        assert_eq!(
            r.room_members("chat:x"),
            vec![("alice".into(), 0), ("bob".into(), 1)]
        );
        assert_eq!(r.room_count("chat:x"), (2, 1));
        assert_eq!(r.expired_lingering(4_999, 10), vec![]);
        // She is back on n2 before the deadline: no join event.
        let j = r
            .join(
                &Join::new("chat:x", "alice", "a2", "n2").with_presence(),
                "e1",
            )
            .unwrap();
        assert!(j.event.is_none());
        assert_eq!(r.expired_lingering(10_000, 10), vec![]);
        assert_eq!(r.end_lingering("chat:x", "alice"), None);

        // Closed again with a grace and not back: the timer ends it.
        let (_, events) = r.close("alice", "a2", Some(6_000));
        assert!(events.is_empty());
        let r2 = r.clone();
        let expired = r.expired_lingering(6_000, 10);
        assert_eq!(expired, vec![("chat:x".to_string(), "alice".to_string())]);
        let leave = r.end_lingering("chat:x", "alice").unwrap();
        assert_eq!(
            (leave.change, leave.user.as_str()),
            (PresenceChange::Leave, "alice")
        );
        assert_eq!(leave.nodes, vec!["n2"]);
        assert_eq!(r.room_members("chat:x"), vec![("bob".into(), 1)]);

        // A leave request never lingers; lingering survives a snapshot.
        let mut back = Registry::new();
        back.restore(Snapshot::from_bytes(&r2.snapshot().to_bytes().unwrap()).unwrap());
        assert_eq!(back.expired_lingering(6_000, 10).len(), 1);
        let (_, ev) = back.leave("chat:x", "bob", "b1", Some(9_000));
        assert!(ev.is_none(), "bob lingers too");
        let mut plain = leased();
        plain
            .join(
                &Join::new("chat:y", "carol", "c1", "n1").with_presence(),
                "e",
            )
            .unwrap();
        assert!(plain.leave("chat:y", "carol", "c1", None).1.is_some());
    }

    #[test]
    fn members_come_in_pages_in_name_order_with_lingering_users() {
        let mut r = leased();
        for (i, user) in ["dave", "bob", "erin", "alice"].iter().enumerate() {
            let conn = format!("c{i}");
            r.join(
                &Join::new("chat:p", user, &conn, "n1").with_presence(),
                "e1",
            )
            .unwrap();
        }
        r.join(
            &Join::new("chat:p", "bob", "c9", "n1").with_presence(),
            "e1",
        )
        .unwrap();
        // carol lingers (0 connections) between bob and dave.
        r.open(&ConnOpen::new("carol", "c5", "n1", "ip"), 1)
            .unwrap();
        r.join(
            &Join::new("chat:p", "carol", "c5", "n1").with_presence(),
            "e1",
        )
        .unwrap();
        r.leave("chat:p", "carol", "c5", Some(10_000));
        let names = |p: &MembersPage| {
            p.users
                .iter()
                .map(|(u, n)| format!("{u}:{n}"))
                .collect::<Vec<_>>()
        };
        let first = r.room_members_page("chat:p", None, 2);
        assert_eq!(
            (names(&first), first.more),
            (vec!["alice:1".to_string(), "bob:2".into()], true)
        );
        let second = r.room_members_page("chat:p", Some("bob"), 2);
        assert_eq!(
            (names(&second), second.more),
            (vec!["carol:0".to_string(), "dave:1".into()], true)
        );
        let last = r.room_members_page("chat:p", Some("dave"), 2);
        assert_eq!(
            (names(&last), last.more),
            (vec!["erin:1".to_string()], false)
        );
        assert_eq!(r.room_members("chat:p").len(), 5);
        assert_eq!(
            r.room_members_page("chat:none", None, 2),
            MembersPage::default()
        );
    }

    #[test]
    fn a_lingering_user_keeps_an_empty_room() {
        let mut r = leased();
        join_present(&mut r, "chat:z", "alice", "a1", "n1", "e1");
        r.leave("chat:z", "alice", "a1", Some(100));
        assert_eq!(r.rooms_held(), 1);
        assert!(r.idle_rooms(1_000, 10).is_empty());
        assert!(!r.drop_room("chat:z"));
        let leave = r.end_lingering("chat:z", "alice").unwrap();
        assert!(leave.nodes.is_empty());
        assert_eq!(r.rooms_held(), 0);
    }
}
