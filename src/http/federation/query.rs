//! `GET /_matrix/federation/v1/query/profile`, `GET /_matrix/federation/v1/query/directory`
//!
//! [spec](https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1queryprofile)

use axum::Router;
use ruma::api::federation::query::{get_profile_information, get_room_information};
use ruma::profile::UserProfile;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, profile_route);
    route(r, directory_route)
}

/// # `GET /_matrix/federation/v1/query/directory`
///
/// One of our aliases, for another server: the room and servers that can help join it.
async fn directory_route(
    state: AppState,
    req: Ruma<get_room_information::v1::Request>,
) -> Result<get_room_information::v1::Response> {
    let (room_id, servers) = state.rooms.resolve_alias(&req.body.room_alias).await?;
    Ok(get_room_information::v1::Response::new(room_id, servers))
}

/// # `GET /_matrix/federation/v1/query/profile`
///
/// A local user's profile for another server; `field` narrows it to one key.
async fn profile_route(
    state: AppState,
    req: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    let user = &req.body.user_id;
    if user.server_name() != state.keys.server_name() {
        return Err(Error::invalid_param("User is not on this server"));
    }
    // The two fields the spec names are all a profile holds here; another is a malformed
    // query, not a request for an empty profile.
    let field = req.body.field.as_ref().map(|f| f.as_str().to_owned());
    if let Some(f) = field.as_deref()
        && !matches!(f, "displayname" | "avatar_url")
    {
        return Err(Error::invalid_param(format!("Unknown profile field {f:?}")));
    }
    let (displayname, avatar_url) = state.accounts.profile(user).await?;
    let mut profile = UserProfile::new();
    let wanted = |name: &str| field.as_deref().is_none_or(|f| f == name);
    if let Some(n) = displayname.filter(|_| wanted("displayname")) {
        profile.set("displayname".to_owned(), n.into());
    }
    if let Some(a) = avatar_url.filter(|_| wanted("avatar_url")) {
        profile.set("avatar_url".to_owned(), a.into());
    }
    let mut response = get_profile_information::v1::Response::new();
    response.data = profile;
    Ok(response)
}
