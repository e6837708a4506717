//! `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidtypinguserid)

use axum::Router;
use ruma::api::client::typing::create_typing_event::v3::{self, Typing};

use super::require_self;
use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route(r, typing_route)
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
///
/// Start (with a timeout, capped by the server) or stop typing in a room one is joined to.
async fn typing_route(state: AppState, req: Ruma<v3::Request>) -> Result<v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let timeout = match req.body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    let (user, room_id) = (&req.auth.user_id, &req.body.room_id);
    state
        .federation
        .typing((&state.rooms, &state.ephemeral), user, room_id, timeout)
        .await?;
    Ok(v3::Response::new())
}
