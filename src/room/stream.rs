//! The live event stream position, and wake-ups for readers waiting on it.
//!
//! Stream positions come from a Postgres sequence inside each append transaction, so two rooms
//! can commit out of order (11 before 10). A reader that took 11 as its position would never
//! see 10. So each append registers its position before writing and completes it after the
//! commit, and readers only see the *safe* position: everything at or below it is committed.
//!
//! Positions are handed out from blocks taken from the sequence, under the same lock that
//! registers them as in flight: a position is never known to a writer before it is
//! registered, so no other commit can carry the safe position past it. Blocks also spare a
//! round trip per send.
//!
//! One process owns its appends; several processes over one database will need the same
//! bookkeeping through Postgres (LISTEN/NOTIFY), as DESIGN.md plans.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

pub struct StreamPositions {
    inner: Mutex<Inner>,
    safe: watch::Sender<i64>,
}

struct Inner {
    in_flight: BTreeSet<i64>,
    max_completed: i64,
    /// Positions taken from the sequence and not handed out yet, ascending.
    block: VecDeque<i64>,
    /// The highest position handed out: later ones must be above it.
    last_handed: i64,
    /// What each committed position holds (room, and whom a membership event is about),
    /// until the sync feed takes it: the feed learns of new events without reading them back.
    told: BTreeMap<i64, Told>,
    /// Positions at or below this may be missing from `told` (dropped when it was full).
    told_complete_after: i64,
}

/// A committed event as the sync feed needs it: (position, room number, the user a
/// membership event is about).
pub type TellEvent = (i64, i64, Option<String>);
type Told = (i64, Option<String>);

/// Most committed events kept for a feed that has not taken them (no sync has started yet,
/// or it fell behind); past that the oldest go and the feed reads those from the database.
const MAX_TOLD: usize = 20_000;

impl StreamPositions {
    /// Start from what the database already holds.
    pub fn new(current_max: i64) -> Arc<Self> {
        let (safe, _) = watch::channel(current_max);
        Arc::new(StreamPositions {
            inner: Mutex::new(Inner {
                in_flight: BTreeSet::new(),
                max_completed: current_max,
                block: VecDeque::new(),
                last_handed: current_max,
                told: BTreeMap::new(),
                told_complete_after: current_max,
            }),
            safe,
        })
    }

    /// Everything at or below this position is committed.
    pub fn safe_position(&self) -> i64 {
        *self.safe.borrow()
    }

    /// Wakes whenever the safe position moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.safe.subscribe()
    }

    /// `n` positions from the current block, each registered as in flight (finish the
    /// guards after commit); `None` when the block holds fewer (add one and ask again).
    pub fn take(self: &Arc<Self>, n: usize) -> Option<Vec<InFlight>> {
        let mut inner = self.inner.lock();
        if inner.block.len() < n {
            return None;
        }
        let taken: Vec<i64> = inner.block.drain(..n).collect();
        if let Some(&last) = taken.last() {
            inner.last_handed = last;
        }
        inner.in_flight.extend(taken.iter().copied());
        Some(
            taken
                .into_iter()
                .map(|position| InFlight {
                    positions: self.clone(),
                    position,
                    done: false,
                })
                .collect(),
        )
    }

    /// Positions newly taken from the sequence. Those not above every position handed out
    /// already (a block fetched concurrently and added later) are dropped: positions only
    /// ever grow.
    pub fn add_block(&self, mut positions: Vec<i64>) {
        positions.sort_unstable();
        let mut inner = self.inner.lock();
        let floor = inner.block.back().copied().unwrap_or(inner.last_handed);
        inner
            .block
            .extend(positions.into_iter().filter(|p| *p > floor));
    }

    /// Register a position about to be written; finish the returned guard after commit.
    #[cfg(test)]
    pub fn begin(self: &Arc<Self>, position: i64) -> InFlight {
        self.inner.lock().in_flight.insert(position);
        InFlight {
            positions: self.clone(),
            position,
            done: false,
        }
    }

    /// The committed events in (`after`, `upto`], taken out of the record; `None` when the
    /// record may lack some of them (read those from the database).
    pub fn take_told(&self, after: i64, upto: i64) -> Option<Vec<TellEvent>> {
        let mut inner = self.inner.lock();
        let taken = match upto.checked_add(1) {
            Some(above) => {
                let rest = inner.told.split_off(&above);
                std::mem::replace(&mut inner.told, rest)
            }
            None => std::mem::take(&mut inner.told),
        };
        if after < inner.told_complete_after {
            inner.told_complete_after = inner.told_complete_after.max(upto);
            return None;
        }
        Some(
            taken
                .into_iter()
                .filter(|(p, _)| *p > after)
                .map(|(p, (room, member))| (p, room, member))
                .collect(),
        )
    }

    fn finish(&self, position: i64, committed: Option<Told>) {
        let safe = {
            let mut inner = self.inner.lock();
            inner.in_flight.remove(&position);
            if let Some(told) = committed {
                inner.max_completed = inner.max_completed.max(position);
                if inner.told.len() >= MAX_TOLD
                    && let Some((oldest, _)) = inner.told.pop_first()
                {
                    inner.told_complete_after = inner.told_complete_after.max(oldest);
                }
                inner.told.insert(position, told);
            }
            match inner.in_flight.first() {
                Some(&lowest) => (lowest - 1).min(inner.max_completed),
                None => inner.max_completed,
            }
        };
        self.safe.send_if_modified(|current| {
            if safe > *current {
                *current = safe;
                true
            } else {
                false
            }
        });
    }
}

/// A stream position being written. Dropped without [`InFlight::committed`], it counts as
/// rolled back (the position is skipped, never waited for).
pub struct InFlight {
    positions: Arc<StreamPositions>,
    position: i64,
    done: bool,
}

impl InFlight {
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The event at this position is committed: in room `room_nid`, and about `member` if
    /// it is a membership event.
    pub fn committed(mut self, room_nid: i64, member: Option<String>) {
        self.done = true;
        self.positions
            .finish(self.position, Some((room_nid, member)));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.positions.finish(self.position, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_commits_hold_the_safe_position_back() {
        let p = StreamPositions::new(9);
        let ten = p.begin(10);
        let eleven = p.begin(11);
        eleven.committed(1, None);
        assert_eq!(p.safe_position(), 9, "10 is still being written");
        ten.committed(1, None);
        assert_eq!(p.safe_position(), 11);
        let twelve = p.begin(12);
        drop(twelve);
        assert_eq!(p.safe_position(), 11, "a rolled-back position is skipped");
        p.begin(13).committed(1, None);
        assert_eq!(p.safe_position(), 13);
    }

    #[test]
    fn positions_come_from_blocks_in_order() {
        let p = StreamPositions::new(9);
        assert!(p.take(1).is_none(), "no block yet");
        p.add_block(vec![12, 10, 11]);
        let first = p.take(2).unwrap();
        assert_eq!(
            first.iter().map(|g| g.position).collect::<Vec<_>>(),
            [10, 11]
        );
        assert!(p.take(2).is_none(), "one left");
        // A block fetched earlier but added late is below what was handed out: dropped.
        p.add_block(vec![13, 14]);
        p.add_block(vec![5, 6]);
        let next = p.take(3).unwrap();
        assert_eq!(
            next.iter().map(|g| g.position).collect::<Vec<_>>(),
            [12, 13, 14]
        );
        // Handed-out positions are in flight until committed.
        for g in next {
            g.committed(1, None);
        }
        assert_eq!(p.safe_position(), 9, "10 and 11 are still being written");
        for g in first {
            g.committed(1, None);
        }
        assert_eq!(p.safe_position(), 14);
    }

    #[test]
    fn committed_events_are_told_once_and_a_full_record_says_so() {
        let p = StreamPositions::new(0);
        p.begin(1).committed(7, None);
        p.begin(2).committed(8, Some("@a:x".to_owned()));
        drop(p.begin(3));
        assert_eq!(
            p.take_told(0, 3),
            Some(vec![(1, 7, None), (2, 8, Some("@a:x".to_owned()))])
        );
        assert_eq!(p.take_told(3, 3), Some(vec![]), "taken once");
        for n in 4..(4 + MAX_TOLD as i64 + 1) {
            p.begin(n).committed(1, None);
        }
        // Position 4 was dropped to make room: the feed must read (3, ..] from the database.
        assert_eq!(p.take_told(3, 10), None);
        let rest = p.take_told(10, i64::MAX).unwrap();
        assert_eq!(rest.len(), MAX_TOLD - 6);
        assert_eq!(rest.first().map(|e| e.0), Some(11));
    }
}
