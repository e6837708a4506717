//! `POST /_matrix/client/v3/register`, `GET /register/available`,
//! `GET /_matrix/client/v1/register/m.login.registration_token/validity`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#account-registration)

use axum::Router;
use ruma::api::client::account::register::RegistrationKind;
use ruma::api::client::account::{
    check_registration_token_validity, get_username_availability, register,
};
use ruma::api::client::uiaa::AuthType;
use ruma::api::error::ErrorKind;

use crate::account::uiaa::Purpose;
use crate::account::{NewAccount, NewLogin};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, register_route);
    let r = route(r, available_route);
    route(r, token_validity_route)
}

/// # `POST /_matrix/client/v3/register`
///
/// Creates an account after user-interactive auth (dummy or registration token, as
/// configured), or a guest account when guests are allowed.
async fn register_route(
    state: AppState,
    req: Ruma<register::v3::Request>,
) -> Result<register::v3::Response> {
    let accounts = &state.accounts;
    if let Some(ip) = req.client_ip {
        accounts.limits.register_per_ip.check(&ip.to_string())?;
    }
    let body = req.body;
    let registration = accounts.registration();
    let is_guest = matches!(body.kind, RegistrationKind::Guest);
    if is_guest {
        if !registration.allow_guests {
            return Err(Error::new(
                ErrorKind::GuestAccessForbidden,
                "Guest registration is disabled",
            ));
        }
    } else {
        if !registration.enabled {
            return Err(Error::forbidden("Registration is disabled on this server"));
        }
        // Tell the client about a bad or taken username before it goes through auth stages.
        if let Some(username) = &body.username {
            accounts.check_username(&username.to_lowercase()).await?;
        }
        accounts
            .check_uiaa(
                Purpose::Register,
                None,
                &registration_flows(&state),
                body.auth.as_ref(),
            )
            .await?;
        if body.password.is_none() {
            return Err(Error::missing_param("Missing parameter: password"));
        }
    }

    let login = (!body.inhibit_login || is_guest).then(|| NewLogin {
        device_id: body.device_id.clone(),
        device_display_name: body.initial_device_display_name.clone(),
        ip: req.client_ip.map(|ip| ip.to_string()),
        refreshable: body.refresh_token,
    });
    let (user_id, session) = accounts
        .create_account(NewAccount {
            localpart: if is_guest { None } else { body.username },
            password: if is_guest { None } else { body.password },
            is_guest,
            is_admin: false,
            displayname: None,
            login,
        })
        .await?;
    let mut response = register::v3::Response::new(user_id);
    if let Some(s) = session {
        response.access_token = Some(s.access_token);
        response.device_id = Some(s.device_id);
        if let Some((token, lifetime)) = s.refresh {
            response.refresh_token = Some(token);
            response.expires_in = Some(lifetime);
        }
    }
    Ok(response)
}

fn registration_flows(state: &AppState) -> Vec<Vec<AuthType>> {
    let registration = state.accounts.registration();
    let mut flows = Vec::new();
    if !registration.tokens.is_empty() {
        flows.push(vec![AuthType::RegistrationToken]);
    }
    if registration.open_without_verification {
        flows.push(vec![AuthType::Dummy]);
    }
    flows
}

/// # `GET /_matrix/client/v3/register/available`
async fn available_route(
    state: AppState,
    req: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    if let Some(ip) = req.client_ip {
        state
            .accounts
            .limits
            .register_per_ip
            .check(&ip.to_string())?;
    }
    if !state.accounts.registration().enabled {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    state
        .accounts
        .check_username(&req.body.username.to_lowercase())
        .await?;
    Ok(get_username_availability::v3::Response::new(true))
}

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
async fn token_validity_route(
    state: AppState,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    if let Some(ip) = req.client_ip {
        state
            .accounts
            .limits
            .register_per_ip
            .check(&ip.to_string())?;
    }
    let registration = state.accounts.registration();
    if !registration.enabled || registration.tokens.is_empty() {
        return Err(Error::forbidden(
            "Registration tokens are not in use on this server",
        ));
    }
    let valid = registration.tokens.iter().any(|t| t == &req.body.token);
    Ok(check_registration_token_validity::v1::Response::new(valid))
}
