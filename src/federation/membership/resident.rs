//! Answering other servers' membership requests for rooms we are in: templates
//! (make_join, make_leave, make_knock) and the signed events (send_join, send_leave, send_knock).

use ruma::canonical_json::CanonicalJsonObject;
use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{EventId, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::federation::Federation;
use crate::federation::pdu::{parse_pdu, verify_pdus};
use crate::room::Rooms;
use crate::room::pdu::membership_of;
use crate::room::remote::{Incoming, Outcome};

impl Federation {
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
}
