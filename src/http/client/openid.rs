//! `POST /user/{userId}/openid/request_token`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3useruseridopenidrequest_token)

use axum::Router;
use ruma::api::client::account::request_openid_token;
use ruma::authentication::TokenType;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route(r, request_token_route)
}

/// # `POST /_matrix/client/v3/user/{userId}/openid/request_token`
async fn request_token_route(
    state: AppState,
    req: Ruma<request_openid_token::v3::Request>,
) -> Result<request_openid_token::v3::Response> {
    if req.body.user_id != req.auth.user_id {
        return Err(Error::forbidden(
            "You may only request OpenID tokens for yourself",
        ));
    }
    let (token, lifetime) = state.accounts.openid_token(&req.auth.user_id).await?;
    Ok(request_openid_token::v3::Response::new(
        token,
        TokenType::Bearer,
        state.keys.server_name().to_owned(),
        lifetime,
    ))
}
