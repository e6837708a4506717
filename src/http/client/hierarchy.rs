//! `GET /_matrix/client/*/rooms/{roomId}/hierarchy`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidhierarchy)

use axum::Router;
use ruma::api::client::space::get_hierarchy;

use crate::app::AppState;
use crate::error::Result;
use crate::federation::hierarchy::HierarchyQuery;
use crate::http::ruma::{Ruma, route_patched};
use crate::http::summaries;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route_patched(r, hierarchy_route, summaries::client_hierarchy)
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
async fn hierarchy_route(
    state: AppState,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let b = &req.body;
    let page = state
        .federation
        .hierarchy(
            &state.rooms,
            &req.auth.user_id,
            HierarchyQuery {
                room_id: &b.room_id,
                from: b.from.as_deref(),
                limit: b.limit.map(u64::from),
                max_depth: b.max_depth.map(u64::from),
                suggested_only: b.suggested_only,
            },
        )
        .await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.rooms = page.rooms;
    response.next_batch = page.next_batch;
    Ok(response)
}
