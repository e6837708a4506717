//! Filling the room's graph from other servers: history before our backward extremities
//! (`/backfill`, when a client pages past what we hold) and the state before an event whose
//! ancestors cannot be fetched (`/state_ids`, then the events we lack with `/event`, a bounded
//! number at a time). Everything fetched goes through the same checks as any PDU.

use std::collections::HashSet;

use futures::StreamExt;
use ruma::api::federation::backfill::get_backfill;
use ruma::api::federation::event::{get_event, get_room_state_ids};
use ruma::{EventId, OwnedEventId, OwnedServerName, RoomId, ServerName, UInt};
use serde_json::value::RawValue;

use super::Federation;
use super::pdu::verify_pdus;
use crate::error::{Error, Result};
use crate::room::Rooms;
use crate::room::relations::Reader;
use crate::room::remote::{Incoming, Outcome};
use crate::room::timeline::{EventFilter, Page, TopoToken};

/// How long `/messages` may wait for other servers' history before answering with what it
/// has.
const BACKFILL_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// What a client asks of `/messages`.
pub struct MessagesQuery {
    pub from: Option<TopoToken>,
    pub to: Option<TopoToken>,
    pub forward: bool,
    pub limit: i64,
    pub filter: EventFilter,
    /// Whether history we lack may be fetched from other servers.
    pub backfill: bool,
}

/// Servers asked for one backfill, in turn, before giving up.
const BACKFILL_SERVERS: usize = 3;
/// `/event` requests in flight at once while fetching a state.
const FETCH_CONCURRENCY: usize = 16;
/// The most events one state fetch may bring (a state and its auth chain).
const MAX_STATE_EVENTS: usize = 50_000;

impl Federation {
    /// A page of a room's timeline for `user` (`/messages`). Paging back past the history
    /// we hold fetches more from the room's other servers, within a time budget, and then
    /// answers as if it had been here all along.
    #[tracing::instrument(skip_all, fields(user = %reader.user, %room_id))]
    pub async fn messages(
        &self,
        rooms: &Rooms,
        reader: Reader<'_>,
        room_id: &RoomId,
        q: MessagesQuery,
    ) -> Result<Page> {
        let read = || rooms.messages(reader, room_id, q.from, q.to, q.forward, q.limit, &q.filter);
        let page = read().await?;
        if q.forward || page.end.is_some() || !q.backfill {
            return Ok(page);
        }
        let fetch = self.backfill(
            rooms,
            room_id,
            u32::try_from(q.limit.clamp(10, 100)).unwrap_or(100),
        );
        match tokio::time::timeout(BACKFILL_BUDGET, fetch).await {
            Ok(Ok(n)) if n > 0 => return read().await,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::info!(error = %e, "backfill failed"),
            Err(_) => tracing::info!("backfill ran out of time"),
        }
        Ok(page)
    }

    /// Fetch up to `limit` events of history before the room's backward extremities from
    /// the servers in the room, and store them. Returns how many were stored.
    pub async fn backfill(&self, rooms: &Rooms, room_id: &RoomId, limit: u32) -> Result<usize> {
        let extremities = rooms.backward_extremities(room_id).await?;
        if extremities.is_empty() {
            return Ok(0);
        }
        let room = rooms.room(room_id).await?;
        let mut servers: Vec<OwnedServerName> = rooms
            .servers_in(&room)
            .await?
            .into_iter()
            .filter_map(|s| OwnedServerName::try_from(s).ok())
            .filter(|s| s != rooms.server_name())
            .collect();
        // The room's creator's server has held the room longest.
        if let Some(origin) = room_id.server_name() {
            servers.sort_by_key(|s| s != origin);
        }
        for server in servers.iter().take(BACKFILL_SERVERS) {
            let request = get_backfill::v1::Request::new(
                room_id.to_owned(),
                extremities.clone(),
                UInt::from(limit),
            );
            let pdus = match self.client.send(server, request).await {
                Ok(r) => r.pdus,
                Err(e) => {
                    tracing::info!(%server, %room_id, error = %e, "backfill failed");
                    continue;
                }
            };
            let stored = self.store_history(rooms, server, room_id, &pdus).await?;
            if stored > 0 {
                tracing::debug!(%server, %room_id, stored, "backfilled");
                return Ok(stored);
            }
        }
        Ok(0)
    }

    /// Verify and store backfilled PDUs, oldest first; an event whose ancestors we lack is
    /// checked against the state `server` reports before it.
    async fn store_history(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        room_id: &RoomId,
        pdus: &[Box<RawValue>],
    ) -> Result<usize> {
        let room = rooms.room(room_id).await?;
        let rules = room.rules()?;
        let raws: Vec<&RawValue> = pdus.iter().map(|p| &**p).collect();
        let mut events: Vec<Incoming> = verify_pdus(&self.remote_keys, &rules, &raws)
            .await
            .into_iter()
            .filter_map(|(id, r)| match r {
                Ok(ev) => Some(ev),
                Err(e) => {
                    tracing::info!(event_id = ?id, error = %e, "backfilled PDU dropped");
                    None
                }
            })
            .filter(|e| e.pdu.belongs_to(room_id))
            .collect();
        events.sort_by_key(|e| e.pdu.depth);
        let mut stored = 0;
        for ev in &events {
            let mut outcome = rooms.receive_historical(room_id, ev, None).await?;
            if matches!(outcome, Outcome::Missing { .. }) {
                let group = self
                    .fetch_state_before(rooms, server, room_id, &ev.event_id)
                    .await?;
                outcome = rooms.receive_historical(room_id, ev, Some(group)).await?;
            }
            match outcome {
                Outcome::Stored { .. } => stored += 1,
                Outcome::Rejected(reason) => {
                    tracing::info!(event_id = %ev.event_id, %reason, "backfilled event rejected");
                }
                Outcome::AlreadyKnown => {}
                Outcome::Missing { .. } => {
                    tracing::info!(event_id = %ev.event_id, "backfilled event still lacks its auth events");
                }
            }
        }
        Ok(stored)
    }

    /// The state before `event_id` as `server` knows it: the IDs from `/state_ids`, the events
    /// we lack fetched with `/event` (verified, checked, stored as outliers), then stored as
    /// one snapshot group, whose number is returned.
    pub async fn fetch_state_before(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<i64> {
        let answer = self
            .client
            .send(
                server,
                get_room_state_ids::v1::Request::new(event_id.to_owned(), room_id.to_owned()),
            )
            .await?;
        let wanted: Vec<OwnedEventId> = answer
            .pdu_ids
            .iter()
            .chain(&answer.auth_chain_ids)
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if wanted.len() > MAX_STATE_EVENTS {
            return Err(Error::Upstream(format!(
                "{server} sent a state of {} events, more than we fetch",
                wanted.len()
            )));
        }
        let known = rooms.known_events(&wanted).await?;
        let missing: Vec<OwnedEventId> = wanted
            .into_iter()
            .filter(|id| !known.contains(id))
            .collect();
        let fetched: Vec<Box<RawValue>> = futures::stream::iter(missing.into_iter().map(|id| {
            let client = self.client.clone();
            let server = server.to_owned();
            async move {
                match client.send(&server, get_event::v1::Request::new(id.clone())).await {
                    Ok(r) => Some(r.pdu),
                    Err(e) => {
                        tracing::info!(%server, event_id = %id, error = %e, "could not fetch a state event");
                        None
                    }
                }
            }
        }))
        .buffer_unordered(FETCH_CONCURRENCY)
        .filter_map(|p| async move { p })
        .collect()
        .await;
        let room = rooms.room(room_id).await?;
        let rules = room.rules()?;
        let raws: Vec<&RawValue> = fetched.iter().map(|p| &**p).collect();
        let verified: Vec<Incoming> = verify_pdus(&self.remote_keys, &rules, &raws)
            .await
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .filter(|e| e.pdu.belongs_to(room_id))
            .collect();
        rooms.store_outliers(room_id, &verified).await?;
        rooms.snapshot_of(room_id, &answer.pdu_ids).await
    }
}

impl Federation {
    /// The client's `/timestamp_to_event`: the nearest local event, unless there is none or
    /// it sits next to a gap in our history; then the room's other servers are asked, and a
    /// nearer event they name is fetched with `/event` and checked before it is returned.
    pub async fn timestamp_to_event(
        &self,
        rooms: &Rooms,
        user: &ruma::UserId,
        room_id: &RoomId,
        ts: i64,
        forward: bool,
    ) -> Result<(OwnedEventId, i64)> {
        let local = match rooms.event_near_timestamp(user, room_id, ts, forward).await {
            Ok(found) => Some(found),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let ask_others = match &local {
            None => true,
            Some((id, _)) => rooms.next_to_gap(id).await?,
        };
        if !ask_others {
            return local.ok_or_else(|| Error::not_found("No event found"));
        }
        let room = rooms.room(room_id).await?;
        let rules = room.rules()?;
        let servers: Vec<OwnedServerName> = rooms
            .servers_in(&room)
            .await?
            .into_iter()
            .filter_map(|s| OwnedServerName::try_from(s).ok())
            .filter(|s| s != rooms.server_name())
            .collect();
        let dir = if forward {
            ruma::api::Direction::Forward
        } else {
            ruma::api::Direction::Backward
        };
        let millis =
            ruma::MilliSecondsSinceUnixEpoch(UInt::try_from(ts.max(0)).unwrap_or_default());
        // Other servers are asked within a budget: a client waits for the answer.
        let deadline = tokio::time::Instant::now() + TIMESTAMP_BUDGET;
        for server in servers.iter().take(BACKFILL_SERVERS) {
            let attempt =
                self.timestamp_from(rooms, server, room_id, &rules, (millis, dir), ts, &local);
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => {}
                Err(_) => {
                    tracing::info!(%server, %room_id, "timestamp_to_event ran out of time");
                    break;
                }
            }
        }
        local.ok_or_else(|| {
            let dir = if forward { "f" } else { "b" };
            Error::not_found(format!("Unable to find event from {ts} in direction {dir}"))
        })
    }

    /// One server's answer to `/timestamp_to_event`, if it names an event nearer to `ts` than
    /// `local`, genuine, and stored here with the history before it.
    #[allow(clippy::too_many_arguments)]
    async fn timestamp_from(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        room_id: &RoomId,
        rules: &ruma::room_version_rules::RoomVersionRules,
        (millis, dir): (ruma::MilliSecondsSinceUnixEpoch, ruma::api::Direction),
        ts: i64,
        local: &Option<(OwnedEventId, i64)>,
    ) -> Option<(OwnedEventId, i64)> {
        let request = ruma::api::federation::event::get_event_by_timestamp::v1::Request::new(
            room_id.to_owned(),
            millis,
            dir,
        );
        let answer = self.client.send(server, request).await.ok()?;
        let remote_ts = i64::try_from(u64::from(answer.origin_server_ts.0)).unwrap_or(i64::MAX);
        let nearer = match &local {
            None => true,
            Some((_, local_ts)) => (remote_ts - ts).abs() < (local_ts - ts).abs(),
        };
        if !nearer {
            return None;
        }
        // The event must exist and be genuine before a client is sent to it, and be here
        // when the client asks for it and what surrounds it (/event, /context,
        // /messages from it): it is stored, with the history before it.
        let Ok(event) = self
            .client
            .send(server, get_event::v1::Request::new(answer.event_id.clone()))
            .await
        else {
            return None;
        };
        let checked = verify_pdus(&self.remote_keys, rules, &[&*event.pdu]).await;
        if !matches!(checked.first(), Some((_, Ok(ev))) if ev.event_id == answer.event_id
            && ev.pdu.belongs_to(room_id))
        {
            return None;
        }
        if let Err(e) = self
            .fetch_around(rooms, server, room_id, &answer.event_id, event.pdu)
            .await
        {
            tracing::info!(%server, event_id = %answer.event_id, error = %e, "could not fetch the event found by timestamp");
            return None;
        }
        Some((answer.event_id, remote_ts))
    }
}

/// Events of history fetched before an event a client is sent to from another server: a page
/// of context for it.
const EVENTS_AROUND: u32 = 20;
/// How long a client's /timestamp_to_event may wait on other servers.
const TIMESTAMP_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

impl Federation {
    /// Store `event_id` (its PDU as `server` gave it) as history, then up to
    /// [`EVENTS_AROUND`] events before it from the same server. Fails unless the event itself
    /// is stored (or already was); the history before it is a best effort.
    async fn fetch_around(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: Box<RawValue>,
    ) -> Result<()> {
        self.store_history(rooms, server, room_id, &[pdu]).await?;
        if !rooms
            .known_events(&[event_id.to_owned()])
            .await?
            .contains(event_id)
        {
            return Err(Error::Upstream(format!("{event_id} could not be stored")));
        }
        let request = get_backfill::v1::Request::new(
            room_id.to_owned(),
            vec![event_id.to_owned()],
            UInt::from(EVENTS_AROUND),
        );
        match self.client.send(server, request).await {
            Ok(r) => {
                let stored = self.store_history(rooms, server, room_id, &r.pdus).await?;
                tracing::debug!(%server, %event_id, stored, "history fetched before an event found by timestamp");
            }
            Err(e) => {
                tracing::info!(%server, %event_id, error = %e, "backfill before an event found by timestamp failed")
            }
        }
        Ok(())
    }
}
