//! Room aliases and the room directory: who may create, resolve and delete an alias, who may
//! publish a room, and the list of published rooms with its pagination tokens.
//!
//! Access rules follow Synapse's defaults, which the spec leaves to servers:
//! - creating an alias needs a local alias and a room the caller is joined to;
//! - deleting one needs its creator, or a joined member with the power to send
//!   `m.room.canonical_alias` (Synapse's "room moderator" test); the canonical alias event is
//!   then updated if it named the alias and the caller may change it;
//! - publishing a room (or hiding it) needs that same moderator power;
//! - listing a room's local aliases needs a joined member, or a world-readable room.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ruma::canonical_json::redact_content_in_place;
use ruma::directory::{
    Filter, PublicRoomsChunk, PublicRoomsChunkInit, RoomNetwork, RoomTypeFilter,
};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room::{JoinRuleKind, RoomType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId,
    OwnedServerName, RoomAliasId, RoomId, UInt, UserId,
};

use super::pdu::NewContent;
use super::{Rooms, raw};
use crate::db::{self, directory::PublicRoomRow, directory::StateContentRow, rooms::RoomRow};
use crate::error::{Error, Result};

/// Rooms per directory page when the client names no limit.
pub const DEFAULT_PAGE: u64 = 100;
/// Most rooms one directory page returns, whatever the client asks.
pub const MAX_PAGE: u64 = 500;

/// The state a directory entry is made of.
pub(super) const SUMMARY_TYPES: [&str; 8] = [
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
];

/// A position in the directory order (most joined members first, then room ID):
/// `n<joined>_<room ID, base64url>` lists the rooms after that room, `p…` the rooms before
/// it. The room ID is encoded so the token needs no escaping in a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryToken {
    pub forward: bool,
    pub joined: i64,
    pub room_id: OwnedRoomId,
}

impl DirectoryToken {
    pub fn parse(s: &str) -> Result<DirectoryToken> {
        let bad = || Error::invalid_param(format!("Invalid pagination token {s:?}"));
        let forward = match s.as_bytes().first() {
            Some(b'n') => true,
            Some(b'p') => false,
            _ => return Err(bad()),
        };
        let (joined, room) = s[1..].split_once('_').ok_or_else(bad)?;
        // Digits only: `parse` alone would also take a sign.
        if joined.is_empty() || !joined.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let joined = joined.parse().map_err(|_| bad())?;
        let room = URL_SAFE_NO_PAD.decode(room).map_err(|_| bad())?;
        let room = String::from_utf8(room).map_err(|_| bad())?;
        let room_id = OwnedRoomId::try_from(room).map_err(|_| bad())?;
        Ok(DirectoryToken {
            forward,
            joined,
            room_id,
        })
    }
}

impl std::fmt::Display for DirectoryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = if self.forward { 'n' } else { 'p' };
        let room = URL_SAFE_NO_PAD.encode(self.room_id.as_str());
        write!(f, "{dir}{}_{room}", self.joined)
    }
}

/// One page of the room directory.
#[derive(Debug)]
pub struct PublicRoomsPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: u64,
}

impl Rooms {
    /// Point a new local alias at a room the caller is joined to.
    pub async fn create_alias(
        &self,
        user: &UserId,
        alias: &RoomAliasId,
        room_id: &RoomId,
    ) -> Result<()> {
        if alias.server_name() != self.server_name() {
            return Err(Error::invalid_param("Room alias must be on this server"));
        }
        let room = self.room(room_id).await?;
        if !self.is_joined(&room, user).await? {
            return Err(Error::forbidden(
                "You must be in the room to create an alias for it",
            ));
        }
        // The primary key decides, so two racing requests cannot both succeed.
        match db::rooms::insert_alias(self.db(), alias.as_str(), room.room_nid, user.as_str()).await
        {
            Ok(()) => {
                tracing::info!(%alias, %room_id, %user, "alias created");
                Ok(())
            }
            Err(e) if db::is_unique_violation(&e, db::rooms::ALIASES_PKEY) => {
                Err(alias_taken(alias))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The room an alias points to, and servers that can be asked to join it (ours first).
    pub async fn resolve_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let not_found = || Error::not_found(format!("Room alias {alias} not found"));
        if alias.server_name() != self.server_name() {
            // Remote aliases are resolved over federation by the caller (the room domain
            // never calls out).
            return Err(not_found());
        }
        let row = db::directory::alias(self.db(), alias.as_str())
            .await?
            .ok_or_else(not_found)?;
        let room_id = stored_room_id(&row.room_id)?;
        let mut servers = vec![self.server_name().clone()];
        for s in db::directory::joined_servers(self.db(), row.room_nid).await? {
            if let Ok(s) = OwnedServerName::try_from(s)
                && !servers.contains(&s)
            {
                servers.push(s);
            }
        }
        Ok((room_id, servers))
    }

    /// Remove a local alias: its creator may, and so may a room moderator.
    pub async fn delete_alias(&self, user: &UserId, alias: &RoomAliasId) -> Result<()> {
        let not_found = || Error::not_found(format!("Room alias {alias} not found"));
        let row = db::directory::alias(self.db(), alias.as_str())
            .await?
            .ok_or_else(not_found)?;
        let room = self.room(&stored_room_id(&row.room_id)?).await?;
        if row.creator != user.as_str() && !self.can_change_room_list(&room, user).await? {
            return Err(Error::forbidden(
                "You don't have permission to delete the alias",
            ));
        }
        if !db::rooms::delete_alias(self.db(), alias.as_str()).await? {
            return Err(not_found());
        }
        tracing::info!(%alias, room_id = %room.room_id, %user, "alias deleted");
        // Like Synapse: a canonical alias event naming a deleted alias would send clients to
        // a dead end, so drop it there too if the caller may; the deletion stands either way.
        if let Err(e) = self.unset_canonical_alias(&room, user, alias).await {
            tracing::info!(%alias, error = %e, "canonical alias event left unchanged");
        }
        Ok(())
    }

    /// The room's local aliases, for joined members (anyone when the room is world-readable).
    pub async fn local_aliases(
        &self,
        user: &UserId,
        room_id: &RoomId,
    ) -> Result<Vec<OwnedRoomAliasId>> {
        let room = self.room(room_id).await?;
        if !self.is_joined(&room, user).await? {
            let state = self
                .room_state(&room, &["m.room.history_visibility"])
                .await?;
            let world_readable = state
                .get("m.room.history_visibility")
                .and_then(|(_, c)| str_field(c, "history_visibility"))
                == Some("world_readable");
            if !world_readable {
                return Err(Error::forbidden("You are not a member of the room"));
            }
        }
        Ok(db::directory::aliases_of_room(self.db(), room.room_nid)
            .await?
            .into_iter()
            .filter_map(|a| OwnedRoomAliasId::try_from(a).ok())
            .collect())
    }

    /// Whether the room is published in the directory.
    pub async fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.room(room_id).await?.is_public)
    }

    /// Publish the room in the directory or take it out; room moderators only.
    pub async fn set_published(&self, user: &UserId, room_id: &RoomId, public: bool) -> Result<()> {
        let room = self.room(room_id).await?;
        if !self.can_change_room_list(&room, user).await? {
            return Err(Error::forbidden(
                "You need to be a room moderator to change its directory visibility",
            ));
        }
        db::rooms::set_public(self.db(), room.room_nid, public).await?;
        tracing::info!(room_id = %room.room_id, %user, public, "room directory visibility set");
        Ok(())
    }

    /// Synapse's test for changing a room's directory entry or others' aliases: joined, with
    /// the power to send `m.room.canonical_alias`.
    async fn can_change_room_list(&self, room: &RoomRow, user: &UserId) -> Result<bool> {
        if !self.is_joined(room, user).await? {
            return Ok(false);
        }
        let rules = room.rules()?;
        let state = self
            .room_state(room, &["m.room.create", "m.room.power_levels"])
            .await?;
        let json = |c: &CanonicalJsonObject| {
            serde_json::to_string(c).map_err(|e| Error::internal(format!("stored state: {e}")))
        };
        let create = match state.get("m.room.create") {
            Some((sender, content)) => Some((
                UserId::parse(sender.as_str())
                    .map_err(|e| Error::internal(format!("stored create event: {e}")))?,
                json(content)?,
            )),
            None => None,
        };
        let power_levels = match state.get("m.room.power_levels") {
            Some((_, content)) => Some(json(content)?),
            None => None,
        };
        let levels = super::power::levels(
            &rules,
            create.as_ref().map(|(u, c)| (&**u, c.as_str())),
            power_levels.as_deref(),
        )?;
        Ok(levels.user_can_send_state(user, StateEventType::RoomCanonicalAlias))
    }

    /// Take `alias` out of the room's canonical alias event, sending a new one as `user`.
    async fn unset_canonical_alias(
        &self,
        room: &RoomRow,
        user: &UserId,
        alias: &RoomAliasId,
    ) -> Result<()> {
        let state = self.room_state(room, &["m.room.canonical_alias"]).await?;
        let Some((_, content)) = state.get("m.room.canonical_alias") else {
            return Ok(());
        };
        let mut content = content.clone();
        let mut changed = false;
        if str_field(&content, "alias") == Some(alias.as_str()) {
            content.remove("alias");
            changed = true;
        }
        if let Some(CanonicalJsonValue::Array(alt)) = content.get_mut("alt_aliases") {
            let before = alt.len();
            alt.retain(|a| !matches!(a, CanonicalJsonValue::String(a) if a == alias.as_str()));
            changed |= alt.len() != before;
        }
        if !changed {
            return Ok(());
        }
        let value = serde_json::to_value(&content)
            .map_err(|e| Error::internal(format!("canonical alias content: {e}")))?;
        let room_id = stored_room_id(&room.room_id)?;
        self.send(
            user,
            &room_id,
            NewContent {
                kind: TimelineEventType::RoomCanonicalAlias,
                state_key: Some(String::new()),
                content: raw(&value)?,
                redacts: None,
            },
            None,
        )
        .await?;
        Ok(())
    }

    /// A page of the local room directory. Two queries whatever the page size: the page of
    /// published rooms (filters applied in SQL), then the state of all its rooms at once.
    pub async fn public_rooms(
        &self,
        limit: Option<UInt>,
        since: Option<&str>,
        filter: &Filter,
        network: &RoomNetwork,
    ) -> Result<PublicRoomsPage> {
        let from = since.map(DirectoryToken::parse).transpose()?;
        if let RoomNetwork::ThirdParty(_) = network {
            // No application service publishes third-party networks here.
            return Ok(PublicRoomsPage {
                chunk: Vec::new(),
                next_batch: None,
                prev_batch: None,
                total: 0,
            });
        }
        let limit = match limit.map(u64::from) {
            None | Some(0) => DEFAULT_PAGE,
            Some(n) => n.min(MAX_PAGE),
        };
        let room_types = (!filter.room_types.is_empty()).then(|| db::directory::RoomTypes {
            untyped: filter.room_types.contains(&RoomTypeFilter::Default),
            types: filter
                .room_types
                .iter()
                .filter_map(|t| t.as_str())
                .collect(),
        });
        let search = filter
            .generic_search_term
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let query = db::directory::PublicRoomsQuery {
            search,
            room_types,
            from: from.as_ref().map(|t| db::directory::Keyset {
                forward: t.forward,
                joined: t.joined,
                room_id: t.room_id.as_str(),
            }),
            // One more than asked shows whether another page follows.
            limit: i64::try_from(limit + 1).unwrap_or(i64::MAX),
        };
        let (mut rows, total) = db::directory::public_rooms_page(self.db(), &query).await?;
        let total = u64::try_from(total).unwrap_or(0);
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let forward = from.as_ref().is_none_or(|t| t.forward);
        if !forward {
            rows.reverse();
        }
        let token = |row: &PublicRoomRow, forward: bool| -> Result<String> {
            Ok(DirectoryToken {
                forward,
                joined: row.joined,
                room_id: stored_room_id(&row.room_id)?,
            }
            .to_string())
        };
        // Forward pages have earlier rooms when they started from a token; backward pages
        // always have later ones (the page the token came from).
        let (has_next, has_prev) = if forward {
            (more, from.is_some())
        } else {
            (true, more)
        };
        let next_batch = match rows.last() {
            Some(last) if has_next => Some(token(last, true)?),
            _ => None,
        };
        let prev_batch = match rows.first() {
            Some(first) if has_prev => Some(token(first, false)?),
            _ => None,
        };

        let rooms: Vec<(i64, Option<RoomVersionRules>)> = rows
            .iter()
            .map(|r| (r.room_nid, r.room_version.rules()))
            .collect();
        let state = self.state_contents(&rooms, &SUMMARY_TYPES).await?;
        let chunk = rows
            .iter()
            .map(|row| summarize(row, &state))
            .collect::<Result<Vec<_>>>()?;
        Ok(PublicRoomsPage {
            chunk,
            next_batch,
            prev_batch,
            total,
        })
    }

    /// Current `(type, "")` state contents of one room, redacted where the event was, with
    /// their senders, by type.
    async fn room_state(
        &self,
        room: &RoomRow,
        types: &[&str],
    ) -> Result<HashMap<String, (String, CanonicalJsonObject)>> {
        let rules = room.rules().ok();
        let state = self
            .state_contents(&[(room.room_nid, rules)], types)
            .await?;
        Ok(state.into_iter().map(|((_, t), v)| (t, v)).collect())
    }

    /// Current `(type, "")` state contents of several rooms in one query, redacted where the
    /// event was, keyed by (room_nid, type). Each room comes with its version's rules.
    pub(super) async fn state_contents(
        &self,
        rooms: &[(i64, Option<RoomVersionRules>)],
        types: &[&str],
    ) -> Result<HashMap<(i64, String), (String, CanonicalJsonObject)>> {
        if rooms.is_empty() {
            return Ok(HashMap::new());
        }
        let nids: Vec<i64> = rooms.iter().map(|r| r.0).collect();
        let rules: HashMap<i64, &RoomVersionRules> = rooms
            .iter()
            .filter_map(|(nid, r)| r.as_ref().map(|r| (*nid, r)))
            .collect();
        let rows = db::directory::current_state_events(self.db(), &nids, types).await?;
        let mut out = HashMap::new();
        for row in rows {
            let rules = rules.get(&row.room_nid).copied();
            let (key, value) = parse_content(row, rules)?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// A state row's content, redacted when the event was, keyed by (room_nid, type).
#[allow(clippy::type_complexity)]
fn parse_content(
    row: StateContentRow,
    rules: Option<&RoomVersionRules>,
) -> Result<((i64, String), (String, CanonicalJsonObject))> {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        content: CanonicalJsonObject,
    }
    let mut content = serde_json::from_str::<Stored>(&row.json)
        .map_err(|e| Error::internal(format!("stored event unreadable: {e}")))?
        .content;
    if row.redacted {
        match rules {
            Some(rules) => redact_content_in_place(&mut content, &rules.redaction, &row.event_type),
            // Without the version's rules, nothing of a redacted event is safe to show.
            None => content.clear(),
        }
    }
    Ok(((row.room_nid, row.event_type), (row.sender, content)))
}

/// A directory entry from the room's current state.
fn summarize(
    row: &PublicRoomRow,
    state: &HashMap<(i64, String), (String, CanonicalJsonObject)>,
) -> Result<PublicRoomsChunk> {
    let field = |event_type: &str, key: &str| {
        state
            .get(&(row.room_nid, event_type.to_owned()))
            .and_then(|(_, c)| str_field(c, key))
    };
    let mut chunk = PublicRoomsChunk::from(PublicRoomsChunkInit {
        num_joined_members: UInt::new_saturating(u64::try_from(row.joined).unwrap_or(0)),
        room_id: stored_room_id(&row.room_id)?,
        world_readable: field("m.room.history_visibility", "history_visibility")
            == Some("world_readable"),
        guest_can_join: field("m.room.guest_access", "guest_access") == Some("can_join"),
    });
    let text = |event_type: &str, key: &str| {
        field(event_type, key)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    chunk.name = text("m.room.name", "name");
    chunk.topic = text("m.room.topic", "topic");
    chunk.canonical_alias =
        field("m.room.canonical_alias", "alias").and_then(|a| OwnedRoomAliasId::try_from(a).ok());
    chunk.avatar_url = text("m.room.avatar", "url").map(OwnedMxcUri::from);
    // Without a join rules event nobody can join uninvited.
    chunk.join_rule =
        field("m.room.join_rules", "join_rule").map_or(JoinRuleKind::Invite, JoinRuleKind::from);
    chunk.room_type = field("m.room.create", "type").map(RoomType::from);
    Ok(chunk)
}
pub(super) fn str_field<'a>(content: &'a CanonicalJsonObject, key: &str) -> Option<&'a str> {
    match content.get(key) {
        Some(CanonicalJsonValue::String(s)) => Some(s),
        _ => None,
    }
}

pub(super) fn stored_room_id(id: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(id).map_err(|e| Error::internal(format!("stored room ID invalid: {e}")))
}

/// The answer for an alias that is already taken. The spec (and Synapse) answer 409 with
/// M_UNKNOWN, but `Error` has no 409 yet; until it does, the errcode createRoom uses for a
/// taken alias.
fn alias_taken(alias: &RoomAliasId) -> Error {
    Error::Conflict(format!("Room alias {alias} already exists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        for forward in [true, false] {
            let t = DirectoryToken {
                forward,
                joined: 42,
                room_id: OwnedRoomId::try_from("!abc:example.org:8448").unwrap(),
            };
            let s = t.to_string();
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{s} needs no escaping"
            );
            assert_eq!(DirectoryToken::parse(&s).unwrap(), t);
        }
        let room = URL_SAFE_NO_PAD.encode("!a:b");
        assert!(DirectoryToken::parse(&format!("n7_{room}")).is_ok());
        for bad in [
            String::new(),
            "n".into(),
            "n7".into(),
            "n7_".into(),
            format!("x7_{room}"),
            format!("n_{room}"),
            format!("n-7_{room}"),
            format!("n+7_{room}"),
            format!("n99999999999999999999_{room}"),
            format!("n7_{room}="),
            format!("n7_{}", URL_SAFE_NO_PAD.encode("not a room")),
            "n7_!!!".into(),
            "é7_x".into(),
        ] {
            assert!(DirectoryToken::parse(&bad).is_err(), "{bad}");
        }
    }
}
