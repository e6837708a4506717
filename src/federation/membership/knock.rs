//! Knocking on a room hosted elsewhere, and the stripped state a knock gets back.

use ruma::api::federation::membership::{
    RawStrippedState, create_knock_event, prepare_knock_event,
};
use ruma::events::room::member::MembershipState;
use ruma::{EventId, OwnedServerName, RoomId, ServerName, UserId};
use serde_json::value::RawValue;

use super::dedup_keep_order;
use super::invite::stripped_state;
use crate::error::{Error, Result};
use crate::federation::Federation;
use crate::federation::template::Kind;
use crate::room::Rooms;
use crate::room::create::creatable_versions;
use crate::room::pdu::Pdu;
use crate::room::remote::Incoming;

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
