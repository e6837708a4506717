//! `GET /_matrix/federation/v1/user/devices/{userId}`, `POST /_matrix/federation/v1/user/keys/query`,
//! `POST /_matrix/federation/v1/user/keys/claim`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#end-to-end-encryption)

use axum::Router;
use ruma::api::federation::device::get_devices;
use ruma::api::federation::keys::{claim_keys, get_keys};

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, user_devices_route);
    let r = route(r, query_keys_route);
    route(r, claim_keys_route)
}

/// # `GET /_matrix/federation/v1/user/devices/{userId}`
///
/// A local user's devices with their keys, cross-signing keys and the list's version.
async fn user_devices_route(
    state: AppState,
    req: Ruma<get_devices::v1::Request>,
) -> Result<get_devices::v1::Response> {
    state.e2e.user_devices(&req.body.user_id).await
}

/// # `POST /_matrix/federation/v1/user/keys/query`
///
/// Device and cross-signing keys of local users; users of other servers are left out.
async fn query_keys_route(
    state: AppState,
    req: Ruma<get_keys::v1::Request>,
) -> Result<get_keys::v1::Response> {
    state.e2e.federation_query_keys(&req.body.device_keys).await
}

/// # `POST /_matrix/federation/v1/user/keys/claim`
///
/// One-time keys of local users' devices; users of other servers are left out.
async fn claim_keys_route(
    state: AppState,
    req: Ruma<claim_keys::v1::Request>,
) -> Result<claim_keys::v1::Response> {
    state
        .e2e
        .federation_claim_keys(&req.body.one_time_keys)
        .await
}
