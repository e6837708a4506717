//! The rooms' part of a sync read, built around the joined rooms: their timelines as the user
//! may see them, the state before each, aggregations, ephemeral events and room account data.
//! Each kind of data is read for all rooms at once; only visibility and the client format go
//! room by room.

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, UserId};

use super::token::SyncToken;
use super::{
    JoinedRoomSync, MAX_TIMELINE, RoomsRead, Sync, SyncRequest, SyncResponse, account_data,
    room_row,
};
use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::error::Result;
use crate::notify::News;
use crate::room::timeline::TopoToken;

/// The rooms whose timeline is read as in an initial sync: all of them without a token, else
/// the rooms joined since it.
#[derive(Clone, Copy)]
struct FromStart<'a> {
    since: Option<SyncToken>,
    newly_joined: &'a HashSet<i64>,
}

impl FromStart<'_> {
    fn contains(&self, nid: &i64) -> bool {
        self.since.is_none() || self.newly_joined.contains(nid)
    }
}

/// One joined room's timeline as the user may see it, oldest first.
struct Timeline<'a> {
    room: &'a db::sync::UserRoom,
    row: RoomRow,
    events: Vec<StoredEvent>,
    limited: bool,
}

/// The whole state at the start of the timelines read from the start.
struct StartStates {
    /// Per room: the group before its timeline, and the current group when the timeline may
    /// not show every change up to it.
    groups: HashMap<i64, (i64, Option<i64>)>,
    /// The state of all those groups, each entry with its state key number.
    by_group: HashMap<i64, Vec<(i64, StoredEvent)>>,
}

impl Sync {
    /// The rooms' part of a read: timelines, state, memberships, ephemeral events, account
    /// data, summaries and unread counts.
    pub(super) async fn read_rooms(
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
        let from_start = FromStart {
            since,
            newly_joined: &newly_joined,
        };
        let nids = candidates.as_deref().unwrap_or(&joined_nids);
        let (ephemeral, recent) = tokio::try_join!(
            self.ephemeral_section(user, &joined, since, parts, carry),
            self.read_recent(user, read, nids, from_start, limit)
        )?;
        let timelines = self
            .visible_timelines(user, &joined, recent, from_start, after, limit)
            .await?;
        let starts = self.start_states(&timelines, from_start, req).await?;
        let summarise = self
            .add_joined(user, read, timelines, &starts, &newly_joined, out)
            .await?;

        if parts.memberships {
            self.add_memberships(user, req, rooms, since, out).await?;
        }

        add_ephemeral(out, ephemeral);

        if parts.account_data {
            self.add_account_data(user, since, &joined, out).await?;
        }
        self.add_summaries(user, rooms, &summarise, out).await?;
        Ok(())
    }

    /// The newest events of the rooms `nids`, up to `limit` + 1 each: after the token, or
    /// from the start for the rooms read from the start. Every room's visibility entries are
    /// then read at once, before the per-room checks.
    async fn read_recent(
        &self,
        user: &UserId,
        read: &RoomsRead<'_>,
        nids: &[i64],
        from_start: FromStart<'_>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let RoomsRead {
            req, since, upto, ..
        } = *read;
        let db = self.rooms.reads();
        let after = since.map_or(0, |s| s.events);
        let (fresh, known): (Vec<i64>, Vec<i64>) =
            nids.iter().partition(|n| from_start.contains(n));
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
        let groups = crate::room::visibility::visibility_groups(user, &recent);
        self.rooms.prepare_visibility(user, &groups).await?;
        Ok(recent)
    }

    /// The timelines as the user may see them, in the order of `joined`; a room with nothing
    /// new since the token and no change of the user's membership is left out.
    async fn visible_timelines<'a>(
        &self,
        user: &UserId,
        joined: &[&'a db::sync::UserRoom],
        recent: Vec<StoredEvent>,
        from_start: FromStart<'_>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Timeline<'a>>> {
        let since = from_start.since;
        let mut by_room: HashMap<i64, Vec<StoredEvent>> = HashMap::new();
        for e in recent {
            by_room.entry(e.room_nid).or_default().push(e);
        }

        let mut timelines = Vec::with_capacity(joined.len());
        for r in joined {
            let mut events = by_room.remove(&r.room_nid).unwrap_or_default();
            let mut limited = events.len() as i64 > limit;
            events.truncate(limit as usize);
            events.reverse();
            // A timeline read from the start that does not begin with the room's creation
            // has history before it (here, or on the servers it was joined through): the
            // client is told to page back for it.
            if from_start.contains(&r.room_nid)
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
            if from_start.contains(&r.room_nid) {
                let cut = visible_after_hidden_state(&read_kinds, &events);
                if cut > 0 {
                    events.drain(..cut);
                    limited = true;
                }
            }
            timelines.push(Timeline {
                room: r,
                row,
                events,
                limited,
            });
        }
        Ok(timelines)
    }

    /// Whole state at the start of each timeline that needs it (the state before its first
    /// visible event), and the current state where it differs: all groups in one query.
    async fn start_states(
        &self,
        timelines: &[Timeline<'_>],
        from_start: FromStart<'_>,
        req: &SyncRequest,
    ) -> Result<StartStates> {
        let mut start_groups: HashMap<i64, (i64, Option<i64>)> = HashMap::new();
        for Timeline {
            room: r, events, ..
        } in timelines
        {
            if !from_start.contains(&r.room_nid) {
                continue;
            }
            let group = match events.first() {
                Some(e) => e.state_before,
                None => r.state_group,
            };
            if let Some(g) = group {
                // State the timeline hides from this user is before its start (the cut
                // in `visible_timelines`); only a timeline filter can leave later state
                // unshown.
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
        let by_group = self.states_of_groups(&groups).await?;
        Ok(StartStates {
            groups: start_groups,
            by_group,
        })
    }

    /// Each joined room's section: its timeline with aggregations and the state before it.
    /// Returns the rooms whose summary is sent: all on an initial sync, else those whose
    /// members may have changed (clients keep the summary they have, as the spec allows).
    async fn add_joined(
        &self,
        user: &UserId,
        read: &RoomsRead<'_>,
        timelines: Vec<Timeline<'_>>,
        starts: &StartStates,
        newly_joined: &HashSet<i64>,
        out: &mut SyncResponse,
    ) -> Result<HashSet<i64>> {
        let RoomsRead { req, since, .. } = *read;
        let mut summarise: HashSet<i64> = HashSet::new();
        // The timelines' aggregations (threads, edits, references), for all rooms at once.
        let bundles = self
            .rooms
            .bundles(
                user,
                Some(&req.device_id),
                timelines.iter().flat_map(|t| t.events.iter()),
            )
            .await?;
        for Timeline {
            room: r,
            row,
            events,
            limited,
        } in timelines
        {
            let state = self
                .state_section(read, starts, r, &events, limited)
                .await?;
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
                let full = starts.groups.contains_key(&r.room_nid);
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
        Ok(summarise)
    }

    /// One joined room's state section: the whole state at the start of a timeline read from
    /// the start; for a limited timeline since the token, the state events between the token
    /// and its first event; else nothing.
    async fn state_section(
        &self,
        read: &RoomsRead<'_>,
        starts: &StartStates,
        r: &db::sync::UserRoom,
        events: &[StoredEvent],
        limited: bool,
    ) -> Result<Vec<StoredEvent>> {
        let RoomsRead { since, upto, .. } = *read;
        let after = since.map_or(0, |s| s.events);
        Ok(match starts.groups.get(&r.room_nid) {
            Some((start, end)) => start_state(
                starts.by_group.get(start).map_or(&[], Vec::as_slice),
                end.and_then(|e| starts.by_group.get(&e))
                    .map_or(&[], Vec::as_slice),
                events,
            ),
            None if since.is_some() && limited => {
                let first = events
                    .first()
                    .and_then(|e| e.stream_ordering)
                    .unwrap_or(upto + 1);
                db::sync::state_events_between(self.rooms.reads(), r.room_nid, after, first).await?
            }
            None => Vec::new(),
        })
    }

    /// Account data since the token: the user's own, and that of the rooms they are in.
    async fn add_account_data(
        &self,
        user: &UserId,
        since: Option<SyncToken>,
        joined: &[&db::sync::UserRoom],
        out: &mut SyncResponse,
    ) -> Result<()> {
        let db = self.rooms.reads();
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
    pub(super) async fn states_of_groups(
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
