//! Invites both ways: ours to users of other servers (countersigned by their server), and
//! other servers' to our users; room creation with invitees of other servers.

use ruma::api::federation::membership::{RawStrippedState, create_invite};
use ruma::canonical_json::CanonicalJsonObject;
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{RoomId, ServerName, UserId};
use serde_json::value::RawValue;

use crate::db;
use crate::error::{Error, Result};
use crate::federation::Federation;
use crate::federation::client::FederationError;
use crate::federation::pdu::{parse_pdu, verify_pdus};
use crate::room::Rooms;
use crate::room::create::creatable_versions;
use crate::room::membership::InviteContent;
use crate::room::pdu::membership_of;
use crate::room::remote::Incoming;

impl Federation {
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
}

impl Federation {
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
    pub(super) async fn profile_for_invite(
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
pub(super) fn stripped_state(list: &[RawStrippedState], invite_json: &str) -> String {
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
}
