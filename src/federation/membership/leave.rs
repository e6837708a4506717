//! Leaving (rejecting an invite to) a room we are not in: make_leave, sign, send_leave.

use ruma::api::federation::membership::{create_leave_event, prepare_leave_event};
use ruma::{OwnedServerName, RoomId, RoomVersionId, UserId};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::federation::Federation;
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
}
