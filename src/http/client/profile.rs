//! `GET /_matrix/client/v3/profile/{userId}`, `GET/PUT …/displayname`, `GET/PUT …/avatar_url`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#profiles)

use axum::Router;
use ruma::api::client::profile::{
    get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name,
};
use ruma::profile::UserProfile;

use super::require_self;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, get_profile_route);
    let r = route(r, get_displayname_route);
    let r = route(r, set_displayname_route);
    let r = route(r, get_avatar_url_route);
    route(r, set_avatar_url_route)
}

/// Longest display name accepted, as Synapse.
const MAX_DISPLAYNAME_LEN: usize = 256;
/// The longest avatar URL accepted, in bytes (as Synapse).
const MAX_AVATAR_URL_LEN: usize = 1000;

async fn local_profile(
    state: &AppState,
    user_id: &ruma::UserId,
) -> Result<(Option<String>, Option<String>)> {
    if user_id.server_name() != state.accounts.server_name() {
        return state.federation.remote_profile(user_id).await;
    }
    state.accounts.profile(user_id).await
}

/// The changed profile goes into the member events of the user's rooms.
async fn propagate(state: &AppState, user: &ruma::UserId) -> Result<()> {
    let profile = state.accounts.profile(user).await?;
    state.rooms.propagate_profile(user, &profile).await
}

/// # `GET /_matrix/client/v3/profile/{userId}`
async fn get_profile_route(
    state: AppState,
    req: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response> {
    let (displayname, avatar_url) = local_profile(&state, &req.body.user_id).await?;
    let mut profile = UserProfile::new();
    if let Some(name) = displayname {
        profile.set("displayname".to_owned(), name.into());
    }
    if let Some(url) = avatar_url {
        profile.set("avatar_url".to_owned(), url.into());
    }
    Ok(get_profile::v3::Response::from_iter(
        profile.iter().map(|(k, v)| (k.clone(), v.clone())),
    ))
}

/// # `GET /_matrix/client/v3/profile/{userId}/displayname`
async fn get_displayname_route(
    state: AppState,
    req: Ruma<get_display_name::v3::Request>,
) -> Result<get_display_name::v3::Response> {
    let (displayname, _) = local_profile(&state, &req.body.user_id).await?;
    Ok(get_display_name::v3::Response::new(displayname))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/displayname`
async fn set_displayname_route(
    state: AppState,
    req: Ruma<set_display_name::v3::Request>,
) -> Result<set_display_name::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let name = req.body.displayname.filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.len() > MAX_DISPLAYNAME_LEN) {
        return Err(Error::bad_json(format!(
            "Display name is longer than {MAX_DISPLAYNAME_LEN} bytes"
        )));
    }
    state
        .accounts
        .set_displayname(&req.auth.user_id, name.as_deref())
        .await?;
    propagate(&state, &req.auth.user_id).await?;
    Ok(set_display_name::v3::Response::new())
}

/// # `GET /_matrix/client/v3/profile/{userId}/avatar_url`
async fn get_avatar_url_route(
    state: AppState,
    req: Ruma<get_avatar_url::v3::Request>,
) -> Result<get_avatar_url::v3::Response> {
    let (_, avatar_url) = local_profile(&state, &req.body.user_id).await?;
    Ok(get_avatar_url::v3::Response::new(
        avatar_url.map(Into::into),
    ))
}

/// # `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
async fn set_avatar_url_route(
    state: AppState,
    req: Ruma<set_avatar_url::v3::Request>,
) -> Result<set_avatar_url::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let url = req.body.avatar_url.filter(|u| !u.as_str().is_empty());
    if let Some(u) = &url
        && u.validate().is_err()
    {
        return Err(Error::bad_json("avatar_url must be an mxc:// URI"));
    }
    // Synapse's limit: the URL goes into a member event in every room of the user.
    if url
        .as_ref()
        .is_some_and(|u| u.as_str().len() > MAX_AVATAR_URL_LEN)
    {
        return Err(Error::bad_json(format!(
            "avatar_url is longer than {MAX_AVATAR_URL_LEN} bytes"
        )));
    }
    state
        .accounts
        .set_avatar_url(&req.auth.user_id, url.as_ref().map(|u| u.as_str()))
        .await?;
    propagate(&state, &req.auth.user_id).await?;
    Ok(set_avatar_url::v3::Response::new())
}
