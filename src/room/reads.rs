//! Reading around the timeline: member lists (now or at a pagination token), the context
//! around one event, and the event nearest to a timestamp. Every read is a fixed number of
//! batched queries, never one per event.

use std::collections::{BTreeSet, HashMap};

use ruma::api::client::filter::{RoomEventFilter, UrlFilter};
use ruma::events::room::member::MembershipState;
use ruma::{EventId, OwnedEventId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::Rooms;
use super::relations::Reader;
use super::timeline::{EventFilter, MAX_PAGE, Page, TopoToken, parse_event_id};
use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::error::{Error, Result};

const MEMBER: &str = "m.room.member";

impl From<&RoomEventFilter> for EventFilter {
    fn from(f: &RoomEventFilter) -> Self {
        EventFilter {
            types: f.types.clone(),
            not_types: f.not_types.clone(),
            senders: f
                .senders
                .as_ref()
                .map(|s| s.iter().map(ToString::to_string).collect()),
            not_senders: f.not_senders.iter().map(ToString::to_string).collect(),
            contains_url: f.url_filter.map(|u| u == UrlFilter::EventsWithUrl),
            ignored: Vec::new(),
        }
    }
}

/// One joined member's profile as their membership event states it.
#[derive(Debug, Clone)]
pub struct JoinedMember {
    pub user_id: OwnedUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// What `/context` returns, in client format.
#[derive(Debug)]
pub struct Context {
    pub event: Value,
    /// Newest first.
    pub before: Vec<Value>,
    /// Oldest first.
    pub after: Vec<Value>,
    /// Continues backwards (`/messages?dir=b&from=start`) right before `before`'s oldest.
    pub start: TopoToken,
    /// Continues forwards (`/messages?dir=f&from=end`) right after `after`'s newest.
    pub end: TopoToken,
    /// The room state at the last event returned.
    pub state: Vec<Value>,
}

/// The events around one event (see [`Rooms::around`]).
pub(super) struct Around {
    /// Newest first.
    pub before: Vec<Value>,
    /// Oldest first.
    pub after: Vec<Value>,
    pub start: TopoToken,
    pub end: TopoToken,
    /// The last event returned: `after`'s newest, else the event itself.
    pub last: StoredEvent,
}

impl Rooms {
    /// The room's `m.room.member` events, now or as of the pagination token `at`, sorted by
    /// user ID. `membership` keeps only that membership and `not_membership` drops one; given
    /// both, an event must pass both (as Synapse does).
    ///
    /// A user who is no longer joined sees the list as of their own last membership event,
    /// as Synapse does, so leaving a room stops the member list from leaking later changes.
    pub async fn members(
        &self,
        user: &UserId,
        room_id: &RoomId,
        at: Option<TopoToken>,
        membership: Option<&MembershipState>,
        not_membership: Option<&MembershipState>,
    ) -> Result<Vec<Value>> {
        let room = self.room(room_id).await?;
        self.check_can_read(&room, user).await?;
        let Some(group) = self.member_list_group(&room, user, at).await? else {
            return Ok(Vec::new());
        };
        let nids: Vec<i64> = db::state::load(self.db(), group)
            .await?
            .into_iter()
            .filter(|r| r.2 == MEMBER)
            .map(|r| r.1)
            .collect();
        let events = db::events::by_nids(self.db(), &nids).await?;
        let mut chunk: Vec<Value> = self
            .to_client(&room, &events)
            .await?
            .into_iter()
            .filter(|v| {
                let m = super::pdu::membership_in(&v["content"]);
                membership.is_none_or(|want| m.as_ref() == Some(want))
                    && not_membership.is_none_or(|drop| m.as_ref() != Some(drop))
            })
            .collect();
        chunk.sort_by(|a, b| a["state_key"].as_str().cmp(&b["state_key"].as_str()));
        Ok(chunk)
    }

    /// Which state group a member list for `user` reads: `at` (or the current state), but
    /// never later than the user's own membership event when they are no longer joined.
    async fn member_list_group(
        &self,
        room: &RoomRow,
        user: &UserId,
        at: Option<TopoToken>,
    ) -> Result<Option<i64>> {
        let own = db::reads::membership_at(self.db(), room.room_nid, user.as_str()).await?;
        if let Some(own) = own.filter(|m| m.membership != MembershipState::Join) {
            let left_at = (own.depth, own.stream_ordering.unwrap_or(0));
            if at.is_none_or(|t| (t.depth, t.stream) > left_at) {
                return Ok(own.state_after);
            }
        }
        match at {
            Some(t) => Ok(
                db::reads::state_group_at(self.db(), room.room_nid, (t.depth, t.stream)).await?,
            ),
            None => Ok(room.state_group),
        }
    }

    /// The joined members and their profiles from the current state: one state load and one
    /// batched event fetch.
    pub async fn joined_members(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<JoinedMember>> {
        let room = self.room(room_id).await?;
        self.check_can_read_state(&room, user).await?;
        let Some(group) = room.state_group else {
            return Ok(Vec::new());
        };
        let members: HashMap<i64, String> = db::state::load(self.db(), group)
            .await?
            .into_iter()
            .filter(|r| r.2 == MEMBER)
            .map(|r| (r.1, r.3))
            .collect();
        let nids: Vec<i64> = members.keys().copied().collect();
        let mut out = Vec::new();
        for e in db::events::by_nids(self.db(), &nids).await? {
            let Some(user_id) = members
                .get(&e.event_nid)
                .and_then(|k| OwnedUserId::try_from(k.as_str()).ok())
            else {
                continue;
            };
            let v: Value = serde_json::from_str(&e.json)
                .map_err(|err| Error::internal(format!("stored event unreadable: {err}")))?;
            let content = &v["content"];
            if super::pdu::membership_in(content) != Some(MembershipState::Join) {
                continue;
            }
            // Redaction strips the profile from a member event (only `membership` survives),
            // so a redacted event has none; no need to fetch and apply the redaction.
            let profile = |key: &str| {
                e.redacted_by
                    .is_none()
                    .then(|| {
                        content[key]
                            .as_str()
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                    })
                    .flatten()
            };
            out.push(JoinedMember {
                display_name: profile("displayname"),
                avatar_url: profile("avatar_url"),
                user_id,
            });
        }
        out.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(out)
    }

    /// The events around `event_id`: `limit` split as Synapse does (`limit / 2` before, the
    /// rest after), filtered by `filter` (the target event itself is never filtered), with
    /// tokens that continue `/messages` both ways and the state at the last event returned.
    /// With `lazy_load_members`, that state is only the member events of the returned
    /// events' senders.
    pub async fn context(
        &self,
        reader: impl Into<Reader<'_>>,
        room_id: &RoomId,
        event_id: &EventId,
        limit: u64,
        filter: &EventFilter,
        lazy_load_members: bool,
    ) -> Result<Context> {
        let reader = reader.into();
        let user = reader.user;
        let room = self.room(room_id).await?;
        self.check_can_read(&room, user).await?;
        let not_found = || Error::not_found("Event not found");
        let target = db::events::by_id(self.db(), event_id.as_str())
            .await?
            .filter(|e| in_timeline(e) && e.room_nid == room.room_nid)
            .ok_or_else(not_found)?;
        // Hidden events answer like unknown ones, so they cannot be probed for.
        let target = self
            .filter_visible(&room, user, vec![target])
            .await?
            .pop()
            .ok_or_else(not_found)?;
        let limit = i64::try_from(limit).unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let before_limit = limit / 2;
        let Around {
            before,
            after,
            start,
            end,
            last,
        } = self
            .around(
                reader,
                &room,
                &target,
                before_limit,
                limit - before_limit,
                filter,
            )
            .await?;

        let event = self
            .to_client_for(reader, &room, std::slice::from_ref(&target))
            .await?
            .remove(0);
        let state = match last.state_after.or(last.state_before) {
            None => Vec::new(),
            Some(group) if lazy_load_members => {
                let events: Vec<&Value> = before.iter().chain([&event]).chain(&after).collect();
                self.sender_members(&room, group, &events).await?
            }
            Some(group) => {
                let rows = db::state::load(self.db(), group).await?;
                self.state_events(&room, rows.iter().map(|r| r.1)).await?
            }
        };
        Ok(Context {
            event,
            before,
            after,
            start,
            end,
            state,
        })
    }

    /// The visible events around `target` (one of the room's timeline events the user may
    /// see), at most `before_limit` before it (newest first) and `after_limit` after it,
    /// filtered by `filter`, with tokens that continue `/messages` both ways and the last
    /// event returned (`target` when nothing follows it).
    pub(super) async fn around(
        &self,
        reader: Reader<'_>,
        room: &RoomRow,
        target: &StoredEvent,
        before_limit: i64,
        after_limit: i64,
        filter: &EventFilter,
    ) -> Result<Around> {
        let room_id = room.id()?;
        let at = TopoToken::of(target);
        let nothing = || Page {
            chunk: Vec::new(),
            start: at,
            end: None,
        };
        // `/messages`' own pagination, so visibility and the filter apply exactly as there.
        let before = match before_limit {
            0 => nothing(),
            n => {
                self.messages(reader, &room_id, Some(at), None, false, n, filter)
                    .await?
            }
        };
        let after = match after_limit {
            0 => nothing(),
            n => {
                self.messages(reader, &room_id, Some(at), None, true, n, filter)
                    .await?
            }
        };
        let last = match after.chunk.last() {
            Some(v) => self.stored_in_room(room, v).await?,
            None => target.clone(),
        };
        // Where a page ran to the end of the timeline it has no `end`: continue from the
        // last event returned, so events arriving (or backfilled) later are still reached.
        let end = after.end.unwrap_or_else(|| TopoToken::of(&last));
        let start = match (before.end, before.chunk.last()) {
            (Some(t), _) => t,
            (None, Some(oldest)) => TopoToken::of(&self.stored_in_room(room, oldest).await?),
            (None, None) => at,
        };
        Ok(Around {
            before: before.chunk,
            after: after.chunk,
            start,
            end,
            last,
        })
    }

    /// The stored row of a client-format event this room returned.
    async fn stored_in_room(&self, room: &RoomRow, client: &Value) -> Result<StoredEvent> {
        let id = client["event_id"].as_str().unwrap_or_default();
        db::events::by_id(self.db(), id)
            .await?
            .filter(|e| e.room_nid == room.room_nid)
            .ok_or_else(|| Error::internal(format!("returned event {id} vanished")))
    }

    /// The member events, in `group`, of the senders of `events`: lazy-loaded membership.
    pub(super) async fn sender_members(
        &self,
        room: &RoomRow,
        group: i64,
        events: &[&Value],
    ) -> Result<Vec<Value>> {
        let senders: BTreeSet<&str> = events.iter().filter_map(|v| v["sender"].as_str()).collect();
        let keys: Vec<(&str, &str)> = senders.into_iter().map(|s| (MEMBER, s)).collect();
        let rows = db::state::load_keys(self.db(), group, &keys).await?;
        self.state_events(room, rows.iter().map(|r| r.1)).await
    }

    /// Lazy-loaded members for a `/messages` page: the senders' member events as of the
    /// page's last event.
    pub async fn page_members(&self, room_id: &RoomId, chunk: &[Value]) -> Result<Vec<Value>> {
        let Some(last) = chunk.last() else {
            return Ok(Vec::new());
        };
        let room = self.room(room_id).await?;
        let stored = self.stored_in_room(&room, last).await?;
        let Some(group) = stored.state_after.or(stored.state_before) else {
            return Ok(Vec::new());
        };
        let events: Vec<&Value> = chunk.iter().collect();
        self.sender_members(&room, group, &events).await
    }

    async fn state_events(
        &self,
        room: &RoomRow,
        nids: impl Iterator<Item = i64>,
    ) -> Result<Vec<Value>> {
        let nids: Vec<i64> = nids.collect();
        let events = db::events::by_nids(self.db(), &nids).await?;
        self.to_client(room, &events).await
    }

    /// The nearest timeline event at or after (`forward`) or at or before `ts`.
    pub async fn event_near_timestamp(
        &self,
        user: &UserId,
        room_id: &RoomId,
        ts: i64,
        forward: bool,
    ) -> Result<(OwnedEventId, i64)> {
        let room = self.room(room_id).await?;
        self.check_can_read(&room, user).await?;
        let (id, found_ts) = db::reads::event_near_ts(self.db(), room.room_nid, ts, forward)
            .await?
            .ok_or_else(|| {
                let dir = if forward { "f" } else { "b" };
                Error::not_found(format!("Unable to find event from {ts} in direction {dir}"))
            })?;
        Ok((parse_event_id(&id)?, found_ts))
    }
}

/// Placed in the timeline and shown to clients: not an outlier, not rejected, not soft-failed.
fn in_timeline(e: &StoredEvent) -> bool {
    e.stream_ordering.is_some() && !e.outlier && e.rejected_reason.is_none() && !e.soft_failed
}
