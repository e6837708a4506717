//! State entries by (state group, type, state_key), parsed. A state group never changes once
//! written, so an entry here is never stale and needs no invalidation: sending into a room
//! reads the same few auth entries (create, power levels, the sender's membership) of the
//! same group again and again, and finds them here.

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma::events::StateEventType;

use super::pdu::Pdu;

/// Entries kept per generation; two generations make a bounded, roughly least-recently-used
/// cache without a list to maintain.
const GENERATION: usize = 50_000;

type Key = (i64, StateEventType, String);

#[derive(Default)]
pub struct StateCache {
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<Key, Option<Pdu>>,
    previous: HashMap<Key, Option<Pdu>>,
}

impl StateCache {
    /// `None` when not cached; `Some(None)` when the group is known to lack the entry.
    pub fn get(&self, group: i64, kind: &StateEventType, key: &str) -> Option<Option<Pdu>> {
        let mut g = self.inner.lock();
        let k = (group, kind.clone(), key.to_owned());
        if let Some(v) = g.current.get(&k) {
            return Some(v.clone());
        }
        let v = g.previous.remove(&k)?;
        g.insert(k, v.clone());
        Some(v)
    }

    pub fn insert(&self, group: i64, kind: StateEventType, key: String, value: Option<Pdu>) {
        self.inner.lock().insert((group, kind, key), value);
    }
}

impl Generations {
    fn insert(&mut self, k: Key, v: Option<Pdu>) {
        if self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(k, v);
    }
}
