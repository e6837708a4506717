//! Joining a room hosted elsewhere: make_join, sign, send_join, verify the answer, store it.

use ruma::api::federation::membership::{create_join_event, prepare_join_event};
use ruma::{EventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::value::RawValue;

use crate::db;
use crate::error::{Error, Result};
use crate::federation::Federation;
use crate::federation::client::FederationError;
use crate::federation::legacy_api::{RoomState, SendJoinV1};
use crate::federation::pdu::verify_pdus;
use crate::federation::template::Kind;
use crate::room::Rooms;
use crate::room::create::creatable_versions;
use crate::room::membership::JoinContent;
use crate::room::pdu::Pdu;
use crate::room::remote::Incoming;

/// A join whose state and auth chain hold at least this many events used enough memory for a
/// moment to be worth handing back at once.
const LARGE_JOIN: usize = 1000;

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
        let answer = self.send_join(server, room_id, &event_id, raw).await?;

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

    /// send_join, in its v1 form when the server does not know the v2 form (an unknown
    /// endpoint, not a refusal), as Synapse falls back.
    async fn send_join(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: Box<RawValue>,
    ) -> Result<RoomState, FederationError> {
        let v2 = create_join_event::v2::Request::new(
            room_id.to_owned(),
            event_id.to_owned(),
            pdu.clone(),
        );
        match self.client.send(server, v2).await {
            Ok(answer) => Ok(answer.room_state),
            Err(e) if e.is_unknown_endpoint() => {
                tracing::info!(%server, "send_join v2 unknown there, sending the v1 form");
                let v1 = SendJoinV1 {
                    room_id: room_id.to_owned(),
                    event_id: event_id.to_owned(),
                    pdu,
                };
                Ok(self.client.send(server, v1).await?.0)
            }
            Err(e) => Err(e),
        }
    }
}
