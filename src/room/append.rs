//! THE append path: the one way an event enters a room's timeline.
//!
//! 1. (caller) take the room lock;
//! 2. choose prev_events (the forward extremities) and depth;
//! 3. load only the state entries the auth rules need for this event, from the state before it;
//! 4. build, hash and sign the PDU (ruma);
//! 5. authorise it against that state (ruma `state_res`); a failure stores nothing;
//! 6. in one transaction: event row, edges, new state group (a delta), current state,
//!    extremities, membership, transaction ID, redaction mark.

use std::collections::HashMap;

use ruma::events::StateEventType;
use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, UserId};
use sqlx::PgPool;

use std::sync::Arc;

use super::lock::RoomLock;
use super::pdu::{self, NewContent, Pdu, Placement};
use super::state_cache::StateCache;
use super::stream::StreamPositions;
use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};
use crate::keys::ServerKeys;

/// Where a client transaction ID is recorded, so a retry finds the same event.
pub struct TxnRef<'a> {
    pub device_id: &'a str,
    pub txn_id: &'a str,
}

/// What the append path writes to and signs with.
pub struct Store<'a> {
    pub db: &'a PgPool,
    pub keys: &'a ServerKeys,
    pub stream: &'a Arc<StreamPositions>,
    pub state: &'a StateCache,
}

/// Build, authorise and store a local event; returns its ID.
pub async fn append_local(
    store: &Store<'_>,
    lock: &RoomLock,
    room: &RoomRow,
    sender: &UserId,
    new: NewContent,
    txn: Option<TxnRef<'_>>,
) -> Result<OwnedEventId> {
    debug_assert_eq!(lock.room_id().as_str(), room.room_id);
    let Prepared {
        event_id,
        json,
        pdu,
    } = prepare_local(store, room, sender, &new).await?;
    persist_local(store, lock, room, &event_id, &json, &pdu, txn).await?;
    tracing::debug!(%event_id, room_id = %room.room_id, kind = %new.kind, "event appended");
    Ok(event_id)
}

/// A local event built, signed and authorised, not stored yet.
pub struct Prepared {
    pub event_id: OwnedEventId,
    pub json: String,
    pub pdu: Pdu,
}

/// Where a new event goes in the graph: steps 2 and 3.
pub struct Placing {
    pub version: ruma::RoomVersionId,
    pub rules: ruma::room_version_rules::RoomVersionRules,
    pub room_id: ruma::OwnedRoomId,
    pub prev_ids: Vec<OwnedEventId>,
    pub depth: i64,
    pub auth_state: HashMap<(StateEventType, String), Pdu>,
    pub auth_ids: Vec<OwnedEventId>,
}

/// Choose prev_events, depth and auth events for an event `sender` would send now.
pub async fn place(
    db: &PgPool,
    cache: &StateCache,
    room: &RoomRow,
    sender: &UserId,
    new: &NewContent,
) -> Result<Placing> {
    let version = ruma::RoomVersionId::try_from(room.room_version.as_str())
        .map_err(|e| Error::internal(format!("stored room version invalid: {e}")))?;
    let rules = version
        .rules()
        .ok_or_else(|| Error::internal(format!("room version {version} has no rules")))?;
    let room_id = ruma::OwnedRoomId::try_from(room.room_id.as_str())
        .map_err(|e| Error::internal(format!("stored room ID invalid: {e}")))?;

    // 2. prev_events and depth.
    let extremities = db::events::forward_extremities(db, room.room_nid).await?;
    let prev_ids: Vec<OwnedEventId> = extremities
        .iter()
        .take(MAX_PREV_EVENTS)
        .filter_map(|(_, id, _)| OwnedEventId::try_from(id.as_str()).ok())
        .collect();
    let depth = extremities
        .iter()
        .map(|e| e.2)
        .max()
        .map_or(1, |d| d.saturating_add(1));

    // 3. The auth state (with the create event even where it is implied, not listed).
    let auth_types = auth_state_keys(
        &rules,
        &new.kind,
        sender,
        new.state_key.as_deref(),
        &new.content,
    )
    .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))?;
    let auth_state = match room.state_group {
        Some(group) => load_state_events(db, cache, group, &auth_types).await?,
        None => HashMap::new(),
    };
    let implied = implied_create_key(&rules);
    let mut auth_ids: Vec<OwnedEventId> = auth_state
        .iter()
        .filter(|(k, _)| Some(*k) != implied.as_ref())
        .map(|(_, p)| p.event_id.clone())
        .collect();
    auth_ids.sort();
    Ok(Placing {
        version,
        rules,
        room_id,
        prev_ids,
        depth,
        auth_state,
        auth_ids,
    })
}

/// Steps 2 to 5: place, build, sign and authorise a local event without storing it.
pub async fn prepare_local(
    store: &Store<'_>,
    room: &RoomRow,
    sender: &UserId,
    new: &NewContent,
) -> Result<Prepared> {
    let p = place(store.db, store.state, room, sender, new).await?;

    // 4. Build and sign.
    let placement = Placement {
        room_id: Some(&p.room_id),
        version: &p.version,
        rules: &p.rules,
        sender,
        prev_events: &p.prev_ids,
        auth_events: &p.auth_ids,
        depth: p.depth,
    };
    let (event_id, json) = pdu::build(store.keys, new, &placement)?;
    check_size(&json)?;
    let pdu = Pdu::parse(event_id.clone(), &json)?;

    // 5. Authorise against the state before it.
    authorise(&p.rules, &pdu, &p.auth_state).map_err(Error::forbidden)?;
    Ok(Prepared {
        event_id,
        json,
        pdu,
    })
}

/// The state entries authorising an event needs: its auth event types, plus the create
/// event where the room ID implies it instead of the auth events listing it (version 12 on).
pub fn auth_state_keys(
    rules: &ruma::room_version_rules::RoomVersionRules,
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &serde_json::value::RawValue,
) -> std::result::Result<Vec<(StateEventType, String)>, String> {
    let mut keys = ruma::state_res::auth_types_for_event(
        kind,
        sender,
        state_key,
        content,
        &rules.authorization,
    )?;
    if *kind != TimelineEventType::RoomCreate
        && let Some(k) = implied_create_key(rules)
    {
        keys.push(k);
    }
    Ok(keys)
}

/// The create event's state key where events do not list it among their auth events.
fn implied_create_key(
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Option<(StateEventType, String)> {
    rules
        .authorization
        .room_create_event_id_as_room_id
        .then(|| (StateEventType::RoomCreate, String::new()))
}

/// The auth rules for `pdu` against `state` (which holds at least its auth types), both the
/// state-independent and the state-dependent checks.
pub fn authorise(
    rules: &ruma::room_version_rules::RoomVersionRules,
    pdu: &Pdu,
    state: &HashMap<(StateEventType, String), Pdu>,
) -> std::result::Result<(), String> {
    let by_id: HashMap<&ruma::EventId, &Pdu> = state.values().map(|p| (&*p.event_id, p)).collect();
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id| {
        by_id.get(id).map(|p| (*p).clone())
    })?;
    authorise_by_state(rules, pdu, state)
}

/// The state-dependent auth rules only: whether `pdu` is allowed by the room's state
/// `state` (the state before it, or the current state for soft failure), its own auth
/// events having been checked already. Its auth events need not be in that state.
pub fn authorise_by_state(
    rules: &ruma::room_version_rules::RoomVersionRules,
    pdu: &Pdu,
    state: &HashMap<(StateEventType, String), Pdu>,
) -> std::result::Result<(), String> {
    ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |t, k| {
        state.get(&(t.clone(), k.to_owned())).cloned()
    })
}

/// Step 6 for a local event (possibly countersigned by another server since it was
/// prepared, as invites are): store it on the current state.
pub async fn persist_local(
    store: &Store<'_>,
    lock: &RoomLock,
    room: &RoomRow,
    event_id: &ruma::EventId,
    json: &str,
    pdu: &Pdu,
    txn: Option<TxnRef<'_>>,
) -> Result<()> {
    // 6. Store, in one transaction.
    let current = if pdu.state_key.is_some() {
        Current::Extend { also: Vec::new() }
    } else {
        Current::Keep
    };
    let stored = persist(
        store,
        lock,
        Checked {
            event_id,
            json,
            pdu,
            room,
            state_before: room.state_group,
            rejected: None,
            soft_failed: false,
            current,
            txn,
            fan_out: FanOut::Local,
            historical: false,
        },
    )
    .await?;
    if !stored {
        return Err(Error::internal("a new local event already existed"));
    }
    Ok(())
}

/// How a newly stored event reaches other servers.
pub enum FanOut<'a> {
    /// Our own event: every server with a joined member, and the target's server of a
    /// membership change (who may just have left).
    Local,
    /// A remote event we accepted on its server's behalf (send_join, send_leave, send_knock):
    /// every server in the room except its origin, which has it.
    Forward { origin: &'a str },
    /// A remote event received by /send: its origin sends it to the others itself.
    None,
}

/// One entry of the current state that changes, with the membership it sets if it is an
/// m.room.member event: (user ID, membership).
#[derive(Debug, Clone)]
pub struct StateChange {
    pub state_key_nid: i64,
    pub event_nid: i64,
    pub member: Option<(String, String)>,
}

/// What the event does to the room's current state.
pub enum Current {
    /// Nothing (a message on the current state, a rejected or soft-failed event).
    Keep,
    /// The state after the event becomes current: it extends every forward extremity.
    /// `also` lists entries where the state before it differs from the old current state.
    Extend { also: Vec<StateChange> },
    /// The current state is the resolution of the old one with the state after the event;
    /// `changes` are the entries that differ from the old current state, `removed` the state
    /// keys it no longer has (an entry whose only events lost the resolution).
    Resolved {
        changes: Vec<StateChange>,
        removed: Vec<i64>,
    },
}

/// An event that went through the checks, ready to store.
pub struct Checked<'a> {
    pub event_id: &'a ruma::EventId,
    pub json: &'a str,
    pub pdu: &'a Pdu,
    pub room: &'a RoomRow,
    pub state_before: Option<i64>,
    /// Failed authorisation: stored for the graph's sake, never state, never shown.
    pub rejected: Option<String>,
    /// Passed auth at its own place in the graph but not against the current state.
    pub soft_failed: bool,
    pub current: Current,
    pub txn: Option<TxnRef<'a>>,
    pub fan_out: FanOut<'a>,
    /// Backfilled history: placed before everything in the stream (a negative position),
    /// never a forward extremity, never current state.
    pub historical: bool,
}

/// Store a checked event in one transaction: event row, edges, state group, extremities,
/// current state and memberships, redaction mark, client transaction ID, outbound queue.
/// Returns false if the event was already in the timeline (nothing written).
pub async fn persist(store: &Store<'_>, lock: &RoomLock, ev: Checked<'_>) -> Result<bool> {
    debug_assert_eq!(lock.room_id().as_str(), ev.room.room_id);
    let Store {
        db, keys, stream, ..
    } = *store;
    let room = ev.room;
    let pdu = ev.pdu;
    let accepted = ev.rejected.is_none() && !ev.soft_failed;
    // Push rules are evaluated before the transaction opens: it stays short.
    let notified = match accepted && !ev.historical {
        true => {
            let rules = super::remote::rules_of(room)?;
            Some(super::push::push_actions(store, room, &rules, &ev).await?)
        }
        false => None,
    };
    let mut tx = db.begin().await?;
    let mut all_ids: Vec<&str> = vec![ev.event_id.as_str()];
    all_ids.extend(pdu.prev_events.iter().map(|e| e.as_str()));
    all_ids.extend(pdu.auth_events.iter().map(|e| e.as_str()));
    let nids = db::events::intern_ids(&mut tx, &all_ids).await?;
    let nid = |id: &str| {
        nids.get(id)
            .copied()
            .ok_or_else(|| Error::internal("event ID not interned"))
    };
    let event_nid = nid(ev.event_id.as_str())?;
    let prev_nids = pdu
        .prev_events
        .iter()
        .map(|e| nid(e.as_str()))
        .collect::<Result<Vec<_>>>()?;
    let auth_nids = pdu
        .auth_events
        .iter()
        .map(|e| nid(e.as_str()))
        .collect::<Result<Vec<_>>>()?;

    let kind = pdu.kind.to_string();
    let state_key_nid = match &pdu.state_key {
        Some(key) => {
            let k = db::state::intern_keys(&mut tx, &[(kind.as_str(), key.as_str())]).await?;
            Some(
                *k.get(&(kind.clone(), key.clone()))
                    .ok_or_else(|| Error::internal("state key not interned"))?,
            )
        }
        None => None,
    };
    let state_after = match state_key_nid {
        Some(sk) if ev.rejected.is_none() => Some(
            new_state_group(&mut tx, room.room_nid, ev.state_before, &[(sk, event_nid)]).await?,
        ),
        _ => ev.state_before,
    };
    let (position, in_flight) = if ev.historical {
        (db::events::next_backfill_position(&mut tx).await?, None)
    } else {
        let p = db::events::next_stream_position(&mut tx).await?;
        (p, Some(stream.begin(p)))
    };
    let inserted = db::events::insert(
        &mut tx,
        &db::events::NewEvent {
            event_nid,
            room_nid: room.room_nid,
            event_type: &kind,
            state_key_nid,
            sender: pdu.sender.as_str(),
            origin_server_ts: i64::try_from(u64::from(pdu.origin_server_ts.0)).unwrap_or(i64::MAX),
            depth: pdu.depth.max(1),
            json: ev.json,
            outlier: false,
            rejected_reason: ev.rejected.as_deref(),
            soft_failed: ev.soft_failed,
            state_before: ev.state_before,
            state_after,
        },
        Some(position),
    )
    .await?;
    if !inserted {
        // The transaction rolls back on drop and the position is abandoned.
        drop(in_flight);
        return Ok(false);
    }
    db::events::insert_edges(&mut tx, event_nid, &prev_nids, &auth_nids).await?;
    if let Some(n) = notified.as_ref().filter(|n| !n.users.is_empty()) {
        db::push::insert(
            &mut tx,
            room.room_nid,
            event_nid,
            position,
            &n.thread_id,
            &n.users,
        )
        .await?;
    }
    db::events::remove_backward_extremity(&mut tx, room.room_nid, event_nid).await?;
    db::events::add_backward_extremities(&mut tx, room.room_nid, &prev_nids).await?;
    if accepted && !ev.historical {
        db::events::advance_forward_extremities(&mut tx, room.room_nid, event_nid, &prev_nids)
            .await?;
    }
    let own_change = || {
        state_key_nid.map(|sk| StateChange {
            state_key_nid: sk,
            event_nid,
            member: (pdu.kind == TimelineEventType::RoomMember)
                .then(|| {
                    pdu.state_key
                        .clone()
                        .map(|k| (k, membership_of(&pdu.content)))
                })
                .flatten(),
        })
    };
    let (new_group, changes) = match ev.current {
        _ if !accepted || ev.historical => (None, Vec::new()),
        Current::Keep => (None, Vec::new()),
        Current::Extend { mut also } => {
            if let Some(own) = own_change() {
                // The event's own entry wins over what the state before it held.
                also.retain(|c| c.state_key_nid != own.state_key_nid);
                also.push(own);
            }
            (state_after, also)
        }
        Current::Resolved { changes, removed } => {
            let entries: Vec<(i64, i64)> = changes
                .iter()
                .map(|c| (c.state_key_nid, c.event_nid))
                .collect();
            let group = if !removed.is_empty() {
                // A delta cannot remove a key: the whole new state as a snapshot.
                db::state::remove_current(&mut tx, room.room_nid, &removed).await?;
                Some(snapshot_without(&mut tx, room, &entries, &removed).await?)
            } else if entries.is_empty() {
                room.state_group
            } else {
                Some(new_state_group(&mut tx, room.room_nid, room.state_group, &entries).await?)
            };
            (group, changes)
        }
    };
    if !changes.is_empty() {
        let entries: Vec<(i64, i64)> = changes
            .iter()
            .map(|c| (c.state_key_nid, c.event_nid))
            .collect();
        db::state::set_current_many(&mut tx, room.room_nid, &entries).await?;
        let members: Vec<(&str, &str, i64)> = changes
            .iter()
            .filter_map(|c| {
                c.member
                    .as_ref()
                    .map(|(u, m)| (u.as_str(), m.as_str(), c.event_nid))
            })
            .collect();
        if !members.is_empty() {
            db::rooms::set_memberships(&mut tx, room.room_nid, &members).await?;
        }
    }
    if let Some(group) = new_group
        && Some(group) != room.state_group
    {
        db::rooms::set_state_group(&mut tx, room.room_nid, group).await?;
    }
    if accepted
        && let Some(target) = &pdu.redacts
        && let Some(target) = db::events::by_id(&mut *tx, target.as_str()).await?
        && target.room_nid == room.room_nid
    {
        db::events::set_redacted_by(&mut tx, target.event_nid, event_nid).await?;
    }
    if let Some(t) = ev.txn {
        db::events::insert_txn(
            &mut tx,
            room.room_nid,
            pdu.sender.as_str(),
            t.device_id,
            t.txn_id,
            event_nid,
        )
        .await?;
    }
    let ours = keys.server_name().as_str();
    match ev.fan_out {
        _ if ev.historical => {}
        FanOut::Local => {
            let target_server: Vec<&str> = match (&pdu.kind, &pdu.state_key) {
                (TimelineEventType::RoomMember, Some(k)) => {
                    k.split_once(':').map(|(_, s)| s).into_iter().collect()
                }
                _ => Vec::new(),
            };
            db::federation::enqueue_room_event(
                &mut tx,
                room.room_nid,
                event_nid,
                ours,
                &target_server,
                None,
            )
            .await?;
        }
        FanOut::Forward { origin } if accepted => {
            db::federation::enqueue_room_event(
                &mut tx,
                room.room_nid,
                event_nid,
                ours,
                &[],
                Some(origin),
            )
            .await?;
        }
        FanOut::Forward { .. } | FanOut::None => {}
    }
    tx.commit().await?;
    if let Some(f) = in_flight {
        f.committed();
    }
    Ok(true)
}

/// How many forward extremities a new event references at most.
const MAX_PREV_EVENTS: usize = 10;
/// The spec's limit on a PDU's size.
const MAX_PDU_BYTES: usize = 65_536;

/// The spec's size limit on a PDU, for the events we build.
pub fn check_size(json: &str) -> Result<()> {
    if json.len() > MAX_PDU_BYTES {
        return Err(Error::too_large("Event is larger than 65536 bytes"));
    }
    Ok(())
}

/// The membership value of an m.room.member content (`leave` when unreadable).
pub fn membership_of(content: &serde_json::value::RawValue) -> String {
    #[derive(serde::Deserialize)]
    struct M {
        membership: String,
    }
    serde_json::from_str::<M>(content.get())
        .map(|m| m.membership)
        .unwrap_or_else(|_| "leave".to_owned())
}

/// A new state group: `prev` plus `entries`, as a delta unless the chain is at its cap.
pub(crate) async fn new_state_group(
    tx: &mut sqlx::PgConnection,
    room_nid: i64,
    prev: Option<i64>,
    entries: &[(i64, i64)],
) -> Result<i64> {
    let Some(prev) = prev else {
        return Ok(db::state::create_group(tx, room_nid, None, entries).await?);
    };
    let len = db::state::chain_len(&mut *tx, prev).await?;
    if len + 1 < db::state::MAX_CHAIN_LEN {
        return Ok(db::state::create_group(tx, room_nid, Some((prev, len)), entries).await?);
    }
    // The chain is at its cap: write the whole state as a new snapshot.
    let mut all: HashMap<i64, i64> = db::state::load(&mut *tx, prev)
        .await?
        .into_iter()
        .map(|r| (r.0, r.1))
        .collect();
    all.extend(entries.iter().copied());
    let all: Vec<(i64, i64)> = all.into_iter().collect();
    Ok(db::state::create_group(tx, room_nid, None, &all).await?)
}

/// The room's current state with `entries` set and `removed` gone, as a new snapshot group.
async fn snapshot_without(
    tx: &mut sqlx::PgConnection,
    room: &RoomRow,
    entries: &[(i64, i64)],
    removed: &[i64],
) -> Result<i64> {
    let mut all: HashMap<i64, i64> = match room.state_group {
        Some(g) => db::state::load(&mut *tx, g)
            .await?
            .into_iter()
            .map(|r| (r.0, r.1))
            .collect(),
        None => HashMap::new(),
    };
    all.extend(entries.iter().copied());
    for k in removed {
        all.remove(k);
    }
    let all: Vec<(i64, i64)> = all.into_iter().collect();
    Ok(db::state::create_group(tx, room.room_nid, None, &all).await?)
}

/// The state events for `keys` in `group`, parsed, keyed by (type, state_key): from the
/// cache where it has them, the rest in one query.
pub async fn load_state_events(
    db: &PgPool,
    cache: &StateCache,
    group: i64,
    keys: &[(StateEventType, String)],
) -> Result<HashMap<(StateEventType, String), Pdu>> {
    let mut out = HashMap::new();
    let mut missing: Vec<&(StateEventType, String)> = Vec::new();
    for k in keys {
        match cache.get(group, &k.0, &k.1) {
            Some(Some(pdu)) => {
                out.insert(k.clone(), pdu);
            }
            Some(None) => {}
            None => missing.push(k),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    let strs: Vec<(String, &str)> = missing
        .iter()
        .map(|(t, k)| (t.to_string(), k.as_str()))
        .collect();
    let pairs: Vec<(&str, &str)> = strs.iter().map(|(t, k)| (t.as_str(), *k)).collect();
    let rows = db::state::load_keys(db, group, &pairs).await?;
    let nids: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let events = db::events::by_nids(db, &nids).await?;
    let mut loaded = HashMap::new();
    for e in events {
        let id = OwnedEventId::try_from(e.event_id.as_str())
            .map_err(|err| Error::internal(format!("stored event ID invalid: {err}")))?;
        let pdu = Pdu::parse(id, &e.json)?;
        if let Some(k) = &pdu.state_key {
            loaded.insert((StateEventType::from(pdu.kind.to_string()), k.clone()), pdu);
        }
    }
    for k in missing {
        cache.insert(group, k.0.clone(), k.1.clone(), loaded.get(k).cloned());
    }
    out.extend(loaded);
    Ok(out)
}
