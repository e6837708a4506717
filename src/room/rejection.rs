//! Rejecting an invite (or withdrawing a knock) when no server of the room can be reached
//! to take the leave: the membership changes on this server alone, as Synapse's
//! out-of-band leave does, so the invite leaves the user's /sync instead of staying there
//! for good. The room's servers keep the invite; nobody could be told.

use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, RoomId, UserId};

use super::Rooms;
use super::pdu::{self, NewContent, Placement, depth_after};
use super::remote::Incoming;
use crate::db;
use crate::error::{Error, Result};

impl Rooms {
    /// Leave a room this server is not in, where the user is only invited or knocking,
    /// without asking any other server. `false` (nothing done) for any other membership, or
    /// when this server is in the room (a leave there is an ordinary one).
    pub async fn leave_out_of_band(
        &self,
        user: &UserId,
        room_id: &RoomId,
        reason: Option<&str>,
    ) -> Result<bool> {
        let Some((room, membership)) =
            db::rooms::with_membership(self.db(), room_id.as_str(), user.as_str()).await?
        else {
            return Ok(false);
        };
        if !matches!(
            membership,
            Some(MembershipState::Invite | MembershipState::Knock)
        ) || self.is_resident(&room).await?
        {
            return Ok(false);
        }
        let Some((cause, depth)) =
            db::rooms::membership_event(self.db(), room.room_nid, user.as_str()).await?
        else {
            return Ok(false);
        };
        let cause = OwnedEventId::try_from(cause)
            .map_err(|e| Error::internal(format!("stored event ID: {e}")))?;
        let mut content = serde_json::json!({ "membership": "leave" });
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        let new = NewContent {
            kind: TimelineEventType::RoomMember,
            state_key: Some(user.to_string()),
            content: super::raw(&content)?,
            redacts: None,
        };
        // The invite (or knock) is all this server has of the room: the leave follows it
        // and is authorised by it, as Synapse builds its out-of-band leave.
        let rules = room.rules()?;
        let around = [cause];
        let (event_id, json) = pdu::build(
            &self.keys,
            &new,
            &Placement {
                room_id: Some(room_id),
                version: &room.room_version,
                rules: &rules,
                sender: user,
                prev_events: &around,
                auth_events: &around,
                depth: depth_after(depth),
            },
        )?;
        let ev = Incoming {
            pdu: pdu::Pdu::parse(event_id.clone(), &json)?,
            event_id,
            json,
        };
        self.store_out_of_band_membership(room_id, &room.room_version, &ev, None)
            .await?;
        tracing::info!(%room_id, %user, "no server could take the leave: left out of band");
        Ok(true)
    }
}
