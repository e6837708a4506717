//! State entries by (state group, type, state_key), parsed. A state group never changes once
//! written, so an entry here is never stale and needs no invalidation: sending into a room
//! reads the same few auth entries (create, power levels, the sender's membership) of the
//! same group again and again, and finds them here. Reads of state entries go through
//! [`load_state_events`], which asks the database only for what the cache lacks.

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma::OwnedEventId;
use ruma::events::StateEventType;
use sqlx::PgPool;

use super::pdu::Pdu;
use crate::db;
use crate::error::{Error, Result};

/// What one generation may hold: two generations make a bounded, roughly
/// least-recently-used cache without a list to maintain. A generation is retired when either
/// bound is reached, so the cache holds at most twice `GENERATION_BYTES` (plus one entry, at
/// most one event of 64 KiB) whatever the events' sizes: 32 MiB. The count bound keeps a
/// generation of tiny entries from growing the hash table without end.
const GENERATION_BYTES: usize = 16 << 20;
const GENERATION_ENTRIES: usize = 50_000;

type Key = (i64, StateEventType, String);

#[derive(Default)]
pub struct StateCache {
    inner: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<Key, Option<Pdu>>,
    /// The approximate heap and table bytes of `current` (see [`entry_bytes`]).
    current_bytes: usize,
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
        if self.current.len() >= GENERATION_ENTRIES || self.current_bytes >= GENERATION_BYTES {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        // A replaced entry stays counted until the generation retires: an overestimate,
        // which only retires it sooner.
        self.current_bytes += entry_bytes(&k, v.as_ref());
        self.current.insert(k, v);
    }
}

/// What an entry costs: its slot in the table and what its key and event own on the heap.
fn entry_bytes(k: &Key, v: Option<&Pdu>) -> usize {
    std::mem::size_of::<(Key, Option<Pdu>)>()
        + k.1.to_string().len()
        + k.2.len()
        + v.map_or(0, Pdu::heap_bytes)
}

/// State entries of one group, parsed, keyed by (type, state_key).
pub type StateEntries = HashMap<(StateEventType, String), Pdu>;

/// The state events for `keys` in `group`, parsed, keyed by (type, state_key): from the
/// cache where it has them, the rest in one query.
pub async fn load_state_events(
    db: &PgPool,
    cache: &StateCache,
    group: i64,
    keys: &[(StateEventType, String)],
) -> Result<StateEntries> {
    Ok(load_state_events_many(db, cache, &[group], keys)
        .await?
        .remove(&group)
        .unwrap_or_default())
}

/// [`load_state_events`] for several groups: what the cache lacks for any of them comes in
/// one query for all.
pub async fn load_state_events_many(
    db: &PgPool,
    cache: &StateCache,
    groups: &[i64],
    keys: &[(StateEventType, String)],
) -> Result<HashMap<i64, StateEntries>> {
    let mut out: HashMap<i64, StateEntries> = HashMap::new();
    let mut missing_groups: Vec<i64> = Vec::new();
    let mut missing_keys: Vec<&(StateEventType, String)> = Vec::new();
    for &group in groups {
        let entries = out.entry(group).or_default();
        for k in keys {
            match cache.get(group, &k.0, &k.1) {
                Some(Some(pdu)) => {
                    entries.insert(k.clone(), pdu);
                }
                Some(None) => {}
                None => {
                    if !missing_groups.contains(&group) {
                        missing_groups.push(group);
                    }
                    if !missing_keys.contains(&k) {
                        missing_keys.push(k);
                    }
                }
            }
        }
    }
    if missing_groups.is_empty() {
        return Ok(out);
    }
    let strs: Vec<(String, &str)> = missing_keys
        .iter()
        .map(|(t, k)| (t.to_string(), k.as_str()))
        .collect();
    let pairs: Vec<(&str, &str)> = strs.iter().map(|(t, k)| (t.as_str(), *k)).collect();
    let mut loaded: HashMap<i64, StateEntries> = HashMap::new();
    for (group, kind, state_key, event_id, json) in
        db::state::load_keys_many(db, &missing_groups, &pairs).await?
    {
        let id = OwnedEventId::try_from(event_id.as_str())
            .map_err(|err| Error::internal(format!("stored event ID invalid: {err}")))?;
        let pdu = Pdu::parse(id, &json)?;
        loaded
            .entry(group)
            .or_default()
            .insert((StateEventType::from(kind), state_key), pdu);
    }
    for group in missing_groups {
        let found = loaded.remove(&group).unwrap_or_default();
        for k in &missing_keys {
            cache.insert(group, k.0.clone(), k.1.clone(), found.get(*k).cloned());
        }
        out.entry(group).or_default().extend(found);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl StateCache {
        /// What both generations hold, by the same measure the bound uses.
        fn held_bytes(&self) -> usize {
            let g = self.inner.lock();
            g.current
                .iter()
                .chain(g.previous.iter())
                .map(|(k, v)| entry_bytes(k, v.as_ref()))
                .sum()
        }
    }

    fn big_member_event(n: usize) -> Pdu {
        let json = serde_json::json!({
            "room_id": "!r:x",
            "sender": "@a:x",
            "origin_server_ts": 1,
            "type": "m.room.member",
            "state_key": format!("@u{n}:x"),
            "content": {"membership": "join", "displayname": "d".repeat(60_000)},
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
        });
        let id = OwnedEventId::try_from(format!("$e{n}")).unwrap();
        Pdu::parse(id, &json.to_string()).unwrap()
    }

    #[test]
    fn large_events_are_held_to_the_byte_bound() {
        let cache = StateCache::default();
        // 3,000 events of 60 KB: 180 MB if nothing were let go.
        for n in 0..3_000 {
            cache.insert(
                n as i64,
                StateEventType::RoomMember,
                format!("@u{n}:x"),
                Some(big_member_event(n)),
            );
        }
        let held = cache.held_bytes();
        assert!(held <= 2 * GENERATION_BYTES + 70_000, "{held} bytes held");
        // The newest entries are still there.
        assert!(
            cache
                .get(2_999, &StateEventType::RoomMember, "@u2999:x")
                .is_some()
        );
    }
}
