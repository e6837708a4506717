//! Targeted wake-ups for waiting /sync requests: the notifier, below everything that has news
//! (rooms, ephemeral events, account data, keys) and depending on nothing above `db`.
//!
//! A waiting sync is a [`Waiter`]: registered for its user and device before the sync reads
//! anything (so news that lands between the read and the wait is kept, never lost), then,
//! once the read has listed the user's joined rooms, for those rooms too. A change wakes only
//! the waiters it concerns, found through two maps (user → waiters, room → waiters), so it
//! costs O(affected waiters), not O(waiting syncs); and it tells them what kind of news it is
//! (and in which rooms), so the woken sync re-reads only that.
//!
//! Room events reach the hub through `sync::feed`, which reads the committed part of
//! the event stream once per advance, for all waiters together. The hub also keeps, per
//! room, the last stream position at which it had an event ([`RoomLog`]): an incremental sync
//! asks it which of the user's rooms changed since the token instead of scanning them all.
//! Everything here is memory only and bounded; after a restart it starts empty, and any
//! question about a time before that is answered "unknown", sending the caller to the
//! database.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::db;

/// Kinds of news, as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    /// New events in one of the user's rooms (which ones: [`News::rooms`]).
    pub const EVENTS: Kinds = Kinds(1);
    /// A membership event about the user (invite, join, leave, kick, ban, knock), or
    /// anything else that needs every part of the sync read again.
    pub const MEMBERSHIP: Kinds = Kinds(1 << 1);
    pub const TYPING: Kinds = Kinds(1 << 2);
    pub const RECEIPTS: Kinds = Kinds(1 << 3);
    pub const PRESENCE: Kinds = Kinds(1 << 4);
    /// Device or cross-signing keys of the user or of someone sharing a room, or members
    /// coming or going in one of the user's rooms.
    pub const DEVICE_LISTS: Kinds = Kinds(1 << 5);
    pub const TO_DEVICE: Kinds = Kinds(1 << 6);
    pub const ACCOUNT_DATA: Kinds = Kinds(1 << 7);

    /// The kinds a room keeps a sequence number for (news published to a room's waiters).
    const PER_ROOM: [Kinds; 5] = [
        Kinds::EVENTS,
        Kinds::TYPING,
        Kinds::RECEIPTS,
        Kinds::PRESENCE,
        Kinds::DEVICE_LISTS,
    ];

    pub fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// These kinds less `other`'s.
    pub fn without(self, other: Kinds) -> Kinds {
        Kinds(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Kinds {
    type Output = Kinds;
    fn bitor(self, rhs: Kinds) -> Kinds {
        Kinds(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Kinds {
    fn bitor_assign(&mut self, rhs: Kinds) {
        self.0 |= rhs.0;
    }
}

/// What woke a waiter.
#[derive(Debug, Clone, Default)]
pub struct News {
    pub kinds: Kinds,
    /// Rooms with new events.
    pub rooms: BTreeSet<i64>,
    /// The event stream position the hub had published when this news was taken: every room
    /// event at or below it that concerns the waiter is in `rooms`.
    pub published: i64,
}

impl News {
    /// Take in news taken later: this then says what both said.
    pub fn merge(&mut self, later: News) {
        self.kinds |= later.kinds;
        self.rooms.extend(later.rooms);
        self.published = self.published.max(later.published);
    }

    fn add(&mut self, kinds: Kinds, room: Option<i64>) {
        self.kinds |= kinds;
        if let Some(room) = room
            && kinds.contains(Kinds::EVENTS)
        {
            self.rooms.insert(room);
        }
    }
}

/// One event of the stream, as the feed hands it over: (position, room, the user a
/// membership event is about).
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub position: i64,
    pub room_nid: i64,
    pub member: Option<String>,
}

/// Rooms whose news the hub remembers at most; past this, the oldest half is forgotten (and
/// questions about that time answered "unknown").
const MAX_LOGGED_ROOMS: usize = 100_000;

#[derive(Clone, Default)]
pub struct SyncNotifier {
    hub: Arc<Mutex<Hub>>,
}

#[derive(Default)]
struct Hub {
    next_id: u64,
    waiters: HashMap<u64, WaiterState>,
    by_user: HashMap<OwnedUserId, Vec<u64>>,
    by_room: HashMap<i64, HashSet<u64>>,
    /// Counts every publication to a room, so a waiter can tell what it may have missed
    /// between registering and listing its rooms.
    seq: u64,
    log: RoomLog,
    /// The event stream position up to which room events were published; `None` until the
    /// feed starts.
    published: Option<i64>,
}

struct WaiterState {
    user: OwnedUserId,
    device: OwnedDeviceId,
    news: News,
    /// `seq` when the waiter last took its news (or registered).
    seen: u64,
    rooms: Vec<i64>,
    /// Whether its sync has read and said which rooms it waits on.
    watching: bool,
    wake: Arc<Notify>,
}

/// Per room: the last event position and the last publication of each kind.
#[derive(Default)]
struct RoomLog {
    rooms: HashMap<i64, RoomEntry>,
    /// Events at or below this position may have been forgotten (or came before the start).
    event_floor: i64,
    /// Publications at or below this sequence number may have been forgotten.
    seq_floor: u64,
}

#[derive(Default, Clone, Copy)]
struct RoomEntry {
    last_event: i64,
    /// The last membership event (anyone's).
    last_member: i64,
    seqs: [u64; Kinds::PER_ROOM.len()],
}

impl RoomEntry {
    fn last_seq(&self) -> u64 {
        self.seqs.iter().copied().max().unwrap_or(0)
    }
}

impl RoomLog {
    /// Forget the oldest half when the log grows past its bound.
    fn trim(&mut self) {
        if self.rooms.len() <= MAX_LOGGED_ROOMS {
            return;
        }
        let mut seqs: Vec<u64> = self.rooms.values().map(RoomEntry::last_seq).collect();
        let mid = seqs.len() / 2;
        let (_, cut, _) = seqs.select_nth_unstable(mid);
        let cut = *cut;
        let (mut event_floor, mut seq_floor) = (self.event_floor, self.seq_floor);
        self.rooms.retain(|_, e| {
            let keep = e.last_seq() > cut;
            if !keep {
                event_floor = event_floor.max(e.last_event);
                seq_floor = seq_floor.max(e.last_seq());
            }
            keep
        });
        self.event_floor = event_floor;
        self.seq_floor = seq_floor;
    }
}

impl Hub {
    /// `position`: the event's, for events; `member`: whether it is a membership event.
    fn publish_room(&mut self, room: i64, kinds: Kinds, position: Option<i64>, member: bool) {
        self.seq += 1;
        let seq = self.seq;
        let entry = self.log.rooms.entry(room).or_default();
        for (i, k) in Kinds::PER_ROOM.iter().enumerate() {
            if kinds.contains(*k) {
                entry.seqs[i] = seq;
            }
        }
        if let Some(p) = position {
            entry.last_event = entry.last_event.max(p);
            if member {
                entry.last_member = entry.last_member.max(p);
            }
        }
        if let Some(ids) = self.by_room.get(&room) {
            for id in ids {
                if let Some(w) = self.waiters.get_mut(id) {
                    w.news.add(kinds, Some(room));
                    w.wake.notify_one();
                }
            }
        }
    }

    fn publish_user(&mut self, user: &str, device: Option<&DeviceId>, kinds: Kinds) {
        let Some(ids) = self.by_user.get(user) else {
            return;
        };
        for id in ids {
            if let Some(w) = self.waiters.get_mut(id)
                && device.is_none_or(|d| w.device == d)
            {
                w.news.add(kinds, None);
                w.wake.notify_one();
            }
        }
    }

    fn publish_everyone(&mut self, kinds: Kinds) {
        for w in self.waiters.values_mut() {
            w.news.add(kinds, None);
            w.wake.notify_one();
        }
    }

    fn forget(&mut self, id: u64) {
        let Some(w) = self.waiters.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_user.get_mut(&w.user) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_user.remove(&w.user);
            }
        }
        self.unwatch(id, &w.rooms);
    }

    fn unwatch(&mut self, id: u64, rooms: &[i64]) {
        for room in rooms {
            if let Some(ids) = self.by_room.get_mut(room) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_room.remove(room);
                }
            }
        }
    }
}

impl SyncNotifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Start taking room events from the stream at `position` (the feed calls this once,
    /// before reading anything). Returns false if it was started already.
    pub fn start_at(&self, position: i64) -> bool {
        let mut hub = self.hub.lock();
        if hub.published.is_some() {
            return false;
        }
        hub.published = Some(position);
        hub.log.event_floor = position;
        true
    }

    /// The event stream position up to which room events were published, if the feed runs.
    pub fn published(&self) -> Option<i64> {
        self.hub.lock().published
    }

    /// Register a waiting sync of `user`'s `device`: from now on, news for the user or device
    /// is kept for it.
    pub fn waiter(&self, user: &UserId, device: &DeviceId) -> Waiter {
        let mut hub = self.hub.lock();
        hub.next_id += 1;
        let id = hub.next_id;
        let wake = Arc::new(Notify::new());
        let seen = hub.seq;
        hub.waiters.insert(
            id,
            WaiterState {
                user: user.to_owned(),
                device: device.to_owned(),
                news: News::default(),
                seen,
                rooms: Vec::new(),
                watching: false,
                wake: wake.clone(),
            },
        );
        hub.by_user.entry(user.to_owned()).or_default().push(id);
        Waiter {
            hub: self.hub.clone(),
            id,
            wake,
        }
    }

    /// The committed events of the stream up to `upto`, in position order. `overflow`: more
    /// happened than the feed read; every waiter is told to read everything again.
    pub fn publish_events(&self, events: &[StreamEvent], upto: i64, overflow: bool) {
        let mut hub = self.hub.lock();
        for e in events {
            // Members coming or going change whose device lists the room's members follow.
            let kinds = match e.member {
                Some(_) => Kinds::EVENTS | Kinds::DEVICE_LISTS,
                None => Kinds::EVENTS,
            };
            hub.publish_room(e.room_nid, kinds, Some(e.position), e.member.is_some());
            if let Some(user) = &e.member {
                hub.publish_user(user, None, Kinds::MEMBERSHIP);
            }
        }
        if overflow {
            hub.log = RoomLog {
                event_floor: upto,
                seq_floor: hub.seq,
                ..RoomLog::default()
            };
            hub.publish_everyone(Kinds::MEMBERSHIP);
        }
        hub.published = Some(hub.published.map_or(upto, |p| p.max(upto)));
        hub.log.trim();
    }

    /// News of `kinds` (not events) for everyone in `rooms`: typing, receipts, and the
    /// presence or keys of a member.
    pub fn publish_rooms(&self, rooms: &[i64], kinds: Kinds) {
        let mut hub = self.hub.lock();
        for room in rooms {
            hub.publish_room(*room, kinds, None, false);
        }
        hub.log.trim();
    }

    /// News for `user` alone (every device): account data, their own keys or presence.
    pub fn publish_user(&self, user: &UserId, kinds: Kinds) {
        self.hub.lock().publish_user(user.as_str(), None, kinds);
    }

    /// News of `kinds` about `user` (their presence, their keys) for them and everyone
    /// sharing a room with them. Their rooms are looked up in the background: the change is
    /// stored already, so a sync that reads before the wake-up lands sees it anyway.
    pub fn publish_to_co_members(&self, db: &PgPool, user: &UserId, kinds: Kinds) {
        self.publish_user(user, kinds);
        let (db, user, notifier) = (db.clone(), user.to_owned(), self.clone());
        tokio::spawn(async move {
            match db::sync::joined_room_nids(&db, user.as_str()).await {
                Ok(rooms) => notifier.publish_rooms(&rooms, kinds),
                Err(e) => {
                    tracing::warn!(error = %e, %user, "looking up rooms to wake syncs in failed");
                    // Better everyone reads again than a co-member misses the change.
                    notifier.hub.lock().publish_everyone(Kinds::MEMBERSHIP);
                }
            }
        });
    }

    /// To-device messages for `device` of `user` (`None`: every device).
    pub fn publish_to_device(&self, user: &UserId, device: Option<&DeviceId>) {
        self.hub
            .lock()
            .publish_user(user.as_str(), device, Kinds::TO_DEVICE);
    }

    /// Which of `rooms` had events after `after`, if the hub knows all events from `after`
    /// up to `upto` (`None`: it does not; read them all).
    pub fn rooms_changed_since(&self, rooms: &[i64], after: i64, upto: i64) -> Option<Vec<i64>> {
        self.known_since(after, upto, |log| {
            rooms
                .iter()
                .copied()
                .filter(|r| log.rooms.get(r).is_some_and(|e| e.last_event > after))
                .collect()
        })
    }

    /// Whether any of `rooms` had a membership event after `after`, if the hub knows all
    /// events from `after` up to `upto`.
    pub fn members_changed_since(&self, rooms: &[i64], after: i64, upto: i64) -> Option<bool> {
        self.known_since(after, upto, |log| {
            rooms
                .iter()
                .any(|r| log.rooms.get(r).is_some_and(|e| e.last_member > after))
        })
    }

    /// `answer` from the room log, if it holds every event from `after` up to `upto`.
    fn known_since<T>(
        &self,
        after: i64,
        upto: i64,
        answer: impl FnOnce(&RoomLog) -> T,
    ) -> Option<T> {
        let hub = self.hub.lock();
        let published = hub.published?;
        (after >= hub.log.event_floor && published >= upto).then(|| answer(&hub.log))
    }

    /// Syncs that have read and now wait for news (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.hub
            .lock()
            .waiters
            .values()
            .filter(|w| w.watching)
            .count()
    }
}

/// A registered waiting sync. Dropping it unregisters.
pub struct Waiter {
    hub: Arc<Mutex<Hub>>,
    id: u64,
    wake: Arc<Notify>,
}

impl Waiter {
    /// Listen to news of these rooms too (replacing the rooms given before). News published
    /// to them since the waiter last took its news counts, so nothing between the read that
    /// listed them and this call is lost.
    pub fn watch_rooms(&self, rooms: &[i64]) {
        let mut guard = self.hub.lock();
        let hub = &mut *guard;
        let Some(w) = hub.waiters.get_mut(&self.id) else {
            return;
        };
        let old = std::mem::replace(&mut w.rooms, rooms.to_vec());
        w.watching = true;
        let seen = w.seen;
        hub.unwatch(self.id, &old);
        let mut missed = News::default();
        if seen < hub.log.seq_floor {
            missed.add(Kinds::MEMBERSHIP, None);
        }
        for room in rooms {
            hub.by_room.entry(*room).or_default().insert(self.id);
            if let Some(e) = hub.log.rooms.get(room) {
                for (i, k) in Kinds::PER_ROOM.iter().enumerate() {
                    if e.seqs[i] > seen {
                        missed.add(*k, Some(*room));
                    }
                }
            }
        }
        if let Some(w) = hub.waiters.get_mut(&self.id)
            && !missed.kinds.is_empty()
        {
            w.news.kinds |= missed.kinds;
            w.news.rooms.extend(missed.rooms);
            self.wake.notify_one();
        }
    }

    /// Wait for news and take it.
    pub async fn next(&self) -> News {
        loop {
            {
                let mut hub = self.hub.lock();
                let seq = hub.seq;
                let published = hub.published.unwrap_or(0);
                if let Some(w) = hub.waiters.get_mut(&self.id)
                    && !w.news.kinds.is_empty()
                {
                    w.seen = seq;
                    let mut news = std::mem::take(&mut w.news);
                    news.published = published;
                    return news;
                }
            }
            self.wake.notified().await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.hub.lock().forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ruma::{device_id, user_id};

    use super::*;

    fn event(position: i64, room_nid: i64, member: Option<&str>) -> StreamEvent {
        StreamEvent {
            position,
            room_nid,
            member: member.map(str::to_owned),
        }
    }

    /// The news, if the waiter has some within a moment.
    async fn news(w: &Waiter) -> Option<News> {
        tokio::time::timeout(Duration::from_millis(50), w.next())
            .await
            .ok()
    }

    #[tokio::test]
    async fn wakes_only_the_waiters_news_is_for() {
        let n = SyncNotifier::new();
        assert!(n.start_at(10));
        let bob = n.waiter(user_id!("@bob:x"), device_id!("B"));
        bob.watch_rooms(&[1, 2]);
        let carol = n.waiter(user_id!("@carol:x"), device_id!("C"));
        carol.watch_rooms(&[3]);

        n.publish_events(&[event(11, 3, None)], 11, false);
        assert!(news(&bob).await.is_none(), "an event in another room");
        let got = news(&carol).await.expect("carol's room");
        assert_eq!(got.kinds, Kinds::EVENTS);
        assert_eq!(got.rooms, BTreeSet::from([3]));
        assert_eq!(got.published, 11);

        // A membership event about Bob in a room he does not watch is for him.
        n.publish_events(&[event(12, 3, Some("@bob:x"))], 12, false);
        assert!(
            news(&bob)
                .await
                .expect("an invite")
                .kinds
                .contains(Kinds::MEMBERSHIP)
        );
        n.publish_rooms(&[2], Kinds::TYPING);
        assert_eq!(news(&bob).await.expect("typing").kinds, Kinds::TYPING);
        n.publish_to_device(user_id!("@bob:x"), Some(device_id!("OTHER")));
        assert!(news(&bob).await.is_none(), "another device's message");
        n.publish_to_device(user_id!("@bob:x"), None);
        assert_eq!(news(&bob).await.expect("to-device").kinds, Kinds::TO_DEVICE);
        drop(carol);
        assert_eq!(n.waiting(), 1);
    }

    #[tokio::test]
    async fn news_between_registering_and_watching_is_kept() {
        let n = SyncNotifier::new();
        n.start_at(0);
        let w = n.waiter(user_id!("@bob:x"), device_id!("B"));
        // The sync reads its rooms while these land.
        n.publish_events(&[event(1, 7, None)], 1, false);
        n.publish_rooms(&[8], Kinds::RECEIPTS);
        n.publish_rooms(&[9], Kinds::TYPING);
        w.watch_rooms(&[7, 8]);
        let got = news(&w).await.expect("missed news");
        assert_eq!(got.kinds, Kinds::EVENTS | Kinds::RECEIPTS);
        assert_eq!(got.rooms, BTreeSet::from([7]));
        // Taken: watching again finds nothing older.
        w.watch_rooms(&[7, 8, 9]);
        assert!(news(&w).await.is_none());
    }

    #[tokio::test]
    async fn the_room_log_answers_only_what_it_knows() {
        let n = SyncNotifier::new();
        assert_eq!(n.rooms_changed_since(&[1], 0, 0), None, "not started");
        n.start_at(100);
        n.publish_events(
            &[event(101, 1, None), event(102, 2, Some("@a:x"))],
            102,
            false,
        );
        assert_eq!(
            n.rooms_changed_since(&[1, 2, 3], 100, 102),
            Some(vec![1, 2])
        );
        assert_eq!(n.rooms_changed_since(&[1, 2, 3], 101, 102), Some(vec![2]));
        assert_eq!(
            n.rooms_changed_since(&[1], 99, 102),
            None,
            "before the start"
        );
        assert_eq!(
            n.rooms_changed_since(&[1], 101, 103),
            None,
            "not published yet"
        );
        assert_eq!(n.members_changed_since(&[1], 100, 102), Some(false));
        assert_eq!(n.members_changed_since(&[1, 2], 101, 102), Some(true));
        // Too many events at once: everyone reads everything, and the past is unknown.
        let w = n.waiter(user_id!("@bob:x"), device_id!("B"));
        n.publish_events(&[], 500, true);
        assert!(
            news(&w)
                .await
                .expect("overflow")
                .kinds
                .contains(Kinds::MEMBERSHIP)
        );
        assert_eq!(n.rooms_changed_since(&[1], 102, 500), None);
        assert_eq!(n.rooms_changed_since(&[1], 500, 500), Some(vec![]));
    }

    #[test]
    fn the_room_log_stays_bounded() {
        let n = SyncNotifier::new();
        n.start_at(0);
        let events: Vec<StreamEvent> = (1..=MAX_LOGGED_ROOMS as i64 + 10)
            .map(|i| event(i, i, None))
            .collect();
        let last = events.len() as i64;
        n.publish_events(&events, last, false);
        let hub = n.hub.lock();
        assert!(hub.log.rooms.len() <= MAX_LOGGED_ROOMS);
        let floor = hub.log.event_floor;
        drop(hub);
        assert!(floor > 0);
        // What is forgotten is unknown, what is kept is still known.
        assert_eq!(n.rooms_changed_since(&[1], floor - 1, last), None);
        assert_eq!(
            n.rooms_changed_since(&[last], floor, last),
            Some(vec![last])
        );
    }
}
