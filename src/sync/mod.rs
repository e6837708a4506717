//! /sync: what changed for a user since a token, across all their rooms.
//!
//! Each kind of data is read for all rooms at once (rooms and memberships, recent timeline
//! events, state snapshots, account data), never a query per room for those; visibility is
//! still checked per room. A request with nothing new waits on the event stream (no polling
//! loop) until something arrives or the timeout passes.

pub mod e2e;
pub mod filter;
pub mod notify;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ruma::{OwnedDeviceId, OwnedRoomId, UserId};
use serde_json::Value;

use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::ephemeral::{Ephemeral, EphemeralPositions, EphemeralSync};
use crate::error::Result;
use crate::room::Rooms;
use crate::room::membership::INVITE_STATE_TYPES;
use crate::room::timeline::TopoToken;
use e2e::E2eSync;
use notify::SyncNotifier;
use token::SyncToken;

/// How a sync is asked for, in domain terms.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub since: Option<SyncToken>,
    /// The syncing device: to-device messages and key counts are per device.
    pub device_id: OwnedDeviceId,
    pub timeline_limit: i64,
    pub full_state: bool,
    pub include_leave: bool,
    /// Send only the member events of the timeline's senders (and the syncing user's own).
    pub lazy_load_members: bool,
    pub timeout: Duration,
    /// Which events timelines keep (the filter's `room.timeline` types and senders).
    pub timeline_select: db::sync::TimelineSelect,
}

#[derive(Debug, Default)]
pub struct JoinedRoomSync {
    pub timeline: Vec<Value>,
    pub limited: bool,
    pub prev_batch: Option<String>,
    pub state: Vec<Value>,
    pub account_data: Vec<Value>,
    /// `m.typing` and `m.receipt` events.
    pub ephemeral: Vec<Value>,
    pub summary: RoomSummary,
    /// Unread notifications per thread ('main' for the main timeline): (notifications,
    /// highlights).
    pub unread: BTreeMap<String, (i64, i64)>,
}

/// What a client needs to name and badge a room: heroes and member counts.
#[derive(Debug, Default, Clone)]
pub struct RoomSummary {
    pub heroes: Vec<String>,
    pub joined: i64,
    pub invited: i64,
}

/// Heroes listed per room, as the spec suggests.
const MAX_HEROES: i64 = 5;

#[derive(Debug, Default)]
pub struct SyncResponse {
    pub next_batch: SyncToken,
    pub join: BTreeMap<OwnedRoomId, JoinedRoomSync>,
    pub invite: BTreeMap<OwnedRoomId, Vec<Value>>,
    /// Rooms the user knocked on, with the same stripped state as invites.
    pub knock: BTreeMap<OwnedRoomId, Vec<Value>>,
    pub leave: BTreeMap<OwnedRoomId, JoinedRoomSync>,
    pub account_data: Vec<Value>,
    pub e2e: E2eSync,
    /// `m.presence` events.
    pub presence: Vec<Value>,
}

impl SyncResponse {
    fn is_empty(&self) -> bool {
        self.join.is_empty()
            && self.invite.is_empty()
            && self.knock.is_empty()
            && self.leave.is_empty()
            && self.account_data.is_empty()
            && self.e2e.is_empty()
            && self.presence.is_empty()
    }
}

/// Largest timeline a sync returns per room, whatever the filter asks.
const MAX_TIMELINE: i64 = 200;

#[derive(Clone)]
pub struct Sync {
    rooms: Rooms,
    notifier: SyncNotifier,
    ephemeral: Ephemeral,
}

impl Sync {
    /// Apply a sync filter to a response: rooms, sections, limits, then `event_format`
    /// (one query for the PDUs) and `event_fields`.
    pub async fn apply_filter(
        &self,
        filter: &filter::SyncFilter,
        out: &mut SyncResponse,
    ) -> Result<()> {
        filter.apply(out);
        if filter.federation_format {
            let ids = filter::SyncFilter::event_ids(out);
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let pdus: HashMap<String, String> = db::events::by_ids(self.rooms.db(), &refs)
                .await?
                .into_iter()
                .map(|r| (r.event_id, r.json))
                .collect();
            filter.to_federation_format(out, &pdus);
        }
        filter.apply_fields(out);
        Ok(())
    }

    pub fn new(rooms: Rooms, notifier: SyncNotifier, ephemeral: Ephemeral) -> Self {
        Sync {
            rooms,
            notifier,
            ephemeral,
        }
    }

    /// Answer now if anything changed since the token, otherwise wait for new events up to
    /// the timeout.
    pub async fn sync(&self, user: &UserId, req: SyncRequest) -> Result<SyncResponse> {
        let mut waiter = self.rooms.stream().subscribe();
        let mut notes = self.notifier.subscribe();
        let deadline = tokio::time::Instant::now() + req.timeout;
        loop {
            let response = self.sync_once(user, &req).await?;
            let initial = req.since.is_none() || req.full_state;
            if initial || !response.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(response);
            }
            // Sleep until the stream moves or the timeout passes; a timeout answers empty
            // with the same position.
            match tokio::time::timeout_at(deadline, notify::either_changed(&mut waiter, &mut notes))
                .await
            {
                Ok(Ok(())) => continue,
                _ => return Ok(response),
            }
        }
    }

    async fn sync_once(&self, user: &UserId, req: &SyncRequest) -> Result<SyncResponse> {
        let db = self.rooms.db();
        let upto = self.rooms.stream().safe_position();
        let ad_upto = db::sync::max_account_data_stream(db).await?;
        let since = if req.full_state { None } else { req.since };
        let after = since.map_or(0, |s| s.events);
        // Acknowledgement of to-device messages follows the client's token even with
        // full_state, so it uses `req.since`.
        let e2e = e2e::section(db, user, req.device_id.as_str(), req.since, upto).await?;
        let mut out = SyncResponse {
            next_batch: SyncToken {
                events: upto,
                account_data: ad_upto,
                to_device: e2e.to_device_pos,
                device_lists: e2e.device_lists_pos,
                ..Default::default()
            },
            e2e,
            ..Default::default()
        };

        let rooms = db::sync::user_rooms(db, user.as_str()).await?;
        let joined: Vec<&db::sync::UserRoom> =
            rooms.iter().filter(|r| r.membership == "join").collect();
        let limit = req.timeline_limit.clamp(1, MAX_TIMELINE);
        let joined_nids: Vec<i64> = joined.iter().map(|r| r.room_nid).collect();
        let ephemeral = self.ephemeral_section(user, &joined, since).await?;
        let recent =
            db::sync::recent_events(db, &joined_nids, after, upto, limit, &req.timeline_select)
                .await?;
        let mut by_room: HashMap<i64, Vec<StoredEvent>> = HashMap::new();
        for e in recent {
            by_room.entry(e.room_nid).or_default().push(e);
        }

        // Rooms joined since the token get their whole state, as in an initial sync: without
        // it a client would know nothing of a room it joined but its own join (clients learn
        // that a room is encrypted, its name and members from this).
        let newly_joined = match since {
            None => std::collections::HashSet::new(),
            Some(_) => self.newly_joined(user, &joined, after).await?,
        };

        // The timelines as the user may see them.
        let mut timelines = Vec::with_capacity(joined.len());
        for r in &joined {
            let mut events = by_room.remove(&r.room_nid).unwrap_or_default();
            let limited = events.len() as i64 > limit;
            events.truncate(limit as usize);
            events.reverse();
            let changed_membership = r.member_stream > after;
            if since.is_some() && events.is_empty() && !changed_membership {
                continue;
            }
            let row = room_row(r);
            let events = self.rooms.filter_visible(&row, user, events).await?;
            timelines.push((*r, row, events, limited));
        }

        // Whole state at the start of each timeline that needs it (the state before its first
        // visible event): all groups in one query.
        let mut start_groups: HashMap<i64, i64> = HashMap::new();
        for (r, _, events, _) in &timelines {
            if since.is_some() && !newly_joined.contains(&r.room_nid) {
                continue;
            }
            let group = match events.first() {
                Some(e) => e.state_before,
                None => r.state_group,
            };
            if let Some(g) = group {
                start_groups.insert(r.room_nid, g);
            }
        }
        let groups: Vec<i64> = start_groups.values().copied().collect();
        let state_rows = db::sync::states_of_groups(db, &groups).await?;
        let state_nids: Vec<i64> = state_rows.iter().map(|r| r.1).collect();
        let state_events: HashMap<i64, StoredEvent> = db::events::by_nids(db, &state_nids)
            .await?
            .into_iter()
            .map(|e| (e.event_nid, e))
            .collect();
        let mut state_by_group: HashMap<i64, Vec<StoredEvent>> = HashMap::new();
        for (group, nid) in state_rows {
            if let Some(e) = state_events.get(&nid) {
                state_by_group.entry(group).or_default().push(e.clone());
            }
        }

        for (r, row, events, limited) in timelines {
            let state = match start_groups.get(&r.room_nid) {
                Some(g) => state_by_group.remove(g).unwrap_or_default(),
                None if since.is_some() && limited => {
                    let first = events
                        .first()
                        .and_then(|e| e.stream_ordering)
                        .unwrap_or(upto + 1);
                    db::sync::state_events_between(db, r.room_nid, after, first).await?
                }
                None => Vec::new(),
            };
            let state = if req.lazy_load_members {
                self.lazy_members(&row, user, &events, state).await?
            } else {
                state
            };
            let prev_batch = events.first().map(|e| TopoToken::of(e).to_string());
            let timeline = self.rooms.to_client(&row, &events).await?;
            let state = self.rooms.to_client(&row, &state).await?;
            let Ok(room_id) = OwnedRoomId::try_from(r.room_id.as_str()) else {
                continue;
            };
            out.join.insert(
                room_id,
                JoinedRoomSync {
                    timeline,
                    limited,
                    prev_batch,
                    state,
                    account_data: Vec::new(),
                    ephemeral: Vec::new(),
                    summary: RoomSummary::default(),
                    unread: BTreeMap::new(),
                },
            );
        }

        for r in rooms
            .iter()
            .filter(|r| r.membership == "invite" && r.member_stream > after)
        {
            let Ok(room_id) = OwnedRoomId::try_from(r.room_id.as_str()) else {
                continue;
            };
            out.invite.insert(room_id, self.invite_state(r).await?);
        }

        for r in rooms
            .iter()
            .filter(|r| r.membership == "knock" && r.member_stream > after)
        {
            let Ok(room_id) = OwnedRoomId::try_from(r.room_id.as_str()) else {
                continue;
            };
            out.knock.insert(room_id, self.invite_state(r).await?);
        }

        for r in rooms.iter().filter(|r| {
            matches!(r.membership.as_str(), "leave" | "ban")
                && !r.forgotten
                && r.member_stream > after
                && (since.is_some() || req.include_leave)
        }) {
            let Ok(room_id) = OwnedRoomId::try_from(r.room_id.as_str()) else {
                continue;
            };
            // The timeline of a left room ends with the event that removed the user.
            let row = room_row(r);
            let events = db::events::by_nids(db, &[r.member_event_nid]).await?;
            let timeline = self.rooms.to_client(&row, &events).await?;
            out.leave.insert(
                room_id,
                JoinedRoomSync {
                    timeline,
                    ..Default::default()
                },
            );
        }

        add_ephemeral(&mut out, ephemeral);

        let ad_after = since.map_or(0, |s| s.account_data);
        for (room_id, kind, content, _) in
            db::sync::account_data_since(db, user.as_str(), ad_after).await?
        {
            let content: Value = serde_json::from_str(&content).unwrap_or(Value::Null);
            let event = serde_json::json!({"type": kind, "content": content});
            if room_id.is_empty() {
                out.account_data.push(event);
            } else if let Ok(id) = OwnedRoomId::try_from(room_id.as_str())
                && let Some(joined) = out.join.get_mut(&id)
            {
                joined.account_data.push(event);
            } else if let Ok(id) = OwnedRoomId::try_from(room_id.as_str())
                && joined.iter().any(|r| r.room_id == room_id)
            {
                out.join.entry(id).or_default().account_data.push(event);
            }
        }
        self.add_summaries(user, &rooms, &mut out).await?;
        Ok(out)
    }

    /// The joined rooms whose membership changed after `after` and was not `join` then.
    async fn newly_joined(
        &self,
        user: &UserId,
        joined: &[&db::sync::UserRoom],
        after: i64,
    ) -> Result<std::collections::HashSet<i64>> {
        let changed: Vec<i64> = joined
            .iter()
            .filter(|r| r.member_stream > after)
            .map(|r| r.room_nid)
            .collect();
        if changed.is_empty() {
            return Ok(Default::default());
        }
        let was_joined: std::collections::HashSet<i64> =
            db::sync::memberships_at(self.rooms.db(), user.as_str(), &changed, after)
                .await?
                .into_iter()
                .filter(|(_, m)| m == "join")
                .map(|(nid, _)| nid)
                .collect();
        Ok(changed
            .into_iter()
            .filter(|nid| !was_joined.contains(nid))
            .collect())
    }

    /// Typing, receipts and presence for the joined rooms, read before the timelines so
    /// nothing that lands in between is skipped by the next token.
    async fn ephemeral_section(
        &self,
        user: &UserId,
        joined: &[&db::sync::UserRoom],
        since: Option<SyncToken>,
    ) -> Result<EphemeralSync> {
        let rooms: Vec<(i64, &ruma::RoomId)> = joined
            .iter()
            .filter_map(|r| {
                <&ruma::RoomId>::try_from(r.room_id.as_str())
                    .ok()
                    .map(|id| (r.room_nid, id))
            })
            .collect();
        let since = since.map(|s| EphemeralPositions {
            typing: s.typing,
            receipts: s.receipts,
            presence: s.presence,
        });
        self.ephemeral.sync_section(user, &rooms, since).await
    }

    /// Fill in the summary and unread counts of every joined room in the response: three
    /// queries for all rooms.
    async fn add_summaries(
        &self,
        user: &UserId,
        rooms: &[db::sync::UserRoom],
        out: &mut SyncResponse,
    ) -> Result<()> {
        let nid_of: HashMap<&str, i64> = rooms
            .iter()
            .map(|r| (r.room_id.as_str(), r.room_nid))
            .collect();
        let nids: Vec<i64> = out
            .join
            .keys()
            .filter_map(|id| nid_of.get(id.as_str()).copied())
            .collect();
        if nids.is_empty() {
            return Ok(());
        }
        let db = self.rooms.db();
        let mut summaries: HashMap<i64, RoomSummary> = HashMap::new();
        for (nid, joined, invited) in db::sync::member_counts(db, &nids).await? {
            let s = summaries.entry(nid).or_default();
            s.joined = joined;
            s.invited = invited;
        }
        for (nid, hero) in db::sync::heroes(db, &nids, user.as_str(), MAX_HEROES).await? {
            summaries.entry(nid).or_default().heroes.push(hero);
        }
        let mut unread: HashMap<i64, BTreeMap<String, (i64, i64)>> = HashMap::new();
        for (nid, thread, n, h) in db::push::unread_counts(db, user.as_str(), &nids).await? {
            unread.entry(nid).or_default().insert(thread, (n, h));
        }
        for (room_id, joined) in out.join.iter_mut() {
            if let Some(nid) = nid_of.get(room_id.as_str()) {
                if let Some(s) = summaries.remove(nid) {
                    joined.summary = s;
                }
                joined.unread = unread.remove(nid).unwrap_or_default();
            }
        }
        Ok(())
    }

    /// Lazy-loaded membership: drop member events of users who did not send anything in the
    /// timeline, and add those senders' member events (as of the timeline's start) that the
    /// state section lacks. Redundant members are sent again rather than tracked per device.
    async fn lazy_members(
        &self,
        room: &RoomRow,
        user: &UserId,
        timeline: &[StoredEvent],
        state: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>> {
        let mut wanted: std::collections::BTreeSet<String> =
            timeline.iter().map(|e| e.sender.clone()).collect();
        wanted.insert(user.to_string());
        let state_key = |e: &StoredEvent| {
            serde_json::from_str::<Value>(&e.json)
                .ok()
                .and_then(|v| v["state_key"].as_str().map(str::to_owned))
        };
        let mut kept = Vec::with_capacity(state.len());
        let mut have = std::collections::BTreeSet::new();
        for e in state {
            if e.event_type != "m.room.member" {
                kept.push(e);
            } else if let Some(k) = state_key(&e)
                && wanted.contains(&k)
            {
                have.insert(k);
                kept.push(e);
            }
        }
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|u| !have.contains(*u))
            .map(String::as_str)
            .collect();
        let group = timeline
            .first()
            .and_then(|e| e.state_before)
            .or(room.state_group);
        if let (false, Some(group)) = (missing.is_empty(), group) {
            let keys: Vec<(&str, &str)> = missing.iter().map(|u| ("m.room.member", *u)).collect();
            let nids: Vec<i64> = db::state::load_keys(self.rooms.db(), group, &keys)
                .await?
                .into_iter()
                .map(|row| row.1)
                .collect();
            kept.extend(db::events::by_nids(self.rooms.db(), &nids).await?);
        }
        Ok(kept)
    }

    /// Stripped state for an invite: the invite itself and the room's public basics.
    async fn invite_state(&self, r: &db::sync::UserRoom) -> Result<Vec<Value>> {
        if let Some(json) = &r.invite_state
            && let Ok(events) = serde_json::from_str::<Vec<Value>>(json)
        {
            return Ok(events);
        }
        let db = self.rooms.db();
        let mut nids = vec![r.member_event_nid];
        if let Some(group) = r.state_group {
            let keys: Vec<(&str, &str)> = INVITE_STATE_TYPES.iter().map(|t| (*t, "")).collect();
            nids.extend(
                db::state::load_keys(db, group, &keys)
                    .await?
                    .into_iter()
                    .map(|row| row.1),
            );
        }
        let events = db::events::by_nids(db, &nids).await?;
        Ok(events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.json).ok())
            .map(|v| {
                serde_json::json!({
                    "type": v["type"], "state_key": v["state_key"], "sender": v["sender"], "content": v["content"]
                })
            })
            .collect())
    }
}

/// Put the ephemeral section into the response: each room's events (a room with nothing
/// else new still appears), presence, and the positions in the next token.
fn add_ephemeral(out: &mut SyncResponse, ephemeral: EphemeralSync) {
    out.next_batch.typing = ephemeral.positions.typing;
    out.next_batch.receipts = ephemeral.positions.receipts;
    out.next_batch.presence = ephemeral.positions.presence;
    for (room_id, events) in ephemeral.rooms {
        out.join
            .entry(room_id)
            .or_default()
            .ephemeral
            .extend(events);
    }
    out.presence = ephemeral.presence;
}

fn room_row(r: &db::sync::UserRoom) -> RoomRow {
    RoomRow {
        room_nid: r.room_nid,
        room_id: r.room_id.clone(),
        room_version: r.room_version.clone(),
        state_group: r.state_group,
        is_public: false,
    }
}
