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
