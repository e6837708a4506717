//! What a client's membership request becomes: local when one of our users is in the room
//! (we hold its state and append ourselves; the queue tells the other servers), through
//! another server otherwise.

use ruma::events::room::member::MembershipState;
use ruma::{OwnedServerName, RoomId, UserId};

use super::dedup_keep_order;
use crate::error::Result;
use crate::federation::Federation;
use crate::room::Rooms;
use crate::room::membership::{JoinContent, set_profile};

impl Federation {
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
