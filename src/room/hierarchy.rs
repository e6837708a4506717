//! Space hierarchies from the rooms this server is in: summaries of a batch of rooms read
//! together (four queries per batch, whatever its size), the ordered children of each space,
//! and who may see which room. The federation `/hierarchy` answer is built here; the client
//! walk, which also asks other servers, is driven from `federation::hierarchy`.
//!
//! Who may see a room (the spec's "accessible", as Synapse applies it): anyone, when its join
//! rule is `public`, `knock` or `knock_restricted` or its history is `world_readable`; its
//! joined and invited members; and, for a `restricted` room, members of one of the rooms its
//! join rule allows. A server stands for its users: it may see what any of them may, unless
//! the room's server ACL denies it.

use std::collections::{HashMap, HashSet};

use ruma::api::federation::space::{SpaceHierarchyParentSummary, get_hierarchy};
use ruma::events::room::join_rules::RoomJoinRulesEventContent;
use ruma::events::space::child::HierarchySpaceChildEvent;
use ruma::room::{JoinRuleSummary, RoomSummary, RoomType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Raw;
use ruma::{
    CanonicalJsonObject, EventEncryptionAlgorithm, OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId,
    OwnedServerName, RoomId, ServerName, UInt, UserId,
};
use serde_json::json;

use super::directory::{SUMMARY_TYPES, stored_room_id, str_field};
use super::{Rooms, raw};
use crate::db::{self, spaces::Member};
use crate::error::{Error, Result};

/// Most children of one space a hierarchy shows, in the spec's order; more are left out.
pub const MAX_CHILDREN: usize = 500;

/// State read for a summary beyond what a directory entry needs.
const MORE_TYPES: [&str; 2] = ["m.room.encryption", "m.room.server_acl"];

/// Who asks: a user of ours (client `/hierarchy`) or another server (federation).
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    User(&'a UserId),
    Server(&'a ServerName),
    /// A client without an access token (room summaries may be asked for so).
    Anonymous,
}

/// A child a space names with its `m.space.child` event.
#[derive(Debug, Clone)]
pub struct SpaceChild {
    pub room_id: OwnedRoomId,
    /// Servers to ask about the child (the event's `via`).
    pub via: Vec<OwnedServerName>,
    /// The event as a hierarchy shows it (stripped state with `origin_server_ts`).
    pub event: Raw<HierarchySpaceChildEvent>,
}

/// A room this server is in, summarised for a hierarchy.
#[derive(Debug, Clone)]
pub struct SpaceRoom {
    pub summary: RoomSummary,
    /// Its children in order; empty unless the room is a space.
    pub children: Vec<SpaceChild>,
    /// Whether the viewer may see the room.
    pub accessible: bool,
}

/// The children named by `events`: valid ones only (a child event without `via` removes
/// the child), the suggested ones when `suggested_only`, each room once, in the spec's
/// order, at most [`MAX_CHILDREN`]. Used for our own spaces and other servers' answers.
pub fn space_children(
    events: impl IntoIterator<Item = Raw<HierarchySpaceChildEvent>>,
    suggested_only: bool,
) -> Vec<SpaceChild> {
    let mut parsed: Vec<(HierarchySpaceChildEvent, Raw<HierarchySpaceChildEvent>)> = events
        .into_iter()
        .filter_map(|raw| {
            let event = raw.deserialize().ok()?;
            let keep =
                !event.content.via.is_empty() && (!suggested_only || event.content.suggested);
            keep.then_some((event, raw))
        })
        .collect();
    parsed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = HashSet::new();
    parsed
        .into_iter()
        .filter(|(event, _)| seen.insert(event.state_key.clone()))
        .take(MAX_CHILDREN)
        .map(|(event, raw)| SpaceChild {
            room_id: event.state_key,
            via: event.content.via,
            event: raw,
        })
        .collect()
}

/// Whether a room may be seen by someone who is (or is not) a member, and who is joined to
/// the allowed rooms for which `joined_any` says so.
pub fn may_see(
    summary: &RoomSummary,
    member: bool,
    joined_any: impl FnOnce(&[OwnedRoomId]) -> bool,
) -> bool {
    match &summary.join_rule {
        JoinRuleSummary::Public | JoinRuleSummary::Knock | JoinRuleSummary::KnockRestricted(_) => {
            true
        }
        _ if summary.world_readable || member => true,
        JoinRuleSummary::Restricted(r) => joined_any(&r.allowed_room_ids),
        _ => false,
    }
}

/// A join rule that serialises: one ruma does not know (which it cannot write back) reads
/// as `invite`, since nobody knows how to satisfy it.
pub fn known_join_rule(rule: JoinRuleSummary) -> JoinRuleSummary {
    match rule {
        r @ (JoinRuleSummary::Invite
        | JoinRuleSummary::Knock
        | JoinRuleSummary::Private
        | JoinRuleSummary::Restricted(_)
        | JoinRuleSummary::KnockRestricted(_)
        | JoinRuleSummary::Public) => r,
        _ => JoinRuleSummary::Invite,
    }
}

type StateMap = HashMap<(i64, String), (String, CanonicalJsonObject)>;

impl Rooms {
    /// Summaries of those rooms of `room_ids` this server is in, for `viewer`, with the
    /// children of the spaces among them when `with_children`. Rooms we are not in are
    /// absent from the answer.
    pub async fn space_rooms(
        &self,
        room_ids: &[OwnedRoomId],
        viewer: Viewer<'_>,
        suggested_only: bool,
        with_children: bool,
    ) -> Result<HashMap<OwnedRoomId, SpaceRoom>> {
        let ids: Vec<String> = room_ids.iter().map(ToString::to_string).collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        // 1. The rooms we are in, with their joined member counts.
        let rows = db::spaces::resident_rooms(self.db(), &ids, self.server_name().as_str()).await?;
        if rows.is_empty() {
            return Ok(HashMap::new());
        }
        // 2. Their summary state.
        let with_rules: Vec<(i64, Option<RoomVersionRules>)> = rows
            .iter()
            .map(|r| (r.room_nid, r.room_version.rules()))
            .collect();
        let types: Vec<&str> = SUMMARY_TYPES.iter().chain(&MORE_TYPES).copied().collect();
        let state = self.state_contents(&with_rules, &types).await?;
        let summaries = rows
            .iter()
            .map(|row| summarize(row, &state))
            .collect::<Result<Vec<_>>>()?;
        // 3. The children of the spaces.
        let mut children = self
            .children_of(&rows, &summaries, suggested_only, with_children)
            .await?;
        // 4. Where the viewer is a member: these rooms and those their join rules allow.
        let mut asked: Vec<String> = ids.clone();
        for s in &summaries {
            if let JoinRuleSummary::Restricted(r) | JoinRuleSummary::KnockRestricted(r) =
                &s.join_rule
            {
                asked.extend(r.allowed_room_ids.iter().map(ToString::to_string));
            }
        }
        asked.sort_unstable();
        asked.dedup();
        let member = match viewer {
            Viewer::User(u) => Some(Member::User(u.as_str())),
            Viewer::Server(s) => Some(Member::Server(s.as_str())),
            Viewer::Anonymous => None,
        };
        let memberships: HashMap<String, bool> = match member {
            Some(member) => db::spaces::memberships(self.db(), member, &asked)
                .await?
                .into_iter()
                .collect(),
            None => HashMap::new(),
        };

        let mut out = HashMap::new();
        for (row, summary) in rows.iter().zip(summaries) {
            let acl_ok = match viewer {
                Viewer::Server(server) => server_allowed(&state, row.room_nid, server),
                Viewer::User(_) | Viewer::Anonymous => true,
            };
            let member = memberships.contains_key(summary.room_id.as_str());
            let accessible = acl_ok
                && may_see(&summary, member, |allowed| {
                    allowed
                        .iter()
                        .any(|a| memberships.get(a.as_str()) == Some(&true))
                });
            let children = children.remove(&row.room_nid).unwrap_or_default();
            out.insert(
                summary.room_id.clone(),
                SpaceRoom {
                    summary,
                    children,
                    accessible,
                },
            );
        }
        Ok(out)
    }

    /// The ordered children of the spaces among `rows`, by room number.
    async fn children_of(
        &self,
        rows: &[db::spaces::ResidentRoom],
        summaries: &[RoomSummary],
        suggested_only: bool,
        with_children: bool,
    ) -> Result<HashMap<i64, Vec<SpaceChild>>> {
        let spaces: Vec<i64> = rows
            .iter()
            .zip(summaries)
            .filter(|(_, s)| with_children && s.room_type == Some(RoomType::Space))
            .map(|(r, _)| r.room_nid)
            .collect();
        if spaces.is_empty() {
            return Ok(HashMap::new());
        }
        let cap = i64::try_from(MAX_CHILDREN).unwrap_or(i64::MAX);
        let mut events: HashMap<i64, Vec<Raw<HierarchySpaceChildEvent>>> = HashMap::new();
        for row in db::spaces::space_children(self.db(), &spaces, suggested_only, cap).await? {
            let content: serde_json::Value = serde_json::from_str(&row.content)
                .map_err(|e| Error::internal(format!("stored child event: {e}")))?;
            let stripped = json!({
                "type": "m.space.child",
                "state_key": row.state_key,
                "content": content,
                "sender": row.sender,
                "origin_server_ts": row.origin_server_ts,
            });
            events
                .entry(row.room_nid)
                .or_default()
                .push(Raw::from_json(raw(&stripped)?));
        }
        Ok(events
            .into_iter()
            .map(|(nid, evs)| (nid, space_children(evs, suggested_only)))
            .collect())
    }

    /// `GET /_matrix/federation/v1/hierarchy/{roomId}`: the room and its children as
    /// `server` may see them. The children are summarised without their own children;
    /// those we are in but `server` may not see are listed as inaccessible, those we are not
    /// in are left out (the asker learns of them from the child events).
    pub async fn hierarchy_for_server(
        &self,
        room_id: &RoomId,
        server: &ServerName,
        suggested_only: bool,
    ) -> Result<get_hierarchy::v1::Response> {
        let viewer = Viewer::Server(server);
        let root = self
            .space_rooms(&[room_id.to_owned()], viewer, suggested_only, true)
            .await?
            .remove(room_id)
            .filter(|r| r.accessible)
            .ok_or_else(|| Error::not_found("Room not found, or your server may not see it"))?;
        let child_ids: Vec<OwnedRoomId> = root.children.iter().map(|c| c.room_id.clone()).collect();
        let mut children = self
            .space_rooms(&child_ids, viewer, suggested_only, false)
            .await?;
        let children_state = root.children.into_iter().map(|c| c.event).collect();
        let mut response = get_hierarchy::v1::Response::new(SpaceHierarchyParentSummary::new(
            root.summary,
            children_state,
        ));
        for id in child_ids {
            match children.remove(&id) {
                Some(c) if c.accessible => response.children.push(c.summary),
                Some(_) => response.inaccessible_children.push(id),
                None => {}
            }
        }
        Ok(response)
    }

    /// Whether `user` may see a room another server summarised for us; their membership and
    /// the allowed rooms are looked up here.
    pub async fn user_may_see(&self, user: &UserId, summary: &RoomSummary) -> Result<bool> {
        if may_see(summary, false, |_| false) {
            return Ok(true);
        }
        let mut asked = vec![summary.room_id.to_string()];
        if let JoinRuleSummary::Restricted(r) = &summary.join_rule {
            asked.extend(r.allowed_room_ids.iter().map(ToString::to_string));
        }
        let memberships: HashMap<String, bool> =
            db::spaces::memberships(self.db(), Member::User(user.as_str()), &asked)
                .await?
                .into_iter()
                .collect();
        let member = memberships.contains_key(summary.room_id.as_str());
        Ok(may_see(summary, member, |allowed| {
            allowed
                .iter()
                .any(|a| memberships.get(a.as_str()) == Some(&true))
        }))
    }
}

/// A room's summary from its current state.
fn summarize(row: &db::spaces::ResidentRoom, state: &StateMap) -> Result<RoomSummary> {
    let content = |event_type: &str| state.get(&(row.room_nid, event_type.to_owned()));
    let field =
        |event_type: &str, key: &str| content(event_type).and_then(|(_, c)| str_field(c, key));
    let text = |event_type: &str, key: &str| {
        field(event_type, key)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // Without a join rules event nobody can join uninvited.
    let join_rule = content("m.room.join_rules")
        .and_then(|(_, c)| {
            let value = serde_json::to_value(c).ok()?;
            serde_json::from_value::<RoomJoinRulesEventContent>(value).ok()
        })
        .map_or(JoinRuleSummary::Invite, |c| {
            known_join_rule(c.join_rule.into())
        });
    let mut summary = RoomSummary::new(
        stored_room_id(&row.room_id)?,
        join_rule,
        field("m.room.guest_access", "guest_access") == Some("can_join"),
        UInt::new_saturating(u64::try_from(row.joined).unwrap_or(0)),
        field("m.room.history_visibility", "history_visibility") == Some("world_readable"),
    );
    summary.name = text("m.room.name", "name");
    summary.topic = text("m.room.topic", "topic");
    summary.canonical_alias =
        field("m.room.canonical_alias", "alias").and_then(|a| OwnedRoomAliasId::try_from(a).ok());
    summary.avatar_url = text("m.room.avatar", "url").map(OwnedMxcUri::from);
    summary.room_type = field("m.room.create", "type").map(RoomType::from);
    summary.encryption =
        field("m.room.encryption", "algorithm").map(EventEncryptionAlgorithm::from);
    summary.room_version = Some(row.room_version.clone());
    Ok(summary)
}

/// Whether the room's server ACL lets `server` in; an unreadable ACL denies nobody, as for
/// every other federation request.
fn server_allowed(state: &StateMap, room_nid: i64, server: &ServerName) -> bool {
    let Some((_, content)) = state.get(&(room_nid, "m.room.server_acl".to_owned())) else {
        return true;
    };
    serde_json::to_string(content).map_or(true, |json| super::served::acl_allows(&json, server))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::room::RestrictedSummary;

    fn child(
        state_key: &str,
        ts: u64,
        content: serde_json::Value,
    ) -> Raw<HierarchySpaceChildEvent> {
        Raw::from_json(
            raw(&json!({
                "type": "m.space.child",
                "state_key": state_key,
                "content": content,
                "sender": "@a:example.org",
                "origin_server_ts": ts,
            }))
            .unwrap(),
        )
    }

    fn ids(children: &[SpaceChild]) -> Vec<&str> {
        children.iter().map(|c| c.room_id.as_str()).collect()
    }

    #[test]
    fn children_are_ordered_filtered_and_unique() {
        let via = json!(["example.org"]);
        let events = vec![
            child("!late:x", 30, json!({"via": via})),
            child("!early:x", 10, json!({"via": via})),
            child("!same_ts_b:x", 20, json!({"via": via})),
            child("!same_ts_a:x", 20, json!({"via": via})),
            child("!ordered_z:x", 99, json!({"via": via, "order": "z"})),
            child(
                "!ordered_a:x",
                99,
                json!({"via": via, "order": "a", "suggested": true}),
            ),
            // An order outside printable ASCII is ignored, not an error.
            child("!bad_order:x", 5, json!({"via": via, "order": "\u{1}"})),
            child("!removed:x", 1, json!({})),
            child("!no_via:x", 1, json!({"via": []})),
            child("!early:x", 40, json!({"via": via})),
        ];
        let all = space_children(events.clone(), false);
        assert_eq!(
            ids(&all),
            [
                "!ordered_a:x",
                "!ordered_z:x",
                "!bad_order:x",
                "!early:x",
                "!same_ts_a:x",
                "!same_ts_b:x",
                "!late:x",
            ]
        );
        assert_eq!(
            all[0].via,
            vec![OwnedServerName::try_from("example.org").unwrap()]
        );
        assert_eq!(ids(&space_children(events, true)), ["!ordered_a:x"]);
    }

    #[test]
    fn children_are_capped() {
        let events = (0..MAX_CHILDREN as u64 + 10)
            .map(|i| child(&format!("!r{i}:x"), i, json!({"via": ["x"]})));
        assert_eq!(space_children(events, false).len(), MAX_CHILDREN);
    }

    fn summary(rule: JoinRuleSummary, world_readable: bool) -> RoomSummary {
        RoomSummary::new(
            OwnedRoomId::try_from("!r:x").unwrap(),
            rule,
            false,
            UInt::from(1u32),
            world_readable,
        )
    }

    #[test]
    fn who_may_see_a_room() {
        let never = |_: &[OwnedRoomId]| -> bool { panic!("allowed rooms need not be asked") };
        assert!(may_see(
            &summary(JoinRuleSummary::Public, false),
            false,
            never
        ));
        assert!(may_see(
            &summary(JoinRuleSummary::Knock, false),
            false,
            never
        ));
        assert!(may_see(
            &summary(JoinRuleSummary::Invite, true),
            false,
            never
        ));
        assert!(may_see(
            &summary(JoinRuleSummary::Invite, false),
            true,
            never
        ));
        assert!(!may_see(
            &summary(JoinRuleSummary::Invite, false),
            false,
            |_| true
        ));
        let space = OwnedRoomId::try_from("!space:x").unwrap();
        let restricted = summary(
            JoinRuleSummary::Restricted(RestrictedSummary::new(vec![space.clone()])),
            false,
        );
        assert!(may_see(&restricted, false, |a| a == [space.clone()]));
        assert!(!may_see(&restricted, false, |_| false));
    }
}
