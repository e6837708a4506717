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
    let Store { db, keys, stream } = *store;
    let version = ruma::RoomVersionId::try_from(room.room_version.as_str())
        .map_err(|e| Error::internal(format!("stored room version invalid: {e}")))?;
    let rules = version
        .rules()
        .ok_or_else(|| Error::internal(format!("room version {version} has no rules")))?;
    let room_id = ruma::RoomId::parse(&room.room_id)
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

    // 3. The auth state.
    let auth_types = ruma::state_res::auth_types_for_event(
        &new.kind,
        sender,
        new.state_key.as_deref(),
        &new.content,
        &rules.authorization,
    )
    .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))?;
    let auth_state = match room.state_group {
        Some(group) => load_state_events(db, group, &auth_types).await?,
        None => HashMap::new(),
    };
    let mut auth_ids: Vec<OwnedEventId> = auth_state.values().map(|p| p.event_id.clone()).collect();
    auth_ids.sort();

    // 4. Build and sign.
    let placement = Placement {
        room_id: &room_id,
        version: &version,
        rules: &rules,
        sender,
        prev_events: &prev_ids,
        auth_events: &auth_ids,
        depth,
    };
    let (event_id, json) = pdu::build(keys, &new, &placement)?;
    if json.len() > MAX_PDU_BYTES {
        return Err(Error::too_large("Event is larger than 65536 bytes"));
    }
    let pdu = Pdu::parse(event_id.clone(), &json)?;

    // 5. Authorise against the state before it.
    let by_id: HashMap<&ruma::EventId, &Pdu> =
        auth_state.values().map(|p| (&*p.event_id, p)).collect();
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id| {
        by_id.get(id).map(|p| (*p).clone())
    })
    .map_err(Error::forbidden)?;
    ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |t, k| {
        auth_state.get(&(t.clone(), k.to_owned())).cloned()
    })
    .map_err(Error::forbidden)?;

    // 6. Store, in one transaction.
    let mut tx = db.begin().await?;
    let mut all_ids: Vec<&str> = vec![event_id.as_str()];
    all_ids.extend(prev_ids.iter().map(|e| e.as_str()));
    all_ids.extend(auth_ids.iter().map(|e| e.as_str()));
    let nids = db::events::intern_ids(&mut tx, &all_ids).await?;
    let nid = |id: &str| {
        nids.get(id)
            .copied()
            .ok_or_else(|| Error::internal("event ID not interned"))
    };
    let event_nid = nid(event_id.as_str())?;
    let prev_nids = prev_ids
        .iter()
        .map(|e| nid(e.as_str()))
        .collect::<Result<Vec<_>>>()?;
    let auth_nids = auth_ids
        .iter()
        .map(|e| nid(e.as_str()))
        .collect::<Result<Vec<_>>>()?;

    let kind = new.kind.to_string();
    let (state_key_nid, state_after) = match &new.state_key {
        Some(key) => {
            let k = db::state::intern_keys(&mut tx, &[(kind.as_str(), key.as_str())]).await?;
            let sk = *k
                .get(&(kind.clone(), key.clone()))
                .ok_or_else(|| Error::internal("state key not interned"))?;
            let group =
                new_state_group(&mut tx, room.room_nid, room.state_group, sk, event_nid).await?;
            (Some(sk), Some(group))
        }
        None => (None, room.state_group),
    };
    let position = db::events::next_stream_position(&mut tx).await?;
    let in_flight = stream.begin(position);
    db::events::insert_live(
        &mut tx,
        &db::events::NewEvent {
            event_nid,
            room_nid: room.room_nid,
            event_type: &kind,
            state_key_nid,
            sender: sender.as_str(),
            origin_server_ts: i64::try_from(u64::from(pdu.origin_server_ts.0)).unwrap_or(i64::MAX),
            depth,
            json: &json,
            outlier: false,
            rejected_reason: None,
            soft_failed: false,
            state_before: room.state_group,
            state_after,
        },
        position,
    )
    .await?;
    db::events::insert_edges(&mut tx, event_nid, &prev_nids, &auth_nids).await?;
    db::events::advance_forward_extremities(&mut tx, room.room_nid, event_nid, &prev_nids).await?;
    if let (Some(sk), Some(group)) = (state_key_nid, state_after) {
        db::state::set_current(&mut tx, room.room_nid, sk, event_nid).await?;
        db::rooms::set_state_group(&mut tx, room.room_nid, group).await?;
    }
    if new.kind == TimelineEventType::RoomMember
        && let Some(target) = &new.state_key
    {
        let membership = membership_of(&new.content);
        db::rooms::set_membership(&mut tx, room.room_nid, target, &membership, event_nid).await?;
    }
    if let Some(target) = &pdu.redacts
        && let Some(target) = db::events::by_id(&mut *tx, target.as_str()).await?
        && target.room_nid == room.room_nid
    {
        db::events::set_redacted_by(&mut tx, target.event_nid, event_nid).await?;
    }
    if let Some(t) = txn {
        db::events::insert_txn(
            &mut tx,
            room.room_nid,
            sender.as_str(),
            t.device_id,
            t.txn_id,
            event_nid,
        )
        .await?;
    }
    tx.commit().await?;
    in_flight.committed();
    tracing::debug!(%event_id, room_id = %room.room_id, kind = %kind, "event appended");
    Ok(event_id)
}

/// How many forward extremities a new event references at most.
const MAX_PREV_EVENTS: usize = 10;
/// The spec's limit on a PDU's size.
const MAX_PDU_BYTES: usize = 65_536;

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

/// A new state group: `prev` plus one entry, as a delta unless the chain is at its cap.
async fn new_state_group(
    tx: &mut sqlx::PgConnection,
    room_nid: i64,
    prev: Option<i64>,
    state_key_nid: i64,
    event_nid: i64,
) -> Result<i64> {
    let Some(prev) = prev else {
        return Ok(
            db::state::create_group(tx, room_nid, None, &[(state_key_nid, event_nid)]).await?,
        );
    };
    let len = db::state::chain_len(&mut *tx, prev).await?;
    if len + 1 < db::state::MAX_CHAIN_LEN {
        return Ok(db::state::create_group(
            tx,
            room_nid,
            Some((prev, len)),
            &[(state_key_nid, event_nid)],
        )
        .await?);
    }
    // The chain is at its cap: write the whole state as a new snapshot.
    let mut entries: Vec<(i64, i64)> = db::state::load(&mut *tx, prev)
        .await?
        .into_iter()
        .filter(|r| r.0 != state_key_nid)
        .map(|r| (r.0, r.1))
        .collect();
    entries.push((state_key_nid, event_nid));
    Ok(db::state::create_group(tx, room_nid, None, &entries).await?)
}

/// The state events for `keys` in `group`, parsed, keyed by (type, state_key).
pub async fn load_state_events(
    db: &PgPool,
    group: i64,
    keys: &[(StateEventType, String)],
) -> Result<HashMap<(StateEventType, String), Pdu>> {
    let strs: Vec<(String, &str)> = keys
        .iter()
        .map(|(t, k)| (t.to_string(), k.as_str()))
        .collect();
    let pairs: Vec<(&str, &str)> = strs.iter().map(|(t, k)| (t.as_str(), *k)).collect();
    let rows = db::state::load_keys(db, group, &pairs).await?;
    let nids: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let events = db::events::by_nids(db, &nids).await?;
    let mut out = HashMap::new();
    for e in events {
        let id = OwnedEventId::try_from(e.event_id.as_str())
            .map_err(|err| Error::internal(format!("stored event ID invalid: {err}")))?;
        let pdu = Pdu::parse(id, &e.json)?;
        if let Some(k) = &pdu.state_key {
            out.insert((StateEventType::from(pdu.kind.to_string()), k.clone()), pdu);
        }
    }
    Ok(out)
}
