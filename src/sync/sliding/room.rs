//! The rooms of a sliding sync response: which of the rooms in scope have something new for
//! the connection, and their timelines, required state and summaries, each kind read for
//! all rooms at once.

use std::collections::{BTreeMap, HashMap, HashSet};

use ruma::{DeviceId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;

use super::conn::{ConnState, RoomSent, Standing};
use super::request::{MAX_TIMELINE, RoomConfig};
use super::{Hero, RoomData};
use crate::db::{
    self, events::StoredEvent, rooms::RoomRow, sliding::RoomBounds, sliding::SlidingRoom,
};
use crate::error::Result;
use crate::room::timeline::TopoToken;
use crate::sync::{MAX_HEROES, Sync};

/// What the rooms' part of a read works from.
pub(super) struct RoomsRead<'a> {
    pub user: &'a UserId,
    /// The syncing device: its own events carry their transaction IDs.
    pub device: &'a DeviceId,
    pub upto: i64,
    pub prev: Option<&'a ConnState>,
    pub direct: &'a HashSet<String>,
    /// Users whose events timelines leave out.
    pub ignored: &'a [String],
}

/// A joined or departed room to read.
struct Plan<'a> {
    r: &'a SlidingRoom,
    config: &'a RoomConfig,
    standing: Standing,
    initial: bool,
    /// Whether its whole required state is sent (new to the connection, or asked for with
    /// another required_state than last time).
    full_state: bool,
    /// Whether its state is the one it was last sent with: no state changed, so there is no
    /// required state to send and its summary is the one sent.
    same_state: bool,
    bounds: RoomBounds,
}

/// A room's name, avatar, heroes and counts.
#[derive(Default)]
struct Summary {
    name: Option<String>,
    canonical_alias: Option<String>,
    avatar: Option<String>,
    heroes: Vec<Hero>,
    joined: i64,
    invited: i64,
}

impl Sync {
    /// Fill `out.rooms` for the rooms in `scope` and record in `state` what each was sent
    /// with. Returns the rooms sent with `initial: true`.
    pub(super) async fn sliding_rooms(
        &self,
        read: &RoomsRead<'_>,
        scope: &BTreeMap<i64, RoomConfig>,
        rooms: &HashMap<i64, &SlidingRoom>,
        state: &mut ConnState,
        out: &mut super::SlidingResponse,
    ) -> Result<HashSet<i64>> {
        let (mut plans, mut initial_rooms) =
            self.plan_rooms(read, scope, rooms, state, out).await?;
        let unread = self.sliding_unread(read.user, &plans).await?;
        let quiet = self.sliding_quiet_rooms(read, &plans, &unread).await?;
        plans.retain(|p| {
            if !quiet.contains(&p.r.room_nid) {
                return true;
            }
            // Nothing new up to here: the next read starts from here.
            if let Some(sent) = state.rooms.get_mut(&p.r.room_nid) {
                sent.upto = p.bounds.upto;
            }
            false
        });
        if plans.is_empty() {
            return Ok(initial_rooms);
        }

        let timelines = self.sliding_timelines(read, &plans).await?;
        let required = self
            .sliding_required_state(read.user, &plans, &timelines)
            .await?;
        let joined: Vec<&Plan> = plans
            .iter()
            .filter(|p| p.standing == Standing::Joined && !p.same_state)
            .collect();
        let mut summaries = self.sliding_summaries(read.user, &joined).await?;
        let bundles = self
            .rooms
            .bundles(
                read.user,
                Some(read.device),
                timelines.values().flat_map(|t| t.events.iter()),
            )
            .await?;

        let mut timelines = timelines;
        let mut required = required;
        for p in &plans {
            let r = p.r;
            let Ok(room_id) = OwnedRoomId::try_from(r.room_id.as_str()) else {
                continue;
            };
            let row = room_row(r);
            let t = timelines.remove(&r.room_nid).unwrap_or_default();
            let state_events = required.remove(&r.room_nid).unwrap_or_default();
            let mut data = RoomData {
                initial: p.initial,
                bump_stamp: Some(r.bump_stamp.max(0)),
                limited: t.limited,
                prev_batch: t.prev_batch.clone(),
                num_live: Some(match read.prev {
                    Some(prev) => t
                        .events
                        .iter()
                        .filter(|e| e.stream_ordering.unwrap_or(0) > prev.events)
                        .count() as i64,
                    None => 0,
                }),
                ..Default::default()
            };
            let mut timeline = self.rooms.to_client(&row, &t.events).await?;
            bundles.apply(&t.events, &mut timeline);
            data.timeline = timeline;
            data.required_state = self.rooms.to_client(&row, &state_events).await?;
            let mut summary_print = 0;
            let is_dm = read.direct.contains(r.room_id.as_str());
            let mut counts = (0, 0);
            let sent = read.prev.and_then(|prev| prev.rooms.get(&r.room_nid));
            if p.standing == Standing::Joined {
                counts = unread.get(&r.room_nid).copied().unwrap_or_default();
                data.notification_count = Some(counts.0);
                data.highlight_count = Some(counts.1);
                data.is_dm = Some(is_dm);
                match (p.same_state, sent) {
                    (true, Some(s)) => summary_print = s.summary,
                    _ => {
                        let s = summaries.remove(&r.room_nid).unwrap_or_default();
                        summary_print = s.fingerprint();
                        s.fill(&mut data);
                    }
                }
            }
            let changed = p.initial
                || !data.timeline.is_empty()
                || !data.required_state.is_empty()
                || sent.is_none_or(|s| {
                    s.summary != summary_print
                        || s.membership != r.membership
                        || s.is_dm != is_dm
                        || s.unread != counts
                });
            state.rooms.insert(
                r.room_nid,
                RoomSent {
                    membership: r.membership.clone(),
                    upto: p.bounds.upto,
                    required_state: p.config.required_state.fingerprint(),
                    summary: summary_print,
                    is_dm,
                    unread: counts,
                    state_group: match p.standing {
                        Standing::Joined => r.state_group,
                        _ => None,
                    },
                },
            );
            if changed {
                if p.initial {
                    initial_rooms.insert(r.room_nid);
                }
                out.rooms.insert(room_id, data);
            }
        }
        Ok(initial_rooms)
    }

    /// What to read of each room in scope. An invite has nothing to read: it is sent here,
    /// once per invite, and returned among the rooms sent with `initial: true`. A room the
    /// user left is planned once more, to send their leave.
    async fn plan_rooms<'a>(
        &self,
        read: &RoomsRead<'_>,
        scope: &'a BTreeMap<i64, RoomConfig>,
        rooms: &HashMap<i64, &'a SlidingRoom>,
        state: &mut ConnState,
        out: &mut super::SlidingResponse,
    ) -> Result<(Vec<Plan<'a>>, HashSet<i64>)> {
        let mut plans = Vec::new();
        let mut initial_rooms = HashSet::new();
        for (nid, config) in scope {
            let Some(r) = rooms.get(nid).copied() else {
                continue;
            };
            let standing = Standing::of(&r.membership);
            let sent = read.prev.and_then(|p| p.rooms.get(nid));
            let was = sent.map(|s| Standing::of(&s.membership));
            let fingerprint = config.required_state.fingerprint();
            match standing {
                // The stream of a room ends with the user's leave, sent once.
                Standing::Gone if was == Some(Standing::Gone) => continue,
                Standing::Invited => {
                    if was == Some(Standing::Invited)
                        && sent.is_some_and(|s| s.upto >= r.member_stream)
                    {
                        continue;
                    }
                    let data = self.sliding_invite(r, read.direct).await?;
                    if let Ok(id) = OwnedRoomId::try_from(r.room_id.as_str()) {
                        out.rooms.insert(id, data);
                        initial_rooms.insert(r.room_nid);
                    }
                    state.rooms.insert(
                        r.room_nid,
                        RoomSent {
                            membership: r.membership.clone(),
                            upto: r.member_stream,
                            required_state: fingerprint,
                            summary: 0,
                            is_dm: false,
                            unread: (0, 0),
                            state_group: None,
                        },
                    );
                    continue;
                }
                _ => {}
            }
            let initial =
                was.is_none() || (standing == Standing::Joined && was != Some(Standing::Joined));
            // Nothing of a room the user is not in is read past their membership event.
            let cap = match standing {
                Standing::Joined => read.upto,
                _ => r.member_stream.min(read.upto),
            };
            let after = match (initial, sent) {
                (false, Some(s)) => s.upto,
                _ => i64::MIN,
            };
            plans.push(Plan {
                r,
                config,
                standing,
                initial,
                full_state: initial || sent.is_none_or(|s| s.required_state != fingerprint),
                same_state: !initial
                    && standing == Standing::Joined
                    && r.state_group.is_some()
                    && sent.is_some_and(|s| s.state_group == r.state_group),
                bounds: RoomBounds {
                    room_nid: r.room_nid,
                    after,
                    upto: cap,
                },
            });
        }
        Ok((plans, initial_rooms))
    }

    /// The user's unread counts (notifications, highlights) in the planned joined rooms, all
    /// threads together: one query.
    async fn sliding_unread(
        &self,
        user: &UserId,
        plans: &[Plan<'_>],
    ) -> Result<HashMap<i64, (i64, i64)>> {
        let nids: Vec<i64> = plans
            .iter()
            .filter(|p| p.standing == Standing::Joined)
            .map(|p| p.r.room_nid)
            .collect();
        let mut out: HashMap<i64, (i64, i64)> = HashMap::new();
        if nids.is_empty() {
            return Ok(out);
        }
        for (nid, _, n, h) in
            db::push::unread_counts(self.rooms.reads(), user.as_str(), &nids).await?
        {
            let c = out.entry(nid).or_default();
            c.0 += n;
            c.1 += h;
        }
        Ok(out)
    }

    /// The planned rooms with nothing new for the connection, which need no reading: joined
    /// rooms it was sent before with the same required_state, no event since, and the same
    /// DM flag and unread counts (the parts of a room's data that change without an event in
    /// it). When nothing happened since the last read, this takes no query at all.
    async fn sliding_quiet_rooms(
        &self,
        read: &RoomsRead<'_>,
        plans: &[Plan<'_>],
        unread: &HashMap<i64, (i64, i64)>,
    ) -> Result<HashSet<i64>> {
        let mut quiet: HashSet<i64> = plans
            .iter()
            .filter(|p| p.standing == Standing::Joined && !p.initial && !p.full_state)
            .filter(|p| {
                let nid = p.r.room_nid;
                read.prev
                    .and_then(|prev| prev.rooms.get(&nid))
                    .is_some_and(|sent| {
                        sent.membership == p.r.membership
                            && sent.is_dm == read.direct.contains(p.r.room_id.as_str())
                            && sent.unread == unread.get(&nid).copied().unwrap_or_default()
                    })
            })
            .map(|p| p.r.room_nid)
            .collect();
        // Rooms last sent at the same position are asked about together: the notifier's
        // log of recent events answers without a query when it reaches back that far.
        let mut by_after: BTreeMap<i64, Vec<RoomBounds>> = BTreeMap::new();
        for p in plans {
            if quiet.contains(&p.r.room_nid) && p.bounds.after < p.bounds.upto {
                by_after.entry(p.bounds.after).or_default().push(p.bounds);
            }
        }
        let mut unknown = Vec::new();
        for (after, bounds) in by_after {
            let nids: Vec<i64> = bounds.iter().map(|b| b.room_nid).collect();
            match self.notifier.rooms_changed_since(&nids, after, read.upto) {
                Some(changed) => changed.iter().for_each(|nid| {
                    quiet.remove(nid);
                }),
                None => unknown.extend(bounds),
            }
        }
        if !unknown.is_empty() {
            for nid in db::sliding::rooms_with_events(self.rooms.reads(), &unknown).await? {
                quiet.remove(&nid);
            }
        }
        Ok(quiet)
    }

    /// The timelines of the planned rooms, as the user may see them: one query for all.
    async fn sliding_timelines(
        &self,
        read: &RoomsRead<'_>,
        plans: &[Plan<'_>],
    ) -> Result<HashMap<i64, Timeline>> {
        let user = read.user;
        let bounds: Vec<RoomBounds> = plans
            .iter()
            .filter(|p| p.bounds.after < p.bounds.upto)
            .map(|p| p.bounds)
            .collect();
        let mut out = HashMap::new();
        if bounds.is_empty() {
            return Ok(out);
        }
        let per_room = plans
            .iter()
            .map(|p| p.config.timeline_limit.clamp(0, MAX_TIMELINE))
            .max()
            .unwrap_or(0)
            .max(1);
        let rows =
            db::sliding::timelines(self.rooms.reads(), &bounds, per_room, read.ignored).await?;
        let groups: Vec<i64> = rows
            .iter()
            .filter_map(|e| e.state_after.or(e.state_before))
            .collect();
        self.rooms.prepare_visibility(user, &groups).await?;
        let mut by_room: HashMap<i64, Vec<StoredEvent>> = HashMap::new();
        for e in rows {
            by_room.entry(e.room_nid).or_default().push(e);
        }
        for p in plans {
            let Some(mut events) = by_room.remove(&p.r.room_nid) else {
                continue;
            };
            let limit = p.config.timeline_limit.clamp(0, MAX_TIMELINE) as usize;
            // Newest first: the newest tells where a timeline of none would start.
            let newest = events.first().map(|e| TopoToken {
                depth: e.depth,
                stream: e.stream_ordering.unwrap_or(0) + 1,
            });
            let mut limited = events.len() > limit;
            events.truncate(limit);
            events.reverse();
            // Sent from the start without the room's creation: there is history before it.
            if p.initial
                && events
                    .first()
                    .is_none_or(|e| e.event_type != "m.room.create")
            {
                limited = true;
            }
            // The user's own membership event is theirs to see, whatever the room's history
            // visibility makes of it (a leave ends what they may see of the room).
            let own = events
                .iter()
                .find(|e| e.event_nid == p.r.member_event_nid)
                .cloned();
            let mut events = self
                .rooms
                .filter_visible(&room_row(p.r), user, events)
                .await?;
            if let Some(own) = own
                && !events.iter().any(|e| e.event_nid == own.event_nid)
            {
                let at = events
                    .iter()
                    .position(|e| e.stream_ordering > own.stream_ordering)
                    .unwrap_or(events.len());
                events.insert(at, own);
            }
            let prev_batch = match events.first() {
                Some(e) => Some(TopoToken::of(e)),
                None => newest,
            };
            out.insert(
                p.r.room_nid,
                Timeline {
                    events,
                    limited,
                    prev_batch: prev_batch.map(|t| t.to_string()),
                },
            );
        }
        Ok(out)
    }

    /// The required state of each planned room: all of it that the request wants for rooms
    /// sent whole, otherwise what changed within the room's bounds; with `$LAZY`, the
    /// members who sent the timeline too. Two queries for all rooms, and one for the events.
    async fn sliding_required_state(
        &self,
        user: &UserId,
        plans: &[Plan<'_>],
        timelines: &HashMap<i64, Timeline>,
    ) -> Result<HashMap<i64, Vec<StoredEvent>>> {
        let db = self.rooms.reads();
        let senders: HashMap<i64, HashSet<&str>> = timelines
            .iter()
            .map(|(nid, t)| (*nid, t.events.iter().map(|e| e.sender.as_str()).collect()))
            .collect();
        let no_senders = HashSet::new();
        let wanted: Vec<&Plan> = plans
            .iter()
            .filter(|p| !p.config.required_state.is_empty())
            .collect();
        let lazy = |p: &Plan| senders.get(&p.r.room_nid).unwrap_or(&no_senders);
        // Whole states read for rooms sent whole; for the others whose timeline senders'
        // members are wanted lazily, just those members' entries (a room's whole state may
        // be thousands of members, its timeline's senders a handful).
        let mut whole: HashMap<i64, &Plan> = HashMap::new();
        let mut senders_of: HashMap<i64, &Plan> = HashMap::new();
        for p in &wanted {
            let lazy_members = !lazy(p).is_empty()
                && p.config
                    .required_state
                    .entries
                    .iter()
                    .any(|(t, k)| t == "m.room.member" && k == super::request::LAZY);
            let Some(g) = super::readable_group(p.r) else {
                continue;
            };
            if p.full_state {
                whole.insert(g, p);
            } else if lazy_members {
                senders_of.insert(g, p);
            }
        }
        let mut nids_of: HashMap<i64, Vec<i64>> = HashMap::new();
        if !whole.is_empty() {
            let groups: Vec<i64> = whole.keys().copied().collect();
            for (group, _, event_nid, kind, key) in db::state::load_many(db, &groups).await? {
                let Some(p) = whole.get(&group) else {
                    continue;
                };
                if p.config
                    .required_state
                    .wants(user.as_str(), lazy(p), &kind, &key)
                {
                    nids_of.entry(p.r.room_nid).or_default().push(event_nid);
                }
            }
        }
        if !senders_of.is_empty() {
            let groups: Vec<i64> = senders_of.keys().copied().collect();
            let members: HashSet<&str> =
                senders_of.values().flat_map(|p| lazy(p)).copied().collect();
            let keys: Vec<(&str, &str)> = members.iter().map(|m| ("m.room.member", *m)).collect();
            for (group, _, event_nid, _, key) in
                db::state::load_keys_of_many(db, &groups, &keys).await?
            {
                // Keys are asked for all rooms at once: keep each room's own senders.
                if let Some(p) = senders_of.get(&group)
                    && lazy(p).contains(key.as_str())
                {
                    nids_of.entry(p.r.room_nid).or_default().push(event_nid);
                }
            }
        }
        let changing: Vec<RoomBounds> = wanted
            .iter()
            .filter(|p| !p.full_state && !p.same_state && p.bounds.after < p.bounds.upto)
            .map(|p| p.bounds)
            .collect();
        let mut changed: HashMap<i64, Vec<StoredEvent>> = HashMap::new();
        if !changing.is_empty() {
            let by_nid: HashMap<i64, &&Plan> = wanted.iter().map(|p| (p.r.room_nid, p)).collect();
            for k in db::sliding::state_changes(db, &changing).await? {
                let Some(p) = by_nid.get(&k.event.room_nid) else {
                    continue;
                };
                if p.config.required_state.wants(
                    user.as_str(),
                    lazy(p),
                    &k.state_type,
                    &k.state_key,
                ) {
                    changed.entry(k.event.room_nid).or_default().push(k.event);
                }
            }
        }
        let all_nids: Vec<i64> = nids_of.values().flatten().copied().collect();
        let mut events: HashMap<i64, StoredEvent> = match all_nids.is_empty() {
            true => HashMap::new(),
            false => db::events::by_nids(db, &all_nids)
                .await?
                .into_iter()
                .map(|e| (e.event_nid, e))
                .collect(),
        };
        let mut out: HashMap<i64, Vec<StoredEvent>> = HashMap::new();
        for (room, nids) in nids_of {
            let list = out.entry(room).or_default();
            list.extend(nids.iter().filter_map(|n| events.remove(n)));
        }
        for (room, evs) in changed {
            let list = out.entry(room).or_default();
            for e in evs {
                if !list.iter().any(|x| x.event_nid == e.event_nid) {
                    list.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Names, avatars, heroes and member counts of joined rooms: four queries for
    /// all of them.
    async fn sliding_summaries(
        &self,
        user: &UserId,
        plans: &[&Plan<'_>],
    ) -> Result<HashMap<i64, Summary>> {
        let db = self.rooms.reads();
        let mut out: HashMap<i64, Summary> = HashMap::new();
        if plans.is_empty() {
            return Ok(out);
        }
        let nids: Vec<i64> = plans.iter().map(|p| p.r.room_nid).collect();
        let room_of_group: HashMap<i64, i64> = plans
            .iter()
            .filter_map(|p| p.r.state_group.map(|g| (g, p.r.room_nid)))
            .collect();
        let groups: Vec<i64> = room_of_group.keys().copied().collect();
        let keys = [
            ("m.room.name", ""),
            ("m.room.avatar", ""),
            ("m.room.canonical_alias", ""),
        ];
        let content = |json: &str| -> Value {
            serde_json::from_str::<Value>(json)
                .map(|v| v["content"].clone())
                .unwrap_or_default()
        };
        let text = |v: &Value, field: &str| {
            v[field]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if !groups.is_empty() {
            for (group, kind, _, _, json) in db::state::load_keys_many(db, &groups, &keys).await? {
                let Some(nid) = room_of_group.get(&group) else {
                    continue;
                };
                let c = content(&json);
                let s = out.entry(*nid).or_default();
                match kind.as_str() {
                    "m.room.name" => s.name = text(&c, "name"),
                    "m.room.avatar" => s.avatar = text(&c, "url"),
                    _ => s.canonical_alias = text(&c, "alias"),
                }
            }
        }
        for (nid, joined, invited) in db::sync::member_counts(db, &nids).await? {
            let s = out.entry(nid).or_default();
            s.joined = joined;
            s.invited = invited;
        }
        let heroes = db::sync::heroes(db, &nids, user.as_str(), MAX_HEROES).await?;
        if !heroes.is_empty() && !groups.is_empty() {
            let hero_ids: Vec<&str> = heroes.iter().map(|(_, u)| u.as_str()).collect();
            let keys: Vec<(&str, &str)> = hero_ids.iter().map(|u| ("m.room.member", *u)).collect();
            let mut profiles: HashMap<(i64, String), Value> = HashMap::new();
            for (group, _, key, _, json) in db::state::load_keys_many(db, &groups, &keys).await? {
                if let Some(nid) = room_of_group.get(&group) {
                    profiles.insert((*nid, key), content(&json));
                }
            }
            for (nid, hero) in heroes {
                let Ok(user_id) = OwnedUserId::try_from(hero.as_str()) else {
                    continue;
                };
                let profile = profiles.remove(&(nid, hero)).unwrap_or_default();
                out.entry(nid).or_default().heroes.push(Hero {
                    user_id,
                    displayname: text(&profile, "displayname"),
                    avatar_url: text(&profile, "avatar_url"),
                });
            }
        }
        Ok(out)
    }

    /// An invite (or knock): its stripped state, and its name when the state names it.
    async fn sliding_invite(&self, r: &SlidingRoom, direct: &HashSet<String>) -> Result<RoomData> {
        let stripped = self.invite_state(&user_room(r)).await?;
        let name = stripped
            .iter()
            .find(|e| e["type"] == "m.room.name")
            .and_then(|e| e["content"]["name"].as_str())
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        Ok(RoomData {
            initial: true,
            name,
            invite_state: Some(stripped),
            bump_stamp: Some(r.bump_stamp.max(0)),
            is_dm: Some(direct.contains(r.room_id.as_str())),
            ..Default::default()
        })
    }
}

#[derive(Default)]
struct Timeline {
    events: Vec<StoredEvent>,
    limited: bool,
    prev_batch: Option<String>,
}

impl Summary {
    /// The room's name as the spec calculates it: its name, else its canonical alias, else
    /// from its heroes, else "Empty Room".
    fn display_name(&self) -> String {
        if let Some(n) = self.name.as_ref().or(self.canonical_alias.as_ref()) {
            return n.clone();
        }
        let names: Vec<String> = self
            .heroes
            .iter()
            .map(|h| {
                h.displayname
                    .clone()
                    .unwrap_or_else(|| h.user_id.to_string())
            })
            .collect();
        let others = (self.joined + self.invited - 1 - names.len() as i64).max(0);
        match (names.as_slice(), others) {
            ([], _) => "Empty Room".to_owned(),
            ([one], 0) => one.clone(),
            ([a, b], 0) => format!("{a} and {b}"),
            (many, 0) => {
                let (last, rest) = many.split_last().unwrap_or((&many[0], &[]));
                format!("{} and {last}", rest.join(", "))
            }
            (some, n) => format!(
                "{} and {n} other{}",
                some.join(", "),
                if n == 1 { "" } else { "s" }
            ),
        }
    }

    /// A fingerprint of everything this summary sends, to tell whether it changed.
    /// Of what the room's state gives (the unread counts and DM flag are kept apart).
    fn fingerprint(&self) -> u64 {
        let mut text = format!(
            "{}\u{1f}{:?}\u{1f}{}\u{1f}{}",
            self.display_name(),
            self.avatar,
            self.joined,
            self.invited,
        );
        for h in &self.heroes {
            text.push_str(&format!(
                "\u{1e}{}\u{1f}{:?}\u{1f}{:?}",
                h.user_id, h.displayname, h.avatar_url
            ));
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // Never 0: that stands for "no summary sent".
        hash.max(1)
    }

    fn fill(self, data: &mut RoomData) {
        data.name = Some(self.display_name());
        data.avatar = Some(self.avatar);
        // Heroes name an unnamed room; a named one needs none.
        if self.name.is_none() {
            data.heroes = Some(self.heroes);
        }
        data.joined_count = Some(self.joined);
        data.invited_count = Some(self.invited);
    }
}

fn room_row(r: &SlidingRoom) -> RoomRow {
    RoomRow {
        room_nid: r.room_nid,
        room_id: r.room_id.clone(),
        room_version: r.room_version.clone(),
        state_group: r.state_group,
        is_public: false,
    }
}

fn user_room(r: &SlidingRoom) -> db::sync::UserRoom {
    db::sync::UserRoom {
        room_nid: r.room_nid,
        room_id: r.room_id.clone(),
        room_version: r.room_version.clone(),
        membership: r.membership.clone(),
        member_event_nid: r.member_event_nid,
        member_stream: r.member_stream,
        state_group: r.state_group,
        forgotten: r.forgotten,
        invite_state: r.invite_state.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hero(name: &str) -> Hero {
        Hero {
            user_id: OwnedUserId::try_from(format!("@{}:x", name.to_lowercase())).unwrap(),
            displayname: Some(name.to_owned()),
            avatar_url: None,
        }
    }

    #[test]
    fn names_follow_the_spec() {
        let mut s = Summary {
            joined: 1,
            ..Default::default()
        };
        assert_eq!(s.display_name(), "Empty Room");
        s.heroes = vec![hero("Alice")];
        s.joined = 2;
        assert_eq!(s.display_name(), "Alice");
        s.heroes.push(hero("Bob"));
        s.joined = 3;
        assert_eq!(s.display_name(), "Alice and Bob");
        s.heroes.push(hero("Carol"));
        s.joined = 4;
        assert_eq!(s.display_name(), "Alice, Bob and Carol");
        s.joined = 10;
        assert_eq!(s.display_name(), "Alice, Bob, Carol and 6 others");
        s.canonical_alias = Some("#room:x".into());
        assert_eq!(s.display_name(), "#room:x");
        s.name = Some("Named".into());
        assert_eq!(s.display_name(), "Named");
        let before = s.fingerprint();
        s.joined = 11;
        assert_ne!(before, s.fingerprint());
    }
}
