//! Creating a room: the create event, the creator's join, power levels, presets, initial
//! state, name, topic and invites, each through the append path under one room lock.

use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::pdu::NewContent;
use super::{Rooms, append, raw};
use crate::db;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    PublicChat,
    TrustedPrivateChat,
}

/// What a createRoom request asks for, in domain terms.
#[derive(Debug, Default)]
pub struct CreateRoom {
    pub version: Option<RoomVersionId>,
    pub preset: Option<Preset>,
    pub public_visibility: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    /// Everyone to invite; only local users are invited by `create_room` itself.
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// Extra keys for the create event's content (e.g. `type: m.space`).
    pub creation_content: Map<String, Value>,
    pub power_level_override: Option<Map<String, Value>>,
    /// (type, state_key, content) events sent after the preset's.
    pub initial_state: Vec<(String, String, Value)>,
    /// The creator's profile, copied into their join event.
    pub creator_displayname: Option<String>,
    pub creator_avatar_url: Option<String>,
}

/// Room versions new rooms may be created with.
pub fn creatable_versions() -> Vec<RoomVersionId> {
    use RoomVersionId as V;
    vec![
        V::V3,
        V::V4,
        V::V5,
        V::V6,
        V::V7,
        V::V8,
        V::V9,
        V::V10,
        V::V11,
    ]
}

pub const DEFAULT_VERSION: RoomVersionId = RoomVersionId::V10;

impl Rooms {
    pub async fn create_room(&self, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
        let version = req.version.clone().unwrap_or(DEFAULT_VERSION);
        if !creatable_versions().contains(&version) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported for new rooms"),
            ));
        }
        let alias = match &req.alias_localpart {
            Some(local) => {
                let alias = format!("#{local}:{}", self.server_name());
                ruma::RoomAliasId::parse(&alias).map_err(|_| {
                    Error::new(ruma::api::error::ErrorKind::InvalidParam, "Invalid alias")
                })?;
                if db::rooms::resolve_alias(self.db(), &alias).await?.is_some() {
                    return Err(Error::new(
                        ruma::api::error::ErrorKind::RoomInUse,
                        "Room alias already taken",
                    ));
                }
                Some(alias)
            }
            None => None,
        };
        let preset = req.preset.unwrap_or(if req.public_visibility {
            Preset::PublicChat
        } else {
            Preset::PrivateChat
        });

        let room_id = RoomId::new_v1(self.server_name());
        let mut tx = self.db().begin().await?;
        let room_nid = db::rooms::insert(&mut tx, room_id.as_str(), version.as_str()).await?;
        tx.commit().await?;
        let lock = self.locks.lock(&room_id).await;

        let mut events: Vec<(TimelineEventType, Option<String>, Value)> = Vec::new();
        let mut create = req.creation_content.clone();
        if matches!(
            version,
            RoomVersionId::V1
                | RoomVersionId::V2
                | RoomVersionId::V3
                | RoomVersionId::V4
                | RoomVersionId::V5
                | RoomVersionId::V6
                | RoomVersionId::V7
                | RoomVersionId::V8
                | RoomVersionId::V9
                | RoomVersionId::V10
        ) {
            create.insert("creator".into(), creator.as_str().into());
        }
        create.insert("room_version".into(), version.as_str().into());
        events.push((
            TimelineEventType::RoomCreate,
            Some(String::new()),
            Value::Object(create),
        ));

        let mut join = json!({"membership": "join"});
        if let Some(d) = &req.creator_displayname {
            join["displayname"] = d.clone().into();
        }
        if let Some(a) = &req.creator_avatar_url {
            join["avatar_url"] = a.clone().into();
        }
        events.push((
            TimelineEventType::RoomMember,
            Some(creator.to_string()),
            join,
        ));

        let mut users = Map::new();
        users.insert(creator.to_string(), 100.into());
        if preset == Preset::TrustedPrivateChat {
            for u in &req.invite {
                users.insert(u.to_string(), 100.into());
            }
        }
        let mut power = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                "m.room.server_acl": 100, "m.room.encryption": 100
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50, "kick": 50, "redact": 50,
            "invite": if preset == Preset::PublicChat { 50 } else { 0 },
            "notifications": {"room": 50}
        });
        if let (Some(o), Some(p)) = (&req.power_level_override, power.as_object_mut()) {
            for (k, v) in o {
                p.insert(k.clone(), v.clone());
            }
        }
        events.push((
            TimelineEventType::RoomPowerLevels,
            Some(String::new()),
            power,
        ));
        if let Some(a) = &alias {
            events.push((
                TimelineEventType::RoomCanonicalAlias,
                Some(String::new()),
                json!({"alias": a}),
            ));
        }
        let join_rule = if preset == Preset::PublicChat {
            "public"
        } else {
            "invite"
        };
        events.push((
            TimelineEventType::RoomJoinRules,
            Some(String::new()),
            json!({"join_rule": join_rule}),
        ));
        events.push((
            TimelineEventType::RoomHistoryVisibility,
            Some(String::new()),
            json!({"history_visibility": "shared"}),
        ));
        if preset != Preset::PublicChat {
            events.push((
                TimelineEventType::RoomGuestAccess,
                Some(String::new()),
                json!({"guest_access": "can_join"}),
            ));
        }
        for (t, k, c) in &req.initial_state {
            events.push((
                TimelineEventType::from(t.as_str()),
                Some(k.clone()),
                c.clone(),
            ));
        }
        if let Some(n) = &req.name {
            events.push((
                TimelineEventType::RoomName,
                Some(String::new()),
                json!({"name": n}),
            ));
        }
        if let Some(t) = &req.topic {
            events.push((
                TimelineEventType::RoomTopic,
                Some(String::new()),
                json!({"topic": t}),
            ));
        }
        // Users of other servers are invited after creation, through their servers (the
        // caller's job: an invite they never countersigned would not reach them).
        for u in req
            .invite
            .iter()
            .filter(|u| u.server_name() == self.server_name())
        {
            let mut c = json!({"membership": "invite"});
            if req.is_direct {
                c["is_direct"] = true.into();
            }
            events.push((TimelineEventType::RoomMember, Some(u.to_string()), c));
        }

        for (kind, state_key, content) in events {
            let room = self.room(&room_id).await?;
            let new = NewContent {
                kind,
                state_key,
                content: raw(&content)?,
                redacts: None,
            };
            append::append_local(&self.store(), &lock, &room, creator, new, None).await?;
        }
        if let Some(a) = &alias {
            db::rooms::insert_alias(self.db(), a, room_nid, creator.as_str()).await?;
        }
        if req.public_visibility {
            db::rooms::set_public(self.db(), room_nid, true).await?;
        }
        tracing::info!(%room_id, %creator, %version, "room created");
        Ok(room_id)
    }
}
