//! `GET /make_join/{roomId}/{userId}`, `PUT /v2/send_join/{roomId}/{eventId}`,
//! `GET /make_leave/{roomId}/{userId}`, `PUT /v2/send_leave/{roomId}/{eventId}`,
//! `PUT /v2/invite/{roomId}/{eventId}`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#joining-rooms)

use axum::Router;
use ruma::RoomVersionId;
use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
    prepare_knock_event, prepare_leave_event,
};
use ruma::events::room::member::MembershipState;
use serde_json::value::RawValue;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, make_join_route);
    let r = route(r, send_join_route);
    let r = route(r, make_leave_route);
    let r = route(r, send_leave_route);
    let r = route(r, make_knock_route);
    let r = route(r, send_knock_route);
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
    let ev = state
        .federation
        .accept_membership(
            &state.rooms,
            &req.auth,
            &b.room_id,
            &b.event_id,
            &b.pdu,
            MembershipState::Join,
        )
        .await?;
    let (room_state, auth_chain) = state.rooms.state_and_auth_chain(&ev.event_id).await?;
    let room = state.rooms.room(&b.room_id).await?;
    let mut answer = create_join_event::v2::RoomState::new();
    answer.state = room_state;
    answer.auth_chain = auth_chain;
    answer.servers_in_room = Some(state.rooms.servers_in(&room).await?);
    answer.event =
        Some(RawValue::from_string(ev.json).map_err(|e| Error::internal(e.to_string()))?);
    Ok(create_join_event::v2::Response::new(answer))
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
    state
        .federation
        .accept_membership(
            &state.rooms,
            &req.auth,
            &b.room_id,
            &b.event_id,
            &b.pdu,
            MembershipState::Leave,
        )
        .await?;
    Ok(create_leave_event::v2::Response::new())
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
