//! `GET/POST /_matrix/client/v3/login`, `POST /refresh`, `POST /logout`, `POST /logout/all`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#login),
//! [spec](https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3refresh)

use axum::Router;
use ruma::api::client::session::get_login_types::v3::{LoginType, PasswordLoginType};
use ruma::api::client::session::{get_login_types, login, logout, logout_all, refresh_token};
use ruma::api::client::uiaa::UserIdentifier;

use crate::account::NewLogin;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, login_types_route);
    let r = route(r, login_route);
    let r = route(r, refresh_route);
    let r = route(r, logout_route);
    route(r, logout_all_route)
}

/// # `GET /_matrix/client/v3/login`
async fn login_types_route(
    _: AppState,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
    ]))
}

/// # `POST /_matrix/client/v3/login`
#[allow(deprecated)] // `user` is deprecated in the spec but still sent by older clients.
async fn login_route(
    state: AppState,
    req: Ruma<login::v3::Request>,
) -> Result<login::v3::Response> {
    let body = req.body;
    let login::v3::LoginInfo::Password(password) = &body.login_info else {
        return Err(Error::bad_request("Unsupported login type"));
    };
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(m)), _) => m.user.clone(),
        (None, Some(user)) => user.clone(),
        (Some(_), _) => {
            return Err(Error::bad_request("Only user ID identifiers are supported"));
        }
        (None, None) => return Err(Error::missing_param("Missing identifier")),
    };
    let session = state
        .accounts
        .login_password(
            &user,
            &password.password,
            NewLogin {
                device_id: body.device_id,
                device_display_name: body.initial_device_display_name,
                ip: req.client_ip.map(|ip| ip.to_string()),
                refreshable: body.refresh_token,
            },
        )
        .await?;
    // Other servers learn of a new device now, as Synapse tells them, not only once it
    // uploads keys. The login stands if telling them fails: the next change tells them.
    if session.new_device
        && let Err(e) = state
            .e2e
            .share_device_change(&state.federation, &session.user_id, &session.device_id)
            .await
    {
        tracing::warn!(user_id = %session.user_id, error = %e, "a new device was not shared");
    }
    let mut response =
        login::v3::Response::new(session.user_id, session.access_token, session.device_id);
    response.home_server = Some(state.accounts.server_name().clone());
    if let Some((token, lifetime)) = session.refresh {
        response.refresh_token = Some(token);
        response.expires_in = Some(lifetime);
    }
    Ok(response)
}

/// # `POST /_matrix/client/v3/refresh`
async fn refresh_route(
    state: AppState,
    req: Ruma<refresh_token::v3::Request>,
) -> Result<refresh_token::v3::Response> {
    let session = state.accounts.refresh(&req.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    if let Some((token, lifetime)) = session.refresh {
        response.refresh_token = Some(token);
        response.expires_in_ms = Some(lifetime);
    }
    Ok(response)
}

/// # `POST /_matrix/client/v3/logout`
async fn logout_route(
    state: AppState,
    req: Ruma<logout::v3::Request>,
) -> Result<logout::v3::Response> {
    state.accounts.logout(&req.auth).await?;
    Ok(logout::v3::Response::new())
}

/// # `POST /_matrix/client/v3/logout/all`
async fn logout_all_route(
    state: AppState,
    req: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response> {
    state.accounts.logout_all(&req.auth.user_id).await?;
    Ok(logout_all::v3::Response::new())
}
