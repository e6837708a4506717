//! `GET /_matrix/client/v3/account/whoami`, `POST /account/password`, `POST /account/deactivate`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#account-management)

use axum::Router;
use ruma::api::client::account::ThirdPartyIdRemovalStatus;
use ruma::api::client::account::{change_password, deactivate, whoami};
use ruma::api::client::uiaa::AuthType;

use crate::account::uiaa::Purpose;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, whoami_route);
    let r = route(r, change_password_route);
    route(r, deactivate_route)
}

/// The flows that guard sensitive account changes: re-enter the password.
pub fn password_flows() -> Vec<Vec<AuthType>> {
    vec![vec![AuthType::Password]]
}

/// # `GET /_matrix/client/v3/account/whoami`
async fn whoami_route(_: AppState, req: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(req.auth.user_id, req.auth.is_guest);
    response.device_id = Some(req.auth.device_id);
    Ok(response)
}

/// # `POST /_matrix/client/v3/account/password`
async fn change_password_route(
    state: AppState,
    req: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let user = req.auth.ok_or_else(Error::missing_token)?;
    let body = req.body;
    state
        .accounts
        .check_uiaa(
            Purpose::ChangePassword,
            Some(&user.user_id),
            &password_flows(),
            body.auth.as_ref(),
        )
        .await?;
    state
        .accounts
        .change_password(&user, body.new_password, body.logout_devices)
        .await?;
    Ok(change_password::v3::Response::new())
}

/// # `POST /_matrix/client/v3/account/deactivate`
async fn deactivate_route(
    state: AppState,
    req: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let user = req.auth.ok_or_else(Error::missing_token)?;
    state
        .accounts
        .check_uiaa(
            Purpose::Deactivate,
            Some(&user.user_id),
            &password_flows(),
            req.body.auth.as_ref(),
        )
        .await?;
    state.accounts.deactivate(&user.user_id).await?;
    if req.body.erase {
        state.rooms.erase_user(&user.user_id).await?;
    }
    // No identity server is ever bound by this server, so there is nothing to unbind.
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}
