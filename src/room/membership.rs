//! Joining (including restricted rooms), knocking and alias resolution for local rooms.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomOrAliasId, UserId};
use serde_json::{Map, Value};

use super::Rooms;
use crate::db;
use crate::error::{Error, Result};
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;

impl Rooms {
    /// The room an ID or alias names (aliases on this server).
    pub async fn resolve_room(&self, id: &RoomOrAliasId) -> Result<OwnedRoomId> {
        match <&RoomId>::try_from(id) {
            Ok(room_id) => Ok(room_id.to_owned()),
            Err(alias) => {
                let (room_id, _) = db::rooms::resolve_alias(self.db(), alias.as_str())
                    .await?
                    .ok_or_else(|| Error::not_found("Room alias not found"))?;
                OwnedRoomId::try_from(room_id).map_err(|e| Error::internal(e.to_string()))
            }
        }
    }

    /// Join `user` to a local room, with their display name and avatar (`profile`) in the
    /// member event as clients expect. For restricted rooms the allow rules are checked
    /// against local memberships, and a local member with invite power vouches for the join
    /// (`join_authorised_via_users_server`), as the auth rules require.
    pub async fn join(
        &self,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
        content: &JoinContent,
    ) -> Result<()> {
        let room = self.room(room_id).await?;
        let mut extra = self.join_content(&room, user).await?;
        content.add_to(&mut extra);
        self.set_membership(
            user,
            room_id,
            user,
            MembershipState::Join,
            reason,
            Some(extra),
        )
        .await?;
        Ok(())
    }

    /// Guests join only rooms whose `m.room.guest_access` is `can_join` (spec, Guest Access:
    /// guests are a local notion, so this is this server's check, not an auth rule). A room
    /// this server is not in has no state to check: as in Synapse, a guest cannot join it.
    pub async fn check_guest_may_join(&self, target: &RoomOrAliasId) -> Result<()> {
        let refused = || {
            Error::new(
                ruma::api::error::ErrorKind::GuestAccessForbidden,
                "Guest access not allowed",
            )
        };
        let room_id = self.resolve_room(target).await.map_err(|_| refused())?;
        let Some(room) = db::rooms::by_id(self.db(), room_id.as_str()).await? else {
            return Err(refused());
        };
        if !self.guests_can_join(&room).await? {
            return Err(refused());
        }
        Ok(())
    }

    /// After a change of the room's `m.room.guest_access`: when guests may no longer join,
    /// the local guests still joined leave (spec, Guest Access: the server MUST set their
    /// membership to `leave`; Synapse has each guest leave, which the auth rules always
    /// allow). Runs in the background, as in Synapse: the change itself is done.
    pub(crate) fn kick_guests_if_revoked(&self, room_id: &RoomId) {
        let rooms = self.clone();
        let room_id = room_id.to_owned();
        let span = tracing::info_span!("kick_guests", %room_id);
        let task = async move {
            if let Err(e) = rooms.kick_guests(&room_id).await {
                tracing::warn!(error = %e, "guests were not removed after guest access was revoked");
            }
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    async fn kick_guests(&self, room_id: &RoomId) -> Result<()> {
        let room = self.room(room_id).await?;
        if self.guests_can_join(&room).await? {
            return Ok(());
        }
        for guest in db::users::joined_guests(self.db(), room.room_nid).await? {
            let Ok(guest) = OwnedUserId::try_from(guest) else {
                continue;
            };
            // One guest failing (left meanwhile, say) does not keep the others in.
            if let Err(e) = self
                .set_membership(&guest, room_id, &guest, MembershipState::Leave, None, None)
                .await
            {
                tracing::info!(user_id = %guest, error = %e, "a guest was not removed");
            }
        }
        Ok(())
    }

    /// Whether the room's current `m.room.guest_access` is `can_join`.
    pub(crate) async fn guests_can_join(&self, room: &db::rooms::RoomRow) -> Result<bool> {
        let Some(group) = room.state_group else {
            return Ok(false);
        };
        let key = (StateEventType::RoomGuestAccess, String::new());
        let state = self
            .state_entries(group, std::slice::from_ref(&key))
            .await?;
        Ok(state
            .get(&key)
            .and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok())
            .is_some_and(|c| c["guest_access"] == "can_join"))
    }

    /// Content keys a join by `user` needs: for a restricted room the user must satisfy an
    /// allow rule and a local member with invite power vouches for the join
    /// (`join_authorised_via_users_server`).
    pub(crate) async fn join_content(
        &self,
        room: &db::rooms::RoomRow,
        user: &UserId,
    ) -> Result<Map<String, Value>> {
        let current = self.membership(room, user).await?;
        let mut extra = Map::new();
        if !matches!(
            current,
            Some(MembershipState::Join | MembershipState::Invite)
        ) && let Some(group) = room.state_group
        {
            let keys = [
                (StateEventType::RoomJoinRules, String::new()),
                (StateEventType::RoomPowerLevels, String::new()),
            ];
            let state = self.state_entries(group, &keys).await?;
            let join_rules: Value = state
                .get(&keys[0])
                .and_then(|p| serde_json::from_str(p.content.get()).ok())
                .unwrap_or(Value::Null);
            let rule = join_rules["join_rule"].as_str().unwrap_or("invite");
            if rule == "restricted" || rule == "knock_restricted" {
                if !self
                    .satisfies_allow_rules(user, &join_rules["allow"])
                    .await?
                {
                    return Err(Error::forbidden(
                        "You are not a member of a room this room's join rules allow",
                    ));
                }
                let power: Value = state
                    .get(&keys[1])
                    .and_then(|p| serde_json::from_str(p.content.get()).ok())
                    .unwrap_or(Value::Null);
                let authoriser = self
                    .local_inviter(room, &power)
                    .await?
                    .ok_or_else(|| Error::forbidden("No local member can authorise this join"))?;
                extra.insert(
                    "join_authorised_via_users_server".into(),
                    authoriser.to_string().into(),
                );
            }
        }
        Ok(extra)
    }

    /// After a profile change: a new member event with the display name and avatar in every
    /// room `user` is joined to, as the spec asks of servers. A room where that fails (say its
    /// power levels forbid it) is logged and skipped; the profile itself has changed.
    pub async fn propagate_profile(
        &self,
        user: &UserId,
        profile: &(Option<String>, Option<String>),
    ) -> Result<()> {
        for room_id in self.joined_rooms(user).await? {
            let current = self
                .state_content(user, &room_id, "m.room.member", user.as_str())
                .await?;
            let mut content = current.as_object().cloned().unwrap_or_default();
            // Both belong to the join itself, not to a later change of profile.
            content.remove("join_authorised_via_users_server");
            content.remove("reason");
            let before = content.clone();
            set_profile(&mut content, profile);
            if content == before {
                continue;
            }
            let sent = self
                .set_membership(
                    user,
                    &room_id,
                    user,
                    MembershipState::Join,
                    None,
                    Some(content),
                )
                .await;
            if let Err(e) = sent {
                tracing::warn!(%room_id, %user, error = %e, "profile change not sent to room");
            }
        }
        Ok(())
    }

    /// Knock on a room (join rule `knock` or `knock_restricted`).
    pub async fn knock(&self, user: &UserId, room_id: &RoomId, reason: Option<&str>) -> Result<()> {
        self.room(room_id).await?;
        self.set_membership(user, room_id, user, MembershipState::Knock, reason, None)
            .await?;
        Ok(())
    }

    /// Whether `user` is joined to one of the rooms an `allow` list names.
    async fn satisfies_allow_rules(&self, user: &UserId, allow: &Value) -> Result<bool> {
        let Some(rules) = allow.as_array() else {
            return Ok(false);
        };
        for rule in rules {
            if rule["type"] != "m.room_membership" {
                continue;
            }
            let Some(allowed) = rule["room_id"].as_str() else {
                continue;
            };
            if let Some(r) = db::rooms::by_id(self.db(), allowed).await?
                && db::rooms::membership(self.db(), r.room_nid, user.as_str()).await?
                    == Some(MembershipState::Join)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A joined local member whose power level allows inviting.
    async fn local_inviter(
        &self,
        room: &db::rooms::RoomRow,
        power: &Value,
    ) -> Result<Option<OwnedUserId>> {
        let invite_level = power["invite"].as_i64().unwrap_or(0);
        let users_default = power["users_default"].as_i64().unwrap_or(0);
        let members = db::rooms::members(self.db(), room.room_nid).await?;
        let mut best: Option<(i64, OwnedUserId)> = None;
        for (user_id, membership) in members {
            if membership != MembershipState::Join {
                continue;
            }
            let Ok(id) = OwnedUserId::try_from(user_id.as_str()) else {
                continue;
            };
            if id.server_name() != self.server_name() {
                continue;
            }
            let level = power["users"][user_id.as_str()]
                .as_i64()
                .unwrap_or(users_default);
            if level >= invite_level && best.as_ref().is_none_or(|b| level > b.0) {
                best = Some((level, id));
            }
        }
        Ok(best.map(|b| b.1))
    }

    /// Mark a left room forgotten for the user.
    pub async fn forget(&self, user: &UserId, room_id: &RoomId) -> Result<()> {
        let room = self.room(room_id).await?;
        match self.membership(&room, user).await? {
            Some(MembershipState::Leave | MembershipState::Ban) => {}
            None => return Err(Error::not_found("You were never in this room")),
            Some(_) => {
                return Err(Error::bad_request(
                    "You must leave the room before forgetting it",
                ));
            }
        }
        db::rooms::set_forgotten(self.db(), room.room_nid, user.as_str()).await?;
        Ok(())
    }
}

impl Rooms {
    /// Invite a user of another server: the invite is built and authorised here, `countersign`
    /// has the invitee's server sign it (given the room, the prepared event and the PDUs of
    /// the room's public basics as JSON), and the countersigned event is stored. The room
    /// lock is held throughout so the event still extends the room when stored. `invite`
    /// says what the event holds besides the membership.
    pub async fn invite_with<F, Fut>(
        &self,
        sender: &UserId,
        room_id: &RoomId,
        invitee: &UserId,
        invite: &InviteContent<'_>,
        countersign: F,
    ) -> Result<ruma::OwnedEventId>
    where
        F: FnOnce(db::rooms::RoomRow, super::append::Prepared, Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<String>>,
    {
        let content = invite.content();
        let new = super::pdu::NewContent {
            kind: ruma::events::TimelineEventType::RoomMember,
            state_key: Some(invitee.to_string()),
            content: super::raw(&Value::Object(content))?,
            redacts: None,
        };
        let lock = self.locks.lock(room_id).await;
        let room = self.room(room_id).await?;
        let prepared = super::append::prepare_local(&self.store(), &room, sender, &new).await?;
        let stripped = self.public_basics(&room).await?;
        let event_id = prepared.event_id.clone();
        let signed = countersign(room.clone(), prepared, stripped).await?;
        let pdu = super::pdu::Pdu::parse(event_id.clone(), &signed)?;
        super::append::persist_local(&self.store(), &lock, &room, &event_id, &signed, &pdu, None)
            .await?;
        Ok(event_id)
    }
}

impl Rooms {
    /// The PDUs of the room's public basics ([`INVITE_STATE_TYPES`]) as JSON: what an
    /// invitee or a knocker is shown of the room.
    pub async fn public_basics(&self, room: &db::rooms::RoomRow) -> Result<Vec<String>> {
        let Some(group) = room.state_group else {
            return Ok(Vec::new());
        };
        let keys: Vec<(&str, &str)> = INVITE_STATE_TYPES.iter().map(|t| (*t, "")).collect();
        let nids: Vec<i64> = db::state::load_keys(self.db(), group, &keys)
            .await?
            .into_iter()
            .map(|r| r.1)
            .collect();
        Ok(db::events::by_nids(self.db(), &nids)
            .await?
            .into_iter()
            .map(|e| e.json)
            .collect())
    }
}

/// State types whose events go with an invite or a knock (stripped state), so the invitee's
/// or knocker's client can show the room: the spec's recommended list. Local invitees and
/// knockers see them in /sync; other servers get them with an invite or a knock's answer.
pub const INVITE_STATE_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
];

/// What an invite's member event holds besides `membership: invite`.
#[derive(Debug, Default)]
pub struct InviteContent<'a> {
    pub reason: Option<&'a str>,
    /// An invite to a direct chat (createRoom's `is_direct`).
    pub is_direct: bool,
    /// The invitee's display name and avatar, as Synapse puts them into invites: the
    /// inviter's client names a direct chat after the invitee (the room's heroes come from
    /// member events) before the invitee has answered.
    pub profile: (Option<String>, Option<String>),
}

impl InviteContent<'_> {
    pub fn content(&self) -> Map<String, Value> {
        let mut content = Map::new();
        content.insert("membership".into(), MembershipState::Invite.as_str().into());
        if let Some(r) = self.reason {
            content.insert("reason".into(), r.into());
        }
        if self.is_direct {
            content.insert("is_direct".into(), true.into());
        }
        set_profile(&mut content, &self.profile);
        content
    }
}

/// Put a display name and avatar (or their absence) into member event content.
/// What a joining user's member event carries besides what the server decides: their
/// display name and avatar, and the other keys their client's join request holds (kept, as
/// Synapse keeps them: a display name there is a per-room one).
#[derive(Debug, Clone, Default)]
pub struct JoinContent(Map<String, Value>);

/// Keys of a member event's content that only the server sets: the membership, the reason
/// (a field of its own), and the keys the auth rules read, which a client must not forge
/// (a join vouched for by a local user, a third-party invite).
const SERVER_KEYS: [&str; 4] = [
    "membership",
    "reason",
    "join_authorised_via_users_server",
    "third_party_invite",
];

impl JoinContent {
    /// The user's `profile`, then the client's `body` over it, without the keys only the
    /// server sets.
    pub fn new(
        profile: &(Option<String>, Option<String>),
        body: Option<Map<String, Value>>,
    ) -> Self {
        let mut content = Map::new();
        set_profile(&mut content, profile);
        for (key, value) in body.unwrap_or_default() {
            if !SERVER_KEYS.contains(&key.as_str()) {
                content.insert(key, value);
            }
        }
        JoinContent(content)
    }

    /// Add these keys to `content`, leaving those already there (the server's) as they are.
    pub fn add_to(&self, content: &mut Map<String, Value>) {
        for (key, value) in &self.0 {
            content.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }

    pub fn keys(&self) -> &Map<String, Value> {
        &self.0
    }
}

pub(crate) fn set_profile(
    content: &mut Map<String, Value>,
    profile: &(Option<String>, Option<String>),
) {
    for (key, value) in [("displayname", &profile.0), ("avatar_url", &profile.1)] {
        match value {
            Some(v) => content.insert(key.into(), v.clone().into()),
            None => content.remove(key),
        };
    }
}
