//! The read side of a room's graph for other servers: `GET /event/{eventId}`,
//! `GET /state/{roomId}`, `GET /state_ids/{roomId}` (with the MSC2314 extension: without
//! `event_id`, the current state, and `room_version` in every answer),
//! `GET /event_auth/{roomId}/{eventId}`, `GET /backfill/{roomId}`,
//! `POST /get_missing_events/{roomId}`, `GET /timestamp_to_event/{roomId}`.
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#retrieving-events)

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use ruma::api::Direction;
use ruma::api::federation::authorization::get_event_authorization;
use ruma::api::federation::backfill::get_backfill;
use ruma::api::federation::event::{get_event, get_event_by_timestamp, get_missing_events};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, UInt};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::auth::SignedBy;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, event_route);
    let r = route(r, event_auth_route);
    let r = route(r, backfill_route);
    let r = route(r, missing_events_route);
    let r = route(r, timestamp_route);
    r.route("/_matrix/federation/v1/state/{room_id}", get(state_route))
        .route(
            "/_matrix/federation/v1/state_ids/{room_id}",
            get(state_ids_route),
        )
}

fn millis(ts: i64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::try_from(ts.max(0)).unwrap_or_default())
}

fn limit(v: UInt) -> i64 {
    i64::try_from(u64::from(v)).unwrap_or(i64::MAX)
}

/// # `GET /_matrix/federation/v1/event/{eventId}`
async fn event_route(
    state: AppState,
    req: Ruma<get_event::v1::Request>,
) -> Result<get_event::v1::Response> {
    let pdu = state
        .rooms
        .pdu_for_server(&req.body.event_id, &req.auth)
        .await?;
    Ok(get_event::v1::Response::new(
        state.keys.server_name().clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu,
    ))
}

/// # `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
async fn event_auth_route(
    state: AppState,
    req: Ruma<get_event_authorization::v1::Request>,
) -> Result<get_event_authorization::v1::Response> {
    let b = &req.body;
    let chain = state
        .rooms
        .event_auth_for_server(&b.room_id, &b.event_id, &req.auth)
        .await?;
    Ok(get_event_authorization::v1::Response::new(chain))
}

/// # `GET /_matrix/federation/v1/backfill/{roomId}`
async fn backfill_route(
    state: AppState,
    req: Ruma<get_backfill::v1::Request>,
) -> Result<get_backfill::v1::Response> {
    let b = &req.body;
    if b.v.is_empty() {
        return Err(Error::invalid_param(
            "At least one event ID (v) is required",
        ));
    }
    let pdus = state
        .rooms
        .backfill_for_server(&b.room_id, &b.v, limit(b.limit), &req.auth)
        .await?;
    Ok(get_backfill::v1::Response::new(
        state.keys.server_name().clone(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus,
    ))
}

/// # `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn missing_events_route(
    state: AppState,
    req: Ruma<get_missing_events::v1::Request>,
) -> Result<get_missing_events::v1::Response> {
    let b = &req.body;
    let events = state
        .rooms
        .missing_events_for_server(
            &b.room_id,
            &b.earliest_events,
            &b.latest_events,
            limit(b.limit),
            limit(b.min_depth),
            &req.auth,
        )
        .await?;
    Ok(get_missing_events::v1::Response::new(events))
}

/// # `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`
async fn timestamp_route(
    state: AppState,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let b = &req.body;
    let ts = i64::try_from(u64::from(b.ts.0)).unwrap_or(i64::MAX);
    let (event_id, found) = state
        .rooms
        .timestamp_for_server(&b.room_id, ts, b.dir == Direction::Forward, &req.auth)
        .await?;
    Ok(get_event_by_timestamp::v1::Response::new(
        event_id,
        millis(found),
    ))
}

type QueryParams =
    std::result::Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

/// Room ID from the path and the optional `event_id` query parameter, both validated.
fn state_params(
    room_id: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: QueryParams,
) -> Result<(OwnedRoomId, Option<OwnedEventId>)> {
    let Path(room_id) = room_id.map_err(|e| Error::invalid_param(e.to_string()))?;
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| Error::invalid_param(format!("Invalid room ID: {e}")))?;
    let Query(query) = query.map_err(|e| Error::invalid_param(e.to_string()))?;
    let event_id = query
        .get("event_id")
        .map(|e| {
            OwnedEventId::try_from(e.as_str())
                .map_err(|e| Error::invalid_param(format!("Invalid event ID: {e}")))
        })
        .transpose()?;
    Ok((room_id, event_id))
}

/// # `GET /_matrix/federation/v1/state/{roomId}?event_id=…`
async fn state_route(
    State(state): State<AppState>,
    SignedBy(origin): SignedBy,
    room_id: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: QueryParams,
) -> Result<Json<Value>> {
    let (room_id, event_id) = state_params(room_id, query)?;
    let at = state
        .rooms
        .state_for_server(&room_id, event_id.as_deref(), &origin)
        .await?;
    Ok(Json(json!({
        "pdus": at.state,
        "auth_chain": at.auth_chain,
        "room_version": at.room_version,
    })))
}

/// # `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=…`
async fn state_ids_route(
    State(state): State<AppState>,
    SignedBy(origin): SignedBy,
    room_id: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: QueryParams,
) -> Result<Json<Value>> {
    let (room_id, event_id) = state_params(room_id, query)?;
    let at = state
        .rooms
        .state_ids_for_server(&room_id, event_id.as_deref(), &origin)
        .await?;
    Ok(Json(json!({
        "pdu_ids": at.state,
        "auth_chain_ids": at.auth_chain,
        "room_version": at.room_version,
    })))
}
