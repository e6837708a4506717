//! /sync: what changed for a user since a token, across all their rooms.
//!
//! Each kind of data is read for all rooms at once (rooms and memberships, recent timeline
//! events, state snapshots, account data), never a query per room for those; visibility is
//! still checked per room. Timelines are read only for the rooms the notifier says changed
//! since the token, when it knows.
//!
//! A request with nothing new waits (no polling loop) until news for its user arrives (see
//! [`notify`]) or the timeout passes. The read after a wake-up covers only what the news
//! names: the rooms with new events, to-device messages, and so on; everything else is known
//! unchanged since the read before it.

mod account_data;
pub mod e2e;
pub mod feed;
pub mod filter;
mod lazy;
mod rooms;
pub mod sliding;
pub mod token;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ruma::events::room::member::MembershipState;
use ruma::{OwnedDeviceId, OwnedRoomId, UserId};
use serde_json::Value;

use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::ephemeral::Ephemeral;
use crate::error::Result;
use crate::notify::{Kinds, News, SyncNotifier};
use crate::room::Rooms;
use crate::room::timeline::TopoToken;
use e2e::E2eSync;
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
    /// With lazy loading, send the senders' member events even when the device has them.
    pub include_redundant_members: bool,
    pub timeout: Duration,
    /// Which events timelines keep (the filter's `room.timeline` types and senders).
    pub timeline_select: db::sync::TimelineSelect,
    /// The client's filter, applied to every read before it counts as news (a read that
    /// the filter empties keeps waiting), and the kinds of news it never lets through (a
    /// waiting sync is not woken for them).
    pub filter: Option<filter::SyncFilter>,
    pub ignored_news: Kinds,
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
    /// Sent when it may have changed (always on an initial sync).
    pub summary: Option<RoomSummary>,
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
    /// Nothing worth answering for: a joined room counts only with something in it (the
    /// filter may have emptied one that had typing or receipts only).
    fn is_empty(&self) -> bool {
        self.join.values().all(|r| {
            r.timeline.is_empty()
                && r.state.is_empty()
                && r.ephemeral.is_empty()
                && r.account_data.is_empty()
        }) && self.invite.is_empty()
            && self.knock.is_empty()
            && self.leave.is_empty()
            && self.account_data.is_empty()
            && self.e2e.is_empty()
            && self.presence.is_empty()
    }
}

/// Largest timeline a sync returns per room, whatever the filter asks.
const MAX_TIMELINE: i64 = 200;

/// A read after a wake-up: the news, and what the read before it found.
struct Delta {
    news: News,
    /// The token the read before answered with (nothing new up to it).
    prev: SyncToken,
    /// The user's rooms as the read before found them: news with no membership change of
    /// the user leaves them as they were.
    rooms: Vec<db::sync::UserRoom>,
}

/// What the rooms' part of a read works from.
#[derive(Clone, Copy)]
struct RoomsRead<'a> {
    req: &'a SyncRequest,
    /// The client's token, `None` for an initial (or full-state) sync.
    since: Option<SyncToken>,
    upto: i64,
    rooms: &'a [db::sync::UserRoom],
    news: Option<&'a News>,
    parts: Parts,
    carry: Option<SyncToken>,
}

/// Which parts of the sync a read covers beyond typing, timelines and unread counts.
#[derive(Debug, Clone, Copy)]
struct Parts {
    account_data: bool,
    to_device: bool,
    device_lists: bool,
    receipts: bool,
    presence: bool,
    /// Invites, knocks, leaves and rooms joined since the token.
    memberships: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        account_data: true,
        to_device: true,
        device_lists: true,
        receipts: true,
        presence: true,
        memberships: true,
    };

    fn of(kinds: Kinds) -> Parts {
        Parts {
            account_data: kinds.contains(Kinds::ACCOUNT_DATA),
            to_device: kinds.contains(Kinds::TO_DEVICE),
            device_lists: kinds.contains(Kinds::DEVICE_LISTS),
            receipts: kinds.contains(Kinds::RECEIPTS),
            presence: kinds.contains(Kinds::PRESENCE),
            memberships: kinds.contains(Kinds::MEMBERSHIP),
        }
    }
}

#[derive(Clone)]
pub struct Sync {
    rooms: Rooms,
    notifier: SyncNotifier,
    ephemeral: Ephemeral,
    lazy_sent: std::sync::Arc<lazy::LazySent>,
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
        if filter.federation_format && !out.is_empty() {
            let ids = filter::SyncFilter::event_ids(out);
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let pdus: HashMap<String, String> = db::events::by_ids(self.rooms.reads(), &refs)
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
            lazy_sent: Default::default(),
        }
    }

    /// Answer now if anything changed since the token, otherwise wait for news for this
    /// user up to the timeout.
    pub async fn sync(&self, user: &UserId, mut req: SyncRequest) -> Result<SyncResponse> {
        feed::ensure_started(self.rooms.db(), self.rooms.stream(), &self.notifier);
        // Read once per request, not per event or per wake-up. A change of the list wakes
        // the sync as account data; the next request follows it, as the spec asks (no
        // initial sync is forced: the client decides whether to start one).
        req.timeline_select.ignored =
            db::account_data::ignored_users(self.rooms.reads(), user.as_str()).await?;
        let initial = req.since.is_none() || req.full_state;
        // Registered before the first read: news that lands between the read and the wait
        // is kept for it, never lost.
        let waiter = (!initial && !req.timeout.is_zero())
            .then(|| self.notifier.waiter(user, &req.device_id));
        let deadline = tokio::time::Instant::now() + req.timeout;
        let (mut response, mut rooms) = self.sync_once(user, &req, None).await?;
        self.filtered(&req, &mut response).await?;
        let Some(waiter) = waiter else {
            return Ok(response);
        };
        loop {
            if !response.is_empty() {
                return Ok(response);
            }
            let joined: Vec<i64> = rooms
                .iter()
                .filter(|r| r.membership == MembershipState::Join)
                .map(|r| r.room_nid)
                .collect();
            waiter.watch_rooms(&joined);
            // A timeout answers empty with the same position.
            let Ok(news) = tokio::time::timeout_at(deadline, waiter.next()).await else {
                return Ok(response);
            };
            // News the filter drops would only wake this sync to answer empty, early.
            if news.kinds.without(req.ignored_news).is_empty() {
                continue;
            }
            let delta = (!news.kinds.contains(Kinds::MEMBERSHIP)).then(|| Delta {
                news,
                prev: response.next_batch,
                rooms: std::mem::take(&mut rooms),
            });
            (response, rooms) = self.sync_once(user, &req, delta).await?;
            self.filtered(&req, &mut response).await?;
        }
    }

    /// The response as the request's filter lets it through. An incremental sync then
    /// leaves out the joined rooms the filter emptied (nothing in their timeline, state,
    /// ephemeral or account data), as Synapse does: a change the client filtered away is
    /// no news of the room.
    async fn filtered(&self, req: &SyncRequest, out: &mut SyncResponse) -> Result<()> {
        if let Some(f) = &req.filter {
            self.apply_filter(f, out).await?;
        }
        if req.since.is_some() && !req.full_state {
            out.join.retain(|_, r| {
                !(r.timeline.is_empty()
                    && r.state.is_empty()
                    && r.ephemeral.is_empty()
                    && r.account_data.is_empty())
            });
        }
        Ok(())
    }

    /// One read of everything new since the token, or, after a wake-up (`delta`), of what
    /// the news names. Returns the response and the user's rooms it was built from.
    async fn sync_once(
        &self,
        user: &UserId,
        req: &SyncRequest,
        delta: Option<Delta>,
    ) -> Result<(SyncResponse, Vec<db::sync::UserRoom>)> {
        let db = self.rooms.reads();
        let since = if req.full_state { None } else { req.since };
        // After a wake-up, read only as far as the news goes: an event the notifier has not
        // published yet is in no news, and will wake this sync again. Otherwise the position
        // is taken before the rooms are listed, so a membership at or below it is listed.
        let (news, carry, rooms, upto) = match delta {
            Some(Delta { news, prev, rooms }) => {
                let upto = news.published.max(prev.events);
                (Some(news), Some(prev), rooms, upto)
            }
            None => {
                let upto = self.rooms.stream().safe_position();
                let rooms = db::sync::user_rooms(db, user.as_str()).await?;
                (None, None, rooms, upto)
            }
        };
        let parts = news.as_ref().map_or(Parts::ALL, |n| Parts::of(n.kinds));
        // Never behind the client's token: positions are the user's own, and a token from
        // before they were may hold a higher one.
        let ad_upto = match carry {
            Some(prev) if !parts.account_data => prev.account_data,
            _ => db::sync::max_account_data_stream(db, user.as_str())
                .await?
                .max(req.since.map_or(0, |s| s.account_data)),
        };
        let all_nids: Vec<i64> = rooms.iter().map(|r| r.room_nid).collect();
        let mut out = SyncResponse {
            next_batch: SyncToken {
                events: upto,
                account_data: ad_upto,
                ..Default::default()
            },
            ..Default::default()
        };
        // The device's part and the rooms' part are independent: read them side by side.
        // Acknowledgement of to-device messages follows the client's token even with
        // full_state, so it uses `req.since`.
        let e2e_read = e2e::E2eRead {
            to_device: parts.to_device,
            device_lists: parts.device_lists,
            members_unchanged: since.and_then(|s| {
                self.notifier
                    .members_changed_since(&all_nids, s.events, upto)
                    .map(|moved| !moved)
            }) == Some(true),
            carry,
        };
        let device_part =
            e2e::section(db, user, req.device_id.as_str(), req.since, upto, &e2e_read);
        let read = RoomsRead {
            req,
            since,
            upto,
            rooms: &rooms,
            news: news.as_ref(),
            parts,
            carry,
        };
        let (e2e, ()) = tokio::try_join!(device_part, self.read_rooms(user, &read, &mut out))?;
        out.next_batch.to_device = e2e.to_device_pos;
        out.next_batch.device_lists = e2e.device_lists_pos;
        out.e2e = e2e;
        Ok((out, rooms))
    }

    /// The rooms' part of a read: timelines, state, memberships, ephemeral events, account
    /// data, summaries and unread counts.
    async fn read_rooms(
        &self,
        user: &UserId,
        read: &RoomsRead<'_>,
        out: &mut SyncResponse,
    ) -> Result<()> {
        let RoomsRead {
            req,
            since,
            upto,
            rooms,
            news,
            parts,
            carry,
        } = *read;
        let db = self.rooms.reads();
        let after = since.map_or(0, |s| s.events);
        // A sync without a token starts the device's lazy-loading record afresh (the client
        // may have forgotten what it had).
        if req.since.is_none() && req.lazy_load_members {
            self.lazy_sent.reset(user, &req.device_id);
        }
        let joined: Vec<&db::sync::UserRoom> = rooms
            .iter()
            .filter(|r| r.membership == MembershipState::Join)
            .collect();
        let limit = req.timeline_limit.clamp(1, MAX_TIMELINE);
        let joined_nids: Vec<i64> = joined.iter().map(|r| r.room_nid).collect();
        let candidates = self.timeline_rooms(&joined, news, since, upto);
        // Rooms joined since the token are sent as in an initial sync: their newest events
        // whatever their position, and their whole state. Without that a client knows
        // nothing of a room it joined but its own join (not its history, nor that it is
        // encrypted, nor its name and members).
        let newly_joined = match since {
            Some(_) if parts.memberships => self.newly_joined(user, &joined, after).await?,
            _ => HashSet::new(),
        };
        let from_start = |nid: &i64| since.is_none() || newly_joined.contains(nid);
        let timeline_read = async {
            let nids = candidates.as_deref().unwrap_or(&joined_nids);
            let (fresh, known): (Vec<i64>, Vec<i64>) = nids.iter().partition(|n| from_start(n));
            let read = |nids: Vec<i64>, after: i64| async move {
                match nids.is_empty() {
                    true => Ok(Vec::new()),
                    false => {
                        db::sync::recent_events(db, &nids, after, upto, limit, &req.timeline_select)
                            .await
                    }
                }
            };
            // From the start: backfilled history (negative positions) included.
            let (mut recent, older) = tokio::try_join!(read(known, after), read(fresh, i64::MIN))?;
            recent.extend(older);
            // Every room's visibility entries in one read, before the per-room checks.
            let groups = crate::room::visibility::visibility_groups(user, &recent);
            self.rooms.prepare_visibility(user, &groups).await?;
            Ok::<_, crate::error::Error>(recent)
        };
        let (ephemeral, recent) = tokio::try_join!(
            self.ephemeral_section(user, &joined, since, parts, carry),
            timeline_read
        )?;
        let mut by_room: HashMap<i64, Vec<StoredEvent>> = HashMap::new();
        for e in recent {
            by_room.entry(e.room_nid).or_default().push(e);
        }

        // The timelines as the user may see them.
        let mut timelines = Vec::with_capacity(joined.len());
        for r in &joined {
            let mut events = by_room.remove(&r.room_nid).unwrap_or_default();
            let mut limited = events.len() as i64 > limit;
            events.truncate(limit as usize);
            events.reverse();
            // A timeline read from the start that does not begin with the room's creation
            // has history before it (here, or on the servers it was joined through): the
            // client is told to page back for it.
            if from_start(&r.room_nid)
                && events
                    .first()
                    .is_some_and(|e| e.event_type != "m.room.create")
            {
                limited = true;
            }
            let changed_membership = r.member_stream > after;
            if since.is_some() && events.is_empty() && !changed_membership {
                continue;
            }
            let row = room_row(r);
            // Accepted state events make a state group of their own: that tells them apart
            // without parsing (rejected events are never read here).
            let read_kinds: Vec<(i64, bool)> = events
                .iter()
                .map(|e| (e.event_nid, e.state_after != e.state_before))
                .collect();
            let mut events = self.rooms.filter_visible(&row, user, events).await?;
            if from_start(&r.room_nid) {
                let cut = visible_after_hidden_state(&read_kinds, &events);
                if cut > 0 {
                    events.drain(..cut);
                    limited = true;
                }
            }
            timelines.push((*r, row, events, limited));
        }

        // Whole state at the start of each timeline that needs it (the state before its first
        // visible event), and the current state where it differs: all groups in one query.
        let mut start_groups: HashMap<i64, (i64, Option<i64>)> = HashMap::new();
        for (r, _, events, _) in &timelines {
            if !from_start(&r.room_nid) {
                continue;
            }
            let group = match events.first() {
                Some(e) => e.state_before,
                None => r.state_group,
            };
            if let Some(g) = group {
                // State the timeline hides from this user is before its start (the cut
                // above); only a timeline filter can leave later state unshown.
                let end = r
                    .state_group
                    .filter(|e| *e != g && !req.timeline_select.keeps_all());
                start_groups.insert(r.room_nid, (g, end));
            }
        }
        let groups: Vec<i64> = start_groups
            .values()
            .flat_map(|(start, end)| std::iter::once(*start).chain(*end))
            .collect();
        let state_by_group = self.states_of_groups(&groups).await?;

        // Rooms whose summary is sent: all on an initial sync, else those whose members may
        // have changed (clients keep the summary they have, as the spec allows).
        let mut summarise: HashSet<i64> = HashSet::new();
        // The timelines' aggregations (threads, edits, references), for all rooms at once.
        let bundles = self
            .rooms
            .bundles(
                user,
                Some(&req.device_id),
                timelines.iter().flat_map(|t| t.2.iter()),
            )
            .await?;
        for (r, row, events, limited) in timelines {
            let state = match start_groups.get(&r.room_nid) {
                Some((start, end)) => start_state(
                    state_by_group.get(start).map_or(&[], Vec::as_slice),
                    end.and_then(|e| state_by_group.get(&e))
                        .map_or(&[], Vec::as_slice),
                    &events,
                ),
                None if since.is_some() && limited => {
                    let first = events
                        .first()
                        .and_then(|e| e.stream_ordering)
                        .unwrap_or(upto + 1);
                    db::sync::state_events_between(db, r.room_nid, after, first).await?
                }
                None => Vec::new(),
            };
            if since.is_none()
                || newly_joined.contains(&r.room_nid)
                || events
                    .iter()
                    .chain(&state)
                    .any(|e| e.event_type == "m.room.member")
            {
                summarise.insert(r.room_nid);
            }
            let state = if req.lazy_load_members {
                let full = start_groups.contains_key(&r.room_nid);
                self.lazy_members(&row, user, req, &events, state, full)
                    .await?
            } else {
                state
            };
            let prev_batch = events.first().map(|e| TopoToken::of(e).to_string());
            let mut timeline = self.rooms.to_client(&row, &events).await?;
            bundles.apply(&events, &mut timeline);
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
                    ..Default::default()
                },
            );
        }

        if parts.memberships {
            self.add_memberships(user, req, rooms, since, out).await?;
        }

        add_ephemeral(out, ephemeral);

        if parts.account_data {
            let ad_after = since.map_or(0, |s| s.account_data);
            for account_data::AccountDataEntry { room_id, event, .. } in
                account_data::account_data_since(db, user, ad_after, since.is_none()).await?
            {
                if room_id.is_empty() {
                    out.account_data.push(event);
                } else if let Ok(id) = OwnedRoomId::try_from(room_id.as_str())
                    && joined.iter().any(|r| r.room_id == room_id)
                {
                    out.join.entry(id).or_default().account_data.push(event);
                }
            }
        }
        self.add_summaries(user, rooms, &summarise, out).await?;
        Ok(())
    }

    /// The joined rooms whose timelines are read: after a wake-up, those the news names;
    /// otherwise, when the notifier knows, those with events since the token and those whose
    /// membership changed (`None`: all of them).
    fn timeline_rooms(
        &self,
        joined: &[&db::sync::UserRoom],
        news: Option<&News>,
        since: Option<SyncToken>,
        upto: i64,
    ) -> Option<Vec<i64>> {
        if let Some(news) = news {
            return Some(
                joined
                    .iter()
                    .map(|r| r.room_nid)
                    .filter(|nid| news.rooms.contains(nid))
                    .collect(),
            );
        }
        let after = since?.events;
        let nids: Vec<i64> = joined.iter().map(|r| r.room_nid).collect();
        let mut changed = self.notifier.rooms_changed_since(&nids, after, upto)?;
        changed.extend(
            joined
                .iter()
                .filter(|r| r.member_stream > after)
                .map(|r| r.room_nid),
        );
        changed.sort_unstable();
        changed.dedup();
        Some(changed)
    }

    /// The full state of several groups, each entry with its state key number, in two queries
    /// (none when there are no groups).
    async fn states_of_groups(
        &self,
        groups: &[i64],
    ) -> Result<HashMap<i64, Vec<(i64, StoredEvent)>>> {
        let mut state_by_group: HashMap<i64, Vec<(i64, StoredEvent)>> = HashMap::new();
        if groups.is_empty() {
            return Ok(state_by_group);
        }
        let db = self.rooms.reads();
        let state_rows = db::sync::states_of_groups(db, groups).await?;
        let mut state_nids: Vec<i64> = state_rows.iter().map(|r| r.2).collect();
        state_nids.sort_unstable();
        state_nids.dedup();
        let state_events: HashMap<i64, StoredEvent> = db::events::by_nids(db, &state_nids)
            .await?
            .into_iter()
            .map(|e| (e.event_nid, e))
            .collect();
        for (group, key, nid) in state_rows {
            if let Some(e) = state_events.get(&nid) {
                state_by_group
                    .entry(group)
                    .or_default()
                    .push((key, e.clone()));
            }
        }
        Ok(state_by_group)
    }

    /// Invites, knocks and left rooms whose membership changed since the token (left rooms
    /// on an initial sync only when the filter asks for them, `include_leave`).
    async fn add_memberships(
        &self,
        user: &UserId,
        req: &SyncRequest,
        rooms: &[db::sync::UserRoom],
        since: Option<SyncToken>,
        out: &mut SyncResponse,
    ) -> Result<()> {
        let after = since.map_or(0, |s| s.events);
        let with_leaves = since.is_some() || req.include_leave;
        let from_ignored = self
            .invites_from_ignored(rooms, after, &req.timeline_select.ignored)
            .await?;
        for r in rooms.iter().filter(|r| r.member_stream > after) {
            let Ok(room_id) = OwnedRoomId::try_from(r.room_id.as_str()) else {
                continue;
            };
            match r.membership {
                // Invites from ignored users are never shown (spec, "Ignoring Users").
                MembershipState::Invite if from_ignored.contains(&r.member_event_nid) => {}
                MembershipState::Invite => {
                    out.invite.insert(room_id, self.invite_state(r).await?);
                }
                MembershipState::Knock => {
                    out.knock.insert(room_id, self.invite_state(r).await?);
                }
                MembershipState::Leave | MembershipState::Ban if !r.forgotten && with_leaves => {
                    let left = self
                        .left_room(user, req, r, since.map(|s| s.events))
                        .await?;
                    out.leave.insert(room_id, left);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Sync {
    /// The membership events of the invites in `rooms` since `after` that an ignored user
    /// sent: one read for all of them, none when nobody is ignored.
    async fn invites_from_ignored(
        &self,
        rooms: &[db::sync::UserRoom],
        after: i64,
        ignored: &[String],
    ) -> Result<HashSet<i64>> {
        if ignored.is_empty() {
            return Ok(HashSet::new());
        }
        let invites: Vec<i64> = rooms
            .iter()
            .filter(|r| r.member_stream > after && r.membership == MembershipState::Invite)
            .map(|r| r.member_event_nid)
            .collect();
        if invites.is_empty() {
            return Ok(HashSet::new());
        }
        Ok(db::events::by_nids(self.rooms.reads(), &invites)
            .await?
            .into_iter()
            .filter(|e| ignored.contains(&e.sender))
            .map(|e| e.event_nid)
            .collect())
    }

    /// A room the user left (or was banned from): its timeline up to and including the
    /// event that removed them, since the token (`after`) or, on an initial sync, its newest
    /// events, as the user could see them; with the state before that timeline when the
    /// timeline does not cover everything since the token. Nothing after the leave is shown.
    async fn left_room(
        &self,
        user: &UserId,
        req: &SyncRequest,
        r: &db::sync::UserRoom,
        after: Option<i64>,
    ) -> Result<JoinedRoomSync> {
        let db = self.rooms.reads();
        let limit = req.timeline_limit.clamp(1, MAX_TIMELINE);
        let mut events = db::sync::recent_events(
            db,
            &[r.room_nid],
            after.unwrap_or(i64::MIN),
            r.member_stream,
            limit,
            &req.timeline_select,
        )
        .await?;
        let mut limited = events.len() as i64 > limit;
        events.truncate(limit as usize);
        events.reverse();
        if after.is_none()
            && events
                .first()
                .is_some_and(|e| e.event_type != "m.room.create")
        {
            limited = true;
        }
        let row = room_row(r);
        // The event that removed the user is theirs to see whatever the history visibility
        // (they are no longer a member once it applies); it is the newest read. A leave
        // outside the graph (an invite rejected out of band) is read on its own.
        let removal = match events.last() {
            Some(e) if e.event_nid == r.member_event_nid => events.pop(),
            _ if after.is_none_or(|a| r.member_stream > a) => {
                db::events::by_nids(db, &[r.member_event_nid])
                    .await?
                    .into_iter()
                    .find(|e| e.outlier)
            }
            _ => None,
        };
        let mut events = self.rooms.filter_visible(&row, user, events).await?;
        events.extend(removal);
        let state = match events.first().and_then(|e| e.state_before) {
            Some(group) if after.is_none() || limited => self
                .states_of_groups(&[group])
                .await?
                .remove(&group)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, e)| e)
                .collect(),
            _ => Vec::new(),
        };
        let prev_batch = events.first().map(|e| TopoToken::of(e).to_string());
        Ok(JoinedRoomSync {
            timeline: self.rooms.to_client(&row, &events).await?,
            limited,
            prev_batch,
            state: self.rooms.to_client(&row, &state).await?,
            ..Default::default()
        })
    }
}

/// How many of the `visible` events (in order) come before the last state event of the
/// read (`all`: event number, whether a state event) that the user may not see. A timeline
/// read from the start begins after it: the state section (the state before the timeline)
/// then carries that change, which a client would otherwise never learn of, or would see
/// undone by an older visible change of the same state in the timeline.
fn visible_after_hidden_state(all: &[(i64, bool)], visible: &[StoredEvent]) -> usize {
    let shown: HashSet<i64> = visible.iter().map(|e| e.event_nid).collect();
    let Some(last_hidden) = all
        .iter()
        .rposition(|(nid, state)| *state && !shown.contains(nid))
    else {
        return 0;
    };
    let before: HashSet<i64> = all[..last_hidden].iter().map(|(nid, _)| *nid).collect();
    visible
        .iter()
        .take_while(|e| before.contains(&e.event_nid))
        .count()
}

/// The state section of a timeline read from the start: the state before its first event,
/// except for keys whose current event the timeline does not show (left out by the client's
/// timeline filter; what history visibility hides comes before the timeline's start): those
/// come as they are now, or the client would never learn of them (that the room became
/// encrypted, say).
fn start_state(
    start: &[(i64, StoredEvent)],
    now: &[(i64, StoredEvent)],
    timeline: &[StoredEvent],
) -> Vec<StoredEvent> {
    let shown: HashSet<i64> = timeline.iter().map(|e| e.event_nid).collect();
    let mut by_key: BTreeMap<i64, &StoredEvent> = start.iter().map(|(k, e)| (*k, e)).collect();
    for (k, e) in now {
        if !shown.contains(&e.event_nid) {
            by_key.insert(*k, e);
        }
    }
    by_key.into_values().cloned().collect()
}

/// Put the ephemeral section into the response: each room's events (a room with nothing
/// else new still appears), presence, and the positions in the next token.
fn add_ephemeral(out: &mut SyncResponse, ephemeral: crate::ephemeral::EphemeralSync) {
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
