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

use crate::account::register::Registration;
use crate::account::{NewAccount, NewLogin, Session};
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
/// configured), upgrades a guest's (`guest_access_token`), or creates a guest account when
/// guests are allowed.
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
    let ip = req.client_ip.map(|ip| ip.to_string());
    if matches!(body.kind, RegistrationKind::Guest) {
        if !registration.allow_guests {
            return Err(Error::new(
                ErrorKind::GuestAccessForbidden,
                "Guest registration is disabled",
            ));
        }
        // The spec: every parameter but the device's display name is ignored for guests.
        let (user_id, session) = accounts
            .create_account(NewAccount {
                is_guest: true,
                login: Some(NewLogin {
                    device_display_name: body.initial_device_display_name,
                    ip,
                    refreshable: body.refresh_token,
                    ..NewLogin::default()
                }),
                ..NewAccount::default()
            })
            .await?;
        return Ok(response(user_id, session));
    }
    if !registration.enabled {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    let (user_id, session) = accounts
        .register(
            &registration_flows(&state),
            Registration {
                params: body_params(&req.raw_body),
                password: body.password,
                auth: body.auth,
                ip,
            },
        )
        .await?;
    Ok(response(user_id, session))
}

fn response(user_id: ruma::OwnedUserId, session: Option<Session>) -> register::v3::Response {
    let mut response = register::v3::Response::new(user_id);
    if let Some(s) = session {
        response.access_token = Some(s.access_token);
        response.device_id = Some(s.device_id);
        if let Some((token, lifetime)) = s.refresh {
            response.refresh_token = Some(token);
            response.expires_in = Some(lifetime);
        }
    }
    response
}

/// The registration parameters of a body ruma accepted: its fields but `auth` and
/// `password`, which the UIA session keeps for the requests that carry only `auth`.
fn body_params(raw: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let mut params: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(raw).unwrap_or_default();
    params.remove("auth");
    params.remove("password");
    // Read from the query string, never from the body.
    params.remove("kind");
    params
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
