//! `GET /_matrix/client/v3/account/3pid` and `GET /_matrix/client/v3/thirdparty/protocols`:
//! what clients ask at start-up (Element's settings, its room directory) about third-party
//! identifiers and bridged networks.
//!
//! This server binds no third-party identifiers (it has no identity server or email
//! sender) and hosts no application services yet, so a user's list of identifiers and the
//! list of bridged protocols are both empty: the true answer, which clients show as such,
//! where a 404 shows as an error.
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3account3pid)

use std::collections::BTreeMap;

use axum::Router;
use axum::response::{IntoResponse, Response};
use ruma::api::client::account::get_3pids;
use ruma::api::client::thirdparty::get_protocols;

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route, route_raw};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r =
        route_raw::<get_3pids::v3::Request, Ruma<get_3pids::v3::Request>, _, _>(r, get_3pids_route);
    route(r, protocols_route)
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
