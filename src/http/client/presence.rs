//! `GET/PUT /_matrix/client/v3/presence/{userId}/status`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#presence)

use axum::Router;
use ruma::api::client::presence::{get_presence, set_presence};

use super::require_self;
use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, get_presence_route);
    route(r, set_presence_route)
}

/// # `GET /_matrix/client/v3/presence/{userId}/status`
///
/// One's own presence or that of a user sharing a room; anyone else's is forbidden.
async fn get_presence_route(
    state: AppState,
    req: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response> {
    let view = state
        .ephemeral
        .presence(&req.auth.user_id, &req.body.user_id)
        .await?;
    let mut res = get_presence::v3::Response::new(view.presence);
    res.status_msg = view.status_msg;
    res.currently_active = Some(view.currently_active);
    res.last_active_ago = view.last_active_ago;
    Ok(res)
}

/// # `PUT /_matrix/client/v3/presence/{userId}/status`
async fn set_presence_route(
    state: AppState,
    req: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let body = req.body;
    let user = &req.auth.user_id;
    state
        .federation
        .presence(&state.ephemeral, user, body.presence, body.status_msg)
        .await?;
    Ok(set_presence::v3::Response::new())
}
