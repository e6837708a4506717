//! The read side other servers rely on: single events, the state at an event (or the current
//! state, MSC2314), auth chains, /backfill and /get_missing_events walks, timestamps. Every
//! answer first checks that the asking server may read the room: not denied by its ACL and
//! with a member joined; events it could not see under the room's history visibility are
//! served redacted.

use ruma::{EventId, OwnedEventId, RoomId, RoomVersionId, ServerName};
use serde_json::value::RawValue;

use super::Rooms;
use super::pdu::implied_create_id;
use crate::db::{self, rooms::RoomRow};
use crate::error::{Error, Result};

/// The most events one /backfill or /get_missing_events answer holds.
pub const MAX_WALK: i64 = 100;
/// The most events an auth chain answer may hold.
const MAX_AUTH_CHAIN: i64 = 500_000;

/// The state at a point of a room, for /state and /state_ids.
pub struct StateAt<T> {
    pub room_version: RoomVersionId,
    pub state: Vec<T>,
    pub auth_chain: Vec<T>,
}

fn raw(json: String) -> Result<Box<RawValue>> {
    RawValue::from_string(json).map_err(|e| Error::internal(format!("stored event: {e}")))
}

impl Rooms {
    /// The room, if `server` may read it.
    pub async fn room_for_server(&self, room_id: &RoomId, server: &ServerName) -> Result<RoomRow> {
        let room = self.room(room_id).await?;
        self.check_server_acl(&room, server).await?;
        if !self.server_in_room(&room, server).await? {
            return Err(Error::forbidden("Your server is not in this room"));
        }
        Ok(room)
    }

    /// One event as a PDU (`GET /event`).
    pub async fn pdu_for_server(
        &self,
        event_id: &EventId,
        server: &ServerName,
    ) -> Result<Box<RawValue>> {
        let ev = db::events::by_id(self.db(), event_id.as_str())
            .await?
            .filter(|e| e.rejected_reason.is_none())
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let room_id = self.room_id_of(ev.room_nid).await?;
        let room = self.room_for_server(&room_id, server).await?;
        let mut out = self.for_server(&room, server, vec![ev]).await?;
        raw(out.pop().ok_or_else(|| Error::internal("event lost"))?)
    }

    async fn room_id_of(&self, room_nid: i64) -> Result<ruma::OwnedRoomId> {
        let id = db::rooms::id_of(self.db(), room_nid)
            .await?
            .ok_or_else(|| Error::internal("event of an unknown room"))?;
        ruma::OwnedRoomId::try_from(id).map_err(|e| Error::internal(e.to_string()))
    }

    /// A stored, placed event of this room (404 otherwise).
    async fn event_in_room(
        &self,
        room: &RoomRow,
        event_id: &EventId,
    ) -> Result<db::events::StoredEvent> {
        db::events::by_id(self.db(), event_id.as_str())
            .await?
            .filter(|e| e.room_nid == room.room_nid)
            .ok_or_else(|| Error::not_found("Event not found in this room"))
    }

    /// The state before `event_id` (or, without it, the current state) and its auth chain,
    /// as event numbers.
    async fn state_nids(
        &self,
        room: &RoomRow,
        event_id: Option<&EventId>,
    ) -> Result<(Vec<i64>, Vec<i64>)> {
        let group = match event_id {
            Some(id) => {
                let ev = self.event_in_room(room, id).await?;
                if ev.outlier {
                    return Err(Error::not_found("No state is known at that event"));
                }
                ev.state_before
            }
            None => room.state_group,
        };
        let state: Vec<i64> = match group {
            Some(g) => db::state::load(self.db(), g)
                .await?
                .into_iter()
                .map(|r| r.1)
                .collect(),
            None => Vec::new(),
        };
        let sets = vec![0; state.len()];
        let mut chain: Vec<i64> = db::events::auth_chains(self.db(), &sets, &state, MAX_AUTH_CHAIN)
            .await?
            .into_iter()
            .map(|r| r.1)
            .collect();
        chain.sort_unstable();
        chain.dedup();
        Ok((state, chain))
    }

    /// `/state`: full PDUs.
    pub async fn state_for_server(
        &self,
        room_id: &RoomId,
        event_id: Option<&EventId>,
        server: &ServerName,
    ) -> Result<StateAt<Box<RawValue>>> {
        let room = self.room_for_server(room_id, server).await?;
        let (state, chain) = self.state_nids(&room, event_id).await?;
        let load = |nids: Vec<i64>| async move {
            db::events::by_nids(self.db(), &nids)
                .await?
                .into_iter()
                .map(|e| raw(e.json))
                .collect::<Result<Vec<_>>>()
        };
        Ok(StateAt {
            room_version: room.room_version.clone(),
            state: load(state).await?,
            auth_chain: load(chain).await?,
        })
    }

    /// `/state_ids`: event IDs only.
    pub async fn state_ids_for_server(
        &self,
        room_id: &RoomId,
        event_id: Option<&EventId>,
        server: &ServerName,
    ) -> Result<StateAt<OwnedEventId>> {
        let room = self.room_for_server(room_id, server).await?;
        let (state, chain) = self.state_nids(&room, event_id).await?;
        let ids = |nids: Vec<i64>| async move {
            Ok::<_, Error>(
                db::graph::ids_of(self.db(), &nids)
                    .await?
                    .into_iter()
                    .filter_map(|id| OwnedEventId::try_from(id).ok())
                    .collect::<Vec<_>>(),
            )
        };
        Ok(StateAt {
            room_version: room.room_version.clone(),
            state: ids(state).await?,
            auth_chain: ids(chain).await?,
        })
    }

    /// `/event_auth`: the full auth chain of one event.
    pub async fn event_auth_for_server(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        server: &ServerName,
    ) -> Result<Vec<Box<RawValue>>> {
        let room = self.room_for_server(room_id, server).await?;
        let ev = self.event_in_room(&room, event_id).await?;
        let mut chain: Vec<i64> =
            db::events::auth_chains(self.db(), &[0], &[ev.event_nid], MAX_AUTH_CHAIN)
                .await?
                .into_iter()
                .map(|r| r.1)
                .collect();
        // Since room version 12 no event lists the create event, yet every event needs it.
        if let Some(create) = implied_create_id(&room.rules()?, room_id)
            && let Some(c) = db::events::by_id(self.db(), create.as_str()).await?
            && c.event_nid != ev.event_nid
            && !chain.contains(&c.event_nid)
        {
            chain.push(c.event_nid);
        }
        db::events::by_nids(self.db(), &chain)
            .await?
            .into_iter()
            .map(|e| raw(e.json))
            .collect()
    }

    /// `/backfill`: the events `from` and before, newest first.
    pub async fn backfill_for_server(
        &self,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: i64,
        server: &ServerName,
    ) -> Result<Vec<Box<RawValue>>> {
        let room = self.room_for_server(room_id, server).await?;
        let ids: Vec<&str> = from.iter().map(|e| e.as_str()).collect();
        let nids: Vec<i64> = db::graph::nids_of(self.db(), &ids)
            .await?
            .into_iter()
            .map(|r| r.1)
            .collect();
        let limit = limit.clamp(0, MAX_WALK);
        if nids.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let events = db::graph::backfill(self.db(), room.room_nid, &nids, limit).await?;
        self.for_server(&room, server, events)
            .await?
            .into_iter()
            .map(raw)
            .collect()
    }

    /// `/get_missing_events`: what lies between `earliest` and `latest`, oldest first.
    pub async fn missing_events_for_server(
        &self,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: i64,
        min_depth: i64,
        server: &ServerName,
    ) -> Result<Vec<Box<RawValue>>> {
        let room = self.room_for_server(room_id, server).await?;
        let nids = |ids: &[OwnedEventId]| {
            let ids: Vec<String> = ids.iter().map(|e| e.to_string()).collect();
            async move {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                Ok::<Vec<i64>, Error>(
                    db::graph::nids_of(self.db(), &refs)
                        .await?
                        .into_iter()
                        .map(|r| r.1)
                        .collect(),
                )
            }
        };
        let earliest = nids(earliest).await?;
        let latest = nids(latest).await?;
        let limit = limit.clamp(0, MAX_WALK);
        if latest.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        db::graph::missing_events(
            self.db(),
            room.room_nid,
            &earliest,
            &latest,
            min_depth,
            limit,
        )
        .await?
        .into_iter()
        .map(|e| raw(e.json))
        .collect()
    }

    /// `/timestamp_to_event`: the nearest event at or after (`forward`) or before `ts`.
    pub async fn timestamp_for_server(
        &self,
        room_id: &RoomId,
        ts: i64,
        forward: bool,
        server: &ServerName,
    ) -> Result<(OwnedEventId, i64)> {
        let room = self.room_for_server(room_id, server).await?;
        let (id, found) = db::reads::event_near_ts(self.db(), room.room_nid, ts, forward)
            .await?
            .ok_or_else(|| Error::not_found("No event found in that direction"))?;
        Ok((
            OwnedEventId::try_from(id).map_err(|e| Error::internal(e.to_string()))?,
            found,
        ))
    }
}

impl Rooms {
    /// Whether history we lack lies right before this event.
    pub async fn next_to_gap(&self, event_id: &EventId) -> Result<bool> {
        Ok(db::graph::next_to_gap(self.db(), event_id.as_str()).await?)
    }
}
