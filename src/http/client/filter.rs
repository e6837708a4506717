//! `POST /_matrix/client/v3/user/{userId}/filter`, `GET /user/{userId}/filter/{filterId}`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#filtering)

use axum::Router;
use ruma::api::client::filter::{EventFormat, FilterDefinition, create_filter, get_filter};

use super::require_self;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, create_filter_route);
    route(r, get_filter_route)
}

/// Checks of an uploaded filter beyond the shape ruma already enforced.
pub fn validate(filter: &FilterDefinition) -> Result<()> {
    let limits = [
        filter.room.timeline.limit,
        filter.room.state.limit,
        filter.room.ephemeral.limit,
        filter.room.account_data.limit,
        filter.presence.limit,
        filter.account_data.limit,
    ];
    if limits.into_iter().flatten().any(|l| l == ruma::UInt::MIN) {
        return Err(Error::bad_json("Filter limits must be at least 1"));
    }
    if !matches!(
        filter.event_format,
        EventFormat::Client | EventFormat::Federation
    ) {
        return Err(Error::bad_json(
            "event_format must be \"client\" or \"federation\"",
        ));
    }
    if let Some(fields) = &filter.event_fields
        && fields.iter().any(|f| f.is_empty())
    {
        return Err(Error::bad_json("event_fields entries must not be empty"));
    }
    crate::sync::filter::check_bounds(filter)
}

/// # `POST /_matrix/client/v3/user/{userId}/filter`
async fn create_filter_route(
    state: AppState,
    req: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    validate(&req.body.filter)?;
    let json = serde_json::to_string(&req.body.filter)
        .map_err(|e| Error::internal(format!("filter serialization: {e}")))?;
    let id = state
        .accounts
        .create_filter(&req.auth.user_id, &json)
        .await?;
    Ok(create_filter::v3::Response::new(id))
}

/// # `GET /_matrix/client/v3/user/{userId}/filter/{filterId}`
async fn get_filter_route(
    state: AppState,
    req: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response> {
    require_self(&req.auth, &req.body.user_id)?;
    let raw = state
        .accounts
        .filter(&req.auth.user_id, &req.body.filter_id)
        .await?;
    let filter: FilterDefinition = serde_json::from_str(raw.get())
        .map_err(|e| Error::internal(format!("stored filter unreadable: {e}")))?;
    Ok(get_filter::v3::Response::new(filter))
}
