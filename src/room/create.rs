//! Creating a room: the create event, the creator's join, power levels, presets, initial
//! state, name, topic and invites, each through the append path under one room lock.

use std::collections::BTreeMap;

use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use ruma::room_version_rules::{AuthorizationRules, RoomVersionRules};

use super::pdu::{self, NewContent, Pdu, Placement};
use super::{Rooms, append, raw};
use crate::db;
use crate::db::rooms::RoomRow;
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
    /// Profiles (display name, avatar) of the local invitees, copied into their invite
    /// events: a client names a new direct chat after its invitee before they answer.
    pub invitee_profiles: BTreeMap<OwnedUserId, (Option<String>, Option<String>)>,
}

/// Room versions new rooms may be created with.
/// Times a room is built again when its ID turns out taken (see [`Rooms::create_room`]).
const MAX_CREATE_ATTEMPTS: usize = 5;

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
        V::V12,
    ]
}

/// `M_UNSUPPORTED_ROOM_VERSION` unless new rooms may be made of `version`.
pub fn check_creatable(version: &RoomVersionId) -> Result<()> {
    match creatable_versions().contains(version) {
        true => Ok(()),
        false => Err(Error::new(
            ruma::api::error::ErrorKind::UnsupportedRoomVersion,
            format!("Room version {version} is not supported for new rooms"),
        )),
    }
}

/// The spec's recommended default, as Synapse creates rooms.
pub const DEFAULT_VERSION: RoomVersionId = RoomVersionId::V12;

impl Rooms {
    /// Create a room: check what the request asks for, build every event of the room in
    /// memory, claim the room's row, then store the events in one transaction under the
    /// room's lock; the alias and the directory entry follow.
    pub async fn create_room(&self, creator: &UserId, req: CreateRoom) -> Result<OwnedRoomId> {
        let version = req.version.clone().unwrap_or(DEFAULT_VERSION);
        check_creatable(&version)?;
        let alias = self.free_alias(&req).await?;
        let preset = req.preset.unwrap_or(if req.public_visibility {
            Preset::PublicChat
        } else {
            Preset::PrivateChat
        });

        let rules = db::rooms::rules_of(&version)?;
        let auth = &rules.authorization;
        let (create, creators) = create_content(creator, &version, auth, preset, &req)?;

        let mut events: Vec<InitialEvent> = vec![creator_join(creator, &req)];
        events.push((
            TimelineEventType::RoomPowerLevels,
            Some(String::new()),
            power_levels(creator, auth, preset, &req, &creators)?,
        ));
        events.extend(preset_state(alias.as_deref(), preset, &req));
        // Users of other servers are invited after creation, through their servers (the
        // caller's job: an invite they never countersigned would not reach them).
        for u in req
            .invite
            .iter()
            .filter(|u| u.server_name() == self.server_name())
        {
            let invite = super::membership::InviteContent {
                reason: None,
                is_direct: req.is_direct,
                profile: req.invitee_profiles.get(u).cloned().unwrap_or_default(),
            };
            events.push((
                TimelineEventType::RoomMember,
                Some(u.to_string()),
                Value::Object(invite.content()),
            ));
        }

        let (room_id, room, built) = self
            .claim_room(creator, &version, &rules, create, &events)
            .await?;
        let room_nid = room.room_nid;
        let lock = self.locks.lock(&room_id).await;
        let checked = built
            .iter()
            .map(|p| append::local_checked(&room, &p.event_id, &p.json, &p.pdu, None))
            .collect();
        super::persist::persist_chain(&self.store(), &lock, checked).await?;
        drop(lock);
        if let Some(a) = &alias {
            db::rooms::insert_alias(self.db(), a, room_nid, creator.as_str()).await?;
        }
        if req.public_visibility {
            db::rooms::set_public(self.db(), room_nid, true).await?;
        }
        tracing::info!(%room_id, %creator, %version, "room created");
        Ok(room_id)
    }

    /// The alias the request asks for on this server, if any: well formed and not taken
    /// (`M_ROOM_IN_USE`), checked before anything is built.
    async fn free_alias(&self, req: &CreateRoom) -> Result<Option<String>> {
        let Some(local) = &req.alias_localpart else {
            return Ok(None);
        };
        let alias = format!("#{local}:{}", self.server_name());
        ruma::RoomAliasId::parse(&alias)
            .map_err(|_| Error::new(ruma::api::error::ErrorKind::InvalidParam, "Invalid alias"))?;
        if db::rooms::resolve_alias(self.db(), &alias).await?.is_some() {
            return Err(Error::new(
                ruma::api::error::ErrorKind::RoomInUse,
                "Room alias already taken",
            ));
        }
        Ok(Some(alias))
    }

    /// Build the room and write its row. In version 12 on the room ID is the create event's
    /// hash: two requests alike to the millisecond (a client retrying at once, say) would
    /// make the same room. The room row decides; the one that finds its ID taken builds
    /// again, a millisecond on.
    async fn claim_room(
        &self,
        creator: &UserId,
        version: &RoomVersionId,
        rules: &RoomVersionRules,
        create: Map<String, Value>,
        events: &[InitialEvent],
    ) -> Result<(OwnedRoomId, RoomRow, Vec<append::Prepared>)> {
        let mut attempts = 0;
        loop {
            let (room_id, room, built) =
                self.build_room(creator, version, rules, create.clone(), events)?;
            let mut tx = db::begin(self.db()).await?;
            let nid = db::rooms::insert(&mut tx, room_id.as_str(), version.as_str()).await?;
            tx.commit().await?;
            match nid {
                Some(nid) => {
                    return Ok((
                        room_id,
                        RoomRow {
                            room_nid: nid,
                            ..room
                        },
                        built,
                    ));
                }
                None if attempts < MAX_CREATE_ATTEMPTS => {
                    attempts += 1;
                    tracing::debug!(%room_id, attempts, "room ID taken by an identical create event; building again");
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                None => {
                    return Err(Error::new(
                        ruma::api::error::ErrorKind::RoomInUse,
                        "An identical room was being created at the same moment; try again",
                    ));
                }
            }
        }
    }

    /// Build every event of a new room: its create event, then `events` in order, each on
    /// the state the ones before it make, held in memory (all are stored together). The
    /// room's row is written only once every event is built, so content the client got
    /// wrong (a float in a power level, say) leaves no room behind; building reads no number
    /// of the row, so it has none yet.
    fn build_room(
        &self,
        creator: &UserId,
        version: &RoomVersionId,
        rules: &RoomVersionRules,
        create: Map<String, Value>,
        events: &[(TimelineEventType, Option<String>, Value)],
    ) -> Result<(OwnedRoomId, RoomRow, Vec<append::Prepared>)> {
        let (room_id, first) = self.build_create_event(creator, version, rules, create)?;
        let room = RoomRow {
            room_nid: 0,
            room_id: room_id.to_string(),
            room_version: version.clone(),
            state_group: None,
            is_public: false,
        };
        let mut state = super::state_cache::StateEntries::new();
        let mut tip = append::Tip::after(&first.event_id, first.pdu.depth);
        let mut built = vec![first];
        for (kind, state_key, content) in events {
            if let Some(prev) = built.last() {
                state.insert(
                    (
                        prev.pdu.kind.to_string().into(),
                        prev.pdu.state_key.clone().unwrap_or_default(),
                    ),
                    prev.pdu.clone(),
                );
            }
            let new = NewContent {
                kind: kind.clone(),
                state_key: state_key.clone(),
                content: raw(content)?,
                redacts: None,
            };
            let p = append::prepare_on_state(&self.keys, &room, tip, creator, &new, &state)?;
            tip = append::Tip::after(&p.event_id, p.pdu.depth);
            built.push(p);
        }
        Ok((room_id, room, built))
    }

    /// Build, sign and check a room's create event, and the room ID that goes with it: a new
    /// random ID, or (version 12 on) the create event's own reference hash.
    fn build_create_event(
        &self,
        creator: &UserId,
        version: &RoomVersionId,
        rules: &RoomVersionRules,
        content: Map<String, Value>,
    ) -> Result<(OwnedRoomId, append::Prepared)> {
        let random_id = (!rules.authorization.room_create_event_id_as_room_id)
            .then(|| RoomId::new_v1(self.server_name()));
        let new = NewContent {
            kind: TimelineEventType::RoomCreate,
            state_key: Some(String::new()),
            content: raw(&Value::Object(content))?,
            redacts: None,
        };
        let (event_id, json) = pdu::build(
            &self.keys,
            &new,
            &Placement {
                room_id: random_id.as_deref(),
                version,
                rules,
                sender: creator,
                prev_events: &[],
                auth_events: &[],
                depth: 1,
            },
        )?;
        let room_id = match random_id {
            Some(id) => id,
            None => RoomId::new_v2(event_id.as_str().trim_start_matches('$'))
                .map_err(|e| Error::internal(format!("room ID from the create event: {e}")))?,
        };
        let pdu = Pdu::parse(event_id.clone(), &json)?;
        append::authorise(rules, &pdu, &Default::default()).map_err(Error::bad_json)?;
        Ok((
            room_id,
            append::Prepared {
                event_id,
                json,
                pdu,
            },
        ))
    }
}

/// One event of a new room after its create event: (type, state key, content).
type InitialEvent = (TimelineEventType, Option<String>, Value);

/// The create event's content, and the room's creators. Room creators have unlimited power
/// since version 12; a trusted private chat makes its invitees creators too, rather than
/// giving them power level 100.
fn create_content(
    creator: &UserId,
    version: &RoomVersionId,
    auth: &AuthorizationRules,
    preset: Preset,
    req: &CreateRoom,
) -> Result<(Map<String, Value>, Vec<OwnedUserId>)> {
    let mut create = req.creation_content.clone();
    if !auth.use_room_create_sender {
        create.insert("creator".into(), creator.as_str().into());
    }
    create.insert("room_version".into(), version.as_str().into());
    let mut creators: Vec<OwnedUserId> = vec![creator.to_owned()];
    if auth.additional_room_creators {
        let mut additional = additional_creators(&create)?;
        if preset == Preset::TrustedPrivateChat {
            additional.extend(req.invite.iter().cloned());
        }
        additional.retain(|u| u != creator);
        let mut seen = std::collections::HashSet::new();
        additional.retain(|u| seen.insert(u.clone()));
        if !additional.is_empty() {
            create.insert("additional_creators".into(), json!(additional));
        }
        creators.extend(additional);
    }
    Ok((create, creators))
}

/// The creator's join, with the profile the request carries.
fn creator_join(creator: &UserId, req: &CreateRoom) -> InitialEvent {
    let mut join = json!({"membership": MembershipState::Join});
    if let Some(d) = &req.creator_displayname {
        join["displayname"] = d.clone().into();
    }
    if let Some(a) = &req.creator_avatar_url {
        join["avatar_url"] = a.clone().into();
    }
    (
        TimelineEventType::RoomMember,
        Some(creator.to_string()),
        join,
    )
}

/// The power levels content: the preset's, with the request's override on top; every level
/// an integer.
fn power_levels(
    creator: &UserId,
    auth: &AuthorizationRules,
    preset: Preset,
    req: &CreateRoom,
    creators: &[OwnedUserId],
) -> Result<Value> {
    let mut users = Map::new();
    if !auth.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), 100.into());
        if preset == Preset::TrustedPrivateChat {
            for u in &req.invite {
                users.insert(u.to_string(), 100.into());
            }
        }
    }
    // Only creators may upgrade a room whose creators outrank everyone.
    let tombstone = if auth.explicitly_privilege_room_creators {
        150
    } else {
        100
    };
    let mut power = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": tombstone,
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
        // Creators cannot be listed where they have unlimited power; leaving them out
        // changes nothing about what they may do.
        if auth.explicitly_privilege_room_creators
            && let Some(Value::Object(u)) = p.get_mut("users")
        {
            for c in creators {
                u.remove(c.as_str());
            }
        }
    }
    if let Some(p) = power.as_object() {
        super::power::check_integer_levels(p)?;
    }
    Ok(power)
}

/// The state after the power levels, in the order it is sent: the canonical alias, the
/// preset's join rules, history visibility and guest access, the request's initial state,
/// then name and topic (which win over any in the initial state).
fn preset_state(alias: Option<&str>, preset: Preset, req: &CreateRoom) -> Vec<InitialEvent> {
    let mut events: Vec<InitialEvent> = Vec::new();
    if let Some(a) = alias {
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
    events
}

/// `additional_creators` of a create event's content: valid user IDs, or a clear error.
fn additional_creators(content: &Map<String, Value>) -> Result<Vec<OwnedUserId>> {
    let bad = || Error::bad_json("additional_creators must be a list of user IDs");
    match content.get("additional_creators") {
        None => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| OwnedUserId::try_from(s).ok())
                    .ok_or_else(bad)
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}
