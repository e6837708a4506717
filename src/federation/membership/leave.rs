//! Leaving (rejecting an invite to) a room we are not in: make_leave, sign, send_leave.

use ruma::api::federation::membership::{create_leave_event, prepare_leave_event};
use ruma::{EventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::federation::Federation;
use crate::federation::client::FederationError;
use crate::federation::legacy_api::SendLeaveV1;
use crate::federation::template::Kind;
use crate::room::Rooms;
use crate::room::pdu::Pdu;
use crate::room::remote::Incoming;

impl Federation {
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
                self.send_leave(server, room_id, &event_id, raw).await?;
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

    /// send_leave, in its v1 form when the server does not know the v2 form (an unknown
    /// endpoint, not a refusal), as Synapse falls back.
    async fn send_leave(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: Box<RawValue>,
    ) -> Result<(), FederationError> {
        let v2 = create_leave_event::v2::Request::new(
            room_id.to_owned(),
            event_id.to_owned(),
            pdu.clone(),
        );
        match self.client.send(server, v2).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_unknown_endpoint() => {
                tracing::info!(%server, "send_leave v2 unknown there, sending the v1 form");
                let v1 = SendLeaveV1 {
                    room_id: room_id.to_owned(),
                    event_id: event_id.to_owned(),
                    pdu,
                };
                self.client.send(server, v1).await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
