//! Who is typing in which room: kept in memory only, since it is meaningless after a few
//! seconds and never needs to survive a restart.
//!
//! Every change of a room's typing set takes the next value of one serial; a sync token
//! carries the serial it saw, and a room's `m.typing` is sent again when its set changed
//! after that.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

#[derive(Default)]
pub struct TypingRooms {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    serial: u64,
    rooms: HashMap<OwnedRoomId, RoomTyping>,
}

#[derive(Default)]
struct RoomTyping {
    /// The room's number, for waking its members' syncs.
    nid: i64,
    /// Typing users and when their typing notice runs out.
    users: HashMap<OwnedUserId, Instant>,
    /// The serial of the last change of `users`.
    changed: u64,
}

/// The typing sets that changed since a position, and the position they bring a reader to.
#[derive(Debug, Default)]
pub struct TypingChanges {
    pub position: u64,
    pub rooms: Vec<(OwnedRoomId, Vec<OwnedUserId>)>,
}

impl TypingRooms {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters (every update is a single insert or remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `user` types in `room` (numbered `nid`) until `until`, or stops (`None`). Returns
    /// whether the set of typing users changed (a renewed deadline alone is no news for
    /// clients).
    pub fn set(&self, room: &RoomId, nid: i64, user: &UserId, until: Option<Instant>) -> bool {
        let mut state = self.state();
        let next = state.serial + 1;
        let entry = state.rooms.entry(room.to_owned()).or_default();
        entry.nid = nid;
        let changed = match until {
            Some(t) => entry.users.insert(user.to_owned(), t).is_none(),
            None => entry.users.remove(user).is_some(),
        };
        if changed {
            entry.changed = next;
            state.serial = next;
        }
        changed
    }

    /// Drop every typing notice that ran out by `now`. Returns the rooms (numbers) whose
    /// set changed.
    pub fn expire(&self, now: Instant) -> Vec<i64> {
        let mut state = self.state();
        let next = state.serial + 1;
        let mut changed = Vec::new();
        for room in state.rooms.values_mut() {
            let before = room.users.len();
            room.users.retain(|_, until| *until > now);
            if room.users.len() != before {
                room.changed = next;
                changed.push(room.nid);
            }
        }
        if !changed.is_empty() {
            state.serial = next;
        }
        changed
    }

    /// The typing sets of `rooms` that changed after `since` (all non-empty ones on an
    /// initial sync). A `since` ahead of the serial comes from before a restart: the reader
    /// is sent everything again.
    pub fn changed_since(&self, since: Option<u64>, rooms: &[&RoomId]) -> TypingChanges {
        let state = self.state();
        let since = since.filter(|s| *s <= state.serial);
        let mut out = TypingChanges {
            position: state.serial,
            rooms: Vec::new(),
        };
        for room_id in rooms {
            let Some(room) = state.rooms.get(*room_id) else {
                continue;
            };
            let news = match since {
                Some(s) => room.changed > s,
                None => !room.users.is_empty(),
            };
            if news {
                let mut users: Vec<OwnedUserId> = room.users.keys().cloned().collect();
                users.sort();
                out.rooms.push(((*room_id).to_owned(), users));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::{room_id, user_id};

    use super::*;

    #[test]
    fn changes_bump_the_serial_and_expiry_removes() {
        let t = TypingRooms::default();
        let room = room_id!("!r:x");
        let other = room_id!("!o:x");
        let alice = user_id!("@alice:x");
        let now = Instant::now();
        assert!(t.set(room, 7, alice, Some(now + Duration::from_secs(5))));
        // Renewing is not a change.
        assert!(!t.set(room, 7, alice, Some(now + Duration::from_secs(9))));
        let all = t.changed_since(None, &[room, other]);
        assert_eq!(all.position, 1);
        assert_eq!(all.rooms, vec![(room.to_owned(), vec![alice.to_owned()])]);
        assert!(t.changed_since(Some(1), &[room]).rooms.is_empty());

        assert!(t.expire(now + Duration::from_secs(8)).is_empty());
        assert_eq!(t.expire(now + Duration::from_secs(9)), vec![7]);
        let after = t.changed_since(Some(1), &[room]);
        assert_eq!(after.position, 2);
        assert_eq!(after.rooms, vec![(room.to_owned(), vec![])]);
        // Nothing typing: an initial sync shows nothing.
        assert!(t.changed_since(None, &[room]).rooms.is_empty());
        // A token from before a restart gets the current sets again.
        assert!(!t.set(room, 7, alice, None));
        t.set(room, 7, alice, Some(now + Duration::from_secs(60)));
        assert_eq!(t.changed_since(Some(99), &[room]).rooms.len(), 1);
    }
}
