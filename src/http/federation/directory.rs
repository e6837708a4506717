//! `GET /_matrix/federation/v1/publicRooms`, `POST /_matrix/federation/v1/publicRooms`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#public-room-directory)

use axum::Router;
use ruma::UInt;
use ruma::api::federation::directory::{get_public_rooms, get_public_rooms_filtered};
use ruma::directory::Filter;

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, public_rooms_route);
    route(r, public_rooms_filtered_route)
}

/// # `GET /_matrix/federation/v1/publicRooms`
async fn public_rooms_route(
    state: AppState,
    req: Ruma<get_public_rooms::v1::Request>,
) -> Result<get_public_rooms::v1::Response> {
    let b = &req.body;
    let page = state
        .rooms
        .public_rooms(b.limit, b.since.as_deref(), &Filter::new(), &b.room_network)
        .await?;
    let mut res = get_public_rooms::v1::Response::new();
    res.chunk = page.chunk;
    res.next_batch = page.next_batch;
    res.prev_batch = page.prev_batch;
    res.total_room_count_estimate = Some(UInt::new_saturating(page.total));
    Ok(res)
}

/// # `POST /_matrix/federation/v1/publicRooms`
async fn public_rooms_filtered_route(
    state: AppState,
    req: Ruma<get_public_rooms_filtered::v1::Request>,
) -> Result<get_public_rooms_filtered::v1::Response> {
    let b = &req.body;
    let page = state
        .rooms
        .public_rooms(b.limit, b.since.as_deref(), &b.filter, &b.room_network)
        .await?;
    let mut res = get_public_rooms_filtered::v1::Response::new();
    res.chunk = page.chunk;
    res.next_batch = page.next_batch;
    res.prev_batch = page.prev_batch;
    res.total_room_count_estimate = Some(UInt::new_saturating(page.total));
    Ok(res)
}
