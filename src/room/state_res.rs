//! State resolution over stored states: the forks' states, their auth chains and every event
//! involved are loaded in one query each, then ruma's `state_res::resolve` decides.

use std::collections::{HashMap, HashSet};

use ruma::events::StateEventType;
use ruma::room_version_rules::{RoomVersionRules, StateResolutionVersion};
use ruma::state_res::StateMap;
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{EventId, OwnedEventId};
use sqlx::PgPool;

use super::pdu::Pdu;
use crate::db;
use crate::error::{Error, Result};

/// A room state by numbers: state_key_nid → event_nid.
pub type KeyMap = HashMap<i64, i64>;

/// The most auth-chain rows one resolution may load; a room beyond it is refused rather than
/// exhausting memory.
const MAX_AUTH_CHAIN_ROWS: i64 = 2_000_000;

/// The outcome of a resolution, with the events it loaded (callers need the contents of
/// state entries that changed, e.g. memberships).
pub struct Resolved {
    pub map: KeyMap,
    pub events: HashMap<i64, Pdu>,
}

/// An event not stored yet that takes part in a resolution (the one being received).
pub struct Pending<'a> {
    pub nid: i64,
    pub pdu: &'a Pdu,
    /// Numbers of its auth events (stored).
    pub auth_nids: &'a [i64],
}

/// Resolve `forks` (states by number). Identical forks short-cut without loading anything.
pub async fn resolve(
    db: &PgPool,
    rules: &RoomVersionRules,
    forks: &[KeyMap],
    pending: Option<Pending<'_>>,
) -> Result<Resolved> {
    let distinct: Vec<&KeyMap> = forks.iter().fold(Vec::new(), |mut acc, f| {
        if !acc.contains(&f) {
            acc.push(f);
        }
        acc
    });
    match distinct.as_slice() {
        [] => {
            return Ok(Resolved {
                map: KeyMap::new(),
                events: HashMap::new(),
            });
        }
        [one] => {
            return Ok(Resolved {
                map: (*one).clone(),
                events: HashMap::new(),
            });
        }
        _ => {}
    }
    let state_res_rules = match rules.state_res {
        StateResolutionVersion::V2(r) => r,
        _ => {
            return Err(Error::internal(
                "state resolution is implemented for room versions 2 and later",
            ));
        }
    };

    let chains = auth_chains(db, &distinct, pending.as_ref()).await?;
    let subgraph = match state_res_rules.consider_conflicted_state_subgraph {
        true => conflicted_subgraph(db, &distinct, pending.as_ref()).await?,
        false => Vec::new(),
    };
    let events = load_events(db, &distinct, &chains.rows, &subgraph, pending.as_ref()).await?;
    let key_of = state_keys(db, &distinct).await?;
    let nid_of_key: HashMap<&(StateEventType, String), i64> =
        key_of.iter().map(|(n, k)| (k, *n)).collect();

    let maps = fork_maps(&distinct, &key_of, &events)?;
    let ids_of = |nids: &mut dyn Iterator<Item = &i64>| {
        let mut set = EventIdSet::new();
        for n in nids {
            if let Some(p) = events.get(n) {
                set.insert(p.event_id.clone());
            }
        }
        set
    };
    let auth_chains: Vec<EventIdSet<OwnedEventId>> = chains
        .by_fork
        .iter()
        .map(|c| ids_of(&mut c.iter()))
        .collect();
    let subgraph_ids = ids_of(&mut subgraph.iter());
    let by_id: HashMap<&EventId, &Pdu> =
        events.values().map(|p| (p.event_id.as_ref(), p)).collect();
    let resolved = ruma::state_res::resolve(
        &rules.authorization,
        &state_res_rules,
        maps.iter(),
        auth_chains,
        |id| by_id.get(id).map(|p| (*p).clone()),
        // Walked above from the same forks: ruma's conflicted state set is ours.
        |_| Some(subgraph_ids.clone()),
    )
    .map_err(|e| Error::internal(format!("state resolution failed: {e}")))?;

    let nid_of: HashMap<&EventId, i64> = events
        .iter()
        .map(|(n, p)| (p.event_id.as_ref(), *n))
        .collect();
    let mut map = KeyMap::with_capacity(resolved.len());
    for (key, id) in resolved {
        let sk = nid_of_key
            .get(&key)
            .ok_or_else(|| Error::internal("resolved a state key no fork had"))?;
        let ev = nid_of
            .get(id.as_ref() as &EventId)
            .ok_or_else(|| Error::internal("resolved an event no fork had"))?;
        map.insert(*sk, *ev);
    }
    Ok(Resolved { map, events })
}

/// The auth chains of the forks, loaded by one walk from every fork's events.
struct Chains {
    /// (fork, event) rows as the walk returned them.
    rows: Vec<(i32, i64)>,
    /// Per fork, the events of its auth chain (a pending event's auth events included).
    by_fork: Vec<HashSet<i64>>,
}

/// Auth chains: one walk from every fork's events, each fork numbered; refused beyond
/// [`MAX_AUTH_CHAIN_ROWS`].
async fn auth_chains(
    db: &PgPool,
    distinct: &[&KeyMap],
    pending: Option<&Pending<'_>>,
) -> Result<Chains> {
    let pending_nid = pending.map(|p| p.nid);
    let mut sets = Vec::new();
    let mut roots = Vec::new();
    for (i, fork) in distinct.iter().enumerate() {
        let set = i32::try_from(i).map_err(|e| Error::internal(e.to_string()))?;
        for &ev in fork.values() {
            if Some(ev) == pending_nid {
                // Not stored: its chain starts at its auth events.
                if let Some(p) = pending {
                    for &a in p.auth_nids {
                        sets.push(set);
                        roots.push(a);
                    }
                }
            } else {
                sets.push(set);
                roots.push(ev);
            }
        }
    }
    let chain_rows = db::events::auth_chains(db, &sets, &roots, MAX_AUTH_CHAIN_ROWS).await?;
    if chain_rows.len() as i64 >= MAX_AUTH_CHAIN_ROWS {
        return Err(Error::internal("auth chains too large to resolve state"));
    }
    let mut chain_nids: Vec<HashSet<i64>> = vec![HashSet::new(); distinct.len()];
    for (set, nid) in &chain_rows {
        if let Some(c) = usize::try_from(*set)
            .ok()
            .and_then(|s| chain_nids.get_mut(s))
        {
            c.insert(*nid);
        }
    }
    if let Some(p) = pending {
        for (i, fork) in distinct.iter().enumerate() {
            if fork.values().any(|&e| e == p.nid) {
                chain_nids[i].extend(p.auth_nids.iter().copied());
            }
        }
    }
    Ok(Chains {
        rows: chain_rows,
        by_fork: chain_nids,
    })
}

/// Since v2.1 (room version 12) the events between conflicted ones take part too: the
/// conflicted state subgraph, walked in one query and refused beyond
/// [`MAX_AUTH_CHAIN_ROWS`].
async fn conflicted_subgraph(
    db: &PgPool,
    distinct: &[&KeyMap],
    pending: Option<&Pending<'_>>,
) -> Result<Vec<i64>> {
    let conflicted = conflicted_events(distinct);
    let also_from: Vec<i64> = pending
        .filter(|p| conflicted.contains(&p.nid))
        .map(|p| p.auth_nids.to_vec())
        .unwrap_or_default();
    let (nids, truncated) =
        db::graph::conflicted_subgraph(db, &conflicted, &also_from, MAX_AUTH_CHAIN_ROWS).await?;
    if truncated {
        return Err(Error::internal(
            "conflicted state subgraph too large to resolve state",
        ));
    }
    Ok(nids)
}

/// Every event involved (the forks' states, their auth chains, the subgraph), parsed once,
/// by number; the pending event as given.
async fn load_events(
    db: &PgPool,
    distinct: &[&KeyMap],
    chain_rows: &[(i32, i64)],
    subgraph: &[i64],
    pending: Option<&Pending<'_>>,
) -> Result<HashMap<i64, Pdu>> {
    let mut wanted: HashSet<i64> = distinct.iter().flat_map(|f| f.values().copied()).collect();
    wanted.extend(chain_rows.iter().map(|r| r.1));
    wanted.extend(subgraph.iter().copied());
    if let Some(p) = pending {
        wanted.remove(&p.nid);
    }
    let wanted: Vec<i64> = wanted.into_iter().collect();
    let mut events: HashMap<i64, Pdu> = HashMap::with_capacity(wanted.len() + 1);
    for row in db::events::by_nids(db, &wanted).await? {
        let id = OwnedEventId::try_from(row.event_id.as_str())
            .map_err(|e| Error::internal(format!("stored event ID invalid: {e}")))?;
        let mut pdu = Pdu::parse(id, &row.json)?;
        pdu.rejected = row.rejected_reason.is_some();
        events.insert(row.event_nid, pdu);
    }
    if let Some(p) = pending {
        events.insert(p.nid, p.pdu.clone());
    }
    Ok(events)
}

/// The forks' state keys by number, in one query.
async fn state_keys(
    db: &PgPool,
    distinct: &[&KeyMap],
) -> Result<HashMap<i64, (StateEventType, String)>> {
    let key_nids: Vec<i64> = distinct
        .iter()
        .flat_map(|f| f.keys().copied())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut key_of: HashMap<i64, (StateEventType, String)> = HashMap::new();
    for (nid, t, k) in db::state::keys_by_nid(db, &key_nids).await? {
        key_of.insert(nid, (StateEventType::from(t), k));
    }
    Ok(key_of)
}

/// The forks as ruma takes them: (type, state key) → event ID.
fn fork_maps(
    distinct: &[&KeyMap],
    key_of: &HashMap<i64, (StateEventType, String)>,
    events: &HashMap<i64, Pdu>,
) -> Result<Vec<StateMap<OwnedEventId>>> {
    let mut maps: Vec<StateMap<OwnedEventId>> = Vec::with_capacity(distinct.len());
    for fork in distinct {
        let mut m = StateMap::with_capacity(fork.len());
        for (sk, ev) in fork.iter() {
            let key = key_of
                .get(sk)
                .ok_or_else(|| Error::internal("state key number unknown"))?;
            let pdu = events
                .get(ev)
                .ok_or_else(|| Error::internal("state event missing from the store"))?;
            m.insert(key.clone(), pdu.event_id.clone());
        }
        maps.push(m);
    }
    Ok(maps)
}

/// The events of every state key the forks do not agree on (absent from one counts).
fn conflicted_events(forks: &[&KeyMap]) -> Vec<i64> {
    let keys: HashSet<i64> = forks.iter().flat_map(|f| f.keys().copied()).collect();
    let mut out: HashSet<i64> = HashSet::new();
    for k in keys {
        let values: Vec<Option<i64>> = forks.iter().map(|f| f.get(&k).copied()).collect();
        if values.iter().any(|v| *v != values[0]) {
            out.extend(values.into_iter().flatten());
        }
    }
    let mut out: Vec<i64> = out.into_iter().collect();
    out.sort_unstable();
    out
}

/// A stored state group as a map by numbers.
pub async fn load_map(db: &PgPool, group: i64) -> Result<KeyMap> {
    Ok(db::state::load(db, group)
        .await?
        .into_iter()
        .map(|r| (r.0, r.1))
        .collect())
}

/// Several stored groups at once, in the order asked.
pub async fn load_maps(db: &PgPool, groups: &[i64]) -> Result<Vec<KeyMap>> {
    let rows = db::state::load_many(db, groups).await?;
    let mut by_group: HashMap<i64, KeyMap> = HashMap::new();
    for (g, sk, ev, _, _) in rows {
        by_group.entry(g).or_default().insert(sk, ev);
    }
    Ok(groups
        .iter()
        .map(|g| by_group.get(g).cloned().unwrap_or_default())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicted_events_are_every_value_of_a_key_the_forks_disagree_on() {
        // Keys 1..=4: 1 agreed, 2 differs, 3 missing from one fork, 4 agreed by all three.
        let a: KeyMap = [(1, 10), (2, 20), (3, 30), (4, 40)].into();
        let b: KeyMap = [(1, 10), (2, 21), (4, 40)].into();
        let c: KeyMap = [(1, 10), (2, 20), (3, 30), (4, 40)].into();
        assert_eq!(conflicted_events(&[&a, &b, &c]), vec![20, 21, 30]);
        assert!(conflicted_events(&[&a, &c]).is_empty());
    }
}
