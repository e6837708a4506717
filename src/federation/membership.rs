//! Membership across servers, both sides: joining and leaving rooms hosted elsewhere
//! (make_join/send_join, make_leave/send_leave), knocking (make_knock/send_knock), invites
//! to users of other servers, and answering those requests for rooms we are in.

use ruma::api::federation::membership::{
    RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event,
    prepare_join_event, prepare_knock_event, prepare_leave_event,
};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::value::RawValue;

use super::Federation;
use super::client::FederationError;
use super::pdu::{parse_pdu, verify_pdus};
use super::template::{self, Kind};
use crate::error::{Error, Result};
use crate::room::Rooms;

/// A join whose state and auth chain hold at least this many events used enough memory for a
/// moment to be worth handing back at once.
const LARGE_JOIN: usize = 1000;
use crate::db;
use crate::room::create::creatable_versions;
use crate::room::membership::{InviteContent, JoinContent, set_profile};
use crate::room::pdu::Pdu;
use crate::room::pdu::membership_of;
use crate::room::remote::{Incoming, Outcome};

impl Federation {
    /// Join `user` to a room hosted elsewhere, through the first of `via` that answers:
    /// make_join, sign, send_join, verify the state and auth chain, store it.
    #[tracing::instrument(skip(self, rooms, via, reason, content), fields(%user, %room_id))]
    pub async fn join_remote(
        &self,
        rooms: &Rooms,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        reason: Option<&str>,
        content: &JoinContent,
    ) -> Result<()> {
        let mut last = Error::not_found("No server could help to join this room");
        for server in via.iter().filter(|s| *s != rooms.server_name()) {
            match self
                .join_via(rooms, server, user, room_id, reason, content)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, error = %e, "joining through this server failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn join_via(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
        content: &JoinContent,
    ) -> Result<()> {
        let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = creatable_versions();
        let template = self.client.send(server, request).await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let (event_id, obj) = self.sign_template(
            &version,
            (room_id, user),
            &template.event,
            Kind::Join,
            reason,
            Some(content),
        )?;
        let rules = db::rooms::rules_of(&version)?;
        let json = serde_json::to_string(&obj).map_err(|e| Error::internal(e.to_string()))?;
        let raw =
            RawValue::from_string(json.clone()).map_err(|e| Error::internal(e.to_string()))?;
        let answer = self
            .client
            .send(
                server,
                create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw),
            )
            .await?
            .room_state;

        // A restricted join comes back countersigned by the resident server.
        let join = match &answer.event {
            Some(signed) => {
                let mut v = verify_pdus(&self.remote_keys, &rules, &[&**signed]).await;
                match v.pop() {
                    Some((_, Ok(ev))) if ev.event_id == event_id => ev,
                    _ => {
                        return Err(Error::Upstream(
                            "the countersigned join event is invalid".into(),
                        ));
                    }
                }
            }
            None => Incoming {
                pdu: Pdu::parse(event_id.clone(), &json)?,
                event_id,
                json,
            },
        };
        let keep = |list: Vec<(
            Option<ruma::OwnedEventId>,
            std::result::Result<Incoming, String>,
        )>| {
            list.into_iter()
                .filter_map(|(id, r)| match r {
                    Ok(ev) if ev.pdu.belongs_to(room_id) => Some(ev),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::info!(event_id = ?id, error = %e, "dropped an event of the join's state");
                        None
                    }
                })
                .collect::<Vec<_>>()
        };
        let state_raws: Vec<&RawValue> = answer.state.iter().map(|r| &**r).collect();
        let chain_raws: Vec<&RawValue> = answer.auth_chain.iter().map(|r| &**r).collect();
        let state = keep(verify_pdus(&self.remote_keys, &rules, &state_raws).await);
        let auth_chain = keep(verify_pdus(&self.remote_keys, &rules, &chain_raws).await);
        rooms
            .store_joined_state(room_id, &version, &join, &state, &auth_chain)
            .await?;
        tracing::info!(%server, state = state.len(), auth_chain = auth_chain.len(), "joined remote room");
        let events = state.len() + auth_chain.len();
        drop((answer, state, auth_chain));
        if events >= LARGE_JOIN {
            crate::memory::give_back();
        }
        Ok(())
    }

    /// Fill in and sign a membership template from make_join / make_leave.
    fn sign_template(
        &self,
        version: &RoomVersionId,
        (room_id, user): (&RoomId, &UserId),
        template: &RawValue,
        kind: Kind,
        reason: Option<&str>,
        join: Option<&JoinContent>,
    ) -> Result<(ruma::OwnedEventId, CanonicalJsonObject)> {
        if !creatable_versions().contains(version) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                    ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
                ),
                "This server does not support the room's version",
            ));
        }
        let rules = db::rooms::rules_of(version)?;
        let proposed: CanonicalJsonObject = serde_json::from_str(template.get())
            .map_err(|e| Error::Upstream(format!("invalid membership template: {e}")))?;
        let mut obj = template::checked(proposed, room_id, user, kind).map_err(|e| {
            tracing::warn!(%room_id, %user, kind = %kind.membership(), error = %e, "refused a membership template");
            Error::Upstream(format!("membership template refused: {e}"))
        })?;
        let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
        obj.insert("origin".into(), s(self.client_server_name().as_str()));
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().0.into()),
        );
        if let Some(CanonicalJsonValue::Object(content)) = obj.get_mut("content") {
            if let Some(r) = reason {
                content.insert("reason".into(), s(r));
            }
            if let Some(join) = join.filter(|_| kind == Kind::Join) {
                // The template's own keys (membership, a restricted join's voucher) stay.
                for (key, value) in join.keys() {
                    if content.contains_key(key) {
                        continue;
                    }
                    let value = serde_json::from_value::<CanonicalJsonValue>(value.clone())
                        .map_err(|e| Error::bad_json(format!("Join content: {e}")))?;
                    content.insert(key.clone(), value);
                }
            }
        }
        self.server_keys
            .hash_and_sign_event(&mut obj, &rules.redaction)?;
        let hash = ruma::signatures::reference_hash(&obj, &rules)
            .map_err(|e| Error::internal(e.to_string()))?;
        let event_id =
            EventId::parse(format!("${hash}")).map_err(|e| Error::internal(e.to_string()))?;
        Ok((event_id, obj))
    }

    fn client_server_name(&self) -> &ServerName {
        self.server_keys.server_name()
    }

    /// Leave (reject an invite to) a room we are not in, through one of `via`: make_leave,
    /// sign, send_leave; the leave is then stored as an out-of-band membership.
    pub async fn leave_remote(
        &self,
        rooms: &Rooms,
        user: &UserId,
        room_id: &RoomId,
        via: &[OwnedServerName],
        reason: Option<&str>,
    ) -> Result<()> {
        let mut last = Error::not_found("No server could help to leave this room");
        for server in via.iter().filter(|s| *s != rooms.server_name()) {
            let attempt = async {
                let template = self
                    .client
                    .send(
                        server,
                        prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned()),
                    )
                    .await?;
                let version = template.room_version.unwrap_or(RoomVersionId::V1);
                let (event_id, obj) = self.sign_template(
                    &version,
                    (room_id, user),
                    &template.event,
                    Kind::Leave,
                    reason,
                    None,
                )?;
                let json =
                    serde_json::to_string(&obj).map_err(|e| Error::internal(e.to_string()))?;
                let raw = RawValue::from_string(json.clone())
                    .map_err(|e| Error::internal(e.to_string()))?;
                self.client
                    .send(
                        server,
                        create_leave_event::v2::Request::new(
                            room_id.to_owned(),
                            event_id.clone(),
                            raw,
                        ),
                    )
                    .await?;
                let ev = Incoming {
                    pdu: Pdu::parse(event_id.clone(), &json)?,
                    event_id,
                    json,
                };
                rooms
                    .store_out_of_band_membership(room_id, &version, &ev, None)
                    .await
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::info!(%server, error = %e, "leaving through this server failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Invite a user of another server to one of our rooms: build and authorise the event,
    /// have the invitee's server countersign it, then store and send it like any other.
    pub async fn invite_remote(
        &self,
        rooms: &Rooms,
        sender: &UserId,
        room_id: &RoomId,
        invitee: &UserId,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<ruma::OwnedEventId> {
        let invite = InviteContent {
            reason,
            is_direct,
            profile: self.profile_for_invite(invitee).await?,
        };
        rooms
            .invite_with(
                sender,
                room_id,
                invitee,
                &invite,
                |room, prepared, stripped| async move {
                    let version = room.room_version.clone();
                    let rules = room.rules()?;
                    let raw = RawValue::from_string(prepared.json.clone())
                        .map_err(|e| Error::internal(e.to_string()))?;
                    let stripped = stripped
                        .into_iter()
                        .filter_map(|j| RawValue::from_string(j).ok())
                        .map(RawStrippedState::Pdu)
                        .collect();
                    let request = create_invite::v2::Request::new(
                        room_id.to_owned(),
                        prepared.event_id.clone(),
                        version,
                        raw,
                        stripped,
                    );
                    let answer = self
                        .client
                        .send(invitee.server_name(), request)
                        .await
                        .map_err(|e| match e {
                            FederationError::Remote { status: 403, .. } => {
                                Error::forbidden("The invitee's server refused the invite")
                            }
                            other => other.into(),
                        })?;
                    let mut v = verify_pdus(&self.remote_keys, &rules, &[&*answer.event]).await;
                    let signed = match v.pop() {
                        Some((_, Ok(ev))) if ev.event_id == prepared.event_id => ev,
                        _ => {
                            return Err(Error::Upstream(
                                "the invitee's server returned an invalid invite".into(),
                            ));
                        }
                    };
                    let has_their_signature =
                        serde_json::from_str::<serde_json::Value>(&signed.json)
                            .ok()
                            .is_some_and(|v| {
                                v["signatures"][invitee.server_name().as_str()].is_object()
                            });
                    if !has_their_signature {
                        return Err(Error::Upstream(
                            "the invitee's server did not sign the invite".into(),
                        ));
                    }
                    Ok(signed.json)
                },
            )
            .await
    }

    /// A template for another server's user to join or leave one of our rooms.
    pub async fn make_membership(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        membership: MembershipState,
        supported: &[RoomVersionId],
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        if user.server_name() != origin {
            return Err(Error::forbidden("User is not of the requesting server"));
        }
        let room = rooms.room(room_id).await?;
        rooms.check_server_acl(&room, origin).await?;
        rooms
            .membership_template(room_id, user, membership, supported)
            .await
    }

    /// Accept a signed join or leave from another server (send_join / send_leave): check it,
    /// countersign a restricted join we vouch for, store it, pass it on to the room.
    /// Returns the event as stored (with our signature when we added one).
    pub async fn accept_membership(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
        membership: MembershipState,
    ) -> Result<Incoming> {
        let room = rooms.room(room_id).await?;
        rooms.check_server_acl(&room, origin).await?;
        if !rooms.is_resident(&room).await? {
            return Err(Error::not_found("This server is not in that room"));
        }
        let rules = room.rules()?;
        let (id, _) = parse_pdu(pdu, &rules).map_err(Error::bad_json)?;
        if id != event_id {
            return Err(Error::bad_json("Event ID does not match the event"));
        }
        let mut ev = match verify_pdus(&self.remote_keys, &rules, &[pdu]).await.pop() {
            Some((_, Ok(ev))) => ev,
            Some((_, Err(e))) => return Err(Error::forbidden(e)),
            None => return Err(Error::bad_json("No event")),
        };
        let p = &ev.pdu;
        if p.kind != TimelineEventType::RoomMember
            || p.state_key.as_deref() != Some(p.sender.as_str())
            || p.sender.server_name() != origin
            || p.room_id.as_deref() != Some(room_id)
            || membership_of(&p.content) != membership
        {
            return Err(Error::bad_json(format!(
                "Not a {membership} event of a user of the sending server"
            )));
        }
        if membership == MembershipState::Join {
            let authoriser = serde_json::from_str::<serde_json::Value>(p.content.get())
                .ok()
                .and_then(|c| {
                    c["join_authorised_via_users_server"]
                        .as_str()
                        .map(str::to_owned)
                });
            if let Some(a) = authoriser
                && UserId::parse(a.as_str()).is_ok_and(|u| u.server_name() == rooms.server_name())
            {
                let mut obj: CanonicalJsonObject =
                    serde_json::from_str(&ev.json).map_err(|e| Error::internal(e.to_string()))?;
                self.server_keys.sign_event(&mut obj, &rules.redaction)?;
                ev.json =
                    serde_json::to_string(&obj).map_err(|e| Error::internal(e.to_string()))?;
            }
        }
        match rooms
            .receive_pdu(room_id, &ev, Some(origin.as_str()))
            .await?
        {
            Outcome::Stored { soft_failed: false } | Outcome::AlreadyKnown => Ok(ev),
            Outcome::Stored { soft_failed: true } => Err(Error::forbidden(
                "The event is not allowed by the room's current state",
            )),
            Outcome::Rejected(reason) => Err(Error::forbidden(reason)),
            Outcome::Missing { .. } => Err(Error::bad_json("The event refers to unknown events")),
        }
    }

    /// An invite from another server for one of our users: check and countersign it, and
    /// record it so the invitee sees it in /sync.
    pub async fn accept_invite(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        invite: &create_invite::v2::Request,
    ) -> Result<Box<RawValue>> {
        let create_invite::v2::Request {
            room_id,
            event_id,
            room_version: version,
            event,
            invite_room_state,
            ..
        } = invite;
        if !creatable_versions().contains(version) {
            return Err(Error::new(
                ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                    ruma::api::error::IncompatibleRoomVersionErrorData::new(version.clone()),
                ),
                "This server does not support the room's version",
            ));
        }
        if let Ok(room) = rooms.room(room_id).await {
            rooms.check_server_acl(&room, origin).await?;
        }
        let rules = db::rooms::rules_of(version)?;
        let (id, _) = parse_pdu(event, &rules).map_err(Error::bad_json)?;
        if id != *event_id {
            return Err(Error::bad_json("Event ID does not match the event"));
        }
        let ev = match verify_pdus(&self.remote_keys, &rules, &[event]).await.pop() {
            Some((_, Ok(ev))) => ev,
            Some((_, Err(e))) => return Err(Error::forbidden(e)),
            None => return Err(Error::bad_json("No event")),
        };
        let p = &ev.pdu;
        let invitee = p
            .state_key
            .as_deref()
            .and_then(|k| UserId::parse(k).ok())
            .ok_or_else(|| Error::bad_json("Invite without a user state_key"))?;
        if p.kind != TimelineEventType::RoomMember
            || membership_of(&p.content) != MembershipState::Invite
            || invitee.server_name() != rooms.server_name()
            || p.sender.server_name() != origin
            || p.room_id.as_deref() != Some(room_id)
        {
            return Err(Error::bad_json("Not an invite for a user of this server"));
        }
        let mut obj: CanonicalJsonObject =
            serde_json::from_str(&ev.json).map_err(|e| Error::internal(e.to_string()))?;
        self.server_keys.sign_event(&mut obj, &rules.redaction)?;
        let json = serde_json::to_string(&obj).map_err(|e| Error::internal(e.to_string()))?;
        let stripped = stripped_state(invite_room_state, &json);
        let signed = Incoming {
            event_id: ev.event_id.clone(),
            pdu: ev.pdu.clone(),
            json: json.clone(),
        };
        rooms
            .store_out_of_band_membership(room_id, version, &signed, Some(&stripped))
            .await?;
        RawValue::from_string(json).map_err(|e| Error::internal(e.to_string()))
    }
}

impl Federation {
    /// The display name and avatar an invite to `invitee` carries: their profile here, or as
    /// their server tells it. Without one (no such local user, or their server does not
    /// answer) the invite goes without, as Synapse's does; a failed read of our own
    /// database fails the invite.
    async fn profile_for_invite(
        &self,
        invitee: &UserId,
    ) -> Result<(Option<String>, Option<String>)> {
        if invitee.server_name() == self.server_keys.server_name() {
            return Ok(db::users::profile(&self.db, invitee.as_str())
                .await?
                .unwrap_or_default());
        }
        match self.remote_profile(invitee).await {
            Ok(profile) => Ok(profile),
            Err(e) => {
                tracing::info!(%invitee, error = %e, "no profile for the invite from the invitee's server");
                Ok(Default::default())
            }
        }
    }
}

/// The invite's stripped state as a JSON array of `{type, state_key, sender, content}`,
/// the invite itself included.
fn stripped_state(list: &[RawStrippedState], invite_json: &str) -> String {
    #[allow(deprecated)]
    let mut out: Vec<serde_json::Value> = list
        .iter()
        .filter_map(|s| match s {
            RawStrippedState::Pdu(raw) => serde_json::from_str(raw.get()).ok(),
            RawStrippedState::Stripped(raw) => serde_json::from_str(raw.json().get()).ok(),
            _ => None,
        })
        .map(|v: serde_json::Value| strip(&v))
        .collect();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(invite_json) {
        out.push(strip(&v));
    }
    serde_json::Value::Array(out).to_string()
}

fn strip(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "type": v["type"], "state_key": v["state_key"], "sender": v["sender"], "content": v["content"]
    })
}

impl Federation {
    /// Create a room (`createRoom`): the room with its local invitees, then an invite to
    /// each invitee on another server, through their server (an invite they never
    /// countersigned would not reach them).
    pub async fn create_room(
        &self,
        rooms: &Rooms,
        creator: &UserId,
        req: crate::room::create::CreateRoom,
    ) -> Result<ruma::OwnedRoomId> {
        let remote: Vec<ruma::OwnedUserId> = req
            .invite
            .iter()
            .filter(|u| u.server_name() != rooms.server_name())
            .cloned()
            .collect();
        let is_direct = req.is_direct;
        let mut req = req;
        for invitee in req
            .invite
            .iter()
            .filter(|u| u.server_name() == rooms.server_name())
        {
            let profile = self.profile_for_invite(invitee).await?;
            req.invitee_profiles.insert(invitee.clone(), profile);
        }
        let room_id = rooms.create_room(creator, req).await?;
        for invitee in &remote {
            self.invite_remote(rooms, creator, &room_id, invitee, None, is_direct)
                .await?;
        }
        Ok(room_id)
    }

    /// The room a client names by ID or alias, and the servers to ask about it: those the
    /// client gave (`via`), then, for another server's alias, those its directory names and
    /// the alias's own server.
    pub async fn room_and_servers(
        &self,
        rooms: &Rooms,
        target: &ruma::RoomOrAliasId,
        via: &[OwnedServerName],
    ) -> Result<(ruma::OwnedRoomId, Vec<OwnedServerName>)> {
        let mut servers: Vec<OwnedServerName> = via.to_vec();
        let room_id = match <&RoomId>::try_from(target) {
            Ok(id) => id.to_owned(),
            Err(alias) if alias.server_name() == rooms.server_name() => {
                rooms.resolve_room(target).await?
            }
            Err(alias) => {
                let (id, alias_servers) = self.remote_alias(alias).await?;
                servers.extend(alias_servers);
                servers.push(alias.server_name().to_owned());
                id
            }
        };
        Ok((room_id, servers))
    }
}

/// What a client's membership request becomes: local when one of our users is in the room
/// (we hold its state and append ourselves; the queue tells the other servers), through
/// another server otherwise.
impl Federation {
    /// Join a room by ID or alias; returns the room ID.
    pub async fn join_room(
        &self,
        rooms: &Rooms,
        user: &UserId,
        target: &ruma::RoomOrAliasId,
        via: &[OwnedServerName],
        reason: Option<&str>,
        content: &JoinContent,
    ) -> Result<ruma::OwnedRoomId> {
        let (room_id, mut servers) = self.room_and_servers(rooms, target, via).await?;
        if let Ok(room) = rooms.room(&room_id).await {
            if rooms.is_resident(&room).await? {
                rooms.join(user, &room_id, reason, content).await?;
                return Ok(room_id);
            }
            if let Some(inviter) = rooms.membership_sender(&room, user).await? {
                servers.push(inviter.server_name().to_owned());
            }
        }
        if let Some(s) = room_id.server_name() {
            servers.push(s.to_owned());
        }
        dedup_keep_order(&mut servers);
        self.join_remote(rooms, user, &room_id, &servers, reason, content)
            .await?;
        Ok(room_id)
    }

    /// Leave a room, or reject an invite to a room we are not in.
    pub async fn leave_room(
        &self,
        rooms: &Rooms,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> Result<()> {
        let room = rooms.room(room_id).await?;
        if rooms.is_resident(&room).await? {
            rooms
                .act_on_member(user, room_id, user, MembershipState::Leave, reason)
                .await?;
            return Ok(());
        }
        let mut servers = Vec::new();
        if let Some(inviter) = rooms.membership_sender(&room, user).await? {
            servers.push(inviter.server_name().to_owned());
        }
        if let Some(s) = room_id.server_name() {
            servers.push(s.to_owned());
        }
        dedup_keep_order(&mut servers);
        self.leave_remote(rooms, user, room_id, &servers, reason)
            .await
    }

    /// Invite a user, of this server or another.
    pub async fn invite(
        &self,
        rooms: &Rooms,
        sender: &UserId,
        room_id: &RoomId,
        invitee: &UserId,
        reason: Option<&str>,
    ) -> Result<()> {
        if invitee.server_name() == rooms.server_name() {
            let mut profile = serde_json::Map::new();
            set_profile(&mut profile, &self.profile_for_invite(invitee).await?);
            rooms
                .set_membership(
                    sender,
                    room_id,
                    invitee,
                    MembershipState::Invite,
                    reason,
                    Some(profile),
                )
                .await?;
        } else {
            self.invite_remote(rooms, sender, room_id, invitee, reason, false)
                .await?;
        }
        Ok(())
    }
}

impl Federation {
    /// Knock on a room by ID or alias: locally when one of our users is in it, else through
    /// another server (make_knock, sign, send_knock); the knock is then shown in /sync with
    /// the stripped state the resident server sent.
    pub async fn knock_room(
        &self,
        rooms: &Rooms,
        user: &UserId,
        target: &ruma::RoomOrAliasId,
        via: &[OwnedServerName],
        reason: Option<&str>,
    ) -> Result<ruma::OwnedRoomId> {
        let (room_id, mut servers) = self.room_and_servers(rooms, target, via).await?;
        if let Ok(room) = rooms.room(&room_id).await
            && rooms.is_resident(&room).await?
        {
            rooms.knock(user, &room_id, reason).await?;
            return Ok(room_id);
        }
        if let Some(s) = room_id.server_name() {
            servers.push(s.to_owned());
        }
        dedup_keep_order(&mut servers);
        let mut last = Error::not_found("No server could help to knock on this room");
        for server in servers.iter().filter(|s| *s != rooms.server_name()) {
            match self.knock_via(rooms, server, user, &room_id, reason).await {
                Ok(()) => return Ok(room_id),
                Err(e) => {
                    tracing::info!(%server, error = %e, "knocking through this server failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn knock_via(
        &self,
        rooms: &Rooms,
        server: &ServerName,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> Result<()> {
        let mut request =
            prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = creatable_versions();
        let template = self.client.send(server, request).await?;
        let version = template.room_version;
        let (event_id, obj) = self.sign_template(
            &version,
            (room_id, user),
            &template.event,
            Kind::Knock,
            reason,
            None,
        )?;
        let json = serde_json::to_string(&obj).map_err(|e| Error::internal(e.to_string()))?;
        let raw =
            RawValue::from_string(json.clone()).map_err(|e| Error::internal(e.to_string()))?;
        let answer = self
            .client
            .send(
                server,
                create_knock_event::v1::Request::new(room_id.to_owned(), event_id.clone(), raw),
            )
            .await?;
        let ev = Incoming {
            pdu: Pdu::parse(event_id.clone(), &json)?,
            event_id,
            json: json.clone(),
        };
        let stripped = stripped_state(&answer.knock_room_state, &json);
        rooms
            .store_out_of_band_membership(room_id, &version, &ev, Some(&stripped))
            .await
    }

    /// Accept a knock from another server's user (send_knock) and return the room's
    /// public basics for the knocker to see.
    pub async fn accept_knock(
        &self,
        rooms: &Rooms,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
    ) -> Result<Vec<RawStrippedState>> {
        self.accept_membership(
            rooms,
            origin,
            room_id,
            event_id,
            pdu,
            MembershipState::Knock,
        )
        .await?;
        let room = rooms.room(room_id).await?;
        Ok(rooms
            .public_basics(&room)
            .await?
            .into_iter()
            .filter_map(|j| RawValue::from_string(j).ok())
            .map(RawStrippedState::Pdu)
            .collect())
    }
}

fn dedup_keep_order(servers: &mut Vec<OwnedServerName>) {
    let mut seen = std::collections::HashSet::new();
    servers.retain(|s| seen.insert(s.clone()));
}
