//! `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags` and
//! `PUT`/`DELETE .../tags/{tag}`: a user's tags on a room (favourites, low priority, ...),
//! kept as the room's `m.tag` account data, which /sync delivers.
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#room-tagging)

use axum::Router;
use ruma::api::client::tag::{create_tag, delete_tag, get_tags};

use super::require_self;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, get_tags_route);
    let r = route(r, create_tag_route);
    route(r, delete_tag_route)
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
async fn get_tags_route(
    state: AppState,
    req: Ruma<get_tags::v3::Request>,
) -> Result<get_tags::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let tags = state
        .accounts
        .tags(&req.auth.user_id, &req.body.room_id)
        .await?;
    // Tags stored by an older client in a shape ruma does not take are left out, not an error.
    let tags = tags
        .into_iter()
        .filter_map(|(name, info)| Some((name.into(), serde_json::from_value(info).ok()?)))
        .collect();
    Ok(get_tags::v3::Response::new(tags))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn create_tag_route(
    state: AppState,
    req: Ruma<create_tag::v3::Request>,
) -> Result<create_tag::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let content = serde_json::value::to_raw_value(&req.body.tag_info)
        .map_err(|e| Error::internal(e.to_string()))?;
    state
        .accounts
        .change_tag(
            &req.auth.user_id,
            &req.body.room_id,
            &req.body.tag,
            Some(&content),
        )
        .await?;
    Ok(create_tag::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn delete_tag_route(
    state: AppState,
    req: Ruma<delete_tag::v3::Request>,
) -> Result<delete_tag::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    state
        .accounts
        .change_tag(&req.auth.user_id, &req.body.room_id, &req.body.tag, None)
        .await?;
    Ok(delete_tag::v3::Response::new())
}
