//! Each room's tip (its row and forward extremities) as the last send left it, so that the
//! next send builds on it without asking Postgres. Only sends write an entry, and only while
//! holding the room's lock; every other write to a room drops its entry (it may change the
//! extremities or the state). A send built on an entry still checks it in the statement that
//! stores it (`db::append::Expect`): if anything else moved the tip (another process), the
//! statement writes nothing and the send is rebuilt from what is stored.

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma::{OwnedRoomId, RoomId};

use crate::db::rooms::RoomRow;

/// Rooms remembered at most; past it, an arbitrary entry makes room (it is only a cache).
const CAPACITY: usize = 4096;

/// A room's row and forward extremities (ID, depth), deepest first.
#[derive(Clone)]
pub struct RoomTip {
    pub room: RoomRow,
    pub extremities: Vec<(String, i64)>,
}

#[derive(Default)]
pub struct Tips {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTip>>,
}

impl Tips {
    pub fn get(&self, room_id: &RoomId) -> Option<RoomTip> {
        self.rooms.lock().get(room_id).cloned()
    }

    /// Remember `tip` (the caller holds the room's lock and has just stored it).
    pub fn set(&self, room_id: &RoomId, tip: RoomTip) {
        let mut rooms = self.rooms.lock();
        if rooms.len() >= CAPACITY
            && !rooms.contains_key(room_id)
            && let Some(k) = rooms.keys().next().cloned()
        {
            rooms.remove(&k);
        }
        rooms.insert(room_id.to_owned(), tip);
    }

    /// Forget the room's tip: something other than a plain send is writing to it.
    pub fn forget(&self, room_id: &RoomId) {
        self.rooms.lock().remove(room_id);
    }
}

impl RoomTip {
    /// The tip once a batch of events without state, whose first cited `cited` and whose
    /// last is `last` (ID, depth), is stored on this one.
    pub fn after_plain(&self, cited: &[String], last: (String, i64)) -> RoomTip {
        let mut extremities = vec![last];
        extremities.extend(
            self.extremities
                .iter()
                .filter(|(id, _)| !cited.contains(id))
                .cloned(),
        );
        RoomTip {
            room: self.room.clone(),
            extremities,
        }
    }
}
