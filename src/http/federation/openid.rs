//! `GET /_matrix/federation/v1/openid/userinfo`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1openiduserinfo)

use axum::Router;
use ruma::api::federation::openid::get_openid_userinfo;

use crate::app::AppState;
use crate::error::Result;
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route(r, userinfo_route)
}

/// # `GET /_matrix/federation/v1/openid/userinfo`
///
/// Unsigned: the asker is a third party holding a token one of our users gave it.
async fn userinfo_route(
    state: AppState,
    req: Ruma<get_openid_userinfo::v1::Request>,
) -> Result<get_openid_userinfo::v1::Response> {
    let user = state.accounts.openid_user(&req.body.access_token).await?;
    Ok(get_openid_userinfo::v1::Response::new(user))
}
