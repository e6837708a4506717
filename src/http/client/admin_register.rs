//! `GET/POST /_synapse/admin/v1/register`: shared-secret registration, compatible with
//! Synapse's admin API so deployment tooling (`register_new_matrix_user`, Ansible roles)
//! works unchanged.

use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use crate::account::{NewAccount, NewLogin};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::{parse_json, read_body};

const PATH: &str = "/_synapse/admin/v1/register";

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route(PATH, get(nonce_route).post(register_route))
}

#[derive(Serialize)]
struct NonceResponse {
    nonce: String,
}

#[derive(Deserialize)]
struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    user_type: Option<String>,
    mac: String,
}

#[derive(Serialize)]
struct RegisterResponse {
    access_token: String,
    user_id: String,
    home_server: String,
    device_id: String,
}

fn shared_secret(state: &AppState) -> Result<&str> {
    state
        .accounts
        .registration()
        .shared_secret
        .as_deref()
        .ok_or_else(|| Error::bad_json("Shared secret registration is not enabled"))
}

/// # `GET /_synapse/admin/v1/register`
async fn nonce_route(State(state): State<AppState>) -> Result<Json<NonceResponse>> {
    shared_secret(&state)?;
    Ok(Json(NonceResponse {
        nonce: state.accounts.new_registration_nonce().await?,
    }))
}

/// # `POST /_synapse/admin/v1/register`
async fn register_route(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Result<Json<RegisterResponse>> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = req.into_parts();
    let secret = shared_secret(&state)?.to_owned();
    let bytes = read_body(&parts.headers, body, &state.config.limits).await?;
    let body: RegisterBody = parse_json(&bytes)?;
    if !state.accounts.take_registration_nonce(&body.nonce).await? {
        return Err(Error::bad_json("Unrecognised or expired nonce"));
    }
    if !mac_matches(&secret, &body) {
        return Err(Error::forbidden("HMAC incorrect"));
    }
    let (user_id, session) = state
        .accounts
        .create_account(NewAccount {
            localpart: Some(body.username.to_lowercase()),
            password: Some(body.password),
            password_hash: None,
            is_guest: false,
            is_admin: body.admin,
            displayname: body.displayname,
            login: Some(NewLogin {
                device_id: None,
                device_display_name: None,
                ip: peer.map(|p| p.ip().to_string()),
                refreshable: false,
            }),
        })
        .await?;
    let session = session.ok_or_else(|| Error::internal("registration did not log in"))?;
    Ok(Json(RegisterResponse {
        access_token: session.access_token,
        user_id: user_id.to_string(),
        home_server: state.accounts.server_name().to_string(),
        device_id: session.device_id.to_string(),
    }))
}

/// HMAC-SHA1 over `nonce \0 username \0 password \0 admin|notadmin [\0 user_type]`, compared
/// in constant time.
fn mac_matches(secret: &str, body: &RegisterBody) -> bool {
    let Ok(expected) = hex::decode(body.mac.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body.nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(body.username.as_bytes());
    mac.update(b"\x00");
    mac.update(body.password.as_bytes());
    mac.update(b"\x00");
    mac.update(if body.admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = &body.user_type {
        mac.update(b"\x00");
        mac.update(user_type.as_bytes());
    }
    mac.verify_slice(&expected).is_ok()
}
