//! `GET /_matrix/client/v3/account/3pid`, `GET /_matrix/client/v3/thirdparty/protocols`,
//! `GET /thirdparty/protocol/{protocol}`, `GET /thirdparty/location[/{protocol}]`,
//! `GET /thirdparty/user[/{protocol}]`: what clients ask (Element's settings, its room
//! directory) about third-party identifiers and bridged networks.
//!
//! This server binds no third-party identifiers (it has no identity server or email
//! sender) and hosts no application services yet, so a user's list of identifiers, the
//! list of bridged protocols and every lookup in them are empty: the true answer, which
//! clients show as such, where a 404 shows as an error. Only a named protocol is unknown.
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3account3pid)

use std::collections::BTreeMap;

use axum::Router;
use axum::response::{IntoResponse, Response};
use ruma::api::client::account::get_3pids;
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route, route_raw};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r =
        route_raw::<get_3pids::v3::Request, Ruma<get_3pids::v3::Request>, _, _>(r, get_3pids_route);
    let r = route(r, protocols_route);
    let r = route(r, protocol_route);
    let r = route(r, location_by_alias_route);
    let r = route(r, location_by_protocol_route);
    let r = route(r, user_by_id_route);
    route(r, user_by_protocol_route)
}

/// # `GET /_matrix/client/v3/account/3pid`
///
/// Written by hand: ruma leaves an empty list out, and clients read `threepids` as a list.
async fn get_3pids_route(_: AppState, _: Ruma<get_3pids::v3::Request>) -> Result<Response> {
    Ok(axum::Json(serde_json::json!({ "threepids": [] })).into_response())
}

/// # `GET /_matrix/client/v3/thirdparty/protocols`
async fn protocols_route(
    _: AppState,
    _: Ruma<get_protocols::v3::Request>,
) -> Result<get_protocols::v3::Response> {
    Ok(get_protocols::v3::Response::new(BTreeMap::new()))
}

/// # `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`
async fn protocol_route(
    _: AppState,
    req: Ruma<get_protocol::v3::Request>,
) -> Result<get_protocol::v3::Response> {
    Err(Error::not_found(format!(
        "Unknown protocol {:?}: no bridge serves it here",
        req.body.protocol
    )))
}

/// # `GET /_matrix/client/v3/thirdparty/location`
async fn location_by_alias_route(
    _: AppState,
    _: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<get_location_for_room_alias::v3::Response> {
    Ok(get_location_for_room_alias::v3::Response::new(Vec::new()))
}

/// # `GET /_matrix/client/v3/thirdparty/location/{protocol}`
async fn location_by_protocol_route(
    _: AppState,
    _: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<get_location_for_protocol::v3::Response> {
    Ok(get_location_for_protocol::v3::Response::new(Vec::new()))
}

/// # `GET /_matrix/client/v3/thirdparty/user`
async fn user_by_id_route(
    _: AppState,
    _: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<get_user_for_user_id::v3::Response> {
    Ok(get_user_for_user_id::v3::Response::new(Vec::new()))
}

/// # `GET /_matrix/client/v3/thirdparty/user/{protocol}`
async fn user_by_protocol_route(
    _: AppState,
    _: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<get_user_for_protocol::v3::Response> {
    Ok(get_user_for_protocol::v3::Response::new(Vec::new()))
}
