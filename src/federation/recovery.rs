//! Rebuilding a room after its data was lost here (the use MSC2314 was written for): another
//! server in the room tells us its latest event and the state before it; we fetch and check
//! that state and its auth chain, then store the latest event on it. The room's current
//! state, memberships included, is then as the other server sees it: our users who were in
//! the room carry on without a new invite.

use ruma::api::Direction;
use ruma::api::federation::event::{get_event, get_event_by_timestamp};
use ruma::{MilliSecondsSinceUnixEpoch, RoomId, RoomVersionId, ServerName};

use super::Federation;
use super::pdu::verify_pdus;
use crate::error::{Error, Result};
use crate::room::Rooms;
use crate::room::remote::Outcome;

impl Federation {
    #[tracing::instrument(skip(self, rooms), fields(%room_id, %via))]
    pub async fn recover_room(
        &self,
        rooms: &Rooms,
        room_id: &RoomId,
        via: &ServerName,
    ) -> Result<()> {
        // The peer's newest event: the one nearest to now, looking back.
        let latest = self
            .client
            .send(
                via,
                get_event_by_timestamp::v1::Request::new(
                    room_id.to_owned(),
                    MilliSecondsSinceUnixEpoch::now(),
                    Direction::Backward,
                ),
            )
            .await?
            .event_id;
        let pdu = self
            .client
            .send(via, get_event::v1::Request::new(latest.clone()))
            .await?
            .pdu;

        // The room version is in the create event, one of the event's auth events or (since
        // version 12) the event the room ID names.
        let version = self.room_version_via(via, room_id, &pdu).await?;
        rooms.ensure_room(room_id, &version).await?;
        let rules = crate::db::rooms::rules_of(&version)?;
        let ev = match verify_pdus(&self.remote_keys, &rules, &[&*pdu]).await.pop() {
            Some((_, Ok(ev))) if ev.event_id == latest => ev,
            _ => {
                return Err(Error::Upstream(format!(
                    "{via} sent an invalid latest event"
                )));
            }
        };
        let group = self
            .fetch_state_before(rooms, via, room_id, &latest)
            .await?;
        match rooms.receive_pdu_with_state(room_id, &ev, group).await? {
            Outcome::Stored { .. } | Outcome::AlreadyKnown => {
                tracing::info!(event_id = %latest, "room recovered");
                Ok(())
            }
            Outcome::Rejected(reason) => Err(Error::Upstream(format!(
                "the latest event from {via} fails its state: {reason}"
            ))),
            Outcome::Missing { .. } => Err(Error::Upstream(format!(
                "{via} did not provide the events the latest event needs"
            ))),
        }
    }

    /// The room version named by the create event, fetched from `via`: the event a room ID
    /// without a server name stands for, or one of `pdu`'s auth events (version 1 when the
    /// create event names none, as the spec says).
    async fn room_version_via(
        &self,
        via: &ServerName,
        room_id: &RoomId,
        pdu: &serde_json::value::RawValue,
    ) -> Result<RoomVersionId> {
        #[derive(serde::Deserialize)]
        struct AuthEvents {
            auth_events: Vec<serde_json::Value>,
        }
        let auth: AuthEvents = serde_json::from_str(pdu.get())
            .map_err(|e| Error::Upstream(format!("{via} sent an unreadable event: {e}")))?;
        let named = room_id
            .server_name()
            .is_none()
            .then(|| format!("${}", room_id.strip_sigil()));
        for id in named.iter().map(String::as_str).chain(
            auth.auth_events
                .iter()
                .filter_map(|v| v.as_str().or_else(|| v[0].as_str())),
        ) {
            let Ok(id) = ruma::OwnedEventId::try_from(id) else {
                continue;
            };
            let Ok(answer) = self.client.send(via, get_event::v1::Request::new(id)).await else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(answer.pdu.get()).unwrap_or_default();
            if v["type"] == "m.room.create" {
                let version = v["content"]["room_version"].as_str().unwrap_or("1");
                return RoomVersionId::try_from(version)
                    .map_err(|e| Error::Upstream(format!("invalid room version: {e}")));
            }
        }
        Err(Error::Upstream(format!(
            "{via} did not show the room's create event"
        )))
    }
}
