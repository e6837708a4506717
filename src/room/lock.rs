//! The per-room write lock.
//!
//! Every append to a room's graph happens while holding that room's [`RoomLock`]; the append
//! functions take `&RoomLock` so the type system enforces it. Sends to different rooms never
//! wait for each other.
//!
//! Lock order: at most one room lock is held at a time, and no room lock is taken while a
//! database transaction is open (the transaction is opened inside the lock).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use ruma::{OwnedRoomId, RoomId};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct RoomLocks {
    // Weak so rooms nobody writes to do not keep a mutex alive forever.
    locks: Mutex<HashMap<OwnedRoomId, Weak<AsyncMutex<()>>>>,
}

/// Proof that the caller holds the room's write lock.
pub struct RoomLock {
    room_id: OwnedRoomId,
    _guard: OwnedMutexGuard<()>,
}

impl RoomLock {
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }
}

impl RoomLocks {
    pub async fn lock(&self, room_id: &RoomId) -> RoomLock {
        let mutex = {
            let mut locks = self.locks.lock();
            if locks.len() > 1024 {
                locks.retain(|_, w| w.strong_count() > 0);
            }
            match locks.get(room_id).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(AsyncMutex::new(()));
                    locks.insert(room_id.to_owned(), Arc::downgrade(&m));
                    m
                }
            }
        };
        RoomLock {
            room_id: room_id.to_owned(),
            _guard: mutex.lock_owned().await,
        }
    }
}
