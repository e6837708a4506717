//! History visibility: which events a user may see, per the client-server spec's rules.
//!
//! For each event, using the room state at that event (after it, so a user's own membership
//! event is visible to them):
//! 1. `world_readable` → visible;
//! 2. the user was joined → visible;
//! 3. `shared` and the user joined the room at some point after the event → visible;
//! 4. `invited` and the user was invited → visible;
//! 5. otherwise hidden.
//!
//! A page is checked with two batched queries (the state entries of its distinct state
//! groups, then their events), never a query per event.

use std::collections::{HashMap, HashSet};

use ruma::UserId;
use serde_json::Value;

use super::Rooms;
use crate::db::{self, events::StoredEvent, rooms::RoomRow};
use crate::error::Result;

#[derive(Debug, Clone, Default)]
struct AtEvent {
    visibility: Option<String>,
    membership: Option<String>,
}

impl Rooms {
    /// Keep only the events `user` may see, in order.
    pub async fn filter_visible(
        &self,
        room: &RoomRow,
        user: &UserId,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<StoredEvent>> {
        if events.is_empty() {
            return Ok(events);
        }
        let groups: Vec<i64> = events
            .iter()
            .filter_map(|e| e.state_after.or(e.state_before))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let rows = db::state::load_keys_many(
            self.db(),
            &groups,
            &[
                ("m.room.history_visibility", ""),
                ("m.room.member", user.as_str()),
            ],
        )
        .await?;
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
        let mut at: HashMap<i64, AtEvent> = HashMap::new();
        for (group, kind, _, nid) in rows {
            let entry = at.entry(group).or_default();
            let content = contents.get(&nid);
            if kind == "m.room.history_visibility" {
                entry.visibility = content
                    .and_then(|c| c["history_visibility"].as_str())
                    .map(str::to_owned);
            } else {
                entry.membership = content
                    .and_then(|c| c["membership"].as_str())
                    .map(str::to_owned);
            }
        }
        // Rule 3 needs the user's last join: the newest of their membership events that is a join.
        let last_join = db::events::member_events_of(self.db(), room.room_nid, user.as_str())
            .await?
            .into_iter()
            .filter(|e| {
                serde_json::from_str::<Value>(&e.json)
                    .is_ok_and(|v| v["content"]["membership"] == "join")
            })
            .map(|e| (e.depth, e.stream_ordering.unwrap_or(0)))
            .max();
        let none = AtEvent::default();
        Ok(events
            .into_iter()
            .filter(|e| {
                let state = e
                    .state_after
                    .or(e.state_before)
                    .and_then(|g| at.get(&g))
                    .unwrap_or(&none);
                // A room with no history_visibility event is "shared".
                let visibility = state.visibility.as_deref().unwrap_or("shared");
                let membership = state.membership.as_deref();
                visibility == "world_readable"
                    || membership == Some("join")
                    || (visibility == "shared"
                        && last_join.is_some_and(|j| j > (e.depth, e.stream_ordering.unwrap_or(0))))
                    || (visibility == "invited" && membership == Some("invite"))
            })
            .collect())
    }
}

impl Rooms {
    /// The events as another server may have them: those it could not see under the room's
    /// history visibility (`joined`: none of its users joined at the event; `invited`: none
    /// invited or joined) are served redacted, as the spec asks of servers.
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
                match content.and_then(|c| c["membership"].as_str()) {
                    Some("join") => entry.1 = true,
                    Some("invite") => entry.2 = true,
                    _ => {}
                }
            }
        }
        let rules = super::remote::rules_of(room)?;
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
            if visible {
                out.push(e.json);
            } else {
                let obj: ruma::CanonicalJsonObject = serde_json::from_str(&e.json)
                    .map_err(|err| crate::error::Error::internal(format!("stored event: {err}")))?;
                let redacted = ruma::canonical_json::redact(obj, &rules.redaction, None)
                    .map_err(|err| crate::error::Error::internal(format!("redaction: {err}")))?;
                out.push(
                    serde_json::to_string(&redacted)
                        .map_err(|err| crate::error::Error::internal(err.to_string()))?,
                );
            }
        }
        Ok(out)
    }
}
