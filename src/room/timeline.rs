//! Reading a room: single events, state, and topological pages of the timeline, as clients
//! see them (redactions applied, rejected events never shown).

use std::collections::HashMap;

use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::Value;

use super::Rooms;
use super::pdu::client_format;
use super::relations::Reader;
use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::error::{Error, Result};

/// A position between two timeline events: `t<depth>_<stream>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopoToken {
    pub depth: i64,
    pub stream: i64,
}

impl TopoToken {
    pub const START: TopoToken = TopoToken {
        depth: 0,
        stream: 0,
    };
    pub const END: TopoToken = TopoToken {
        depth: i64::MAX,
        stream: i64::MAX,
    };

    pub fn parse(s: &str) -> Result<TopoToken> {
        let bad = || Error::invalid_param(format!("Invalid pagination token {s:?}"));
        let rest = s.strip_prefix('t').ok_or_else(bad)?;
        let (d, st) = rest.split_once('_').ok_or_else(bad)?;
        let token = TopoToken {
            depth: d.parse().map_err(|_| bad())?,
            stream: st.parse().map_err(|_| bad())?,
        };
        // Depths start at 1 (0 is the start of the timeline); streams go negative for
        // backfilled events, so only the depth has a floor.
        if token.depth < 0 {
            return Err(bad());
        }
        Ok(token)
    }

    pub fn of(e: &StoredEvent) -> TopoToken {
        TopoToken {
            depth: e.depth,
            stream: e.stream_ordering.unwrap_or(0),
        }
    }
}

impl std::fmt::Display for TopoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}_{}", self.depth, self.stream)
    }
}

/// A position a client names in a room, in any token this server hands out, as the spec lets
/// clients use them interchangeably: a topological token (`t…`: `prev_batch`, `start`,
/// `end`) or a stream position (the events part of a sync token `s…`: `next_batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Topo(TopoToken),
    Stream(i64),
}

/// Which events of a page a client wants (the RoomEventFilter subset /messages applies).
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub contains_url: Option<bool>,
    /// Users the reader ignores: their events are left out, except state events (spec,
    /// "Ignoring Users"; Synapse filters `/messages` and `/context` the same way).
    pub ignored: Vec<String>,
}

impl EventFilter {
    pub(crate) fn matches(&self, e: &StoredEvent, client: &Value) -> bool {
        self.matches_fields(&e.event_type, &e.sender, client)
    }

    /// Whether `sender` is ignored and `client` (the event as clients see it) no state
    /// event, which ignoring never hides.
    fn ignores(&self, sender: &str, client: &Value) -> bool {
        self.ignored.iter().any(|u| u == sender) && client.get("state_key").is_none()
    }

    /// The same test on an event as clients see it (its `type`, `sender` and content).
    pub fn matches_value(&self, event: &Value) -> bool {
        self.matches_fields(
            event["type"].as_str().unwrap_or(""),
            event["sender"].as_str().unwrap_or(""),
            event,
        )
    }

    /// Whether no event of type `kind` can pass, whoever sent it.
    pub fn excludes_type(&self, kind: &str) -> bool {
        let type_matches = |pattern: &String| glob_match(pattern, kind);
        self.types
            .as_ref()
            .is_some_and(|t| !t.iter().any(type_matches))
            || self.not_types.iter().any(type_matches)
    }

    fn matches_fields(&self, kind: &str, sender: &str, client: &Value) -> bool {
        if self.ignores(sender, client) {
            return false;
        }
        let type_matches = |pattern: &String| glob_match(pattern, kind);
        if let Some(types) = &self.types
            && !types.iter().any(type_matches)
        {
            return false;
        }
        if self.not_types.iter().any(type_matches) {
            return false;
        }
        if let Some(senders) = &self.senders
            && !senders.iter().any(|s| s == sender)
        {
            return false;
        }
        if self.not_senders.iter().any(|s| s == sender) {
            return false;
        }
        if let Some(want) = self.contains_url {
            let has = client["content"]["url"].is_string();
            if has != want {
                return false;
            }
        }
        true
    }

    /// The type patterns as SQL LIKE patterns (`*` at the end matches any suffix).
    pub fn like_patterns(patterns: &[String]) -> Vec<String> {
        patterns
            .iter()
            .map(|p| {
                let (stem, wild) = match p.strip_suffix('*') {
                    Some(stem) => (stem, true),
                    None => (p.as_str(), false),
                };
                let mut out = stem
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                if wild {
                    out.push('%');
                }
                out
            })
            .collect()
    }
}

/// Event type patterns may end in `*`.
fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

pub struct Page {
    pub chunk: Vec<Value>,
    pub start: TopoToken,
    pub end: Option<TopoToken>,
}

/// Most events one page returns, whatever the client asks.
pub const MAX_PAGE: i64 = 1000;

impl Rooms {
    /// 403 unless `user` may read the room now: joined, or the room is world-readable.
    /// 403 unless `user` may read the room's timeline at all: they have (or had) a membership
    /// in it, or it is world-readable. Which events they see is then decided per event
    /// ([`Rooms::filter_visible`]).
    pub async fn check_can_read(&self, room: &RoomRow, user: &UserId) -> Result<()> {
        if self.membership(room, user).await?.is_some() {
            return Ok(());
        }
        if self.history_visibility(room).await? == "world_readable" {
            return Ok(());
        }
        Err(Error::forbidden(
            "You are not allowed to view events in this room",
        ))
    }

    /// 403 unless `user` may read the current state: joined now, or world-readable.
    pub async fn check_can_read_state(&self, room: &RoomRow, user: &UserId) -> Result<()> {
        if self.is_joined(room, user).await? {
            return Ok(());
        }
        if self.history_visibility(room).await? == "world_readable" {
            return Ok(());
        }
        Err(Error::forbidden(
            "You are not allowed to view the state of this room",
        ))
    }

    /// The state group `user` may read the room's state from: the current state when they
    /// are joined or the room is world-readable; for a former member (left, kicked or
    /// banned, and the room not forgotten) the state as it was right after they left, as
    /// the spec says and Synapse does. Anyone else gets 403.
    pub async fn readable_state_group(&self, room: &RoomRow, user: &UserId) -> Result<Option<i64>> {
        let own = db::reads::membership_at(self.db(), room.room_nid, user.as_str()).await?;
        if own
            .as_ref()
            .is_some_and(|m| m.membership == MembershipState::Join)
            || self.history_visibility(room).await? == "world_readable"
        {
            return Ok(room.state_group);
        }
        let departed = own.filter(|m| {
            matches!(m.membership, MembershipState::Leave | MembershipState::Ban) && !m.forgotten
        });
        match departed.and_then(|m| m.state_after) {
            Some(group) => Ok(Some(group)),
            None => Err(Error::forbidden(
                "You are not allowed to view the state of this room",
            )),
        }
    }

    pub async fn history_visibility(&self, room: &RoomRow) -> Result<String> {
        let Some(group) = room.state_group else {
            return Ok("shared".to_owned());
        };
        let key = (StateEventType::RoomHistoryVisibility, String::new());
        let entries = self
            .state_entries(group, std::slice::from_ref(&key))
            .await?;
        Ok(entries
            .get(&key)
            .and_then(|pdu| serde_json::from_str::<Value>(pdu.content.get()).ok())
            .and_then(|c| c["history_visibility"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "shared".to_owned()))
    }

    /// The room, if `user` may read its events (a member now or before, or the room is
    /// world-readable): the room and the membership check in one query.
    pub async fn readable_room(&self, room_id: &RoomId, user: &UserId) -> Result<RoomRow> {
        let (room, membership) =
            db::rooms::with_membership(self.db(), room_id.as_str(), user.as_str())
                .await?
                .ok_or_else(|| Error::not_found("Room not found"))?;
        self.may_read(room, membership.as_ref()).await
    }

    /// `room` if a user with `membership` (none: never a member) may read its events.
    async fn may_read(
        &self,
        room: RoomRow,
        membership: Option<&MembershipState>,
    ) -> Result<RoomRow> {
        if membership.is_none() && self.history_visibility(&room).await? != "world_readable" {
            return Err(Error::forbidden(
                "You are not allowed to view events in this room",
            ));
        }
        Ok(room)
    }

    /// Client-format events, in the given order, with redactions applied (one extra batched
    /// fetch for the redaction events, never a query per event).
    pub(crate) async fn to_client(
        &self,
        room: &RoomRow,
        events: &[StoredEvent],
    ) -> Result<Vec<Value>> {
        let rules = room.rules().ok();
        let redaction_nids: Vec<i64> = events.iter().filter_map(|e| e.redacted_by).collect();
        let mut redactions: HashMap<i64, Value> = HashMap::new();
        if !redaction_nids.is_empty() {
            for r in db::events::by_nids(self.db(), &redaction_nids).await? {
                let id = parse_event_id(&r.event_id)?;
                redactions.insert(r.event_nid, client_format(&id, &r.json, None, None)?);
            }
        }
        events
            .iter()
            .map(|e| {
                let id = parse_event_id(&e.event_id)?;
                let because = e.redacted_by.and_then(|n| redactions.get(&n).cloned());
                client_format(&id, &e.json, rules.as_ref(), because)
            })
            .collect()
    }

    /// One event, if the user may see it.
    pub async fn event(
        &self,
        reader: impl Into<Reader<'_>>,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Value> {
        let reader = reader.into();
        let user = reader.user;
        let (room, membership) =
            db::rooms::with_membership(self.db(), room_id.as_str(), user.as_str())
                .await?
                .ok_or_else(|| Error::not_found("Event not found"))?;
        // Someone who may not read the room is told the event is not found, as for a hidden
        // event (Synapse answers 404 here too), rather than that the room exists.
        let room = self
            .may_read(room, membership.as_ref())
            .await
            .map_err(|e| match e {
                Error::Matrix {
                    kind: ruma::api::error::ErrorKind::Forbidden,
                    ..
                } => Error::not_found("Event not found"),
                e => e,
            })?;
        let e = db::events::by_id(self.db(), event_id.as_str())
            .await?
            .filter(|e| e.room_nid == room.room_nid && e.rejected_reason.is_none() && !e.outlier)
            .ok_or_else(|| Error::not_found("Event not found"))?;
        let visible = self.filter_visible(&room, user, vec![e]).await?;
        // Same answer as for an unknown event, so hidden events cannot be probed for.
        let e = visible
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("Event not found"))?;
        Ok(self.to_client_for(reader, &room, &[e]).await?.remove(0))
    }

    /// The room's current state events (for a former member, as it was when they left).
    pub async fn current_state(&self, user: &UserId, room_id: &RoomId) -> Result<Vec<Value>> {
        let room = self.room(room_id).await?;
        let Some(group) = self.readable_state_group(&room, user).await? else {
            return Ok(Vec::new());
        };
        let rows = db::state::load(self.db(), group).await?;
        let nids: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let events = db::events::by_nids(self.db(), &nids).await?;
        self.to_client(&room, &events).await
    }

    /// The content of one current state event (for a former member, as it was when they
    /// left).
    pub async fn state_content(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Value> {
        let mut event = self
            .state_event(user, room_id, event_type, state_key)
            .await?;
        Ok(event["content"].take())
    }

    /// One current state event in client format, as [`Rooms::state_content`] finds it.
    pub async fn state_event(
        &self,
        user: &UserId,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Value> {
        let room = self.room(room_id).await?;
        let not_found = || Error::not_found("State event not found");
        let group = self
            .readable_state_group(&room, user)
            .await?
            .ok_or_else(not_found)?;
        let rows = db::state::load_keys(self.db(), group, &[(event_type, state_key)]).await?;
        let row = rows.first().ok_or_else(not_found)?;
        let events = db::events::by_nids(self.db(), &[row.1]).await?;
        let mut client = self.to_client(&room, &events).await?;
        client.pop().ok_or_else(not_found)
    }

    /// Where a page starts when a client pages from a `/sync` position (`next_batch`), as the
    /// spec allows: right after the room's last event at or before `stream`, so paging back
    /// includes that event and paging forwards does not.
    pub async fn topo_at_stream(
        &self,
        room_id: &RoomId,
        stream: i64,
        forward: bool,
    ) -> Result<TopoToken> {
        let room = self.room(room_id).await?;
        let last = db::events::last_at_stream(self.db(), room.room_nid, stream).await?;
        Ok(match last {
            None => TopoToken::START,
            // Stream positions are whole numbers: nothing sits between s and s + 1.
            Some((depth, s)) if !forward => TopoToken {
                depth,
                stream: s + 1,
            },
            Some((depth, stream)) => TopoToken { depth, stream },
        })
    }

    /// The topological position `at` names in the room. A stream position means right after
    /// the room's last event at or before it (so paging back from it includes that event, and
    /// a `to` bound at it keeps that event on either side; see [`Rooms::messages`]).
    pub async fn position(&self, room_id: &RoomId, at: At, forward: bool) -> Result<TopoToken> {
        match at {
            At::Topo(t) => Ok(t),
            At::Stream(s) => self.topo_at_stream(room_id, s, forward).await,
        }
    }

    /// A page of the timeline from `from`, backwards or forwards, filtered, stopping at `to`
    /// (backwards: events at or after it; forwards: events before it). Keyset pagination on
    /// (depth, stream): one query per page plus one batched fetch for redactions.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages(
        &self,
        reader: impl Into<Reader<'_>>,
        room_id: &RoomId,
        from: Option<TopoToken>,
        to: Option<TopoToken>,
        forward: bool,
        limit: i64,
        filter: &EventFilter,
    ) -> Result<Page> {
        let reader = reader.into();
        let user = reader.user;
        let limit = limit.clamp(1, MAX_PAGE);
        let start = from.unwrap_or(if forward {
            TopoToken::START
        } else {
            TopoToken::END
        });
        // The first page comes with the room and the reader's membership (one round trip),
        // and is dropped unread if the reader may not see the room.
        let page = db::events::reader_page(
            self.reads(),
            room_id.as_str(),
            user.as_str(),
            (start.depth, start.stream),
            forward,
            limit,
        )
        .await?
        .ok_or_else(|| Error::not_found("Room not found"))?;
        let room = self.may_read(page.room, page.membership.as_ref()).await?;
        let mut first = Some(page.events);
        let mut cursor = start;
        let mut chunk = Vec::new();
        let mut end = None;
        // A filter can drop events, so read further pages until the chunk is full or the
        // timeline ends; each read is still one indexed query.
        for _ in 0..8 {
            let mut rows = match first.take() {
                Some(rows) => rows,
                None => {
                    db::events::timeline_page(
                        self.reads(),
                        room.room_nid,
                        (cursor.depth, cursor.stream),
                        forward,
                        limit,
                    )
                    .await?
                }
            };
            let mut exhausted = (rows.len() as i64) < limit;
            if let Some(to) = to {
                let before_the_end = |e: &StoredEvent| {
                    let at = (e.depth, e.stream_ordering.unwrap_or(0));
                    match forward {
                        true => at < (to.depth, to.stream),
                        false => at >= (to.depth, to.stream),
                    }
                };
                let kept = rows.iter().take_while(|e| before_the_end(e)).count();
                if kept < rows.len() {
                    rows.truncate(kept);
                    exhausted = true;
                }
            }
            if let Some(last) = rows.last() {
                cursor = TopoToken::of(last);
                end = Some(cursor);
            }
            let visible = self.filter_visible(&room, user, rows).await?;
            let client = self.to_client_for(reader, &room, &visible).await?;
            for (row, ev) in visible.iter().zip(client) {
                if filter.matches(row, &ev) {
                    chunk.push(ev);
                    if chunk.len() as i64 >= limit {
                        // Continue right after the last event returned, not after the page.
                        let end = Some(TopoToken::of(row));
                        return Ok(Page { chunk, start, end });
                    }
                }
            }
            if exhausted {
                // The spec: no `end` when there are no more events in this direction.
                return Ok(Page {
                    chunk,
                    start,
                    end: None,
                });
            }
        }
        Ok(Page { chunk, start, end })
    }
}

pub(crate) fn parse_event_id(id: &str) -> Result<OwnedEventId> {
    OwnedEventId::try_from(id).map_err(|e| Error::internal(format!("stored event ID invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = TopoToken {
            depth: 12,
            stream: 345,
        };
        assert_eq!(TopoToken::parse(&t.to_string()).unwrap(), t);
        for bad in ["", "t", "t1", "t1_", "x1_2", "t1_2_3", "ta_b", "s1_2"] {
            assert!(TopoToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_globs() {
        assert!(glob_match("m.room.*", "m.room.message"));
        assert!(!glob_match("m.room.*", "m.reaction"));
        assert!(glob_match("m.reaction", "m.reaction"));
    }
}
