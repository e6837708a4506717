//! `GET /_matrix/client/unstable/org.trellis.pages/rooms/{roomId}/pages`
//!
//! Trellis's pagination overview (from the early sync design this project started from): the
//! `from` token of every page of `per_page` events passing `filter`, oldest page first, for a
//! snapshot of the room taken at the call. Each token, given to
//! `/messages?dir=f&limit=<per_page>&filter=<filter>`, returns exactly that page.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use ruma::OwnedRoomId;
use ruma::api::client::filter::RoomEventFilter;
use serde::Serialize;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::auth::Authed;
use crate::room::timeline::EventFilter;

const PATH: &str = "/_matrix/client/unstable/org.trellis.pages/rooms/{room_id}/pages";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(PATH, get(pages_route))
}

#[derive(Serialize)]
struct PagesResponse {
    per_page: i64,
    /// Events in the snapshot that pass the filter and the caller may see.
    total: u64,
    /// One `from` token per page, oldest page first.
    pages: Vec<String>,
}

/// # `GET /_matrix/client/unstable/org.trellis.pages/rooms/{roomId}/pages`
async fn pages_route(
    State(state): State<AppState>,
    Authed(user): Authed,
    room_id: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: std::result::Result<
        Query<HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<Json<PagesResponse>> {
    let Path(room_id) = room_id.map_err(|e| Error::invalid_param(e.to_string()))?;
    let room_id = OwnedRoomId::try_from(room_id)
        .map_err(|e| Error::invalid_param(format!("Invalid room ID: {e}")))?;
    let Query(query) = query.map_err(|e| Error::invalid_param(e.to_string()))?;
    let per_page: i64 = query
        .get("per_page")
        .ok_or_else(|| Error::missing_param("per_page is required"))?
        .parse()
        .map_err(|_| Error::invalid_param("per_page must be a number"))?;
    let filter = match query.get("filter") {
        Some(json) => {
            let f: RoomEventFilter = serde_json::from_str(json)
                .map_err(|e| Error::invalid_param(format!("Invalid filter: {e}")))?;
            EventFilter::from(&f)
        }
        None => EventFilter::default(),
    };
    let index = state
        .rooms
        .page_index(&user.user_id, &room_id, per_page, &filter)
        .await?;
    Ok(Json(PagesResponse {
        per_page,
        total: index.total,
        pages: index.pages.iter().map(ToString::to_string).collect(),
    }))
}
