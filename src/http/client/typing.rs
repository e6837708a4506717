//! `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidtypinguserid)

use axum::Router;
use ruma::api::client::typing::create_typing_event::v3::{self, Typing};

use super::require_self;
use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route_with_body_defaults};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route_with_body_defaults(r, typing_route, default_timeout)
}

/// How long a typing notice lasts when the client does not say: the spec has `timeout`
/// optional (ruma requires it with `typing: true`); Synapse's default.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// `{"typing": true}` without a timeout gets the default one. Anything else is left for
/// the parser to judge (`typing` missing or not a boolean, a timeout that is no
/// non-negative integer).
fn default_timeout(body: &mut serde_json::Map<String, serde_json::Value>) {
    if body.get("typing") == Some(&serde_json::Value::Bool(true))
        && body.get("timeout").is_none_or(serde_json::Value::is_null)
    {
        body.insert("timeout".to_owned(), DEFAULT_TIMEOUT_MS.into());
    }
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
