//! `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}` (and MSC3266's unstable path)
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1room_summaryroomidoralias)

use axum::Router;
use ruma::api::client::room::get_summary;

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route_patched};
use crate::http::summaries;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route_patched(r, summary_route, summaries::room_summary)
}

/// # `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`
///
/// With or without an access token: without one, only rooms anyone may see are summarised.
async fn summary_route(
    state: AppState,
    req: Ruma<get_summary::v1::Request>,
) -> Result<get_summary::v1::Response> {
    let viewer = req.auth.as_ref().map(|a| &*a.user_id);
    let (summary, membership) = state
        .federation
        .room_summary(
            &state.rooms,
            viewer,
            &req.body.room_id_or_alias,
            &req.body.via,
        )
        .await?;
    let mut response = get_summary::v1::Response::new(summary);
    response.membership = membership;
    Ok(response)
}
