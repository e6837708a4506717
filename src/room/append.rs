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

use ruma::events::{StateEventType, TimelineEventType};
use ruma::{OwnedEventId, UserId};
use sqlx::PgPool;

use super::lock::RoomLock;
use super::pdu::{self, NewContent, Pdu, Placement};
use super::persist::persist;
use super::state_cache::{StateCache, StateEntries, load_state_events};
use super::write::{Checked, Current, FanOut, Store, TxnRef};
use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};
use crate::keys::ServerKeys;

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

/// Where the room's graph ends: the forward extremities a new event cites, and its depth.
#[derive(Clone)]
pub struct Tip {
    pub prev_ids: Vec<OwnedEventId>,
    pub depth: i64,
}

impl Tip {
    /// The room's tip as stored.
    pub async fn of(db: &PgPool, room: &RoomRow) -> Result<Tip> {
        let extremities = db::events::forward_extremities(db, room.room_nid).await?;
        Ok(Tip::from_extremities(
            extremities
                .iter()
                .map(|(_, id, depth)| (id.as_str(), *depth)),
        ))
    }

    /// The tip over forward extremities (ID, depth), deepest first.
    pub fn from_extremities<'a>(extremities: impl IntoIterator<Item = (&'a str, i64)>) -> Tip {
        let mut prev_ids = Vec::new();
        let mut deepest: Option<i64> = None;
        for (id, depth) in extremities {
            deepest = Some(deepest.map_or(depth, |d| d.max(depth)));
            if prev_ids.len() < MAX_PREV_EVENTS
                && let Ok(id) = OwnedEventId::try_from(id)
            {
                prev_ids.push(id);
            }
        }
        Tip {
            prev_ids,
            depth: deepest.map_or(1, pdu::depth_after),
        }
    }

    /// The tip once `event` (placed on this one) is stored.
    pub fn after(event_id: &OwnedEventId, depth: i64) -> Tip {
        Tip {
            prev_ids: vec![event_id.clone()],
            depth: pdu::depth_after(depth),
        }
    }
}

/// Choose prev_events, depth and auth events for an event `sender` would send now.
pub async fn place(
    db: &PgPool,
    cache: &StateCache,
    room: &RoomRow,
    sender: &UserId,
    new: &NewContent,
) -> Result<Placing> {
    let tip = Tip::of(db, room).await?;
    place_on(db, cache, room, tip, sender, new).await
}

/// Steps 2 and 3 on a given tip, on the room's current state.
pub async fn place_on(
    db: &PgPool,
    cache: &StateCache,
    room: &RoomRow,
    tip: Tip,
    sender: &UserId,
    new: &NewContent,
) -> Result<Placing> {
    let (version, rules, room_id) = room_rules(room)?;
    // 3. The auth state (with the create event even where it is implied, not listed).
    let auth_types = event_auth_keys(&rules, sender, new)?;
    let auth_state = match room.state_group {
        Some(group) => load_state_events(db, cache, group, &auth_types).await?,
        None => HashMap::new(),
    };
    Ok(placing(version, rules, room_id, tip, auth_state))
}

/// The room's version, its rules and its ID, parsed from the stored row.
fn room_rules(
    room: &RoomRow,
) -> Result<(
    ruma::RoomVersionId,
    ruma::room_version_rules::RoomVersionRules,
    ruma::OwnedRoomId,
)> {
    Ok((room.room_version.clone(), room.rules()?, room.id()?))
}

/// The state keys authorising `new` from `sender` needs.
fn event_auth_keys(
    rules: &ruma::room_version_rules::RoomVersionRules,
    sender: &UserId,
    new: &NewContent,
) -> Result<Vec<(StateEventType, String)>> {
    auth_state_keys(
        rules,
        &new.kind,
        sender,
        new.state_key.as_deref(),
        &new.content,
    )
    .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))
}

/// The placing of an event on `tip` with `auth_state`: its auth events are that state's
/// (less the create event where the room ID implies it).
fn placing(
    version: ruma::RoomVersionId,
    rules: ruma::room_version_rules::RoomVersionRules,
    room_id: ruma::OwnedRoomId,
    tip: Tip,
    auth_state: StateEntries,
) -> Placing {
    let implied = implied_create_key(&rules);
    let mut auth_ids: Vec<OwnedEventId> = auth_state
        .iter()
        .filter(|(k, _)| Some(*k) != implied.as_ref())
        .map(|(_, p)| p.event_id.clone())
        .collect();
    auth_ids.sort();
    let Tip { prev_ids, depth } = tip;
    Placing {
        version,
        rules,
        room_id,
        prev_ids,
        depth,
        auth_state,
        auth_ids,
    }
}

/// Steps 2 to 5: place, build, sign and authorise a local event without storing it.
pub async fn prepare_local(
    store: &Store<'_>,
    room: &RoomRow,
    sender: &UserId,
    new: &NewContent,
) -> Result<Prepared> {
    let tip = Tip::of(store.db, room).await?;
    prepare_on(store, room, tip, sender, new).await
}

/// Steps 3 to 5 on a given tip (an event prepared just before this one, in the same batch).
pub async fn prepare_on(
    store: &Store<'_>,
    room: &RoomRow,
    tip: Tip,
    sender: &UserId,
    new: &NewContent,
) -> Result<Prepared> {
    let p = place_on(store.db, store.state, room, tip, sender, new).await?;
    build_authorised(store.keys, &p, sender, new)
}

/// Steps 3 to 5 on a given tip and on a state held in memory: for room creation, where each
/// event stands on the state the one before it made and none of it is stored yet.
pub fn prepare_on_state(
    keys: &ServerKeys,
    room: &RoomRow,
    tip: Tip,
    sender: &UserId,
    new: &NewContent,
    state: &StateEntries,
) -> Result<Prepared> {
    let (version, rules, room_id) = room_rules(room)?;
    let auth_state: StateEntries = event_auth_keys(&rules, sender, new)?
        .into_iter()
        .filter_map(|k| state.get(&k).cloned().map(|p| (k, p)))
        .collect();
    let p = placing(version, rules, room_id, tip, auth_state);
    build_authorised(keys, &p, sender, new)
}

/// Steps 4 and 5: build and sign the event placed by `p`, and authorise it against the state
/// before it.
fn build_authorised(
    keys: &ServerKeys,
    p: &Placing,
    sender: &UserId,
    new: &NewContent,
) -> Result<Prepared> {
    let placement = Placement {
        room_id: Some(&p.room_id),
        version: &p.version,
        rules: &p.rules,
        sender,
        prev_events: &p.prev_ids,
        auth_events: &p.auth_ids,
        depth: p.depth,
    };
    let (event_id, json) = pdu::build(keys, new, &placement)?;
    let pdu = Pdu::parse(event_id.clone(), &json)?;
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
    let stored = persist(store, lock, local_checked(room, event_id, json, pdu, txn)).await?;
    if !stored {
        return Err(Error::internal("a new local event already existed"));
    }
    Ok(())
}

/// A local event, checked, as the store takes it: on the current state, sent to every
/// server in the room.
pub fn local_checked<'a>(
    room: &'a RoomRow,
    event_id: &'a ruma::EventId,
    json: &'a str,
    pdu: &'a Pdu,
    txn: Option<TxnRef<'a>>,
) -> Checked<'a> {
    Checked {
        txn,
        ..Checked::accepted(
            event_id,
            json,
            pdu,
            room,
            room.state_group,
            match pdu.state_key {
                Some(_) => Current::Extend { also: Vec::new() },
                None => Current::Keep,
            },
            FanOut::Local,
        )
    }
}

/// How many forward extremities a new event references at most.
const MAX_PREV_EVENTS: usize = 10;
