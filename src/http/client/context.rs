//! `GET /rooms/{roomId}/context/{eventId}`, `GET /rooms/{roomId}/timestamp_to_event`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3roomsroomidcontexteventid),
//! [spec](https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event)

use axum::Router;
use ruma::api::Direction;
use ruma::api::client::context::get_context;
use ruma::api::client::room::get_event_by_timestamp;
use ruma::serde::Raw;
use ruma::{MilliSecondsSinceUnixEpoch, UInt};

use super::to_raw;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};
use crate::room::raw;
use crate::room::timeline::EventFilter;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, context_route);
    route(r, timestamp_to_event_route)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
async fn context_route(
    state: AppState,
    req: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let body = req.body;
    let mut filter = EventFilter::from(&body.filter);
    filter.ignored = state.accounts.ignored_users(&req.auth.user_id).await?;
    let lazy = !body.filter.lazy_load_options.is_disabled();
    let c = state
        .rooms
        .context(
            &req.auth,
            &body.room_id,
            &body.event_id,
            u64::from(body.limit),
            &filter,
            lazy,
        )
        .await?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(c.start.to_string());
    response.end = Some(c.end.to_string());
    response.event = Some(Raw::from_json(raw(&c.event)?));
    response.events_before = to_raw(&c.before)?;
    response.events_after = to_raw(&c.after)?;
    response.state = to_raw(&c.state)?;
    Ok(response)
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
async fn timestamp_to_event_route(
    state: AppState,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let body = req.body;
    // Timestamps are stored as BIGINT; anything beyond that is no real event's.
    let ts = i64::try_from(u64::from(body.ts.get()))
        .map_err(|_| Error::invalid_param("Timestamp out of range"))?;
    let (event_id, found) = state
        .federation
        .timestamp_to_event(
            &state.rooms,
            &req.auth.user_id,
            &body.room_id,
            ts,
            body.dir == Direction::Forward,
        )
        .await?;
    let found = UInt::try_from(found)
        .map_err(|_| Error::internal(format!("stored timestamp {found} out of range")))?;
    Ok(get_event_by_timestamp::v1::Response::new(
        event_id,
        MilliSecondsSinceUnixEpoch(found),
    ))
}
