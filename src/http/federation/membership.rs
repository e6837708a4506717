//! `GET /make_join/{roomId}/{userId}`, `PUT /v2/send_join/{roomId}/{eventId}`,
//! `GET /make_leave/{roomId}/{userId}`, `PUT /v2/send_leave/{roomId}/{eventId}`,
//! `PUT /v2/invite/{roomId}/{eventId}`, and the v1 forms of send_join, send_leave and invite
//! that peers still use (their answers wrapped in `[200, {...}]`)
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#joining-rooms)

use axum::Router;
use create_join_event::v2::RoomState;
use ruma::RoomVersionId;
use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
    prepare_knock_event, prepare_leave_event,
};
use ruma::events::room::member::MembershipState;
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::federation::legacy_api::{Empty, SendJoinV1, SendLeaveV1, V1Answer};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, make_join_route);
    let r = route(r, send_join_route);
    let r = route(r, make_leave_route);
    let r = route(r, send_leave_route);
    let r = route(r, make_knock_route);
    let r = route(r, send_knock_route);
    let r = route(r, send_join_v1_route);
    let r = route(r, send_leave_v1_route);
    let r = route(r, invite_v1_route);
    route(r, invite_route)
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn make_join_route(
    state: AppState,
    req: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    let b = &req.body;
    // No `ver` means the asking server only knows room version 1.
    let supported = if b.ver.is_empty() {
        vec![RoomVersionId::V1]
    } else {
        b.ver.clone()
    };
    let (version, event) = state
        .federation
        .make_membership(
            &state.rooms,
            &req.auth,
            &b.room_id,
            &b.user_id,
            MembershipState::Join,
            &supported,
        )
        .await?;
    let mut response = prepare_join_event::v1::Response::new(event);
    response.room_version = Some(version);
    Ok(response)
}

/// # `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn send_join_route(
    state: AppState,
    req: Ruma<create_join_event::v2::Request>,
) -> Result<create_join_event::v2::Response> {
    let b = &req.body;
    let answer = send_join(&state, &req.auth, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(create_join_event::v2::Response::new(answer))
}

/// # `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`
///
/// What v2 answers, as `[200, {...}]`.
async fn send_join_v1_route(state: AppState, req: Ruma<SendJoinV1>) -> Result<V1Answer<RoomState>> {
    let b = &req.body;
    let answer = send_join(&state, &req.auth, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(V1Answer(answer))
}

/// Accept a join and describe the room the joiner now is in: the state and auth chain at
/// the join, the servers in the room, and the join as we stored it (countersigned when we
/// vouched for a restricted join).
async fn send_join(
    state: &AppState,
    origin: &ruma::ServerName,
    room_id: &ruma::RoomId,
    event_id: &ruma::EventId,
    pdu: &RawValue,
) -> Result<RoomState> {
    let ev = state
        .federation
        .accept_membership(
            &state.rooms,
            origin,
            room_id,
            event_id,
            pdu,
            MembershipState::Join,
        )
        .await?;
    let (room_state, auth_chain) = state.rooms.state_and_auth_chain(&ev.event_id).await?;
    let room = state.rooms.room(room_id).await?;
    let mut answer = RoomState::new();
    answer.state = room_state;
    answer.auth_chain = auth_chain;
    answer.servers_in_room = Some(state.rooms.servers_in(&room).await?);
    answer.event =
        Some(RawValue::from_string(ev.json).map_err(|e| Error::internal(e.to_string()))?);
    Ok(answer)
}

/// # `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
async fn make_leave_route(
    state: AppState,
    req: Ruma<prepare_leave_event::v1::Request>,
) -> Result<prepare_leave_event::v1::Response> {
    let b = &req.body;
    let (version, event) = state
        .federation
        .make_membership(
            &state.rooms,
            &req.auth,
            &b.room_id,
            &b.user_id,
            MembershipState::Leave,
            &crate::room::create::creatable_versions(),
        )
        .await?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), event))
}

/// # `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
async fn send_leave_route(
    state: AppState,
    req: Ruma<create_leave_event::v2::Request>,
) -> Result<create_leave_event::v2::Response> {
    let b = &req.body;
    send_leave(&state, &req.auth, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(create_leave_event::v2::Response::new())
}

/// # `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`
///
/// What v2 answers, as `[200, {}]`.
async fn send_leave_v1_route(state: AppState, req: Ruma<SendLeaveV1>) -> Result<V1Answer<Empty>> {
    let b = &req.body;
    send_leave(&state, &req.auth, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(V1Answer(Empty {}))
}

async fn send_leave(
    state: &AppState,
    origin: &ruma::ServerName,
    room_id: &ruma::RoomId,
    event_id: &ruma::EventId,
    pdu: &RawValue,
) -> Result<()> {
    state
        .federation
        .accept_membership(
            &state.rooms,
            origin,
            room_id,
            event_id,
            pdu,
            MembershipState::Leave,
        )
        .await?;
    Ok(())
}

/// # `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
async fn make_knock_route(
    state: AppState,
    req: Ruma<prepare_knock_event::v1::Request>,
) -> Result<prepare_knock_event::v1::Response> {
    let b = &req.body;
    let (version, event) = state
        .federation
        .make_membership(
            &state.rooms,
            &req.auth,
            &b.room_id,
            &b.user_id,
            MembershipState::Knock,
            &b.ver,
        )
        .await?;
    Ok(prepare_knock_event::v1::Response::new(version, event))
}

/// # `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
async fn send_knock_route(
    state: AppState,
    req: Ruma<create_knock_event::v1::Request>,
) -> Result<create_knock_event::v1::Response> {
    let b = &req.body;
    let knock_room_state = state
        .federation
        .accept_knock(&state.rooms, &req.auth, &b.room_id, &b.event_id, &b.pdu)
        .await?;
    Ok(create_knock_event::v1::Response::new(knock_room_state))
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
async fn invite_route(
    state: AppState,
    req: Ruma<create_invite::v2::Request>,
) -> Result<create_invite::v2::Response> {
    let event = state
        .federation
        .accept_invite(&state.rooms, &req.auth, &req.body)
        .await?;
    Ok(create_invite::v2::Response::new(event))
}

/// # `PUT /_matrix/federation/v1/invite/{roomId}/{eventId}`
///
/// The body is the invite event itself, with the stripped state in its
/// `unsigned.invite_room_state`. The request names no room version: as Synapse does, the
/// room is taken to be of version 1 (the only difference of version 2, state resolution,
/// plays no part in an invite), so the invite is refused unless this server supports it.
async fn invite_v1_route(
    state: AppState,
    req: Ruma<create_invite::v1::Request>,
) -> Result<create_invite::v1::Response> {
    let b = &req.body;
    let event = RawValue::from_string(
        String::from_utf8(req.raw_body.to_vec())
            .map_err(|_| Error::not_json("Body is not UTF-8"))?,
    )
    .map_err(|e| Error::not_json(e.to_string()))?;
    let v2 = create_invite::v2::Request::new(
        b.room_id.clone(),
        b.event_id.clone(),
        RoomVersionId::V1,
        event,
        b.unsigned.invite_room_state.clone(),
    );
    let event = state
        .federation
        .accept_invite(&state.rooms, &req.auth, &v2)
        .await?;
    Ok(create_invite::v1::Response::new(event))
}
