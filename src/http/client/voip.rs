//! `GET /_matrix/client/v3/voip/turnServer`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3voipturnserver)

use axum::Router;
use axum::response::{IntoResponse, Response};
use ruma::api::client::voip::get_turn_server_info;

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, RumaResponse, route_raw};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route_raw::<get_turn_server_info::v3::Request, _, _, _>(r, turn_server_route)
}

/// # `GET /_matrix/client/v3/voip/turnServer`
///
/// Without a TURN server configured, an empty object, as Synapse answers: clients then call
/// without TURN instead of treating the endpoint as broken.
async fn turn_server_route(
    state: AppState,
    req: Ruma<get_turn_server_info::v3::Request>,
) -> Result<Response> {
    let now = std::time::SystemTime::now();
    Ok(
        match crate::voip::turn_credentials(&state.config.voip, &req.auth.user_id, now) {
            Some(c) => RumaResponse(get_turn_server_info::v3::Response::new(
                c.username, c.password, c.uris, c.ttl,
            ))
            .into_response(),
            None => axum::Json(serde_json::json!({})).into_response(),
        },
    )
}
