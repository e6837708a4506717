//! Room upgrades (`POST /rooms/{roomId}/upgrade`), as Synapse performs them: a new room of
//! the asked version whose create event names its predecessor, carrying the old room's
//! settings and power levels; the local members of a room not open to all invited; the old
//! room tombstoned; its local aliases, canonical alias and directory entry moved; and the
//! old room's power levels raised so that only moderators go on talking there.

use ruma::events::room::member::MembershipState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::Rooms;
use super::create::{CreateRoom, check_creatable};
use super::pdu::{NewContent, Pdu};
use super::state_cache::StateEntries;
use crate::db;
use crate::error::{Error, Result};

/// State events carried into the new room unchanged (the power levels come last, see
/// [`Rooms::upgrade_room`]).
const CARRIED: [StateEventType; 8] = [
    StateEventType::RoomJoinRules,
    StateEventType::RoomName,
    StateEventType::RoomTopic,
    StateEventType::RoomHistoryVisibility,
    StateEventType::RoomGuestAccess,
    StateEventType::RoomAvatar,
    StateEventType::RoomEncryption,
    StateEventType::RoomServerAcl,
];

/// Keys of the create event's content carried into the new one.
const CARRIED_CREATION: [&str; 2] = ["type", "m.federate"];

impl Rooms {
    /// Replace `old_id` by a new room of `version`, as `user` (who needs the power to send
    /// `m.room.tombstone` there); the new room's ID. `additional_creators`: for versions
    /// with several creators, the new room's others (the old room's when none are named).
    /// `profile`: the user's display name and avatar for their join.
    #[tracing::instrument(skip(self, additional_creators, profile), fields(%user, room_id = %old_id, %version))]
    pub async fn upgrade_room(
        &self,
        user: &UserId,
        old_id: &RoomId,
        version: RoomVersionId,
        additional_creators: &[OwnedUserId],
        profile: (Option<String>, Option<String>),
    ) -> Result<OwnedRoomId> {
        check_creatable(&version)?;
        let old = self.room(old_id).await?;
        if !self.is_joined(&old, user).await? {
            return Err(Error::forbidden("You are not joined to this room"));
        }
        let old_rules = old.rules()?;
        let new_rules = db::rooms::rules_of(&version)?;
        let group = old
            .state_group
            .ok_or_else(|| Error::internal("joined room without state"))?;
        let mut keys: Vec<(StateEventType, String)> =
            CARRIED.iter().map(|t| (t.clone(), String::new())).collect();
        keys.extend(super::power::state_keys());
        keys.push((StateEventType::RoomCanonicalAlias, String::new()));
        let state = self.state_entries(group, &keys).await?;
        let levels = super::power::from_state(&old_rules, &state)?;
        if !levels.user_can_send_state(user, StateEventType::RoomTombstone) {
            return Err(Error::forbidden(
                "You do not have the power to upgrade this room",
            ));
        }
        let content = |t: StateEventType| -> Option<Map<String, Value>> {
            state
                .get(&(t, String::new()))
                .and_then(|p| serde_json::from_str(p.content.get()).ok())
        };

        let old_create = content(StateEventType::RoomCreate).unwrap_or_default();
        let creation = creation_content(old_id, &old_create, additional_creators, &new_rules);
        let creators = new_creators(user, &creation, &new_rules);

        let (power, building) = upgraded_power(
            content(StateEventType::RoomPowerLevels),
            user,
            &creators,
            (&old_rules, &new_rules),
        );

        let mut initial_state: Vec<(String, String, Value)> = CARRIED
            .iter()
            .filter_map(|t| {
                content(t.clone()).map(|c| (t.to_string(), String::new(), Value::Object(c)))
            })
            .collect();
        // A room not open to everyone lets its local members in by invitation.
        let join_rule = content(StateEventType::RoomJoinRules).and_then(|c| {
            c.get("join_rule")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if join_rule.as_deref() != Some("public") {
            for (member, membership) in db::rooms::members(self.db(), old.room_nid).await? {
                let local = OwnedUserId::try_from(member.as_str())
                    .is_ok_and(|u| u.server_name() == self.server_name());
                if membership == MembershipState::Join && local && member != user.as_str() {
                    initial_state.push((
                        TimelineEventType::RoomMember.to_string(),
                        member,
                        json!({"membership": MembershipState::Invite}),
                    ));
                }
            }
        }
        if let (Some(p), Some(b)) = (&power, &building)
            && p != b
        {
            initial_state.push((
                TimelineEventType::RoomPowerLevels.to_string(),
                String::new(),
                Value::Object(p.clone()),
            ));
        }
        let new_id = self
            .create_room(
                user,
                CreateRoom {
                    version: Some(version),
                    creation_content: creation,
                    power_level_override: building,
                    initial_state,
                    creator_displayname: profile.0,
                    creator_avatar_url: profile.1,
                    ..CreateRoom::default()
                },
            )
            .await?;

        // The old room points to the new one.
        self.send_state(
            user,
            old_id,
            TimelineEventType::RoomTombstone,
            json!({"body": "This room has been replaced", "replacement_room": new_id}),
        )
        .await?;
        self.move_aliases(user, &old, &new_id, &state).await?;
        if old.is_public {
            db::rooms::set_public(self.db(), old.room_nid, false).await?;
            let new = self.room(&new_id).await?;
            db::rooms::set_public(self.db(), new.room_nid, true).await?;
        }
        self.quieten(user, old_id, power).await;
        tracing::info!(%new_id, "room upgraded");
        Ok(new_id)
    }

    /// Move the old room's local aliases to the new room, and its canonical alias with
    /// them (the old room's is then emptied).
    async fn move_aliases(
        &self,
        user: &UserId,
        old: &db::rooms::RoomRow,
        new_id: &RoomId,
        state: &StateEntries,
    ) -> Result<()> {
        let new = self.room(new_id).await?;
        db::directory::move_aliases(self.db(), old.room_nid, new.room_nid).await?;
        let canonical: Option<Map<String, Value>> = state
            .get(&(StateEventType::RoomCanonicalAlias, String::new()))
            .and_then(|p: &Pdu| serde_json::from_str(p.content.get()).ok())
            .filter(|c: &Map<String, Value>| !c.is_empty());
        if let Some(c) = canonical {
            let old_id = old.id()?;
            self.send_state(
                user,
                &old_id,
                TimelineEventType::RoomCanonicalAlias,
                json!({}),
            )
            .await?;
            self.send_state(
                user,
                new_id,
                TimelineEventType::RoomCanonicalAlias,
                Value::Object(c),
            )
            .await?;
        }
        Ok(())
    }

    /// Raise the old room's levels to send messages and invite to at least moderator's
    /// (above the default user's), so that conversation moves on. A user without the power
    /// to change them leaves them be (the tombstone is sent either way), as Synapse.
    async fn quieten(&self, user: &UserId, old_id: &RoomId, power: Option<Map<String, Value>>) {
        let mut p = power.unwrap_or_default();
        let users_default = p.get("users_default").and_then(Value::as_i64).unwrap_or(0);
        let restricted = 50.max(users_default + 1);
        let mut changed = false;
        for key in ["events_default", "invite"] {
            if p.get(key).and_then(Value::as_i64).unwrap_or(0) < restricted {
                p.insert(key.into(), restricted.into());
                changed = true;
            }
        }
        if !changed {
            return;
        }
        let sent = self
            .send_state(
                user,
                old_id,
                TimelineEventType::RoomPowerLevels,
                Value::Object(p),
            )
            .await;
        if let Err(e) = sent {
            tracing::info!(error = %e, "old room's power levels left as they were");
        }
    }

    async fn send_state(
        &self,
        user: &UserId,
        room_id: &RoomId,
        kind: TimelineEventType,
        content: Value,
    ) -> Result<()> {
        let new = NewContent {
            kind,
            state_key: Some(String::new()),
            content: super::raw(&content)?,
            redacts: None,
        };
        self.send(user, room_id, new, None).await?;
        Ok(())
    }
}

/// The creators of a room of these rules made by `user` with this creation content.
fn new_creators(
    user: &UserId,
    creation: &Map<String, Value>,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Vec<OwnedUserId> {
    let mut creators = vec![user.to_owned()];
    if rules.authorization.additional_room_creators
        && let Some(Value::Array(more)) = creation.get("additional_creators")
    {
        creators.extend(
            more.iter()
                .filter_map(Value::as_str)
                .filter_map(|u| OwnedUserId::try_from(u).ok()),
        );
    }
    creators
}

/// The highest level a power levels content names: what sending every state event it
/// governs may need.
fn highest_level(p: &Map<String, Value>) -> i64 {
    let mut levels: Vec<i64> = [
        "ban",
        "kick",
        "redact",
        "invite",
        "events_default",
        "state_default",
    ]
    .iter()
    .filter_map(|k| p.get(*k).and_then(Value::as_i64))
    .collect();
    if let Some(Value::Object(events)) = p.get("events") {
        levels.extend(events.values().filter_map(Value::as_i64));
    }
    levels.into_iter().max().unwrap_or(100).max(100)
}

/// The new room's creation content: what the old one's says of the room, and where it came
/// from. Additional creators: those the upgrade names, else those of the old room.
fn creation_content(
    old_id: &RoomId,
    old_create: &Map<String, Value>,
    additional_creators: &[OwnedUserId],
    new_rules: &RoomVersionRules,
) -> Map<String, Value> {
    let mut creation: Map<String, Value> = CARRIED_CREATION
        .iter()
        .filter_map(|k| old_create.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    if new_rules.authorization.additional_room_creators {
        let named = (!additional_creators.is_empty()).then(|| json!(additional_creators));
        if let Some(c) = named.or_else(|| old_create.get("additional_creators").cloned()) {
            creation.insert("additional_creators".into(), c);
        }
    }
    creation.insert("predecessor".into(), json!({"room_id": old_id}));
    creation
}

/// An event content, as a JSON object.
type Content = Map<String, Value>;

/// The old power levels (`old_power`), for the new room to end with, and those it is built
/// with: while it is built, the upgrading user holds the highest level they need (as
/// Synapse does).
fn upgraded_power(
    old_power: Option<Content>,
    user: &UserId,
    creators: &[OwnedUserId],
    (old_rules, new_rules): (&RoomVersionRules, &RoomVersionRules),
) -> (Option<Content>, Option<Content>) {
    let power = old_power.map(|mut p| {
        let (old_explicit, new_explicit) = (
            old_rules.authorization.explicitly_privilege_room_creators,
            new_rules.authorization.explicitly_privilege_room_creators,
        );
        let users = p
            .entry("users")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(users) = users {
            if new_explicit {
                // Creators may not be listed where their power is unlimited.
                users.retain(|u, _| !creators.iter().any(|c| c.as_str() == u));
            } else if old_explicit {
                // A creator of the old room keeps the top level it had there.
                users.entry(user.to_string()).or_insert_with(|| 100.into());
            }
        }
        p
    });
    let building = power.as_ref().map(|p| {
        let mut b = p.clone();
        if !new_rules.authorization.explicitly_privilege_room_creators {
            let needed = highest_level(p);
            let users = b
                .entry("users")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(users) = users {
                let own = users
                    .get(user.as_str())
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                users.insert(user.to_string(), own.max(needed).into());
            }
        }
        b
    });
    (power, building)
}
