//! `GET /_matrix/key/v2/server` (and its older form with a key ID),
//! `GET /_matrix/federation/v1/version`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#retrieving-server-keys)

use axum::Router;
use ruma::api::federation::discovery::{get_server_keys, get_server_version};

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, server_keys_route);
    let r = r.route(
        "/_matrix/key/v2/server/{key_id}",
        axum::routing::get(server_key_by_id_route),
    );
    route(r, version_route)
}

/// # `GET /_matrix/key/v2/server`
///
/// Our signing keys, signed by themselves.
async fn server_keys_route(
    state: AppState,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    Ok(get_server_keys::v2::Response::new(
        state.keys.signed_server_keys()?,
    ))
}

/// # `GET /_matrix/key/v2/server/{keyId}`
///
/// The form MSC3938 removed from the spec, still asked for by deployed servers: all our
/// keys, whichever one is named, as Synapse answers it.
async fn server_key_by_id_route(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(_key_id): axum::extract::Path<String>,
) -> Result<axum::Json<ruma::serde::Raw<ruma::api::federation::discovery::ServerSigningKeys>>> {
    Ok(axum::Json(state.keys.signed_server_keys()?))
}

/// # `GET /_matrix/federation/v1/version`
async fn version_route(
    _: AppState,
    _: Ruma<get_server_version::v1::Request>,
) -> Result<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Trellis".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response)
}
