//! `GET /_matrix/client/v3/initialSync`, `GET /rooms/{roomId}/initialSync`, `GET /events`
//!
//! Deprecated in the spec but still specified; old clients and scripts use them.
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3initialsync)

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use ruma::OwnedRoomId;
use serde_json::{Value, json};

use crate::account::AuthedUser;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::auth::Authed;
use crate::room::timeline::At;
use crate::sync::SyncRequest;
use crate::sync::token::SyncToken;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let mut r = r;
    for version in ["r0", "v3"] {
        r = r
            .route(
                &format!("/_matrix/client/{version}/initialSync"),
                get(initial_sync_route),
            )
            .route(
                &format!("/_matrix/client/{version}/rooms/{{room_id}}/initialSync"),
                get(room_initial_sync_route),
            )
            .route(
                &format!("/_matrix/client/{version}/events"),
                get(events_route),
            );
    }
    r
}

type QueryParams =
    std::result::Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

/// Longest a legacy /events call waits.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages per room when `limit` is not given.
const DEFAULT_LIMIT: i64 = 20;

fn params(q: QueryParams) -> Result<HashMap<String, String>> {
    q.map(|Query(p)| p)
        .map_err(|e| Error::invalid_param(e.to_string()))
}

fn number(params: &HashMap<String, String>, key: &str, default: i64) -> Result<i64> {
    match params.get(key) {
        Some(v) => v
            .parse()
            .map_err(|_| Error::invalid_param(format!("{key} must be a number"))),
        None => Ok(default),
    }
}

/// The current position of every stream, as a sync token (from an immediate sync).
async fn now_token(state: &AppState, user: &AuthedUser) -> Result<SyncToken> {
    let request = request(user, None, Duration::ZERO);
    Ok(state.sync.sync(&user.user_id, request).await?.next_batch)
}

fn request(user: &AuthedUser, since: Option<SyncToken>, timeout: Duration) -> SyncRequest {
    SyncRequest {
        since,
        device_id: user.device_id.clone(),
        timeline_limit: 100,
        full_state: false,
        include_leave: false,
        lazy_load_members: false,
        include_redundant_members: false,
        timeout,
        timeline_select: Default::default(),
        ignored_news: Default::default(),
        filter: None,
    }
}

/// # `GET /_matrix/client/v3/initialSync`
async fn initial_sync_route(
    State(state): State<AppState>,
    Authed(user): Authed,
    query: QueryParams,
) -> Result<Json<Value>> {
    let params = params(query)?;
    let limit = number(&params, "limit", DEFAULT_LIMIT)?.clamp(0, 100);
    let end = now_token(&state, &user).await?;
    let mut rooms = Vec::new();
    for room_id in state.rooms.joined_rooms(&user.user_id).await? {
        rooms.push(
            state
                .rooms
                .legacy_room_snapshot(&user.user_id, &room_id, limit.max(1))
                .await?,
        );
    }
    Ok(Json(
        json!({"end": end.to_string(), "rooms": rooms, "presence": [], "account_data": []}),
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/initialSync`
async fn room_initial_sync_route(
    State(state): State<AppState>,
    Authed(user): Authed,
    room_id: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Value>> {
    let Path(room_id) = room_id.map_err(|e| Error::invalid_param(e.to_string()))?;
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| Error::invalid_param(format!("Invalid room ID: {e}")))?;
    Ok(Json(
        state
            .rooms
            .legacy_room_snapshot(&user.user_id, &room_id, DEFAULT_LIMIT)
            .await?,
    ))
}

/// # `GET /_matrix/client/v3/events`
///
/// New timeline events in the caller's rooms after `from` (a token from /initialSync or a
/// previous call), waiting up to `timeout` ms for some to arrive.
async fn events_route(
    State(state): State<AppState>,
    Authed(user): Authed,
    query: QueryParams,
) -> Result<Json<Value>> {
    let params = params(query)?;
    let timeout =
        Duration::from_millis(number(&params, "timeout", 30_000)?.max(0) as u64).min(MAX_TIMEOUT);
    let Some(from) = params.get("from") else {
        let now = now_token(&state, &user).await?.to_string();
        return Ok(Json(json!({"start": now, "end": now, "chunk": []})));
    };
    let since = match super::position(from)? {
        At::Stream(_) => SyncToken::parse(from)?,
        // A pagination token names a place in one room's timeline; its stream part is where
        // the event stream continues (the other streams from now, as on a first call).
        At::Topo(t) => SyncToken {
            events: t.stream.max(0),
            ..now_token(&state, &user).await?
        },
    };
    let result = state
        .sync
        .sync(&user.user_id, request(&user, Some(since), timeout))
        .await?;
    let mut chunk = Vec::new();
    for (room_id, joined) in result.join {
        for mut event in joined.timeline {
            event["room_id"] = Value::String(room_id.to_string());
            chunk.push(event);
        }
    }
    chunk.sort_by_key(|e| e["origin_server_ts"].as_u64().unwrap_or(0));
    Ok(Json(
        json!({"start": from, "end": result.next_batch.to_string(), "chunk": chunk}),
    ))
}
