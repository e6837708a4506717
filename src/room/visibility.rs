//! History visibility: which events a user may see, per the client-server spec's rules.
//!
//! For each event, using the room state at that event (after it, so a user's own join is
//! visible to them):
//! 1. `world_readable` → visible;
//! 2. the user was joined → visible;
//! 3. `shared` and the user joined the room at some point after the event → visible;
//! 4. `invited` and the user was invited → visible;
//! 5. otherwise hidden.
//!
//! A history visibility change and the user's own membership events are visible if the
//! state before or after them allows it, as the spec says (a user sees the change that
//! hides what follows, and their own leave). Events of users erased at deactivation come
//! redacted to anyone not joined when they were sent (Synapse's rule).
//!
//! A page is checked with the state entries of its distinct state groups, from the state
//! cache (groups never change) or else in one batched query, never a query per event; rule 3
//! costs one more, only when an event reaches it.

use std::collections::{HashMap, HashSet};

use ruma::UserId;
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use serde_json::Value;

use super::Rooms;
use super::pdu::{Pdu, membership_in};
use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::error::Result;

#[derive(Debug, Clone, Default)]
struct AtEvent {
    visibility: Option<String>,
    membership: Option<MembershipState>,
}

/// The state entries a visibility check reads: the history visibility and the user's
/// membership.
fn visibility_keys(user: &UserId) -> [(StateEventType, String); 2] {
    [
        (StateEventType::RoomHistoryVisibility, String::new()),
        (StateEventType::RoomMember, user.to_string()),
    ]
}

impl Rooms {
    /// Load what checking `user`'s view of events on these state groups needs, for many
    /// rooms at once (one query for whatever the cache lacks), so that the per-room
    /// [`Rooms::filter_visible`] calls that follow read only the cache.
    pub async fn prepare_visibility(&self, user: &UserId, groups: &[i64]) -> Result<()> {
        let groups: Vec<i64> = groups
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !groups.is_empty() {
            super::state_cache::load_state_events_many(
                self.db(),
                &self.state_cache,
                &groups,
                &visibility_keys(user),
            )
            .await?;
        }
        Ok(())
    }

    /// Keep only the events `user` may see, in order. Events of erased senders that the
    /// user was not joined at come redacted, as Synapse serves them.
    pub async fn filter_visible(
        &self,
        room: &RoomRow,
        user: &UserId,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>> {
        if events.is_empty() {
            return Ok(events);
        }
        let groups = visibility_groups(user, &events);
        let [visibility_key, member_key] = visibility_keys(user);
        let entries = super::state_cache::load_state_events_many(
            self.db(),
            &self.state_cache,
            &groups,
            &[visibility_key.clone(), member_key.clone()],
        )
        .await?;
        let field = |pdu: Option<&Pdu>, name: &str| -> Option<String> {
            let content = serde_json::from_str::<Value>(pdu?.content.get()).ok()?;
            content[name].as_str().map(str::to_owned)
        };
        let at: HashMap<i64, AtEvent> = entries
            .iter()
            .map(|(group, state)| {
                let at = AtEvent {
                    visibility: field(state.get(&visibility_key), "history_visibility"),
                    membership: field(state.get(&member_key), "membership")
                        .map(MembershipState::from),
                };
                (*group, at)
            })
            .collect();
        let none = AtEvent::default();
        let at_group = |g: Option<i64>| g.and_then(|g| at.get(&g)).unwrap_or(&none);
        let erased = self
            .erased_among(events.iter().map(|e| e.sender.as_str()))
            .await?;
        // Rule 3 needs the user's last join; it is read only if an event needs it.
        let mut last_join: Option<Option<(i64, i64)>> = None;
        let mut kept = Vec::with_capacity(events.len());
        for mut e in events {
            let after = at_group(e.state_after.or(e.state_before));
            let before = sides(&e, user).then(|| at_group(e.state_before));
            let mut visible = false;
            for state in std::iter::once(after).chain(before) {
                visible = match rule(state) {
                    Rule::Visible => true,
                    Rule::Hidden => false,
                    Rule::JoinedSince => {
                        let join = match last_join {
                            Some(j) => j,
                            None => *last_join.insert(self.last_join(room, user).await?),
                        };
                        join.is_some_and(|j| j > (e.depth, e.stream_ordering.unwrap_or(0)))
                    }
                };
                if visible {
                    break;
                }
            }
            if !visible {
                continue;
            }
            // Someone who was in the room when an erased user spoke keeps what they saw;
            // anyone else gets the event without its content.
            let joined_at = std::iter::once(after)
                .chain(before)
                .any(|s| s.membership == Some(MembershipState::Join));
            if !joined_at && erased.contains(e.sender.as_str()) {
                e.json = redacted_json(&room.rules()?.redaction, &e.json)?;
            }
            kept.push(e);
        }
        Ok(kept)
    }

    /// The (depth, stream position) of the user's newest join to the room, if any.
    async fn last_join(&self, room: &RoomRow, user: &UserId) -> Result<Option<(i64, i64)>> {
        Ok(
            db::events::member_events_of(self.db(), room.room_nid, user.as_str())
                .await?
                .into_iter()
                .filter(|e| {
                    serde_json::from_str::<Value>(&e.json)
                        .is_ok_and(|v| membership_in(&v["content"]) == Some(MembershipState::Join))
                })
                .map(|e| (e.depth, e.stream_ordering.unwrap_or(0)))
                .max(),
        )
    }
}

/// The state groups checking `user`'s view of these events reads (for
/// [`Rooms::prepare_visibility`] ahead of several rooms' checks): the state at each event,
/// and the state before those judged from either side (see `sides`).
pub fn visibility_groups(user: &UserId, events: &[StoredEvent]) -> Vec<i64> {
    events
        .iter()
        .flat_map(|e| {
            let after = e.state_after.or(e.state_before);
            let before = sides(e, user).then_some(e.state_before).flatten();
            after.into_iter().chain(before)
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect()
}

/// What the spec's rules say of an event, given the state at it.
enum Rule {
    Visible,
    Hidden,
    /// `shared`: visible if the user joined the room after the event.
    JoinedSince,
}

/// The spec's history visibility rules, in order, for one side of an event.
fn rule(state: &AtEvent) -> Rule {
    // A room with no history_visibility event is "shared".
    let visibility = state.visibility.as_deref().unwrap_or("shared");
    let membership = state.membership.as_ref();
    match visibility {
        "world_readable" => Rule::Visible,
        _ if membership == Some(&MembershipState::Join) => Rule::Visible,
        "shared" => Rule::JoinedSince,
        "invited" if membership == Some(&MembershipState::Invite) => Rule::Visible,
        _ => Rule::Hidden,
    }
}

/// Whether the event is judged from either side of it, as the spec asks of history
/// visibility changes (a user sees the change that hides what follows from them) and of
/// the user's own membership events (their own leave, say).
fn sides(e: &StoredEvent, user: &UserId) -> bool {
    match e.event_type.as_str() {
        "m.room.history_visibility" => true,
        "m.room.member" => e.state_before != e.state_after && state_key_is(&e.json, user),
        _ => false,
    }
}

/// Whether the event's `state_key` is the user's ID (read only for member events).
fn state_key_is(json: &str, user: &UserId) -> bool {
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        #[serde(borrow)]
        state_key: Option<&'a str>,
    }
    serde_json::from_str::<Key<'_>>(json).is_ok_and(|k| k.state_key == Some(user.as_str()))
}

/// The event's JSON with what redaction removes removed, by the room version's algorithm.
pub(crate) fn redacted_json(
    redaction: &ruma::room_version_rules::RedactionRules,
    json: &str,
) -> Result<String> {
    let obj: ruma::CanonicalJsonObject = serde_json::from_str(json)
        .map_err(|err| crate::error::Error::internal(format!("stored event: {err}")))?;
    let redacted = ruma::canonical_json::redact(obj, redaction, None)
        .map_err(|err| crate::error::Error::internal(format!("redaction: {err}")))?;
    serde_json::to_string(&redacted).map_err(|err| crate::error::Error::internal(err.to_string()))
}

impl Rooms {
    /// The events as another server may have them: those it could not see under the room's
    /// history visibility (`joined`: none of its users joined at the event; `invited`: none
    /// invited or joined) are served redacted, as the spec asks of servers, and so are those
    /// of erased users.
    pub async fn for_server(
        &self,
        room: &RoomRow,
        server: &ruma::ServerName,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<String>> {
        let groups: Vec<i64> = events
            .iter()
            .filter_map(|e| e.state_after.or(e.state_before))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let rows = db::state::visibility_for_server(self.db(), &groups, server.as_str()).await?;
        let nids: Vec<i64> = rows.iter().map(|r| r.3).collect();
        let contents: HashMap<i64, Value> = db::events::by_nids(self.db(), &nids)
            .await?
            .into_iter()
            .filter_map(|e| {
                serde_json::from_str::<Value>(&e.json)
                    .ok()
                    .map(|v| (e.event_nid, v["content"].clone()))
            })
            .collect();
        // Per group: (visibility, any joined, any invited).
        let mut at: HashMap<i64, (Option<String>, bool, bool)> = HashMap::new();
        for (group, kind, _, nid) in rows {
            let entry = at.entry(group).or_default();
            let content = contents.get(&nid);
            if kind == "m.room.history_visibility" {
                entry.0 = content
                    .and_then(|c| c["history_visibility"].as_str())
                    .map(str::to_owned);
            } else {
                match content.and_then(membership_in) {
                    Some(MembershipState::Join) => entry.1 = true,
                    Some(MembershipState::Invite) => entry.2 = true,
                    _ => {}
                }
            }
        }
        let rules = room.rules()?;
        // Other servers get an erased user's events redacted, whatever they saw (Synapse).
        let erased = self
            .erased_among(events.iter().map(|e| e.sender.as_str()))
            .await?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let (visibility, joined, invited) = e
                .state_after
                .or(e.state_before)
                .and_then(|g| at.get(&g))
                .cloned()
                .unwrap_or_default();
            let visible = match visibility.as_deref().unwrap_or("shared") {
                "joined" => joined,
                "invited" => joined || invited,
                _ => true,
            };
            if visible && !erased.contains(e.sender.as_str()) {
                out.push(e.json);
            } else {
                out.push(redacted_json(&rules.redaction, &e.json)?);
            }
        }
        Ok(out)
    }
}
