//! A sync filter applied to a sync response: which rooms, which events of each section
//! (timeline types and senders are already chosen in SQL, see [`SyncFilter::timeline_select`]),
//! limits on presence and account data, `event_fields` and `event_format`.

use std::collections::HashMap;

use ruma::OwnedRoomId;
use ruma::api::client::filter::{EventFormat, Filter, FilterDefinition, RoomEventFilter};
use serde_json::{Map, Value};

use super::{JoinedRoomSync, SyncResponse};
use crate::db::sync::TimelineSelect;
use crate::notify::Kinds;
use crate::room::timeline::EventFilter;

/// Most entries one list of a filter may hold (types, senders, rooms, event fields...).
/// Applying a filter costs what its lists hold, per room and per event: a bound on them is a
/// bound on what one request can make the server do. Clients send a handful.
pub const MAX_FILTER_LIST: usize = 1000;

/// Refuse a filter with a list longer than [`MAX_FILTER_LIST`], wherever it comes from (an
/// upload, an inline `/sync` filter, a stored one from before the bound).
pub fn check_bounds(filter: &FilterDefinition) -> crate::error::Result<()> {
    let event = event_filter_lists;
    let plain = |f: &Filter| {
        [
            opt(&f.types),
            f.not_types.len(),
            opt(&f.senders),
            f.not_senders.len(),
        ]
    };
    let r = &filter.room;
    let longest = [opt(&filter.event_fields), opt(&r.rooms), r.not_rooms.len()]
        .into_iter()
        .chain(plain(&filter.presence))
        .chain(plain(&filter.account_data))
        .chain(
            [&r.timeline, &r.state, &r.ephemeral, &r.account_data]
                .into_iter()
                .flat_map(event),
        )
        .max()
        .unwrap_or(0);
    bounded(longest)
}

/// [`check_bounds`] for a lone room event filter (the one `/search` takes).
pub fn check_event_filter_bounds(filter: &RoomEventFilter) -> crate::error::Result<()> {
    bounded(event_filter_lists(filter).into_iter().max().unwrap_or(0))
}

fn bounded(longest: usize) -> crate::error::Result<()> {
    match longest > MAX_FILTER_LIST {
        true => Err(crate::error::Error::bad_json(format!(
            "Filter lists may hold at most {MAX_FILTER_LIST} entries"
        ))),
        false => Ok(()),
    }
}

fn opt<T>(v: &Option<Vec<T>>) -> usize {
    v.as_ref().map_or(0, Vec::len)
}

/// The lengths of a room event filter's lists.
fn event_filter_lists(f: &RoomEventFilter) -> [usize; 6] {
    [
        opt(&f.types),
        f.not_types.len(),
        opt(&f.senders),
        f.not_senders.len(),
        opt(&f.rooms),
        f.not_rooms.len(),
    ]
}

/// A non-room filter (presence, global account data): an event filter and a limit.
#[derive(Debug, Clone)]
struct Limited {
    filter: EventFilter,
    limit: Option<usize>,
}

impl From<&Filter> for Limited {
    fn from(f: &Filter) -> Self {
        Limited {
            filter: EventFilter {
                types: f.types.clone(),
                not_types: f.not_types.clone(),
                senders: f
                    .senders
                    .as_ref()
                    .map(|s| s.iter().map(ToString::to_string).collect()),
                not_senders: f.not_senders.iter().map(ToString::to_string).collect(),
                contains_url: None,
                ignored: Vec::new(),
            },
            limit: f
                .limit
                .map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX)),
        }
    }
}

impl Limited {
    fn apply(&self, events: &mut Vec<Value>) {
        events.retain(|e| self.filter.matches_value(e));
        if let Some(l) = self.limit {
            events.truncate(l);
        }
    }
}

/// One room section's filter: its events and the rooms it applies to.
#[derive(Debug, Clone)]
struct Section {
    filter: EventFilter,
    rooms: Option<Vec<OwnedRoomId>>,
    not_rooms: Vec<OwnedRoomId>,
}

impl From<&RoomEventFilter> for Section {
    fn from(f: &RoomEventFilter) -> Self {
        Section {
            filter: EventFilter::from(f),
            rooms: f.rooms.clone(),
            not_rooms: f.not_rooms.clone(),
        }
    }
}

impl Section {
    fn room_allowed(&self, room: &OwnedRoomId) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.contains(room)) && !self.not_rooms.contains(room)
    }

    fn apply(&self, room: &OwnedRoomId, events: &mut Vec<Value>) {
        if self.room_allowed(room) {
            events.retain(|e| self.filter.matches_value(e));
        } else {
            events.clear();
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncFilter {
    rooms: Option<Vec<OwnedRoomId>>,
    not_rooms: Vec<OwnedRoomId>,
    timeline: Section,
    state: Section,
    ephemeral: Section,
    room_account_data: Section,
    account_data: Limited,
    presence: Limited,
    event_fields: Option<Vec<String>>,
    pub federation_format: bool,
}

impl From<&FilterDefinition> for SyncFilter {
    fn from(f: &FilterDefinition) -> Self {
        SyncFilter {
            rooms: f.room.rooms.clone(),
            not_rooms: f.room.not_rooms.clone(),
            timeline: Section::from(&f.room.timeline),
            state: Section::from(&f.room.state),
            ephemeral: Section::from(&f.room.ephemeral),
            room_account_data: Section::from(&f.room.account_data),
            account_data: Limited::from(&f.account_data),
            presence: Limited::from(&f.presence),
            event_fields: f.event_fields.clone().filter(|f| !f.is_empty()),
            federation_format: f.event_format == EventFormat::Federation,
        }
    }
}

impl SyncFilter {
    /// The kinds of news this filter never lets through: a sync waiting with it is not woken
    /// for them (it would answer empty, early).
    pub fn ignored_news(&self) -> Kinds {
        let mut ignored = Kinds::default();
        if self.presence.filter.excludes_type("m.presence") {
            ignored |= Kinds::PRESENCE;
        }
        if self.ephemeral.filter.excludes_type("m.typing") {
            ignored |= Kinds::TYPING;
        }
        if self.ephemeral.filter.excludes_type("m.receipt") {
            ignored |= Kinds::RECEIPTS;
        }
        ignored
    }

    /// The timeline filter's types and senders, for the query that picks timelines.
    pub fn timeline_select(&self) -> TimelineSelect {
        let f = &self.timeline.filter;
        TimelineSelect {
            types: f.types.as_deref().map(EventFilter::like_patterns),
            not_types: EventFilter::like_patterns(&f.not_types),
            senders: f.senders.clone(),
            not_senders: f.not_senders.clone(),
            ignored: Vec::new(),
        }
    }

    fn room_allowed(&self, room: &OwnedRoomId) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.contains(room)) && !self.not_rooms.contains(room)
    }

    /// Rooms, section filters and limits (`event_format` and `event_fields` come after).
    pub fn apply(&self, out: &mut SyncResponse) {
        out.join.retain(|id, _| self.room_allowed(id));
        out.leave.retain(|id, _| self.room_allowed(id));
        out.invite.retain(|id, _| self.room_allowed(id));
        out.knock.retain(|id, _| self.room_allowed(id));
        for (id, room) in out.join.iter_mut().chain(out.leave.iter_mut()) {
            self.apply_room(id, room);
        }
        self.account_data.apply(&mut out.account_data);
        self.presence.apply(&mut out.presence);
    }

    /// `event_fields`: keep only the listed fields of every event (last, after any change of
    /// format).
    pub fn apply_fields(&self, out: &mut SyncResponse) {
        if let Some(fields) = &self.event_fields {
            let keep = |events: &mut Vec<Value>| {
                for e in events.iter_mut() {
                    *e = only_fields(e, fields);
                }
            };
            for room in out.join.values_mut().chain(out.leave.values_mut()) {
                keep(&mut room.timeline);
                keep(&mut room.state);
                keep(&mut room.account_data);
                keep(&mut room.ephemeral);
            }
            keep(&mut out.account_data);
            keep(&mut out.presence);
        }
    }

    fn apply_room(&self, id: &OwnedRoomId, room: &mut JoinedRoomSync) {
        // Types and senders were applied in SQL; the URL filter and rooms are applied here.
        self.timeline.apply(id, &mut room.timeline);
        self.state.apply(id, &mut room.state);
        self.ephemeral.apply(id, &mut room.ephemeral);
        self.room_account_data.apply(id, &mut room.account_data);
    }

    /// Replace timeline and state events by their PDUs (`event_format: federation`), given
    /// the stored PDU JSON by event ID.
    pub fn to_federation_format(&self, out: &mut SyncResponse, pdus: &HashMap<String, String>) {
        for room in out.join.values_mut().chain(out.leave.values_mut()) {
            for e in room.timeline.iter_mut().chain(room.state.iter_mut()) {
                let Some(pdu) = e["event_id"].as_str().and_then(|id| pdus.get(id)) else {
                    continue;
                };
                if let Ok(mut v) = serde_json::from_str::<Value>(pdu) {
                    // The PDU lacks its ID from room version 3 on; clients need it.
                    v["event_id"] = e["event_id"].clone();
                    *e = v;
                }
            }
        }
    }

    /// Event IDs of the timeline and state events in the response.
    pub fn event_ids(out: &SyncResponse) -> Vec<String> {
        out.join
            .values()
            .chain(out.leave.values())
            .flat_map(|r| r.timeline.iter().chain(r.state.iter()))
            .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Split a field path on unescaped dots (`\.` is a literal dot, as the spec says).
fn path_of(field: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                current.push('.');
                chars.next();
            }
            '.' => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// Keep only the listed fields (dotted paths) of an event.
fn only_fields(event: &Value, fields: &[String]) -> Value {
    let mut out = Value::Object(Map::new());
    for field in fields {
        let path = path_of(field);
        let mut src = event;
        let mut found = true;
        for key in &path {
            match src.get(key) {
                Some(v) => src = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        let mut dst = &mut out;
        for (i, key) in path.iter().enumerate() {
            let Value::Object(map) = dst else { break };
            if i + 1 == path.len() {
                map.insert(key.clone(), src.clone());
                break;
            }
            dst = map
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_fields_keep_only_the_listed_paths() {
        let e = json!({"type": "m.room.message", "sender": "@a:x",
                       "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"a.b": 1}}});
        let kept = only_fields(
            &e,
            &[
                "type".into(),
                "content.body".into(),
                "content.m\\.relates_to".into(),
                "missing.path".into(),
            ],
        );
        assert_eq!(
            kept,
            json!({"type": "m.room.message", "content": {"body": "hi", "m.relates_to": {"a.b": 1}}})
        );
    }

    #[test]
    fn glob_types_become_like_patterns() {
        assert_eq!(
            EventFilter::like_patterns(&["m.room.*".into(), "a_b%".into()]),
            vec!["m.room.%".to_owned(), "a\\_b\\%".to_owned()]
        );
    }
}
