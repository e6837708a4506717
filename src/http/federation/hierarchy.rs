//! `GET /_matrix/federation/*/hierarchy/{roomId}`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1hierarchyroomid)

use axum::Router;
use ruma::api::federation::space::get_hierarchy;

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route_patched};
use crate::http::summaries;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route_patched(r, hierarchy_route, summaries::federation_hierarchy)
}

/// # `GET /_matrix/federation/v1/hierarchy/{roomId}`
///
/// The room and its direct children as the asking server may see them; it walks further
/// itself, asking about the children we are not the right server for.
async fn hierarchy_route(
    state: AppState,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    state
        .rooms
        .hierarchy_for_server(&req.body.room_id, &req.auth, req.body.suggested_only)
        .await
}
