//! `POST /_matrix/client/v3/keys/upload`, `POST /keys/query`, `POST /keys/claim`,
//! `GET /keys/changes`, `POST /keys/device_signing/upload`, `POST /keys/signatures/upload`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#end-to-end-encryption)

use axum::Router;
use ruma::api::client::keys::{
    claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
};

use super::account::password_flows;
use crate::account::uiaa::Purpose;
use crate::app::AppState;
use crate::e2e::{KeyUpload, SigningKeys};
use crate::error::Result;
use crate::http::ruma::{Ruma, route};
use crate::sync::token::SyncToken;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, upload_keys_route);
    let r = route(r, get_keys_route);
    let r = route(r, claim_keys_route);
    let r = route(r, get_key_changes_route);
    let r = route(r, upload_signing_keys_route);
    route(r, upload_signatures_route)
}

/// # `POST /_matrix/client/v3/keys/upload`
async fn upload_keys_route(
    state: AppState,
    req: Ruma<upload_keys::v3::Request>,
) -> Result<upload_keys::v3::Response> {
    let body = &req.body;
    let uploaded = state
        .e2e
        .upload_keys(
            &req.auth,
            KeyUpload {
                device_keys: body.device_keys.as_ref(),
                one_time_keys: &body.one_time_keys,
                fallback_keys: &body.fallback_keys,
            },
        )
        .await?;
    if uploaded.device_keys_changed {
        state
            .e2e
            .share_device_change(&state.federation, &req.auth.user_id, &req.auth.device_id)
            .await?;
    }
    Ok(upload_keys::v3::Response::new(uploaded.counts))
}

/// # `POST /_matrix/client/v3/keys/query`
///
/// Remote users' keys are asked of their servers; the e2e domain does not reach the network
/// itself, so the federation call is handed in here.
async fn get_keys_route(
    state: AppState,
    req: Ruma<get_keys::v3::Request>,
) -> Result<get_keys::v3::Response> {
    let federation = &state.federation;
    state
        .e2e
        .query_keys(
            &req.auth.user_id,
            &req.body.device_keys,
            req.body.timeout,
            |server, request| async move { federation.query_user_keys(&server, request).await },
        )
        .await
}

/// # `POST /_matrix/client/v3/keys/claim`
async fn claim_keys_route(
    state: AppState,
    req: Ruma<claim_keys::v3::Request>,
) -> Result<claim_keys::v3::Response> {
    let federation = &state.federation;
    state
        .e2e
        .claim_keys(
            &req.body.one_time_keys,
            req.body.timeout,
            |server, request| async move { federation.claim_user_keys(&server, request).await },
        )
        .await
}

/// # `GET /_matrix/client/v3/keys/changes`
async fn get_key_changes_route(
    state: AppState,
    req: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response> {
    let from = SyncToken::parse(&req.body.from)?;
    let to = SyncToken::parse(&req.body.to)?;
    let (changed, left) = state.e2e.key_changes(&req.auth.user_id, from, to).await?;
    Ok(get_key_changes::v3::Response::new(changed, left))
}

/// # `POST /_matrix/client/v3/keys/device_signing/upload`
async fn upload_signing_keys_route(
    state: AppState,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let user = req.auth;
    let body = req.body;
    let keys = SigningKeys {
        master: body.master_key.as_ref(),
        self_signing: body.self_signing_key.as_ref(),
        user_signing: body.user_signing_key.as_ref(),
    };
    if state
        .e2e
        .signing_upload_needs_auth(&user.user_id, &keys)
        .await?
    {
        state
            .accounts
            .check_uiaa(
                Purpose::UploadSigningKeys,
                Some(&user.user_id),
                &password_flows(),
                body.auth.as_ref(),
            )
            .await?;
    }
    state.e2e.upload_signing_keys(&user.user_id, keys).await?;
    state
        .e2e
        .share_signing_keys(&state.federation, &user.user_id)
        .await?;
    Ok(upload_signing_keys::v3::Response::new())
}

/// # `POST /_matrix/client/v3/keys/signatures/upload`
async fn upload_signatures_route(
    state: AppState,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<upload_signatures::v3::Response> {
    state
        .e2e
        .upload_signatures(&req.auth.user_id, &req.body.signed_keys)
        .await?;
    Ok(upload_signatures::v3::Response::new())
}
